//! The NoCloud seed disk: a FAT file system labelled `cidata` holding `meta-data`, `user-data`
//! and, when present, `network-config` and `vendor-data`, copied byte for byte from a directory.
//!
//! The image is built in memory with the `fatfs` crate (FAT12 for small seeds, FAT16/32 as the
//! content grows) and stored in an unnamed file in the scratch directory; the guest sees it
//! read-only.

use std::fs::File;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The volume label cloud-init looks for.
pub const LABEL: &[u8; 11] = b"cidata     ";
/// Files a seed directory must hold.
pub const REQUIRED: [&str; 2] = ["meta-data", "user-data"];
/// Files a seed directory may hold besides the required ones.
pub const OPTIONAL: [&str; 2] = ["network-config", "vendor-data"];
/// Smallest image (FAT12 with room to spare).
const MIN_IMAGE: u64 = 1 << 20;

/// Why a seed disk could not be built.
#[derive(Debug, Error)]
pub enum SeedError {
    #[error("reading seed directory {dir}")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("seed directory {dir} lacks {name}")]
    Missing { dir: PathBuf, name: &'static str },
    #[error(
        "{path}: unexpected file in a seed directory (allowed: meta-data, user-data, network-config, vendor-data)"
    )]
    Unexpected { path: PathBuf },
    #[error("reading {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("formatting the FAT image")]
    Format(#[source] std::io::Error),
    #[error("writing {name} into the FAT image")]
    AddFile {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("storing the seed image in {dir}")]
    Store {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The files of a seed directory, in a fixed order.
pub fn read_dir(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, SeedError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SeedError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| SeedError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || REQUIRED.contains(&&*name) || OPTIONAL.contains(&&*name) {
            continue;
        }
        return Err(SeedError::Unexpected { path: entry.path() });
    }
    let mut files = Vec::new();
    for name in REQUIRED.iter().chain(OPTIONAL.iter()) {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => files.push((name.to_string(), bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && OPTIONAL.contains(name) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SeedError::Missing {
                    dir: dir.to_path_buf(),
                    name,
                });
            }
            Err(source) => return Err(SeedError::ReadFile { path, source }),
        }
    }
    Ok(files)
}

/// A FAT image labelled `cidata` holding `files`.
pub fn image(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, SeedError> {
    // Each file rounded up to 4 KiB clusters, plus room for the FATs and the root directory.
    let content: u64 = files
        .iter()
        .map(|(_, b)| (b.len() as u64).div_ceil(4096) * 4096)
        .sum();
    let size = (content + content / 8 + (512 << 10))
        .max(MIN_IMAGE)
        .div_ceil(1 << 20)
        << 20;
    let mut disk = Cursor::new(vec![0u8; size as usize]);
    fatfs::format_volume(
        &mut disk,
        fatfs::FormatVolumeOptions::new()
            .volume_label(*LABEL)
            .volume_id(volume_id(files)),
    )
    .map_err(SeedError::Format)?;
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new())
            .map_err(SeedError::Format)?;
        for (name, bytes) in files {
            let root = fs.root_dir();
            let add = |source| SeedError::AddFile {
                name: name.clone(),
                source,
            };
            let mut file = root.create_file(name).map_err(add)?;
            file.truncate().map_err(add)?;
            file.write_all(bytes).map_err(add)?;
            file.flush().map_err(add)?;
        }
        fs.unmount().map_err(SeedError::Format)?;
    }
    Ok(disk.into_inner())
}

/// A volume serial derived from the content (FNV-1a), so different seeds get different ids.
fn volume_id(files: &[(String, Vec<u8>)]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for (name, bytes) in files {
        for b in name.bytes().chain(bytes.iter().copied()) {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// Builds the seed disk for `dir` into an unnamed file in `scratch_dir`.
pub fn build(dir: &Path, scratch_dir: &Path) -> Result<File, SeedError> {
    let image = image(&read_dir(dir)?)?;
    let store = |source| SeedError::Store {
        dir: scratch_dir.to_path_buf(),
        source,
    };
    let mut file = tempfile::tempfile_in(scratch_dir).map_err(store)?;
    file.write_all(&image).map_err(store)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn seed_dir(extra: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("meta-data"),
            b"instance-id: vm-1.default\nlocal-hostname: vm-1\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("user-data"), b"#!/bin/sh\necho hi\n").unwrap();
        for (name, bytes) in extra {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        dir
    }

    #[test]
    fn files_round_trip_through_fatfs() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let dir = seed_dir(&[("network-config", &big)]);
        let image = image(&read_dir(dir.path()).unwrap()).unwrap();
        let fs = fatfs::FileSystem::new(Cursor::new(image), fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label(), "cidata");
        assert_eq!(
            fs.read_volume_label_from_root_dir().unwrap().as_deref(),
            Some("cidata")
        );
        let read = |name: &str| {
            let mut v = Vec::new();
            fs.root_dir()
                .open_file(name)
                .unwrap()
                .read_to_end(&mut v)
                .unwrap();
            v
        };
        assert_eq!(
            read("meta-data"),
            b"instance-id: vm-1.default\nlocal-hostname: vm-1\n"
        );
        assert_eq!(read("user-data"), b"#!/bin/sh\necho hi\n");
        assert_eq!(read("network-config"), big);
    }

    #[test]
    fn missing_and_unexpected_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("meta-data"), b"x").unwrap();
        assert!(matches!(
            read_dir(dir.path()),
            Err(SeedError::Missing {
                name: "user-data",
                ..
            })
        ));
        let dir = seed_dir(&[("extra", b"1")]);
        let e = read_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("extra"), "{e}");
        assert!(matches!(
            read_dir(Path::new("/nonexistent-seed")),
            Err(SeedError::ReadDir { .. })
        ));
    }

    #[test]
    fn build_leaves_no_file_behind() {
        let dir = seed_dir(&[]);
        let scratch = tempfile::tempdir().unwrap();
        let file = build(dir.path(), scratch.path()).unwrap();
        assert_eq!(file.metadata().unwrap().len(), MIN_IMAGE);
        assert!(std::fs::read_dir(scratch.path()).unwrap().next().is_none());
    }
}
