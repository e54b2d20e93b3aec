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

/// TSC ticks and local APIC timer counts (divide by 16) per millisecond, from [`calibrate`].
static TSC_PER_MS: AtomicU64 = AtomicU64::new(0);
static LAPIC_PER_MS: AtomicU64 = AtomicU64::new(0);

pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reads the time-stamp counter; no memory effects.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    u64::from(lo) | (u64::from(hi) << 32)
}

/// Measures the TSC and the local APIC timer against the PIT over `ms` ms of guest time. The
/// TSC then gives time across `hlt` (the PIT counter wraps every 55 ms, unseen while halted),
/// and the APIC timer wakes a halted CPU at a deadline. Without a PIT (the counter never
/// moves) both fall back to 1 GHz. Returns (TSC kHz, APIC timer counts per ms).
pub fn calibrate(ms: u64) -> (u64, u64) {
    crate::interrupts::lapic_timer_start(u32::MAX, false);
    let (t0, l0, p0) = (rdtsc(), crate::interrupts::lapic_timer_current(), ticks());
    delay_us(ms * 1000);
    let (t1, l1, p1) = (rdtsc(), crate::interrupts::lapic_timer_current(), ticks());
    // From now on the timer is a stopped one-shot that raises its vector: `wake_after_us` only
    // writes the initial count (one register, one emulated access under PVM).
    crate::interrupts::lapic_timer_start(0, true);
    let elapsed_ms = ticks_to_ms(p1 - p0);
    let (tsc, lapic) = if STUCK.load(Ordering::Relaxed) || elapsed_ms == 0 {
        (1_000_000, 1_000_000 / 16)
    } else {
        let us = (p1 - p0) * 1_000_000 / PIT_HZ;
        (
            ((t1 - t0) * 1000 / us).max(1),
            (u64::from(l0 - l1) * 1000 / us).max(1),
        )
    };
    TSC_PER_MS.store(tsc, Ordering::Relaxed);
    LAPIC_PER_MS.store(lapic, Ordering::Relaxed);
    (tsc, lapic)
}

/// Microseconds since the TSC started (after [`calibrate`]).
pub fn now_us() -> u64 {
    let per_ms = TSC_PER_MS.load(Ordering::Relaxed).max(1);
    let t = rdtsc();
    (t / per_ms) * 1000 + (t % per_ms) * 1000 / per_ms
}

/// Arms the local APIC timer (after [`calibrate`]) to interrupt once after `us` µs (clamped to
/// its 32-bit range), replacing any earlier deadline; 0 stops it.
pub fn wake_after_us(us: u64) {
    let per_ms = LAPIC_PER_MS.load(Ordering::Relaxed).max(1);
    let count = (us.saturating_mul(per_ms) / 1000).clamp(u64::from(us > 0), u64::from(u32::MAX));
    crate::interrupts::lapic_timer_rearm(count as u32);
}
