//! `--exit-file`: how the VMM ended, as `{"code": N, "reason": "..."}`, for a supervisor that is
//! not our parent (it re-adopted us after a restart and cannot `wait` for us). Written on every
//! exit the VMM controls; after SIGKILL or an abort there is none.
//!
//! The file appears atomically: the JSON goes to a temporary file in the same directory, which is
//! then renamed over `path`.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

#[derive(Serialize)]
struct ExitRecord<'a> {
    code: u8,
    reason: &'a str,
}

/// Writes `{"code": code, "reason": reason}` to `path` atomically.
pub fn write(path: &Path, code: u8, reason: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    let json =
        serde_json::to_string(&ExitRecord { code, reason }).map_err(std::io::Error::other)?;
    tmp.write_all(json.as_bytes())?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        write(&path, 5, "stopped: SIGTERM \"quoted\"").unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["code"], 5);
        assert_eq!(v["reason"], "stopped: SIGTERM \"quoted\"");
        write(&path, 0, "guest powered off").unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        assert!(write(Path::new("/nonexistent-dir/exit.json"), 1, "x").is_err());
    }
}
