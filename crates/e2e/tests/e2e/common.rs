//! Mesh-building helpers shared by the scenarios: one control plane and one mesh per test.

use std::net::Ipv4Addr;
use std::time::Duration;

use meshplane_testkit::{ControlPlane, Envoy, Target, XdsFlavor, addr, loopback_ip};
use serde_json::{Value, json};

/// A control plane with one mesh (`DROP_ALL`).
pub struct World {
    pub cp: ControlPlane,
    pub mesh: String,
}

impl World {
    /// Starts a control plane and creates mesh `mesh`.
    pub async fn new(mesh: &str) -> World {
        let cp = ControlPlane::start().await;
        cp.create_mesh(mesh, json!({"egressFilter": {"type": "DROP_ALL"}}))
            .await;
        World {
            cp,
            mesh: mesh.to_owned(),
        }
    }

    /// `mesh/<mesh>/virtualNode/<name>`.
    pub fn node_id(&self, name: &str) -> String {
        format!("mesh/{}/virtualNode/{name}", self.mesh)
    }

    /// A virtual node for a backend listening on `127.0.0.1:port` (DNS discovery
    /// `127.0.0.1`, one listener of `protocol` on `port`, so callers' clusters reach it
    /// directly).
    pub async fn backend_node(&self, name: &str, protocol: &str, port: u16) {
        self.cp
            .create_virtual_node(
                &self.mesh,
                name,
                json!({
                    "listeners": [{"portMapping": {"port": port, "protocol": protocol}}],
                    "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}},
                }),
            )
            .await;
    }

    /// A virtual router with one listener.
    pub async fn router(&self, name: &str, protocol: &str, port: u16) {
        self.cp
            .create_virtual_router(
                &self.mesh,
                name,
                json!({"listeners": [{"portMapping": {"port": port, "protocol": protocol}}]}),
            )
            .await;
    }

    /// A virtual service provided by `router`.
    pub async fn service(&self, name: &str, router: &str) {
        self.cp
            .create_virtual_service(
                &self.mesh,
                name,
                json!({"provider": {"virtualRouter": {"virtualRouterName": router}}}),
            )
            .await;
    }

    /// A route.
    pub async fn route(&self, router: &str, name: &str, spec: Value) {
        self.cp.create_route(&self.mesh, router, name, spec).await;
    }

    /// A client virual node calling `backends`, in explicit mode on a fresh loopback IP.
    pub async fn client(&self, name: &str, backends: &[&str]) -> Ipv4Addr {
        let ip = loopback_ip();
        self.cp
            .create_virtual_node_at(&self.mesh, name, client_spec(backends), ip)
            .await;
        ip
    }

    /// Starts an Envoy for node `name` and waits until it is LIVE.
    pub async fn envoy(&self, name: &str, flavor: XdsFlavor) -> Envoy {
        let e = Envoy::start(&self.node_id(name), self.cp.xds_addr(), flavor);
        e.wait_live().await;
        e
    }
}

/// The spec of a node without listeners calling `backends`.
pub fn client_spec(backends: &[&str]) -> Value {
    let b: Vec<Value> = backends
        .iter()
        .map(|s| json!({"virtualService": {"virtualServiceName": s}}))
        .collect();
    json!({"backends": b})
}

/// An `httpRoute` with `match` and weighted targets.
pub fn http_route(m: Value, targets: &[(&str, u32)]) -> Value {
    json!({"httpRoute": {"match": m, "action": {"weightedTargets": weighted(targets)}}})
}

/// `weightedTargets`.
pub fn weighted(targets: &[(&str, u32)]) -> Value {
    Value::Array(
        targets
            .iter()
            .map(|(n, w)| json!({"virtualNode": n, "weight": w}))
            .collect(),
    )
}

/// Requests to `service` through the Envoy on `ip` (the service's port).
pub fn target(service: &str, ip: Ipv4Addr, port: u16) -> Target {
    Target::new(service, addr(ip, port))
}

/// Retries `check` until it passes, at most `timeout` (for "config has arrived" waits).
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    meshplane_testkit::wait_for(what, timeout, check).await
}
