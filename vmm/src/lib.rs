//! corral's embedded microVMM.
//!
//! Role: run exactly one KVM guest in the calling process (`corral vmm`). Knows nothing of
//! replica sets, OCI images or the daemon.
//!
//! Threads:
//! * the **main thread** sets up KVM, builds each boot of the VM ([`builder`]) and waits for the
//!   event that ends it ([`lifecycle::VmEvent`]): power-off, reset (boot again), crash, KVM
//!   internal error or a host stop;
//! * **one thread per vCPU** ([`vcpu`]) runs KVM_RUN and dispatches port-IO/MMIO exits to the
//!   devices ([`devices`]); it is kicked out of KVM_RUN with a signal + `immediate_exit`;
//! * **one device event-loop thread** ([`event_loop`], event-manager) serves stdin, the serial
//!   input queue, SIGTERM/SIGINT, the control socket ([`control`]), the virtio-blk request
//!   queues ([`devices::virtio`], one subscriber per disk, backed by [`disk`]) and the virtio-net
//!   queues and taps (one subscriber per network device, [`devices::virtio::net`]);
//! * **two read threads per disk** ([`devices::virtio::block::pool`]) copy reads from the disk
//!   into guest memory in parallel; everything else a disk does runs on the event loop.
//!
//! Jailed (`--jail-uid`, what the daemon always asks for), the process runs as an unprivileged
//! user in its own mount namespace with a seccomp filter per thread kind ([`jail`], [`seccomp`]).
//!
//! Guest layout and boot structures are x86-64 only ([`arch::x86_64`]).

pub mod arch;
pub mod argv;
pub mod builder;
pub mod config;
pub mod console;
pub mod control;
pub mod devices;
pub mod disk;
pub mod event_loop;
pub mod exit_file;
pub mod jail;
pub mod kvm;
pub mod lifecycle;
pub mod memory;
pub mod quantity;
pub mod seccomp;
pub mod seed;
pub mod signals;
pub mod vcpu;
pub mod vm;

pub use arch::x86_64::boot::BootProtocol;
pub use config::{ConfigError, VmConfig};
pub use devices::virtio::TransportKind;
pub use lifecycle::Outcome;
pub use vm::{VmmError, run};
