//! virtio-net against a real tap, always in a network namespace of its own: the outer test
//! re-runs this binary under `unshare -n` for the inner one, which refuses to run anywhere but in
//! a fresh namespace (only `lo`). Nothing is created in, or sent into, the host's namespace.
//!
//! Inside: a tap (`10.99.0.1/24`, IPv6 off) and a static neighbour for the "guest"
//! (`10.99.0.2`, `02:00:00:00:00:02`). The device, started through `VirtioDevice::activate` with
//! guest memory and rings laid out by the test, transmits a hand-made UDP frame that a socket on
//! the host side receives; then the host side sends a datagram to the guest and it lands in the
//! guest's receive buffers with its vnet header. The inherited-fd path (`--net fd=N`) is the
//! same tap taken over by number.

use std::net::UdpSocket;
use std::os::fd::IntoRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::virtio::VirtioDevice;
use vmm::devices::virtio::net::handler::{RX_BUDGET, TX_BUDGET};
use vmm::devices::virtio::net::tap::Tap;
use vmm::devices::virtio::net::{Net, features};
use vmm::devices::virtio::testing::{GuestRing, W};

const NETNS_ENV: &str = "CORRAL_NET_TEST_IN_NETNS";
const TAP: &str = "cnettap0";
const GUEST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const HOST_IP: [u8; 4] = [10, 99, 0, 1];
const GUEST_IP: [u8; 4] = [10, 99, 0, 2];
const SIZE: u16 = 16;
const RXQ: (u64, u64, u64) = (0x0, 0x1000, 0x2000);
const TXQ: (u64, u64, u64) = (0x4000, 0x5000, 0x6000);

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn tap_round_trip_in_a_private_network_namespace() {
    if !is_root() || !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("skipped: needs root and /dev/net/tun");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["-n", "--"])
        .arg(exe)
        .args([
            "--exact",
            "inner_tap_round_trip",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(NETNS_ENV, "1")
        .output()
        .expect("running unshare -n");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// vnet header (nothing to offload) + Ethernet + IPv4 + UDP (no checksum) + `payload`.
fn udp_frame(dst_mac: [u8; 6], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend(dst_mac);
    f.extend(GUEST_MAC);
    f.extend([0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut iph = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    iph[2..4].copy_from_slice(&total.to_be_bytes());
    iph.extend(GUEST_IP);
    iph.extend(HOST_IP);
    let c = ip_checksum(&iph);
    iph[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend(iph);
    f.extend(4000u16.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend((8 + payload.len() as u16).to_be_bytes());
    f.extend([0, 0]);
    f.extend(payload);
    f
}

#[test]
#[ignore = "run by tap_round_trip_in_a_private_network_namespace inside `unshare -n`"]
fn inner_tap_round_trip() {
    // Never in the host's namespace: the outer test sets this, and a fresh one has only lo.
    assert_eq!(std::env::var(NETNS_ENV).as_deref(), Ok("1"));
    let links = ip(&["-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "not a fresh namespace: {links}");
    assert!(links.contains(": lo:"), "{links}");

    // The inherited-fd path: a tap opened by name, handed over by number.
    let fd = Tap::open(TAP).unwrap().into_raw_fd();
    let tap = Tap::inherit(fd).unwrap();
    assert_eq!(tap.name(), TAP);
    assert_ne!(tap.supported_offloads(), 0, "a tap accepts at least CSUM");
    std::fs::write(format!("/proc/sys/net/ipv6/conf/{TAP}/disable_ipv6"), "1").unwrap();
    ip(&["addr", "add", "10.99.0.1/24", "dev", TAP]);
    ip(&["link", "set", TAP, "up"]);
    ip(&["link", "set", "lo", "up"]);
    ip(&[
        "neigh",
        "add",
        "10.99.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        TAP,
    ]);
    let show = ip(&["-o", "link", "show", TAP]);
    let tap_mac: Vec<u8> = show
        .split("link/ether ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();

    // A tap opened by name reports its MTU (an inherited one may be in another namespace).
    let by_name = Net::new(Tap::open("cnettap9").unwrap(), GUEST_MAC);
    assert_ne!(by_name.features() & features::MTU, 0);
    let mut mtu = [0u8; 2];
    by_name.read_config(10, &mut mtu);
    assert_eq!(u16::from_le_bytes(mtu), 1500, "a new tap's MTU");
    drop(by_name);
    assert_eq!(tap.mtu(), None);
    let net = Net::new(tap, GUEST_MAC);
    assert_eq!(net.features() & features::MTU, 0);
    let mut cfg = [0xffu8; 12];
    net.read_config(0, &mut cfg);
    assert_eq!(
        cfg,
        [2, 0, 0, 0, 0, 2, 1, 0, 1, 0, 0, 0],
        "mac, status LINK_UP, one queue pair, no mtu"
    );
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    // The driver side: receive and transmit rings.
    let mut rx = GuestRing::new(&mem, SIZE, RXQ);
    let mut tx = GuestRing::new(&mem, SIZE, TXQ);
    let queues = vec![
        rx.regs().build(&mem, true).unwrap(),
        tx.regs().build(&mem, true).unwrap(),
    ];
    // No guest offloads: the tap must hand over plain, checksummed frames.
    let negotiated = net.features()
        & !(features::GUEST_CSUM
            | features::GUEST_TSO4
            | features::GUEST_TSO6
            | features::GUEST_UFO);
    net.activate(mem.clone(), queues, negotiated).unwrap();

    // Guest → host.
    let host = UdpSocket::bind("10.99.0.1:7000").unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let frame = udp_frame(
        tap_mac.clone().try_into().unwrap(),
        7000,
        b"hello from the guest",
    );
    mem.write_slice(&frame[..12], GuestAddress(0x10000))
        .unwrap();
    mem.write_slice(&frame[12..], GuestAddress(0x11000))
        .unwrap();
    tx.push(&[(0x10000, 12, 0), (0x11000, (frame.len() - 12) as u32, 0)]);
    let pass = net.state().lock().unwrap().process_tx(TX_BUDGET).unwrap();
    assert_eq!(pass.used, 1);
    assert_eq!(tx.used(), [(0, 0)]);
    let mut buf = [0u8; 100];
    let (n, from) = host.recv_from(&mut buf).expect("the guest's datagram");
    assert_eq!(&buf[..n], b"hello from the guest");
    assert_eq!(from.to_string(), "10.99.0.2:4000");
    assert_eq!(net.state().lock().unwrap().stats.tx_frames, 1);

    // Host → guest: mergeable buffers of 1 KiB.
    for i in 0..8u64 {
        rx.push(&[(0x20000 + i * 0x1000, 1024, W)]);
    }
    let payload = vec![0x5a; 1400]; // one frame under the tap's 1500 MTU
    host.send_to(&payload, "10.99.0.2:7777").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let got = loop {
        net.state().lock().unwrap().process_rx(RX_BUDGET).unwrap();
        let used = rx.used();
        // Gather every frame delivered (one or more buffers each) and look for ours.
        let mut found = None;
        let mut i = 0;
        while i < used.len() {
            let (head, len) = used[i];
            let addr = 0x20000 + u64::from(head) * 0x1000;
            let mut first = vec![0u8; len as usize];
            mem.read_slice(&mut first, GuestAddress(addr)).unwrap();
            let buffers = u16::from_le_bytes([first[10], first[11]]) as usize;
            let mut bytes = first;
            for &(h, l) in &used[i + 1..i + buffers] {
                let mut more = vec![0u8; l as usize];
                mem.read_slice(&mut more, GuestAddress(0x20000 + u64::from(h) * 0x1000))
                    .unwrap();
                bytes.extend(more);
            }
            i += buffers.max(1);
            let udp_dport = bytes.get(12 + 14 + 20 + 2..12 + 14 + 20 + 4);
            if bytes.get(12 + 12..12 + 14) == Some(&[0x08, 0x00])
                && udp_dport == Some(&[0x1e, 0x61])
            {
                found = Some((buffers, bytes));
            }
        }
        if let Some(f) = found {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "the host's datagram never reached the guest"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let (buffers, bytes) = got;
    assert_eq!(buffers, 2, "1454 bytes span two 1 KiB buffers");
    assert_eq!(bytes[0], 0, "no offloads negotiated: no partial checksum");
    assert_eq!(&bytes[12..18], &GUEST_MAC, "to the guest's MAC");
    assert_eq!(bytes.len(), 12 + 14 + 28 + payload.len());
    assert!(bytes[12 + 14 + 28..] == payload[..], "payload intact");
    net.reset();
}
