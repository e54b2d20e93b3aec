//! An in-memory [`VmRuntime`] for controller unit tests: records launches and lets the test
//! decide when a VM becomes ready or exits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use super::{ExitInfo, LaunchPlan, Observed, RuntimeError, VmRef, VmRuntime};

#[derive(Default)]
pub struct FakeRuntime {
    pub vms: Mutex<HashMap<String, (VmRef, Observed)>>,
    pub launches: Mutex<Vec<LaunchPlan>>,
    pub stops: Mutex<Vec<String>>,
    pub released: Mutex<Vec<String>>,
    /// When set, VMs are ready as soon as they are launched.
    pub auto_ready: bool,
}

impl FakeRuntime {
    pub fn set(&self, uid: &str, o: Observed) {
        if let Some(e) = self.vms.lock().unwrap().get_mut(uid) {
            e.1 = o;
        }
    }
    pub fn running_uids(&self) -> Vec<String> {
        self.vms
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, (_, o))| matches!(o, Observed::Running { .. }))
            .map(|(u, _)| u.clone())
            .collect()
    }
}

impl VmRuntime for FakeRuntime {
    fn launch(&self, plan: &LaunchPlan) -> Result<(), RuntimeError> {
        self.launches.lock().unwrap().push(plan.clone());
        self.vms.lock().unwrap().insert(
            plan.vm.uid.clone(),
            (
                plan.vm.clone(),
                Observed::Running {
                    pid: 1000,
                    ready: self.auto_ready,
                },
            ),
        );
        Ok(())
    }
    fn observe(&self, uid: &str) -> Observed {
        self.vms
            .lock()
            .unwrap()
            .get(uid)
            .map(|e| e.1.clone())
            .unwrap_or(Observed::Unknown)
    }
    fn stop(&self, uid: &str, _grace: Duration) {
        self.stops.lock().unwrap().push(uid.to_string());
        self.set(
            uid,
            Observed::Exited(ExitInfo {
                succeeded: false,
                reason: "StoppedByHost".into(),
                message: "stopped".into(),
            }),
        );
    }
    fn release(&self, uid: &str) {
        self.vms.lock().unwrap().remove(uid);
        self.released.lock().unwrap().push(uid.to_string());
    }
    fn known(&self) -> Vec<VmRef> {
        self.vms
            .lock()
            .unwrap()
            .values()
            .map(|e| e.0.clone())
            .collect()
    }
    fn console_log(&self, _uid: &str) -> Option<PathBuf> {
        None
    }
    fn control_socket(&self, _uid: &str) -> Option<PathBuf> {
        None
    }
    fn pid(&self, uid: &str) -> Option<u32> {
        match self.observe(uid) {
            Observed::Running { pid, .. } | Observed::Stopping { pid } => Some(pid),
            _ => None,
        }
    }
}
