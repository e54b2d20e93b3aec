//! Pod networking for VMs, KubeVirt's way (issue 13): each VMI gets a network namespace (the
//! "pod"), CNI plugins give it `eth0` and the pod IP, and inside it the masquerade binding puts
//! the VM behind NAT: bridge `k6t-eth0` (10.0.2.1/24), a persistent tap for the VMM on it, nft
//! `table ip nat` (dnat pod IP → 10.0.2.2, masquerade 10.0.2.2 outbound) and a single-client DHCP
//! server ([`dhcp`]) giving the guest 10.0.2.2.
//!
//! Layout: [`netns`] (namespaces without `ip netns`), [`cni`] (the CNI runtime half), [`nft`]
//! (the NAT script), [`tap`] (tap ioctls), [`dhcp`]. Links and addresses inside the pod are made
//! with `ip -batch -` run inside the namespace (no netlink crate yet).
//!
//! Threads: everything here is blocking (plugin processes, short-lived threads that `setns`)
//! except [`dhcp::DhcpServer`], a tokio task; the daemon calls [`setup`]/[`teardown`] from
//! `spawn_blocking`. A namespace is per thread: the CNI plugins inherit the calling thread's
//! namespace, which is the node's ("host") side of the pod network.

pub mod cni;
pub mod dhcp;
pub mod netns;
pub mod nft;
pub mod tap;

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

pub use cni::DefaultConfList;
pub use dhcp::DhcpServer;

/// The pod's CNI interface.
pub const POD_IF: &str = "eth0";
/// KubeVirt's masquerade bridge.
pub const BRIDGE: &str = "k6t-eth0";
/// The bridge's MAC (KubeVirt's fixed one).
pub const BRIDGE_MAC: &str = "02:00:00:00:00:00";
/// The VMM's tap inside the pod namespace.
pub const TAP: &str = "tap0";
/// Gateway address on [`BRIDGE`].
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);
/// The guest's address.
pub const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// Prefix length of the VM network (10.0.2.0/24).
pub const VM_PREFIX_LEN: u8 = 24;

/// Network errors.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid pod uid {0:?}")]
    BadUid(String),
    #[error("{what} ({netns})")]
    Io {
        what: &'static str,
        netns: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Cni(#[from] cni::CniError),
    #[error(transparent)]
    Dhcp(#[from] dhcp::DhcpError),
}

/// Where things are and what the default pod network looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// CNI configuration directory (default `/etc/cni/net.d`).
    pub cni_conf_dir: PathBuf,
    /// Plugin directories (default `/usr/lib/cni`, Debian's).
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Pod namespaces are bound at `<netns_dir>/<uid>` (default `<run-dir>/netns`).
    pub netns_dir: PathBuf,
    /// Written to `cni_conf_dir` when it holds no configuration.
    pub default_conflist: DefaultConfList,
}

impl NetworkConfig {
    /// Defaults for a daemon whose run directory is `run_dir`.
    pub fn new(run_dir: &Path) -> NetworkConfig {
        NetworkConfig {
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dirs: vec!["/usr/lib/cni".into()],
            netns_dir: run_dir.join("netns"),
            default_conflist: DefaultConfList::default(),
        }
    }

    /// The namespace path of a pod.
    pub fn netns_path(&self, uid: &str) -> PathBuf {
        self.netns_dir.join(uid)
    }
}

/// Transport protocol of a forwarded port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// One entry of the masquerade allow-list (`interfaces[].ports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    pub port: u16,
    pub protocol: Protocol,
}

/// What [`setup`] needs to know about a VMI.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSpec {
    /// The VMI's uid: the CNI container id and the namespace's file name.
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// The guest NIC's MAC (the only client the DHCP server answers).
    pub mac: [u8; 6],
    /// Ports forwarded from the pod IP to the guest; empty: all.
    pub ports: Vec<Port>,
    /// DHCP hostname (option 12); KubeVirt sends the VMI name.
    pub hostname: String,
    /// Owner of the tap (the VMM's jail uid/gid).
    pub tap_uid: u32,
    pub tap_gid: u32,
}

/// A pod network that [`setup`] made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodNetwork {
    pub uid: String,
    pub netns: PathBuf,
    pub pod_ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub tap: String,
    pub mtu: u32,
    pub mac: [u8; 6],
}

/// A uid usable as a file name and CNI container id: 1–64 of `[A-Za-z0-9_.-]`, not starting with
/// a dot.
pub fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && !uid.starts_with('.')
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Parses `aa:bb:cc:dd:ee:ff` (unicast only).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    s.parse::<vmm::config::net::MacAddr>().ok().map(|m| m.0)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    vmm::config::net::MacAddr(*mac).to_string()
}

/// The `ip -batch` script building the bridge (the tap is created before, by ioctl).
pub fn bridge_script(mtu: u32) -> String {
    format!(
        "link add name {BRIDGE} address {BRIDGE_MAC} mtu {mtu} type bridge\n\
         address add {GATEWAY}/{VM_PREFIX_LEN} dev {BRIDGE}\n\
         link set {BRIDGE} up\n\
         link set {TAP} mtu {mtu} master {BRIDGE} up\n"
    )
}

/// Creates the pod's namespace, runs CNI ADD and lays out the masquerade binding inside. On any
/// failure everything made so far is torn down (CNI DEL included) before the error is returned.
pub fn setup(cfg: &NetworkConfig, pod: &PodSpec) -> Result<PodNetwork, NetworkError> {
    if !valid_uid(&pod.uid) {
        return Err(NetworkError::BadUid(pod.uid.clone()));
    }
    let conf = cni::load_or_write(&cfg.cni_conf_dir, &cfg.default_conflist)?;
    let path = cfg.netns_path(&pod.uid);
    let io_err = |what| {
        let netns = path.clone();
        move |source| NetworkError::Io {
            what,
            netns,
            source,
        }
    };
    std::fs::create_dir_all(&cfg.netns_dir).map_err(io_err("create the netns directory"))?;
    // A leftover of a crashed daemon with the same uid: start clean.
    if path.exists() {
        teardown(cfg, &pod.uid)?;
    }
    netns::create(&path).map_err(io_err("create the pod network namespace"))?;
    let made = (|| {
        let inv = cni::Invocation {
            container_id: &pod.uid,
            netns: Some(&path),
            ifname: POD_IF,
            args: vec![
                ("K8S_POD_NAMESPACE", pod.namespace.clone()),
                ("K8S_POD_NAME", pod.name.clone()),
                ("K8S_POD_INFRA_CONTAINER_ID", pod.uid.clone()),
            ],
            bin_dirs: &cfg.cni_bin_dirs,
        };
        let added = cni::add(&conf, &inv)?;
        let mtu =
            netns::run_in(&path, || netns::link_mtu(POD_IF)).map_err(io_err("read eth0's MTU"))?;
        netns::run_in(&path, || {
            tap::create_persistent(TAP, pod.tap_uid, pod.tap_gid)
        })
        .map_err(io_err("create the tap"))?;
        netns::command_in(
            &path,
            "ip",
            &["-batch", "-"],
            Some(bridge_script(mtu).as_bytes()),
        )
        .map_err(io_err("create the k6t-eth0 bridge"))?;
        netns::run_in(&path, || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
            std::fs::write(
                format!("/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet"),
                "1",
            )
        })
        .map_err(io_err("set ip_forward/route_localnet"))?;
        let script = nft::masquerade_script(POD_IF, BRIDGE, &pod.ports);
        netns::command_in(&path, "nft", &["-f", "-"], Some(script.as_bytes()))
            .map_err(io_err("load the nft nat table"))?;
        Ok(PodNetwork {
            uid: pod.uid.clone(),
            netns: path.clone(),
            pod_ip: added.ip,
            prefix_len: added.prefix_len,
            gateway: added.gateway,
            tap: TAP.into(),
            mtu,
            mac: pod.mac,
        })
    })();
    if made.is_err() {
        if let Err(e) = teardown(cfg, &pod.uid) {
            tracing::warn!(uid = %pod.uid, error = %crate::error_chain(&e), "teardown after a failed setup");
        }
    }
    made
}

/// Undoes [`setup`] knowing only the uid: CNI DEL (without a namespace when it is already gone),
/// the tap and bridge, the namespace mount and file. Idempotent; every step runs even when an
/// earlier one failed, and the first error is returned.
pub fn teardown(cfg: &NetworkConfig, uid: &str) -> Result<(), NetworkError> {
    if !valid_uid(uid) {
        return Err(NetworkError::BadUid(uid.into()));
    }
    let path = cfg.netns_path(uid);
    let alive = netns::is_netns(&path);
    let mut first: Option<NetworkError> = None;
    match cni::load_or_write(&cfg.cni_conf_dir, &cfg.default_conflist) {
        Ok(conf) => {
            let inv = cni::Invocation {
                container_id: uid,
                netns: alive.then_some(path.as_path()),
                ifname: POD_IF,
                args: vec![("K8S_POD_INFRA_CONTAINER_ID", uid.to_owned())],
                bin_dirs: &cfg.cni_bin_dirs,
            };
            if let Err(e) = cni::del(&conf, &inv) {
                first.get_or_insert(e.into());
            }
        }
        Err(e) => {
            first.get_or_insert(e.into());
        }
    }
    if alive {
        // The tap would outlive the namespace while a VMM still holds it open: delete explicitly.
        let _ = netns::run_in(&path, || {
            for dev in [TAP, BRIDGE] {
                if netns::link_mtu(dev).is_ok() {
                    netns::run_command("ip", &["link", "del", dev], None)?;
                }
            }
            Ok(())
        })
        .map_err(|source| {
            first.get_or_insert(NetworkError::Io {
                what: "delete tap and bridge",
                netns: path.clone(),
                source,
            })
        });
    }
    if let Err(source) = netns::remove(&path) {
        first.get_or_insert(NetworkError::Io {
            what: "remove the pod network namespace",
            netns: path.clone(),
            source,
        });
    }
    first.map_or(Ok(()), Err)
}

/// Opens the pod's tap for the VMM (non-blocking, vnet header, close-on-exec: the caller clears
/// `FD_CLOEXEC` on the copy it passes).
pub fn open_tap(net: &PodNetwork) -> Result<OwnedFd, NetworkError> {
    netns::run_in(&net.netns, || tap::open(&net.tap)).map_err(|source| NetworkError::Io {
        what: "open the tap",
        netns: net.netns.clone(),
        source,
    })
}

/// The guest's lease: 10.0.2.2/24 via 10.0.2.1, the host's DNS ([`dhcp::host_dns`]).
pub fn lease(net: &PodNetwork, hostname: &str) -> dhcp::Lease {
    let (dns, search) = dhcp::host_dns();
    dhcp::Lease {
        mac: net.mac,
        ip: GUEST,
        prefix_len: VM_PREFIX_LEN,
        router: GATEWAY,
        dns,
        search,
        mtu: u16::try_from(net.mtu).unwrap_or(u16::MAX),
        hostname: hostname.into(),
    }
}

/// Starts the pod's DHCP server on the current tokio runtime.
pub fn start_dhcp(net: &PodNetwork, lease: dhcp::Lease) -> Result<DhcpServer, NetworkError> {
    Ok(DhcpServer::start(&net.netns, BRIDGE, lease)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_and_macs() {
        for (uid, ok) in [
            ("a1b2-c3", true),
            ("", false),
            (".hidden", false),
            ("a/b", false),
            ("../x", false),
            (&"x".repeat(64)[..], true),
            (&"x".repeat(65)[..], false),
            ("a b", false),
        ] {
            assert_eq!(valid_uid(uid), ok, "{uid:?}");
        }
        assert_eq!(
            parse_mac("02:42:AC:11:00:0f"),
            Some([2, 0x42, 0xac, 0x11, 0, 0xf])
        );
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:0f:01",
            "2:42:ac:11:00:0f",
            "02:42:ac:11:00:zz",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(
            format_mac(&[2, 0x42, 0xac, 0x11, 0, 0xf]),
            "02:42:ac:11:00:0f"
        );
    }

    #[test]
    fn bridge_layout() {
        assert_eq!(
            bridge_script(1450),
            "link add name k6t-eth0 address 02:00:00:00:00:00 mtu 1450 type bridge\n\
             address add 10.0.2.1/24 dev k6t-eth0\nlink set k6t-eth0 up\n\
             link set tap0 mtu 1450 master k6t-eth0 up\n"
        );
    }
}

/// Real plugins, nft and namespaces (root): all of it inside a throwaway "host" namespace that a
/// dedicated thread unshares, so nothing touches the machine's network.
#[cfg(test)]
mod smoke {
    use super::*;

    #[test]
    fn setup_open_tap_teardown_in_a_private_host_netns() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = NetworkConfig::new(tmp.path());
        cfg.cni_conf_dir = tmp.path().join("net.d");
        cfg.default_conflist.ipam_data_dir = Some(tmp.path().join("ipam"));
        cfg.default_conflist.ip_masq = false;
        let res = std::thread::spawn(move || -> Result<String, String> {
            // SAFETY: only this test thread changes namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(format!(
                    "unshare(CLONE_NEWNET): {} (needs root)",
                    io::Error::last_os_error()
                ));
            }
            let pod = PodSpec {
                uid: "smoke-1".into(),
                namespace: "default".into(),
                name: "vm".into(),
                mac: [2, 0x42, 0, 0, 0, 1],
                ports: vec![],
                hostname: "vm".into(),
                tap_uid: 0,
                tap_gid: 0,
            };
            let t0 = std::time::Instant::now();
            let net = setup(&cfg, &pod).map_err(|e| crate::error_chain(&e))?;
            let t_setup = t0.elapsed();
            let fd = open_tap(&net).map_err(|e| crate::error_chain(&e));
            let t1 = std::time::Instant::now();
            let td = teardown(&cfg, &pod.uid).map_err(|e| crate::error_chain(&e));
            let t_teardown = t1.elapsed();
            fd?;
            td?;
            teardown(&cfg, &pod.uid)
                .map_err(|e| format!("second teardown: {}", crate::error_chain(&e)))?;
            if cfg.netns_path(&pod.uid).exists() {
                return Err("netns file left".into());
            }
            Ok(format!(
                "{} setup {t_setup:?} teardown {t_teardown:?}",
                net.pod_ip
            ))
        })
        .join()
        .unwrap();
        let msg = res.unwrap();
        eprintln!("smoke: {msg}");
        assert!(msg.starts_with("10.244.0."), "{msg}");
    }
}
