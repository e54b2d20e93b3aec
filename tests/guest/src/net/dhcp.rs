//! Addressing: the DHCPv4 client's events, or a static address from the command line, applied
//! to the interface and printed in one fixed line:
//! `testguest: net dhcp ip=10.0.2.15/24 gw=10.0.2.2 dns=10.0.2.3` (or `net static ...`,
//! `gw=none`, `dns=none`; several DNS servers are comma separated), and
//! `testguest: net dhcp lost` when a lease ends.

use smoltcp::iface::Interface;
use smoltcp::socket::dhcpv4;
use smoltcp::wire::{IpCidr, Ipv4Address, Ipv4Cidr};

use crate::{println, serial};

fn set_address(iface: &mut Interface, cidr: Ipv4Cidr, gw: Option<Ipv4Address>) {
    iface.update_ip_addrs(|addrs| {
        addrs.clear();
        let _ = addrs.push(IpCidr::Ipv4(cidr));
    });
    match gw {
        Some(gw) => {
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }
        None => {
            iface.routes_mut().remove_default_ipv4_route();
        }
    }
}

fn print_lease(how: &str, cidr: Ipv4Cidr, gw: Option<Ipv4Address>, dns: &[Ipv4Address]) {
    serial::print(format_args!("testguest: net {how} ip={cidr} gw="));
    match gw {
        Some(gw) => serial::print(format_args!("{gw}")),
        None => serial::print(format_args!("none")),
    }
    serial::print(format_args!(" dns="));
    if dns.is_empty() {
        serial::print(format_args!("none"));
    }
    for (i, d) in dns.iter().enumerate() {
        serial::print(format_args!("{}{d}", if i == 0 { "" } else { "," }));
    }
    println!("");
}

/// Applies a static configuration.
pub fn apply_static(iface: &mut Interface, cidr: Ipv4Cidr, gw: Option<Ipv4Address>) {
    set_address(iface, cidr, gw);
    print_lease("static", cidr, gw, &[]);
}

/// Applies what the DHCP client reported; `leased` says whether a lease was printed (the client
/// also reports "deconfigured" when it starts). Returns whether the interface has an address.
pub fn on_event(iface: &mut Interface, event: dhcpv4::Event, leased: bool) -> bool {
    match event {
        dhcpv4::Event::Configured(cfg) => {
            set_address(iface, cfg.address, cfg.router);
            print_lease("dhcp", cfg.address, cfg.router, &cfg.dns_servers);
            true
        }
        dhcpv4::Event::Deconfigured => {
            iface.update_ip_addrs(|addrs| addrs.clear());
            iface.routes_mut().remove_default_ipv4_route();
            if leased {
                println!("testguest: net dhcp lost");
            }
            false
        }
    }
}

/// Parses `static:A.B.C.D/LEN[,gw=A.B.C.D]`.
pub fn parse_static(spec: &str) -> Option<(Ipv4Cidr, Option<Ipv4Address>)> {
    let mut parts = spec.split(',');
    let (ip, len) = parts.next()?.split_once('/')?;
    let cidr = Ipv4Cidr::new(ip.parse().ok()?, len.parse().ok().filter(|l| *l <= 32)?);
    let mut gw = None;
    for p in parts {
        gw = Some(p.strip_prefix("gw=")?.parse().ok()?);
    }
    Some((cidr, gw))
}
