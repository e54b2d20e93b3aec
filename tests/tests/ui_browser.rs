//! The web console in a real browser: Debian's chromium driven by Playwright
//! (`tests/ui/browser.py`) through `corral proxy`, against a daemon with pod networking in a
//! network namespace this test makes. The page creates the seed set from YAML (after showing a
//! 422 at its line), shows two Running VMIs with their pod IPs, scales the set to 1, creates the
//! lab's HPA, types the lab's load line into the serial console (xterm.js over the console
//! WebSocket) and shows the HPA scale the set back to 2. Screenshots land in `target/ui/`.
//! Also: the proxy's guards and the page's headers, checked with plain HTTP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use corral_tests::daemon::Daemon;
use corral_tests::lab;
use corral_tests::proxy::Proxy;

/// One raw HTTP/1.1 request; returns the status line and headers, and the body.
fn http(port: u16, head: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (h, b) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (h.to_string(), b.to_string())
}

fn chromium() -> PathBuf {
    let p = PathBuf::from("/usr/bin/chromium");
    assert!(
        p.exists(),
        "/usr/bin/chromium is missing: bash .ci/install-deps.sh installs Debian's chromium"
    );
    p
}

fn python() -> PathBuf {
    let p = corral_tests::bin::workspace().join(".venv/bin/python");
    let ok = Command::new(&p)
        .args(["-c", "import playwright"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} has no playwright: bash .ci/install-deps.sh installs it",
        p.display()
    );
    p
}

/// Runs `tests/ui/browser.py` against `url` with `args`; on failure, panics with its output,
/// where the screenshots are and the daemon's log.
fn browser(d: &Daemon, url: &str, args: &[&std::ffi::OsStr]) {
    let (chromium, python) = (chromium(), python());
    let shots = corral_tests::bin::workspace().join("target/ui");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new(python)
        .arg(corral_tests::bin::workspace().join("tests/ui/browser.py"))
        .arg("--url")
        .arg(url)
        .arg("--chromium")
        .arg(chromium)
        .arg("--shots")
        .arg(&shots)
        .args(args)
        .output()
        .expect("run tests/ui/browser.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "the browser test failed (screenshots in {}):\n{text}\ndaemon log:\n{}",
        shots.display(),
        d.log()
    );
}

#[test]
fn proxy_guards_and_page_headers() {
    let d = Daemon::start(&[]);
    let p = Proxy::to_socket(&d.socket);
    let (h, body) = http(
        p.port,
        "GET /ui/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    let csp = h
        .lines()
        .find_map(|l| l.strip_prefix("content-security-policy: "))
        .unwrap_or_else(|| panic!("no CSP: {h}"));
    assert!(
        csp.contains("script-src 'self';") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert!(body.contains("/ui/app.js"), "{body}");
    // The API through the proxy, with the daemon's answer.
    let (h, body) = http(
        p.port,
        "GET /version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(
        h.starts_with("HTTP/1.1 200") && body.contains("corralVersion"),
        "{h}{body}"
    );
    // DNS rebinding and cross-site requests are refused before reaching the daemon.
    for (head, why) in [
        (
            "GET /version HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
            "not accepted",
        ),
        (
            "DELETE /apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets/x HTTP/1.1\r\n\
             Host: 127.0.0.1\r\nOrigin: http://evil.example\r\nConnection: close\r\n\r\n",
            "cross-origin",
        ),
    ] {
        let (h, body) = http(p.port, head);
        assert!(h.starts_with("HTTP/1.1 403"), "{h}");
        assert!(
            body.contains(why) && body.contains("\"kind\":\"Status\""),
            "{body}"
        );
    }
    // With the daemon gone, a Status naming the socket.
    drop(d);
    let (h, body) = http(
        p.port,
        "GET /version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(h.starts_with("HTTP/1.1 502"), "{h}");
    assert!(body.contains("corral.sock"), "{body}");
}

/// The daemon's HTTPS listener with a bearer token: the page is public, the API is not; the page
/// signs in with the token (in a real browser), and `corral proxy --server` forwards with it.
#[test]
fn token_listener_in_a_real_browser_and_through_the_proxy() {
    // Missing tools fail the test before anything starts.
    let _ = (chromium(), python());
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "ui-test-token\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start(&["--listen", &addr, "--token-file", token.to_str().unwrap()]);
    browser(
        &d,
        &format!("https://{addr}/ui/"),
        &["--token".as_ref(), "ui-test-token".as_ref()],
    );
    // corral proxy in front of the TCP listener: the proxy adds the token.
    let ca = d.state_dir.join("tls/ca.crt");
    let p = Proxy::spawn(
        Command::new(corral_tests::bin::corral())
            .args(["proxy", "--port", "0", "--server", &addr, "--token-file"])
            .arg(&token)
            .arg("--certificate-authority")
            .arg(&ca),
    );
    let (h, body) = http(
        p.port,
        "GET /api/v1/namespaces/default/services HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(h.starts_with("HTTP/1.1 200"), "{h}{body}");
    assert!(body.contains("\"name\":\"web\""), "{body}");
    std::mem::forget(dir); // the token file must outlive the daemon's reads
}

#[test]
fn the_lab_in_a_real_browser() {
    let _ = (chromium(), python());
    corral_tests::netns::enter_private().expect("a private network namespace (needs root)");
    let tmp = tempfile::tempdir().unwrap();
    let cni = corral_tests::netns::CniDir::new();
    let conf_dir = cni.conf_dir();
    let reg = lab::testguest_registry();
    let d = Daemon::start_networked(&[
        "--insecure-registry",
        &reg.addr,
        "--cni-conf-dir",
        conf_dir.to_str().unwrap(),
        "--hpa-sync-period",
        "3s",
        "--metrics-resolution",
        "3s",
        "--hpa-downscale-stabilization",
        "300s",
    ]);
    let p = Proxy::to_socket(&d.socket);
    let vmirs = tmp.path().join("vmirs.yaml");
    std::fs::write(&vmirs, lab::seed_set(&reg)).unwrap();
    let hpa = corral_tests::bin::workspace().join("tests/fixtures/seed/hpa.yaml");
    browser(
        &d,
        &format!("http://127.0.0.1:{}/ui/", p.port),
        &[
            "--vmirs".as_ref(),
            vmirs.as_os_str(),
            "--hpa".as_ref(),
            hpa.as_os_str(),
            "--timeout".as_ref(),
            "240".as_ref(),
        ],
    );
    // The set was left at 2 by the HPA: delete it before the daemon goes (VMs outlive it).
    let r = d.req(
        "DELETE",
        "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstancereplicasets/lab05-cirros-replicaset",
        None,
        b"",
    );
    assert!(r.status == 200 || r.status == 202, "{}", r.text());
}
