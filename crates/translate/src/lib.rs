//! `meshplane-translate`: the pure, deterministic compiler from an App Mesh mesh to the Envoy
//! resources of one proxy.
//!
//! ```text
//!  Vec<Resource> ──MeshSnapshot::from_resources──▶ MeshSnapshot ─┐
//!  Endpoints (Cloud Map instances, for EDS) ─────────────────────┼─▶ translate_node ─▶ ProxyConfig
//!  NodeId (Envoy node.id) + TranslateOptions ────────────────────┘    (CDS, EDS, LDS, RDS, SDS
//!                                                                       + diagnostics)
//!  MeshSnapshot + NodeId ──dependencies──▶ Dependencies (what this proxy's config reads)
//! ```
//!
//! # Entry points
//! - [`translate_node`]: everything one virtual node's or virtual gateway's Envoy needs. Never panics and never
//!   fails: what cannot be honoured (a missing backend, a route target that does not exist,
//!   a gateway route whose target port is not served) is left out and explained in [`ProxyConfig::diagnostics`].
//! - [`dependencies`]: the resources (and Cloud Map services) whose change can alter a
//!   proxy's output; the reconciler indexes proxies by them to recompute only what changed.
//!
//! # What the output looks like (App Mesh compatible, see `envoy-compat.md` §2.3)
//! - `lds_ingress_0.0.0.0_15000` (only when the node has listeners): one filter chain per
//!   node listener, matched by destination port; HTTP connection manager with stat prefix
//!   `ingress` (http, http2, grpc) or a TCP proxy (tcp), to the STATIC cluster
//!   `cds_ingress_<mesh>_<node>_<proto>_<port>` → `127.0.0.1:<port>` (or
//!   [`TranslateOptions::app_address`]). In explicit mode
//!   ([`TranslateOptions::listen_address`]) it also binds `<address>:<listener port>`.
//! - `lds_egress_0.0.0.0_15001`: one filter chain per egress destination port; HTTP ports use
//!   RDS (`rds_egress_http_<port>`, one virtual host per backend virtual service) so that
//!   route and weight changes never touch the listener; TCP ports use a TCP proxy. Under
//!   `ALLOW_ALL` a pass-through `ORIGINAL_DST` cluster catches everything else (in explicit
//!   mode a dynamic forward proxy to the request's `Host`, which cannot loop back).
//! - `cds_egress_<mesh>_<targetNode>_<proto>_<port>`: one cluster per reachable target node
//!   listener (DNS → `LOGICAL_DNS`/`STRICT_DNS`, Cloud Map → EDS).
//!
//! See [`names`] for every name, [`route`] for match, priority, retry and timeout semantics.
//!
//! # Hidden App Mesh defaults reproduced
//! - route timeout 15 s when no `perRequest` is declared (routes and ingress listeners);
//! - default retry policy on routes without one: 2 retries on `connect-failure`,
//!   `refused-stream`, `reset` and HTTP 503 (+ gRPC `unavailable`);
//! - circuit breakers effectively open (2147483647) unless a listener connection pool says
//!   otherwise; connect timeouts 0.25 s (ingress) and 1 s (egress); round-robin balancing;
//! - health checks and outlier detection declared on a node's listener are applied by its
//!   *callers* (on their egress clusters);
//! - `DROP_ALL` by default, with the `cds_egress_<mesh>_amazonaws` exception: TLS to
//!   `*.amazonaws.com:443` (by SNI) still reaches its original destination;
//! - DNS `ipPreference` unset on node and mesh: Envoy's `AUTO` (IPv6 first, then IPv4), the
//!   local application on `127.0.0.1`, listeners on `0.0.0.0`;
//! - every HTTP connection manager carries `tracing`; the tracer itself (X-Ray, Datadog,
//!   Zipkin, OpenTelemetry) is declared by the proxy's bootstrap from App Mesh's variables.
//!
//! # Virtual gateways
//! A gateway's Envoy (`node.id` `mesh/<mesh>/virtualGateway/<name>`) gets one listener
//! `lds_ingress_0.0.0.0_<port>` per gateway listener (HCM stat prefix `ingress`, RDS
//! `rds_ingress_<proto>_<port>` holding the gateway routes in App Mesh order with their
//! matches and rewrites) whose routes go to `cds_ingress_<mesh>_<vg>_self_redirect_<proto>_<port>`
//! (the listener's connection pool), i.e. to the gateway's own egress listener
//! `lds_egress_0.0.0.0_<egressPort>` on 127.0.0.1 (hop 2: one virtual host per gateway
//! route, holding exactly what a sidecar's egress holds for its target, so the router's
//! routes, weights, retries and timeouts apply after the rewrites). Hop 1 selects hop 2's
//! virtual host by an authority naming the gateway route, so a retarget changes hop 2 only;
//! hop 2 sets the Host the backend must see (the service name, or the client's Host carried
//! in `x-meshplane-host`, which hop 1 always
//! overwrites). A gateway declares no backends: it reaches what its routes target.
//!
//! # TLS
//! Listener `tls` (nodes and gateways) and client policy `tls` with **file** or **SDS**
//! certificates and trust: `DownstreamTlsContext` on ingress filter chains,
//! `UpstreamTlsContext` on the egress clusters of the policy's ports; SDS secrets are named
//! verbatim and fetched from [`SDS_CLUSTER`], as App Mesh did; see the `tls` module.
//!
//! # Not translated yet (reported, never faked)
//! TLS certificates and trust from ACM (fail closed with
//! [`DiagnosticCode::TlsNotTranslated`]); stats-tag configuration (a bootstrap concern).
//!
//! # Example
//! ```
//! use meshplane_model::{NodeId, ResourceId, ResourceKind, Spec};
//! use meshplane_translate::{Endpoints, MeshSnapshot, TranslateOptions, translate_node};
//!
//! let mut snap = MeshSnapshot::new("demo"); // or MeshSnapshot::from_resources("demo", list)
//! let spec: Spec = serde_json::from_value(serde_json::json!({
//!     "kind": "virtualNode",
//!     "spec": {
//!         "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
//!         "serviceDiscovery": {"dns": {"hostname": "front.demo.local"}},
//!         "backends": [{"virtualService": {"virtualServiceName": "color.demo.local"}}]
//!     }
//! })).unwrap();
//! snap.insert(ResourceId::child(ResourceKind::VirtualNode, "demo", "front"), spec);
//!
//! let node = NodeId::parse("mesh/demo/virtualNode/front").unwrap();
//! let config = translate_node(&snap, &Endpoints::none(), &node, &TranslateOptions::default());
//! assert!(config.listeners.contains_key("lds_ingress_0.0.0.0_15000"));
//! assert!(config.clusters.contains_key("cds_ingress_demo_front_http_8080"));
//! // The backend does not exist (and neither does the mesh resource): said, not hidden.
//! assert!(config.diagnostics.iter().any(|d| d.message.contains("color.demo.local")));
//! for (type_url, name, any) in config.resources() {
//!     // hand `any` to the xDS snapshot cache
//!     # let _ = (type_url, name, any);
//! }
//! ```
//!
//! # Architecture invariants
//! - No I/O, no async, no clocks, no randomness: the same input gives byte-identical
//!   prost encodings (every map in the input and output is a `BTreeMap`; protobuf map
//!   fields are filled with at most one entry or encoded in key order by hand).
//! - Names of listeners, clusters and route configurations are pure functions of the mesh
//!   (never of ordering or counters).
#![forbid(unsafe_code)]

mod access_log;
mod cluster;
mod deps;
mod egress;
pub mod endpoints;
mod listener;
pub mod names;
pub mod output;
mod pb;
pub mod route;
pub mod snapshot;
mod tls;
mod virtual_gateway;
mod virtual_node;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use meshplane_model::common::IpPreference;
use meshplane_model::virtual_node::ServiceDiscovery;
use meshplane_model::{MeshSpec, NodeId, ProxyKind, ResourceId, ResourceKind, VirtualNodeSpec};

pub use deps::{Dependencies, dependencies};
pub use endpoints::{CloudMapService, Endpoints, Instance};
pub use output::{Diagnostic, DiagnosticCode, ProxyConfig, Severity};
pub use snapshot::MeshSnapshot;
pub use tls::SDS_CLUSTER;

/// Knobs that are not part of the mesh: ports of the proxy and App Mesh's hidden defaults.
///
/// `Default` gives App Mesh's values; tests and special deployments may change the ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateOptions {
    /// Port of the ingress listener (App Mesh: 15000, `APPMESH_ENVOY_INGRESS_PORT`).
    pub ingress_port: u32,
    /// Port of the egress listener (App Mesh: 15001, `APPMESH_ENVOY_EGRESS_PORT`).
    pub egress_port: u32,
    /// Route timeout when a route (or listener) declares no `perRequest` timeout, in
    /// milliseconds (App Mesh: 15 s).
    pub default_route_timeout_ms: i64,
    /// Number of retries of the default retry policy applied to HTTP/gRPC routes that
    /// declare none (App Mesh: 2). `None` disables the default policy.
    pub default_max_retries: Option<u32>,
    /// Explicit (non-intercepted) mode for proxies that share a host: bind the ingress and
    /// egress listeners to this address instead of `0.0.0.0`/`::`, and bind the egress
    /// listener on every egress destination port of that address too
    /// (`Listener.additional_addresses`), so an application can call
    /// `http://<address>:<backend port>/` with the virtual service as `Host` and hit the
    /// filter chain of that port without iptables. Listener names do not change. `None`
    /// (the default) is App Mesh's behaviour.
    ///
    /// The ingress listener then also binds `<address>:<listener port>` for each of the
    /// node's listeners (`additional_addresses`): a caller reaches the node at its listener
    /// port without iptables, and the filter chain of that port serves it. The application
    /// must then listen on another address (see [`app_address`](Self::app_address)).
    pub listen_address: Option<std::net::IpAddr>,
    /// Where the ingress clusters `cds_ingress_*` send inbound traffic: the application's
    /// address (its port is the listener's). `None` is App Mesh's `127.0.0.1` (`::1` under
    /// an IPv6 preference). Lets several explicit-mode nodes share one host, each application
    /// on its own loopback address.
    pub app_address: Option<std::net::IpAddr>,
}

/// Virtual node tag (a meshplane extension) that puts the node's proxies in explicit mode:
/// [`TranslateOptions::listen_address`].
pub const LISTEN_ADDRESS_TAG: &str = "meshplane.io/listen-address";
/// Virtual node tag (a meshplane extension) giving the application's address:
/// [`TranslateOptions::app_address`].
pub const APP_ADDRESS_TAG: &str = "meshplane.io/app-address";

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            ingress_port: 15000,
            egress_port: 15001,
            default_route_timeout_ms: 15_000,
            default_max_retries: Some(2),
            listen_address: None,
            app_address: None,
        }
    }
}

impl TranslateOptions {
    /// These options with the meshplane tags of a virtual node applied
    /// ([`LISTEN_ADDRESS_TAG`], [`APP_ADDRESS_TAG`]). A tag whose value is not an IP address
    /// is ignored and reported in the returned list (one message per bad tag).
    pub fn with_node_tags(&self, tags: &[meshplane_model::Tag]) -> (TranslateOptions, Vec<String>) {
        let mut out = self.clone();
        let mut errors = Vec::new();
        for t in tags {
            let slot = match t.key.as_str() {
                LISTEN_ADDRESS_TAG => &mut out.listen_address,
                APP_ADDRESS_TAG => &mut out.app_address,
                _ => continue,
            };
            match t.value.trim().parse::<std::net::IpAddr>() {
                Ok(ip) => *slot = Some(ip),
                Err(_) => errors.push(format!(
                    "tag {} is not an IP address: {:?}; ignored",
                    t.key, t.value
                )),
            }
        }
        (out, errors)
    }
}

/// Translates the configuration of proxy `node` (an Envoy whose `node.id` parsed to it).
///
/// `endpoints` feeds EDS for target nodes with Cloud Map service discovery; pass
/// [`Endpoints::none()`] when there is no registry. Never panics: any resource that cannot be
/// honoured is skipped and reported in [`ProxyConfig::diagnostics`].
///
/// A virtual gateway's Envoy (`ProxyKind::VirtualGateway`) gets its listeners and the
/// two-hop routing described in the `virtual_gateway` module docs (README of the crate:
/// "Virtual gateways").
pub fn translate_node(
    snapshot: &MeshSnapshot,
    endpoints: &Endpoints,
    node: &NodeId,
    options: &TranslateOptions,
) -> ProxyConfig {
    let mut out = ProxyConfig::default();
    let id = node.resource_id();
    if node.mesh != snapshot.mesh_name {
        out.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            code: DiagnosticCode::MeshMismatch,
            resource: Some(id),
            message: format!(
                "proxy {node} belongs to mesh `{}` but the snapshot is of mesh `{}`",
                node.mesh, snapshot.mesh_name
            ),
        });
        return out;
    }
    if snapshot.mesh.is_none() {
        out.diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            code: DiagnosticCode::MeshMissing,
            resource: Some(ResourceId::mesh(snapshot.mesh_name.clone())),
            message: format!(
                "mesh `{}` does not exist; using default mesh settings",
                snapshot.mesh_name
            ),
        });
    }
    match node.kind {
        ProxyKind::VirtualGateway => {
            let Some(gw) = snapshot.virtual_gateways.get(&node.name) else {
                out.diagnostics = vec![Diagnostic {
                    severity: Severity::Error,
                    code: DiagnosticCode::ProxyResourceMissing,
                    resource: Some(id),
                    message: format!(
                        "virtual gateway `{}` does not exist in mesh `{}`",
                        node.name, node.mesh
                    ),
                }];
                return out;
            };
            virtual_gateway::translate(snapshot, endpoints, options, &node.name, gw, out)
        }
        ProxyKind::VirtualNode => {
            let Some(spec) = snapshot.virtual_nodes.get(&node.name) else {
                out.diagnostics = vec![Diagnostic {
                    severity: Severity::Error,
                    code: DiagnosticCode::ProxyResourceMissing,
                    resource: Some(id),
                    message: format!(
                        "virtual node `{}` does not exist in mesh `{}`",
                        node.name, node.mesh
                    ),
                }];
                return out;
            };
            let mut ctx = Ctx::new(
                snapshot,
                endpoints,
                options,
                ProxyKind::VirtualNode,
                &node.name,
                spec,
            );
            virtual_node::ingress(&mut ctx);
            egress::egress(&mut ctx);
            virtual_node::explicit_ingress_addresses(&mut ctx);
            ctx.finish(out)
        }
    }
}

/// Translation state shared by the modules while one proxy is being built.
pub(crate) struct Ctx<'a> {
    pub snap: &'a MeshSnapshot,
    pub endpoints: &'a Endpoints,
    pub opts: &'a TranslateOptions,
    /// Whether the proxy is a virtual node's or a virtual gateway's.
    pub kind: ProxyKind,
    /// The proxy's own virtual node (or gateway).
    pub node_name: &'a str,
    /// The node's spec; for a gateway, a node whose backends are the services its gateway
    /// routes target (so the egress translation serves the gateway's second hop).
    pub node: &'a VirtualNodeSpec,
    pub mesh: MeshSpec,
    /// The node's served listener ports (explicit mode binds them on the ingress listener).
    pub ingress_ports: std::collections::BTreeSet<u32>,
    /// Ports the egress listener binds in explicit mode.
    pub egress_ports: std::collections::BTreeSet<u32>,
    /// While one backend is translated: its name and its effective client policy TLS
    /// (own, else `backendDefaults`), `None` when TLS is not enforced. Read by the egress
    /// cluster builder, which applies it per target port.
    pub backend_tls: (String, Option<meshplane_model::common::ClientPolicyTls>),
    pub out: ProxyConfig,
}

impl<'a> Ctx<'a> {
    fn new(
        snap: &'a MeshSnapshot,
        endpoints: &'a Endpoints,
        opts: &'a TranslateOptions,
        kind: ProxyKind,
        node_name: &'a str,
        node: &'a VirtualNodeSpec,
    ) -> Self {
        Ctx {
            snap,
            endpoints,
            opts,
            kind,
            node_name,
            node,
            mesh: snap.mesh.clone().unwrap_or_default(),
            ingress_ports: Default::default(),
            egress_ports: Default::default(),
            backend_tls: Default::default(),
            out: ProxyConfig::default(),
        }
    }

    fn finish(self, mut out: ProxyConfig) -> ProxyConfig {
        out.clusters.extend(self.out.clusters);
        out.endpoints.extend(self.out.endpoints);
        out.listeners.extend(self.out.listeners);
        out.route_configs.extend(self.out.route_configs);
        out.secrets.extend(self.out.secrets);
        out.diagnostics.extend(self.out.diagnostics);
        out
    }

    pub(crate) fn mesh_name(&self) -> &str {
        &self.snap.mesh_name
    }

    pub(crate) fn node_id(&self) -> ResourceId {
        let kind = match self.kind {
            ProxyKind::VirtualNode => ResourceKind::VirtualNode,
            ProxyKind::VirtualGateway => ResourceKind::VirtualGateway,
        };
        self.snap.id(kind, self.node_name)
    }

    pub(crate) fn diag(
        &mut self,
        severity: Severity,
        code: DiagnosticCode,
        resource: Option<ResourceId>,
        message: String,
    ) {
        let d = Diagnostic {
            severity,
            code,
            resource,
            message,
        };
        if !self.out.diagnostics.contains(&d) {
            self.out.diagnostics.push(d);
        }
    }

    /// The mesh-level IP preference.
    pub(crate) fn mesh_ip_preference(&self) -> Option<&IpPreference> {
        self.mesh
            .service_discovery
            .as_ref()
            .and_then(|d| d.ip_preference.as_ref())
    }

    /// The IP preference of a node: its own service discovery's, else the mesh's.
    pub(crate) fn ip_preference_of(&self, node: &VirtualNodeSpec) -> Option<IpPreference> {
        node_ip_preference(node)
            .or_else(|| self.mesh_ip_preference())
            .cloned()
    }

    pub(crate) fn add_cluster(&mut self, c: Cluster) {
        self.out.clusters.insert(c.name.clone(), c);
    }
}

/// A node's own `ipPreference` (dns or awsCloudMap).
pub(crate) fn node_ip_preference(node: &VirtualNodeSpec) -> Option<&IpPreference> {
    match node.service_discovery.as_ref()? {
        ServiceDiscovery::Dns(d) => d.ip_preference.as_ref(),
        ServiceDiscovery::AwsCloudMap(c) => c.ip_preference.as_ref(),
    }
}
