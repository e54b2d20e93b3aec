//! The virtio transports of `corral vmm --transport pci|mmio`, for tests that run over both: the
//! arguments that select one and where the test guest reports each device.

/// A virtio transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// virtio-pci (modern) behind a PCIe host bridge, MSI-X interrupts: the default.
    Pci,
    /// virtio-mmio windows described by the DSDT, one GSI each.
    Mmio,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Pci, Transport::Mmio];

    pub fn name(self) -> &'static str {
        match self {
            Transport::Pci => "pci",
            Transport::Mmio => "mmio",
        }
    }

    /// `--transport NAME` for `corral vmm`.
    pub fn args(self) -> [&'static str; 2] {
        ["--transport", self.name()]
    }

    /// How the test guest locates virtio device `index` (VMM order: disks, then network
    /// devices) in its `testguest: blk dev=N ...` and `testguest: virtio dev=N ...` lines:
    /// `base=0xd0000000 gsi=5 via=dsdt` (window and GSI of a virtio-mmio device) or
    /// `base=0xc0000000 msix=2 via=pci:00:01.0` (BAR0, MSI-X entries in use: config + one per
    /// queue; `queues` = 1 for blk, 2 for net).
    pub fn location(self, index: usize, queues: usize) -> String {
        match self {
            Transport::Mmio => format!(
                "base={:#x} gsi={} via=dsdt",
                0xd000_0000 + 0x1000 * index as u64,
                5 + index
            ),
            Transport::Pci => format!(
                "base={:#x} msix={} via=pci:00:{:02x}.0",
                0xc000_0000 + 0x8000 * index as u64,
                1 + queues,
                1 + index
            ),
        }
    }
}

/// Runs each listed test function (`fn name(t: Transport)`) once per transport, as the tests
/// `pci::name` and `mmio::name`.
#[macro_export]
macro_rules! per_transport {
    ($($name:ident),+ $(,)?) => {
        mod pci {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::transport::Transport::Pci)
                }
            )+
        }
        mod mmio {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::transport::Transport::Mmio)
                }
            )+
        }
    };
}
