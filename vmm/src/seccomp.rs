//! seccomp-bpf filters for the VMM's threads (part of the [jail](crate::jail)).
//!
//! Each thread kind gets an allow-list of the system calls it makes; anything else kills the
//! whole process with `SIGSYS` (`SECCOMP_RET_KILL_PROCESS`). The filters are compiled once when
//! the jail is entered ([`prepare`]): the main thread installs [`ThreadKind::Main`] right away,
//! and every thread it starts afterwards inherits that filter and adds its own at its start
//! ([`enter_thread`]); seccomp filters stack, so a thread may only do what both allow. The main
//! thread's list is therefore the union of all lists (plus its own needs): the narrow lists are
//! those of the threads that handle guest input (vCPUs, the event loop, the read workers).
//!
//! Without a jail (`corral vmm` run by hand without `--jail-uid`) nothing is installed.
//!
//! Lists were taken from `strace -f` of the VMM running the test guest with disks, console
//! connections, control requests, a reset and a stop (and the start of a Linux guest), and are
//! kept as small as that allows. ioctls are filtered by request: the main thread may issue KVM
//! ioctls (type `0xAE`), `TUNSETOFFLOAD` and `FIONBIO`; a vCPU thread only `KVM_RUN`,
//! `KVM_SET_GSI_ROUTING` (MSI-X table writes), the two register reads of a crash report and
//! `TUNSETOFFLOAD` (a virtio-net driver starting its device); the others only `FIONBIO`. Taps are
//! read and written by the event loop with `read`/`write`, which it already has.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use thiserror::Error;

/// The kinds of threads in the VMM, each with its own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// Builds each boot, spawns the other threads, writes the exit file.
    Main,
    /// The device event loop (control socket, console, virtio-blk queues).
    EventLoop,
    /// One per vCPU: KVM_RUN and device register emulation.
    Vcpu,
    /// A virtio-blk read worker.
    BlkRead,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 4] = [
        ThreadKind::Main,
        ThreadKind::EventLoop,
        ThreadKind::Vcpu,
        ThreadKind::BlkRead,
    ];

    /// The name used on the command line (`--jail-selftest`).
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Main => "main",
            ThreadKind::EventLoop => "event-loop",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::BlkRead => "blk-read",
        }
    }

    pub fn parse(s: &str) -> Option<ThreadKind> {
        ThreadKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// A filter that could not be built or installed.
#[derive(Debug, Error)]
pub enum SeccompError {
    #[error("building the {0:?} filter")]
    Build(ThreadKind, #[source] seccompiler::BackendError),
    #[error("compiling the {0:?} filter")]
    Compile(ThreadKind, #[source] seccompiler::BackendError),
    #[error("installing the {0:?} filter")]
    Install(ThreadKind, #[source] seccompiler::Error),
}

/// The compiled filters of every thread kind.
#[derive(Debug)]
pub struct Filters {
    main: BpfProgram,
    event_loop: BpfProgram,
    vcpu: BpfProgram,
    blk_read: BpfProgram,
    /// Test hook: the thread of this kind makes a forbidden system call right after installing
    /// its filter (which must kill the process with SIGSYS).
    selftest: Option<ThreadKind>,
}

impl Filters {
    /// Compiles the filters of every kind.
    pub fn compile(selftest: Option<ThreadKind>) -> Result<Filters, SeccompError> {
        Ok(Filters {
            main: compile(ThreadKind::Main)?,
            event_loop: compile(ThreadKind::EventLoop)?,
            vcpu: compile(ThreadKind::Vcpu)?,
            blk_read: compile(ThreadKind::BlkRead)?,
            selftest,
        })
    }

    /// The program of `kind`.
    pub fn program(&self, kind: ThreadKind) -> &BpfProgram {
        match kind {
            ThreadKind::Main => &self.main,
            ThreadKind::EventLoop => &self.event_loop,
            ThreadKind::Vcpu => &self.vcpu,
            ThreadKind::BlkRead => &self.blk_read,
        }
    }

    /// Installs the filter of `kind` on the calling thread.
    pub fn install(&self, kind: ThreadKind) -> Result<(), SeccompError> {
        seccompiler::apply_filter(self.program(kind))
            .map_err(|e| SeccompError::Install(kind, e))?;
        if self.selftest == Some(kind) {
            forbidden_syscall();
        }
        Ok(())
    }
}

/// Filters of the jailed process, set once by the jail.
static FILTERS: OnceLock<Filters> = OnceLock::new();

/// Makes `filters` the process' filters and installs the main one on the calling thread.
pub fn prepare(filters: Filters) -> Result<(), SeccompError> {
    let filters = FILTERS.get_or_init(|| filters);
    filters.install(ThreadKind::Main)
}

/// Installs the filter of `kind` on the calling (new) thread, if the process is jailed.
pub fn enter_thread(kind: ThreadKind) -> Result<(), SeccompError> {
    match FILTERS.get() {
        Some(filters) => filters.install(kind),
        None => Ok(()),
    }
}

/// Like [`enter_thread`], for threads that cannot report an error: a thread that should be
/// filtered must not run unfiltered, so the process ends.
pub fn enter_thread_or_abort(kind: ThreadKind) {
    if let Err(e) = enter_thread(kind) {
        let cause = std::error::Error::source(&e).map(|c| format!(": {c}"));
        eprintln!("corral vmm: error: {e}{}", cause.unwrap_or_default());
        std::process::abort();
    }
}

/// A system call no thread is allowed: `socket(AF_INET, SOCK_STREAM, 0)`.
pub fn forbidden_syscall() {
    // SAFETY: socket() takes no pointers; the fd it would return is closed right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    if fd >= 0 {
        // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
        unsafe { libc::close(fd) };
    }
}

/// Builds the BPF program of `kind`.
pub fn compile(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(
        rules(kind).map_err(|e| SeccompError::Build(kind, e))?,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| SeccompError::Build(kind, e))?;
    filter
        .try_into()
        .map_err(|e| SeccompError::Compile(kind, e))
}

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// `ioctl` request numbers.
mod ioctl {
    /// `_IO(KVMIO, 0x80)`
    pub const KVM_RUN: u64 = 0xae80;
    /// `_IOR(KVMIO, 0x81, struct kvm_regs)`
    pub const KVM_GET_REGS: u64 = 0x8090_ae81;
    /// `_IOR(KVMIO, 0x83, struct kvm_sregs)`
    pub const KVM_GET_SREGS: u64 = 0x8138_ae83;
    /// `_IOW('T', 208, unsigned int)`: a virtio-net device applies the guest's offloads to its
    /// tap when the driver starts it (on a vCPU thread).
    pub const TUNSETOFFLOAD: u64 = libc::TUNSETOFFLOAD;
    /// `_IOW(KVMIO, 0x6a, struct kvm_irq_routing)`: a guest's MSI-X table write re-routes a
    /// vector (virtio-pci, on a vCPU thread).
    pub const KVM_SET_GSI_ROUTING: u64 = 0x4008_ae6a;
    /// The type byte of every KVM ioctl (`KVMIO`).
    pub const KVM_TYPE: u64 = 0xae00;
}

/// What every thread does: memory, locks, signals, time, its own exit, logging to stderr.
const COMMON: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_restart_syscall,
    libc::SYS_getrandom,
    libc::SYS_write,
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // glibc's thread start (in the new thread, under the inherited main filter, and again in
    // its own in case a thread starts another).
    libc::SYS_rseq,
    libc::SYS_set_robust_list,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_sched_getaffinity,
];

/// The main thread: every boot (KVM setup, guest memory, kernel and initrd reads, vCPU and
/// thread creation, vCPU kicks) and the exit file.
const MAIN: &[i64] = &[
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_lseek,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_eventfd2,
    libc::SYS_tgkill,
    // glibc installs its internal signal handlers when the first thread starts.
    libc::SYS_rt_sigaction,
    // The exit file (a temporary file renamed into place) and the control socket's removal,
    // inside the jail's only visible directories.
    libc::SYS_openat,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_fchmod,
    // The event loop's epoll instance and wakeup EventFd are created here; so are the read
    // pools' threads.
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
];

/// The event loop: epoll, the control socket and its connections, console input, signals,
/// the virtio-blk requests (host file I/O on already open disks) and virtio-net frames (`read`
/// and `write` on already open taps).
const EVENT_LOOP: &[i64] = &[
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_ctl,
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_accept4,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_fallocate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_lseek,
    libc::SYS_fstat,
    libc::SYS_statx,
];

/// A vCPU thread: KVM_RUN, and the device emulation it runs on exits (console output to
/// stdout, the log and console connections; interrupt EventFds; virtio queue setup), including
/// the console log's rotation (rename, then a create-append `openat`, see [`vcpu_openat`]).
const VCPU: &[i64] = &[
    libc::SYS_sendto,
    libc::SYS_writev,
    libc::SYS_tgkill,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
];

/// The only `openat` a vCPU thread may make: create-or-append, write-only (the console log's
/// next file); never a read, a truncation, an `O_PATH` or an `O_TMPFILE`.
fn vcpu_openat() -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let mask = (libc::O_ACCMODE | libc::O_CREAT | libc::O_APPEND | libc::O_TRUNC | libc::O_PATH)
        as u64
        | libc::O_TMPFILE as u64;
    let want = (libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND) as u64;
    Ok(vec![rule(&[SeccompCondition::new(
        2,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(mask),
        want,
    )?])?])
}

/// A virtio-blk read worker: reads from the disk into guest memory.
const BLK_READ: &[i64] = &[libc::SYS_preadv, libc::SYS_pread64, libc::SYS_read];

fn rules(kind: ThreadKind) -> Result<Rules, seccompiler::BackendError> {
    let mut rules: Rules = BTreeMap::new();
    // Threads inherit the main thread's filter and add their own, so the main thread's filter
    // must also allow what the others do.
    let lists: &[&[i64]] = match kind {
        ThreadKind::Main => &[COMMON, MAIN, EVENT_LOOP, VCPU, BLK_READ],
        ThreadKind::EventLoop => &[COMMON, EVENT_LOOP],
        ThreadKind::Vcpu => &[COMMON, VCPU],
        ThreadKind::BlkRead => &[COMMON, BLK_READ],
    };
    for &nr in lists.iter().copied().flatten() {
        rules.insert(nr, Vec::new());
    }
    if kind == ThreadKind::Vcpu {
        rules.insert(libc::SYS_openat, vcpu_openat()?);
    }
    // Debug builds of std check that a closing fd is valid (fcntl F_GETFD).
    if let std::collections::btree_map::Entry::Vacant(e) = rules.entry(libc::SYS_fcntl) {
        e.insert(vec![rule(&[arg_eq(1, libc::F_GETFD as u64)?])?]);
    }
    // Thread names (std names every thread it starts, with prctl(PR_SET_NAME) in the new thread).
    let mut prctl = vec![rule(&[arg_eq(0, libc::PR_SET_NAME as u64)?])?];
    if kind == ThreadKind::Main {
        // Threads started by the main thread install their own filter (more filters only ever
        // allow less): seccompiler sets no_new_privs (already set) and calls seccomp().
        prctl.push(rule(&[
            arg_eq(0, libc::PR_SET_NO_NEW_PRIVS as u64)?,
            arg_eq(1, 1)?,
        ])?);
        rules.insert(
            libc::SYS_seccomp,
            vec![rule(&[arg_eq(
                0,
                u64::from(libc::SECCOMP_SET_MODE_FILTER),
            )?])?],
        );
    }
    rules.insert(libc::SYS_prctl, prctl);
    let fionbio = rule(&[arg_eq(1, libc::FIONBIO)?])?;
    let ioctls = match kind {
        ThreadKind::Main => vec![
            rule(&[SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(0xff00),
                ioctl::KVM_TYPE,
            )?])?,
            rule(&[arg_eq(1, ioctl::TUNSETOFFLOAD)?])?,
            fionbio,
        ],
        ThreadKind::Vcpu => vec![
            rule(&[arg_eq(1, ioctl::KVM_RUN)?])?,
            rule(&[arg_eq(1, ioctl::TUNSETOFFLOAD)?])?,
            rule(&[arg_eq(1, ioctl::KVM_GET_REGS)?])?,
            rule(&[arg_eq(1, ioctl::KVM_GET_SREGS)?])?,
            rule(&[arg_eq(1, ioctl::KVM_SET_GSI_ROUTING)?])?,
        ],
        ThreadKind::EventLoop | ThreadKind::BlkRead => vec![fionbio],
    };
    rules.insert(libc::SYS_ioctl, ioctls);
    Ok(rules)
}

fn arg_eq(index: u8, value: u64) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
}

fn rule(conditions: &[SeccompCondition]) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(conditions.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_compiles_and_names_round_trip() {
        let filters = Filters::compile(None).unwrap();
        for kind in ThreadKind::ALL {
            assert!(!filters.program(kind).is_empty());
            assert!(filters.program(kind).len() < 4096, "{kind:?} too long");
            assert_eq!(ThreadKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(ThreadKind::parse("nope"), None);
    }

    /// Forks a child that installs the real filter of `kind` and runs `f`; returns the signal
    /// that ended it (0 if it exited normally).
    fn run_filtered(kind: ThreadKind, f: fn()) -> i32 {
        // Compiled before fork: the child of a multithreaded test process must not allocate.
        let program = compile(kind).unwrap();
        // SAFETY: the child only calls async-signal-safe functions (prctl, seccomp, the syscall
        // under test, _exit) on memory prepared before fork.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = match seccompiler::apply_filter(&program) {
                Ok(()) => {
                    f();
                    0
                }
                Err(_) => 99,
            };
            // SAFETY: ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(rc, pid);
        if libc::WIFSIGNALED(status) {
            libc::WTERMSIG(status)
        } else {
            assert_eq!(libc::WEXITSTATUS(status), 0, "child exited with an error");
            0
        }
    }

    #[test]
    fn a_forbidden_syscall_kills_with_sigsys_on_every_kind() {
        for kind in ThreadKind::ALL {
            assert_eq!(
                run_filtered(kind, forbidden_syscall),
                libc::SIGSYS,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn allowed_syscalls_pass_and_open_is_main_only() {
        fn getpid() {
            // SAFETY: no arguments.
            unsafe { libc::getpid() };
        }
        fn open_root() {
            // SAFETY: a NUL-terminated path; the fd is closed right away.
            let fd = unsafe { libc::open(c"/".as_ptr(), libc::O_RDONLY) };
            if fd >= 0 {
                // SAFETY: our own fd.
                unsafe { libc::close(fd) };
            }
        }
        fn other_ioctl() {
            // SAFETY: TCGETS on fd 0 writes into a valid termios buffer (or fails).
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            // SAFETY: see above.
            unsafe { libc::ioctl(0, libc::TCGETS, &mut t) };
        }
        for kind in ThreadKind::ALL {
            assert_eq!(run_filtered(kind, getpid), 0, "{kind:?}");
            assert_eq!(run_filtered(kind, other_ioctl), libc::SIGSYS, "{kind:?}");
        }
        fn append_dev_null() {
            // SAFETY: a NUL-terminated path; the fd is closed right away.
            let fd = unsafe {
                libc::open(
                    c"/dev/null".as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
                    0o644,
                )
            };
            if fd >= 0 {
                // SAFETY: our own fd.
                unsafe { libc::close(fd) };
            }
        }
        assert_eq!(run_filtered(ThreadKind::Vcpu, append_dev_null), 0);
        assert_eq!(run_filtered(ThreadKind::Main, append_dev_null), 0);
        assert_eq!(
            run_filtered(ThreadKind::EventLoop, append_dev_null),
            libc::SIGSYS
        );
        fn tun_offload() {
            // SAFETY: TUNSETOFFLOAD takes its flags by value; on fd -1 the kernel fails it
            // (EBADF) once the filter let it through.
            unsafe { libc::ioctl(-1, libc::TUNSETOFFLOAD, 0) };
        }
        // A virtio-net driver starting its device (vCPU thread) sets the tap's offloads.
        assert_eq!(run_filtered(ThreadKind::Vcpu, tun_offload), 0);
        assert_eq!(run_filtered(ThreadKind::Main, tun_offload), 0);
        for kind in [ThreadKind::EventLoop, ThreadKind::BlkRead] {
            assert_eq!(run_filtered(kind, tun_offload), libc::SIGSYS, "{kind:?}");
        }
        assert_eq!(run_filtered(ThreadKind::Main, open_root), 0);
        for kind in [ThreadKind::Vcpu, ThreadKind::EventLoop, ThreadKind::BlkRead] {
            assert_eq!(run_filtered(kind, open_root), libc::SIGSYS, "{kind:?}");
        }
    }
}
