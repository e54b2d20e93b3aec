//! Per-vCPU CPUID: KVM's supported set, with this vCPU's APIC id and a topology of one socket,
//! `cpus` cores and one thread per core.

use kvm_bindings::{CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};
use thiserror::Error;

/// Errors while building a vCPU's CPUID.
#[derive(Debug, Error)]
pub enum CpuidError {
    #[error("too many CPUID entries")]
    TooManyEntries(#[source] vmm_sys_util::fam::Error),
}

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Bits of an APIC id that number the cores of the package.
fn core_id_bits(cpus: u8) -> u32 {
    u32::from(cpus.max(1)).next_power_of_two().trailing_zeros()
}

/// The CPUID of vCPU `apic_id` out of `cpus`, derived from `supported`.
pub fn vcpu_cpuid(supported: &CpuId, apic_id: u8, cpus: u8) -> Result<CpuId, CpuidError> {
    let max_basic = supported
        .as_slice()
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);
    let mut entries: Vec<kvm_cpuid_entry2> = supported
        .as_slice()
        .iter()
        .filter(|e| e.function != LEAF_TOPOLOGY && e.function != LEAF_TOPOLOGY_V2)
        .copied()
        .collect();
    for e in &mut entries {
        match e.function {
            LEAF_FEATURES => {
                e.ebx =
                    (e.ebx & 0x0000_ffff) | (u32::from(apic_id) << 24) | (u32::from(cpus) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if cpus > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE => {
                // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this cache - 1
                // (one thread per core; the last level is shared by the package).
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { u32::from(cpus) - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((u32::from(cpus) - 1) << 26) | (sharing << 14);
            }
            _ => {}
        }
    }
    for leaf in [LEAF_TOPOLOGY, LEAF_TOPOLOGY_V2] {
        if max_basic >= leaf {
            entries.extend(topology_leaf(leaf, apic_id, cpus));
        }
    }
    CpuId::from_entries(&entries).map_err(CpuidError::TooManyEntries)
}

/// Leaf 0xB / 0x1F sub-leaves: SMT level (1 thread), core level (`cpus` cores), terminator.
fn topology_leaf(function: u32, apic_id: u8, cpus: u8) -> [kvm_cpuid_entry2; 3] {
    let x2apic_id = u32::from(apic_id);
    let entry = |index: u32, eax: u32, ebx: u32, ecx: u32| kvm_cpuid_entry2 {
        function,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax,
        ebx,
        ecx,
        edx: x2apic_id,
        ..Default::default()
    };
    [
        entry(0, 0, 1, LEVEL_SMT << 8),
        entry(
            1,
            core_id_bits(cpus),
            u32::from(cpus),
            (LEVEL_CORE << 8) | 1,
        ),
        entry(2, 0, 0, 2),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supported() -> CpuId {
        let e = |function, index, eax, ebx, ecx, edx| kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        };
        CpuId::from_entries(&[
            e(0, 0, 0xd, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
            e(1, 0, 0x806f8, 0x00ff_0800, 0x8120_2000, 0x178b_fbff),
            e(4, 1, 0x0000_0163, 0, 0, 0),
            e(0xb, 0, 1, 2, 0x100, 7),
        ])
        .unwrap()
    }

    fn find(c: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn apic_id_and_topology_per_vcpu() {
        let c = vcpu_cpuid(&supported(), 2, 3).unwrap();
        let l1 = find(&c, 1, 0);
        assert_eq!(l1.ebx >> 24, 2);
        assert_eq!((l1.ebx >> 16) & 0xff, 3);
        assert_eq!(l1.ebx & 0xffff, 0x0800, "clflush size kept");
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(l1.edx & EDX_HTT, 0);
        let smt = find(&c, 0xb, 0);
        let core = find(&c, 0xb, 1);
        assert_eq!((smt.ebx, smt.edx, smt.ecx >> 8), (1, 2, 1));
        assert_eq!((core.eax, core.ebx, core.ecx >> 8), (2, 3, 2));
        assert_eq!(find(&c, 0xb, 2).ecx >> 8, 0);
        let l3 = find(&c, 4, 1);
        assert_eq!((l3.eax >> 26, (l3.eax >> 14) & 0xfff), (2, 2));
        assert!(
            !c.as_slice().iter().any(|e| e.function == 0x1f),
            "max leaf is 0xd"
        );
    }

    #[test]
    fn single_cpu_has_no_htt() {
        let c = vcpu_cpuid(&supported(), 0, 1).unwrap();
        assert_eq!(find(&c, 1, 0).edx & EDX_HTT, 0);
        assert_eq!(find(&c, 0xb, 1).eax, 0);
    }
}
