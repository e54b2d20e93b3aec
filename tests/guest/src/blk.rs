//! virtio-blk on top of [`crate::virtio`]: synchronous requests for the tests (read, write, flush,
//! GET_ID, deliberately bad requests) and a queued sequential-read benchmark, plus the boot report.
//!
//! Each request uses three descriptors — header, data, status — at fixed indices `3s..3s+2` for
//! request slot `s`, so several requests can be in flight without a free list.
//!
//! Console commands (`DEV` is the index in discovery order, 0 = vda):
//! * `blk list` — one `testguest: blk dev=...` line per device;
//! * `blk read DEV SECTOR COUNT` — `... status=S fnv=0x... head=<16 bytes hex>`;
//! * `blk write DEV SECTOR COUNT SEED` — writes byte `i` = `(i as u8) ^ SEED`, prints the same;
//! * `blk flush DEV`, `blk id DEV`;
//! * `blk bad DEV` — requests a hostile driver would send (beyond the capacity, unknown type,
//!   data outside guest RAM, a partial sector) and the status each got;
//! * `blk bench DEV MIB DEPTH KIB` — reads MIB MiB sequentially in KIB-KiB requests, DEPTH in
//!   flight (wrapping around to the start of the disk if MIB exceeds it), between
//!   `blk bench start` and `blk bench done` lines (the host times them).

use crate::acpi::AcpiInfo;
use crate::virtio::{self, DESC_F_NEXT, DESC_F_WRITE, Device};
use crate::{cidata, println, serial};

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
const F_RO: u64 = 1 << 5;
/// Request slots per device (three descriptors each).
pub const SLOTS: usize = virtio::QUEUE_SIZE as usize / 3;
/// Data buffer shared by the commands (the benchmark splits it between its slots).
pub const DATA_SIZE: usize = 4 << 20;

#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct Header {
    kind: u32,
    reserved: u32,
    sector: u64,
}

#[repr(C, align(4096))]
struct Data([u8; DATA_SIZE]);

static mut HEADERS: [[Header; SLOTS]; virtio::MAX_DEVICES] = [[Header {
    kind: 0,
    reserved: 0,
    sector: 0,
}; SLOTS]; virtio::MAX_DEVICES];
static mut STATUS: [[u8; SLOTS]; virtio::MAX_DEVICES] = [[0; SLOTS]; virtio::MAX_DEVICES];
static mut DATA: Data = Data([0; DATA_SIZE]);

/// The shared data buffer.
pub fn data() -> &'static mut [u8] {
    // SAFETY: only the boot CPU uses it, one command at a time.
    unsafe { &mut (*(&raw mut DATA)).0 }
}

fn data_addr() -> u64 {
    &raw const DATA as u64
}

fn dev_index(d: &Device) -> usize {
    d.index()
}

fn status_ptr(dev: usize, slot: usize) -> *mut u8 {
    // SAFETY: in-bounds element pointer of a static array.
    unsafe { (&raw mut STATUS).cast::<u8>().add(dev * SLOTS + slot) }
}

/// Queues request `slot`: header, optional data buffer (`write_to_guest`: the device fills it),
/// status. Does not notify.
fn submit(
    d: &mut Device,
    slot: usize,
    kind: u32,
    sector: u64,
    buf: u64,
    len: u32,
    write_to_guest: bool,
) {
    let dev = dev_index(d);
    // SAFETY: in-bounds static slots owned by this device and request slot.
    let hdr = unsafe {
        let h = (&raw mut HEADERS).cast::<Header>().add(dev * SLOTS + slot);
        h.write_volatile(Header {
            kind,
            reserved: 0,
            sector,
        });
        h as u64
    };
    let status = status_ptr(dev, slot);
    // SAFETY: as above.
    unsafe { status.write_volatile(0xff) };
    let base = (slot * 3) as u16;
    if len > 0 {
        virtio::set_desc(d, base, hdr, 16, DESC_F_NEXT, base + 1);
        let flags = DESC_F_NEXT | if write_to_guest { DESC_F_WRITE } else { 0 };
        virtio::set_desc(d, base + 1, buf, len, flags, base + 2);
    } else {
        virtio::set_desc(d, base, hdr, 16, DESC_F_NEXT, base + 2);
    }
    virtio::set_desc(d, base + 2, status as u64, 1, DESC_F_WRITE, 0);
    virtio::push_avail(d, base);
}

/// The status byte of a completed request slot.
fn slot_status(d: &Device, slot: usize) -> u8 {
    // SAFETY: in-bounds static slot.
    unsafe { status_ptr(dev_index(d), slot).read_volatile() }
}

/// One request, waited for (`sti; hlt`); returns its status byte.
pub fn request(
    d: &mut Device,
    kind: u32,
    sector: u64,
    buf: u64,
    len: u32,
    acpi: Option<&AcpiInfo>,
) -> u8 {
    submit(d, 0, kind, sector, buf, len, kind != T_OUT);
    virtio::notify(d);
    loop {
        virtio::wait_used(d, acpi);
        if let Some((head, _)) = virtio::pop_used(d) {
            return slot_status(d, usize::from(head) / 3);
        }
    }
}

/// The device's serial (GET_ID), NUL bytes stripped.
pub fn serial_of(d: &mut Device, acpi: Option<&AcpiInfo>) -> ([u8; 20], usize) {
    let buf = data();
    buf[..20].fill(0);
    let st = request(d, T_GET_ID, 0, data_addr(), 20, acpi);
    let mut id = [0u8; 20];
    id.copy_from_slice(&buf[..20]);
    let len = if st == 0 {
        id.iter().position(|b| *b == 0).unwrap_or(20)
    } else {
        0
    };
    (id, len)
}

fn capacity(d: &Device) -> u64 {
    virtio::config64(d, 0)
}

fn report(i: usize, d: &mut Device, acpi: Option<&AcpiInfo>) {
    if d.device_id != 2 {
        println!(
            "testguest: virtio dev={i} {} device_id={}",
            d.link, d.device_id
        );
        return;
    }
    let (id, len) = serial_of(d, acpi);
    println!(
        "testguest: blk dev={i} {} capacity={} ro={} serial=\"{}\"",
        d.link,
        capacity(d),
        u8::from(d.features & F_RO != 0),
        core::str::from_utf8(&id[..len]).unwrap_or("?")
    );
}

/// At boot: probe, report every device, and read the NoCloud seed if there is one.
pub fn boot(acpi: Option<&AcpiInfo>, cmdline: &str) {
    let n = virtio::probe(acpi, cmdline);
    if n == 0 {
        return;
    }
    println!("testguest: virtio devices={n}");
    for i in 0..n {
        if let Some(d) = virtio::devices()[i].as_mut() {
            report(i, d, acpi);
        }
    }
    for i in 0..n {
        if let Some(d) = virtio::devices()[i].as_mut() {
            if d.device_id == 2 && cidata::report(i, d, acpi) {
                break;
            }
        }
    }
}

/// FNV-1a (64-bit) of `bytes`.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn print_result(what: &str, dev: usize, sector: u64, count: u32, st: u8, bytes: &[u8]) {
    serial::print(format_args!(
        "testguest: blk {what} dev={dev} sector={sector} count={count} status={st} fnv={:#018x} head=",
        fnv(bytes)
    ));
    for b in bytes.iter().take(16) {
        serial::print(format_args!("{b:02x}"));
    }
    println!("");
}

fn arg<T: core::str::FromStr>(args: &mut core::str::SplitAsciiWhitespace, default: T) -> T {
    args.next().and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// Runs a `blk ...` console command.
pub fn command(line: &str, acpi: Option<&AcpiInfo>) {
    let mut args = line.split_ascii_whitespace();
    let verb = args.next().unwrap_or("");
    if verb == "list" {
        for i in 0..virtio::devices().len() {
            if let Some(d) = virtio::devices()[i].as_mut() {
                report(i, d, acpi);
            }
        }
        return;
    }
    let dev: usize = arg(&mut args, usize::MAX);
    let Some(d) = virtio::devices()
        .get_mut(dev)
        .and_then(|d| d.as_mut())
        .filter(|d| d.device_id == 2)
    else {
        println!("testguest: blk: no block device {dev}");
        return;
    };
    match verb {
        "read" | "write" => {
            let sector: u64 = arg(&mut args, 0);
            let count: u32 = arg(&mut args, 1);
            let len = (count as usize * 512).min(DATA_SIZE);
            let buf = &mut data()[..len];
            let st = if verb == "read" {
                buf.fill(0);
                request(d, T_IN, sector, data_addr(), len as u32, acpi)
            } else {
                let seed: u8 = arg(&mut args, 0);
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = (i as u8) ^ seed;
                }
                request(d, T_OUT, sector, data_addr(), len as u32, acpi)
            };
            print_result(verb, dev, sector, count, st, &data()[..len]);
        }
        "flush" => {
            let st = request(d, T_FLUSH, 0, 0, 0, acpi);
            println!("testguest: blk flush dev={dev} status={st}");
        }
        "id" => {
            let (id, len) = serial_of(d, acpi);
            println!(
                "testguest: blk id dev={dev} serial=\"{}\"",
                core::str::from_utf8(&id[..len]).unwrap_or("?")
            );
        }
        "bad" => bad_requests(d, dev, acpi),
        "bench" => bench(d, dev, &mut args, acpi),
        _ => println!("testguest: blk: unknown command \"{line}\""),
    }
}

/// Requests a hostile driver might send; the VMM must answer each with an error status.
fn bad_requests(d: &mut Device, dev: usize, acpi: Option<&AcpiInfo>) {
    let cap = capacity(d);
    let beyond = request(d, T_IN, cap, data_addr(), 512, acpi);
    let straddle = request(d, T_IN, cap.saturating_sub(1), data_addr(), 1024, acpi);
    let huge = request(d, T_IN, u64::MAX - 1, data_addr(), 1024, acpi);
    let unknown = request(d, 0x77, 0, data_addr(), 512, acpi);
    // The 32-bit MMIO hole starts at 3 GiB: 0xc800_0000 is never RAM.
    let outside = request(d, T_IN, 0, 0xc800_0000, 4096, acpi);
    let partial = request(d, T_IN, 0, data_addr(), 100, acpi);
    println!(
        "testguest: blk bad dev={dev} beyond={beyond} straddle={straddle} huge={huge} unknown={unknown} outside={outside} partial={partial}"
    );
}

/// Sequential reads with several requests in flight; the host times start → done.
fn bench(
    d: &mut Device,
    dev: usize,
    args: &mut core::str::SplitAsciiWhitespace,
    acpi: Option<&AcpiInfo>,
) {
    let mib: u64 = arg(args, 256);
    let depth: usize = arg::<usize>(args, 4).clamp(1, SLOTS);
    let kib: usize = arg::<usize>(args, 256).clamp(4, DATA_SIZE / 1024 / depth);
    let req_bytes = kib * 1024;
    let sectors_per_req = (req_bytes / 512) as u64;
    // MIB may exceed the disk: the reads then wrap around to its start.
    let disk_requests = (capacity(d) / sectors_per_req).max(1);
    let requests = (mib << 20) / req_bytes as u64;
    let sector = |n: u64| (n % disk_requests) * sectors_per_req;
    println!(
        "testguest: blk bench start dev={dev} bytes={} depth={depth} request_kib={kib}",
        requests * req_bytes as u64
    );
    let (mut submitted, mut completed, mut errors) = (0u64, 0u64, 0u64);
    for slot in 0..depth.min(requests as usize) {
        let buf = data_addr() + (slot * req_bytes) as u64;
        submit(
            d,
            slot,
            T_IN,
            sector(submitted),
            buf,
            req_bytes as u32,
            true,
        );
        submitted += 1;
    }
    virtio::notify(d);
    while completed < requests {
        virtio::wait_used(d, acpi);
        let mut refill = false;
        while let Some((head, _)) = virtio::pop_used(d) {
            let slot = usize::from(head) / 3;
            completed += 1;
            if slot_status(d, slot) != 0 {
                errors += 1;
            }
            if submitted < requests {
                let buf = data_addr() + (slot * req_bytes) as u64;
                submit(
                    d,
                    slot,
                    T_IN,
                    sector(submitted),
                    buf,
                    req_bytes as u32,
                    true,
                );
                submitted += 1;
                refill = true;
            }
        }
        if refill {
            virtio::notify(d);
        }
    }
    println!("testguest: blk bench done dev={dev} requests={completed} errors={errors}");
}
