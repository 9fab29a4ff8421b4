//! The synthetic mesh, reproducible from a seed, and the App Mesh REST calls that create and
//! change it.
//!
//! ```text
//!  node n0042 ──backends (5–10)──▶ service s0007.bench.local ──provider──▶ router r0007
//!  (http 8080, DNS n0042.bench.local)                                        │ route "route"
//!                                              weighted targets (2–3 nodes) ◀─┘
//! ```
//!
//! Every node also lists the mesh-wide service `s0000` among its backends, so a change of
//! `r0000`'s route reaches every proxy (the "mesh-wide change" of the results); any other
//! route reaches only the proxies whose node lists its service (the "scoped change").

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::rng::Rng;

/// Port of every node and router listener.
pub const PORT: u16 = 8080;

/// The generated mesh.
#[derive(Clone, Debug)]
pub struct Mesh {
    pub name: String,
    pub nodes: Vec<NodeDef>,
    /// Routers and services share the index: router `r_i` provides service `s_i`.
    pub routes: Vec<RouteDef>,
}

/// One virtual node.
#[derive(Clone, Debug)]
pub struct NodeDef {
    pub name: String,
    /// Indexes of backend services.
    pub backends: Vec<usize>,
    /// Extra tags (`meshplane.io/listen-address` for real Envoys).
    pub listen_address: Option<String>,
}

/// The one route of router `r_i`.
#[derive(Clone, Debug)]
pub struct RouteDef {
    /// `(node index, weight)`.
    pub targets: Vec<(usize, u32)>,
}

/// A bounded-concurrency App Mesh REST client.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

// === impl Mesh ===

impl Mesh {
    /// `v` nodes, services, routers and routes from `seed`.
    pub fn generate(v: usize, seed: u64) -> Mesh {
        let mut rng = Rng::new(seed);
        let v = v.max(3);
        let mut nodes = Vec::with_capacity(v);
        for i in 0..v {
            let k = rng.range(5, 10).min(v as u64) as usize;
            let mut backends = vec![0];
            for b in rng.sample(v, k + 1) {
                if backends.len() < k && !backends.contains(&b) {
                    backends.push(b);
                }
            }
            backends.sort();
            nodes.push(NodeDef {
                name: node_name(i),
                backends,
                listen_address: None,
            });
        }
        let routes = (0..v)
            .map(|_| {
                let k = rng.range(2, 3) as usize;
                RouteDef {
                    targets: rng
                        .sample(v, k)
                        .into_iter()
                        .map(|n| (n, rng.range(1, 100 / k as u64) as u32))
                        .collect(),
                }
            })
            .collect();
        Mesh {
            name: "bench".into(),
            nodes,
            routes,
        }
    }

    /// Adds a node (for a real Envoy) with `backends` and a listen address.
    pub fn add_node(&mut self, name: String, backends: Vec<usize>, ip: Option<String>) -> usize {
        self.nodes.push(NodeDef {
            name,
            backends,
            listen_address: ip,
        });
        self.nodes.len() - 1
    }

    /// `mesh/<mesh>/virtualNode/<name>`.
    pub fn node_id(&self, i: usize) -> String {
        format!("mesh/{}/virtualNode/{}", self.name, self.nodes[i].name)
    }

    /// Virtual service name of index `i` (also the RDS virtual host name).
    pub fn service(&self, i: usize) -> String {
        format!("s{i:04}.{}.local", self.name)
    }

    /// The Envoy cluster a target node is reached through.
    pub fn cluster(&self, node: usize) -> String {
        format!(
            "cds_egress_{}_{}_http_{PORT}",
            self.name, self.nodes[node].name
        )
    }

    /// The RDS weights route `i` must produce, sorted like the proxies record them.
    pub fn expected_weights(&self, i: usize) -> Vec<(String, u32)> {
        let mut w: Vec<(String, u32)> = self.routes[i]
            .targets
            .iter()
            .map(|(n, w)| (self.cluster(*n), *w))
            .collect();
        w.sort();
        w
    }

    /// Total resources the API holds for this mesh.
    pub fn resource_count(&self) -> usize {
        1 + self.nodes.len() + 3 * self.routes.len()
    }

    /// Creates everything through the API, `concurrency` requests at a time.
    pub async fn create(&self, api: &Api, concurrency: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        api.call(
            "PUT",
            "/v20190125/meshes",
            json!({"meshName": self.name, "spec": {"egressFilter": {"type": "DROP_ALL"}}}),
        )
        .await?;
        let m = &self.name;
        let nodes: Vec<(String, Value)> = (0..self.nodes.len())
            .map(|i| self.node_request(i))
            .collect();
        api.all(nodes, concurrency).await.context("virtual nodes")?;
        eprintln!(
            "mesh: virtual nodes created ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        let routers: Vec<(String, Value)> = (0..self.routes.len())
            .map(|i| {
                (
                    format!("/v20190125/meshes/{m}/virtualRouters"),
                    json!({"virtualRouterName": router_name(i), "spec": {"listeners": [{"portMapping": {"port": PORT, "protocol": "http"}}]}}),
                )
            })
            .collect();
        api.all(routers, concurrency)
            .await
            .context("virtual routers")?;
        eprintln!(
            "mesh: virtual routers created ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        let services: Vec<(String, Value)> = (0..self.routes.len())
            .map(|i| {
                (
                    format!("/v20190125/meshes/{m}/virtualServices"),
                    json!({"virtualServiceName": self.service(i), "spec": {"provider": {"virtualRouter": {"virtualRouterName": router_name(i)}}}}),
                )
            })
            .collect();
        api.all(services, concurrency)
            .await
            .context("virtual services")?;
        eprintln!(
            "mesh: virtual services created ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        let routes: Vec<(String, Value)> = (0..self.routes.len())
            .map(|i| {
                (
                    format!(
                        "/v20190125/meshes/{m}/virtualRouter/{}/routes",
                        router_name(i)
                    ),
                    json!({"routeName": "route", "spec": self.route_spec(i)}),
                )
            })
            .collect();
        api.all(routes, concurrency).await.context("routes")?;
        eprintln!(
            "mesh: routes created ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        Ok(started.elapsed())
    }

    /// The CreateVirtualNode request of node `i` (path, body).
    pub fn node_request(&self, i: usize) -> (String, Value) {
        let n = &self.nodes[i];
        let backends: Vec<Value> = n
            .backends
            .iter()
            .map(|b| json!({"virtualService": {"virtualServiceName": self.service(*b)}}))
            .collect();
        let mut body = json!({
            "virtualNodeName": n.name,
            "spec": {
                "listeners": [{"portMapping": {"port": PORT, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": format!("{}.{}.local", n.name, self.name)}},
                "backends": backends,
            }
        });
        if let Some(ip) = &n.listen_address {
            body["tags"] = json!([{"key": "meshplane.io/listen-address", "value": ip}]);
        }
        (
            format!("/v20190125/meshes/{}/virtualNodes", self.name),
            body,
        )
    }

    /// The spec of route `i` as App Mesh JSON.
    pub fn route_spec(&self, i: usize) -> Value {
        let targets: Vec<Value> = self.routes[i]
            .targets
            .iter()
            .map(|(n, w)| json!({"virtualNode": self.nodes[*n].name, "weight": w}))
            .collect();
        json!({"httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": targets}}})
    }

    /// New weights for route `i`, different from every earlier state of that route (so an
    /// ACK of the new weights can only come from this change).
    pub fn reweigh(&mut self, i: usize, rng: &mut Rng, seen: &mut BTreeMap<usize, Vec<Vec<u32>>>) {
        let history = seen.entry(i).or_default();
        let current: Vec<u32> = self.routes[i].targets.iter().map(|t| t.1).collect();
        if history.is_empty() {
            history.push(current);
        }
        // App Mesh caps the total weight of a route at 100.
        let n = self.routes[i].targets.len();
        loop {
            let next: Vec<u32> = self.routes[i]
                .targets
                .iter()
                .map(|_| rng.range(1, 100 / n as u64) as u32)
                .collect();
            if !history.contains(&next) {
                for (t, w) in self.routes[i].targets.iter_mut().zip(&next) {
                    t.1 = *w;
                }
                history.push(next);
                return;
            }
        }
    }

    /// UpdateRoute of route `i` with its current weights.
    pub async fn write_route(&self, api: &Api, i: usize) -> anyhow::Result<()> {
        api.call(
            "PUT",
            &format!(
                "/v20190125/meshes/{}/virtualRouter/{}/routes/route",
                self.name,
                router_name(i)
            ),
            json!({"spec": self.route_spec(i)}),
        )
        .await
        .map(|_| ())
    }

    /// Reads route `i`'s weights back from the API (the store's truth), sorted by cluster.
    pub async fn read_weights(&self, api: &Api, i: usize) -> anyhow::Result<Vec<(String, u32)>> {
        let v = api
            .get(&format!(
                "/v20190125/meshes/{}/virtualRouter/{}/routes/route",
                self.name,
                router_name(i)
            ))
            .await?;
        let targets = v["spec"]["httpRoute"]["action"]["weightedTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut w: Vec<(String, u32)> = targets
            .iter()
            .map(|t| {
                let node = t["virtualNode"].as_str().unwrap_or_default();
                (
                    format!("cds_egress_{}_{node}_http_{PORT}", self.name),
                    t["weight"].as_u64().unwrap_or(0) as u32,
                )
            })
            .collect();
        w.sort();
        Ok(w)
    }
}

/// `n0042`.
pub fn node_name(i: usize) -> String {
    format!("n{i:04}")
}

/// `r0042`.
pub fn router_name(i: usize) -> String {
    format!("r{i:04}")
}

// === impl Api ===

impl Api {
    /// A client for `base` (`http://host:port`).
    pub fn new(base: &str) -> anyhow::Result<Api> {
        Ok(Api {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(64)
                .build()?,
        })
    }

    /// One request; fails on a non-2xx answer.
    ///
    /// Writes to one mesh are serialised by the store's optimistic concurrency: a write that
    /// lost the race answers 409 "modified concurrently" and is retried (as SDKs do).
    pub async fn call(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let m: reqwest::Method = method.parse()?;
        let mut attempt = 0u32;
        loop {
            let resp = self
                .http
                .request(m.clone(), format!("{}{path}", self.base))
                .json(&body)
                .send()
                .await
                .with_context(|| format!("{method} {path}"))?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if status == reqwest::StatusCode::CONFLICT
                && text.contains("concurrently")
                && attempt < 100
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(20)))).await;
                continue;
            }
            if !status.is_success() {
                bail!("{method} {path}: {status}: {text}");
            }
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
    }

    /// GET returning JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("GET {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GET returning text.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await?
            .text()
            .await?)
    }

    /// PUTs every `(path, body)`, `concurrency` at a time; the first error wins.
    pub async fn all(&self, reqs: Vec<(String, Value)>, concurrency: usize) -> anyhow::Result<()> {
        let mut results = futures::stream::iter(reqs.into_iter().map(|(p, b)| {
            let api = self.clone();
            async move { api.call("PUT", &p, b).await }
        }))
        .buffer_unordered(concurrency.max(1));
        while let Some(r) = results.next().await {
            r?;
        }
        Ok(())
    }
}
