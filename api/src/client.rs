//! A small blocking HTTP/1.1 client for the daemon's API, over its unix socket or TCP with a
//! bearer token. Used by the CLI (and the end-to-end tests). Responses are read whole, or as a
//! stream of lines for watches.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Where the daemon listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The unix socket (no token: file permissions guard it).
    Unix(PathBuf),
    /// `host:port` over HTTPS, trusting the CA in `ca` (the daemon's `<state-dir>/tls/ca.crt`),
    /// with an optional bearer token.
    Tcp {
        addr: String,
        token: Option<String>,
        ca: PathBuf,
    },
}

/// Errors talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to the corral daemon at {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("talk to the corral daemon")]
    Io(#[from] std::io::Error),
    #[error("bad HTTP response from the daemon: {0}")]
    Protocol(String),
    #[error("TLS")]
    Tls(#[from] crate::tls::TlsError),
    #[error("invalid server name {0:?}")]
    ServerName(String),
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A header value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value, ClientError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ClientError::Protocol(format!("body is not JSON: {e}")))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Status code and headers of a response.
pub type Head = (u16, Vec<(String, String)>);

/// The client.
#[derive(Debug, Clone)]
pub struct Client {
    pub endpoint: Endpoint,
    pub timeout: Option<Duration>,
}

/// One request.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    pub accept: Option<&'a str>,
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// A request without a body.
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Request {
            method,
            path,
            content_type: None,
            accept: None,
            body: &[],
        }
    }
}

fn read_headers(r: &mut impl BufRead) -> Result<(u16, Vec<(String, String)>), ClientError> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Protocol(format!("status line {:?}", line.trim())))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(ClientError::Protocol(
                "connection closed in the headers".into(),
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

/// Reads a chunked or length-delimited or close-delimited body incrementally.
pub struct BodyReader {
    inner: BufReader<Box<dyn Stream>>,
    chunked: bool,
    remaining: Option<u64>,
    chunk_left: u64,
    done: bool,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.chunked {
            if self.chunk_left == 0 {
                let mut line = String::new();
                self.inner.read_line(&mut line)?;
                if line.trim().is_empty() {
                    line.clear();
                    self.inner.read_line(&mut line)?;
                }
                let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")
                    })?;
                if size == 0 {
                    self.done = true;
                    return Ok(0);
                }
                self.chunk_left = size;
            }
            let want = buf
                .len()
                .min(usize::try_from(self.chunk_left).unwrap_or(usize::MAX));
            let n = self.inner.read(&mut buf[..want])?;
            if n == 0 {
                self.done = true;
            }
            self.chunk_left -= n as u64;
            return Ok(n);
        }
        match self.remaining {
            Some(0) => {
                self.done = true;
                Ok(0)
            }
            Some(rem) => {
                let want = buf.len().min(usize::try_from(rem).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..want])?;
                self.remaining = Some(rem - n as u64);
                if n == 0 {
                    self.done = true;
                }
                Ok(n)
            }
            None => self.inner.read(buf),
        }
    }
}

impl Client {
    /// A client for `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Client {
            endpoint,
            timeout: Some(Duration::from_secs(60)),
        }
    }

    /// Connects; returns the stream, the `Host` header value and the bearer token.
    #[allow(clippy::type_complexity)]
    fn connect(&self) -> Result<(Box<dyn Stream>, String, Option<String>), ClientError> {
        match &self.endpoint {
            Endpoint::Unix(p) => {
                let s = UnixStream::connect(p)
                    .map_err(|e| ClientError::Connect(p.display().to_string(), e))?;
                s.set_read_timeout(self.timeout)?;
                Ok((Box::new(s), "localhost".into(), None))
            }
            Endpoint::Tcp { addr, token, ca } => {
                let cfg = crate::tls::client_config(ca)?;
                let name = crate::tls::server_name(addr)
                    .ok_or_else(|| ClientError::ServerName(addr.clone()))?;
                let conn = rustls::ClientConnection::new(cfg, name)
                    .map_err(|e| ClientError::Tls(crate::tls::TlsError::Config(e)))?;
                let s =
                    TcpStream::connect(addr).map_err(|e| ClientError::Connect(addr.clone(), e))?;
                s.set_read_timeout(self.timeout)?;
                Ok((
                    Box::new(rustls::StreamOwned::new(conn, s)),
                    addr.clone(),
                    token.clone(),
                ))
            }
        }
    }

    /// Sends a request and returns the status, headers and a reader over the body.
    pub fn open(&self, req: &Request<'_>) -> Result<(Head, BodyReader), ClientError> {
        let (mut s, host, token) = self.connect()?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: corral/{}\r\n",
            req.method,
            req.path,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(ct) = req.content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str(&format!(
            "Accept: {}\r\n",
            req.accept.unwrap_or("application/json")
        ));
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", req.body.len()));
        s.write_all(head.as_bytes())?;
        s.write_all(req.body)?;
        s.flush()?;
        let mut r = BufReader::new(s);
        let (status, headers) = read_headers(&mut r)?;
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let chunked = get("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let remaining = get("content-length").and_then(|v| v.parse().ok());
        Ok((
            (status, headers),
            BodyReader {
                inner: r,
                chunked,
                remaining,
                chunk_left: 0,
                done: false,
            },
        ))
    }

    /// Sends a request and reads the whole response.
    pub fn send(&self, req: &Request<'_>) -> Result<Response, ClientError> {
        let ((status, headers), mut body) = self.open(req)?;
        let mut buf = Vec::new();
        body.read_to_end(&mut buf)?;
        Ok(Response {
            status,
            headers,
            body: buf,
        })
    }

    /// `GET path` with `Accept: application/json`.
    pub fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.send(&Request::new("GET", path))
    }
}
