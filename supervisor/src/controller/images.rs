//! Shared image state for the VMI controller: one pull per image no matter how many VMIs wait
//! for it, exponential backoff after a failure (never a hot loop), and a short reuse window for
//! `Always` so that a burst of VMIs does one registry round trip.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::boot::{BootImage, ImageSource, KernelArtifacts, PullPolicy};

/// First retry delay after a failed pull; doubles per failure.
const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How long an `Always` pull result is reused.
const ALWAYS_REUSE: Duration = Duration::from_secs(10);

/// What a VMI sees of its image.
#[derive(Debug, Clone)]
pub enum ImageState<T> {
    Ready(T),
    Pulling,
    BackOff { error: String, retry_in: Duration },
}

type Waiter = Box<dyn FnOnce() + Send>;

enum Entry<T> {
    Pulling(Vec<Waiter>),
    Ready {
        value: T,
        at: Instant,
    },
    Failed {
        error: String,
        attempts: u32,
        retry_at: Instant,
    },
}

/// A cache of fetch results keyed by string, with single-flight fetches.
pub struct FetchCache<T> {
    entries: Mutex<HashMap<String, Entry<T>>>,
}

impl<T: Clone + Send + 'static> FetchCache<T> {
    fn new() -> Arc<Self> {
        Arc::new(FetchCache {
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<T>>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Returns the state for `key`, starting `fetch` when needed; `wake` is called once when a
    /// fetch started or joined here finishes.
    fn ensure<F>(
        self: &Arc<Self>,
        key: &str,
        reuse: Option<Duration>,
        fetch: F,
        wake: Waiter,
    ) -> ImageState<T>
    where
        F: FnOnce() -> crate::boot::BoxFuture<Result<T, String>>,
    {
        let now = Instant::now();
        let mut g = self.lock();
        let prev_attempts = match g.get_mut(key) {
            Some(Entry::Pulling(waiters)) => {
                waiters.push(wake);
                return ImageState::Pulling;
            }
            Some(Entry::Ready { value, at }) => {
                if reuse.is_none_or(|r| now.duration_since(*at) <= r) {
                    return ImageState::Ready(value.clone());
                }
                0
            }
            Some(Entry::Failed {
                error,
                attempts,
                retry_at,
            }) => {
                if now < *retry_at {
                    return ImageState::BackOff {
                        error: error.clone(),
                        retry_in: *retry_at - now,
                    };
                }
                *attempts
            }
            None => 0,
        };
        g.insert(key.to_string(), Entry::Pulling(vec![wake]));
        drop(g);
        let fut = fetch();
        let cache = Arc::clone(self);
        let key = key.to_string();
        tokio::spawn(async move {
            let res = fut.await;
            let waiters = {
                let mut g = cache.lock();
                let new = match res {
                    Ok(value) => Entry::Ready {
                        value,
                        at: Instant::now(),
                    },
                    Err(error) => {
                        let attempts = prev_attempts + 1;
                        let delay = BACKOFF_START
                            .saturating_mul(1 << (attempts - 1).min(16))
                            .min(BACKOFF_MAX);
                        tracing::warn!(image = %key, %error, attempts, retry_in_s = delay.as_secs(), "image pull failed");
                        Entry::Failed {
                            error,
                            attempts,
                            retry_at: Instant::now() + delay,
                        }
                    }
                };
                match g.insert(key.clone(), new) {
                    Some(Entry::Pulling(w)) => w,
                    _ => Vec::new(),
                }
            };
            for w in waiters {
                w();
            }
        });
        ImageState::Pulling
    }
}

/// Boot images and kernels, shared by all VMIs.
pub struct ImageCache {
    source: Arc<dyn ImageSource>,
    disks: Arc<FetchCache<BootImage>>,
    kernels: Arc<FetchCache<KernelArtifacts>>,
}

impl ImageCache {
    /// A cache over `source`.
    pub fn new(source: Arc<dyn ImageSource>) -> Self {
        ImageCache {
            source,
            disks: FetchCache::new(),
            kernels: FetchCache::new(),
        }
    }

    /// The boot image for a containerDisk.
    pub fn boot_image(
        &self,
        image: &str,
        policy: PullPolicy,
        kernel_optional: bool,
        wake: Waiter,
    ) -> ImageState<BootImage> {
        let reuse = (policy == PullPolicy::Always).then_some(ALWAYS_REUSE);
        let src = Arc::clone(&self.source);
        let img = image.to_string();
        self.disks.ensure(
            &format!("{policy:?} {kernel_optional} {image}"),
            reuse,
            move || src.boot_image(&img, policy, kernel_optional),
            wake,
        )
    }

    /// Kernel and initrd from `kernelBoot.container`.
    pub fn kernel(
        &self,
        image: &str,
        kernel_path: Option<&str>,
        initrd_path: Option<&str>,
        policy: PullPolicy,
        wake: Waiter,
    ) -> ImageState<KernelArtifacts> {
        let reuse = (policy == PullPolicy::Always).then_some(ALWAYS_REUSE);
        let src = Arc::clone(&self.source);
        let (img, k, i) = (
            image.to_string(),
            kernel_path.map(str::to_string),
            initrd_path.map(str::to_string),
        );
        let key = format!("{policy:?} {image} {k:?} {i:?}");
        self.kernels.ensure(
            &key,
            reuse,
            move || src.kernel_from(&img, k.as_deref(), i.as_deref(), policy),
            wake,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountingSource {
        calls: AtomicUsize,
        fail: bool,
    }

    impl ImageSource for CountingSource {
        fn boot_image(
            &self,
            image: &str,
            _p: PullPolicy,
            _k: bool,
        ) -> crate::boot::BoxFuture<Result<BootImage, String>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let fail = self.fail;
            let image = image.to_string();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if fail {
                    Err(format!("{image}: not found"))
                } else {
                    Ok(BootImage {
                        digest: "sha256:1".into(),
                        disk: "/d".into(),
                        kernel: Some("/k".into()),
                        initrd: None,
                        cmdline: String::new(),
                    })
                }
            })
        }
        fn kernel_from(
            &self,
            _: &str,
            _: Option<&str>,
            _: Option<&str>,
            _: PullPolicy,
        ) -> crate::boot::BoxFuture<Result<KernelArtifacts, String>> {
            Box::pin(async { Err("unused".to_string()) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_pull_for_many_waiters() {
        let src = Arc::new(CountingSource {
            calls: AtomicUsize::new(0),
            fail: false,
        });
        let cache = ImageCache::new(src.clone());
        let woken = Arc::new(AtomicUsize::new(0));
        for _ in 0..20 {
            let w = woken.clone();
            let st = cache.boot_image(
                "img:v1",
                PullPolicy::IfNotPresent,
                false,
                Box::new(move || {
                    w.fetch_add(1, Ordering::SeqCst);
                }),
            );
            assert!(matches!(st, ImageState::Pulling));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(src.calls.load(Ordering::SeqCst), 1);
        assert_eq!(woken.load(Ordering::SeqCst), 20);
        assert!(matches!(
            cache.boot_image("img:v1", PullPolicy::IfNotPresent, false, Box::new(|| {})),
            ImageState::Ready(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially() {
        let src = Arc::new(CountingSource {
            calls: AtomicUsize::new(0),
            fail: true,
        });
        let cache = ImageCache::new(src.clone());
        cache.boot_image(
            "missing:v1",
            PullPolicy::IfNotPresent,
            false,
            Box::new(|| {}),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Immediately asking again does not pull again.
        for _ in 0..100 {
            match cache.boot_image(
                "missing:v1",
                PullPolicy::IfNotPresent,
                false,
                Box::new(|| {}),
            ) {
                ImageState::BackOff { error, retry_in } => {
                    assert!(error.contains("not found"));
                    assert!(retry_in <= BACKOFF_START);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(src.calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(1)).await;
        cache.boot_image(
            "missing:v1",
            PullPolicy::IfNotPresent,
            false,
            Box::new(|| {}),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(src.calls.load(Ordering::SeqCst), 2);
        match cache.boot_image(
            "missing:v1",
            PullPolicy::IfNotPresent,
            false,
            Box::new(|| {}),
        ) {
            ImageState::BackOff { retry_in, .. } => {
                assert!(retry_in > Duration::from_millis(1900), "{retry_in:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}
