//! The control socket protocol: one JSON line in, one JSON line out per connection.
//!
//! * `{"op":"status"}` → [`Status`]
//! * `{"op":"stop","grace_ms":N}` → `{"ok":true}`, then the VM stops (exit code 5)
//! * `{"op":"console"}` → `{"ok":true}`, then the connection is a raw serial byte stream
//! * anything else → `{"error":"..."}`
//!
//! The socket itself is served by the event loop (`event_loop.rs`); this module only parses
//! requests and renders replies, so it is tested without sockets. Clients (the daemon) build
//! their lines from the same types: [`Request::line`], [`Reply`], [`Status`].

use serde::{Deserialize, Serialize};

use crate::lifecycle::{RunState, VmState};

/// A request line.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    Status,
    Stop {
        #[serde(default)]
        grace_ms: u64,
    },
    Console,
}

impl Request {
    /// The request as one line, newline included.
    pub fn line(&self) -> String {
        to_line(self)
    }
}

/// The `status` reply. Fields a VMM of an older release may not send default to zero.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub pid: u32,
    pub state: RunState,
    #[serde(default)]
    pub vcpus: u32,
    #[serde(default)]
    pub memory_bytes: u64,
    #[serde(default)]
    pub boots: u64,
    #[serde(default)]
    pub vcpus_entered: bool,
    #[serde(default)]
    pub started_unix_ms: u64,
    #[serde(default)]
    pub console_dropped_bytes: u64,
    /// `CLOCK_MONOTONIC` (ns) of the first KVM_RUN; 0 before it.
    #[serde(default)]
    pub first_kvm_run_monotonic_ns: u64,
}

/// The reply to `stop` and `console` (`{"ok":true}`), or to a request that failed
/// (`{"error":"..."}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Reply {
    Ok { ok: bool },
    Error { error: String },
}

/// What the event loop must do after replying.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `reply` and close the connection.
    Reply(String),
    /// Send `reply`, then stop the VM.
    Stop { reply: String, grace_ms: u64 },
    /// Send `reply`, then turn the connection into a console stream.
    Console(String),
}

const OK: &str = "{\"ok\":true}\n";

fn error_line(e: impl std::fmt::Display) -> String {
    to_line(&Reply::Error {
        error: e.to_string(),
    })
}

/// Parses one request line and decides the reply.
pub fn handle(line: &str, state: &VmState) -> Action {
    match serde_json::from_str::<Request>(line.trim()) {
        Ok(Request::Status) => Action::Reply(to_line(&status(state))),
        Ok(Request::Stop { grace_ms }) => Action::Stop {
            reply: OK.to_string(),
            grace_ms,
        },
        Ok(Request::Console) => Action::Console(OK.to_string()),
        Err(e) => Action::Reply(error_line(e)),
    }
}

/// Current status of the VM.
pub fn status(state: &VmState) -> Status {
    Status {
        pid: std::process::id(),
        state: state.run_state(),
        vcpus: state.vcpus,
        memory_bytes: state.memory_bytes,
        boots: state.boots(),
        vcpus_entered: state.vcpus_entered(),
        started_unix_ms: state.started_unix_ms,
        console_dropped_bytes: state
            .console_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        first_kvm_run_monotonic_ns: state.first_run_ns(),
    }
}

fn to_line<T: Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_string());
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let state = VmState::new(2, 256 << 20);
        state.begin_boot();
        let Action::Reply(reply) = handle("{\"op\":\"status\"}\n", &state) else {
            panic!("status must reply");
        };
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["state"], "booting");
        assert_eq!(v["vcpus"], 2);
        assert_eq!(v["memory_bytes"], 256 << 20);
        assert_eq!(v["boots"], 1);
        assert_eq!(v["vcpus_entered"], false);
        assert_eq!(v["pid"], std::process::id());
        assert!(reply.ends_with('\n'));
        assert_eq!(
            handle(r#"{"op":"stop","grace_ms":1500}"#, &state),
            Action::Stop {
                reply: OK.to_string(),
                grace_ms: 1500
            }
        );
        assert_eq!(
            handle(r#"{"op":"stop"}"#, &state),
            Action::Stop {
                reply: OK.to_string(),
                grace_ms: 0
            }
        );
        assert_eq!(
            handle(r#"{"op":"console"}"#, &state),
            Action::Console(OK.to_string())
        );
        for req in [
            Request::Status,
            Request::Stop { grace_ms: 7 },
            Request::Console,
        ] {
            let line = req.line();
            assert!(line.ends_with('\n'));
            assert_eq!(serde_json::from_str::<Request>(line.trim()).unwrap(), req);
        }
        let st: Status = serde_json::from_str(&reply).unwrap();
        assert_eq!((st.state, st.vcpus, st.boots), (RunState::Booting, 2, 1));
        assert_eq!(
            serde_json::from_str::<Reply>(OK).unwrap(),
            Reply::Ok { ok: true }
        );
        for bad in [r#"{"op":"reboot"}"#, "nonsense", "{}"] {
            let Action::Reply(r) = handle(bad, &state) else {
                panic!("{bad}")
            };
            let v: serde_json::Value = serde_json::from_str(&r).unwrap();
            assert!(v["error"].is_string(), "{bad} -> {r}");
        }
    }
}
