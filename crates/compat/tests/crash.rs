//! Crash durability of the real server: every acknowledged write survives SIGKILL.
//!
//! Three rounds on one data directory. In each round six concurrent writers (one mesh
//! each) create and update virtual nodes through the HTTP API, recording every 200
//! response; once at least a random 500..800 writes were acknowledged, plus a random
//! few milliseconds, the server gets SIGKILL mid-stream. It is restarted on the same data
//! directory and every round so far is verified:
//!
//! - every acknowledged write is present with at least the acknowledged version;
//! - no version exceeds what was acknowledged plus the one write that was in flight;
//! - the stored spec is the one sent for that version (no torn or mixed records);
//! - nothing exists that was never sent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use meshplane_compat::Server;
use rand::Rng;
use serde_json::{Value, json};

const WRITERS: usize = 6;
const ROUNDS: usize = 3;
const MIN_ACKED_PER_ROUND: usize = 500;

/// What one writer knows about one of its nodes.
#[derive(Clone, Debug, Default)]
struct NodeLog {
    /// Highest version acknowledged by a 200 response (0: create not acknowledged).
    acked: i64,
    /// Highest version sent (acked, or acked + 1 when the last request got no answer).
    sent: i64,
}

/// mesh -> node -> log
type Ledger = BTreeMap<String, BTreeMap<String, NodeLog>>;

fn node_spec(mesh: &str, node: &str, version: i64) -> Value {
    json!({
        "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
        "serviceDiscovery": {"dns": {"hostname": host(mesh, node, version)}},
    })
}

fn host(mesh: &str, node: &str, version: i64) -> String {
    format!("{node}.v{version}.{mesh}.local")
}

fn url_for(base: &str, mesh: &str, node: Option<&str>) -> String {
    match node {
        Some(n) => format!("{base}/v20190125/meshes/{mesh}/virtualNodes/{n}"),
        None => format!("{base}/v20190125/meshes/{mesh}/virtualNodes"),
    }
}

/// One writer: creates and updates nodes of `mesh` one request at a time until a request
/// fails (the server was killed). Returns its ledger for `mesh`.
async fn writer(
    http: reqwest::Client,
    base: String,
    mesh: String,
    acked: Arc<AtomicUsize>,
    seed: u64,
) -> BTreeMap<String, NodeLog> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut nodes: BTreeMap<String, NodeLog> = BTreeMap::new();
    let mut next = 0usize;
    loop {
        let create = nodes.len() < 4 || rng.random_bool(0.3);
        let (name, version, req) = if create {
            let name = format!("n{next}");
            next += 1;
            let body = json!({"virtualNodeName": name, "spec": node_spec(&mesh, &name, 1)});
            let req = http.put(url_for(&base, &mesh, None)).json(&body);
            (name, 1, req)
        } else {
            let i = rng.random_range(0..nodes.len());
            let (name, log) = nodes.iter().nth(i).expect("index in range");
            let v = log.acked + 1;
            let body = json!({"spec": node_spec(&mesh, name, v)});
            let req = http.put(url_for(&base, &mesh, Some(name))).json(&body);
            (name.clone(), v, req)
        };
        let log = nodes.entry(name.clone()).or_default();
        log.sent = version;
        let resp = match req.send().await {
            Ok(r) => r,
            Err(_) => return nodes, // killed
        };
        let status = resp.status();
        let body: Value = match resp.json().await {
            Ok(b) => b,
            Err(_) => return nodes, // killed mid-response: stays in flight
        };
        assert_eq!(
            status, 200,
            "write {mesh}/{name} v{version} refused while the server was up: {body}"
        );
        let got = body["metadata"]["version"]
            .as_i64()
            .expect("metadata.version");
        assert_eq!(got, version, "{mesh}/{name}: unexpected version in {body}");
        log.acked = version;
        acked.fetch_add(1, Ordering::SeqCst);
    }
}

async fn verify(http: &reqwest::Client, base: &str, ledger: &Ledger) -> usize {
    let mut checked = 0;
    for (mesh, nodes) in ledger {
        // Nothing exists that was never sent.
        let list: Value = http
            .get(url_for(base, mesh, None))
            .send()
            .await
            .expect("list after restart")
            .json()
            .await
            .expect("list body");
        let listed = list["virtualNodes"].as_array().expect("virtualNodes");
        assert!(
            list.get("nextToken").is_none(),
            "more than 100 nodes in {mesh}"
        );
        for r in listed {
            let n = r["virtualNodeName"].as_str().expect("name");
            assert!(
                nodes.contains_key(n),
                "{mesh}/{n} exists but was never sent"
            );
        }
        for (name, log) in nodes {
            let resp = http
                .get(url_for(base, mesh, Some(name)))
                .send()
                .await
                .expect("describe after restart");
            let status = resp.status();
            let body: Value = resp.json().await.expect("describe body");
            if log.acked == 0 {
                // The create was in flight: either outcome is fine, but a present node
                // must be exactly what was sent.
                if status == 404 {
                    continue;
                }
            }
            assert_eq!(
                status, 200,
                "{mesh}/{name}: acknowledged at v{} but lost after SIGKILL: {body}",
                log.acked
            );
            let v = body["metadata"]["version"].as_i64().expect("version");
            assert!(
                v >= log.acked && v <= log.sent,
                "{mesh}/{name}: stored v{v}, acknowledged v{}, sent up to v{}",
                log.acked,
                log.sent
            );
            let stored_host = body["spec"]["serviceDiscovery"]["dns"]["hostname"]
                .as_str()
                .unwrap_or_default();
            assert_eq!(
                stored_host,
                host(mesh, name, v),
                "{mesh}/{name}: v{v} carries the spec of another write"
            );
            checked += 1;
        }
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    // Build (or find) the server first: the time bound below is for the test itself.
    meshplane_compat::meshplane_bin();
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let http = {
        // reqwest is built with `rustls-no-provider` in workspace builds (see
        // meshplane-client): install ring's provider before building a client.
        #[allow(deprecated)] // ring is the workspace's only provider
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
    }
    .timeout(Duration::from_secs(10))
    .build()
    .expect("http client");
    let mut ledger: Ledger = BTreeMap::new();
    // 6 meshes per round: lift the 15-meshes quota.
    // Durability of the store is the subject, not authentication: plain HTTP writes.
    let flags = ["--quota-meshes", "100", "--auth", "none"];
    let mut server = Server::start(&data, &flags);
    let mut rng = rand::rng();
    let mut total_acked = 0;
    for round in 0..ROUNDS {
        let base = server.url().to_owned();
        let meshes: Vec<String> = (0..WRITERS).map(|w| format!("r{round}-w{w}")).collect();
        for m in &meshes {
            let r = http
                .put(format!("{base}/v20190125/meshes"))
                .json(&json!({"meshName": m}))
                .send()
                .await
                .expect("create mesh");
            assert_eq!(r.status(), 200, "create mesh {m}");
        }
        let acked = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = meshes
            .iter()
            .map(|m| {
                tokio::spawn(writer(
                    http.clone(),
                    base.clone(),
                    m.clone(),
                    acked.clone(),
                    rng.random(),
                ))
            })
            .collect();
        // Kill at a random moment after a random number (>= 500) of acknowledged writes.
        let target = rng.random_range(MIN_ACKED_PER_ROUND..800);
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.load(Ordering::SeqCst) < target {
            assert!(
                Instant::now() < deadline,
                "round {round}: only {} writes acknowledged in 60 s",
                acked.load(Ordering::SeqCst)
            );
            assert!(
                tasks.iter().all(|t| !t.is_finished()),
                "round {round}: a writer stopped before the kill"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_micros(rng.random_range(0..20_000))).await;
        assert!(server.is_running(), "server died on its own");
        server.kill();
        let at_kill = acked.load(Ordering::SeqCst);
        for (m, t) in meshes.iter().zip(tasks) {
            let nodes = tokio::time::timeout(Duration::from_secs(15), t)
                .await
                .expect("writer did not notice the kill")
                .expect("writer panicked");
            ledger.insert(m.clone(), nodes);
        }
        assert!(at_kill >= MIN_ACKED_PER_ROUND);
        total_acked += acked.load(Ordering::SeqCst);

        server = Server::start(&data, &flags);
        let checked = verify(&http, server.url(), &ledger).await;
        println!(
            "round {round}: killed after {at_kill} acknowledged writes; {checked} nodes verified after restart ({:?})",
            started.elapsed()
        );
    }
    assert!(total_acked >= ROUNDS * MIN_ACKED_PER_ROUND);
    assert!(
        started.elapsed() < Duration::from_secs(150),
        "crash test took {:?}",
        started.elapsed()
    );
}
