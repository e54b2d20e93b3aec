//! Guest RAM: anonymous host mappings, registered with KVM as one memory slot per region.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use thiserror::Error;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::layout::memory_regions;

/// Errors while creating or registering guest memory.
#[derive(Debug, Error)]
pub enum MemoryError {
    #[error("mapping {bytes} bytes of guest memory")]
    Map {
        bytes: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("KVM_SET_USER_MEMORY_REGION (slot {slot})")]
    Register {
        slot: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Maps `mem_bytes` of guest RAM following the layout (a second region above 4 GiB if needed).
pub fn create(mem_bytes: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges: Vec<(GuestAddress, usize)> = memory_regions(mem_bytes)
        .iter()
        .map(|r| (GuestAddress(r.start), r.len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Map {
        bytes: mem_bytes,
        source,
    })
}

/// Registers every region with KVM (do this before `create_irq_chip`: it is several
/// milliseconds slower afterwards).
pub fn register(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let host = region.as_ptr() as u64;
        let entry = kvm_userspace_memory_region {
            slot,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host,
            flags: 0,
        };
        // SAFETY: `host` points to a live mapping of `region.len()` bytes owned by `mem`, which
        // the caller keeps alive for as long as the VM fd exists (both live in `builder::Vm`).
        unsafe { vm.set_user_memory_region(entry) }
            .map_err(|source| MemoryError::Register { slot, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_regions_from_the_layout() {
        let mem = create(64 << 20).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.iter().map(|r| r.len()).sum::<u64>(), 64 << 20);
    }
}
