//! Delta (incremental) ADS protocol tests with a scripted client on loopback.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use ResourceType::{Cluster as CDS, Endpoint as EDS, Listener as LDS, Route as RDS, Secret as SDS};
use common::*;
use meshplane_xds::testing::fixtures::*;
use meshplane_xds::testing::{DeltaClient, TestServer, delta_names};
use meshplane_xds::{ResourceType, SnapshotCache, XdsEvent, XdsFlavor};

fn subscribe_all(c: &mut DeltaClient, clusters: &[&str]) {
    c.subscribe(CDS, &[], &[]);
    c.subscribe(EDS, clusters, &[]);
    c.subscribe(LDS, &[], &[]);
    c.subscribe(RDS, &["r"], &[]);
    c.subscribe(SDS, &["s"], &[]);
}

/// Receives `n` responses, ACKs each, and returns them in order.
async fn recv_ack(
    c: &mut DeltaClient,
    n: usize,
) -> Vec<envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = c.recv().await;
        c.ack(&r);
        out.push(r);
    }
    out
}

use meshplane_xds::envoy_types;

#[tokio::test]
async fn initial_sync_is_ordered_and_versioned_per_resource() {
    init_tracing();
    let cache = SnapshotCache::new();
    let srv = TestServer::start(&cache).await;
    let mut c = srv.delta(NODE).await;
    subscribe_all(&mut c, &["a", "b"]);
    wait_subscribed(&srv.server, 5).await;
    c.expect_silence(Duration::from_millis(100)).await;

    let s1 = snap(config(&["a", "b"], "one"));
    cache.set(key(), s1.clone());
    let rs = recv_ack(&mut c, 5).await;
    let order: Vec<ResourceType> = rs.iter().map(|r| type_of(&r.type_url)).collect();
    assert_eq!(order, [CDS, EDS, LDS, RDS, SDS]);
    assert_eq!(delta_names(&rs[0]), ["a", "b"]);
    for r in &rs {
        let ty = type_of(&r.type_url);
        assert_eq!(r.system_version_info, s1.version(ty));
        for res in &r.resources {
            assert_eq!(res.version, s1.get(ty, &res.name).unwrap().version());
        }
    }
    let st = wait_status(&srv.server, |p| p.types.iter().all(|t| t.acks == 1)).await;
    assert_eq!(st.stream.flavor, XdsFlavor::Delta);
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn only_changed_resources_are_sent_and_deletions_are_removed_last() {
    init_tracing();
    let cache = SnapshotCache::new();
    cache.set(
        key(),
        snap(config(&["a", "b"], "one").add_listener(http_listener("l2", 10001, "r"))),
    );
    let srv = TestServer::start(&cache).await;
    let mut c = srv.delta(NODE).await;
    subscribe_all(&mut c, &["a", "b"]);
    recv_ack(&mut c, 5).await;
    wait_status(&srv.server, |p| p.types.iter().all(|t| t.acks == 1)).await;

    // Change only cluster a: CDS carries only a, EDS re-sends a's assignment
    // (warming), nothing else.
    let s2 = snap(
        meshplane_xds::Snapshot::builder()
            .add_cluster(eds_cluster("a", 999))
            .add_cluster_load_assignment(cla("a", 9000))
            .add_cluster(eds_cluster("b", 250))
            .add_cluster_load_assignment(cla("b", 9001))
            .add_listener(http_listener("l", 10000, "r"))
            .add_listener(http_listener("l2", 10001, "r"))
            .add_route_configuration(direct_response_route("r", "one"))
            .add_secret(secret("s")),
    );
    cache.set(key(), s2);
    let rs = recv_ack(&mut c, 2).await;
    assert_eq!(
        (type_of(&rs[0].type_url), delta_names(&rs[0])),
        (CDS, vec!["a".to_owned()])
    );
    assert_eq!(
        (type_of(&rs[1].type_url), delta_names(&rs[1])),
        (EDS, vec!["a".to_owned()])
    );
    c.expect_silence(QUIET).await;

    // Delete cluster b and listener l2, change the route: LDS removes l2,
    // RDS updates, and the CDS removal of b comes last.
    cache.set(key(), snap(config(&["a"], "two")));
    let rs = recv_ack(&mut c, 5).await;
    let summary: Vec<(ResourceType, Vec<String>, Vec<String>)> = rs
        .iter()
        .map(|r| {
            (
                type_of(&r.type_url),
                delta_names(r),
                r.removed_resources.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            // a's connect timeout went back to 250 ms.
            (CDS, vec!["a".into()], vec![]),
            // a re-sent for warming; b still subscribed, now empty.
            (EDS, vec!["a".into(), "b".into()], vec![]),
            (LDS, vec![], vec!["l2".into()]),
            (RDS, vec!["r".into()], vec![]),
            (CDS, vec![], vec!["b".into()]),
        ],
    );
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn nack_keeps_last_good_without_loop_and_retries_on_change() {
    init_tracing();
    let cache = SnapshotCache::new();
    let s1 = snap(config(&["a"], "one").add_route_configuration(direct_response_route("r2", "x")));
    cache.set(key(), s1.clone());
    let srv = TestServer::start(&cache).await;
    let mut events = srv.server.subscribe_events();
    let mut c = srv.delta(NODE).await;
    c.subscribe(RDS, &["r", "r2"], &[]);
    let r1 = c.recv().await;
    assert_eq!(delta_names(&r1), ["r", "r2"]);
    c.ack(&r1);

    // One response changing r2 (fine) and r (rejected): Envoy rejects it whole.
    let bad = snap(
        config_with_route(&["a"], invalid_regex_route("r"))
            .add_route_configuration(direct_response_route("r2", "y")),
    );
    cache.set(key(), bad.clone());
    let r2 = c.recv().await;
    assert_eq!(delta_names(&r2), ["r", "r2"]);
    c.nack(&r2, "route: invalid regex");
    c.expect_silence(QUIET).await;

    let st = wait_status(&srv.server, |p| {
        p.type_status(RDS).is_some_and(|t| t.nacks == 1)
    })
    .await;
    let t = st.type_status(RDS).unwrap();
    assert_eq!(t.acked_version.as_deref(), Some(s1.version(RDS)));
    assert_eq!(
        t.last_nack.as_ref().unwrap().message,
        "route: invalid regex"
    );
    assert_eq!(t.last_nack.as_ref().unwrap().version, bad.version(RDS));
    loop {
        if let XdsEvent::Nacked { resources, .. } = events.recv().await.unwrap() {
            assert_eq!(resources, ["r", "r2"]);
            break;
        }
    }

    // A subscription change after the NACK is still served (not the rejected ones).
    cache.set(
        key(),
        snap(
            config_with_route(&["a"], invalid_regex_route("r"))
                .add_route_configuration(direct_response_route("r2", "y"))
                .add_route_configuration(direct_response_route("r3", "z")),
        ),
    );
    // The snapshot changed (r3 added), so everything not yet accepted is retried with it.
    let r3 = c.recv().await;
    assert_eq!(delta_names(&r3), ["r", "r2"], "r3 is not subscribed");
    c.nack(&r3, "route: invalid regex");
    c.expect_silence(QUIET).await;
    c.update(RDS, &["r3"], &[], &r1.nonce);
    let r4 = c.recv().await;
    assert_eq!(
        delta_names(&r4),
        ["r3"],
        "new subscription served, rejected not resent"
    );
    c.ack(&r4);
    c.expect_silence(QUIET).await;

    // Fix r: the retry carries r and r2 (r2 was never accepted), not r3.
    cache.set(
        key(),
        snap(
            config(&["a"], "fixed")
                .add_route_configuration(direct_response_route("r2", "y"))
                .add_route_configuration(direct_response_route("r3", "z")),
        ),
    );
    let r5 = c.recv().await;
    assert_eq!(delta_names(&r5), ["r", "r2"]);
    c.ack(&r5);
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn reconnect_with_initial_versions_sends_only_the_difference() {
    let cache = SnapshotCache::new();
    let s1 = snap(config(&["a", "b"], "one"));
    cache.set(key(), s1.clone());
    let srv = TestServer::start(&cache).await;
    let va = s1.get(CDS, "a").unwrap().version().to_owned();
    let mut c = srv.delta(NODE).await;
    // Holds a current, b at an old version, and "gone" that no longer exists.
    c.subscribe(CDS, &[], &[("a", &va), ("b", "old"), ("gone", "old")]);
    let r = c.recv().await;
    assert_eq!(delta_names(&r), ["b"]);
    c.ack(&r);
    let r = c.recv().await;
    assert_eq!(
        (delta_names(&r), r.removed_resources.clone()),
        (vec![], vec!["gone".to_owned()])
    );
    c.ack(&r);
    c.expect_silence(QUIET).await;

    // Up to date on reconnect: the first request is still answered (empty),
    // so Envoy's initial fetch completes.
    drop(c);
    let vb = s1.get(CDS, "b").unwrap().version().to_owned();
    let mut c = srv.delta(NODE).await;
    c.subscribe(CDS, &[], &[("a", &va), ("b", &vb)]);
    let r = c.recv().await;
    assert!(r.resources.is_empty() && r.removed_resources.is_empty());
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn subscription_changes_are_honoured_with_a_stale_nonce() {
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a", "b"], "one")));
    let srv = TestServer::start(&cache).await;
    let mut c = srv.delta(NODE).await;
    c.subscribe(EDS, &["a"], &[]);
    let r1 = c.recv().await;
    c.ack(&r1);
    cache.set(
        key(),
        snap(config(&["a", "b"], "one").add_cluster_load_assignment(cla("c", 1))),
    );
    // r1 is already ACKed: its nonce is no longer current.
    c.update(EDS, &["c"], &[], &r1.nonce);
    let r2 = c.recv().await;
    assert_eq!(delta_names(&r2), ["c"]);
    // Stale nonce (r1), new name: still served.
    c.update(EDS, &["b"], &[], &r1.nonce);
    let r3 = c.recv().await;
    assert_eq!(delta_names(&r3), ["b"]);
    // Unsubscribe then resubscribe: the resource is sent again.
    c.update(EDS, &[], &["b"], &r3.nonce);
    c.expect_silence(Duration::from_millis(200)).await;
    c.update(EDS, &["b"], &[], "");
    assert_eq!(delta_names(&c.recv().await), ["b"]);
}

#[tokio::test]
async fn unknown_names_are_remembered_and_sent_when_they_appear() {
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a"], "one")));
    let srv = TestServer::start(&cache).await;
    let mut c = srv.delta(NODE).await;
    c.subscribe(RDS, &["later"], &[]);
    let r = c.recv().await;
    assert!(r.resources.is_empty(), "first request answered empty");
    assert!(
        r.removed_resources.is_empty(),
        "no removal for a named subscription"
    );
    c.ack(&r);
    c.subscribe(EDS, &["later"], &[]);
    let e = c.recv().await;
    assert_eq!(
        delta_names(&e),
        ["later"],
        "empty assignment lets the cluster warm"
    );
    c.ack(&e);
    c.expect_silence(QUIET).await;

    cache.set(
        key(),
        snap(
            config(&["a", "later"], "one")
                .add_route_configuration(direct_response_route("later", "x")),
        ),
    );
    let rs = recv_ack(&mut c, 2).await;
    let got: HashMap<ResourceType, Vec<String>> = rs
        .iter()
        .map(|r| (type_of(&r.type_url), delta_names(r)))
        .collect();
    assert_eq!(got[&EDS], ["later"]);
    assert_eq!(got[&RDS], ["later"]);
    assert_eq!(type_of(&rs[0].type_url), EDS, "EDS before RDS");
}

#[tokio::test]
async fn unknown_node_gets_config_when_created() {
    let cache = SnapshotCache::new();
    let srv = TestServer::start(&cache).await;
    let mut c = srv.delta("mesh/demo@111122223333/virtualNode/front").await;
    c.subscribe(LDS, &[], &[]);
    wait_subscribed(&srv.server, 1).await;
    c.expect_silence(QUIET).await;
    cache.set(key(), snap(config(&["a"], "one")));
    assert_eq!(delta_names(&c.recv().await), ["l"]);
}

#[tokio::test]
async fn unacked_state_is_not_committed() {
    // Two pushes in flight, the first NACKed: the second still counts, and the
    // status only moves on ACK.
    let cache = SnapshotCache::new();
    let s1 = snap(config(&["a"], "one"));
    cache.set(key(), s1.clone());
    let srv = TestServer::start(&cache).await;
    let mut c = srv.delta(NODE).await;
    c.subscribe(RDS, &["r"], &[]);
    let r1 = c.recv().await;
    c.ack(&r1);
    wait_acks(&srv.server, RDS, 1).await;
    let s2 = snap(config(&["a"], "two"));
    cache.set(key(), s2.clone());
    let r2 = c.recv().await;
    wait_status(&srv.server, |p| {
        p.type_status(RDS).is_some_and(|t| t.pushes == 2)
    })
    .await;
    let st = srv.server.status();
    assert_eq!(
        st[0].type_status(RDS).unwrap().acked_version.as_deref(),
        Some(s1.version(RDS))
    );
    c.ack(&r2);
    wait_status(&srv.server, |p| {
        p.type_status(RDS)
            .is_some_and(|t| t.acked_version.as_deref() == Some(s2.version(RDS)))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_proxies_of_one_node_converge_on_one_snapshot() {
    const N: usize = 40;
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a"], "one")));
    let srv = TestServer::start(&cache).await;
    let mut delta = Vec::new();
    let mut sotw = Vec::new();
    for i in 0..N {
        if i % 2 == 0 {
            let mut c = srv.delta(NODE).await;
            c.subscribe(CDS, &[], &[]);
            let r = c.recv().await;
            c.ack(&r);
            delta.push(c);
        } else {
            let mut c = srv.sotw(NODE).await;
            c.subscribe(CDS, &[], "");
            let r = c.recv().await;
            c.ack(&r, &[]);
            sotw.push(c);
        }
    }
    assert_eq!(cache.watchers(&key()), N);
    let s2 = snap(config(&["a", "b"], "one"));
    cache.set(key(), s2.clone());
    for c in &mut delta {
        let r = c.recv().await;
        assert_eq!(
            delta_names(&r),
            ["b"],
            "delta proxies get only the new cluster"
        );
        c.ack(&r);
    }
    for c in &mut sotw {
        let r = c.recv().await;
        assert_eq!(r.version_info, s2.version(CDS));
        c.ack(&r, &[]);
    }
    // Every stream reports the new version as accepted.
    for _ in 0..500 {
        let st = srv.server.node_status(&key());
        let done = st.len() == N
            && st.iter().all(|p| {
                p.type_status(CDS).and_then(|t| t.acked_version.as_deref()) == Some(s2.version(CDS))
            });
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "not all proxies acked: {:#?}",
        srv.server.node_status(&key())
    );
}

#[tokio::test]
async fn reconnect_larger_than_tonic_default_limit_is_accepted() {
    // tonic decodes at most 4 MiB by default; a delta reconnect listing many
    // held resources is bigger. ~5.5 MiB of initial_resource_versions here.
    let cache = SnapshotCache::new();
    cache.set(key(), snap(config(&["a"], "one")));
    let srv = TestServer::start(&cache).await;
    let mut c = srv.delta(NODE).await;
    let names: Vec<String> = (0..60_000).map(|i| format!("{i:0>60}")).collect();
    let initial: Vec<(&str, &str)> = names
        .iter()
        .map(|n| (n.as_str(), "0123456789abcdef0123456789abcdef"))
        .collect();
    c.subscribe(CDS, &[], &initial);
    let r = c.recv().await;
    assert_eq!(delta_names(&r), ["a"]);
    let r = c.recv().await;
    assert_eq!(
        r.removed_resources.len(),
        60_000,
        "held clusters not in the snapshot are removed"
    );
}
