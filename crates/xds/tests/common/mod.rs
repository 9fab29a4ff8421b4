//! Shared helpers for the xDS protocol tests: snapshot builders and status polling.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use meshplane_xds::envoy_types;
use meshplane_xds::testing::fixtures::*;
use meshplane_xds::{NodeKey, ProxyStatus, ResourceType, Snapshot, SnapshotBuilder, XdsServer};

/// The node every test proxy claims to be.
pub const NODE: &str = "mesh/demo/virtualNode/front";

/// How long "the server sends nothing more" is watched.
pub const QUIET: Duration = Duration::from_millis(400);

pub fn key() -> NodeKey {
    NodeKey::parse(NODE).unwrap()
}

/// Clusters `names` (EDS, with their assignments), listener `l` → route `r`
/// answering `body`, and secret `s`.
pub fn config(clusters: &[&str], body: &str) -> SnapshotBuilder {
    config_with_route(clusters, direct_response_route("r", body))
}

/// As [`config`], with route `r` given.
pub fn config_with_route(
    clusters: &[&str],
    route: envoy_types::pb::envoy::config::route::v3::RouteConfiguration,
) -> SnapshotBuilder {
    let mut b = Snapshot::builder();
    for (i, c) in clusters.iter().enumerate() {
        b = b
            .add_cluster(eds_cluster(c, 250))
            .add_cluster_load_assignment(cla(c, 9000 + i as u32));
    }
    b.add_listener(http_listener("l", 10000, "r"))
        .add_route_configuration(route)
        .add_secret(secret("s"))
}

pub fn snap(b: SnapshotBuilder) -> Arc<Snapshot> {
    Arc::new(b.build().expect("valid snapshot"))
}

/// Polls `status()` until `pred` holds for some stream (5 s max).
pub async fn wait_status(server: &XdsServer, pred: impl Fn(&ProxyStatus) -> bool) -> ProxyStatus {
    for _ in 0..500 {
        if let Some(p) = server.status().into_iter().find(|p| pred(p)) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("status condition not reached: {:#?}", server.status());
}

/// Waits until a stream has subscribed to `n` types.
pub async fn wait_subscribed(server: &XdsServer, n: usize) -> ProxyStatus {
    wait_status(server, |p| p.types.len() >= n).await
}

pub fn type_of(url: &str) -> ResourceType {
    ResourceType::from_type_url(url).expect("served type")
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "meshplane_xds=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Waits until some stream has `n` ACKs of `ty` (so a following snapshot
/// change cannot overtake the ACK and make its nonce stale).
pub async fn wait_acks(server: &XdsServer, ty: ResourceType, n: u64) {
    wait_status(server, |p| p.type_status(ty).is_some_and(|t| t.acks >= n)).await;
}
