//! The data directory: opens the store and keeps a marker beside it, so that a store
//! deleted or replaced while the server was stopped is noticed instead of silently
//! starting empty.
//!
//! ```text
//!   <data-dir>/meshplane.db    the store (SQLite; its meta row store_id is a random id)
//!   <data-dir>/meshplane.id    {"storeId": "<16 hex>", "createdAt": <epoch s>, "database": "meshplane.db"}
//! ```
//!
//! At start-up: no marker → open (creating the database if needed) and write the marker
//! (first start, or an upgrade from a version without markers). A marker and a database
//! with the same id → start. A marker and a missing or zero-length database, or a
//! database with another id (a new empty one, or another store's file) → refuse to start,
//! naming both files, unless `--allow-empty-store`, which rewrites the marker. The `-wal`
//! and `-shm` files of a missing database are kept as `*.orphaned` (SQLite would delete
//! them on creating the new file).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use meshplane_store::SqliteStore;

/// The store's file name in the data directory.
pub const DATABASE_FILE: &str = "meshplane.db";
/// The marker's file name in the data directory.
pub const MARKER_FILE: &str = "meshplane.id";

/// What the marker records.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Marker {
    /// The store's id as 16 hex digits ([`SqliteStore::store_id`]).
    pub store_id: String,
    /// When the marker was written (Unix seconds).
    pub created_at: u64,
    /// The database's file name in the data directory.
    pub database: String,
}

/// Opens `<data_dir>/meshplane.db` after checking it against the marker, and writes or
/// rewrites the marker as the module docs say. `data_dir` must exist.
pub fn open_store(data_dir: &Path, allow_empty_store: bool) -> anyhow::Result<SqliteStore> {
    let db = data_dir.join(DATABASE_FILE);
    let marker_path = data_dir.join(MARKER_FILE);
    let marker = read_marker(&marker_path)?;
    if let Some(m) = &marker
        && !allow_empty_store
        && database_missing(&db)?
    {
        bail!(
            "refusing to start: {} records store {} (written at {} s since the epoch), but \
             the database {} is missing or empty, so its data would be lost silently; \
             restore the database from a backup, or start with --allow-empty-store to \
             begin with an empty store (this rewrites {})",
            marker_path.display(),
            m.store_id,
            m.created_at,
            db.display(),
            marker_path.display()
        );
    }
    if database_missing(&db)? {
        set_aside_orphans(&db)?;
    }
    let store =
        SqliteStore::open(&db).with_context(|| format!("opening store {}", db.display()))?;
    let id = format!("{:016x}", store.store_id());
    match marker {
        Some(m) if m.store_id == id => {}
        Some(m) if !allow_empty_store => bail!(
            "refusing to start: {} records store {}, but the database {} is store {}: \
             the database was replaced by a new or another store's file; restore the \
             right database, or start with --allow-empty-store to accept this one (this \
             rewrites {})",
            marker_path.display(),
            m.store_id,
            db.display(),
            id,
            marker_path.display()
        ),
        Some(m) => {
            tracing::warn!(
                marker = %marker_path.display(),
                previous = %m.store_id,
                store = %id,
                "--allow-empty-store: accepting a database that is not the one the marker recorded"
            );
            write_marker(&marker_path, &id)?;
        }
        None => {
            write_marker(&marker_path, &id)?;
            tracing::info!(marker = %marker_path.display(), store = %id, "store marker written");
        }
    }
    Ok(store)
}

/// The marker, if there is one; one that cannot be read is an error, not "no marker".
pub fn read_marker(path: &Path) -> anyhow::Result<Option<Marker>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let marker = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} is not a store marker (remove it only if {} is the right database)",
            path.display(),
            DATABASE_FILE
        )
    })?;
    Ok(Some(marker))
}

/// True when the database file does not exist or has no bytes.
fn database_missing(db: &Path) -> anyhow::Result<bool> {
    match std::fs::metadata(db) {
        Ok(m) => Ok(m.len() == 0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("checking {}", db.display())),
    }
}

/// Renames the `-wal` and `-shm` files of a missing database to `<name>.orphaned`:
/// SQLite would delete them on creating the new file, and they are what is left of the
/// lost one.
fn set_aside_orphans(db: &Path) -> anyhow::Result<()> {
    for suffix in ["-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", db.display()));
        if !file.exists() {
            continue;
        }
        let aside = PathBuf::from(format!("{}.orphaned", file.display()));
        std::fs::rename(&file, &aside)
            .with_context(|| format!("setting aside {}", file.display()))?;
        tracing::warn!(
            file = %file.display(),
            moved_to = %aside.display(),
            "set aside a log file whose database is missing"
        );
    }
    Ok(())
}

/// Writes the marker atomically (temporary file, fsync, rename, fsync of the directory).
fn write_marker(path: &Path, store_id: &str) -> anyhow::Result<()> {
    let marker = Marker {
        store_id: store_id.to_owned(),
        created_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        database: DATABASE_FILE.to_owned(),
    };
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer_pretty(&mut f, &marker)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn write_one(store: &SqliteStore) {
        use meshplane_store::{Op, Store, Txn};
        let txn = Txn {
            preconditions: vec![],
            ops: vec![Op::Put {
                key: "k".into(),
                value: b"v".to_vec(),
            }],
        };
        runtime().block_on(store.txn(txn)).expect("write");
    }

    fn revision_of(store: &SqliteStore) -> u64 {
        use meshplane_store::Store;
        runtime().block_on(store.revision()).expect("revision")
    }

    fn marker_id(dir: &Path) -> String {
        read_marker(&dir.join(MARKER_FILE))
            .expect("marker readable")
            .expect("marker present")
            .store_id
    }

    #[test]
    fn first_start_writes_the_marker_and_restarts_accept_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_store(dir.path(), false).expect("first start");
        let id = format!("{:016x}", store.store_id());
        drop(store);
        assert_eq!(marker_id(dir.path()), id);
        // A store that never took a write (revision 0) is still the same store.
        let store = open_store(dir.path(), false).expect("restart");
        assert_eq!(format!("{:016x}", store.store_id()), id);
    }

    #[test]
    fn a_database_without_marker_gets_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let id = SqliteStore::open(&dir.path().join(DATABASE_FILE))
            .expect("open")
            .store_id();
        open_store(dir.path(), false).expect("upgrade start");
        assert_eq!(marker_id(dir.path()), format!("{id:016x}"));
    }

    #[test]
    fn a_missing_or_empty_database_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = open_store(dir.path(), false).expect("first start");
        let old = first.store_id();
        write_one(&first);
        // A copy of the log while the store is open: it holds the schema and the write.
        let wal = std::fs::read(dir.path().join("meshplane.db-wal")).expect("wal");
        drop(first);
        let db = dir.path().join(DATABASE_FILE);
        for empty in [false, true] {
            for f in ["meshplane.db", "meshplane.db-wal", "meshplane.db-shm"] {
                let _ = std::fs::remove_file(dir.path().join(f));
            }
            if empty {
                std::fs::write(&db, b"").expect("empty file");
            }
            let e = format!(
                "{:#}",
                open_store(dir.path(), false).map(|_| ()).unwrap_err()
            );
            assert!(e.contains("missing or empty"), "{e}");
            assert!(e.contains(&db.display().to_string()), "{e}");
            assert!(e.contains(MARKER_FILE), "{e}");
            assert!(e.contains("--allow-empty-store"), "{e}");
            assert_eq!(marker_id(dir.path()), format!("{old:016x}"), "untouched");
        }
        // A log left behind by the lost database (as after a crash) is kept aside, and
        // the new store starts empty.
        std::fs::write(dir.path().join("meshplane.db-wal"), &wal).expect("stale wal");
        let new = open_store(dir.path(), true).expect("allowed");
        assert_eq!(revision_of(&new), 0, "the new store is empty");
        assert!(dir.path().join("meshplane.db-wal.orphaned").exists());
        let store = new;
        let new = store.store_id();
        drop(store);
        assert_ne!(new, old);
        assert_eq!(marker_id(dir.path()), format!("{new:016x}"), "rewritten");
        open_store(dir.path(), false).expect("starts normally afterwards");
    }

    #[test]
    fn another_stores_database_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let other = tempfile::tempdir().expect("temp dir");
        open_store(dir.path(), false).expect("first start");
        let theirs = SqliteStore::open(&other.path().join(DATABASE_FILE))
            .expect("other")
            .store_id();
        std::fs::rename(
            other.path().join(DATABASE_FILE),
            dir.path().join(DATABASE_FILE),
        )
        .expect("swap");
        let e = format!(
            "{:#}",
            open_store(dir.path(), false).map(|_| ()).unwrap_err()
        );
        assert!(e.contains(&format!("is store {theirs:016x}")), "{e}");
        open_store(dir.path(), true).expect("allowed");
        assert_eq!(marker_id(dir.path()), format!("{theirs:016x}"));
    }

    #[test]
    fn an_unreadable_marker_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(MARKER_FILE), b"not json").expect("write");
        let e = format!(
            "{:#}",
            open_store(dir.path(), false).map(|_| ()).unwrap_err()
        );
        assert!(e.contains("is not a store marker"), "{e}");
    }
}
