//! `MemoryStore`: the store semantics held in process memory, for fast tests.
//!
//! Everything lives behind one mutex that is held only for short, synchronous
//! sections (never across an `.await`). The change log is a bounded queue of committed
//! batches, compacted exactly like the SQLite backend's, so watch and compaction
//! behaviour match the durable store.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::watch::{self, Batch, LogChunk, LogSource};
use crate::{
    Event, EventKind, KeyValue, ListPage, Op, Precondition, Revision, Store, StoreError,
    StoreOptions, Txn, TxnOutcome, WatchStream,
};

/// An in-memory [`Store`] with the same semantics as [`SqliteStore`](crate::SqliteStore)
/// (revisions, preconditions, watch, bounded history), minus durability.
///
/// Cloning is cheap and yields a handle to the same data. The data is dropped with
/// the last handle, which also ends every open watch.
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<Batch>>,
    options: StoreOptions,
}

#[derive(Debug, Default)]
struct State {
    kv: BTreeMap<String, Entry>,
    revision: Revision,
    compacted_through: Revision,
    /// Batches with consecutive revisions `compacted_through + 1 ..= revision`.
    log: VecDeque<Arc<Batch>>,
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    create_revision: Revision,
    mod_revision: Revision,
    version: u64,
}

// === impl MemoryStore ===

impl MemoryStore {
    /// An empty store at revision 0 with default [`StoreOptions`].
    pub fn new() -> Self {
        Self::with_options(StoreOptions::default())
    }

    /// An empty store at revision 0.
    pub fn with_options(options: StoreOptions) -> Self {
        let (events, _) = broadcast::channel(options.broadcast_capacity.max(1));
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                events,
                options,
            }),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let state = self.inner.lock();
        Ok(state.kv.get(key).map(|e| e.to_kv(key)))
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let state = self.inner.lock();
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut matching = state
            .kv
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix));
        let mut items = Vec::new();
        let mut more = false;
        for (key, entry) in matching.by_ref() {
            if limit != 0 && items.len() == limit {
                more = true;
                break;
            }
            items.push(entry.to_kv(key));
        }
        Ok(ListPage {
            items,
            revision: state.revision,
            more,
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let mut state = self.inner.lock();
        if let Some(failed) = state.first_failing(&txn.preconditions) {
            return Ok(TxnOutcome::Failed {
                precondition: failed,
            });
        }
        let revision = state.revision + 1;
        let mut events = Vec::new();
        for op in txn.ops {
            match op {
                Op::Put { key, value } => {
                    let entry = match state.kv.remove(&key) {
                        Some(old) => Entry {
                            value,
                            create_revision: old.create_revision,
                            mod_revision: revision,
                            version: old.version + 1,
                        },
                        None => Entry {
                            value,
                            create_revision: revision,
                            mod_revision: revision,
                            version: 1,
                        },
                    };
                    events.push(Event {
                        kind: EventKind::Put,
                        kv: entry.to_kv(&key),
                    });
                    state.kv.insert(key, entry);
                }
                Op::Delete { key } => {
                    if state.kv.remove(&key).is_some() {
                        events.push(Event::deleted(key, revision));
                    }
                }
            }
        }
        if events.is_empty() {
            // No operation changed anything (none, or deletes of missing keys).
            return Ok(TxnOutcome::Committed {
                revision: state.revision,
            });
        }
        let batch = Arc::new(Batch { revision, events });
        state.revision = revision;
        state.log.push_back(Arc::clone(&batch));
        if let Some(through) = self
            .inner
            .options
            .compaction_due(revision, state.compacted_through)
        {
            while state.log.front().is_some_and(|b| b.revision <= through) {
                state.log.pop_front();
            }
            state.compacted_through = through;
        }
        // Published under the lock so batches go out in revision order; never waits.
        let _ = self.inner.events.send(batch);
        Ok(TxnOutcome::Committed { revision })
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.lock().revision)
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        watch::start(&self.inner, prefix, from, self.inner.options.watch_buffer).await
    }
}

// === impl Inner ===

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is only mutated after every check passed, by code that does not
        // panic midway, so a poisoned lock still guards consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
        let state = self.lock();
        let Some(through) = watch::chunk_bounds(after, state.revision, state.compacted_through)?
        else {
            return Ok(LogChunk {
                events: Vec::new(),
                through: after,
                caught_up: true,
            });
        };
        // The log holds consecutive revisions starting at compacted_through + 1.
        let skip = usize::try_from(after - state.compacted_through)
            .map_err(|_| StoreError::Corrupt("log offset overflow".to_owned()))?;
        let events = state
            .log
            .range(skip.min(state.log.len())..)
            .take_while(|b| b.revision <= through)
            .flat_map(|b| b.events.iter())
            .filter(|e| e.kv.key.starts_with(&prefix))
            .cloned()
            .collect();
        Ok(LogChunk {
            events,
            through,
            caught_up: through == state.revision,
        })
    }
}

// === impl State ===

impl State {
    fn first_failing(&self, preconditions: &[Precondition]) -> Option<usize> {
        preconditions.iter().position(|p| !self.holds(p))
    }

    fn holds(&self, precondition: &Precondition) -> bool {
        match precondition {
            Precondition::Absent(key) => !self.kv.contains_key(key),
            Precondition::ModRevision(key, rev) => {
                self.kv.get(key).is_some_and(|e| e.mod_revision == *rev)
            }
            Precondition::PrefixUnchangedSince(prefix, rev) => !self
                .kv
                .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix.as_str()))
                .any(|(_, e)| e.mod_revision > *rev),
            Precondition::PrefixCountBelow(prefix, limit) => {
                (self
                    .kv
                    .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(prefix.as_str()))
                    .take(usize::try_from(*limit).unwrap_or(usize::MAX))
                    .count() as u64)
                    < *limit
            }
        }
    }
}

// === impl Entry ===

impl Entry {
    fn to_kv(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
        }
    }
}
