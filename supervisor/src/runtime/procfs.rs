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

/// The running process whose arguments after `argv[0]` are exactly `args`: a VMM spawned by a
/// daemon that died before it could record the pid.
pub fn find_by_args(args: &[String]) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let raw = fs::read(e.path().join("cmdline")).ok()?;
        let mut parts = raw.split(|b| *b == 0);
        parts.next()?;
        let rest: Vec<&[u8]> = parts.filter(|p| !p.is_empty()).collect();
        let same =
            rest.len() == args.len() && rest.iter().zip(args).all(|(a, b)| *a == b.as_bytes());
        (same && is_alive(pid)).then_some(pid)
    })
}

/// Bytes the process's unlinked regular files occupy (a VMM's overlays, emptyDisks and seed
/// images are unnamed files): what it has written to the scratch filesystem so far.
pub fn unlinked_file_bytes(pid: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    rd.flatten()
        .filter_map(|e| fs::metadata(e.path()).ok())
        .filter(|m| m.is_file() && m.nlink() == 0)
        .map(|m| m.blocks().saturating_mul(512))
        .fold(0, u64::saturating_add)
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

    #[test]
    fn finds_a_process_by_its_arguments() {
        // sleep sums its arguments: a tiny second interval makes the command line unique.
        let tag = format!("0.000{}", std::process::id());
        let mut child = std::process::Command::new("sleep")
            .args(["30", &tag])
            .spawn()
            .unwrap();
        let args = ["30".to_string(), tag.clone()];
        let mut found = None;
        // Until the child has exec'd, its command line is this test's: allow a loaded machine 10 s.
        for _ in 0..1000 {
            found = find_by_args(&args);
            if found.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found, Some(child.id()));
        assert_eq!(
            find_by_args(&["30".to_string()]),
            None,
            "arguments match whole"
        );
    }

    #[test]
    fn counts_written_unlinked_files() {
        use std::io::Write as _;
        let before = unlinked_file_bytes(std::process::id());
        let mut f = tempfile::tempfile_in(std::env::temp_dir()).unwrap();
        f.write_all(&vec![1u8; 1 << 20]).unwrap();
        f.sync_all().unwrap();
        let after = unlinked_file_bytes(std::process::id());
        drop(f);
        assert!(after >= before + (1 << 20), "{before} -> {after}");
    }
}
