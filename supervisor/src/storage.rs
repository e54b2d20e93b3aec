//! Ephemeral storage admission, as kubelet's `ephemeral-storage`: does a VM's scratch space fit
//! on the scratch filesystem now, later, or never?
//!
//! A VM's ephemeral storage is what its guest can make the host write: the copy-on-write overlay
//! of each writable containerDisk (up to the image's size), each emptyDisk (up to its
//! `capacity`) and its NoCloud seed. The files are sparse, so free space alone would admit far
//! more than the filesystem holds; corral counts what it promised to running VMs and subtracts
//! what they have already written (which the free space already reflects).

use crate::capacity::Fit;

/// Part of the scratch filesystem kept free for the host (kubelet's default hard eviction
/// threshold is `nodefs.available<10%`), at most [`RESERVE_MAX`].
pub const RESERVE_PERCENT: u64 = 10;

/// The reserve's cap: on a large filesystem 10% is far more than the host needs to keep working
/// (a 250 GiB disk 91% full would refuse every VM).
pub const RESERVE_MAX: u64 = 2 << 30;

/// Room a seed image takes beyond its files (FAT metadata, rounding).
pub const SEED_OVERHEAD: u64 = 1 << 20;

/// The scratch filesystem and what corral already promised on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scratch {
    /// Size of the filesystem.
    pub total: u64,
    /// Space available to corral right now (`f_bavail`).
    pub available: u64,
    /// Bytes promised to running VMs.
    pub committed: u64,
    /// Bytes those VMs have written so far (already missing from `available`).
    pub used: u64,
}

fn mib(b: u64) -> u64 {
    b.div_ceil(1 << 20)
}

/// Can a VM needing `need` bytes of ephemeral storage start?
pub fn check(need: u64, s: Scratch) -> Fit {
    let reserve = (s.total / 100 * RESERVE_PERCENT).min(RESERVE_MAX);
    let usable = s.total.saturating_sub(reserve);
    if need > usable {
        return Fit::Never(format!(
            "needs {} MiB of ephemeral storage (overlays, emptyDisks, seed) but the scratch \
             filesystem has {} MiB minus a {} MiB reserve",
            mib(need),
            mib(s.total),
            mib(reserve)
        ));
    }
    // What running VMs may still write comes out of today's free space.
    let promised = s.committed.saturating_sub(s.used);
    let free = s.available.saturating_sub(reserve).saturating_sub(promised);
    if need > free {
        return Fit::NotNow(format!(
            "Insufficient ephemeral storage: needs {} MiB, the scratch filesystem has {} MiB \
             available, keeps {} MiB in reserve and {} MiB are promised to running VMs",
            mib(need),
            mib(s.available),
            mib(reserve),
            mib(promised)
        ));
    }
    Fit::Yes
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;
    const G: u64 = 1 << 30;

    fn fs(total: u64, available: u64, committed: u64, used: u64) -> Scratch {
        Scratch {
            total,
            available,
            committed,
            used,
        }
    }

    #[test]
    fn table() {
        // A 1000 MiB filesystem keeps 100 MiB (10%) in reserve.
        let cases = [
            (
                "fits an empty filesystem",
                10 * M,
                fs(1000 * M, 1000 * M, 0, 0),
                "yes",
            ),
            (
                "larger than the filesystem",
                1200 * M,
                fs(1000 * M, 1000 * M, 0, 0),
                "never",
            ),
            (
                "the reserve is never given",
                901 * M,
                fs(1000 * M, 1000 * M, 0, 0),
                "never",
            ),
            (
                "exactly the usable part",
                900 * M,
                fs(1000 * M, 1000 * M, 0, 0),
                "yes",
            ),
            // 400 promised, nothing written yet: 1000 - 100 - 400 = 500 free.
            (
                "promised space is taken",
                501 * M,
                fs(1000 * M, 1000 * M, 400 * M, 0),
                "not now",
            ),
            // 400 promised, 300 written (free space shows it): 700 - 100 - 100 = 500 free.
            (
                "written space is not counted twice",
                500 * M,
                fs(1000 * M, 700 * M, 400 * M, 300 * M),
                "yes",
            ),
            // Images and other files fill the filesystem: 200 available - 100 reserve.
            (
                "other files count",
                101 * M,
                fs(1000 * M, 200 * M, 0, 0),
                "not now",
            ),
            // 10% of 250 GiB would be 25 GiB, more than is free: the reserve stops at 2 GiB.
            (
                "the reserve is capped",
                20 * G,
                fs(250 * G, 23 * G, 0, 0),
                "yes",
            ),
            (
                "the capped reserve still holds",
                22 * G,
                fs(250 * G, 23 * G, 0, 0),
                "not now",
            ),
        ];
        for (what, need, s, want) in cases {
            let got = match check(need, s) {
                Fit::Yes => "yes",
                Fit::NotNow(_) => "not now",
                Fit::Never(_) => "never",
            };
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn messages_name_the_numbers() {
        let Fit::NotNow(m) = check(600 * M, fs(1000 * M, 1000 * M, 400 * M, 0)) else {
            panic!("expected not now");
        };
        assert!(m.contains("needs 600 MiB"), "{m}");
        assert!(m.contains("400 MiB are promised"), "{m}");
        assert!(m.contains("keeps 100 MiB in reserve"), "{m}");
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        assert!(matches!(
            check(u64::MAX, fs(u64::MAX, u64::MAX, u64::MAX, 0)),
            Fit::Never(_)
        ));
        assert!(matches!(check(0, fs(0, 0, 0, u64::MAX)), Fit::Yes));
    }
}
