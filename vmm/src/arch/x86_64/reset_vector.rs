//! The code at the real-mode reset vector `F000:FFF0`. A PC's BIOS restarts the machine from
//! there; corral has no BIOS, so the vector holds a few bytes that pulse the i8042 reset line,
//! which reboots the VM. Linux needs it: on a hardware-reduced ACPI machine it prefers an EFI
//! reboot, and without EFI it falls back to jumping to this vector (`machine_real_restart`).

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{I8042_COMMAND_PORT, I8042_RESET_COMMAND, RESET_VECTOR_ADDR};

/// `mov al, 0xfe; out 0x64, al; cli; hlt; jmp $-4` (16-bit).
pub const STUB: [u8; 8] = [
    0xb0,
    I8042_RESET_COMMAND,
    0xe6,
    I8042_COMMAND_PORT as u8,
    0xfa,
    0xf4,
    0xeb,
    0xfc,
];

/// Writes [`STUB`] at the reset vector.
pub fn write(mem: &GuestMemoryMmap) -> Result<(), vm_memory::GuestMemoryError> {
    mem.write_slice(&STUB, GuestAddress(RESET_VECTOR_ADDR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stub_resets_through_the_i8042_and_halts_after() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write(&mem).unwrap();
        let mut got = [0u8; 8];
        mem.read_slice(&mut got, GuestAddress(0xf_fff0)).unwrap();
        // mov al, imm8 (B0 ib); out imm8, al (E6 ib) to the i8042 command port.
        assert_eq!(got[..4], [0xb0, 0xfe, 0xe6, 0x64]);
        // cli; hlt; jmp rel8 back to the cli (target = next instruction + rel8).
        assert_eq!(got[4..6], [0xfa, 0xf4]);
        assert_eq!(got[6], 0xeb);
        let next = 0xfff8i32;
        assert_eq!(next + i32::from(got[7] as i8), 0xfff4);
        // It fits below 1 MiB.
        assert!(RESET_VECTOR_ADDR + STUB.len() as u64 <= 0x10_0000);
    }
}
