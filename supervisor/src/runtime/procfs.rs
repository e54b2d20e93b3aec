//! Process facts from `/proc`: start time (to recognise a pid after a daemon restart), CPU time
//! and resident memory.

use std::fs;

/// Fields of `/proc/<pid>/stat` after the command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Start time of the process in clock ticks since boot (`stat` field 22), or `None` if the
/// process does not exist. Together with the pid it identifies a process across pid reuse.
pub fn start_time(pid: u32) -> Option<u64> {
    // Field 22 overall; fields after ')' start at field 3 (state), so index 22 - 3 = 19.
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// True if the process exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    stat_fields(pid)
        .and_then(|f| f.first().cloned())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Resident set size in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_facts() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        assert!(is_alive(me));
        assert!(rss_bytes(me).unwrap() > 0);
        assert_eq!(start_time(u32::MAX - 1), None);
    }
}
