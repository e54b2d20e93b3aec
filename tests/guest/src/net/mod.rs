//! Network mode: a virtio-net driver ([`virtio_net`]), smoltcp over it ([`phy`]), addressing by
//! DHCPv4 or statically ([`dhcp`]), a TCP echo server on port 7 ([`echo`]) and a tiny HTTP/1.1
//! server on port 80 ([`http`]); the console's `net get` is an HTTP client ([`client`]).
//!
//! Selected on the command line: `net=dhcp` (also `mode=net`) or
//! `net=static:10.0.2.2/24,gw=10.0.2.1` (the `gw=` part is optional); the default mode enters it
//! with DHCP by itself when there is a virtio-net device (not with `net=off`). Output lines:
//! ```text
//! testguest: net dev=N mac=52:54:00:12:34:56 tsc_khz=N lapic_per_ms=N
//! testguest: net dhcp ip=10.0.2.15/24 gw=10.0.2.2 dns=10.0.2.3   (or `net static ...`)
//! testguest: net listening echo=7 http=80
//! testguest: net: no virtio-net device (tsc_khz=N lapic_per_ms=N)   (then as mode=idle)
//! ```
//!
//! The loop is interrupt driven: poll the stack, run the servers, send what they queued, kick
//! the device, then `cli; check for frames; arm the local APIC timer for smoltcp's
//! next deadline; sti; hlt`. Time comes from the TSC (calibrated against the PIT at start), so it
//! runs on across halts; an idle guest with no pending deadline sleeps until a frame arrives
//! (or for up to the APIC timer's range). Transmit completions do not interrupt, except while
//! every transmit slot is in flight and the loop halts for one. The ACPI power button powers
//! off. `GET /stats` (see [`http`]) reports the loop's halts and busy time.
//!
//! The serial console stays live: a received line ends the halt (COM1 interrupt) and is run as
//! in the interactive mode ([`commands::console_line`]); a console `burn` stalls the network
//! until the next line stops it.

pub mod client;
pub mod dhcp;
mod echo;
mod http;
mod phy;
pub mod virtio_net;

use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering};

use smoltcp::iface::{Config as IfaceConfig, Interface, PollResult, SocketSet, SocketStorage};
use smoltcp::socket::dhcpv4;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, Ipv4Address, Ipv4Cidr};

use crate::acpi::AcpiInfo;
use crate::io::{cli, sti, sti_hlt};
use crate::{commands, power, println, serial, time};

/// How the interface gets its address.
#[derive(Clone, Copy)]
pub enum NetConfig {
    Dhcp,
    Static(Ipv4Cidr, Option<Ipv4Address>),
}

/// Parses the value of a `net=` token.
pub fn parse(value: &str) -> Option<NetConfig> {
    if value == "dhcp" {
        return Some(NetConfig::Dhcp);
    }
    let (cidr, gw) = dhcp::parse_static(value.strip_prefix("static:")?)?;
    Some(NetConfig::Static(cidr, gw))
}

fn now() -> Instant {
    Instant::from_micros(time::now_us() as i64)
}

/// Microseconds spent halted in [`wait`] (the rest of the run is the guest's own work).
static HALTED_US: AtomicU64 = AtomicU64::new(0);
/// When `run` started (µs, TSC clock).
static STARTED_US: AtomicU64 = AtomicU64::new(0);

/// Halts in [`wait`].
static HALTS: AtomicU64 = AtomicU64::new(0);

/// (µs since the network mode started, µs of them not halted, halts, virtio interrupts).
pub fn busy() -> (u64, u64, u64, u64) {
    let up = time::now_us() - STARTED_US.load(Ordering::Relaxed);
    (
        up,
        up.saturating_sub(HALTED_US.load(Ordering::Relaxed)),
        HALTS.load(Ordering::Relaxed),
        crate::virtio::INTERRUPTS.load(Ordering::Relaxed),
    )
}

/// One slot per socket: DHCP, the echo and HTTP servers' listeners, the client.
const SOCKET_SLOTS: usize = 1 + echo::SOCKETS + http::SOCKETS + 1;
static mut SOCKETS: [SocketStorage<'static>; SOCKET_SLOTS] =
    [const { SocketStorage::EMPTY }; SOCKET_SLOTS];

/// Runs the network mode; returns only if there is no network device.
pub fn run(cfg: NetConfig, acpi: Option<&AcpiInfo>) {
    let (tsc_khz, lapic_per_ms) = time::calibrate(20);
    STARTED_US.store(time::now_us(), Ordering::Relaxed);
    let Some(nic) = virtio_net::Nic::find() else {
        println!(
            "testguest: net: no virtio-net device (tsc_khz={tsc_khz} lapic_per_ms={lapic_per_ms})"
        );
        return;
    };
    let mac = nic.mac;
    println!(
        "testguest: net dev={} mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} tsc_khz={tsc_khz} lapic_per_ms={lapic_per_ms}",
        nic.index(),
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5]
    );
    let nic = RefCell::new(nic);
    let mut dev = phy::Phy { nic: &nic };
    let mut config = IfaceConfig::new(EthernetAddress(mac).into());
    config.random_seed = time::rdtsc();
    let mut iface = Interface::new(config, &mut dev, now());
    // SAFETY: `run` is entered once; the storage belongs to this socket set from now on.
    let storage: &'static mut [SocketStorage<'static>; SOCKET_SLOTS] =
        unsafe { &mut *(&raw mut SOCKETS) };
    let mut sockets = SocketSet::new(&mut storage[..]);
    let dhcp_handle = match cfg {
        NetConfig::Dhcp => Some(sockets.add(dhcpv4::Socket::new())),
        NetConfig::Static(cidr, gw) => {
            dhcp::apply_static(&mut iface, cidr, gw);
            None
        }
    };
    let mut leased = false;
    let mut echo = echo::Echo::new(&mut sockets);
    let mut http = http::Http::new(&mut sockets);
    let mut client = client::Client::new(&mut sockets);
    println!(
        "testguest: net listening echo={} http={}",
        echo::PORT,
        http::PORT
    );
    let mut line = [0u8; 256];
    loop {
        power::check_button(acpi);
        if let Some(len) = serial::take_line(&mut line) {
            let text = core::str::from_utf8(&line[..len]).unwrap_or("").trim();
            commands::console_line(text, acpi);
        }
        iface.poll(now(), &mut dev, &mut sockets);
        if let Some(h) = dhcp_handle {
            if let Some(event) = sockets.get_mut::<dhcpv4::Socket>(h).poll() {
                leased = dhcp::on_event(&mut iface, event, leased);
            }
        }
        if echo.poll(&mut sockets)
            | http.poll(&mut sockets, acpi)
            | client.poll(&mut iface, &mut sockets)
        {
            // Send what the servers queued. Egress only: nothing new reaches the sockets, so the
            // servers have seen all there is and the loop may halt (a frame that arrived
            // meanwhile is still in the receive ring, and `wait` checks it).
            while matches!(
                iface.poll_egress(now(), &mut dev, &mut sockets),
                PollResult::SocketStateChanged
            ) {}
        }
        nic.borrow_mut().flush();
        let delay = match (iface.poll_delay(now(), &sockets), client.delay()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // With every transmit slot in flight, smoltcp's "send now" cannot be met: halt until a
        // transmit completion interrupts instead of spinning on the used ring.
        let stalled = nic.borrow_mut().tx_stalled();
        if delay == Some(Duration::ZERO) && !stalled {
            continue;
        }
        wait(&nic, if stalled { None } else { delay }, stalled, acpi);
    }
}

/// Halts until a frame or a console line arrives, the deadline `delay` passes, the power button
/// is pressed or, with `for_tx`, a transmit completes.
fn wait(
    nic: &RefCell<virtio_net::Nic>,
    delay: Option<Duration>,
    for_tx: bool,
    acpi: Option<&AcpiInfo>,
) {
    cli();
    power::check_button(acpi);
    let tx_done = for_tx && nic.borrow_mut().tx_interrupts(true);
    if tx_done || nic.borrow().rx_pending() || serial::line_ready() {
        if for_tx {
            nic.borrow_mut().tx_interrupts(false);
        }
        sti();
        return;
    }
    // No deadline: sleep for the timer's whole range (minutes), a safety net only.
    time::wake_after_us(delay.map_or(u64::MAX, |d| d.total_micros().max(1)));
    let t0 = time::now_us();
    sti_hlt();
    HALTED_US.fetch_add(time::now_us() - t0, Ordering::Relaxed);
    HALTS.fetch_add(1, Ordering::Relaxed);
    if for_tx {
        nic.borrow_mut().tx_interrupts(false);
    }
    // The timer is left armed: a late expiry only costs one extra loop; the next wait re-arms.
}
