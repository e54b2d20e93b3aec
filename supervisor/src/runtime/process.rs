//! The real runtime: one `corral vmm` child process per VM, in its own process group so that a
//! daemon restart (or `kill -9` of the daemon) leaves it running.
//!
//! Each VM has a run directory `<run-dir>/vms/<uid>/` with its control socket, console log, the
//! VMM's stderr and `vm.json` (pid + process start time) from which a restarted daemon re-adopts
//! the VM, and a scratch directory `<scratch-dir>/<uid>/` on disk for its seed files and the
//! unnamed overlay, emptyDisk and seed images the VMM creates. `vm.json` is written before the
//! VMM is spawned, so a daemon killed at any point leaves no VMM it cannot find again. One task
//! per VM waits for the process to end (the child handle, or a pidfd for adopted processes) and
//! one polls its control socket until Ready.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, Signal, kill_process, pidfd_open};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use super::args::{TAP_FD, VmDirs, VmmJail, component, files, seed_dir, vmm_args};
use super::pod::{PodNetworks, PodRecord};
use super::{
    ExitInfo, InterfaceStatus, LaunchDisk, LaunchPlan, Observed, RuntimeError, VmRef, VmRuntime,
    control, exit_info, procfs,
};
use crate::capacity::Fit;

/// What `vm.json` holds. Written with `pid` 0 before the VMM is spawned, then again with its pid.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    vm: VmRef,
    pid: u32,
    start_time: u64,
    args: Vec<String>,
    /// Ephemeral storage promised to the VM (bytes).
    #[serde(default)]
    ephemeral: u64,
    /// The uid the VMM is jailed as, if jailed (absent in records of older daemons: then read
    /// from `args`).
    #[serde(default)]
    jail_uid: Option<u32>,
    /// The VM's pod network, if it has a NIC.
    #[serde(default)]
    network: Option<PodRecord>,
}

impl Record {
    fn jail_uid(&self) -> Option<u32> {
        self.jail_uid.or_else(|| jail_uid_of(&self.args))
    }
}

#[derive(Debug, Clone)]
enum State {
    Running { ready: bool },
    Stopping,
    Exited(ExitInfo),
}

#[derive(Debug, Clone)]
struct Entry {
    vm: VmRef,
    dir: PathBuf,
    pid: u32,
    state: State,
    ephemeral: u64,
    /// The uid the VMM is jailed as (from its arguments), kept from other VMMs.
    jail_uid: Option<u32>,
    network: Option<PodRecord>,
}

/// The `--jail-uid` in a VMM's arguments (records written before `Record::jail_uid`).
fn jail_uid_of(args: &[String]) -> Option<u32> {
    args.windows(2)
        .find(|w| w[0] == "--jail-uid")
        .and_then(|w| w[1].parse().ok())
}

/// Where VMM processes are placed (their cgroups): the runtime calls [`place`](Self::place) right
/// after spawning a VMM and [`release`](Self::release) once it has ended. Errors are logged, not
/// fatal.
pub trait Placement: Send + Sync {
    fn place(&self, vm: &VmRef, pid: u32, limits: &super::Limits) -> Result<(), String>;
    fn release(&self, vm: &VmRef) -> Result<(), String>;
}

struct Inner {
    vms_dir: PathBuf,
    scratch_dir: PathBuf,
    binary: PathBuf,
    extra_env: Vec<(String, String)>,
    vms: Mutex<HashMap<String, Entry>>,
    notify: UnboundedSender<VmRef>,
    placement: Option<Arc<dyn Placement>>,
    jail: VmmJail,
    /// Held through each launch: a dynamic jail uid is chosen and its entry inserted at once.
    launching: Mutex<()>,
    /// Pod networks (None: `--no-pod-network`, VMs get no NIC).
    pods: Option<PodNetworks>,
}

/// One process per VM.
#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

/// Configuration of the process runtime.
pub struct ProcessConfig {
    /// The daemon's run directory; VMs live in `<run_dir>/vms/<uid>`.
    pub run_dir: PathBuf,
    /// Where VMs' disks and seeds go, `<scratch_dir>/<uid>` (on disk: the state dir's volume).
    pub scratch_dir: PathBuf,
    /// The `corral` binary to run as `corral vmm`.
    pub binary: PathBuf,
    /// Environment added to every VMM.
    pub extra_env: Vec<(String, String)>,
    /// Places each new VMM (cgroups) and releases it when it ends.
    pub placement: Option<Arc<dyn Placement>>,
    /// Who the VMMs run as (jailed by default).
    pub jail: VmmJail,
    /// Pod networking; None runs every VM without a NIC.
    pub network: Option<crate::network::NetworkConfig>,
}

fn last_error_line(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join(files::VMM_LOG)).ok()?;
    text.lines()
        .rev()
        .find(|l| l.contains("error"))
        .or_else(|| text.lines().rev().find(|l| !l.trim().is_empty()))
        .map(|l| l.chars().take(400).collect())
}

/// Exit code recorded by the VMM itself (`exit.json`), for processes that are not our children.
fn recorded_exit_code(dir: &Path) -> Option<i32> {
    let text = fs::read_to_string(dir.join(files::EXIT)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("code")?.as_i64().and_then(|c| i32::try_from(c).ok())
}

impl ProcessRuntime {
    /// Creates the runtime and re-adopts every VM whose process still runs.
    pub fn start(
        cfg: ProcessConfig,
        notify: UnboundedSender<VmRef>,
    ) -> std::io::Result<ProcessRuntime> {
        let vms_dir = cfg.run_dir.join("vms");
        fs::create_dir_all(&vms_dir)?;
        fs::create_dir_all(&cfg.scratch_dir)?;
        let rt = ProcessRuntime {
            inner: Arc::new(Inner {
                vms_dir,
                scratch_dir: cfg.scratch_dir,
                binary: cfg.binary,
                extra_env: cfg.extra_env,
                vms: Mutex::new(HashMap::new()),
                notify,
                placement: cfg.placement,
                jail: cfg.jail,
                launching: Mutex::new(()),
                pods: cfg.network.map(PodNetworks::new),
            }),
        };
        rt.adopt_all();
        rt.remove_orphan_scratch();
        if let Some(pods) = &rt.inner.pods {
            let known: Vec<String> = rt.lock().keys().cloned().collect();
            pods.sweep(&known);
        }
        Ok(rt)
    }

    fn dirs(&self, uid: &str) -> Result<VmDirs, RuntimeError> {
        let uid = component("VM uid", uid)?;
        Ok(VmDirs {
            run: self.inner.vms_dir.join(uid),
            scratch: self.inner.scratch_dir.join(uid),
        })
    }

    /// Scratch directories of VMs the runtime does not know (their run directory is gone).
    fn remove_orphan_scratch(&self) {
        let Ok(rd) = fs::read_dir(&self.inner.scratch_dir) else {
            return;
        };
        let known: Vec<String> = self.lock().keys().cloned().collect();
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().to_string();
            if !known.contains(&name) {
                tracing::info!(dir = %ent.path().display(), "removing the scratch directory of a VM that no longer exists");
                let _ = fs::remove_dir_all(ent.path());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner
            .vms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn adopt_all(&self) {
        let Ok(rd) = fs::read_dir(&self.inner.vms_dir) else {
            return;
        };
        for ent in rd.flatten() {
            let dir = ent.path();
            let Ok(text) = fs::read_to_string(dir.join(files::RECORD)) else {
                tracing::warn!(dir = %dir.display(), "run directory without a VM record; removing it");
                let _ = fs::remove_dir_all(&dir);
                continue;
            };
            let Ok(mut rec) = serde_json::from_str::<Record>(&text) else {
                tracing::warn!(dir = %dir.display(), "unreadable VM record; removing the directory");
                let _ = fs::remove_dir_all(&dir);
                continue;
            };
            if rec.pid == 0 {
                // The daemon died between recording the VM and recording its pid: find the VMM
                // by its exact command line (it names this VM's run directory).
                match procfs::find_by_args(&rec.args) {
                    Some(pid) => {
                        rec.pid = pid;
                        rec.start_time = procfs::start_time(pid).unwrap_or(0);
                        tracing::warn!(pid, dir = %dir.display(), "found the VMM of a launch the daemon did not finish recording");
                        let rec_path = dir.join(files::RECORD);
                        if let Err(e) = write_atomic(
                            &rec_path,
                            &serde_json::to_vec_pretty(&rec).unwrap_or_default(),
                        ) {
                            tracing::warn!(path = %rec_path.display(), error = %e, "could not update the VM record");
                        }
                    }
                    None => {
                        tracing::warn!(dir = %dir.display(), "a launch the daemon did not finish recording has no VMM");
                    }
                }
            }
            let same_process =
                procfs::is_alive(rec.pid) && procfs::start_time(rec.pid) == Some(rec.start_time);
            if same_process {
                tracing::info!(vmi = %format!("{}/{}", rec.vm.namespace, rec.vm.name), pid = rec.pid, "re-adopted running VM");
                self.lock().insert(
                    rec.vm.uid.clone(),
                    Entry {
                        vm: rec.vm.clone(),
                        dir: dir.clone(),
                        pid: rec.pid,
                        state: State::Running { ready: false },
                        ephemeral: rec.ephemeral,
                        jail_uid: rec.jail_uid(),
                        network: rec.network.clone(),
                    },
                );
                if let (Some(pods), Some(net)) = (&self.inner.pods, &rec.network) {
                    pods.serve(net);
                }
                self.watch_pidfd(rec.vm.uid.clone(), rec.pid);
                self.poll_ready(rec.vm.uid.clone(), dir.join(files::CONTROL), rec.pid);
            } else {
                let code = recorded_exit_code(&dir);
                let info = exit_info(code, None, last_error_line(&dir).as_deref());
                tracing::warn!(vmi = %format!("{}/{}", rec.vm.namespace, rec.vm.name), pid = rec.pid, reason = %info.reason, "VM ended while the daemon was down");
                self.lock().insert(
                    rec.vm.uid.clone(),
                    Entry {
                        vm: rec.vm,
                        dir,
                        pid: rec.pid,
                        state: State::Exited(info),
                        ephemeral: rec.ephemeral,
                        jail_uid: None,
                        network: rec.network,
                    },
                );
            }
        }
    }

    fn set_state(&self, uid: &str, state: State) {
        let vm = {
            let mut g = self.lock();
            let Some(e) = g.get_mut(uid) else { return };
            e.state = state;
            e.vm.clone()
        };
        let _ = self.inner.notify.send(vm);
    }

    fn exited(&self, uid: &str, code: Option<i32>, signal: Option<i32>) {
        let (dir, vm) = match self.lock().get(uid) {
            Some(e) => (e.dir.clone(), e.vm.clone()),
            None => return,
        };
        // The VMM is gone: its cgroup goes now, not at the next sweep.
        if let Some(placement) = &self.inner.placement {
            if let Err(e) = placement.release(&vm) {
                tracing::warn!(uid, error = %e, "could not release the VMM's placement (cgroups)");
            }
        }
        let code = code.or_else(|| {
            if signal.is_none() {
                recorded_exit_code(&dir)
            } else {
                None
            }
        });
        let info = exit_info(code, signal, last_error_line(&dir).as_deref());
        tracing::info!(uid, reason = %info.reason, message = %info.message, "VM process ended");
        self.set_state(uid, State::Exited(info));
    }

    fn watch_child(&self, uid: String, mut child: tokio::process::Child) {
        let rt = self.clone();
        tokio::spawn(async move {
            use std::os::unix::process::ExitStatusExt;
            match child.wait().await {
                Ok(st) => rt.exited(&uid, st.code(), st.signal()),
                Err(e) => {
                    tracing::error!(uid, error = %e, "waiting for the VMM failed");
                    rt.exited(&uid, None, None);
                }
            }
        });
    }

    fn watch_pidfd(&self, uid: String, pid: u32) {
        let rt = self.clone();
        tokio::spawn(async move {
            // A pidfd becomes readable when the process exits: wait in the reactor, with no
            // thread per adopted VM.
            let pidfd =
                Pid::from_raw(pid as i32).and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok());
            let registered = pidfd.and_then(|fd| {
                // SAFETY: `fd` is an OwnedFd moved into the AsyncFd: it stays open, and
                // as_raw_fd returns the same descriptor, until the AsyncFd is dropped.
                unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        fd,
                        tokio::io::Interest::READABLE,
                    )
                }
                .ok()
            });
            match registered {
                Some(afd) => {
                    let _ = afd.readable().await;
                }
                // No pidfd (kernel < 5.3), or the reactor refused it: poll.
                None => {
                    while procfs::is_alive(pid) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            rt.exited(&uid, None, None);
        });
    }

    fn poll_ready(&self, uid: String, socket: PathBuf, pid: u32) {
        let rt = self.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut delay = Duration::from_millis(5);
            loop {
                let running = matches!(
                    rt.lock().get(&uid).map(|e| &e.state),
                    Some(State::Running { ready: false })
                );
                if !running {
                    return;
                }
                if let Ok(st) = control::status(&socket).await {
                    if st.pid == pid
                        && st.vcpus_entered
                        && st.state == vmm::lifecycle::RunState::Running
                    {
                        rt.set_state(&uid, State::Running { ready: true });
                        return;
                    }
                }
                if start.elapsed() > Duration::from_secs(120) {
                    tracing::warn!(uid, "VMM did not report ready within 120 s");
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(100));
            }
        });
    }

    fn write_seeds(plan: &LaunchPlan, dirs: &VmDirs) -> Result<(), RuntimeError> {
        for d in &plan.disks {
            if let LaunchDisk::Seed { name, files } = d {
                let sd = seed_dir(dirs, name)?;
                fs::create_dir_all(&sd).map_err(|source| RuntimeError::Seed {
                    path: sd.display().to_string(),
                    source,
                })?;
                for (fname, bytes) in files {
                    let p = sd.join(component("seed file name", fname)?);
                    fs::write(&p, bytes).map_err(|source| RuntimeError::Seed {
                        path: p.display().to_string(),
                        source,
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// A jailed VMM keeps its run directory (bind-mounted in its jail) to write its exit file and
/// rotate its console log: root-owned, group = the VM's gid, `rwxrwx--T`. The sticky bit keeps
/// the daemon's own files there (`vm.json`, `vmm.log`, seeds) out of the VMM's reach.
fn jail_run_dir(dir: &Path, spec: &vmm::jail::JailSpec) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(dir, Some(0), Some(spec.gid))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o1770))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(tmp, path)
}

impl VmRuntime for ProcessRuntime {
    fn launch(&self, plan: &LaunchPlan) -> Result<(), RuntimeError> {
        let _launching = self
            .inner
            .launching
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let uid = plan.vm.uid.clone();
        let dirs = self.dirs(&uid)?;
        let dir = dirs.run.clone();
        for d in [&dirs.run, &dirs.scratch] {
            if d.exists() {
                let _ = fs::remove_dir_all(d);
            }
            fs::create_dir_all(d).map_err(|source| RuntimeError::RunDir {
                path: d.display().to_string(),
                source,
            })?;
        }
        Self::write_seeds(plan, &dirs)?;
        let taken: std::collections::HashSet<u32> = self
            .lock()
            .iter()
            .filter(|(other, e)| **other != uid && !matches!(e.state, State::Exited(_)))
            .filter_map(|(_, e)| e.jail_uid)
            .collect();
        let jail = self.inner.jail.spec(&plan.vm.uid, |id| taken.contains(&id));
        if let Some(spec) = &jail {
            jail_run_dir(&dir, spec).map_err(|source| RuntimeError::RunDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let jail_uid = jail.as_ref().map(|j| j.uid);
        // The pod network before anything that can fail less expensively is recorded: on any
        // failure below it is torn down again.
        let attached = match &self.inner.pods {
            Some(pods) => pods.attach(plan, jail.as_ref().map_or((0, 0), |j| (j.uid, j.gid)))?,
            None => None,
        };
        let undo_pod = |e: RuntimeError| {
            if let (Some(pods), Some(_)) = (&self.inner.pods, &attached) {
                pods.detach(&uid);
            }
            e
        };
        let nic = attached.as_ref().map(|a| a.record.pod.mac);
        let args = vmm_args(plan, &dirs, jail, nic).map_err(undo_pod)?;
        let log_path = dir.join(files::VMM_LOG);
        let log = fs::File::create(&log_path)
            .map_err(|source| RuntimeError::RunDir {
                path: log_path.display().to_string(),
                source,
            })
            .map_err(undo_pod)?;
        // Recorded before it exists: a daemon killed right after the spawn finds the VMM again by
        // these arguments (see `adopt_all`).
        let mut record = Record {
            vm: plan.vm.clone(),
            pid: 0,
            start_time: 0,
            args,
            ephemeral: plan.ephemeral_bytes(image_size),
            jail_uid,
            network: attached.as_ref().map(|a| a.record.clone()),
        };
        let rec_path = dir.join(files::RECORD);
        let write_record = |r: &Record| {
            write_atomic(&rec_path, &serde_json::to_vec_pretty(r).unwrap_or_default()).map_err(
                |source| RuntimeError::Record {
                    path: rec_path.display().to_string(),
                    source,
                },
            )
        };
        write_record(&record).map_err(undo_pod)?;
        let mut cmd = tokio::process::Command::new(&self.inner.binary);
        cmd.args(&record.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .process_group(0)
            .kill_on_drop(false);
        for (k, v) in &self.inner.extra_env {
            cmd.env(k, v);
        }
        if let Some(a) = &attached {
            let tap = a.tap.as_raw_fd();
            // SAFETY: dup2 is async-signal-safe and touches only the child's descriptor table;
            // the copy at TAP_FD has close-on-exec clear, the original keeps it.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::dup2(tap, TAP_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .map_err(|source| RuntimeError::Spawn {
                binary: self.inner.binary.display().to_string(),
                source,
            })
            .map_err(undo_pod)?;
        // The VMM holds its own copy of the tap now.
        let network = attached.map(|a| a.record);
        let pid = child.id().unwrap_or(0);
        record.pid = pid;
        record.start_time = procfs::start_time(pid).unwrap_or(0);
        if let Err(e) = write_record(&record) {
            if let Some(p) = Pid::from_raw(pid as i32) {
                let _ = kill_process(p, Signal::KILL);
            }
            return Err(e);
        }
        if let Some(placement) = &self.inner.placement {
            if let Err(e) = placement.place(&plan.vm, pid, &plan.limits) {
                tracing::warn!(uid, error = %e, "could not place the VMM (cgroups)");
            }
        }
        self.lock().insert(
            uid.clone(),
            Entry {
                vm: plan.vm.clone(),
                dir: dir.clone(),
                pid,
                state: State::Running { ready: false },
                ephemeral: record.ephemeral,
                jail_uid: record.jail_uid,
                network,
            },
        );
        self.watch_child(uid.clone(), child);
        self.poll_ready(uid, dir.join(files::CONTROL), pid);
        Ok(())
    }

    fn observe(&self, uid: &str) -> Observed {
        match self.lock().get(uid) {
            None => Observed::Unknown,
            Some(e) => match &e.state {
                State::Running { ready } => Observed::Running {
                    pid: e.pid,
                    ready: *ready,
                },
                State::Stopping => Observed::Stopping { pid: e.pid },
                State::Exited(info) => Observed::Exited(info.clone()),
            },
        }
    }

    fn stop(&self, uid: &str, grace: Duration) {
        let (pid, socket) = {
            let mut g = self.lock();
            let Some(e) = g.get_mut(uid) else { return };
            if !matches!(e.state, State::Running { .. }) {
                return;
            }
            e.state = State::Stopping;
            (e.pid, e.dir.join(files::CONTROL))
        };
        let rt = self.clone();
        let uid = uid.to_string();
        tokio::spawn(async move {
            let Some(p) = Pid::from_raw(pid as i32) else {
                return;
            };
            if control::stop(&socket, grace).await.is_err() {
                let _ = kill_process(p, Signal::TERM);
            }
            let deadline = deadline_after(grace.saturating_add(Duration::from_secs(2)));
            loop {
                if matches!(
                    rt.lock().get(&uid).map(|e| &e.state),
                    Some(State::Exited(_)) | None
                ) {
                    return;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        uid,
                        pid,
                        "VM did not stop within its grace period; killing it"
                    );
                    let _ = kill_process(p, Signal::KILL);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    fn release(&self, uid: &str) {
        let entry = self.lock().remove(uid);
        let dir = entry
            .as_ref()
            .map(|e| e.dir.clone())
            .unwrap_or_else(|| self.inner.vms_dir.join(uid));
        if let Some(e) = &entry {
            if !matches!(e.state, State::Exited(_)) {
                if let Some(p) = Pid::from_raw(e.pid as i32) {
                    if procfs::is_alive(e.pid) {
                        let _ = kill_process(p, Signal::KILL);
                    }
                }
            }
        }
        if let Some(pods) = &self.inner.pods {
            if entry.as_ref().is_some_and(|e| e.network.is_some()) || pods.exists(uid) {
                pods.detach(uid);
            }
        }
        let scratch = self.dirs(uid).ok().map(|d| d.scratch);
        for d in std::iter::once(dir).chain(scratch) {
            if let Err(err) = fs::remove_dir_all(&d) {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %d.display(), error = %err, "could not remove the VM's directory");
                }
            }
        }
    }

    fn known(&self) -> Vec<VmRef> {
        self.lock().values().map(|e| e.vm.clone()).collect()
    }

    fn console_log(&self, uid: &str) -> Option<PathBuf> {
        self.lock().get(uid).map(|e| e.dir.join(files::CONSOLE))
    }

    fn control_socket(&self, uid: &str) -> Option<PathBuf> {
        let g = self.lock();
        let e = g.get(uid)?;
        matches!(e.state, State::Running { .. }).then(|| e.dir.join(files::CONTROL))
    }

    fn pid(&self, uid: &str) -> Option<u32> {
        let g = self.lock();
        let e = g.get(uid)?;
        (!matches!(e.state, State::Exited(_))).then_some(e.pid)
    }

    fn interfaces(&self, uid: &str) -> Vec<InterfaceStatus> {
        let g = self.lock();
        g.get(uid)
            .and_then(|e| e.network.as_ref())
            .map(|n| vec![n.status()])
            .unwrap_or_default()
    }

    fn fits_storage(&self, plan: &LaunchPlan) -> Fit {
        let need = plan.ephemeral_bytes(image_size);
        let (committed, used) = self
            .lock()
            .values()
            .filter(|e| e.vm.uid != plan.vm.uid && !matches!(e.state, State::Exited(_)))
            .fold((0u64, 0u64), |(c, u), e| {
                (
                    c.saturating_add(e.ephemeral),
                    u.saturating_add(procfs::unlinked_file_bytes(e.pid).min(e.ephemeral)),
                )
            });
        let fs = match rustix::fs::statvfs(&self.inner.scratch_dir) {
            Ok(fs) => fs,
            Err(e) => {
                return Fit::NotNow(format!(
                    "cannot read the scratch filesystem {}: {e}",
                    self.inner.scratch_dir.display()
                ));
            }
        };
        crate::storage::check(
            need,
            crate::storage::Scratch {
                total: fs.f_blocks.saturating_mul(fs.f_frsize),
                available: fs.f_bavail.saturating_mul(fs.f_frsize),
                committed,
                used,
            },
        )
    }
}

/// Size of an image file (what its overlay can grow to); 0 if it cannot be read (the VMM then
/// fails to open it and says so).
fn image_size(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// `now + d`, or a day short of forever when that does not fit in an `Instant`.
fn deadline_after(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_grace_period_of_any_length_has_a_deadline() {
        let far = deadline_after(Duration::MAX);
        assert!(far > tokio::time::Instant::now() + Duration::from_secs(365 * 86_400));
        let g = Duration::from_secs(i64::MAX as u64);
        let _ = deadline_after(g.saturating_add(Duration::from_secs(2)));
    }
}
