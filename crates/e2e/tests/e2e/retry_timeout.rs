//! A retry policy recovers from a backend failing its first requests, and Envoy's retry
//! counters agree; a per-request timeout fires (504 within the timeout).

use std::time::Duration;

use meshplane_testkit::{HttpBackend, XdsFlavor, free_port};
use serde_json::json;

use crate::common::{World, target, weighted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_policy_recovers_and_timeout_fires() {
    let w = World::new("retry").await;
    let flaky = HttpBackend::start("flaky").await;
    let slow = HttpBackend::start("slow").await;
    w.backend_node("flaky", "http", flaky.port()).await;
    w.backend_node("slow", "http", slow.port()).await;
    let port = free_port();
    w.router("r", "http", port).await;
    w.service("svc.local", "r").await;
    w.route(
        "r",
        "retried",
        json!({"httpRoute": {
            "match": {"prefix": "/retry"},
            "action": {"weightedTargets": weighted(&[("flaky", 1)])},
            "retryPolicy": {
                "httpRetryEvents": ["server-error"],
                "maxRetries": 3,
                "perRetryTimeout": {"unit": "ms", "value": 2000}
            }
        }}),
    )
    .await;
    w.route(
        "r",
        "timed",
        json!({"httpRoute": {
            "match": {"prefix": "/slow"},
            "action": {"weightedTargets": weighted(&[("slow", 1)])},
            "timeout": {"perRequest": {"unit": "ms", "value": 500}}
        }}),
    )
    .await;
    let ip = w.client("front", &["svc.local"]).await;
    let envoy = w.envoy("front", XdsFlavor::Delta).await;
    let t = target("svc.local", ip, port);
    let flaky_cluster = format!("cluster.cds_egress_retry_flaky_http_{}", flaky.port());
    let slow_cluster = format!("cluster.cds_egress_retry_slow_http_{}", slow.port());

    // Retries: the first two attempts get 503, the third succeeds.
    flaky.fail_next(2);
    let r = t.get("/retry").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "flaky"),
        "the retry policy did not recover; {}",
        envoy.describe().await
    );
    assert_eq!(flaky.requests(), 3, "1 attempt + 2 retries");
    assert_eq!(flaky.failed(), 2);
    assert_eq!(
        envoy
            .stat(&format!("{flaky_cluster}.upstream_rq_retry"))
            .await,
        2
    );
    assert_eq!(
        envoy
            .stat(&format!("{flaky_cluster}.upstream_rq_retry_success"))
            .await,
        1
    );
    // More failures than maxRetries: the caller sees the last 503, after 1 + 3 attempts.
    flaky.fail_next(10);
    let r = t.get("/retry").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(flaky.requests(), 3 + 4);
    assert_eq!(
        envoy
            .stat(&format!("{flaky_cluster}.upstream_rq_retry"))
            .await,
        2 + 3
    );
    assert_eq!(
        envoy
            .stat(&format!("{flaky_cluster}.upstream_rq_retry_limit_exceeded"))
            .await,
        1
    );
    flaky.fail_next(0);

    // Timeout: the backend waits 3 s, the route allows 500 ms.
    let r = t.send("GET", "/slow", &[("x-delay-ms", "3000")]).await;
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        r.elapsed >= Duration::from_millis(450) && r.elapsed < Duration::from_millis(2000),
        "504 after {:?}, expected about 500 ms",
        r.elapsed
    );
    assert_eq!(
        envoy
            .stat(&format!("{slow_cluster}.upstream_rq_timeout"))
            .await,
        1
    );
    // Within the timeout the same route answers.
    let r = t.send("GET", "/slow", &[("x-delay-ms", "50")]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "slow"));
}
