//! COM1 (8250/16550 at 0x3f8): polled output, interrupt-driven input (IRQ 4) into a line buffer.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::io::{inb, outb};

const COM1: u16 = 0x3f8;
const RBR_THR: u16 = COM1;
const IER: u16 = COM1 + 1;
const IIR_FCR: u16 = COM1 + 2;
const LCR: u16 = COM1 + 3;
const MCR: u16 = COM1 + 4;
const LSR: u16 = COM1 + 5;
const LSR_DATA_READY: u8 = 0x01;
const LSR_THR_EMPTY: u8 = 0x20;

static LOCK: AtomicBool = AtomicBool::new(false);

/// 8 data bits, no parity, 1 stop bit; FIFOs on; DTR/RTS/OUT2 (OUT2 gates the IRQ line).
pub fn init() {
    outb(IER, 0);
    outb(LCR, 0x03);
    outb(IIR_FCR, 0xc7);
    outb(MCR, 0x0b);
}

/// Turns on the receive-data interrupt (after the IDT and IOAPIC are ready).
pub fn enable_rx_interrupt() {
    outb(IER, 0x01);
}

fn putb(b: u8) {
    while inb(LSR) & LSR_THR_EMPTY == 0 {
        crate::io::pause();
    }
    outb(RBR_THR, b);
}

struct Port;

impl Write for Port {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                putb(b'\r');
            }
            putb(b);
        }
        Ok(())
    }
}

/// Prints under a spinlock shared by all CPUs.
pub fn print(args: fmt::Arguments) {
    while LOCK.swap(true, Ordering::Acquire) {
        crate::io::pause();
    }
    let _ = Port.write_fmt(args);
    LOCK.store(false, Ordering::Release);
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::serial::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Received bytes: a ring written by the IRQ handler, read by the main loop.
const RX_SIZE: usize = 1024;
static mut RX: [u8; RX_SIZE] = [0; RX_SIZE];
static RX_HEAD: AtomicUsize = AtomicUsize::new(0); // written by the IRQ handler
static RX_TAIL: AtomicUsize = AtomicUsize::new(0); // written by the reader
/// Complete lines waiting in the ring.
static LINES: AtomicUsize = AtomicUsize::new(0);

/// The ring is full: the receive interrupt is off until the reader makes room, so the UART's
/// FIFO (and behind it the VMM's input queue) holds the rest instead of losing it.
static THROTTLED: AtomicBool = AtomicBool::new(false);

/// IRQ 4 handler body: drain the UART's receive FIFO into the ring.
pub fn on_interrupt() {
    // Acknowledge like a real driver: reading IIR clears the pending-interrupt state, so the next
    // received byte (or re-enabling the interrupt) raises the line again. Without it an emulated
    // UART that signals edges may consider the interrupt still pending and never raise it again.
    inb(IIR_FCR);
    while inb(LSR) & LSR_DATA_READY != 0 {
        let head = RX_HEAD.load(Ordering::Relaxed);
        let next = (head + 1) % RX_SIZE;
        if next == RX_TAIL.load(Ordering::Acquire) {
            THROTTLED.store(true, Ordering::Release);
            outb(IER, 0);
            return;
        }
        let b = inb(RBR_THR);
        // SAFETY: only the IRQ handler (one CPU, interrupts not nested) writes slot `head`,
        // which the reader does not touch until RX_HEAD moves past it.
        unsafe { (&raw mut RX).cast::<u8>().add(head).write_volatile(b) };
        RX_HEAD.store(next, Ordering::Release);
        if b == b'\n' || b == b'\r' {
            LINES.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Whether a complete line (or a full ring) is waiting.
pub fn line_ready() -> bool {
    LINES.load(Ordering::Acquire) > 0 || THROTTLED.load(Ordering::Acquire)
}

/// Re-enables the receive interrupt after the reader made room.
fn unthrottle() {
    if THROTTLED.swap(false, Ordering::AcqRel) {
        inb(IIR_FCR);
        outb(IER, 0x01);
    }
}

/// Takes the next complete line into `buf`; returns its length (CR/LF stripped, `\r\n` counts as
/// one line end).
pub fn take_line(buf: &mut [u8]) -> Option<usize> {
    if !line_ready() {
        return None;
    }
    let mut len = 0;
    let mut skipped_lf = false;
    loop {
        let tail = RX_TAIL.load(Ordering::Relaxed);
        if tail == RX_HEAD.load(Ordering::Acquire) {
            unthrottle();
            return if skipped_lf && len == 0 {
                None
            } else {
                Some(len)
            };
        }
        // SAFETY: slot `tail` was published by the handler through RX_HEAD.
        let b = unsafe { (&raw const RX).cast::<u8>().add(tail).read_volatile() };
        RX_TAIL.store((tail + 1) % RX_SIZE, Ordering::Release);
        if b == b'\n' || b == b'\r' {
            LINES.fetch_sub(1, Ordering::AcqRel);
            if len == 0 && b == b'\n' && LAST_WAS_CR.swap(false, Ordering::Relaxed) {
                skipped_lf = true;
                continue; // the LF of a CRLF pair
            }
            LAST_WAS_CR.store(b == b'\r', Ordering::Relaxed);
            unthrottle();
            return Some(len);
        }
        LAST_WAS_CR.store(false, Ordering::Relaxed);
        if len < buf.len() {
            buf[len] = b;
            len += 1;
        }
    }
}

static LAST_WAS_CR: AtomicBool = AtomicBool::new(false);
