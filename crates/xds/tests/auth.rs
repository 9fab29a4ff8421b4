//! Authenticated ADS streams with scripted clients on loopback: no token, a bad token, node
//! A's token asking for node B (first request or later), closing the streams of a revoked
//! token, expiry, and the token id in proxy status; SotW and delta alike.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ResourceType::{Cluster as CDS, Listener as LDS};
use common::*;
use meshplane_xds::envoy_types::pb::envoy::config::core::v3::Node;
use meshplane_xds::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest,
};
use meshplane_xds::testing::{
    DeltaClient, MapAuthenticator, SotwClient, TestServer, resource_names,
};
use meshplane_xds::{NodeKey, ResourceType, SnapshotCache, StreamIdentity, XdsServerConfig};
use tonic::Code;

/// Node B: another node of the same mesh, with its own (distinguishable) clusters.
const NODE_B: &str = "mesh/demo/virtualNode/back";

fn identity(node: &str, token_id: &str, ttl: Duration) -> StreamIdentity {
    StreamIdentity {
        node: node.into(),
        token_id: token_id.into(),
        expires_at: SystemTime::now() + ttl,
    }
}

/// A server whose cache holds node A (`NODE`, cluster `a-only`) and node B (cluster
/// `b-secret`), and an authenticator accepting `tok-a` (node A, id `tid-a`) and `tok-b`.
async fn setup() -> (TestServer, MapAuthenticator, SnapshotCache) {
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a-only"], "a")));
    cache.set(
        NodeKey::parse(NODE_B).unwrap(),
        snap(config(&["b-secret"], "b")),
    );
    let auth = MapAuthenticator::default();
    auth.insert("tok-a", identity(NODE, "tid-a", Duration::from_secs(3600)));
    auth.insert(
        "tok-b",
        identity(NODE_B, "tid-b", Duration::from_secs(3600)),
    );
    let srv = TestServer::start_with_config(
        Arc::new(cache.clone()),
        XdsServerConfig {
            authenticator: Some(Arc::new(auth.clone())),
            ..XdsServerConfig::default()
        },
    )
    .await;
    (srv, auth, cache)
}

fn refused<T>(r: Result<T, tonic::Status>) -> tonic::Status {
    match r {
        Ok(_) => panic!("stream was accepted"),
        Err(s) => s,
    }
}

#[tokio::test]
async fn stream_without_token_is_unauthenticated() {
    let (srv, _, _) = setup().await;
    let s = refused(SotwClient::connect_with(srv.addr, NODE, None).await);
    assert_eq!(s.code(), Code::Unauthenticated);
    let s = refused(DeltaClient::connect_with(srv.addr, NODE, None).await);
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(srv.server.status().is_empty());
    assert_eq!(srv.server.streams(), 0, "a refused stream holds no slot");
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated() {
    let (srv, _, _) = setup().await;
    for bad in ["Bearer nope", "tok-a", "Basic dG9rLWE=", "Bearer ", ""] {
        let s = refused(SotwClient::connect_with(srv.addr, NODE, Some(bad)).await);
        assert_eq!(s.code(), Code::Unauthenticated, "{bad:?}");
        let s = refused(DeltaClient::connect_with(srv.addr, NODE, Some(bad)).await);
        assert_eq!(s.code(), Code::Unauthenticated, "{bad:?}");
    }
}

#[tokio::test]
async fn valid_token_gets_its_node_and_shows_its_id_in_status() {
    let (srv, _, _) = setup().await;
    let mut c = SotwClient::connect_with(srv.addr, NODE, Some("Bearer tok-a"))
        .await
        .unwrap();
    c.subscribe(CDS, &[], "");
    let r = c.recv().await;
    assert_eq!(resource_names(&r), ["a-only"]);
    let st = wait_status(&srv.server, |p| p.stream.token_id.is_some()).await;
    assert_eq!(st.stream.token_id.as_deref(), Some("tid-a"));
}

#[tokio::test]
async fn token_of_node_a_asking_for_node_b_is_denied_and_gets_nothing() {
    let (srv, _, _) = setup().await;
    // First request names B.
    let mut c = SotwClient::connect_with(srv.addr, NODE_B, Some("Bearer tok-a"))
        .await
        .unwrap();
    c.subscribe(CDS, &[], "");
    let end = c.closed().await.unwrap_err();
    assert_eq!(end.code(), Code::PermissionDenied);

    let mut d = DeltaClient::connect_with(srv.addr, NODE_B, Some("Bearer tok-a"))
        .await
        .unwrap();
    d.subscribe(CDS, &[], &[]);
    let end = d.closed().await.unwrap_err();
    assert_eq!(end.code(), Code::PermissionDenied);
    assert!(srv.server.status().is_empty());
}

#[tokio::test]
async fn later_request_naming_another_node_ends_the_stream() {
    let (srv, _, _) = setup().await;
    let mut c = SotwClient::connect_with(srv.addr, NODE, Some("Bearer tok-a"))
        .await
        .unwrap();
    c.subscribe(CDS, &[], "");
    let r = c.recv().await;
    assert_eq!(resource_names(&r), ["a-only"]);
    // Envoy without `set_node_on_first_message_only` repeats the node: the same one is fine.
    c.send(DiscoveryRequest {
        node: Some(Node {
            id: NODE.into(),
            ..Default::default()
        }),
        type_url: LDS.type_url().into(),
        ..Default::default()
    });
    let r = c.recv().await;
    assert_eq!(r.type_url, LDS.type_url());
    c.send(DiscoveryRequest {
        node: Some(Node {
            id: NODE_B.into(),
            ..Default::default()
        }),
        type_url: CDS.type_url().into(),
        version_info: r.version_info.clone(),
        response_nonce: r.nonce.clone(),
        ..Default::default()
    });
    let end = c.closed().await.unwrap_err();
    assert_eq!(end.code(), Code::PermissionDenied);

    let mut d = DeltaClient::connect_with(srv.addr, NODE, Some("Bearer tok-a"))
        .await
        .unwrap();
    d.subscribe(CDS, &[], &[]);
    let r = d.recv().await;
    assert!(r.resources.iter().all(|r| r.name == "a-only"));
    d.send(DeltaDiscoveryRequest {
        node: Some(Node {
            id: NODE_B.into(),
            ..Default::default()
        }),
        type_url: LDS.type_url().into(),
        ..Default::default()
    });
    let end = d.closed().await.unwrap_err();
    assert_eq!(end.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn closing_by_token_ends_only_that_tokens_streams_and_reconnect_is_refused() {
    let (srv, auth, _) = setup().await;
    let mut a1 = SotwClient::connect_with(srv.addr, NODE, Some("Bearer tok-a"))
        .await
        .unwrap();
    let mut a2 = DeltaClient::connect_with(srv.addr, NODE, Some("Bearer tok-a"))
        .await
        .unwrap();
    let mut b = SotwClient::connect_with(srv.addr, NODE_B, Some("Bearer tok-b"))
        .await
        .unwrap();
    a1.subscribe(CDS, &[], "");
    a2.subscribe(CDS, &[], &[]);
    b.subscribe(CDS, &[], "");
    a1.recv().await;
    a2.recv().await;
    let rb = b.recv().await;
    assert_eq!(resource_names(&rb), ["b-secret"]);

    assert_eq!(srv.server.close_streams_for_token("tid-a"), 2);
    assert_eq!(a1.closed().await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(a2.closed().await.unwrap_err().code(), Code::Unauthenticated);
    // B's stream lives on and is still served.
    b.ack(&rb, &[]);
    b.subscribe(LDS, &[], "");
    assert_eq!(b.recv().await.type_url, LDS.type_url());
    assert_eq!(srv.server.close_streams_for_token("tid-a"), 0);
    assert_eq!(srv.server.close_streams_for_token("unknown"), 0);

    // The verifier now refuses the revoked token.
    auth.remove("tok-a");
    let s = refused(SotwClient::connect_with(srv.addr, NODE, Some("Bearer tok-a")).await);
    assert_eq!(s.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn stream_ends_when_its_token_expires() {
    let (srv, auth, _) = setup().await;
    auth.insert(
        "short",
        identity(NODE, "tid-short", Duration::from_millis(600)),
    );
    let mut c = SotwClient::connect_with(srv.addr, NODE, Some("Bearer short"))
        .await
        .unwrap();
    c.subscribe(CDS, &[], "");
    c.recv().await;
    let end = c.closed().await.unwrap_err();
    assert_eq!(end.code(), Code::Unauthenticated);
    assert!(end.message().contains("expired"), "{end:?}");

    // A stream that never sent its first request ends too.
    auth.insert("short2", identity(NODE, "t2", Duration::from_millis(300)));
    let mut d = DeltaClient::connect_with(srv.addr, NODE, Some("Bearer short2"))
        .await
        .unwrap();
    assert_eq!(d.closed().await.unwrap_err().code(), Code::Unauthenticated);

    // An identity already expired is refused at once.
    auth.insert(
        "old",
        StreamIdentity {
            node: NODE.into(),
            token_id: "t3".into(),
            expires_at: SystemTime::now() - Duration::from_secs(1),
        },
    );
    let s = refused(SotwClient::connect_with(srv.addr, NODE, Some("Bearer old")).await);
    assert_eq!(s.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn without_authenticator_token_id_is_absent() {
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a"], "a")));
    let srv = TestServer::start(&cache).await;
    let mut c = srv.sotw(NODE).await;
    c.subscribe(CDS, &[], "");
    c.recv().await;
    let st = wait_subscribed(&srv.server, 1).await;
    assert_eq!(st.stream.token_id, None);
}
