//! State-of-the-world ADS protocol tests with a scripted client on loopback.

mod common;

use std::sync::Arc;
use std::time::Duration;

use ResourceType::{Cluster as CDS, Endpoint as EDS, Listener as LDS, Route as RDS, Secret as SDS};
use common::*;
use meshplane_xds::envoy_types;
use meshplane_xds::testing::fixtures::*;
use meshplane_xds::testing::{TestServer, resource_names};
use meshplane_xds::{ResourceType, SnapshotCache, XdsEvent, XdsFlavor};

/// Subscribes like Envoy after a reconnect: every type at once.
fn subscribe_all(c: &mut meshplane_xds::testing::SotwClient, clusters: &[&str]) {
    c.subscribe(CDS, &[], "");
    c.subscribe(EDS, clusters, "");
    c.subscribe(LDS, &[], "");
    c.subscribe(RDS, &["r"], "");
    c.subscribe(SDS, &["s"], "");
}

#[tokio::test]
async fn initial_sync_is_ordered_cds_eds_lds_rds_sds() {
    init_tracing();
    let cache = SnapshotCache::new();
    let srv = TestServer::start(&cache).await;
    let mut c = srv.sotw(NODE).await;
    subscribe_all(&mut c, &["a", "b"]);
    // Node unknown: nothing is sent, but the stream stays open.
    wait_subscribed(&srv.server, 5).await;
    c.expect_silence(Duration::from_millis(100)).await;

    let s1 = snap(config(&["a", "b"], "one"));
    cache.set(key(), s1.clone());
    let mut order = Vec::new();
    for _ in 0..5 {
        let r = c.recv().await;
        let ty = type_of(&r.type_url);
        assert_eq!(
            r.version_info,
            s1.version(ty),
            "{ty} carries the snapshot version"
        );
        order.push(ty);
    }
    assert_eq!(order, [CDS, EDS, LDS, RDS, SDS]);
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn ack_is_recorded_and_reported() {
    let cache = SnapshotCache::new();
    let s1 = snap(config(&["a"], "one"));
    cache.set(key(), s1.clone());
    let srv = TestServer::start(&cache).await;
    let mut events = srv.server.subscribe_events();
    let mut c = srv.sotw(NODE).await;
    c.subscribe(CDS, &[], "");
    let r = c.recv().await;
    assert_eq!(resource_names(&r), ["a"]);
    c.ack(&r, &[]);
    let st = wait_status(&srv.server, |p| {
        p.type_status(CDS)
            .is_some_and(|t| t.acked_version.as_deref() == Some(s1.version(CDS)))
    })
    .await;
    assert_eq!(st.stream.flavor, XdsFlavor::Sotw);
    assert_eq!(st.stream.node_key, Some(key()));
    let t = st.type_status(CDS).unwrap();
    assert_eq!((t.pushes, t.acks, t.nacks), (1, 1, 0));
    assert_eq!(t.sent_nonce.as_deref(), Some(r.nonce.as_str()));

    let mut saw = (false, false, false);
    while let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
        match ev {
            XdsEvent::Connected(s) => saw.0 = &*s.node_id == NODE,
            XdsEvent::Sent { ty, bytes, .. } => saw.1 = ty == CDS && bytes > 0,
            XdsEvent::Acked { ty, version, .. } => {
                assert_eq!(ty, CDS);
                assert_eq!(version, s1.version(CDS));
                saw.2 = true;
                break;
            }
            _ => {}
        }
    }
    assert_eq!(saw, (true, true, true));
}

#[tokio::test]
async fn nack_keeps_last_good_is_reported_and_is_not_resent() {
    init_tracing();
    let cache = SnapshotCache::new();
    let s1 = snap(config(&["a"], "one"));
    cache.set(key(), s1.clone());
    let srv = TestServer::start(&cache).await;
    let mut events = srv.server.subscribe_events();
    let mut c = srv.sotw(NODE).await;
    c.subscribe(RDS, &["r"], "");
    let r1 = c.recv().await;
    c.ack(&r1, &["r"]);
    wait_acks(&srv.server, RDS, 1).await;

    // A route Envoy will reject.
    let bad = snap(config_with_route(&["a"], invalid_regex_route("r")));
    cache.set(key(), bad.clone());
    let r2 = c.recv().await;
    assert_eq!(r2.version_info, bad.version(RDS));
    c.nack(
        &r2,
        &r1.version_info,
        &["r"],
        "invalid regex '/(unbalanced'",
    );

    // No resend loop: nothing more of any type while the snapshot is unchanged.
    c.expect_silence(QUIET).await;
    let st = wait_status(&srv.server, |p| {
        p.type_status(RDS).is_some_and(|t| t.nacks == 1)
    })
    .await;
    let t = st.type_status(RDS).unwrap();
    assert_eq!(
        t.acked_version.as_deref(),
        Some(s1.version(RDS)),
        "last good kept"
    );
    let nack = t.last_nack.as_ref().unwrap();
    assert_eq!(nack.version, bad.version(RDS));
    assert_eq!(nack.message, "invalid regex '/(unbalanced'");
    assert_eq!(t.pushes, 2);
    loop {
        match events.recv().await.unwrap() {
            XdsEvent::Nacked {
                ty,
                nack,
                resources,
                ..
            } => {
                assert_eq!(ty, RDS);
                assert_eq!(nack.code, 13);
                assert_eq!(resources, ["r"]);
                break;
            }
            _ => continue,
        }
    }

    // Re-setting identical content (new Arc) sends nothing either.
    cache.set(
        key(),
        snap(config_with_route(&["a"], invalid_regex_route("r"))),
    );
    c.expect_silence(QUIET).await;

    // A real change is sent.
    let s3 = snap(config(&["a"], "three"));
    cache.set(key(), s3.clone());
    let r3 = c.recv().await;
    assert_eq!(r3.version_info, s3.version(RDS));
    c.ack(&r3, &["r"]);
    wait_status(&srv.server, |p| {
        p.type_status(RDS)
            .is_some_and(|t| t.acked_version.as_deref() == Some(s3.version(RDS)))
    })
    .await;
}

#[tokio::test]
async fn stale_nonce_is_ignored() {
    let cache = SnapshotCache::new();
    cache.set(
        key(),
        snap(config(&["a"], "one").add_route_configuration(direct_response_route("r2", "x"))),
    );
    let srv = TestServer::start(&cache).await;
    let mut c = srv.sotw(NODE).await;
    c.subscribe(RDS, &["r"], "");
    let r1 = c.recv().await;
    c.ack(&r1, &["r"]);
    wait_acks(&srv.server, RDS, 1).await;
    let s2 = snap(config(&["a"], "two").add_route_configuration(direct_response_route("r2", "x")));
    cache.set(key(), s2.clone());
    let r2 = c.recv().await;

    // A request carrying the older nonce is stale: ignored, even though it
    // asks for another name.
    c.ack(&r1, &["r", "r2"]);
    c.expect_silence(QUIET).await;
    let st = srv.server.status();
    assert_eq!(st[0].type_status(RDS).unwrap().acks, 1);

    // The current nonce with the new subscription is answered.
    c.ack(&r2, &["r", "r2"]);
    let r3 = c.recv().await;
    assert_eq!(resource_names(&r3), ["r", "r2"]);
}

#[tokio::test]
async fn unknown_names_are_remembered_and_sent_when_they_appear() {
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a"], "one")));
    let srv = TestServer::start(&cache).await;
    let mut c = srv.sotw(NODE).await;
    c.subscribe(EDS, &["a", "later"], "");
    let e1 = c.recv().await;
    // The missing assignment is answered empty, so the cluster can warm.
    assert_eq!(resource_names(&e1), ["a", "later"]);
    let empty: envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment =
        meshplane_xds::testing::decode(&e1.resources[1]);
    assert!(empty.endpoints.is_empty());
    c.ack(&e1, &["a", "later"]);
    c.subscribe(RDS, &["r-later"], "");
    let r1 = c.recv().await;
    assert!(
        r1.resources.is_empty(),
        "unknown route: empty answer, name remembered"
    );
    c.ack(&r1, &["r-later"]);
    c.expect_silence(QUIET).await;

    cache.set(
        key(),
        snap(
            config(&["a", "later"], "one")
                .add_route_configuration(direct_response_route("r-later", "x")),
        ),
    );
    let e2 = c.recv().await;
    assert_eq!(type_of(&e2.type_url), EDS);
    let later: envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment =
        meshplane_xds::testing::decode(&e2.resources[1]);
    assert_eq!(later.endpoints.len(), 1);
    let r2 = c.recv().await;
    assert_eq!(resource_names(&r2), ["r-later"]);
}

#[tokio::test]
async fn unknown_node_gets_config_when_created() {
    let cache = SnapshotCache::new();
    let srv = TestServer::start(&cache).await;
    // Any accepted node id form reaches the same node.
    let mut c = srv
        .sotw("arn:aws:appmesh:us-east-1:111122223333:mesh/demo/virtualNode/front")
        .await;
    c.subscribe(CDS, &[], "");
    wait_subscribed(&srv.server, 1).await;
    c.expect_silence(QUIET).await;
    cache.set(key(), snap(config(&["a"], "one")));
    let r = c.recv().await;
    assert_eq!(resource_names(&r), ["a"]);
}

#[tokio::test]
async fn reconnect_with_an_old_version_gets_current_state() {
    let cache = SnapshotCache::new();
    let s1 = snap(config(&["a"], "one"));
    cache.set(key(), s1.clone());
    let srv = TestServer::start(&cache).await;
    let mut c = srv.sotw(NODE).await;
    c.subscribe(CDS, &[], "");
    let r = c.recv().await;
    c.ack(&r, &[]);
    drop(c);

    let s2 = snap(config(&["a", "b"], "one"));
    cache.set(key(), s2.clone());
    let mut c = srv.sotw(NODE).await;
    c.subscribe(CDS, &[], &r.version_info);
    let st = wait_subscribed(&srv.server, 1).await;
    let r2 = c.recv().await;
    assert_eq!(r2.version_info, s2.version(CDS));
    assert_eq!(resource_names(&r2), ["a", "b"]);
    // The status knew the old version the proxy reported before the push.
    assert!(st.type_status(CDS).unwrap().acked_version.is_some());

    // A reconnect at the current version is still answered (Envoy may hold
    // nothing after a restart with the same version string).
    drop(c);
    let mut c = srv.sotw(NODE).await;
    c.subscribe(CDS, &[], &r2.version_info);
    assert_eq!(resource_names(&c.recv().await), ["a", "b"]);
}

#[tokio::test]
async fn cluster_removal_is_sent_after_routes_and_new_clusters_before() {
    init_tracing();
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a", "b"], "one")));
    let srv = TestServer::start(&cache).await;
    let mut c = srv.sotw(NODE).await;
    subscribe_all(&mut c, &["a", "b"]);
    let mut last = std::collections::HashMap::new();
    for _ in 0..5 {
        let r = c.recv().await;
        last.insert(type_of(&r.type_url), r);
    }
    for (ty, r) in &last {
        let names: &[&str] = match ty {
            EDS => &["a", "b"],
            RDS => &["r"],
            SDS => &["s"],
            _ => &[],
        };
        c.ack(r, names);
    }
    wait_status(&srv.server, |p| p.types.iter().all(|t| t.acks == 1)).await;

    // b is replaced by c and the route changes: make before break.
    let s2 = snap(config(&["a", "c"], "two"));
    cache.set(key(), s2.clone());
    let r = c.recv().await;
    assert_eq!(
        (type_of(&r.type_url), resource_names(&r)),
        (CDS, vec!["a".into(), "b".into(), "c".into()])
    );
    assert_ne!(
        r.version_info,
        s2.version(CDS),
        "the transitional CDS has its own version"
    );
    let r = c.recv().await;
    assert_eq!(type_of(&r.type_url), EDS, "EDS follows CDS for warming");
    let r = c.recv().await;
    assert_eq!(type_of(&r.type_url), RDS);
    let r = c.recv().await;
    assert_eq!(
        (type_of(&r.type_url), resource_names(&r)),
        (CDS, vec!["a".into(), "c".into()])
    );
    assert_eq!(r.version_info, s2.version(CDS));
    c.expect_silence(QUIET).await;

    // Only a removal and a route change: the route goes first, the CDS last.
    let s3 = snap(config(&["a"], "three"));
    cache.set(key(), s3.clone());
    let r = c.recv().await;
    assert_eq!(type_of(&r.type_url), RDS);
    let r = c.recv().await;
    assert_eq!(
        (type_of(&r.type_url), resource_names(&r)),
        (CDS, vec!["a".into()])
    );
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn changed_cluster_gets_a_fresh_eds_response() {
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a"], "one")));
    let srv = TestServer::start(&cache).await;
    let mut c = srv.sotw(NODE).await;
    c.subscribe(CDS, &[], "");
    let r = c.recv().await;
    c.ack(&r, &[]);
    c.subscribe(EDS, &["a"], "");
    let e1 = c.recv().await;
    c.ack(&e1, &["a"]);
    wait_acks(&srv.server, EDS, 1).await;
    c.expect_silence(Duration::from_millis(100)).await;

    // Same endpoints, changed cluster (connect timeout).
    let s2 = snap(
        meshplane_xds::Snapshot::builder()
            .add_cluster(eds_cluster("a", 500))
            .add_cluster_load_assignment(cla("a", 9000))
            .add_listener(http_listener("l", 10000, "r"))
            .add_route_configuration(direct_response_route("r", "one"))
            .add_secret(secret("s")),
    );
    cache.set(key(), s2);
    let r = c.recv().await;
    assert_eq!(type_of(&r.type_url), CDS);
    let e2 = c.recv().await;
    assert_eq!(type_of(&e2.type_url), EDS);
    assert_eq!(e2.resources, e1.resources, "same assignment, re-sent");
    assert_ne!(e2.nonce, e1.nonce);
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn proxies_of_one_node_share_one_snapshot() {
    let cache = SnapshotCache::new();
    let s1 = snap(config(&["a"], "one"));
    cache.set(key(), s1.clone());
    let srv = TestServer::start(&cache).await;
    let mut a = srv.sotw(NODE).await;
    let mut b = srv.sotw("mesh/demo@111122223333/virtualNode/front").await;
    a.subscribe(CDS, &[], "");
    b.subscribe(CDS, &[], "");
    let (ra, rb) = (a.recv().await, b.recv().await);
    assert_eq!(ra.resources, rb.resources);
    assert_eq!(cache.watchers(&key()), 2);
    // The cache hands both streams the same allocation.
    let w1 = meshplane_xds::SnapshotSource::watch(&cache, NODE).unwrap();
    let w2 = meshplane_xds::SnapshotSource::watch(&cache, "mesh/demo@1/virtualNode/front").unwrap();
    let (x, y) = (w1.borrow().clone().unwrap(), w2.borrow().clone().unwrap());
    assert!(Arc::ptr_eq(&x, &y) && Arc::ptr_eq(&x, &s1));
    assert_eq!(srv.server.node_status(&key()).len(), 2);
}

#[tokio::test]
async fn versions_differ_across_servers_with_different_content() {
    let (c1, c2, c3) = (
        SnapshotCache::new(),
        SnapshotCache::new(),
        SnapshotCache::new(),
    );
    c1.set(key(), snap(config(&["a"], "one")));
    c2.set(key(), snap(config(&["b"], "one")));
    c3.set(key(), snap(config(&["a"], "one")));
    let mut versions = Vec::new();
    for cache in [&c1, &c2, &c3] {
        // A fresh server each time: same nonces, as after a restart.
        let srv = TestServer::start(cache).await;
        let mut c = srv.sotw(NODE).await;
        c.subscribe(CDS, &[], "");
        let r = c.recv().await;
        versions.push((r.version_info, r.nonce));
    }
    assert_eq!(versions[0].1, versions[1].1, "nonces restart");
    assert_ne!(
        versions[0].0, versions[1].0,
        "different content, different version"
    );
    assert_eq!(versions[0].0, versions[2].0, "same content, same version");
}

#[tokio::test]
async fn invalid_node_id_is_refused() {
    let cache = SnapshotCache::new();
    let srv = TestServer::start(&cache).await;
    let mut c = srv.sotw("not-an-app-mesh-node").await;
    c.subscribe(CDS, &[], "");
    let err = c.closed().await.expect_err("stream must fail");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(srv.server.status().is_empty());
}

#[tokio::test]
async fn node_is_read_from_the_first_request_only() {
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a"], "one")));
    let srv = TestServer::start(&cache).await;
    let mut c = srv.sotw(NODE).await;
    c.subscribe(CDS, &[], "");
    let r = c.recv().await;
    // Later requests carry no node (the client only sends it once).
    c.ack(&r, &[]);
    c.subscribe(LDS, &[], "");
    let l = c.recv().await;
    assert_eq!(type_of(&l.type_url), LDS);
    let st = wait_subscribed(&srv.server, 2).await;
    assert_eq!(&*st.stream.node_id, NODE);
}

#[tokio::test]
async fn status_drops_disconnected_streams() {
    let cache = SnapshotCache::new();
    let srv = TestServer::start(&cache).await;
    let mut events = srv.server.subscribe_events();
    let mut c = srv.sotw(NODE).await;
    c.subscribe(CDS, &[], "");
    wait_subscribed(&srv.server, 1).await;
    drop(c);
    loop {
        if let XdsEvent::Disconnected(s) = events.recv().await.unwrap() {
            assert_eq!(&*s.node_id, NODE);
            break;
        }
    }
    assert!(srv.server.status().is_empty());
}

#[tokio::test]
async fn removed_node_keeps_its_config_until_set_again() {
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a"], "one")));
    let srv = TestServer::start(&cache).await;
    let mut c = srv.sotw(NODE).await;
    c.subscribe(CDS, &[], "");
    let r = c.recv().await;
    c.ack(&r, &[]);
    cache.remove(&key());
    // Nothing is withdrawn: the proxy keeps serving its last config.
    c.expect_silence(QUIET).await;
    assert_eq!(srv.server.status().len(), 1);
    cache.set(key(), snap(config(&["a", "b"], "one")));
    assert_eq!(resource_names(&c.recv().await), ["a", "b"]);
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_serve_returns() {
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a"], "one")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = meshplane_xds::XdsServer::new(Arc::new(cache.clone()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s = server.clone();
    let serving = tokio::spawn(async move {
        s.serve(listener, async move {
            let _ = stopped.await;
        })
        .await
    });
    let mut c = meshplane_xds::testing::SotwClient::connect(addr, NODE).await;
    c.subscribe(CDS, &[], "");
    c.recv().await;
    stop.send(()).unwrap();
    // A long-lived ADS stream must not hold graceful shutdown open.
    let res = tokio::time::timeout(Duration::from_secs(5), serving).await;
    assert!(
        matches!(res, Ok(Ok(Ok(())))),
        "serve did not return: {res:?}"
    );
    assert!(c.closed().await.is_ok(), "stream ends cleanly");
    assert!(server.status().is_empty());
}
