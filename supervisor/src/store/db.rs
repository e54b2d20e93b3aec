//! The durable side of the store: one redb file holding every object as JSON plus the
//! resourceVersion counter and its reserved high-water mark.
//!
//! Status writes are committed without an fsync (`Durability::None`) and a `kill -9` loses the
//! last of them, so the counter stored with the data can fall behind versions clients have
//! already seen. resourceVersions are therefore reserved in blocks of [`RV_BLOCK`]: the commit
//! that first uses a version above the reserved mark is made durable and raises the mark, so
//! every version ever handed out is at most the durable mark, and a restart resumes above it.
//!
//! Why redb: pure Rust (no C toolchain), ACID with copy-on-write B-trees, and a commit with
//! `Durability::Immediate` is fsynced before it returns, which is exactly "fsynced before the API
//! answers". corral needs a key-value map of JSON documents, not SQL.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const RV_KEY: &str = "resourceVersion";
/// Every resourceVersion handed out is at most this value (fsynced before it is exceeded).
const RESERVED_KEY: &str = "resourceVersionReserved";

/// How many resourceVersions one durable write of the reserved mark covers: one fsync per this
/// many non-durable writes, and at most this many versions skipped by a restart.
pub const RV_BLOCK: u64 = 1024;

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("open database {path}")]
    Open {
        path: String,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("database transaction")]
    Transaction(#[from] redb::TransactionError),
    #[error("database table")]
    Table(#[from] redb::TableError),
    #[error("database storage")]
    Storage(#[from] redb::StorageError),
    #[error("database commit")]
    Commit(#[from] redb::CommitError),
    #[error("database durability")]
    Durability(#[from] redb::SetDurabilityError),
    #[error("the database is closed (reopening it failed)")]
    Closed,
    #[error("decode stored object {key}")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One change to apply atomically.
pub enum Write<'a> {
    Put(&'a str, Vec<u8>),
    Delete(&'a str),
}

/// redb's page cache. Its default (1 GiB, filled lazily) let a daemon that had just created 50 VMIs
/// hold ~18 MiB of cached pages; the whole object set is loaded into memory at start anyway.
const CACHE_BYTES: usize = 4 << 20;

/// The redb database.
///
/// After a failed write (ENOSPC, EIO) redb refuses every later transaction ("previous I/O
/// error"); the next commit therefore closes and reopens the file, which recovers the last
/// durable state, so a full disk fails writes only while it is full.
pub struct Db {
    path: PathBuf,
    db: Mutex<Option<Database>>,
    /// A commit failed: reopen before the next one.
    broken: AtomicBool,
    /// The durable reserved mark (see the module documentation).
    reserved: AtomicU64,
}

fn create(path: &Path) -> Result<Database, DbError> {
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|source| DbError::Open {
            path: path.display().to_string(),
            source,
        })
}

/// The counters found when the database opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// The version of the last durable commit.
    pub last: u64,
    /// The highest version that may have been handed out before (durable reserved mark).
    pub reserved: u64,
}

impl Counters {
    /// The resourceVersion to resume at. When versions above the last durable commit may have
    /// been handed out (and their writes lost), it is one above all of them: a watch from any
    /// version seen before the restart is then older than the new history and gets 410 Gone,
    /// and is never answered with the silence of a version that no longer exists or, worse,
    /// with a reused version.
    pub fn resume_at(self) -> u64 {
        if self.reserved > self.last {
            self.reserved + 1
        } else {
            self.last
        }
    }
}

impl Db {
    /// Opens (or creates) the database file.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let db = create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(OBJECTS)?;
        txn.open_table(META)?;
        txn.commit()?;
        let reserved = {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            meta.get(RESERVED_KEY)?.map(|g| g.value()).unwrap_or(0)
        };
        Ok(Db {
            path: path.to_path_buf(),
            db: Mutex::new(Some(db)),
            broken: AtomicBool::new(false),
            reserved: AtomicU64::new(reserved),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Database>> {
        self.db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads every object and the resourceVersion counters.
    pub fn load(&self) -> Result<(Vec<(String, serde_json::Value)>, Counters), DbError> {
        let g = self.lock();
        let db = g.as_ref().ok_or(DbError::Closed)?;
        let txn = db.begin_read()?;
        let objects = txn.open_table(OBJECTS)?;
        let mut out = Vec::new();
        for row in objects.iter()? {
            let (k, v) = row?;
            let key = k.value().to_string();
            let value = serde_json::from_slice(v.value()).map_err(|source| DbError::Decode {
                key: key.clone(),
                source,
            })?;
            out.push((key, value));
        }
        let meta = txn.open_table(META)?;
        let last = meta.get(RV_KEY)?.map(|g| g.value()).unwrap_or(0);
        let reserved = self.reserved.load(Ordering::Acquire);
        Ok((out, Counters { last, reserved }))
    }

    /// Applies `writes` and records `rv` in one transaction; with `durable` the commit is fsynced
    /// before this returns. A commit whose `rv` is above the reserved mark reserves the next
    /// block and is fsynced whatever `durable` says. Callers serialize commits.
    pub fn commit(&self, writes: &[Write<'_>], rv: u64, durable: bool) -> Result<(), DbError> {
        let mut g = self.lock();
        if self.broken.load(Ordering::Acquire) || g.is_none() {
            if let Some(old) = g.take() {
                // Closing a database after an I/O error may itself fail; the file is reopened
                // from its last durable commit either way.
                let _ = old.close();
            }
            let db = create(&self.path)?;
            tracing::warn!(path = %self.path.display(), "reopened the database after a failed write");
            *g = Some(db);
            self.broken.store(false, Ordering::Release);
        }
        let db = g.as_ref().ok_or(DbError::Closed)?;
        let result = self.commit_in(db, writes, rv, durable);
        if result.is_err() {
            self.broken.store(true, Ordering::Release);
        }
        result
    }

    fn commit_in(
        &self,
        db: &Database,
        writes: &[Write<'_>],
        rv: u64,
        durable: bool,
    ) -> Result<(), DbError> {
        let reserve =
            (rv > self.reserved.load(Ordering::Acquire)).then(|| rv.saturating_add(RV_BLOCK - 1));
        let mut txn = db.begin_write()?;
        txn.set_durability(if durable || reserve.is_some() {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        {
            let mut objects = txn.open_table(OBJECTS)?;
            for w in writes {
                match w {
                    Write::Put(k, v) => {
                        objects.insert(*k, v.as_slice())?;
                    }
                    Write::Delete(k) => {
                        objects.remove(*k)?;
                    }
                }
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(RV_KEY, rv)?;
            if let Some(r) = reserve {
                meta.insert(RESERVED_KEY, r)?;
            }
        }
        txn.commit()?;
        if let Some(r) = reserve {
            self.reserved.store(r, Ordering::Release);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cost of a status write under each policy, on the file system of `$CORRAL_BENCH_DIR`
    /// (default: the temp dir). `cargo test -p supervisor --release -- --ignored --nocapture
    /// commit_cost`; the figures are in docs/hardening.md.
    #[test]
    #[ignore = "benchmark"]
    fn commit_cost() {
        let base = std::env::var_os("CORRAL_BENCH_DIR").map(std::path::PathBuf::from);
        let dir = match &base {
            Some(b) => tempfile::tempdir_in(b).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let value = vec![b'x'; 2048];
        let n = 2000u64;
        for (name, durable) in [("non-durable + reserved blocks", false), ("durable", true)] {
            let db = Db::open(&dir.path().join(format!("{durable}.redb"))).unwrap();
            let start = std::time::Instant::now();
            for rv in 1..=n {
                let key = format!("k{}", rv % 50);
                db.commit(&[Write::Put(&key, value.clone())], rv, durable)
                    .unwrap();
            }
            let per = start.elapsed() / n as u32;
            eprintln!("{name}: {per:?} per commit ({n} commits of 2 KiB)");
        }
    }

    #[test]
    fn the_reserved_mark_leads_every_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let db = Db::open(&path).unwrap();
        for rv in 1..=(RV_BLOCK + 2) {
            db.commit(&[Write::Put("k", b"{}".to_vec())], rv, false)
                .unwrap();
            let reserved = db.reserved.load(Ordering::Acquire);
            assert!(
                reserved >= rv && reserved < rv + RV_BLOCK,
                "{rv}: {reserved}"
            );
        }
        drop(db);
        let (_, c) = Db::open(&path).unwrap().load().unwrap();
        assert_eq!(c.reserved, 2 * RV_BLOCK);
        assert_eq!(c.resume_at(), 2 * RV_BLOCK + 1);
        // A database of an older corral (no reserved mark) resumes where it was.
        let old = Counters {
            last: 7,
            reserved: 0,
        };
        assert_eq!(old.resume_at(), 7);
    }
}
