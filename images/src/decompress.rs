//! bzImage → ELF `vmlinux`: locate the compressed payload through the setup header and
//! decompress it once (gzip, xz, lzma, lz4 legacy, zstd, bzip2), so no boot pays for it.
//! A kernel that already is an ELF file (vmlinux, the test guest) passes through unchanged.

use std::io::{self, Read};

/// Why a kernel file could not be turned into a vmlinux.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("{0} is neither an ELF file nor a bzImage")]
    NotAKernel(String),
    #[error("{path}: bzImage boot protocol {version:#x} is too old (needs 2.08+ for the payload)")]
    OldProtocol { path: String, version: u16 },
    #[error("{path}: payload offset/length point outside the file")]
    BadPayload { path: String },
    #[error("{path}: payload compressed with {method}, which corral does not support")]
    Unsupported { path: String, method: &'static str },
    #[error("{path}: cannot decompress the {method} payload")]
    Decode {
        path: String,
        method: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{path}: decompressed {method} payload is not an ELF vmlinux")]
    NotElf { path: String, method: &'static str },
    #[error("{path}: decompressed payload exceeds {limit} bytes")]
    TooLarge { path: String, limit: u64 },
}

/// How the kernel file was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelFormat {
    Elf,
    Gzip,
    Xz,
    Lzma,
    Lz4,
    Zstd,
    Bzip2,
}

impl KernelFormat {
    pub fn name(self) -> &'static str {
        match self {
            KernelFormat::Elf => "elf",
            KernelFormat::Gzip => "gzip",
            KernelFormat::Xz => "xz",
            KernelFormat::Lzma => "lzma",
            KernelFormat::Lz4 => "lz4",
            KernelFormat::Zstd => "zstd",
            KernelFormat::Bzip2 => "bzip2",
        }
    }
}

const ELF_MAGIC: &[u8] = b"\x7fELF";
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// Largest vmlinux accepted (distribution kernels are 40-70 MiB).
pub const MAX_VMLINUX: u64 = 512 << 20;

/// Turns `kernel` (ELF or bzImage bytes; `path` is for messages) into ELF bytes.
pub fn to_vmlinux(kernel: &[u8], path: &str) -> Result<(Vec<u8>, KernelFormat), DecompressError> {
    if kernel.starts_with(ELF_MAGIC) {
        return Ok((kernel.to_vec(), KernelFormat::Elf));
    }
    if kernel.len() < 0x268 || &kernel[0x202..0x206] != b"HdrS" {
        return Err(DecompressError::NotAKernel(path.to_string()));
    }
    let version = u16::from_le_bytes([kernel[0x206], kernel[0x207]]);
    if version < 0x208 {
        return Err(DecompressError::OldProtocol {
            path: path.to_string(),
            version,
        });
    }
    let setup_sects = match kernel[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let le32 =
        |o: usize| u32::from_le_bytes(kernel[o..o + 4].try_into().expect("4 bytes")) as usize;
    let start = (setup_sects + 1) * 512 + le32(0x248);
    let len = le32(0x24c);
    let payload = kernel
        .get(start..start.saturating_add(len))
        .ok_or(DecompressError::BadPayload { path: path.into() })?;
    decompress_payload(payload, path)
}

/// Decompresses a kernel payload (the compressed stream, followed by the 4-byte little-endian
/// uncompressed size that the kernel build appends).
pub fn decompress_payload(
    payload: &[u8],
    path: &str,
) -> Result<(Vec<u8>, KernelFormat), DecompressError> {
    let (format, method) = match payload {
        [0x1f, 0x8b, ..] => (KernelFormat::Gzip, "gzip"),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => (KernelFormat::Xz, "xz"),
        [0x5d, 0, 0, ..] => (KernelFormat::Lzma, "lzma"),
        [0x02, 0x21, 0x4c, 0x18, ..] => (KernelFormat::Lz4, "lz4"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => (KernelFormat::Zstd, "zstd"),
        [b'B', b'Z', b'h', ..] => (KernelFormat::Bzip2, "bzip2"),
        [0x89, b'L', b'Z', b'O', ..] => {
            return Err(DecompressError::Unsupported {
                path: path.into(),
                method: "LZO",
            });
        }
        _ => {
            return Err(DecompressError::Unsupported {
                path: path.into(),
                method: "an unknown method",
            });
        }
    };
    if payload.len() < 8 {
        return Err(DecompressError::BadPayload { path: path.into() });
    }
    let (stream, size_le) = payload.split_at(payload.len() - 4);
    let expected = u32::from_le_bytes(size_le.try_into().expect("4 bytes")) as usize;
    let capacity = expected.min(MAX_VMLINUX as usize);
    let decode_err = |source| DecompressError::Decode {
        path: path.into(),
        method,
        source,
    };
    let out = match format {
        KernelFormat::Gzip => read_all(flate2::read::GzDecoder::new(payload), capacity),
        KernelFormat::Xz => read_all(liblzma::read::XzDecoder::new(stream), capacity),
        KernelFormat::Lzma => {
            let s = liblzma::stream::Stream::new_lzma_decoder(u64::MAX)
                .map_err(|e| decode_err(io::Error::other(e)))?;
            read_all(liblzma::read::XzDecoder::new_stream(stream, s), capacity)
        }
        KernelFormat::Lz4 => lz4_legacy(stream, capacity),
        KernelFormat::Zstd => zstd::stream::read::Decoder::new(stream)
            .map(|d| d.single_frame())
            .and_then(|d| read_all(d, capacity)),
        KernelFormat::Bzip2 => read_all(bzip2::read::BzDecoder::new(stream), capacity),
        KernelFormat::Elf => unreachable!("handled above"),
    };
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
            return Err(DecompressError::TooLarge {
                path: path.into(),
                limit: MAX_VMLINUX,
            });
        }
        Err(e) => return Err(decode_err(e)),
    };
    if !out.starts_with(ELF_MAGIC) {
        return Err(DecompressError::NotElf {
            path: path.into(),
            method,
        });
    }
    Ok((out, format))
}

fn read_all(r: impl Read, capacity: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(capacity);
    let n = r.take(MAX_VMLINUX + 1).read_to_end(&mut out)?;
    if n as u64 > MAX_VMLINUX {
        return Err(io::Error::new(io::ErrorKind::FileTooLarge, "too large"));
    }
    Ok(out)
}

/// The kernel's "legacy" lz4 framing (`lz4 -l`): a magic, then blocks of `u32 size` + lz4 block,
/// each decompressing to at most 8 MiB; the magic may repeat between concatenated streams.
fn lz4_legacy(mut data: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
    const BLOCK_MAX: usize = 8 << 20;
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut out = Vec::with_capacity(capacity);
    while data.len() >= 4 {
        let word = u32::from_le_bytes(data[..4].try_into().expect("4 bytes"));
        data = &data[4..];
        if word == LZ4_LEGACY_MAGIC {
            continue;
        }
        let n = word as usize;
        let block = data
            .get(..n)
            .ok_or_else(|| bad("lz4 block runs past the end of the payload"))?;
        data = &data[n..];
        let at = out.len();
        if (at + BLOCK_MAX) as u64 > MAX_VMLINUX + BLOCK_MAX as u64 {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "too large"));
        }
        out.resize(at + BLOCK_MAX, 0);
        let got = lz4_flex::block::decompress_into(block, &mut out[at..])
            .map_err(|e| bad(&format!("lz4: {e}")))?;
        out.truncate(at + got);
    }
    if !data.is_empty() {
        return Err(bad("trailing bytes after the last lz4 block"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn fake_elf() -> Vec<u8> {
        let mut v = ELF_MAGIC.to_vec();
        v.extend((0..3_000_000u32).map(|i| (i % 251) as u8 ^ (i >> 13) as u8));
        v
    }

    /// A minimal bzImage: 4 setup sectors + boot sector, header at 0x1f1, payload after.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 4usize;
        let mut k = vec![0u8; (setup_sects + 1) * 512];
        k[0x1f1] = setup_sects as u8;
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        k[0x248..0x24c].copy_from_slice(&0x100u32.to_le_bytes());
        k[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        k.extend(vec![0xccu8; 0x100]);
        k.extend_from_slice(payload);
        k.extend(vec![0u8; 4096]);
        k
    }

    fn with_size(mut compressed: Vec<u8>, plain: &[u8]) -> Vec<u8> {
        compressed.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        compressed
    }

    fn lz4_legacy_encode(plain: &[u8]) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        for chunk in plain.chunks(8 << 20) {
            let c = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(&c);
        }
        out
    }

    #[test]
    fn every_compression_round_trips() {
        let elf = fake_elf();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&elf).unwrap();
            e.finish().unwrap()
        };
        let xz = {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&elf).unwrap();
            e.finish().unwrap()
        };
        let lzma = {
            let opts = liblzma::stream::LzmaOptions::new_preset(1).unwrap();
            let s = liblzma::stream::Stream::new_lzma_encoder(&opts).unwrap();
            let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), s);
            e.write_all(&elf).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&elf[..], 3).unwrap();
        let bz = {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(&elf).unwrap();
            e.finish().unwrap()
        };
        // gzip's own trailer already ends with the size (ISIZE); the others get it appended.
        let cases = [
            (KernelFormat::Gzip, gz),
            (KernelFormat::Xz, with_size(xz, &elf)),
            (KernelFormat::Lzma, with_size(lzma, &elf)),
            (KernelFormat::Lz4, with_size(lz4_legacy_encode(&elf), &elf)),
            (KernelFormat::Zstd, with_size(zst, &elf)),
            (KernelFormat::Bzip2, with_size(bz, &elf)),
        ];
        for (fmt, payload) in cases {
            let (out, got) = to_vmlinux(&bzimage(&payload), "/boot/vmlinuz").unwrap();
            assert_eq!(got, fmt);
            assert!(out == elf, "{fmt:?} output differs");
        }
    }

    #[test]
    fn elf_passes_through_and_garbage_is_named() {
        let elf = fake_elf();
        assert_eq!(
            to_vmlinux(&elf, "/boot/vmlinuz").unwrap().1,
            KernelFormat::Elf
        );
        let err = to_vmlinux(b"#!/bin/sh\n", "/boot/vmlinuz-x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/boot/vmlinuz-x") && err.contains("neither"),
            "{err}"
        );
        let mut bad = with_size(vec![0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6], &elf);
        bad.truncate(12);
        let err = to_vmlinux(&bzimage(&bad), "k").unwrap_err();
        assert!(
            matches!(err, DecompressError::Decode { method: "gzip", .. }),
            "{err}"
        );
        let err =
            to_vmlinux(&bzimage(&with_size(b"\x89LZO\0\0\0\0".to_vec(), &elf)), "k").unwrap_err();
        assert!(err.to_string().contains("LZO"), "{err}");
    }

    #[test]
    fn non_elf_payload_is_rejected() {
        let plain = b"not an elf at all".repeat(100);
        let zst = with_size(zstd::encode_all(&plain[..], 3).unwrap(), &plain);
        assert!(matches!(
            to_vmlinux(&bzimage(&zst), "k"),
            Err(DecompressError::NotElf { .. })
        ));
    }
}
