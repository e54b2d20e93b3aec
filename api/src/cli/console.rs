//! `corral console VMI`: the serial console in the terminal, over the daemon's WebSocket
//! subresource (as `virtctl console`). `Ctrl+]` detaches.
//!
//! Several consoles may attach to one VMI: every attached console sees all output, and the
//! input of all of them reaches the guest, interleaved byte by byte (no locking).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::common::{CmdError, Conn};
use crate::client::Endpoint;

/// The escape byte (`Ctrl+]`).
const ESCAPE: u8 = 0x1d;

/// Arguments of `corral console`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the VMI.
    pub name: String,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub conn: Conn,
}

/// Puts the terminal in raw mode and restores it on drop.
struct RawMode(Option<rustix::termios::Termios>);

impl RawMode {
    fn enter() -> Self {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return RawMode(None);
        }
        let Ok(orig) = rustix::termios::tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = orig.clone();
        raw.make_raw();
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw);
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                orig,
            );
        }
    }
}

async fn session(a: &Args) -> Result<(), CmdError> {
    let client = a.conn.client()?;
    let path = format!(
        "/apis/subresources.kubevirt.io/v1/namespaces/{}/virtualmachineinstances/{}/console",
        a.namespace, a.name
    );
    let (host, token) = match &client.endpoint {
        Endpoint::Unix(_) => ("localhost".to_string(), None),
        Endpoint::Tcp { addr, token, .. } => (addr.clone(), token.clone()),
    };
    let mut req = format!("ws://{host}{path}")
        .into_client_request()
        .map_err(|e| CmdError::Other(e.to_string()))?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "plain.kubevirt.io".parse().expect("static header"),
    );
    if let Some(t) = token {
        req.headers_mut().insert(
            "Authorization",
            format!("Bearer {t}")
                .parse()
                .map_err(|_| CmdError::Other("bad token".into()))?,
        );
    }
    match &client.endpoint {
        Endpoint::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p)
                .await
                .map_err(|e| crate::client::ClientError::Connect(p.display().to_string(), e))?;
            bridge(a, req, s).await
        }
        Endpoint::Tcp { addr, ca, .. } => {
            let s = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| crate::client::ClientError::Connect(addr.clone(), e))?;
            let cfg = crate::tls::client_config(ca).map_err(crate::client::ClientError::Tls)?;
            let name = crate::tls::server_name(addr)
                .ok_or_else(|| crate::client::ClientError::ServerName(addr.clone()))?;
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, s)
                .await
                .map_err(|e| crate::client::ClientError::Connect(addr.clone(), e))?;
            bridge(a, req, tls).await
        }
    }
}

async fn bridge<S>(
    a: &Args,
    req: tokio_tungstenite::tungstenite::handshake::client::Request,
    stream: S,
) -> Result<(), CmdError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (ws, _) = tokio_tungstenite::client_async(req, stream)
        .await
        .map_err(|e| CmdError::Other(format!("attach to the console of {}: {e}", a.name)))?;
    let (mut tx, mut rx) = ws.split();
    eprint!(
        "Successfully connected to {} console. The escape sequence is ^]\r\n",
        a.name
    );
    let _raw = RawMode::enter();
    let input = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 1024];
        loop {
            let n = match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let (data, detach) = match buf[..n].iter().position(|b| *b == ESCAPE) {
                Some(i) => (&buf[..i], true),
                None => (&buf[..n], false),
            };
            if !data.is_empty()
                && tx
                    .send(Message::Binary(data.to_vec().into()))
                    .await
                    .is_err()
            {
                return;
            }
            if detach {
                let _ = tx.close().await;
                return;
            }
        }
    };
    let output = async {
        let mut out = std::io::stdout();
        while let Some(Ok(msg)) = rx.next().await {
            let data = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            let _ = out.write_all(&data);
            let _ = out.flush();
        }
    };
    tokio::select! {
        _ = input => {}
        _ = output => {}
    }
    eprint!("\r\n");
    Ok(())
}

/// Runs `corral console`.
pub fn run(a: Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return super::fail(&CmdError::Other(e.to_string())),
    };
    let res = rt.block_on(session(&a));
    rt.shutdown_background();
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(&e),
    }
}
