//! The serial console: KubeVirt's `.../virtualmachineinstances/{name}/console` WebSocket
//! subresource (bytes both ways, subprotocol `plain.kubevirt.io`) and corral's recent-output
//! endpoint `.../{name}/consolelog?tailBytes=N` (the VMM's capped log and its rotated
//! predecessor, streamed).

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path as FsPath;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use supervisor::kinds::Kind;
use supervisor::meta;
use supervisor::store::ObjectKey;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use vmm::console::rotated_path;

use crate::objects::Query;
use crate::state::AppState;
use crate::status::ApiError;

/// Default and largest tail returned by the log endpoint.
const DEFAULT_TAIL: u64 = 64 * 1024;
pub const MAX_TAIL: u64 = 8 << 20;
/// Size of one read of the log: the most one request holds in memory, whatever the tail.
const CHUNK: u64 = 64 * 1024;

fn vmi_uid(st: &AppState, ns: &str, name: &str) -> Result<String, ApiError> {
    let obj = st
        .store
        .get_or_404(&ObjectKey::new(Kind::Vmi, ns, name))
        .map_err(|e| ApiError::from_op(e.into(), Kind::Vmi, name))?;
    Ok(meta::uid(&obj).to_string())
}

/// `tailBytes`: absent means [`DEFAULT_TAIL`]; else a decimal integer in `0..=MAX_TAIL`.
fn tail_bytes(q: &Query) -> Result<u64, ApiError> {
    let Some(raw) = q.get("tailBytes") else {
        return Ok(DEFAULT_TAIL);
    };
    raw.parse::<u64>()
        .ok()
        .filter(|t| *t <= MAX_TAIL)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "tailBytes: {raw:?} is not an integer in 0..={MAX_TAIL}"
            ))
        })
}

/// Recent serial output of a VMI (the last `tailBytes`, default 64 KiB): the end of the rotated
/// log (`console.log.1`) then of the current one, streamed in [`CHUNK`]-byte reads.
pub fn log(st: &AppState, ns: &str, name: &str, q: &Query) -> Result<Response, ApiError> {
    let uid = vmi_uid(st, ns, name)?;
    let tail = tail_bytes(q)?;
    let path = st.runtime.console_log(&uid).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("VMI \"{name}\" has no console log (not started yet)"),
        )
    })?;
    let parts = open_tail(&path, tail)
        .map_err(|e| ApiError::internal(format!("read {}: {e}", path.display())))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        axum::body::Body::from_stream(stream(parts)),
    )
        .into_response())
}

/// A byte range of one open log file.
#[derive(Debug)]
struct Part {
    file: File,
    offset: u64,
    len: u64,
}

/// Opens the current log, then the rotated one, and picks the last `tail` bytes of the two.
///
/// The current file is opened first: if the VMM rotates in between, the rotated file is the
/// one already open (same inode, skipped) and nothing is sent twice. The open files keep their
/// contents even if renamed or replaced while they are read; sizes are taken at open, so bytes
/// written meanwhile are not sent.
fn open_tail(path: &FsPath, tail: u64) -> io::Result<Vec<Part>> {
    let open = |p: &FsPath| -> io::Result<Option<(File, std::fs::Metadata)>> {
        match File::open(p) {
            Ok(f) => {
                let m = f.metadata()?;
                Ok(Some((f, m)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    };
    let current = open(path)?;
    let rotated = open(&rotated_path(path))?.filter(|(_, m)| {
        current
            .as_ref()
            .is_none_or(|(_, c)| (c.dev(), c.ino()) != (m.dev(), m.ino()))
    });
    let files: Vec<(File, u64)> = [rotated, current]
        .into_iter()
        .flatten()
        .map(|(f, m)| (f, m.len()))
        .collect();
    let total: u64 = files.iter().map(|(_, len)| len).sum();
    let mut skip = total - tail.min(total);
    let mut parts = Vec::new();
    for (file, len) in files {
        let offset = skip.min(len);
        skip -= offset;
        if offset < len {
            parts.push(Part {
                file,
                offset,
                len: len - offset,
            });
        }
    }
    Ok(parts)
}

/// The parts' bytes, one read of at most [`CHUNK`] bytes per item.
fn stream(parts: Vec<Part>) -> impl futures_util::Stream<Item = io::Result<bytes::Bytes>> {
    type Reading = Option<(tokio::fs::File, u64)>;
    let state: (std::vec::IntoIter<Part>, Reading) = (parts.into_iter(), None);
    futures_util::stream::try_unfold(state, |(mut next, mut reading)| async move {
        loop {
            if let Some((file, left)) = &mut reading {
                if *left > 0 {
                    let mut buf = vec![0u8; usize::try_from(CHUNK.min(*left)).unwrap_or(0)];
                    let n = file.read(&mut buf).await?;
                    if n > 0 {
                        buf.truncate(n);
                        *left -= n as u64;
                        return Ok(Some((bytes::Bytes::from(buf), (next, reading))));
                    }
                    // Shorter than at open (truncated by hand): go on with the next file.
                }
            }
            let Some(part) = next.next() else {
                return Ok(None);
            };
            let mut file = tokio::fs::File::from_std(part.file);
            file.seek(io::SeekFrom::Start(part.offset)).await?;
            reading = Some((file, part.len));
        }
    })
}

/// Upgrades to a WebSocket bridged to the VM's serial port.
pub async fn websocket(
    State(st): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    ws: WebSocketUpgrade,
) -> Response {
    let uid = match vmi_uid(&st, &ns, &name) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let Some(sock) = st.runtime.control_socket(&uid) else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("VMI \"{name}\" is not running"),
        )
        .into_response();
    };
    let serial = match supervisor::runtime::control::console(&sock).await {
        Ok(s) => s,
        Err(e) => {
            return ApiError::internal(format!(
                "attach to the console of {name}: {}",
                supervisor::error_chain(&e)
            ))
            .into_response();
        }
    };
    ws.protocols(["plain.kubevirt.io"])
        .on_upgrade(move |socket| bridge(socket, serial))
}

async fn bridge(ws: WebSocket, serial: tokio::net::UnixStream) {
    use futures_util::{SinkExt, StreamExt};
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut rd, mut wr) = serial.into_split();
    let to_guest = async {
        while let Some(Ok(msg)) = ws_rx.next().await {
            let data = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
    };
    let from_guest = async {
        let mut buf = vec![0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_tx
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.close().await;
    };
    tokio::select! {
        _ = to_guest => {}
        _ = from_guest => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn pattern(start: u64, len: u64) -> Vec<u8> {
        (start..start + len)
            .map(|i| b'!' + (i % 89) as u8)
            .collect()
    }

    /// Streams the tail and checks that no read was larger than [`CHUNK`].
    async fn read_tail(path: &FsPath, tail: u64) -> Vec<u8> {
        let mut s = std::pin::pin!(stream(open_tail(path, tail).unwrap()));
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() as u64 <= CHUNK, "a {} byte read", chunk.len());
            out.extend_from_slice(&chunk);
        }
        out
    }

    #[tokio::test]
    async fn multi_mib_logs_stream_in_chunks_rotated_file_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let (old, new) = (3 << 20, (5 << 19) + 7);
        std::fs::write(rotated_path(&path), pattern(0, old)).unwrap();
        std::fs::write(&path, pattern(old, new)).unwrap();
        let total = old + new;
        for tail in [
            0,
            1,
            CHUNK - 1,
            CHUNK + 1,
            new,
            new + 1,
            new + CHUNK + 3,
            MAX_TAIL,
            u64::MAX,
        ] {
            let want = tail.min(total);
            let got = read_tail(&path, tail).await;
            assert_eq!(got.len() as u64, want, "tail {tail}");
            assert!(
                got == pattern(total - want, want),
                "tail {tail}: wrong bytes"
            );
        }
        // Only the current file, or only the rotated one.
        std::fs::remove_file(rotated_path(&path)).unwrap();
        assert_eq!(read_tail(&path, u64::MAX).await, pattern(old, new));
        std::fs::rename(&path, rotated_path(&path)).unwrap();
        assert_eq!(read_tail(&path, 10).await, pattern(old + new - 10, 10));
        std::fs::remove_file(rotated_path(&path)).unwrap();
        assert!(read_tail(&path, 10).await.is_empty());
    }

    #[tokio::test]
    async fn a_rotation_while_reading_sends_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(rotated_path(&path), b"one ").unwrap();
        std::fs::write(&path, b"two ").unwrap();
        // Rotated after the open: the open files are sent as they were.
        let parts = open_tail(&path, u64::MAX).unwrap();
        std::fs::rename(&path, rotated_path(&path)).unwrap();
        std::fs::write(&path, b"three").unwrap();
        let mut got = Vec::new();
        let mut s = std::pin::pin!(stream(parts));
        while let Some(c) = s.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, b"one two ");
        // Rotated between the two opens: `.1` is the file already open as the current one.
        std::fs::remove_file(rotated_path(&path)).unwrap();
        std::fs::hard_link(&path, rotated_path(&path)).unwrap();
        assert_eq!(read_tail(&path, u64::MAX).await, b"three");
    }

    #[test]
    fn tail_bytes_is_bounded_and_named_when_bad() {
        let q = |v: &str| Query::from([("tailBytes".to_string(), v.to_string())]);
        assert_eq!(tail_bytes(&Query::new()).unwrap(), DEFAULT_TAIL);
        assert_eq!(tail_bytes(&q("0")).unwrap(), 0);
        assert_eq!(tail_bytes(&q("8388608")).unwrap(), MAX_TAIL);
        for bad in ["8388609", "-1", "1e3", "", "abc", "18446744073709551616"] {
            let e = tail_bytes(&q(bad)).unwrap_err();
            assert_eq!(e.code, StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.message.starts_with("tailBytes: "), "{}", e.message);
        }
    }
}
