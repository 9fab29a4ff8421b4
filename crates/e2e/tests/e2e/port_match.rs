//! Issue 16 item 7: a route matching on `port` alone (AWS's howto-multiple-listeners) is
//! accepted and routes every request arriving on that router listener port, whatever its
//! path, to its target: port A's traffic to node A, port B's to node B.

use meshplane_testkit::{HttpBackend, XdsFlavor, free_port};
use serde_json::json;

use crate::common::{World, target, weighted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_only_routes_split_traffic_by_listener_port() {
    let w = World::new("portmatch").await;
    let a = HttpBackend::start("node-a").await;
    let b = HttpBackend::start("node-b").await;
    w.backend_node("node-a", "http", a.port()).await;
    w.backend_node("node-b", "http", b.port()).await;
    let (port_a, port_b) = (free_port(), free_port());
    w.cp.create_virtual_router(
        &w.mesh,
        "r",
        json!({"listeners": [
            {"portMapping": {"port": port_a, "protocol": "http"}},
            {"portMapping": {"port": port_b, "protocol": "http"}},
        ]}),
    )
    .await;
    w.service("svc.local", "r").await;
    for (name, port, node) in [
        ("by-port-a", port_a, "node-a"),
        ("by-port-b", port_b, "node-b"),
    ] {
        let spec = json!({"httpRoute": {"match": {"port": port}, "action": {"weightedTargets": weighted(&[(node, 1)])}}});
        let created = w.cp.create_route(&w.mesh, "r", name, spec.clone()).await;
        // Echoed as given: no prefix was invented.
        assert_eq!(created["spec"], spec, "{created}");
    }
    let ip = w.client("front", &["svc.local"]).await;
    let envoy = w.envoy("front", XdsFlavor::Sotw).await;

    let mut wrong = Vec::new();
    for (port, expected) in [(port_a, "node-a"), (port_b, "node-b")] {
        let t = target("svc.local", ip, port);
        for path in ["/", "/fruit", "/deep/path?q=1"] {
            let r = t.send("GET", path, &[]).await;
            if r.status != 200 || r.body != expected {
                wrong.push(format!(
                    "port {port} {path}: expected 200 {expected:?}, got {} {:?}",
                    r.status, r.body
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "port-only routes sent traffic to the wrong node:\n{}\n{}",
        wrong.join("\n"),
        envoy.describe().await
    );
}
