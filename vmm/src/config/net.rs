//! The `--net` argument: `tap=NAME[,mac=MAC]` or `fd=N[,mac=MAC]`.
//!
//! | form | network device |
//! |---|---|
//! | `tap=NAME` | opens `/dev/net/tun` and attaches to tap `NAME` (created if missing; needs `CAP_NET_ADMIN` unless it is a persistent tap owned by the caller) |
//! | `fd=N` | the tap already attached on inherited file descriptor `N` (`IFF_TAP`, `IFF_NO_PI`, `IFF_VNET_HDR`): how the daemon hands a tap to a jailed VMM |
//!
//! `mac=02:00:00:00:00:01` sets the guest's MAC address (unicast). Without it the MAC is
//! [`default_mac`] of the tap's interface name: locally administered (`02:` first byte), the
//! other five bytes from a 64-bit FNV-1a hash of the name, so the same tap always gives the guest
//! the same address.

use std::os::fd::RawFd;

use thiserror::Error;

use crate::devices::virtio::net::tap::valid_name;

/// A guest MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl std::str::FromStr for MacAddr {
    type Err = ();

    /// Six `:`-separated hex bytes, unicast (the multicast bit of the first byte clear).
    fn from_str(s: &str) -> Result<Self, ()> {
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut mac {
            let p = parts.next().ok_or(())?;
            if p.len() != 2 {
                return Err(());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| ())?;
        }
        if parts.next().is_some() || mac[0] & 1 != 0 {
            return Err(());
        }
        Ok(MacAddr(mac))
    }
}

/// The MAC a guest gets on tap `name` when none is given: `02:` then five bytes of the FNV-1a
/// hash of the name.
pub fn default_mac(name: &str) -> MacAddr {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_le_bytes();
    MacAddr([0x02, b[0], b[1], b[2], b[3], b[4]])
}

/// Where a network device's tap comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetBackend {
    /// Opened by interface name.
    Tap { name: String },
    /// Inherited, already attached.
    Fd { fd: RawFd },
}

/// One `--net` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetSpec {
    pub backend: NetBackend,
    /// `None`: [`default_mac`] of the interface name.
    pub mac: Option<MacAddr>,
}

/// A `--net` argument that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NetSpecError {
    #[error("{0:?}: expected tap=NAME or fd=N first")]
    Backend(String),
    #[error("{0:?}: bad tap name (1-15 bytes, none of / : , = or whitespace)")]
    Name(String),
    #[error("{0:?}: the fd must be a number above 2")]
    Fd(String),
    #[error("{0:?}: bad MAC (six hex bytes, unicast, e.g. 02:00:00:00:00:01)")]
    Mac(String),
    #[error("{spec:?}: unknown option {option:?} (use mac=MAC)")]
    UnknownOption { spec: String, option: String },
}

impl std::fmt::Display for NetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            NetBackend::Tap { name } => write!(f, "tap={name}")?,
            NetBackend::Fd { fd } => write!(f, "fd={fd}")?,
        }
        if let Some(mac) = self.mac {
            write!(f, ",mac={mac}")?;
        }
        Ok(())
    }
}

impl NetSpec {
    /// A device on tap `name` with the default MAC.
    pub fn tap(name: &str) -> Self {
        NetSpec {
            backend: NetBackend::Tap { name: name.into() },
            mac: None,
        }
    }

    /// Parses one `--net` argument.
    pub fn parse(spec: &str) -> Result<Self, NetSpecError> {
        let mut parts = spec.split(',');
        let first = parts.next().unwrap_or_default();
        let backend = if let Some(name) = first.strip_prefix("tap=") {
            if !valid_name(name) {
                return Err(NetSpecError::Name(spec.into()));
            }
            NetBackend::Tap { name: name.into() }
        } else if let Some(n) = first.strip_prefix("fd=") {
            match n.parse::<RawFd>() {
                Ok(fd) if fd > 2 => NetBackend::Fd { fd },
                _ => return Err(NetSpecError::Fd(spec.into())),
            }
        } else {
            return Err(NetSpecError::Backend(spec.into()));
        };
        let mut mac = None;
        for option in parts {
            match option.strip_prefix("mac=") {
                Some(m) => mac = Some(m.parse().map_err(|()| NetSpecError::Mac(spec.into()))?),
                None => {
                    return Err(NetSpecError::UnknownOption {
                        spec: spec.into(),
                        option: option.into(),
                    });
                }
            }
        }
        Ok(NetSpec { backend, mac })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in [
            "tap=tap0",
            "tap=vm-12345678901,mac=02:aa:bb:cc:dd:0e",
            "fd=3",
            "fd=1000,mac=52:54:00:12:34:56",
        ] {
            let spec = NetSpec::parse(s).unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(NetSpec::parse(&spec.to_string()).unwrap(), spec);
        }
        assert_eq!(
            NetSpec::parse("fd=7,mac=02:00:00:00:00:01").unwrap(),
            NetSpec {
                backend: NetBackend::Fd { fd: 7 },
                mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
            }
        );
    }

    #[test]
    fn refused() {
        for (s, want) in [
            ("", "expected tap=NAME"),
            ("tap0", "expected tap=NAME"),
            ("tap=", "bad tap name"),
            ("tap=a/b", "bad tap name"),
            ("tap=1234567890123456", "bad tap name"),
            ("fd=2", "above 2"),
            ("fd=x", "above 2"),
            ("fd=-4", "above 2"),
            ("tap=t,mac=01:00:00:00:00:01", "bad MAC"),
            ("tap=t,mac=02:00:00:00:00", "bad MAC"),
            ("tap=t,mac=02:00:00:00:00:01:02", "bad MAC"),
            ("tap=t,mac=2:0:0:0:0:1", "bad MAC"),
            ("tap=t,mac=02:00:00:00:00:zz", "bad MAC"),
            ("tap=t,ro", "unknown option"),
        ] {
            let e = NetSpec::parse(s).unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn default_macs_are_stable_local_unicast_and_differ() {
        let a = default_mac("tap0");
        assert_eq!(a, default_mac("tap0"));
        assert_ne!(a, default_mac("tap1"));
        assert_eq!(a.0[0], 0x02);
        assert_eq!(a.to_string().parse::<MacAddr>(), Ok(a));
    }
}
