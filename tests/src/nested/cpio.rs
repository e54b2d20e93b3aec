//! A newc (`070701`) cpio writer: what the kernel unpacks as an initramfs. Entries are written
//! in the order given; parents must come before their children.

use std::io::{self, Read, Write};

/// File-type bits of `st_mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Writes one archive.
pub struct Writer<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn header(&mut self, name: &str, mode: u32, size: u64) -> io::Result<()> {
        let size = u32::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "entry over 4 GiB"))?;
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, namesize, 0
        );
        self.ino += 1;
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    /// Pads to the next 4-byte boundary.
    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }

    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        self.header(name, S_IFDIR | 0o755, 0)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.header(name, S_IFLNK | 0o777, target.len() as u64)?;
        self.put(target.as_bytes())?;
        self.pad()
    }

    /// A regular file of `size` bytes read from `data`.
    pub fn file(&mut self, name: &str, perm: u32, size: u64, data: impl Read) -> io::Result<()> {
        self.header(name, S_IFREG | (perm & 0o7777), size)?;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: {copied} of {size} bytes"),
            ));
        }
        self.written += size;
        self.pad()
    }

    /// Writes the trailer and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.header("TRAILER!!!", 0, 0)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.cpio");
        let mut w = Writer::new(std::fs::File::create(&path).unwrap());
        w.dir("etc").unwrap();
        w.file("etc/hosts", 0o644, 5, &b"hello"[..]).unwrap();
        w.symlink("hosts", "etc/hosts").unwrap();
        w.file("odd", 0o755, 3, &b"abc"[..]).unwrap();
        w.finish().unwrap();
        let out = dir.path().join("x");
        std::fs::create_dir(&out).unwrap();
        let st = std::process::Command::new("cpio")
            .args(["-idm", "--quiet", "-F"])
            .arg(&path)
            .current_dir(&out)
            .status()
            .expect("cpio (apt cpio)");
        assert!(st.success());
        assert_eq!(std::fs::read(out.join("etc/hosts")).unwrap(), b"hello");
        assert_eq!(std::fs::read(out.join("hosts")).unwrap(), b"hello");
        assert_eq!(std::fs::read(out.join("odd")).unwrap(), b"abc");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("odd"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn short_data_is_an_error() {
        let mut w = Writer::new(Vec::new());
        assert!(w.file("f", 0o644, 10, &b"abc"[..]).is_err());
    }
}
