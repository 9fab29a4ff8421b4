//! The proxy's outbound side: the egress listener `lds_egress_0.0.0.0_15001`, one RDS route
//! configuration per egress HTTP port, and the clusters of every reachable target.
//!
//! For each declared backend virtual service:
//! - provided by a **virtual router**: each router listener `(protocol, port)` makes the
//!   service reachable on `port`. HTTP-family listeners get a virtual host in
//!   `rds_egress_http_<port>` (domains: the service name and `name:port`) whose routes are the
//!   router's routes of the matching kind (`httpRoute` ↔ http, `http2Route` ↔ http2,
//!   `grpcRoute` ↔ grpc) whose `match.port` is unset or equal to the listener port, in the
//!   order documented in [`crate::route`]. A tcp listener gets a filter chain on `port` with a
//!   TCP proxy to the first applicable `tcpRoute`'s targets.
//! - provided by a **virtual node**: each node listener is reachable on its port and routes
//!   everything to that listener's cluster (with the listener's timeouts, default retries).
//!
//! Target node listener selection for a weighted target: the target's `port` if set, else the
//! node's only listener, else the listener on the router listener's port.
//!
//! Egress filter: under `DROP_ALL` only the ports and hosts above are reachable (other hosts
//! on a known HTTP port get Envoy's 404; other ports have no filter chain and are closed).
//! Under `ALLOW_ALL` every HTTP route configuration gets a last `*` virtual host and the
//! listener a default filter chain, both to the `ORIGINAL_DST` pass-through cluster.
//!
//! Under `DROP_ALL` a last filter chain keeps AWS APIs reachable, as App Mesh does: TLS
//! connections to port 443 whose SNI matches `*.amazonaws.com` (read by `tls_inspector`, which
//! runs for port 443 only) are forwarded by a TCP proxy to `cds_egress_<mesh>_amazonaws`, an
//! `ORIGINAL_DST` cluster (the address the application resolved; TLS stays end to end). Other
//! SNIs on 443 match no chain and are closed. So the egress listener exists even for a node
//! without backends.
//!
//! Explicit mode ([`crate::TranslateOptions::listen_address`]): the listener binds that
//! address, and also each egress destination port on it (`additional_addresses`), so an
//! application without iptables reaches a port's filter chain by calling that port. Under
//! `ALLOW_ALL` the pass-through there is a dynamic forward proxy to the request's `Host`
//! (same cluster name), and the egress port itself is an HTTP forward proxy: without
//! iptables a connection's destination is the Envoy, so `ORIGINAL_DST` would loop.
//!
//! Client policy TLS (a backend's own `clientPolicy`, else `backendDefaults`): when it is
//! enforced (`enforce` defaults to true), the backend's egress clusters on the policy's
//! `ports` (all when absent) carry an `UpstreamTlsContext` (see [`crate::tls`]). A policy
//! using ACM trust is not translated: the backend is withheld (fail closed)
//! with a diagnostic, never reached in plaintext. Two backends reaching the same target
//! listener under different TLS get separate clusters, the later one (in byte order of the
//! service names) named `<cluster>_for_<service>`.
//!
//! Conflicts: one destination port serves either HTTP (many hosts) or one TCP backend, since
//! TCP cannot tell services apart. HTTP wins over TCP, and among TCP backends the first
//! service name in byte order wins; the others get [`DiagnosticCode::EgressPortConflict`].

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{
    AdditionalAddress, FilterChain, FilterChainMatch, Listener,
};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteConfiguration, RouteMatch, VirtualHost, route_match,
};
use meshplane_model::common::{
    ClientPolicy, ClientPolicyTls, PortMapping, PortProtocol, WeightedTarget,
};
use meshplane_model::mesh::EgressFilterType;
use meshplane_model::route::RouteSpec;
use meshplane_model::virtual_node::Listener as NodeListener;
use meshplane_model::virtual_service::VirtualServiceProvider;
use meshplane_model::{ResourceId, ResourceKind};

use crate::listener::{
    Routes, forward_proxy_filter, hcm_with, original_dst, tcp_proxy, tls_inspector_on,
};
use crate::route::{self, OrderKey};
use crate::virtual_node::{listen_address, listener_http_timeout, listener_tcp_idle_ms};
use crate::{Ctx, DiagnosticCode, Severity, access_log, cluster, names, pb};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;

/// Stat prefix of the egress HTTP connection managers and TCP proxies.
pub(crate) const EGRESS_STAT_PREFIX: &str = "egress";
/// The port and SNI pattern App Mesh keeps reachable under `DROP_ALL` (AWS APIs).
const AMAZONAWS_PORT: u32 = 443;
const AMAZONAWS_SNI: &str = "*.amazonaws.com";

/// A TCP backend on one port.
struct TcpBackend {
    service: String,
    clusters: Vec<(String, u32)>,
    idle_ms: Option<i64>,
}

/// What the egress side collects before building resources.
#[derive(Default)]
pub(crate) struct Egress {
    /// HTTP port → virtual hosts by service name.
    pub(crate) http: BTreeMap<u32, BTreeMap<String, VirtualHost>>,
    /// TCP port → backends by service name (only the first is served).
    tcp: BTreeMap<u32, BTreeMap<String, TcpBackend>>,
}

/// Adds the egress listener, route configurations and clusters.
pub(crate) fn egress(ctx: &mut Ctx<'_>) {
    let eg = collect(ctx);
    build(ctx, eg);
}

/// Collects the virtual hosts, TCP backends and clusters of every backend of `ctx.node`
/// (the gateway's hop 2 reuses this with the services its gateway routes target).
pub(crate) fn collect(ctx: &mut Ctx<'_>) -> Egress {
    let mut eg = Egress::default();
    let mut services: Vec<&str> = ctx.node.backend_service_names().collect();
    services.sort_unstable();
    services.dedup();
    for vs in services {
        let tls = effective_client_tls(ctx, vs).filter(|t| t.enforce.unwrap_or(true));
        if let Some(t) = &tls
            && let Err(why) = crate::tls::check_client(t)
        {
            // Fail closed: never send plaintext where the mesh demands TLS.
            ctx.diag(
                Severity::Error,
                DiagnosticCode::TlsNotTranslated,
                Some(ctx.node_id()),
                format!(
                    "backend `{vs}`: client policy TLS: {why}; the backend is withheld rather than reached in plaintext"
                ),
            );
            continue;
        }
        ctx.backend_tls = (vs.to_owned(), tls);
        backend(ctx, &mut eg, vs);
        ctx.backend_tls = Default::default();
    }
    eg
}

/// The effective client policy TLS for backend `vs`: its own `clientPolicy`, else the
/// node's `backendDefaults` (App Mesh: a backend's policy replaces the defaults entirely).
fn effective_client_tls(ctx: &Ctx<'_>, vs: &str) -> Option<ClientPolicyTls> {
    let node = ctx.node;
    let own = node.backends().iter().find_map(|b| {
        let meshplane_model::virtual_node::Backend::VirtualService(b) = b;
        (b.virtual_service_name == vs)
            .then_some(b.client_policy.as_ref())
            .flatten()
    });
    let defaults = node
        .backend_defaults
        .as_ref()
        .and_then(|d| d.client_policy.as_ref());
    let policy: Option<&ClientPolicy> = own.or(defaults);
    policy.and_then(|p| p.tls.clone())
}

fn domains(vs: &str, port: u32) -> Vec<String> {
    vec![vs.to_owned(), format!("{vs}:{port}")]
}

fn catch_all() -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
        ..Default::default()
    }
}

fn backend(ctx: &mut Ctx<'_>, eg: &mut Egress, vs: &str) {
    let snap = ctx.snap;
    let vs_id = snap.id(ResourceKind::VirtualService, vs);
    if vs.is_empty() || vs.contains('*') || vs.chars().any(char::is_control) {
        ctx.diag(
            Severity::Warning,
            DiagnosticCode::InvalidValue,
            Some(vs_id),
            format!("virtual service name {vs:?} cannot be used as a host name; it is unreachable"),
        );
        return;
    }
    let Some(spec) = snap.virtual_services.get(vs) else {
        ctx.diag(
            Severity::Warning,
            DiagnosticCode::BackendServiceMissing,
            Some(ctx.node_id()),
            format!("backend virtual service `{vs}` does not exist; it is unreachable"),
        );
        return;
    };
    match &spec.provider {
        None => ctx.diag(
            Severity::Warning,
            DiagnosticCode::ProviderMissing,
            Some(vs_id),
            format!("virtual service `{vs}` has no provider; it is unreachable"),
        ),
        Some(VirtualServiceProvider::VirtualNode(p)) => {
            node_provider(ctx, eg, vs, &p.virtual_node_name)
        }
        Some(VirtualServiceProvider::VirtualRouter(p)) => {
            router_provider(ctx, eg, vs, &p.virtual_router_name)
        }
    }
}

fn node_provider(ctx: &mut Ctx<'_>, eg: &mut Egress, vs: &str, node_name: &str) {
    let snap = ctx.snap;
    let Some(target) = snap.virtual_nodes.get(node_name) else {
        ctx.diag(
            Severity::Warning,
            DiagnosticCode::ProviderNotFound,
            Some(snap.id(ResourceKind::VirtualService, vs)),
            format!("provider virtual node `{node_name}` of virtual service `{vs}` does not exist"),
        );
        return;
    };
    if target.listeners().is_empty() {
        ctx.diag(
            Severity::Warning,
            DiagnosticCode::TargetListenerMissing,
            Some(snap.id(ResourceKind::VirtualNode, node_name)),
            format!("virtual node `{node_name}` provides `{vs}` but has no listener"),
        );
    }
    for l in target.listeners() {
        let pm = &l.port_mapping;
        if !(1..=65535).contains(&pm.port) {
            continue;
        }
        let Some(cluster) = cluster::ensure_egress_cluster(ctx, node_name, target, l) else {
            no_discovery(ctx, node_name);
            continue;
        };
        let port = pm.port as u32;
        if cluster::is_http(&pm.protocol) {
            let retry = ctx
                .opts
                .default_max_retries
                .map(|n| route::default_retry(pm.protocol == PortProtocol::Grpc, n));
            let action = route::action(
                &[(cluster, 1)],
                listener_http_timeout(l),
                ctx.opts.default_route_timeout_ms,
                retry,
            );
            let vh = VirtualHost {
                name: vs.to_owned(),
                domains: domains(vs, port),
                routes: vec![route::envoy_route(node_name, catch_all(), action)],
                ..Default::default()
            };
            eg.http.entry(port).or_default().insert(vs.to_owned(), vh);
        } else {
            eg.tcp.entry(port).or_default().insert(
                vs.to_owned(),
                TcpBackend {
                    service: vs.to_owned(),
                    clusters: vec![(cluster, 1)],
                    idle_ms: listener_tcp_idle_ms(l),
                },
            );
        }
    }
}

fn no_discovery(ctx: &mut Ctx<'_>, node_name: &str) {
    let id = ctx.snap.id(ResourceKind::VirtualNode, node_name);
    ctx.diag(
        Severity::Warning,
        DiagnosticCode::ServiceDiscoveryMissing,
        Some(id),
        format!("virtual node `{node_name}` has no service discovery; it cannot be reached"),
    );
}

/// Whether a route's kind serves a router listener of protocol `p`.
fn kind_matches(r: &RouteSpec, p: &PortProtocol) -> bool {
    match p {
        PortProtocol::Http => r.http_route.is_some(),
        PortProtocol::Http2 => r.http2_route.is_some(),
        PortProtocol::Grpc => r.grpc_route.is_some(),
        PortProtocol::Tcp => r.tcp_route.is_some(),
        PortProtocol::Unknown(_) => false,
    }
}

fn route_port(r: &RouteSpec) -> Option<i64> {
    if let Some(h) = r.http_route.as_ref().or(r.http2_route.as_ref()) {
        h.match_.port
    } else if let Some(g) = &r.grpc_route {
        g.match_.port
    } else {
        r.tcp_route
            .as_ref()
            .and_then(|t| t.match_.as_ref())
            .and_then(|m| m.port)
    }
}

fn router_provider(ctx: &mut Ctx<'_>, eg: &mut Egress, vs: &str, router: &str) {
    let snap = ctx.snap;
    let Some(spec) = snap.virtual_routers.get(router) else {
        ctx.diag(
            Severity::Warning,
            DiagnosticCode::ProviderNotFound,
            Some(snap.id(ResourceKind::VirtualService, vs)),
            format!("provider virtual router `{router}` of virtual service `{vs}` does not exist"),
        );
        return;
    };
    let listeners: Vec<&PortMapping> = spec
        .listeners()
        .iter()
        .map(|l| &l.port_mapping)
        .filter(|pm| (1..=65535).contains(&pm.port) && pm.protocol.is_known())
        .collect();
    if listeners.is_empty() {
        ctx.diag(
            Severity::Warning,
            DiagnosticCode::InvalidValue,
            Some(snap.id(ResourceKind::VirtualRouter, router)),
            format!("virtual router `{router}` has no usable listener; `{vs}` is unreachable"),
        );
        return;
    }
    // Routes that apply to no listener are reported once.
    for (name, r) in snap.routes_of(router) {
        let applies = listeners
            .iter()
            .any(|pm| kind_matches(r, &pm.protocol) && route_port(r).is_none_or(|p| p == pm.port));
        if !applies {
            ctx.diag(
                Severity::Warning,
                DiagnosticCode::RouteNotApplicable,
                Some(snap.route_id(router, name)),
                format!(
                    "route `{name}` matches no listener of virtual router `{router}` (kind or port); it is ignored"
                ),
            );
        }
    }
    for pm in listeners {
        let port = pm.port as u32;
        let applicable: Vec<(&str, &RouteSpec)> = snap
            .routes_of(router)
            .filter(|(_, r)| {
                kind_matches(r, &pm.protocol) && route_port(r).is_none_or(|p| p == pm.port)
            })
            .collect();
        if pm.protocol == PortProtocol::Tcp {
            tcp_routes(ctx, eg, vs, router, pm, applicable);
            continue;
        }
        let mut routes: Vec<(OrderKey, Route)> = Vec::new();
        for (name, r) in applicable {
            if let Some(x) = http_family_route(ctx, router, name, r, pm) {
                routes.push(x);
            }
        }
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        let vh = VirtualHost {
            name: vs.to_owned(),
            domains: domains(vs, port),
            routes: routes.into_iter().map(|(_, r)| r).collect(),
            ..Default::default()
        };
        eg.http.entry(port).or_default().insert(vs.to_owned(), vh);
    }
}

/// Resolves weighted targets to `(cluster, weight)`; reports and drops unusable ones.
fn targets(
    ctx: &mut Ctx<'_>,
    route_id: &ResourceId,
    targets: &[WeightedTarget],
    router_port: i64,
) -> Vec<(String, u32)> {
    let snap = ctx.snap;
    let mut out: Vec<(String, u32)> = Vec::new();
    for t in targets {
        let Some(node) = snap.virtual_nodes.get(&t.virtual_node) else {
            ctx.diag(
                Severity::Warning,
                DiagnosticCode::TargetNodeMissing,
                Some(route_id.clone()),
                format!(
                    "target virtual node `{}` does not exist; target dropped",
                    t.virtual_node
                ),
            );
            continue;
        };
        let ls = node.listeners();
        let chosen: Option<&NodeListener> = match t.port {
            Some(p) => ls.iter().find(|l| l.port_mapping.port == p),
            None if ls.len() == 1 => ls.first(),
            None => ls.iter().find(|l| l.port_mapping.port == router_port),
        };
        let Some(l) = chosen else {
            ctx.diag(
                Severity::Warning,
                DiagnosticCode::TargetListenerMissing,
                Some(route_id.clone()),
                format!(
                    "target virtual node `{}` has no listener for port {}; target dropped",
                    t.virtual_node,
                    t.port.map_or_else(
                        || format!("{router_port} (no target port given)"),
                        |p| p.to_string()
                    )
                ),
            );
            continue;
        };
        if !(1..=65535).contains(&l.port_mapping.port) || !l.port_mapping.protocol.is_known() {
            continue;
        }
        let Some(c) = cluster::ensure_egress_cluster(ctx, &t.virtual_node, node, l) else {
            no_discovery(ctx, &t.virtual_node);
            continue;
        };
        let w = pb::clamp_u32(t.weight);
        match out.iter_mut().find(|(n, _)| *n == c) {
            Some(existing) => existing.1 = existing.1.saturating_add(w),
            None => out.push((c, w)),
        }
    }
    if !out.is_empty() && out.iter().all(|(_, w)| *w == 0) {
        ctx.diag(
            Severity::Warning,
            DiagnosticCode::RouteHasNoTargets,
            Some(route_id.clone()),
            "every weighted target has weight 0; the route is dropped".to_owned(),
        );
        return Vec::new();
    }
    if out.is_empty() {
        ctx.diag(
            Severity::Warning,
            DiagnosticCode::RouteHasNoTargets,
            Some(route_id.clone()),
            "no weighted target is usable; the route is dropped".to_owned(),
        );
    }
    out
}

fn http_family_route(
    ctx: &mut Ctx<'_>,
    router: &str,
    name: &str,
    r: &RouteSpec,
    pm: &PortMapping,
) -> Option<(OrderKey, Route)> {
    let route_id = ctx.snap.route_id(router, name);
    let (matched, wt, timeout, retry, unknown) =
        if let Some(h) = r.http_route.as_ref().or(r.http2_route.as_ref()) {
            let m = route::http_match(&h.match_, r.priority, name);
            let (retry, unknown) = match &h.retry_policy {
                Some(p) => {
                    let (p, u) = route::http_retry(p);
                    (Some(p), u)
                }
                None => (
                    ctx.opts
                        .default_max_retries
                        .map(|n| route::default_retry(false, n)),
                    vec![],
                ),
            };
            (
                m,
                &h.action.weighted_targets,
                h.timeout.as_ref(),
                retry,
                unknown,
            )
        } else {
            let g = r.grpc_route.as_ref()?;
            let m = route::grpc_match(&g.match_, r.priority, name);
            let (retry, unknown) = match &g.retry_policy {
                Some(p) => {
                    let (p, u) = route::grpc_retry(p);
                    (Some(p), u)
                }
                None => (
                    ctx.opts
                        .default_max_retries
                        .map(|n| route::default_retry(true, n)),
                    vec![],
                ),
            };
            (
                m,
                &g.action.weighted_targets,
                g.timeout.as_ref(),
                retry,
                unknown,
            )
        };
    if !unknown.is_empty() {
        ctx.diag(
            Severity::Warning,
            DiagnosticCode::UnknownRetryEvent,
            Some(route_id.clone()),
            format!("unknown retry events ignored: {}", unknown.join(", ")),
        );
    }
    let (m, key) = match matched {
        Ok(x) => x,
        Err(e) => {
            ctx.diag(
                Severity::Warning,
                DiagnosticCode::InvalidValue,
                Some(route_id),
                format!("route `{name}` dropped: {}", e.0),
            );
            return None;
        }
    };
    let clusters = targets(ctx, &route_id, wt, pm.port);
    if clusters.is_empty() {
        return None;
    }
    let action = route::action(&clusters, timeout, ctx.opts.default_route_timeout_ms, retry);
    Some((key, route::envoy_route(name, m, action)))
}

fn tcp_routes(
    ctx: &mut Ctx<'_>,
    eg: &mut Egress,
    vs: &str,
    router: &str,
    pm: &PortMapping,
    applicable: Vec<(&str, &RouteSpec)>,
) {
    // Same order as HTTP: priority, then name (tcp routes have no match to rank).
    let mut applicable = applicable;
    applicable.sort_by_key(|(name, r)| (r.priority.unwrap_or(1001), name.to_owned()));
    let mut served = false;
    for (name, r) in applicable {
        let route_id = ctx.snap.route_id(router, name);
        if served {
            ctx.diag(
                Severity::Warning,
                DiagnosticCode::RouteNotApplicable,
                Some(route_id),
                format!(
                    "tcp route `{name}` is shadowed: a tcp listener serves only its first tcp route"
                ),
            );
            continue;
        }
        let Some(t) = &r.tcp_route else { continue };
        let clusters = targets(ctx, &route_id, &t.action.weighted_targets, pm.port);
        if clusters.is_empty() {
            continue;
        }
        served = true;
        eg.tcp.entry(pm.port as u32).or_default().insert(
            vs.to_owned(),
            TcpBackend {
                service: vs.to_owned(),
                clusters,
                idle_ms: t
                    .timeout
                    .as_ref()
                    .and_then(|x| x.idle.as_ref())
                    .map(|d| d.as_millis()),
            },
        );
    }
}

fn build(ctx: &mut Ctx<'_>, eg: Egress) {
    let allow_all = ctx.mesh.egress_filter_type() == EgressFilterType::AllowAll;
    let passthrough = names::passthrough_cluster(ctx.mesh_name());
    let node = ctx.node;
    let logs = || access_log::access_logs(node.logging.as_ref());
    // Explicit mode under ALLOW_ALL: no iptables, so a connection's destination is this
    // Envoy itself and ORIGINAL_DST would loop; forward to the request's Host instead.
    let forward = allow_all && ctx.opts.listen_address.is_some();
    let dns_cache = cluster::forward_proxy_dns_cache(ctx);
    let http_filters = || {
        if forward {
            vec![forward_proxy_filter(dns_cache.clone())]
        } else {
            Vec::new()
        }
    };
    let passthrough_host = || VirtualHost {
        name: "passthrough".to_owned(),
        domains: vec!["*".to_owned()],
        routes: vec![route::envoy_route(
            "passthrough",
            catch_all(),
            route::action(&[(passthrough.clone(), 1)], None, 0, None),
        )],
        ..Default::default()
    };
    let mut chains: BTreeMap<u32, FilterChain> = BTreeMap::new();
    for (port, hosts) in eg.http {
        // Envoy matches domains case-insensitively and rejects duplicates.
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut vhs: Vec<VirtualHost> = Vec::new();
        for (vs, vh) in hosts {
            let lower: Vec<String> = vh.domains.iter().map(|d| d.to_ascii_lowercase()).collect();
            if lower.iter().any(|d| seen.contains(d)) {
                let vs_id = ctx.snap.id(ResourceKind::VirtualService, &vs);
                ctx.diag(
                    Severity::Warning,
                    DiagnosticCode::EgressPortConflict,
                    Some(vs_id),
                    format!(
                        "virtual service `{vs}` differs from another backend on port {port} only by case; it is unreachable"
                    ),
                );
                continue;
            }
            seen.extend(lower);
            vhs.push(vh);
        }
        if allow_all {
            vhs.push(passthrough_host());
        }
        let rc_name = names::egress_route_config(i64::from(port));
        ctx.out.route_configs.insert(
            rc_name.clone(),
            RouteConfiguration {
                name: rc_name.clone(),
                virtual_hosts: vhs,
                validate_clusters: Some(envoy_types::pb::google::protobuf::BoolValue {
                    value: false,
                }),
                ..Default::default()
            },
        );
        chains.insert(
            port,
            chain(
                format!("egress_http_{port}"),
                port,
                hcm_with(
                    EGRESS_STAT_PREFIX,
                    Routes::Rds(rc_name),
                    logs(),
                    http_filters(),
                    Router::default(),
                ),
            ),
        );
    }
    for (port, backends) in eg.tcp {
        for (i, b) in backends.into_values().enumerate() {
            if i > 0 || chains.contains_key(&port) {
                let vs_id = ctx.snap.id(ResourceKind::VirtualService, &b.service);
                ctx.diag(
                    Severity::Warning,
                    DiagnosticCode::EgressPortConflict,
                    Some(vs_id),
                    format!(
                        "tcp backend `{}` shares egress port {port} with another backend; it is unreachable",
                        b.service
                    ),
                );
                continue;
            }
            let f = tcp_proxy(
                EGRESS_STAT_PREFIX,
                &b.clusters,
                b.idle_ms.map(pb::millis),
                logs(),
            );
            chains.insert(port, chain(format!("egress_tcp_{port}"), port, f));
        }
    }
    let default_filter_chain = match (allow_all, forward) {
        (false, _) => None,
        (true, false) => Some(FilterChain {
            name: "egress_passthrough".to_owned(),
            filters: vec![tcp_proxy(
                EGRESS_STAT_PREFIX,
                &[(passthrough.clone(), 1)],
                None,
                logs(),
            )],
            ..Default::default()
        }),
        // Explicit mode: the egress port is an HTTP forward proxy (`http_proxy=<ip>:15001`)
        // to any host; a TCP pass-through cannot know where a connection was going.
        (true, true) => Some(FilterChain {
            name: "egress_passthrough".to_owned(),
            filters: vec![hcm_with(
                EGRESS_STAT_PREFIX,
                Routes::Inline(Box::new(RouteConfiguration {
                    name: "egress_passthrough".to_owned(),
                    virtual_hosts: vec![passthrough_host()],
                    validate_clusters: Some(envoy_types::pb::google::protobuf::BoolValue {
                        value: false,
                    }),
                    ..Default::default()
                })),
                logs(),
                http_filters(),
                Router::default(),
            )],
            ..Default::default()
        }),
    };
    if forward {
        ctx.add_cluster(cluster::forward_proxy_cluster(ctx));
    } else if allow_all {
        ctx.add_cluster(cluster::passthrough_cluster(ctx.mesh_name()));
    }
    // Kept out of `chains`: explicit mode must not listen on 443 for it (the original
    // destination of such a connection would be the listener itself).
    let amazonaws = (!allow_all).then(|| {
        let name = names::amazonaws_cluster(ctx.mesh_name());
        ctx.add_cluster(cluster::amazonaws_cluster(ctx.mesh_name()));
        FilterChain {
            name: "egress_amazonaws".to_owned(),
            filter_chain_match: Some(FilterChainMatch {
                destination_port: Some(pb::u32v(i64::from(AMAZONAWS_PORT))),
                server_names: vec![AMAZONAWS_SNI.to_owned()],
                transport_protocol: "tls".to_owned(),
                ..Default::default()
            }),
            filters: vec![tcp_proxy(EGRESS_STAT_PREFIX, &[(name, 1)], None, logs())],
            ..Default::default()
        }
    });
    if chains.is_empty() && default_filter_chain.is_none() && amazonaws.is_none() {
        // Envoy rejects a listener without filter chains; with nothing reachable, no
        // listener has the same effect (redirected connections are refused).
        return;
    }
    let port = ctx.opts.egress_port;
    // Explicit mode: also listen on each destination port, so the chains match directly
    // (these ports win over the node's own listener ports, see `virtual_node`).
    let mut additional_addresses = Vec::new();
    if ctx.opts.listen_address.is_some() {
        ctx.egress_ports.insert(port);
        for p in chains.keys() {
            if *p == port || *p == ctx.opts.ingress_port {
                continue;
            }
            ctx.egress_ports.insert(*p);
            additional_addresses.push(AdditionalAddress {
                address: Some(listen_address(ctx, *p)),
                ..Default::default()
            });
        }
    }
    let mut listener_filters = vec![original_dst()];
    let mut filter_chains: Vec<FilterChain> = chains.into_values().collect();
    if let Some(c) = amazonaws {
        filter_chains.push(c);
        listener_filters.push(tls_inspector_on(AMAZONAWS_PORT as i32));
    }
    let listener = Listener {
        name: names::egress_listener(port),
        address: Some(listen_address(ctx, port)),
        additional_addresses,
        filter_chains,
        default_filter_chain,
        listener_filters,
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    };
    ctx.out.listeners.insert(listener.name.clone(), listener);
}

fn chain(
    name: String,
    port: u32,
    filter: envoy_types::pb::envoy::config::listener::v3::Filter,
) -> FilterChain {
    FilterChain {
        name,
        filter_chain_match: Some(FilterChainMatch {
            destination_port: Some(pb::u32v(i64::from(port))),
            ..Default::default()
        }),
        filters: vec![filter],
        ..Default::default()
    }
}
