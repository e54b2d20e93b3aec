//! virtio-mmio (modern, version 2) driver side: finds the devices (ACPI `LNRO0005` devices in the
//! DSDT, and `virtio_mmio.device=SIZE@ADDR:IRQ` on the command line), brings block (id 2) and
//! network (id 1) devices up (reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues,
//! DRIVER_OK) and runs their split virtqueues (up to [`MAX_QUEUES`] per device: blk uses queue 0,
//! net uses rx = 0 and tx = 1). The `*_q` functions name the queue; the others mean queue 0.
//!
//! All interrupts of all devices arrive on one vector; the handler only acknowledges them at the
//! device (InterruptStatus → InterruptACK, which also lowers a level-triggered line). Waiting for
//! a completion is `cli; check the used ring; sti; hlt`, so an idle guest never spins.

use core::sync::atomic::{Ordering, fence};

use crate::acpi::AcpiInfo;
use crate::interrupts::{self, VIRTIO_VECTOR};
use crate::io::{cli, mmio_read32, mmio_write32, sti, sti_hlt};
use crate::println;

/// Most devices driven.
pub const MAX_DEVICES: usize = 8;
/// Queue size used (the device may offer more).
pub const QUEUE_SIZE: u16 = 128;
/// Most queues per device.
pub const MAX_QUEUES: usize = 2;

const MAGIC: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const QUEUE_NOTIFY: u64 = 0x050;
const INTERRUPT_STATUS: u64 = 0x060;
const INTERRUPT_ACK: u64 = 0x064;
const STATUS: u64 = 0x070;
const QUEUE_DESC: u64 = 0x080;
const QUEUE_AVAIL: u64 = 0x090;
const QUEUE_USED: u64 = 0x0a0;
const CONFIG_GENERATION: u64 = 0x0fc;
pub const CONFIG: u64 = 0x100;

const S_ACKNOWLEDGE: u32 = 1;
const S_DRIVER: u32 = 2;
const S_DRIVER_OK: u32 = 4;
const S_FEATURES_OK: u32 = 8;
const S_FAILED: u32 = 0x80;

/// Feature bit VIRTIO_F_VERSION_1.
pub const F_VERSION_1: u64 = 1 << 32;
/// Device ids.
pub const ID_NET: u32 = 1;
pub const ID_BLK: u32 = 2;

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;

/// Where a device was found.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Dsdt,
    Cmdline,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Dsdt => "dsdt",
            Source::Cmdline => "cmdline",
        }
    }
}

/// One virtqueue's memory: descriptor table (2 KiB), available ring, used ring (own page).
#[repr(C, align(4096))]
struct QueueMem {
    desc: [u64; 2 * QUEUE_SIZE as usize],
    avail: [u16; 3 + QUEUE_SIZE as usize],
    _pad: [u8; 4096 - 16 * QUEUE_SIZE as usize - 2 * (3 + QUEUE_SIZE as usize)],
    used: [u32; 1 + 2 * QUEUE_SIZE as usize + 1],
}

static mut QUEUES: [[QueueMem; MAX_QUEUES]; MAX_DEVICES] = [const {
    [const {
        QueueMem {
            desc: [0; 2 * QUEUE_SIZE as usize],
            avail: [0; 3 + QUEUE_SIZE as usize],
            _pad: [0; 4096 - 16 * QUEUE_SIZE as usize - 2 * (3 + QUEUE_SIZE as usize)],
            used: [0; 1 + 2 * QUEUE_SIZE as usize + 1],
        }
    }; MAX_QUEUES]
}; MAX_DEVICES];

/// The driver's view of one queue.
#[derive(Clone, Copy, Default)]
pub struct QueueState {
    /// Queue size in use (0: not set up).
    pub size: u16,
    /// Our copy of the available index.
    avail_idx: u16,
    /// Used entries consumed so far.
    last_used: u16,
}

/// A device that answered with the virtio magic.
#[derive(Clone, Copy)]
pub struct Device {
    pub base: u64,
    pub gsi: u32,
    pub source: Source,
    pub device_id: u32,
    /// Device feature bits (low 32, high 32).
    pub features: u64,
    /// Feature bits negotiated (a subset of `features`).
    pub driver_features: u64,
    pub queues: [QueueState; MAX_QUEUES],
    slot: usize,
}

static mut DEVICES: [Option<Device>; MAX_DEVICES] = [None; MAX_DEVICES];
static mut COUNT: usize = 0;

fn reg(d: &Device, off: u64) -> u32 {
    mmio_read32(d.base + off)
}

fn set_reg(d: &Device, off: u64, v: u32) {
    mmio_write32(d.base + off, v);
}

/// Every device found, in discovery order.
pub fn devices() -> &'static mut [Option<Device>] {
    // SAFETY: only the boot CPU runs driver code; the interrupt handler reads `base` only.
    unsafe {
        let n = *(&raw const COUNT);
        &mut (&mut *(&raw mut DEVICES))[..n]
    }
}

/// Parses `virtio_mmio.device=<size>@<addr>:<irq>` tokens.
fn cmdline_devices(cmdline: &str, mut f: impl FnMut(u64, u32)) {
    for token in cmdline.split_ascii_whitespace() {
        let Some(spec) = token.strip_prefix("virtio_mmio.device=") else { continue };
        let Some((_, rest)) = spec.split_once('@') else { continue };
        let Some((addr, irq)) = rest.split_once(':') else { continue };
        let irq = irq.split(':').next().unwrap_or("");
        let addr = addr.trim_start_matches("0x");
        if let (Ok(addr), Ok(irq)) = (u64::from_str_radix(addr, 16), irq.parse::<u32>()) {
            f(addr, irq);
        }
    }
}

/// Finds the devices from the DSDT and the command line (the same window found twice counts
/// once), routes their interrupts and brings up every block device. Returns how many answered.
pub fn probe(acpi: Option<&AcpiInfo>, cmdline: &str) -> usize {
    let mut found: [(u64, u32, bool, bool, Source); 40] = [(0, 0, false, false, Source::Dsdt); 40];
    let mut n = 0;
    let mut add = |base: u64, gsi: u32, level: bool, low: bool, src: Source| {
        if n < found.len() && !found[..n].iter().any(|f| f.0 == base) {
            found[n] = (base, gsi, level, low, src);
            n += 1;
        }
    };
    if let Some(a) = acpi {
        for m in a.mmio_devices() {
            add(m.base, m.gsi, m.level, m.active_low, Source::Dsdt);
        }
    }
    cmdline_devices(cmdline, |base, gsi| add(base, gsi, false, false, Source::Cmdline));
    let mut count = 0;
    for &(base, gsi, level, low, source) in &found[..n] {
        if mmio_read32(base + MAGIC) != 0x7472_6976 {
            continue;
        }
        let version = mmio_read32(base + VERSION);
        let device_id = mmio_read32(base + DEVICE_ID);
        if device_id == 0 {
            continue; // an empty transport slot (QEMU microvm lists all of them)
        }
        if version != 2 {
            println!("testguest: virtio base={base:#x} version={version}: only modern (2) is supported");
            continue;
        }
        if count == MAX_DEVICES {
            break;
        }
        let mut dev = Device {
            base,
            gsi,
            source,
            device_id,
            features: 0,
            driver_features: 0,
            queues: [QueueState::default(); MAX_QUEUES],
            slot: count,
        };
        let started = match device_id {
            ID_BLK => start(&mut dev, F_VERSION_1, 1),
            ID_NET => start(&mut dev, F_VERSION_1 | crate::net::virtio_net::F_MAC, 2),
            _ => true,
        };
        if !started {
            println!("testguest: virtio base={base:#x} failed to start");
            continue;
        }
        interrupts::route(gsi, VIRTIO_VECTOR, level, low);
        // SAFETY: single-threaded set-up; slot `count` is ours.
        unsafe {
            (*(&raw mut DEVICES))[count] = Some(dev);
            *(&raw mut COUNT) = count + 1;
        }
        count += 1;
    }
    count
}

/// The driver's initialisation sequence (virtio 1.2 §3.1.1): negotiates `wanted` (VERSION_1 is
/// required) and sets up queues `0..queues`.
fn start(d: &mut Device, wanted: u64, queues: usize) -> bool {
    set_reg(d, STATUS, 0);
    set_reg(d, STATUS, S_ACKNOWLEDGE);
    set_reg(d, STATUS, S_ACKNOWLEDGE | S_DRIVER);
    set_reg(d, DEVICE_FEATURES_SEL, 0);
    let low = reg(d, DEVICE_FEATURES);
    set_reg(d, DEVICE_FEATURES_SEL, 1);
    let high = reg(d, DEVICE_FEATURES);
    d.features = u64::from(low) | (u64::from(high) << 32);
    if d.features & F_VERSION_1 == 0 {
        set_reg(d, STATUS, S_FAILED);
        return false;
    }
    d.driver_features = d.features & wanted;
    set_reg(d, DRIVER_FEATURES_SEL, 0);
    set_reg(d, DRIVER_FEATURES, d.driver_features as u32);
    set_reg(d, DRIVER_FEATURES_SEL, 1);
    set_reg(d, DRIVER_FEATURES, (d.driver_features >> 32) as u32);
    set_reg(d, STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
    if reg(d, STATUS) & S_FEATURES_OK == 0 {
        set_reg(d, STATUS, S_FAILED);
        return false;
    }
    for qi in 0..queues.min(MAX_QUEUES) {
        set_reg(d, QUEUE_SEL, qi as u32);
        let max = reg(d, QUEUE_NUM_MAX);
        if max == 0 {
            set_reg(d, STATUS, S_FAILED);
            return false;
        }
        let size = QUEUE_SIZE.min(max as u16);
        d.queues[qi] = QueueState { size, avail_idx: 0, last_used: 0 };
        let q = queue_mem(d.slot, qi);
        let (desc, avail, used) = (
            q.desc.as_ptr() as u64,
            q.avail.as_ptr() as u64,
            q.used.as_ptr() as u64,
        );
        q.avail.fill(0);
        q.used.fill(0);
        set_reg(d, QUEUE_NUM, u32::from(size));
        for (off, addr) in [(QUEUE_DESC, desc), (QUEUE_AVAIL, avail), (QUEUE_USED, used)] {
            set_reg(d, off, addr as u32);
            set_reg(d, off + 4, (addr >> 32) as u32);
        }
        set_reg(d, QUEUE_READY, 1);
    }
    set_reg(d, STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    reg(d, STATUS) & S_DRIVER_OK != 0
}

fn queue_mem(slot: usize, queue: usize) -> &'static mut QueueMem {
    // SAFETY: each device owns its slot; only the boot CPU touches the rings.
    unsafe { &mut (*(&raw mut QUEUES))[slot][queue] }
}

/// Reads a config-space u32 (at `CONFIG + off`) consistently (config generation check).
pub fn config32(d: &Device, off: u64) -> u32 {
    mmio_read32(d.base + CONFIG + off)
}

/// Reads a config-space u64 as two u32 halves, retried until the generation is stable.
pub fn config64(d: &Device, off: u64) -> u64 {
    loop {
        let g = reg(d, CONFIG_GENERATION);
        let v = u64::from(config32(d, off)) | (u64::from(config32(d, off + 4)) << 32);
        if reg(d, CONFIG_GENERATION) == g {
            return v;
        }
    }
}

/// Reads config-space byte `off` (no generation check: see [`config_bytes`]).
fn config8(d: &Device, off: u64) -> u8 {
    // SAFETY: a byte read of the device's config window (virtio-mmio allows byte access).
    unsafe { core::ptr::read_volatile((d.base + CONFIG + off) as *const u8) }
}

/// Reads config-space bytes `off..off + out.len()`, retried until the generation is stable.
pub fn config_bytes(d: &Device, off: u64, out: &mut [u8]) {
    loop {
        let g = reg(d, CONFIG_GENERATION);
        for (i, b) in out.iter_mut().enumerate() {
            *b = config8(d, off + i as u64);
        }
        if reg(d, CONFIG_GENERATION) == g {
            return;
        }
    }
}

/// Writes descriptor `i`.
pub fn set_desc(d: &Device, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    set_desc_q(d, 0, i, addr, len, flags, next);
}

/// Writes descriptor `i` of queue `qi`.
pub fn set_desc_q(d: &Device, qi: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let q = queue_mem(d.slot, qi);
    let i = usize::from(i % d.queues[qi].size);
    // SAFETY: in-bounds volatile writes to our own ring memory (the device reads it).
    unsafe {
        let p = q.desc.as_mut_ptr().add(2 * i);
        p.write_volatile(addr);
        p.add(1)
            .write_volatile(u64::from(len) | (u64::from(flags) << 32) | (u64::from(next) << 48));
    }
}

/// Makes the chain starting at descriptor `head` available (does not notify).
pub fn push_avail(d: &mut Device, head: u16) {
    push_avail_q(d, 0, head);
}

/// Makes the chain starting at descriptor `head` of queue `qi` available (does not notify).
pub fn push_avail_q(d: &mut Device, qi: usize, head: u16) {
    let q = queue_mem(d.slot, qi);
    let st = &mut d.queues[qi];
    let slot = 2 + usize::from(st.avail_idx % st.size);
    // SAFETY: in-bounds volatile writes to our available ring.
    unsafe { q.avail.as_mut_ptr().add(slot).write_volatile(head) };
    st.avail_idx = st.avail_idx.wrapping_add(1);
    fence(Ordering::SeqCst);
    // SAFETY: as above (the index field).
    unsafe { q.avail.as_mut_ptr().add(1).write_volatile(st.avail_idx) };
}

/// Asks the device not to interrupt (`suppress`) or to interrupt again when it returns buffers
/// of queue `qi` (VIRTQ_AVAIL_F_NO_INTERRUPT; a hint the device may ignore).
pub fn suppress_interrupts_q(d: &Device, qi: usize, suppress: bool) {
    let q = queue_mem(d.slot, qi);
    // SAFETY: in-bounds volatile write of our available ring's flags field.
    unsafe { q.avail.as_mut_ptr().write_volatile(u16::from(suppress)) };
    fence(Ordering::SeqCst);
}

/// Tells the device about new available buffers (queue 0).
pub fn notify(d: &Device) {
    notify_q(d, 0);
}

/// Tells the device about new available buffers in queue `qi`.
pub fn notify_q(d: &Device, qi: usize) {
    fence(Ordering::SeqCst);
    set_reg(d, QUEUE_NOTIFY, qi as u32);
}

/// The next used entry (descriptor head, length), if the device returned one.
pub fn pop_used(d: &mut Device) -> Option<(u16, u32)> {
    pop_used_q(d, 0)
}

/// The next used entry of queue `qi` (descriptor head, length), if there is one.
pub fn pop_used_q(d: &mut Device, qi: usize) -> Option<(u16, u32)> {
    let q = queue_mem(d.slot, qi);
    let st = &mut d.queues[qi];
    // SAFETY: volatile reads of the used ring the device writes.
    let idx = unsafe { (q.used.as_ptr() as *const u16).add(1).read_volatile() };
    if idx == st.last_used {
        return None;
    }
    fence(Ordering::SeqCst);
    let e = 1 + 2 * usize::from(st.last_used % st.size);
    // SAFETY: in-bounds volatile reads of used element `e`.
    let (id, len) = unsafe { (q.used.as_ptr().add(e).read_volatile(), q.used.as_ptr().add(e + 1).read_volatile()) };
    st.last_used = st.last_used.wrapping_add(1);
    Some((id as u16, len))
}

/// Whether the device has returned buffers we have not consumed (queue 0).
pub fn has_used(d: &Device) -> bool {
    has_used_q(d, 0)
}

/// Whether queue `qi` has used buffers we have not consumed.
pub fn has_used_q(d: &Device, qi: usize) -> bool {
    let q = queue_mem(d.slot, qi);
    // SAFETY: volatile read of the used index.
    let idx = unsafe { (q.used.as_ptr() as *const u16).add(1).read_volatile() };
    idx != d.queues[qi].last_used
}

/// Sleeps (`sti; hlt`) until the device has used buffers; the power button still powers off.
pub fn wait_used(d: &Device, acpi: Option<&AcpiInfo>) {
    loop {
        cli();
        crate::power::check_button(acpi);
        if has_used(d) {
            sti();
            return;
        }
        sti_hlt();
    }
}

/// virtio interrupts taken (all devices).
pub static INTERRUPTS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Interrupt handler body: acknowledge every device's pending interrupt.
pub fn on_interrupt() {
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: plain copies of the device records (written only during probe, before the vector
    // is routed); the main code may hold a reference, so no reference is formed here.
    let n = unsafe { *(&raw const COUNT) };
    for i in 0..n {
        // SAFETY: as above; i < COUNT <= MAX_DEVICES.
        let Some(d) = (unsafe { (*(&raw const DEVICES))[i] }) else { continue };
        let status = reg(&d, INTERRUPT_STATUS);
        if status != 0 {
            set_reg(&d, INTERRUPT_ACK, status);
        }
    }
}
