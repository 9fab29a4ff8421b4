//! `RouteSpec` checks: one route kind, matches, weighted targets, retry policies, timeouts.

use crate::common::{Duration, GrpcRetryPolicyEvent, TcpRetryPolicyEvent};
use crate::route::{
    GrpcRetryPolicy, GrpcRoute, GrpcRouteMatch, HttpRetryPolicy, HttpRoute, HttpRouteMatch,
    RouteSpec, TcpRoute,
};
use crate::validate::{Checker, WireEnum, common};

/// The HTTP retry events App Mesh documents. The model types `httpRetryEvents` as a free
/// string of 1..25 characters, but only these have a meaning (api.md §5.2 note), so any
/// other value is rejected.
pub(crate) const HTTP_RETRY_EVENTS: &[&str] = &[
    "server-error",
    "gateway-error",
    "client-error",
    "stream-error",
];

/// The route kinds of a `RouteSpec`, in model order.
const ROUTE_KINDS: &[&str] = &["grpcRoute", "http2Route", "httpRoute", "tcpRoute"];

/// Checks a route spec rooted at `path`.
///
/// Semantic rule: exactly one of `httpRoute`, `http2Route`, `grpcRoute`, `tcpRoute`
/// ("Specify one route type"; the model makes them plain optional members).
pub(crate) fn validate(c: &mut Checker, path: &str, s: &RouteSpec) {
    let set = [
        s.grpc_route.is_some(),
        s.http2_route.is_some(),
        s.http_route.is_some(),
        s.tcp_route.is_some(),
    ];
    exactly_one_kind(c, path, ROUTE_KINDS, &set);
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
    if let Some(r) = &s.tcp_route {
        tcp_route(c, &format!("{path}.tcpRoute"), r);
    }
}

/// Reports, at `path`, a route spec that sets no route kind or more than one.
pub(crate) fn exactly_one_kind(c: &mut Checker, path: &str, kinds: &[&str], set: &[bool]) {
    let present: Vec<&str> = kinds
        .iter()
        .zip(set)
        .filter(|(_, s)| **s)
        .map(|(k, _)| *k)
        .collect();
    if present.len() == 1 {
        return;
    }
    let got = if present.is_empty() {
        "none".to_owned()
    } else {
        present.join(" and ")
    };
    c.report(
        path,
        format!("exactly one of {} must be set, got {got}", kinds.join(", ")),
    );
}

/// `HttpRoute` (for both `httpRoute` and `http2Route`).
fn http_route(c: &mut Checker, path: &str, r: &HttpRoute) {
    common::weighted_targets(
        c,
        &format!("{path}.action.weightedTargets"),
        &r.action.weighted_targets,
    );
    http_route_match(c, &format!("{path}.match"), &r.match_);
    if let Some(rp) = &r.retry_policy {
        http_retry_policy(c, &format!("{path}.retryPolicy"), rp);
    }
    if let Some(t) = &r.timeout {
        common::http_timeout(c, &format!("{path}.timeout"), t);
    }
}

/// `HttpRouteMatch`.
///
/// Decision: a route match needs at most one of `prefix` or `path`, and one of them
/// unless `port` is set. The model makes both optional; App Mesh accepts a match on
/// `port` alone (AWS's howto-multiple-listeners example routes by port only), which
/// matches every request arriving on that listener port (translated as prefix `/`).
/// A match with neither and no port has no stated meaning, and one with both is
/// ambiguous. (Gateway routes are different, see `gateway_route`.) `prefix` must start
/// with `/`.
///
/// `scheme` is accepted on `httpRoute` too: the docs say it is only *applicable* to
/// http2 routes, which reads as "ignored", not "invalid".
fn http_route_match(c: &mut Checker, path: &str, m: &HttpRouteMatch) {
    if let Some(h) = &m.headers {
        common::header_matches(c, &format!("{path}.headers"), h);
    }
    if let Some(method) = &m.method {
        c.known(&format!("{path}.method"), method);
    }
    match (&m.prefix, &m.path) {
        (None, None) if m.port.is_none() => c.report(
            path,
            "exactly one of prefix, path must be set (or port alone), got none",
        ),
        (Some(_), Some(_)) => c.report(
            path,
            "exactly one of prefix, path must be set, got prefix and path",
        ),
        _ => {}
    }
    if let Some(p) = &m.path {
        common::http_path_match(c, &format!("{path}.path"), p);
    }
    if let Some(p) = m.port {
        common::port(c, &format!("{path}.port"), p);
    }
    if let Some(p) = &m.prefix {
        common::path_prefix(c, &format!("{path}.prefix"), p);
    }
    if let Some(q) = &m.query_parameters {
        common::query_parameters(c, &format!("{path}.queryParameters"), q);
    }
    if let Some(s) = &m.scheme {
        c.known(&format!("{path}.scheme"), s);
    }
}

/// `GrpcRoute`.
fn grpc_route(c: &mut Checker, path: &str, r: &GrpcRoute) {
    common::weighted_targets(
        c,
        &format!("{path}.action.weightedTargets"),
        &r.action.weighted_targets,
    );
    grpc_route_match(c, &format!("{path}.match"), &r.match_);
    if let Some(rp) = &r.retry_policy {
        grpc_retry_policy(c, &format!("{path}.retryPolicy"), rp);
    }
    if let Some(t) = &r.timeout {
        common::http_timeout(c, &format!("{path}.timeout"), t);
    }
}

/// `GrpcRouteMatch`; semantic rule: `methodName` requires `serviceName`.
fn grpc_route_match(c: &mut Checker, path: &str, m: &GrpcRouteMatch) {
    if let Some(md) = &m.metadata {
        common::header_matches(c, &format!("{path}.metadata"), md);
    }
    if let Some(name) = &m.method_name {
        let m_path = format!("{path}.methodName");
        c.len(&m_path, name, 1, 50);
        if m.service_name.is_none() {
            c.report(m_path, "requires serviceName to be set");
        }
    }
    if let Some(p) = m.port {
        common::port(c, &format!("{path}.port"), p);
    }
}

/// `TcpRoute`.
fn tcp_route(c: &mut Checker, path: &str, r: &TcpRoute) {
    common::weighted_targets(
        c,
        &format!("{path}.action.weightedTargets"),
        &r.action.weighted_targets,
    );
    if let Some(p) = r.match_.as_ref().and_then(|m| m.port) {
        common::port(c, &format!("{path}.match.port"), p);
    }
    if let Some(t) = &r.timeout {
        common::tcp_timeout(c, &format!("{path}.timeout"), t);
    }
}

/// `HttpRetryPolicy`.
fn http_retry_policy(c: &mut Checker, path: &str, rp: &HttpRetryPolicy) {
    let mut listed = false;
    if let Some(list) = &rp.http_retry_events {
        listed = true;
        http_retry_events(c, &format!("{path}.httpRetryEvents"), list);
    }
    if let Some(list) = &rp.tcp_retry_events {
        listed = true;
        enum_events::<TcpRetryPolicyEvent>(c, &format!("{path}.tcpRetryEvents"), list, 1);
    }
    retry_common(c, path, rp.max_retries, &rp.per_retry_timeout, listed);
}

/// `GrpcRetryPolicy`.
fn grpc_retry_policy(c: &mut Checker, path: &str, rp: &GrpcRetryPolicy) {
    let mut listed = false;
    if let Some(list) = &rp.grpc_retry_events {
        listed = true;
        enum_events::<GrpcRetryPolicyEvent>(c, &format!("{path}.grpcRetryEvents"), list, 5);
    }
    if let Some(list) = &rp.http_retry_events {
        listed = true;
        http_retry_events(c, &format!("{path}.httpRetryEvents"), list);
    }
    if let Some(list) = &rp.tcp_retry_events {
        listed = true;
        enum_events::<TcpRetryPolicyEvent>(c, &format!("{path}.tcpRetryEvents"), list, 1);
    }
    retry_common(c, path, rp.max_retries, &rp.per_retry_timeout, listed);
}

/// `maxRetries >= 0`, `perRetryTimeout`, and the semantic rule "at least one retry
/// event". The latter is reported on the policy only when no event list is present at
/// all (`listed` is false); an empty list is already reported on the list itself
/// (lists have at least 1 item).
fn retry_common(
    c: &mut Checker,
    path: &str,
    max_retries: i64,
    per_retry_timeout: &Duration,
    listed: bool,
) {
    c.at_least(&format!("{path}.maxRetries"), max_retries, 0);
    common::duration(c, &format!("{path}.perRetryTimeout"), per_retry_timeout);
    if !listed {
        c.report(
            path,
            "must list at least one retry event (http, tcp or grpc)",
        );
    }
}

/// `httpRetryEvents`: 1..25 items, each 1..25 characters and one of the documented
/// events, no duplicates.
fn http_retry_events(c: &mut Checker, path: &str, list: &[String]) {
    let count_ok = c.items(path, list.len(), 1, 25);
    for (i, e) in list.iter().enumerate() {
        let e_path = format!("{path}[{i}]");
        if c.len(&e_path, e, 1, 25) {
            c.one_of(&e_path, e, HTTP_RETRY_EVENTS);
        }
    }
    // A list longer than its maximum necessarily repeats a value; the count error says it.
    if count_ok {
        c.unique(list, "retry event", |i| format!("{path}[{i}]"));
    }
}

/// An enum-typed event list: `1..max` items, known values, no duplicates.
fn enum_events<E: WireEnum + PartialEq + std::fmt::Debug>(
    c: &mut Checker,
    path: &str,
    list: &[E],
    max: usize,
) {
    let count_ok = c.items(path, list.len(), 1, max);
    for (i, e) in list.iter().enumerate() {
        c.known(&format!("{path}[{i}]"), e);
    }
    if count_ok {
        let wire: Vec<&str> = list.iter().map(|e| e.wire()).collect();
        c.unique(&wire, "retry event", |i| format!("{path}[{i}]"));
    }
}
