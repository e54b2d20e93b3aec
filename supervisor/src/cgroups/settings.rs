//! What a VM's cgroup is set to, from its resources, with Kubernetes' conversions
//! (`MilliCPUToQuota`, `MilliCPUToShares`, runc's shares → weight):
//!
//! * `limits.cpu` → CFS quota over a 100 ms period (at least 1 ms);
//! * `requests.cpu` (else `limits.cpu`, else KubeVirt's 100m per vCPU) → v1 shares
//!   (millis × 1024 / 1000, at least 2) or v2 weight (1 + (shares − 2) × 9999 / 262142);
//! * memory → guest memory (or `limits.memory` if larger) + the VMM's overhead + 1/256 of the
//!   guest memory for what grows with it (page tables of guest RAM and KVM's per-page
//!   metadata, 8 bytes per 4 KiB page each). Measured here for a test-guest VMM: 5.2 MiB RSS
//!   (0.6 MiB anonymous), 1.8/2.3/4.1 MiB charged to its cgroup for 64Mi/265Mi/1Gi guests.

/// CFS period (Kubernetes' default `cpu-cfs-quota-period`).
pub const CFS_PERIOD_US: u64 = 100_000;
/// Smallest quota the kernel accepts.
pub const MIN_QUOTA_US: u64 = 1_000;
/// v1 share bounds.
pub const MIN_SHARES: u64 = 2;
pub const MAX_SHARES: u64 = 262_144;
/// KubeVirt's default `cpuAllocationRatio`: a VMI without a CPU request asks for 1/10 core per
/// vCPU.
pub const CPU_ALLOCATION_RATIO: u64 = 10;

/// A VM's cgroup settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// CFS quota per [`CFS_PERIOD_US`], `None` = unlimited.
    pub cpu_quota_us: Option<u64>,
    /// v1 `cpu.shares`.
    pub cpu_shares: u64,
    /// v2 `cpu.weight`.
    pub cpu_weight: u64,
    /// Memory limit in bytes, `None` = unlimited.
    pub memory_max: Option<u64>,
}

/// The CPU request the VM is scheduled (and autoscaled) by, in millicores.
pub fn effective_cpu_request(request: Option<u64>, limit: Option<u64>, vcpus: u32) -> u64 {
    request
        .or(limit)
        .unwrap_or(u64::from(vcpus.max(1)) * 1000 / CPU_ALLOCATION_RATIO)
}

/// `MilliCPUToQuota`.
pub fn quota_us(limit_millis: u64) -> Option<u64> {
    if limit_millis == 0 {
        return None;
    }
    Some((limit_millis * CFS_PERIOD_US / 1000).max(MIN_QUOTA_US))
}

/// `MilliCPUToShares`.
pub fn shares(request_millis: u64) -> u64 {
    (request_millis * 1024 / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// runc's `ConvertCPUSharesToCgroupV2Value` (what Kubernetes writes on cgroup v2).
pub fn weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + ((shares.clamp(MIN_SHARES, MAX_SHARES) - 2) * 9999) / 262_142
}

impl Settings {
    /// Settings for a VM.
    pub fn for_vm(
        request_millis: Option<u64>,
        limit_millis: Option<u64>,
        vcpus: u32,
        guest_memory: u64,
        memory_limit: Option<u64>,
        overhead: u64,
    ) -> Settings {
        let s = shares(effective_cpu_request(request_millis, limit_millis, vcpus));
        Settings {
            cpu_quota_us: limit_millis.and_then(quota_us),
            cpu_shares: s,
            cpu_weight: weight(s),
            memory_max: Some(
                guest_memory
                    .max(memory_limit.unwrap_or(0))
                    .saturating_add(overhead)
                    .saturating_add(guest_memory / 256),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_conversions() {
        // (millis) → quota, shares, weight
        let cases = [
            (300, Some(30_000), 307, 12),
            (100, Some(10_000), 102, 4),
            (1000, Some(100_000), 1024, 39),
            (5, Some(1_000), 5, 1),
            (1, Some(1_000), 2, 1),
            (0, None, 2, 1),
            (300_000, Some(30_000_000), 262_144, 10_000),
        ];
        for (m, q, s, w) in cases {
            assert_eq!(
                (quota_us(m), shares(m), weight(shares(m))),
                (q, s, w),
                "{m}m"
            );
        }
    }

    #[test]
    fn vm_settings_follow_the_lab() {
        // The lab: requests.cpu 100m, limits.cpu 300m, 265Mi, 24Mi overhead.
        let s = Settings::for_vm(Some(100), Some(300), 1, 265 << 20, None, 24 << 20);
        assert_eq!(s.cpu_quota_us, Some(30_000));
        assert_eq!((s.cpu_shares, s.cpu_weight), (102, 4));
        assert_eq!(s.memory_max, Some((289 << 20) + (265 << 20) / 256));
        // No request: the limit; neither: 100m per vCPU.
        assert_eq!(effective_cpu_request(None, Some(300), 2), 300);
        assert_eq!(effective_cpu_request(None, None, 2), 200);
        let s = Settings::for_vm(None, None, 4, 1 << 30, Some(2 << 30), 0);
        assert_eq!((s.cpu_quota_us, s.cpu_shares), (None, 409));
        assert_eq!(s.memory_max, Some((2 << 30) + (1 << 30) / 256));
    }
}
