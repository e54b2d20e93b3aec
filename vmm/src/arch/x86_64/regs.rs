//! Initial register state of the boot CPU: segment/control registers, general registers, FPU.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use super::gdt::{BOOT_GDT, CODE32_SEL, CODE64_SEL, DATA_SEL, TSS_SEL, boot_segment};
use super::layout::{BOOT_STACK_TOP, GDT_ADDR, IDT_ADDR};

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Errors of the register setup.
#[derive(Debug, Error)]
pub enum RegsError {
    #[error("writing the boot GDT/IDT")]
    WriteTables(#[source] GuestMemoryError),
    #[error("KVM_GET_SREGS")]
    GetSregs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_SREGS")]
    SetSregs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_REGS")]
    SetRegs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_FPU")]
    SetFpu(#[source] kvm_ioctls::Error),
}

/// How the boot CPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// Linux 64-bit boot protocol: long mode, paging on, RSI = zero page.
    Long64 {
        entry: u64,
        zero_page: u64,
        cr3: u64,
    },
    /// PVH: 32-bit protected mode, paging off, EBX = `hvm_start_info`.
    Pvh32 { entry: u64, start_info: u64 },
}

/// Writes the boot GDT and an empty IDT into guest memory.
pub fn write_descriptor_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_ADDR + 8 * i as u64))
            .map_err(RegsError::WriteTables)?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(RegsError::WriteTables)
}

/// Computes the segment and control registers for `mode`, starting from KVM's reset state.
pub fn boot_sregs(mut sregs: kvm_sregs, mode: EntryMode) -> kvm_sregs {
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (BOOT_GDT.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    let data = boot_segment(DATA_SEL);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = boot_segment(TSS_SEL);
    match mode {
        EntryMode::Long64 { cr3, .. } => {
            sregs.cs = boot_segment(CODE64_SEL);
            sregs.cr3 = cr3;
            sregs.cr4 |= CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
            sregs.cr0 |= CR0_PE | CR0_PG | CR0_ET;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh32 { .. } => {
            sregs.cs = boot_segment(CODE32_SEL);
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.cr3 = 0;
            sregs.efer = 0;
        }
    }
    sregs
}

/// General registers at the entry point.
pub fn boot_regs(mode: EntryMode) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match mode {
        EntryMode::Long64 {
            entry, zero_page, ..
        } => {
            regs.rip = entry;
            regs.rsp = BOOT_STACK_TOP;
            regs.rbp = BOOT_STACK_TOP;
            regs.rsi = zero_page;
        }
        EntryMode::Pvh32 { entry, start_info } => {
            regs.rip = entry;
            regs.rbx = start_info;
        }
    }
    regs
}

/// Sets sregs, regs and the FPU of the boot CPU.
pub fn setup_boot_cpu(vcpu: &VcpuFd, mode: EntryMode) -> Result<(), RegsError> {
    let sregs = vcpu.get_sregs().map_err(RegsError::GetSregs)?;
    vcpu.set_sregs(&boot_sregs(sregs, mode))
        .map_err(RegsError::SetSregs)?;
    vcpu.set_regs(&boot_regs(mode))
        .map_err(RegsError::SetRegs)?;
    setup_fpu(vcpu)
}

/// x87 control word and MXCSR at their power-on defaults.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(RegsError::SetFpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_sregs() {
        let s = boot_sregs(
            kvm_sregs::default(),
            EntryMode::Long64 {
                entry: 0x100000,
                zero_page: 0x7000,
                cr3: 0x9000,
            },
        );
        assert_eq!(s.cr3, 0x9000);
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cs.l, 1);
        assert_eq!(s.gdt.limit, 39);
    }

    #[test]
    fn pvh_sregs_are_flat_32_bit_without_paging() {
        let s = boot_sregs(
            kvm_sregs {
                cr0: 0x6000_0010,
                ..Default::default()
            },
            EntryMode::Pvh32 {
                entry: 0x100000,
                start_info: 0x6000,
            },
        );
        assert_eq!(s.cr0 & CR0_PG, 0);
        assert_eq!(s.cr0 & CR0_PE, CR0_PE);
        assert_eq!(
            (s.cs.db, s.cs.l, s.cs.base, s.cs.limit),
            (1, 0, 0, 0xffff_ffff)
        );
        let r = boot_regs(EntryMode::Pvh32 {
            entry: 0x100000,
            start_info: 0x6000,
        });
        assert_eq!((r.rip, r.rbx), (0x100000, 0x6000));
    }
}
