//! Watch machinery shared by the backends: committed batches on a bounded broadcast,
//! replay from a change log, and the per-watch forwarding task that stitches the two
//! together with no gap and no duplicate.
//!
//! ```text
//!  writer (serialised) ── commit ──> change log (disk or memory, bounded by compaction)
//!         │
//!         └── broadcast::send(Batch)   never waits; slow receivers observe `Lagged`
//!                   │
//!   watch task: subscribe ─> replay log (from, R] ─> live batches > R ─> mpsc ─> consumer
//!                   ^                                       │ lagged / gap
//!                   └──────────── catch up from the log <───┘
//! ```
//!
//! Correctness of the hand-over: a batch is published after its commit, and the watch
//! subscribes before it reads the log. So every commit is either in the log snapshot
//! the watch reads, or published after the subscription (or both: duplicates are
//! dropped by revision). The broadcast either delivers consecutive batches or reports
//! `Lagged`, in which case the task re-reads the log from the last revision it covered.

use std::future::Future;
use std::sync::{Arc, Weak};

use tokio::sync::{broadcast, mpsc};

use crate::{Event, Revision, StoreError, WatchStream};

/// How many revisions one log read covers at most, so a replay of a long history
/// streams instead of materialising the whole log.
pub(crate) const REPLAY_CHUNK: Revision = 1_024;

/// The events of one committed transaction, as published to live watches.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) revision: Revision,
    pub(crate) events: Vec<Event>,
}

/// A slice of the change log: the events under a prefix with revision in
/// `(after, through]`.
#[derive(Debug)]
pub(crate) struct LogChunk {
    pub(crate) events: Vec<Event>,
    pub(crate) through: Revision,
    /// `through` was the store's current revision when the chunk was read.
    pub(crate) caught_up: bool,
}

/// What a backend provides to serve watches.
pub(crate) trait LogSource: Send + Sync + 'static {
    /// A receiver of batches committed from now on.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>>;

    /// Reads the next chunk of the log after `after` (see [`chunk_bounds`]).
    fn read_log(
        self: Arc<Self>,
        prefix: String,
        after: Revision,
    ) -> impl Future<Output = Result<LogChunk, StoreError>> + Send;
}

// === fns ===

/// The revision range a log read after `after` covers, given the store's `current`
/// revision and the revision the log is compacted through: `Ok(None)` when there is
/// nothing to read (caught up), `Ok(Some(through))` for `(after, through]`.
pub(crate) fn chunk_bounds(
    after: Revision,
    current: Revision,
    compacted_through: Revision,
) -> Result<Option<Revision>, StoreError> {
    if after < compacted_through {
        return Err(StoreError::Compacted {
            requested: after,
            oldest: compacted_through + 1,
        });
    }
    if after >= current {
        return Ok(None);
    }
    Ok(Some(current.min(after.saturating_add(REPLAY_CHUNK))))
}

/// Starts a watch: subscribes, reads the first log chunk (so a compacted start fails
/// here, synchronously), then hands over to a forwarding task.
pub(crate) async fn start<S: LogSource>(
    source: &Arc<S>,
    prefix: &str,
    from: Revision,
    buffer: usize,
) -> Result<WatchStream, StoreError> {
    let live = source.subscribe();
    let first = Arc::clone(source).read_log(prefix.to_owned(), from).await?;
    let (tx, rx) = mpsc::channel(buffer.max(1));
    tokio::spawn(forward(
        Arc::downgrade(source),
        prefix.to_owned(),
        live,
        first,
        tx,
    ));
    Ok(rx)
}

/// The per-watch task. It holds only a weak reference to the store, so dropping the
/// store ends its watches (with [`StoreError::Unavailable`]).
async fn forward<S: LogSource>(
    source: Weak<S>,
    prefix: String,
    mut live: broadcast::Receiver<Arc<Batch>>,
    first: LogChunk,
    tx: mpsc::Sender<Result<Event, StoreError>>,
) {
    let mut chunk = first;
    loop {
        // Replay from the log until caught up with the revision read with the chunk.
        let mut covered = loop {
            for event in chunk.events {
                if tx.send(Ok(event)).await.is_err() {
                    return; // the consumer dropped the stream
                }
            }
            if chunk.caught_up {
                break chunk.through;
            }
            match read(&source, &prefix, chunk.through).await {
                Ok(next) => chunk = next,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        };
        // Live: consecutive batches from the broadcast.
        loop {
            let received = tokio::select! {
                received = live.recv() => received,
                () = tx.closed() => return,
            };
            match received {
                Ok(batch) if batch.revision <= covered => {} // already replayed
                Ok(batch) if batch.revision == covered + 1 => {
                    for event in batch
                        .events
                        .iter()
                        .filter(|e| e.kv.key.starts_with(&prefix))
                    {
                        if tx.send(Ok(event.clone())).await.is_err() {
                            return;
                        }
                    }
                    covered = batch.revision;
                }
                // A gap cannot happen by construction; recover from the log regardless.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = tx.send(Err(closed())).await;
                    return;
                }
            }
        }
        tracing::debug!(prefix = %prefix, covered, "watch fell behind, catching up from the log");
        match read(&source, &prefix, covered).await {
            Ok(next) => chunk = next,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

async fn read<S: LogSource>(
    source: &Weak<S>,
    prefix: &str,
    after: Revision,
) -> Result<LogChunk, StoreError> {
    let source = source.upgrade().ok_or_else(closed)?;
    source.read_log(prefix.to_owned(), after).await
}

fn closed() -> StoreError {
    StoreError::Unavailable("store closed".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_bounds_cover_the_log_in_steps() {
        assert_eq!(chunk_bounds(0, 0, 0).ok(), Some(None));
        assert_eq!(chunk_bounds(0, 5, 0).ok(), Some(Some(5)));
        assert_eq!(chunk_bounds(7, 5, 0).ok(), Some(None));
        assert_eq!(chunk_bounds(0, 5_000, 0).ok(), Some(Some(REPLAY_CHUNK)));
        assert!(matches!(
            chunk_bounds(3, 10, 4),
            Err(StoreError::Compacted {
                requested: 3,
                oldest: 5
            })
        ));
        assert_eq!(chunk_bounds(4, 10, 4).ok(), Some(Some(10)));
    }
}
