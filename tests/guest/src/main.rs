//! corral's test guest: a freestanding x86-64 kernel entered exactly like Linux.
//!
//! It reads its boot information (zero page or PVH start info) and the ACPI tables, prints a
//! report (protocol, command line, e820 map, memory, CPUs from the MADT), brings up the other
//! CPUs with INIT-SIPI-SIPI, prints `TESTGUEST READY`, then does what its command line says
//! (see `commands`). Serial input is interrupt driven (IOAPIC → LAPIC → IDT); idle waiting is
//! `sti; hlt`, so an idle guest costs the host nothing.
//!
//! Output lines (stable, for tests):
//! ```text
//! testguest: boot protocol=linux64|pvh
//! testguest: cmdline="..."
//! testguest: e820 addr=0x0 size=0x9fc00 type=1          (one per entry)
//! testguest: memory ram_bytes=N ram_top=0x...
//! testguest: initrd addr=0x... size=N head=<first 8 bytes, hex>  (when there is one)
//! testguest: acpi rsdp=0x... oem=... hw_reduced=1 s5_slp_typ=5
//! testguest: acpi power_button_gsi=N                     (when the DSDT has a GED)
//! testguest: madt cpus=N apic_ids=0,1 lapic=0x... ioapic=0x...
//! testguest: cpu apic_id=N online                        (one per AP)
//! testguest: cpus online=N
//! testguest: pci ecam=0x... segment=0 buses=0-0            (with an ACPI MCFG table)
//! testguest: pci 00:01.0 id=1af4:1042 class=0x018000 rev=1 (one per PCI function)
//! testguest: virtio devices=N                             (with virtio devices)
//! testguest: blk dev=0 base=0x... gsi=N via=dsdt|cmdline capacity=SECTORS ro=0|1 serial="..."
//! testguest: blk dev=0 base=0x... msix=2 via=pci:00:01.0 capacity=SECTORS ro=0|1 serial="..."
//! testguest: cidata dev=N instance-id=...                 (a FAT disk labelled cidata)
//! testguest: cidata dev=N user-data first-line="..."
//! TESTGUEST READY
//! testguest: net ...                                       (network mode, see `net`)
//! ```

#![no_std]
#![no_main]

mod acpi;
mod blk;
mod bootinfo;
mod cidata;
mod commands;
mod entry;
mod interrupts;
mod io;
mod mem;
mod net;
mod paging;
mod pci;
mod power;
mod serial;
mod smp;
mod time;
mod virtio;

use core::panic::PanicInfo;

use bootinfo::{BootInfo, E820_RAM};

#[unsafe(no_mangle)]
extern "C" fn rust_main(protocol: u64, info: u64) -> ! {
    serial::init();
    let boot = if protocol == entry::PROTOCOL_LINUX64 {
        bootinfo::from_zero_page(info)
    } else {
        bootinfo::from_pvh(info)
    };
    paging::install();
    time::init();
    let acpi = acpi::probe(boot.rsdp);
    let (lapic, ioapic, ged) = acpi.as_ref().map_or((0xfee0_0000, 0xfec0_0000, None), |a| {
        (a.lapic, a.ioapic, a.ged_gsi)
    });
    interrupts::init(
        lapic,
        ioapic,
        acpi.as_ref().map_or(&[], |a| a.ioapics()),
        ged,
    );
    report(&boot, acpi.as_ref());
    let online = acpi.as_ref().map_or(1, smp::start_aps);
    println!("testguest: cpus online={online}");
    serial::enable_rx_interrupt();
    io::sti();
    blk::boot(acpi.as_ref(), boot.cmdline());
    println!("TESTGUEST READY");
    commands::run(commands::parse_cmdline(boot.cmdline()), acpi.as_ref())
}

fn report(boot: &BootInfo, acpi: Option<&acpi::AcpiInfo>) {
    println!("testguest: boot protocol={}", boot.protocol);
    println!("testguest: cmdline=\"{}\"", boot.cmdline());
    let (mut ram, mut top) = (0u64, 0u64);
    for e in boot.e820() {
        println!(
            "testguest: e820 addr={:#x} size={:#x} type={}",
            e.addr, e.size, e.kind
        );
        if e.kind == E820_RAM {
            ram += e.size;
            top = top.max(e.addr + e.size);
        }
    }
    println!("testguest: memory ram_bytes={ram} ram_top={top:#x}");
    if let Some((addr, size)) = boot.initrd {
        let head = io::phys_slice(addr, size.min(8) as usize);
        serial::print(format_args!(
            "testguest: initrd addr={addr:#x} size={size} head="
        ));
        for b in head {
            serial::print(format_args!("{b:02x}"));
        }
        println!("");
    }
    let Some(a) = acpi else {
        println!("testguest: acpi none");
        return;
    };
    println!(
        "testguest: acpi rsdp={:#x} oem={} hw_reduced={} s5_slp_typ={}",
        a.rsdp,
        a.oem(),
        u8::from(a.hw_reduced),
        a.s5_slp_typ
    );
    if let Some(gsi) = a.ged_gsi {
        println!("testguest: acpi power_button_gsi={gsi}");
    }
    serial::print(format_args!("testguest: madt cpus={} apic_ids=", a.cpus));
    for (i, id) in a.apic_ids().iter().enumerate() {
        serial::print(format_args!("{}{id}", if i == 0 { "" } else { "," }));
    }
    println!(" lapic={:#x} ioapic={:#x}", a.lapic, a.ioapic);
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    println!("testguest: PANIC {}", info.message());
    power::triple_fault()
}
