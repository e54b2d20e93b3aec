//! The guest's own identity map of the first 4 GiB (2 MiB pages), shared by every CPU. The PVH
//! entry builds the same tables in assembly before paging is on.

use core::arch::asm;

use crate::entry::pml4_addr;

/// Fills PML4 → PDPT → 4 PDs and loads CR3.
pub fn install() {
    let pml4 = pml4_addr() as *mut u64;
    // SAFETY: PML4, PDPT and the 4 PDs are 6 consecutive pages in .bss reserved for this; the
    // entries written map exactly what the current tables map (identity), so switching is safe.
    unsafe {
        let pdpt = pml4.add(512);
        let pd = pml4.add(1024);
        pml4.write_volatile(pdpt as u64 | 3);
        for i in 0..4 {
            pdpt.add(i).write_volatile(pd.add(512 * i) as u64 | 3);
        }
        for i in 0..2048u64 {
            pd.add(i as usize).write_volatile((i << 21) | 0x83);
        }
        asm!("mov cr3, {}", in(reg) pml4 as u64, options(nostack));
    }
}
