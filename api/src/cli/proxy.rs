//! `corral proxy`: kubectl proxy's convention for corral. Serves the web console and the whole
//! API on a loopback HTTP port, forwarding every request to the daemon with the caller's
//! credentials (the unix socket, or `--server` with its token and CA), so a browser or kubectl
//! on this host needs no certificate or token plumbing.
//!
//! Guards, since any local process (and any web page, through the browser) can reach a loopback
//! port: the `Host` header must name the proxy's address or loopback (DNS rebinding), and a
//! request carrying an `Origin` must come from the proxy's own origin (cross-site requests and
//! WebSocket hijacking). Watches stream and the console WebSocket is relayed as an HTTP upgrade.
//!
//! Threads: one tokio runtime; one task per client connection and per relayed upgrade.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::Semaphore;

use super::common::{CmdError, Conn};
use crate::client::Endpoint;

/// Arguments of `corral proxy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Port to serve on (0: any free port, printed at start).
    #[arg(short, long, default_value_t = 8001)]
    pub port: u16,
    /// Address to serve on. Anything but loopback hands the caller's credentials to whoever
    /// reaches it: only with --accept-host naming the host's name.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: IpAddr,
    /// Another `Host` name to accept (besides localhost and the listen address); repeatable.
    #[arg(long = "accept-host")]
    pub accept_hosts: Vec<String>,
    #[command(flatten)]
    pub conn: Conn,
}

/// Why a proxied request failed.
#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error("connect to the corral daemon at {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("TLS to the corral daemon")]
    Tls(#[from] crate::tls::TlsError),
    #[error("server name {0} is not valid for TLS")]
    ServerName(String),
    #[error("HTTP to the corral daemon")]
    Http(#[from] hyper::Error),
}

type Body = BoxBody<Bytes, hyper::Error>;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where requests go, with the credentials they get there.
enum Upstream {
    Unix(PathBuf),
    Tls {
        addr: String,
        name: rustls::pki_types::ServerName<'static>,
        connector: tokio_rustls::TlsConnector,
        token: Option<HeaderValue>,
    },
}

impl Upstream {
    fn new(e: Endpoint) -> Result<Upstream, ProxyError> {
        Ok(match e {
            Endpoint::Unix(p) => Upstream::Unix(p),
            Endpoint::Tcp { addr, token, ca } => {
                let name = crate::tls::server_name(&addr)
                    .ok_or_else(|| ProxyError::ServerName(addr.clone()))?;
                let token = token
                    .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
                    .map(|mut v| {
                        v.set_sensitive(true);
                        v
                    });
                Upstream::Tls {
                    addr,
                    name,
                    connector: crate::tls::client_config(&ca)?.into(),
                    token,
                }
            }
        })
    }

    fn describe(&self) -> String {
        match self {
            Upstream::Unix(p) => p.display().to_string(),
            Upstream::Tls { addr, .. } => format!("https://{addr}"),
        }
    }

    async fn connect(&self) -> Result<Box<dyn Io>, ProxyError> {
        let err = |e| ProxyError::Connect(self.describe(), e);
        Ok(match self {
            Upstream::Unix(p) => Box::new(UnixStream::connect(p).await.map_err(err)?),
            Upstream::Tls {
                addr,
                name,
                connector,
                ..
            } => {
                let tcp = tokio::net::TcpStream::connect(addr).await.map_err(err)?;
                Box::new(connector.connect(name.clone(), tcp).await.map_err(err)?)
            }
        })
    }
}

/// The proxy's state: its upstream and the `Host` names it answers to.
struct Proxy {
    upstream: Upstream,
    hosts: Vec<String>,
}

impl Proxy {
    /// Refuses requests for another host name (DNS rebinding) or from another origin.
    fn check(&self, h: &HeaderMap) -> Result<(), String> {
        let host = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .ok_or("a Host header is required")?;
        if !self.hosts.iter().any(|a| host_name(host) == a) {
            return Err(format!("host {host:?} is not accepted (see --accept-host)"));
        }
        if let Some(o) = h.get(header::ORIGIN) {
            let o = o.to_str().unwrap_or("");
            if o != format!("http://{host}") {
                return Err(format!("cross-origin request from {o:?} refused"));
            }
        }
        Ok(())
    }

    async fn forward(&self, mut req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
        let upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let h = &mut parts.headers;
        if upgrade.is_none() {
            h.remove(header::CONNECTION);
            h.remove(header::UPGRADE);
        }
        for name in ["keep-alive", "proxy-connection", "proxy-authorization"] {
            h.remove(name);
        }
        h.remove(header::AUTHORIZATION);
        if let Upstream::Tls { token: Some(t), .. } = &self.upstream {
            h.insert(header::AUTHORIZATION, t.clone());
        }
        let host = match &self.upstream {
            Upstream::Unix(_) => "localhost",
            Upstream::Tls { addr, .. } => addr.as_str(),
        };
        if let Ok(v) = HeaderValue::from_str(host) {
            h.insert(header::HOST, v);
        }
        let io = self.upstream.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        let mut resp = sender
            .send_request(Request::from_parts(parts, body))
            .await?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client) = upgrade
        {
            let server = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(client, server) {
                    Ok((c, s)) => {
                        let (mut c, mut s) = (TokioIo::new(c), TokioIo::new(s));
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
        }
        Ok(resp.map(BodyExt::boxed))
    }
}

/// `host[:port]` without the port; IPv6 literals keep their brackets.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// A Kubernetes `Status` response.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    let mut r = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|n| match n {})
            .boxed(),
    );
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(p: Arc<Proxy>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if let Err(m) = p.check(req.headers()) {
        tracing::warn!(uri = %req.uri(), "{m}");
        return Ok(status(StatusCode::FORBIDDEN, "Forbidden", &m));
    }
    Ok(match p.forward(req).await {
        Ok(r) => r,
        Err(e) => {
            let m = supervisor::error_chain(&e);
            tracing::warn!("{m}");
            status(StatusCode::BAD_GATEWAY, "ServiceUnavailable", &m)
        }
    })
}

/// Host names a proxy on `addr` answers to.
fn accepted_hosts(addr: IpAddr, extra: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"].map(String::from).into();
    hosts.push(match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    });
    hosts.extend(extra.iter().cloned());
    hosts
}

async fn serve(a: Args, upstream: Upstream) -> Result<(), CmdError> {
    if !a.address.is_loopback() && a.accept_hosts.is_empty() {
        return Err(CmdError::Usage(format!(
            "--address {}: not loopback; name the host with --accept-host to serve it there \
             (whoever reaches it acts with your credentials)",
            a.address
        )));
    }
    let l = TcpListener::bind(SocketAddr::new(a.address, a.port))
        .await
        .map_err(|e| CmdError::Other(format!("bind {}:{}: {e}", a.address, a.port)))?;
    let local = l.local_addr().map_err(|e| CmdError::Other(e.to_string()))?;
    let proxy = Arc::new(Proxy {
        hosts: accepted_hosts(a.address, &a.accept_hosts),
        upstream,
    });
    crate::outln!(
        "Starting to serve on {local} (web console: http://{local}/ui/), forwarding to {}",
        proxy.upstream.describe()
    );
    let conns = Arc::new(Semaphore::new(256));
    loop {
        let permit = conns.clone().acquire_owned().await.expect("never closed");
        let (tcp, _) = match l.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req| handle(p.clone(), req));
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30));
            if let Err(e) = b
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await
            {
                tracing::debug!(error = %e, "client connection ended");
            }
        });
    }
}

/// Runs `corral proxy` until interrupted.
pub fn run(a: Args) -> ExitCode {
    super::init_tracing();
    let result = a
        .conn
        .endpoint()
        .and_then(|e| Upstream::new(e).map_err(|e| CmdError::Other(supervisor::error_chain(&e))));
    let upstream = match result {
        Ok(u) => u,
        Err(e) => return super::fail(&e),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return super::fail(&CmdError::Other(format!("tokio runtime: {e}"))),
    };
    match rt.block_on(serve(a, upstream)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy() -> Proxy {
        Proxy {
            upstream: Upstream::Unix("/nonexistent".into()),
            hosts: accepted_hosts("127.0.0.1".parse().unwrap(), &[]),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn host_and_origin_checks() {
        let p = proxy();
        let cases: &[(&[(&'static str, &str)], bool)] = &[
            (&[("host", "127.0.0.1:8001")], true),
            (&[("host", "localhost:8001")], true),
            (&[("host", "[::1]:8001")], true),
            (&[("host", "localhost")], true),
            (&[], false),
            (&[("host", "evil.example:8001")], false),
            (&[("host", "127.0.0.1.evil.example")], false),
            (
                &[
                    ("host", "127.0.0.1:8001"),
                    ("origin", "http://127.0.0.1:8001"),
                ],
                true,
            ),
            (
                &[
                    ("host", "127.0.0.1:8001"),
                    ("origin", "http://evil.example"),
                ],
                false,
            ),
            (&[("host", "127.0.0.1:8001"), ("origin", "null")], false),
            (
                &[
                    ("host", "127.0.0.1:8001"),
                    ("origin", "http://127.0.0.1:9999"),
                ],
                false,
            ),
        ];
        for (h, ok) in cases {
            assert_eq!(p.check(&headers(h)).is_ok(), *ok, "{h:?}");
        }
    }

    #[test]
    fn upgrade_detection() {
        assert!(is_upgrade(&headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(!is_upgrade(&headers(&[("upgrade", "websocket")])));
        assert!(!is_upgrade(&headers(&[("connection", "upgrade")])));
    }

    #[test]
    fn host_names() {
        assert_eq!(host_name("localhost:8001"), "localhost");
        assert_eq!(host_name("[::1]:8001"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("example"), "example");
    }
}
