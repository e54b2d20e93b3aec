//! What every virtio transport shares (virtio 1.2 §2–3): the device status state machine, feature
//! negotiation, the programmed queues and activation. [`mmio`](super::mmio) and
//! [`pci`](super::pci) only map their registers onto a [`Core`].
//!
//! State machine: the driver resets (status 0), sets ACKNOWLEDGE and DRIVER, reads the device
//! features and writes its own (only while DRIVER is set and FEATURES_OK is not), sets
//! FEATURES_OK — kept only if its features are a subset of ours and include VERSION_1 — programs
//! the queues (only while a queue is not ready and DRIVER_OK is not set), and sets DRIVER_OK.
//! Then every ready queue is validated against guest memory; if one is bad the device sets
//! NEEDS_RESET and raises a config-change interrupt instead of starting. Writing 0 resets the
//! device at any time. Status bits never go away except through a reset.

use std::sync::{Arc, Mutex, MutexGuard};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::interrupt::VirtioInterrupt;
use super::queue::{QueueRegs, set_half};
use super::{ActivateError, VirtioDevice, features, status};

/// The driver-visible state of one device.
#[derive(Debug)]
pub struct State {
    pub status: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub queues: Vec<QueueRegs>,
    pub config_generation: u32,
    mem: Option<GuestMemoryMmap>,
}

impl State {
    /// Features may be written (DRIVER set, FEATURES_OK not yet).
    pub fn features_open(&self) -> bool {
        self.status & status::DRIVER != 0 && self.status & status::FEATURES_OK == 0
    }

    /// Queues may be programmed (DRIVER_OK not yet set).
    pub fn queues_open(&self) -> bool {
        self.status & status::DRIVER_OK == 0
    }

    /// The selected queue, if it exists.
    pub fn selected_queue(&mut self) -> Option<&mut QueueRegs> {
        let sel = self.queue_sel as usize;
        self.queues.get_mut(sel)
    }

    /// Writes half `sel` (0 low, 1 high) of the driver features; ignored when closed.
    pub fn write_driver_features(&mut self, value: u32) {
        if !self.features_open() {
            return;
        }
        match self.driver_features_sel {
            0 => set_half(&mut self.driver_features, false, value),
            1 => set_half(&mut self.driver_features, true, value),
            _ => {}
        }
    }
}

/// A device, its interrupt and its queue-notify EventFd, behind the shared state machine.
pub struct Core {
    pub device: Arc<dyn VirtioDevice>,
    pub interrupt: Arc<VirtioInterrupt>,
    pub notify: EventFd,
    state: Mutex<State>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("device_type", &self.device.device_type())
            .field("state", &*self.lock())
            .finish()
    }
}

impl Core {
    pub fn new(
        device: Arc<dyn VirtioDevice>,
        interrupt: Arc<VirtioInterrupt>,
        notify: EventFd,
    ) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|m| QueueRegs::new(*m))
            .collect();
        Core {
            device,
            interrupt,
            notify,
            state: Mutex::new(State {
                status: 0,
                device_features_sel: 0,
                driver_features_sel: 0,
                driver_features: 0,
                queue_sel: 0,
                queues,
                config_generation: 0,
                mem: None,
            }),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new boot: reset the device and use `mem` from now on.
    pub fn attach(&self, mem: GuestMemoryMmap) {
        let mut s = self.lock();
        self.reset(&mut s);
        s.mem = Some(mem);
    }

    /// The device features half selected by `device_features_sel`.
    pub fn device_features(&self, s: &State) -> u32 {
        match s.device_features_sel {
            0 => self.device.features() as u32,
            1 => (self.device.features() >> 32) as u32,
            _ => 0,
        }
    }

    /// The status the driver reads (NEEDS_RESET added when the device broke).
    pub fn status(&self, s: &State) -> u32 {
        if self.device.needs_reset() {
            s.status | status::NEEDS_RESET
        } else {
            s.status
        }
    }

    /// Resets the device, its interrupt and every register.
    pub fn reset(&self, s: &mut State) {
        self.device.reset();
        self.interrupt.reset();
        s.status = 0;
        s.device_features_sel = 0;
        s.driver_features_sel = 0;
        s.driver_features = 0;
        s.queue_sel = 0;
        for q in &mut s.queues {
            *q = QueueRegs::new(q.max_size);
        }
    }

    /// A write of the device status register.
    pub fn set_status(&self, s: &mut State, value: u32) {
        if value == 0 {
            self.reset(s);
            return;
        }
        let old = s.status;
        if value & old != old {
            tracing::debug!("virtio: status {old:#x} -> {value:#x} clears bits; ignored");
            return;
        }
        let added = value & !old;
        let mut new = value;
        if added & status::FEATURES_OK != 0 {
            let offered = self.device.features();
            let ok =
                s.driver_features & !offered == 0 && s.driver_features & features::VERSION_1 != 0;
            if !ok {
                tracing::debug!(
                    "virtio: driver features {:#x} refused (offered {offered:#x})",
                    s.driver_features
                );
                new &= !status::FEATURES_OK;
            }
        }
        if added & status::DRIVER_OK != 0 {
            if new & status::FEATURES_OK == 0 || new & status::NEEDS_RESET != 0 {
                new &= !status::DRIVER_OK;
            } else if let Err(e) = self.activate(s) {
                tracing::warn!("virtio: device not started: {e}");
                new |= status::NEEDS_RESET;
                s.status = new;
                self.interrupt.signal_config();
                return;
            }
        }
        s.status = new;
    }

    fn activate(&self, s: &State) -> Result<(), ActivateError> {
        let Some(mem) = s.mem.clone() else {
            return Err(ActivateError::NoMemory);
        };
        let event_idx = s.driver_features & features::RING_EVENT_IDX != 0;
        let mut queues = Vec::with_capacity(s.queues.len());
        for (i, regs) in s.queues.iter().enumerate() {
            // A queue the driver left unready stays unready: the device ignores it.
            let q = if regs.ready {
                regs.build(&mem, event_idx)
            } else {
                regs.idle()
            };
            queues.push(q.map_err(|e| ActivateError::Queue(i as u16, e))?);
        }
        self.device.activate(mem, queues, s.driver_features)?;
        // Pick up anything the driver queued before DRIVER_OK.
        let _ = self.notify.write(1);
        Ok(())
    }

    /// A queue notification that reached the register (no ioeventfd caught it).
    pub fn kick(&self) {
        let _ = self.notify.write(1);
    }
}
