//! `meshplane envoy run` with `--auth sigv4` (the default) against real Envoy: it mints a node
//! token through the API with the AWS credential chain (the stub API verifies the SigV4
//! signature for real), Envoy presents it on its ADS stream, and the supervisor renews it at
//! 2/3 of its lifetime so the next reconnect carries the new token, without restarting Envoy.
//!
//! The xDS side is a recorder Envoy that logs the `authorization` header of each request and
//! answers 503, so the proxy keeps reconnecting.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, to_bytes};
use axum::http::{Request, Response, StatusCode};
use meshplane_auth::sigv4::{Payload, RequestView, verify};
use serde_json::{Value, json};

const DEFAULT_ENVOY: &str = "/work/main/.venv/lib/python3.11/site-packages/envoy/_bin/envoy";
const ADS_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
const AKID: &str = "MPAKRUNTESTRUNTEST23";
const SECRET: &str = "run-test-secret-0123456789-abcdefghijklm";
/// The lifetime the stub gives each token: renewal at 2/3 is 4 s after minting.
const TOKEN_TTL_S: u64 = 6;

fn envoy_binary() -> PathBuf {
    let path = std::env::var_os("MESHPLANE_ENVOY")
        .map(PathBuf::from)
        .unwrap_or(DEFAULT_ENVOY.into());
    assert!(
        path.is_file(),
        "envoy not found at {}: run `cargo xtask envoy` or set MESHPLANE_ENVOY",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A child process, stopped on drop (SIGTERM first so a supervisor stops its Envoy).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The stub API: `POST /meshplane/v1/node-tokens`, SigV4-verified; records (body, outcome).
type Mints = Arc<Mutex<Vec<(Value, Result<(), String>)>>>;

fn stub_api(rt: &tokio::runtime::Runtime) -> (String, Mints) {
    let mints: Mints = Arc::default();
    let m = mints.clone();
    let app = axum::Router::new().fallback(move |req: Request<Body>| {
        let m = m.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = to_bytes(body, 1 << 20).await.unwrap();
            let keys = HashMap::from([(AKID.to_owned(), SECRET.to_owned())]);
            let outcome = verify(
                &RequestView::from_parts(&parts),
                Payload::Bytes(&body),
                SystemTime::now(),
                &keys,
            )
            .map(|_| ())
            .map_err(|e| e.exception_name().to_owned());
            let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let n = {
                let mut all = m.lock().unwrap();
                all.push((json_body, outcome.clone()));
                all.len()
            };
            if parts.uri.path() != "/meshplane/v1/node-tokens" || outcome.is_err() {
                return Response::builder()
                    .status(StatusCode::FORBIDDEN)
                    .header("x-amzn-ErrorType", "AccessDeniedException")
                    .body(Body::from(r#"{"message":"refused"}"#))
                    .unwrap();
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let answer = json!({
                "token": format!("mpt1.run.{n}"),
                "tokenId": format!("tid{n}"),
                "node": "mesh/m/virtualNode/n",
                "expiresAt": now + TOKEN_TTL_S,
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from(answer.to_string()))
                .unwrap()
        }
    });
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (endpoint, mints)
}

fn recorder(dir: &Path, port: u16, log: &Path) -> Proc {
    let config = json!({
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": free_port() } } },
        "static_resources": { "listeners": [{
            "name": "recorder",
            "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } },
            "filter_chains": [{ "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "recorder",
                    "access_log": [{
                        "name": "envoy.access_loggers.file",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                            "path": log,
                            "log_format": { "text_format_source": {
                                "inline_string": "%REQ(:PATH)% %REQ(AUTHORIZATION)%\n"
                            }},
                        },
                    }],
                    "route_config": { "virtual_hosts": [{
                        "name": "all", "domains": ["*"],
                        "routes": [{ "match": { "prefix": "/" }, "direct_response": { "status": 503 } }],
                    }]},
                    "http_filters": [{
                        "name": "envoy.filters.http.router",
                        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" },
                    }],
                },
            }]}],
        }]},
    });
    let file = dir.join("recorder.json");
    std::fs::write(&file, config.to_string()).unwrap();
    Proc(
        Command::new(envoy_binary())
            .arg("-c")
            .arg(&file)
            .args(["--disable-hot-restart", "--log-path"])
            .arg(dir.join("recorder.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn saw_token(log: &Path, token: &str) -> bool {
    let want = format!("{ADS_PATH} Bearer {token}");
    std::fs::File::open(log).is_ok_and(|f| {
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.trim_end() == want)
    })
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn envoy_run_mints_presents_and_renews_the_node_token() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (endpoint, mints) = stub_api(&rt);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let xds_port = free_port();
    let _recorder = recorder(dir.path(), xds_port, &log);

    let stderr_file = dir.path().join("run.stderr");
    let supervisor = Proc(
        Command::new(env!("CARGO_BIN_EXE_meshplane"))
            .args(["envoy", "run", "--node-id", "mesh/m/virtualNode/n"])
            .args(["--xds-address", &format!("127.0.0.1:{xds_port}")])
            .args(["--admin-port", &free_port().to_string()])
            .args(["--drain-time-s", "0", "--token-ttl", "6s"])
            .args(["--endpoint", &endpoint])
            .env("MESHPLANE_ENVOY", envoy_binary())
            .env("HOME", dir.path())
            .env("AWS_ACCESS_KEY_ID", AKID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_REGION", "us-west-2")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SHARED_CREDENTIALS_FILE")
            .env_remove("AWS_CONFIG_FILE")
            .env_remove("MESHPLANE_AUTH")
            .env_remove("MESHPLANE_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_file).unwrap())
            .spawn()
            .unwrap(),
    );
    let stderr = || std::fs::read_to_string(&stderr_file).unwrap_or_default();
    // Envoy's own lines, only the ones that explain a failure.
    let problems = || {
        stderr()
            .lines()
            .filter(|l| {
                !l.starts_with('[')
                    || l.contains("][warning][")
                    || l.contains("][error][")
                    || l.contains("][critical][")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };

    assert!(
        wait_until(Duration::from_secs(30), || saw_token(&log, "mpt1.run.1")),
        "the minted token never reached xDS; envoy run said:\n{}\nrecorder log:\n{}",
        problems(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Renewal at 2/3 of 6 s; Envoy's next reconnect (the recorder answers 503) carries it.
    assert!(
        wait_until(Duration::from_secs(40), || saw_token(&log, "mpt1.run.2")),
        "the renewed token never reached xDS; envoy run said:\n{}\nrecorder log:\n{}",
        problems(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let text = stderr();
    assert!(text.contains("node token obtained token_id=tid1"), "{text}");
    assert!(text.contains("node token renewed token_id=tid2"), "{text}");
    assert_eq!(
        text.matches("envoy started").count(),
        1,
        "renewal must not restart envoy:\n{text}"
    );
    let mints = mints.lock().unwrap().clone();
    assert!(mints.len() >= 2);
    for (body, outcome) in &mints {
        assert_eq!(outcome, &Ok(()));
        assert_eq!(
            body,
            &json!({"mesh": "m", "virtualNodeName": "n", "ttlSeconds": 6})
        );
    }
    drop(supervisor);
}

#[test]
fn envoy_run_fails_clearly_when_no_token_can_be_had() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (endpoint, mints) = stub_api(&rt);
    let dir = tempfile::tempdir().unwrap();
    // A wrong secret: every mint is refused (6 attempts, about 30 s of backoff in all).
    let out = Command::new(env!("CARGO_BIN_EXE_meshplane"))
        .args(["envoy", "run", "--node-id", "mesh/m/virtualNode/n"])
        .args(["--xds-address", "127.0.0.1:1", "--endpoint", &endpoint])
        .env("MESHPLANE_ENVOY", envoy_binary())
        .env("HOME", dir.path())
        .env("AWS_ACCESS_KEY_ID", AKID)
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .env_remove("AWS_PROFILE")
        .env_remove("MESHPLANE_AUTH")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("cannot obtain a node token (--auth none skips it)"),
        "{text}"
    );
    assert!(!text.contains("envoy started"), "{text}");
    let mints = mints.lock().unwrap();
    assert_eq!(mints.len(), 6);
    assert!(
        mints
            .iter()
            .all(|(_, o)| o == &Err("InvalidSignatureException".to_owned()))
    );
}

#[test]
fn envoy_token_writes_the_sds_file_for_bootstrap_token_file() {
    use std::os::unix::fs::PermissionsExt;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (endpoint, mints) = stub_api(&rt);
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("token.yaml");
    let token = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_meshplane"))
            .args(["envoy", "token", "--mesh", "m", "--endpoint", &endpoint])
            .args(extra)
            .arg("--out")
            .arg(&out_file)
            .env("HOME", dir.path())
            .env("AWS_ACCESS_KEY_ID", AKID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = token(&[
        "--virtual-gateway",
        "gw",
        "--mesh-owner",
        "123456789012",
        "--ttl",
        "1h",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&out_file).unwrap();
    let sds: Value = yaml_serde::from_str(&text).unwrap();
    assert_eq!(
        sds["resources"][0]["generic_secret"]["secret"]["inline_string"],
        "Bearer mpt1.run.1"
    );
    assert_eq!(sds["resources"][0]["name"], "meshplane-xds-token");
    let mode = std::fs::metadata(&out_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        mints.lock().unwrap()[0],
        (
            json!({"mesh": "m", "virtualGatewayName": "gw", "meshOwner": "123456789012", "ttlSeconds": 3600}),
            Ok(())
        )
    );
    // The bootstrap that references it.
    let boot = Command::new(env!("CARGO_BIN_EXE_meshplane"))
        .args([
            "envoy",
            "bootstrap",
            "--node-id",
            "mesh/m@123456789012/virtualGateway/gw",
        ])
        .arg("--token-file")
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(boot.status.success());
    let boot = String::from_utf8_lossy(&boot.stdout);
    assert!(
        boot.contains("envoy.filters.http.credential_injector"),
        "{boot}"
    );
    assert!(boot.contains(&out_file.display().to_string()), "{boot}");

    // Neither a node nor a gateway: refused before anything is sent.
    let out = token(&[]);
    assert!(!out.status.success());
    assert_eq!(mints.lock().unwrap().len(), 1);
}
