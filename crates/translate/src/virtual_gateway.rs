//! Virtual gateways: the ingress of a mesh, served in two hops through the gateway's own
//! Envoy.
//!
//! ```text
//!  client ─▶ lds_ingress_0.0.0.0_<port>  (one listener per gateway listener, HCM `ingress`)
//!              RDS rds_ingress_<proto>_<port>: one virtual host `*`, the gateway routes in
//!              App Mesh order, each with its match, path rewrite, Host := the gateway
//!              route's hop-2 authority, timeout 0, retries only of unknown targets
//!              ─▶ cds_ingress_<mesh>_<vg>_self_redirect_<proto>_<port>  (STATIC, the
//!                 listener's connection pool as circuit breakers)
//!  hop 2  ─▶ lds_egress_0.0.0.0_<egressPort>  (bound on 127.0.0.1 or the listen address)
//!              RDS rds_egress_http_<egressPort>: one virtual host per gateway route
//!              holding exactly what a sidecar's egress holds for its target service and
//!              port (the router's routes, weights, retries and timeouts, or the provider
//!              node's cluster), each route setting the Host the backend must see
//!              ─▶ cds_egress_<mesh>_<targetNode>_<proto>_<port>
//! ```
//!
//! Why two hops: gateway route rewrites and the router's routes are two independent route
//! tables, and Envoy applies one route per hop. Hop 1 selects hop 2's virtual host by an
//! authority that names the gateway route, not its target ([`hop2_authority`]), and always
//! carries the client's Host in `x-meshplane-host` (overwriting whatever the client sent);
//! hop 2's virtual host for that gateway route holds its target's routes (the target port
//! picks the router listener without an extra listener per port), each setting the Host
//! the backend must see: the service name, or, with `defaultTargetHostname: DISABLED`, the
//! client's Host from `x-meshplane-host` (`host_rewrite_header`). So the router's timeouts
//! and retries hold in every rewrite combination (App Mesh lost them when the host rewrite
//! was disabled, roadmap #376), weight or route changes stay RDS-only on both hops, and a
//! change to one gateway route lands in one of the two route configurations: retargeting
//! changes hop 2 only, re-matching or re-writing changes hop 1 only, so no request meets
//! half a change. A new gateway route can reach hop 1 before hop 2 knows it: hop 2 answers
//! such requests with a marked 404 that hop 1 retries ([`UNKNOWN_TARGET_HEADER`]).
//!
//! Gateway route semantics (App Mesh):
//! - order: `priority` ascending (0 first), routes without priority after, then the most
//!   specific match (exact path, regex, longest prefix, more conditions), then the name;
//!   hostnames are `:authority` header matchers inside the one `*` virtual host, so Envoy's
//!   virtual host specificity never reorders routes;
//! - `hostname.exact` matches the Host with or without a port, case-insensitively;
//!   `hostname.suffix` likewise on the end of the host;
//! - rewrites (HTTP): a prefix match replaces the matched prefix with `/` by default
//!   (`/paths/red` on prefix `/paths/` or `/paths` → `/red`); `prefix.defaultPrefix:
//!   DISABLED` keeps the path; `prefix.value` replaces the matched prefix with the value;
//!   `path.exact` replaces the whole path (the query string is kept). The Host becomes the
//!   target service's name unless `hostname.defaultTargetHostname: DISABLED`; the client's
//!   Host is kept in `x-envoy-original-host` (set by hop 1's router on its rewrite; hop 2's
//!   router suppresses its Envoy headers so it does not overwrite it). gRPC routes rewrite
//!   the Host only;
//! - `match.port` selects the gateway listener; a route without it applies to every listener
//!   of its kind (`httpRoute` ↔ http, `http2Route` ↔ http2, `grpcRoute` ↔ grpc);
//! - `target.port` selects the provider's listener; without it the provider must serve the
//!   service on exactly one HTTP-family port.
//!
//! Anything that cannot be served (missing service or provider, no listener on the target
//! port, a rewrite Envoy cannot express, an invalid regex) drops that route with a
//! diagnostic on the gateway route; the rest is served. Listener TLS with file or SDS
//! certificates is translated as on a node's listener ([`crate::tls`]): `STRICT` a TLS-only filter chain,
//! `PERMISSIVE` a TLS chain (`transport_protocol: tls`, `tls_inspector`) plus the plaintext
//! one, `validation` mutual TLS. ACM certificates are not translated: `STRICT`
//! listeners are then not served (fail closed), `PERMISSIVE` ones in plaintext, both with a
//! diagnostic.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, TrafficDirection, header_value_option,
};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, RetryPolicy, Route, RouteAction, RouteConfiguration,
    RouteMatch, VirtualHost, header_matcher, retry_policy, route::Action, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::health_check::v3::HealthCheck as HealthCheckFilter;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use meshplane_model::common::{GatewayRouteHostnameMatch, PortProtocol};
use meshplane_model::gateway_route::{
    DefaultGatewayRouteRewrite, GatewayRouteHostnameRewrite, GatewayRouteTarget, HttpGatewayRoute,
};
use meshplane_model::route::{GrpcRouteMatch, HttpRouteMatch};
use meshplane_model::virtual_gateway::{VirtualGatewayConnectionPool, VirtualGatewayListener};
use meshplane_model::virtual_node::{
    Backend, BackendDefaults, VirtualNodeConnectionPool, VirtualNodeSpec, VirtualServiceBackend,
};
use meshplane_model::{GatewayRouteSpec, ProxyKind, ResourceId, VirtualGatewaySpec};

use crate::egress::{self, EGRESS_STAT_PREFIX, Egress};
use crate::listener::{Routes, hcm_with, tls_inspector_on};
use crate::route::{self, OrderKey};
use crate::virtual_node::{INGRESS_STAT_PREFIX, listen_address};
use crate::{
    Ctx, DiagnosticCode, Endpoints, MeshSnapshot, ProxyConfig, Severity, TranslateOptions,
    access_log, cluster as clusters, names, pb,
};

/// Header carrying, from hop 1 to hop 2, the Host the backend must see. Hop 1 overwrites
/// it on every request, so a client cannot choose it.
pub(crate) const FINAL_HOST_HEADER: &str = "x-meshplane-host";

/// Response header of hop 2's catch-all 404: the request named a gateway route hop 2 does
/// not serve (yet). Hop 1 and hop 2 are two route configurations, which Envoy applies one
/// after the other, so a request on a just-created gateway route can briefly reach hop 2
/// before hop 2 has its virtual host. Hop 1 retries exactly those answers
/// ([`UNKNOWN_TARGET_RETRIES`] times, 10-50 ms apart) and removes the header, so an
/// application's own 404 is never retried and never carries it.
pub(crate) const UNKNOWN_TARGET_HEADER: &str = "x-meshplane-unknown-target";
/// Hop 1's retries of an unknown-target answer: enough to span the moment between the two
/// route configurations taking effect (both arrive in one RDS push).
const UNKNOWN_TARGET_RETRIES: i64 = 5;

/// Translates gateway `name`'s proxy configuration into `out`.
pub(crate) fn translate(
    snap: &MeshSnapshot,
    endpoints: &Endpoints,
    opts: &TranslateOptions,
    name: &str,
    gw: &VirtualGatewaySpec,
    out: ProxyConfig,
) -> ProxyConfig {
    let routes: Vec<(&str, &GatewayRouteSpec)> = snap.gateway_routes_of(name).collect();
    let services: BTreeSet<&str> = routes
        .iter()
        .filter_map(|(_, r)| r.target())
        .map(|t| t.virtual_service.virtual_service_name.as_str())
        .collect();
    // The gateway's second hop is a sidecar egress whose backends are the targeted services.
    let node = VirtualNodeSpec {
        backend_defaults: gw.backend_defaults.as_ref().map(|d| BackendDefaults {
            client_policy: d.client_policy.clone(),
        }),
        backends: Some(
            services
                .iter()
                .map(|vs| {
                    Backend::VirtualService(VirtualServiceBackend {
                        client_policy: None,
                        virtual_service_name: (*vs).to_owned(),
                    })
                })
                .collect(),
        ),
        listeners: None,
        logging: gw.logging.clone(),
        service_discovery: None,
    };
    let mut ctx = Ctx::new(
        snap,
        endpoints,
        opts,
        ProxyKind::VirtualGateway,
        name,
        &node,
    );
    let eg = egress::collect(&mut ctx);
    let (targets, hosts) = hop2_hosts(&mut ctx, &eg);
    let mut uses = Vec::new();
    hop1(&mut ctx, gw, &routes, &targets, &mut uses);
    hop2(&mut ctx, &hosts, &uses);
    ctx.finish(out)
}

/// What hop 2 serves: `(service, port)` pairs reachable over HTTP.
type Targets = BTreeSet<(String, u32)>;

/// One gateway route as hop 1 sends it to hop 2: hop 2 has a virtual host per gateway route
/// (authority [`hop2_authority`]), so retargeting a route changes hop 2 alone and
/// rewriting or re-matching it changes hop 1 alone: each change lands in one route
/// configuration, atomically, and no request falls between two versions.
struct Hop2Use {
    route: String,
    service: String,
    port: u32,
    keep_host: bool,
}

/// Hop 2's authority for gateway route `name`: stable while the route exists, whatever it
/// targets, and not a name a client would send (hop 1 rewrites every request to it).
fn hop2_authority(name: &str) -> String {
    // FNV-1a: stable across builds and platforms; not a security boundary (hop 1
    // overwrites the Host of every request it forwards).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("gr-{h:016x}.gateway.meshplane")
}

/// The address hop 2 listens on (and the self-redirect clusters connect to).
fn hop2_ip(ctx: &Ctx<'_>) -> String {
    ctx.opts
        .listen_address
        .map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string())
}

/// The virtual host a sidecar's egress would hold for each `(service, port)` hop 2 can
/// reach over HTTP, and that set.
fn hop2_hosts(
    ctx: &mut Ctx<'_>,
    eg: &Egress,
) -> (
    Targets,
    std::collections::BTreeMap<(String, u32), VirtualHost>,
) {
    let mut served = Targets::new();
    let mut seen = BTreeSet::new();
    let mut hosts = std::collections::BTreeMap::new();
    for (port, vhs) in &eg.http {
        for (vs, vh) in vhs {
            if !seen.insert(format!("{vs}:{port}").to_ascii_lowercase()) {
                let vs_id = ctx
                    .snap
                    .id(meshplane_model::ResourceKind::VirtualService, vs);
                ctx.diag(
                    Severity::Warning,
                    DiagnosticCode::EgressPortConflict,
                    Some(vs_id),
                    format!(
                        "virtual service `{vs}` differs from another target on port {port} only by case; it is unreachable"
                    ),
                );
                continue;
            }
            served.insert((vs.clone(), *port));
            hosts.insert((vs.clone(), *port), vh.clone());
        }
    }
    (served, hosts)
}

/// Builds hop 2 (listener, route configuration): one virtual host per gateway route hop 1
/// sends, holding the routes of its target, each restoring the Host the backend must see
/// (the service name, or the client's Host from `x-meshplane-host` when the gateway route
/// disables the rewrite); then the unknown-target catch-all.
fn hop2(
    ctx: &mut Ctx<'_>,
    hosts: &std::collections::BTreeMap<(String, u32), VirtualHost>,
    uses: &[Hop2Use],
) {
    let mut vhs = Vec::new();
    let mut seen = BTreeSet::new();
    for u in uses {
        let authority = hop2_authority(&u.route);
        let Some(template) = hosts.get(&(u.service.clone(), u.port)) else {
            continue;
        };
        if !seen.insert(authority.clone()) {
            continue;
        }
        let mut vh = template.clone();
        vh.name = authority.clone();
        vh.domains = vec![authority];
        for r in &mut vh.routes {
            if let Some(Action::Route(a)) = &mut r.action {
                a.host_rewrite_specifier = Some(if u.keep_host {
                    route_action::HostRewriteSpecifier::HostRewriteHeader(
                        FINAL_HOST_HEADER.to_owned(),
                    )
                } else {
                    route_action::HostRewriteSpecifier::HostRewriteLiteral(u.service.clone())
                });
            }
        }
        vhs.push(vh);
    }
    if vhs.is_empty() {
        return;
    }
    vhs.push(unknown_target_vhost());
    let port = ctx.opts.egress_port;
    let rc_name = names::egress_route_config(i64::from(port));
    ctx.out.route_configs.insert(
        rc_name.clone(),
        RouteConfiguration {
            name: rc_name.clone(),
            virtual_hosts: vhs,
            validate_clusters: Some(pb::boolv(false)),
            ..Default::default()
        },
    );
    let logs = access_log::access_logs(ctx.node.logging.as_ref());
    let listener = Listener {
        name: names::egress_listener(port),
        address: Some(pb::socket(&hop2_ip(ctx), port, false)),
        filter_chains: vec![FilterChain {
            name: format!("egress_gateway_{port}"),
            // Hop 1 already recorded the client's Host in `x-envoy-original-host` (Envoy
            // does on a host rewrite); hop 2's own rewrite must not overwrite it.
            filters: vec![hcm_with(
                EGRESS_STAT_PREFIX,
                Routes::Rds(rc_name),
                logs,
                Vec::new(),
                Router {
                    suppress_envoy_headers: true,
                    ..Default::default()
                },
            )],
            ..Default::default()
        }],
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    };
    ctx.out.listeners.insert(listener.name.clone(), listener);
}

/// The gateway route kinds a listener protocol serves.
fn kind_matches(r: &GatewayRouteSpec, p: &PortProtocol) -> bool {
    match p {
        PortProtocol::Http => r.http_route.is_some(),
        PortProtocol::Http2 => r.http2_route.is_some(),
        PortProtocol::Grpc => r.grpc_route.is_some(),
        _ => false,
    }
}

fn route_port(r: &GatewayRouteSpec) -> Option<i64> {
    if let Some(h) = r.http_route.as_ref().or(r.http2_route.as_ref()) {
        h.match_.port
    } else {
        r.grpc_route.as_ref().and_then(|g| g.match_.port)
    }
}

/// Hop 1: one listener, route configuration and self-redirect cluster per gateway listener.
fn hop1(
    ctx: &mut Ctx<'_>,
    gw: &VirtualGatewaySpec,
    routes: &[(&str, &GatewayRouteSpec)],
    targets: &Targets,
    uses: &mut Vec<Hop2Use>,
) {
    let mut listeners: Vec<&VirtualGatewayListener> = gw.listeners.iter().collect();
    listeners.sort_by_key(|l| l.port_mapping.port);
    let usable: Vec<&VirtualGatewayListener> = listeners
        .into_iter()
        .filter(|l| usable_listener(ctx, l))
        .collect();
    let mut seen = BTreeSet::new();
    let usable: Vec<&VirtualGatewayListener> = usable
        .into_iter()
        .filter(|l| {
            let port = l.port_mapping.port;
            if seen.insert(port) {
                return true;
            }
            let id = ctx.node_id();
            ctx.diag(
                Severity::Error,
                DiagnosticCode::InvalidValue,
                Some(id),
                format!("port {port} has several listeners; only the first is served"),
            );
            false
        })
        .collect();
    for (name, r) in routes {
        let applies = usable.iter().any(|l| {
            kind_matches(r, &l.port_mapping.protocol)
                && route_port(r).is_none_or(|p| p == l.port_mapping.port)
        });
        if !applies {
            let id = ctx.snap.gateway_route_id(ctx.node_name, name);
            ctx.diag(
                Severity::Warning,
                DiagnosticCode::RouteNotApplicable,
                Some(id),
                format!(
                    "gateway route `{name}` matches no listener of virtual gateway `{}` (kind or port); it is ignored",
                    ctx.node_name
                ),
            );
        }
    }
    for l in usable {
        listener(ctx, gw, l, routes, targets, uses);
    }
}

/// Whether a gateway listener can be served (valid port and protocol, not on the egress
/// port, TLS not enforced); reports why not.
fn usable_listener(ctx: &mut Ctx<'_>, l: &VirtualGatewayListener) -> bool {
    let pm = &l.port_mapping;
    let id = ctx.node_id();
    if !(1..=65535).contains(&pm.port) || !clusters::is_http(&pm.protocol) {
        ctx.diag(
            Severity::Error,
            DiagnosticCode::InvalidValue,
            Some(id),
            format!(
                "listener {} {} is not a valid gateway port mapping (http, http2 or grpc); skipped",
                pm.protocol, pm.port
            ),
        );
        return false;
    }
    if pm.port == i64::from(ctx.opts.egress_port) {
        ctx.diag(
            Severity::Error,
            DiagnosticCode::InvalidValue,
            Some(id),
            format!(
                "listener {} {} uses the proxy's egress port; skipped",
                pm.protocol, pm.port
            ),
        );
        return false;
    }
    match crate::tls::listener_plan(l.tls.as_ref(), true) {
        Ok(_) => true,
        Err(e) => {
            let mode = l
                .tls
                .as_ref()
                .map(|t| t.mode.to_string())
                .unwrap_or_default();
            let (severity, outcome) = if e.strict {
                (
                    Severity::Error,
                    "listener not served rather than served in plaintext",
                )
            } else {
                (Severity::Warning, "served in plaintext only")
            };
            ctx.diag(
                severity,
                DiagnosticCode::TlsNotTranslated,
                Some(id),
                format!(
                    "listener {} {}: TLS mode {mode}: {}; {outcome}",
                    pm.protocol, pm.port, e.why
                ),
            );
            !e.strict
        }
    }
}

fn pool(p: Option<&VirtualGatewayConnectionPool>) -> Option<VirtualNodeConnectionPool> {
    Some(match p? {
        VirtualGatewayConnectionPool::Http(h) => VirtualNodeConnectionPool::Http(h.clone()),
        VirtualGatewayConnectionPool::Http2(h) => VirtualNodeConnectionPool::Http2(h.clone()),
        VirtualGatewayConnectionPool::Grpc(h) => VirtualNodeConnectionPool::Grpc(h.clone()),
    })
}

fn listener(
    ctx: &mut Ctx<'_>,
    gw: &VirtualGatewaySpec,
    l: &VirtualGatewayListener,
    routes: &[(&str, &GatewayRouteSpec)],
    targets: &Targets,
    uses: &mut Vec<Hop2Use>,
) {
    let pm = &l.port_mapping;
    let port = pb::clamp_u32(pm.port);
    let cluster_name =
        names::gateway_self_redirect_cluster(ctx.mesh_name(), ctx.node_name, &pm.protocol, pm.port);
    let c = Cluster {
        name: cluster_name.clone(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(pb::millis(clusters::INGRESS_CONNECT_TIMEOUT_MS)),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        load_assignment: Some(clusters::assignment(
            &cluster_name,
            vec![clusters::endpoint(
                &hop2_ip(ctx),
                ctx.opts.egress_port,
                false,
                None,
            )],
        )),
        circuit_breakers: Some(clusters::circuit_breakers(
            pool(l.connection_pool.as_ref()).as_ref(),
        )),
        typed_extension_protocol_options: if clusters::is_h2(&pm.protocol) {
            clusters::h2_protocol_options()
        } else {
            Default::default()
        },
        ..Default::default()
    };
    ctx.add_cluster(c);
    let mut envoy_routes: Vec<(OrderKey, Route)> = Vec::new();
    for (name, r) in routes {
        if !kind_matches(r, &pm.protocol) || route_port(r).is_some_and(|p| p != pm.port) {
            continue;
        }
        if let Some((key, route, used)) = gateway_route(ctx, name, r, &cluster_name, targets) {
            envoy_routes.push((key, route));
            uses.push(used);
        }
    }
    envoy_routes.sort_by(|a, b| a.0.cmp(&b.0));
    let rc_name = names::ingress_route_config(&pm.protocol, pm.port);
    ctx.out.route_configs.insert(
        rc_name.clone(),
        RouteConfiguration {
            name: rc_name.clone(),
            virtual_hosts: vec![VirtualHost {
                name: format!("{}_{}_{}", ctx.node_name, pm.protocol, pm.port),
                domains: vec!["*".to_owned()],
                routes: envoy_routes.into_iter().map(|(_, r)| r).collect(),
                ..Default::default()
            }],
            validate_clusters: Some(pb::boolv(false)),
            ..Default::default()
        },
    );
    let filters = health_check_filter(ctx, l).into_iter().collect();
    let logs = access_log::access_logs(gw.logging.as_ref());
    // `usable_listener` let through only plans that are served: a failed one is
    // PERMISSIVE, served in plaintext.
    let plan =
        crate::tls::listener_plan(l.tls.as_ref(), true).unwrap_or(crate::tls::ListenerPlan {
            socket: None,
            plaintext: true,
        });
    let listener_filters = if plan.socket.is_some() && plan.plaintext {
        vec![tls_inspector_on(port as i32)]
    } else {
        Vec::new()
    };
    let filter = hcm_with(
        INGRESS_STAT_PREFIX,
        Routes::Rds(rc_name),
        logs,
        filters,
        Router::default(),
    );
    let listener = Listener {
        name: names::ingress_listener(port),
        address: Some(listen_address(ctx, port)),
        filter_chains: crate::tls::filter_chains(
            &format!("ingress_{}_{}", pm.protocol, pm.port),
            None,
            vec![filter],
            plan,
        ),
        listener_filters,
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Default::default()
    };
    ctx.out.listeners.insert(listener.name.clone(), listener);
}

/// The listener's `healthCheck` as Envoy's health check filter: the gateway answers the
/// load balancer's probes on the declared path itself (http and http2 checks). Other check
/// protocols are reported and left out.
fn health_check_filter(ctx: &mut Ctx<'_>, l: &VirtualGatewayListener) -> Option<HttpFilter> {
    let hc = l.health_check.as_ref()?;
    let path = hc.path.clone().filter(|p| !p.is_empty());
    let (true, Some(path)) = (
        matches!(hc.protocol, PortProtocol::Http | PortProtocol::Http2),
        path,
    ) else {
        let id = ctx.node_id();
        ctx.diag(
            Severity::Info,
            DiagnosticCode::InvalidValue,
            Some(id),
            format!(
                "listener {} {}: only http and http2 health checks with a path are answered by the gateway; {} check not translated",
                l.port_mapping.protocol, l.port_mapping.port, hc.protocol
            ),
        );
        return None;
    };
    let f = HealthCheckFilter {
        pass_through_mode: Some(pb::boolv(false)),
        headers: vec![HeaderMatcher {
            name: ":path".to_owned(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(path)),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }],
        ..Default::default()
    };
    Some(HttpFilter {
        name: "envoy.filters.http.health_check".to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pb::any(&f))),
        ..Default::default()
    })
}

/// The `:authority` matcher of a gateway route hostname match (with or without a port,
/// case-insensitive).
fn hostname_matcher(h: &GatewayRouteHostnameMatch) -> Result<HeaderMatcher, String> {
    let pattern = match (&h.exact, &h.suffix) {
        (Some(e), None) if !e.is_empty() => format!("(?i)^{}(:[0-9]+)?$", regex::escape(e)),
        (None, Some(s)) if !s.is_empty() => format!("(?i)^.*{}(:[0-9]+)?$", regex::escape(s)),
        _ => return Err("hostname match needs exactly one non-empty exact or suffix".to_owned()),
    };
    Ok(HeaderMatcher {
        name: ":authority".to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                    regex: pattern,
                    ..Default::default()
                })),
                ..Default::default()
            },
        )),
        ..Default::default()
    })
}

/// A request header set by hop 1, replacing any value the client sent.
fn set_header(name: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value,
            ..Default::default()
        }),
        append_action: header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// The path rewrite of an HTTP gateway route.
enum PathRewrite {
    None,
    Prefix(String),
    Regex(String, String),
}

fn path_rewrite(h: &HttpGatewayRoute, prefix_match: bool) -> Result<PathRewrite, String> {
    let rw = h.action.rewrite.as_ref();
    let exact = rw
        .and_then(|r| r.path.as_ref())
        .and_then(|p| p.exact.clone());
    let prefix = rw.and_then(|r| r.prefix.as_ref());
    if let Some(exact) = exact {
        if prefix.is_some() {
            return Err("rewrite.path and rewrite.prefix cannot both be set".to_owned());
        }
        if !exact.starts_with('/') {
            return Err(format!("rewrite.path.exact `{exact}` must start with `/`"));
        }
        return Ok(PathRewrite::Regex(
            "^.*$".to_owned(),
            exact.replace('\\', "\\\\"),
        ));
    }
    let value = prefix.and_then(|p| p.value.clone());
    let disabled = prefix.and_then(|p| p.default_prefix.as_ref())
        == Some(&DefaultGatewayRouteRewrite::Disabled);
    if let Some(v) = value {
        if !prefix_match {
            return Err("rewrite.prefix.value needs a prefix match".to_owned());
        }
        if !v.starts_with('/') {
            return Err(format!("rewrite.prefix.value `{v}` must start with `/`"));
        }
        return Ok(PathRewrite::Prefix(v));
    }
    if disabled || !prefix_match {
        return Ok(PathRewrite::None);
    }
    // Default: the matched prefix becomes `/`, without doubling the slash after a prefix
    // that does not end in one (`/paths` on `/paths/red` gives `/red`).
    let p = h.match_.prefix.clone().unwrap_or_else(|| "/".to_owned());
    if p.ends_with('/') {
        Ok(PathRewrite::Prefix("/".to_owned()))
    } else {
        Ok(PathRewrite::Regex(
            format!("^{}/?", regex::escape(&p)),
            "/".to_owned(),
        ))
    }
}

fn host_rewrite_disabled(h: Option<&GatewayRouteHostnameRewrite>) -> bool {
    h.and_then(|h| h.default_target_hostname.as_ref())
        == Some(&DefaultGatewayRouteRewrite::Disabled)
}

/// The hop-1 Envoy route of gateway route `name` on one listener; `None` (with a
/// diagnostic) when it cannot be served.
fn gateway_route(
    ctx: &mut Ctx<'_>,
    name: &str,
    r: &GatewayRouteSpec,
    cluster: &str,
    targets: &Targets,
) -> Option<(OrderKey, Route, Hop2Use)> {
    let route_id = ctx.snap.gateway_route_id(ctx.node_name, name);
    let built = if let Some(h) = r.http_route.as_ref().or(r.http2_route.as_ref()) {
        let m = HttpRouteMatch {
            headers: h.match_.headers.clone(),
            method: h.match_.method.clone(),
            path: h.match_.path.clone(),
            port: None,
            prefix: h.match_.prefix.clone(),
            query_parameters: h.match_.query_parameters.clone(),
            scheme: None,
        };
        route::http_match(&m, r.priority, name)
            .map_err(|e| e.0)
            .and_then(|(rm, key)| {
                let rw = path_rewrite(h, key.is_prefix())?;
                let host = h.action.rewrite.as_ref().and_then(|x| x.hostname.as_ref());
                Ok((
                    rm,
                    key,
                    h.match_.hostname.as_ref(),
                    &h.action.target,
                    rw,
                    host_rewrite_disabled(host),
                ))
            })
    } else {
        let g = r.grpc_route.as_ref()?;
        let m = GrpcRouteMatch {
            metadata: g.match_.metadata.clone(),
            method_name: None,
            port: None,
            service_name: g.match_.service_name.clone(),
        };
        route::grpc_match(&m, r.priority, name)
            .map_err(|e| e.0)
            .map(|(rm, key)| {
                let host = g.action.rewrite.as_ref().and_then(|x| x.hostname.as_ref());
                (
                    rm,
                    key,
                    g.match_.hostname.as_ref(),
                    &g.action.target,
                    PathRewrite::None,
                    host_rewrite_disabled(host),
                )
            })
    };
    let (mut rm, mut key, hostname, target, rewrite, keep_host) = match built {
        Ok(x) => x,
        Err(e) => {
            ctx.diag(
                Severity::Warning,
                DiagnosticCode::InvalidValue,
                Some(route_id),
                format!("gateway route `{name}` dropped: {e}"),
            );
            return None;
        }
    };
    if let Some(h) = hostname {
        match hostname_matcher(h) {
            Ok(m) => {
                rm.headers.push(m);
                key = key.with_more_conditions(1);
            }
            Err(e) => {
                ctx.diag(
                    Severity::Warning,
                    DiagnosticCode::InvalidValue,
                    Some(route_id),
                    format!("gateway route `{name}` dropped: {e}"),
                );
                return None;
            }
        }
    }
    let (vs, port) = resolve_target(ctx, &route_id, target, targets)?;
    let (prefix_rewrite, regex_rewrite) = match rewrite {
        PathRewrite::None => (String::new(), None),
        PathRewrite::Prefix(p) => (p, None),
        PathRewrite::Regex(pattern, substitution) => {
            if let Err(e) = route::check_regex(&pattern) {
                ctx.diag(
                    Severity::Warning,
                    DiagnosticCode::InvalidValue,
                    Some(route_id),
                    format!("gateway route `{name}` dropped: {}", e.0),
                );
                return None;
            }
            (
                String::new(),
                Some(RegexMatchAndSubstitute {
                    pattern: Some(RegexMatcher {
                        regex: pattern,
                        ..Default::default()
                    }),
                    substitution,
                }),
            )
        }
    };
    // Evaluated before the host rewrite below, so `%REQ(:authority)%` is the client's Host
    // (always set, so a client cannot choose it; hop 2 uses it only when the gateway route
    // keeps the client's Host). Envoy itself keeps that Host in `x-envoy-original-host`.
    let headers = vec![set_header(
        FINAL_HOST_HEADER,
        "%REQ(:authority)%".to_owned(),
    )];
    let action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_owned())),
        // Hop 2 (the router's routes) owns the timeout and retries; hop 1 retries only
        // hop 2's unknown-target answers (below).
        timeout: Some(pb::millis(0)),
        prefix_rewrite,
        regex_rewrite,
        host_rewrite_specifier: Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
            hop2_authority(name),
        )),
        ..Default::default()
    };
    let action = RouteAction {
        retry_policy: Some(unknown_target_retry()),
        ..action
    };
    let mut route = route::envoy_route(name, rm, action);
    route.request_headers_to_add = headers;
    route.response_headers_to_remove = vec![UNKNOWN_TARGET_HEADER.to_owned()];
    let used = Hop2Use {
        route: name.to_owned(),
        service: vs,
        port,
        keep_host,
    };
    Some((key, route, used))
}

/// Hop 2's last virtual host: any authority no target claims gets a 404 marked with
/// [`UNKNOWN_TARGET_HEADER`].
fn unknown_target_vhost() -> VirtualHost {
    VirtualHost {
        name: "unknown_target".to_owned(),
        domains: vec!["*".to_owned()],
        routes: vec![Route {
            name: "unknown_target".to_owned(),
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
                ..Default::default()
            }),
            action: Some(Action::DirectResponse(DirectResponseAction {
                status: 404,
                ..Default::default()
            })),
            ..Default::default()
        }],
        response_headers_to_add: vec![set_header(UNKNOWN_TARGET_HEADER, "true".to_owned())],
        ..Default::default()
    }
}

/// Hop 1's only retries: of hop 2's unknown-target answers (see [`UNKNOWN_TARGET_HEADER`]).
fn unknown_target_retry() -> RetryPolicy {
    RetryPolicy {
        retry_on: "retriable-headers".to_owned(),
        num_retries: Some(pb::u32v(UNKNOWN_TARGET_RETRIES)),
        retriable_headers: vec![HeaderMatcher {
            name: UNKNOWN_TARGET_HEADER.to_owned(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)),
            ..Default::default()
        }],
        retry_back_off: Some(retry_policy::RetryBackOff {
            base_interval: Some(pb::millis(10)),
            max_interval: Some(pb::millis(50)),
        }),
        ..Default::default()
    }
}

/// The `(service, port)` of hop 2 a target selects; `None` (with a diagnostic) when hop 2
/// does not serve it.
fn resolve_target(
    ctx: &mut Ctx<'_>,
    route_id: &ResourceId,
    t: &GatewayRouteTarget,
    targets: &Targets,
) -> Option<(String, u32)> {
    let vs = &t.virtual_service.virtual_service_name;
    let ports: Vec<u32> = targets
        .iter()
        .filter(|(s, _)| s == vs)
        .map(|(_, p)| *p)
        .collect();
    let problem = match t.port {
        Some(p) if ports.contains(&pb::clamp_u32(p)) => return Some((vs.clone(), p as u32)),
        Some(p) => {
            format!("target virtual service `{vs}` has no http, http2 or grpc listener on port {p}")
        }
        None => match ports.as_slice() {
            [p] => return Some((vs.clone(), *p)),
            [] => {
                format!("target virtual service `{vs}` is not reachable over http, http2 or grpc")
            }
            many => format!(
                "target virtual service `{vs}` listens on ports {many:?}; target.port must choose one"
            ),
        },
    };
    ctx.diag(
        Severity::Warning,
        DiagnosticCode::TargetListenerMissing,
        Some(route_id.clone()),
        format!("{problem}; gateway route dropped"),
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_matches_with_and_without_port() {
        let m = hostname_matcher(&GatewayRouteHostnameMatch {
            exact: Some("www.example.com".into()),
            suffix: None,
        })
        .unwrap();
        let Some(header_matcher::HeaderMatchSpecifier::StringMatch(s)) = m.header_match_specifier
        else {
            panic!("string match expected")
        };
        let Some(string_matcher::MatchPattern::SafeRegex(r)) = s.match_pattern else {
            panic!("regex expected")
        };
        let re = regex::Regex::new(&r.regex).unwrap();
        assert!(re.is_match("www.example.com"));
        assert!(re.is_match("WWW.example.com:8080"));
        assert!(!re.is_match("wwwxexample.com"));
        assert!(!re.is_match("a.www.example.com"));
        let m = hostname_matcher(&GatewayRouteHostnameMatch {
            exact: None,
            suffix: Some(".example.com".into()),
        })
        .unwrap();
        let Some(header_matcher::HeaderMatchSpecifier::StringMatch(s)) = m.header_match_specifier
        else {
            panic!("string match expected")
        };
        let Some(string_matcher::MatchPattern::SafeRegex(r)) = s.match_pattern else {
            panic!("regex expected")
        };
        let re = regex::Regex::new(&r.regex).unwrap();
        assert!(re.is_match("a.example.com:80"));
        assert!(!re.is_match("example.com"));
        assert!(hostname_matcher(&GatewayRouteHostnameMatch::default()).is_err());
    }
}
