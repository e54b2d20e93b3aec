//! Services on one node: the endpoints controllers (Service + VMIs → `Endpoints` and
//! `EndpointSlices`, as Kubernetes' controllers write them) and the proxy (Services + Endpoints → the nftables table of
//! [`rules`], as kube-proxy's nftables mode programs it).
//!
//! Level-triggered: every pass reads all Services, Endpoints and VMIs and converges; the planning
//! ([`endpoints`], [`rules`]) is pure, the side effects (store writes, the [`Dataplane`]) are the
//! only state. A pass is cheap (one list of each kind; nft only runs when the script changed).
//!
//! Threads: one tokio task ([`spawn`]) wakes on store changes of those kinds, batches them for a
//! few milliseconds and runs [`Proxy::sync`] on the blocking pool; failures retry with a backoff
//! doubling from 100 ms to 10 s.

pub mod endpoints;
pub mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::kinds::Kind;
use crate::meta;
use crate::store::{ObjectKey, Store, StoreError};

/// Proxy errors.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("writing endpoints {0}")]
    Store(String, #[source] StoreError),
    #[error("loading the service rules: {0}")]
    Dataplane(String),
}

/// Where the rules go.
pub trait Dataplane: Send + Sync {
    /// Replaces the service table with `script` (an `nft -f -` script), atomically.
    fn apply(&self, script: &str) -> Result<(), String>;
    /// With no Service at all: removes the table if a previous run left one (and otherwise
    /// touches nothing, so a daemon without Services changes no packet path).
    fn remove(&self) -> Result<(), String>;
}

/// The host's nftables through the `nft` binary, in the daemon's network namespace. The first
/// load also sets `net.ipv4.conf.all.route_localnet=1` (as kube-proxy does), so node ports answer
/// on 127.0.0.1.
pub struct Nft {
    localnet: std::sync::Once,
}

impl Nft {
    pub fn new() -> Self {
        Nft {
            localnet: std::sync::Once::new(),
        }
    }
}

impl Default for Nft {
    fn default() -> Self {
        Self::new()
    }
}

impl Dataplane for Nft {
    fn apply(&self, script: &str) -> Result<(), String> {
        self.localnet.call_once(|| {
            let path = "/proc/sys/net/ipv4/conf/all/route_localnet";
            if let Err(e) = std::fs::write(path, "1") {
                tracing::warn!("{path}: {e}; node ports will not answer on 127.0.0.1");
            }
        });
        crate::network::netns::run_command("nft", &["-f", "-"], Some(script.as_bytes()))
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn remove(&self) -> Result<(), String> {
        let table = ["table", "ip", rules::TABLE];
        let listed =
            crate::network::netns::run_command("nft", &[&["list"], &table[..]].concat(), None);
        if listed.is_err() {
            return Ok(()); // no such table (or no nft: then there is nothing of ours either)
        }
        crate::network::netns::run_command("nft", &[&["delete"], &table[..]].concat(), None)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// Label marking Endpoints this controller owns.
const MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";

/// The endpoints controller and proxy.
pub struct Proxy {
    store: Arc<Store>,
    dataplane: Box<dyn Dataplane>,
    /// The script last loaded (nft runs only when it changes).
    loaded: Mutex<Option<String>>,
}

impl Proxy {
    pub fn new(store: Arc<Store>, dataplane: Box<dyn Dataplane>) -> Self {
        Proxy {
            store,
            dataplane,
            loaded: Mutex::new(None),
        }
    }

    /// One pass: Endpoints for every Service with a selector (stale managed ones removed), then
    /// the rules from every Service and Endpoints.
    pub fn sync(&self) -> Result<(), ProxyError> {
        let (services, _) = self.store.list(Kind::Service, None, |_| true);
        let (vmis, _) = self.store.list(Kind::Vmi, None, |_| true);
        let mut by_ns: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for v in &vmis {
            by_ns.entry(meta::namespace(v)).or_default().push(v);
        }
        let key = |o: &Value| format!("{}/{}", meta::namespace(o), meta::name(o));
        // What the endpoints controllers want, in memory first.
        let mut endpoints_wanted: BTreeMap<String, Value> = BTreeMap::new();
        let mut slices_wanted: Vec<Value> = Vec::new();
        for s in &services {
            let ns = meta::namespace(s);
            let vmis = || by_ns.get(ns).into_iter().flatten().copied();
            let Some(subsets) = endpoints::subsets(s, vmis()) else {
                continue;
            };
            endpoints_wanted.insert(key(s), endpoints::endpoints_object(s, subsets));
            slices_wanted.extend(endpoints::slices(s, vmis()).unwrap_or_default());
        }
        // The rules go first (from the wanted Endpoints, and the stored ones of Services
        // without a selector), so whoever sees the new Endpoints finds them programmed.
        let (stored, _) = self.store.list(Kind::Endpoints, None, |_| true);
        let mut by_key: BTreeMap<String, &Value> =
            stored.iter().map(|e| (key(e), e.as_ref())).collect();
        for (k, e) in &endpoints_wanted {
            by_key.insert(k.clone(), e);
        }
        let svcs: Vec<&Value> = services
            .iter()
            .map(|s| s.as_ref())
            .filter(|s| !meta::is_deleting(s))
            .collect();
        let script = if svcs.is_empty() {
            String::new()
        } else {
            rules::script(&rules::plan(&svcs, &by_key))
        };
        {
            let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            if loaded.as_deref() != Some(script.as_str()) {
                if script.is_empty() {
                    self.dataplane.remove()
                } else {
                    self.dataplane.apply(&script)
                }
                .map_err(ProxyError::Dataplane)?;
                *loaded = Some(script);
            }
        }
        // Then the objects.
        let wanted_slices: BTreeSet<String> = slices_wanted.iter().map(key).collect();
        for (_, e) in endpoints_wanted.iter() {
            self.write_derived(Kind::Endpoints, e.clone(), &["subsets"])?;
        }
        for slice in slices_wanted {
            self.write_derived(
                Kind::EndpointSlice,
                slice,
                &["addressType", "endpoints", "ports"],
            )?;
        }
        for e in &stored {
            let has_service = services.iter().any(|s| key(s) == key(e));
            if meta::labels(e).contains_key(MANAGED_BY)
                && !endpoints_wanted.contains_key(&key(e))
                && !has_service
            {
                self.remove(Kind::Endpoints, e)?;
            }
        }
        let (slices, _) = self.store.list(Kind::EndpointSlice, None, |_| true);
        for e in &slices {
            let ours = meta::labels(e)
                .get(endpoints::SLICE_MANAGED_BY)
                .map(String::as_str)
                == Some(endpoints::SLICE_MANAGER);
            if ours && !wanted_slices.contains(&key(e)) {
                self.remove(Kind::EndpointSlice, e)?;
            }
        }
        Ok(())
    }

    /// Creates or updates one object this controller derives (Endpoints, EndpointSlice): only
    /// `labels` and the top-level `fields` are ours; no write when nothing changed.
    fn write_derived(&self, kind: Kind, want: Value, fields: &[&str]) -> Result<(), ProxyError> {
        let (ns, name) = (
            meta::namespace(&want).to_string(),
            meta::name(&want).to_string(),
        );
        let key = ObjectKey::new(kind, &ns, &name);
        let err = |e| ProxyError::Store(format!("{} {ns}/{name}", kind.info().singular), e);
        let same = |cur: &Value| {
            cur.pointer("/metadata/labels") == want.pointer("/metadata/labels")
                && fields.iter().all(|f| cur.get(*f) == want.get(*f))
        };
        match self.store.get(&key) {
            None => match self.store.create(kind, &ns, want.clone(), false) {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(err(e)),
            },
            Some(cur) if same(&cur) => Ok(()),
            Some(_) => self
                .store
                .update(&key, false, |cur| {
                    let mut n = cur.clone();
                    n["metadata"]["labels"] = want["metadata"]["labels"].clone();
                    for f in fields {
                        match want.get(*f) {
                            Some(v) => n[*f] = v.clone(),
                            None => {
                                if let Some(o) = n.as_object_mut() {
                                    o.remove(*f);
                                }
                            }
                        }
                    }
                    Ok(Some(n))
                })
                .map(drop)
                .or_else(|e| match e {
                    StoreError::NotFound { .. } => Ok(()),
                    e => Err(err(e)),
                }),
        }
    }

    /// Deletes `obj` (of `kind`), tolerating that it is already gone.
    fn remove(&self, kind: Kind, obj: &Value) -> Result<(), ProxyError> {
        let k = ObjectKey::new(kind, meta::namespace(obj), meta::name(obj));
        match self.store.delete(&k, Some(meta::uid(obj)), None, false) {
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(ProxyError::Store(
                format!("{} {}/{}", kind.info().singular, k.namespace, k.name),
                e,
            )),
        }
    }
}

/// Runs the proxy until the store closes: a pass at start, then one after each burst of changes
/// to Services, VMIs or Endpoints.
pub fn spawn(proxy: Arc<Proxy>) {
    let store = proxy.store.clone();
    tokio::spawn(async move {
        let Ok((_, mut rx)) = store.watch(None) else {
            return;
        };
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        loop {
            if !first {
                loop {
                    match rx.recv().await {
                        Ok(ev) if relevant(&ev) => break,
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return,
                    }
                }
            }
            first = false;
            // Batch the burst that woke us (a scale-up writes many objects at once).
            tokio::time::sleep(Duration::from_millis(5)).await;
            while !matches!(
                rx.try_recv(),
                Err(TryRecvError::Empty | TryRecvError::Closed)
            ) {}
            loop {
                let p = proxy.clone();
                match tokio::task::spawn_blocking(move || p.sync()).await {
                    Ok(Ok(())) => {
                        backoff = Duration::from_millis(100);
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %crate::error_chain(&e), retry_in = ?backoff, "services");
                    }
                    Err(e) => tracing::error!(error = %e, "service sync panicked"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    });
}

/// Changes that can move endpoints or rules. Our own Endpoints writes count too (so a user's
/// edit of a managed object is reverted); the pass after them finds nothing to do.
fn relevant(ev: &crate::store::WatchEvent) -> bool {
    matches!(
        ev.key.kind,
        Kind::Service | Kind::Vmi | Kind::Endpoints | Kind::EndpointSlice
    )
}

#[cfg(test)]
mod tests;
