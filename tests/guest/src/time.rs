//! Guest time from the PIT (channel 0 as a free-running 16-bit counter at 1.193182 MHz), read by
//! polling. No timer interrupts are used, so an idle guest costs nothing.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::io::{inb, outb};

pub const PIT_HZ: u64 = 1_193_182;

static TICKS: AtomicU64 = AtomicU64::new(0);
static LAST: AtomicU64 = AtomicU64::new(0);
static STARTED: AtomicBool = AtomicBool::new(false);
static STUCK: AtomicBool = AtomicBool::new(false);

fn read_counter() -> u16 {
    outb(0x43, 0x00); // latch channel 0
    let lo = inb(0x40);
    let hi = inb(0x40);
    u16::from_le_bytes([lo, hi])
}

/// Channel 0, mode 2 (rate generator), reload 65536 (0): one wrap every ~55 ms.
pub fn init() {
    outb(0x43, 0x34);
    outb(0x40, 0);
    outb(0x40, 0);
    LAST.store(u64::from(read_counter()), Ordering::Relaxed);
    STARTED.store(true, Ordering::Relaxed);
}

/// PIT ticks since `init` (call at least every ~50 ms to not miss a wrap). Only the boot CPU
/// calls this.
pub fn ticks() -> u64 {
    if !STARTED.load(Ordering::Relaxed) {
        return 0;
    }
    let now = u64::from(read_counter());
    let last = LAST.swap(now, Ordering::Relaxed);
    let delta = last.wrapping_sub(now) & 0xffff;
    TICKS.fetch_add(delta, Ordering::Relaxed) + delta
}

pub fn ms_to_ticks(ms: u64) -> u64 {
    ms * PIT_HZ / 1000
}

pub fn ticks_to_ms(ticks: u64) -> u64 {
    ticks * 1000 / PIT_HZ
}

/// Spins for `us` microseconds of guest time. Gives up if the counter never moves (no PIT).
pub fn delay_us(us: u64) {
    let target = ticks() + (us * PIT_HZ).div_ceil(1_000_000);
    let mut unchanged = 0u32;
    let mut last = ticks();
    while last < target {
        let now = ticks();
        if now == last {
            unchanged += 1;
            if unchanged > 100_000 {
                STUCK.store(true, Ordering::Relaxed);
                return;
            }
        } else {
            unchanged = 0;
        }
        last = now;
    }
}
