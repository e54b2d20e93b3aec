//! ACPI hardware-reduced power management registers (FADT sleep control/status, reset).

use crate::arch::x86_64::layout::{
    ACPI_RESET_PORT, ACPI_RESET_VALUE, ACPI_S5_SLP_TYP, ACPI_SLEEP_CONTROL_PORT,
    ACPI_SLEEP_STATUS_PORT,
};
use crate::lifecycle::{EventSender, VmEvent};

const SLP_EN: u8 = 1 << 5;

/// The registers; writes that power off or reset send a [`VmEvent`].
#[derive(Debug)]
pub struct AcpiPm {
    events: EventSender,
}

impl AcpiPm {
    pub fn new(events: EventSender) -> Self {
        AcpiPm { events }
    }

    /// Whether `port` belongs to this device.
    pub fn handles(port: u16) -> bool {
        matches!(
            port,
            ACPI_SLEEP_CONTROL_PORT | ACPI_SLEEP_STATUS_PORT | ACPI_RESET_PORT
        )
    }

    /// Sleep status reads 0 (no wake event); the others read 0 too.
    pub fn read(&self, _port: u16) -> u8 {
        0
    }

    pub fn write(&self, port: u16, value: u8) {
        match port {
            ACPI_SLEEP_CONTROL_PORT
                if value & SLP_EN != 0 && (value >> 2) & 0x7 == ACPI_S5_SLP_TYP =>
            {
                self.events.send(VmEvent::PowerOff);
            }
            ACPI_SLEEP_CONTROL_PORT => {
                tracing::debug!("ignoring sleep request {value:#x} (only S5 is supported)");
            }
            ACPI_RESET_PORT if value == ACPI_RESET_VALUE => self.events.send(VmEvent::Reset),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_powers_off_and_reset_value_resets() {
        let (tx, rx) = std::sync::mpsc::channel();
        let pm = AcpiPm::new(EventSender::new(tx, 1));
        pm.write(ACPI_SLEEP_CONTROL_PORT, 3 << 2 | SLP_EN); // S3: ignored
        pm.write(ACPI_SLEEP_CONTROL_PORT, 5 << 2); // no SLP_EN: ignored
        pm.write(ACPI_RESET_PORT, 0x42); // wrong value: ignored
        assert!(rx.try_recv().is_err());
        pm.write(ACPI_SLEEP_CONTROL_PORT, 5 << 2 | SLP_EN);
        assert_eq!(rx.try_recv().unwrap().1, VmEvent::PowerOff);
        pm.write(ACPI_RESET_PORT, ACPI_RESET_VALUE);
        assert_eq!(rx.try_recv().unwrap().1, VmEvent::Reset);
        assert!(AcpiPm::handles(ACPI_SLEEP_STATUS_PORT) && !AcpiPm::handles(0x3f8));
    }
}
