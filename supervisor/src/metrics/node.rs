//! The host as a node: busy CPU time from `/proc/stat` (everything but idle and iowait, in
//! USER_HZ ticks) and memory in use (`MemTotal − MemAvailable`), for `NodeMetrics`.

/// `USER_HZ` (see [`super::proc`]).
const USER_HZ: u64 = 100;

/// Busy CPU time of the whole host in nanoseconds, from the `cpu` line of `/proc/stat`.
pub fn busy_ns(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: u64 = f
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    Some(busy * (1_000_000_000 / USER_HZ))
}

/// The host's busy CPU time now.
pub fn read_busy_ns() -> Option<u64> {
    busy_ns(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Number of CPUs of the host.
pub fn cpus() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn busy_time_excludes_idle_and_iowait() {
        let s = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(super::busy_ns(s), Some(161 * 10_000_000));
        assert!(super::read_busy_ns().unwrap() > 0);
        assert!(super::cpus() >= 1);
    }
}
