//! Store faults are never silent, through the real `meshplane serve` process:
//!
//! - the database file deleted under a running server: the next write gets 503
//!   `ServiceUnavailableException`, `/healthz` and `/readyz` answer 503 with the reason;
//!   after a restart the server refuses to start (the marker names a store that is gone)
//!   until `--allow-empty-store`;
//! - the database deleted while the server is stopped: refused, then accepted with the flag;
//! - a database damaged while stopped: refused at start with the integrity check's finding;
//!   damaged while running: API calls fail with 5xx and `/healthz` answers 503.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshplane_compat::{Server, meshplane_bin};
use serde_json::{Value, json};

/// Store faults are the subject, not authentication: these servers take plain HTTP.
const NO_AUTH: [&str; 2] = ["--auth", "none"];
fn http() -> reqwest::Client {
    {
        // reqwest is built with `rustls-no-provider` in workspace builds (see
        // meshplane-client): install ring's provider before building a client.
        #[allow(deprecated)] // ring is the workspace's only provider
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
    }
    .timeout(Duration::from_secs(10))
    .no_proxy()
    .build()
    .expect("http client")
}

/// Status, `x-amzn-ErrorType` and JSON body of one request.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, String, Value) {
    let mut req = http.request(method, &url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let kind = resp
        .headers()
        .get("x-amzn-ErrorType")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, kind, body)
}

async fn create_mesh(http: &reqwest::Client, base: &str, mesh: &str) -> (u16, String, Value) {
    call(
        http,
        reqwest::Method::PUT,
        format!("{base}/v20190125/meshes"),
        Some(json!({"meshName": mesh})),
    )
    .await
}

async fn get(http: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    let (status, _, body) = call(http, reqwest::Method::GET, format!("{base}{path}"), None).await;
    (status, body)
}

/// Polls `/readyz` until it answers 200 (bounded).
async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(http, base, "/readyz").await;
        if status == 200 {
            assert_eq!(body["status"], "ready", "{body}");
            return;
        }
        assert!(Instant::now() < deadline, "/readyz still {status}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `serve` on `data_dir` expecting it to refuse to start: returns its stderr.
fn refused_start(data_dir: &Path) -> String {
    let log = data_dir.with_extension("refused.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut child = Command::new(meshplane_bin())
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--api-listen", "127.0.0.1:0", "--xds-listen", "127.0.0.1:0"])
        .args(["--auth", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("spawn serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "serve kept running instead of refusing to start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&log).expect("stderr");
    assert!(!status.success(), "serve exited successfully:\n{stderr}");
    stderr
}

/// SIGTERM and wait for the exit (the store closes cleanly: the WAL is checkpointed).
fn stop(server: &mut Server) {
    let pid = server.pid().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.is_running() {
        assert!(Instant::now() < deadline, "server ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn store_id(data_dir: &Path) -> String {
    let marker: Value = serde_json::from_slice(
        &std::fs::read(data_dir.join("meshplane.id")).expect("marker present"),
    )
    .expect("marker json");
    marker["storeId"].as_str().expect("storeId").to_owned()
}

fn assert_refusal_names_everything(stderr: &str, data_dir: &Path) {
    for needle in [
        "refusing to start".to_owned(),
        data_dir.join("meshplane.id").display().to_string(),
        data_dir.join("meshplane.db").display().to_string(),
        "--allow-empty-store".to_owned(),
    ] {
        assert!(stderr.contains(&needle), "{needle:?} not in:\n{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_store_under_a_running_server_fails_writes_and_healthz() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let http = http();
    let mut server = Server::start(&data, &NO_AUTH);
    let base = server.url().to_owned();
    wait_ready(&http, &base).await;
    assert_eq!(create_mesh(&http, &base, "before").await.0, 200);
    let (status, body) = get(&http, &base, "/healthz").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ok")),
        "{body}"
    );
    let first_id = store_id(&data);

    std::fs::remove_file(data.join("meshplane.db")).expect("remove the database");
    for mesh in ["after-1", "after-2"] {
        let (status, kind, body) = create_mesh(&http, &base, mesh).await;
        assert_eq!(status, 503, "{mesh}: {body}");
        assert_eq!(kind, "ServiceUnavailableException", "{mesh}: {body}");
    }
    for path in ["/healthz", "/readyz"] {
        let (status, body) = get(&http, &base, path).await;
        assert_eq!(status, 503, "{path}: {body}");
        let reason = body["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("was removed"), "{path}: {body}");
        assert!(reason.contains("restart"), "{path}: {body}");
    }
    let log = server.log_text();
    assert_eq!(
        log.matches("the store is faulted").count(),
        1,
        "one ERROR line for the fault:\n{log}"
    );

    // Restarted (as after a crash: the WAL is left behind), it refuses to start empty.
    server.kill();
    assert_refusal_names_everything(&refused_start(&data), &data);
    assert_eq!(
        store_id(&data),
        first_id,
        "a refused start keeps the marker"
    );

    let server = Server::start(&data, &["--allow-empty-store", "--auth", "none"]);
    let base = server.url().to_owned();
    wait_ready(&http, &base).await;
    let (status, body) = get(&http, &base, "/v20190125/meshes").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["meshes"], json!([]), "a new, empty store");
    assert_ne!(store_id(&data), first_id, "the marker names the new store");
    assert!(data.join("meshplane.db-wal.orphaned").exists());
    assert_eq!(create_mesh(&http, &base, "again").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_deleted_while_stopped_is_refused_until_allowed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let http = http();
    let mut server = Server::start(&data, &NO_AUTH);
    assert_eq!(create_mesh(&http, server.url(), "m").await.0, 200);
    stop(&mut server);
    std::fs::remove_file(data.join("meshplane.db")).expect("remove the database");

    assert_refusal_names_everything(&refused_start(&data), &data);
    let server = Server::start(&data, &["--allow-empty-store", "--auth", "none"]);
    let (status, body) = get(&http, server.url(), "/v20190125/meshes").await;
    assert_eq!((status, &body["meshes"]), (200, &json!([])), "{body}");
    drop(server);
    // The flag is needed once: the marker now names the new store.
    let server = Server::start(&data, &NO_AUTH);
    assert_eq!(get(&http, server.url(), "/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_store_is_refused_at_start_and_fails_healthz_while_running() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let db = data.join("meshplane.db");
    let http = http();
    let mut server = Server::start(&data, &["--quota-virtual-nodes", "1000", "--auth", "none"]);
    let base = server.url().to_owned();
    assert_eq!(create_mesh(&http, &base, "m").await.0, 200);
    // Enough nodes that their records span many pages of the file.
    for i in 0..150 {
        let spec = json!({
            "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": format!("n{i}.{}.local", "x".repeat(200))}},
        });
        let (status, _, body) = call(
            &http,
            reqwest::Method::PUT,
            format!("{base}/v20190125/meshes/m/virtualNodes"),
            Some(json!({"virtualNodeName": format!("n{i}"), "spec": spec})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    stop(&mut server);
    assert!(
        !data.join("meshplane.db-wal").exists(),
        "a clean stop checkpoints the log into the database"
    );
    let pristine = std::fs::read(&db).expect("read the database");
    let (from, to) = (pristine.len() / 4, pristine.len() * 3 / 4);
    let mut damaged = pristine.clone();
    damaged[from..to].fill(0xFF);

    // Damaged while stopped: a clear refusal at start.
    std::fs::write(&db, &damaged).expect("damage");
    let stderr = refused_start(&data);
    assert!(stderr.contains("integrity check"), "{stderr}");
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");

    // Damaged while running: once a request meets the bad pages, 5xx and /healthz 503.
    std::fs::write(&db, &pristine).expect("restore");
    let server = Server::start(&data, &["--quota-virtual-nodes", "1000", "--auth", "none"]);
    let base = server.url().to_owned();
    wait_ready(&http, &base).await;
    assert_eq!(get(&http, &base, "/healthz").await.0, 200);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .expect("open for damage");
    std::os::unix::fs::FileExt::write_all_at(&file, &damaged[from..to], from as u64)
        .expect("damage in place");
    drop(file);
    // A write moves the log, so read connections drop their cached pages.
    let (write_status, _, _) = create_mesh(&http, &base, "poke").await;
    let mut statuses = vec![write_status];
    for path in [
        "/v20190125/meshes/m/virtualNodes?limit=100",
        "/v20190125/meshes/m/virtualNodes/n75",
    ] {
        statuses.push(get(&http, &base, path).await.0);
    }
    println!("after damage in place: write, list, describe answered {statuses:?}");
    assert!(
        statuses.iter().any(|s| *s >= 500),
        "no request met the damage: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s >= 500),
        "{statuses:?}"
    );
    let (status, body) = get(&http, &base, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("corrupt"),
        "{body}"
    );
}
