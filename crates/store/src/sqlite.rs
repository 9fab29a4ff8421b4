//! `SqliteStore`: the embedded, durable backend (one SQLite file in WAL mode).
//!
//! ```text
//!   meta    (name TEXT PK, value INTEGER)   format_version, revision, compacted_through
//!   kv      (key BLOB PK, value BLOB, create_revision, mod_revision, version)
//!   changes (revision, seq) PK, key BLOB, kind, value BLOB, create_revision, version
//!           = the change log, revisions compacted_through+1 ..= revision
//! ```
//!
//! - Keys are stored as BLOBs of their UTF-8 bytes so that SQLite compares them with
//!   `memcmp`, which is the byte order the trait promises, and so that a prefix range
//!   `[prefix, prefix_end(prefix))` works for any prefix.
//! - Durability: `journal_mode=WAL` and `synchronous=FULL`, so a transaction that
//!   returned `Committed` has been fsynced to the WAL and survives `kill -9` and power
//!   loss.
//! - Concurrency: one writer connection behind a mutex serialises transactions (each
//!   runs `BEGIN IMMEDIATE`, checks its preconditions, writes, appends to the change
//!   log and updates `meta` in one SQLite transaction). Reads use a small pool of
//!   read-only connections, which WAL lets run beside the writer; a listing reads in
//!   one read transaction, so it is a consistent snapshot.
//! - Every SQLite call runs on the blocking thread pool (`spawn_blocking`), never on
//!   an async worker.
//! - The file is locked (`<path>.lock`, an OS advisory lock) for the lifetime of the
//!   store: a second opener, in this process or another, gets
//!   [`StoreError::Unavailable`].

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::broadcast;

use crate::watch::{self, Batch, LogChunk, LogSource};
use crate::{
    Event, EventKind, KeyValue, ListPage, Op, Precondition, Revision, Store, StoreError,
    StoreOptions, Txn, TxnOutcome, WatchStream,
};

/// Idle read connections kept for reuse; more are opened on demand under load.
const MAX_IDLE_READERS: usize = 4;

/// How long a connection waits for a lock held by another connection of this store
/// (a checkpoint, typically) before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
    CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE kv (
        key BLOB PRIMARY KEY,
        value BLOB NOT NULL,
        create_revision INTEGER NOT NULL,
        mod_revision INTEGER NOT NULL,
        version INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE changes (
        revision INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        key BLOB NOT NULL,
        kind INTEGER NOT NULL,
        value BLOB NOT NULL,
        create_revision INTEGER NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (revision, seq)
    ) WITHOUT ROWID;
    INSERT INTO meta (name, value) VALUES ('revision', 0), ('compacted_through', 0);
";

/// `changes.kind` of a put.
const KIND_PUT: i64 = 0;
/// `changes.kind` of a delete.
const KIND_DELETE: i64 = 1;

/// The durable, embedded [`Store`]: one SQLite file (plus its `-wal`, `-shm` and
/// `.lock` companions).
///
/// Cloning is cheap and yields a handle to the same database. The file stays open
/// and locked until the last handle is dropped; dropping it ends every open watch.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    /// Queues writers on the executor (FIFO) so that at most one blocking-pool thread
    /// at a time works on, or waits for, the writer connection.
    write_permit: tokio::sync::Mutex<()>,
    readers: Mutex<Vec<Connection>>,
    /// The last committed revision, for `revision()` without touching the disk.
    revision: AtomicU64,
    events: broadcast::Sender<Arc<Batch>>,
    options: StoreOptions,
    /// Held for the lifetime of the store; declared last so it is released after the
    /// connections are closed.
    _lock: File,
}

// === impl SqliteStore ===

impl SqliteStore {
    /// The persisted schema version this build reads and writes, stored in the `meta`
    /// row `format_version`. Opening a file with a newer version fails with
    /// [`StoreError::Corrupt`]. Bump it (and add a migration) whenever the schema or
    /// the encoding of a column changes.
    pub const FORMAT_VERSION: i64 = 1;

    /// Opens (creating if needed) the database at `path`, with default
    /// [`StoreOptions`]. The caller passes `<data-dir>/meshplane.db`; the directory
    /// must exist.
    ///
    /// This blocks on disk I/O: call it at startup, or inside `spawn_blocking`.
    ///
    /// Fails with [`StoreError::Unavailable`] if the file cannot be opened or is locked
    /// by another store, and with [`StoreError::Corrupt`] if it is not a meshplane
    /// database or was written by a newer format version.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, StoreOptions::default())
    }

    /// Like [`SqliteStore::open`], with explicit options. The history settings apply
    /// from the next write on; the log is never un-compacted.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<SqliteStore, StoreError> {
        let lock = lock_file(path)?;
        let mut writer = open_connection(path)?;
        let mode: String = writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sql_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "sqlite refused WAL mode for {} (got {mode})",
                path.display()
            )));
        }
        let revision = init_schema(&mut writer)?;
        let (events, _) = broadcast::channel(options.broadcast_capacity.max(1));
        tracing::debug!(path = %path.display(), revision, "opened sqlite store");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(writer),
                write_permit: tokio::sync::Mutex::new(()),
                readers: Mutex::new(Vec::new()),
                revision: AtomicU64::new(revision),
                events,
                options,
                _lock: lock,
            }),
        })
    }

    /// The database file this store was opened on.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the blocking pool with the shared state.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || f(&inner)).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.with_reader(|conn| get_kv(conn, &key)))
            .await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        self.blocking(move |inner| {
            inner.with_reader(|conn| list_page(conn, &prefix, start_after.as_deref(), limit))
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        // The writer mutex inside `apply` is what serialises transactions; the permit
        // only keeps waiting writers off the blocking pool. If this future is dropped
        // mid-way the transaction still completes (or not) on its own.
        let _permit = self.inner.write_permit.lock().await;
        self.blocking(move |inner| inner.apply(txn)).await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.revision.load(Ordering::SeqCst))
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        watch::start(&self.inner, prefix, from, self.inner.options.watch_buffer).await
    }
}

// === impl Inner ===

impl Inner {
    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held dropped the rusqlite transaction, which
        // rolled it back: the connection is still usable.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on a pooled read-only connection.
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let result = f(&mut conn);
        let mut pool = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < MAX_IDLE_READERS && conn.is_autocommit() {
            pool.push(conn);
        }
        result
    }

    /// Checks and applies one transaction, then publishes its events. Serialised by
    /// the writer mutex, which is also held while publishing so that batches go out
    /// in revision order.
    fn apply(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        // Read inside the write transaction: the source of truth is the file.
        let current = read_meta(&tx, "revision")?;
        for (index, precondition) in txn.preconditions.iter().enumerate() {
            if !holds(&tx, precondition)? {
                return Ok(TxnOutcome::Failed {
                    precondition: index,
                });
            }
        }
        let revision = current + 1;
        let rev = to_sql(revision)?;
        let mut events = Vec::new();
        for op in txn.ops {
            match op {
                Op::Put { key, value } => {
                    let (create_revision, version): (i64, i64) = tx
                        .prepare_cached(
                            "INSERT INTO kv (key, value, create_revision, mod_revision, version)
                             VALUES (?1, ?2, ?3, ?3, 1)
                             ON CONFLICT (key) DO UPDATE SET
                                 value = excluded.value,
                                 mod_revision = excluded.mod_revision,
                                 version = kv.version + 1
                             RETURNING create_revision, version",
                        )
                        .and_then(|mut s| {
                            s.query_row(params![key.as_bytes(), value, rev], |r| {
                                Ok((r.get(0)?, r.get(1)?))
                            })
                        })
                        .map_err(sql_err)?;
                    events.push(Event {
                        kind: EventKind::Put,
                        kv: KeyValue {
                            key,
                            value,
                            create_revision: from_sql(create_revision)?,
                            mod_revision: revision,
                            version: from_sql(version)?,
                        },
                    });
                }
                Op::Delete { key } => {
                    let deleted = tx
                        .prepare_cached("DELETE FROM kv WHERE key = ?1")
                        .and_then(|mut s| s.execute([key.as_bytes()]))
                        .map_err(sql_err)?;
                    if deleted > 0 {
                        events.push(Event {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                key,
                                value: Vec::new(),
                                create_revision: 0,
                                mod_revision: revision,
                                version: 0,
                            },
                        });
                    }
                }
            }
        }
        if events.is_empty() {
            // Nothing changed (no ops, or deletes of missing keys): no new revision.
            // Dropping `tx` rolls back the (empty) transaction.
            return Ok(TxnOutcome::Committed { revision: current });
        }
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO changes
                     (revision, seq, key, kind, value, create_revision, version)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql_err)?;
            for (seq, event) in events.iter().enumerate() {
                let kind = match event.kind {
                    EventKind::Put => KIND_PUT,
                    EventKind::Delete => KIND_DELETE,
                };
                insert
                    .execute(params![
                        rev,
                        to_sql(seq as u64)?,
                        event.kv.key.as_bytes(),
                        kind,
                        event.kv.value,
                        to_sql(event.kv.create_revision)?,
                        to_sql(event.kv.version)?,
                    ])
                    .map_err(sql_err)?;
            }
        }
        write_meta(&tx, "revision", revision)?;
        let compacted_through = read_meta(&tx, "compacted_through")?;
        if let Some(through) = self.options.compaction_due(revision, compacted_through) {
            let through_sql = to_sql(through)?;
            tx.prepare_cached("DELETE FROM changes WHERE revision <= ?1")
                .and_then(|mut s| s.execute([through_sql]))
                .map_err(sql_err)?;
            write_meta(&tx, "compacted_through", through)?;
        }
        tx.commit().map_err(sql_err)?;
        self.revision.store(revision, Ordering::SeqCst);
        // Never waits: slow receivers observe `Lagged` and catch up from the log.
        let _ = self.events.send(Arc::new(Batch { revision, events }));
        Ok(TxnOutcome::Committed { revision })
    }
}

impl LogSource for Inner {
    fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        self.events.subscribe()
    }

    async fn read_log(
        self: Arc<Self>,
        prefix: String,
        after: Revision,
    ) -> Result<LogChunk, StoreError> {
        run_blocking(move || self.with_reader(|conn| read_changes(conn, &prefix, after))).await
    }
}

// === fns ===

async fn run_blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
}

fn lock_file(path: &Path) -> Result<File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot open {}: {e}", lock_path.display()))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
            "{} is in use by another store (lock held on {})",
            path.display(),
            lock_path.display()
        ))),
        Err(TryLockError::Error(e)) => Err(StoreError::Unavailable(format!(
            "cannot lock {}: {e}",
            lock_path.display()
        ))),
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql_err)?;
    Ok(conn)
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = open_connection(path)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(sql_err)?;
    Ok(conn)
}

/// Creates the schema in a new file, or checks the format version of an existing one.
/// Returns the current revision.
fn init_schema(conn: &mut Connection) -> Result<Revision, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    let tables: i64 = tx
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    let has_meta: bool = tx
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    if has_meta {
        let version: Option<i64> = tx
            .query_row(
                "SELECT value FROM meta WHERE name = 'format_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql_err)?;
        let supported = SqliteStore::FORMAT_VERSION;
        match version {
            Some(v) if v == supported => {}
            Some(v) if v > supported => {
                return Err(StoreError::Corrupt(format!(
                    "database format version {v} is newer than the supported version \
                     {supported}: open it with a newer meshplane"
                )));
            }
            Some(v) => {
                return Err(StoreError::Corrupt(format!(
                    "database format version {v} is not supported (expected {supported})"
                )));
            }
            None => {
                return Err(StoreError::Corrupt(
                    "database has no format version: not a meshplane store".to_owned(),
                ));
            }
        }
    } else if tables > 0 {
        return Err(StoreError::Corrupt(
            "database has tables but no meta table: not a meshplane store".to_owned(),
        ));
    } else {
        tx.execute_batch(SCHEMA).map_err(sql_err)?;
        tx.execute(
            "INSERT INTO meta (name, value) VALUES ('format_version', ?1)",
            [SqliteStore::FORMAT_VERSION],
        )
        .map_err(sql_err)?;
    }
    let revision = read_meta(&tx, "revision")?;
    tx.commit().map_err(sql_err)?;
    Ok(revision)
}

fn read_meta(conn: &Connection, name: &str) -> Result<Revision, StoreError> {
    let value: Option<i64> = conn
        .prepare_cached("SELECT value FROM meta WHERE name = ?1")
        .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
        .map_err(sql_err)?;
    match value {
        Some(v) => from_sql(v),
        None => Err(StoreError::Corrupt(format!("meta row {name} is missing"))),
    }
}

fn write_meta(conn: &Connection, name: &str, value: Revision) -> Result<(), StoreError> {
    let value = to_sql(value)?;
    conn.prepare_cached("UPDATE meta SET value = ?2 WHERE name = ?1")
        .and_then(|mut s| s.execute(params![name, value]))
        .map_err(sql_err)?;
    Ok(())
}

fn holds(conn: &Connection, precondition: &Precondition) -> Result<bool, StoreError> {
    match precondition {
        Precondition::Absent(key) => Ok(get_kv(conn, key)?.is_none()),
        Precondition::ModRevision(key, rev) => {
            Ok(get_kv(conn, key)?.is_some_and(|kv| kv.mod_revision == *rev))
        }
        Precondition::PrefixUnchangedSince(prefix, rev) => {
            let rev = to_sql(*rev)?;
            let changed = match prefix_end(prefix.as_bytes()) {
                Some(end) => conn
                    .prepare_cached(
                        "SELECT 1 FROM kv
                         WHERE key >= ?1 AND key < ?2 AND mod_revision > ?3 LIMIT 1",
                    )
                    .and_then(|mut s| s.exists(params![prefix.as_bytes(), end, rev])),
                None => conn
                    .prepare_cached(
                        "SELECT 1 FROM kv WHERE key >= ?1 AND mod_revision > ?2 LIMIT 1",
                    )
                    .and_then(|mut s| s.exists(params![prefix.as_bytes(), rev])),
            }
            .map_err(sql_err)?;
            Ok(!changed)
        }
    }
}

fn get_kv(conn: &Connection, key: &str) -> Result<Option<KeyValue>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT value, create_revision, mod_revision, version FROM kv WHERE key = ?1",
        )
        .and_then(|mut s| {
            s.query_row([key.as_bytes()], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .optional()
        })
        .map_err(sql_err)?;
    row.map(|(value, create, modified, version)| {
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: from_sql(create)?,
            mod_revision: from_sql(modified)?,
            version: from_sql(version)?,
        })
    })
    .transpose()
}

fn list_page(
    conn: &mut Connection,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> Result<ListPage, StoreError> {
    // One read transaction: the revision and the rows come from the same snapshot.
    let tx = conn.transaction().map_err(sql_err)?;
    let revision = read_meta(&tx, "revision")?;
    let (lower_op, lower) = match start_after {
        Some(after) if after >= prefix => (">", after.as_bytes()),
        _ => (">=", prefix.as_bytes()),
    };
    let end = prefix_end(prefix.as_bytes());
    let upper = if end.is_some() { "AND key < ?2" } else { "" };
    let sql = format!(
        "SELECT key, value, create_revision, mod_revision, version FROM kv
         WHERE key {lower_op} ?1 {upper} ORDER BY key LIMIT ?3"
    );
    // Fetch one extra row to learn whether more follow.
    let fetch: i64 = if limit == 0 {
        -1
    } else {
        i64::try_from(limit).map_or(i64::MAX, |l| l.saturating_add(1))
    };
    let mut items = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&sql).map_err(sql_err)?;
        let mut rows = stmt.query(params![lower, end, fetch]).map_err(sql_err)?;
        while let Some(row) = rows.next().map_err(sql_err)? {
            items.push(row_to_kv(row)?);
        }
    }
    tx.finish().map_err(sql_err)?;
    let more = limit != 0 && items.len() > limit;
    items.truncate(if limit == 0 { items.len() } else { limit });
    Ok(ListPage {
        items,
        revision,
        more,
    })
}

fn read_changes(
    conn: &mut Connection,
    prefix: &str,
    after: Revision,
) -> Result<LogChunk, StoreError> {
    let tx = conn.transaction().map_err(sql_err)?;
    let current = read_meta(&tx, "revision")?;
    let compacted_through = read_meta(&tx, "compacted_through")?;
    let Some(through) = watch::chunk_bounds(after, current, compacted_through)? else {
        return Ok(LogChunk {
            events: Vec::new(),
            through: after,
            caught_up: true,
        });
    };
    let end = prefix_end(prefix.as_bytes());
    let mut events = Vec::new();
    {
        // The primary key bounds the scan to the revision range; the key range is
        // only a filter, so a NULL-tolerant upper bound costs nothing.
        let mut stmt = tx
            .prepare_cached(
                "SELECT key, kind, value, create_revision, revision, version FROM changes
                 WHERE revision > ?1 AND revision <= ?2
                   AND key >= ?3 AND (?4 IS NULL OR key < ?4)
                 ORDER BY revision, seq",
            )
            .map_err(sql_err)?;
        let mut rows = stmt
            .query(params![
                to_sql(after)?,
                to_sql(through)?,
                prefix.as_bytes(),
                end
            ])
            .map_err(sql_err)?;
        while let Some(row) = rows.next().map_err(sql_err)? {
            let kind = match row.get::<_, i64>(1).map_err(sql_err)? {
                KIND_PUT => EventKind::Put,
                KIND_DELETE => EventKind::Delete,
                other => {
                    return Err(StoreError::Corrupt(format!("unknown change kind {other}")));
                }
            };
            events.push(Event {
                kind,
                kv: KeyValue {
                    key: key_from_sql(row.get(0).map_err(sql_err)?)?,
                    value: row.get(2).map_err(sql_err)?,
                    create_revision: from_sql(row.get(3).map_err(sql_err)?)?,
                    mod_revision: from_sql(row.get(4).map_err(sql_err)?)?,
                    version: from_sql(row.get(5).map_err(sql_err)?)?,
                },
            });
        }
    }
    tx.finish().map_err(sql_err)?;
    Ok(LogChunk {
        events,
        through,
        caught_up: through == current,
    })
}

fn row_to_kv(row: &rusqlite::Row<'_>) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: key_from_sql(row.get(0).map_err(sql_err)?)?,
        value: row.get(1).map_err(sql_err)?,
        create_revision: from_sql(row.get(2).map_err(sql_err)?)?,
        mod_revision: from_sql(row.get(3).map_err(sql_err)?)?,
        version: from_sql(row.get(4).map_err(sql_err)?)?,
    })
}

/// The smallest byte string greater than every string starting with `prefix`, or
/// `None` when there is none (empty prefix, or only `0xFF` bytes).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn key_from_sql(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|e| StoreError::Corrupt(format!("key is not utf-8: {e}")))
}

fn to_sql(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Unavailable(format!("{value} exceeds sqlite's integer range")))
}

fn from_sql(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative counter {value}")))
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
        {
            StoreError::Corrupt(format!("sqlite: {e}"))
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => {
            StoreError::Corrupt(format!("sqlite: {e}"))
        }
        _ => StoreError::Unavailable(format!("sqlite: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end(&[0x61, 0xFF]), Some(vec![0x62]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
        // "ÿ" is C3 BF: the bound C3 C0 is not UTF-8, which is fine for BLOB keys.
        assert_eq!(prefix_end("ÿ".as_bytes()), Some(vec![0xC3, 0xC0]));
    }

    /// SIGKILL cannot tell `synchronous=FULL` from `OFF` (the page cache survives a
    /// process kill), so the power-loss setting is checked directly.
    #[test]
    fn connections_fsync_every_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("meshplane.db")).expect("open");
        let sync = |conn: &Connection| -> i64 {
            conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
                .expect("pragma")
        };
        assert_eq!(sync(&store.inner.writer()), 2, "FULL");
        let mode: String = store
            .inner
            .writer()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("pragma");
        assert_eq!(mode, "wal");
        let reader_sync = store
            .inner
            .with_reader(|conn| Ok(sync(conn)))
            .expect("reader");
        assert_eq!(reader_sync, 2);
    }
}
