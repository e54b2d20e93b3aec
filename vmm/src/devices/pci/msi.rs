//! The VM's GSI routing table (`KVM_SET_GSI_ROUTING`): KVM's default irqchip routes (PIC and
//! IOAPIC pins, which setting a table replaces, so they are re-stated) plus one MSI route per
//! MSI-X vector. Each vector's irqfd is registered on its GSI; a table write by the guest
//! changes the route, so a signal on the irqfd becomes the message the guest programmed.
//!
//! One table per boot (it belongs to that boot's VM fd), shared by every PCI function.

use std::sync::{Arc, Mutex};

use kvm_bindings::{
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KvmIrqRouting, kvm_irq_routing_entry,
};
use kvm_ioctls::VmFd;
use thiserror::Error;

use crate::arch::x86_64::layout::{FIRST_MSI_GSI, IOAPIC_PINS, MAX_MSI_GSI};

/// Errors of the routing table.
#[derive(Debug, Error)]
pub enum MsiError {
    #[error("out of GSIs for MSI-X vectors ({0} asked)")]
    OutOfGsis(u32),
    #[error("KVM_SET_GSI_ROUTING")]
    SetRouting(#[source] kvm_ioctls::Error),
    #[error("building the routing table")]
    Table,
}

/// The routing table of one VM.
pub struct MsiRoutes {
    vm: Arc<VmFd>,
    table: Mutex<Table>,
}

struct Table {
    entries: Vec<kvm_irq_routing_entry>,
    next_gsi: u32,
}

impl std::fmt::Debug for MsiRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.lock();
        f.debug_struct("MsiRoutes")
            .field("entries", &t.entries.len())
            .field("next_gsi", &t.next_gsi)
            .finish()
    }
}

fn irqchip(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    e
}

/// KVM's default table on x86: PIC pins for GSI 0–15, IOAPIC pins for GSI 0–23.
fn default_routes() -> Vec<kvm_irq_routing_entry> {
    let mut v = Vec::new();
    for gsi in 0..16 {
        let (chip, pin) = if gsi < 8 {
            (KVM_IRQCHIP_PIC_MASTER, gsi)
        } else {
            (KVM_IRQCHIP_PIC_SLAVE, gsi - 8)
        };
        v.push(irqchip(gsi, chip, pin));
    }
    for gsi in 0..IOAPIC_PINS {
        v.push(irqchip(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
    v
}

/// An MSI message: the route of one vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    pub addr_lo: u32,
    pub addr_hi: u32,
    pub data: u32,
}

impl MsiRoutes {
    /// The table of `vm`, holding KVM's defaults (nothing is written to KVM yet).
    pub fn new(vm: Arc<VmFd>) -> Self {
        MsiRoutes {
            vm,
            table: Mutex::new(Table {
                entries: default_routes(),
                next_gsi: FIRST_MSI_GSI,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The VM fd (to register irqfds on the allocated GSIs).
    pub fn vm(&self) -> &VmFd {
        &self.vm
    }

    /// Reserves `n` consecutive GSIs; returns the first.
    pub fn allocate(&self, n: u32) -> Result<u32, MsiError> {
        let mut t = self.lock();
        let first = t.next_gsi;
        let end = first.checked_add(n).filter(|e| *e <= MAX_MSI_GSI + 1);
        let Some(end) = end else {
            return Err(MsiError::OutOfGsis(n));
        };
        t.next_gsi = end;
        Ok(first)
    }

    /// Routes `gsi` to `msg` and hands the whole table to KVM.
    pub fn set(&self, gsi: u32, msg: MsiMessage) -> Result<(), MsiError> {
        let mut t = self.lock();
        let mut e = kvm_irq_routing_entry {
            gsi,
            type_: KVM_IRQ_ROUTING_MSI,
            ..Default::default()
        };
        e.u.msi.address_lo = msg.addr_lo;
        e.u.msi.address_hi = msg.addr_hi;
        e.u.msi.data = msg.data;
        match t
            .entries
            .iter_mut()
            .find(|x| x.gsi == gsi && x.type_ == KVM_IRQ_ROUTING_MSI)
        {
            Some(x) => *x = e,
            None => t.entries.push(e),
        }
        let routing = KvmIrqRouting::from_entries(&t.entries).map_err(|_| MsiError::Table)?;
        self.vm
            .set_gsi_routing(&routing)
            .map_err(MsiError::SetRouting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_restate_kvms_irqchip_routes() {
        let d = default_routes();
        assert_eq!(d.len(), 16 + 24);
        assert!(d.iter().all(|e| e.type_ == KVM_IRQ_ROUTING_IRQCHIP));
        // SAFETY: reading the irqchip member of entries built as irqchip routes.
        let last = unsafe { d[d.len() - 1].u.irqchip };
        assert_eq!((last.irqchip, last.pin), (KVM_IRQCHIP_IOAPIC, 23));
    }
}
