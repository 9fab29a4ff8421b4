//! Tuning knobs shared by every backend: change-log retention and watch buffering.

use crate::Revision;

/// Retention and buffering settings of a store (the same for every backend).
///
/// ```
/// # use meshplane_store::StoreOptions;
/// let options = StoreOptions { history_revisions: 10_000, ..StoreOptions::default() };
/// assert_eq!(options.watch_buffer, StoreOptions::DEFAULT_WATCH_BUFFER);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// How many of the newest revisions the change log keeps, at least, to serve
    /// [`Store::watch`](crate::Store::watch) from a past revision. A watch from before
    /// that window fails with [`StoreError::Compacted`](crate::StoreError::Compacted).
    pub history_revisions: u64,
    /// How many revisions beyond `history_revisions` the log may grow before a write
    /// compacts it back to exactly `history_revisions` (0 compacts on every write).
    /// The log therefore holds between `history` and `history + slack` revisions.
    pub compaction_slack: u64,
    /// Capacity, in events, of each [`WatchStream`](crate::WatchStream) (0 counts as 1).
    /// While it is full the watch stops reading live events; it catches up from the
    /// change log once the consumer reads again (see the crate docs).
    pub watch_buffer: usize,
    /// Capacity, in committed transactions, of the in-process broadcast that feeds
    /// live watches (0 counts as 1). Writers never wait on it; a watch that falls
    /// further behind than this catches up from the change log.
    pub broadcast_capacity: usize,
}

// === impl StoreOptions ===

impl StoreOptions {
    /// Default for [`StoreOptions::history_revisions`]: about a day of heavy API use,
    /// and a few tens of megabytes of log at typical resource sizes.
    pub const DEFAULT_HISTORY_REVISIONS: u64 = 100_000;
    /// Default for [`StoreOptions::compaction_slack`]: compacting once per thousand
    /// commits keeps the cost of the delete off nearly every write.
    pub const DEFAULT_COMPACTION_SLACK: u64 = 1_000;
    /// Default for [`StoreOptions::watch_buffer`].
    pub const DEFAULT_WATCH_BUFFER: usize = 256;
    /// Default for [`StoreOptions::broadcast_capacity`].
    pub const DEFAULT_BROADCAST_CAPACITY: usize = 1_024;

    /// The new compaction point after committing `revision` when the log has been
    /// compacted through `compacted_through`, or `None` if no compaction is due.
    pub(crate) fn compaction_due(
        &self,
        revision: Revision,
        compacted_through: Revision,
    ) -> Option<Revision> {
        let retained = revision.saturating_sub(compacted_through);
        let threshold = self.history_revisions.saturating_add(self.compaction_slack);
        (retained > threshold).then(|| revision - self.history_revisions)
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            history_revisions: Self::DEFAULT_HISTORY_REVISIONS,
            compaction_slack: Self::DEFAULT_COMPACTION_SLACK,
            watch_buffer: Self::DEFAULT_WATCH_BUFFER,
            broadcast_capacity: Self::DEFAULT_BROADCAST_CAPACITY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_keeps_history_within_slack() {
        let o = StoreOptions {
            history_revisions: 5,
            compaction_slack: 3,
            ..StoreOptions::default()
        };
        assert_eq!(o.compaction_due(8, 0), None);
        assert_eq!(o.compaction_due(9, 0), Some(4));
        assert_eq!(o.compaction_due(12, 4), None);
        assert_eq!(o.compaction_due(13, 4), Some(8));
        let every = StoreOptions {
            compaction_slack: 0,
            ..o.clone()
        };
        assert_eq!(every.compaction_due(5, 0), None);
        assert_eq!(every.compaction_due(6, 0), Some(1));
        let none = StoreOptions {
            history_revisions: 0,
            ..every
        };
        assert_eq!(none.compaction_due(1, 0), Some(1));
    }
}
