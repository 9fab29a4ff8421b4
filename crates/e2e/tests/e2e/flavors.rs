//! One Envoy on delta and one on state-of-the-world, same virtual node, converge to the
//! same config: equal dynamic resources in their config dumps, equal acknowledged versions
//! in proxy-status, the same traffic behaviour, again after an update.

use std::collections::BTreeMap;
use std::time::Duration;

use meshplane_testkit::{Envoy, HttpBackend, Target, XdsFlavor, addr, free_port};
use serde_json::{Value, json};

use crate::common::{World, eventually, http_route};

/// The dynamic clusters, listeners and route configurations, without versions and
/// timestamps (SotW dumps the type's version, delta each resource's).
async fn config(e: &Envoy) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for r in [
        "dynamic_active_clusters",
        "dynamic_listeners",
        "dynamic_route_configs",
    ] {
        for (name, (_, cfg)) in e.dynamic(r).await {
            out.insert(format!("{r}/{name}"), cfg);
        }
    }
    out
}

async fn acked_versions(w: &World, flavor: &str) -> Result<BTreeMap<String, String>, String> {
    let proxies = w.cp.proxies_of(&w.node_id("front")).await;
    let p = proxies
        .iter()
        .find(|p| p["flavor"] == flavor)
        .ok_or_else(|| format!("no {flavor} proxy in {proxies:?}"))?;
    let mut out = BTreeMap::new();
    for t in p["types"].as_array().into_iter().flatten() {
        if t["inSync"] != true {
            return Err(format!("{flavor} not in sync: {t}"));
        }
        out.insert(
            t["type"].as_str().unwrap_or("?").to_owned(),
            t["ackedVersion"].as_str().unwrap_or("").to_owned(),
        );
    }
    Ok(out)
}

async fn converged(w: &World, sotw: &Envoy, delta: &Envoy, expect_route: &str) {
    eventually(
        "delta and SotW Envoys to hold the same config",
        Duration::from_secs(10),
        || async {
            let (a, b) = (config(sotw).await, config(delta).await);
            if a != b {
                let keys_a: Vec<_> = a.keys().collect();
                let keys_b: Vec<_> = b.keys().collect();
                return Err(format!(
                    "sotw {keys_a:?} vs delta {keys_b:?} (or contents differ)"
                ));
            }
            let text = serde_json::to_string(&a).unwrap_or_default();
            if !text.contains(expect_route) {
                return Err(format!("config lacks {expect_route}"));
            }
            let (va, vb) = (
                acked_versions(w, "sotw").await?,
                acked_versions(w, "delta").await?,
            );
            if va != vb || va.is_empty() {
                return Err(format!("acked versions differ: sotw {va:?} delta {vb:?}"));
            }
            // ...and they are the versions the control plane serves now.
            let served = w.cp.proxy_config(&w.node_id("front")).await;
            for (ty, v) in &va {
                if served["versions"][ty] != v.as_str() {
                    return Err(format!(
                        "{ty}: acked {v}, served {}",
                        served["versions"][ty]
                    ));
                }
            }
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_and_sotw_envoys_converge_to_the_same_config() {
    let w = World::new("flavors").await;
    let blue = HttpBackend::start("blue").await;
    let green = HttpBackend::start("green").await;
    w.backend_node("blue", "http", blue.port()).await;
    w.backend_node("green", "http", green.port()).await;
    let port = free_port();
    w.router("r", "http", port).await;
    w.service("svc.local", "r").await;
    w.route(
        "r",
        "main",
        http_route(json!({"prefix": "/"}), &[("blue", 1)]),
    )
    .await;
    let ip = w.client("front", &["svc.local"]).await;
    // Both bind the same addresses (Envoy listeners use SO_REUSEPORT): like two replicas.
    let sotw = w.envoy("front", XdsFlavor::Sotw).await;
    let delta = w.envoy("front", XdsFlavor::Delta).await;
    converged(&w, &sotw, &delta, "\"prefix\":\"/\"").await;

    // Traffic: fresh connections spread over both Envoys; every answer is the same.
    let t = Target::fresh_connections("svc.local", addr(ip, port));
    for _ in 0..40 {
        let r = t.get("/").await;
        assert_eq!((r.status, r.body.as_str()), (200, "blue"));
    }
    let (a, b) = (
        sotw.stat("http.egress.downstream_rq_2xx").await,
        delta.stat("http.egress.downstream_rq_2xx").await,
    );
    assert_eq!(a + b, 40);
    assert!(
        a > 0 && b > 0,
        "one Envoy served nothing (sotw {a}, delta {b})"
    );

    // An update reaches both, identically.
    w.cp.update_route(
        "flavors",
        "r",
        "main",
        http_route(json!({"prefix": "/v2"}), &[("green", 1)]),
    )
    .await;
    converged(&w, &sotw, &delta, "\"prefix\":\"/v2\"").await;
    for _ in 0..20 {
        let r = t.get("/v2").await;
        assert_eq!((r.status, r.body.as_str()), (200, "green"));
        let r = t.get("/").await;
        assert_eq!(r.status, 404);
    }
    let (a2, b2) = (
        sotw.stat("http.egress.downstream_rq_2xx").await,
        delta.stat("http.egress.downstream_rq_2xx").await,
    );
    assert!(
        a2 > a && b2 > b,
        "both Envoys serve the new route (sotw {a}->{a2}, delta {b}->{b2})"
    );
}
