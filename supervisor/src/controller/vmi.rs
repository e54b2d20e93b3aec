//! The VMI lifecycle controller (what virt-handler and virt-launcher do in KubeVirt): admits a
//! VMI to the host (capacity, image), starts its VMM, mirrors what the VMM reports into
//! `status`, and stops it when the VMI is deleted.
//!
//! Phases: `Pending` (waiting for memory or the image) → `Scheduling` (admitted, starting) →
//! `Scheduled` (VMM process running) → `Running` (the VMM reports every vCPU entered; Ready=True)
//! → `Succeeded` (guest powered off) or `Failed` (crash, VMM error, killed, lost).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::replicas::Phase;
use super::status::{set_condition, set_phase};
use super::{Ctx, WorkKey};
use crate::boot::{BootImage, PullPolicy};
use crate::capacity::Fit;
use crate::controller::images::ImageState;
use crate::events::EventKind;
use crate::kinds::Kind;
use crate::kinds::validation::decode;
use crate::kinds::vmi::{DiskSource, ResolvedDisk, ResourceNeeds, VmiSpec};
use crate::meta::{self, now_rfc3339};
use crate::runtime::{LaunchDisk, LaunchInterface, LaunchPlan, Limits, Observed, VmRef};
use crate::store::{ObjectKey, StoreError};

/// Finalizer that keeps a VMI until its VM process is gone (KubeVirt's name).
pub const VMI_FINALIZER: &str = "foregroundDeleteVirtualMachine";
/// Grace period when the spec gives none (KubeVirt's default).
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// Result of one reconcile: when to look again (besides change notifications).
pub type Requeue = Option<Duration>;

/// Parsed view of a VMI.
struct Vmi {
    key: ObjectKey,
    obj: Arc<Value>,
    uid: String,
    phase: Phase,
    spec: VmiSpec,
}

fn load(ctx: &Ctx, key: &ObjectKey) -> Option<Vmi> {
    let obj = ctx.store.get(key)?;
    let phase = Phase::parse(
        obj.get("status")
            .and_then(|s| s.get("phase"))
            .and_then(Value::as_str),
    );
    let spec = obj
        .get("spec")
        .and_then(|s| decode::<VmiSpec>(s, "spec").ok())
        .map(|d| d.value)
        .unwrap_or_default();
    Some(Vmi {
        key: key.clone(),
        uid: meta::uid(&obj).to_string(),
        obj,
        phase,
        spec,
    })
}

/// Writes `status` through `f` (non-durable: status is re-derived after a restart).
fn update_status(
    ctx: &Ctx,
    key: &ObjectKey,
    f: impl FnOnce(&mut Value),
) -> Result<Arc<Value>, StoreError> {
    ctx.store.update(key, false, |cur| {
        let mut n = cur.clone();
        let mut st = n.get("status").cloned().unwrap_or_else(|| json!({}));
        f(&mut st);
        n["status"] = st;
        Ok(Some(n))
    })
}

fn grace(spec: &VmiSpec, obj: &Value) -> Duration {
    let secs = obj
        .get("metadata")
        .and_then(|m| m.get("deletionGracePeriodSeconds"))
        .and_then(Value::as_i64)
        .or(spec.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    // Objects stored before grace periods were bounded may hold anything: clamp, never trust.
    let secs = secs.clamp(0, crate::kinds::vmi::MAX_GRACE_SECONDS);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// Reconciles one VMI.
pub fn reconcile(ctx: &Ctx, key: &ObjectKey) -> Result<Requeue, StoreError> {
    let Some(vmi) = load(ctx, key) else {
        return Ok(None);
    };
    if meta::is_deleting(&vmi.obj) {
        return finalize(ctx, &vmi);
    }
    if !meta::finalizers(&vmi.obj)
        .iter()
        .any(|f| f == VMI_FINALIZER)
    {
        ctx.store.update(key, true, |cur| {
            let mut n = cur.clone();
            let mut fins = meta::finalizers(cur);
            fins.push(VMI_FINALIZER.into());
            meta::set_finalizers(&mut n, &fins);
            Ok(Some(n))
        })?;
    }
    if vmi.phase.is_final() {
        return Ok(None);
    }
    match ctx.runtime.observe(&vmi.uid) {
        Observed::Unknown if vmi.phase.is_unscheduled() => admit_and_launch(ctx, &vmi),
        Observed::Unknown => {
            // Launched before, but the runtime has no record (the run directory was lost, e.g.
            // after a host reboot): the VM is gone.
            set_final(
                ctx,
                &vmi,
                false,
                "VMLost",
                "the VM's process and run directory are gone (host restart?)",
            )?;
            Ok(None)
        }
        Observed::Running {
            ready: vm_ready, ..
        } => {
            let target = if vm_ready {
                Phase::Running
            } else {
                Phase::Scheduled
            };
            let ifaces = interfaces_status(ctx, &vmi.uid);
            let probe = probe(ctx, &vmi, vm_ready, &ifaces);
            if !probe.live {
                // The kubelet kills a container whose liveness probe failed; KubeVirt fails
                // the VMI, and its set replaces it.
                ctx.events.record(
                    Kind::Vmi,
                    &vmi.obj,
                    EventKind::Normal,
                    "Killing",
                    "Stopping the VM: its liveness probe failed",
                );
                ctx.runtime.stop(&vmi.uid, grace(&vmi.spec, &vmi.obj));
                return Ok(None);
            }
            let ready = vm_ready && probe.ready;
            let was_ready = super::status::condition(&vmi.obj, "Ready") == Some(true);
            let phase_changed = vmi.phase != target;
            let ifaces_changed = vmi
                .obj
                .get("status")
                .and_then(|s| s.get("interfaces"))
                .unwrap_or(&json!([]))
                != &ifaces;
            let (reason, msg) = if ready {
                ("", "")
            } else if vm_ready {
                ("ReadinessProbeFailed", probe.message.as_str())
            } else {
                (
                    "GuestNotRunning",
                    "the VMM started; waiting for its vCPUs to enter the guest",
                )
            };
            let cond = vmi
                .obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
            let why_changed = cond.is_some_and(|c| {
                c.get("reason").and_then(Value::as_str).unwrap_or("") != reason
                    || c.get("message").and_then(Value::as_str).unwrap_or("") != msg
            });
            if phase_changed || was_ready != ready || ifaces_changed || why_changed {
                let now = now_rfc3339();
                let obj = update_status(ctx, key, |st| {
                    set_phase(st, target, &now);
                    st["nodeName"] = json!(crate::host::node_name());
                    set_condition(st, "Ready", ready, reason, msg, &now);
                    st["interfaces"] = ifaces;
                })?;
                if vm_ready && phase_changed {
                    ctx.events.record(
                        Kind::Vmi,
                        &obj,
                        EventKind::Normal,
                        "Started",
                        "VirtualMachineInstance started.",
                    );
                }
            }
            Ok(None)
        }
        Observed::Stopping { .. } => Ok(None),
        Observed::Exited(info) => {
            if ctx.probes.liveness_failed(&vmi.uid) {
                set_final(
                    ctx,
                    &vmi,
                    false,
                    "LivenessProbeFailed",
                    "the VM was stopped because its liveness probe failed",
                )?;
            } else {
                set_final(ctx, &vmi, info.succeeded, &info.reason, &info.message)?;
            }
            Ok(None)
        }
    }
}

/// What the probes say about a running VMI.
struct ProbeView {
    ready: bool,
    live: bool,
    /// Why it is not ready (the Ready condition's message).
    message: String,
}

/// Starts (idempotently) the VMI's probes once its guest runs and it has a pod IP, reports
/// their failures as events (`Unhealthy`, as the kubelet does) and returns their verdicts. No
/// readiness probe: ready. A readiness probe that has not passed yet: not ready.
fn probe(ctx: &Ctx, vmi: &Vmi, vm_ready: bool, ifaces: &Value) -> ProbeView {
    let spec = vmi.obj.get("spec").cloned().unwrap_or(Value::Null);
    let has_readiness = vmi.spec.readiness_probe.is_some();
    let ip = ifaces
        .pointer("/0/ipAddress")
        .and_then(Value::as_str)
        .and_then(|ip| ip.parse().ok());
    let results = match ip {
        Some(ip) if vm_ready => ctx.probes.ensure(
            &ctx.queue,
            (&vmi.uid, &vmi.key.namespace, &vmi.key.name),
            &spec,
            ip,
        ),
        _ => None,
    };
    let Some(results) = results else {
        let message = if has_readiness && ip.is_none() {
            "the readiness probe needs a pod network (the VMI has no pod IP)"
        } else {
            "the readiness probe has not run yet"
        };
        return ProbeView {
            ready: !has_readiness,
            live: true,
            message: message.into(),
        };
    };
    let (ready, live, failures, last) = {
        let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
        (
            r.ready.unwrap_or(true),
            r.live,
            std::mem::take(&mut r.unreported),
            r.last_failure.clone(),
        )
    };
    for f in failures {
        ctx.events
            .record(Kind::Vmi, &vmi.obj, EventKind::Warning, "Unhealthy", &f);
    }
    ProbeView {
        ready,
        live,
        message: last.unwrap_or_else(|| "the readiness probe has not succeeded yet".into()),
    }
}

fn set_final(
    ctx: &Ctx,
    vmi: &Vmi,
    ok: bool,
    reason: &str,
    message: &str,
) -> Result<(), StoreError> {
    ctx.probes.forget(&vmi.uid);
    let now = now_rfc3339();
    let phase = if ok { Phase::Succeeded } else { Phase::Failed };
    let obj = update_status(ctx, &vmi.key, |st| {
        set_phase(st, phase, &now);
        st["reason"] = json!(reason);
        st["message"] = json!(message);
        set_condition(st, "Ready", false, reason, message, &now);
    })?;
    let ek = if ok {
        EventKind::Normal
    } else {
        EventKind::Warning
    };
    ctx.events.record(
        Kind::Vmi,
        &obj,
        ek,
        if ok { "Stopped" } else { reason },
        message,
    );
    Ok(())
}

fn set_pending(ctx: &Ctx, vmi: &Vmi, reason: &str, message: &str) -> Result<(), StoreError> {
    let current_reason = vmi
        .obj
        .get("status")
        .and_then(|s| s.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let current_msg = vmi
        .obj
        .get("status")
        .and_then(|s| s.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if vmi.phase == Phase::Pending && current_reason == reason && current_msg == message {
        return Ok(());
    }
    let now = now_rfc3339();
    let obj = update_status(ctx, &vmi.key, |st| {
        set_phase(st, Phase::Pending, &now);
        st["reason"] = json!(reason);
        st["message"] = json!(message);
        set_condition(st, "Ready", false, reason, message, &now);
    })?;
    if current_reason != reason {
        let ek = if reason == "PullingImage" {
            EventKind::Normal
        } else {
            EventKind::Warning
        };
        ctx.events.record(Kind::Vmi, &obj, ek, reason, message);
    }
    Ok(())
}

fn wake(ctx: &Ctx, key: &ObjectKey) -> Box<dyn FnOnce() + Send> {
    let q = Arc::clone(&ctx.queue);
    let k = WorkKey::Vmi(key.namespace.clone(), key.name.clone());
    Box::new(move || q.add(k))
}

/// Memory promised to VMs already admitted (Scheduling, Scheduled, Running), except `skip`.
fn committed_memory(ctx: &Ctx, skip_uid: &str) -> u64 {
    let (vmis, _) = ctx.store.list(Kind::Vmi, None, |v| {
        let phase = Phase::parse(
            v.get("status")
                .and_then(|s| s.get("phase"))
                .and_then(Value::as_str),
        );
        matches!(phase, Phase::Scheduling | Phase::Scheduled | Phase::Running)
            && meta::uid(v) != skip_uid
    });
    vmis.iter()
        .filter_map(|v| {
            let spec = decode::<VmiSpec>(v.get("spec")?, "spec").ok()?.value;
            let (needs, _) = spec.validate("spec").ok()?;
            Some(ctx.capacity.need(needs.guest_memory))
        })
        .sum()
}

enum Images {
    Ready(Vec<Option<BootImage>>, Option<crate::boot::KernelArtifacts>),
    /// Reason, message, and when to retry (None: a pull in flight will wake the VMI).
    Waiting(String, String, Option<Duration>),
}

/// Resolves every containerDisk (and the kernelBoot container) of the VMI.
fn resolve_images(ctx: &Ctx, vmi: &Vmi, disks: &[ResolvedDisk]) -> Images {
    let kernel_supplied = vmi
        .spec
        .domain
        .as_ref()
        .and_then(|d| d.firmware.as_ref())
        .and_then(|f| f.kernel_boot.as_ref())
        .and_then(|k| k.container.as_ref())
        .is_some_and(|c| c.kernel_path.is_some());
    let mut out = Vec::new();
    for d in disks {
        let DiskSource::ContainerDisk { image, pull_policy } = &d.source else {
            out.push(None);
            continue;
        };
        let policy = PullPolicy::for_image(image, pull_policy.as_deref());
        match ctx
            .images
            .boot_image(image, policy, kernel_supplied, wake(ctx, &vmi.key))
        {
            ImageState::Ready(b) => out.push(Some(b)),
            ImageState::Pulling => {
                let msg = format!("pulling image \"{image}\"");
                return Images::Waiting("PullingImage".into(), msg, None);
            }
            ImageState::BackOff { error, retry_in } => {
                let reason = if policy == PullPolicy::Never {
                    "ErrImageNeverPull"
                } else {
                    "ImagePullBackOff"
                };
                let msg = format!("Back-off pulling image \"{image}\": {error}");
                return Images::Waiting(reason.into(), msg, Some(retry_in));
            }
        }
    }
    let kb = vmi
        .spec
        .domain
        .as_ref()
        .and_then(|d| d.firmware.as_ref())
        .and_then(|f| f.kernel_boot.as_ref());
    let kernel = match kb.and_then(|k| k.container.as_ref()) {
        None => None,
        Some(c) => {
            let policy = PullPolicy::for_image(&c.image, c.image_pull_policy.as_deref());
            match ctx.images.kernel(
                &c.image,
                c.kernel_path.as_deref(),
                c.initrd_path.as_deref(),
                policy,
                wake(ctx, &vmi.key),
            ) {
                ImageState::Ready(k) => Some(k),
                ImageState::Pulling => {
                    let msg = format!("pulling kernel image \"{}\"", c.image);
                    return Images::Waiting("PullingImage".into(), msg, None);
                }
                ImageState::BackOff { error, retry_in } => {
                    let msg = format!("Back-off pulling kernel image \"{}\": {error}", c.image);
                    return Images::Waiting("ImagePullBackOff".into(), msg, Some(retry_in));
                }
            }
        }
    };
    Images::Ready(out, kernel)
}

/// The NoCloud `meta-data` KubeVirt writes: instance-id `<name>.<namespace>`.
/// `spec.hostname` when it is a DNS label (admission checks it; objects stored before that
/// check may hold anything), else the VMI's name.
fn hostname(vmi: &Vmi) -> String {
    vmi.spec
        .hostname
        .clone()
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 63
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .unwrap_or_else(|| vmi.key.name.clone())
}

/// The VMI's virtio transport (its `corral.dev/virtio-transport` annotation; pci).
fn transport(vmi: &Vmi) -> Result<vmm::TransportKind, String> {
    let annotations: Option<BTreeMap<String, String>> = vmi
        .obj
        .pointer("/metadata/annotations")
        .and_then(|a| serde_json::from_value(a.clone()).ok());
    crate::kinds::vmi::transport_of(annotations.as_ref()).map_err(|e| {
        format!(
            "annotation {}: {e}",
            crate::kinds::vmi::TRANSPORT_ANNOTATION
        )
    })
}

fn meta_data(vmi: &Vmi) -> Vec<u8> {
    let hostname = vmi
        .spec
        .hostname
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| vmi.key.name.clone());
    let instance_id = format!("{}.{}", vmi.key.name, vmi.key.namespace);
    let mut out = String::new();
    for (key, value) in [("instance-id", &instance_id), ("local-hostname", &hostname)] {
        out.push_str(key);
        out.push_str(": ");
        out.push_str(&yaml_scalar(value));
        out.push('\n');
    }
    out.into_bytes()
}

/// `v` as one YAML scalar: plain when it is a DNS-style name (what validation admits; guests
/// read these lines with `sed`), else a double-quoted JSON string, which YAML reads back as
/// the same string and which never spans lines.
fn yaml_scalar(v: &str) -> String {
    let plain = !v.is_empty()
        && v.as_bytes()[0].is_ascii_alphanumeric()
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_');
    if plain {
        v.to_string()
    } else {
        serde_json::Value::from(v).to_string()
    }
}

fn build_plan(
    vmi: &Vmi,
    needs: &ResourceNeeds,
    disks: &[ResolvedDisk],
    images: &[Option<BootImage>],
    kernel: Option<crate::boot::KernelArtifacts>,
) -> Result<LaunchPlan, String> {
    let boot = images.iter().flatten().next();
    let kb = vmi
        .spec
        .domain
        .as_ref()
        .and_then(|d| d.firmware.as_ref())
        .and_then(|f| f.kernel_boot.as_ref());
    let cmdline = kb
        .and_then(|k| k.kernel_args.clone())
        .filter(|s| !s.trim().is_empty())
        .or_else(|| boot.map(|b| b.cmdline.clone()))
        .unwrap_or_else(|| "console=ttyS0".to_string());
    // KubeVirt: a kernel-boot container's kernel comes with its initrd; an initrd alone keeps
    // the disk's kernel.
    let (kernel_path, initrd) = match kernel {
        Some(k) if k.kernel.is_some() => (k.kernel, k.initrd),
        Some(k) => (boot.and_then(|b| b.kernel.clone()), k.initrd),
        None => (
            boot.and_then(|b| b.kernel.clone()),
            boot.and_then(|b| b.initrd.clone()),
        ),
    };
    let kernel_path = kernel_path.ok_or_else(|| {
        "no kernel: the boot disk has none and no kernelBoot.container kernelPath is given"
            .to_string()
    })?;
    let mut launch_disks = Vec::new();
    for (d, img) in disks.iter().zip(images) {
        launch_disks.push(match (&d.source, img) {
            (DiskSource::ContainerDisk { .. }, Some(b)) => LaunchDisk::Image {
                name: d.name.clone(),
                path: b.disk.clone(),
                readonly: d.readonly,
            },
            (
                DiskSource::CloudInit {
                    user_data,
                    network_data,
                },
                _,
            ) => {
                let mut files = vec![
                    ("meta-data".to_string(), meta_data(vmi)),
                    ("user-data".to_string(), user_data.clone()),
                ];
                if let Some(n) = network_data {
                    files.push(("network-config".to_string(), n.clone()));
                }
                LaunchDisk::Seed {
                    name: d.name.clone(),
                    files,
                }
            }
            (DiskSource::Empty { capacity }, _) => LaunchDisk::Empty {
                name: d.name.clone(),
                capacity: *capacity,
            },
            (DiskSource::ContainerDisk { .. }, None) => {
                return Err(format!("disk {}: image not resolved", d.name));
            }
        });
    }
    Ok(LaunchPlan {
        vm: VmRef {
            uid: vmi.uid.clone(),
            namespace: vmi.key.namespace.clone(),
            name: vmi.key.name.clone(),
        },
        kernel: kernel_path,
        initrd,
        cmdline,
        memory_bytes: needs.guest_memory,
        vcpus: needs.vcpus,
        disks: launch_disks,
        interfaces: vmi
            .spec
            .interfaces()
            .into_iter()
            .map(|i| LaunchInterface {
                mac: i
                    .mac
                    .unwrap_or_else(|| crate::runtime::pod::generated_mac(&vmi.uid, &i.name)),
                name: i.name,
                ports: i.ports,
            })
            .collect(),
        hostname: hostname(vmi),
        transport: transport(vmi)?,
        limits: Limits {
            cpu_request_millis: needs.cpu_request_millis,
            cpu_limit_millis: needs.cpu_limit_millis,
            memory_limit_bytes: needs.memory_limit,
        },
    })
}

fn qos_class(needs: &ResourceNeeds, spec: &VmiSpec) -> &'static str {
    let res = spec.domain.as_ref().and_then(|d| d.resources.as_ref());
    let has_any = res.is_some_and(|r| {
        r.requests.as_ref().is_some_and(|m| !m.is_empty())
            || r.limits.as_ref().is_some_and(|m| !m.is_empty())
    });
    let cpu_eq = needs.cpu_limit_millis.is_some()
        && needs
            .cpu_request_millis
            .is_none_or(|r| Some(r) == needs.cpu_limit_millis);
    if needs.memory_limit.is_some() && cpu_eq {
        "Guaranteed"
    } else if has_any {
        "Burstable"
    } else {
        "BestEffort"
    }
}

fn admit_and_launch(ctx: &Ctx, vmi: &Vmi) -> Result<Requeue, StoreError> {
    let (needs, disks) = match vmi.spec.validate("spec") {
        Ok(v) => v,
        Err(e) => {
            set_final(ctx, vmi, false, "InvalidSpec", &e.to_string())?;
            return Ok(None);
        }
    };
    let (images, kernel) = match resolve_images(ctx, vmi, &disks) {
        Images::Ready(i, k) => (i, k),
        Images::Waiting(reason, msg, retry) => {
            set_pending(ctx, vmi, &reason, &msg)?;
            return Ok(retry);
        }
    };
    let plan = match build_plan(vmi, &needs, &disks, &images, kernel) {
        Ok(p) => p,
        Err(e) => {
            set_final(ctx, vmi, false, "InvalidSpec", &e)?;
            return Ok(None);
        }
    };
    // Capacity check and the move to Scheduling happen under one lock so that concurrent
    // launches cannot both take the last memory.
    let _g = ctx
        .launch_lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (total, avail) = crate::host::memory();
    let need = ctx.capacity.need(needs.guest_memory);
    match ctx
        .capacity
        .check(need, committed_memory(ctx, &vmi.uid), total, avail)
    {
        Fit::Yes => {}
        Fit::NotNow(msg) => {
            set_pending(ctx, vmi, "Unschedulable", &msg)?;
            return Ok(Some(Duration::from_secs(5)));
        }
        Fit::Never(msg) => {
            set_final(ctx, vmi, false, "Unschedulable", &msg)?;
            return Ok(None);
        }
    }
    // Ephemeral storage, under the same lock, which is held until the launch is recorded by the
    // runtime: two VMs never both take the last of the scratch filesystem.
    match ctx.runtime.fits_storage(&plan) {
        Fit::Yes => {}
        Fit::NotNow(msg) => {
            set_pending(ctx, vmi, "Unschedulable", &msg)?;
            return Ok(Some(Duration::from_secs(5)));
        }
        Fit::Never(msg) => {
            set_final(ctx, vmi, false, "Unschedulable", &msg)?;
            return Ok(None);
        }
    }
    let now = now_rfc3339();
    let qos = qos_class(&needs, &vmi.spec);
    update_status(ctx, &vmi.key, |st| {
        set_phase(st, Phase::Scheduling, &now);
        if let Some(o) = st.as_object_mut() {
            o.remove("reason");
            o.remove("message");
        }
        st["qosClass"] = json!(qos);
        st["guestOSInfo"] = json!({});
        st["currentCPUTopology"] = json!({"cores": needs.vcpus, "sockets": 1, "threads": 1});
        st["memory"] = json!({
            "guestAtBoot": crate::quantity::format_bytes(needs.guest_memory),
            "guestCurrent": crate::quantity::format_bytes(needs.guest_memory),
            "guestRequested": crate::quantity::format_bytes(needs.guest_memory),
        });
        set_condition(
            st,
            "Ready",
            false,
            "GuestNotRunning",
            "the VM is starting",
            &now,
        );
    })?;
    let launched = ctx.runtime.launch(&plan);
    drop(_g);
    let c = &crate::metrics::counters::COUNTERS;
    crate::metrics::counters::add(
        if launched.is_ok() {
            &c.vm_starts
        } else {
            &c.vm_start_failures
        },
        1,
    );
    if let Err(e) = launched {
        let msg = crate::error_chain(&e);
        tracing::error!(vmi = %format!("{}/{}", vmi.key.namespace, vmi.key.name), error = %msg, "VM launch failed");
        set_final(ctx, vmi, false, "FailedCreate", &msg)?;
        return Ok(None);
    }
    let now = now_rfc3339();
    // The pod IP is known once the VMM is spawned, before the guest boots.
    let interfaces = interfaces_status(ctx, &vmi.uid);
    update_status(ctx, &vmi.key, |st| {
        set_phase(st, Phase::Scheduled, &now);
        st["nodeName"] = json!(crate::host::node_name());
        st["interfaces"] = interfaces;
    })?;
    Ok(None)
}

/// `status.interfaces` as KubeVirt reports a masquerade NIC: the pod IP, the guest's MAC.
fn interfaces_status(ctx: &Ctx, uid: &str) -> Value {
    Value::Array(
        ctx.runtime
            .interfaces(uid)
            .into_iter()
            .map(|i| {
                json!({
                    "name": i.name,
                    "interfaceName": crate::network::POD_IF,
                    "ipAddress": i.ip.to_string(),
                    "ipAddresses": [i.ip.to_string()],
                    "mac": crate::network::format_mac(&i.mac),
                    "infoSource": "domain",
                    "queueCount": 1,
                })
            })
            .collect(),
    )
}

/// The VMI is being deleted: stop its VM, then drop the finalizer.
fn finalize(ctx: &Ctx, vmi: &Vmi) -> Result<Requeue, StoreError> {
    ctx.probes.forget(&vmi.uid);
    if let Observed::Running { .. } = ctx.runtime.observe(&vmi.uid) {
        ctx.runtime.stop(&vmi.uid, grace(&vmi.spec, &vmi.obj));
    }
    // The runtime reports the exit, which requeues this VMI; the delay is a safety net.
    match ctx.runtime.observe(&vmi.uid) {
        Observed::Running { .. } | Observed::Stopping { .. } => Ok(Some(Duration::from_secs(5))),
        Observed::Exited(_) | Observed::Unknown => {
            ctx.runtime.release(&vmi.uid);
            ctx.store.update(&vmi.key, true, |cur| {
                let mut n = cur.clone();
                let fins: Vec<String> = meta::finalizers(cur)
                    .into_iter()
                    .filter(|f| f != VMI_FINALIZER)
                    .collect();
                meta::set_finalizers(&mut n, &fins);
                Ok(Some(n))
            })?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod meta_data_tests {
    use super::*;
    use crate::kinds::Kind;

    fn vmi(hostname: Option<&str>) -> Vmi {
        Vmi {
            key: ObjectKey::new(Kind::Vmi, "default", "v-1"),
            obj: Arc::new(serde_json::json!({})),
            uid: "u".into(),
            phase: Phase::parse(None),
            spec: VmiSpec {
                hostname: hostname.map(str::to_string),
                ..Default::default()
            },
        }
    }

    #[test]
    fn meta_data_is_two_lines_whatever_the_hostname() {
        assert_eq!(
            meta_data(&vmi(None)),
            b"instance-id: v-1.default\nlocal-hostname: v-1\n"
        );
        assert_eq!(
            meta_data(&vmi(Some("web-0"))),
            b"instance-id: v-1.default\nlocal-hostname: web-0\n"
        );
        // A hostname that skipped validation (stored before it existed) cannot add keys.
        let evil = "x\ninstance-id: evil\n#";
        let text = String::from_utf8(meta_data(&vmi(Some(evil)))).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert_eq!(
            text.lines().nth(1).unwrap(),
            "local-hostname: \"x\\ninstance-id: evil\\n#\""
        );
        for odd in ["", "a: b", "- x", "'q'", "{x}", "a\rb"] {
            let text = String::from_utf8(meta_data(&vmi(Some(odd)))).unwrap();
            assert_eq!(text.lines().count(), 2, "{odd:?}: {text}");
        }
    }
}
