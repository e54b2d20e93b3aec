//! COM1: vm-superio's 8250 UART. Its interrupt line is an EventFd registered as an irqfd on
//! GSI 4; a second EventFd tells the event loop that the guest drained the receive FIFO, so more
//! pending input can be queued.

use std::io;
use std::sync::{Arc, Mutex};

use vm_superio::serial::SerialEvents;
use vm_superio::{Serial as Uart, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::console::{ConsoleHub, ConsoleWriter};

/// The UART's interrupt line (an irqfd).
#[derive(Debug)]
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Signals the event loop when the guest emptied the receive FIFO.
#[derive(Debug)]
pub struct InputDrained(pub EventFd);

impl SerialEvents for InputDrained {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        let _ = self.0.write(1);
    }
}

type Device = Uart<IrqLine, InputDrained, ConsoleWriter>;

/// The serial port, shared by the vCPU threads (register access) and the event loop (input).
/// It outlives reboots: [`Serial::reset`] gives the next boot a fresh UART with the same lines.
#[derive(Debug)]
pub struct Serial {
    device: Mutex<Device>,
    irq: EventFd,
    drained: EventFd,
    hub: Arc<ConsoleHub>,
}

impl Serial {
    pub fn new(hub: Arc<ConsoleHub>) -> io::Result<Self> {
        let irq = EventFd::new(libc::EFD_NONBLOCK)?;
        let drained = EventFd::new(libc::EFD_NONBLOCK)?;
        let device = Self::make(&irq, &drained, &hub)?;
        Ok(Serial {
            device: Mutex::new(device),
            irq,
            drained,
            hub,
        })
    }

    fn make(irq: &EventFd, drained: &EventFd, hub: &Arc<ConsoleHub>) -> io::Result<Device> {
        Ok(Uart::with_events(
            IrqLine(irq.try_clone()?),
            InputDrained(drained.try_clone()?),
            ConsoleWriter(hub.clone()),
        ))
    }

    /// The EventFd to register as irqfd for [`SERIAL_IRQ`](crate::arch::x86_64::layout::SERIAL_IRQ).
    pub fn irq_fd(&self) -> &EventFd {
        &self.irq
    }

    /// Becomes readable when the guest drained the receive FIFO.
    pub fn drained_fd(&self) -> &EventFd {
        &self.drained
    }

    /// The console output hub.
    pub fn hub(&self) -> &Arc<ConsoleHub> {
        &self.hub
    }

    /// Power-on state for a new boot.
    pub fn reset(&self) -> io::Result<()> {
        let fresh = Self::make(&self.irq, &self.drained, &self.hub)?;
        *self.lock() = fresh;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Device> {
        self.device
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Guest reads register `offset`.
    pub fn read(&self, offset: u8) -> u8 {
        self.lock().read(offset)
    }

    /// Guest writes register `offset`.
    pub fn write(&self, offset: u8, value: u8) {
        if let Err(e) = self.lock().write(offset, value) {
            tracing::debug!("serial write: {e:?}");
        }
    }

    /// Queues host input into the receive FIFO; returns how many bytes fit.
    pub fn enqueue(&self, input: &[u8]) -> usize {
        let mut dev = self.lock();
        if dev.fifo_capacity() == 0 {
            return 0;
        }
        dev.enqueue_raw_bytes(input).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::VmState;

    #[test]
    fn input_raises_the_irq_and_is_read_back() {
        let hub = Arc::new(ConsoleHub::new(false, None, Arc::new(VmState::new(1, 0))).unwrap());
        let serial = Serial::new(hub).unwrap();
        serial.write(1, 0x01); // IER: receive-data interrupt
        let _ = serial.irq_fd().read();
        assert_eq!(serial.enqueue(b"hi"), 2);
        assert_eq!(serial.irq_fd().read().unwrap(), 1);
        assert_eq!(serial.read(5) & 1, 1, "LSR data ready");
        assert_eq!(serial.read(0), b'h');
        assert_eq!(serial.read(0), b'i');
        assert_eq!(serial.read(5) & 1, 0);
        assert_eq!(serial.drained_fd().read().unwrap(), 1);
        // The FIFO holds 64 bytes; the rest waits on the host side.
        assert_eq!(serial.enqueue(&[b'x'; 100]), 64);
        assert_eq!(serial.enqueue(b"y"), 0);
        serial.reset().unwrap();
        assert_eq!(serial.read(5) & 1, 0, "reset empties the FIFO");
    }
}
