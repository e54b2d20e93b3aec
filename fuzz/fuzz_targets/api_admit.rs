//! The API's input path, minus HTTP: the first byte picks the kind, body format, field
//! validation, HPA version and operation; the rest is the request body. Create and merge-patch
//! go through `api::body::decode`, `api::hpa_versions::incoming` and `Service` (admission and
//! a real redb store in a temp dir), exactly as `api::objects::handle` calls them; the delete
//! path parses `DeleteOptions` with `api::objects::delete_options`; a few inputs go to the URL
//! parsers (path, label and field selectors, bounded integer parameters). Any panic is a finding.

#![no_main]

use std::sync::{Arc, OnceLock};

use api::body::{self, BodyFormat};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use supervisor::kinds::{FieldValidation, Kind};
use supervisor::meta;
use supervisor::service::{PatchType, Service};
use supervisor::store::{ObjectKey, Store};

struct World {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    svc: Service,
}

const NS: &str = "default";
const SEED_VMIRS: &str = include_str!("../../tests/fixtures/seed/vmirs.yaml");
const SEED_HPA: &str = include_str!("../../tests/fixtures/seed/hpa.yaml");

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("corral-fuzz")
            .tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("temp dir");
        let store = Arc::new(Store::open(&dir.path().join("corral.redb")).expect("store"));
        let cap = Arc::new(supervisor::capacity::Capacity {
            reserve: 0,
            overhead: 0,
        });
        let svc = Service::new(store.clone(), cap);
        for (kind, text) in [(Kind::ReplicaSet, SEED_VMIRS), (Kind::Hpa, SEED_HPA)] {
            let obj = body::decode(text.as_bytes(), BodyFormat::Yaml).expect("seed");
            let (obj, _, fv) =
                api::hpa_versions::incoming(kind, obj, "v1", FieldValidation::Strict, true)
                    .expect("seed admits");
            svc.create(kind, NS, obj, fv).expect("seed stored");
        }
        World {
            _dir: dir,
            store,
            svc,
        }
    })
}

/// Removes what a create stored (finalizers first), so the store stays small.
fn forget(w: &World, kind: Kind, obj: &Value) {
    let key = ObjectKey::new(kind, NS, meta::name(obj));
    let _ = w.store.update(&key, false, |c| {
        let mut n = c.clone();
        meta::set_finalizers(&mut n, &[]);
        Ok(Some(n))
    });
    let _ = w.store.delete(&key, None, None, false);
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let kind = [Kind::Vmi, Kind::ReplicaSet, Kind::Hpa, Kind::Event][usize::from(sel & 3)];
    let fmt = [
        BodyFormat::Json,
        BodyFormat::Yaml,
        BodyFormat::Sniff,
        BodyFormat::Sniff,
    ][usize::from((sel >> 2) & 3)];
    let fv = if sel & 0x10 != 0 {
        FieldValidation::Strict
    } else {
        FieldValidation::Warn
    };
    let version = match (kind, sel & 0x20 != 0) {
        (Kind::Hpa, true) => "v1",
        (Kind::Hpa, false) => "v2",
        _ => "v1",
    };
    let w = world();
    match sel >> 6 {
        // DELETE: the body is DeleteOptions.
        3 => {
            let q = api::objects::Query::new();
            if let Ok(o) = api::objects::delete_options(&q, bytes) {
                assert!(
                    o.grace.is_none_or(
                        |g| (0..=supervisor::kinds::vmi::MAX_GRACE_SECONDS).contains(&g)
                    )
                );
            }
        }
        // PATCH (merge) of the seeded set or HPA.
        2 => {
            let Ok(patch) = body::decode(bytes, BodyFormat::Json) else {
                return;
            };
            let (kind, name) = if kind == Kind::Hpa {
                (Kind::Hpa, "lab05-cirros-replicaset")
            } else {
                (Kind::ReplicaSet, "lab05-cirros-replicaset")
            };
            let key = ObjectKey::new(kind, NS, name);
            let _ = w.svc.patch(&key, &patch, PatchType::Merge, false, fv);
        }
        // The URL: path grammar and the selectors of a list or watch.
        1 if sel & 0x20 != 0 => {
            let text = String::from_utf8_lossy(bytes);
            let _ = api::path::parse(&text);
            let _ = supervisor::selector::Selector::parse(&text);
            let _ = api::objects::FieldSelector::parse(&text);
            let mut q = api::objects::Query::new();
            q.insert("gracePeriodSeconds".into(), text.into_owned());
            let _ = api::objects::int_param(&q, "gracePeriodSeconds", 0, 604_800);
            let _ = api::objects::delete_options(&q, b"");
        }
        // POST: create, then forget.
        _ => {
            let Ok(obj) = body::decode(bytes, fmt) else {
                return;
            };
            let Ok((obj, _, fv)) = api::hpa_versions::incoming(kind, obj, version, fv, true) else {
                return;
            };
            if let Ok((created, _)) = w.svc.create(kind, NS, obj, fv) {
                forget(w, kind, &created);
            }
        }
    }
});
