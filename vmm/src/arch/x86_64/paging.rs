//! Identity page tables for the 64-bit entry: 4 GiB in 2 MiB pages, so that the MMIO window
//! below 4 GiB is reachable before the guest builds its own tables.

use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use super::layout::{PD_ADDR, PD_COUNT, PDPT_ADDR, PML4_ADDR};

const PRESENT_RW: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;

/// Writes PML4 → PDPT → 4 PDs at the addresses in `layout`. Returns the CR3 value.
pub fn write_identity_tables(mem: &GuestMemoryMmap) -> Result<u64, GuestMemoryError> {
    mem.write_obj(PDPT_ADDR | PRESENT_RW, GuestAddress(PML4_ADDR))?;
    for pd in 0..PD_COUNT {
        let pd_addr = PD_ADDR + pd * 0x1000;
        mem.write_obj(pd_addr | PRESENT_RW, GuestAddress(PDPT_ADDR + pd * 8))?;
        let mut table = [0u8; 4096];
        for (i, entry) in table.chunks_exact_mut(8).enumerate() {
            let phys = ((pd << 9) + i as u64) << 21;
            entry.copy_from_slice(&(phys | PRESENT_RW | PAGE_SIZE_2M).to_le_bytes());
        }
        mem.write_slice(&table, GuestAddress(pd_addr))?;
    }
    Ok(PML4_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_4gib_identity() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        assert_eq!(write_identity_tables(&mem).unwrap(), PML4_ADDR);
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_ADDR)).unwrap();
        assert_eq!(pml4, PDPT_ADDR | 3);
        let pdpt3: u64 = mem.read_obj(GuestAddress(PDPT_ADDR + 3 * 8)).unwrap();
        assert_eq!(pdpt3, (PD_ADDR + 0x3000) | 3);
        // The last 2 MiB page below 4 GiB (holds the LAPIC at 0xfee00000).
        let last: u64 = mem
            .read_obj(GuestAddress(PD_ADDR + 0x3000 + 511 * 8))
            .unwrap();
        assert_eq!(last, 0xffe0_0000 | 0x83);
    }
}
