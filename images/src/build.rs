//! Turns verified layer blobs into boot artifacts in a staging directory: the disk (unpacked,
//! converted to sparse raw), the kernel as ELF vmlinux, the initrd and `image.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::convert::{self, ConvertError, DiskFormat};
use crate::decompress::{DecompressError, KernelFormat, to_vmlinux};
use crate::digest::Digest;
use crate::kernel::{self, DiskBoot, KernelError};
use crate::layout::{StoreError, io_err, sync_tree, write_atomic};
use crate::progress::{Phase, ProgressHub, PullEvent};
use crate::unpack::{self, LayerInput, Limits, UnpackError};

/// Why artifacts could not be built from an image's layers.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error("disk {name}")]
    Disk {
        name: String,
        #[source]
        source: ConvertError,
    },
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("kernel-boot container")]
    Decompress(#[from] DecompressError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `image.json`: what a disk artifact directory holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    pub id: Digest,
    /// The disk's path in the image, e.g. `/disk/disk.qcow2`.
    pub disk_name: String,
    pub disk_format: DiskFormat,
    /// The qcow2 version (2 or 3) of a qcow2 disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qcow2_version: Option<u32>,
    /// Virtual size of `disk.raw`.
    pub disk_size: u64,
    pub boot: DiskBoot,
    pub created: u64,
}

/// `kernel.json`: a kernel-boot container's artifacts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelMeta {
    pub id: Digest,
    pub kernel_path: Option<String>,
    pub kernel_format: Option<KernelFormat>,
    pub initrd_path: Option<String>,
}

pub const IMAGE_JSON: &str = "image.json";
pub const KERNEL_JSON: &str = "kernel.json";

/// Unpacks the disk, converts it, extracts the kernel; everything lands in `artifact`.
pub fn build_disk(
    id: &Digest,
    layers: &[LayerInput<'_>],
    artifact: &Path,
    work: &Path,
    limits: Limits,
    require_kernel: bool,
    hub: &ProgressHub,
) -> Result<ImageMeta, BuildError> {
    hub.emit(PullEvent::Phase(Phase::Unpacking));
    let staged = unpack::extract_disk(layers, work, limits)?;
    let disk = artifact.join("disk.raw");
    let disk_err = |source| BuildError::Disk {
        name: staged.name.clone(),
        source,
    };
    let mut qcow2_version = None;
    if convert::detect(&staged.path).map_err(disk_err)? == DiskFormat::Qcow2 {
        hub.emit(PullEvent::Phase(Phase::Converting));
        // (to_raw vets the header again; this only reads which version it is, for the record)
        qcow2_version = Some(
            convert::check_qcow2(&staged.path, limits.file)
                .map_err(disk_err)?
                .version,
        );
    }
    let (disk_format, disk_size) =
        convert::to_raw(&staged.path, &disk, limits.file).map_err(disk_err)?;
    hub.emit(PullEvent::Phase(Phase::ExtractingKernel));
    let boot = kernel::extract(&disk, artifact, require_kernel)?;
    let meta = ImageMeta {
        id: id.clone(),
        disk_name: staged.name,
        disk_format,
        qcow2_version,
        disk_size,
        boot,
        created: crate::refs::now(),
    };
    write_atomic(
        &artifact.join(IMAGE_JSON),
        &serde_json::to_vec_pretty(&meta).expect("meta serializes"),
    )?;
    sync_tree(artifact)?;
    Ok(meta)
}

/// Extracts a KubeVirt kernel-boot container's kernel (as vmlinux) and/or initrd into `artifact`.
pub fn build_kernel_boot(
    id: &Digest,
    layers: &[LayerInput<'_>],
    kernel_path: Option<&str>,
    initrd_path: Option<&str>,
    artifact: &Path,
    work: &Path,
    limits: Limits,
) -> Result<KernelMeta, BuildError> {
    let wanted: Vec<String> = kernel_path
        .iter()
        .chain(initrd_path.iter())
        .map(|p| p.to_string())
        .collect();
    let mut files = unpack::extract_files(layers, &wanted, work, limits)?.into_iter();
    let mut kernel_format = None;
    if let Some(kp) = kernel_path {
        let staged = files.next().expect("one staged file per wanted path");
        let bytes = std::fs::read(&staged).map_err(io_err("cannot read", &staged))?;
        let (vmlinux, format) = to_vmlinux(&bytes, kp)?;
        let out = artifact.join("vmlinux");
        std::fs::write(&out, vmlinux).map_err(io_err("cannot write", &out))?;
        kernel_format = Some(format);
    }
    if let Some(staged) = files.next() {
        let out = artifact.join("initrd");
        std::fs::rename(&staged, &out).map_err(io_err("cannot write", &out))?;
    }
    let meta = KernelMeta {
        id: id.clone(),
        kernel_path: kernel_path.map(str::to_string),
        kernel_format,
        initrd_path: initrd_path.map(str::to_string),
    };
    write_atomic(
        &artifact.join(KERNEL_JSON),
        &serde_json::to_vec_pretty(&meta).expect("meta serializes"),
    )?;
    sync_tree(artifact)?;
    Ok(meta)
}
