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
#![forbid(unsafe_code)]

use async_trait::async_trait;

/// A global, monotonically increasing revision; 0 means "before any write".
pub type Revision = u64;

/// A stored key and value with its revision bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
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
}

/// A write inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8> },
    /// Deleting a missing key is a no-op.
    Delete { key: String },
}

/// Preconditions and the operations applied when they all hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub preconditions: Vec<Precondition>,
    pub ops: Vec<Op>,
}

/// What a transaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// All preconditions held; the operations were applied durably at this revision.
    /// A transaction with no operations commits without creating a revision and reports
    /// the current one.
    Committed { revision: Revision },
    /// The precondition at this index failed; nothing was written.
    Failed { precondition: usize },
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
    pub kind: EventKind,
    /// For puts, the new key-value; for deletes, the key with an empty value and
    /// `mod_revision` set to the delete's revision.
    pub kv: KeyValue,
}

/// Put or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

impl Event {
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
    Compacted { requested: Revision, oldest: Revision },
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
}
