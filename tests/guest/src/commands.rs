//! Behaviour: chosen on the kernel command line, then console commands.
//!
//! Command-line tokens (others, like `console=ttyS0`, are ignored):
//! * `burn=MS` — after READY, spin for MS ms of guest time, print `testguest: burn done ms=MS`;
//! * `mode=idle` (default) — interactive: wait for console lines with `sti; hlt`;
//! * `mode=poweroff` — ACPI S5; `mode=reboot` — i8042 reset; `mode=reboot-acpi` — FADT reset
//!   register; `mode=echo` — print every input line as `testguest: echo LINE`;
//!   `mode=crash` — triple fault; `mode=internal-error` — make KVM fail to emulate.
//!
//! Console commands (interactive mode, one per line): `burn` (or any line containing
//! `dd if=/dev/zero`) spins until the next line; `stop` / `killall ...` stop a burn;
//! `echo TEXT` prints TEXT; `poweroff`; `reboot`; `reboot acpi`.

use crate::acpi::AcpiInfo;
use crate::io::{cli, pause, sti, sti_hlt};
use crate::power::{self, ResetVia};
use crate::{println, serial, time};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Idle,
    PowerOff,
    Reboot(ResetVia),
    Echo,
    Crash,
    InternalError,
}

pub struct Plan {
    pub mode: Mode,
    pub burn_ms: Option<u64>,
}

pub fn parse_cmdline(cmdline: &str) -> Plan {
    let mut plan = Plan { mode: Mode::Idle, burn_ms: None };
    for token in cmdline.split_ascii_whitespace() {
        match token.split_once('=') {
            Some(("burn", ms)) => plan.burn_ms = ms.parse().ok(),
            Some(("mode", mode)) => {
                plan.mode = match mode {
                    "poweroff" => Mode::PowerOff,
                    "reboot" => Mode::Reboot(ResetVia::I8042),
                    "reboot-acpi" => Mode::Reboot(ResetVia::Acpi),
                    "echo" => Mode::Echo,
                    "crash" => Mode::Crash,
                    "internal-error" => Mode::InternalError,
                    _ => Mode::Idle,
                }
            }
            _ => {}
        }
    }
    plan
}

fn burn_for(ms: u64) {
    let end = time::ticks() + time::ms_to_ticks(ms);
    while time::ticks() < end {
        pause();
    }
}

/// Waits (halted, interrupts on) for the next console line.
fn wait_line(buf: &mut [u8]) -> &str {
    loop {
        cli();
        if let Some(len) = serial::take_line(buf) {
            sti();
            return core::str::from_utf8(&buf[..len]).unwrap_or("").trim();
        }
        sti_hlt();
    }
}

/// Runs the plan; never returns.
pub fn run(plan: Plan, acpi: Option<&AcpiInfo>) -> ! {
    if let Some(ms) = plan.burn_ms {
        burn_for(ms);
        println!("testguest: burn done ms={ms}");
    }
    match plan.mode {
        Mode::PowerOff => power::power_off(acpi),
        Mode::Reboot(via) => power::reboot(via, acpi),
        Mode::Crash => {
            println!("testguest: crash");
            power::triple_fault()
        }
        Mode::InternalError => {
            println!("testguest: internal-error");
            power::emulation_failure()
        }
        Mode::Echo => loop {
            let mut buf = [0u8; 256];
            let line = wait_line(&mut buf);
            println!("testguest: echo {line}");
            if line == "poweroff" {
                power::power_off(acpi);
            }
        },
        Mode::Idle => interactive(acpi),
    }
}

fn interactive(acpi: Option<&AcpiInfo>) -> ! {
    let mut buf = [0u8; 256];
    let mut pending: Option<([u8; 256], usize)> = None;
    loop {
        let line_buf;
        let line: &str = match pending.take() {
            Some((b, n)) => {
                line_buf = b;
                core::str::from_utf8(&line_buf[..n]).unwrap_or("")
            }
            None => wait_line(&mut buf),
        };
        if line.is_empty() {
            continue;
        }
        if line == "burn" || line.contains("dd if=/dev/zero") {
            println!("testguest: burn started");
            let start = time::ticks();
            while !serial::line_ready() {
                time::ticks(); // keep the PIT clock wrapped-around correctly
                pause();
            }
            let ms = time::ticks_to_ms(time::ticks() - start);
            let next = wait_line(&mut buf);
            println!("testguest: burn stopped ms={ms}");
            if !next.is_empty() && next != "stop" && !next.starts_with("killall") {
                let mut copy = [0u8; 256];
                copy[..next.len()].copy_from_slice(next.as_bytes());
                pending = Some((copy, next.len()));
            }
            continue;
        }
        match line.split_once(' ').unwrap_or((line, "")) {
            ("poweroff", _) => power::power_off(acpi),
            ("reboot", "acpi") => power::reboot(ResetVia::Acpi, acpi),
            ("reboot", _) => power::reboot(ResetVia::I8042, acpi),
            ("echo", text) => println!("{text}"),
            ("stop", _) => println!("testguest: idle"),
            ("killall", _) => println!("testguest: idle"),
            _ => println!("testguest: unknown command \"{line}\""),
        }
    }
}
