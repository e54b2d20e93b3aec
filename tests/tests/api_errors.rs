//! The daemon's API answers bad input with Kubernetes `Status` errors and keeps its state:
//! malformed YAML (400 with a position), selector mismatch and negative replicas (422),
//! stale resourceVersion (409), strict field validation, TCP without a token (401), and
//! durability across `kill -9`.

use corral_tests::daemon::Daemon;
use serde_json::{Value, json};

const RS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets";

fn seed() -> String {
    std::fs::read_to_string(corral_tests::bin::workspace().join("tests/fixtures/seed/vmirs.yaml"))
        .unwrap()
}

fn status(r: &api::client::Response) -> Value {
    let v = r
        .json()
        .unwrap_or_else(|_| panic!("not JSON: {}", r.text()));
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["code"], json!(r.status));
    v
}

fn list(d: &Daemon) -> (Vec<Value>, String) {
    let v = d.get_json(RS);
    (
        v["items"].as_array().unwrap().clone(),
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

#[test]
fn malformed_yaml_is_400_with_line_and_column() {
    let d = Daemon::start(&[]);
    let bad = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstanceReplicaSet\nmetadata:\n  name: x\n   oops: [\n";
    let r = d.req("POST", RS, Some("application/yaml"), bad.as_bytes());
    assert_eq!(r.status, 400);
    let s = status(&r);
    assert_eq!(s["reason"], "BadRequest");
    assert!(s["message"].as_str().unwrap().contains("line 5"), "{s}");
    let (items, _) = list(&d);
    assert!(items.is_empty(), "nothing was stored");
}

#[test]
fn selector_mismatch_and_negative_replicas_are_422() {
    let d = Daemon::start(&[]);
    let mismatch = seed().replace(
        "      kubevirt.io/domain: lab05-cirros\n  template",
        "      kubevirt.io/domain: other\n  template",
    );
    assert!(mismatch.contains("other"));
    let r = d.req("POST", RS, Some("application/yaml"), mismatch.as_bytes());
    assert_eq!(r.status, 422, "{}", r.text());
    let s = status(&r);
    assert_eq!(s["reason"], "Invalid");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("selector does not match labels"),
        "{s}"
    );
    assert_eq!(s["details"]["causes"][0]["field"], "spec.selector");

    let negative = seed().replace("replicas: 2", "replicas: -1");
    let r = d.req("POST", RS, Some("application/yaml"), negative.as_bytes());
    assert_eq!(r.status, 422);
    assert_eq!(status(&r)["details"]["causes"][0]["field"], "spec.replicas");

    let r = d.req("POST", RS, Some("application/yaml"), seed().as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    let r = d.req(
        "PATCH",
        &format!("{RS}/lab05-cirros-replicaset/scale"),
        Some("application/merge-patch+json"),
        br#"{"spec":{"replicas":-3}}"#,
    );
    assert_eq!(r.status, 422, "{}", r.text());
    let v = d.get_json(&format!("{RS}/lab05-cirros-replicaset"));
    assert_eq!(v["spec"]["replicas"], 2, "the bad scale changed nothing");
}

#[test]
fn stale_resource_version_is_409() {
    let d = Daemon::start(&[]);
    let r = d.req("POST", RS, Some("application/yaml"), seed().as_bytes());
    assert_eq!(r.status, 201);
    let path = format!("{RS}/lab05-cirros-replicaset");
    // The controller writes the set's status meanwhile (a new resourceVersion each time), so a
    // client updates by read-modify-write, retrying on 409 as kubectl and client-go do.
    let mut obj = Value::Null;
    let mut ok = None;
    for _ in 0..20 {
        obj = d.get_json(&path);
        obj["spec"]["paused"] = json!(true);
        let r = d.req(
            "PUT",
            &path,
            Some("application/json"),
            obj.to_string().as_bytes(),
        );
        if r.status != 409 {
            ok = Some(r);
            break;
        }
    }
    let ok = ok.expect("a fresh read-modify-write succeeds within 20 tries");
    assert_eq!(ok.status, 200, "{}", ok.text());
    obj["spec"]["paused"] = json!(false);
    let stale = d.req(
        "PUT",
        &path,
        Some("application/json"),
        obj.to_string().as_bytes(),
    );
    assert_eq!(stale.status, 409);
    assert_eq!(status(&stale)["reason"], "Conflict");
    // The scale subresource honours its resourceVersion too (PUT without a Content-Type, as
    // kubectl sends it).
    let mut scale = d.get_json(&format!("{path}/scale"));
    scale["metadata"]["resourceVersion"] = json!("1");
    scale["spec"]["replicas"] = json!(4);
    let r = d.req(
        "PUT",
        &format!("{path}/scale"),
        None,
        scale.to_string().as_bytes(),
    );
    assert_eq!(r.status, 409, "{}", r.text());
}

#[test]
fn strict_field_validation_rejects_unknown_fields_and_warn_keeps_them() {
    let d = Daemon::start(&[]);
    let extra = seed().replace("  replicas: 2\n", "  replicas: 2\n  colour: blue\n");
    let r = d.req(
        "POST",
        &format!("{RS}?fieldValidation=Strict"),
        Some("application/yaml"),
        extra.as_bytes(),
    );
    assert_eq!(r.status, 400);
    assert!(
        status(&r)["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"spec.colour\"")
    );
    let r = d.req("POST", RS, Some("application/yaml"), extra.as_bytes());
    assert_eq!(r.status, 201);
    assert!(
        r.header("warning")
            .unwrap_or_default()
            .contains("spec.colour"),
        "{:?}",
        r.headers
    );
    assert_eq!(
        r.json().unwrap()["spec"]["colour"],
        "blue",
        "unknown fields are preserved"
    );
}

#[test]
fn objects_survive_kill_9_of_the_daemon() {
    let mut d = Daemon::start(&[]);
    let r = d.req("POST", RS, Some("application/yaml"), seed().as_bytes());
    assert_eq!(r.status, 201);
    let created = r.json().unwrap();
    d.restart(); // kill -9, then start again
    let v = d.get_json(&format!("{RS}/lab05-cirros-replicaset"));
    assert_eq!(v["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(v["spec"], created["spec"]);
    let (_, rv) = list(&d);
    let created_rv: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv.parse::<u64>().unwrap() >= created_rv);
}

#[test]
fn tcp_listener_requires_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start(&["--listen", &addr, "--token-file", token.to_str().unwrap()]);
    let ca = d.state_dir.join("tls/ca.crt");
    let tcp = |token: Option<&str>| {
        api::client::Client::new(api::client::Endpoint::Tcp {
            addr: addr.clone(),
            token: token.map(str::to_string),
            ca: ca.clone(),
        })
    };
    let r = tcp(None).get(RS).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(status(&r)["reason"], "Unauthorized");
    assert_eq!(tcp(Some("nope")).get(RS).unwrap().status, 401);
    assert_eq!(tcp(Some("s3cret")).get(RS).unwrap().status, 200);
    // Plain HTTP is not served on the TCP port (tokens never travel in clear text).
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    // A client that does not trust the daemon's CA refuses to talk.
    let other_ca = tempfile::tempdir().unwrap();
    let _ = api::tls::server_config(other_ca.path(), &["localhost".into()]).unwrap();
    let untrusting = api::client::Client::new(api::client::Endpoint::Tcp {
        addr: addr.clone(),
        token: Some("s3cret".into()),
        ca: other_ca.path().join("ca.crt"),
    });
    assert!(untrusting.get(RS).is_err());
    // The unix socket needs no token.
    assert_eq!(d.req("GET", RS, None, b"").status, 200);
}

#[test]
fn unknown_paths_and_methods() {
    let d = Daemon::start(&[]);
    let r = d.req(
        "GET",
        "/apis/nope.io/v1/namespaces/default/things",
        None,
        b"",
    );
    assert_eq!(r.status, 404);
    assert_eq!(status(&r)["reason"], "NotFound");
    let r = d.req("GET", &format!("{RS}/missing"), None, b"");
    assert_eq!(r.status, 404);
    assert_eq!(
        status(&r)["message"],
        "virtualmachineinstancereplicasets.kubevirt.io \"missing\" not found"
    );
    let r = d.req("PATCH", &format!("{RS}/missing"), Some("text/plain"), b"x");
    assert_eq!(r.status, 415);
    assert_eq!(d.req("GET", "/healthz", None, b"").status, 200);
    assert_eq!(d.get_json("/version")["major"], "1");
}

#[test]
fn config_errors_name_the_file_and_flag() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("corral.yaml");
    std::fs::write(&cfg, "memory-reserve: 1Gi\nbogus-key: 1\n").unwrap();
    let d = dir.path().to_str().unwrap();
    let out = std::process::Command::new(corral_tests::bin::corral())
        .args(["daemon", "--state-dir", d, "--run-dir", d, "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corral.yaml") && err.contains("bogus-key"),
        "{err}"
    );
    let out = std::process::Command::new(corral_tests::bin::corral())
        .args([
            "daemon",
            "--state-dir",
            d,
            "--run-dir",
            d,
            "--memory-reserve",
            "lots",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--memory-reserve \"lots\""));
}
