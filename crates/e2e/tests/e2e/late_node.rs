//! A node that does not exist yet: an Envoy started first gets its config the moment the
//! virtual node is created.

use std::time::{Duration, Instant};

use meshplane_testkit::{Envoy, HttpBackend, XdsFlavor, free_port, loopback_ip};
use serde_json::json;

use crate::common::{World, client_spec, http_route, target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_started_before_its_node_gets_config_on_creation() {
    let w = World::new("late").await;
    let blue = HttpBackend::start("blue").await;
    w.backend_node("blue", "http", blue.port()).await;
    let port = free_port();
    w.router("r", "http", port).await;
    w.service("svc.local", "r").await;
    w.route(
        "r",
        "main",
        http_route(json!({"prefix": "/"}), &[("blue", 1)]),
    )
    .await;

    // Envoy first: it connects and waits (initial_fetch_timeout 0 = wait forever).
    let envoy = Envoy::start(&w.node_id("late"), w.cp.xds_addr(), XdsFlavor::Delta);
    meshplane_testkit::wait_for(
        "the early Envoy to connect",
        Duration::from_secs(10),
        || async {
            let p = w.cp.proxies_of(&w.node_id("late")).await;
            if p.is_empty() {
                Err("not connected".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = envoy.admin_get("/ready").await.expect("admin");
    assert_ne!(status, 200, "LIVE without a node: {body}");
    assert_eq!(
        envoy.stat("listener_manager.total_listeners_active").await,
        0
    );

    // Create the node: config arrives without a reconnect.
    let ip = loopback_ip();
    let created = Instant::now();
    w.cp.create_virtual_node_at("late", "late", client_spec(&["svc.local"]), ip)
        .await;
    envoy.wait_live_within(Duration::from_secs(5)).await;
    let live_after = created.elapsed();
    let r = target("svc.local", ip, port).get("/").await;
    assert_eq!((r.status, r.body.as_str()), (200, "blue"));
    assert_eq!(envoy.stat("control_plane.connected_state").await, 1);
    println!("node created → Envoy LIVE in {live_after:?}");
    // Typically ~0.1 s; the bound leaves room for a loaded 2-core machine.
    assert!(live_after < Duration::from_secs(3), "took {live_after:?}");
}
