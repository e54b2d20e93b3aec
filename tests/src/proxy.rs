//! `corral proxy` as tests run it: spawned on a free loopback port, killed on drop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `corral proxy` and its port.
pub struct Proxy {
    child: Child,
    pub port: u16,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// `corral proxy --port 0 --socket SOCKET`: plain HTTP on loopback to the daemon's socket.
    pub fn to_socket(socket: &Path) -> Proxy {
        Proxy::spawn(
            Command::new(crate::bin::corral())
                .args(["proxy", "--port", "0", "--socket"])
                .arg(socket),
        )
    }

    /// Spawns `cmd` (a `corral proxy --port 0 ...`) and reads its port from its first line.
    pub fn spawn(cmd: &mut Command) -> Proxy {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn corral proxy");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("proxy's first line");
        // "Starting to serve on 127.0.0.1:PORT (...)"
        let port = line
            .split_whitespace()
            .nth(4)
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in the proxy's line {line:?}"));
        Proxy { child, port }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
