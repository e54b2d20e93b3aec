use super::*;
use serde_json::json;

/// Records the scripts it is given (the real `nft` runs in tests/tests/services.rs).
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Dataplane for Arc<Recorder> {
    fn apply(&self, script: &str) -> Result<(), String> {
        self.0.lock().unwrap().push(script.to_string());
        Ok(())
    }

    fn remove(&self) -> Result<(), String> {
        self.0.lock().unwrap().push("(removed)".into());
        Ok(())
    }
}

fn vmi(name: &str, ip: &str, ready: bool) -> Value {
    json!({"metadata": {"name": name, "labels": {"app": "lab"}},
        "spec": {"domain": {"devices": {}}},
        "status": {"interfaces": [{"ipAddress": ip}],
            "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
}

#[test]
fn a_pass_writes_endpoints_and_rules_once_and_follows_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
    let rec = Arc::new(Recorder::default());
    let proxy = Proxy::new(store.clone(), Box::new(rec.clone()));
    store
        .create(Kind::Service, "default", json!({"metadata": {"name": "web"},
            "spec": {"selector": {"app": "lab"}, "clusterIP": "10.96.0.10", "ports": [{"port": 80}]}}), false)
        .unwrap();
    store
        .create(Kind::Vmi, "default", vmi("a", "10.244.0.2", true), false)
        .unwrap();
    store
        .create(Kind::Vmi, "default", vmi("b", "10.244.0.3", false), false)
        .unwrap();
    proxy.sync().unwrap();
    let ep = store
        .get(&ObjectKey::new(Kind::Endpoints, "default", "web"))
        .unwrap();
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "10.244.0.2");
    assert_eq!(ep["subsets"][0]["notReadyAddresses"][0]["ip"], "10.244.0.3");
    let rv = meta::resource_version(&ep);
    let (slices, _) = store.list(Kind::EndpointSlice, Some("default"), |_| true);
    assert_eq!(slices.len(), 1);
    let slice = &slices[0];
    assert!(meta::name(slice).starts_with("web-"), "{slice}");
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "web"
    );
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["endpoints"][0]["addresses"], json!(["10.244.0.2"]));
    assert_eq!(
        slice["endpoints"][0]["conditions"],
        json!({"ready": true, "serving": true, "terminating": false})
    );
    assert_eq!(slice["endpoints"][1]["conditions"]["ready"], false);
    assert_eq!(
        slice["ports"],
        json!([{"name": "", "port": 80, "protocol": "TCP"}])
    );
    proxy.sync().unwrap();
    assert_eq!(
        rec.0.lock().unwrap().len(),
        1,
        "an unchanged plan loads nothing"
    );
    let ep = store
        .get(&ObjectKey::new(Kind::Endpoints, "default", "web"))
        .unwrap();
    assert_eq!(
        meta::resource_version(&ep),
        rv,
        "unchanged endpoints are not rewritten"
    );
    assert!(
        rec.0.lock().unwrap()[0]
            .contains("numgen inc mod 1 vmap { 0 : goto ep-svc-default-web-80-0 }")
    );

    // b becomes Ready: both are endpoints.
    store
        .update(&ObjectKey::new(Kind::Vmi, "default", "b"), false, |c| {
            let mut n = c.clone();
            n["status"]["conditions"][0]["status"] = json!("True");
            Ok(Some(n))
        })
        .unwrap();
    proxy.sync().unwrap();
    assert!(rec.0.lock().unwrap()[1].contains("numgen inc mod 2"));

    // The Service goes: its endpoints and rules go.
    store
        .delete(
            &ObjectKey::new(Kind::Service, "default", "web"),
            None,
            None,
            false,
        )
        .unwrap();
    proxy.sync().unwrap();
    assert!(
        store
            .get(&ObjectKey::new(Kind::Endpoints, "default", "web"))
            .is_none()
    );
    assert!(store.list(Kind::EndpointSlice, None, |_| true).0.is_empty());
    assert_eq!(rec.0.lock().unwrap().last().unwrap(), "(removed)");
}

#[test]
fn user_endpoints_of_a_service_without_selector_are_used_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
    let rec = Arc::new(Recorder::default());
    let proxy = Proxy::new(store.clone(), Box::new(rec.clone()));
    store
        .create(
            Kind::Service,
            "default",
            json!({"metadata": {"name": "ext"},
            "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 80}]}}),
            false,
        )
        .unwrap();
    store
        .create(
            Kind::Endpoints,
            "default",
            json!({"metadata": {"name": "ext"},
            "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 8080}]}]}),
            false,
        )
        .unwrap();
    proxy.sync().unwrap();
    assert!(rec.0.lock().unwrap()[0].contains("dnat to 192.0.2.10:8080"));
    store
        .delete(
            &ObjectKey::new(Kind::Service, "default", "ext"),
            None,
            None,
            false,
        )
        .unwrap();
    proxy.sync().unwrap();
    assert!(
        store
            .get(&ObjectKey::new(Kind::Endpoints, "default", "ext"))
            .is_some(),
        "not ours to delete"
    );
}
