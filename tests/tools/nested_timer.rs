//! `nested-timer`: runs a command and prints, in milliseconds since it was spawned, when each
//! marker first appears in its standard output and when it exits. Runs inside the nested
//! tier's L1 (the boot benchmark and the shutdown scenario time real guests with it).
//!
//! ```text
//! nested-timer [--log FILE] [--timeout SECS] [--then wait|kill] --mark NAME=TEXT ... -- CMD ARGS...
//! TIMER NAME 1234.567        (once per marker, when TEXT is first seen)
//! TIMER exit 2345.678 code=0 (or signal=9; or "TIMER timeout" and exit status 1)
//! ```
//! With `--then kill` the command is killed (SIGKILL) once every marker was seen; with
//! `--then wait` (the default) the timer waits for it to exit.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Args {
    log: Option<String>,
    timeout: Duration,
    kill: bool,
    marks: Vec<(String, String)>,
    cmd: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        log: None,
        timeout: Duration::from_secs(120),
        kill: false,
        marks: Vec::new(),
        cmd: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--log" => a.log = Some(it.next().ok_or("--log FILE")?),
            "--timeout" => {
                let s: u64 = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--timeout SECS")?;
                a.timeout = Duration::from_secs(s);
            }
            "--then" => match it.next().as_deref() {
                Some("kill") => a.kill = true,
                Some("wait") => a.kill = false,
                _ => return Err("--then wait|kill".into()),
            },
            "--mark" => {
                let m = it.next().ok_or("--mark NAME=TEXT")?;
                let (n, t) = m.split_once('=').ok_or("--mark NAME=TEXT")?;
                a.marks.push((n.to_string(), t.to_string()));
            }
            "--" => {
                a.cmd = it.by_ref().collect();
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.cmd.is_empty() {
        return Err("no command after --".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("nested-timer: {e}");
            return ExitCode::from(2);
        }
    };
    let mut log = a
        .log
        .as_ref()
        .map(|p| std::fs::File::create(p).unwrap_or_else(|e| panic!("nested-timer: {p}: {e}")));
    let t0 = Instant::now();
    let mut child = match Command::new(&a.cmd[0])
        .args(&a.cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nested-timer: {}: {e}", a.cmd[0]);
            return ExitCode::from(2);
        }
    };
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let ms = |t: Instant| t.duration_since(t0).as_secs_f64() * 1000.0;
    let mut seen = vec![false; a.marks.len()];
    // Only the tail that could still hold the start of a marker is kept between chunks.
    let keep = a.marks.iter().map(|(_, t)| t.len()).max().unwrap_or(1);
    let mut window: Vec<u8> = Vec::new();
    let mut eof = false;
    while !eof {
        let left = a.timeout.saturating_sub(t0.elapsed());
        if left.is_zero() {
            let _ = child.kill();
            let _ = child.wait();
            println!("TIMER timeout");
            return ExitCode::from(1);
        }
        match rx.recv_timeout(left) {
            Ok(chunk) => {
                let now = Instant::now();
                if let Some(f) = log.as_mut() {
                    let _ = f.write_all(&chunk);
                }
                window.extend_from_slice(&chunk);
                let text = String::from_utf8_lossy(&window).into_owned();
                for (i, (name, t)) in a.marks.iter().enumerate() {
                    if !seen[i] && text.contains(t.as_str()) {
                        seen[i] = true;
                        println!("TIMER {name} {:.3}", ms(now));
                    }
                }
                let cut = window.len().saturating_sub(keep);
                window.drain(..cut);
                if a.kill && seen.iter().all(|s| *s) {
                    let _ = child.kill();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => eof = true,
        }
    }
    let st = child.wait().expect("wait");
    let end = ms(Instant::now());
    match (st.code(), st.signal()) {
        (Some(c), _) => println!("TIMER exit {end:.3} code={c}"),
        (None, Some(s)) => println!("TIMER exit {end:.3} signal={s}"),
        _ => println!("TIMER exit {end:.3}"),
    }
    for (i, (name, _)) in a.marks.iter().enumerate() {
        if !seen[i] {
            println!("TIMER missing {name}");
        }
    }
    ExitCode::SUCCESS
}
