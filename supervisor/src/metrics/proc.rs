//! Per-process CPU time from `/proc/<pid>/stat`, the fallback when a VM has no cgroup.

/// `USER_HZ`: the unit of `utime`/`stime`, fixed at 100 by the kernel ABI on x86 and arm64.
const USER_HZ: u64 = 100;

/// utime + stime of every thread of `pid`, in nanoseconds.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s[s.rfind(')')? + 2..].split(' ').collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * (1_000_000_000 / USER_HZ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_cpu_time_grows() {
        let me = std::process::id();
        let a = super::cpu_ns(me).unwrap();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 50 {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        assert!(super::cpu_ns(me).unwrap() > a);
        assert_eq!(super::cpu_ns(u32::MAX - 1), None);
    }
}
