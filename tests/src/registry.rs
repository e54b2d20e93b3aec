//! A real OCI registry (Debian's `docker-registry`, distribution 2.8) on 127.0.0.1 for tests:
//! open, with htpasswd basic auth, or with bearer-token auth backed by a real token service
//! (self-signed ES256 JWTs with an `x5c` chain the registry verifies against its root bundle).
//!
//! ```no_run
//! let reg = corral_tests::registry::Registry::start();
//! reg.push("oci:/path/to/layout:latest", "corral/testguest:latest");
//! let reference = reg.reference("corral/testguest:latest"); // "127.0.0.1:PORT/corral/testguest:latest"
//! ```
//! The registry (and token service) stop when the value drops.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// How clients must authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    None,
    /// HTTP basic auth against an htpasswd file (bcrypt).
    Basic {
        user: String,
        password: String,
    },
    /// Bearer tokens from a token service: anonymous clients may pull repositories outside
    /// `private/`; `user`/`password` (basic auth at the token endpoint) may push and pull all.
    Token {
        user: String,
        password: String,
    },
}

pub struct Registry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub auth: Auth,
    dir: tempfile::TempDir,
    child: Child,
    token: Option<TokenService>,
}

impl Registry {
    /// An open registry (no auth).
    pub fn start() -> Self {
        Self::start_with(Auth::None)
    }

    pub fn start_basic(user: &str, password: &str) -> Self {
        Self::start_with(Auth::Basic {
            user: user.into(),
            password: password.into(),
        })
    }

    pub fn start_token(user: &str, password: &str) -> Self {
        Self::start_with(Auth::Token {
            user: user.into(),
            password: password.into(),
        })
    }

    pub fn start_with(auth: Auth) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(auth.clone()) {
                Ok(r) => return r,
                Err(e) => last = e,
            }
        }
        panic!("docker-registry did not start: {last}");
    }

    fn try_start(auth: Auth) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut token = None;
        let auth_yaml = match &auth {
            Auth::None => String::new(),
            Auth::Basic { user, password } => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .map_err(|e| format!("htpasswd: {e}"))?;
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, &out.stdout).map_err(|e| e.to_string())?;
                format!(
                    "auth:\n  htpasswd:\n    realm: corral-test\n    path: {}\n",
                    path.display()
                )
            }
            Auth::Token { user, password } => {
                let svc = TokenService::start(dir.path(), user, password);
                let yaml = format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: corral-registry\n    issuer: corral-test-issuer\n    rootcertbundle: {}\n",
                    svc.addr,
                    svc.cert_path.display()
                );
                token = Some(svc);
                yaml
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: corral-test\n{auth_yaml}",
            dir.path().join("data").display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("registry.log")).map_err(|e| e.to_string())?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("docker-registry (apt docker-registry): {e}"))?;
        let mut reg = Self {
            addr: addr.clone(),
            auth,
            dir,
            child,
            token,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = reg.child.try_wait() {
                return Err(format!("exited with {status}: {}", reg.log()));
            }
            if http_status(&addr, "/v2/").is_some() {
                return Ok(reg);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("not answering on {addr}: {}", reg.log()))
    }

    /// `127.0.0.1:PORT/<repo_tag>`
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }

    /// Pushes `src` (a skopeo source such as `oci:DIR:latest`) as `repo_tag`, with the push
    /// credentials when the registry needs them. Extra skopeo args (e.g. `--format v2s2`) go first.
    pub fn push_with(&self, src: &str, repo_tag: &str, extra: &[&str]) {
        let mut c = Command::new("skopeo");
        c.args(["copy", "-q", "--dest-tls-verify=false"])
            .args(extra);
        if let Auth::Basic { user, password } | Auth::Token { user, password } = &self.auth {
            c.arg(format!("--dest-creds={user}:{password}"));
        }
        c.arg(src)
            .arg(format!("docker://{}", self.reference(repo_tag)));
        let out = c.output().expect("skopeo (apt skopeo)");
        assert!(
            out.status.success(),
            "skopeo push of {src} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn push(&self, src: &str, repo_tag: &str) {
        self.push_with(src, repo_tag, &[]);
    }

    /// The registry's stored bytes of a blob (to corrupt it behind the registry's back).
    pub fn blob_data(&self, digest_hex: &str) -> PathBuf {
        self.dir.path().join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{digest_hex}/data",
            &digest_hex[..2]
        ))
    }

    /// Writes a docker config.json with this registry's credentials (or `user:password`).
    pub fn write_auth_file(&self, path: &Path, creds: Option<(&str, &str)>) {
        let (u, p) = match (&self.auth, creds) {
            (_, Some((u, p))) => (u.to_string(), p.to_string()),
            (Auth::Basic { user, password } | Auth::Token { user, password }, None) => {
                (user.clone(), password.clone())
            }
            (Auth::None, None) => ("nobody".into(), "nothing".into()),
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        std::fs::write(
            path,
            format!(r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#, self.addr),
        )
        .expect("write auth file");
    }

    /// Requests the registry served (its access log) whose line contains `needle`.
    pub fn requests(&self, needle: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(needle) && l.contains("HTTP/1.1\""))
            .count()
    }

    /// Tokens issued by the token service (0 without one).
    pub fn tokens_issued(&self) -> usize {
        self.token
            .as_ref()
            .map(|t| t.issued.load(Ordering::SeqCst))
            .unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A minimal HTTP GET returning the status code.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The token service of the distribution token-auth spec, on its own thread.
struct TokenService {
    addr: String,
    cert_path: PathBuf,
    issued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Signer {
    key: ring::signature::EcdsaKeyPair,
    x5c: String,
    user: String,
    password: String,
}

impl TokenService {
    fn start(dir: &Path, user: &str, password: &str) -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256 key");
        let cert = rcgen::CertificateParams::new(vec!["corral-token-service".to_string()])
            .expect("cert params")
            .self_signed(&key)
            .expect("self-signed cert");
        let cert_path = dir.join("token-cert.pem");
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        let rng = ring::rand::SystemRandom::new();
        let signer = Signer {
            key: ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &key.serialize_der(),
                &rng,
            )
            .expect("ring key"),
            x5c: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            user: user.to_string(),
            password: password.to_string(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token service");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr").to_string();
        let issued = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (issued_t, stop_t) = (issued.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop_t.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        serve(s, &signer, &issued_t);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            addr,
            cert_path,
            issued,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut s: TcpStream, signer: &Signer, issued: &AtomicUsize) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(s.try_clone().expect("clone stream"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorization = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(v.trim().to_string());
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(url_decode)
        .collect();
    let user = match authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
    {
        None => None,
        Some(b64) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default();
            let pair = String::from_utf8_lossy(&decoded).into_owned();
            if pair != format!("{}:{}", signer.user, signer.password) {
                let _ = respond(
                    &mut s,
                    401,
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#,
                );
                return;
            }
            Some(signer.user.clone())
        }
    };
    let mut access = Vec::new();
    for scope in &scopes {
        let parts: Vec<&str> = scope.split(':').collect();
        if parts.len() != 3 || parts[0] != "repository" {
            continue;
        }
        let (name, wanted) = (parts[1], parts[2].split(',').collect::<Vec<_>>());
        let granted: Vec<&str> = wanted
            .into_iter()
            .filter(|a| user.is_some() || (*a == "pull" && !name.starts_with("private/")))
            .collect();
        access.push(serde_json::json!({"type": "repository", "name": name, "actions": granted}));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let n = issued.fetch_add(1, Ordering::SeqCst);
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [signer.x5c]});
    let claims = serde_json::json!({
        "iss": "corral-test-issuer", "sub": user.clone().unwrap_or_default(), "aud": "corral-registry",
        "exp": now + 600, "nbf": now - 60, "iat": now, "jti": format!("corral-{now}-{n}"), "access": access,
    });
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let signing_input = format!("{}.{}", b64(&header), b64(&claims));
    let rng = ring::rand::SystemRandom::new();
    let sig = signer
        .key
        .sign(&rng, signing_input.as_bytes())
        .expect("sign");
    let jwt = format!(
        "{signing_input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig.as_ref())
    );
    let body =
        serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 600}).to_string();
    let _ = respond(&mut s, 200, &body);
}

fn respond(s: &mut TcpStream, code: u16, body: &str) -> std::io::Result<()> {
    let reason = if code == 200 { "OK" } else { "Unauthorized" };
    write!(
        s,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()?;
    s.shutdown(std::net::Shutdown::Write)
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let v = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?');
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
