//! Host memory admission: does a VM fit now, later, or never?
//!
//! A VM needs its guest memory plus the VMM's own overhead. Guest memory is touched lazily, so
//! "free memory" alone would admit far more VMs than the host can hold; corral therefore counts
//! what it has already committed to running VMs and admits a VM only if it fits both in
//! `MemTotal − reserve − committed` and in what is available right now minus the reserve.

/// Verdict for one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    Yes,
    /// Not now; retry when VMs stop. The message names the numbers.
    NotNow(String),
    /// Larger than the host can ever give (rejected with 422).
    Never(String),
}

/// Capacity settings.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// Memory kept for the host itself.
    pub reserve: u64,
    /// Per-VM memory of the VMM process beyond guest RAM.
    pub overhead: u64,
}

fn mib(b: u64) -> u64 {
    b >> 20
}

impl Capacity {
    /// What one VM with `guest` bytes of RAM needs.
    pub fn need(&self, guest: u64) -> u64 {
        guest.saturating_add(self.overhead)
    }

    /// Can a VM needing `need` bytes start, given `committed` bytes already promised to running
    /// VMs and the host's `total` / `available` memory?
    pub fn check(&self, need: u64, committed: u64, total: u64, available: u64) -> Fit {
        let usable = total.saturating_sub(self.reserve);
        if need > usable {
            return Fit::Never(format!(
                "needs {} MiB (guest memory + {} MiB VMM overhead) but the host has {} MiB minus a {} MiB reserve",
                mib(need),
                mib(self.overhead),
                mib(total),
                mib(self.reserve)
            ));
        }
        if committed.saturating_add(need) > usable {
            return Fit::NotNow(format!(
                "Insufficient memory: needs {} MiB, {} MiB of {} MiB usable are committed to running VMs",
                mib(need),
                mib(committed),
                mib(usable)
            ));
        }
        if need > available.saturating_sub(self.reserve) {
            return Fit::NotNow(format!(
                "Insufficient memory: needs {} MiB, the host has {} MiB available and keeps a {} MiB reserve",
                mib(need),
                mib(available),
                mib(self.reserve)
            ));
        }
        Fit::Yes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1 << 20;

    #[test]
    fn fit_table() {
        let c = Capacity {
            reserve: 512 * MI,
            overhead: 16 * MI,
        };
        let total = 4096 * MI;
        let cases = [
            ("fits", c.need(256 * MI), 0, total, "yes"),
            (
                "never: bigger than host",
                c.need(8192 * MI),
                0,
                total,
                "never",
            ),
            (
                "never: eats the reserve",
                c.need(3600 * MI),
                0,
                total,
                "never",
            ),
            (
                "not now: committed",
                c.need(1024 * MI),
                3000 * MI,
                total,
                "notnow",
            ),
            (
                "not now: host busy",
                c.need(1024 * MI),
                0,
                1200 * MI,
                "notnow",
            ),
            ("exactly fits", 3584 * MI, 0, total, "yes"),
        ];
        for (name, need, committed, avail, want) in cases {
            let got = match c.check(need, committed, total, avail) {
                Fit::Yes => "yes",
                Fit::NotNow(_) => "notnow",
                Fit::Never(_) => "never",
            };
            assert_eq!(got, want, "{name}");
        }
    }
}
