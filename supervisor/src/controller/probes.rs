//! The prober (the kubelet's, for VMIs): readiness and liveness probes of running VMIs, run by
//! the daemon against the VMI's pod IP.
//!
//! Threads: one tokio task per probe of each running VMI, started by the VMI controller
//! ([`Prober::ensure`], idempotent) and aborted when the VMI stops or goes ([`Prober::forget`]).
//! A task only updates the VMI's shared [`Results`] and queues the VMI's key when a result
//! changes or a probe fails; the VMI controller then writes the Ready condition, records the
//! `Unhealthy` events and stops a VM whose liveness probe failed. So conditions, events and VM
//! lifecycle keep one writer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use super::WorkKey;
use super::queue::WorkQueue;
use crate::kinds::probes::{Check, Port, Probe};

/// Consecutive results → the probe's verdict, with Kubernetes' thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    successes: u32,
    failures: u32,
    /// The verdict (readiness starts failed, liveness starts passing).
    pub verdict: bool,
}

impl Counter {
    pub fn new(initial: bool) -> Self {
        Counter {
            successes: 0,
            failures: 0,
            verdict: initial,
        }
    }

    /// Records one result; returns whether the verdict changed.
    pub fn observe(&mut self, ok: bool, probe: &Probe) -> bool {
        let before = self.verdict;
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.successes >= probe.success_threshold {
                self.verdict = true;
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= probe.failure_threshold {
                self.verdict = false;
            }
        }
        before != self.verdict
    }
}

/// What the probes of one VMI say.
#[derive(Debug, Default)]
pub struct Results {
    /// Readiness verdict (`None`: no readiness probe).
    pub ready: Option<bool>,
    /// False once the liveness probe failed `failureThreshold` times.
    pub live: bool,
    /// Failure messages not yet turned into events (`Readiness probe failed: …`).
    pub unreported: Vec<String>,
    /// The last readiness failure (the Ready condition's message).
    pub last_failure: Option<String>,
}

/// Which probe a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Readiness,
    Liveness,
}

impl Which {
    fn label(self) -> &'static str {
        match self {
            Which::Readiness => "Readiness",
            Which::Liveness => "Liveness",
        }
    }
}

/// What a VMI's probes were started with (a change restarts them).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Setup {
    ip: IpAddr,
    readiness: Option<(Probe, u16)>,
    liveness: Option<(Probe, u16)>,
}

struct Running {
    setup: Setup,
    results: Arc<Mutex<Results>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The probes of every running VMI, by uid.
#[derive(Default)]
pub struct Prober {
    running: Mutex<HashMap<String, Running>>,
}

/// A VMI's named port from `spec.domain.devices.interfaces[].ports[]`.
fn named_port(spec: &Value, name: &str) -> Option<u16> {
    spec.pointer("/domain/devices/interfaces")?
        .as_array()?
        .iter()
        .flat_map(|i| {
            i.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|p| p.get("port").and_then(Value::as_u64))
        .and_then(|p| u16::try_from(p).ok())
}

fn resolve(probe: Option<Probe>, spec: &Value) -> Option<(Probe, u16)> {
    let probe = probe?;
    let port = match &probe.check {
        Check::Tcp { port, .. } | Check::Http { port, .. } => match port {
            Port::Number(n) => *n,
            // Unresolvable names probe port 0, which always fails with a clear message.
            Port::Name(n) => named_port(spec, n).unwrap_or(0),
        },
    };
    Some((probe, port))
}

impl Prober {
    /// Makes sure the probes of VMI `uid` (`ns/name`, `spec`) run against `ip`, and returns
    /// (readiness verdict or None, liveness verdict, failures to report, last readiness failure).
    /// Without a tokio runtime (unit tests of the controller) nothing is started.
    pub fn ensure(
        &self,
        queue: &Arc<WorkQueue<WorkKey>>,
        (uid, ns, name): (&str, &str, &str),
        spec: &Value,
        ip: IpAddr,
    ) -> Option<Arc<Mutex<Results>>> {
        let (readiness, liveness) = crate::kinds::probes::of_spec(spec);
        if readiness.is_none() && liveness.is_none() {
            self.forget(uid);
            return None;
        }
        let setup = Setup {
            ip,
            readiness: resolve(readiness, spec),
            liveness: resolve(liveness, spec),
        };
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = running.get(uid).filter(|r| r.setup == setup) {
            return Some(r.results.clone());
        }
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let results = Arc::new(Mutex::new(Results {
            ready: setup.readiness.as_ref().map(|_| false),
            live: true,
            ..Default::default()
        }));
        let mut tasks = Vec::new();
        for (which, p) in [
            (Which::Readiness, &setup.readiness),
            (Which::Liveness, &setup.liveness),
        ] {
            let Some((probe, port)) = p.clone() else {
                continue;
            };
            let key = WorkKey::Vmi(ns.to_string(), name.to_string());
            tasks.push(handle.spawn(run_probe(
                which,
                probe,
                SocketAddr::new(ip, port),
                results.clone(),
                queue.clone(),
                key,
            )));
        }
        running.insert(
            uid.to_string(),
            Running {
                setup,
                results: results.clone(),
                tasks,
            },
        );
        Some(results)
    }

    /// Whether VMI `uid`'s liveness probe failed (its VM is being stopped for that).
    pub fn liveness_failed(&self, uid: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .get(uid)
            .is_some_and(|r| !r.results.lock().unwrap_or_else(|p| p.into_inner()).live)
    }

    /// Stops probing VMI `uid`.
    pub fn forget(&self, uid: &str) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }
}

/// One probe's loop: initial delay, then one check per period.
async fn run_probe(
    which: Which,
    probe: Probe,
    addr: SocketAddr,
    results: Arc<Mutex<Results>>,
    queue: Arc<WorkQueue<WorkKey>>,
    key: WorkKey,
) {
    tokio::time::sleep(Duration::from_secs(probe.initial_delay_s.into())).await;
    let mut counter = Counter::new(which == Which::Liveness);
    let period = Duration::from_secs(probe.period_s.into());
    loop {
        let started = tokio::time::Instant::now();
        let outcome = check(&probe, addr).await;
        let changed = counter.observe(outcome.is_ok(), &probe);
        let failed = outcome.is_err();
        {
            let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
            match which {
                Which::Readiness => r.ready = Some(counter.verdict),
                Which::Liveness => r.live = counter.verdict,
            }
            if let Err(e) = &outcome {
                let msg = format!("{} probe failed: {e}", which.label());
                if which == Which::Readiness {
                    r.last_failure = Some(msg.clone());
                }
                r.unreported.push(msg);
            }
        }
        if changed || failed {
            queue.add(key.clone());
        }
        if which == Which::Liveness && !counter.verdict {
            return; // the VM is stopped; nothing more to learn
        }
        tokio::time::sleep_until(started + period).await;
    }
}

/// One check, bounded by the probe's timeout. The error reads like the kubelet's.
async fn check(probe: &Probe, addr: SocketAddr) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_s.into());
    let host = match &probe.check {
        Check::Tcp { host, .. } | Check::Http { host, .. } => host.clone(),
    };
    let addr = match host.as_deref().map(str::parse::<IpAddr>) {
        Some(Ok(ip)) => SocketAddr::new(ip, addr.port()),
        Some(Err(_)) => {
            return Err(format!(
                "host {:?} is not an IP address",
                host.unwrap_or_default()
            ));
        }
        None => addr,
    };
    if addr.port() == 0 {
        return Err("the probe's named port is not among the VMI's interface ports".into());
    }
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("dial tcp {addr}: connect: {e}"))?;
        let Check::Http { path, headers, .. } = &probe.check else {
            return Ok(());
        };
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/corral\r\nAccept: */*\r\nConnection: close\r\n"
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
        // The status line is all a probe reads (kubelet reads a bounded body too).
        let mut buf = vec![0u8; 1024];
        let mut n = 0;
        while n < buf.len() && !buf[..n].contains(&b'\n') {
            let got = s
                .read(&mut buf[n..])
                .await
                .map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
            if got == 0 {
                break;
            }
            n += got;
        }
        let line = String::from_utf8_lossy(&buf[..n]);
        let code: Option<u16> = line
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok());
        match code {
            Some(c) if (200..400).contains(&c) => Ok(()),
            Some(c) => Err(format!("HTTP probe failed with statuscode: {c}")),
            None => Err(format!(
                "Get \"http://{addr}{path}\": malformed HTTP response"
            )),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "dial tcp {addr}: i/o timeout (timeoutSeconds {})",
            probe.timeout_s
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::probes::Check;

    fn probe(check: Check, success: u32, failure: u32) -> Probe {
        Probe {
            check,
            initial_delay_s: 0,
            period_s: 1,
            timeout_s: 1,
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn thresholds_turn_runs_of_results_into_verdicts() {
        let p = probe(
            Check::Tcp {
                host: None,
                port: Port::Number(80),
            },
            2,
            3,
        );
        // Readiness starts failed: two successes in a row make it pass.
        let mut c = Counter::new(false);
        let table = [
            (true, false, false),
            (false, false, false),
            (true, false, false),
            (true, true, true),
            (false, false, true),
            (false, false, true),
            (true, false, true),
            (false, false, true),
            (false, false, true),
            (false, true, false),
        ];
        for (i, (ok, changed, verdict)) in table.into_iter().enumerate() {
            assert_eq!(c.observe(ok, &p), changed, "step {i}");
            assert_eq!(c.verdict, verdict, "step {i}");
        }
    }

    async fn serve(answer: &'static [u8]) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await;
                let _ = s.write_all(answer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn checks_talk_tcp_and_http_like_the_kubelet() {
        let ok = serve(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        let missing = serve(b"HTTP/1.1 404 Not Found\r\n\r\n").await;
        let junk = serve(b"hello\r\n").await;
        let http = |path: &str| {
            probe(
                Check::Http {
                    host: None,
                    port: Port::Number(0),
                    path: path.into(),
                    headers: vec![("X-Probe".into(), "1".into())],
                },
                1,
                1,
            )
        };
        let tcp = probe(
            Check::Tcp {
                host: None,
                port: Port::Number(0),
            },
            1,
            1,
        );
        assert_eq!(check(&http("/"), ok).await, Ok(()));
        assert_eq!(
            check(&http("/"), missing).await,
            Err("HTTP probe failed with statuscode: 404".into())
        );
        assert!(
            check(&http("/"), junk)
                .await
                .unwrap_err()
                .contains("malformed")
        );
        assert_eq!(check(&tcp, missing).await, Ok(()));
        // A closed port: the listener is gone.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = check(&tcp, closed).await.unwrap_err();
        assert!(
            e.starts_with(&format!("dial tcp {closed}: connect:")),
            "{e}"
        );
        let e = check(&tcp, SocketAddr::new(closed.ip(), 0))
            .await
            .unwrap_err();
        assert!(e.contains("named port"), "{e}");
    }
}
