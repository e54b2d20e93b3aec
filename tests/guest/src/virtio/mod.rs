//! virtio driver side, common to both transports: [`mmio`] (windows from the DSDT and the
//! command line) and [`pci`] (functions on the ECAM bus, MSI-X). [`probe`] finds the devices,
//! brings block (id 2) and network (id 1) devices up through the [`Transport`] interface (reset,
//! ACKNOWLEDGE, DRIVER, features, FEATURES_OK, interrupts, queues, DRIVER_OK) and the rest of
//! this module runs their split virtqueues (up to [`MAX_QUEUES`] per device: blk uses queue 0,
//! net uses rx = 0 and tx = 1), whatever the transport. The `*_q` functions name the queue; the
//! others mean queue 0.
//!
//! Interrupts: every virtio-mmio device's line arrives on one vector, whose handler acknowledges
//! them at the devices; a virtio-pci device signals MSI-X messages, one IDT vector per table
//! entry ([`msix_vector`]), that need no acknowledgement. Either way waiting for a completion is
//! `cli; check the used ring; sti; hlt`, so an idle guest never spins.
//!
//! Console command `virtio irqs`: one line per device with the interrupts it took,
//! `testguest: virtio irqs dev=N gsi=G count=C` (mmio) or
//! `testguest: virtio irqs dev=N msix config=C q0=A q1=B` (pci, per MSI-X entry).

pub mod mmio;
pub mod pci;

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use crate::acpi::AcpiInfo;
use crate::interrupts::MSIX_VECTOR_BASE;
use crate::io::{cli, sti, sti_hlt};
use crate::println;

/// Most devices driven.
pub const MAX_DEVICES: usize = 8;
/// Queue size used (the device may offer more).
pub const QUEUE_SIZE: u16 = 128;
/// Most queues per device.
pub const MAX_QUEUES: usize = 2;
/// MSI-X entries (IDT vectors) per device: configuration changes, then one per queue.
pub const VECTORS_PER_DEVICE: usize = 1 + MAX_QUEUES;

const S_ACKNOWLEDGE: u8 = 1;
const S_DRIVER: u8 = 2;
const S_DRIVER_OK: u8 = 4;
const S_FEATURES_OK: u8 = 8;
const S_FAILED: u8 = 0x80;

/// Feature bit VIRTIO_F_VERSION_1.
pub const F_VERSION_1: u64 = 1 << 32;
/// Device ids.
pub const ID_NET: u32 = 1;
pub const ID_BLK: u32 = 2;

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;

/// What the common driver code needs from a transport (virtio 1.2 §4.1 and §4.2).
pub trait Transport {
    fn status(&self) -> u8;
    fn set_status(&self, status: u8);
    /// Writes 0 and waits (bounded) until the status reads back 0.
    fn reset(&mut self) -> bool {
        self.set_status(0);
        (0..1000).any(|_| self.status() == 0)
    }
    /// The 64 device feature bits.
    fn device_features(&self) -> u64;
    fn set_driver_features(&self, features: u64);
    /// Sets up the device's interrupts for `queues` queues (after FEATURES_OK, before the
    /// queues); `slot` is the device's index.
    fn enable_interrupts(&mut self, slot: usize, queues: usize) -> Result<(), &'static str>;
    /// Selects queue `qi` and returns its maximum size (0: no such queue).
    fn queue_max(&self, qi: u16) -> u16;
    /// Sets queue `qi` up with `size` entries and the rings at (descriptors, driver, device).
    fn queue_enable(&mut self, qi: u16, size: u16, rings: [u64; 3]) -> Result<(), &'static str>;
    fn notify(&self, qi: u16);
    fn config_generation(&self) -> u32;
    /// Device configuration byte / u32 at `off`.
    fn config8(&self, off: u64) -> u8;
    fn config32(&self, off: u64) -> u32;
    /// MSI-X entries in use (0: an interrupt line).
    fn interrupt_vectors(&self) -> usize;
    /// `base=... gsi=N via=dsdt|cmdline` or `base=... msix=N via=pci:BB:DD.F`.
    fn describe(&self, f: &mut fmt::Formatter) -> fmt::Result;
}

/// A device's transport.
#[derive(Clone, Copy)]
pub enum Link {
    Mmio(mmio::Mmio),
    Pci(pci::Pci),
}

impl Link {
    fn ops(&self) -> &dyn Transport {
        match self {
            Link::Mmio(m) => m,
            Link::Pci(p) => p,
        }
    }

    fn ops_mut(&mut self) -> &mut dyn Transport {
        match self {
            Link::Mmio(m) => m,
            Link::Pci(p) => p,
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.ops().describe(f)
    }
}

/// The IDT vector of MSI-X entry `entry` of device `slot`.
pub fn msix_vector(slot: usize, entry: usize) -> u8 {
    MSIX_VECTOR_BASE + (slot * VECTORS_PER_DEVICE + entry) as u8
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

/// A device that was started.
#[derive(Clone, Copy)]
pub struct Device {
    pub link: Link,
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

/// Every device found, in discovery order.
pub fn devices() -> &'static mut [Option<Device>] {
    // SAFETY: only the boot CPU runs driver code; the interrupt handler copies the records.
    unsafe {
        let n = *(&raw const COUNT);
        &mut (&mut *(&raw mut DEVICES))[..n]
    }
}

impl Device {
    /// Index in discovery order (`dev=` in the console lines).
    pub fn index(&self) -> usize {
        self.slot
    }
}

fn add_device(mut dev: Device, count: &mut usize) {
    let started = match dev.device_id {
        ID_BLK => start(&mut dev, F_VERSION_1, 1),
        ID_NET => start(&mut dev, F_VERSION_1 | crate::net::virtio_net::F_MAC, 2),
        _ => Ok(()),
    };
    if let Err(why) = started {
        println!("testguest: virtio {} failed to start: {why}", dev.link);
        return;
    }
    // SAFETY: single-threaded set-up; slot `count` is ours.
    unsafe {
        (*(&raw mut DEVICES))[*count] = Some(dev);
        *(&raw mut COUNT) = *count + 1;
    }
    *count += 1;
}

/// Finds the devices — virtio-mmio windows (DSDT, command line), then virtio-pci functions on
/// the MCFG's ECAM bus — and brings up every block and network device. Returns how many
/// answered.
pub fn probe(acpi: Option<&AcpiInfo>, cmdline: &str) -> usize {
    let mut count = 0;
    let device = |link, device_id, slot| Device {
        link,
        device_id,
        features: 0,
        driver_features: 0,
        queues: [QueueState::default(); MAX_QUEUES],
        slot,
    };
    mmio::discover(acpi, cmdline, |m, id| {
        if count < MAX_DEVICES {
            add_device(device(Link::Mmio(m), id, count), &mut count);
        }
    });
    let Some(ecam) = acpi.and_then(|a| a.ecam) else {
        return count;
    };
    let window = acpi.and_then(|a| a.pci_window);
    crate::pci::scan(&ecam, window, |f| {
        let Some(id) = pci::device_type(&f) else {
            return;
        };
        if count == MAX_DEVICES {
            return;
        }
        match pci::Pci::new(f) {
            Ok(p) => add_device(device(Link::Pci(p), id, count), &mut count),
            Err(why) => println!("testguest: virtio pci:{f} unusable: {why}"),
        }
    });
    count
}

/// The driver's initialisation sequence (virtio 1.2 §3.1.1): negotiates `wanted` (VERSION_1 is
/// required), sets up the interrupts and queues `0..queues`.
fn start(d: &mut Device, wanted: u64, queues: usize) -> Result<(), &'static str> {
    let r = start_steps(d, wanted, queues.min(MAX_QUEUES));
    if r.is_err() {
        d.link.ops().set_status(S_FAILED);
    }
    r
}

fn start_steps(d: &mut Device, wanted: u64, queues: usize) -> Result<(), &'static str> {
    let slot = d.slot;
    let t = d.link.ops_mut();
    if !t.reset() {
        return Err("reset did not complete");
    }
    t.set_status(S_ACKNOWLEDGE);
    t.set_status(S_ACKNOWLEDGE | S_DRIVER);
    d.features = t.device_features();
    if d.features & F_VERSION_1 == 0 {
        return Err("no VERSION_1");
    }
    d.driver_features = d.features & wanted;
    t.set_driver_features(d.driver_features);
    t.set_status(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
    if t.status() & S_FEATURES_OK == 0 {
        return Err("FEATURES_OK not accepted");
    }
    t.enable_interrupts(slot, queues)?;
    for qi in 0..queues {
        let max = t.queue_max(qi as u16);
        if max == 0 {
            return Err("queue missing");
        }
        let size = QUEUE_SIZE.min(max);
        d.queues[qi] = QueueState {
            size,
            avail_idx: 0,
            last_used: 0,
        };
        let q = queue_mem(slot, qi);
        q.avail.fill(0);
        q.used.fill(0);
        let rings = [
            q.desc.as_ptr() as u64,
            q.avail.as_ptr() as u64,
            q.used.as_ptr() as u64,
        ];
        t.queue_enable(qi as u16, size, rings)?;
    }
    t.set_status(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    if t.status() & S_DRIVER_OK == 0 {
        return Err("DRIVER_OK not accepted");
    }
    Ok(())
}

fn queue_mem(slot: usize, queue: usize) -> &'static mut QueueMem {
    // SAFETY: each device owns its slot; only the boot CPU touches the rings.
    unsafe { &mut (*(&raw mut QUEUES))[slot][queue] }
}

/// Tries of a configuration read whose generation keeps changing (then the last read counts).
const CONFIG_TRIES: usize = 100;

/// Reads a device-configuration u64 as two u32 halves, retried until the generation is stable.
pub fn config64(d: &Device, off: u64) -> u64 {
    let t = d.link.ops();
    let mut v = 0;
    for _ in 0..CONFIG_TRIES {
        let g = t.config_generation();
        v = u64::from(t.config32(off)) | (u64::from(t.config32(off + 4)) << 32);
        if t.config_generation() == g {
            break;
        }
    }
    v
}

/// Reads device-configuration bytes `off..off + out.len()`, retried until the generation is
/// stable.
pub fn config_bytes(d: &Device, off: u64, out: &mut [u8]) {
    let t = d.link.ops();
    for _ in 0..CONFIG_TRIES {
        let g = t.config_generation();
        for (i, b) in out.iter_mut().enumerate() {
            *b = t.config8(off + i as u64);
        }
        if t.config_generation() == g {
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
    d.link.ops().notify(qi as u16);
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
    let (id, len) = unsafe {
        (
            q.used.as_ptr().add(e).read_volatile(),
            q.used.as_ptr().add(e + 1).read_volatile(),
        )
    };
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
pub static INTERRUPTS: AtomicU64 = AtomicU64::new(0);

/// Interrupts per device and MSI-X entry (an mmio device counts in its entry 0).
static PER_VECTOR: [AtomicU32; MAX_DEVICES * VECTORS_PER_DEVICE] =
    [const { AtomicU32::new(0) }; MAX_DEVICES * VECTORS_PER_DEVICE];

/// Interrupt handler body for the virtio-mmio line: acknowledge every device's pending
/// interrupt.
pub fn on_interrupt() {
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: plain copies of the device records (each written once during probe, before COUNT
    // covers it); the main code may hold a reference, so no reference is formed here.
    let n = unsafe { *(&raw const COUNT) };
    for i in 0..n {
        // SAFETY: as above; i < COUNT <= MAX_DEVICES.
        let Some(d) = (unsafe { (*(&raw const DEVICES))[i] }) else {
            continue;
        };
        if let Link::Mmio(m) = d.link
            && m.acknowledge()
        {
            PER_VECTOR[i * VECTORS_PER_DEVICE].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Interrupt handler body for MSI-X vector `index` (IDT vector - [`MSIX_VECTOR_BASE`]): count it.
pub fn on_msix(index: usize) {
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    if let Some(c) = PER_VECTOR.get(index) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs a `virtio ...` console command.
pub fn command(line: &str) {
    if line.trim() != "irqs" {
        println!("testguest: virtio: unknown command \"{line}\"");
        return;
    }
    for (i, d) in devices().iter().enumerate() {
        let Some(d) = d else { continue };
        let count = |e: usize| PER_VECTOR[i * VECTORS_PER_DEVICE + e].load(Ordering::Relaxed);
        match &d.link {
            Link::Mmio(m) => println!(
                "testguest: virtio irqs dev={i} gsi={} count={}",
                m.gsi,
                count(0)
            ),
            Link::Pci(p) => {
                crate::serial::print(format_args!(
                    "testguest: virtio irqs dev={i} msix config={}",
                    count(0)
                ));
                for e in 1..p.interrupt_vectors() {
                    crate::serial::print(format_args!(" q{}={}", e - 1, count(e)));
                }
                println!("");
            }
        }
    }
}
