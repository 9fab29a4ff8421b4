//! App Mesh routes → Envoy routes: matches, ordering, retries and timeouts.
//!
//! # Matches
//! | App Mesh | Envoy |
//! | --- | --- |
//! | `prefix` | `match.prefix` (default `/` when neither prefix nor path is set) |
//! | `path.exact` / `path.regex` | `match.path` / `match.safe_regex` |
//! | `headers[].match` exact, prefix, suffix, regex | `headers[].string_match` |
//! | `headers[].match.range` | `headers[].range_match` (start inclusive, end exclusive) |
//! | `headers[]` without `match` | `headers[].present_match` |
//! | `headers[].invert` | `headers[].invert_match` |
//! | `method` / `scheme` | header matchers on `:method` / `:scheme` |
//! | `queryParameters[]` | `query_parameters[]` (exact, or present when no match) |
//! | `port` | selects the router listener (each egress port has its own RDS resource) |
//! | gRPC `serviceName` + `methodName` | `path: /<service>/<method>` and `grpc: {}` |
//! | gRPC `serviceName` only | `prefix: /<service>/` and `grpc: {}` |
//! | gRPC `metadata[]` | header matchers (same rules as HTTP headers) |
//!
//! Regexes are checked with the `regex` crate (RE2-like syntax) before they are sent: an
//! invalid regex would make Envoy reject the whole route configuration, so the offending
//! route is dropped with a diagnostic instead.
//!
//! # Order
//! Envoy evaluates routes in order and takes the first match. Routes are sorted by
//! 1. `priority` ascending (0 first); routes without priority come after all prioritised
//!    routes (as if their priority were 1001);
//! 2. then, for ties, the most specific match first: exact path, then regex path, then
//!    prefix (longest prefix first); then the route with more header, query, method and
//!    scheme conditions first. This reproduces App Mesh's "longest prefix wins" behaviour
//!    for unprioritised routes;
//! 3. then the route name (byte order), so the order never depends on input order.
//!
//! # Targets
//! Weighted targets become `weighted_clusters` (or a plain `cluster` for a single target) on
//! `cds_egress_<mesh>_<node>_<proto>_<port>`. Targets whose weight is 0 are kept (Envoy sends
//! them nothing) as long as some target has weight > 0; a route whose targets all vanish is
//! dropped with a diagnostic so the request gets Envoy's 404.
//!
//! # Retries
//! | App Mesh event | Envoy |
//! | --- | --- |
//! | `server-error` | `retriable-status-codes` 500–508, 510, 511 and `reset` |
//! | `gateway-error` | `gateway-error` (502, 503, 504) and `reset` |
//! | `client-error` | `retriable-status-codes` 409 |
//! | `stream-error` | `refused-stream` |
//! | tcp `connection-error` | `connect-failure` |
//! | grpc `cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable` | the Envoy gRPC tokens of the same names |
//!
//! `maxRetries` → `num_retries`, `perRetryTimeout` → `per_try_timeout`. A route without a
//! retry policy gets App Mesh's default: 2 retries on `connect-failure`, `refused-stream`,
//! `reset` and status 503 (plus `unavailable` for gRPC routes).
//!
//! # Timeouts
//! `timeout.perRequest` → route `timeout` (0 disables it; default 15 s), `timeout.idle` →
//! route `idle_timeout` (default: Envoy's).

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RetryPolicy, Route, RouteAction, RouteMatch,
    WeightedCluster, header_matcher, query_parameter_matcher, route, route_action, route_match,
    weighted_cluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::Int64Range;
use meshplane_model::common::{
    GrpcRetryPolicyEvent, HeaderMatch, HeaderMatchMethod, HttpTimeout, TcpRetryPolicyEvent,
};
use meshplane_model::route::{GrpcRetryPolicy, GrpcRouteMatch, HttpRetryPolicy, HttpRouteMatch};

use crate::pb;

/// Status codes App Mesh's `server-error` retries (api.md §6).
pub const SERVER_ERROR_CODES: [u32; 11] = [500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511];
/// Status codes App Mesh's `client-error` retries.
pub const CLIENT_ERROR_CODES: [u32; 1] = [409];

/// Sort key of a route inside a virtual host (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct OrderKey {
    priority: i64,
    /// 0 exact path, 1 regex path, 2 prefix.
    path_class: u8,
    /// Negated prefix length (longer first).
    neg_prefix_len: i64,
    /// Negated number of extra conditions (more first).
    neg_conditions: i64,
    name: String,
}

impl OrderKey {
    fn new(priority: Option<i64>, path: &PathSpec, conditions: usize, name: &str) -> Self {
        let (path_class, len) = match path {
            PathSpec::Exact(_) => (0, 0),
            PathSpec::Regex(_) => (1, 0),
            PathSpec::Prefix(p) => (2, p.len() as i64),
        };
        OrderKey {
            priority: priority.unwrap_or(1001),
            path_class,
            neg_prefix_len: -len,
            neg_conditions: -(conditions as i64),
            name: name.to_owned(),
        }
    }
}

impl OrderKey {
    /// The key with `n` more match conditions (a gateway route's hostname).
    pub(crate) fn with_more_conditions(mut self, n: usize) -> Self {
        self.neg_conditions -= n as i64;
        self
    }

    /// True when the route matches on a path prefix (so a prefix rewrite applies).
    pub(crate) fn is_prefix(&self) -> bool {
        self.path_class == 2
    }
}

enum PathSpec {
    Exact(String),
    Regex(String),
    Prefix(String),
}

/// A problem found while building a match; the route is dropped.
#[derive(Debug)]
pub(crate) struct BadMatch(pub String);

pub(crate) fn check_regex(r: &str) -> Result<(), BadMatch> {
    regex::Regex::new(r)
        .map(|_| ())
        .map_err(|e| BadMatch(format!("invalid regex `{r}`: {e}")))
}

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.to_owned(),
        ..Default::default()
    }
}

/// An HTTP header name Envoy accepts: an RFC 7230 token, optionally `:`-prefixed (pseudo
/// headers such as `:authority`).
fn check_header_name(name: &str) -> Result<(), BadMatch> {
    let token = name.strip_prefix(':').unwrap_or(name);
    let ok = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BadMatch(format!("invalid header name `{name}`")))
    }
}

/// Envoy requires prefix and suffix patterns to be non-empty.
fn non_empty<'v>(what: &str, name: &str, v: &'v str) -> Result<&'v str, BadMatch> {
    if v.is_empty() {
        Err(BadMatch(format!("header `{name}`: empty {what} match")))
    } else {
        Ok(v)
    }
}

fn header_matcher(h: &HeaderMatch) -> Result<HeaderMatcher, BadMatch> {
    use header_matcher::HeaderMatchSpecifier as S;
    check_header_name(&h.name)?;
    let string = |p| {
        S::StringMatch(StringMatcher {
            match_pattern: Some(p),
            ..Default::default()
        })
    };
    let spec = match &h.match_ {
        None => S::PresentMatch(true),
        Some(HeaderMatchMethod::Exact(v)) => string(string_matcher::MatchPattern::Exact(v.clone())),
        Some(HeaderMatchMethod::Prefix(v)) => string(string_matcher::MatchPattern::Prefix(
            non_empty("prefix", &h.name, v)?.to_owned(),
        )),
        Some(HeaderMatchMethod::Suffix(v)) => string(string_matcher::MatchPattern::Suffix(
            non_empty("suffix", &h.name, v)?.to_owned(),
        )),
        Some(HeaderMatchMethod::Regex(v)) => {
            check_regex(v)?;
            string(string_matcher::MatchPattern::SafeRegex(regex(v)))
        }
        Some(HeaderMatchMethod::Range(r)) => {
            if r.start >= r.end {
                return Err(BadMatch(format!(
                    "header `{}` range start {} must be below end {}",
                    h.name, r.start, r.end
                )));
            }
            S::RangeMatch(Int64Range {
                start: r.start,
                end: r.end,
            })
        }
    };
    Ok(HeaderMatcher {
        name: h.name.to_ascii_lowercase(),
        invert_match: h.invert.unwrap_or(false),
        header_match_specifier: Some(spec),
        ..Default::default()
    })
}

fn exact_header(name: &str, value: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(value.to_owned())),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn path_specifier(p: PathSpec) -> Result<route_match::PathSpecifier, BadMatch> {
    Ok(match p {
        PathSpec::Exact(s) => route_match::PathSpecifier::Path(s),
        PathSpec::Regex(s) => {
            check_regex(&s)?;
            route_match::PathSpecifier::SafeRegex(regex(&s))
        }
        PathSpec::Prefix(s) => route_match::PathSpecifier::Prefix(s),
    })
}

/// The Envoy match of an App Mesh HTTP/HTTP2 route, and its sort key.
pub(crate) fn http_match(
    m: &HttpRouteMatch,
    priority: Option<i64>,
    name: &str,
) -> Result<(RouteMatch, OrderKey), BadMatch> {
    let path = match (&m.path, &m.prefix) {
        (Some(p), _) if p.exact.is_some() => PathSpec::Exact(p.exact.clone().unwrap_or_default()),
        (Some(p), _) if p.regex.is_some() => PathSpec::Regex(p.regex.clone().unwrap_or_default()),
        (_, Some(prefix)) => PathSpec::Prefix(prefix.clone()),
        _ => PathSpec::Prefix("/".to_owned()),
    };
    let mut headers = Vec::new();
    for h in m.headers.iter().flatten() {
        headers.push(header_matcher(h)?);
    }
    if let Some(method) = &m.method {
        headers.push(exact_header(":method", method.as_str()));
    }
    if let Some(scheme) = &m.scheme {
        headers.push(exact_header(":scheme", scheme.as_str()));
    }
    if let Some(q) = m
        .query_parameters
        .iter()
        .flatten()
        .find(|q| q.name.is_empty())
    {
        return Err(BadMatch(format!(
            "empty query parameter name (match {:?})",
            q.match_
        )));
    }
    let query_parameters: Vec<QueryParameterMatcher> = m
        .query_parameters
        .iter()
        .flatten()
        .map(|q| QueryParameterMatcher {
            name: q.name.clone(),
            query_parameter_match_specifier: Some(
                match q.match_.as_ref().and_then(|x| x.exact.clone()) {
                    Some(v) => query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                        StringMatcher {
                            match_pattern: Some(string_matcher::MatchPattern::Exact(v)),
                            ..Default::default()
                        },
                    ),
                    None => {
                        query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true)
                    }
                },
            ),
        })
        .collect();
    let key = OrderKey::new(
        priority,
        &path,
        headers.len() + query_parameters.len(),
        name,
    );
    let rm = RouteMatch {
        path_specifier: Some(path_specifier(path)?),
        headers,
        query_parameters,
        ..Default::default()
    };
    Ok((rm, key))
}

/// The Envoy match of an App Mesh gRPC route, and its sort key.
pub(crate) fn grpc_match(
    m: &GrpcRouteMatch,
    priority: Option<i64>,
    name: &str,
) -> Result<(RouteMatch, OrderKey), BadMatch> {
    let path = match (&m.service_name, &m.method_name) {
        (Some(s), Some(meth)) => PathSpec::Exact(format!("/{s}/{meth}")),
        (Some(s), None) => PathSpec::Prefix(format!("/{s}/")),
        (None, Some(meth)) => {
            return Err(BadMatch(format!(
                "methodName `{meth}` requires serviceName"
            )));
        }
        (None, None) => PathSpec::Prefix("/".to_owned()),
    };
    let mut headers = Vec::new();
    for h in m.metadata.iter().flatten() {
        headers.push(header_matcher(h)?);
    }
    let key = OrderKey::new(priority, &path, headers.len(), name);
    let rm = RouteMatch {
        path_specifier: Some(path_specifier(path)?),
        headers,
        grpc: Some(route_match::GrpcRouteMatchOptions {}),
        ..Default::default()
    };
    Ok((rm, key))
}

/// Accumulates Envoy retry tokens and status codes in a canonical order.
#[derive(Default)]
struct RetryOn {
    tokens: BTreeSet<&'static str>,
    codes: BTreeSet<u32>,
}

impl RetryOn {
    fn http_event(&mut self, event: &str) -> bool {
        match event {
            "server-error" => {
                self.codes.extend(SERVER_ERROR_CODES);
                self.tokens.insert("reset");
            }
            "gateway-error" => {
                self.tokens.extend(["gateway-error", "reset"]);
            }
            "client-error" => {
                self.codes.extend(CLIENT_ERROR_CODES);
            }
            "stream-error" => {
                self.tokens.insert("refused-stream");
            }
            _ => return false,
        }
        true
    }

    fn tcp_event(&mut self, e: &TcpRetryPolicyEvent) -> bool {
        match e {
            TcpRetryPolicyEvent::ConnectionError => {
                self.tokens.insert("connect-failure");
                true
            }
            TcpRetryPolicyEvent::Unknown(_) => false,
        }
    }

    fn grpc_event(&mut self, e: &GrpcRetryPolicyEvent) -> bool {
        let t = match e {
            GrpcRetryPolicyEvent::Cancelled => "cancelled",
            GrpcRetryPolicyEvent::DeadlineExceeded => "deadline-exceeded",
            GrpcRetryPolicyEvent::Internal => "internal",
            GrpcRetryPolicyEvent::ResourceExhausted => "resource-exhausted",
            GrpcRetryPolicyEvent::Unavailable => "unavailable",
            GrpcRetryPolicyEvent::Unknown(_) => return false,
        };
        self.tokens.insert(t);
        true
    }

    fn into_policy(mut self, num_retries: i64, per_try_ms: Option<i64>) -> RetryPolicy {
        if !self.codes.is_empty() {
            self.tokens.insert("retriable-status-codes");
        }
        RetryPolicy {
            retry_on: self.tokens.into_iter().collect::<Vec<_>>().join(","),
            num_retries: Some(pb::u32v(num_retries)),
            per_try_timeout: per_try_ms.filter(|ms| *ms > 0).map(pb::millis),
            retriable_status_codes: self.codes.into_iter().collect(),
            ..Default::default()
        }
    }
}

/// Envoy retry policy of an HTTP route; unknown events are returned for a diagnostic.
pub(crate) fn http_retry(p: &HttpRetryPolicy) -> (RetryPolicy, Vec<String>) {
    let mut r = RetryOn::default();
    let mut unknown = Vec::new();
    for e in p.http_retry_events.iter().flatten() {
        if !r.http_event(e) {
            unknown.push(e.clone());
        }
    }
    for e in p.tcp_retry_events.iter().flatten() {
        if !r.tcp_event(e) {
            unknown.push(e.to_string());
        }
    }
    (
        r.into_policy(p.max_retries, Some(p.per_retry_timeout.as_millis())),
        unknown,
    )
}

/// Envoy retry policy of a gRPC route; unknown events are returned for a diagnostic.
pub(crate) fn grpc_retry(p: &GrpcRetryPolicy) -> (RetryPolicy, Vec<String>) {
    let mut r = RetryOn::default();
    let mut unknown = Vec::new();
    for e in p.http_retry_events.iter().flatten() {
        if !r.http_event(e) {
            unknown.push(e.clone());
        }
    }
    for e in p.tcp_retry_events.iter().flatten() {
        if !r.tcp_event(e) {
            unknown.push(e.to_string());
        }
    }
    for e in p.grpc_retry_events.iter().flatten() {
        if !r.grpc_event(e) {
            unknown.push(e.to_string());
        }
    }
    (
        r.into_policy(p.max_retries, Some(p.per_retry_timeout.as_millis())),
        unknown,
    )
}

/// App Mesh's default retry policy (routes without one): `n` retries on connect failure,
/// refused stream, reset and 503 (+ gRPC `unavailable`).
pub(crate) fn default_retry(grpc: bool, n: u32) -> RetryPolicy {
    let mut r = RetryOn::default();
    r.tokens
        .extend(["connect-failure", "refused-stream", "reset"]);
    r.codes.insert(503);
    if grpc {
        r.tokens.insert("unavailable");
    }
    r.into_policy(i64::from(n), None)
}

/// The Envoy route action to `clusters` (`(name, weight)`; at least one weight > 0).
pub(crate) fn action(
    clusters: &[(String, u32)],
    timeout: Option<&HttpTimeout>,
    default_timeout_ms: i64,
    retry: Option<RetryPolicy>,
) -> RouteAction {
    let cluster_specifier = match clusters {
        [(name, _)] => route_action::ClusterSpecifier::Cluster(name.clone()),
        many => route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|(name, w)| weighted_cluster::ClusterWeight {
                    name: name.clone(),
                    weight: Some(envoy_types::pb::google::protobuf::UInt32Value { value: *w }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    };
    let per_request = timeout
        .and_then(|t| t.per_request.as_ref())
        .map_or(default_timeout_ms, |d| d.as_millis());
    RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: Some(pb::millis(per_request)),
        idle_timeout: timeout
            .and_then(|t| t.idle.as_ref())
            .map(|d| pb::millis(d.as_millis())),
        retry_policy: retry,
        ..Default::default()
    }
}

/// An Envoy route.
pub(crate) fn envoy_route(name: &str, m: RouteMatch, a: RouteAction) -> Route {
    Route {
        name: name.to_owned(),
        r#match: Some(m),
        action: Some(route::Action::Route(a)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshplane_model::common::Duration;

    fn policy(events: &[&str]) -> HttpRetryPolicy {
        HttpRetryPolicy {
            http_retry_events: Some(events.iter().map(|s| s.to_string()).collect()),
            max_retries: 3,
            per_retry_timeout: Duration {
                unit: None,
                value: Some(2),
            },
            tcp_retry_events: Some(vec![TcpRetryPolicyEvent::ConnectionError]),
        }
    }

    #[test]
    fn http_retry_events_map_to_envoy_tokens() {
        let (p, unknown) = http_retry(&policy(&["server-error", "client-error", "stream-error"]));
        assert!(unknown.is_empty());
        assert_eq!(
            p.retry_on,
            "connect-failure,refused-stream,reset,retriable-status-codes"
        );
        assert_eq!(
            p.retriable_status_codes,
            [409, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511]
        );
        assert_eq!(p.num_retries.unwrap().value, 3);
        assert_eq!(p.per_try_timeout.unwrap().seconds, 2);
        let (p, unknown) = http_retry(&policy(&["gateway-error", "bogus"]));
        assert_eq!(unknown, ["bogus"]);
        assert_eq!(p.retry_on, "connect-failure,gateway-error,reset");
        assert!(p.retriable_status_codes.is_empty());
    }

    #[test]
    fn default_retry_is_app_mesh_default() {
        let p = default_retry(true, 2);
        assert_eq!(
            p.retry_on,
            "connect-failure,refused-stream,reset,retriable-status-codes,unavailable"
        );
        assert_eq!(p.retriable_status_codes, [503]);
        assert_eq!(p.num_retries.unwrap().value, 2);
    }

    #[test]
    fn order_prefers_priority_then_specificity_then_name() {
        let p = |s: &str| PathSpec::Prefix(s.to_owned());
        let mut keys = [
            OrderKey::new(None, &p("/"), 0, "a"),
            OrderKey::new(None, &p("/long"), 0, "b"),
            OrderKey::new(Some(5), &p("/"), 0, "c"),
            OrderKey::new(None, &PathSpec::Exact("/x".into()), 0, "d"),
            OrderKey::new(None, &p("/long"), 2, "e"),
        ];
        keys.sort();
        let names: Vec<_> = keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["c", "d", "e", "b", "a"]);
    }

    #[test]
    fn header_names_and_empty_patterns_are_checked() {
        let h = |name: &str, m| HeaderMatch {
            invert: None,
            match_: m,
            name: name.into(),
        };
        assert!(header_matcher(&h("x-ok", None)).is_ok());
        assert!(header_matcher(&h(":authority", None)).is_ok());
        assert!(header_matcher(&h("bad name", None)).is_err());
        assert!(header_matcher(&h("", None)).is_err());
        assert!(header_matcher(&h("x", Some(HeaderMatchMethod::Prefix(String::new())))).is_err());
        let range = meshplane_model::common::MatchRange { start: 5, end: 5 };
        assert!(header_matcher(&h("x", Some(HeaderMatchMethod::Range(range)))).is_err());
        assert_eq!(header_matcher(&h("X-Up", None)).unwrap().name, "x-up");
    }

    #[test]
    fn invalid_regex_is_reported_not_sent() {
        let m = HttpRouteMatch {
            path: Some(meshplane_model::common::HttpPathMatch {
                exact: None,
                regex: Some("(".into()),
            }),
            ..Default::default()
        };
        assert!(http_match(&m, None, "r").is_err());
    }
}
