//! What ends a boot (`VmEvent`), what ends the process (`Outcome` and its exit code), and the
//! state every thread can read (`VmState`: the control socket's `status`).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Something that ends the current boot, sent to the main thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEvent {
    /// The guest entered ACPI S5 (or otherwise asked to power off).
    PowerOff,
    /// The guest asked for a reset (i8042 or ACPI reset register): boot again.
    Reset,
    /// The guest crashed (triple fault: `KVM_EXIT_SHUTDOWN`).
    Crash(String),
    /// KVM could not run the guest (`KVM_EXIT_INTERNAL_ERROR`, emulation failure, entry failure).
    InternalError(String),
    /// The host asked us to stop (signal or control socket): press the power button and give the
    /// guest `grace_ms` to power off (0: stop at once).
    Stop { reason: String, grace_ms: u64 },
    /// A VMM-side failure (ioctl error) on a vCPU or device thread.
    Failed(String),
}

/// How the VM process ended; each maps to a documented exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    PoweredOff,
    Crashed(String),
    KvmInternalError(String),
    Stopped(String),
}

/// Exit code: the guest powered off.
pub const EXIT_POWEROFF: u8 = 0;
/// Exit code: VMM or host error (KVM unavailable, kernel not loadable, ioctl failure).
pub const EXIT_VMM_ERROR: u8 = 1;
/// Exit code: bad arguments.
pub const EXIT_BAD_ARGS: u8 = 2;
/// Exit code: the guest crashed (triple fault).
pub const EXIT_GUEST_CRASH: u8 = 3;
/// Exit code: KVM internal error (emulation failure).
pub const EXIT_KVM_INTERNAL: u8 = 4;
/// Exit code: stopped by the host (SIGTERM/SIGINT, control-socket stop).
pub const EXIT_STOPPED: u8 = 5;

impl Outcome {
    /// The process exit code for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::PoweredOff => EXIT_POWEROFF,
            Outcome::Crashed(_) => EXIT_GUEST_CRASH,
            Outcome::KvmInternalError(_) => EXIT_KVM_INTERNAL,
            Outcome::Stopped(_) => EXIT_STOPPED,
        }
    }
}

/// Sends [`VmEvent`]s tagged with the boot they belong to, so that a late event of a previous
/// boot (a second vCPU noticing the same reset) is ignored. Sending also raises the boot's
/// `ending` flag, which makes every vCPU of that boot stop running guest code at its next exit.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: Sender<(u64, VmEvent)>,
    boot: u64,
    ending: Arc<AtomicBool>,
}

/// Boot tag for events that apply whatever the boot (host stop requests).
pub const ANY_BOOT: u64 = u64::MAX;

impl EventSender {
    pub fn new(tx: Sender<(u64, VmEvent)>, boot: u64) -> Self {
        EventSender {
            tx,
            boot,
            ending: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sends `event`; a closed channel means the VM is already going away, so it is ignored.
    pub fn send(&self, event: VmEvent) {
        self.ending.store(true, Ordering::Release);
        let _ = self.tx.send((self.boot, event));
    }

    /// The flag raised by [`send`](Self::send) (also set by the main thread to stop the boot).
    pub fn ending(&self) -> Arc<AtomicBool> {
        self.ending.clone()
    }
}

/// Lifecycle state reported by `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum RunState {
    Booting = 0,
    Running = 1,
    Stopping = 2,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Booting => "booting",
            RunState::Running => "running",
            RunState::Stopping => "stopping",
        }
    }
}

/// State shared by the main, vCPU and event-loop threads.
#[derive(Debug)]
pub struct VmState {
    pub vcpus: u32,
    pub memory_bytes: u64,
    pub started_unix_ms: u64,
    state: AtomicU8,
    boots: AtomicU64,
    entered: AtomicU32,
    crashed: AtomicBool,
    /// `CLOCK_MONOTONIC` (ns) when the first vCPU first called KVM_RUN, 0 before: set once per
    /// process, for start-up measurements (`bench/vmm-boot`).
    first_run_ns: AtomicU64,
    /// Console bytes dropped for slow console readers (all connections, whole run).
    pub console_dropped: AtomicU64,
    /// Reason the host asked to stop, if it did.
    pub stop_reason: Mutex<Option<String>>,
}

impl VmState {
    pub fn new(vcpus: u32, memory_bytes: u64) -> Self {
        let started_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        VmState {
            vcpus,
            memory_bytes,
            started_unix_ms,
            state: AtomicU8::new(RunState::Booting as u8),
            boots: AtomicU64::new(0),
            entered: AtomicU32::new(0),
            crashed: AtomicBool::new(false),
            first_run_ns: AtomicU64::new(0),
            console_dropped: AtomicU64::new(0),
            stop_reason: Mutex::new(None),
        }
    }

    pub fn run_state(&self) -> RunState {
        match self.state.load(Ordering::Acquire) {
            0 => RunState::Booting,
            1 => RunState::Running,
            _ => RunState::Stopping,
        }
    }

    /// A new boot starts: count it and forget which vCPUs entered before.
    pub fn begin_boot(&self) {
        self.entered.store(0, Ordering::Release);
        self.crashed.store(false, Ordering::Release);
        self.boots.fetch_add(1, Ordering::AcqRel);
        let _ = self.state.compare_exchange(
            RunState::Running as u8,
            RunState::Booting as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// A vCPU thread is about to call KVM_RUN for the first time in this boot.
    pub fn vcpu_entered(&self) {
        if self.first_run_ns.load(Ordering::Relaxed) == 0 {
            let _ = self.first_run_ns.compare_exchange(
                0,
                monotonic_ns(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        let n = self.entered.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.vcpus {
            let _ = self.state.compare_exchange(
                RunState::Booting as u8,
                RunState::Running as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    pub fn mark_crashed(&self) {
        self.crashed.store(true, Ordering::Release);
    }

    pub fn set_stopping(&self) {
        self.state
            .store(RunState::Stopping as u8, Ordering::Release);
    }

    /// `CLOCK_MONOTONIC` (ns) of the process' first KVM_RUN; 0 before it.
    pub fn first_run_ns(&self) -> u64 {
        self.first_run_ns.load(Ordering::Acquire)
    }

    pub fn boots(&self) -> u64 {
        self.boots.load(Ordering::Acquire)
    }

    /// Every vCPU entered KVM_RUN in this boot and nothing crashed (the supervisor's "Ready").
    pub fn vcpus_entered(&self) -> bool {
        self.entered.load(Ordering::Acquire) >= self.vcpus
            && !self.crashed.load(Ordering::Acquire)
            && self.run_state() != RunState::Stopping
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds (the clock other processes compare with, e.g. Python's
/// `time.monotonic_ns`).
fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec for the call's duration.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) } != 0 {
        return 1;
    }
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct() {
        let codes = [
            Outcome::PoweredOff.exit_code(),
            EXIT_VMM_ERROR,
            EXIT_BAD_ARGS,
            Outcome::Crashed(String::new()).exit_code(),
            Outcome::KvmInternalError(String::new()).exit_code(),
            Outcome::Stopped(String::new()).exit_code(),
        ];
        assert_eq!(codes, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn state_follows_boots_and_vcpus() {
        let s = VmState::new(2, 1 << 28);
        s.begin_boot();
        assert_eq!((s.boots(), s.run_state()), (1, RunState::Booting));
        s.vcpu_entered();
        assert!(!s.vcpus_entered());
        s.vcpu_entered();
        assert!(s.vcpus_entered());
        assert_eq!(s.run_state(), RunState::Running);
        s.begin_boot();
        assert_eq!(
            (s.boots(), s.run_state(), s.vcpus_entered()),
            (2, RunState::Booting, false)
        );
        s.set_stopping();
        assert_eq!(s.run_state(), RunState::Stopping);
    }
}
