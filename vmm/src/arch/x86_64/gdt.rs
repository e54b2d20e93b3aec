//! The boot GDT: descriptor encoding and the matching `kvm_segment` values for `set_sregs`.

use kvm_bindings::kvm_segment;

/// Selector of the 64-bit code segment.
pub const CODE64_SEL: u16 = 0x08;
/// Selector of the flat data segment.
pub const DATA_SEL: u16 = 0x10;
/// Selector of the TSS.
pub const TSS_SEL: u16 = 0x18;
/// Selector of the flat 32-bit code segment (PVH entry).
pub const CODE32_SEL: u16 = 0x20;

/// Packs a segment descriptor from its flags (G/DB/L/AVL and P/DPL/S/type), base and limit.
pub const fn descriptor(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT, indexed by selector / 8.
pub const BOOT_GDT: [u64; 5] = [
    0,                              // null
    descriptor(0xa09b, 0, 0xfffff), // 0x08: code, 64-bit (L), present, exec/read, accessed
    descriptor(0xc093, 0, 0xfffff), // 0x10: data, 4 GiB, read/write, accessed
    descriptor(0x808b, 0, 0xfffff), // 0x18: TSS, busy
    descriptor(0xc09b, 0, 0xfffff), // 0x20: code, 32-bit (DB), flat
];

/// Decodes a descriptor into the `kvm_segment` KVM expects (limit expanded when G=1).
pub fn kvm_segment_from(selector: u16, entry: u64) -> kvm_segment {
    let base = ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    kvm_segment {
        base,
        limit,
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from((entry >> 47) & 1 == 0),
        padding: 0,
    }
}

/// The segment for `selector` in [`BOOT_GDT`].
pub fn boot_segment(selector: u16) -> kvm_segment {
    kvm_segment_from(selector, BOOT_GDT[usize::from(selector / 8)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_match_the_well_known_values() {
        assert_eq!(BOOT_GDT[1], 0x00af_9b00_0000_ffff);
        assert_eq!(BOOT_GDT[2], 0x00cf_9300_0000_ffff);
        assert_eq!(BOOT_GDT[3], 0x008f_8b00_0000_ffff);
        assert_eq!(BOOT_GDT[4], 0x00cf_9b00_0000_ffff);
    }

    #[test]
    fn code64_segment_is_long_mode() {
        let cs = boot_segment(CODE64_SEL);
        assert_eq!((cs.l, cs.db, cs.type_, cs.present, cs.s), (1, 0, 0xb, 1, 1));
        assert_eq!((cs.base, cs.limit, cs.g), (0, 0xffff_ffff, 1));
        let ds = boot_segment(DATA_SEL);
        assert_eq!((ds.type_, ds.db, ds.l, ds.selector), (3, 1, 0, DATA_SEL));
        let tss = boot_segment(TSS_SEL);
        assert_eq!((tss.type_, tss.g, tss.limit), (0xb, 1, 0xffff_ffff));
        assert_eq!(boot_segment(0).unusable, 1);
    }
}
