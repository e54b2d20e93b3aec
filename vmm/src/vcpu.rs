//! vCPUs: creation (CPUID, MSRs, LAPIC, FPU, boot registers) and one thread per vCPU running
//! KVM_RUN and dispatching its exits to the device buses.
//!
//! Stopping: the main thread sets the shared stop flag and kicks each thread with
//! [`kick_signal`]; the handler sets `kvm_run.immediate_exit`, so KVM_RUN returns EINTR whether the
//! signal lands inside KVM_RUN or just before it.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{CpuId, kvm_run};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use thiserror::Error;
use vmm_sys_util::signal::{Killable, register_signal_handler};

use crate::arch::x86_64::{cpuid, interrupts, msr, regs};
use crate::devices::{MmioBus, PioBus};
use crate::lifecycle::{EventSender, VmEvent, VmState};

/// Errors while creating or running vCPUs.
#[derive(Debug, Error)]
pub enum VcpuError {
    #[error("KVM_CREATE_VCPU {0}")]
    Create(u8, #[source] kvm_ioctls::Error),
    #[error("CPUID of vCPU {0}")]
    Cpuid(u8, #[source] cpuid::CpuidError),
    #[error("KVM_SET_CPUID2 on vCPU {0}")]
    SetCpuid(u8, #[source] kvm_ioctls::Error),
    #[error("MSRs of vCPU {0}")]
    Msrs(u8, #[source] msr::MsrError),
    #[error("LAPIC of vCPU {0}")]
    Lapic(u8, #[source] interrupts::InterruptsError),
    #[error("registers of vCPU {0}")]
    Regs(u8, #[source] regs::RegsError),
    #[error("registering the vCPU kick signal handler")]
    KickHandler(#[source] vmm_sys_util::errno::Error),
    #[error("spawning the thread of vCPU {0}")]
    Spawn(u8, #[source] std::io::Error),
}

/// Real-time signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> i32 {
    libc::SIGRTMIN()
}

thread_local! {
    /// This thread's `kvm_run` area, for the kick handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    KVM_RUN.with(|run| {
        let run = run.get();
        if !run.is_null() {
            // SAFETY: the pointer is this thread's own kvm_run mapping, set by the vCPU thread
            // while it owns the VcpuFd and cleared before the fd is dropped; writing one byte
            // is async-signal-safe.
            unsafe { (*run).immediate_exit = 1 };
        }
    });
}

/// Installs the kick handler (once per process).
pub fn register_kick_handler() -> Result<(), VcpuError> {
    register_signal_handler(kick_signal(), on_kick).map_err(VcpuError::KickHandler)
}

/// Creates vCPU `index` of `cpus` with its CPUID, MSRs, LAPIC LINT pins and FPU.
pub fn create(vm: &VmFd, supported: &CpuId, index: u8, cpus: u8) -> Result<VcpuFd, VcpuError> {
    let vcpu = vm
        .create_vcpu(u64::from(index))
        .map_err(|e| VcpuError::Create(index, e))?;
    let cpuid =
        cpuid::vcpu_cpuid(supported, index, cpus).map_err(|e| VcpuError::Cpuid(index, e))?;
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| VcpuError::SetCpuid(index, e))?;
    msr::setup_msrs(&vcpu).map_err(|e| VcpuError::Msrs(index, e))?;
    interrupts::setup_lint(&vcpu).map_err(|e| VcpuError::Lapic(index, e))?;
    regs::setup_fpu(&vcpu).map_err(|e| VcpuError::Regs(index, e))?;
    Ok(vcpu)
}

/// What a vCPU thread needs besides its fd.
#[derive(Clone)]
pub struct VcpuContext {
    pub pio: Arc<PioBus>,
    pub mmio: Arc<MmioBus>,
    pub events: EventSender,
    pub state: Arc<VmState>,
    pub stop: Arc<AtomicBool>,
}

/// A running vCPU thread.
pub struct VcpuThread {
    handle: JoinHandle<()>,
}

/// Starts the thread of vCPU `index`.
pub fn spawn(index: u8, vcpu: VcpuFd, ctx: VcpuContext) -> Result<VcpuThread, VcpuError> {
    let handle = std::thread::Builder::new()
        .name(format!("vcpu{index}"))
        .spawn(move || run_loop(index, vcpu, ctx))
        .map_err(|e| VcpuError::Spawn(index, e))?;
    Ok(VcpuThread { handle })
}

/// Kicks every thread until it has left its run loop, then joins it. `stop` must be set.
pub fn stop_all(threads: Vec<VcpuThread>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for t in &threads {
        let _ = t.handle.kill(kick_signal());
    }
    for t in threads {
        while !t.handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
            if !t.handle.is_finished() {
                let _ = t.handle.kill(kick_signal());
            }
        }
        if t.handle.is_finished() {
            let _ = t.handle.join();
        } else {
            tracing::warn!("a vCPU thread did not stop; leaving it behind");
        }
    }
}

fn run_loop(index: u8, mut vcpu: VcpuFd, ctx: VcpuContext) {
    if let Err(e) = crate::seccomp::enter_thread(crate::seccomp::ThreadKind::Vcpu) {
        let cause = std::error::Error::source(&e).map(|c| format!(": {c}"));
        ctx.events.send(VmEvent::Failed(format!(
            "vCPU {index}: {e}{}",
            cause.unwrap_or_default()
        )));
        return;
    }
    KVM_RUN.with(|run| run.set(vcpu.get_kvm_run() as *mut kvm_run));
    ctx.state.vcpu_entered();
    while !ctx.stop.load(Ordering::Acquire) {
        match vcpu.run() {
            Ok(exit) => {
                if let Some(event) = handle_exit(index, exit, &ctx) {
                    // Whatever ends the boot, this vCPU runs no further guest code.
                    let event = match event {
                        VmEvent::InternalError(detail) => VmEvent::InternalError(format!(
                            "{detail}{}",
                            internal_error_detail(&mut vcpu)
                        )),
                        VmEvent::Crash(detail) => {
                            VmEvent::Crash(format!("{detail}{}", crash_detail(&vcpu)))
                        }
                        other => other,
                    };
                    ctx.events.send(event);
                    break;
                }
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
            }
            Err(e) => {
                ctx.events
                    .send(VmEvent::Failed(format!("KVM_RUN on vCPU {index}: {e}")));
                break;
            }
        }
    }
    KVM_RUN.with(|run| run.set(std::ptr::null_mut()));
}

/// Handles one exit; returns the lifecycle event it causes, if any.
fn handle_exit(index: u8, exit: VcpuExit, ctx: &VcpuContext) -> Option<VmEvent> {
    match exit {
        VcpuExit::IoIn(port, data) => ctx.pio.read(port, data),
        VcpuExit::IoOut(port, data) => ctx.pio.write(port, data),
        VcpuExit::MmioRead(addr, data) => ctx.mmio.read(addr, data),
        VcpuExit::MmioWrite(addr, data) => ctx.mmio.write(addr, data),
        VcpuExit::Shutdown => {
            ctx.state.mark_crashed();
            return Some(VmEvent::Crash(format!(
                "vCPU {index}: triple fault (KVM_EXIT_SHUTDOWN)"
            )));
        }
        VcpuExit::InternalError => {
            return Some(VmEvent::InternalError(format!(
                "vCPU {index}: KVM_EXIT_INTERNAL_ERROR"
            )));
        }
        VcpuExit::FailEntry(reason, cpu) => {
            return Some(VmEvent::InternalError(format!(
                "vCPU {index}: KVM_EXIT_FAIL_ENTRY reason {reason:#x} on host cpu {cpu}"
            )));
        }
        VcpuExit::SystemEvent(kind, _) => {
            return match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => Some(VmEvent::PowerOff),
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => Some(VmEvent::Reset),
                _ => Some(VmEvent::Crash(format!("vCPU {index}: system event {kind}"))),
            };
        }
        other => tracing::debug!("vCPU {index}: ignored exit {other:?}"),
    }
    None
}

/// Where the vCPU was when the guest crashed: ` at rip=... cr2=... cr3=...`, for the log (on
/// Intel a triple fault's RIP names the guest code that faulted; AMD's KVM resets the vCPU
/// before exiting, so its reset state says nothing and is left out).
fn crash_detail(vcpu: &VcpuFd) -> String {
    match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(r), Ok(s)) if r.rip == 0xfff0 && s.cr0 == 0x10 => String::new(),
        (Ok(r), Ok(s)) => format!(
            " at rip={:#x} rsp={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
            r.rip, r.rsp, s.cr0, s.cr2, s.cr3, s.cr4, s.efer
        ),
        _ => String::new(),
    }
}

/// `suberror` and data words of the last internal-error exit.
fn internal_error_detail(vcpu: &mut VcpuFd) -> String {
    let run = vcpu.get_kvm_run();
    // SAFETY: the last exit was KVM_EXIT_INTERNAL_ERROR, so the `internal` union member is the
    // one KVM filled in.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let n = (internal.ndata as usize).min(internal.data.len());
    format!(
        " (suberror {}, data {:x?})",
        internal.suberror,
        &internal.data[..n]
    )
}
