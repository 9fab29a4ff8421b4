//! Concurrent writers through the App Mesh router over the durable `SqliteStore` (whose
//! group commit puts racing transactions in one batch): clientToken idempotency under any
//! concurrency, no conflicts between writers on disjoint resources, no lost update on one
//! resource, exact quotas, and references that never dangle.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use futures::future::join_all;
use http::Request;
use http_body_util::BodyExt;
use meshplane_rest::{ApiConfig, ApiMetrics, MeshService, Quotas};
use meshplane_store::SqliteStore;
use serde_json::{Value, json};
use tower::ServiceExt;

const WRITERS: usize = 32;

struct Api {
    router: Router,
    _dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Reply {
    status: u16,
    error: Option<String>,
    body: Value,
}

impl Api {
    fn new(cfg: ApiConfig) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let svc = MeshService::new(Arc::new(store), cfg);
        Api {
            router: meshplane_rest::router(svc, Arc::new(ApiMetrics::unregistered())),
            _dir: dir,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(format!("/v20190125{path}"))
            .body(Body::from(bytes))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let error = resp
            .headers()
            .get("x-amzn-errortype")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            error,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn put(&self, path: &str, body: Value) -> Reply {
        self.call("PUT", path, Some(body)).await
    }

    async fn ok(&self, path: &str, body: Value) -> Value {
        let r = self.put(path, body).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        r.body
    }

    /// Mesh `m`, nodes `a` and `b`, router `r` with route `rt` (a:b 1:1).
    async fn base(&self) {
        self.ok("/meshes", json!({"meshName": "m"})).await;
        for n in ["a", "b"] {
            self.ok(
                "/meshes/m/virtualNodes",
                json!({"virtualNodeName": n, "spec": node_spec(n)}),
            )
            .await;
        }
        self.ok(
            "/meshes/m/virtualRouters",
            json!({"virtualRouterName": "r", "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}}),
        )
        .await;
        self.ok(
            "/meshes/m/virtualRouter/r/routes",
            json!({"routeName": "rt", "spec": route_spec(&[("a", 1), ("b", 1)])}),
        )
        .await;
    }
}

fn node_spec(host: &str) -> Value {
    json!({
        "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
        "serviceDiscovery": {"dns": {"hostname": format!("{host}.local")}}
    })
}

fn route_spec(targets: &[(&str, i64)]) -> Value {
    let targets: Vec<Value> = targets
        .iter()
        .map(|(n, w)| json!({"virtualNode": n, "weight": w}))
        .collect();
    json!({"httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": targets}}})
}

fn version(body: &Value) -> i64 {
    body["metadata"]["version"]
        .as_i64()
        .expect("metadata.version")
}

/// Issue 16, defect 1: 32 concurrent UpdateRoute calls with one token and one body write
/// exactly one new version, in each of 20 trials, and all 32 get that same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_token_same_body_writes_exactly_once() {
    let api = Api::new(ApiConfig::default());
    api.base().await;
    for trial in 0..20 {
        let before = version(
            &api.call("GET", "/meshes/m/virtualRouter/r/routes/rt", None)
                .await
                .body,
        );
        let body = json!({"clientToken": format!("tok-{trial}"), "spec": route_spec(&[("a", trial + 1), ("b", 1)])});
        let replies = join_all(
            (0..WRITERS).map(|_| api.put("/meshes/m/virtualRouter/r/routes/rt", body.clone())),
        )
        .await;
        for r in &replies {
            assert_eq!(r.status, 200, "trial {trial}: {r:?}");
            assert_eq!(
                r.body, replies[0].body,
                "trial {trial}: every replay answers the same"
            );
        }
        let after = api
            .call("GET", "/meshes/m/virtualRouter/r/routes/rt", None)
            .await
            .body;
        assert_eq!(
            version(&after),
            before + 1,
            "trial {trial}: exactly one new version"
        );
        assert_eq!(version(&replies[0].body), before + 1);
    }
}

/// One token, 32 different bodies at once: one wins, every other gets ConflictException,
/// and the stored spec is the winner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_token_different_bodies_one_wins_others_conflict() {
    let api = Api::new(ApiConfig::default());
    api.base().await;
    for trial in 0..5 {
        let before = version(
            &api.call("GET", "/meshes/m/virtualRouter/r/routes/rt", None)
                .await
                .body,
        );
        let replies = join_all((0..WRITERS).map(|i| {
            api.put(
                "/meshes/m/virtualRouter/r/routes/rt",
                json!({"clientToken": format!("shared-{trial}"), "spec": route_spec(&[("a", i as i64 + 1), ("b", 1)])}),
            )
        }))
        .await;
        let winners: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
        assert_eq!(winners.len(), 1, "trial {trial}: {replies:#?}");
        for r in replies.iter().filter(|r| r.status != 200) {
            assert_eq!(
                (r.status, r.error.as_deref()),
                (409, Some("ConflictException")),
                "{r:?}"
            );
        }
        let stored = api
            .call("GET", "/meshes/m/virtualRouter/r/routes/rt", None)
            .await
            .body;
        assert_eq!(version(&stored), before + 1);
        assert_eq!(stored["spec"], winners[0].body["spec"]);
    }
}

/// Issue 16, defect 4: 32 writers, each creating and then updating its own virtual node and
/// its own route on one shared router, never see a 409 (nor any other error).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_on_disjoint_resources_of_one_mesh_never_conflict() {
    let api = Api::new(ApiConfig::default());
    api.base().await;
    let replies = join_all((0..WRITERS).map(|w| {
        let api = &api;
        async move {
            let node = format!("n{w}");
            let mut out = vec![
                api.put(
                    "/meshes/m/virtualNodes",
                    json!({"virtualNodeName": node, "spec": node_spec(&node)}),
                )
                .await,
                api.put(
                    "/meshes/m/virtualRouter/r/routes",
                    json!({"routeName": format!("rt{w}"), "spec": {"priority": w, "httpRoute": {"match": {"prefix": format!("/{w}")}, "action": {"weightedTargets": [{"virtualNode": node, "weight": 1}]}}}}),
                )
                .await,
            ];
            for i in 0..5 {
                out.push(
                    api.put(
                        &format!("/meshes/m/virtualNodes/{node}"),
                        json!({"spec": node_spec(&format!("{node}-{i}"))}),
                    )
                    .await,
                );
                out.push(
                    api.put(
                        &format!("/meshes/m/virtualRouter/r/routes/rt{w}"),
                        json!({"spec": {"priority": w, "httpRoute": {"match": {"prefix": format!("/{w}/{i}")}, "action": {"weightedTargets": [{"virtualNode": node, "weight": 1}]}}}}),
                    )
                    .await,
                );
            }
            out
        }
    }))
    .await;
    let all: Vec<&Reply> = replies.iter().flatten().collect();
    let failed: Vec<&&Reply> = all.iter().filter(|r| r.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} writes failed: {failed:#?}",
        failed.len(),
        all.len()
    );
    assert_eq!(all.len(), WRITERS * 12);
}

/// Writers racing on one resource: every update is acknowledged, each with its own
/// version, and the versions are exactly the next ones (no lost update, no reuse).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_updates_of_one_resource_lose_nothing() {
    const EACH: usize = 5;
    let api = Api::new(ApiConfig::default());
    api.base().await;
    let replies = join_all((0..WRITERS).map(|w| {
        let api = &api;
        async move {
            let mut out = Vec::new();
            for i in 0..EACH {
                out.push(
                    api.put(
                        "/meshes/m/virtualNodes/a",
                        json!({"spec": node_spec(&format!("a-{w}-{i}"))}),
                    )
                    .await,
                );
            }
            out
        }
    }))
    .await;
    let mut versions = BTreeSet::new();
    for r in replies.iter().flatten() {
        assert_eq!(r.status, 200, "{r:?}");
        assert!(versions.insert(version(&r.body)), "version reused: {r:?}");
    }
    let n = (WRITERS * EACH) as i64;
    assert_eq!(versions, (2..=n + 1).collect::<BTreeSet<_>>());
    let last = api.call("GET", "/meshes/m/virtualNodes/a", None).await.body;
    assert_eq!(version(&last), n + 1);
    // The stored spec is the one acknowledged with the last version.
    let winner = replies
        .iter()
        .flatten()
        .find(|r| version(&r.body) == n + 1)
        .unwrap();
    assert_eq!(last["spec"], winner.body["spec"]);
}

/// Creates racing for the last places of a quota: exactly the quota succeeds, the rest
/// get LimitExceededException, for a mesh-level and a router-level quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quotas_are_exact_under_concurrent_creates() {
    let api = Api::new(ApiConfig {
        quotas: Quotas {
            virtual_nodes_per_mesh: 12,
            routes_per_virtual_router: 7,
            ..Quotas::default()
        },
        ..ApiConfig::default()
    });
    api.base().await; // 2 nodes, 1 route
    let nodes = join_all((0..WRITERS).map(|i| {
        api.put(
            "/meshes/m/virtualNodes",
            json!({"virtualNodeName": format!("q{i}"), "spec": node_spec("q")}),
        )
    }))
    .await;
    let routes = join_all((0..WRITERS).map(|i| {
        api.put(
            "/meshes/m/virtualRouter/r/routes",
            json!({"routeName": format!("q{i}"), "spec": {"priority": i, "httpRoute": {"match": {"prefix": format!("/{i}")}, "action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}]}}}}),
        )
    }))
    .await;
    for (replies, room) in [(&nodes, 10), (&routes, 6)] {
        let ok = replies.iter().filter(|r| r.status == 200).count();
        assert_eq!(ok, room, "{replies:#?}");
        for r in replies.iter().filter(|r| r.status != 200) {
            assert_eq!(
                (r.status, r.error.as_deref()),
                (400, Some("LimitExceededException"))
            );
        }
    }
    let listed = api.call("GET", "/meshes/m/virtualNodes", None).await.body;
    assert_eq!(listed["virtualNodes"].as_array().unwrap().len(), 12);
}

/// A delete racing a write that adds a reference to the deleted resource: exactly one of
/// them wins, in every trial; no route ever targets a missing node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reference_never_dangles_under_a_racing_delete() {
    let api = Api::new(ApiConfig::default());
    api.base().await;
    let (mut deleted, mut referenced) = (0, 0);
    for trial in 0..30 {
        let node = format!("d{trial}");
        api.ok(
            "/meshes/m/virtualNodes",
            json!({"virtualNodeName": node, "spec": node_spec(&node)}),
        )
        .await;
        let path = format!("/meshes/m/virtualNodes/{node}");
        let (del, route) = tokio::join!(
            api.call("DELETE", &path, None),
            api.put(
                "/meshes/m/virtualRouter/r/routes",
                json!({"routeName": format!("to-{node}"), "spec": {"priority": trial, "httpRoute": {"match": {"prefix": format!("/d{trial}")}, "action": {"weightedTargets": [{"virtualNode": node, "weight": 1}]}}}}),
            ),
        );
        match (del.status, route.status) {
            (200, 404) => deleted += 1,
            (409, 200) => {
                assert_eq!(del.error.as_deref(), Some("ResourceInUseException"));
                referenced += 1;
            }
            other => panic!("trial {trial}: {other:?}: {del:?} {route:?}"),
        }
        let exists = api.call("GET", &path, None).await.status == 200;
        let route_exists = api
            .call(
                "GET",
                &format!("/meshes/m/virtualRouter/r/routes/to-{node}"),
                None,
            )
            .await
            .status
            == 200;
        assert!(
            !route_exists || exists,
            "trial {trial}: route to a deleted node"
        );
    }
    assert_eq!(deleted + referenced, 30);
}
