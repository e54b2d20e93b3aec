//! The copy-on-write overlay against a model: a sequence of writes, write-zeroes, discards and
//! reads at fuzzer-chosen offsets and lengths (sector granular, any cluster alignment) applied to
//! an `Overlay` over a base file and to a plain byte vector; every read must match the model and
//! the base file must never change.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use vm_memory::VolatileSlice;
use vmm::disk::DiskBackend;
use vmm::disk::overlay::Overlay;

const SECTORS: u64 = 64; // 32 KiB: 8 clusters
const SIZE: usize = (SECTORS * 512) as usize;

fuzz_target!(|data: &[u8]| {
    let base_bytes: Vec<u8> = (0..SIZE).map(|i| (i * 13 + i / 512) as u8).collect();
    let mut base = tempfile::tempfile().unwrap();
    base.write_all(&base_bytes).unwrap();
    let overlay_file = tempfile::tempfile().unwrap();
    overlay_file.set_len(SIZE as u64).unwrap();
    let mut ov = Overlay::from_files(base.try_clone().unwrap(), overlay_file, SIZE as u64);
    let mut model = base_bytes.clone();
    for op in data.chunks_exact(4) {
        let sector = u64::from(op[1]) % SECTORS;
        let count = (1 + u64::from(op[2]) % 24).min(SECTORS - sector);
        let (off, len) = (sector * 512, count * 512);
        let range = off as usize..(off + len) as usize;
        match op[0] % 4 {
            0 => {
                let mut buf: Vec<u8> = (0..len).map(|i| op[3] ^ i as u8).collect();
                // Split the buffer in two slices at a fuzzer-chosen point.
                let cut = (op[3] as usize * 7) % buf.len();
                let (a, b) = buf.split_at_mut(cut);
                ov.write(off, &[VolatileSlice::from(a), VolatileSlice::from(b)])
                    .unwrap();
                model[range.clone()]
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, m)| *m = op[3] ^ i as u8);
            }
            1 => {
                ov.write_zeroes(off, len).unwrap();
                model[range].fill(0);
            }
            2 => {
                ov.discard(off, len).unwrap();
                model[range].fill(0);
            }
            _ => {
                let mut buf = vec![0u8; len as usize];
                ov.read(off, &[VolatileSlice::from(&mut buf[..])]).unwrap();
                assert_eq!(buf, model[range], "read {off}+{len}");
            }
        }
    }
    let mut all = vec![0u8; SIZE];
    ov.read(0, &[VolatileSlice::from(&mut all[..])]).unwrap();
    assert_eq!(all, model);
    let mut check = vec![0u8; SIZE];
    use std::os::unix::fs::FileExt;
    base.read_exact_at(&mut check, 0).unwrap();
    assert_eq!(check, base_bytes, "the base changed");
    // Out-of-range requests are refused, not served.
    let mut one = [0u8; 512];
    assert!(
        ov.read(SIZE as u64, &[VolatileSlice::from(&mut one[..])])
            .is_err()
    );
});
