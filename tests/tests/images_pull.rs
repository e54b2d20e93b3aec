//! `corral image pull` against real registries on 127.0.0.1 (Debian's docker-registry):
//! the test guest and the CirrOS-like image, caching by digest, every manifest and layer
//! format, basic auth, the bearer-token flow, docker credential helpers (the real
//! `docker-credential-pass`), and in-process deduplication of concurrent pulls.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use corral_tests::corral::{fails, fixtures, image_cmd, ok};
use corral_tests::registry::Registry;
use serde_json::Value;

fn images() -> PathBuf {
    fixtures().join("images")
}

fn guest_elf() -> PathBuf {
    let real = fixtures().join("testguest.elf");
    if real.exists() {
        real
    } else {
        images().join(".tiny-elf/tiny.elf")
    }
}

fn oci(name: &str) -> String {
    format!("oci:{}:latest", images().join(name).display())
}

fn pull(store: &Path, reg: &Registry, repo_tag: &str, extra: &[&str]) -> Value {
    let mut c = image_cmd(store);
    c.args(["pull", "--json", "--insecure-registry", &reg.addr])
        .args(extra)
        .arg(reg.reference(repo_tag));
    serde_json::from_str(&ok(c)).expect("pull --json output")
}

fn path(v: &Value, key: &str) -> PathBuf {
    PathBuf::from(
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing in {v}")),
    )
}

fn sha(p: &Path) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(p).unwrap(), &mut h).unwrap();
    hex::encode(h.finalize())
}

#[test]
fn pulls_the_test_guest_and_caches_it_by_digest() {
    let reg = Registry::start();
    reg.push(&oci("testguest/oci"), "corral/testguest:latest");
    let store = tempfile::tempdir().unwrap();
    let s = store.path().join("store");

    let img = pull(&s, &reg, "corral/testguest:latest", &[]);
    assert_eq!(img["reference"], reg.reference("corral/testguest:latest"));
    assert_eq!(img["disk_format"], "qcow2");
    assert_eq!(img["disk_name"], "/disk/disk.qcow2");
    assert_eq!(img["cmdline"], "root=LABEL=testguest-root ro console=ttyS0");
    assert_eq!(img["boot"]["kernel_path"], "/boot/vmlinuz");
    assert_eq!(img["boot"]["kernel_format"], "elf");
    assert_eq!(
        std::fs::read(path(&img, "kernel")).unwrap(),
        std::fs::read(guest_elf()).unwrap()
    );
    let disk = path(&img, "disk_raw");
    assert_eq!(
        sha(&disk),
        sha(&images().join("testguest/disk.raw")),
        "converted disk == the raw disk it was made from"
    );
    let layer_gets = reg.requests("GET /v2/corral/testguest/blobs/");
    let manifest_gets = reg.requests("GET /v2/corral/testguest/manifests/");
    assert!(layer_gets >= 2, "config and layer fetched");
    let before = std::fs::metadata(&disk).unwrap();

    // Unchanged digest: one HEAD, no GET, no conversion.
    let again = pull(&s, &reg, "corral/testguest:latest", &[]);
    assert_eq!(again, img);
    assert_eq!(
        reg.requests("GET /v2/corral/testguest/blobs/"),
        layer_gets,
        "no blob transferred"
    );
    assert_eq!(
        reg.requests("GET /v2/corral/testguest/manifests/"),
        manifest_gets,
        "no manifest transferred"
    );
    assert!(
        reg.requests("HEAD /v2/corral/testguest/manifests/latest") >= 1,
        "the tag was checked"
    );
    let after = std::fs::metadata(&disk).unwrap();
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec()),
        "disk not rewritten"
    );

    // A digest reference to a cached image needs no network at all (not even a HEAD).
    let pinned = format!(
        "{}/corral/testguest@{}",
        reg.addr,
        img["digest"].as_str().unwrap()
    );
    let total = reg.requests(" /v2/");
    let mut c = image_cmd(&s);
    c.args(["pull", "--json", &pinned]);
    let by_digest: Value = serde_json::from_str(&ok(c)).unwrap();
    assert_eq!(by_digest["disk_raw"], img["disk_raw"]);
    assert_eq!(
        reg.requests(" /v2/"),
        total,
        "no request for a cached digest"
    );

    // The tag moves to another image: the next pull notices and fetches it.
    reg.push(&oci("testguest/oci-plain"), "corral/testguest:latest");
    let moved = pull(&s, &reg, "corral/testguest:latest", &[]);
    assert_ne!(moved["digest"], img["digest"]);
    assert_eq!(moved["disk_format"], "raw");
    assert_eq!(moved["disk_name"], "/disk/disk.img");
    assert_eq!(
        sha(&path(&moved, "disk_raw")),
        sha(&images().join("testguest/disk.raw"))
    );

    // The digest reference still holds the first image, served with the registry gone.
    drop(reg);
    let mut c = image_cmd(&s);
    c.args(["pull", "--json", &pinned]);
    let offline: Value = serde_json::from_str(&ok(c)).unwrap();
    assert_eq!(offline["id"], img["id"]);
    assert_eq!(offline["disk_raw"], img["disk_raw"]);
}

#[test]
fn pulls_the_cirros_like_image() {
    let reg = Registry::start();
    reg.push(&oci("cirros-like/oci"), "corral/cirros-like:latest");
    let store = tempfile::tempdir().unwrap();
    let img = pull(
        &store.path().join("s"),
        &reg,
        "corral/cirros-like:latest",
        &[],
    );
    let kver = std::fs::read_to_string(images().join("cirros-like/kernel-version"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(
        img["cmdline"], "root=LABEL=cirros-rootfs ro console=ttyS0 quiet",
        "the image's /etc/kernel/cmdline"
    );
    assert_eq!(img["rootfs_label"], "cirros-rootfs");
    assert_eq!(img["boot"]["kernel_path"], format!("/boot/vmlinuz-{kver}"));
    assert_eq!(
        img["boot"]["initrd_path"],
        format!("/boot/initrd.img-{kver}")
    );
    assert_eq!(img["boot"]["kernel_partition"], 1);
    assert_eq!(
        img["boot"]["kernel_format"], "lz4",
        "Debian's cloud kernel is an LZ4 bzImage"
    );
    let vmlinux = std::fs::read(path(&img, "kernel")).unwrap();
    assert_eq!(&vmlinux[..4], b"\x7fELF");
    assert_eq!(vmlinux[4], 2, "ELF64");
    assert!(
        vmlinux.len() > 20 << 20,
        "a whole decompressed kernel: {} bytes",
        vmlinux.len()
    );
    let initrd = std::fs::read(path(&img, "initrd")).unwrap();
    assert_eq!(&initrd[..2], b"\x1f\x8b", "the gzip'd busybox initramfs");
    assert_eq!(
        sha(&path(&img, "disk_raw")),
        sha(&images().join("cirros-like/disk.raw"))
    );
    // sparse: a 64 MiB disk with ~20 MiB of data
    let m = std::fs::metadata(path(&img, "disk_raw")).unwrap();
    assert_eq!(m.len(), 64 << 20);
    assert!(
        m.blocks() * 512 < 40 << 20,
        "disk.raw is sparse ({} bytes allocated)",
        m.blocks() * 512
    );
}

#[test]
fn every_manifest_and_layer_format() {
    let reg = Registry::start();
    reg.push(&oci("testguest/oci-zstd"), "corral/formats:zstd");
    reg.push(&oci("testguest/oci-plain"), "corral/formats:plain");
    reg.push_with(
        &oci("testguest/oci"),
        "corral/formats:docker-v2s2",
        &["--format", "v2s2"],
    );
    reg.push_with(
        &oci("testguest/oci-multiarch"),
        "corral/formats:oci-index",
        &["--all"],
    );
    reg.push_with(
        &oci("testguest/oci-multiarch"),
        "corral/formats:docker-list",
        &["--all", "--format", "v2s2"],
    );
    let store = tempfile::tempdir().unwrap();
    let s = store.path().join("s");
    for tag in ["zstd", "plain", "docker-v2s2", "oci-index", "docker-list"] {
        let img = pull(&s, &reg, &format!("corral/formats:{tag}"), &[]);
        assert_eq!(
            std::fs::read(path(&img, "kernel")).unwrap(),
            std::fs::read(guest_elf()).unwrap(),
            "{tag}"
        );
        assert_eq!(
            sha(&path(&img, "disk_raw")),
            sha(&images().join("testguest/disk.raw")),
            "{tag}: the amd64 disk"
        );
    }
    // the manifests really were of those kinds
    let mut c = std::process::Command::new("skopeo");
    c.args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}", reg.reference("corral/formats:docker-list")),
    ]);
    let raw = ok(c);
    assert!(
        raw.contains("application/vnd.docker.distribution.manifest.list.v2+json"),
        "{raw}"
    );
    let mut c = std::process::Command::new("skopeo");
    c.args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}", reg.reference("corral/formats:docker-v2s2")),
    ]);
    assert!(ok(c).contains("application/vnd.docker.distribution.manifest.v2+json"));
}

#[test]
fn basic_auth_from_a_docker_config() {
    let reg = Registry::start_basic("alice", "s3cret");
    reg.push(&oci("testguest/oci"), "corral/testguest:latest");
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("s");
    let mut c = image_cmd(&s);
    c.args([
        "pull",
        "--insecure-registry",
        &reg.addr,
        &reg.reference("corral/testguest:latest"),
    ]);
    let err = fails(c);
    assert!(
        err.contains("refused access") && err.contains("no credentials"),
        "{err}"
    );

    let wrong = dir.path().join("wrong.json");
    reg.write_auth_file(&wrong, Some(("alice", "nope")));
    let mut c = image_cmd(&s);
    c.args(["pull", "--insecure-registry", &reg.addr, "--auth-file"])
        .arg(&wrong)
        .arg(reg.reference("corral/testguest:latest"));
    let err = fails(c);
    assert!(
        err.contains("refused access") && err.contains("wrong.json"),
        "{err}"
    );

    let auth = dir.path().join("config.json");
    reg.write_auth_file(&auth, None);
    let img = pull(
        &s,
        &reg,
        "corral/testguest:latest",
        &["--auth-file", auth.to_str().unwrap()],
    );
    assert!(path(&img, "kernel").exists());
}

/// A `pass` password store with its own throwaway gpg key, as `docker-credential-pass` uses it.
struct PassStore {
    dir: tempfile::TempDir,
}

impl PassStore {
    fn new() -> PassStore {
        let dir = tempfile::tempdir().unwrap();
        let gnupg = dir.path().join("gnupg");
        std::fs::create_dir(&gnupg).unwrap();
        std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let s = PassStore { dir };
        let mut keygen = s.run(
            "gpg",
            &["--batch", "--pinentry-mode", "loopback", "--passphrase", ""],
        );
        keygen.args(["--quick-gen-key", "corral-test@localhost"]);
        keygen.args(["default", "default", "never"]);
        s.output(keygen);
        let keys = s.output(s.run("gpg", &["--list-keys", "--with-colons"]));
        let fpr = keys
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.trim_matches(':').split(':').next_back())
            .expect("fingerprint of the new key")
            .to_string();
        s.output(s.run("pass", &["init", &fpr]));
        s
    }

    /// A command with this store's GNUPGHOME and PASSWORD_STORE_DIR.
    fn run(&self, program: &str, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(program);
        self.env(&mut c).args(args);
        c
    }

    fn env<'a>(&self, c: &'a mut std::process::Command) -> &'a mut std::process::Command {
        c.env("GNUPGHOME", self.dir.path().join("gnupg"))
            .env("PASSWORD_STORE_DIR", self.dir.path().join("store"))
    }

    fn output(&self, mut c: std::process::Command) -> String {
        let o = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
        assert!(
            o.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `docker-credential-pass VERB` with `input` on stdin, as `docker login` (`store`) and
    /// `docker logout` (`erase`) run it.
    fn helper(&self, verb: &str, input: &str) {
        use std::io::Write as _;
        let mut c = self.run("docker-credential-pass", &[verb]);
        c.stdin(std::process::Stdio::piped());
        let mut child = c
            .spawn()
            .expect("docker-credential-pass (golang-docker-credential-helpers) is installed");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        assert!(
            child.wait().unwrap().success(),
            "docker-credential-pass {verb}"
        );
    }
}

impl Drop for PassStore {
    fn drop(&mut self) {
        let _ = self.run("gpgconf", &["--kill", "gpg-agent"]).status();
    }
}

#[test]
fn credentials_from_a_real_credential_helper() {
    let reg = Registry::start_basic("carol", "h3lper-pw");
    reg.push(&oci("testguest/oci"), "corral/testguest:latest");
    let pass = PassStore::new();
    let login =
        serde_json::json!({"ServerURL": reg.addr, "Username": "carol", "Secret": "h3lper-pw"});
    pass.helper("store", &login.to_string());
    let dir = tempfile::tempdir().unwrap();
    let pull_with = |config: &str| {
        let file = dir.path().join("config.json");
        std::fs::write(&file, config).unwrap();
        // A fresh store each time, so that every pull asks the registry.
        let store = tempfile::tempdir_in(dir.path()).unwrap();
        let mut c = image_cmd(&store.path().join("s"));
        pass.env(&mut c)
            .args([
                "pull",
                "--json",
                "--insecure-registry",
                &reg.addr,
                "--auth-file",
            ])
            .arg(&file)
            .arg(reg.reference("corral/testguest:latest"));
        (c, store)
    };

    // credHelpers names the helper for this registry; credsStore is the default for all.
    for config in [
        format!(r#"{{"credHelpers":{{"{}":"pass"}}}}"#, reg.addr),
        r#"{"credsStore":"pass"}"#.to_string(),
    ] {
        let (c, _store) = pull_with(&config);
        let img: Value = serde_json::from_str(&ok(c)).expect("pull --json output");
        assert!(path(&img, "kernel").exists(), "{config}");
    }

    // Once the helper has nothing stored for this registry, the pull is anonymous, refused, and
    // the error names the helper.
    pass.helper("erase", &reg.addr);
    let (c, _store) = pull_with(r#"{"credsStore":"pass"}"#);
    let err = fails(c);
    assert!(
        err.contains("refused access")
            && err.contains("docker-credential-pass (named in")
            && err.contains("gave no credentials"),
        "{err}"
    );

    // A helper named for this registry must exist; a missing credsStore helper is only a warning.
    let (c, _store) = pull_with(&format!(
        r#"{{"credHelpers":{{"{}":"corral-missing"}}}}"#,
        reg.addr
    ));
    let err = fails(c);
    assert!(
        err.contains("cannot get credentials")
            && err.contains("cannot run credential helper docker-credential-corral-missing"),
        "{err}"
    );
    let (c, _store) = pull_with(r#"{"credsStore":"corral-missing"}"#);
    let err = fails(c);
    assert!(
        err.contains("refused access")
            && err.contains("docker-credential-corral-missing (named in")
            && err.contains("gave no credentials"),
        "{err}"
    );
}

#[test]
fn bearer_token_flow_anonymous_and_with_credentials() {
    let reg = Registry::start_token("bob", "t0ken-pw");
    reg.push(&oci("testguest/oci"), "corral/testguest:latest");
    reg.push(&oci("testguest/oci"), "private/testguest:latest");
    let issued = reg.tokens_issued();
    assert!(issued > 0, "skopeo's push went through the token service");
    // The registry really demands tokens.
    let status = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{}/v2/corral/testguest/manifests/latest", reg.addr),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "401");

    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("s");
    // anonymous token for a public repository (as quay.io and Docker Hub do)
    let img = pull(&s, &reg, "corral/testguest:latest", &[]);
    assert!(path(&img, "kernel").exists());
    assert!(reg.tokens_issued() > issued, "corral fetched a token");

    // a private repository: the anonymous token grants nothing
    let mut c = image_cmd(&s);
    c.args([
        "pull",
        "--insecure-registry",
        &reg.addr,
        &reg.reference("private/testguest:latest"),
    ]);
    let err = fails(c);
    assert!(err.contains("refused access"), "{err}");

    // credentials from the auth file go to the token service
    let auth = dir.path().join("config.json");
    reg.write_auth_file(&auth, None);
    let img = pull(
        &s,
        &reg,
        "private/testguest:latest",
        &["--auth-file", auth.to_str().unwrap()],
    );
    assert!(path(&img, "kernel").exists());
}

#[test]
fn concurrent_pulls_of_one_reference_run_once() {
    let reg = Registry::start();
    reg.push(&oci("cirros-like/oci"), "corral/cirros-like:latest");
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let reference = reg.reference("corral/cirros-like:latest");
    let results = rt.block_on(async {
        let config = images::StoreConfig {
            insecure_registries: vec![reg.addr.clone()],
            ..Default::default()
        };
        let store = images::ImageStore::open(&dir.path().join("s"), config).unwrap();
        let events = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (store, reference, events) = (store.clone(), reference.clone(), events.clone());
            tasks.push(tokio::spawn(async move {
                let progress: images::ProgressFn =
                    std::sync::Arc::new(move |e: &images::PullEvent| {
                        if matches!(e, images::PullEvent::LayerDone { .. }) {
                            events.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    });
                store
                    .pull(
                        &reference,
                        images::PullOptions {
                            kernel_optional: false,
                            progress: Some(progress),
                        },
                    )
                    .await
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        (out, events.load(std::sync::atomic::Ordering::SeqCst))
    });
    let (images, events) = results;
    let first = images[0].as_ref().unwrap().clone();
    for i in &images {
        assert_eq!(i.as_ref().unwrap(), &first);
    }
    assert!(events >= 1, "every caller sees the shared pull's progress");
    let layer = first.boot.kernel_path.is_some();
    assert!(layer);
    assert_eq!(
        reg.requests("GET /v2/corral/cirros-like/manifests/latest"),
        1,
        "one manifest fetch for four pulls"
    );
    let blob_gets = reg.requests("GET /v2/corral/cirros-like/blobs/");
    assert_eq!(blob_gets, 2, "config + layer fetched once for four pulls");
}
