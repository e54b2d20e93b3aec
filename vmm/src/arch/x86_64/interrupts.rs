//! Local APIC setup: LINT0 delivers the legacy PIC (ExtINT), LINT1 delivers NMIs.

use kvm_bindings::kvm_lapic_state;
use kvm_ioctls::VcpuFd;
use thiserror::Error;

/// Errors of the LAPIC setup.
#[derive(Debug, Error)]
pub enum InterruptsError {
    #[error("KVM_GET_LAPIC")]
    GetLapic(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_LAPIC")]
    SetLapic(#[source] kvm_ioctls::Error),
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn get_reg(state: &kvm_lapic_state, offset: usize) -> u32 {
    let bytes: [u8; 4] = std::array::from_fn(|i| state.regs[offset + i] as u8);
    u32::from_le_bytes(bytes)
}

fn set_reg(state: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, b) in value.to_le_bytes().into_iter().enumerate() {
        state.regs[offset + i] = b as _;
    }
}

/// Replaces the delivery-mode bits (10:8) of an LVT entry.
fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Programs LINT0 as ExtINT and LINT1 as NMI.
pub fn setup_lint(vcpu: &VcpuFd) -> Result<(), InterruptsError> {
    let mut state = vcpu.get_lapic().map_err(InterruptsError::GetLapic)?;
    let lvt0 = get_reg(&state, APIC_LVT0);
    set_reg(
        &mut state,
        APIC_LVT0,
        with_delivery_mode(lvt0, APIC_MODE_EXTINT),
    );
    let lvt1 = get_reg(&state, APIC_LVT1);
    set_reg(
        &mut state,
        APIC_LVT1,
        with_delivery_mode(lvt1, APIC_MODE_NMI),
    );
    vcpu.set_lapic(&state).map_err(InterruptsError::SetLapic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvt_round_trip() {
        let mut s = kvm_lapic_state::default();
        set_reg(&mut s, APIC_LVT0, 0x0001_0000);
        let v = with_delivery_mode(get_reg(&s, APIC_LVT0), APIC_MODE_EXTINT);
        set_reg(&mut s, APIC_LVT0, v);
        assert_eq!(get_reg(&s, APIC_LVT0), 0x0001_0700);
        assert_eq!(with_delivery_mode(0x700, APIC_MODE_NMI), 0x400);
    }
}
