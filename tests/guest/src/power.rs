//! Ending a boot: ACPI S5 power-off, reset (i8042 or ACPI reset register), crash, and a KVM
//! emulation failure on purpose.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::acpi::{self, AcpiInfo};
use crate::io::{halt_forever, outb};

/// Set by the power button interrupt (ACPI generic event device).
pub static BUTTON_PRESSED: AtomicBool = AtomicBool::new(false);

/// Powers off if the power button was pressed (checked wherever the guest waits).
pub fn check_button(acpi: Option<&AcpiInfo>) {
    if BUTTON_PRESSED.load(Ordering::Acquire) {
        crate::println!("testguest: power button");
        power_off(acpi);
    }
}

/// Powers off through ACPI; never returns (if the VMM ignores it, the guest halts).
pub fn power_off(acpi: Option<&AcpiInfo>) -> ! {
    crate::println!("testguest: poweroff");
    if let Some(info) = acpi {
        acpi::power_off(info);
    }
    crate::println!("testguest: poweroff did not take effect");
    halt_forever()
}

/// How to reboot.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ResetVia {
    /// Keyboard controller: 0xfe to port 0x64.
    I8042,
    /// The FADT reset register.
    Acpi,
}

pub fn reboot(via: ResetVia, acpi: Option<&AcpiInfo>) -> ! {
    match via {
        ResetVia::I8042 => {
            crate::println!("testguest: reboot via=i8042");
            outb(0x64, 0xfe);
        }
        ResetVia::Acpi => {
            crate::println!("testguest: reboot via=acpi");
            if let Some(info) = acpi {
                acpi::reset(info);
            }
        }
    }
    crate::println!("testguest: reboot did not take effect");
    halt_forever()
}

/// Triple fault: an empty IDT and an invalid opcode (exception → #DF → shutdown).
pub fn triple_fault() -> ! {
    #[repr(C, packed)]
    struct Ptr {
        limit: u16,
        base: u64,
    }
    let empty = Ptr { limit: 0, base: 0 };
    // SAFETY: deliberately crashes the CPU; nothing runs afterwards.
    unsafe { asm!("lidt [{}]", "ud2", in(reg) &empty, options(noreturn)) }
}

/// Jumps into the MMIO hole (no memory slot): KVM cannot fetch the instruction and exits with
/// KVM_EXIT_INTERNAL_ERROR (emulation failure).
pub fn emulation_failure() -> ! {
    // SAFETY: deliberately ends the VM; nothing runs afterwards.
    unsafe { asm!("jmp {}", in(reg) 0xd000_0000u64, options(noreturn)) }
}
