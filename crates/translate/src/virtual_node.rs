//! The proxy's own virtual node, inbound side: the ingress listener
//! `lds_ingress_0.0.0.0_15000` and one STATIC `cds_ingress_*` cluster per node listener.
//!
//! iptables redirects inbound traffic for the application ports to the ingress port; the
//! `original_dst` listener filter restores the destination so that each node listener gets
//! its own filter chain, matched by destination port:
//! - http, http2, grpc: HTTP connection manager (stat prefix `ingress`) with an inline route
//!   configuration `rds_ingress_<proto>_<port>`: one catch-all route to the ingress cluster
//!   with the listener's `perRequest` timeout (default 15 s) and `idle` timeout;
//! - tcp: TCP proxy (stat prefix `ingress`) with the listener's `tcp.idle` timeout.
//!
//! Explicit mode ([`crate::TranslateOptions::listen_address`]): the listener binds that
//! address and also `<address>:<listener port>` for every listener whose port the egress
//! listener does not bind, so a caller reaches the node's port directly; the ingress clusters
//! then point at [`crate::TranslateOptions::app_address`] when set.
//!
//! The node's access log is attached to every filter chain. Listener TLS (file certificates,
//! see [`crate::tls`]): `STRICT` puts a `DownstreamTlsContext` on the port's filter chain
//! (`ingress_<proto>_<port>_tls`); `PERMISSIVE` adds it as a second chain matched on
//! `transport_protocol: tls`, next to the plaintext chain, with `tls_inspector` running for
//! that port only; `DISABLED` is plaintext. `validation` requires a client certificate
//! (mutual TLS); certificates and trust come from files or SDS. ACM certificates are not
//! translated: a `STRICT` listener is then
//! not served at all (fail closed), a `PERMISSIVE` one is served in plaintext; both with a
//! diagnostic.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{AdditionalAddress, FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::envoy::config::route::v3::{RouteMatch, route_match};
use meshplane_model::common::{HttpTimeout, ListenerTimeout, PortProtocol};
use meshplane_model::virtual_node::Listener as NodeListener;

use crate::listener::{Routes, hcm, original_dst, tcp_proxy, tls_inspector_on};
use crate::{Ctx, DiagnosticCode, Severity, access_log, cluster, names, pb, route};

/// Stat prefix of the ingress HTTP connection managers and TCP proxies.
pub(crate) const INGRESS_STAT_PREFIX: &str = "ingress";

/// The listener address: `0.0.0.0`, or `::` with `ipv4_compat` when an IP preference is set
/// on the node or the mesh (App Mesh's behaviour); [`TranslateOptions::listen_address`]
/// when set (explicit mode).
///
/// [`TranslateOptions::listen_address`]: crate::TranslateOptions::listen_address
pub(crate) fn listen_address(
    ctx: &Ctx<'_>,
    port: u32,
) -> envoy_types::pb::envoy::config::core::v3::Address {
    if let Some(ip) = ctx.opts.listen_address {
        pb::socket(&ip.to_string(), port, false)
    } else if ctx.ip_preference_of(ctx.node).is_some() {
        pb::socket("::", port, true)
    } else {
        pb::socket("0.0.0.0", port, false)
    }
}

/// The HTTP timeouts declared on a listener for its protocol.
pub(crate) fn listener_http_timeout(l: &NodeListener) -> Option<&HttpTimeout> {
    match (&l.timeout, &l.port_mapping.protocol) {
        (Some(ListenerTimeout::Http(t)), PortProtocol::Http)
        | (Some(ListenerTimeout::Http2(t)), PortProtocol::Http2)
        | (Some(ListenerTimeout::Grpc(t)), PortProtocol::Grpc) => Some(t),
        _ => None,
    }
}

/// The TCP idle timeout declared on a tcp listener, in milliseconds.
pub(crate) fn listener_tcp_idle_ms(l: &NodeListener) -> Option<i64> {
    match (&l.timeout, &l.port_mapping.protocol) {
        (Some(ListenerTimeout::Tcp(t)), PortProtocol::Tcp) => {
            t.idle.as_ref().map(|d| d.as_millis())
        }
        _ => None,
    }
}

/// Adds the ingress listener and clusters of the proxy's node (nothing without listeners).
pub(crate) fn ingress(ctx: &mut Ctx<'_>) {
    let node = ctx.node;
    let mut chains = Vec::new();
    let mut seen = BTreeSet::new();
    // Ports of PERMISSIVE listeners, where `tls_inspector` must run.
    let mut inspect: Vec<u32> = Vec::new();
    let mut listeners: Vec<&NodeListener> = node.listeners().iter().collect();
    listeners.sort_by_key(|l| l.port_mapping.port);
    for l in listeners {
        let pm = &l.port_mapping;
        if !(1..=65535).contains(&pm.port) || !pm.protocol.is_known() {
            ctx.diag(
                Severity::Error,
                DiagnosticCode::InvalidValue,
                Some(ctx.node_id()),
                format!(
                    "listener {} {} is not a valid port mapping; skipped",
                    pm.protocol, pm.port
                ),
            );
            continue;
        }
        if !seen.insert(pm.port) {
            ctx.diag(
                Severity::Error,
                DiagnosticCode::InvalidValue,
                Some(ctx.node_id()),
                format!(
                    "port {} has several listeners; only the first is served",
                    pm.port
                ),
            );
            continue;
        }
        // TLS: STRICT serves TLS only, PERMISSIVE TLS and plaintext on the same port (two
        // filter chains told apart by `tls_inspector`), DISABLED plaintext. Sources not
        // translated yet fail closed: STRICT is not served at all; PERMISSIVE accepts
        // plaintext by definition and is served in plaintext only.
        let plan = match crate::tls::listener_plan(l.tls.as_ref(), cluster::is_http(&pm.protocol)) {
            Ok(plan) => plan,
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
                    Some(ctx.node_id()),
                    format!(
                        "listener {} {}: TLS mode {mode}: {}; {outcome}",
                        pm.protocol, pm.port, e.why
                    ),
                );
                if e.strict {
                    continue;
                }
                crate::tls::ListenerPlan {
                    socket: None,
                    plaintext: true,
                }
            }
        };
        let c = cluster::ingress_cluster(ctx, l);
        let cluster_name = c.name.clone();
        ctx.add_cluster(c);
        let logs = access_log::access_logs(node.logging.as_ref());
        let filter = if cluster::is_http(&pm.protocol) {
            let t = listener_http_timeout(l);
            let action = route::action(
                &[(cluster_name, 1)],
                t,
                ctx.opts.default_route_timeout_ms,
                None,
            );
            let m = RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_owned())),
                ..Default::default()
            };
            let rc = RouteConfiguration {
                name: names::ingress_route_config(&pm.protocol, pm.port),
                virtual_hosts: vec![VirtualHost {
                    name: format!("{}_{}_{}", ctx.node_name, pm.protocol, pm.port),
                    domains: vec!["*".to_owned()],
                    routes: vec![route::envoy_route("ingress", m, action)],
                    ..Default::default()
                }],
                validate_clusters: Some(envoy_types::pb::google::protobuf::BoolValue {
                    value: false,
                }),
                ..Default::default()
            };
            hcm(INGRESS_STAT_PREFIX, Routes::Inline(Box::new(rc)), logs)
        } else {
            tcp_proxy(
                INGRESS_STAT_PREFIX,
                &[(cluster_name, 1)],
                listener_tcp_idle_ms(l).map(pb::millis),
                logs,
            )
        };
        ctx.ingress_ports.insert(pb::clamp_u32(pm.port));
        if plan.socket.is_some() && plan.plaintext {
            // PERMISSIVE: the inspector tells TLS from plaintext on this port only.
            inspect.push(pb::clamp_u32(pm.port));
        }
        let m = FilterChainMatch {
            destination_port: Some(pb::u32v(pm.port)),
            ..Default::default()
        };
        chains.extend(crate::tls::filter_chains(
            &format!("ingress_{}_{}", pm.protocol, pm.port),
            Some(m),
            vec![filter],
            plan,
        ));
    }
    if chains.is_empty() {
        return;
    }
    let port = ctx.opts.ingress_port;
    let listener = Listener {
        name: names::ingress_listener(port),
        address: Some(listen_address(ctx, port)),
        filter_chains: chains,
        listener_filters: std::iter::once(original_dst())
            .chain(inspect.iter().map(|p| tls_inspector_on(*p as i32)))
            .collect(),
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Default::default()
    };
    ctx.out.listeners.insert(listener.name.clone(), listener);
}

/// Explicit mode, after the egress side is built: the ingress listener also binds
/// `<address>:<listener port>` for each listener, so callers reach the filter chain of that
/// port without iptables (the application listens on its own address). A port the egress
/// listener already binds (a backend on the same port, App Mesh's common "everything on
/// 8080") stays with egress, as in explicit mode before, and is reported.
pub(crate) fn explicit_ingress_addresses(ctx: &mut Ctx<'_>) {
    if ctx.opts.listen_address.is_none() {
        return;
    }
    let name = names::ingress_listener(ctx.opts.ingress_port);
    if !ctx.out.listeners.contains_key(&name) {
        return;
    }
    let mut addresses = Vec::new();
    for p in ctx.ingress_ports.clone() {
        if p == ctx.opts.ingress_port {
            continue;
        }
        if p == ctx.opts.egress_port || ctx.egress_ports.contains(&p) {
            ctx.diag(
                Severity::Warning,
                DiagnosticCode::EgressPortConflict,
                Some(ctx.node_id()),
                format!(
                    "explicit mode: listener port {p} is also an egress port of this node, bound by its egress listener; the listener is not reachable on {p} in explicit mode"
                ),
            );
            continue;
        }
        addresses.push(AdditionalAddress {
            address: Some(listen_address(ctx, p)),
            ..Default::default()
        });
    }
    if let Some(l) = ctx.out.listeners.get_mut(&name) {
        l.additional_addresses = addresses;
    }
}
