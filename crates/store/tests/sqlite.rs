//! SQLite-only behaviour: persistence across reopen, the file lock, format versions,
//! and refusing files that are not meshplane stores.

use std::path::Path;
use std::time::Duration;

use meshplane_store::conformance::{commit, delete, next_event, put, put_one};
use meshplane_store::{
    EventKind, MemoryStore, SqliteStore, Store, StoreError, StoreOptions, Txn, WatchStream,
};

fn open(path: &Path) -> SqliteStore {
    match SqliteStore::open(path) {
        Ok(store) => store,
        Err(e) => panic!("open {}: {e}", path.display()),
    }
}

#[tokio::test]
async fn reopen_after_drop_keeps_data_revision_and_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("meshplane.db");
    {
        let store = open(&path);
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
        assert_eq!(store.path(), path);
    }
    let store = open(&path);
    assert_eq!(store.revision().await.expect("revision"), 4);
    let a = store.get("a").await.expect("get").expect("a survives");
    assert_eq!(
        (
            a.value.as_slice(),
            a.create_revision,
            a.mod_revision,
            a.version
        ),
        (&b"2"[..], 1, 3, 2)
    );
    assert_eq!(store.get("b").await.expect("get"), None);
    let page = store.list("", None, 0).await.expect("list");
    assert_eq!((page.items.len(), page.revision), (1, 4));
    // The change log survives too: a watch from 0 replays all four revisions.
    let mut rx = store.watch("", 0).await.expect("watch");
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let event = next_event(&mut rx).await;
        kinds.push((event.kind, event.kv.key, event.kv.mod_revision));
    }
    assert_eq!(
        kinds,
        [
            (EventKind::Put, "a".to_owned(), 1),
            (EventKind::Put, "b".to_owned(), 2),
            (EventKind::Put, "a".to_owned(), 3),
            (EventKind::Delete, "b".to_owned(), 4)
        ]
    );
    assert_eq!(put_one(&store, "c", "1").await, 5);
    assert_eq!(next_event(&mut rx).await.revision(), 5);
}

#[tokio::test]
async fn compaction_point_survives_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("meshplane.db");
    let options = StoreOptions {
        history_revisions: 3,
        compaction_slack: 0,
        ..StoreOptions::default()
    };
    {
        let store = SqliteStore::open_with(&path, options.clone()).expect("open");
        for i in 0..10 {
            put_one(&store, &format!("k{i}"), "x").await;
        }
    }
    let store = SqliteStore::open_with(&path, options).expect("reopen");
    match store.watch("", 6).await {
        Err(StoreError::Compacted {
            requested: 6,
            oldest: 8,
        }) => {}
        other => panic!("expected Compacted, got {:?}", other.map(|_| "a stream")),
    }
    let mut rx = store.watch("", 7).await.expect("watch inside history");
    for expected in 8..=10 {
        assert_eq!(next_event(&mut rx).await.revision(), expected);
    }
}

#[tokio::test]
async fn a_second_open_of_the_same_file_fails_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("meshplane.db");
    let first = open(&path);
    put_one(&first, "k", "v").await;
    match SqliteStore::open(&path) {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains("in use"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    drop(first);
    let second = open(&path);
    assert_eq!(second.revision().await.expect("revision"), 1);
}

#[tokio::test]
async fn dropping_the_store_ends_its_watches() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("meshplane.db");
    let store = open(&path);
    let mut rx = store.watch("", 0).await.expect("watch");
    put_one(&store, "k", "v").await;
    assert_eq!(next_event(&mut rx).await.revision(), 1);
    drop(store);
    expect_closed(&mut rx).await;
    // The watch did not keep the file open.
    let again = open(&path);
    assert_eq!(again.revision().await.expect("revision"), 1);

    let memory = MemoryStore::new();
    let mut rx = memory.watch("", 0).await.expect("watch");
    drop(memory);
    expect_closed(&mut rx).await;
}

async fn expect_closed(rx: &mut WatchStream) {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(Err(StoreError::Unavailable(_)))) => {}
        other => panic!("expected Unavailable after drop, got {other:?}"),
    }
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(None) => {}
        other => panic!("expected the end of the watch, got {other:?}"),
    }
}

#[tokio::test]
async fn a_newer_format_version_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("meshplane.db");
    drop(open(&path));
    {
        let conn = rusqlite::Connection::open(&path).expect("raw open");
        let current: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE name = 'format_version'",
                [],
                |r| r.get(0),
            )
            .expect("format_version row");
        assert_eq!(current, 1);
        conn.execute(
            "UPDATE meta SET value = 99 WHERE name = 'format_version'",
            [],
        )
        .expect("bump version");
    }
    match SqliteStore::open(&path) {
        Err(StoreError::Corrupt(msg)) => {
            assert!(
                msg.contains("format version 99") && msg.contains("newer"),
                "{msg}"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn files_that_are_not_meshplane_stores_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let foreign = dir.path().join("foreign.db");
    {
        let conn = rusqlite::Connection::open(&foreign).expect("raw open");
        conn.execute("CREATE TABLE users (id INTEGER)", [])
            .expect("create");
    }
    assert!(matches!(
        SqliteStore::open(&foreign),
        Err(StoreError::Corrupt(_))
    ));
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x42; 8192]).expect("write garbage");
    assert!(matches!(
        SqliteStore::open(&garbage),
        Err(StoreError::Corrupt(_))
    ));
    let missing_dir = dir.path().join("no/such/dir/meshplane.db");
    assert!(matches!(
        SqliteStore::open(&missing_dir),
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn the_file_is_in_wal_mode_and_large_txns_commit_atomically() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("meshplane.db");
    let store = open(&path);
    let ops = (0..2_000)
        .map(|i| put(&format!("bulk/{i:05}"), "x"))
        .collect();
    assert_eq!(
        commit(
            &store,
            Txn {
                preconditions: vec![],
                ops
            }
        )
        .await,
        1
    );
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("pragma");
    assert_eq!(mode, "wal");
    let page = store.list("bulk/", None, 0).await.expect("list");
    assert_eq!(page.items.len(), 2_000);
    assert!(page.items.iter().all(|kv| kv.mod_revision == 1));
    // A watch replays the big revision in full, across the replay chunking.
    let mut rx = store.watch("bulk/", 0).await.expect("watch");
    for i in 0..2_000 {
        assert_eq!(next_event(&mut rx).await.kv.key, format!("bulk/{i:05}"));
    }
}
