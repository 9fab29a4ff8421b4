//! The store: a revisioned key-value interface shared by every backend.
//!
//! ```text
//!   rest (writes, via txn with preconditions)      runtime reconciler (watch from revision)
//!                    \                                 /
//!                     Store trait  ── SqliteStore (embedded default, WAL, one file)
//!                                  ── MemoryStore (tests)
//!                                  ── (etcd, later: same semantics as etcd v3)
//! ```
//!
//! Semantics follow etcd v3 so that an etcd backend is a thin mapping:
//! - every committed transaction gets the next global `revision` (starting at 1);
//! - each key records the revision that created it and last modified it, and a
//!   per-key `version` (1 on create, +1 per put);
//! - a transaction applies all its operations atomically if and only if all its
//!   preconditions hold (compare-and-set);
//! - `watch(prefix, from)` delivers every event with revision > `from`, in order,
//!   then live events; if `from` is older than the retained history it fails with
//!   [`StoreError::Compacted`] and the caller re-lists.
//!
//! This crate knows nothing of App Mesh: keys and values are opaque strings and bytes.
//!
//! # Backends
//!
//! - [`SqliteStore`]: the embedded, durable default (one SQLite file in WAL mode,
//!   `synchronous=FULL`, a bounded change log serving watches from past revisions;
//!   concurrent transactions are group-committed, sharing one SQLite commit and one
//!   fsync, each with its own outcome and revision).
//! - [`MemoryStore`]: the same semantics in memory, for fast tests.
//!
//! Both are tuned by [`StoreOptions`] (change-log retention and watch buffering) and
//! both pass the backend-agnostic suite in the `conformance` module (cargo feature
//! `conformance`), which a future etcd backend runs too through the
//! `store_conformance_tests!` macro.
//!
//! # Details the trait docs leave open
//!
//! - A transaction whose operations change nothing (no operations, or only deletes of
//!   missing keys) commits without creating a revision, as in etcd.
//! - Operations of one transaction apply in order; a key put twice in one transaction
//!   gets its version bumped twice and yields two events at the same revision.
//! - Delete events carry `create_revision = 0` and `version = 0`, as in etcd.
//! - Keys compare as UTF-8 bytes, so `"a/z" < "a/é"`.
//! - Watches never block writers: each watch is fed from a bounded broadcast of
//!   committed batches and has a bounded output channel. A watcher that falls behind
//!   the broadcast catches up from the change log; if the log has been compacted past
//!   its position, the watch yields [`StoreError::Compacted`] and ends, and the
//!   consumer re-lists and watches again from the listed revision.
//!   A watch also yields [`StoreError::Unavailable`] and ends when its store is dropped
//!   or the log cannot be read.
//!
//! - [`Store::health`] is what `/healthz` asks. `SqliteStore` checks `PRAGMA quick_check`
//!   at open and, after every commit, that its database and WAL files are still the ones
//!   it opened: a removed or replaced file fails the batch with
//!   [`StoreError::Unavailable`] instead of acknowledging writes that a restart would lose.
//!
//! What this crate does not do: no TTLs or leases, no multi-process sharing of one
//! SQLite file (the file is locked by its opener), no schema beyond opaque keys.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use async_trait::async_trait;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod memory;
mod options;
mod retry;
mod sqlite;
mod watch;

pub use memory::MemoryStore;
pub use options::StoreOptions;
pub use retry::Backoff;
pub use sqlite::SqliteStore;

/// A global, monotonically increasing revision; 0 means "before any write".
pub type Revision = u64;

/// A stored key and value with its revision bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key (compared as UTF-8 bytes).
    pub key: String,
    /// The value: opaque bytes (empty in delete events).
    pub value: Vec<u8>,
    /// Revision of the transaction that created the key.
    pub create_revision: Revision,
    /// Revision of the transaction that last put the key (or deleted it, in delete events).
    pub mod_revision: Revision,
    /// Number of puts since creation: 1 on create.
    pub version: u64,
}

/// A condition checked atomically with a transaction's operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// The key does not exist.
    Absent(String),
    /// The key exists and was last modified at exactly this revision.
    ModRevision(String, Revision),
    /// No key with this prefix was created or modified after this revision.
    /// (Deletions under the prefix do not violate it.)
    PrefixUnchangedSince(String, Revision),
    /// Fewer than this many keys exist under the prefix (before this transaction's
    /// operations). A quota check that conflicts with nothing: concurrent creates under the
    /// same prefix all commit while there is room, and the first one past the limit fails.
    /// (An etcd backend evaluates it as a count read at revision R plus a range compare
    /// "no key created under the prefix after R", retried on failure.)
    PrefixCountBelow(String, u64),
}

/// A write inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Creates or replaces `key`.
    Put {
        /// The key to write.
        key: String,
        /// The new value.
        value: Vec<u8>,
    },
    /// Deleting a missing key is a no-op.
    Delete {
        /// The key to delete.
        key: String,
    },
}

/// Preconditions and the operations applied when they all hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// Checked in order; the first failing one is reported.
    pub preconditions: Vec<Precondition>,
    /// Applied in order, atomically, when every precondition holds.
    pub ops: Vec<Op>,
}

/// What a transaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// All preconditions held; the operations were applied durably at this revision.
    /// A transaction with no operations commits without creating a revision and reports
    /// the current one.
    Committed {
        /// The revision of the commit (or the current one if nothing changed).
        revision: Revision,
    },
    /// The precondition at this index failed; nothing was written.
    Failed {
        /// Index into [`Txn::preconditions`] of the first failing precondition.
        precondition: usize,
    },
}

/// A page of a prefix listing, read at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    /// Sorted by key (byte order).
    pub items: Vec<KeyValue>,
    /// The store revision the page was read at.
    pub revision: Revision,
    /// True when more keys follow the last one returned.
    pub more: bool,
}

/// A change delivered by [`Store::watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Whether the key was put or deleted.
    pub kind: EventKind,
    /// For puts, the new key-value; for deletes, the key with an empty value and
    /// `mod_revision` set to the delete's revision.
    pub kv: KeyValue,
}

/// Put or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or replaced.
    Put,
    /// The key was deleted.
    Delete,
}

impl Event {
    /// The event of deleting `key` at `revision` (empty value, as watches deliver it).
    pub fn deleted(key: String, revision: Revision) -> Event {
        Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key,
                value: Vec::new(),
                create_revision: 0,
                mod_revision: revision,
                version: 0,
            },
        }
    }

    /// The revision at which the event happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A live watch: events in revision order. Dropping it cancels the watch.
pub type WatchStream = tokio::sync::mpsc::Receiver<Result<Event, StoreError>>;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The requested watch start is older than the retained history.
    #[error("revision {requested} has been compacted (oldest retained: {oldest})")]
    Compacted {
        /// The revision the watch asked to start after.
        requested: Revision,
        /// The oldest revision still in the history: watch from `oldest - 1` or later.
        oldest: Revision,
    },
    /// The backend cannot be reached or failed an I/O operation.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
}

/// A revisioned key-value store (see the crate docs for the semantics).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Lists keys starting with `prefix`, in key order, strictly after `start_after`,
    /// at most `limit` of them (`0` = no limit). The page is a consistent snapshot.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError>;

    /// Applies `txn` atomically if all its preconditions hold. `Committed` means durable:
    /// it survives a crash of the process (and, for the embedded store, of the machine).
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError>;

    /// The current revision.
    async fn revision(&self) -> Result<Revision, StoreError>;

    /// Streams every event under `prefix` with revision > `from`, then live events.
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError>;

    /// Whether the store can take writes now: cheap enough for every health probe.
    /// An error says why not (for [`SqliteStore`]: its file was removed or replaced
    /// under it, or corruption was seen; it stays unhealthy until reopened).
    /// The default asks for the current revision.
    async fn health(&self) -> Result<(), StoreError> {
        self.revision().await.map(|_| ())
    }
}
