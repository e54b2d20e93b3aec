//! `VirtualMachineInstance` (kubevirt.io/v1): the typed spec corral reads, its validation, and
//! the status fields corral writes.
//!
//! Only the subset of KubeVirt's schema listed here is known; sub-objects corral stores but never
//! interprets (affinity, clock, ...) are typed as opaque JSON so strict validation accepts
//! them as KubeVirt would.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::validation::{FieldError, Invalid, check_dns1123_label, check_range, shown};
use crate::quantity::{parse_bytes, parse_cpu_millis};

type Opaque = Option<Value>;

/// Annotation choosing a VMI's virtio transport: `pci` (the default: stock cloud images boot)
/// or `mmio` (guests whose kernel or initramfs carries virtio_mmio). corral's own; KubeVirt
/// ignores it, so a manifest carrying it still moves unchanged.
pub const TRANSPORT_ANNOTATION: &str = "corral.dev/virtio-transport";

/// The transport `annotations` ask for (pci when absent).
pub fn transport_of(
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<vmm::TransportKind, String> {
    match annotations.and_then(|a| a.get(TRANSPORT_ANNOTATION)) {
        None => Ok(vmm::TransportKind::Pci),
        Some(v) => vmm::TransportKind::parse(v)
            .ok_or_else(|| format!("\"{v}\": must be \"pci\" or \"mmio\"")),
    }
}

/// Records a bad transport annotation in `meta` (at `path`, e.g. `metadata`).
pub fn check_transport(meta: &crate::meta::ObjectMeta, path: &str, inv: &mut Invalid) {
    let value = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(TRANSPORT_ANNOTATION));
    if let (Some(v), Err(_)) = (value, transport_of(meta.annotations.as_ref())) {
        inv.push(FieldError::invalid(
            format!("{path}.annotations[{TRANSPORT_ANNOTATION}]"),
            shown(v),
            "supported values: \"pci\", \"mmio\"",
        ));
    }
}

/// Corral's bounds on what a VMI may ask for (Kubernetes has none for most of these; these keep
/// every later computation — deadlines, cgroup quotas, capacity sums, file sizes — far from
/// overflow). Documented in docs/hardening.md.
///
/// Longest `terminationGracePeriodSeconds` (and `gracePeriodSeconds` of a delete): one week.
pub const MAX_GRACE_SECONDS: i64 = 7 * 24 * 3600;
/// Largest memory quantity (`memory.guest`, `requests`/`limits.memory`): 1 PiB (the most
/// replicas of it still sum within a u64).
pub const MAX_MEMORY_BYTES: u64 = 1 << 50;
/// Largest CPU quantity (`requests`/`limits.cpu`): 1024 cores.
pub const MAX_CPU_MILLIS: u64 = 1024 * 1000;
/// Largest `emptyDisk.capacity`: 16 TiB (ext4's largest file).
pub const MAX_EMPTY_DISK_BYTES: u64 = 16 << 40;
/// Longest `kernelBoot.kernelArgs`: the x86 boot protocol's command line.
pub const MAX_KERNEL_ARGS: usize = 2048;
/// Longest path inside an image (`containerDisk.path`, `kernelPath`, `initrdPath`).
pub const MAX_IMAGE_PATH: usize = 4096;

/// `spec` of a VirtualMachineInstance.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmiSpec {
    #[serde(default)]
    pub domain: Option<DomainSpec>,
    #[serde(default)]
    pub volumes: Option<Vec<Volume>>,
    #[serde(default)]
    pub networks: Option<Vec<Network>>,
    #[serde(default)]
    pub termination_grace_period_seconds: Option<i64>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub subdomain: Option<String>,
    #[serde(default)]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub priority_class_name: Opaque,
    #[serde(default)]
    pub affinity: Opaque,
    #[serde(default)]
    pub scheduler_name: Opaque,
    #[serde(default)]
    pub tolerations: Opaque,
    #[serde(default)]
    pub topology_spread_constraints: Opaque,
    #[serde(default)]
    pub eviction_strategy: Opaque,
    #[serde(default)]
    pub start_strategy: Opaque,
    #[serde(default)]
    pub liveness_probe: Option<super::probes::ProbeSpec>,
    #[serde(default)]
    pub readiness_probe: Option<super::probes::ProbeSpec>,
    #[serde(default)]
    pub dns_policy: Opaque,
    #[serde(default)]
    pub dns_config: Opaque,
    #[serde(default)]
    pub access_credentials: Opaque,
    #[serde(default)]
    pub architecture: Opaque,
}

/// `spec.domain`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainSpec {
    #[serde(default)]
    pub resources: Option<Resources>,
    #[serde(default)]
    pub cpu: Option<Cpu>,
    #[serde(default)]
    pub memory: Option<Memory>,
    #[serde(default)]
    pub firmware: Option<Firmware>,
    #[serde(default)]
    pub devices: Option<Devices>,
    #[serde(default)]
    pub machine: Opaque,
    #[serde(default)]
    pub clock: Opaque,
    #[serde(default)]
    pub features: Opaque,
    #[serde(default)]
    pub io_threads_policy: Opaque,
    #[serde(default)]
    pub chassis: Opaque,
}

/// `domain.resources`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default)]
    pub requests: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub limits: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub overcommit_guest_overhead: Option<bool>,
}

/// `domain.cpu`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    #[serde(default)]
    pub cores: Option<u32>,
    #[serde(default)]
    pub sockets: Option<u32>,
    #[serde(default)]
    pub threads: Option<u32>,
    #[serde(default)]
    pub max_sockets: Option<u32>,
    #[serde(default)]
    pub model: Opaque,
    #[serde(default)]
    pub features: Opaque,
    #[serde(default)]
    pub dedicated_cpu_placement: Option<bool>,
    #[serde(default)]
    pub isolate_emulator_thread: Option<bool>,
    #[serde(default)]
    pub numa: Opaque,
    #[serde(default)]
    pub realtime: Opaque,
}

/// `domain.memory`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    #[serde(default)]
    pub guest: Option<Value>,
    #[serde(default)]
    pub hugepages: Opaque,
    #[serde(default)]
    pub max_guest: Option<Value>,
}

/// `domain.firmware`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Firmware {
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub bootloader: Opaque,
    #[serde(default)]
    pub acpi: Opaque,
    #[serde(default)]
    pub kernel_boot: Option<KernelBoot>,
}

/// `firmware.kernelBoot`: direct kernel boot override.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelBoot {
    #[serde(default)]
    pub kernel_args: Option<String>,
    #[serde(default)]
    pub container: Option<KernelBootContainer>,
}

/// `kernelBoot.container`: kernel and initrd taken from a container image's filesystem.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelBootContainer {
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub kernel_path: Option<String>,
    #[serde(default)]
    pub initrd_path: Option<String>,
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    #[serde(default)]
    pub image_pull_secret: Option<String>,
}

/// `domain.devices`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Devices {
    #[serde(default)]
    pub disks: Option<Vec<Disk>>,
    #[serde(default)]
    pub interfaces: Option<Vec<Interface>>,
    #[serde(default)]
    pub autoattach_serial_console: Option<bool>,
    #[serde(default)]
    pub autoattach_graphics_device: Option<bool>,
    #[serde(default)]
    pub autoattach_pod_interface: Option<bool>,
    #[serde(default)]
    pub autoattach_mem_balloon: Option<bool>,
    #[serde(default)]
    pub autoattach_input_device: Option<bool>,
    #[serde(default)]
    pub autoattach_vsock: Option<bool>,
    #[serde(default)]
    pub log_serial_console: Option<bool>,
    #[serde(default)]
    pub rng: Opaque,
    #[serde(default)]
    pub watchdog: Opaque,
    #[serde(default)]
    pub inputs: Opaque,
    #[serde(default)]
    pub block_multi_queue: Option<bool>,
    #[serde(default)]
    pub network_interface_multiqueue: Option<bool>,
}

/// `devices.disks[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub disk: Option<DiskTarget>,
    #[serde(default)]
    pub cdrom: Opaque,
    #[serde(default)]
    pub lun: Opaque,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub boot_order: Option<u32>,
    #[serde(default)]
    pub cache: Option<String>,
    #[serde(default)]
    pub io: Option<String>,
    #[serde(default)]
    pub dedicated_io_thread: Option<bool>,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub shareable: Option<bool>,
    #[serde(default)]
    pub block_size: Opaque,
    #[serde(default)]
    pub error_policy: Opaque,
}

/// `disks[].disk`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskTarget {
    #[serde(default)]
    pub bus: Option<String>,
    #[serde(default)]
    pub readonly: Option<bool>,
    #[serde(default)]
    pub pci_address: Option<String>,
}

/// `devices.interfaces[]` (checked and resolved in [`super::interfaces`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub masquerade: Opaque,
    #[serde(default)]
    pub bridge: Opaque,
    #[serde(default)]
    pub sriov: Opaque,
    #[serde(default)]
    pub passt: Opaque,
    #[serde(default)]
    pub binding: Opaque,
    #[serde(default)]
    pub ports: Opaque,
    #[serde(default)]
    pub mac_address: Option<String>,
    #[serde(default)]
    pub boot_order: Option<u32>,
    #[serde(default)]
    pub pci_address: Option<String>,
    #[serde(default)]
    pub dhcp_options: Opaque,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
}

/// `spec.networks[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub pod: Opaque,
    #[serde(default)]
    pub multus: Opaque,
}

/// `spec.volumes[]`: exactly one source must be set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub container_disk: Option<ContainerDiskSource>,
    #[serde(default)]
    pub cloud_init_no_cloud: Option<CloudInitNoCloud>,
    #[serde(default)]
    pub empty_disk: Option<EmptyDiskSource>,
    #[serde(default)]
    pub ephemeral: Opaque,
    #[serde(default)]
    pub persistent_volume_claim: Opaque,
    #[serde(default)]
    pub data_volume: Opaque,
    #[serde(default)]
    pub host_disk: Opaque,
    #[serde(default)]
    pub cloud_init_config_drive: Opaque,
    #[serde(default)]
    pub config_map: Opaque,
    #[serde(default)]
    pub secret: Opaque,
    #[serde(default)]
    pub service_account: Opaque,
    #[serde(default)]
    pub downward_api: Opaque,
    #[serde(default)]
    pub downward_metrics: Opaque,
    #[serde(default)]
    pub sysprep: Opaque,
    #[serde(default)]
    pub memory_dump: Opaque,
}

/// `volumes[].containerDisk`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDiskSource {
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub image_pull_policy: Option<String>,
    #[serde(default)]
    pub image_pull_secret: Option<String>,
}

/// `volumes[].cloudInitNoCloud`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudInitNoCloud {
    #[serde(default)]
    pub user_data: Option<String>,
    #[serde(default)]
    pub user_data_base64: Option<String>,
    #[serde(default)]
    pub network_data: Option<String>,
    #[serde(default)]
    pub network_data_base64: Option<String>,
    #[serde(default)]
    pub secret_ref: Opaque,
    #[serde(default)]
    pub network_data_secret_ref: Opaque,
}

/// `volumes[].emptyDisk`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDiskSource {
    #[serde(default)]
    pub capacity: Option<Value>,
}

/// What a VMI needs from the host, computed from its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNeeds {
    /// Guest RAM in bytes (`memory.guest`, else `requests.memory`).
    pub guest_memory: u64,
    /// vCPUs = sockets × cores × threads.
    pub vcpus: u32,
    /// `requests.cpu` in millicores, if set.
    pub cpu_request_millis: Option<u64>,
    /// `limits.cpu` in millicores, if set.
    pub cpu_limit_millis: Option<u64>,
    /// `limits.memory` in bytes, if set.
    pub memory_limit: Option<u64>,
}

/// A disk the VM will see, in `devices.disks` order, resolved to its volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    ContainerDisk {
        image: String,
        pull_policy: Option<String>,
    },
    CloudInit {
        user_data: Vec<u8>,
        network_data: Option<Vec<u8>>,
    },
    Empty {
        capacity: u64,
    },
}

/// One resolved disk: its name (also its virtio serial) and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDisk {
    pub name: String,
    pub readonly: bool,
    pub source: DiskSource,
}

fn quantity_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let cleaned: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .ok()
}

impl VmiSpec {
    /// Validates the spec (at `path`, e.g. `spec` or `spec.template.spec`) and computes what it
    /// needs; every problem is reported at once.
    pub fn validate(&self, path: &str) -> Result<(ResourceNeeds, Vec<ResolvedDisk>), Invalid> {
        let mut inv = Invalid::default();
        let Some(domain) = &self.domain else {
            inv.push(FieldError::required(
                format!("{path}.domain"),
                "domain is required",
            ));
            return Err(inv);
        };
        let needs = self.resource_needs(domain, path, &mut inv);
        let disks = self.resolve_disks(domain, path, &mut inv);
        if let Some(g) = self.termination_grace_period_seconds {
            check_range(
                &mut inv,
                &format!("{path}.terminationGracePeriodSeconds"),
                g,
                0,
                MAX_GRACE_SECONDS,
            );
        }
        // Kubernetes' pod validation: both are DNS-1123 labels.
        if let Some(h) = self.hostname.as_deref().filter(|h| !h.is_empty()) {
            check_dns1123_label(&mut inv, &format!("{path}.hostname"), h);
        }
        if let Some(s) = self.subdomain.as_deref().filter(|s| !s.is_empty()) {
            check_dns1123_label(&mut inv, &format!("{path}.subdomain"), s);
        }
        check_kernel_boot(domain, path, &mut inv);
        super::interfaces::resolve(self, domain, path, &mut inv);
        for (probe, name, liveness) in [
            (&self.readiness_probe, "readinessProbe", false),
            (&self.liveness_probe, "livenessProbe", true),
        ] {
            if let Some(Err(e)) = probe
                .as_ref()
                .map(|p| p.validate(&format!("{path}.{name}"), liveness))
            {
                inv.causes.extend(e.causes);
            }
        }
        match (inv.into_result(), needs) {
            (Ok(()), Some(needs)) => Ok((needs, disks)),
            (Err(inv), _) => Err(inv),
            // resource_needs records a cause whenever it returns None.
            (Ok(()), None) => Err(FieldError::required(
                format!("{path}.domain.resources.requests.memory"),
                "no memory requested",
            )
            .into()),
        }
    }

    fn resource_needs(
        &self,
        domain: &DomainSpec,
        path: &str,
        inv: &mut Invalid,
    ) -> Option<ResourceNeeds> {
        let res = domain.resources.clone().unwrap_or_default();
        let mut get = |map: &Option<BTreeMap<String, Value>>,
                       which: &str,
                       key: &str,
                       cpu: bool|
         -> Option<u64> {
            let v = map.as_ref()?.get(key)?;
            let field = format!("{path}.domain.resources.{which}.{key}");
            let Some(s) = quantity_str(v) else {
                inv.push(FieldError::invalid(field, v, "must be a quantity"));
                return None;
            };
            let (parsed, max, what) = if cpu {
                (parse_cpu_millis(&s), MAX_CPU_MILLIS, "1024")
            } else {
                (parse_bytes(&s), MAX_MEMORY_BYTES, "1Pi")
            };
            match parsed {
                Ok(n) if n > max => {
                    inv.push(FieldError::invalid(
                        field,
                        shown(&s),
                        &format!("must be less than or equal to {what}"),
                    ));
                    None
                }
                Ok(n) => Some(n),
                Err(e) => {
                    inv.push(FieldError::invalid(field, shown(&s), &e.to_string()));
                    None
                }
            }
        };
        let cpu_request = get(&res.requests, "requests", "cpu", true);
        let cpu_limit = get(&res.limits, "limits", "cpu", true);
        let mem_request = get(&res.requests, "requests", "memory", false);
        let mem_limit = get(&res.limits, "limits", "memory", false);
        let guest = match domain.memory.as_ref().and_then(|m| m.guest.as_ref()) {
            Some(v) => {
                let field = format!("{path}.domain.memory.guest");
                match quantity_str(v).map(|s| parse_bytes(&s)) {
                    Some(Ok(n)) if n > MAX_MEMORY_BYTES => {
                        inv.push(FieldError::invalid(
                            field,
                            v,
                            "must be less than or equal to 1Pi",
                        ));
                        None
                    }
                    Some(Ok(n)) => Some(n),
                    _ => {
                        inv.push(FieldError::invalid(field, v, "must be a memory quantity"));
                        None
                    }
                }
            }
            None => None,
        };
        if let (Some(r), Some(l)) = (cpu_request, cpu_limit) {
            if r > l {
                inv.push(FieldError::invalid(
                    format!("{path}.domain.resources.requests.cpu"),
                    format!("{r}m"),
                    "must be less than or equal to cpu limit",
                ));
            }
        }
        if let (Some(r), Some(l)) = (mem_request, mem_limit) {
            if r > l {
                inv.push(FieldError::invalid(
                    format!("{path}.domain.resources.requests.memory"),
                    r,
                    "must be less than or equal to memory limit",
                ));
            }
        }
        let guest_memory = guest.or(mem_request).or(mem_limit);
        if guest.is_none() && mem_request.is_none() && mem_limit.is_none() {
            inv.push(FieldError::required(
                format!("{path}.domain.resources.requests.memory"),
                "no memory requested, at least one of 'domain.memory.guest', 'domain.resources.requests.memory' or 'domain.resources.limits.memory' must be set",
            ));
        }
        if let Some(g) = guest_memory {
            if g < 1 << 20 {
                inv.push(FieldError::invalid(
                    format!("{path}.domain.memory.guest"),
                    g,
                    "must be at least 1Mi",
                ));
            }
        }
        let cpu = domain.cpu.clone().unwrap_or_default();
        let mut vcpus: u32 = 1;
        for (name, v) in [
            ("sockets", cpu.sockets),
            ("cores", cpu.cores),
            ("threads", cpu.threads),
        ] {
            if let Some(n) = v {
                if n == 0 {
                    inv.push(FieldError::invalid(
                        format!("{path}.domain.cpu.{name}"),
                        n,
                        "must be greater than 0",
                    ));
                }
                vcpus = vcpus.saturating_mul(n.max(1));
            }
        }
        if vcpus > 254 {
            inv.push(FieldError::invalid(
                format!("{path}.domain.cpu"),
                vcpus,
                "sockets × cores × threads must be at most 254 vCPUs",
            ));
        }
        if cpu.dedicated_cpu_placement == Some(true) {
            inv.push(FieldError::unsupported(
                format!("{path}.domain.cpu.dedicatedCpuPlacement"),
                "dedicated CPU placement is not supported by corral",
            ));
        }
        Some(ResourceNeeds {
            guest_memory: guest_memory?,
            vcpus,
            cpu_request_millis: cpu_request,
            cpu_limit_millis: cpu_limit,
            memory_limit: mem_limit,
        })
    }

    fn resolve_disks(
        &self,
        domain: &DomainSpec,
        path: &str,
        inv: &mut Invalid,
    ) -> Vec<ResolvedDisk> {
        let volumes = self.volumes.clone().unwrap_or_default();
        let disks = domain
            .devices
            .as_ref()
            .and_then(|d| d.disks.clone())
            .unwrap_or_default();
        let mut seen = std::collections::BTreeSet::new();
        for (i, v) in volumes.iter().enumerate() {
            if v.name.is_empty() {
                inv.push(FieldError::required(
                    format!("{path}.volumes[{i}].name"),
                    "volume name is required",
                ));
            } else if !check_dns1123_label(inv, &format!("{path}.volumes[{i}].name"), &v.name) {
                // The runtime names files after volumes: never let an invalid one through.
            } else if !seen.insert(v.name.clone()) {
                inv.push(FieldError {
                    reason: "FieldValueDuplicate",
                    field: format!("{path}.volumes[{i}].name"),
                    message: format!("Duplicate value: \"{}\"", v.name),
                });
            }
        }
        let mut out = Vec::new();
        let mut disk_names = std::collections::BTreeSet::new();
        for (i, d) in disks.iter().enumerate() {
            let field = format!("{path}.domain.devices.disks[{i}]");
            if d.name.is_empty() {
                inv.push(FieldError::required(
                    format!("{field}.name"),
                    "disk name is required",
                ));
                continue;
            }
            if !check_dns1123_label(inv, &format!("{field}.name"), &d.name) {
                continue;
            }
            if !disk_names.insert(d.name.clone()) {
                inv.push(FieldError {
                    reason: "FieldValueDuplicate",
                    field: format!("{field}.name"),
                    message: format!("Duplicate value: \"{}\"", d.name),
                });
            }
            if d.cdrom.is_some() || d.lun.is_some() {
                inv.push(FieldError::unsupported(
                    field.to_string(),
                    "only 'disk' devices are supported by corral (no cdrom, lun)",
                ));
            }
            let bus = d
                .disk
                .as_ref()
                .and_then(|t| t.bus.clone())
                .unwrap_or_else(|| "virtio".into());
            if bus != "virtio" {
                inv.push(FieldError::unsupported(
                    format!("{field}.disk.bus"),
                    &format!("\"{bus}\": supported values: \"virtio\""),
                ));
            }
            let Some((vi, vol)) = volumes.iter().enumerate().find(|(_, v)| v.name == d.name) else {
                inv.push(FieldError::invalid(
                    format!("{field}.name"),
                    format!("\"{}\"", d.name),
                    "disk must reference a volume with the same name",
                ));
                continue;
            };
            if let Some(src) = vol_source(vol, &format!("{path}.volumes[{vi}]"), inv) {
                out.push(ResolvedDisk {
                    name: d.name.clone(),
                    readonly: d.disk.as_ref().and_then(|t| t.readonly).unwrap_or(false),
                    source: src,
                });
            }
        }
        // Volumes without a disk entry get a virtio disk, like KubeVirt's defaulting does.
        for (vi, vol) in volumes.iter().enumerate() {
            if !super::validation::is_dns1123_label(&vol.name) || disk_names.contains(&vol.name) {
                continue;
            }
            if let Some(src) = vol_source(vol, &format!("{path}.volumes[{vi}]"), inv) {
                out.push(ResolvedDisk {
                    name: vol.name.clone(),
                    readonly: false,
                    source: src,
                });
            }
        }
        if !out
            .iter()
            .any(|d| matches!(d.source, DiskSource::ContainerDisk { .. }))
            && domain
                .firmware
                .as_ref()
                .and_then(|f| f.kernel_boot.as_ref())
                .and_then(|k| k.container.as_ref())
                .is_none()
        {
            inv.push(FieldError::required(
                format!("{path}.volumes"),
                "a containerDisk volume (or firmware.kernelBoot.container) is required: corral boots the kernel found in it",
            ));
        }
        out
    }

    /// The NICs of a validated spec (see [`super::interfaces`]).
    pub fn interfaces(&self) -> Vec<super::interfaces::ResolvedInterface> {
        let domain = self.domain.clone().unwrap_or_default();
        super::interfaces::resolve(self, &domain, "spec", &mut Invalid::default())
    }
}

/// A path inside an image: absolute, no `..`, no NUL, bounded.
fn check_image_path(inv: &mut Invalid, field: &str, p: &str) {
    if p.len() > MAX_IMAGE_PATH {
        inv.push(FieldError::invalid(
            field,
            shown(p),
            "must be no more than 4096 characters",
        ));
    } else if !p.starts_with('/') || p.contains('\0') || p.split('/').any(|c| c == "..") {
        inv.push(FieldError::invalid(
            field,
            shown(p),
            "must be an absolute path without '..' components",
        ));
    }
}

fn check_kernel_boot(domain: &DomainSpec, path: &str, inv: &mut Invalid) {
    let Some(kb) = domain
        .firmware
        .as_ref()
        .and_then(|f| f.kernel_boot.as_ref())
    else {
        return;
    };
    let field = format!("{path}.domain.firmware.kernelBoot");
    if let Some(a) = &kb.kernel_args {
        if a.len() > MAX_KERNEL_ARGS || a.contains(['\0', '\n']) {
            inv.push(FieldError::invalid(
                format!("{field}.kernelArgs"),
                shown(a),
                "must be one line of at most 2048 characters",
            ));
        }
    }
    if let Some(c) = &kb.container {
        for (name, p) in [
            ("kernelPath", &c.kernel_path),
            ("initrdPath", &c.initrd_path),
        ] {
            if let Some(p) = p {
                check_image_path(inv, &format!("{field}.container.{name}"), p);
            }
        }
    }
}

fn vol_source(vol: &Volume, field: &str, inv: &mut Invalid) -> Option<DiskSource> {
    let unsupported: [(&str, bool); 12] = [
        ("ephemeral", vol.ephemeral.is_some()),
        (
            "persistentVolumeClaim",
            vol.persistent_volume_claim.is_some(),
        ),
        ("dataVolume", vol.data_volume.is_some()),
        ("hostDisk", vol.host_disk.is_some()),
        (
            "cloudInitConfigDrive",
            vol.cloud_init_config_drive.is_some(),
        ),
        ("configMap", vol.config_map.is_some()),
        ("secret", vol.secret.is_some()),
        ("serviceAccount", vol.service_account.is_some()),
        ("downwardAPI", vol.downward_api.is_some()),
        ("downwardMetrics", vol.downward_metrics.is_some()),
        ("sysprep", vol.sysprep.is_some()),
        ("memoryDump", vol.memory_dump.is_some()),
    ];
    let supported = [
        vol.container_disk.is_some(),
        vol.cloud_init_no_cloud.is_some(),
        vol.empty_disk.is_some(),
    ];
    let count =
        supported.iter().filter(|b| **b).count() + unsupported.iter().filter(|(_, b)| *b).count();
    if count != 1 {
        inv.push(FieldError::invalid(
            field,
            format!("\"{}\"", vol.name),
            "must have exactly one volume source (containerDisk, cloudInitNoCloud or emptyDisk)",
        ));
        return None;
    }
    if let Some((kind, _)) = unsupported.iter().find(|(_, b)| *b) {
        inv.push(FieldError::unsupported(
            format!("{field}.{kind}"),
            "corral supports containerDisk, cloudInitNoCloud and emptyDisk volumes",
        ));
        return None;
    }
    if let Some(cd) = &vol.container_disk {
        if let Some(p) = &cd.path {
            check_image_path(inv, &format!("{field}.containerDisk.path"), p);
        }
        if cd.image.trim().is_empty() {
            inv.push(FieldError::required(
                format!("{field}.containerDisk.image"),
                "image is required",
            ));
            return None;
        }
        if let Some(p) = &cd.image_pull_policy {
            if !matches!(p.as_str(), "Always" | "IfNotPresent" | "Never") {
                inv.push(FieldError::unsupported(
                    format!("{field}.containerDisk.imagePullPolicy"),
                    &format!("\"{p}\": supported values: \"Always\", \"IfNotPresent\", \"Never\""),
                ));
            }
        }
        return Some(DiskSource::ContainerDisk {
            image: cd.image.trim().to_string(),
            pull_policy: cd.image_pull_policy.clone(),
        });
    }
    if let Some(ci) = &vol.cloud_init_no_cloud {
        let user_data = match (&ci.user_data, &ci.user_data_base64) {
            (Some(_), Some(_)) => {
                inv.push(FieldError::invalid(
                    format!("{field}.cloudInitNoCloud"),
                    "userData",
                    "only one of userData or userDataBase64 may be set",
                ));
                return None;
            }
            (Some(s), None) => s.clone().into_bytes(),
            (None, Some(b)) => match decode_b64(b) {
                Some(bytes) => bytes,
                None => {
                    inv.push(FieldError::invalid(
                        format!("{field}.cloudInitNoCloud.userDataBase64"),
                        "(base64)",
                        "is not valid base64",
                    ));
                    return None;
                }
            },
            (None, None) => Vec::new(),
        };
        if ci.secret_ref.is_some() || ci.network_data_secret_ref.is_some() {
            inv.push(FieldError::unsupported(
                format!("{field}.cloudInitNoCloud.secretRef"),
                "secrets are not supported by corral",
            ));
            return None;
        }
        let network_data = match (&ci.network_data, &ci.network_data_base64) {
            (Some(s), None) => Some(s.clone().into_bytes()),
            (None, Some(b)) => match decode_b64(b) {
                Some(bytes) => Some(bytes),
                None => {
                    inv.push(FieldError::invalid(
                        format!("{field}.cloudInitNoCloud.networkDataBase64"),
                        "(base64)",
                        "is not valid base64",
                    ));
                    return None;
                }
            },
            (Some(_), Some(_)) => {
                inv.push(FieldError::invalid(
                    format!("{field}.cloudInitNoCloud"),
                    "networkData",
                    "only one of networkData or networkDataBase64 may be set",
                ));
                return None;
            }
            (None, None) => None,
        };
        return Some(DiskSource::CloudInit {
            user_data,
            network_data,
        });
    }
    let ed = vol.empty_disk.as_ref()?;
    let cap = ed
        .capacity
        .as_ref()
        .and_then(quantity_str)
        .map(|s| parse_bytes(&s));
    match cap {
        Some(Ok(n)) if n > MAX_EMPTY_DISK_BYTES => {
            inv.push(FieldError::invalid(
                format!("{field}.emptyDisk.capacity"),
                n,
                "must be less than or equal to 16Ti",
            ));
            None
        }
        Some(Ok(n)) if n > 0 => Some(DiskSource::Empty { capacity: n }),
        _ => {
            inv.push(FieldError::required(
                format!("{field}.emptyDisk.capacity"),
                "a positive capacity is required",
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::validation::decode;
    use serde_json::json;

    fn lab_spec() -> Value {
        json!({
            "domain": {"cpu": {"cores": 1},
                "devices": {"disks": [{"name": "containerdisk", "disk": {"bus": "virtio"}},
                                       {"name": "cloudinitdisk", "disk": {"bus": "virtio"}}],
                            "interfaces": [{"name": "default", "masquerade": {}}]},
                "resources": {"limits": {"cpu": "300m"}, "requests": {"cpu": "100m", "memory": "265Mi"}}},
            "networks": [{"name": "default", "pod": {}}],
            "volumes": [{"name": "containerdisk", "containerDisk": {"image": "quay.io/kubevirt/cirros-container-disk-demo"}},
                        {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": "#cloud-config\n"}}]
        })
    }

    #[test]
    fn lab_spec_is_valid_and_known() {
        let d = decode::<VmiSpec>(&lab_spec(), "spec").unwrap();
        assert!(d.unknown.is_empty(), "{:?}", d.unknown);
        let (needs, disks) = d.value.validate("spec").unwrap();
        assert_eq!(needs.guest_memory, 265 << 20);
        assert_eq!(needs.vcpus, 1);
        assert_eq!(needs.cpu_request_millis, Some(100));
        assert_eq!(needs.cpu_limit_millis, Some(300));
        assert_eq!(disks.len(), 2);
        assert_eq!(disks[0].name, "containerdisk");
        assert_eq!(
            disks[1].source,
            DiskSource::CloudInit {
                user_data: b"#cloud-config\n".to_vec(),
                network_data: None
            }
        );
    }

    fn invalid_fields(spec: Value) -> Vec<String> {
        let d = decode::<VmiSpec>(&spec, "spec").unwrap();
        d.value
            .validate("spec")
            .err()
            .map(|e| e.causes.into_iter().map(|c| c.field).collect())
            .unwrap_or_default()
    }

    #[test]
    fn invalid_specs_table() {
        let mut no_mem = lab_spec();
        no_mem["domain"]["resources"]["requests"]
            .as_object_mut()
            .unwrap()
            .remove("memory");
        let mut bad_cpu = lab_spec();
        bad_cpu["domain"]["resources"]["limits"]["cpu"] = json!("lots");
        let mut req_over_limit = lab_spec();
        req_over_limit["domain"]["resources"]["requests"]["cpu"] = json!("500m");
        let mut dangling_disk = lab_spec();
        dangling_disk["domain"]["devices"]["disks"][1]["name"] = json!("nope");
        let mut pvc = lab_spec();
        pvc["volumes"][1] =
            json!({"name": "cloudinitdisk", "persistentVolumeClaim": {"claimName": "x"}});
        let mut two_sources = lab_spec();
        two_sources["volumes"][1]["emptyDisk"] = json!({"capacity": "1Gi"});
        let mut bad_b64 = lab_spec();
        bad_b64["volumes"][1]["cloudInitNoCloud"] = json!({"userDataBase64": "%%%"});
        let mut sata = lab_spec();
        sata["domain"]["devices"]["disks"][0]["disk"]["bus"] = json!("sata");
        let mut zero_cores = lab_spec();
        zero_cores["domain"]["cpu"]["cores"] = json!(0);
        let cases: Vec<(Value, &str)> = vec![
            (no_mem, "spec.domain.resources.requests.memory"),
            (bad_cpu, "spec.domain.resources.limits.cpu"),
            (req_over_limit, "spec.domain.resources.requests.cpu"),
            (dangling_disk, "spec.domain.devices.disks[1].name"),
            (pvc, "spec.volumes[1].persistentVolumeClaim"),
            (two_sources, "spec.volumes[1]"),
            (bad_b64, "spec.volumes[1].cloudInitNoCloud.userDataBase64"),
            (sata, "spec.domain.devices.disks[0].disk.bus"),
            (zero_cores, "spec.domain.cpu.cores"),
        ];
        for (spec, field) in cases {
            let fields = invalid_fields(spec);
            assert!(
                fields.iter().any(|f| f == field),
                "want {field}, got {fields:?}"
            );
        }
    }

    #[test]
    fn names_must_be_dns_labels() {
        // issue 12: volume names became paths under the run directory (a root file write).
        for bad in [
            "/tmp/x",
            "..",
            "../../etc",
            "a/b",
            "UPPER",
            "-a",
            "a-",
            "a.b",
            "x\ny",
        ] {
            let mut vol = lab_spec();
            vol["volumes"][1]["name"] = json!(bad);
            vol["domain"]["devices"]["disks"][1]["name"] = json!(bad);
            let fields = invalid_fields(vol);
            assert!(
                fields.iter().any(|f| f == "spec.volumes[1].name"),
                "{bad:?}: {fields:?}"
            );
            assert!(
                fields
                    .iter()
                    .any(|f| f == "spec.domain.devices.disks[1].name"),
                "{bad:?}: {fields:?}"
            );
            let mut net = lab_spec();
            net["networks"][0]["name"] = json!(bad);
            net["domain"]["devices"]["interfaces"][0]["name"] = json!(bad);
            let fields = invalid_fields(net);
            assert!(
                fields.iter().any(|f| f == "spec.networks[0].name"),
                "{bad:?}: {fields:?}"
            );
            assert!(
                fields
                    .iter()
                    .any(|f| f == "spec.domain.devices.interfaces[0].name"),
                "{bad:?}: {fields:?}"
            );
        }
        let mut long = lab_spec();
        long["volumes"][1]["name"] = json!("a".repeat(64));
        let d = decode::<VmiSpec>(&long, "spec").unwrap();
        let e = d.value.validate("spec").unwrap_err();
        assert!(
            e.causes
                .iter()
                .any(|c| c.message.contains("must be no more than 63 characters")),
            "{e}"
        );
        let mut ok = lab_spec();
        ok["volumes"][1]["name"] = json!("a".repeat(63));
        ok["domain"]["devices"]["disks"][1]["name"] = json!("a".repeat(63));
        assert!(invalid_fields(ok).is_empty());
    }

    #[test]
    fn hostname_and_subdomain_are_dns_labels() {
        for (field, bad) in [
            ("hostname", "x\nlocal-hostname: evil"),
            ("hostname", "My_Host"),
            ("hostname", "a.b"),
            ("subdomain", "Sub"),
            ("subdomain", "s p"),
        ] {
            let mut s = lab_spec();
            s[field] = json!(bad);
            let fields = invalid_fields(s);
            assert_eq!(fields, vec![format!("spec.{field}")], "{bad:?}");
        }
        let mut s = lab_spec();
        s["hostname"] = json!("my-host-1");
        s["subdomain"] = json!("lab");
        assert!(invalid_fields(s).is_empty());
    }

    #[test]
    fn durations_and_quantities_are_bounded() {
        let set = |pointer: &str, v: Value| {
            let mut s = lab_spec();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            match s.pointer_mut(parent).unwrap() {
                Value::Array(a) => a[key.parse::<usize>().unwrap()] = v,
                o => o[key] = v,
            }
            invalid_fields(s)
        };
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "/terminationGracePeriodSeconds",
                json!(i64::MAX),
                "spec.terminationGracePeriodSeconds",
            ),
            (
                "/terminationGracePeriodSeconds",
                json!(MAX_GRACE_SECONDS + 1),
                "spec.terminationGracePeriodSeconds",
            ),
            (
                "/terminationGracePeriodSeconds",
                json!(-1),
                "spec.terminationGracePeriodSeconds",
            ),
            (
                "/domain/resources/requests/memory",
                json!("2Pi"),
                "spec.domain.resources.requests.memory",
            ),
            (
                "/domain/resources/limits/cpu",
                json!("1025"),
                "spec.domain.resources.limits.cpu",
            ),
            (
                "/domain/memory",
                json!({"guest": "16Ei"}),
                "spec.domain.memory.guest",
            ),
            (
                "/volumes/1",
                json!({"name": "cloudinitdisk", "emptyDisk": {"capacity": "17Ti"}}),
                "spec.volumes[1].emptyDisk.capacity",
            ),
            (
                "/volumes/1",
                json!({"name": "cloudinitdisk", "emptyDisk": {"capacity": "99999999999999999999999"}}),
                "spec.volumes[1].emptyDisk.capacity",
            ),
            (
                "/domain/firmware",
                json!({"kernelBoot": {"kernelArgs": "x".repeat(MAX_KERNEL_ARGS + 1)}}),
                "spec.domain.firmware.kernelBoot.kernelArgs",
            ),
            (
                "/domain/firmware",
                json!({"kernelBoot": {"container": {"image": "k", "kernelPath": "../../etc/shadow"}}}),
                "spec.domain.firmware.kernelBoot.container.kernelPath",
            ),
            (
                "/volumes/0/containerDisk/path",
                json!("disk/../../x"),
                "spec.volumes[0].containerDisk.path",
            ),
        ];
        for (path, v, field) in cases {
            let fields = set(path, v.clone());
            assert!(
                fields.iter().any(|f| f == field),
                "{v}: want {field}, got {fields:?}"
            );
        }
        assert!(set("/terminationGracePeriodSeconds", json!(MAX_GRACE_SECONDS)).is_empty());
        assert!(set("/domain/resources/requests/memory", json!("1Pi")).is_empty());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::time::{Duration, Instant};

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// Whatever grace period a client sends, an admitted one gives a deadline the
            /// runtime can compute (`now + grace + slack`) without overflow.
            #[test]
            fn admitted_grace_periods_make_deadlines(g in prop_oneof![
                any::<i64>(),
                -10i64..MAX_GRACE_SECONDS + 10,
                Just(i64::MAX),
                Just(i64::MIN),
            ]) {
                let mut s = lab_spec();
                s["terminationGracePeriodSeconds"] = json!(g);
                let d = decode::<VmiSpec>(&s, "spec").unwrap();
                match d.value.validate("spec") {
                    Ok(_) => {
                        prop_assert!((0..=MAX_GRACE_SECONDS).contains(&g));
                        let secs = u64::try_from(g).unwrap();
                        let deadline = Instant::now()
                            .checked_add(Duration::from_secs(secs) + Duration::from_secs(3600));
                        prop_assert!(deadline.is_some());
                    }
                    Err(e) => {
                        prop_assert!(!(0..=MAX_GRACE_SECONDS).contains(&g));
                        prop_assert_eq!(&e.causes[0].field, "spec.terminationGracePeriodSeconds");
                    }
                }
            }

            /// An admitted memory quantity, summed over the most replicas, fits a u64.
            #[test]
            fn admitted_memory_sums_fit(
                digits in 0u64..u64::MAX,
                suffix in prop::sample::select(vec!["", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]),
            ) {
                let mut s = lab_spec();
                s["domain"]["resources"]["requests"]["memory"] = json!(format!("{digits}{suffix}"));
                let d = decode::<VmiSpec>(&s, "spec").unwrap();
                if let Ok((needs, _)) = d.value.validate("spec") {
                    prop_assert!(needs.guest_memory <= MAX_MEMORY_BYTES);
                    let max = u64::try_from(crate::kinds::vmirs::MAX_REPLICAS).unwrap();
                    prop_assert!(needs.guest_memory.checked_mul(max).is_some());
                }
            }
        }
    }

    #[test]
    fn user_data_base64_decodes_byte_for_byte() {
        let mut s = lab_spec();
        s["volumes"][1]["cloudInitNoCloud"] = json!({"userDataBase64": "IyEvYmluL3NoCmVjaG8gaGkK"});
        let d = decode::<VmiSpec>(&s, "spec").unwrap();
        let (_, disks) = d.value.validate("spec").unwrap();
        assert_eq!(
            disks[1].source,
            DiskSource::CloudInit {
                user_data: b"#!/bin/sh\necho hi\n".to_vec(),
                network_data: None
            }
        );
    }

    #[test]
    fn memory_guest_wins_over_requests() {
        let mut s = lab_spec();
        s["domain"]["memory"] = json!({"guest": "128Mi"});
        let d = decode::<VmiSpec>(&s, "spec").unwrap();
        assert_eq!(d.value.validate("spec").unwrap().0.guest_memory, 128 << 20);
    }
}

#[cfg(test)]
mod transport_tests {
    use super::*;

    #[test]
    fn the_transport_annotation_picks_pci_or_mmio_and_refuses_the_rest() {
        let ann = |v: &str| BTreeMap::from([(TRANSPORT_ANNOTATION.to_string(), v.to_string())]);
        assert_eq!(transport_of(None), Ok(vmm::TransportKind::Pci));
        assert_eq!(
            transport_of(Some(&ann("mmio"))),
            Ok(vmm::TransportKind::Mmio)
        );
        assert_eq!(transport_of(Some(&ann("pci"))), Ok(vmm::TransportKind::Pci));
        assert!(transport_of(Some(&ann("PCI"))).is_err());
        let meta = crate::meta::ObjectMeta {
            annotations: Some(ann("virtio-ccw")),
            ..Default::default()
        };
        let mut inv = Invalid::default();
        check_transport(&meta, "spec.template.metadata", &mut inv);
        assert_eq!(inv.causes.len(), 1);
        assert_eq!(
            inv.causes[0].field,
            "spec.template.metadata.annotations[corral.dev/virtio-transport]"
        );
    }
}
