//! A 3:1 weighted route splits traffic within statistical tolerance.

use meshplane_testkit::{HttpBackend, XdsFlavor, free_port};
use serde_json::json;

use crate::common::{World, http_route, target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_route_splits_three_to_one() {
    let w = World::new("weighted").await;
    let blue = HttpBackend::start("blue").await;
    let red = HttpBackend::start("red").await;
    w.backend_node("blue", "http", blue.port()).await;
    w.backend_node("red", "http", red.port()).await;
    let port = free_port();
    w.router("color", "http", port).await;
    w.service("color.local", "color").await;
    w.route(
        "color",
        "split",
        http_route(json!({"prefix": "/"}), &[("blue", 3), ("red", 1)]),
    )
    .await;
    let ip = w.client("front", &["color.local"]).await;
    let envoy = w.envoy("front", XdsFlavor::Delta).await;

    const N: usize = 800;
    let report = target("color.local", ip, port)
        .load("/")
        .requests(N)
        .concurrency(8)
        .run()
        .await;
    assert_eq!(
        report.failures(),
        0,
        "failed requests: {:?}",
        report.failure_samples(5)
    );
    assert_eq!(report.total, N as u64);
    // Binomial(800, 0.75): mean 600, sd 12.2; ±4.5 sd keeps the false-failure rate < 1e-5.
    let (b, r) = (report.count("blue"), report.count("red"));
    assert!(
        (545..=655).contains(&b),
        "blue got {b} of {N} (red {r}), expected 600 ± 55; {:?}",
        report.by_body
    );
    assert_eq!(b + r, N as u64, "{:?}", report.by_body);
    // The backends agree with what the client saw, and Envoy counted the same requests.
    assert_eq!(blue.requests(), b);
    assert_eq!(red.requests(), r);
    assert_eq!(
        envoy.stat("http.egress.downstream_rq_2xx").await,
        N as u64,
        "{}",
        envoy.describe().await
    );
}
