//! The `--disk` argument: `SOURCE[,OPTION]...`.
//!
//! | form | disk |
//! |---|---|
//! | `PATH` | raw image, writable |
//! | `PATH,ro` | raw image, read-only to the guest (`VIRTIO_BLK_F_RO`) |
//! | `PATH,overlay` | `PATH` is a shared read-only base; writes go to a private copy-on-write overlay |
//! | `seed=DIR` | a NoCloud `cidata` FAT disk built from the files in `DIR` (read-only) |
//! | `empty=SIZE` | sparse scratch disk of `SIZE` bytes (`1Gi`, `1073741824`, ...) |
//!
//! Every form takes `serial=NAME` (the virtio-blk serial, `GET_ID`; at most 20 bytes are seen by
//! the guest). Paths cannot contain commas.

use std::path::PathBuf;

use thiserror::Error;

/// Longest serial the guest can read (virtio-blk `GET_ID` returns 20 bytes).
pub const SERIAL_LEN: usize = 20;

/// Where a disk's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskSource {
    Raw { path: PathBuf, read_only: bool },
    Overlay { base: PathBuf },
    Seed { dir: PathBuf },
    Empty { capacity: u64 },
}

/// One `--disk` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    pub source: DiskSource,
    /// The serial (`GET_ID`); empty if not given.
    pub serial: String,
}

/// A `--disk` argument that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("empty disk specification")]
    Empty,
    #[error("{spec:?}: unknown option {option:?} (use ro, overlay or serial=NAME)")]
    UnknownOption { spec: String, option: String },
    #[error("{spec:?}: {what}")]
    Conflict { spec: String, what: &'static str },
    #[error("{spec:?}: bad size: {reason}")]
    Size { spec: String, reason: String },
    #[error("{spec:?}: serial must not be empty")]
    EmptySerial { spec: String },
}

impl std::fmt::Display for DiskSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiskSource::Raw { path, read_only } => {
                write!(
                    f,
                    "{}{}",
                    path.display(),
                    if *read_only { ",ro" } else { "" }
                )
            }
            DiskSource::Overlay { base } => write!(f, "{},overlay", base.display()),
            DiskSource::Seed { dir } => write!(f, "seed={}", dir.display()),
            DiskSource::Empty { capacity } => write!(f, "empty={capacity}"),
        }
    }
}

impl DiskSpec {
    /// Parses one `--disk` argument.
    pub fn parse(spec: &str) -> Result<Self, SpecError> {
        let mut parts = spec.split(',');
        let first = parts
            .next()
            .filter(|s| !s.is_empty())
            .ok_or(SpecError::Empty)?;
        let (mut ro, mut overlay, mut serial) = (false, false, String::new());
        for option in parts {
            match option {
                "ro" => ro = true,
                "overlay" => overlay = true,
                s if s.starts_with("serial=") => {
                    serial = s["serial=".len()..].to_string();
                    if serial.is_empty() {
                        return Err(SpecError::EmptySerial {
                            spec: spec.to_string(),
                        });
                    }
                }
                other => {
                    return Err(SpecError::UnknownOption {
                        spec: spec.to_string(),
                        option: other.to_string(),
                    });
                }
            }
        }
        let conflict = |what| SpecError::Conflict {
            spec: spec.to_string(),
            what,
        };
        let source = if let Some(dir) = first.strip_prefix("seed=") {
            if overlay {
                return Err(conflict("a seed disk cannot have an overlay"));
            }
            DiskSource::Seed { dir: dir.into() }
        } else if let Some(size) = first.strip_prefix("empty=") {
            if overlay || ro {
                return Err(conflict("an empty disk is plain writable scratch"));
            }
            let capacity = crate::quantity::parse_bytes(size).map_err(|e| SpecError::Size {
                spec: spec.to_string(),
                reason: e.to_string(),
            })?;
            if capacity == 0 {
                return Err(SpecError::Size {
                    spec: spec.to_string(),
                    reason: "must be at least one sector".into(),
                });
            }
            DiskSource::Empty { capacity }
        } else if overlay {
            if ro {
                return Err(conflict("ro and overlay exclude each other"));
            }
            DiskSource::Overlay { base: first.into() }
        } else {
            DiskSource::Raw {
                path: first.into(),
                read_only: ro,
            }
        };
        Ok(DiskSpec { source, serial })
    }

    /// The path that must exist before start (image file or seed directory), if any.
    pub fn input_path(&self) -> Option<&PathBuf> {
        match &self.source {
            DiskSource::Raw { path, .. } => Some(path),
            DiskSource::Overlay { base } => Some(base),
            DiskSource::Seed { dir } => Some(dir),
            DiskSource::Empty { .. } => None,
        }
    }

    /// A seed disk made from `dir` (the `--seed-dir` alias).
    pub fn seed(dir: impl Into<PathBuf>) -> Self {
        DiskSpec {
            source: DiskSource::Seed { dir: dir.into() },
            serial: "cidata".into(),
        }
    }

    /// Whether the guest sees the disk read-only.
    pub fn read_only(&self) -> bool {
        matches!(
            self.source,
            DiskSource::Raw {
                read_only: true,
                ..
            } | DiskSource::Seed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_forms() {
        assert_eq!(
            DiskSpec::parse("/img/disk.raw,overlay,serial=containerdisk").unwrap(),
            DiskSpec {
                source: DiskSource::Overlay {
                    base: "/img/disk.raw".into()
                },
                serial: "containerdisk".into()
            }
        );
        assert_eq!(
            DiskSpec::parse("seed=/run/vm/seed/cloudinitdisk,serial=cloudinitdisk").unwrap(),
            DiskSpec {
                source: DiskSource::Seed {
                    dir: "/run/vm/seed/cloudinitdisk".into()
                },
                serial: "cloudinitdisk".into()
            }
        );
        assert_eq!(
            DiskSpec::parse("empty=1073741824,serial=scratch")
                .unwrap()
                .source,
            DiskSource::Empty { capacity: 1 << 30 }
        );
        assert_eq!(
            DiskSpec::parse("empty=2Gi").unwrap().source,
            DiskSource::Empty { capacity: 2 << 30 }
        );
        let ro = DiskSpec::parse("/img/x,ro,serial=data").unwrap();
        assert!(ro.read_only());
        assert_eq!(
            DiskSpec::parse("/img/x").unwrap(),
            DiskSpec {
                source: DiskSource::Raw {
                    path: "/img/x".into(),
                    read_only: false
                },
                serial: String::new()
            }
        );
    }

    #[test]
    fn bad_forms_are_named() {
        assert_eq!(DiskSpec::parse(""), Err(SpecError::Empty));
        assert!(matches!(
            DiskSpec::parse("/x,rw"),
            Err(SpecError::UnknownOption { option, .. }) if option == "rw"
        ));
        assert!(matches!(
            DiskSpec::parse("/x,ro,overlay"),
            Err(SpecError::Conflict { .. })
        ));
        assert!(matches!(
            DiskSpec::parse("seed=/d,overlay"),
            Err(SpecError::Conflict { .. })
        ));
        assert!(matches!(
            DiskSpec::parse("empty=lots"),
            Err(SpecError::Size { .. })
        ));
        assert!(matches!(
            DiskSpec::parse("empty=0"),
            Err(SpecError::Size { .. })
        ));
        assert!(matches!(
            DiskSpec::parse("/x,serial="),
            Err(SpecError::EmptySerial { .. })
        ));
        let e = DiskSpec::parse("/x,bogus").unwrap_err().to_string();
        assert!(e.contains("bogus") && e.contains("/x"), "{e}");
    }
}
