//! issue 12, "API input" and "API limits": the daemon bounds what a client can make it hold or
//! compute. A slowloris or idle connection is closed after `--api-header-timeout`; connections
//! beyond `--api-max-connections` wait; a body over the limit is a 413 `Status` on every route
//! (also when only announced), a body that never arrives a 408; TLS handshakes are capped and
//! timed out; the token file's mode is checked at start; and out-of-range durations, counts and
//! names in objects and query parameters are 400/422 `Status` errors naming the field, with
//! the daemon still serving afterwards. Loopback and the unix socket only; every wait bounded.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use corral_tests::daemon::Daemon;
use serde_json::{Value, json};

const RS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets";
const VMIS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";

fn raw(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(&d.socket).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// True once `out` holds a whole response with a `Content-Length`.
fn complete(out: &[u8]) -> bool {
    let text = String::from_utf8_lossy(out);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .is_some_and(|n| body.len() >= n)
}

/// Reads until EOF, an error, or `within`: what was read and whether the peer closed.
fn read_until_closed(s: &mut UnixStream, within: Duration) -> (String, bool) {
    read_response(s, within, false)
}

/// Like [`read_until_closed`], but with `whole_response` returns as soon as one response with a
/// `Content-Length` has arrived.
fn read_response(s: &mut UnixStream, within: Duration, whole_response: bool) -> (String, bool) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < within {
        if whole_response && complete(&out) {
            break;
        }
        let left = within
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(10));
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), false)
}

/// The JSON body of a raw HTTP/1.1 response.
fn body_json(resp: &str) -> Value {
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body.trim()).unwrap_or_else(|_| panic!("not JSON: {resp}"))
}

fn status(r: &api::client::Response) -> Value {
    let v = r
        .json()
        .unwrap_or_else(|_| panic!("not a Status: {} {}", r.status, r.text()));
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["code"], json!(r.status));
    v
}

fn causes(v: &Value) -> Vec<String> {
    v["details"]["causes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["field"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn slowloris_and_idle_connections_are_closed() {
    let d = Daemon::start(&["--api-header-timeout", "1s"]);
    // Headers one byte at a time, slower than the timeout allows.
    let mut slow = raw(&d);
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let start = Instant::now();
    let mut closed = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(150));
        if slow.write_all(b"X").is_err() {
            closed = true;
            break;
        }
        slow.set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        let mut b = [0u8; 64];
        if matches!(slow.read(&mut b), Ok(0)) {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a connection trickling its headers was still open after {:?}",
        start.elapsed()
    );
    assert!(start.elapsed() < Duration::from_secs(4));
    // An idle connection (nothing sent) and a kept-alive one after its response.
    let mut idle = raw(&d);
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(4));
    assert!(closed, "an idle connection was kept open");
    let mut kept = raw(&d);
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (resp, closed) = read_until_closed(&mut kept, Duration::from_secs(4));
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(closed, "an idle kept-alive connection was kept open");
    assert_eq!(d.req("GET", "/healthz", None, b"").status, 200);
}

#[test]
fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let d = Daemon::start(&["--api-max-connections", "2", "--api-header-timeout", "20s"]);
    let a = raw(&d);
    let b = raw(&d);
    std::thread::sleep(Duration::from_millis(300));
    let mut c = raw(&d);
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (resp, _) = read_until_closed(&mut c, Duration::from_millis(1500));
    assert!(
        resp.is_empty(),
        "the third connection was served while two were open: {resp}"
    );
    drop(a);
    let (resp, _) = read_until_closed(&mut c, Duration::from_secs(5));
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "the waiting connection was not served once a slot freed: {resp:?}"
    );
    drop(b);
    assert!(d.log().contains("connection limit reached"), "{}", d.log());
}

/// Sends `head` then (from another thread, errors ignored: the server may answer and close
/// first) `body`; returns the raw response.
fn exchange(d: &Daemon, head: &str, body: Vec<u8>) -> String {
    let mut s = raw(d);
    s.write_all(head.as_bytes()).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&body);
    });
    let (resp, _) = read_response(&mut s, Duration::from_secs(10), true);
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    resp
}

#[test]
fn bodies_are_bounded_on_every_route() {
    let d = Daemon::start(&["--api-body-timeout", "1s"]);
    let over = (8 << 20) + 1;
    let console = "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/x/consoleinput";
    let console_ws =
        "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/x/console";
    for (method, path) in [
        ("POST", RS.to_string()),
        ("PUT", format!("{RS}/x")),
        ("PATCH", format!("{RS}/x")),
        ("DELETE", format!("{RS}/x")),
        ("POST", console.to_string()),
        ("GET", console_ws.to_string()),
        ("GET", "/api/v1/nodes".to_string()),
        ("GET", "/api/v1/namespaces/default/pods".to_string()),
        ("GET", "/healthz".to_string()),
    ] {
        // Announced: refused before the body is read.
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {over}\r\n\r\n"
        );
        let resp = exchange(&d, &head, Vec::new());
        assert!(
            resp.starts_with("HTTP/1.1 413"),
            "{method} {path}: {resp:?}"
        );
        assert_eq!(
            body_json(&resp)["reason"],
            "RequestEntityTooLarge",
            "{method} {path}"
        );
        // Streamed (chunked, no length): cut at the limit.
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let mut body = Vec::new();
        for _ in 0..9 {
            body.extend_from_slice(b"100000\r\n");
            body.extend(std::iter::repeat_n(b' ', 1 << 20));
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        let resp = exchange(&d, &head, body);
        assert!(
            resp.starts_with("HTTP/1.1 413"),
            "{method} {path}: {resp:?}"
        );
        assert_eq!(
            body_json(&resp)["reason"],
            "RequestEntityTooLarge",
            "{method} {path}"
        );
    }
    // A body that never arrives: 408 once --api-body-timeout has passed.
    let mut s = raw(&d);
    s.write_all(
        format!("POST {RS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"a\":")
            .as_bytes(),
    )
    .unwrap();
    let start = Instant::now();
    let (resp, _) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp:?}");
    assert_eq!(body_json(&resp)["code"], 408);
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert_eq!(d.req("GET", "/healthz", None, b"").status, 200);
}

#[test]
fn tls_handshakes_are_capped_and_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start(&[
        "--listen",
        &addr,
        "--token-file",
        token.to_str().unwrap(),
        "--api-max-handshakes",
        "2",
        "--api-handshake-timeout",
        "2s",
    ]);
    assert!(
        !d.log().contains("token file is readable"),
        "a 0600 token file was reported: {}",
        d.log()
    );
    let tcp = || {
        let s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    };
    let closed_within = |s: &mut std::net::TcpStream, within: Duration| {
        let start = Instant::now();
        let mut b = [0u8; 64];
        while start.elapsed() < within {
            match s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return true,
            }
        }
        false
    };
    // Two clients that never send a ClientHello hold both handshake slots...
    let mut a = tcp();
    let mut b = tcp();
    std::thread::sleep(Duration::from_millis(300));
    // ...so a third connection is closed at once.
    let mut c = tcp();
    assert!(
        closed_within(&mut c, Duration::from_secs(1)),
        "a connection over the handshake cap was kept"
    );
    // The silent two are dropped after the handshake timeout.
    assert!(closed_within(&mut a, Duration::from_secs(4)));
    assert!(closed_within(&mut b, Duration::from_secs(1)));
    // And the listener serves again.
    let ca = d.state_dir.join("tls/ca.crt");
    let client = api::client::Client::new(api::client::Endpoint::Tcp {
        addr: addr.clone(),
        token: Some("s3cret".into()),
        ca,
    });
    assert_eq!(client.get(RS).unwrap().status, 200);
}

#[test]
fn a_token_file_readable_by_others_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start(&["--listen", &addr, "--token-file", token.to_str().unwrap()]);
    let log = d.log();
    assert!(
        log.contains("token file is readable by other users") && log.contains("644"),
        "{log}"
    );
}

/// A VMI whose image is never pulled (it is refused first, or points at a closed local port).
fn vmi(name: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": name},
        "spec": {
            "domain": {"devices": {"disks": [{"name": "containerdisk"}, {"name": "cloudinitdisk"}]},
                       "resources": {"requests": {"memory": "64Mi"}}},
            "volumes": [
                {"name": "containerdisk", "containerDisk": {"image": "127.0.0.1:1/none:latest", "imagePullPolicy": "Never"}},
                {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": "#cloud-config\n"}}
            ]
        }
    })
}

#[test]
fn out_of_range_input_is_a_status_naming_the_field() {
    let d = Daemon::start(&[]);
    let post = |obj: &Value| {
        d.req(
            "POST",
            VMIS,
            Some("application/json"),
            obj.to_string().as_bytes(),
        )
    };
    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut v = vmi("grace");
    v["spec"]["terminationGracePeriodSeconds"] = json!(i64::MAX);
    cases.push((v, "spec.terminationGracePeriodSeconds"));
    for bad in ["/tmp/corral-e2e-x", "../../x"] {
        let mut v = vmi("path");
        v["spec"]["volumes"][1]["name"] = json!(bad);
        v["spec"]["domain"]["devices"]["disks"][1]["name"] = json!(bad);
        cases.push((v, "spec.volumes[1].name"));
    }
    let mut v = vmi("host");
    v["spec"]["hostname"] = json!("x\ninstance-id: evil");
    cases.push((v, "spec.hostname"));
    let mut v = vmi("cap");
    v["spec"]["volumes"][1] = json!({"name": "cloudinitdisk", "emptyDisk": {"capacity": "16Ei"}});
    cases.push((v, "spec.volumes[1].emptyDisk.capacity"));
    let mut v = vmi("mem");
    v["spec"]["domain"]["resources"]["requests"]["memory"] = json!("15Ei");
    cases.push((v, "spec.domain.resources.requests.memory"));
    for (obj, field) in cases {
        let r = post(&obj);
        assert_eq!(r.status, 422, "{field}: {}", r.text());
        let s = status(&r);
        assert_eq!(s["reason"], "Invalid");
        assert!(causes(&s).iter().any(|f| f == field), "{field}: {s}");
    }
    assert!(
        !std::path::Path::new("/tmp/corral-e2e-x").exists(),
        "a volume name became a path"
    );
    // A valid VMI, then deletes with out-of-range grace periods (query and body).
    let r = post(&vmi("ok"));
    assert_eq!(r.status, 201, "{}", r.text());
    let path = format!("{VMIS}/ok");
    for q in [i64::MAX.to_string(), "-5".into(), "604801".into()] {
        let r = d.req(
            "DELETE",
            &format!("{path}?gracePeriodSeconds={q}"),
            None,
            b"",
        );
        assert_eq!(r.status, 422, "{q}: {}", r.text());
        assert_eq!(causes(&status(&r)), vec!["gracePeriodSeconds"]);
    }
    let r = d.req(
        "DELETE",
        &format!("{path}?gracePeriodSeconds=soon"),
        None,
        b"",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(causes(&status(&r)), vec!["gracePeriodSeconds"]);
    let r = d.req(
        "DELETE",
        &path,
        Some("application/json"),
        br#"{"gracePeriodSeconds": 18446744073709551615}"#,
    );
    assert_eq!(r.status, 422, "{}", r.text());
    // Scale beyond the most replicas.
    let seed = std::fs::read_to_string(
        corral_tests::bin::workspace().join("tests/fixtures/seed/vmirs.yaml"),
    )
    .unwrap()
    .replace("replicas: 2", "replicas: 0");
    let r = d.req("POST", RS, Some("application/yaml"), seed.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    let r = d.req(
        "PATCH",
        &format!("{RS}/lab05-cirros-replicaset/scale"),
        Some("application/merge-patch+json"),
        br#"{"spec":{"replicas":9223372036854775807}}"#,
    );
    assert_eq!(r.status, 422, "{}", r.text());
    // The daemon is still up, and deletes with a sane grace period.
    let r = d.req("DELETE", &format!("{path}?gracePeriodSeconds=0"), None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.req("GET", "/healthz", None, b"").status, 200);
}
