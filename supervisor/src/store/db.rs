//! The durable side of the store: one redb file holding every object as JSON plus the
//! resourceVersion counter.
//!
//! Why redb: pure Rust (no C toolchain), ACID with copy-on-write B-trees, and a commit with
//! `Durability::Immediate` is fsynced before it returns, which is exactly "fsynced before the API
//! answers". corral needs a key-value map of JSON documents, not SQL.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const RV_KEY: &str = "resourceVersion";

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
pub struct Db {
    db: Database,
}

impl Db {
    /// Opens (or creates) the database file.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|source| DbError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let txn = db.begin_write()?;
        txn.open_table(OBJECTS)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(Db { db })
    }

    /// Loads every object and the last resourceVersion.
    pub fn load(&self) -> Result<(Vec<(String, serde_json::Value)>, u64), DbError> {
        let txn = self.db.begin_read()?;
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
        let rv = meta.get(RV_KEY)?.map(|g| g.value()).unwrap_or(0);
        Ok((out, rv))
    }

    /// Applies `writes` and records `rv` in one transaction; with `durable` the commit is fsynced
    /// before this returns.
    pub fn commit(&self, writes: &[Write<'_>], rv: u64, durable: bool) -> Result<(), DbError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if durable {
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
        }
        txn.commit()?;
        Ok(())
    }
}
