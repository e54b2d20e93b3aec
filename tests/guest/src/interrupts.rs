//! Interrupts: IDT (exceptions end the VM as a crash, vector 0x24 = COM1, 0x25 = power button,
//! 0x26 = every virtio-mmio device, 0x27 = the local APIC timer's one-shot wake-up,
//! 0x30..0x47 = virtio-pci MSI-X messages, three per device), legacy PIC masked, local APIC
//! enabled, GSIs routed to the boot CPU through whichever IOAPIC serves them.

use core::arch::{asm, global_asm};

use crate::io::{mmio_read32, mmio_write32, outb};

pub const SERIAL_VECTOR: u8 = 0x24;
pub const POWER_BUTTON_VECTOR: u8 = 0x25;
pub const VIRTIO_VECTOR: u8 = 0x26;
pub const TIMER_VECTOR: u8 = 0x27;
/// First MSI-X vector; [`MSIX_VECTORS`] of them (`virtio::msix_vector`).
pub const MSIX_VECTOR_BASE: u8 = 0x30;
const MSIX_VECTORS: usize = crate::virtio::MAX_DEVICES * crate::virtio::VECTORS_PER_DEVICE;
const _: () = assert!(MSIX_VECTORS == 24, "the .irp lists below have 24 stubs");
pub const SPURIOUS_VECTOR: u8 = 0xff;
const SERIAL_GSI: u32 = 4;

const LAPIC_ID: u64 = 0x20;
const LAPIC_TPR: u64 = 0x80;
const LAPIC_EOI: u64 = 0xb0;
const LAPIC_SVR: u64 = 0xf0;
const LAPIC_LVT_TIMER: u64 = 0x320;
const LAPIC_TIMER_INITIAL: u64 = 0x380;
const LAPIC_TIMER_CURRENT: u64 = 0x390;
const LAPIC_TIMER_DIVIDE: u64 = 0x3e0;
const LVT_MASKED: u32 = 1 << 16;
pub const LAPIC_ICR_LOW: u64 = 0x300;
pub const LAPIC_ICR_HIGH: u64 = 0x310;

#[repr(C, align(16))]
struct Idt([u64; 512]);

static mut IDT: Idt = Idt([0; 512]);

global_asm!(
    r#"
    .section .text
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    exc_stub_\n:
        push \n
        jmp exc_common
    .endr
    .section .rodata
    .globl EXC_STUBS
    .balign 8
EXC_STUBS:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .quad exc_stub_\n
    .endr

    .section .text
exc_common:
    cld
    mov rdi, [rsp]          /* vector */
    mov rsi, [rsp + 8]      /* error code or RIP */
    mov rdx, [rsp + 16]
    and rsp, -16
    call exception
1:  hlt
    jmp 1b

    /* An interrupt stub: save the caller-saved registers, call a Rust handler, iretq. */
    .macro irq_stub name, handler
    .globl \name
\name:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    cld
    call \handler
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    iretq
    .endm

    irq_stub serial_irq_stub, serial_irq
    irq_stub power_button_stub, power_button_irq
    irq_stub virtio_stub, virtio_irq
    irq_stub timer_stub, timer_irq

    /* MSI-X: one stub per vector, passing its index (vector - 0x30) to msix_irq. */
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23
    msix_stub_\n:
        push rax
        mov eax, \n
        jmp msix_common
    .endr
    .section .rodata
    .globl MSIX_STUBS
    .balign 8
MSIX_STUBS:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23
        .quad msix_stub_\n
    .endr

    .section .text
msix_common:
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    mov edi, eax
    cld
    call msix_irq
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    iretq

    .globl spurious_stub
spurious_stub:
    iretq
    "#
);

unsafe extern "C" {
    static EXC_STUBS: [u64; 32];
    static MSIX_STUBS: [u64; MSIX_VECTORS];
    fn serial_irq_stub();
    fn power_button_stub();
    fn virtio_stub();
    fn timer_stub();
    fn spurious_stub();
}

/// An exception: report it and end the VM as a crash (triple fault → exit code 3).
#[unsafe(no_mangle)]
extern "C" fn exception(vector: u64, word1: u64, word2: u64) -> ! {
    crate::println!("testguest: EXCEPTION vector={vector} stack=[{word1:#x} {word2:#x}]");
    crate::power::triple_fault()
}

/// COM1 interrupt: drain the receive FIFO, then EOI.
#[unsafe(no_mangle)]
extern "C" fn serial_irq() {
    crate::serial::on_interrupt();
    lapic_write(LAPIC_EOI, 0);
}

/// Power button (ACPI GED) interrupt: remember the press, then EOI.
#[unsafe(no_mangle)]
extern "C" fn power_button_irq() {
    crate::power::BUTTON_PRESSED.store(true, core::sync::atomic::Ordering::Release);
    lapic_write(LAPIC_EOI, 0);
}

/// virtio-mmio interrupt (any device): acknowledge at the devices, then EOI.
#[unsafe(no_mangle)]
extern "C" fn virtio_irq() {
    crate::virtio::on_interrupt();
    lapic_write(LAPIC_EOI, 0);
}

/// virtio-pci MSI-X message `index` (vector - [`MSIX_VECTOR_BASE`]): count it, then EOI.
#[unsafe(no_mangle)]
extern "C" fn msix_irq(index: u32) {
    crate::virtio::on_msix(index as usize);
    lapic_write(LAPIC_EOI, 0);
}

/// Local APIC timer (one-shot): it only ends a `hlt`; EOI.
#[unsafe(no_mangle)]
extern "C" fn timer_irq() {
    lapic_write(LAPIC_EOI, 0);
}

/// Starts the local APIC timer counting down from `count` (divide by 16). With `interrupt` it
/// raises [`TIMER_VECTOR`] once at zero; without, it only counts (for calibration).
pub fn lapic_timer_start(count: u32, interrupt: bool) {
    lapic_write(LAPIC_TIMER_DIVIDE, 0x3);
    lapic_write(
        LAPIC_LVT_TIMER,
        u32::from(TIMER_VECTOR) | if interrupt { 0 } else { LVT_MASKED },
    );
    lapic_write(LAPIC_TIMER_INITIAL, count);
}

/// Restarts the local APIC timer from `count` with the mode [`lapic_timer_start`] set (0 stops it).
pub fn lapic_timer_rearm(count: u32) {
    lapic_write(LAPIC_TIMER_INITIAL, count);
}

/// The local APIC timer's current count.
pub fn lapic_timer_current() -> u32 {
    lapic_read(LAPIC_TIMER_CURRENT)
}

fn set_gate(vector: u8, handler: u64) {
    let low = (handler & 0xffff)
        | (0x08 << 16)                       // kernel code selector
        | (0x8e << 40)                       // present, DPL 0, 64-bit interrupt gate
        | ((handler >> 16) & 0xffff) << 48;
    let high = handler >> 32;
    let i = usize::from(vector) * 2;
    // SAFETY: the IDT is only written here, by the boot CPU, before interrupts are enabled.
    unsafe {
        let idt = &raw mut IDT;
        (*idt).0[i] = low;
        (*idt).0[i + 1] = high;
    }
}

/// Loads the IDT on the calling CPU.
pub fn load_idt() {
    #[repr(C, packed)]
    struct Ptr {
        limit: u16,
        base: u64,
    }
    let ptr = Ptr {
        limit: (512 * 8 - 1) as u16,
        base: &raw const IDT as u64,
    };
    // SAFETY: the IDT is static and fully initialised by `init`.
    unsafe { asm!("lidt [{}]", in(reg) &ptr, options(nostack)) };
}

static mut LAPIC_BASE: u64 = 0xfee0_0000;

fn lapic_base() -> u64 {
    // SAFETY: written once by `init` before any other CPU runs.
    unsafe { *(&raw const LAPIC_BASE) }
}

pub fn lapic_read(reg: u64) -> u32 {
    mmio_read32(lapic_base() + reg)
}

pub fn lapic_write(reg: u64, value: u32) {
    mmio_write32(lapic_base() + reg, value);
}

/// This CPU's APIC id.
pub fn apic_id() -> u8 {
    (lapic_read(LAPIC_ID) >> 24) as u8
}

fn ioapic_write(base: u64, reg: u32, value: u32) {
    mmio_write32(base, reg);
    mmio_write32(base + 0x10, value);
}

/// The IOAPICs (address, first GSI), from the MADT.
static mut IOAPICS: [(u64, u32); crate::acpi::MAX_IOAPICS] = [(0, 0); crate::acpi::MAX_IOAPICS];

/// Routes `gsi` to `vector` on this CPU through the IOAPIC with the highest first GSI not above
/// it: fixed delivery, physical destination, unmasked; edge/active-high unless told otherwise.
pub fn route(gsi: u32, vector: u8, level: bool, active_low: bool) -> bool {
    // SAFETY: IOAPICS is written once by `init` before any routing.
    let ioapics = unsafe { *(&raw const IOAPICS) };
    let Some(&(ioapic, base)) = ioapics
        .iter()
        .filter(|(addr, base)| *addr != 0 && *base <= gsi)
        .max_by_key(|(_, base)| *base)
    else {
        return false;
    };
    let pin = gsi - base;
    if pin >= 120 {
        return false;
    }
    let entry = 0x10 + 2 * pin;
    let low = u32::from(vector) | (u32::from(active_low) << 13) | (u32::from(level) << 15);
    ioapic_write(ioapic, entry + 1, u32::from(apic_id()) << 24);
    ioapic_write(ioapic, entry, low);
    true
}

/// Sets up the IDT, masks the PIC, enables the LAPIC and routes COM1 (and the power button's
/// GSI, when there is one) to this CPU. `ioapics` lists (address, first GSI); empty means the
/// standard one at `ioapic` from GSI 0.
pub fn init(
    lapic: u64,
    ioapic: u64,
    ioapics: &[crate::acpi::IoApic],
    power_button_gsi: Option<u32>,
) {
    // SAFETY: single-threaded at this point.
    unsafe {
        *(&raw mut LAPIC_BASE) = lapic;
        let table = &mut *(&raw mut IOAPICS);
        table[0] = (ioapic, 0);
        for (slot, a) in table.iter_mut().zip(ioapics) {
            *slot = (a.addr, a.gsi_base);
        }
    }
    for vector in 0..32u8 {
        // SAFETY: EXC_STUBS is a static table of 32 addresses from the assembly above.
        let stub = unsafe { (*(&raw const EXC_STUBS))[usize::from(vector)] };
        set_gate(vector, stub);
    }
    set_gate(SERIAL_VECTOR, serial_irq_stub as *const () as u64);
    set_gate(SPURIOUS_VECTOR, spurious_stub as *const () as u64);
    set_gate(POWER_BUTTON_VECTOR, power_button_stub as *const () as u64);
    set_gate(VIRTIO_VECTOR, virtio_stub as *const () as u64);
    set_gate(TIMER_VECTOR, timer_stub as *const () as u64);
    for i in 0..MSIX_VECTORS {
        // SAFETY: MSIX_STUBS is a static table of MSIX_VECTORS addresses from the assembly above.
        let stub = unsafe { (*(&raw const MSIX_STUBS))[i] };
        set_gate(MSIX_VECTOR_BASE + i as u8, stub);
    }
    load_idt();
    // Mask both 8259s: everything goes through the IOAPIC.
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    lapic_write(LAPIC_TPR, 0);
    lapic_write(LAPIC_SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    route(SERIAL_GSI, SERIAL_VECTOR, false, false);
    if let Some(gsi) = power_button_gsi {
        route(gsi, POWER_BUTTON_VECTOR, false, false);
    }
}
