//! The reconciler in process: API writes through `MeshService` on a `MemoryStore`, and
//! the snapshots that land in the `SnapshotCache`. Proves scoping (a change reaches only
//! the proxies that depend on it), RDS-only weight changes, creation of nodes after their
//! proxies subscribed, and removal.

use std::sync::Arc;
use std::time::Duration;

use meshplane_api::{CreateInput, UpdateInput, parse_spec};
use meshplane_model::{ResourceId, ResourceKind};
use meshplane_rest::{ApiConfig, MeshService};
use meshplane_server::reconcile::Reconciler;
use meshplane_store::{MemoryStore, Store};
use meshplane_translate::TranslateOptions;
use meshplane_xds::{NodeKey, ResourceType, Snapshot, SnapshotCache, SnapshotSource};
use serde_json::{Value, json};

struct Env {
    svc: MeshService,
    cache: SnapshotCache,
}

impl Env {
    async fn start() -> Env {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let svc = MeshService::new(store.clone(), ApiConfig::default());
        let cache = SnapshotCache::new();
        let rec = Reconciler::new(store, cache.clone(), TranslateOptions::default());
        tokio::spawn(rec.run());
        Env { svc, cache }
    }

    async fn create(&self, kind: ResourceKind, parent: Option<&str>, name: &str, spec: Value) {
        let id = match parent {
            Some(p) => ResourceId::grandchild(kind, "m", p, name),
            None if kind == ResourceKind::Mesh => ResourceId::mesh(name),
            None => ResourceId::child(kind, "m", name),
        };
        let input = CreateInput {
            name: name.into(),
            spec: parse_spec(kind, spec).unwrap(),
            tags: vec![],
            client_token: None,
        };
        self.svc.create(id, None, input, "").await.unwrap();
    }

    async fn update(&self, id: ResourceId, spec: Value) {
        let input = UpdateInput {
            spec: parse_spec(id.kind, spec).unwrap(),
            client_token: None,
        };
        self.svc.update(id, None, input, "").await.unwrap();
    }

    fn snap(&self, node: &str) -> Option<Arc<Snapshot>> {
        self.cache
            .get(&NodeKey::parse(&format!("mesh/m/virtualNode/{node}")).unwrap())
    }

    /// Waits until `cond` holds on the node's snapshot (bounded).
    async fn wait(
        &self,
        node: &str,
        what: &str,
        cond: impl Fn(&Snapshot) -> bool,
    ) -> Arc<Snapshot> {
        for _ in 0..200 {
            if let Some(s) = self.snap(node)
                && cond(&s)
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {node}: {what}");
    }
}

fn node(host: &str, backends: &[&str]) -> Value {
    let b: Vec<Value> = backends
        .iter()
        .map(|b| json!({"virtualService": {"virtualServiceName": b}}))
        .collect();
    json!({
        "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
        "serviceDiscovery": {"dns": {"hostname": host}},
        "backends": b,
    })
}

fn route(red: i64, blue: i64) -> Value {
    json!({"httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": [
        {"virtualNode": "red", "weight": red}, {"virtualNode": "blue", "weight": blue}]}}})
}

async fn colorapp(env: &Env) {
    env.create(ResourceKind::Mesh, None, "m", json!({})).await;
    for n in ["red", "blue"] {
        env.create(
            ResourceKind::VirtualNode,
            None,
            n,
            node(&format!("{n}.local"), &[]),
        )
        .await;
    }
    env.create(
        ResourceKind::VirtualRouter,
        None,
        "r",
        json!({"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}),
    )
    .await;
    env.create(ResourceKind::Route, Some("r"), "rt", route(3, 1))
        .await;
    env.create(
        ResourceKind::VirtualService,
        None,
        "color.local",
        json!({"provider": {"virtualRouter": {"virtualRouterName": "r"}}}),
    )
    .await;
    env.create(
        ResourceKind::VirtualNode,
        None,
        "front",
        node("front.local", &["color.local"]),
    )
    .await;
    // A bystander that calls nothing.
    env.create(
        ResourceKind::VirtualNode,
        None,
        "lonely",
        node("lonely.local", &[]),
    )
    .await;
}

fn has_cluster(s: &Snapshot, name: &str) -> bool {
    s.get(ResourceType::Cluster, name).is_some()
}

#[tokio::test]
async fn a_weight_change_reaches_only_dependent_proxies_and_only_as_rds() {
    let env = Env::start().await;
    colorapp(&env).await;
    let front = env
        .wait("front", "egress clusters", |s| {
            has_cluster(s, "cds_egress_m_red_http_8080")
                && has_cluster(s, "cds_egress_m_blue_http_8080")
        })
        .await;
    let lonely = env.wait("lonely", "snapshot", |_| true).await;
    let red = env.wait("red", "snapshot", |_| true).await;

    env.update(
        ResourceId::grandchild(ResourceKind::Route, "m", "r", "rt"),
        route(1, 1),
    )
    .await;
    let front2 = env
        .wait("front", "new routes", |s| {
            s.version(ResourceType::Route) != front.version(ResourceType::Route)
        })
        .await;
    assert_eq!(
        front2.version(ResourceType::Listener),
        front.version(ResourceType::Listener),
        "listeners untouched"
    );
    assert_eq!(
        front2.version(ResourceType::Cluster),
        front.version(ResourceType::Cluster),
        "clusters untouched"
    );

    // Proxies that do not depend on the route keep the very same snapshot.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        Arc::ptr_eq(&env.snap("lonely").unwrap(), &lonely),
        "bystander not re-pushed"
    );
    assert!(
        Arc::ptr_eq(&env.snap("red").unwrap(), &red),
        "a route target does not depend on the route: not re-pushed"
    );
}

#[tokio::test]
async fn a_backend_added_later_and_a_node_created_after_its_proxy_subscribed() {
    let env = Env::start().await;
    env.create(ResourceKind::Mesh, None, "m", json!({})).await;
    // An Envoy subscribes before its virtual node exists.
    let mut watch = env.cache.watch("mesh/m/virtualNode/late").unwrap();
    assert!(watch.borrow().is_none());
    env.create(
        ResourceKind::VirtualNode,
        None,
        "late",
        node("late.local", &["svc.local"]),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(2), watch.changed())
        .await
        .expect("config arrives once the node exists")
        .unwrap();
    let first = watch.borrow().clone().unwrap();
    assert!(
        !has_cluster(&first, "cds_egress_m_target_http_8080"),
        "backend does not exist yet"
    );

    // The backend appears: the dependent proxy is recomputed although the service did not exist before.
    env.create(
        ResourceKind::VirtualNode,
        None,
        "target",
        node("target.local", &[]),
    )
    .await;
    env.create(
        ResourceKind::VirtualService,
        None,
        "svc.local",
        json!({"provider": {"virtualNode": {"virtualNodeName": "target"}}}),
    )
    .await;
    env.wait("late", "backend cluster", |s| {
        has_cluster(s, "cds_egress_m_target_http_8080")
    })
    .await;
}

#[tokio::test]
async fn deleting_a_node_removes_its_snapshot_and_updates_callers() {
    let env = Env::start().await;
    colorapp(&env).await;
    env.wait("front", "egress clusters", |s| {
        has_cluster(s, "cds_egress_m_blue_http_8080")
    })
    .await;
    env.update(ResourceId::grandchild(ResourceKind::Route, "m", "r", "rt"), json!({"httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": [{"virtualNode": "red", "weight": 1}]}}})).await;
    env.svc
        .delete(
            ResourceId::child(ResourceKind::VirtualNode, "m", "blue"),
            None,
        )
        .await
        .unwrap();
    env.wait("front", "blue cluster gone", |s| {
        !has_cluster(s, "cds_egress_m_blue_http_8080")
    })
    .await;
    for _ in 0..200 {
        if env.snap("blue").is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("deleted node's snapshot was not removed");
}

#[tokio::test]
async fn a_gateway_and_a_node_of_the_same_name_get_their_own_configuration() {
    let env = Env::start().await;
    colorapp(&env).await;
    env.create(
        ResourceKind::VirtualGateway,
        None,
        "front",
        json!({"listeners": [{"portMapping": {"port": 9000, "protocol": "http"}}]}),
    )
    .await;
    env.create(
        ResourceKind::GatewayRoute,
        Some("front"),
        "all",
        json!({"httpRoute": {"match": {"prefix": "/"}, "action": {"target": {"virtualService": {"virtualServiceName": "color.local"}}}}}),
    )
    .await;
    let gw_key = NodeKey::parse("mesh/m/virtualGateway/front").unwrap();
    let gw_snap = || env.cache.get(&gw_key);
    let mut gw = None;
    for _ in 0..200 {
        if let Some(s) = gw_snap()
            && has_cluster(&s, "cds_ingress_m_front_self_redirect_http_9000")
            && has_cluster(&s, "cds_egress_m_red_http_8080")
        {
            gw = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gw = gw.expect("the gateway's configuration arrives");
    let node = env
        .wait("front", "the node's own ingress", |s| {
            has_cluster(s, "cds_ingress_m_front_http_8080")
        })
        .await;
    assert!(!has_cluster(
        &node,
        "cds_ingress_m_front_self_redirect_http_9000"
    ));

    // A router weight change reaches the gateway (its hop 2) as RDS only.
    env.update(
        ResourceId::grandchild(ResourceKind::Route, "m", "r", "rt"),
        route(1, 1),
    )
    .await;
    let mut changed = None;
    for _ in 0..200 {
        if let Some(s) = gw_snap()
            && s.version(ResourceType::Route) != gw.version(ResourceType::Route)
        {
            changed = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let changed = changed.expect("the gateway follows its target router's routes");
    assert_eq!(
        changed.version(ResourceType::Listener),
        gw.version(ResourceType::Listener)
    );
    assert_eq!(
        changed.version(ResourceType::Cluster),
        gw.version(ResourceType::Cluster)
    );

    // Deleting the gateway removes its configuration, not the node's.
    env.svc
        .delete(
            ResourceId::grandchild(ResourceKind::GatewayRoute, "m", "front", "all"),
            None,
        )
        .await
        .unwrap();
    env.svc
        .delete(
            ResourceId::child(ResourceKind::VirtualGateway, "m", "front"),
            None,
        )
        .await
        .unwrap();
    for _ in 0..200 {
        if gw_snap().is_none() {
            assert!(
                env.snap("front").is_some(),
                "the node keeps its configuration"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the gateway's snapshot was not removed");
}
