//! corral's container-disk store.
//!
//! Role: turn a KubeVirt container disk (an OCI image whose payload is one qcow2 or raw file
//! under `/disk/`), pulled from a registry or imported from an archive, into boot artifacts:
//! a sparse `disk.raw`, the guest kernel as an ELF `vmlinux` (decompressed once, found inside the
//! disk's ext2/3/4 root), its initrd and a default command line. Everything is cached by digest
//! in a crash-safe store. Knows nothing of KVM or of the supervisor.
//!
//! Threads: the API is async (tokio). Network I/O runs on the caller's runtime; unpacking,
//! qcow2 conversion and kernel extraction run on tokio's blocking pool (`spawn_blocking`).
//! Concurrent pulls of one reference share one task.
//!
//! Entry point: [`ImageStore`].

#![forbid(unsafe_code)]

pub mod auth;
mod build;
pub mod convert;
pub mod credential_helper;
pub mod decompress;
pub mod digest;
mod error;
mod import;
pub mod kernel;
pub mod kernel_boot;
pub mod layout;
pub mod manifest;
pub mod partition;
pub mod progress;
mod pull;
pub mod reference;
mod refs;
pub mod registry;
mod store;
pub mod unpack;

pub use build::{ImageMeta, KernelMeta};
pub use convert::DiskFormat;
pub use digest::Digest;
pub use error::ImageError;
pub use import::ImportError;
pub use kernel::DiskBoot;
pub use kernel_boot::{KernelBoot, KernelBootContainer};
pub use progress::{Phase, ProgressFn, PullEvent};
pub use reference::ImageRef;
pub use store::{
    BootArtifacts, DEFAULT_SIZE_LIMIT, GcReport, Image, ImageStore, KernelArtifacts, PullOptions,
    StoreConfig, StoredRef,
};
