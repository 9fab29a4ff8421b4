//! Tracing that really emits spans: for each tracer App Mesh's image variables enable
//! (X-Ray, Datadog, Jaeger/Zipkin, and meshplane's OpenTelemetry option), a real Envoy whose
//! bootstrap comes from `meshplane envoy bootstrap` with those variables sends requests
//! through its egress HTTP connection manager (which carries `tracing` from the translator),
//! and a local collector must receive the span: a JSON segment over UDP for X-Ray, an HTTP
//! POST to `/api/v2/spans` for Zipkin, `/v0.4/traces` for Datadog, an OTLP/gRPC `Export`.
//!
//! Without the HCM's `tracing` block, or without the bootstrap's tracer, no span is sent and
//! each test fails after its bounded wait.

use std::time::Duration;

use meshplane_testkit::{
    ControlPlane, Envoy, EnvoyOptions, HttpBackend, HttpCollector, Target, UdpCollector, XdsFlavor,
    addr, loopback_ip, wait_for,
};
use serde_json::{Value, json};

const MESH: &str = "traced";
/// Zipkin flushes every 5 s (or after 5 spans); Datadog every 2 s.
const SPAN_WAIT: Duration = Duration::from_secs(15);

/// A control plane with a backend behind `color.traced.local` and a client node in explicit
/// mode; returns what the test needs to start the client's Envoy and call through it.
struct World {
    cp: ControlPlane,
    client_ip: std::net::Ipv4Addr,
    backend: HttpBackend,
}

impl World {
    async fn new() -> World {
        let cp = ControlPlane::start().await;
        cp.create_mesh(MESH, json!({"egressFilter": {"type": "DROP_ALL"}}))
            .await;
        let backend = HttpBackend::start("color").await;
        cp.create_virtual_node(
            MESH,
            "color",
            json!({
                "listeners": [{"portMapping": {"port": backend.port(), "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}},
            }),
        )
        .await;
        cp.create_virtual_service(
            MESH,
            "color.traced.local",
            json!({"provider": {"virtualNode": {"virtualNodeName": "color"}}}),
        )
        .await;
        let client_ip = loopback_ip();
        cp.create_virtual_node_at(
            MESH,
            "client",
            json!({"backends": [{"virtualService": {"virtualServiceName": "color.traced.local"}}]}),
            client_ip,
        )
        .await;
        World {
            cp,
            client_ip,
            backend,
        }
    }

    /// The client's Envoy with `env` (a tracer's variables), LIVE and serving the backend.
    async fn envoy(&self, env: &[(&str, String)]) -> Envoy {
        let mut opts = EnvoyOptions::new(
            format!("mesh/{MESH}/virtualNode/client"),
            self.cp.xds_addr(),
            XdsFlavor::Delta,
        );
        opts.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let e = Envoy::start_with(opts);
        e.wait_live().await;
        let t = self.target();
        wait_for(
            "the client Envoy serves color",
            Duration::from_secs(20),
            || {
                let t = t.clone();
                async move {
                    let r = t.get("/").await;
                    (r.status == 200 && r.body == "color")
                        .then_some(())
                        .ok_or(format!("{} {}", r.status, r.body))
                }
            },
        )
        .await;
        e
    }

    fn target(&self) -> Target {
        Target::new(
            "color.traced.local",
            addr(self.client_ip, self.backend.port()),
        )
    }

    /// Sends `n` requests, all of which must succeed.
    async fn send(&self, n: usize) {
        let t = self.target();
        for _ in 0..n {
            let r = t.get("/traced").await;
            assert_eq!((r.status, r.body.as_str()), (200, "color"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xray_segments_reach_the_daemon() {
    let w = World::new().await;
    let daemon = UdpCollector::start().await;
    let _envoy = w
        .envoy(&[
            ("ENABLE_ENVOY_XRAY_TRACING", "1".into()),
            ("AWS_XRAY_DAEMON_ADDRESS", daemon.addr().ip().to_string()),
            ("XRAY_DAEMON_PORT", daemon.addr().port().to_string()),
            ("XRAY_SAMPLING_RATE", "1".into()),
        ])
        .await;
    w.send(3).await;
    // Each datagram: `{"format":"json","version":1}` header line, then the segment.
    let segment = wait_for("an X-Ray segment for /traced", SPAN_WAIT, || {
        let found = daemon.datagrams().into_iter().find_map(|d| {
            let text = String::from_utf8(d).ok()?;
            let (header, body) = text.split_once('\n')?;
            let header: Value = serde_json::from_str(header).ok()?;
            let seg: Value = serde_json::from_str(body).ok()?;
            (header["format"] == "json"
                && seg["http"]["request"]["url"]
                    .as_str()
                    .is_some_and(|u| u.contains("/traced")))
            .then_some(seg)
        });
        async move { found.ok_or_else(|| "no segment yet".to_owned()) }
    })
    .await;
    assert_eq!(segment["name"], format!("{MESH}/client"), "{segment}");
    assert_eq!(segment["origin"], "AWS::AppMesh::Proxy", "{segment}");
    assert_eq!(
        segment["aws"]["app_mesh"]["virtual_node_name"], "client",
        "{segment}"
    );
    assert_eq!(segment["http"]["response"]["status"], 200, "{segment}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_spans_reach_the_jaeger_collector() {
    let w = World::new().await;
    let jaeger = HttpCollector::start().await;
    let _envoy = w
        .envoy(&[
            ("ENABLE_ENVOY_JAEGER_TRACING", "1".into()),
            ("JAEGER_TRACER_ADDRESS", jaeger.addr().ip().to_string()),
            ("JAEGER_TRACER_PORT", jaeger.addr().port().to_string()),
            ("JAEGER_TRACER_VERSION", "JSON".into()),
        ])
        .await;
    w.send(5).await;
    let span = wait_for("a Zipkin span for /traced", SPAN_WAIT, || {
        let found = jaeger
            .received()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == "/api/v2/spans")
            .filter_map(|r| serde_json::from_slice::<Vec<Value>>(&r.body).ok())
            .flatten()
            .find(|s| {
                s["tags"]["http.url"]
                    .as_str()
                    .is_some_and(|u| u.contains("/traced"))
            });
        async move { found.ok_or_else(|| "no span yet".to_owned()) }
    })
    .await;
    assert_eq!(
        span["kind"], "CLIENT",
        "egress spans are client spans: {span}"
    );
    assert_eq!(span["tags"]["http.status_code"], "200", "{span}");
    assert_eq!(
        span["localEndpoint"]["serviceName"],
        format!("mesh/{MESH}/virtualNode/client"),
        "the service is node.cluster: {span}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datadog_traces_reach_the_agent() {
    let w = World::new().await;
    let agent = HttpCollector::start().await;
    let _envoy = w
        .envoy(&[
            ("ENABLE_ENVOY_DATADOG_TRACING", "1".into()),
            ("DATADOG_TRACER_ADDRESS", agent.addr().ip().to_string()),
            ("DATADOG_TRACER_PORT", agent.addr().port().to_string()),
        ])
        .await;
    w.send(3).await;
    // Traces are msgpack: the service name and the URL appear as plain strings.
    let service = format!("envoy-{MESH}/client");
    let body = wait_for("a Datadog trace payload for /traced", SPAN_WAIT, || {
        let found = agent
            .received()
            .into_iter()
            .find(|r| {
                r.path == "/v0.4/traces"
                    && contains(&r.body, b"/traced")
                    && contains(&r.body, service.as_bytes())
            })
            .map(|r| r.body);
        async move { found.ok_or_else(|| "no trace yet".to_owned()) }
    })
    .await;
    assert!(!body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentelemetry_spans_reach_the_collector() {
    let w = World::new().await;
    let collector = HttpCollector::start().await;
    let _envoy = w
        .envoy(&[
            ("ENABLE_ENVOY_OPENTELEMETRY_TRACING", "1".into()),
            ("OTEL_COLLECTOR_ADDRESS", collector.addr().ip().to_string()),
            ("OTEL_COLLECTOR_PORT", collector.addr().port().to_string()),
        ])
        .await;
    w.send(3).await;
    // OTLP/gRPC protobuf: the service name (node.cluster) and the URL appear as strings.
    let service = format!("mesh/{MESH}/virtualNode/client");
    wait_for("an OTLP Export carrying /traced", SPAN_WAIT, || {
        let found = collector.received().into_iter().find(|r| {
            r.path == "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                && contains(&r.body, b"/traced")
                && contains(&r.body, service.as_bytes())
        });
        async move { found.map(|_| ()).ok_or_else(|| "no export yet".to_owned()) }
    })
    .await;
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
