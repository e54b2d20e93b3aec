//! The i8042 keyboard controller, only as far as its CPU-reset command (0xfe on port 0x64).

use std::convert::Infallible;

use vm_superio::{I8042Device, Trigger};

use crate::lifecycle::{EventSender, VmEvent};

/// Turns the controller's reset line into a [`VmEvent::Reset`].
#[derive(Debug)]
pub struct ResetLine(pub EventSender);

impl Trigger for ResetLine {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        self.0.send(VmEvent::Reset);
        Ok(())
    }
}

/// The controller as the port bus sees it.
pub type I8042 = I8042Device<ResetLine>;

/// A controller whose reset command reboots the VM.
pub fn new(events: EventSender) -> I8042 {
    I8042Device::new(ResetLine(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_sends_reset() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut dev = new(EventSender::new(tx, 3));
        dev.write(4, 0x01).unwrap();
        assert!(rx.try_recv().is_err());
        dev.write(4, crate::arch::x86_64::layout::I8042_RESET_COMMAND)
            .unwrap();
        assert_eq!(rx.try_recv().unwrap(), (3, VmEvent::Reset));
    }
}
