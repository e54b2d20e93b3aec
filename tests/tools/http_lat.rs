//! `http-lat ADDR PATH N`: N sequential HTTP/1.1 GETs to ADDR (ip:port), each on a new
//! connection (`Connection: close`), timed from connect to the end of the response. Prints one
//! JSON line: `{"n", "failed", "p50_us", "p90_us", "p99_us", "rps"}` (bench/services). Bounded:
//! N ≤ 100000, 10 s per request.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn one(addr: SocketAddr, path: &str) -> Result<Duration, String> {
    let t0 = Instant::now();
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    if !out.starts_with(b"HTTP/1.") || out.get(9) != Some(&b'2') {
        return Err(format!(
            "bad answer: {:?}",
            String::from_utf8_lossy(&out[..out.len().min(40)])
        ));
    }
    Ok(t0.elapsed())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(path), Some(n)) = (
        args.first().and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(1),
        args.get(2)
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=100_000).contains(n)),
    ) else {
        eprintln!("usage: http-lat IP:PORT PATH N   (N in 1..=100000)");
        return ExitCode::from(2);
    };
    let mut times = Vec::with_capacity(n);
    let mut failed = 0;
    let t0 = Instant::now();
    for _ in 0..n {
        match one(addr, path) {
            Ok(d) => times.push(d.as_micros() as u64),
            Err(e) => {
                failed += 1;
                if failed == 1 {
                    eprintln!("http-lat: {addr}{path}: {e}");
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    times.sort_unstable();
    let pct = |p: f64| {
        times
            .get(((times.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{{\"n\": {n}, \"failed\": {failed}, \"p50_us\": {}, \"p90_us\": {}, \"p99_us\": {}, \"rps\": {:.1}}}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        times.len() as f64 / secs
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
