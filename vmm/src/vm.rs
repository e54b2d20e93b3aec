//! The VM's life: set up the long-lived parts (KVM, console, control socket, event loop), then
//! boot, run until something ends the boot, and boot again after a guest reset.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::builder::{self, BootFiles, BuildError, HostDevices};
use crate::config::VmConfig;
use crate::config::net::{NetBackend, default_mac};
use crate::console::{ConsoleHub, ConsoleLog};
use crate::devices::power_button::PowerButton;
use crate::devices::serial::Serial;
use crate::devices::virtio::block::{Block, BlockError};
use crate::devices::virtio::net::tap::{Tap, TapError};
use crate::devices::virtio::net::{Net, NetError};
use crate::devices::virtio::{Transport, TransportKind};
use crate::disk::{self, DiskBackend, DiskError};
use crate::event_loop::{self, DeviceEvents, EventLoopError, Subscriber};
use crate::jail::{self, JailError, JailSpec};
use crate::kvm::{self, HostKvm, KvmError};
use crate::lifecycle::{ANY_BOOT, EventSender, Outcome, VmEvent, VmState};
use crate::signals::TerminationSignals;
use crate::vcpu::{self, VcpuError};

/// A VMM-side failure (exit code 1).
#[derive(Debug, Error)]
pub enum VmmError {
    #[error("blocking termination signals")]
    Signals(#[source] std::io::Error),
    #[error("KVM")]
    Kvm(#[source] KvmError),
    #[error("vCPU kick handler")]
    Kick(#[source] VcpuError),
    #[error("opening console log {path}")]
    ConsoleLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the serial port")]
    Serial(#[source] std::io::Error),
    #[error("binding control socket {path}")]
    ControlSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the event loop")]
    EventLoop(#[source] EventLoopError),
    #[error("disk {index} ({spec})")]
    Disk {
        index: usize,
        spec: String,
        #[source]
        source: DiskError,
    },
    #[error("disk {index}: virtio-blk device")]
    Block {
        index: usize,
        #[source]
        source: BlockError,
    },
    #[error("network device {index} ({spec})")]
    Tap {
        index: usize,
        spec: String,
        #[source]
        source: TapError,
    },
    #[error("network device {index}: virtio-net device")]
    Net {
        index: usize,
        #[source]
        source: NetError,
    },
    #[error("virtio device {index}: creating its transport")]
    Transport {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("building the VM")]
    Build(#[source] BuildError),
    #[error("entering the jail")]
    Jail(#[source] JailError),
    #[error("{0}")]
    Vcpu(String),
}

/// Runs the VM described by `config` (already validated) until it ends.
///
/// Everything that needs a path or a privilege is opened first (KVM, console log, disks, taps,
/// control socket, kernel and initrd); then, with a jail, the process enters it while still single-threaded
/// (see [`crate::jail`]); only then do threads start.
pub fn run(config: &VmConfig) -> Result<Outcome, VmmError> {
    let signals = TerminationSignals::block().map_err(VmmError::Signals)?;
    let kvm = kvm::open(&config.kvm_device).map_err(VmmError::Kvm)?;
    if kvm::host_kvm() == HostKvm::Pvm {
        eprintln!("{}", kvm::PVM_WARNING);
    }
    vcpu::register_kick_handler().map_err(VmmError::Kick)?;
    let state = Arc::new(VmState::new(u32::from(config.vcpus), config.memory_bytes));
    let log = open_console_log(
        config.console_log.as_deref(),
        config.console_log_max_bytes,
        config.jail.as_ref(),
    )?;
    let hub = Arc::new(ConsoleHub::new(true, log, state.clone()).map_err(VmmError::Serial)?);
    let serial = Arc::new(Serial::new(hub).map_err(VmmError::Serial)?);
    let backends = open_disk_backends(config)?;
    let taps = open_taps(config)?;
    let power_button = Arc::new(PowerButton::new().map_err(VmmError::Serial)?);
    let control = ControlSocket::bind(config.control_socket.as_deref(), config.jail.as_ref())?;
    let listener = control.listener()?;
    let files = BootFiles::open(config).map_err(VmmError::Build)?;
    if let Some(spec) = &config.jail {
        jail::enter(spec, &config.jail_dirs()).map_err(VmmError::Jail)?;
    }
    let (mut virtio, mut handlers) = create_block_devices(backends, config.transport)?;
    let (nets, net_handlers) = create_net_devices(taps, config.transport, virtio.len())?;
    virtio.extend(nets);
    handlers.extend(net_handlers);
    let host_devices = HostDevices {
        serial: serial.clone(),
        power_button,
        virtio,
    };
    let (tx, rx) = channel();
    let devices = DeviceEvents::new(
        serial.clone(),
        state.clone(),
        EventSender::new(tx.clone(), ANY_BOOT),
        signals,
        config.stdin,
        listener,
    );
    let _event_loop = event_loop::spawn(devices, handlers).map_err(VmmError::EventLoop)?;
    let devices = host_devices;

    let mut boot = 0u64;
    loop {
        boot += 1;
        state.begin_boot();
        serial.reset().map_err(VmmError::Serial)?;
        let events = EventSender::new(tx.clone(), boot);
        let vm = builder::build(&kvm, config, &files, &devices, events.clone())
            .map_err(VmmError::Build)?;
        let running = vm.start(events, state.clone()).map_err(VmmError::Build)?;
        let event = match next_event(&rx, boot, None) {
            Some(VmEvent::Stop { reason, grace_ms }) if grace_ms > 0 => {
                graceful_stop(&rx, boot, &devices.power_button, reason, grace_ms)
            }
            Some(event) => event,
            None => VmEvent::Failed("every event sender is gone".into()),
        };
        let ended = running.stop();
        let outcome = match event {
            VmEvent::Reset => {
                tracing::info!("guest reset: boot {} starts", boot + 1);
                drop(ended);
                continue;
            }
            VmEvent::PowerOff => Outcome::PoweredOff,
            VmEvent::Crash(why) => {
                state.mark_crashed();
                Outcome::Crashed(why)
            }
            VmEvent::InternalError(why) => Outcome::KvmInternalError(why),
            VmEvent::Stop { reason, .. } => Outcome::Stopped(reason),
            VmEvent::Failed(why) => return Err(VmmError::Vcpu(why)),
        };
        state.set_stopping();
        // Closing the VM fd makes KVM tear down (several ms of waiting); the process exits
        // right after, which does the same, so skip the explicit drop.
        std::mem::forget(ended);
        return Ok(outcome);
    }
}

/// A disk's backend and its serial.
type OpenDisk = (Box<dyn DiskBackend>, String);

/// Opens every disk (creating overlays, scratch and seed images, all unnamed, in the scratch
/// directory), in guest order.
fn open_disk_backends(config: &VmConfig) -> Result<Vec<OpenDisk>, VmmError> {
    let scratch = config.scratch_dir();
    config
        .disks
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            disk::open(spec, &scratch)
                .map(|backend| (backend, spec.serial.clone()))
                .map_err(|source| VmmError::Disk {
                    index,
                    spec: spec.source.to_string(),
                    source,
                })
        })
        .collect()
}

/// Makes a virtio-blk device of each disk (this starts its read threads); returns the
/// transports (in guest order) and their event-loop handlers.
fn create_block_devices(
    backends: Vec<OpenDisk>,
    kind: TransportKind,
) -> Result<(Vec<Transport>, Vec<Subscriber>), VmmError> {
    let mut transports = Vec::with_capacity(backends.len());
    let mut handlers: Vec<Subscriber> = Vec::with_capacity(backends.len());
    for (index, (backend, serial)) in backends.into_iter().enumerate() {
        let parts =
            Block::create(backend, &serial).map_err(|source| VmmError::Block { index, source })?;
        let t = Transport::new(kind, parts.device, parts.interrupt, parts.notify)
            .map_err(|source| VmmError::Transport { index, source })?;
        transports.push(t);
        handlers.push(Arc::new(std::sync::Mutex::new(parts.handler)));
    }
    Ok((transports, handlers))
}

/// A tap and the guest MAC on it.
type OpenTap = (Tap, [u8; 6]);

/// Opens (or takes over) every network device's tap, in guest order; the default MAC comes from
/// the interface name.
fn open_taps(config: &VmConfig) -> Result<Vec<OpenTap>, VmmError> {
    config
        .nets
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let tap = match &spec.backend {
                NetBackend::Tap { name } => Tap::open(name),
                NetBackend::Fd { fd } => Tap::inherit(*fd),
            }
            .map_err(|source| VmmError::Tap {
                index,
                spec: spec.to_string(),
                source,
            })?;
            let mac = spec.mac.unwrap_or_else(|| default_mac(tap.name()));
            Ok((tap, mac.0))
        })
        .collect()
}

/// Makes a virtio-net device of each tap; returns the transports (in guest order) and their
/// event-loop handlers.
fn create_net_devices(
    taps: Vec<OpenTap>,
    kind: TransportKind,
    first_index: usize,
) -> Result<(Vec<Transport>, Vec<Subscriber>), VmmError> {
    let mut transports = Vec::with_capacity(taps.len());
    let mut handlers: Vec<Subscriber> = Vec::with_capacity(taps.len());
    for (index, (tap, mac)) in taps.into_iter().enumerate() {
        let parts = Net::create(tap, mac).map_err(|source| VmmError::Net { index, source })?;
        let t = Transport::new(kind, parts.device, parts.interrupt, parts.notify).map_err(
            |source| VmmError::Transport {
                index: first_index + index,
                source,
            },
        )?;
        transports.push(t);
        handlers.push(Arc::new(std::sync::Mutex::new(parts.handler)));
    }
    Ok((transports, handlers))
}

/// The first event of `boot` (or of any boot, for host stop requests), waiting at most until
/// `deadline`.
fn next_event(
    rx: &Receiver<(u64, VmEvent)>,
    boot: u64,
    deadline: Option<Instant>,
) -> Option<VmEvent> {
    loop {
        let received = match deadline {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        match received {
            Ok((b, event)) if b == boot || b == ANY_BOOT => return Some(event),
            Ok(_) => continue, // late event of an earlier boot
            Err(_) => return None,
        }
    }
}

/// How often the power button is pressed again during a graceful stop: a guest still in early
/// boot, with its interrupt not yet routed, misses an edge; a later press reaches it.
const POWER_BUTTON_REPEAT: Duration = Duration::from_secs(1);

/// Presses the power button (again every [`POWER_BUTTON_REPEAT`]) and waits up to `grace_ms`
/// for the guest to power off. A guest that powers off in time ends the VM as a power-off (exit
/// 0, as when it powers off by itself); anything else is a host stop.
fn graceful_stop(
    rx: &Receiver<(u64, VmEvent)>,
    boot: u64,
    button: &PowerButton,
    reason: String,
    grace_ms: u64,
) -> VmEvent {
    let deadline = Instant::now() + Duration::from_millis(grace_ms);
    let event = loop {
        if let Err(e) = button.press() {
            tracing::warn!("pressing the power button: {e}");
        }
        let next_press = (Instant::now() + POWER_BUTTON_REPEAT).min(deadline);
        match next_event(rx, boot, Some(next_press)) {
            Some(event) => break Some(event),
            // Timed out before the deadline: press again. Returned early: the channel is gone.
            None if Instant::now() < deadline && Instant::now() >= next_press => continue,
            None => break None,
        }
    };
    let reason = match event {
        Some(VmEvent::PowerOff) => {
            tracing::info!("{reason}: the guest powered off after the power button");
            return VmEvent::PowerOff;
        }
        Some(VmEvent::Stop { .. }) => format!("{reason}: stopped again, forced"),
        Some(other) => format!("{reason}: forced after {other:?}"),
        None => format!("{reason}: forced after {grace_ms} ms grace"),
    };
    VmEvent::Stop {
        reason,
        grace_ms: 0,
    }
}

/// Opens the console log. A jailed VMM's log, when it creates it, belongs to the jail's user, so
/// that it can be rotated from inside the jail (the run directory is sticky).
fn open_console_log(
    path: Option<&Path>,
    max_bytes: u64,
    jail: Option<&JailSpec>,
) -> Result<Option<ConsoleLog>, VmmError> {
    let Some(p) = path else { return Ok(None) };
    let err = |source| VmmError::ConsoleLog {
        path: p.to_path_buf(),
        source,
    };
    let existed = p.symlink_metadata().is_ok();
    let log = ConsoleLog::open(p, max_bytes).map_err(err)?;
    if let Some(jail) = jail {
        if !existed {
            std::os::unix::fs::lchown(p, Some(jail.uid), Some(jail.gid)).map_err(err)?;
        }
    }
    Ok(Some(log))
}

/// The control socket file: bound at start, removed when the VMM ends.
struct ControlSocket {
    path: Option<PathBuf>,
    listener: Option<UnixListener>,
}

impl ControlSocket {
    fn bind(path: Option<&Path>, jail: Option<&JailSpec>) -> Result<Self, VmmError> {
        let Some(path) = path else {
            return Ok(ControlSocket {
                path: None,
                listener: None,
            });
        };
        let err = |source| VmmError::ControlSocket {
            path: path.to_path_buf(),
            source,
        };
        // A stale socket from a dead VMM would make bind fail.
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let listener = UnixListener::bind(path).map_err(err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        if let Some(jail) = jail {
            // The jailed VMM removes its socket when it ends.
            std::os::unix::fs::lchown(path, Some(jail.uid), Some(jail.gid)).map_err(err)?;
        }
        listener.set_nonblocking(true).map_err(err)?;
        Ok(ControlSocket {
            path: Some(path.to_path_buf()),
            listener: Some(listener),
        })
    }

    fn listener(&self) -> Result<Option<UnixListener>, VmmError> {
        match (&self.listener, &self.path) {
            (Some(l), Some(path)) => {
                l.try_clone()
                    .map(Some)
                    .map_err(|source| VmmError::ControlSocket {
                        path: path.clone(),
                        source,
                    })
            }
            _ => Ok(None),
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}
