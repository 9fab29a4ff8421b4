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
//!
//! The gateway scenario adds virtual gateways `g0000…` (one http listener on 8088), each with
//! gateway routes `gr0000…` matching prefix `/<service>/` and targeting distinct services;
//! a gateway's hop-2 route configuration holds one virtual host per gateway route (named by
//! [`gateway_route_host`]) with its target's routes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};

use meshplane_auth::sign::{Credentials, SigningParams, sign};

use crate::rng::Rng;

/// Port of every node and router listener.
pub const PORT: u16 = 8080;

/// Port of every virtual gateway's (one, http) listener.
pub const GATEWAY_PORT: u16 = 8088;

/// The generated mesh.
#[derive(Clone, Debug)]
pub struct Mesh {
    pub name: String,
    pub nodes: Vec<NodeDef>,
    /// Routers and services share the index: router `r_i` provides service `s_i`.
    pub routes: Vec<RouteDef>,
    /// `Some(namespace)`: nodes are discovered through Cloud Map (service = node name in this
    /// HTTP namespace) and get EDS clusters; `None`: DNS.
    pub cloud_map: Option<String>,
    /// Virtual gateways (gateway scenario; empty otherwise).
    pub gateways: Vec<GatewayDef>,
}

/// One virtual gateway.
#[derive(Clone, Debug)]
pub struct GatewayDef {
    pub name: String,
    /// The target service index of each gateway route `gr<k>` (distinct within a gateway).
    pub routes: Vec<usize>,
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
    /// 409 "modified concurrently" answers seen (and retried) by [`Api::call`].
    pub conflicts: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// `Some`: every request is SigV4-signed (a server with `--auth sigv4`).
    signer: Option<std::sync::Arc<Signer>>,
}

/// SigV4 credentials and the region requests are scoped to.
pub struct Signer {
    credentials: Credentials,
    region: String,
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
            cloud_map: None,
            gateways: Vec::new(),
        }
    }

    /// Adds `g` gateways of `r` gateway routes each; gateway `i`'s routes target the
    /// consecutive services from `i * r` (mod V), so they are distinct within a gateway and
    /// at least one service is left to retarget a route to.
    pub fn add_gateways(&mut self, g: usize, r: usize) -> anyhow::Result<()> {
        let v = self.routes.len();
        if r == 0 || r >= v {
            bail!(
                "--gateway-routes must be between 1 and {} (virtual nodes − 1)",
                v - 1
            );
        }
        self.gateways = (0..g)
            .map(|i| GatewayDef {
                name: gateway_name(i),
                routes: (0..r).map(|k| (i * r + k) % v).collect(),
            })
            .collect();
        Ok(())
    }

    /// `mesh/<mesh>/virtualGateway/<name>`.
    pub fn gateway_id(&self, g: usize) -> String {
        format!(
            "mesh/{}/virtualGateway/{}",
            self.name, self.gateways[g].name
        )
    }

    /// The hop-2 virtual host (and domain) of gateway route `k` in a gateway's route
    /// configuration.
    pub fn gateway_host(&self, k: usize) -> String {
        gateway_route_host(&gateway_route_name(k))
    }

    /// Points gateway route `k` of gateway `g` at a random service none of `g`'s routes
    /// targets (so its hop-2 virtual host can only come from this change); returns it.
    pub fn retarget(&mut self, g: usize, k: usize, rng: &mut Rng) -> usize {
        let v = self.routes.len() as u64;
        loop {
            let s = rng.range(0, v - 1) as usize;
            // Another service with other weights, so the hop-2 virtual host's content can
            // only come from this change.
            let current = self.gateways[g].routes[k];
            if !self.gateways[g].routes.contains(&s)
                && self.expected_weights(s) != self.expected_weights(current)
            {
                self.gateways[g].routes[k] = s;
                return s;
            }
        }
    }

    /// The spec of gateway route `k` of gateway `g` as App Mesh JSON.
    pub fn gateway_route_spec(&self, g: usize, k: usize) -> Value {
        let s = self.gateways[g].routes[k];
        json!({"httpRoute": {
            "match": {"prefix": format!("/{}/", service_short(s))},
            "action": {"target": {"virtualService": {"virtualServiceName": self.service(s)}}},
        }})
    }

    /// UpdateGatewayRoute of route `k` of gateway `g` with its current target.
    pub async fn write_gateway_route(&self, api: &Api, g: usize, k: usize) -> anyhow::Result<()> {
        api.call(
            "PUT",
            &format!(
                "/v20190125/meshes/{}/virtualGateway/{}/gatewayRoutes/{}",
                self.name,
                self.gateways[g].name,
                gateway_route_name(k)
            ),
            json!({"spec": self.gateway_route_spec(g, k)}),
        )
        .await
        .map(|_| ())
    }

    /// Indexes of the nodes node `i`'s proxies reach through egress clusters: the targets of
    /// the routes of its backends. With Cloud Map discovery these are its EDS clusters.
    pub fn egress_targets(&self, i: usize) -> std::collections::BTreeSet<usize> {
        self.nodes[i]
            .backends
            .iter()
            .flat_map(|b| self.routes[*b].targets.iter().map(|t| t.0))
            .collect()
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
        1 + self.nodes.len()
            + 3 * self.routes.len()
            + self
                .gateways
                .iter()
                .map(|g| 1 + g.routes.len())
                .sum::<usize>()
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
        if !self.gateways.is_empty() {
            let gateways: Vec<(String, Value)> = self
                .gateways
                .iter()
                .map(|g| {
                    (
                        format!("/v20190125/meshes/{m}/virtualGateways"),
                        json!({"virtualGatewayName": g.name, "spec": {"listeners": [{"portMapping": {"port": GATEWAY_PORT, "protocol": "http"}}]}}),
                    )
                })
                .collect();
            api.all(gateways, concurrency)
                .await
                .context("virtual gateways")?;
            let routes: Vec<(String, Value)> = self
                .gateways
                .iter()
                .enumerate()
                .flat_map(|(g, gw)| {
                    (0..gw.routes.len()).map(move |k| {
                        (
                            format!("/v20190125/meshes/{m}/virtualGateway/{}/gatewayRoutes", gw.name),
                            json!({"gatewayRouteName": gateway_route_name(k), "spec": self.gateway_route_spec(g, k)}),
                        )
                    })
                })
                .collect();
            api.all(routes, concurrency)
                .await
                .context("gateway routes")?;
            eprintln!(
                "mesh: virtual gateways and gateway routes created ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
        }
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
        let discovery = match &self.cloud_map {
            Some(ns) => json!({"awsCloudMap": {"namespaceName": ns, "serviceName": n.name}}),
            None => json!({"dns": {"hostname": format!("{}.{}.local", n.name, self.name)}}),
        };
        let mut body = json!({
            "virtualNodeName": n.name,
            "spec": {
                "listeners": [{"portMapping": {"port": PORT, "protocol": "http"}}],
                "serviceDiscovery": discovery,
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

/// `g0042`.
/// The authority under which a gateway's hop 2 serves gateway route `name`
/// (`crates/translate/src/virtual_gateway.rs`, `hop2_authority`: FNV-1a of the name).
pub fn gateway_route_host(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("gr-{h:016x}.gateway.meshplane")
}

pub fn gateway_name(i: usize) -> String {
    format!("g{i:04}")
}

/// `gr0042`.
pub fn gateway_route_name(k: usize) -> String {
    format!("gr{k:04}")
}

/// `s0042`: service `i`'s name without the mesh domain (its gateway route prefix).
pub fn service_short(i: usize) -> String {
    format!("s{i:04}")
}

/// `r0042`.
pub fn router_name(i: usize) -> String {
    format!("r{i:04}")
}

// === impl Registry ===

/// One registered Cloud Map instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceDef {
    /// `InstanceId`.
    pub id: String,
    /// `AWS_INSTANCE_IPV4:AWS_INSTANCE_PORT`, as the proxies record EDS endpoints.
    pub addr: String,
}

/// The bench's Cloud Map registry: one HTTP namespace, one service per virtual node, and the
/// instances it registered (its model; the registry itself is the truth).
#[derive(Clone, Debug)]
pub struct Registry {
    /// Namespace name.
    pub namespace: String,
    /// Namespace id (`ns-...`).
    pub namespace_id: String,
    /// Service id per node index.
    pub service_ids: Vec<String>,
    /// Registered instances per node index.
    pub instances: Vec<Vec<InstanceDef>>,
    /// Instances ever created (ids and addresses are never reused).
    next: u32,
}

impl Registry {
    /// Creates the namespace and one service per node of `mesh`, and registers `per_node`
    /// instances in each (`concurrency` requests at a time).
    pub async fn create(
        api: &Api,
        mesh: &Mesh,
        namespace: &str,
        per_node: usize,
        concurrency: usize,
    ) -> anyhow::Result<Registry> {
        let op = api
            .cloud_map("CreateHttpNamespace", json!({"Name": namespace}))
            .await?;
        let op_id = op["OperationId"]
            .as_str()
            .context("CreateHttpNamespace: no OperationId")?;
        let got = api
            .cloud_map("GetOperation", json!({"OperationId": op_id}))
            .await?;
        let namespace_id = got["Operation"]["Targets"]["NAMESPACE"]
            .as_str()
            .context("GetOperation: no Targets.NAMESPACE")?
            .to_owned();
        let service_ids: Vec<String> = futures::stream::iter(mesh.nodes.iter().map(|n| {
            let body = json!({"Name": n.name, "NamespaceId": namespace_id});
            async move {
                let v = api.cloud_map("CreateService", body).await?;
                v["Service"]["Id"]
                    .as_str()
                    .map(str::to_owned)
                    .context("CreateService: no Service.Id")
            }
        }))
        .buffered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
        let mut reg = Registry {
            namespace: namespace.to_owned(),
            namespace_id,
            instances: vec![Vec::new(); service_ids.len()],
            service_ids,
            next: 0,
        };
        let mut initial = Vec::new();
        for s in 0..reg.service_ids.len() {
            for _ in 0..per_node {
                initial.push((s, reg.new_instance()));
            }
        }
        let reqs = initial
            .iter()
            .map(|(s, inst)| reg.register_request(*s, inst));
        let mut results = futures::stream::iter(
            reqs.map(|body| async move { api.cloud_map("RegisterInstance", body).await }),
        )
        .buffer_unordered(concurrency.max(1));
        while let Some(r) = results.next().await {
            r.context("initial RegisterInstance")?;
        }
        drop(results);
        for (s, inst) in initial {
            reg.instances[s].push(inst);
        }
        Ok(reg)
    }

    /// A fresh instance: id `i<n>`, address `10.a.b.c:8080` from the counter `n`.
    pub fn new_instance(&mut self) -> InstanceDef {
        let n = self.next;
        self.next += 1;
        let [_, a, b, c] = n.to_be_bytes();
        InstanceDef {
            id: format!("i{n}"),
            addr: format!("10.{a}.{b}.{c}:{PORT}"),
        }
    }

    /// The RegisterInstance body of `inst` in service `s`.
    pub fn register_request(&self, s: usize, inst: &InstanceDef) -> Value {
        let ip = inst.addr.split(':').next().unwrap_or_default();
        json!({
            "ServiceId": self.service_ids[s],
            "InstanceId": inst.id,
            "Attributes": {"AWS_INSTANCE_IPV4": ip, "AWS_INSTANCE_PORT": PORT.to_string()},
        })
    }

    /// The DeregisterInstance body of `inst` in service `s`.
    pub fn deregister_request(&self, s: usize, inst: &InstanceDef) -> Value {
        json!({"ServiceId": self.service_ids[s], "InstanceId": inst.id})
    }

    /// The registry's instances of service `service` (DiscoverInstances, HealthStatus ALL)
    /// as sorted `ip:port` strings.
    pub async fn read_endpoints(&self, api: &Api, service: &str) -> anyhow::Result<Vec<String>> {
        let v = api
            .cloud_map(
                "DiscoverInstances",
                json!({"NamespaceName": self.namespace, "ServiceName": service,
                       "HealthStatus": "ALL", "MaxResults": 1000}),
            )
            .await?;
        let mut out: Vec<String> = v["Instances"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                let a = &i["Attributes"];
                format!(
                    "{}:{}",
                    a["AWS_INSTANCE_IPV4"].as_str().unwrap_or_default(),
                    a["AWS_INSTANCE_PORT"].as_str().unwrap_or_default()
                )
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

// === impl Api ===

impl Api {
    /// A client for `base` (`http://host:port`), unsigned.
    pub fn new(base: &str) -> anyhow::Result<Api> {
        Api::secured(base, None, None)
    }

    /// A client for `base` (`http://` or `https://host:port`) that signs every request with
    /// `signer` when given and trusts only `ca_pem` when given (meshplane's own CA).
    pub fn secured(
        base: &str,
        signer: Option<Signer>,
        ca_pem: Option<&std::path::Path>,
    ) -> anyhow::Result<Api> {
        // With rustls in reqwest (for `https://`), every client needs the provider.
        install_ring_provider();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64);
        if let Some(path) = ca_pem {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            builder = builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem)?);
        }
        Ok(Api {
            base: base.trim_end_matches('/').to_owned(),
            http: builder.build()?,
            conflicts: Default::default(),
            signer: signer.map(std::sync::Arc::new),
        })
    }

    /// Builds, signs (when the client signs) and sends one request. `service` is the
    /// signing service: `appmesh` for App Mesh and `/meshplane/v1/*`, `servicediscovery`
    /// for Cloud Map.
    async fn send(
        &self,
        builder: reqwest::RequestBuilder,
        service: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = builder.build()?;
        if let Some(signer) = &self.signer {
            signer.sign(&mut request, service)?;
        }
        Ok(self.http.execute(request).await?)
    }

    /// One request; fails on a non-2xx answer.
    ///
    /// A server that lets a lost optimistic-concurrency race reach the client answers 409
    /// "modified concurrently": it is retried here (and counted in `conflicts`), since older
    /// servers did so for any two writes in one mesh.
    pub async fn call(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let m: reqwest::Method = method.parse()?;
        let mut attempt = 0u32;
        loop {
            let resp = self
                .send(
                    self.http
                        .request(m.clone(), format!("{}{path}", self.base))
                        .json(&body),
                    "appmesh",
                )
                .await
                .with_context(|| format!("{method} {path}"))?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if status == reqwest::StatusCode::CONFLICT
                && text.contains("concurrently")
                && attempt < 100
            {
                attempt += 1;
                self.conflicts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(20)))).await;
                continue;
            }
            if !status.is_success() {
                bail!("{method} {path}: {status}: {text}");
            }
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
    }

    /// One Cloud Map (`servicediscovery`, AWS JSON 1.1) operation on the API port; retries
    /// the registry's 503 "modified concurrently" answers.
    pub async fn cloud_map(&self, op: &str, body: Value) -> anyhow::Result<Value> {
        let mut attempt = 0u32;
        loop {
            let resp = self
                .send(
                    self.http
                        .post(format!("{}/", self.base))
                        .header("X-Amz-Target", format!("Route53AutoNaming_v20170314.{op}"))
                        .header("Content-Type", "application/x-amz-json-1.1")
                        .body(body.to_string()),
                    "servicediscovery",
                )
                .await
                .with_context(|| format!("Cloud Map {op}"))?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && attempt < 100 {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(20)))).await;
                continue;
            }
            if !status.is_success() {
                bail!("Cloud Map {op}: {status}: {text}");
            }
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
    }

    /// GET returning JSON.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .send(self.http.get(format!("{}{path}", self.base)), "appmesh")
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("GET {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GET returning the status and the `x-amzn-ErrorType` header (the AWS exception name),
    /// whatever the status.
    pub async fn probe(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let resp = self
            .send(self.http.get(format!("{}{path}", self.base)), "appmesh")
            .await
            .with_context(|| format!("GET {path}"))?;
        let name = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok((resp.status().as_u16(), name))
    }

    /// GET returning text.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        Ok(self
            .send(self.http.get(format!("{}{path}", self.base)), "appmesh")
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

// === impl Signer ===

impl Signer {
    /// Any key: a server with `--auth none` ignores the signature (the control variant that
    /// measures the client's signing alone).
    pub fn new(access_key_id: &str, secret_access_key: &str, region: &str) -> Signer {
        Signer {
            credentials: Credentials {
                access_key_id: access_key_id.to_owned(),
                secret_access_key: secret_access_key.to_owned(),
                session_token: None,
            },
            region: region.to_owned(),
        }
    }

    /// The profile's key from an AWS shared-credentials file (what `serve` writes to
    /// `<data-dir>/credentials` on its first start with auth on).
    pub fn from_credentials_file(
        path: &std::path::Path,
        profile: &str,
        region: &str,
    ) -> anyhow::Result<Signer> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let (mut id, mut secret, mut in_profile) = (None, None, false);
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                in_profile = name.trim() == profile;
            } else if in_profile && let Some((k, v)) = line.split_once('=') {
                match k.trim() {
                    "aws_access_key_id" => id = Some(v.trim().to_owned()),
                    "aws_secret_access_key" => secret = Some(v.trim().to_owned()),
                    _ => {}
                }
            }
        }
        let (Some(access_key_id), Some(secret_access_key)) = (id, secret) else {
            bail!("{} has no key for profile {profile}", path.display());
        };
        Ok(Signer {
            credentials: Credentials {
                access_key_id,
                secret_access_key,
                session_token: None,
            },
            region: region.to_owned(),
        })
    }

    /// Adds the SigV4 headers, signing the URL exactly as reqwest sends it.
    fn sign(&self, request: &mut reqwest::Request, service: &str) -> anyhow::Result<()> {
        let uri: http::Uri = request.url().as_str().parse()?;
        let body = request.body().and_then(|b| b.as_bytes()).unwrap_or(b"");
        let params = SigningParams {
            region: &self.region,
            service,
            now: std::time::SystemTime::now(),
        };
        let added = sign(
            request.method().as_str(),
            &uri,
            request.headers(),
            body,
            &self.credentials,
            &params,
        )?;
        request.headers_mut().extend(added);
        Ok(())
    }
}

/// reqwest is built with rustls but without a crypto provider (the workspace never builds
/// aws-lc-rs), and panics building a client without one: ring's is installed for the process; a second install fails harmlessly. rustls
/// deprecates ring's provider only for lacking post-quantum key exchange, which meshplane's
/// server does not offer either.
#[allow(deprecated)]
fn install_ring_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
