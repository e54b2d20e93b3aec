//! `refs.json`: which reference points at which image, and what each one keeps alive.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::layout::{StoreError, write_atomic};

/// One reference's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefEntry {
    /// What the reference resolved to at the top: an index/list digest, or the manifest's.
    /// For a docker-archive import (which has no manifest) it is the image id.
    pub digest: Digest,
    /// The linux/amd64 image manifest, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Digest>,
    /// The image id (config digest): names the disk artifact directory.
    pub id: Digest,
    /// Blobs this reference keeps alive (index, manifest, config, layers).
    pub blobs: BTreeSet<Digest>,
    /// Artifact directories under `images/` this reference keeps alive.
    pub artifacts: BTreeSet<String>,
    /// Unix time of the last pull or import.
    pub updated: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Refs {
    pub version: u32,
    pub refs: BTreeMap<String, RefEntry>,
}

impl Refs {
    pub fn load(path: &Path) -> Result<Self, StoreError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                path: path.into(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                version: 1,
                refs: BTreeMap::new(),
            }),
            Err(source) => Err(StoreError::Io {
                op: "cannot read",
                path: path.into(),
                source,
            }),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(self).expect("refs serialize");
        write_atomic(path, &bytes)
    }

    /// Every blob and artifact directory some reference keeps alive.
    pub fn live(&self) -> (BTreeSet<Digest>, BTreeSet<String>) {
        let mut blobs = BTreeSet::new();
        let mut dirs = BTreeSet::new();
        for e in self.refs.values() {
            blobs.extend(e.blobs.iter().cloned());
            dirs.extend(e.artifacts.iter().cloned());
        }
        (blobs, dirs)
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
