//! Writing OCI image layouts from Rust, including hostile ones (names with `..`, escaping
//! symlinks, device nodes, truncated gzip) that regular tools refuse to produce. Push them with
//! `Registry::push("oci:DIR:latest", ...)` or import them directly.

use std::io::Write as _;
use std::path::Path;

use sha2::Digest as _;

/// Builds a tar stream entry by entry with raw ustar headers (no path sanitising on purpose).
#[derive(Default)]
pub struct Tar {
    buf: Vec<u8>,
}

impl Tar {
    pub fn new() -> Self {
        Self::default()
    }

    /// A raw entry: `kind` is the ustar type flag (b'0' file, b'1' hard link, b'2' symlink,
    /// b'3' char device, b'4' block device, b'5' directory, b'6' fifo).
    pub fn entry(mut self, name: &str, kind: u8, data: &[u8], link: &str) -> Self {
        assert!(name.len() < 100 && link.len() < 100, "short names only");
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(if kind == b'5' { b"0000755" } else { b"0000644" });
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        self.buf.extend_from_slice(&h);
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len().div_ceil(512) * 512, 0);
        self
    }

    pub fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(name, b'0', data, "")
    }

    pub fn dir(self, name: &str) -> Self {
        self.entry(name, b'5', b"", "")
    }

    pub fn symlink(self, name: &str, target: &str) -> Self {
        self.entry(name, b'2', b"", target)
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&[0u8; 1024]);
        self.buf
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn hexsha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// One layer: the blob as stored, and the uncompressed tar its diff_id describes.
pub struct Layer {
    pub blob: Vec<u8>,
    pub diff_id_of: Vec<u8>,
    pub media_type: &'static str,
}

impl Layer {
    pub fn gzip(tar: Vec<u8>) -> Self {
        Self {
            blob: gzip(&tar),
            diff_id_of: tar,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip",
        }
    }

    pub fn plain(tar: Vec<u8>) -> Self {
        Self {
            blob: tar.clone(),
            diff_id_of: tar,
            media_type: "application/vnd.oci.image.layer.v1.tar",
        }
    }

    /// A gzip layer cut in half (the blob digest matches the cut bytes: only unpacking fails).
    pub fn truncated_gzip(tar: Vec<u8>) -> Self {
        let mut l = Self::gzip(tar);
        l.blob.truncate(l.blob.len() / 2);
        l
    }
}

/// Writes an OCI layout at `dir` with one linux/amd64 image tagged `latest`; returns the
/// manifest digest (`sha256:...`).
pub fn write_layout(dir: &Path, layers: &[Layer]) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let put = |b: &[u8]| {
        let h = hexsha(b);
        std::fs::write(blobs.join(&h), b).expect("write blob");
        h
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let h = put(&l.blob);
        descs.push(serde_json::json!({"mediaType": l.media_type, "digest": format!("sha256:{h}"), "size": l.blob.len()}));
        diff_ids.push(format!("sha256:{}", hexsha(&l.diff_id_of)));
    }
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}})
        .to_string();
    let ch = put(config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{ch}"), "size": config.len()},
        "layers": descs,
    })
    .to_string();
    let mh = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{mh}"), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(dir.join("index.json"), index.to_string()).expect("write");
    format!("sha256:{mh}")
}

/// A layer holding `disk/<name>` with `data`.
pub fn disk_layer(name: &str, data: &[u8]) -> Vec<u8> {
    Tar::new()
        .dir("disk/")
        .file(&format!("disk/{name}"), data)
        .finish()
}
