//! Application processors: started by the boot CPU with INIT-SIPI-SIPI through its local APIC,
//! like Linux does, via a real-mode trampoline copied below 1 MiB.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::acpi::AcpiInfo;
use crate::entry::{AP_STACK_SIZE, AP_STACK_TOP, MAX_CPUS, Stack, trampoline};
use crate::interrupts::{
    LAPIC_ICR_HIGH, LAPIC_ICR_LOW, apic_id, lapic_read, lapic_write, load_idt,
};
use crate::{println, time};

/// Where the trampoline runs (SIPI vector 0x08).
const TRAMPOLINE_ADDR: u64 = 0x8000;
const ICR_INIT: u32 = 0x0000_4500; // INIT, level assert
const ICR_STARTUP: u32 = 0x0000_4600;
const ICR_BUSY: u32 = 1 << 12;

static ONLINE: AtomicUsize = AtomicUsize::new(1);
static mut AP_STACKS: [Stack<AP_STACK_SIZE>; MAX_CPUS] =
    [const { Stack([0; AP_STACK_SIZE]) }; MAX_CPUS];

fn send_ipi(apic: u8, icr: u32) {
    lapic_write(LAPIC_ICR_HIGH, u32::from(apic) << 24);
    lapic_write(LAPIC_ICR_LOW, icr);
    while lapic_read(LAPIC_ICR_LOW) & ICR_BUSY != 0 {
        crate::io::pause();
    }
}

/// Starts every enabled CPU of the MADT; returns how many CPUs are online (this one included).
pub fn start_aps(acpi: &AcpiInfo) -> usize {
    let me = apic_id();
    let (code, len) = trampoline();
    // SAFETY: the page at TRAMPOLINE_ADDR is RAM below the EBDA that nothing else uses once the
    // boot information has been copied.
    unsafe { core::ptr::copy_nonoverlapping(code, TRAMPOLINE_ADDR as *mut u8, len) };
    for (slot, &apic) in acpi.apic_ids().iter().enumerate() {
        if apic == me {
            continue;
        }
        // SAFETY: APs start one at a time; each takes the stack published here before its SIPI.
        unsafe {
            let stack = (&raw mut AP_STACKS)
                .cast::<Stack<AP_STACK_SIZE>>()
                .add(slot);
            *(&raw mut AP_STACK_TOP) = stack as u64 + AP_STACK_SIZE as u64;
        }
        let before = ONLINE.load(Ordering::Acquire);
        send_ipi(apic, ICR_INIT);
        time::delay_us(10_000);
        for _ in 0..2 {
            send_ipi(apic, ICR_STARTUP | (TRAMPOLINE_ADDR >> 12) as u32);
            time::delay_us(200);
            if ONLINE.load(Ordering::Acquire) > before {
                break;
            }
        }
        let deadline = time::ticks() + time::ms_to_ticks(2000);
        while ONLINE.load(Ordering::Acquire) == before && time::ticks() < deadline {
            crate::io::pause();
        }
        if ONLINE.load(Ordering::Acquire) == before {
            println!("testguest: cpu apic_id={apic} did not start");
        }
    }
    ONLINE.load(Ordering::Acquire)
}

/// First Rust code of an AP (long mode, own stack, guest page tables).
#[unsafe(no_mangle)]
extern "C" fn ap_main() -> ! {
    load_idt();
    println!("testguest: cpu apic_id={} online", apic_id());
    ONLINE.fetch_add(1, Ordering::AcqRel);
    crate::io::halt_forever()
}
