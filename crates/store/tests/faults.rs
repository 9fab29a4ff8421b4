//! Store faults are never silent: a database or WAL file removed or replaced under an
//! open `SqliteStore` fails the next write with `Unavailable` and makes `health()` fail
//! for good, a damaged file is refused at open, and none of this fires on a healthy store.

use std::path::{Path, PathBuf};

use meshplane_store::conformance::put;
use meshplane_store::{SqliteStore, Store, StoreError, Txn, TxnOutcome};

fn open(path: &Path) -> SqliteStore {
    match SqliteStore::open(path) {
        Ok(store) => store,
        Err(e) => panic!("open {}: {e}", path.display()),
    }
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("meshplane.db")
}

async fn write(store: &SqliteStore, key: &str) -> Result<TxnOutcome, StoreError> {
    store
        .txn(Txn {
            preconditions: vec![],
            ops: vec![put(key, "v")],
        })
        .await
}

/// The next write and every later one fail with `Unavailable` naming `what`, and
/// `health()` fails with the same reason; nothing moves the revision.
async fn assert_faulted(store: &SqliteStore, what: &str) {
    let before = store.revision().await.expect("revision");
    for i in 0..3 {
        match write(store, &format!("after-{i}")).await {
            Err(StoreError::Unavailable(m)) => {
                assert!(m.contains(what), "write {i}: {m}");
                assert!(m.contains("restart"), "write {i}: {m}");
            }
            other => panic!("write {i} after the fault: expected Unavailable, got {other:?}"),
        }
    }
    match store.health().await {
        Err(StoreError::Unavailable(m)) => assert!(m.contains(what), "{m}"),
        other => panic!("health after the fault: {other:?}"),
    }
    assert_eq!(store.revision().await.expect("revision"), before);
}

#[tokio::test]
async fn removing_the_database_file_fails_the_next_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&db(&dir));
    write(&store, "a").await.expect("write");
    store.health().await.expect("healthy before");
    std::fs::remove_file(db(&dir)).expect("remove");
    assert_faulted(&store, "was removed").await;
    // Reads never recreate the file.
    drop(store.get("a").await);
    assert!(!db(&dir).exists(), "a read recreated the database file");
}

#[tokio::test]
async fn replacing_the_database_file_fails_the_next_write_and_new_reads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let other = tempfile::tempdir().expect("temp dir");
    {
        let intruder = open(&db(&other));
        write(&intruder, "intruder").await.expect("write");
    }
    let store = open(&db(&dir));
    write(&store, "a").await.expect("write");
    std::fs::rename(db(&other), db(&dir)).expect("rename over");
    assert_faulted(&store, "was replaced").await;
    // No read connection was pooled yet: a new one must not read the other database.
    match store.get("intruder").await {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("was replaced"), "{m}"),
        other => panic!("read after replacement: {other:?}"),
    }
}

/// Also on a reopened store that has not written yet (a clean close removed the WAL;
/// opening creates it again, and that one is watched).
#[tokio::test]
async fn removing_the_wal_fails_the_next_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = dir.path().join("meshplane.db-wal");
    drop(open(&db(&dir)));
    assert!(!wal.exists(), "a clean close removes the WAL");
    let store = open(&db(&dir));
    assert!(wal.exists(), "WAL file present while open");
    std::fs::remove_file(&wal).expect("remove wal");
    assert_faulted(&store, "write-ahead log").await;
}

/// No false positive: separate commits (each its own batch and file check), health
/// probes and reads in between, and a reopen.
#[tokio::test]
async fn a_healthy_store_stays_healthy_across_a_thousand_commits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&db(&dir));
    let id = store.store_id();
    for i in 0..1000u64 {
        match write(&store, &format!("k{}", i % 50)).await {
            Ok(TxnOutcome::Committed { revision }) => assert_eq!(revision, i + 1),
            other => panic!("commit {i}: {other:?}"),
        }
        if i % 100 == 0 {
            store.health().await.expect("healthy");
            store.list("", None, 0).await.expect("list");
        }
    }
    store.health().await.expect("healthy after 1000 commits");
    drop(store);
    let store = open(&db(&dir));
    store.health().await.expect("healthy after reopen");
    assert_eq!(store.revision().await.expect("revision"), 1000);
    assert_eq!(store.store_id(), id, "the id is kept in the file");
    let fresh = tempfile::tempdir().expect("temp dir");
    assert_ne!(
        open(&db(&fresh)).store_id(),
        id,
        "a new database gets a new id"
    );
}

/// A file damaged while closed is refused at open with the path and what was found;
/// a file damaged while open faults the store at the first read that meets it.
#[tokio::test]
async fn a_damaged_file_is_refused_at_open_and_faults_an_open_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = db(&dir);
    let value = "x".repeat(3000);
    {
        let store = open(&path);
        for i in 0..200 {
            store
                .txn(Txn {
                    preconditions: vec![],
                    ops: vec![put(&format!("k{i:03}"), &value)],
                })
                .await
                .expect("write");
        }
    }
    // Closed: the WAL was checkpointed into the file and removed.
    assert!(!dir.path().join("meshplane.db-wal").exists());
    let pristine = std::fs::read(&path).expect("read");
    let mut damaged = pristine.clone();
    let (from, to) = (damaged.len() / 4, damaged.len() * 3 / 4);
    damaged[from..to].fill(0xFF);
    std::fs::write(&path, &damaged).expect("damage");
    match SqliteStore::open(&path) {
        Err(StoreError::Corrupt(m)) => {
            assert!(m.contains("integrity check"), "{m}");
            assert!(m.contains(&path.display().to_string()), "{m}");
        }
        other => panic!("expected Corrupt at open, got {:?}", other.map(|_| ())),
    }

    // Damaged while open: the listing meets the bad pages, then the store is faulted.
    std::fs::write(&path, &pristine).expect("restore");
    let store = open(&path);
    store.health().await.expect("healthy");
    let damage = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open for damage");
    std::os::unix::fs::FileExt::write_all_at(&damage, &damaged[from..to], from as u64)
        .expect("damage in place");
    drop(damage);
    match store.list("", None, 0).await {
        Err(StoreError::Corrupt(_)) => {}
        other => panic!(
            "list over damaged pages: {:?}",
            other.map(|p| p.items.len())
        ),
    }
    match store.health().await {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("restart"), "{m}"),
        other => panic!("health after corruption: {other:?}"),
    }
    assert!(matches!(
        write(&store, "after").await,
        Err(StoreError::Corrupt(_))
    ));
}
