//! The backend conformance suite: generic test bodies that every [`Store`] backend
//! must pass, and [`store_conformance_tests!`](crate::store_conformance_tests) to run
//! them all as `#[tokio::test]`s.
//!
//! A backend crate enables the `conformance` feature in its dev-dependencies and
//! writes, in a test file:
//!
//! ```text
//! meshplane_store::store_conformance_tests!(|options| {
//!     // Any expression (it may `.await`) giving `(store, guard)`: `guard` is kept
//!     // alive for the test (a temp dir, a server process, `()`).
//!     (my_backend::open_for_test(options).await, ())
//! });
//! ```
//!
//! `options` is a [`StoreOptions`]; most tests pass the defaults, the compaction and
//! slow-watcher tests shrink the history and buffers. The calling crate needs
//! `tokio` (with `macros` and `rt-multi-thread`) as a dev-dependency.
//!
//! Every body panics with a message on failure and bounds each wait by
//! [`WAIT`], so a broken backend fails instead of hanging.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::{
    Event, EventKind, ListPage, Op, Precondition, Revision, Store, StoreError, StoreOptions, Txn,
    TxnOutcome, WatchStream,
};

/// The longest any single wait (an event, a batch of writes) may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Runs every conformance test against a backend; see the [module docs](self).
#[macro_export]
macro_rules! store_conformance_tests {
    (|$options:ident| $make:expr) => {
        $crate::store_conformance_tests!(@tests |$options| $make;
            revision_starts_at_zero_and_increments_per_commit($crate::StoreOptions::default()),
            key_bookkeeping_follows_etcd($crate::StoreOptions::default()),
            absent_precondition($crate::StoreOptions::default()),
            mod_revision_precondition($crate::StoreOptions::default()),
            failing_txn_writes_nothing_and_reports_index($crate::StoreOptions::default()),
            prefix_unchanged_since_ignores_deletions_catches_creates_and_updates(
                $crate::StoreOptions::default()
            ),
            prefix_count_below_counts_live_keys_under_the_prefix($crate::StoreOptions::default()),
            concurrent_creates_under_a_count_limit_stop_exactly_at_it(
                $crate::StoreOptions::default()
            ),
            list_is_sorted_by_bytes_and_isolates_prefixes($crate::StoreOptions::default()),
            list_paginates_with_start_after_and_limit($crate::StoreOptions::default()),
            list_is_a_consistent_snapshot_under_concurrent_writes(
                $crate::StoreOptions::default()
            ),
            delete_of_missing_key_is_a_noop($crate::StoreOptions::default()),
            put_then_delete_in_one_txn($crate::StoreOptions::default()),
            watch_from_zero_replays_everything_then_goes_live($crate::StoreOptions::default()),
            watch_from_a_middle_revision($crate::StoreOptions::default()),
            watch_filters_by_prefix($crate::StoreOptions::default()),
            watch_from_the_future_waits_for_it($crate::StoreOptions::default()),
            watch_from_compacted_revision_fails($crate::conformance::small_history()),
            concurrent_compare_and_set_loses_no_update($crate::StoreOptions::default()),
            concurrent_creates_get_distinct_revisions_in_watch_order(
                $crate::StoreOptions::default()
            ),
            concurrent_conflicting_txns_have_exactly_one_winner(
                $crate::StoreOptions::default()
            ),
            concurrent_failures_and_noops_take_no_revision($crate::StoreOptions::default()),
            watch_sees_concurrent_writes_in_order_without_duplicates(
                $crate::StoreOptions::default()
            ),
            watches_started_during_writes_have_no_gap_or_duplicate(
                $crate::StoreOptions::default()
            ),
            slow_watcher_does_not_block_writers_and_catches_up(
                $crate::conformance::tiny_buffers()
            ),
            slow_watcher_past_history_ends_with_compacted(
                $crate::conformance::tiny_buffers_small_history()
            ),
        );
    };
    (@tests |$options:ident| $make:expr; $($name:ident($opts:expr)),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let $options: $crate::StoreOptions = $opts;
                let (store, _guard) = $make;
                $crate::conformance::$name(store).await;
            }
        )*
    };
}

// === options used by the suite ===

/// History of 5 revisions, compacted on every write.
pub fn small_history() -> StoreOptions {
    StoreOptions {
        history_revisions: 5,
        compaction_slack: 0,
        ..StoreOptions::default()
    }
}

/// Watch buffers of 2 events and a broadcast of 2 batches, with ample history.
pub fn tiny_buffers() -> StoreOptions {
    StoreOptions {
        watch_buffer: 2,
        broadcast_capacity: 2,
        ..StoreOptions::default()
    }
}

/// [`tiny_buffers`] with [`small_history`].
pub fn tiny_buffers_small_history() -> StoreOptions {
    StoreOptions {
        watch_buffer: 2,
        broadcast_capacity: 2,
        ..small_history()
    }
}

// === helpers ===

/// A put operation.
pub fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.to_owned(),
        value: value.as_bytes().to_vec(),
    }
}

/// A delete operation.
pub fn delete(key: &str) -> Op {
    Op::Delete {
        key: key.to_owned(),
    }
}

/// Runs `txn`, asserting it commits, and returns the revision.
pub async fn commit<S: Store + ?Sized>(store: &S, txn: Txn) -> Revision {
    match store.txn(txn.clone()).await {
        Ok(TxnOutcome::Committed { revision }) => revision,
        other => panic!("expected {txn:?} to commit, got {other:?}"),
    }
}

/// Commits a single put and returns its revision.
pub async fn put_one<S: Store + ?Sized>(store: &S, key: &str, value: &str) -> Revision {
    commit(
        store,
        Txn {
            preconditions: vec![],
            ops: vec![put(key, value)],
        },
    )
    .await
}

/// Runs `txn`, asserting it fails at precondition `index`.
pub async fn expect_failed<S: Store + ?Sized>(store: &S, txn: Txn, index: usize) {
    match store.txn(txn.clone()).await {
        Ok(TxnOutcome::Failed { precondition }) if precondition == index => {}
        other => panic!("expected {txn:?} to fail at precondition {index}, got {other:?}"),
    }
}

/// The next event of a watch, panicking on error, end of stream or timeout.
pub async fn next_event(rx: &mut WatchStream) -> Event {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no event within {WAIT:?}"),
    }
}

fn keys(page: &ListPage) -> Vec<&str> {
    page.items.iter().map(|kv| kv.key.as_str()).collect()
}

fn summary(event: &Event) -> (EventKind, String, Revision) {
    (event.kind, event.kv.key.clone(), event.revision())
}

async fn list<S: Store>(store: &S, prefix: &str, after: Option<&str>, limit: usize) -> ListPage {
    match store.list(prefix, after, limit).await {
        Ok(page) => page,
        Err(e) => panic!("list({prefix:?}, {after:?}, {limit}) failed: {e}"),
    }
}

async fn revision<S: Store>(store: &S) -> Revision {
    match store.revision().await {
        Ok(r) => r,
        Err(e) => panic!("revision() failed: {e}"),
    }
}

async fn get<S: Store>(store: &S, key: &str) -> Option<crate::KeyValue> {
    match store.get(key).await {
        Ok(kv) => kv,
        Err(e) => panic!("get({key:?}) failed: {e}"),
    }
}

async fn watch<S: Store>(store: &S, prefix: &str, from: Revision) -> WatchStream {
    match store.watch(prefix, from).await {
        Ok(rx) => rx,
        Err(e) => panic!("watch({prefix:?}, {from}) failed: {e}"),
    }
}

// === the suite ===

/// The revision is 0 before any write and grows by exactly 1 per committed
/// transaction that changes something, however many operations it holds.
pub async fn revision_starts_at_zero_and_increments_per_commit<S: Store>(store: S) {
    assert_eq!(revision(&store).await, 0);
    assert_eq!(
        commit(&store, Txn::default()).await,
        0,
        "empty txn creates no revision"
    );
    assert_eq!(put_one(&store, "a", "1").await, 1);
    assert_eq!(revision(&store).await, 1);
    let three = Txn {
        preconditions: vec![],
        ops: vec![put("b", "1"), put("c", "1"), delete("a")],
    };
    assert_eq!(
        commit(&store, three).await,
        2,
        "one revision per txn, not per op"
    );
    assert_eq!(revision(&store).await, 2);
    assert_eq!(commit(&store, Txn::default()).await, 2);
    assert_eq!(revision(&store).await, 2);
    assert_eq!(put_one(&store, "a", "2").await, 3);
}

/// create_revision, mod_revision and version follow etcd: version 1 on create, +1
/// per put, and a fresh history after delete and re-create.
pub async fn key_bookkeeping_follows_etcd<S: Store>(store: S) {
    assert_eq!(get(&store, "k").await, None);
    put_one(&store, "k", "v1").await;
    put_one(&store, "other", "x").await;
    let kv = get(&store, "k").await.expect("k exists");
    assert_eq!((kv.key.as_str(), kv.value.as_slice()), ("k", &b"v1"[..]));
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (1, 1, 1));
    put_one(&store, "k", "v2").await;
    let kv = get(&store, "k").await.expect("k exists");
    assert_eq!(kv.value, b"v2");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (1, 3, 2));
    put_one(&store, "k", "v2").await;
    let kv = get(&store, "k").await.expect("k exists");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (1, 4, 3));
    commit(
        &store,
        Txn {
            preconditions: vec![],
            ops: vec![delete("k")],
        },
    )
    .await;
    assert_eq!(get(&store, "k").await, None);
    put_one(&store, "k", "v3").await;
    let kv = get(&store, "k").await.expect("k exists");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (6, 6, 1));
    // Binary values round-trip unchanged.
    let bytes: Vec<u8> = (0..=255).collect();
    commit(
        &store,
        Txn {
            preconditions: vec![],
            ops: vec![Op::Put {
                key: "bin".to_owned(),
                value: bytes.clone(),
            }],
        },
    )
    .await;
    assert_eq!(get(&store, "bin").await.map(|kv| kv.value), Some(bytes));
}

/// `Absent` holds for a missing (or deleted) key and fails for an existing one.
pub async fn absent_precondition<S: Store>(store: S) {
    let create = |value: &str| Txn {
        preconditions: vec![Precondition::Absent("k".to_owned())],
        ops: vec![put("k", value)],
    };
    assert_eq!(commit(&store, create("first")).await, 1);
    expect_failed(&store, create("second"), 0).await;
    assert_eq!(
        get(&store, "k").await.map(|kv| kv.value),
        Some(b"first".to_vec())
    );
    commit(
        &store,
        Txn {
            preconditions: vec![],
            ops: vec![delete("k")],
        },
    )
    .await;
    assert_eq!(commit(&store, create("third")).await, 3);
}

/// `ModRevision` holds only when the key exists with exactly that mod revision.
pub async fn mod_revision_precondition<S: Store>(store: S) {
    let cas = |rev: Revision, value: &str| Txn {
        preconditions: vec![Precondition::ModRevision("k".to_owned(), rev)],
        ops: vec![put("k", value)],
    };
    expect_failed(&store, cas(0, "x"), 0).await; // missing key
    put_one(&store, "k", "v1").await;
    put_one(&store, "unrelated", "x").await;
    expect_failed(&store, cas(2, "x"), 0).await; // wrong revision (the store's, not k's)
    expect_failed(&store, cas(0, "x"), 0).await;
    assert_eq!(commit(&store, cas(1, "v2")).await, 3);
    expect_failed(&store, cas(1, "v3"), 0).await; // stale
    assert_eq!(commit(&store, cas(3, "v3")).await, 4);
    assert_eq!(
        get(&store, "k").await.map(|kv| kv.value),
        Some(b"v3".to_vec())
    );
}

/// A failing transaction writes nothing, creates no revision, and reports the index
/// of the first failing precondition.
pub async fn failing_txn_writes_nothing_and_reports_index<S: Store>(store: S) {
    put_one(&store, "exists", "1").await;
    let txn = Txn {
        preconditions: vec![
            Precondition::ModRevision("exists".to_owned(), 1),
            Precondition::Absent("new".to_owned()),
            Precondition::Absent("exists".to_owned()),
            Precondition::Absent("also-fails-but-later".to_owned()),
        ],
        ops: vec![put("new", "x"), delete("exists"), put("exists", "changed")],
    };
    expect_failed(&store, txn, 2).await;
    assert_eq!(revision(&store).await, 1);
    assert_eq!(get(&store, "new").await, None);
    let kv = get(&store, "exists").await.expect("exists");
    assert_eq!((kv.value.as_slice(), kv.version), (&b"1"[..], 1));
    let mut rx = watch(&store, "", 0).await;
    put_one(&store, "after", "x").await;
    let events: Vec<_> = [next_event(&mut rx).await, next_event(&mut rx).await]
        .iter()
        .map(summary)
        .collect();
    assert_eq!(
        events,
        [
            (EventKind::Put, "exists".to_owned(), 1),
            (EventKind::Put, "after".to_owned(), 2)
        ],
        "a failed txn emits no event"
    );
}

/// `PrefixUnchangedSince` fails on a create or an update under the prefix after the
/// revision, ignores deletions, and ignores keys outside the prefix (`a/` vs `ab`).
pub async fn prefix_unchanged_since_ignores_deletions_catches_creates_and_updates<S: Store>(
    store: S,
) {
    let guarded = |rev: Revision| Txn {
        preconditions: vec![
            Precondition::Absent("unrelated".to_owned()),
            Precondition::PrefixUnchangedSince("a/".to_owned(), rev),
        ],
        ops: vec![put("marker", &rev.to_string())],
    };
    put_one(&store, "a/1", "x").await; // 1
    put_one(&store, "a/2", "x").await; // 2
    // Created at 1 and 2: unchanged since 2, changed since 1.
    commit(&store, guarded(2)).await; // 3
    expect_failed(&store, guarded(1), 1).await;
    // Keys outside the prefix do not count, even sharing its first byte.
    put_one(&store, "ab", "x").await; // 4
    put_one(&store, "a", "x").await; // 5
    commit(&store, guarded(2)).await; // 6
    // Deletion under the prefix does not violate it.
    commit(
        &store,
        Txn {
            preconditions: vec![],
            ops: vec![delete("a/1")],
        },
    )
    .await; // 7
    commit(&store, guarded(2)).await; // 8
    // An update does.
    put_one(&store, "a/2", "y").await; // 9
    expect_failed(&store, guarded(8), 1).await;
    commit(&store, guarded(9)).await; // 10
    // A create does.
    put_one(&store, "a/3", "x").await; // 11
    expect_failed(&store, guarded(10), 1).await;
    commit(&store, guarded(11)).await;
    // The empty prefix covers every key.
    let all = |rev: Revision| Txn {
        preconditions: vec![Precondition::PrefixUnchangedSince(String::new(), rev)],
        ops: vec![put("marker", "all")],
    };
    let now = revision(&store).await;
    expect_failed(&store, all(now - 1), 0).await;
    commit(&store, all(now)).await;
}

/// `PrefixCountBelow` counts the keys under the prefix as they are before the
/// transaction's own operations: deleted keys and keys outside the prefix (`q/` vs `qq`)
/// do not count.
pub async fn prefix_count_below_counts_live_keys_under_the_prefix<S: Store>(store: S) {
    let below = |n: u64, key: &str| Txn {
        preconditions: vec![
            Precondition::Absent("unrelated".to_owned()),
            Precondition::PrefixCountBelow("q/".to_owned(), n),
        ],
        ops: vec![put(key, "x")],
    };
    // Empty prefix: 0 < 1.
    commit(&store, below(1, "q/1")).await;
    // One key now: 1 < 1 fails, and nothing is written.
    expect_failed(&store, below(1, "q/2"), 1).await;
    assert!(get(&store, "q/2").await.is_none());
    commit(&store, below(2, "q/2")).await;
    // Keys outside the prefix, even sharing its first bytes, do not count.
    put_one(&store, "qq", "x").await;
    put_one(&store, "q", "x").await;
    commit(&store, below(3, "q/3")).await;
    expect_failed(&store, below(3, "q/4"), 1).await;
    // An update of an existing key is counted once.
    put_one(&store, "q/1", "y").await;
    expect_failed(&store, below(3, "q/4"), 1).await;
    // A deleted key frees its place.
    commit(
        &store,
        Txn {
            preconditions: vec![],
            ops: vec![delete("q/1")],
        },
    )
    .await;
    commit(&store, below(3, "q/4")).await;
    // A limit of 0 never holds.
    expect_failed(&store, below(0, "q/5"), 1).await;
}

/// 48 concurrent creates of distinct keys, each guarded by "fewer than 20 keys under the
/// prefix": exactly 20 commit, whatever the backend groups together.
pub async fn concurrent_creates_under_a_count_limit_stop_exactly_at_it<S: Store>(store: S) {
    const TXNS: usize = 48;
    const LIMIT: u64 = 20;
    let store = Arc::new(store);
    let txns = (0..TXNS)
        .map(|i| {
            let key = format!("quota/{i:02}");
            Txn {
                preconditions: vec![
                    Precondition::Absent(key.clone()),
                    Precondition::PrefixCountBelow("quota/".to_owned(), LIMIT),
                ],
                ops: vec![put(&key, "x")],
            }
        })
        .collect();
    let outcomes = run_concurrently(&store, txns).await;
    let committed = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(TxnOutcome::Committed { .. })))
        .count();
    let failed_on_quota = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(TxnOutcome::Failed { precondition: 1 })))
        .count();
    assert_eq!(
        (committed, failed_on_quota),
        (LIMIT as usize, TXNS - LIMIT as usize)
    );
    let page = store.list("quota/", None, 0).await.expect("list");
    assert_eq!(page.items.len(), LIMIT as usize);
}

/// Listing is in byte order, a prefix returns exactly the keys starting with it, and
/// the page carries the current revision.
pub async fn list_is_sorted_by_bytes_and_isolates_prefixes<S: Store>(store: S) {
    let all = [
        "a", "a/1", "a/10", "a/2", "a/z", "a/é", "a/é/1", "a/ê", "ab", "b/1", "ÿ1", "Ā",
    ];
    // Insert in a scrambled order, in two transactions.
    let (first, second): (Vec<_>, Vec<_>) =
        all.iter().rev().enumerate().partition(|(i, _)| i % 2 == 0);
    for half in [first, second] {
        commit(
            &store,
            Txn {
                preconditions: vec![],
                ops: half.into_iter().map(|(_, k)| put(k, k)).collect(),
            },
        )
        .await;
    }
    let page = list(&store, "", None, 0).await;
    let mut sorted = all.to_vec();
    sorted.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    assert_eq!(keys(&page), sorted);
    assert_eq!((page.revision, page.more), (2, false));
    assert_eq!(
        keys(&list(&store, "a/", None, 0).await),
        ["a/1", "a/10", "a/2", "a/z", "a/é", "a/é/1", "a/ê"]
    );
    assert_eq!(keys(&list(&store, "a/é", None, 0).await), ["a/é", "a/é/1"]);
    assert_eq!(keys(&list(&store, "a", None, 0).await).len(), 9);
    assert_eq!(keys(&list(&store, "ÿ", None, 0).await), ["ÿ1"]);
    assert_eq!(keys(&list(&store, "c", None, 0).await), Vec::<&str>::new());
    let page = list(&store, "b/", None, 0).await;
    let kv = &page.items[0];
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.version),
        (&b"b/1"[..], kv.mod_revision, 1)
    );
}

/// `start_after` and `limit` page through a prefix; `more` says whether keys follow.
pub async fn list_paginates_with_start_after_and_limit<S: Store>(store: S) {
    for key in ["p/1", "p/2", "p/3", "p/4", "p/5", "q/1", "o/9"] {
        put_one(&store, key, "x").await;
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = list(&store, "p/", after.as_deref(), 2).await;
        assert_eq!(page.revision, 7);
        pages += 1;
        seen.extend(page.items.iter().map(|kv| kv.key.clone()));
        after = page.items.last().map(|kv| kv.key.clone());
        assert!(page.items.len() <= 2);
        if !page.more {
            break;
        }
        assert!(pages < 10, "pagination does not terminate");
    }
    assert_eq!(seen, ["p/1", "p/2", "p/3", "p/4", "p/5"]);
    assert_eq!(pages, 3);
    // A limit that ends exactly at the last key reports no more.
    let page = list(&store, "p/", Some("p/3"), 2).await;
    assert_eq!((keys(&page), page.more), (vec!["p/4", "p/5"], false));
    let page = list(&store, "p/", None, 5).await;
    assert_eq!((page.items.len(), page.more), (5, false));
    let page = list(&store, "p/", None, 4).await;
    assert_eq!((page.items.len(), page.more), (4, true));
    // start_after before the prefix, between keys, and past the end.
    assert_eq!(keys(&list(&store, "p/", Some("a"), 1).await), ["p/1"]);
    assert_eq!(
        keys(&list(&store, "p/", Some("p/25"), 0).await),
        ["p/3", "p/4", "p/5"]
    );
    let page = list(&store, "p/", Some("p/5"), 0).await;
    assert_eq!((page.items.len(), page.more), (0, false));
    let page = list(&store, "p/", Some("z"), 3).await;
    assert_eq!((page.items.len(), page.more), (0, false));
}

/// While every transaction rewrites all keys of a prefix, each listing (and each of
/// its pages) shows them all at the page's revision: a page never mixes snapshots.
pub async fn list_is_a_consistent_snapshot_under_concurrent_writes<S: Store>(store: S) {
    const KEYS: usize = 10;
    const WRITES: usize = 150;
    let store = Arc::new(store);
    let rewrite_all = |round: usize| Txn {
        preconditions: vec![],
        ops: (0..KEYS)
            .map(|k| put(&format!("l/{k}"), &round.to_string()))
            .collect(),
    };
    commit(&*store, rewrite_all(0)).await;
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for round in 1..=WRITES {
                commit(&*store, rewrite_all(round)).await;
            }
        })
    };
    let mut checked = 0;
    while !writer.is_finished() || checked == 0 {
        let page = list(&*store, "l/", None, 0).await;
        assert_eq!(page.items.len(), KEYS);
        let value = page.items[0].value.clone();
        for kv in &page.items {
            assert_eq!(
                kv.mod_revision, page.revision,
                "{kv:?} in a page at {}",
                page.revision
            );
            assert_eq!(kv.value, value, "one page mixes two transactions");
        }
        // A single limited page is a snapshot too.
        let page = list(&*store, "l/", Some("l/3"), 4).await;
        assert!(page.items.iter().all(|kv| kv.mod_revision == page.revision));
        checked += 1;
    }
    if let Err(e) = writer.await {
        panic!("writer failed: {e}");
    }
    assert_eq!(revision(&*store).await as usize, WRITES + 1);
}

/// Deleting a missing key changes nothing: no revision, no event, no error.
pub async fn delete_of_missing_key_is_a_noop<S: Store>(store: S) {
    put_one(&store, "k", "v").await;
    let mut rx = watch(&store, "", 1).await;
    let noop = Txn {
        preconditions: vec![],
        ops: vec![delete("missing"), delete("also-missing")],
    };
    assert_eq!(commit(&store, noop).await, 1);
    assert_eq!(revision(&store).await, 1);
    put_one(&store, "k", "w").await;
    assert_eq!(
        summary(&next_event(&mut rx).await),
        (EventKind::Put, "k".to_owned(), 2),
        "a no-op delete emits no event"
    );
}

/// Operations in one transaction apply in order and all share its revision.
pub async fn put_then_delete_in_one_txn<S: Store>(store: S) {
    let mut rx = watch(&store, "", 0).await;
    let txn = Txn {
        preconditions: vec![],
        ops: vec![put("x", "1"), put("y", "1"), delete("x")],
    };
    assert_eq!(commit(&store, txn).await, 1);
    assert_eq!(get(&store, "x").await, None);
    assert_eq!(get(&store, "y").await.map(|kv| kv.mod_revision), Some(1));
    let events = [
        summary(&next_event(&mut rx).await),
        summary(&next_event(&mut rx).await),
        summary(&next_event(&mut rx).await),
    ];
    assert_eq!(
        events,
        [
            (EventKind::Put, "x".to_owned(), 1),
            (EventKind::Put, "y".to_owned(), 1),
            (EventKind::Delete, "x".to_owned(), 1)
        ]
    );
    // Replay yields the same events as the live stream.
    let mut replay = watch(&store, "", 0).await;
    let replayed = [
        summary(&next_event(&mut replay).await),
        summary(&next_event(&mut replay).await),
        summary(&next_event(&mut replay).await),
    ];
    assert_eq!(replayed, events);
}

/// `watch(prefix, 0)` replays the whole history, then delivers live events, with the
/// same content a live watcher saw (including delete events' shape).
pub async fn watch_from_zero_replays_everything_then_goes_live<S: Store>(store: S) {
    let mut live = watch(&store, "", 0).await;
    put_one(&store, "a", "1").await;
    put_one(&store, "b", "1").await;
    put_one(&store, "a", "2").await;
    commit(
        &store,
        Txn {
            preconditions: vec![],
            ops: vec![delete("b")],
        },
    )
    .await;
    let mut replay = watch(&store, "", 0).await;
    let mut live_events = Vec::new();
    let mut replayed = Vec::new();
    for _ in 0..4 {
        live_events.push(next_event(&mut live).await);
        replayed.push(next_event(&mut replay).await);
    }
    assert_eq!(replayed, live_events, "replayed events equal live ones");
    assert_eq!(
        replayed.iter().map(summary).collect::<Vec<_>>(),
        [
            (EventKind::Put, "a".to_owned(), 1),
            (EventKind::Put, "b".to_owned(), 2),
            (EventKind::Put, "a".to_owned(), 3),
            (EventKind::Delete, "b".to_owned(), 4)
        ]
    );
    let put_a = &replayed[2].kv;
    assert_eq!(
        (put_a.value.as_slice(), put_a.create_revision, put_a.version),
        (&b"2"[..], 1, 2)
    );
    let del = &replayed[3].kv;
    assert!(del.value.is_empty());
    assert_eq!(
        (del.create_revision, del.mod_revision, del.version),
        (0, 4, 0)
    );
    put_one(&store, "c", "1").await;
    assert_eq!(
        summary(&next_event(&mut replay).await),
        (EventKind::Put, "c".to_owned(), 5)
    );
    assert_eq!(
        summary(&next_event(&mut live).await),
        (EventKind::Put, "c".to_owned(), 5)
    );
}

/// `watch(prefix, r)` starts strictly after `r`.
pub async fn watch_from_a_middle_revision<S: Store>(store: S) {
    for i in 1..=10 {
        put_one(&store, &format!("k{i:02}"), "x").await;
    }
    let mut rx = watch(&store, "", 6).await;
    for expected in 7..=10 {
        assert_eq!(next_event(&mut rx).await.revision(), expected);
    }
    put_one(&store, "k11", "x").await;
    let event = next_event(&mut rx).await;
    assert_eq!((event.kv.key.as_str(), event.revision()), ("k11", 11));
    // Watching from the current revision yields only new events.
    let mut rx = watch(&store, "", 11).await;
    put_one(&store, "k12", "x").await;
    assert_eq!(next_event(&mut rx).await.revision(), 12);
}

/// A watch only sees keys under its prefix, in replay and live.
pub async fn watch_filters_by_prefix<S: Store>(store: S) {
    put_one(&store, "a/1", "x").await;
    put_one(&store, "ab", "x").await;
    put_one(&store, "a", "x").await;
    put_one(&store, "a/2", "x").await;
    let mut rx = watch(&store, "a/", 0).await;
    assert_eq!(
        summary(&next_event(&mut rx).await),
        (EventKind::Put, "a/1".to_owned(), 1)
    );
    assert_eq!(
        summary(&next_event(&mut rx).await),
        (EventKind::Put, "a/2".to_owned(), 4)
    );
    commit(
        &store,
        Txn {
            preconditions: vec![],
            ops: vec![put("ab", "y"), put("b/1", "y"), put("a/3", "y")],
        },
    )
    .await;
    put_one(&store, "ac", "y").await;
    commit(
        &store,
        Txn {
            preconditions: vec![],
            ops: vec![delete("ab"), delete("a/1")],
        },
    )
    .await;
    assert_eq!(
        summary(&next_event(&mut rx).await),
        (EventKind::Put, "a/3".to_owned(), 5)
    );
    assert_eq!(
        summary(&next_event(&mut rx).await),
        (EventKind::Delete, "a/1".to_owned(), 7)
    );
}

/// A watch from a revision not reached yet delivers events after it once they happen.
pub async fn watch_from_the_future_waits_for_it<S: Store>(store: S) {
    put_one(&store, "k", "1").await;
    let mut rx = watch(&store, "", 3).await;
    put_one(&store, "k", "2").await; // 2
    put_one(&store, "k", "3").await; // 3
    put_one(&store, "k", "4").await; // 4
    assert_eq!(next_event(&mut rx).await.revision(), 4);
}

/// With a short history, a watch from before the retained window fails with
/// `Compacted`, and one from inside it replays the rest. (Options: [`small_history`].)
pub async fn watch_from_compacted_revision_fails<S: Store>(store: S) {
    for i in 1..=20 {
        put_one(&store, &format!("k{i}"), "x").await;
    }
    let oldest = match store.watch("", 0).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!(requested, 0);
            assert!(
                (2..=16).contains(&oldest),
                "history of 5 keeps 16..=20, got {oldest}"
            );
            oldest
        }
        other => panic!("expected Compacted, got {:?}", other.map(|_| "a stream")),
    };
    assert!(matches!(
        store.watch("k", oldest - 2).await,
        Err(StoreError::Compacted { .. })
    ));
    let mut rx = watch(&store, "", 15).await;
    for expected in 16..=20 {
        assert_eq!(next_event(&mut rx).await.revision(), expected);
    }
    put_one(&store, "k21", "x").await;
    assert_eq!(next_event(&mut rx).await.revision(), 21);
    // Compaction never loses current data.
    let page = list(&store, "", None, 0).await;
    assert_eq!((page.items.len(), page.revision), (21, 21));
}

/// 16 tasks each increment one counter 50 times with compare-and-set and retry on
/// `Failed`: the counter ends at exactly 800, one revision per increment.
pub async fn concurrent_compare_and_set_loses_no_update<S: Store>(store: S) {
    const TASKS: u64 = 16;
    const INCREMENTS: u64 = 50;
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            for _ in 0..INCREMENTS {
                loop {
                    let current = get(&*store, "counter").await;
                    let (value, precondition) = match &current {
                        None => (0, Precondition::Absent("counter".to_owned())),
                        Some(kv) => {
                            let text = String::from_utf8_lossy(&kv.value);
                            let value: u64 = match text.parse() {
                                Ok(v) => v,
                                Err(e) => panic!("counter {text:?} is not a number: {e}"),
                            };
                            (
                                value,
                                Precondition::ModRevision("counter".to_owned(), kv.mod_revision),
                            )
                        }
                    };
                    let txn = Txn {
                        preconditions: vec![precondition],
                        ops: vec![put("counter", &(value + 1).to_string())],
                    };
                    match store.txn(txn).await {
                        Ok(TxnOutcome::Committed { .. }) => break,
                        Ok(TxnOutcome::Failed { precondition: 0 }) => conflicts += 1,
                        other => panic!("unexpected txn result {other:?}"),
                    }
                }
            }
            conflicts
        }));
    }
    for task in tasks {
        match tokio::time::timeout(WAIT * 3, task).await {
            Ok(Ok(_conflicts)) => {}
            Ok(Err(e)) => panic!("increment task failed: {e}"),
            Err(_) => panic!("increments did not finish in time"),
        }
    }
    let kv = get(&*store, "counter").await.expect("counter exists");
    assert_eq!(kv.value, (TASKS * INCREMENTS).to_string().as_bytes());
    assert_eq!(kv.version, TASKS * INCREMENTS);
    assert_eq!(revision(&*store).await, TASKS * INCREMENTS);
}

/// Runs `txns` concurrently, all released together (so that a backend that groups
/// concurrent transactions sees them at once); returns the outcomes in input order.
async fn run_concurrently<S: Store>(
    store: &Arc<S>,
    txns: Vec<Txn>,
) -> Vec<Result<TxnOutcome, StoreError>> {
    let barrier = Arc::new(tokio::sync::Barrier::new(txns.len()));
    let mut tasks = Vec::new();
    for txn in txns {
        let store = Arc::clone(store);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.txn(txn).await
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        match tokio::time::timeout(WAIT, task).await {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            Ok(Err(e)) => panic!("txn task failed: {e}"),
            Err(_) => panic!("concurrent txns did not finish within {WAIT:?}"),
        }
    }
    outcomes
}

/// 64 concurrent transactions each creating a distinct key all commit, with distinct
/// revisions 1..=64 (one each), and a watch delivers their events in revision order,
/// each at the revision its transaction reported.
pub async fn concurrent_creates_get_distinct_revisions_in_watch_order<S: Store>(store: S) {
    const TXNS: usize = 64;
    let store = Arc::new(store);
    let mut rx = watch(&*store, "c/", 0).await;
    let txns = (0..TXNS)
        .map(|i| {
            let key = format!("c/{i:02}");
            Txn {
                preconditions: vec![Precondition::Absent(key.clone())],
                ops: vec![put(&key, &i.to_string())],
            }
        })
        .collect();
    let outcomes = run_concurrently(&store, txns).await;
    let mut revision_of = std::collections::BTreeMap::new();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Ok(TxnOutcome::Committed { revision }) => {
                if let Some(other) = revision_of.insert(revision, format!("c/{i:02}")) {
                    panic!("revision {revision} reported to both {other} and c/{i:02}");
                }
            }
            other => panic!("create of c/{i:02} did not commit: {other:?}"),
        }
    }
    let revisions: Vec<Revision> = revision_of.keys().copied().collect();
    assert_eq!(revisions, (1..=TXNS as Revision).collect::<Vec<_>>());
    assert_eq!(revision(&*store).await, TXNS as Revision);
    for (expected_revision, expected_key) in &revision_of {
        let event = next_event(&mut rx).await;
        assert_eq!(
            (event.kind, &event.kv.key, event.revision()),
            (EventKind::Put, expected_key, *expected_revision),
            "watch order"
        );
        assert_eq!(
            (event.kv.create_revision, event.kv.version),
            (*expected_revision, 1)
        );
    }
    for (revision, key) in &revision_of {
        let kv = get(&*store, key).await.expect("created key exists");
        assert_eq!(kv.mod_revision, *revision);
    }
}

/// 32 concurrent compare-and-set transactions on one key, all from the same read,
/// have exactly one winner; so do 32 concurrent creates of one missing key. The
/// losers fail at their precondition and write nothing.
pub async fn concurrent_conflicting_txns_have_exactly_one_winner<S: Store>(store: S) {
    const TXNS: usize = 32;
    let store = Arc::new(store);
    put_one(&*store, "cas", "initial").await;
    let read = get(&*store, "cas").await.expect("cas exists");
    let cas = (0..TXNS)
        .map(|i| Txn {
            preconditions: vec![
                Precondition::Absent("unrelated".to_owned()),
                Precondition::ModRevision("cas".to_owned(), read.mod_revision),
            ],
            ops: vec![put("cas", &format!("writer {i}"))],
        })
        .collect();
    let creates = (0..TXNS)
        .map(|i| Txn {
            preconditions: vec![Precondition::Absent("lock".to_owned())],
            ops: vec![put("lock", &format!("holder {i}"))],
        })
        .collect();
    for (key, txns, failing_index) in [("cas", cas, 1), ("lock", creates, 0)] {
        let before = revision(&*store).await;
        let outcomes = run_concurrently(&store, txns).await;
        let mut winners = Vec::new();
        for (i, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(TxnOutcome::Committed { revision }) => winners.push((i, revision)),
                Ok(TxnOutcome::Failed { precondition }) if precondition == failing_index => {}
                other => panic!("{key} txn {i}: unexpected {other:?}"),
            }
        }
        let [(winner, won_at)] = winners[..] else {
            panic!("{key}: expected exactly one winner, got {winners:?}");
        };
        assert_eq!(won_at, before + 1, "{key}");
        assert_eq!(revision(&*store).await, before + 1, "{key}: losers wrote");
        let kv = get(&*store, key).await.expect("key exists");
        let holder = if key == "cas" { "writer" } else { "holder" };
        assert_eq!(kv.value, format!("{holder} {winner}").into_bytes());
        assert_eq!(kv.mod_revision, won_at);
    }
}

/// Concurrent transactions mixing successes, failed preconditions and no-ops: the
/// successes commit with consecutive revisions; failures and no-ops take none, emit
/// no event and change nothing; a no-op reports a revision already reached.
pub async fn concurrent_failures_and_noops_take_no_revision<S: Store>(store: S) {
    const TXNS: usize = 48;
    let store = Arc::new(store);
    put_one(&*store, "taken", "original").await;
    let mut rx = watch(&*store, "", 1).await;
    let txns: Vec<Txn> = (0..TXNS)
        .map(|i| match i % 3 {
            0 => Txn {
                preconditions: vec![Precondition::Absent(format!("new/{i:02}"))],
                ops: vec![put(&format!("new/{i:02}"), "x")],
            },
            1 => Txn {
                preconditions: vec![
                    Precondition::Absent(format!("new/{i:02}")),
                    Precondition::Absent("taken".to_owned()),
                ],
                ops: vec![
                    put("taken", "overwritten"),
                    put(&format!("new/{i:02}"), "x"),
                ],
            },
            _ => Txn {
                preconditions: vec![Precondition::ModRevision("taken".to_owned(), 1)],
                ops: vec![delete(&format!("missing/{i:02}"))],
            },
        })
        .collect();
    let outcomes = run_concurrently(&store, txns).await;
    let mut committed = Vec::new();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match (i % 3, outcome) {
            (0, Ok(TxnOutcome::Committed { revision })) => committed.push(revision),
            (1, Ok(TxnOutcome::Failed { precondition: 1 })) => {}
            (2, Ok(TxnOutcome::Committed { revision })) => {
                assert!(
                    (1..=1 + TXNS as Revision / 3).contains(&revision),
                    "no-op {i} reported revision {revision}"
                );
            }
            (_, other) => panic!("txn {i}: unexpected {other:?}"),
        }
    }
    committed.sort_unstable();
    let expected: Vec<Revision> = (2..=1 + TXNS as Revision / 3).collect();
    assert_eq!(committed, expected, "one revision per successful txn");
    assert_eq!(revision(&*store).await, 1 + TXNS as Revision / 3);
    let taken = get(&*store, "taken").await.expect("taken exists");
    assert_eq!(
        (taken.value.as_slice(), taken.version),
        (&b"original"[..], 1)
    );
    let page = list(&*store, "new/", None, 0).await;
    assert_eq!(page.items.len(), TXNS / 3);
    assert!(list(&*store, "missing/", None, 0).await.items.is_empty());
    // The watch sees exactly the successful creates, in revision order.
    for expected_revision in expected {
        let event = next_event(&mut rx).await;
        assert_eq!(event.revision(), expected_revision);
        assert!(event.kv.key.starts_with("new/"), "{}", event.kv.key);
    }
    put_one(&*store, "after", "x").await;
    let event = next_event(&mut rx).await;
    assert_eq!(
        (event.kv.key.as_str(), event.revision()),
        ("after", 2 + TXNS as Revision / 3),
        "no event from a failed or no-op txn"
    );
}

/// While several writers commit concurrently, a watch (started mid-way, so it
/// replays then goes live) sees every commit once, in revision order.
pub async fn watch_sees_concurrent_writes_in_order_without_duplicates<S: Store>(store: S) {
    const WRITERS: usize = 4;
    const PUTS: usize = 50;
    let store = Arc::new(store);
    let mut rx = watch(&*store, "w/", 0).await;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            for i in 0..PUTS {
                put_one(&*store, &format!("w/{w}/{i:03}"), "x").await;
                // Unwatched keys interleave with watched ones.
                if i % 10 == 0 {
                    put_one(&*store, &format!("other/{w}/{i}"), "x").await;
                }
            }
        }));
    }
    // A second watch that joins while the writers run.
    tokio::task::yield_now().await;
    let from = revision(&*store).await;
    let mut late = watch(&*store, "w/", from).await;
    let mut seen = BTreeSet::new();
    let mut last = 0;
    for _ in 0..WRITERS * PUTS {
        let event = next_event(&mut rx).await;
        assert!(
            event.revision() > last,
            "revision {} after {last}",
            event.revision()
        );
        last = event.revision();
        assert!(
            seen.insert(event.kv.key.clone()),
            "duplicate {}",
            event.kv.key
        );
    }
    assert_eq!(seen.len(), WRITERS * PUTS);
    for writer in writers {
        if let Err(e) = writer.await {
            panic!("writer failed: {e}");
        }
    }
    let total = revision(&*store).await;
    assert_eq!(total as usize, WRITERS * PUTS + WRITERS * PUTS.div_ceil(10));
    // The late watch sees exactly the watched commits after `from`, in order.
    let expected: Vec<Revision> = {
        let mut all = watch(&*store, "w/", from).await;
        let mut revs = Vec::new();
        let page = list(&*store, "w/", None, 0).await;
        let count = page
            .items
            .iter()
            .filter(|kv| kv.mod_revision > from)
            .count();
        for _ in 0..count {
            revs.push(next_event(&mut all).await.revision());
        }
        revs
    };
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        got.push(next_event(&mut late).await.revision());
    }
    assert_eq!(got, expected);
    assert!(got.windows(2).all(|w| w[0] < w[1]));
}

/// Watches started at recent revisions while a writer commits continuously (the
/// replay-to-live hand-over races with commits) each see exactly `from + 1, from + 2,
/// ...`: no gap, no duplicate.
pub async fn watches_started_during_writes_have_no_gap_or_duplicate<S: Store>(store: S) {
    const WRITES: u64 = 400;
    const WATCHES: u64 = 24;
    const EVENTS_PER_WATCH: u64 = 40;
    /// Writes the writer may run ahead of the watch loop: the two interleave, but a fast
    /// store cannot finish all its writes before the first watch starts.
    const AHEAD: usize = 10;
    let store = Arc::new(store);
    let pace = Arc::new(tokio::sync::Semaphore::new(AHEAD));
    let writer = {
        let store = Arc::clone(&store);
        let pace = Arc::clone(&pace);
        tokio::spawn(async move {
            for i in 0..WRITES {
                match pace.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => panic!("pacing semaphore closed"),
                }
                put_one(&*store, &format!("g/{i:04}"), "x").await;
            }
        })
    };
    let mut watches = Vec::new();
    for n in 0..WATCHES {
        // Start at, slightly before, or just after the current revision.
        let now = revision(&*store).await;
        let from = match n % 3 {
            0 => now,
            1 => now.saturating_sub(3),
            _ => now + 1,
        };
        if from + EVENTS_PER_WATCH > WRITES {
            break;
        }
        watches.push((from, watch(&*store, "g/", from).await));
        pace.add_permits(AHEAD);
        tokio::task::yield_now().await;
    }
    pace.add_permits(WRITES as usize);
    assert!(
        watches.len() >= 2,
        "the writer finished before the watches started"
    );
    for (from, mut rx) in watches {
        for offset in 1..=EVENTS_PER_WATCH {
            let event = next_event(&mut rx).await;
            assert_eq!(event.revision(), from + offset, "watch from {from}");
            assert_eq!(event.kv.key, format!("g/{:04}", from + offset - 1));
        }
    }
    if let Err(e) = writer.await {
        panic!("writer failed: {e}");
    }
}

/// A watcher that does not read does not slow writers down, and when it reads again
/// it gets every event in order (caught up from the log). (Options: [`tiny_buffers`].)
pub async fn slow_watcher_does_not_block_writers_and_catches_up<S: Store>(store: S) {
    const WRITES: u64 = 200;
    let mut rx = watch(&store, "", 0).await;
    let writes = async {
        for i in 0..WRITES {
            put_one(&store, &format!("k{i:03}"), "x").await;
        }
    };
    if tokio::time::timeout(WAIT, writes).await.is_err() {
        panic!("writers blocked behind a watcher that does not read");
    }
    for expected in 1..=WRITES {
        let event = next_event(&mut rx).await;
        assert_eq!(event.revision(), expected);
        assert_eq!(event.kv.key, format!("k{:03}", expected - 1));
    }
    put_one(&store, "live", "x").await;
    assert_eq!(next_event(&mut rx).await.revision(), WRITES + 1);
}

/// A watcher that falls behind the retained history ends with `Compacted` (after the
/// events it could still deliver, in order), so its consumer re-lists.
/// (Options: [`tiny_buffers_small_history`].)
pub async fn slow_watcher_past_history_ends_with_compacted<S: Store>(store: S) {
    const WRITES: u64 = 100;
    let mut rx = watch(&store, "", 0).await;
    for i in 0..WRITES {
        put_one(&store, &format!("k{i:03}"), "x").await;
    }
    let mut next_revision = 1;
    loop {
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(Ok(event))) => {
                assert_eq!(event.revision(), next_revision, "events stay contiguous");
                next_revision += 1;
                assert!(
                    next_revision <= WRITES,
                    "all events delivered despite compaction"
                );
            }
            Ok(Some(Err(StoreError::Compacted { requested, oldest }))) => {
                assert_eq!(requested, next_revision - 1);
                assert!(oldest > next_revision);
                break;
            }
            other => panic!("expected events then Compacted, got {other:?}"),
        }
    }
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(None) => {}
        other => panic!("watch should end after Compacted, got {other:?}"),
    }
    // Re-list and re-watch from the listed revision works.
    let page = list(&store, "", None, 0).await;
    assert_eq!(page.items.len() as u64, WRITES);
    let mut rx = watch(&store, "", page.revision).await;
    put_one(&store, "again", "x").await;
    assert_eq!(next_event(&mut rx).await.revision(), WRITES + 1);
}
