//! `GatewayRouteSpec` checks: one route kind, matches, rewrites and the target.

use crate::gateway_route::{
    GatewayRouteHostnameRewrite, GatewayRouteSpec, GatewayRouteTarget, GrpcGatewayRoute,
    HttpGatewayRoute, HttpGatewayRouteMatch, HttpGatewayRouteRewrite,
};
use crate::validate::{Checker, common, route};

/// The gateway route kinds, in model order.
const ROUTE_KINDS: &[&str] = &["grpcRoute", "http2Route", "httpRoute"];

/// Prefixes App Mesh reserves for its own use on gateway routes (user guide,
/// "Gateway routes": "You can't specify either `/aws-appmesh*` or `/aws-app-mesh*`").
const RESERVED_PREFIXES: &[&str] = &["/aws-appmesh", "/aws-app-mesh"];

/// Checks a gateway route spec rooted at `path`.
///
/// Semantic rule: exactly one of `httpRoute`, `http2Route`, `grpcRoute`.
pub(crate) fn validate(c: &mut Checker, path: &str, s: &GatewayRouteSpec) {
    let set = [
        s.grpc_route.is_some(),
        s.http2_route.is_some(),
        s.http_route.is_some(),
    ];
    route::exactly_one_kind(c, path, ROUTE_KINDS, &set);
    if let Some(p) = s.priority {
        c.range(&format!("{path}.priority"), p, 0, 1000);
    }
    if let Some(r) = &s.grpc_route {
        grpc_route(c, &format!("{path}.grpcRoute"), r);
    }
    if let Some(r) = &s.http2_route {
        http_route(c, &format!("{path}.http2Route"), r);
    }
    if let Some(r) = &s.http_route {
        http_route(c, &format!("{path}.httpRoute"), r);
    }
}

/// `GatewayRouteTarget`.
fn target(c: &mut Checker, path: &str, t: &GatewayRouteTarget) {
    if let Some(p) = t.port {
        common::port(c, &format!("{path}.port"), p);
    }
    c.len(
        &format!("{path}.virtualService.virtualServiceName"),
        &t.virtual_service.virtual_service_name,
        1,
        255,
    );
}

fn hostname_rewrite(c: &mut Checker, path: &str, h: &GatewayRouteHostnameRewrite) {
    if let Some(d) = &h.default_target_hostname {
        c.known(&format!("{path}.defaultTargetHostname"), d);
    }
}

/// `HttpGatewayRoute` (for both `httpRoute` and `http2Route`).
fn http_route(c: &mut Checker, path: &str, r: &HttpGatewayRoute) {
    let action = format!("{path}.action");
    target(c, &format!("{action}.target"), &r.action.target);
    if let Some(rw) = &r.action.rewrite {
        rewrite(c, &format!("{action}.rewrite"), rw, &r.match_);
    }
    http_match(c, &format!("{path}.match"), &r.match_);
}

/// `HttpGatewayRouteRewrite`.
///
/// Semantic rules (user guide, "Gateway routes" → Rewrite): a prefix rewrite applies to
/// a prefix match and a path rewrite to a path (exact or regex) match; and a prefix
/// rewrite sets either `defaultPrefix` or `value`, not both (they contradict each other).
fn rewrite(c: &mut Checker, path: &str, rw: &HttpGatewayRouteRewrite, m: &HttpGatewayRouteMatch) {
    if let Some(h) = &rw.hostname {
        hostname_rewrite(c, &format!("{path}.hostname"), h);
    }
    if let Some(p) = &rw.path {
        let p_path = format!("{path}.path");
        if let Some(e) = &p.exact {
            c.len(&format!("{p_path}.exact"), e, 1, 255);
        }
        if m.path.is_none() {
            c.report(p_path, "requires the route to match on path");
        }
    }
    if let Some(p) = &rw.prefix {
        let p_path = format!("{path}.prefix");
        if let Some(d) = &p.default_prefix {
            c.known(&format!("{p_path}.defaultPrefix"), d);
        }
        if let Some(v) = &p.value {
            c.len(&format!("{p_path}.value"), v, 1, 255);
        }
        if p.default_prefix.is_some() && p.value.is_some() {
            c.report(
                &p_path,
                "at most one of defaultPrefix, value may be set, got both",
            );
        }
        if m.prefix.is_none() {
            c.report(p_path, "requires the route to match on prefix");
        }
    }
}

/// `HttpGatewayRouteMatch`.
///
/// Decision: unlike a virtual-router route, a gateway route may omit both `prefix` and
/// `path`: the user guide lists every match member as optional, and routing on hostname,
/// headers, method, query parameters or port alone is a documented use (the translator
/// then matches every path). Setting both is still ambiguous and rejected. A prefix
/// must start with `/` and may not use the reserved `/aws-appmesh*` / `/aws-app-mesh*`.
fn http_match(c: &mut Checker, path: &str, m: &HttpGatewayRouteMatch) {
    if let Some(h) = &m.headers {
        common::header_matches(c, &format!("{path}.headers"), h);
    }
    if let Some(h) = &m.hostname {
        common::hostname_match(c, &format!("{path}.hostname"), h);
    }
    if let Some(method) = &m.method {
        c.known(&format!("{path}.method"), method);
    }
    if m.prefix.is_some() && m.path.is_some() {
        c.report(
            path,
            "at most one of prefix, path may be set, got prefix and path",
        );
    }
    if let Some(p) = &m.path {
        common::http_path_match(c, &format!("{path}.path"), p);
    }
    if let Some(p) = m.port {
        common::port(c, &format!("{path}.port"), p);
    }
    if let Some(p) = &m.prefix {
        let p_path = format!("{path}.prefix");
        if common::path_prefix(c, &p_path, p)
            && let Some(r) = RESERVED_PREFIXES.iter().find(|r| p.starts_with(**r))
        {
            c.report(
                p_path,
                format!("must not start with the reserved prefix {r}*, got {p:?}"),
            );
        }
    }
    if let Some(q) = &m.query_parameters {
        common::query_parameters(c, &format!("{path}.queryParameters"), q);
    }
}

/// `GrpcGatewayRoute`.
fn grpc_route(c: &mut Checker, path: &str, r: &GrpcGatewayRoute) {
    let action = format!("{path}.action");
    target(c, &format!("{action}.target"), &r.action.target);
    if let Some(h) = r
        .action
        .rewrite
        .as_ref()
        .and_then(|rw| rw.hostname.as_ref())
    {
        hostname_rewrite(c, &format!("{action}.rewrite.hostname"), h);
    }
    let m_path = format!("{path}.match");
    let m = &r.match_;
    if let Some(h) = &m.hostname {
        common::hostname_match(c, &format!("{m_path}.hostname"), h);
    }
    if let Some(md) = &m.metadata {
        common::header_matches(c, &format!("{m_path}.metadata"), md);
    }
    if let Some(p) = m.port {
        common::port(c, &format!("{m_path}.port"), p);
    }
}
