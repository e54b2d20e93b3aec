//! Pod networks of the process runtime: before a VMM starts, its VM's pod is made (network
//! namespace, CNI ADD, KubeVirt's masquerade binding; [`crate::network`]), the pod's tap is
//! opened for the VMM to inherit, and a DHCP server for the guest's one MAC starts. A re-adopted
//! VM gets its DHCP server back; a released VM's pod is torn down (CNI DEL frees its IP); pods
//! of VMs nobody knows are swept at start.
//!
//! Threads: [`PodNetworks::attach`] and [`PodNetworks::detach`] block (plugin processes, ~50–90
//! ms) and run on the controller's worker that launches or releases the VM; the DHCP servers are
//! tasks on the daemon's tokio runtime.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{InterfaceStatus, LaunchPlan};
use crate::network::{self, DhcpServer, NetworkConfig, NetworkError, PodNetwork, PodSpec};

/// What a VM's record keeps of its pod network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    /// The VMI's interface name.
    pub interface: String,
    /// The guest's DHCP hostname.
    pub hostname: String,
    pub pod: PodNetwork,
}

impl PodRecord {
    pub fn status(&self) -> InterfaceStatus {
        InterfaceStatus {
            name: self.interface.clone(),
            ip: self.pod.pod_ip,
            mac: self.pod.mac,
        }
    }
}

/// A pod made for a VM that is about to start.
#[derive(Debug)]
pub struct Attached {
    pub record: PodRecord,
    /// The pod's tap, opened for the VMM (close-on-exec: the spawn dups it to a fixed number).
    pub tap: OwnedFd,
}

/// The daemon's pod networks.
pub struct PodNetworks {
    cfg: NetworkConfig,
    dhcp: Mutex<HashMap<String, DhcpServer>>,
}

impl PodNetworks {
    pub fn new(cfg: NetworkConfig) -> PodNetworks {
        PodNetworks {
            cfg,
            dhcp: Mutex::new(HashMap::new()),
        }
    }

    fn servers(&self) -> std::sync::MutexGuard<'_, HashMap<String, DhcpServer>> {
        self.dhcp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the pod of `plan`'s VM (its first interface; the tap owned by the VMM's jail
    /// identity) and starts its DHCP server. `None` when the VM has no NIC. On failure nothing is
    /// left behind.
    pub fn attach(
        &self,
        plan: &LaunchPlan,
        owner: (u32, u32),
    ) -> Result<Option<Attached>, NetworkError> {
        let Some(iface) = plan.interfaces.first() else {
            return Ok(None);
        };
        let spec = PodSpec {
            uid: plan.vm.uid.clone(),
            namespace: plan.vm.namespace.clone(),
            name: plan.vm.name.clone(),
            mac: iface.mac,
            ports: iface.ports.clone(),
            hostname: plan.hostname.clone(),
            tap_uid: owner.0,
            tap_gid: owner.1,
        };
        let pod = network::setup(&self.cfg, &spec)?;
        let made = network::open_tap(&pod).and_then(|tap| {
            let server = network::start_dhcp(&pod, network::lease(&pod, &plan.hostname))?;
            self.servers().insert(pod.uid.clone(), server);
            Ok(tap)
        });
        match made {
            Ok(tap) => Ok(Some(Attached {
                record: PodRecord {
                    interface: iface.name.clone(),
                    hostname: plan.hostname.clone(),
                    pod,
                },
                tap,
            })),
            Err(e) => {
                self.detach(&plan.vm.uid);
                Err(e)
            }
        }
    }

    /// Serves DHCP again for a VM re-adopted after a daemon restart.
    pub fn serve(&self, record: &PodRecord) {
        match network::start_dhcp(&record.pod, network::lease(&record.pod, &record.hostname)) {
            Ok(server) => {
                self.servers().insert(record.pod.uid.clone(), server);
            }
            Err(e) => {
                tracing::warn!(uid = %record.pod.uid, error = %crate::error_chain(&e), "could not restart the pod's DHCP server");
            }
        }
    }

    /// Tears down the pod of VM `uid` (idempotent; errors are logged).
    pub fn detach(&self, uid: &str) {
        self.servers().remove(uid);
        if let Err(e) = network::teardown(&self.cfg, uid) {
            tracing::warn!(uid, error = %crate::error_chain(&e), "pod network teardown");
        }
    }

    /// Whether a pod of VM `uid` may exist (its namespace file does).
    pub fn exists(&self, uid: &str) -> bool {
        network::valid_uid(uid) && self.cfg.netns_path(uid).exists()
    }

    /// Tears down every pod whose VM is not in `known`.
    pub fn sweep(&self, known: &[String]) {
        let Ok(rd) = std::fs::read_dir(&self.cfg.netns_dir) else {
            return;
        };
        for ent in rd.flatten() {
            let uid = ent.file_name().to_string_lossy().to_string();
            if !known.contains(&uid) {
                tracing::info!(
                    uid,
                    "removing the pod network of a VM that no longer exists"
                );
                self.detach(&uid);
            }
        }
    }
}

/// A stable, locally administered unicast MAC for a NIC without `macAddress`: the VMM's own
/// default (`02:` and five bytes of an FNV-1a hash) of `<VMI uid>/<interface>`.
pub fn generated_mac(vmi_uid: &str, interface: &str) -> [u8; 6] {
    vmm::config::net::default_mac(&format!("{vmi_uid}/{interface}")).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_macs_are_stable_unicast_and_local() {
        let a = generated_mac("9f1c-uid", "default");
        assert_eq!(a, generated_mac("9f1c-uid", "default"));
        assert_ne!(a, generated_mac("9f1c-uid2", "default"));
        assert_ne!(a, generated_mac("9f1c-uid", "other"));
        assert_eq!(a[0], 0x02);
    }
}
