//! A config that Envoy rejects is contained to its node, shows in proxy-status (`lastNack`
//! with Envoy's message) and in DescribeVirtualNode's `status.rejectedConfig`, the proxy
//! keeps serving its last good config, and nothing is re-sent in a loop.
//!
//! How a config Envoy rejects gets past our validation: a real gap. The model and the
//! translator check regexes with Rust's `regex` crate, which accepts `x{1000}y{1000}`; Envoy's RE2
//! refuses it because its program size (about 2000) exceeds the error threshold
//! (`re2.max_program_size.error_level`: 100 by default, 1000 in the App Mesh-compatible
//! bootstrap). So the route goes through the public API, the store and the translator
//! unchanged, and Envoy NACKs the route configuration.

use std::time::Duration;

use meshplane_testkit::{HttpBackend, XdsFlavor, free_port};
use serde_json::{Value, json};

use crate::common::{World, eventually, http_route, target};

fn rds(proxy: &Value) -> Value {
    proxy["types"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["type"] == "rds"))
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_config_is_contained_visible_and_not_resent() {
    let w = World::new("nack").await;
    let ok = HttpBackend::start("ok").await;
    w.backend_node("ok", "http", ok.port()).await;
    let (bad_port, good_port) = (free_port(), free_port());
    w.router("bad-router", "http", bad_port).await;
    w.service("bad.local", "bad-router").await;
    w.route(
        "bad-router",
        "main",
        http_route(json!({"prefix": "/"}), &[("ok", 1)]),
    )
    .await;
    w.router("good-router", "http", good_port).await;
    w.service("good.local", "good-router").await;
    w.route(
        "good-router",
        "main",
        http_route(json!({"prefix": "/"}), &[("ok", 1)]),
    )
    .await;
    let bad_ip = w.client("bad", &["bad.local"]).await;
    let good_ip = w.client("good", &["good.local"]).await;
    let bad = w.envoy("bad", XdsFlavor::Sotw).await;
    let good = w.envoy("good", XdsFlavor::Delta).await;
    let (bad_t, good_t) = (
        target("bad.local", bad_ip, bad_port),
        target("good.local", good_ip, good_port),
    );
    assert_eq!(bad_t.get("/").await.status, 200);
    assert_eq!(good_t.get("/").await.status, 200);
    let good_rds = format!("http.egress.rds.rds_egress_http_{good_port}.update_rejected");
    assert_eq!(good.stat(&good_rds).await, 0);

    // Accepted by the API (our validation), rejected by Envoy (RE2 program size).
    let mut spec = http_route(
        json!({"prefix": "/", "headers": [{"name": "x-big", "match": {"regex": "x{1000}y{1000}"}}]}),
        &[("ok", 1)],
    );
    spec["priority"] = json!(0);
    let (status, body) =
        w.cp.request(
            "PUT",
            "/v20190125/meshes/nack/virtualRouter/bad-router/routes",
            Some(json!({"routeName": "re2-too-big", "spec": spec})),
        )
        .await;
    assert_eq!(
        status, 200,
        "the API now rejects a regex RE2 refuses ({body}): the validation gap this test relies \
         on is closed, so inject the bad route at the store level instead"
    );

    let bad_id = w.node_id("bad");
    let nack = eventually_nack(&w, &bad_id).await;
    let message = nack["lastNack"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        message.contains("RE2 program size"),
        "lastNack should carry Envoy's reason: {nack}"
    );
    assert_eq!(bad.stat("cluster_manager.cds.update_rejected").await, 0);

    // Visible in the node's status, with Envoy's message.
    let described = w.cp.describe_virtual_node("nack", "bad").await;
    let rejected = &described["virtualNode"]["status"]["rejectedConfig"];
    let rejected = if rejected.is_null() {
        &described["status"]["rejectedConfig"]
    } else {
        rejected
    };
    assert_eq!(rejected["type"], "rds", "{described}");
    assert!(
        rejected["message"]
            .as_str()
            .is_some_and(|m| m.contains("RE2 program size")),
        "{described}"
    );

    // The proxy stays on its last good config and keeps serving.
    assert!(rds(&nack)["ackedVersion"] != rds(&nack)["sentVersion"]);
    for _ in 0..10 {
        let r = bad_t.get("/").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    }
    let rds_stat = format!("http.egress.rds.rds_egress_http_{bad_port}.update_rejected");
    assert!(bad.stat(&rds_stat).await >= 1, "{}", bad.describe().await);

    // Contained: the other node has no rejection and serves.
    let good_desc = w.cp.describe_virtual_node("nack", "good").await;
    assert!(
        !good_desc.to_string().contains("rejectedConfig"),
        "{good_desc}"
    );
    for p in w.cp.proxies_of(&w.node_id("good")).await {
        for t in p["types"].as_array().into_iter().flatten() {
            assert_eq!(t["nacks"], 0, "good node got a NACK: {p}");
            assert_eq!(t["inSync"], true, "good node not in sync: {p}");
        }
    }
    assert_eq!(good_t.get("/").await.status, 200);

    // No resend loop: with no snapshot change, pushes and NACKs stay put for 3 s.
    let before = rds(&w.cp.proxies_of(&bad_id).await[0]);
    let metrics_before = nacks_metric(&w.cp.metrics().await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rds(&w.cp.proxies_of(&bad_id).await[0]);
    assert_eq!(
        (&before["pushes"], &before["nacks"]),
        (&after["pushes"], &after["nacks"]),
        "rejected config re-sent: before {before}, after {after}"
    );
    assert_eq!(after["nacks"], 1, "{after}");
    assert_eq!(nacks_metric(&w.cp.metrics().await), metrics_before);
    assert_eq!(
        metrics_before, 1.0,
        "meshplane_xds_nacks_total{{type=\"rds\"}}"
    );

    // Fixing the route (deleting it) clears the rejection: the next push is acked.
    w.cp.delete_route("nack", "bad-router", "re2-too-big").await;
    eventually(
        "the bad node to ACK again",
        Duration::from_secs(10),
        || async {
            let p = w.cp.proxies_of(&bad_id).await;
            let t = p.first().map(rds).unwrap_or(Value::Null);
            if t["inSync"] == true {
                Ok(())
            } else {
                Err(t.to_string())
            }
        },
    )
    .await;
    let described = w.cp.describe_virtual_node("nack", "bad").await;
    assert!(
        !described.to_string().contains("rejectedConfig"),
        "{described}"
    );
}

async fn eventually_nack(w: &World, node_id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let proxies = w.cp.proxies_of(node_id).await;
        let t = proxies.first().map(rds).unwrap_or(Value::Null);
        if t["lastNack"].is_object() {
            return json!({"types": [t.clone()], "lastNack": t["lastNack"].clone()});
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no RDS NACK in proxy-status for {node_id} after 10 s: {proxies:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `meshplane_xds_nacks_total{type="rds"}`.
fn nacks_metric(text: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with("meshplane_xds_nacks_total{type=\"rds\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
