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
//! - Writes: group commit. One dedicated writer thread owns the writer connection
//!   and takes transactions from a queue. When it becomes free it takes everything
//!   queued (up to [`MAX_BATCH`], no timer: a lone write is not delayed) and applies
//!   the batch in one SQLite transaction (`BEGIN IMMEDIATE`), each `Store::txn` in its
//!   own `SAVEPOINT`, in queue order, so a later transaction's preconditions see the
//!   earlier ones' writes and a transaction failing with an SQL error is rolled back
//!   alone. Each transaction that changes something gets the next revision; one
//!   `COMMIT` (one fsync) makes the whole batch durable, and only then are the
//!   in-memory revision moved, the batch's events published (in revision order) and
//!   the callers answered. If `COMMIT` fails every transaction of the batch gets the
//!   error and nothing moves.
//! - Reads use a small pool of read-only connections, which WAL lets run beside the
//!   writer; a listing reads in one read transaction, so it is a consistent snapshot.
//!   Every read runs on the blocking thread pool (`spawn_blocking`), never on an async
//!   worker; writes run on the writer thread.
//! - The file is locked (`<path>.lock`, an OS advisory lock) for the lifetime of the
//!   store: a second opener, in this process or another, gets
//!   [`StoreError::Unavailable`].
//! - Faults are never silent. `PRAGMA quick_check` runs once at open (a damaged file is
//!   refused with [`StoreError::Corrupt`]). After every batch commit the writer compares
//!   the database and WAL files at their paths with the ones it opened (device and
//!   inode, and the link count of the kept database handle): a file removed or replaced
//!   under the running store would take acknowledged writes with it, so the batch is
//!   answered [`StoreError::Unavailable`] instead and the store stays faulted until it
//!   is reopened (one ERROR line says so). Any [`StoreError::Corrupt`] seen by a read or
//!   a write faults it too. A faulted store refuses every write; reads on the
//!   connections already open go on (so the data can still be exported), new read
//!   connections are refused. [`Store::health`] reports the fault.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::MetadataExt as _;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{broadcast, oneshot};

use crate::watch::{self, Batch, LogChunk, LogSource};
use crate::{
    Event, EventKind, KeyValue, ListPage, Op, Precondition, Revision, Store, StoreError,
    StoreOptions, Txn, TxnOutcome, WatchStream,
};

/// The most `Store::txn` calls one SQLite transaction (one fsync) commits together.
const MAX_BATCH: usize = 256;

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

/// The `meta` row holding the store's random identity (added to older files at open).
const STORE_ID: &str = "store_id";

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
    /// The queue of the writer thread, which owns the writer connection. Declared
    /// before `_lock`: dropping it joins the thread, which closes the connection.
    writer: Writer,
    readers: Mutex<Vec<Connection>>,
    /// The last committed revision, for `revision()` without touching the disk
    /// (moved by the writer thread after each commit).
    revision: Arc<AtomicU64>,
    events: broadcast::Sender<Arc<Batch>>,
    options: StoreOptions,
    /// The files' identities and the store's fault, shared with the writer thread.
    guard: Arc<Guard>,
    /// The random identity recorded in the file (`meta.store_id`).
    store_id: u64,
    /// Held for the lifetime of the store; declared last so it is released after the
    /// connections are closed.
    _lock: File,
}

/// Watches the database and WAL files for removal or replacement, and keeps the store's
/// fault, which lasts until the store is reopened.
#[derive(Debug)]
struct Guard {
    path: PathBuf,
    wal_path: PathBuf,
    /// The database file as opened: its link count drops to 0 when it is removed.
    db: File,
    db_id: FileId,
    /// `None` when no WAL file existed at open (then none is watched).
    wal_id: Option<FileId>,
    fault: OnceLock<Fault>,
}

/// A file's identity: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

/// Why the store stopped accepting writes.
#[derive(Debug)]
struct Fault {
    corrupt: bool,
    message: String,
}

/// The store's handle on its writer thread.
#[derive(Debug)]
struct Writer {
    /// `None` only while dropping.
    queue: Option<mpsc::Sender<Request>>,
    /// `None` only while dropping.
    thread: Option<JoinHandle<()>>,
}

/// What the writer thread is asked to do.
enum Request {
    /// Apply a transaction and answer with its outcome.
    Txn {
        txn: Txn,
        reply: oneshot::Sender<Result<TxnOutcome, StoreError>>,
    },
    /// Run a function on the writer connection, between batches.
    #[cfg(test)]
    Inspect(Box<dyn FnOnce(&Connection) + Send>),
}

/// A queued transaction waiting for its batch to commit.
struct Pending {
    txn: Txn,
    reply: oneshot::Sender<Result<TxnOutcome, StoreError>>,
}

/// The writer thread's state: the only user of the writer connection.
struct WriterThread {
    conn: Connection,
    requests: mpsc::Receiver<Request>,
    revision: Arc<AtomicU64>,
    events: broadcast::Sender<Arc<Batch>>,
    options: StoreOptions,
    guard: Arc<Guard>,
}

/// What applying one batch produced (nothing of it is visible before the commit).
#[derive(Debug)]
struct BatchResult {
    /// One result per transaction, in batch order.
    outcomes: Vec<Result<TxnOutcome, StoreError>>,
    /// The committed transactions' events, in revision order.
    published: Vec<Arc<Batch>>,
    /// The store revision after the batch.
    revision: Revision,
}

/// What one transaction of a batch did inside its savepoint.
enum Applied {
    /// It wrote these events (at the revision it was given).
    Changed(Vec<Event>),
    /// Its preconditions held but it changed nothing.
    Unchanged,
    /// The precondition at this index failed.
    Failed(usize),
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
    /// database, was written by a newer format version or fails `PRAGMA quick_check`
    /// (which reads the whole file once).
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
        let (revision, store_id) = init_schema(&mut writer)?;
        quick_check(&writer, path)?;
        let guard = Arc::new(Guard::new(path)?);
        let (events, _) = broadcast::channel(options.broadcast_capacity.max(1));
        let revision_counter = Arc::new(AtomicU64::new(revision));
        let (queue, requests) = mpsc::channel();
        let thread = WriterThread {
            conn: writer,
            requests,
            revision: Arc::clone(&revision_counter),
            events: events.clone(),
            options: options.clone(),
            guard: Arc::clone(&guard),
        };
        let thread = std::thread::Builder::new()
            .name("meshplane-store-writer".to_owned())
            .spawn(move || thread.run())
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the store writer thread: {e}"))
            })?;
        tracing::debug!(path = %path.display(), revision, "opened sqlite store");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Writer {
                    queue: Some(queue),
                    thread: Some(thread),
                },
                readers: Mutex::new(Vec::new()),
                revision: revision_counter,
                events,
                options,
                guard,
                store_id,
                _lock: lock,
            }),
        })
    }

    /// The database file this store was opened on.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The random identity written into the database when it was created (or, for a
    /// file from an older version, when it was first opened by this one): a copy of the
    /// file keeps it, a new database gets another one.
    pub fn store_id(&self) -> u64 {
        self.inner.store_id
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
        // Once queued, the transaction completes (or not) even if this future is
        // dropped; the answer then goes nowhere.
        let (reply, answer) = oneshot::channel();
        self.inner.writer.send(Request::Txn { txn, reply })?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store writer stopped".to_owned()))?
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.revision.load(Ordering::SeqCst))
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        watch::start(&self.inner, prefix, from, self.inner.options.watch_buffer).await
    }

    /// Faulted (file removed or replaced, corruption seen) or the revision row cannot be
    /// read: unhealthy. Costs three `stat`s and one indexed read.
    async fn health(&self) -> Result<(), StoreError> {
        self.blocking(|inner| {
            inner.guard.check()?;
            inner.with_reader(|conn| read_meta(conn, "revision").map(|_| ()))
        })
        .await
    }
}

// === impl Inner ===

impl Inner {
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
            None => {
                let conn = open_reader(&self.path)?;
                // Opened by path: make sure it is still the file the store opened.
                self.guard.check()?;
                conn
            }
        };
        let result = self.guard.observe(f(&mut conn));
        let mut pool = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < MAX_IDLE_READERS && conn.is_autocommit() {
            pool.push(conn);
        }
        result
    }
}

// === impl Guard ===

impl Guard {
    /// Records the identities of the store's files at `path`, as they are now.
    fn new(path: &Path) -> Result<Guard, StoreError> {
        let wal_path = companion(path, "-wal");
        let db = File::open(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let meta = db
            .metadata()
            .map_err(|e| StoreError::Unavailable(format!("cannot stat {}: {e}", path.display())))?;
        let wal_id = std::fs::metadata(&wal_path).ok().map(|m| FileId::of(&m));
        Ok(Guard {
            path: path.to_owned(),
            wal_path,
            db,
            db_id: FileId::of(&meta),
            wal_id,
            fault: OnceLock::new(),
        })
    }

    /// The fault if there is one, else whether the files are still the ones opened
    /// (faulting the store if not).
    fn check(&self) -> Result<(), StoreError> {
        if let Some(fault) = self.fault.get() {
            return Err(fault.error());
        }
        match self.files_changed() {
            None => Ok(()),
            Some(what) => Err(self.fail(false, what)),
        }
    }

    /// What happened to the files, if anything.
    fn files_changed(&self) -> Option<String> {
        let path = self.path.display();
        match std::fs::metadata(&self.path) {
            Ok(m) if FileId::of(&m) == self.db_id => {}
            Ok(_) => return Some(format!("the database file {path} was replaced")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Some(format!("the database file {path} was removed"));
            }
            Err(e) => return Some(format!("cannot stat the database file {path}: {e}")),
        }
        // Same inode at the path, yet unlinked: removed and its name re-linked elsewhere.
        match self.db.metadata() {
            Ok(m) if m.nlink() == 0 => {
                return Some(format!("the database file {path} was removed"));
            }
            Ok(_) => {}
            Err(e) => return Some(format!("cannot stat the open database file {path}: {e}")),
        }
        let wal_id = self.wal_id?;
        let wal = self.wal_path.display();
        match std::fs::metadata(&self.wal_path) {
            Ok(m) if FileId::of(&m) == wal_id => None,
            Ok(_) => Some(format!("the write-ahead log {wal} was replaced")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Some(format!("the write-ahead log {wal} was removed"))
            }
            Err(e) => Some(format!("cannot stat the write-ahead log {wal}: {e}")),
        }
    }

    /// Faults the store (the first fault wins and is logged once) and returns the error
    /// every later write gets.
    fn fail(&self, corrupt: bool, what: String) -> StoreError {
        let message = if corrupt {
            format!(
                "{what}; writes are refused until meshplane restarts (the file {} needs \
                 repair or restoring)",
                self.path.display()
            )
        } else {
            format!(
                "{what} under the running server; writes are refused until meshplane \
                 restarts"
            )
        };
        if self.fault.set(Fault { corrupt, message }).is_ok()
            && let Some(fault) = self.fault.get()
        {
            tracing::error!(
                path = %self.path.display(),
                reason = %fault.message,
                "the store is faulted: restart meshplane once the files are in order"
            );
        }
        self.fault.get().map_or_else(
            || StoreError::Unavailable(format!("{what}; writes are refused")),
            Fault::error,
        )
    }

    /// Passes `result` through, faulting the store on corruption.
    fn observe<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::Corrupt(what)) = &result {
            self.fail(true, format!("store data corrupt: {what}"));
        }
        result
    }
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

impl Fault {
    fn error(&self) -> StoreError {
        if self.corrupt {
            StoreError::Corrupt(self.message.clone())
        } else {
            StoreError::Unavailable(self.message.clone())
        }
    }
}

// === impl Writer ===

impl Writer {
    /// Queues a request for the writer thread.
    fn send(&self, request: Request) -> Result<(), StoreError> {
        let stopped = || StoreError::Unavailable("the store writer stopped".to_owned());
        self.queue
            .as_ref()
            .ok_or_else(stopped)?
            .send(request)
            .map_err(|_| stopped())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue stops the thread once it has applied what was queued
        // (transactions whose callers went away still complete).
        drop(self.queue.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the store writer thread panicked");
        }
    }
}

// === impl WriterThread ===

impl WriterThread {
    /// Commits batches until the queue is closed and drained.
    fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // Block for the first request, then take whatever else is already queued:
        // a lone write is never delayed, and writes that queued up while the previous
        // batch was committing share the next commit.
        while let Ok(first) = self.requests.recv() {
            self.take(first, &mut batch);
            while batch.len() < MAX_BATCH {
                match self.requests.try_recv() {
                    Ok(request) => self.take(request, &mut batch),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                continue;
            }
            let pending = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
            // A panic (a bug) fails this batch only: its callers see their reply
            // channel closed, the rusqlite transaction rolled back while unwinding, and
            // the in-memory revision only moves after a commit.
            let committed =
                std::panic::catch_unwind(AssertUnwindSafe(|| self.commit_batch(pending)));
            if committed.is_err() {
                tracing::error!("the store writer panicked; its batch failed");
            }
        }
        tracing::debug!("store writer stopped");
    }

    fn take(&self, request: Request, batch: &mut Vec<Pending>) {
        match request {
            Request::Txn { txn, reply } => batch.push(Pending { txn, reply }),
            #[cfg(test)]
            Request::Inspect(f) => f(&self.conn),
        }
    }

    /// Applies and commits one batch, then publishes its events and answers every
    /// caller.
    fn commit_batch(&mut self, batch: Vec<Pending>) {
        let (txns, replies): (Vec<Txn>, Vec<_>) =
            batch.into_iter().map(|p| (p.txn, p.reply)).unzip();
        let size = txns.len();
        if let Some(fault) = self.guard.fault.get() {
            for reply in replies {
                let _ = reply.send(Err(fault.error()));
            }
            return;
        }
        let applied = apply_batch(&mut self.conn, txns, &self.options)
            // After the commit, before anything is acknowledged: a batch written to a file
            // that is no longer the store's is lost on restart, so it is not acknowledged.
            .and_then(|result| self.guard.check().map(|()| result));
        match applied {
            Ok(result) => {
                tracing::trace!(size, revision = result.revision, "committed a batch");
                self.revision.store(result.revision, Ordering::SeqCst);
                for batch in result.published {
                    // Never waits: slow receivers observe `Lagged` and catch up from
                    // the log.
                    let _ = self.events.send(batch);
                }
                for (reply, outcome) in replies.into_iter().zip(result.outcomes) {
                    let _ = reply.send(self.guard.observe(outcome));
                }
            }
            Err(e) => {
                let e = self.guard.observe(Err::<(), _>(e)).unwrap_err();
                if self.guard.fault.get().is_none() {
                    tracing::warn!(size, error = %e, "a batch of store transactions failed");
                }
                for reply in replies {
                    let _ = reply.send(Err(copy_error(&e)));
                }
            }
        }
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

/// Applies `txns` in order in one SQLite transaction, each in its own savepoint, and
/// commits it. On `Err` nothing of the batch was committed and every transaction
/// failed with that error; on `Ok` each transaction has its own result.
fn apply_batch(
    conn: &mut Connection,
    txns: Vec<Txn>,
    options: &StoreOptions,
) -> Result<BatchResult, StoreError> {
    let mut tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    // Read inside the write transaction: the source of truth is the file.
    let current = read_meta(&tx, "revision")?;
    let mut revision = current;
    let mut outcomes = Vec::with_capacity(txns.len());
    let mut published = Vec::new();
    for txn in txns {
        let savepoint = tx.savepoint().map_err(sql_err)?;
        match apply_txn(&savepoint, txn, revision + 1) {
            Ok(Applied::Changed(events)) => {
                savepoint.commit().map_err(sql_err)?;
                revision += 1;
                published.push(Arc::new(Batch { revision, events }));
                outcomes.push(Ok(TxnOutcome::Committed { revision }));
            }
            // Dropping the savepoint rolls it back (there is nothing to undo).
            Ok(Applied::Unchanged) => outcomes.push(Ok(TxnOutcome::Committed { revision })),
            Ok(Applied::Failed(precondition)) => {
                outcomes.push(Ok(TxnOutcome::Failed { precondition }));
            }
            Err(e) => {
                // Undo this transaction's partial writes only. Some errors (I/O, full
                // disk) make SQLite roll back the whole transaction: then the batch as
                // a whole has failed.
                let undone = savepoint.finish();
                if undone.is_err() || tx.is_autocommit() {
                    return Err(e);
                }
                outcomes.push(Err(e));
            }
        }
    }
    if revision == current {
        // Nothing changed: dropping `tx` rolls back the (empty) transaction.
        return Ok(BatchResult {
            outcomes,
            published,
            revision,
        });
    }
    write_meta(&tx, "revision", revision)?;
    let compacted_through = read_meta(&tx, "compacted_through")?;
    if let Some(through) = options.compaction_due(revision, compacted_through) {
        let through_sql = to_sql(through)?;
        tx.prepare_cached("DELETE FROM changes WHERE revision <= ?1")
            .and_then(|mut s| s.execute([through_sql]))
            .map_err(sql_err)?;
        write_meta(&tx, "compacted_through", through)?;
    }
    tx.commit().map_err(sql_err)?;
    Ok(BatchResult {
        outcomes,
        published,
        revision,
    })
}

/// Checks `txn`'s preconditions and, when they hold, applies its operations and
/// appends them to the change log at `revision` (meta is the batch's business).
fn apply_txn(conn: &Connection, txn: Txn, revision: Revision) -> Result<Applied, StoreError> {
    for (index, precondition) in txn.preconditions.iter().enumerate() {
        if !holds(conn, precondition)? {
            return Ok(Applied::Failed(index));
        }
    }
    let rev = to_sql(revision)?;
    let mut events = Vec::new();
    for op in txn.ops {
        match op {
            Op::Put { key, value } => {
                let (create_revision, version): (i64, i64) = conn
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
                let deleted = conn
                    .prepare_cached("DELETE FROM kv WHERE key = ?1")
                    .and_then(|mut s| s.execute([key.as_bytes()]))
                    .map_err(sql_err)?;
                if deleted > 0 {
                    events.push(Event::deleted(key, revision));
                }
            }
        }
    }
    if events.is_empty() {
        // No ops, or only deletes of missing keys: no new revision.
        return Ok(Applied::Unchanged);
    }
    let mut insert = conn
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
    Ok(Applied::Changed(events))
}

/// The same error again, for each transaction of a failed batch.
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Compacted { requested, oldest } => StoreError::Compacted {
            requested: *requested,
            oldest: *oldest,
        },
        StoreError::Unavailable(msg) => StoreError::Unavailable(msg.clone()),
        StoreError::Corrupt(msg) => StoreError::Corrupt(msg.clone()),
    }
}

async fn run_blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
}

/// `path` with `suffix` appended (`meshplane.db-wal`, `meshplane.db.lock`).
fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

fn lock_file(path: &Path) -> Result<File, StoreError> {
    let lock_path = companion(path, ".lock");
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
    connect(path, OpenFlags::default())
}

fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql_err)?;
    Ok(conn)
}

/// A read connection never creates the file: if it is gone, the read fails.
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = connect(path, OpenFlags::default() - OpenFlags::SQLITE_OPEN_CREATE)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(sql_err)?;
    Ok(conn)
}

/// Creates the schema in a new file, or checks the format version of an existing one.
/// Returns the current revision and the store id (created if missing).
fn init_schema(conn: &mut Connection) -> Result<(Revision, u64), StoreError> {
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
    let store_id = match tx
        .query_row("SELECT value FROM meta WHERE name = ?1", [STORE_ID], |r| {
            r.get::<_, i64>(0)
        })
        .optional()
        .map_err(sql_err)?
    {
        Some(id) => from_sql(id)?,
        None => {
            let id = new_store_id();
            tx.execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2)",
                params![STORE_ID, to_sql(id)?],
            )
            .map_err(sql_err)?;
            id
        }
    };
    tx.commit().map_err(sql_err)?;
    Ok((revision, store_id))
}

/// A random non-zero identity that fits SQLite's integers.
fn new_store_id() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    // `RandomState` keys come from the OS's randomness (a new pair per instance); the
    // time and pid only add to them.
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    (h.finish() >> 1).max(1)
}

/// `PRAGMA quick_check` once at open: a damaged file is refused with what SQLite found.
fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mut stmt = conn.prepare("PRAGMA quick_check(5)").map_err(sql_err)?;
    let found: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| {
            StoreError::Corrupt(format!(
                "{} failed its integrity check: {e}",
                path.display()
            ))
        })?;
    if found.len() == 1 && found[0] == "ok" {
        return Ok(());
    }
    Err(StoreError::Corrupt(format!(
        "{} failed its integrity check: {}",
        path.display(),
        found.join("; ")
    )))
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
        Precondition::PrefixCountBelow(prefix, limit) => {
            // Counts at most `limit` keys: the cost is bounded by the quota, not the table.
            let n = to_sql((*limit).min(i64::MAX as u64))?;
            let count: i64 = match prefix_end(prefix.as_bytes()) {
                Some(end) => {
                    conn.prepare_cached(
                        "SELECT COUNT(*) FROM (SELECT 1 FROM kv
                         WHERE key >= ?1 AND key < ?2 LIMIT ?3)",
                    )
                    .and_then(|mut s| s.query_row(params![prefix.as_bytes(), end, n], |r| r.get(0)))
                }
                None => conn
                    .prepare_cached(
                        "SELECT COUNT(*) FROM (SELECT 1 FROM kv WHERE key >= ?1 LIMIT ?2)",
                    )
                    .and_then(|mut s| s.query_row(params![prefix.as_bytes(), n], |r| r.get(0))),
            }
            .map_err(sql_err)?;
            Ok(count < n)
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
        let (writer_sync, mode) = with_writer(&store, move |conn| {
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .expect("pragma");
            (sync(conn), mode)
        });
        assert_eq!(writer_sync, 2, "FULL");
        assert_eq!(mode, "wal");
        let reader_sync = store
            .inner
            .with_reader(|conn| Ok(sync(conn)))
            .expect("reader");
        assert_eq!(reader_sync, 2);
    }

    /// Runs `f` on the writer thread's connection, between batches.
    fn with_writer<T: Send + 'static>(
        store: &SqliteStore,
        f: impl FnOnce(&Connection) -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        store
            .inner
            .writer
            .send(Request::Inspect(Box::new(move |conn| {
                let _ = tx.send(f(conn));
            })))
            .expect("writer running");
        rx.recv().expect("writer answered")
    }

    fn put(key: &str) -> Op {
        Op::Put {
            key: key.to_owned(),
            value: b"x".to_vec(),
        }
    }

    fn txn(preconditions: Vec<Precondition>, ops: Vec<Op>) -> Txn {
        Txn { preconditions, ops }
    }

    /// A fresh database's writer connection, without a store around it.
    fn bare_writer(dir: &tempfile::TempDir) -> Connection {
        let mut conn = open_connection(&dir.path().join("meshplane.db")).expect("open");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        init_schema(&mut conn).expect("schema");
        conn
    }

    fn committed(outcome: &Result<TxnOutcome, StoreError>) -> Option<Revision> {
        match outcome {
            Ok(TxnOutcome::Committed { revision }) => Some(*revision),
            _ => None,
        }
    }

    /// In one batch, later transactions see earlier ones' writes, failures and no-ops
    /// take no revision, and a transaction failing with an SQL error after writing is
    /// rolled back alone while the others commit.
    #[test]
    fn a_batch_applies_in_order_and_isolates_each_txn() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = bare_writer(&dir);
        // Any insert of the key "boom" fails with an SQL error.
        conn.execute_batch(
            "CREATE TEMP TRIGGER boom BEFORE INSERT ON kv
             WHEN NEW.key = CAST('boom' AS BLOB)
             BEGIN SELECT RAISE(ABORT, 'boom'); END;",
        )
        .expect("trigger");
        let options = StoreOptions::default();
        let txns = vec![
            txn(vec![Precondition::Absent("a".into())], vec![put("a")]), // 1
            txn(vec![Precondition::Absent("a".into())], vec![put("a")]), // fails: sees a
            txn(
                vec![Precondition::ModRevision("a".into(), 1)],
                vec![put("a")],
            ), // 2
            txn(vec![], vec![put("partial"), put("boom")]),              // SQL error after a write
            txn(vec![], vec![]),                                         // no-op at 2
            txn(
                vec![],
                vec![Op::Delete {
                    key: "missing".into(),
                }],
            ), // no-op at 2
            txn(
                vec![Precondition::ModRevision("a".into(), 2)],
                vec![put("b")],
            ), // 3
        ];
        let result = apply_batch(&mut conn, txns, &options).expect("batch commits");
        let o = &result.outcomes;
        assert_eq!(committed(&o[0]), Some(1));
        assert!(matches!(o[1], Ok(TxnOutcome::Failed { precondition: 0 })));
        assert_eq!(committed(&o[2]), Some(2));
        assert!(matches!(&o[3], Err(StoreError::Unavailable(m)) if m.contains("boom")));
        assert_eq!(committed(&o[4]), Some(2));
        assert_eq!(committed(&o[5]), Some(2));
        assert_eq!(committed(&o[6]), Some(3));
        assert_eq!(result.revision, 3);
        let revisions: Vec<_> = result.published.iter().map(|b| b.revision).collect();
        assert_eq!(revisions, [1, 2, 3]);
        // Durable in the file: the meta revision, the data and the change log.
        assert!(conn.is_autocommit(), "committed");
        assert_eq!(read_meta(&conn, "revision").expect("meta"), 3);
        assert_eq!(get_kv(&conn, "partial").expect("get"), None, "rolled back");
        let a = get_kv(&conn, "a").expect("get").expect("a");
        assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 2, 2));
        let log: i64 = conn
            .query_row("SELECT count(*) FROM changes", [], |r| r.get(0))
            .expect("count");
        assert_eq!(log, 3);
        // A batch where nothing changes commits nothing.
        let result = apply_batch(
            &mut conn,
            vec![txn(vec![Precondition::Absent("a".into())], vec![put("a")])],
            &options,
        )
        .expect("batch");
        assert!(matches!(
            result.outcomes[..],
            [Ok(TxnOutcome::Failed { precondition: 0 })]
        ));
        assert_eq!((result.revision, result.published.len()), (3, 0));
    }

    /// A failing COMMIT fails every transaction of the batch and moves nothing: not
    /// the file, not the in-memory revision, not the watches.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_fails_the_whole_batch() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("meshplane.db")).expect("open");
        let store = Arc::new(store);
        assert!(matches!(
            store.txn(txn(vec![], vec![put("before")])).await,
            Ok(TxnOutcome::Committed { revision: 1 })
        ));
        let mut watch = store.watch("", 1).await.expect("watch");
        // A deferred foreign key violated at COMMIT makes the COMMIT fail.
        with_writer(&store, |conn| {
            conn.execute_batch(
                "PRAGMA foreign_keys = ON;
                 CREATE TEMP TABLE parent (id BLOB PRIMARY KEY);
                 CREATE TEMP TABLE child (id BLOB REFERENCES parent (id)
                     DEFERRABLE INITIALLY DEFERRED);
                 CREATE TEMP TRIGGER orphan AFTER INSERT ON kv
                 WHEN NEW.key = CAST('orphan' AS BLOB)
                 BEGIN INSERT INTO temp.child (id) VALUES (NEW.key); END;",
            )
            .expect("setup");
        });
        // Hold the writer so that the transactions below queue up into one batch.
        let release = hold_writer(&store);
        let answers: Vec<_> = ["x", "orphan", "y"]
            .into_iter()
            .map(|key| queue(&store, txn(vec![], vec![put(key)])))
            .collect();
        release.send(()).expect("release");
        for answer in answers {
            match answer.await.expect("answered") {
                Err(StoreError::Unavailable(m)) => assert!(m.contains("FOREIGN KEY"), "{m}"),
                other => panic!("expected the commit error, got {other:?}"),
            }
        }
        assert_eq!(store.revision().await.expect("revision"), 1);
        assert_eq!(store.get("x").await.expect("get"), None);
        // The store goes on: the next commit takes revision 2, the first event the
        // watch sees.
        assert!(matches!(
            store.txn(txn(vec![], vec![put("after")])).await,
            Ok(TxnOutcome::Committed { revision: 2 })
        ));
        let event = tokio::time::timeout(Duration::from_secs(10), watch.recv())
            .await
            .expect("event in time")
            .expect("watch open")
            .expect("event");
        assert_eq!((event.kv.key.as_str(), event.revision()), ("after", 2));
    }

    /// Transactions queued while the writer is busy share one commit and still get
    /// their own outcomes and consecutive revisions.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_transactions_share_a_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("meshplane.db")).expect("open");
        let release = hold_writer(&store);
        let answers: Vec<_> = (0..20)
            .map(|i| {
                let key = format!("k{i}");
                queue(
                    &store,
                    txn(vec![Precondition::Absent(key.clone())], vec![put(&key)]),
                )
            })
            .collect();
        let wal_before = wal_frames(&dir);
        release.send(()).expect("release");
        let mut revisions = Vec::new();
        for answer in answers {
            revisions.push(committed(&answer.await.expect("answered")).expect("committed"));
        }
        // Queue order is revision order.
        assert_eq!(revisions, (1..=20).collect::<Vec<_>>());
        // One commit: the WAL grew by the pages of a single transaction, far fewer
        // frames than 20 separate commits (at least 20 x 3 pages) would write.
        let grown = wal_frames(&dir) - wal_before;
        assert!(grown < 20, "{grown} WAL frames for one batch");
        assert_eq!(store.revision().await.expect("revision"), 20);
    }

    /// Blocks the writer thread until the returned sender is used (or dropped).
    fn hold_writer(store: &SqliteStore) -> std::sync::mpsc::Sender<()> {
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (held, is_held) = std::sync::mpsc::channel::<()>();
        store
            .inner
            .writer
            .send(Request::Inspect(Box::new(move |_| {
                let _ = held.send(());
                let _ = hold.recv();
            })))
            .expect("writer running");
        is_held.recv().expect("writer held");
        release
    }

    /// Queues `txn` for the writer, as `Store::txn` does, returning its answer.
    fn queue(store: &SqliteStore, txn: Txn) -> oneshot::Receiver<Result<TxnOutcome, StoreError>> {
        let (reply, answer) = oneshot::channel();
        store
            .inner
            .writer
            .send(Request::Txn { txn, reply })
            .expect("writer running");
        answer
    }

    /// Frames in the WAL file (its size past the header, in 4 KiB pages + headers).
    fn wal_frames(dir: &tempfile::TempDir) -> u64 {
        let len = std::fs::metadata(dir.path().join("meshplane.db-wal")).map_or(0, |m| m.len());
        len.saturating_sub(32) / (4096 + 24)
    }
}
