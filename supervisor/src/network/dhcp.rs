//! The pod's single-client DHCP server (KubeVirt's masquerade binding): it answers only the VM's
//! MAC, always with 10.0.2.2/24 behind the gateway 10.0.2.1. [`plan`] is the pure decision; the
//! [`DhcpServer`] task owns a UDP socket bound to `k6t-eth0` inside the pod namespace.

use dhcproto::v4::{DhcpOption, DhcpOptions, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Name};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// 999 days, as KubeVirt.
pub const LEASE_SECS: u32 = 999 * 24 * 3600;

/// DHCP server errors.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("DHCP socket on {bridge} in {netns}")]
    Socket {
        bridge: String,
        netns: String,
        #[source]
        source: io::Error,
    },
}

/// What the server hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    pub mtu: u16,
    pub hostname: String,
}

/// The reply to `req`, or `None` when it is to be ignored (another MAC, not a DISCOVER/REQUEST,
/// a REQUEST for another server).
pub fn plan(req: &Message, lease: &Lease) -> Option<Message> {
    if req.opcode() != Opcode::BootRequest
        || req.htype() != HType::Eth
        || req.chaddr().get(..6) != Some(&lease.mac[..])
    {
        return None;
    }
    let kind = match req.opts().msg_type()? {
        MessageType::Discover => MessageType::Offer,
        MessageType::Request => {
            if let Some(DhcpOption::ServerIdentifier(id)) =
                req.opts().get(OptionCode::ServerIdentifier)
                && *id != lease.router
            {
                return None;
            }
            let wanted = match req.opts().get(OptionCode::RequestedIpAddress) {
                Some(DhcpOption::RequestedIpAddress(ip)) => *ip,
                _ => req.ciaddr(),
            };
            if wanted == lease.ip {
                MessageType::Ack
            } else {
                MessageType::Nak
            }
        }
        _ => return None,
    };
    let mut reply = Message::new_with_id(
        req.xid(),
        Ipv4Addr::UNSPECIFIED,
        if kind == MessageType::Nak {
            Ipv4Addr::UNSPECIFIED
        } else {
            lease.ip
        },
        Ipv4Addr::UNSPECIFIED,
        req.giaddr(),
        &lease.mac,
    );
    reply
        .set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_flags(req.flags());
    let mut opts = DhcpOptions::new();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(lease.router));
    if kind != MessageType::Nak {
        opts.insert(DhcpOption::AddressLeaseTime(LEASE_SECS));
        opts.insert(DhcpOption::SubnetMask(prefix_mask(lease.prefix_len)));
        opts.insert(DhcpOption::Router(vec![lease.router]));
        if !lease.dns.is_empty() {
            opts.insert(DhcpOption::DomainNameServer(lease.dns.clone()));
        }
        let names: Vec<Name> = lease
            .search
            .iter()
            .filter_map(|s| Name::from_utf8(s).ok())
            .collect();
        if !names.is_empty() {
            opts.insert(DhcpOption::DomainSearch(names));
        }
        opts.insert(DhcpOption::InterfaceMtu(lease.mtu));
        if !lease.hostname.is_empty() {
            opts.insert(DhcpOption::Hostname(lease.hostname.clone()));
        }
    }
    reply.set_opts(opts);
    Some(reply)
}

/// Decodes a datagram and plans its reply; undecodable input is ignored.
pub fn handle(datagram: &[u8], lease: &Lease) -> Option<(Vec<u8>, SocketAddrV4)> {
    let req = Message::decode(&mut Decoder::new(datagram)).ok()?;
    let reply = plan(&req, lease)?;
    // A client that already has its address (renewing) gets a unicast; anyone else a broadcast.
    let to = if !req.ciaddr().is_unspecified() && reply.opts().msg_type() == Some(MessageType::Ack)
    {
        req.ciaddr()
    } else {
        Ipv4Addr::BROADCAST
    };
    Some((reply.to_vec().ok()?, SocketAddrV4::new(to, 68)))
}

fn prefix_mask(len: u8) -> Ipv4Addr {
    Ipv4Addr::from(if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    })
}

/// DNS for the guest from a resolv.conf text: IPv4 nameservers except loopback ones (the guest
/// cannot reach the host's 127.0.0.53 stub), and `search` domains (the last `search`/`domain`
/// line wins, as in glibc).
pub fn parse_resolv_conf(text: &str) -> (Vec<Ipv4Addr>, Vec<String>) {
    let mut dns = Vec::new();
    let mut search = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(Ok(ip)) = words.next().map(str::parse::<Ipv4Addr>)
                    && !ip.is_loopback()
                    && !ip.is_unspecified()
                    && !dns.contains(&ip)
                {
                    dns.push(ip);
                }
            }
            Some("search" | "domain") => search = words.map(str::to_owned).collect(),
            _ => {}
        }
    }
    (dns, search)
}

/// The host's DNS for guests: `/etc/resolv.conf`; when it lists only loopback resolvers (a
/// systemd-resolved stub), the upstream servers in `/run/systemd/resolve/resolv.conf`. May be
/// empty: then the guest gets no DNS option.
pub fn host_dns() -> (Vec<Ipv4Addr>, Vec<String>) {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|t| parse_resolv_conf(&t))
            .unwrap_or_default()
    };
    let (dns, search) = read("/etc/resolv.conf");
    if !dns.is_empty() {
        return (dns, search);
    }
    let (upstream, search2) = read("/run/systemd/resolve/resolv.conf");
    (upstream, if search.is_empty() { search2 } else { search })
}

/// A running server; dropping it stops the task.
#[derive(Debug)]
pub struct DhcpServer {
    task: tokio::task::JoinHandle<()>,
}

impl DhcpServer {
    /// Binds UDP 67 on `bridge` inside the namespace at `netns` and serves `lease` on the current
    /// tokio runtime.
    pub fn start(netns: &Path, bridge: &str, lease: Lease) -> Result<DhcpServer, DhcpError> {
        let err = |source| DhcpError::Socket {
            bridge: bridge.into(),
            netns: netns.display().to_string(),
            source,
        };
        let fd = super::netns::run_in(netns, || bound_socket(bridge)).map_err(err)?;
        let std_sock = std::net::UdpSocket::from(fd);
        let sock = tokio::net::UdpSocket::from_std(std_sock).map_err(err)?;
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            loop {
                let n = match sock.recv_from(&mut buf).await {
                    Ok((n, _from)) => n,
                    Err(e) => {
                        // Never spin on a socket that keeps failing.
                        tracing::warn!(error = %e, "DHCP receive failed");
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        continue;
                    }
                };
                if let Some((reply, to)) = handle(&buf[..n], &lease)
                    && let Err(e) = sock.send_to(&reply, to).await
                {
                    tracing::warn!(error = %e, "DHCP reply not sent");
                }
            }
        });
        Ok(DhcpServer { task })
    }
}

impl Drop for DhcpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn bound_socket(bridge: &str) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    let setopt = |level, name, val: *const libc::c_void, len: usize| -> io::Result<()> {
        // SAFETY: val points to len readable bytes for the duration of the call.
        if unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, val, len as libc::socklen_t) }
            != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    let one_ptr = (&raw const one).cast();
    setopt(
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        one_ptr,
        size_of::<libc::c_int>(),
    )?;
    setopt(
        libc::SOL_SOCKET,
        libc::SO_BROADCAST,
        one_ptr,
        size_of::<libc::c_int>(),
    )?;
    setopt(
        libc::SOL_SOCKET,
        libc::SO_BINDTODEVICE,
        bridge.as_ptr().cast(),
        bridge.len(),
    )?;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 67u16.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid sockaddr_in of the given size.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];

    fn lease() -> Lease {
        Lease {
            mac: MAC,
            ip: "10.0.2.2".parse().unwrap(),
            prefix_len: 24,
            router: "10.0.2.1".parse().unwrap(),
            dns: vec!["192.0.2.53".parse().unwrap()],
            search: vec!["default.svc.cluster.local".into(), "example.org".into()],
            mtu: 1450,
            hostname: "vm-a".into(),
        }
    }

    fn request(mac: [u8; 6], kind: MessageType, extra: &[DhcpOption], ciaddr: Ipv4Addr) -> Message {
        let mut m = Message::new_with_id(
            0x1234,
            ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac,
        );
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        for o in extra {
            m.opts_mut().insert(o.clone());
        }
        m
    }

    #[test]
    fn plans() {
        let l = lease();
        let ip: Ipv4Addr = "10.0.2.2".parse().unwrap();
        let other: Ipv4Addr = "10.0.2.9".parse().unwrap();
        let z = Ipv4Addr::UNSPECIFIED;
        let srv = DhcpOption::ServerIdentifier("10.0.2.1".parse().unwrap());
        let cases: Vec<(&str, Message, Option<MessageType>)> = vec![
            (
                "discover",
                request(MAC, MessageType::Discover, &[], z),
                Some(MessageType::Offer),
            ),
            (
                "request selecting",
                request(
                    MAC,
                    MessageType::Request,
                    &[DhcpOption::RequestedIpAddress(ip), srv.clone()],
                    z,
                ),
                Some(MessageType::Ack),
            ),
            (
                "request renewing",
                request(MAC, MessageType::Request, &[], ip),
                Some(MessageType::Ack),
            ),
            (
                "request wrong ip",
                request(
                    MAC,
                    MessageType::Request,
                    &[DhcpOption::RequestedIpAddress(other)],
                    z,
                ),
                Some(MessageType::Nak),
            ),
            (
                "request no ip",
                request(MAC, MessageType::Request, &[], z),
                Some(MessageType::Nak),
            ),
            (
                "other server",
                request(
                    MAC,
                    MessageType::Request,
                    &[
                        DhcpOption::RequestedIpAddress(ip),
                        DhcpOption::ServerIdentifier(other),
                    ],
                    z,
                ),
                None,
            ),
            (
                "other mac",
                request([2, 0, 0, 0, 0, 9], MessageType::Discover, &[], z),
                None,
            ),
            ("release", request(MAC, MessageType::Release, &[], ip), None),
            ("inform", request(MAC, MessageType::Inform, &[], ip), None),
        ];
        for (name, req, want) in cases {
            let got = plan(&req, &l);
            assert_eq!(
                got.as_ref().and_then(|m| m.opts().msg_type()),
                want,
                "{name}"
            );
            let Some(m) = got else { continue };
            assert_eq!(m.xid(), 0x1234, "{name}");
            assert_eq!(m.opcode(), Opcode::BootReply, "{name}");
            assert_eq!(&m.chaddr()[..6], &MAC, "{name}");
            if want == Some(MessageType::Nak) {
                assert_eq!(m.yiaddr(), z, "{name}");
                assert!(m.opts().get(OptionCode::Router).is_none(), "{name}");
                continue;
            }
            assert_eq!(m.yiaddr(), ip, "{name}");
            let o = m.opts();
            assert_eq!(
                o.get(OptionCode::SubnetMask),
                Some(&DhcpOption::SubnetMask("255.255.255.0".parse().unwrap()))
            );
            assert_eq!(
                o.get(OptionCode::Router),
                Some(&DhcpOption::Router(vec!["10.0.2.1".parse().unwrap()]))
            );
            assert_eq!(
                o.get(OptionCode::DomainNameServer),
                Some(&DhcpOption::DomainNameServer(l.dns.clone()))
            );
            assert_eq!(
                o.get(OptionCode::InterfaceMtu),
                Some(&DhcpOption::InterfaceMtu(1450))
            );
            assert_eq!(
                o.get(OptionCode::Hostname),
                Some(&DhcpOption::Hostname("vm-a".into()))
            );
            assert_eq!(
                o.get(OptionCode::AddressLeaseTime),
                Some(&DhcpOption::AddressLeaseTime(LEASE_SECS))
            );
            assert!(
                matches!(o.get(OptionCode::DomainSearch), Some(DhcpOption::DomainSearch(n)) if n.len() == 2)
            );
        }
    }

    #[test]
    fn wire_round_trip_and_destination() {
        let l = lease();
        let req = request(MAC, MessageType::Discover, &[], Ipv4Addr::UNSPECIFIED);
        let (bytes, to) = handle(&req.to_vec().unwrap(), &l).unwrap();
        assert_eq!(to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
        let back = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(back.opts().msg_type(), Some(MessageType::Offer));
        let renew = request(MAC, MessageType::Request, &[], l.ip);
        assert_eq!(
            handle(&renew.to_vec().unwrap(), &l).unwrap().1,
            SocketAddrV4::new(l.ip, 68)
        );
        assert!(handle(b"\x01\x02junk", &l).is_none());
        assert!(handle(&[], &l).is_none());
    }

    #[test]
    fn resolv_conf() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "nameserver 127.0.0.53\noptions edns0\nsearch lan\n",
                &[],
                &["lan"],
            ),
            (
                "nameserver 10.96.0.10\nnameserver ::1\nnameserver 10.96.0.10\nnameserver 8.8.8.8\nsearch a.svc b.local\n",
                &["10.96.0.10", "8.8.8.8"],
                &["a.svc", "b.local"],
            ),
            (
                "domain x.org\nsearch y.org\n# nameserver 1.1.1.1\nnameserver 0.0.0.0\n",
                &[],
                &["y.org"],
            ),
            ("", &[], &[]),
        ];
        for (text, dns, search) in cases {
            let (d, s) = parse_resolv_conf(text);
            assert_eq!(
                d,
                dns.iter()
                    .map(|x| x.parse().unwrap())
                    .collect::<Vec<Ipv4Addr>>(),
                "{text}"
            );
            assert_eq!(
                s,
                search.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
                "{text}"
            );
        }
        assert_eq!(prefix_mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(prefix_mask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(prefix_mask(32), Ipv4Addr::BROADCAST);
    }
}
