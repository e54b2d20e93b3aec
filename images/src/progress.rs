//! Pull progress: events for callers (the CLI's progress bars) and log lines for the daemon.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::digest::Digest;

/// One step of a pull or import.
#[derive(Clone, Debug)]
pub enum PullEvent {
    /// The manifest was resolved; `layers` blobs totalling `total` bytes make up the image.
    Resolved {
        reference: String,
        digest: Digest,
        layers: usize,
        total: u64,
    },
    /// Artifacts for this image digest are already in the store: nothing to transfer.
    Cached {
        reference: String,
        digest: Digest,
    },
    /// A layer download started (`cached` when the blob was already in the store).
    LayerStart {
        digest: Digest,
        size: u64,
        cached: bool,
    },
    /// Bytes of a layer received so far.
    LayerProgress {
        digest: Digest,
        done: u64,
        size: u64,
    },
    LayerDone {
        digest: Digest,
    },
    /// A post-download phase started.
    Phase(Phase),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Unpacking,
    Converting,
    ExtractingKernel,
    Committing,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Unpacking => "unpacking layers",
            Phase::Converting => "converting qcow2 to raw",
            Phase::ExtractingKernel => "extracting kernel",
            Phase::Committing => "committing",
        })
    }
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(&PullEvent) + Send + Sync>;

/// Fans events out to every caller of a deduplicated pull, and logs them (throttled).
#[derive(Default)]
pub(crate) struct ProgressHub {
    sinks: Mutex<Vec<ProgressFn>>,
    last_log: Mutex<Option<Instant>>,
}

impl ProgressHub {
    pub fn add(&self, sink: Option<ProgressFn>) {
        if let Some(s) = sink {
            self.sinks.lock().unwrap_or_else(|e| e.into_inner()).push(s);
        }
    }

    pub fn emit(&self, ev: PullEvent) {
        self.log(&ev);
        let sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for s in sinks {
            s(&ev);
        }
    }

    fn log(&self, ev: &PullEvent) {
        match ev {
            PullEvent::Resolved {
                reference,
                digest,
                layers,
                total,
            } => {
                tracing::info!(%reference, %digest, layers, bytes = total, "resolved manifest");
            }
            PullEvent::Cached { reference, digest } => {
                tracing::info!(%reference, %digest, "image digest unchanged; using the cached artifacts");
            }
            PullEvent::LayerStart {
                digest,
                size,
                cached,
            } => {
                tracing::info!(layer = %digest.short(), bytes = size, cached, "layer");
            }
            PullEvent::LayerProgress { digest, done, size } => {
                let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
                if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
                    *last = Some(Instant::now());
                    tracing::info!(layer = %digest.short(), done, total = size, "downloading");
                }
            }
            PullEvent::LayerDone { digest } => {
                tracing::info!(layer = %digest.short(), "layer verified");
            }
            PullEvent::Phase(p) => tracing::info!("{p}"),
        }
    }
}
