//! The store across `kill -9` of the daemon: resourceVersion never goes back (status writes are
//! not fsynced, but the versions they use are reserved durably), and a watch from a version
//! that did not survive gets a 410 `Expired` ERROR event, one from a version the daemon has
//! not reached a 504 "Too large resource version", never silence. Watch query parameters are
//! bounded (`timeoutSeconds=<u64 max>` used to abort the daemon).

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use api::client::Request;
use corral_tests::daemon::{Daemon, wait_for};
use serde_json::Value;

const RS: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets";

/// A replica set with no replicas (no VM, no image): its creation is durable, the status its
/// controller writes next is not.
fn rs(name: &str) -> String {
    std::fs::read_to_string(corral_tests::bin::workspace().join("tests/fixtures/seed/vmirs.yaml"))
        .unwrap()
        .replace("lab05-cirros-replicaset", name)
        .replace("replicas: 2", "replicas: 0")
}

fn rv_of(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {v}"))
}

/// The list's resourceVersion once the controllers are done (unchanged for 300 ms).
fn settled_rv(d: &Daemon) -> u64 {
    let mut last = rv_of(&d.get_json(RS));
    let mut since = Instant::now();
    wait_for(Duration::from_secs(20), "the store to settle", || {
        std::thread::sleep(Duration::from_millis(50));
        let rv = rv_of(&d.get_json(RS));
        if rv != last {
            last = rv;
            since = Instant::now();
        }
        (since.elapsed() >= Duration::from_millis(300)).then_some(rv)
    })
}

/// Creates `name` and waits for its controller's status write; returns the settled version.
fn create_with_status(d: &Daemon, name: &str) -> u64 {
    let r = d.req("POST", RS, Some("application/yaml"), rs(name).as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    wait_for(Duration::from_secs(20), "the replica set's status", || {
        d.get_json(&format!("{RS}/{name}"))
            .get("status")
            .filter(|s| s.get("replicas").is_some())
            .cloned()
    });
    settled_rv(d)
}

/// The lines of a watch (at most `max`, until the stream ends).
fn watch(d: &Daemon, query: &str, max: usize) -> (u16, Vec<Value>) {
    let path = format!("{RS}?watch=true&{query}");
    let ((status, _), body) = d
        .client()
        .open(&Request::new("GET", &path))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let mut out = Vec::new();
    for line in BufReader::new(body).lines().take(max) {
        let Ok(line) = line else { break };
        out.push(serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}")));
    }
    (status, out)
}

#[test]
fn resource_version_strictly_increases_across_kill_9() {
    let mut d = Daemon::start(&[]);
    let mut seen = 0;
    for round in 0..3 {
        let rv = create_with_status(&d, &format!("rs{round}"));
        assert!(rv > seen, "round {round}: {rv} after {seen}");
        // Status writes after the last durable one: these are what a kill -9 loses.
        seen = rv;
        d.restart(); // kill -9, then start again
        let after = settled_rv(&d);
        assert!(
            after > seen,
            "round {round}: resourceVersion {after} after a kill -9 at {seen}"
        );
        for item in d.get_json(RS)["items"].as_array().unwrap() {
            assert!(rv_of(item) <= after, "{item}");
        }
        seen = after;
    }
    // The objects (their durable part) survived.
    let items = d.get_json(RS)["items"].as_array().unwrap().len();
    assert_eq!(items, 3);
}

#[test]
fn a_watch_from_a_version_lost_in_a_restart_gets_410() {
    let mut d = Daemon::start(&[]);
    let before = create_with_status(&d, "lost");
    d.restart();
    let (status, lines) = watch(&d, &format!("resourceVersion={before}&timeoutSeconds=5"), 1);
    assert_eq!(status, 200);
    let ev = lines
        .first()
        .unwrap_or_else(|| panic!("silence for a watch from {before} after a restart"));
    assert_eq!(ev["type"], "ERROR", "{ev}");
    assert_eq!(ev["object"]["kind"], "Status", "{ev}");
    assert_eq!(ev["object"]["code"], 410, "{ev}");
    assert_eq!(ev["object"]["reason"], "Expired", "{ev}");
    // Listing again and watching from the list's version works.
    let now = settled_rv(&d);
    let (status, lines) = watch(&d, &format!("resourceVersion={now}&timeoutSeconds=1"), 1);
    assert_eq!((status, lines.len()), (200, 0), "{lines:?}");
}

#[test]
fn a_watch_from_the_future_gets_too_large_resource_version() {
    let d = Daemon::start(&[]);
    let now = create_with_status(&d, "future");
    let start = Instant::now();
    let (status, lines) = watch(
        &d,
        &format!("resourceVersion={}&timeoutSeconds=10", now + 1000),
        1,
    );
    assert_eq!(status, 200);
    let ev = lines
        .first()
        .unwrap_or_else(|| panic!("silence for a watch from the future"));
    assert_eq!(ev["type"], "ERROR", "{ev}");
    assert_eq!(ev["object"]["code"], 504, "{ev}");
    assert_eq!(
        ev["object"]["details"]["causes"][0]["reason"], "ResourceVersionTooLarge",
        "{ev}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(9),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn watch_query_parameters_are_bounded() {
    let d = Daemon::start(&[]);
    for q in [
        "timeoutSeconds=18446744073709551615",
        "timeoutSeconds=-1",
        "timeoutSeconds=soon",
        "resourceVersion=-3",
    ] {
        let r = d.req("GET", &format!("{RS}?watch=true&{q}"), None, b"");
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        let v = r.json().unwrap();
        assert_eq!(v["kind"], "Status", "{v}");
        let param = q.split('=').next().unwrap();
        assert!(v["message"].as_str().unwrap().contains(param), "{v}");
        assert_eq!(d.req("GET", "/readyz", None, b"").status, 200, "after {q}");
    }
    // The largest valid value is clamped: the watch starts and the daemon stays up.
    let (status, lines) = watch(&d, "timeoutSeconds=9223372036854775807", 0);
    assert_eq!((status, lines.len()), (200, 0));
    assert_eq!(d.req("GET", "/readyz", None, b"").status, 200);
}
