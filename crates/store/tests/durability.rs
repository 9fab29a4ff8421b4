//! Crash durability of `SqliteStore`: every revision a writer saw committed survives a
//! SIGKILL of the writer.
//!
//! This test binary has its own `main` (`harness = false`) so it can re-execute itself
//! as the writer: with `MESHPLANE_STORE_DURABILITY_CHILD=<db path>` set, it commits
//! transactions in a loop and prints `<revision> <key>` on stdout after each `txn`
//! returns. The parent kills it with SIGKILL after a random short delay, reopens the
//! database, and checks that every reported revision is there. Several rounds run on
//! the same file, so recovery after a kill is also exercised. Odd rounds run
//! [`CONCURRENT_WRITERS`] writer tasks at once, so the kill also lands among group
//! commits of several transactions.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshplane_store::{Op, Precondition, SqliteStore, Store, Txn, TxnOutcome};

const CHILD_ENV: &str = "MESHPLANE_STORE_DURABILITY_CHILD";
/// How many concurrent writer tasks the child runs (default 1).
const WRITERS_ENV: &str = "MESHPLANE_STORE_DURABILITY_WRITERS";
const CONCURRENT_WRITERS: usize = 16;
const ROUNDS: usize = 4;
/// A child left alone (parent died) stops by itself after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    match std::env::var_os(CHILD_ENV) {
        Some(path) => runtime.block_on(child(PathBuf::from(path))),
        None => {
            // The libtest-like arguments (`--nocapture`, filters) are ignored; a
            // filter that excludes "durability" skips the test.
            let args: Vec<String> = std::env::args().skip(1).collect();
            if args.iter().any(|a| a == "--list") {
                println!("durability_survives_sigkill: test");
                return;
            }
            let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
            if !filters.is_empty()
                && !filters
                    .iter()
                    .any(|f| "durability_survives_sigkill".contains(f.as_str()))
            {
                println!("durability_survives_sigkill: filtered out");
                return;
            }
            runtime.block_on(parent());
            println!("test durability_survives_sigkill ... ok");
        }
    }
}

/// The writer: commits until killed, reporting each commit after `txn` returns.
async fn child(path: PathBuf) {
    let store = match SqliteStore::open(&path) {
        Ok(store) => std::sync::Arc::new(store),
        Err(e) => panic!("child open: {e}"),
    };
    let writers: usize = std::env::var(WRITERS_ENV)
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    let tasks: Vec<_> = (0..writers)
        .map(|w| tokio::spawn(write_until_killed(std::sync::Arc::clone(&store), w)))
        .collect();
    for task in tasks {
        if let Err(e) = task.await {
            panic!("child writer: {e}");
        }
    }
}

async fn write_until_killed(store: std::sync::Arc<SqliteStore>, writer: usize) {
    let started = Instant::now();
    let stdout = std::io::stdout();
    let pid = std::process::id();
    let mut i = 0u64;
    while started.elapsed() < CHILD_LIFETIME {
        let key = format!("d/{pid}/{writer}/{i}");
        // A few ops per txn, with a precondition, like real API writes.
        let txn = Txn {
            preconditions: vec![Precondition::Absent(key.clone())],
            ops: vec![
                Op::Put {
                    key: key.clone(),
                    value: i.to_string().into_bytes(),
                },
                Op::Put {
                    key: format!("last/{pid}"),
                    value: key.clone().into_bytes(),
                },
            ],
        };
        match store.txn(txn).await {
            Ok(TxnOutcome::Committed { revision }) => {
                let mut out = stdout.lock();
                if writeln!(out, "{revision} {key}")
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    return; // the parent went away
                }
            }
            other => panic!("child txn: {other:?}"),
        }
        i += 1;
    }
}

async fn parent() {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("temp dir: {e}"),
    };
    let path = dir.path().join("meshplane.db");
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => panic!("current exe: {e}"),
    };
    let mut total = 0usize;
    for round in 0..ROUNDS {
        let writers = if round % 2 == 0 {
            1
        } else {
            CONCURRENT_WRITERS
        };
        let reported = run_and_kill(&exe, &path, writers, random_delay());
        assert!(
            !reported.is_empty(),
            "round {round}: the child committed nothing before the kill"
        );
        verify(&path, &reported, writers).await;
        total += reported.len();
        println!(
            "round {round}: {} commits by {writers} writer(s) reported and found after SIGKILL",
            reported.len()
        );
    }
    println!("durability: {total} commits verified over {ROUNDS} kills");
}

/// Starts the writer, kills it with SIGKILL after `delay`, and returns what it
/// reported as committed.
fn run_and_kill(exe: &Path, db: &Path, writers: usize, delay: Duration) -> Vec<(u64, String)> {
    let mut child = match Command::new(exe)
        .env(CHILD_ENV, db)
        .env(WRITERS_ENV, writers.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("spawn writer: {e}"),
    };
    let Some(stdout) = child.stdout.take() else {
        panic!("no child stdout")
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The delay starts once the writer has committed, so a slow start (a loaded
    // machine) does not turn the round into a kill before the first write.
    let mut lines = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(first) => vec![first],
        Err(e) => {
            let _ = child.kill();
            panic!("the writer reported no commit: {e}");
        }
    };
    std::thread::sleep(delay);
    if let Err(e) = child.kill() {
        panic!("SIGKILL writer: {e}");
    }
    let _ = child.wait();
    // Everything the writer printed before dying is still in the pipe.
    lines.extend(rx.iter());
    if reader.join().is_err() {
        panic!("stdout reader panicked");
    }
    lines
        .iter()
        .map(|line| {
            let (rev, key) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            let rev = rev
                .parse()
                .unwrap_or_else(|e| panic!("bad revision in {line:?}: {e}"));
            (rev, key.to_owned())
        })
        .collect()
}

async fn verify(db: &Path, reported: &[(u64, String)], writers: usize) {
    let store = match SqliteStore::open(db) {
        Ok(store) => store,
        Err(e) => panic!("reopen after SIGKILL: {e}"),
    };
    let revision = match store.revision().await {
        Ok(r) => r,
        Err(e) => panic!("revision: {e}"),
    };
    let last = reported.iter().map(|(r, _)| *r).max().unwrap_or(0);
    assert!(
        revision >= last,
        "store is at {revision}, but the writer saw {last} committed"
    );
    for (rev, key) in reported {
        let kv = match store.get(key).await {
            Ok(Some(kv)) => kv,
            Ok(None) => panic!("revision {rev} ({key}) was reported committed but is missing"),
            Err(e) => panic!("get {key}: {e}"),
        };
        assert_eq!(kv.mod_revision, *rev, "{key}");
        assert_eq!((kv.create_revision, kv.version), (*rev, 1), "{key}");
    }
    if writers == 1 {
        // Reported revisions are consecutive: nothing was skipped or reused.
        assert!(
            reported.windows(2).all(|w| w[1].0 == w[0].0 + 1),
            "revisions not consecutive"
        );
    } else {
        // Concurrent writers report in any order, and the kill may land between a
        // batch's commit and some of its reports; but no revision is reported twice.
        let mut revisions: Vec<u64> = reported.iter().map(|(r, _)| *r).collect();
        revisions.sort_unstable();
        assert!(
            revisions.windows(2).all(|w| w[0] < w[1]),
            "a revision was reported twice"
        );
    }
    // The store is writable after recovery.
    let probe = Txn {
        preconditions: vec![],
        ops: vec![Op::Put {
            key: "probe".to_owned(),
            value: b"x".to_vec(),
        }],
    };
    match store.txn(probe).await {
        Ok(TxnOutcome::Committed { revision: r }) => assert_eq!(r, revision + 1),
        other => panic!("write after recovery: {other:?}"),
    }
}

/// 150..650 ms, varied per run without a random-number dependency.
fn random_delay() -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed =
        (u64::from(nanos) ^ u64::from(std::process::id())).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Duration::from_millis(150 + (mixed >> 32) % 500)
}
