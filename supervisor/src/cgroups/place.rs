//! Placing VMM processes: the hook the process runtime calls right after spawning a VMM, and the
//! check the sampler makes for VMs it has not seen yet (re-adopted after a daemon restart).
//! Settings come from the VMI's spec (vCPUs, requests, limits, guest memory) plus the VMM's
//! measured overhead; the runtime's [`Limits`] are the fallback when the VMI is gone.

use std::sync::Arc;

use serde_json::Value;

use super::{CgroupError, Cgroups, Settings};
use crate::kinds::Kind;
use crate::kinds::validation::decode;
use crate::kinds::vmi::VmiSpec;
use crate::meta;
use crate::runtime::{Limits, VmRef};
use crate::store::{ObjectKey, Store};

/// Places VMMs into their cgroups.
pub struct Placer {
    pub cgroups: Arc<Cgroups>,
    pub store: Arc<Store>,
    /// Memory of the VMM process beyond guest RAM.
    pub overhead: u64,
}

/// Settings for a VMI object, if its spec is valid.
pub fn settings_for_vmi(vmi: &Value, overhead: u64) -> Option<Settings> {
    let spec = decode::<VmiSpec>(vmi.get("spec")?, "spec").ok()?.value;
    let (needs, _) = spec.validate("spec").ok()?;
    Some(Settings::for_vm(
        needs.cpu_request_millis,
        needs.cpu_limit_millis,
        needs.vcpus,
        needs.guest_memory,
        needs.memory_limit,
        overhead,
    ))
}

impl Placer {
    fn settings(&self, vm: &VmRef, limits: Option<&Limits>) -> Settings {
        let obj = self
            .store
            .get(&ObjectKey::new(Kind::Vmi, &vm.namespace, &vm.name))
            .filter(|o| meta::uid(o) == vm.uid);
        if let Some(s) = obj.and_then(|o| settings_for_vmi(&o, self.overhead)) {
            return s;
        }
        let l = limits.cloned().unwrap_or_default();
        Settings::for_vm(
            l.cpu_request_millis,
            l.cpu_limit_millis,
            1,
            0,
            l.memory_limit_bytes,
            self.overhead,
        )
    }

    /// The runtime's hook: the VMM `pid` of `vm` was just spawned.
    pub fn place(&self, vm: &VmRef, pid: u32, limits: &Limits) -> Result<(), CgroupError> {
        let s = self.settings(vm, Some(limits));
        self.cgroups.place(&vm.uid, pid, &s)
    }

    /// The VM's VMM has ended: removes its cgroup (if empty; the sampler's sweep catches any
    /// left behind).
    pub fn release(&self, vm: &VmRef) -> Result<bool, CgroupError> {
        self.cgroups.remove_if_empty(&vm.uid)
    }

    /// Makes sure a running VM is in its cgroup (a VM re-adopted from a daemon that ran without
    /// cgroups, or whose cgroup was removed). Returns true if it had to be placed.
    pub fn ensure(&self, vm: &VmRef, pid: u32) -> Result<bool, CgroupError> {
        if self.cgroups.contains(&vm.uid, pid) {
            return Ok(false);
        }
        let s = self.settings(vm, None);
        self.cgroups.place(&vm.uid, pid, &s)?;
        Ok(true)
    }
}

impl crate::runtime::process::Placement for Placer {
    fn place(&self, vm: &VmRef, pid: u32, limits: &Limits) -> Result<(), String> {
        Placer::place(self, vm, pid, limits).map_err(|e| crate::error_chain(&e))
    }

    fn release(&self, vm: &VmRef) -> Result<(), String> {
        Placer::release(self, vm)
            .map(|_| ())
            .map_err(|e| crate::error_chain(&e))
    }
}
