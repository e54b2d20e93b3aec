//! x86-64 specifics: the guest memory layout, the long-mode/PVH entry state, CPUID, MSRs,
//! LAPIC, ACPI tables and the boot information.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod gdt;
pub mod interrupts;
pub mod layout;
pub mod msr;
pub mod paging;
pub mod regs;
pub mod reset_vector;
