//! Port IO, MMIO and small CPU helpers.

use core::arch::asm;

pub fn outb(port: u16, value: u8) {
    // SAFETY: port IO has no memory effects visible to Rust.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as above.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}

pub fn outw(port: u16, value: u16) {
    // SAFETY: as above.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    };
}

pub fn mmio_read8(addr: u64) -> u8 {
    // SAFETY: the caller names a device register inside the identity-mapped 4 GiB.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

pub fn mmio_write8(addr: u64, value: u8) {
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(addr as *mut u8, value) }
}

pub fn mmio_read16(addr: u64) -> u16 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(addr as *const u16) }
}

pub fn mmio_write16(addr: u64, value: u16) {
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(addr as *mut u16, value) }
}

pub fn mmio_read32(addr: u64) -> u32 {
    // SAFETY: the caller names a device register inside the identity-mapped 4 GiB.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

pub fn mmio_write32(addr: u64, value: u32) {
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

/// Reads `len` bytes of physical memory (identity mapped).
pub fn phys_slice(addr: u64, len: usize) -> &'static [u8] {
    // SAFETY: the guest identity-maps 4 GiB; callers pass firmware/VMM-provided tables.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
}

pub fn read_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

pub fn read_u64(b: &[u8], off: usize) -> u64 {
    u64::from(read_u32(b, off)) | (u64::from(read_u32(b, off + 4)) << 32)
}

pub fn pause() {
    // SAFETY: `pause` has no effects beyond a spin-loop hint.
    unsafe { asm!("pause", options(nomem, nostack, preserves_flags)) };
}

pub fn cli() {
    // SAFETY: masks interrupts; no memory effects.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

pub fn sti() {
    // SAFETY: unmasks interrupts; handlers only touch atomics.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// Enables interrupts and halts atomically (an interrupt between the two is not lost).
pub fn sti_hlt() {
    // SAFETY: as `sti`; `hlt` waits for the next interrupt.
    unsafe { asm!("sti; hlt", options(nomem, nostack)) };
}

/// Halts forever with interrupts off (with KVM's irqchip this costs the host nothing).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: see `cli`/`sti_hlt`.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}
