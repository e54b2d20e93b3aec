//! The ACPI power button: an EventFd registered as irqfd on the generic event device's GSI.
//! Pressing it asks the guest to shut down (Linux: `acpi_button` → orderly power-off; the test
//! guest powers off through S5).

use std::io;

use vmm_sys_util::eventfd::EventFd;

/// The power button line; it outlives reboots (re-registered on each new VM).
#[derive(Debug)]
pub struct PowerButton {
    irq: EventFd,
}

impl PowerButton {
    pub fn new() -> io::Result<Self> {
        Ok(PowerButton {
            irq: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    /// The EventFd to register as irqfd for
    /// [`POWER_BUTTON_GSI`](crate::arch::x86_64::layout::POWER_BUTTON_GSI).
    pub fn irq_fd(&self) -> &EventFd {
        &self.irq
    }

    /// Presses the button (one edge on the GED interrupt).
    pub fn press(&self) -> io::Result<()> {
        self.irq.write(1)
    }
}
