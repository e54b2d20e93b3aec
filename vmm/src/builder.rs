//! Builds one boot of the VM. [`build`] reads top to bottom as the boot sequence; each step has
//! its own error variant.

use std::fs::File;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY, kvm_pit_config};
use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VcpuFd, VmFd};
use thiserror::Error;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::acpi::{self, AcpiError, AcpiTables, DsdtDevice};
use crate::arch::x86_64::boot::{self, BootError, BootInfo, Initrd, KernelEntry};
use crate::arch::x86_64::layout::{
    KVM_TSS_ADDR, PCI_MMCONFIG_SIZE, PCI_MMCONFIG_START, POWER_BUTTON_GSI, SERIAL_IRQ,
    VIRTIO_MMIO_SIZE, VIRTIO_PCI_BAR_SIZE, e820_ram, low_ram_end, virtio_mmio_slot,
    virtio_pci_slot,
};
use crate::arch::x86_64::regs::{self, EntryMode, RegsError};
use crate::arch::x86_64::{paging, reset_vector};
use crate::config::VmConfig;
use crate::devices::acpi_pm::AcpiPm;
use crate::devices::pci::PciBus;
use crate::devices::pci::msi::{MsiError, MsiRoutes};
use crate::devices::power_button::PowerButton;
use crate::devices::serial::Serial;
use crate::devices::virtio::{Transport, TransportKind, mmio, pci};
use crate::devices::{MmioBus, MmioOverlap, PioBus, i8042};
use crate::lifecycle::{EventSender, VmState};
use crate::memory::{self, MemoryError};
use crate::vcpu::{self, VcpuContext, VcpuError, VcpuThread};

/// A failed boot step.
#[derive(Debug, Error)]
pub enum BuildError {
    #[error("KVM_CREATE_VM")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_TSS_ADDR")]
    TssAddress(#[source] kvm_ioctls::Error),
    #[error("guest memory")]
    Memory(#[source] MemoryError),
    #[error("KVM_CREATE_IRQCHIP")]
    Irqchip(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_PIT2")]
    Pit(#[source] kvm_ioctls::Error),
    #[error("loading the kernel")]
    Kernel(#[source] BootError),
    #[error("loading the initrd")]
    Initrd(#[source] BootError),
    #[error("ACPI tables")]
    Acpi(#[source] AcpiError),
    #[error("boot information")]
    BootInfo(#[source] BootError),
    #[error("boot page tables")]
    PageTables(#[source] vm_memory::GuestMemoryError),
    #[error("boot descriptor tables")]
    DescriptorTables(#[source] RegsError),
    #[error("writing the reset vector")]
    ResetVector(#[source] vm_memory::GuestMemoryError),
    #[error("KVM_IRQFD for the serial port")]
    SerialIrq(#[source] kvm_ioctls::Error),
    #[error("KVM_IRQFD for the power button")]
    PowerButtonIrq(#[source] kvm_ioctls::Error),
    #[error("KVM_IRQFD for virtio device {0}")]
    VirtioIrq(usize, #[source] kvm_ioctls::Error),
    #[error("KVM_IOEVENTFD for virtio device {0}")]
    VirtioNotify(usize, #[source] kvm_ioctls::Error),
    #[error("placing virtio device {0}")]
    VirtioWindow(usize, #[source] MmioOverlap),
    #[error("virtio device {0}: PCI device number {1} is taken")]
    PciSlot(usize, u8),
    #[error("virtio device {0}: MSI-X routes")]
    Msi(usize, #[source] MsiError),
    #[error("placing the PCI configuration space (ECAM)")]
    Ecam(#[source] MmioOverlap),
    #[error("KVM_GET_SUPPORTED_CPUID")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    #[error("vCPU setup")]
    Vcpu(#[source] VcpuError),
    #[error("boot CPU registers")]
    BootCpu(#[source] RegsError),
}

/// One boot of the VM, ready to run.
pub struct Vm {
    // Field order matters for drop: vCPU fds and the VM fd close before the memory is unmapped.
    vcpus: Vec<VcpuFd>,
    msi_routes: Option<Arc<MsiRoutes>>,
    vm_fd: Arc<VmFd>,
    mem: GuestMemoryMmap,
    pio: Arc<PioBus>,
    mmio: Arc<MmioBus>,
}

/// A booted VM whose vCPU threads are running.
pub struct RunningVm {
    threads: Vec<VcpuThread>,
    stop: Arc<AtomicBool>,
    _msi_routes: Option<Arc<MsiRoutes>>,
    _vm_fd: Arc<VmFd>,
    _mem: GuestMemoryMmap,
}

/// Devices that outlive a boot: their host-side state (console, input queue, EventFds) stays,
/// and each boot attaches them to its new VM.
#[derive(Debug, Clone)]
pub struct HostDevices {
    pub serial: Arc<Serial>,
    pub power_button: Arc<PowerButton>,
    /// virtio devices, all on one transport; device `i` sits in window/GSI
    /// `layout::virtio_mmio_slot(i)` (mmio) or at 00:(i+1).0 with BAR0 from
    /// `layout::virtio_pci_slot(i)` (pci).
    pub virtio: Vec<Transport>,
}

/// The kernel and initrd, opened once for every boot (a jailed VMM cannot open them again).
#[derive(Debug)]
pub struct BootFiles {
    pub kernel: File,
    pub initrd: Option<File>,
}

impl BootFiles {
    /// Opens the kernel and initrd of `config`.
    pub fn open(config: &VmConfig) -> Result<BootFiles, BuildError> {
        let open = |path: &std::path::Path, err: fn(BootError) -> BuildError| {
            File::open(path).map_err(|source| {
                err(BootError::Open {
                    path: path.display().to_string(),
                    source,
                })
            })
        };
        Ok(BootFiles {
            kernel: open(&config.kernel, BuildError::Kernel)?,
            initrd: config
                .initrd
                .as_deref()
                .map(|p| open(p, BuildError::Initrd))
                .transpose()?,
        })
    }
}

/// Builds the VM for `config` (one boot), attaching the long-lived `devices`.
pub fn build(
    kvm: &Kvm,
    config: &VmConfig,
    files: &BootFiles,
    devices: &HostDevices,
    events: EventSender,
) -> Result<Vm, BuildError> {
    let serial = &devices.serial;
    let vm_fd = Arc::new(create_vm(kvm)?);
    let mem = setup_memory(&vm_fd, config)?;
    setup_irqchip(&vm_fd)?;
    let kernel = load_kernel(&mem, config, &files.kernel)?;
    let initrd = load_initrd(&mem, config, files.initrd.as_ref(), kernel.end)?;
    let acpi = setup_acpi(&mem, config, &devices.virtio)?;
    let entry = setup_boot_info(&mem, config, kernel, initrd, acpi.rsdp_addr())?;
    attach_serial(&vm_fd, serial)?;
    attach_power_button(&vm_fd, &devices.power_button)?;
    let (mmio, pci) = attach_virtio_devices(&vm_fd, &mem, &devices.virtio)?;
    let mmio = Arc::new(mmio);
    let pio = attach_port_devices(serial, events, pci.as_ref().map(|p| p.bus.clone()));
    let msi_routes = pci.map(|p| p.routes);
    let vcpus = setup_vcpus(kvm, &vm_fd, config, entry)?;
    Ok(Vm {
        vcpus,
        msi_routes,
        vm_fd,
        mem,
        pio,
        mmio,
    })
}

fn create_vm(kvm: &Kvm) -> Result<VmFd, BuildError> {
    let vm_fd = kvm.create_vm().map_err(BuildError::CreateVm)?;
    vm_fd
        .set_tss_address(KVM_TSS_ADDR)
        .map_err(BuildError::TssAddress)?;
    Ok(vm_fd)
}

fn setup_memory(vm_fd: &VmFd, config: &VmConfig) -> Result<GuestMemoryMmap, BuildError> {
    let mem = memory::create(config.memory_bytes).map_err(BuildError::Memory)?;
    memory::register(vm_fd, &mem).map_err(BuildError::Memory)?;
    Ok(mem)
}

fn setup_irqchip(vm_fd: &VmFd) -> Result<(), BuildError> {
    vm_fd.create_irq_chip().map_err(BuildError::Irqchip)?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm_fd.create_pit2(pit).map_err(BuildError::Pit)
}

fn load_kernel(
    mem: &GuestMemoryMmap,
    config: &VmConfig,
    file: &File,
) -> Result<boot::LoadedKernel, BuildError> {
    let name = config.kernel.display().to_string();
    boot::load_kernel_file(mem, file, &name, config.boot_protocol).map_err(BuildError::Kernel)
}

fn load_initrd(
    mem: &GuestMemoryMmap,
    config: &VmConfig,
    file: Option<&File>,
    kernel_end: u64,
) -> Result<Option<Initrd>, BuildError> {
    let (Some(path), Some(file)) = (&config.initrd, file) else {
        return Ok(None);
    };
    let name = path.display().to_string();
    // The initrd goes at the top of low RAM, above everything the kernel loader wrote.
    boot::load_initrd_file(
        mem,
        file,
        &name,
        low_ram_end(config.memory_bytes),
        kernel_end,
    )
    .map(Some)
    .map_err(BuildError::Initrd)
}

fn setup_acpi(
    mem: &GuestMemoryMmap,
    config: &VmConfig,
    virtio: &[Transport],
) -> Result<AcpiTables, BuildError> {
    let platform = match config.transport {
        TransportKind::Mmio => acpi::Platform {
            devices: virtio_dsdt_devices(virtio.len()),
            pci: false,
        },
        TransportKind::Pci => acpi::Platform {
            devices: acpi::pci_devices(),
            pci: true,
        },
    };
    let tables = AcpiTables::build(config.vcpus, &platform).map_err(BuildError::Acpi)?;
    tables.write(mem).map_err(BuildError::Acpi)?;
    Ok(tables)
}

/// One `LNRO0005` DSDT device per virtio-mmio window, as the Debian kernels' virtio_mmio driver
/// discovers them.
pub fn virtio_dsdt_devices(count: usize) -> Vec<DsdtDevice> {
    (0..count)
        .map(|i| {
            let (base, gsi) = virtio_mmio_slot(i);
            acpi::virtio_mmio_device(i as u8, base as u32, VIRTIO_MMIO_SIZE as u32, gsi)
        })
        .collect()
}

fn setup_boot_info(
    mem: &GuestMemoryMmap,
    config: &VmConfig,
    kernel: boot::LoadedKernel,
    initrd: Option<Initrd>,
    rsdp_addr: u64,
) -> Result<EntryMode, BuildError> {
    let e820 = e820_ram(config.memory_bytes);
    let cmdline = config.kernel_cmdline();
    let info = BootInfo {
        cmdline: &cmdline,
        initrd,
        e820: &e820,
        rsdp_addr,
    };
    boot::write_cmdline(mem, &cmdline).map_err(BuildError::BootInfo)?;
    regs::write_descriptor_tables(mem).map_err(BuildError::DescriptorTables)?;
    reset_vector::write(mem).map_err(BuildError::ResetVector)?;
    match kernel.entry {
        KernelEntry::Linux64 { entry, header } => {
            let zero_page =
                boot::write_zero_page(mem, header, &info).map_err(BuildError::BootInfo)?;
            let cr3 = paging::write_identity_tables(mem).map_err(BuildError::PageTables)?;
            Ok(EntryMode::Long64 {
                entry,
                zero_page,
                cr3,
            })
        }
        KernelEntry::Pvh { entry } => {
            let start_info =
                boot::write_pvh_start_info(mem, &info).map_err(BuildError::BootInfo)?;
            Ok(EntryMode::Pvh32 { entry, start_info })
        }
    }
}

fn attach_serial(vm_fd: &VmFd, serial: &Serial) -> Result<(), BuildError> {
    vm_fd
        .register_irqfd(serial.irq_fd(), SERIAL_IRQ)
        .map_err(BuildError::SerialIrq)
}

fn attach_power_button(vm_fd: &VmFd, button: &PowerButton) -> Result<(), BuildError> {
    vm_fd
        .register_irqfd(button.irq_fd(), POWER_BUTTON_GSI)
        .map_err(BuildError::PowerButtonIrq)
}

/// Puts each virtio device on a new MMIO bus and wires it to this VM, resetting it with this
/// boot's memory. mmio: its window, an irqfd (edge on its GSI) and the queue-notify ioeventfd.
/// pci: a PCI bus (ECAM on the MMIO bus, type-1 ports returned for the port bus) with the device
/// at 00:(i+1).0, BAR0 on the MMIO bus, one irqfd per MSI-X vector on GSIs routed by a new
/// routing table, and the notify ioeventfd in BAR0.
fn attach_virtio_devices(
    vm_fd: &Arc<VmFd>,
    mem: &GuestMemoryMmap,
    virtio: &[Transport],
) -> Result<(MmioBus, Option<PciParts>), BuildError> {
    let mut bus = MmioBus::default();
    let mut pci: Option<(PciBus, Arc<MsiRoutes>)> = None;
    for (i, transport) in virtio.iter().enumerate() {
        match transport {
            Transport::Mmio(t) => {
                let (base, gsi) = virtio_mmio_slot(i);
                t.attach(mem.clone());
                vm_fd
                    .register_irqfd(t.irq_fd(), gsi)
                    .map_err(|e| BuildError::VirtioIrq(i, e))?;
                register_notify(vm_fd, i, t.notify_fd(), base + mmio::NOTIFY_OFFSET)?;
                bus.insert(base, VIRTIO_MMIO_SIZE, t.clone())
                    .map_err(|e| BuildError::VirtioWindow(i, e))?;
            }
            Transport::Pci(t) => {
                let (pci_bus, routes) = pci.get_or_insert_with(|| {
                    (PciBus::new(), Arc::new(MsiRoutes::new(vm_fd.clone())))
                });
                let (device, bar0) = virtio_pci_slot(i);
                let vectors = t.msix().len() as u32;
                let first_gsi = routes
                    .allocate(vectors)
                    .map_err(|e| BuildError::Msi(i, e))?;
                for v in 0..vectors {
                    let fd = t
                        .msix()
                        .irq_fd(v as usize)
                        .expect("vector within the table");
                    vm_fd
                        .register_irqfd(fd, first_gsi + v)
                        .map_err(|e| BuildError::VirtioIrq(i, e))?;
                }
                t.attach(mem.clone(), bar0 as u32, Some((routes.clone(), first_gsi)));
                register_notify(vm_fd, i, t.notify_fd(), bar0 + pci::NOTIFY_OFFSET)?;
                bus.insert(bar0, VIRTIO_PCI_BAR_SIZE, t.clone())
                    .map_err(|e| BuildError::VirtioWindow(i, e))?;
                if !pci_bus.insert(device, t.clone()) {
                    return Err(BuildError::PciSlot(i, device));
                }
            }
        }
    }
    let pci = match pci {
        Some((pci_bus, routes)) => {
            let pci_bus = Arc::new(pci_bus);
            bus.insert(PCI_MMCONFIG_START, PCI_MMCONFIG_SIZE, pci_bus.clone())
                .map_err(BuildError::Ecam)?;
            Some(PciParts {
                bus: pci_bus,
                routes,
            })
        }
        None => None,
    };
    Ok((bus, pci))
}

/// The PCI bus of one boot and its routing table (owned by the boot: the devices only hold the
/// table weakly, so the boot's VM fd closes when the boot ends).
struct PciParts {
    bus: Arc<PciBus>,
    routes: Arc<MsiRoutes>,
}

fn register_notify(vm_fd: &VmFd, i: usize, fd: &EventFd, addr: u64) -> Result<(), BuildError> {
    vm_fd
        .register_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
        .map_err(|e| BuildError::VirtioNotify(i, e))
}

fn attach_port_devices(
    serial: &Arc<Serial>,
    events: EventSender,
    pci: Option<Arc<PciBus>>,
) -> Arc<PioBus> {
    Arc::new(PioBus {
        serial: serial.clone(),
        i8042: Mutex::new(i8042::new(events.clone())),
        acpi_pm: AcpiPm::new(events),
        pci,
    })
}

/// Creates every vCPU; only the boot CPU gets entry registers. The others stay in KVM's
/// wait-for-SIPI state until the guest starts them with INIT/SIPI through its LAPIC.
fn setup_vcpus(
    kvm: &Kvm,
    vm_fd: &VmFd,
    config: &VmConfig,
    entry: EntryMode,
) -> Result<Vec<VcpuFd>, BuildError> {
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(BuildError::SupportedCpuid)?;
    let cpus = config.vcpus as u8;
    let mut vcpus = Vec::with_capacity(usize::from(cpus));
    for index in 0..cpus {
        let vcpu = vcpu::create(vm_fd, &supported, index, cpus).map_err(BuildError::Vcpu)?;
        if index == 0 {
            regs::setup_boot_cpu(&vcpu, entry).map_err(BuildError::BootCpu)?;
        }
        vcpus.push(vcpu);
    }
    Ok(vcpus)
}

impl Vm {
    /// Starts one thread per vCPU.
    pub fn start(self, events: EventSender, state: Arc<VmState>) -> Result<RunningVm, BuildError> {
        let stop = events.ending();
        let ctx = VcpuContext {
            pio: self.pio,
            mmio: self.mmio,
            events,
            state,
            stop: stop.clone(),
        };
        let mut threads = Vec::with_capacity(self.vcpus.len());
        for (index, vcpu) in self.vcpus.into_iter().enumerate() {
            match vcpu::spawn(index as u8, vcpu, ctx.clone()) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop.store(true, std::sync::atomic::Ordering::Release);
                    vcpu::stop_all(threads);
                    return Err(BuildError::Vcpu(e));
                }
            }
        }
        Ok(RunningVm {
            threads,
            stop,
            _msi_routes: self.msi_routes,
            _vm_fd: self.vm_fd,
            _mem: self.mem,
        })
    }
}

impl RunningVm {
    /// Stops and joins every vCPU thread; the VM is torn down when this value drops.
    pub fn stop(mut self) -> Self {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        vcpu::stop_all(std::mem::take(&mut self.threads));
        self
    }
}
