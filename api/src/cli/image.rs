//! `corral image`: pull, import, list and remove container disks; gc the store.
//!
//! Progress: bars on a terminal (indicatif), plain log lines otherwise (tracing, stderr).
//! Results go to stdout (`--json` for scripts).

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use images::{Image, ImageError, ImageStore, ProgressFn, PullEvent, PullOptions, StoreConfig};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Arguments of `corral image`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image store directory (the daemon uses <state-dir>/images).
    #[arg(
        long,
        global = true,
        env = "CORRAL_IMAGE_STORE",
        default_value = "/var/lib/corral/images"
    )]
    store: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Pull a container disk from a registry and prepare its boot artifacts.
    Pull {
        /// Image reference, e.g. quay.io/kubevirt/cirros-container-disk-demo:latest
        reference: String,
        /// Registry (host:port) to reach over plain HTTP; repeatable.
        #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
        insecure_registries: Vec<String>,
        /// Docker config.json / podman auth.json with registry credentials
        /// [default: $DOCKER_CONFIG/config.json or ~/.docker/config.json, if present].
        #[arg(long, value_name = "FILE")]
        auth_file: Option<PathBuf>,
        /// Accept a disk without a kernel (a kernelBoot container will provide one).
        #[arg(long)]
        kernel_optional: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Import a docker/podman save archive or an OCI layout (directory or tar).
    Import {
        path: PathBuf,
        /// Name for the imported image (default: the archive's own name).
        #[arg(long, value_name = "REF")]
        tag: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List stored images.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove an image reference and whatever only it kept alive.
    Rm { reference: String },
    /// Remove unreferenced blobs and artifacts and leftovers of interrupted pulls.
    Gc,
}

/// Runs the image subcommand.
pub fn run(args: Args) -> ExitCode {
    let tty = std::io::stderr().is_terminal();
    let default_level = if tty { "warn" } else { "info" };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(tty)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(format!(
                    "images={default_level},corral={default_level}"
                ))
            }),
        )
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            super::print_error_chain(&e);
            return ExitCode::from(1);
        }
    };
    match rt.block_on(dispatch(args, tty)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::print_error_chain(&e);
            ExitCode::from(1)
        }
    }
}

async fn dispatch(args: Args, tty: bool) -> Result<(), ImageError> {
    match args.command {
        Command::Pull {
            reference,
            insecure_registries,
            auth_file,
            kernel_optional,
            json,
        } => {
            let auth_file = auth_file.or_else(default_auth_file);
            let config = StoreConfig {
                insecure_registries,
                auth_file,
                ..Default::default()
            };
            let store = ImageStore::open(&args.store, config)?;
            let bars = tty.then(Bars::new);
            let progress = bars.as_ref().map(|b| b.callback());
            let image = store
                .pull(
                    &reference,
                    PullOptions {
                        kernel_optional,
                        progress,
                    },
                )
                .await;
            if let Some(b) = bars {
                b.finish();
            }
            print_images(&[image?], json);
        }
        Command::Import { path, tag, json } => {
            let store = ImageStore::open(&args.store, StoreConfig::default())?;
            let bars = tty.then(Bars::new);
            let progress = bars.as_ref().map(|b| b.callback());
            let images = store
                .import(
                    &path,
                    tag.as_deref(),
                    PullOptions {
                        kernel_optional: false,
                        progress,
                    },
                )
                .await;
            if let Some(b) = bars {
                b.finish();
            }
            print_images(&images?, json);
        }
        Command::Ls { json } => {
            let store = ImageStore::open(&args.store, StoreConfig::default())?;
            let refs = store.list()?;
            if json {
                crate::outln!(
                    "{}",
                    serde_json::to_string_pretty(&refs).expect("serializable")
                );
            } else {
                crate::outln!(
                    "{:<56} {:<14} {:>10} {:>10}  KERNEL",
                    "REFERENCE",
                    "DIGEST",
                    "DISK",
                    "ON DISK"
                );
                for r in refs {
                    let (disk, kernel) = match &r.image {
                        Some(i) => (
                            human(i.disk_size),
                            i.boot.kernel_path.clone().unwrap_or_else(|| "-".into()),
                        ),
                        None => ("-".into(), "kernel-boot container".into()),
                    };
                    crate::outln!(
                        "{:<56} {:<14} {:>10} {:>10}  {}",
                        r.reference,
                        r.digest.short(),
                        disk,
                        human(r.artifact_bytes),
                        kernel
                    );
                }
            }
        }
        Command::Rm { reference } => {
            let store = ImageStore::open(&args.store, StoreConfig::default())?;
            let report = store.remove(&reference).await?;
            crate::outln!(
                "removed {reference} ({} blobs, {} artifact dirs, {} freed)",
                report.blobs,
                report.artifacts,
                human(report.bytes)
            );
        }
        Command::Gc => {
            let store = ImageStore::open(&args.store, StoreConfig::default())?;
            let r = store.gc().await?;
            crate::outln!(
                "gc: removed {} blobs, {} artifact dirs, {} staging dirs ({} freed)",
                r.blobs,
                r.artifacts,
                r.staging,
                human(r.bytes)
            );
        }
    }
    Ok(())
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, if it exists.
fn default_auth_file() -> Option<PathBuf> {
    let p = match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => Path::new(&d).join("config.json"),
        None => Path::new(&std::env::var_os("HOME")?).join(".docker/config.json"),
    };
    p.is_file().then_some(p)
}

fn print_images(images: &[Image], json: bool) {
    if json {
        let v = if images.len() == 1 {
            serde_json::to_value(&images[0])
        } else {
            serde_json::to_value(images)
        };
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&v.expect("serializable")).expect("serializable")
        );
        return;
    }
    for i in images {
        crate::outln!("{}", i.reference);
        crate::outln!("  digest   {}", i.digest);
        let version = i
            .qcow2_version
            .map(|v| format!(" v{v}"))
            .unwrap_or_default();
        crate::outln!(
            "  disk     {} ({}, {}{version} {})",
            i.disk_raw.display(),
            human(i.disk_size),
            i.disk_format,
            i.disk_name
        );
        if let (Some(part), Some(fs)) = (i.boot.root_partition, &i.boot.root_fs_type) {
            let label = i
                .rootfs_label
                .as_deref()
                .map(|l| format!(", label {l}"))
                .unwrap_or_default();
            crate::outln!("  rootfs   partition {part} ({fs}{label})");
        }
        match (&i.kernel, &i.boot.kernel_path) {
            (Some(k), Some(src)) => {
                let part = i
                    .boot
                    .kernel_partition
                    .map(|n| format!("partition {n} "))
                    .unwrap_or_default();
                let fmt = i.boot.kernel_format.map(|f| f.name()).unwrap_or("elf");
                crate::outln!("  kernel   {} (from {part}{src}, {fmt})", k.display());
            }
            _ => crate::outln!("  kernel   none"),
        }
        if let (Some(r), Some(src)) = (&i.initrd, &i.boot.initrd_path) {
            crate::outln!("  initrd   {} (from {src})", r.display());
        }
        crate::outln!("  cmdline  {}", i.cmdline);
        if !i.cmdline_source.is_empty() {
            crate::outln!("           from {}", i.cmdline_source);
        }
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// One progress bar per layer plus a status line.
struct Bars {
    multi: MultiProgress,
    status: ProgressBar,
    layers: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new() -> Arc<Self> {
        let multi = MultiProgress::new();
        let status = multi.add(ProgressBar::new_spinner());
        status.enable_steady_tick(std::time::Duration::from_millis(120));
        Arc::new(Self {
            multi,
            status,
            layers: Mutex::new(HashMap::new()),
        })
    }

    fn callback(self: &Arc<Self>) -> ProgressFn {
        let me = self.clone();
        Arc::new(move |ev: &PullEvent| me.on(ev))
    }

    fn on(&self, ev: &PullEvent) {
        let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        match ev {
            PullEvent::Resolved {
                reference,
                digest,
                layers: n,
                total,
            } => {
                self.status.set_message(format!(
                    "{reference} ({}, {n} layers, {})",
                    digest.short(),
                    human(*total)
                ));
            }
            PullEvent::Cached { reference, .. } => {
                self.status.set_message(format!("{reference}: up to date"));
            }
            PullEvent::LayerStart {
                digest,
                size,
                cached,
            } => {
                let bar = self.multi.add(ProgressBar::new(*size));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(digest.short().to_string());
                if *cached {
                    bar.set_position(*size);
                    bar.finish_with_message("already stored");
                }
                layers.insert(digest.to_string(), bar);
            }
            PullEvent::LayerProgress { digest, done, .. } => {
                if let Some(b) = layers.get(&digest.to_string()) {
                    b.set_position(*done);
                }
            }
            PullEvent::LayerDone { digest } => {
                if let Some(b) = layers.get(&digest.to_string())
                    && !b.is_finished()
                {
                    b.finish_with_message("verified");
                }
            }
            PullEvent::Phase(p) => self.status.set_message(p.to_string()),
        }
    }

    fn finish(&self) {
        self.status.finish_and_clear();
    }
}
