//! Under constant load, a weight change is observed within 1 s with zero failed requests; a
//! deleted route disappears (its requests get Envoy's 404).

use std::time::{Duration, Instant};

use meshplane_testkit::{HttpBackend, XdsFlavor, free_port};
use serde_json::json;

use crate::common::{World, eventually, http_route, target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_change_under_load_and_route_deletion() {
    let w = World::new("live").await;
    let blue = HttpBackend::start("blue").await;
    let green = HttpBackend::start("green").await;
    let red = HttpBackend::start("red").await;
    for (n, b) in [("blue", &blue), ("green", &green), ("red", &red)] {
        w.backend_node(n, "http", b.port()).await;
    }
    let port = free_port();
    w.router("r", "http", port).await;
    w.service("svc.local", "r").await;
    w.route(
        "r",
        "app",
        http_route(json!({"prefix": "/app"}), &[("blue", 1), ("green", 0)]),
    )
    .await;
    w.route(
        "r",
        "extra",
        http_route(json!({"prefix": "/extra"}), &[("red", 1)]),
    )
    .await;
    let ip = w.client("front", &["svc.local"]).await;
    let envoy = w.envoy("front", XdsFlavor::Delta).await;
    let t = target("svc.local", ip, port);
    let r = t.get("/extra").await;
    assert_eq!((r.status, r.body.as_str()), (200, "red"));

    let rds_updates = format!("http.egress.rds.rds_egress_http_{port}.update_success");
    let (lds_before, rds_before) = (
        envoy.stat("listener_manager.lds.update_success").await,
        envoy.stat(&rds_updates).await,
    );

    // Constant load for 4 s; flip all weight from blue to green after 1.5 s.
    let start = Instant::now();
    let load = tokio::spawn(
        t.load("/app")
            .concurrency(4)
            .duration(Duration::from_secs(4))
            .run(),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_update = start.elapsed();
    w.cp.update_route(
        "live",
        "r",
        "app",
        http_route(json!({"prefix": "/app"}), &[("blue", 0), ("green", 1)]),
    )
    .await;
    let updated = start.elapsed();
    let report = load.await.expect("load task");
    // The load generator's clock started a moment after `start`: compare conservatively.
    assert_eq!(
        report.failures(),
        0,
        "requests failed during the weight change: {:?}",
        report.failure_samples(5)
    );
    assert!(report.count("blue") > 0, "{:?}", report.by_body);
    let first_green = report
        .samples
        .iter()
        .find(|(_, _, b)| b == "green")
        .map(|(t, _, _)| *t)
        .unwrap_or_else(|| panic!("green never served: {:?}", report.by_body));
    assert!(
        first_green >= before_update,
        "green served before the update ({first_green:?} < {before_update:?})"
    );
    let last_blue = report
        .samples
        .iter()
        .filter(|(_, _, b)| b == "blue")
        .map(|(t, _, _)| *t)
        .max()
        .expect("blue served");
    assert!(
        last_blue < updated + Duration::from_secs(1),
        "blue still served {:?} after the update call returned (at {updated:?}); {:?}",
        last_blue.saturating_sub(updated),
        report.by_body
    );
    assert!(
        first_green < updated + Duration::from_secs(1),
        "the new weights took {:?}",
        first_green.saturating_sub(updated)
    );
    // The weight change went out as RDS only: no listener rewrite (no drain, no new sockets).
    assert_eq!(
        envoy.stat("listener_manager.lds.update_success").await,
        lds_before,
        "a weight change must not touch LDS"
    );
    assert_eq!(envoy.stat("listener_manager.listener_modified").await, 0);
    assert_eq!(envoy.stat(&rds_updates).await, rds_before + 1);
    println!(
        "weight change observed {:?} after the UpdateRoute call (sent at {before_update:?}), \
         {} requests, 0 failed",
        first_green.saturating_sub(before_update),
        report.total
    );

    // Delete `extra`: its path now gets Envoy's 404, the other route still answers.
    let deleted = Instant::now();
    w.cp.delete_route("live", "r", "extra").await;
    eventually(
        "/extra to get Envoy's 404",
        Duration::from_secs(5),
        || async {
            let r = t.get("/extra").await;
            if r.status == 404 && !r.headers.contains_key("x-backend") {
                Ok(())
            } else {
                Err(format!("{} {}", r.status, r.body))
            }
        },
    )
    .await;
    println!("deleted route gone after {:?}", deleted.elapsed());
    let r = t.get("/app").await;
    assert_eq!((r.status, r.body.as_str()), (200, "green"));
    let routes = envoy.dynamic("dynamic_route_configs").await;
    let text = serde_json::to_string(&routes).expect("json");
    assert!(
        !text.contains("/extra"),
        "deleted route still in Envoy: {text}"
    );
}
