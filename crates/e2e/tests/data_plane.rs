//! App Mesh's data plane proven with traffic (issue 11, item 4): every behaviour below is
//! translated by meshplane and checked here through real Envoy 1.40 with real requests, by
//! Envoy's own counters (admin `/stats`), access log lines, or what the backends receive.
//!
//! - connection pools → circuit breakers on the node's own ingress side (explicit mode for
//!   ingress: the node's Envoy binds `<ip>:<listener port>`, the application `127.0.0.1`);
//! - outlier detection ejecting a failing endpoint and returning it;
//! - active health checks removing an unhealthy endpoint and returning it;
//! - access logs in text and JSON formats;
//! - `http2Route` over h2c, gRPC metadata matches and gRPC retry events;
//! - HTTP and TCP idle timeouts;
//! - `match.port` and weighted-target `port`;
//! - IPv6 on `::1` with each `ipPreference` for a DNS-discovered node;
//! - `ALLOW_ALL` reaching a host outside the mesh from an explicit-mode proxy.
//!
//! Every test has its own control plane, mesh, loopback IPs and ports; timeouts are short and
//! every wait is bounded.

#[path = "e2e/common.rs"]
#[allow(dead_code)]
mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{World, client_spec, target, weighted};
use meshplane_testkit::grpc::{self, GrpcBackend};
use meshplane_testkit::{
    ControlPlane, Envoy, EnvoyOptions, HttpBackend, Target, TcpEcho, XdsFlavor, addr, free_port,
    loopback_ip, tcp, wait_for,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bound of every "config arrived / counter moved" wait.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- helpers

/// CreateVirtualNode with meshplane tags.
async fn node_tagged(w: &World, name: &str, spec: Value, tags: &[(&str, String)]) {
    let tags: Vec<Value> = tags
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    w.cp.call(
        "PUT",
        &format!("/v20190125/meshes/{}/virtualNodes", w.mesh),
        Some(json!({"virtualNodeName": name, "spec": spec, "tags": tags})),
    )
    .await;
}

/// A virtual node in explicit mode for ingress: its Envoy binds `ip` (and `ip:<listener
/// port>`), callers reach it by DNS name `ip`, the application listens on `127.0.0.1`.
async fn explicit_node(w: &World, name: &str, ip: Ipv4Addr, listeners: Value) {
    node_tagged(
        w,
        name,
        json!({"listeners": listeners, "serviceDiscovery": {"dns": {"hostname": ip.to_string()}}}),
        &[("meshplane.io/listen-address", ip.to_string())],
    )
    .await;
}

/// A virtual service provided by a virtual node.
async fn node_service(w: &World, vs: &str, node: &str) {
    w.cp.create_virtual_service(
        &w.mesh,
        vs,
        json!({"provider": {"virtualNode": {"virtualNodeName": node}}}),
    )
    .await;
}

/// Every stat whose name starts with `prefix`, one per line (for failure messages).
async fn stats_of(envoy: &Envoy, prefix: &str) -> String {
    envoy
        .stats()
        .await
        .into_iter()
        .filter(|(k, v)| k.starts_with(prefix) && *v != 0)
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect()
}

/// A counter or gauge equals `want` (bounded).
async fn stat_equals(envoy: &Envoy, name: &str, want: u64, within: Duration) {
    wait_for(&format!("{name} == {want}"), within, || async {
        let v = envoy.stat(name).await;
        if v == want {
            Ok(())
        } else {
            Err(format!("{name} = {v}"))
        }
    })
    .await
}

/// One HTTP/1.1 request written by hand (`request_target` may be absolute-form, as sent to a
/// forward proxy); returns the status and body.
async fn raw_get(to: SocketAddr, request_target: &str, host: &str) -> (u16, String) {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(to).await?;
        let req =
            format!("GET {request_target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let raw = match tokio::time::timeout(Duration::from_secs(5), io).await {
        Ok(Ok(raw)) => raw,
        Ok(Err(e)) => return (0, e.to_string()),
        Err(_) => return (0, "timed out".to_owned()),
    };
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// `n` sequential GETs; the bodies of the 2xx answers with their counts.
async fn spread(t: &Target, path: &str, n: usize) -> std::collections::BTreeMap<String, u64> {
    let rep = t.load(path).requests(n).concurrency(1).run().await;
    rep.by_body
}

/// Cloud Map namespace `ns`, service `svc`, and one instance per backend on `127.0.0.1`.
async fn cloud_map_instances(cp: &ControlPlane, ns: &str, svc: &str, backends: &[&HttpBackend]) {
    let api = cp;
    let op = cloud_map(api, "CreateHttpNamespace", json!({"Name": ns})).await;
    let op = cloud_map(
        api,
        "GetOperation",
        json!({"OperationId": op["OperationId"]}),
    )
    .await;
    let ns_id = op["Operation"]["Targets"]["NAMESPACE"].clone();
    let s = cloud_map(
        api,
        "CreateService",
        json!({"Name": svc, "NamespaceId": ns_id}),
    )
    .await;
    let svc_id = s["Service"]["Id"].as_str().expect("service id").to_owned();
    for (i, b) in backends.iter().enumerate() {
        cloud_map(
            api,
            "RegisterInstance",
            json!({"ServiceId": svc_id, "InstanceId": format!("i-{i}"), "Attributes": {
                "AWS_INSTANCE_IPV4": "127.0.0.1",
                "AWS_INSTANCE_PORT": b.port().to_string(),
            }}),
        )
        .await;
    }
}

/// One AWS JSON 1.1 call to the registry (must answer 200), signed with the control
/// plane's administrator key.
async fn cloud_map(cp: &ControlPlane, op: &str, body: Value) -> Value {
    let (status, v) = cp.cloud_map(op, body.clone()).await;
    assert_eq!(status, 200, "{op} {body}: {v}");
    v
}

// ---------------------------------------------------------------- circuit breaking

/// App Mesh applies a node's listener connection pool on its own ingress cluster
/// (`cds_ingress_*`, walkthroughs #2 and #24). HTTP `maxConnections`/`maxPendingRequests`,
/// HTTP/2 and gRPC `maxRequests` and TCP `maxConnections` each turn the overflow away (503 or
/// `UNAVAILABLE` with Envoy's overflow counters, or a closed TCP connection) while the
/// admitted requests pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_pools_trip_circuit_breakers_on_the_ingress_side() {
    let w = World::new("pools").await;
    let h1 = HttpBackend::start("h1").await;
    let h2 = HttpBackend::start("h2").await;
    let echo = TcpEcho::start().await;
    let g = GrpcBackend::start("g").await;
    let ip = loopback_ip();
    explicit_node(
        &w,
        "server",
        ip,
        json!([
            {"portMapping": {"port": g.port(), "protocol": "grpc"},
             "connectionPool": {"grpc": {"maxRequests": 1}}},
            {"portMapping": {"port": h1.port(), "protocol": "http"},
             "connectionPool": {"http": {"maxConnections": 1, "maxPendingRequests": 1}}},
            {"portMapping": {"port": h2.port(), "protocol": "http2"},
             "connectionPool": {"http2": {"maxRequests": 1}}},
            {"portMapping": {"port": echo.port(), "protocol": "tcp"},
             "connectionPool": {"tcp": {"maxConnections": 1}}},
        ]),
    )
    .await;
    let envoy = w.envoy("server", XdsFlavor::Delta).await;
    let cluster =
        |proto: &str, port: u16| format!("cluster.cds_ingress_pools_server_{proto}_{port}");

    // Explicit mode for ingress: a caller reaches the node at <ip>:<listener port>.
    let t1 = Target::new("server.local", addr(ip, h1.port()));
    let r = t1.get("/").await;
    assert_eq!((r.status, r.body.as_str()), (200, "h1"), "{r:?}");

    // HTTP/1: one connection, one pending request; eight concurrent slow requests.
    let rep = t1
        .load("/slow")
        .header("x-delay-ms", "800")
        .requests(8)
        .concurrency(8)
        .run()
        .await;
    let c1 = cluster("http", h1.port());
    let overflow = envoy
        .stat(&format!("{c1}.upstream_rq_pending_overflow"))
        .await;
    let rejected = rep.by_status.get(&503).copied().unwrap_or(0);
    assert!(
        rejected >= 5 && rep.count("h1") >= 1,
        "expected most of 8 requests turned away with 503 and at least one served: {:?}",
        rep.by_status
    );
    assert_eq!(
        overflow,
        rejected,
        "every 503 is a pending overflow; {}",
        stats_of(&envoy, &c1).await
    );
    assert_eq!(envoy.stat(&format!("{c1}.upstream_cx_total")).await, 1);

    // HTTP/2 upstream: one request at a time (Envoy counts these as active overflows).
    let t2 = Target::new("server.local", addr(ip, h2.port()));
    let rep = t2
        .load("/slow")
        .header("x-delay-ms", "800")
        .requests(6)
        .concurrency(6)
        .run()
        .await;
    let c2 = cluster("http2", h2.port());
    let rejected = rep.by_status.get(&503).copied().unwrap_or(0);
    assert!(
        rejected >= 3 && rep.count("h2") >= 1,
        "http2 maxRequests 1: {:?}",
        rep.by_status
    );
    assert_eq!(
        envoy
            .stat(&format!("{c2}.upstream_rq_active_overflow"))
            .await,
        rejected,
        "{}",
        stats_of(&envoy, &c2).await
    );
    assert!(envoy.stat(&format!("{c2}.upstream_cx_http2_total")).await >= 1);

    // gRPC: one call at a time; the others fail fast with UNAVAILABLE (Envoy's overflow).
    let via = addr(ip, g.port());
    let calls: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(async move {
                let text = format!("call {i}");
                grpc::call_with(
                    via,
                    "server.local",
                    "/demo.Greeter/Hello",
                    &text,
                    &[("x-delay-ms", "800")],
                )
                .await
            })
        })
        .collect();
    let (mut ok, mut unavailable) = (0, 0);
    for c in calls {
        match c.await.expect("grpc call task") {
            Ok(_) => ok += 1,
            Err(s) if s.code() == tonic::Code::Unavailable => unavailable += 1,
            Err(s) => panic!("unexpected gRPC status {s:?}"),
        }
    }
    assert!(
        ok >= 1 && unavailable >= 2,
        "ok {ok}, unavailable {unavailable}"
    );
    let cg = cluster("grpc", g.port());
    assert_eq!(
        envoy
            .stat(&format!("{cg}.upstream_rq_active_overflow"))
            .await,
        unavailable,
        "{}",
        stats_of(&envoy, &cg).await
    );

    // TCP: the first connection is admitted and held open; the second is closed unanswered.
    let via = addr(ip, echo.port());
    let mut first = tokio::net::TcpStream::connect(via).await.expect("connect");
    first.write_all(b"one").await.unwrap();
    let mut buf = [0u8; 3];
    tokio::time::timeout(Duration::from_secs(5), first.read_exact(&mut buf))
        .await
        .expect("first connection echoed")
        .unwrap();
    assert_eq!(&buf, b"one");
    let c3 = cluster("tcp", echo.port());
    stat_equals(
        &envoy,
        &format!("{c3}.circuit_breakers.default.cx_open"),
        1,
        WAIT,
    )
    .await;
    let second = tcp::echo_once(via, b"two").await;
    assert!(
        second.as_ref().map_or(true, Vec::is_empty),
        "the second connection must not reach the application: {second:?}"
    );
    assert_eq!(envoy.stat(&format!("{c3}.upstream_cx_overflow")).await, 1);
    assert_eq!(echo.connections(), 1);
    drop(first);
}

// ---------------------------------------------------------------- outlier detection

/// A pool of three Cloud Map instances behind node `pool` (listener `port`, extra listener
/// members `extra`), a virtual service `pool.local`, and a client `front`.
async fn pool_mesh(w: &World, backends: &[&HttpBackend], port: u16, extra: Value) -> Ipv4Addr {
    cloud_map_instances(&w.cp, "dp.local", "pool", backends).await;
    let mut listener = json!({"portMapping": {"port": port, "protocol": "http"}});
    if let (Some(l), Some(e)) = (listener.as_object_mut(), extra.as_object()) {
        l.extend(e.clone());
    }
    w.cp.create_virtual_node(
        &w.mesh,
        "pool",
        json!({"listeners": [listener], "serviceDiscovery": {"awsCloudMap": {
            "namespaceName": "dp.local", "serviceName": "pool"}}}),
    )
    .await;
    node_service(w, "pool.local", "pool").await;
    w.client("front", &["pool.local"]).await
}

/// `outlierDetection`: an endpoint answering 5xx is ejected after `maxServerErrors` in a row
/// (Envoy's `ejections_enforced_total`), gets no traffic while ejected, a second failing one
/// is not ejected past `maxEjectionPercent` (`ejections_overflow`), and the first is back
/// after `baseEjectionDuration`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_endpoint_and_returns_it() {
    let w = World::new("outlier").await;
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let c = HttpBackend::start("c").await;
    let port = free_port();
    let ip = pool_mesh(
        &w,
        &[&a, &b, &c],
        port,
        json!({"outlierDetection": {
            "maxServerErrors": 3,
            "interval": {"unit": "ms", "value": 300},
            "baseEjectionDuration": {"unit": "ms", "value": 5000},
            "maxEjectionPercent": 50
        }}),
    )
    .await;
    let envoy = w.envoy("front", XdsFlavor::Sotw).await;
    let t = target("pool.local", ip, port);
    let cluster = format!("cluster.cds_egress_outlier_pool_http_{port}");
    let seen = spread(&t, "/", 30).await;
    assert_eq!(seen.len(), 3, "all three endpoints serve: {seen:?}");

    a.fail_next(1_000_000);
    for _ in 0..30 {
        t.get("/").await;
        if envoy
            .stat(&format!(
                "{cluster}.outlier_detection.ejections_enforced_total"
            ))
            .await
            >= 1
        {
            break;
        }
    }
    assert_eq!(
        envoy
            .stat(&format!(
                "{cluster}.outlier_detection.ejections_enforced_total"
            ))
            .await,
        1,
        "a failing endpoint is ejected"
    );
    assert_eq!(
        envoy
            .stat(&format!(
                "{cluster}.outlier_detection.ejections_consecutive_5xx"
            ))
            .await,
        1
    );
    let ejected_at = Instant::now();
    // While ejected, the failing endpoint gets nothing and every request succeeds.
    let before = a.requests();
    let rep = t.load("/").requests(20).concurrency(1).run().await;
    assert_eq!(a.requests(), before, "an ejected endpoint gets no traffic");
    assert_eq!(rep.failures(), 0, "{:?}", rep.by_status);
    assert_eq!(rep.count("b") + rep.count("c"), 20);

    // maxEjectionPercent 50: with one of three out, a second failing endpoint stays in.
    let overflow = format!("{cluster}.outlier_detection.ejections_overflow");
    b.fail_next(1_000_000);
    for _ in 0..30 {
        t.get("/").await;
        if envoy.stat(&overflow).await >= 1 {
            break;
        }
    }
    b.fail_next(0);
    assert!(
        envoy.stat(&overflow).await >= 1,
        "{}",
        stats_of(&envoy, &cluster).await
    );
    assert_eq!(
        envoy
            .stat(&format!("{cluster}.outlier_detection.ejections_active"))
            .await,
        1,
        "still only one endpoint ejected"
    );
    assert!(
        ejected_at.elapsed() < Duration::from_millis(4500),
        "the checks took {:?}: too slow to observe the 5 s ejection",
        ejected_at.elapsed()
    );

    // Healthy again: back after the base ejection time.
    a.fail_next(0);
    stat_equals(
        &envoy,
        &format!("{cluster}.outlier_detection.ejections_active"),
        0,
        WAIT,
    )
    .await;
    assert!(
        ejected_at.elapsed() >= Duration::from_millis(4900),
        "returned after {:?}, before baseEjectionDuration",
        ejected_at.elapsed()
    );
    let seen = spread(&t, "/", 30).await;
    assert!(
        seen.get("a").copied().unwrap_or(0) > 0,
        "the endpoint is back: {seen:?}"
    );
}

// ---------------------------------------------------------------- active health checks

/// `healthCheck` on the target listener: the caller's Envoy probes every endpoint on the
/// check's `path`; one that fails there (while still answering other paths) is taken out of
/// the load balancer (`membership_healthy`, `health_check.failure`) and gets only probes;
/// once it passes again it serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_remove_an_unhealthy_endpoint() {
    let w = World::new("hc").await;
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let c = HttpBackend::start("c").await;
    // Only the probe path fails: `c` would answer traffic to `/`, so any "c" body below
    // means the health check did not take it out.
    c.fail_path(Some("/ping"));
    let port = free_port();
    let ip = pool_mesh(
        &w,
        &[&a, &b, &c],
        port,
        json!({"healthCheck": {
            "protocol": "http", "path": "/ping", "intervalMillis": 5000,
            "timeoutMillis": 2000, "healthyThreshold": 2, "unhealthyThreshold": 2
        }}),
    )
    .await;
    let envoy = w.envoy("front", XdsFlavor::Delta).await;
    let cluster = format!("cluster.cds_egress_hc_pool_http_{port}");
    stat_equals(&envoy, &format!("{cluster}.membership_healthy"), 2, WAIT).await;
    assert_eq!(envoy.stat(&format!("{cluster}.membership_total")).await, 3);
    assert!(envoy.stat(&format!("{cluster}.health_check.failure")).await >= 1);
    assert!(envoy.stat(&format!("{cluster}.health_check.success")).await >= 2);

    // 30 requests: the unhealthy endpoint gets none of them (only its probes, one per 5 s).
    let t = target("pool.local", ip, port);
    let before = c.requests();
    let rep = t.load("/").requests(30).concurrency(2).run().await;
    assert_eq!(rep.failures(), 0, "{:?}", rep.by_status);
    assert_eq!(rep.count("a") + rep.count("b"), 30, "{:?}", rep.by_body);
    assert!(
        c.requests() - before <= 2,
        "the unhealthy endpoint got {} requests",
        c.requests() - before
    );

    // It recovers: the next probe passes and it serves again.
    c.fail_path(None);
    stat_equals(
        &envoy,
        &format!("{cluster}.membership_healthy"),
        3,
        Duration::from_secs(15),
    )
    .await;
    let seen = spread(&t, "/", 30).await;
    assert!(seen.get("c").copied().unwrap_or(0) > 0, "{seen:?}");
}

// ---------------------------------------------------------------- access logs

/// `logging.accessLog.file` with a text format (the caller, egress side) and a JSON format
/// (the callee, ingress side, in explicit mode with its application on its own address):
/// one line each per request, with the fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_logs_write_text_and_json_lines() {
    let w = World::new("logs").await;
    // The application on its own loopback address (tag `meshplane.io/app-address`).
    let app_ip = loopback_ip();
    let app = HttpBackend::start_on("srv", addr(app_ip, 0)).await;
    let dir = std::env::temp_dir().join(format!("meshplane-dp-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (text_log, json_log) = (dir.join("front.log"), dir.join("server.log"));
    let _ = std::fs::remove_file(&text_log);
    let _ = std::fs::remove_file(&json_log);
    let server_ip = loopback_ip();
    node_tagged(
        &w,
        "server",
        json!({
            "listeners": [{"portMapping": {"port": app.port(), "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": server_ip.to_string()}},
            "logging": {"accessLog": {"file": {"path": json_log, "format": {"json": [
                {"key": "marker", "value": "jsontestingtesting"},
                {"key": "protocol", "value": "%PROTOCOL%"},
                {"key": "path", "value": "%REQ(:PATH)%"},
                {"key": "code", "value": "%RESPONSE_CODE%"},
            ]}}}}
        }),
        &[
            ("meshplane.io/listen-address", server_ip.to_string()),
            ("meshplane.io/app-address", app_ip.to_string()),
        ],
    )
    .await;
    node_service(&w, "srv.local", "server").await;
    let front_ip = loopback_ip();
    let mut spec = client_spec(&["srv.local"]);
    spec["logging"] = json!({"accessLog": {"file": {"path": text_log, "format": {
        "text": "texttestingtesting %PROTOCOL% %RESPONSE_CODE% %REQ(:PATH)% %UPSTREAM_CLUSTER%"
    }}}});
    node_tagged(
        &w,
        "front",
        spec,
        &[("meshplane.io/listen-address", front_ip.to_string())],
    )
    .await;
    let _server = w.envoy("server", XdsFlavor::Sotw).await;
    let _front = w.envoy("front", XdsFlavor::Delta).await;

    // Two Envoys: front's egress → server's ingress on <server ip>:<port> → the application.
    let t = target("srv.local", front_ip, app.port());
    for path in ["/logged/1", "/logged/2"] {
        let r = t.get(path).await;
        assert_eq!((r.status, r.body.as_str()), (200, "srv"), "{r:?}");
    }
    let expect_text: Vec<String> = ["/logged/1", "/logged/2"]
        .iter()
        .map(|p| {
            format!(
                "texttestingtesting HTTP/1.1 200 {p} cds_egress_logs_server_http_{}",
                app.port()
            )
        })
        .collect();
    wait_for("text access log lines", WAIT, || async {
        let text = std::fs::read_to_string(&text_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines == expect_text {
            Ok(())
        } else {
            Err(format!("{lines:?}"))
        }
    })
    .await;
    let lines: Vec<Value> = wait_for("json access log lines", WAIT, || async {
        let text = std::fs::read_to_string(&json_log).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() == 2 {
            Ok(lines)
        } else {
            Err(text)
        }
    })
    .await;
    for (l, p) in lines.iter().zip(["/logged/1", "/logged/2"]) {
        assert_eq!(l["marker"], "jsontestingtesting", "{l}");
        assert_eq!(l["protocol"], "HTTP/1.1", "{l}");
        assert_eq!(l["path"], p, "{l}");
        assert_eq!(l["code"].to_string().trim_matches('"'), "200", "{l}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- h2c and gRPC

/// `http2Route` carries h2c end to end (Envoy's HTTP/2 counters on both sides); a gRPC
/// `metadata` match picks its target; a gRPC `retryPolicy` on `unavailable` retries (Envoy's
/// `upstream_rq_retry`) beyond the default policy's two retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_routes_over_h2c_and_grpc_metadata_and_retries() {
    let w = World::new("h2").await;
    let main = GrpcBackend::start("g-main").await;
    let iphone = GrpcBackend::start("g-iphone").await;
    let h2app = GrpcBackend::start("h2-app").await;
    w.backend_node("gmain", "grpc", main.port()).await;
    w.backend_node("giphone", "grpc", iphone.port()).await;
    w.backend_node("h2node", "http2", h2app.port()).await;
    let (rg, rh) = (free_port(), free_port());
    w.router("grpc-r", "grpc", rg).await;
    w.router("h2-r", "http2", rh).await;
    w.service("grpc.local", "grpc-r").await;
    w.service("h2.local", "h2-r").await;
    w.route(
        "grpc-r",
        "iphone",
        json!({"priority": 1, "grpcRoute": {
            "match": {"serviceName": "demo.Greeter",
                      "metadata": [{"name": "device", "match": {"exact": "iphone"}}]},
            "action": {"weightedTargets": weighted(&[("giphone", 1)])}
        }}),
    )
    .await;
    w.route(
        "grpc-r",
        "rest",
        json!({"priority": 2, "grpcRoute": {
            "match": {"serviceName": "demo.Greeter"},
            "action": {"weightedTargets": weighted(&[("gmain", 1)])},
            "retryPolicy": {"grpcRetryEvents": ["unavailable"], "maxRetries": 3,
                            "perRetryTimeout": {"unit": "ms", "value": 2000}}
        }}),
    )
    .await;
    w.route(
        "h2-r",
        "echo",
        json!({"http2Route": {
            "match": {"prefix": "/demo.Echo"},
            "action": {"weightedTargets": weighted(&[("h2node", 1)])}
        }}),
    )
    .await;
    let ip = w.client("front", &["grpc.local", "h2.local"]).await;
    let envoy = w.envoy("front", XdsFlavor::Delta).await;

    // http2Route: h2c from the client, HTTP/2 to the application.
    let pong = grpc::call(
        addr(ip, rh),
        &format!("h2.local:{rh}"),
        "/demo.Echo/Echo",
        "h2",
    )
    .await;
    let pong = match pong {
        Ok(p) => p,
        Err(e) => panic!("http2Route call failed: {e}; {}", envoy.describe().await),
    };
    assert_eq!(
        (pong.backend.as_str(), pong.text.as_str()),
        ("h2-app", "h2")
    );
    let h2_cluster = format!("cluster.cds_egress_h2_h2node_http2_{}", h2app.port());
    assert!(envoy.stat("http.egress.downstream_cx_http2_total").await >= 1);
    assert_eq!(
        envoy
            .stat(&format!("{h2_cluster}.upstream_cx_http2_total"))
            .await,
        1
    );
    assert_eq!(
        envoy
            .stat(&format!("{h2_cluster}.upstream_cx_http1_total"))
            .await,
        0
    );

    // gRPC metadata match.
    let (via, authority) = (addr(ip, rg), format!("grpc.local:{rg}"));
    let backend_for = |device: Option<&'static str>| {
        let authority = authority.clone();
        async move {
            let md: Vec<(&'static str, &str)> = device.map(|d| ("device", d)).into_iter().collect();
            grpc::call_with(via, &authority, "/demo.Greeter/Hello", "x", &md)
                .await
                .map(|p| p.backend)
                .unwrap_or_else(|e| format!("error {e}"))
        }
    };
    assert_eq!(backend_for(Some("iphone")).await, "g-iphone");
    assert_eq!(backend_for(Some("android")).await, "g-main");
    assert_eq!(backend_for(None).await, "g-main");

    // gRPC retry on `unavailable`: three failures, the fourth attempt answers.
    let calls = main.calls();
    main.fail_next(3);
    assert_eq!(
        backend_for(None).await,
        "g-main",
        "the retry policy recovers"
    );
    assert_eq!(main.calls() - calls, 4, "one attempt and three retries");
    let main_cluster = format!("cluster.cds_egress_h2_gmain_grpc_{}", main.port());
    assert_eq!(
        envoy
            .stat(&format!("{main_cluster}.upstream_rq_retry"))
            .await,
        3
    );
    assert_eq!(
        envoy
            .stat(&format!("{main_cluster}.upstream_rq_retry_success"))
            .await,
        1
    );
}

// ---------------------------------------------------------------- idle timeouts

/// Listener `timeout.http.idle` ends a stream that stays silent longer than it (while
/// `perRequest` is far away), and `timeout.tcp.idle` closes an idle TCP connection, both on
/// the node's ingress side in explicit mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeouts_end_silent_streams_and_connections() {
    let w = World::new("idle").await;
    let app = HttpBackend::start("app").await;
    let echo = TcpEcho::start().await;
    let ip = loopback_ip();
    explicit_node(
        &w,
        "server",
        ip,
        json!([
            {"portMapping": {"port": app.port(), "protocol": "http"},
             "timeout": {"http": {"idle": {"unit": "ms", "value": 1000},
                                  "perRequest": {"unit": "s", "value": 10}}}},
            {"portMapping": {"port": echo.port(), "protocol": "tcp"},
             "timeout": {"tcp": {"idle": {"unit": "ms", "value": 1000}}}},
        ]),
    )
    .await;
    let envoy = w.envoy("server", XdsFlavor::Sotw).await;

    let t = Target::new("server.local", addr(ip, app.port()));
    let r = t.send("GET", "/quick", &[("x-delay-ms", "200")]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "app"), "{r:?}");
    let r = t.send("GET", "/silent", &[("x-delay-ms", "4000")]).await;
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        r.elapsed >= Duration::from_millis(900) && r.elapsed < Duration::from_millis(2500),
        "idle timeout after {:?}, expected about 1 s",
        r.elapsed
    );
    let cluster = format!("cluster.cds_ingress_idle_server_http_{}", app.port());
    assert_eq!(
        envoy.stat("http.ingress.downstream_rq_idle_timeout").await,
        1,
        "the stream idle timeout ended the silent request; {}",
        stats_of(&envoy, "http.ingress").await
    );
    assert_eq!(
        envoy.stat(&format!("{cluster}.upstream_rq_timeout")).await,
        0,
        "not the per-request timeout"
    );

    // TCP: echo once, then stay silent; Envoy closes the connection after about 1 s.
    let mut s = tokio::net::TcpStream::connect(addr(ip, echo.port()))
        .await
        .expect("connect");
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .expect("echo")
        .unwrap();
    let quiet = Instant::now();
    let mut rest = Vec::new();
    // EOF or a reset: either way Envoy ended it.
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("Envoy closes the idle connection within 5 s");
    assert!(rest.is_empty(), "nothing more was sent: {rest:?}");
    assert!(
        quiet.elapsed() >= Duration::from_millis(900)
            && quiet.elapsed() < Duration::from_millis(2500),
        "closed after {:?}, expected about 1 s",
        quiet.elapsed()
    );
    assert_eq!(envoy.stat("tcp.ingress.idle_timeout").await, 1);
}

// ---------------------------------------------------------------- ports

/// A node with two listeners behind a router with two listeners: `match.port` picks the
/// route by the router port called, and the weighted target's `port` picks the node listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_port_and_target_port_select_listeners() {
    let w = World::new("ports").await;
    let p1 = HttpBackend::start("listener-1").await;
    let p2 = HttpBackend::start("listener-2").await;
    w.cp.create_virtual_node(
        &w.mesh,
        "multi",
        json!({
            "listeners": [
                {"portMapping": {"port": p1.port(), "protocol": "http"}},
                {"portMapping": {"port": p2.port(), "protocol": "http"}},
            ],
            "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}},
        }),
    )
    .await;
    let (r1, r2) = (free_port(), free_port());
    w.cp.create_virtual_router(
        &w.mesh,
        "r",
        json!({"listeners": [
            {"portMapping": {"port": r1, "protocol": "http"}},
            {"portMapping": {"port": r2, "protocol": "http"}},
        ]}),
    )
    .await;
    w.service("multi.local", "r").await;
    // Crossed on purpose: router port 1 → node listener 2 and the other way round.
    for (name, rport, nport) in [("one", r1, p2.port()), ("two", r2, p1.port())] {
        w.route(
            "r",
            name,
            json!({"httpRoute": {
                "match": {"prefix": "/", "port": rport},
                "action": {"weightedTargets": [{"virtualNode": "multi", "weight": 1, "port": nport}]}
            }}),
        )
        .await;
    }
    let ip = w.client("front", &["multi.local"]).await;
    let envoy = w.envoy("front", XdsFlavor::Sotw).await;
    for (rport, want) in [(r1, "listener-2"), (r2, "listener-1")] {
        let r = target("multi.local", ip, rport).get("/").await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, want),
            "router port {rport}: {r:?}; {}",
            envoy.describe().await
        );
    }
}

// ---------------------------------------------------------------- IPv6

/// A DNS-discovered node whose hostname resolves to both `127.0.0.1` and `::1` (a private
/// `/etc/hosts` for the caller's Envoy), with an application on each address and the same
/// port: each `ipPreference` reaches the family it names (`IPv6_PREFERRED` and `IPv6_ONLY`
/// → `::1`, `IPv4_PREFERRED` and `IPv4_ONLY` → `127.0.0.1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_preference_picks_the_address_family() {
    let port = dual_stack_port();
    let v4 = HttpBackend::start_on("v4", SocketAddr::from(([127, 0, 0, 1], port))).await;
    let v6 = HttpBackend::start_on(
        "v6",
        SocketAddr::new(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), port),
    )
    .await;
    let w = World::new("ipv6").await;
    let prefs = [
        ("IPv6_ONLY", "v6"),
        ("IPv6_PREFERRED", "v6"),
        ("IPv4_ONLY", "v4"),
        ("IPv4_PREFERRED", "v4"),
    ];
    let mut services = Vec::new();
    for (pref, _) in prefs {
        let name = pref.to_ascii_lowercase().replace('_', "-");
        w.cp.create_virtual_node(
            &w.mesh,
            &name,
            json!({
                "listeners": [{"portMapping": {"port": port, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": "dual.meshplane.test", "ipPreference": pref}},
            }),
        )
        .await;
        let vs = format!("{name}.local");
        node_service(&w, &vs, &name).await;
        services.push(vs);
    }
    let ip = loopback_ip();
    let refs: Vec<&str> = services.iter().map(String::as_str).collect();
    w.cp.create_virtual_node_at(&w.mesh, "front", client_spec(&refs), ip)
        .await;
    let (envoy, hosts) = envoy_with_hosts(
        &w,
        "front",
        "dual",
        "127.0.0.1 localhost\n127.0.0.1 dual.meshplane.test\n::1 dual.meshplane.test\n",
    )
    .await;
    // Every service shares the port: one egress filter chain, one virtual host each.
    for ((pref, want), vs) in prefs.iter().zip(&services) {
        let t = target(vs, ip, port);
        let r = wait_for(&format!("{pref} answered"), WAIT, || async {
            let r = t.get("/").await;
            if r.status == 200 {
                Ok(r)
            } else {
                Err(format!("{r:?}"))
            }
        })
        .await;
        assert_eq!(r.body, *want, "{pref}; {}", envoy.describe().await);
    }
    assert!(v4.requests() >= 2 && v6.requests() >= 2);
    let _ = std::fs::remove_file(&hosts);
}

/// A delta Envoy for node `node` that resolves names with its own `/etc/hosts` (`hosts`);
/// returns it and the file, for the caller to remove.
async fn envoy_with_hosts(
    w: &World,
    node: &str,
    tag: &str,
    hosts: &str,
) -> (Envoy, std::path::PathBuf) {
    let path =
        std::env::temp_dir().join(format!("meshplane-dp-{tag}-hosts-{}", std::process::id()));
    std::fs::write(&path, hosts).unwrap();
    let mut opts = EnvoyOptions::new(w.node_id(node), w.cp.xds_addr(), XdsFlavor::Delta);
    opts.hosts_file = Some(path.clone());
    let envoy = Envoy::start_with(opts);
    envoy.wait_live().await;
    (envoy, path)
}

/// A port free on both `127.0.0.1` and `::1` a moment ago.
fn dual_stack_port() -> u16 {
    for _ in 0..50 {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind v4");
        let port = v4.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("::1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1");
}

// ---------------------------------------------------------------- ALLOW_ALL

/// Under `ALLOW_ALL` an explicit-mode proxy reaches a host outside the mesh (a local server
/// not modelled as a node), by IP and by name, through a backend port (`Host` names the
/// outside host) and through its egress port used as an HTTP forward proxy; nothing loops
/// (Envoy counts exactly the requests sent). Under `DROP_ALL` the same request gets 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_all_reaches_a_host_outside_the_mesh_in_explicit_mode() {
    let cp = ControlPlane::start().await;
    cp.create_mesh("open", json!({"egressFilter": {"type": "ALLOW_ALL"}}))
        .await;
    let w = World {
        cp,
        mesh: "open".to_owned(),
    };
    let web = HttpBackend::start("web").await;
    let outside = HttpBackend::start("outside").await;
    w.backend_node("web", "http", web.port()).await;
    node_service(&w, "web.local", "web").await;
    let ip = w.client("front", &["web.local"]).await;
    // By name: a name only this Envoy resolves, to IPv4 only (`localhost` also resolves to
    // ::1, which the node's unset ipPreference, AUTO, would try first; the outside server
    // listens on 127.0.0.1).
    let (envoy, hosts) = envoy_with_hosts(
        &w,
        "front",
        "outside",
        "127.0.0.1 localhost\n127.0.0.1 outside.meshplane.test\n",
    )
    .await;

    let r = target("web.local", ip, web.port()).get("/").await;
    assert_eq!((r.status, r.body.as_str()), (200, "web"), "{r:?}");
    let out = outside.port();
    let via_backend_port = addr(ip, web.port());
    let via_egress_port = addr(ip, 15001);
    let cases = [
        (
            via_backend_port,
            "/x".to_owned(),
            format!("127.0.0.1:{out}"),
        ),
        (
            via_backend_port,
            "/x".to_owned(),
            format!("outside.meshplane.test:{out}"),
        ),
        (
            via_egress_port,
            format!("http://127.0.0.1:{out}/x"),
            format!("127.0.0.1:{out}"),
        ),
    ];
    for (to, request_target, host) in &cases {
        let (status, body) = raw_get(*to, request_target, host).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "outside"),
            "{to} {request_target} Host {host}; {}",
            envoy.describe().await
        );
    }
    assert_eq!(outside.requests(), cases.len() as u64);
    let _ = std::fs::remove_file(&hosts);
    let passthrough = "cluster.cds_egress_open_passthrough";
    assert_eq!(
        envoy
            .stat(&format!("{passthrough}.upstream_rq_total"))
            .await,
        cases.len() as u64
    );
    // No loop: the Envoy saw exactly the requests the test sent (1 + the cases).
    assert_eq!(
        envoy.stat("http.egress.downstream_rq_total").await,
        1 + cases.len() as u64
    );

    // DROP_ALL: the outside host is no longer reachable (Envoy's 404 on the backend port).
    w.cp.call(
        "PUT",
        "/v20190125/meshes/open",
        Some(json!({"spec": {"egressFilter": {"type": "DROP_ALL"}}})),
    )
    .await;
    let host = format!("127.0.0.1:{out}");
    wait_for("DROP_ALL to refuse the outside host", WAIT, || async {
        match raw_get(via_backend_port, "/x", &host).await {
            (404, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let reached = outside.requests();
    assert_eq!(raw_get(via_backend_port, "/x", &host).await.0, 404);
    assert_eq!(
        outside.requests(),
        reached,
        "a refused request never leaves the Envoy"
    );
}
