//! Behaviour: chosen on the kernel command line, then console commands.
//!
//! Command-line tokens (others, like `console=ttyS0`, are ignored):
//! * `burn=MS` — after READY, spin for MS ms of guest time, print `testguest: burn done ms=MS`;
//! * `mode=idle` (default) — interactive: wait for console lines with `sti; hlt`; with a
//!   virtio-net device it first brings the network up with DHCP (the network mode, which keeps
//!   the console), unless the command line says `net=off`;
//! * `mode=poweroff` — ACPI S5; `mode=reboot` — i8042 reset; `mode=reboot-acpi` — FADT reset
//!   register; `mode=echo` — print every input line as `testguest: echo LINE`;
//!   `mode=crash` — triple fault; `mode=internal-error` — make KVM fail to emulate;
//!   `mode=hang` — halt with interrupts off (ignores the console and the power button).
//!
//! Console commands (interactive and network modes, one per line): `burn` (or any line containing
//! `dd if=/dev/zero`) spins until the next line; `stop` / `killall ...` stop a burn;
//! `echo TEXT` prints TEXT; `poweroff`; `reboot`; `reboot acpi`; `blk ...` (virtio-blk, see
//! `blk`); `virtio irqs` (interrupts taken per device, see `virtio`);
//! `net get A.B.C.D[:PORT][/PATH]` (HTTP client, see `net::client`).
//!
//! The ACPI power button (generic event device interrupt) powers off from any waiting or burning
//! state (`testguest: power button`); `mode=echo` and `burn=MS` included.

use crate::acpi::AcpiInfo;
use crate::io::{cli, pause, sti, sti_hlt};
use crate::net::NetConfig;
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
    Hang,
    Net,
}

pub struct Plan {
    pub mode: Mode,
    pub burn_ms: Option<u64>,
    pub net: Option<NetConfig>,
    /// `net=off`: the default mode stays off the network even with a virtio-net device.
    pub net_off: bool,
}

pub fn parse_cmdline(cmdline: &str) -> Plan {
    let mut plan = Plan {
        mode: Mode::Idle,
        burn_ms: None,
        net: None,
        net_off: false,
    };
    for token in cmdline.split_ascii_whitespace() {
        match token.split_once('=') {
            Some(("burn", ms)) => plan.burn_ms = ms.parse().ok(),
            Some(("net", "off")) => {
                plan.net = None;
                plan.net_off = true;
            }
            Some(("net", value)) => {
                plan.net_off = false;
                plan.net = crate::net::parse(value);
                if plan.net.is_none() {
                    println!("testguest: net: bad net={value}");
                }
            }
            Some(("mode", mode)) => {
                plan.mode = match mode {
                    "poweroff" => Mode::PowerOff,
                    "reboot" => Mode::Reboot(ResetVia::I8042),
                    "reboot-acpi" => Mode::Reboot(ResetVia::Acpi),
                    "echo" => Mode::Echo,
                    "crash" => Mode::Crash,
                    "internal-error" => Mode::InternalError,
                    "hang" => Mode::Hang,
                    "net" => Mode::Net,
                    _ => Mode::Idle,
                }
            }
            _ => {}
        }
    }
    if plan.net.is_some() && plan.mode == Mode::Idle {
        plan.mode = Mode::Net;
    }
    plan
}

/// Spins for `ms` ms of guest time (the PIT clock); the power button still powers off.
pub fn burn_for(ms: u64, acpi: Option<&AcpiInfo>) {
    let end = time::ticks() + time::ms_to_ticks(ms);
    while time::ticks() < end {
        power::check_button(acpi);
        pause();
    }
}

/// Waits (halted, interrupts on) for the next console line; the power button powers off.
fn wait_line<'a>(buf: &'a mut [u8], acpi: Option<&AcpiInfo>) -> &'a str {
    loop {
        cli();
        power::check_button(acpi);
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
        burn_for(ms, acpi);
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
            let line = wait_line(&mut buf, acpi);
            println!("testguest: echo {line}");
            if line == "poweroff" {
                power::power_off(acpi);
            }
        },
        // Like a CirrOS VM bringing up eth0 with udhcpc: a virtio-net device means DHCP.
        Mode::Idle if !plan.net_off && crate::net::virtio_net::present() => {
            crate::net::run(NetConfig::Dhcp, acpi);
            interactive(acpi)
        }
        Mode::Idle => interactive(acpi),
        Mode::Net => {
            crate::net::run(plan.net.unwrap_or(NetConfig::Dhcp), acpi);
            interactive(acpi)
        }
        Mode::Hang => {
            println!("testguest: hang");
            crate::io::halt_forever()
        }
    }
}

fn interactive(acpi: Option<&AcpiInfo>) -> ! {
    let mut buf = [0u8; 256];
    loop {
        let line = wait_line(&mut buf, acpi);
        console_line(line, acpi);
    }
}

/// Runs one console line of the interactive mode (also the network mode's console). A `burn`
/// spins until the next line arrives, which is then run in turn unless it is empty, `stop` or
/// `killall ...`.
pub fn console_line(line: &str, acpi: Option<&AcpiInfo>) {
    let mut buf = [0u8; 256];
    let mut owned = [0u8; 256];
    let mut len = line.len().min(owned.len());
    owned[..len].copy_from_slice(&line.as_bytes()[..len]);
    loop {
        let line = core::str::from_utf8(&owned[..len]).unwrap_or("");
        if line.is_empty() {
            return;
        }
        if line != "burn" && !line.contains("dd if=/dev/zero") {
            command(line, acpi);
            return;
        }
        println!("testguest: burn started");
        let start = time::ticks();
        while !serial::line_ready() {
            time::ticks(); // keep the PIT clock wrapped-around correctly
            power::check_button(acpi);
            pause();
        }
        let ms = time::ticks_to_ms(time::ticks() - start);
        let next = wait_line(&mut buf, acpi);
        println!("testguest: burn stopped ms={ms}");
        if next.is_empty() || next == "stop" || next.starts_with("killall") {
            return;
        }
        len = next.len();
        owned[..len].copy_from_slice(next.as_bytes());
    }
}

fn command(line: &str, acpi: Option<&AcpiInfo>) {
    match line.split_once(' ').unwrap_or((line, "")) {
        ("poweroff", _) => power::power_off(acpi),
        ("reboot", "acpi") => power::reboot(ResetVia::Acpi, acpi),
        ("reboot", _) => power::reboot(ResetVia::I8042, acpi),
        ("echo", text) => println!("{text}"),
        ("blk", rest) => crate::blk::command(rest, acpi),
        ("virtio", rest) => crate::virtio::command(rest),
        ("net", rest) => crate::net::client::command(rest),
        ("stop", _) => println!("testguest: idle"),
        ("killall", _) => println!("testguest: idle"),
        _ => println!("testguest: unknown command \"{line}\""),
    }
}
