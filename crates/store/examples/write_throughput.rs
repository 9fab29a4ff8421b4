//! Write throughput of `SqliteStore`: `N` transactions at concurrency 1, 16 and 64,
//! printing transactions per second and per-transaction latency (p50, p99).
//!
//! ```text
//! cargo run --release -p meshplane-store --example write_throughput -- [txns] [dir]
//! ```
//!
//! Each transaction looks like a Cloud Map RegisterInstance: an `Absent`
//! precondition on a new key, a put of a ~300-byte record and a put of a shared
//! per-service revision key. The database is created in a fresh temporary directory
//! under `dir` (default: the system temp dir), which must be on a real disk for the
//! fsync cost to show.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshplane_store::{Op, Precondition, SqliteStore, Store, Txn, TxnOutcome};

const CONCURRENCY: [usize; 3] = [1, 16, 64];
const SERVICES: usize = 8;

fn main() {
    let mut args = std::env::args().skip(1);
    let txns: usize = match args.next().map(|a| a.parse()) {
        None => 2_000,
        Some(Ok(n)) => n,
        Some(Err(e)) => panic!("txns must be a number: {e}"),
    };
    let dir = args.next().map_or_else(std::env::temp_dir, PathBuf::from);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    println!("{txns} txns per run, database under {}", dir.display());
    println!(
        "| {:>11} | {:>8} | {:>9} | {:>9} |",
        "concurrency", "txn/s", "p50 ms", "p99 ms"
    );
    println!("|------------:|---------:|----------:|----------:|");
    for concurrency in CONCURRENCY {
        let (rate, p50, p99) = runtime.block_on(run(&dir, txns, concurrency));
        println!(
            "| {concurrency:>11} | {rate:>8.0} | {:>9.2} | {:>9.2} |",
            ms(p50),
            ms(p99)
        );
    }
}

/// Runs `txns` transactions split over `concurrency` tasks on a fresh store; returns
/// transactions per second and the p50 and p99 latency.
async fn run(dir: &std::path::Path, txns: usize, concurrency: usize) -> (f64, Duration, Duration) {
    let tmp = match tempfile::tempdir_in(dir) {
        Ok(tmp) => tmp,
        Err(e) => panic!("temp dir under {}: {e}", dir.display()),
    };
    let store = match SqliteStore::open(&tmp.path().join("meshplane.db")) {
        Ok(store) => Arc::new(store),
        Err(e) => panic!("open: {e}"),
    };
    let per_task = txns.div_ceil(concurrency);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..concurrency {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let key = format!("cloudmap/instances/svc-{}/t{task}-i{i}", task % SERVICES);
                let txn = Txn {
                    preconditions: vec![Precondition::Absent(key.clone())],
                    ops: vec![
                        Op::Put {
                            key,
                            value: vec![b'x'; 300],
                        },
                        Op::Put {
                            key: format!("cloudmap/revisions/svc-{}", task % SERVICES),
                            value: i.to_string().into_bytes(),
                        },
                    ],
                };
                let t = Instant::now();
                match store.txn(txn).await {
                    Ok(TxnOutcome::Committed { .. }) => {}
                    other => panic!("txn: {other:?}"),
                }
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(per_task * concurrency);
    for task in tasks {
        match task.await {
            Ok(l) => latencies.extend(l),
            Err(e) => panic!("task: {e}"),
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pick(0.50),
        pick(0.99),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}
