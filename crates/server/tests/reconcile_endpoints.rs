//! The reconciler and the registry in process: instance changes reach only the proxies
//! whose EDS clusters read that Cloud Map service, change their EDS version only, and
//! heartbeats that change nothing push nothing.

use std::sync::Arc;
use std::time::Duration;

use meshplane_api::{CreateInput, parse_spec};
use meshplane_discovery::{Registry, RegistryConfig};
use meshplane_model::{ResourceId, ResourceKind};
use meshplane_rest::{ApiConfig, MeshService};
use meshplane_server::reconcile::Reconciler;
use meshplane_store::{MemoryStore, Store};
use meshplane_translate::TranslateOptions;
use meshplane_xds::{NodeKey, ResourceType, Snapshot, SnapshotCache};
use serde_json::{Value, json};

struct Env {
    svc: MeshService,
    registry: Registry,
    cache: SnapshotCache,
}

impl Env {
    async fn start() -> Env {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let svc = MeshService::new(store.clone(), ApiConfig::default());
        let registry = Registry::new(store.clone(), RegistryConfig::default());
        let cache = SnapshotCache::new();
        let rec = Reconciler::new(store, cache.clone(), TranslateOptions::default());
        tokio::spawn(rec.run());
        Env {
            svc,
            registry,
            cache,
        }
    }

    async fn create(&self, kind: ResourceKind, name: &str, spec: Value) {
        let id = match kind {
            ResourceKind::Mesh => ResourceId::mesh(name),
            _ => ResourceId::child(kind, "m", name),
        };
        let input = CreateInput {
            name: name.into(),
            spec: parse_spec(kind, spec).unwrap(),
            tags: vec![],
            client_token: None,
        };
        self.svc.create(id, None, input, "").await.unwrap();
    }

    async fn cm(&self, op: &str, body: Value) -> Value {
        self.registry.call(op, body).await.unwrap()
    }

    fn snap(&self, node: &str) -> Option<Arc<Snapshot>> {
        self.cache
            .get(&NodeKey::parse(&format!("mesh/m/virtualNode/{node}")).unwrap())
    }

    async fn wait(
        &self,
        node: &str,
        what: &str,
        cond: impl Fn(&Snapshot) -> bool,
    ) -> Arc<Snapshot> {
        for _ in 0..300 {
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

fn versions(s: &Snapshot) -> Vec<String> {
    [
        ResourceType::Cluster,
        ResourceType::Listener,
        ResourceType::Route,
    ]
    .iter()
    .map(|t| s.version(*t).to_owned())
    .collect()
}

#[tokio::test]
async fn instance_changes_are_eds_only_and_scoped() {
    let env = Env::start().await;
    env.create(ResourceKind::Mesh, "m", json!({})).await;
    let listeners = json!([{"portMapping": {"port": 8080, "protocol": "http"}}]);
    env.create(
        ResourceKind::VirtualNode,
        "b",
        json!({"listeners": listeners, "serviceDiscovery": {"awsCloudMap": {
            "namespaceName": "apps.local", "serviceName": "b"}}}),
    )
    .await;
    env.create(
        ResourceKind::VirtualNode,
        "c",
        json!({"listeners": listeners, "serviceDiscovery": {"dns": {"hostname": "c.local"}}}),
    )
    .await;
    for (vs, node) in [("b.local", "b"), ("c.local", "c")] {
        env.create(
            ResourceKind::VirtualService,
            vs,
            json!({"provider": {"virtualNode": {"virtualNodeName": node}}}),
        )
        .await;
    }
    for (client, backend) in [("front", "b.local"), ("other", "c.local")] {
        env.create(
            ResourceKind::VirtualNode,
            client,
            json!({"backends": [{"virtualService": {"virtualServiceName": backend}}]}),
        )
        .await;
    }
    let front0 = env.wait("front", "initial snapshot", |_| true).await;
    let other0 = env.wait("other", "initial snapshot", |_| true).await;

    // Registering an instance changes front's EDS only; other is not touched.
    let op = env
        .cm("CreateHttpNamespace", json!({"Name": "apps.local"}))
        .await;
    let op = env
        .cm("GetOperation", json!({"OperationId": op["OperationId"]}))
        .await;
    let ns = op["Operation"]["Targets"]["NAMESPACE"].clone();
    let svc = env
        .cm(
            "CreateService",
            json!({"Name": "b", "NamespaceId": ns, "HealthCheckCustomConfig": {}}),
        )
        .await["Service"]["Id"]
        .clone();
    let register = json!({"ServiceId": svc, "InstanceId": "i-1", "Attributes": {
        "AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_PORT": "9000"}});
    env.cm("RegisterInstance", register.clone()).await;
    let front1 = env
        .wait("front", "EDS change after registration", |s| {
            s.version(ResourceType::Endpoint) != front0.version(ResourceType::Endpoint)
        })
        .await;
    assert_eq!(versions(&front1), versions(&front0), "only EDS may change");
    assert!(Arc::ptr_eq(&env.snap("other").unwrap(), &other0));

    // Health: UNHEALTHY leaves the only instance in (fail-open) but marks it; EDS only.
    env.cm(
        "RegisterInstance",
        json!({"ServiceId": svc, "InstanceId": "i-2", "Attributes": {"AWS_INSTANCE_IPV4": "10.0.0.2"}}),
    )
    .await;
    let front2 = env
        .wait("front", "second instance", |s| {
            s.version(ResourceType::Endpoint) != front1.version(ResourceType::Endpoint)
        })
        .await;
    env.cm(
        "UpdateInstanceCustomHealthStatus",
        json!({"ServiceId": svc, "InstanceId": "i-2", "Status": "UNHEALTHY"}),
    )
    .await;
    let front3 = env
        .wait("front", "unhealthy instance left out", |s| {
            s.version(ResourceType::Endpoint) != front2.version(ResourceType::Endpoint)
        })
        .await;
    assert_eq!(
        front3.version(ResourceType::Endpoint),
        front1.version(ResourceType::Endpoint),
        "with i-2 unhealthy the assignment is the one with i-1 alone"
    );
    assert_eq!(versions(&front3), versions(&front0));

    // A heartbeat (the same registration again) changes nothing and pushes nothing.
    env.cm("RegisterInstance", register).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(Arc::ptr_eq(&env.snap("front").unwrap(), &front3));
    assert!(Arc::ptr_eq(&env.snap("other").unwrap(), &other0));
}
