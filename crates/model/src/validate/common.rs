//! Checks for the shapes shared by several specs (`crate::common`): durations, port
//! mappings, health checks, outlier detection, timeouts, TLS, logging and matches.

use crate::common::{
    ClientPolicy, ClientTlsCertificate, Duration, GatewayRouteHostnameMatch, HeaderMatch,
    HeaderMatchMethod, HealthCheckPolicy, HttpPathMatch, HttpQueryParameter, HttpTimeout,
    ListenerTimeout, ListenerTls, ListenerTlsCertificate, ListenerTlsValidationTrust, Logging,
    LoggingFormat, OutlierDetection, PortMapping, PortProtocol, SubjectAlternativeNames,
    TcpTimeout, TlsFileCertificate, TlsValidationContext, TlsValidationTrust, WeightedTarget,
};
use crate::validate::Checker;
use crate::virtual_node::{HttpConnectionPool, MaxRequests};

/// Protocols a virtual gateway accepts on listeners and health checks (no `tcp`).
pub(crate) const GATEWAY_PROTOCOLS: &[&str] = &["http", "http2", "grpc"];

/// `Duration`: `value >= 0`, `unit` one of `s|ms`.
pub(crate) fn duration(c: &mut Checker, path: &str, d: &Duration) {
    if let Some(unit) = &d.unit {
        c.known(&format!("{path}.unit"), unit);
    }
    if let Some(v) = d.value {
        c.at_least(&format!("{path}.value"), v, 0);
    }
}

/// A port number (1..65535).
pub(crate) fn port(c: &mut Checker, path: &str, p: i64) -> bool {
    c.range(path, p, 1, 65535)
}

/// `PortMapping`; `gateway` narrows the protocol to `http|http2|grpc`.
///
/// Returns the port when it is valid, for duplicate and health-check comparisons.
pub(crate) fn port_mapping(
    c: &mut Checker,
    path: &str,
    pm: &PortMapping,
    gateway: bool,
) -> Option<i64> {
    protocol(c, &format!("{path}.protocol"), &pm.protocol, gateway);
    port(c, &format!("{path}.port"), pm.port).then_some(pm.port)
}

/// A listener or health-check protocol, narrowed for gateways.
pub(crate) fn protocol(c: &mut Checker, path: &str, p: &PortProtocol, gateway: bool) -> bool {
    if gateway {
        c.one_of(path, p.as_str(), GATEWAY_PROTOCOLS)
    } else {
        c.known(path, p)
    }
}

/// `HealthCheckPolicy` (and the gateway variant when `gateway`).
///
/// Semantic rule (api.md §6): when `port` is set it must equal the listener's port.
/// The comparison is skipped when either port is already out of range.
pub(crate) fn health_check(
    c: &mut Checker,
    path: &str,
    hc: &HealthCheckPolicy,
    listener_port: Option<i64>,
    gateway: bool,
) {
    c.range(
        &format!("{path}.healthyThreshold"),
        hc.healthy_threshold,
        2,
        10,
    );
    c.range(
        &format!("{path}.intervalMillis"),
        hc.interval_millis,
        5000,
        300_000,
    );
    if let Some(p) = hc.port {
        let p_path = format!("{path}.port");
        if port(c, &p_path, p)
            && let Some(lp) = listener_port
            && p != lp
        {
            c.report(
                p_path,
                format!("must equal the listener port {lp}, got {p}"),
            );
        }
    }
    protocol(c, &format!("{path}.protocol"), &hc.protocol, gateway);
    c.range(
        &format!("{path}.timeoutMillis"),
        hc.timeout_millis,
        2000,
        60_000,
    );
    c.range(
        &format!("{path}.unhealthyThreshold"),
        hc.unhealthy_threshold,
        2,
        10,
    );
}

/// `OutlierDetection`.
///
/// Semantic rule: `interval` and `baseEjectionDuration` must be greater than zero
/// (Envoy rejects a zero interval, and a zero ejection time ejects nothing). The model
/// makes both members of `Duration` optional, so a missing value is reported too.
pub(crate) fn outlier_detection(c: &mut Checker, path: &str, od: &OutlierDetection) {
    for (name, d) in [
        ("baseEjectionDuration", &od.base_ejection_duration),
        ("interval", &od.interval),
    ] {
        let d_path = format!("{path}.{name}");
        duration(c, &d_path, d);
        match d.value {
            None => c.report(format!("{d_path}.value"), "is required"),
            Some(0) => c.report(format!("{d_path}.value"), "must be greater than 0, got 0"),
            Some(_) => {}
        }
    }
    c.range(
        &format!("{path}.maxEjectionPercent"),
        od.max_ejection_percent,
        0,
        100,
    );
    c.at_least(&format!("{path}.maxServerErrors"), od.max_server_errors, 1);
}

/// `HttpTimeout` / `GrpcTimeout`.
pub(crate) fn http_timeout(c: &mut Checker, path: &str, t: &HttpTimeout) {
    if let Some(d) = &t.idle {
        duration(c, &format!("{path}.idle"), d);
    }
    if let Some(d) = &t.per_request {
        duration(c, &format!("{path}.perRequest"), d);
    }
}

/// `TcpTimeout`.
pub(crate) fn tcp_timeout(c: &mut Checker, path: &str, t: &TcpTimeout) {
    if let Some(d) = &t.idle {
        duration(c, &format!("{path}.idle"), d);
    }
}

/// `ListenerTimeout`; semantic rule: the member must match the listener protocol
/// (an `http2` timeout on an `http` listener would silently do nothing).
pub(crate) fn listener_timeout(
    c: &mut Checker,
    path: &str,
    t: &ListenerTimeout,
    listener_protocol: &PortProtocol,
) {
    let member = t.member();
    match t {
        ListenerTimeout::Grpc(t) | ListenerTimeout::Http(t) | ListenerTimeout::Http2(t) => {
            http_timeout(c, &format!("{path}.{member}"), t)
        }
        ListenerTimeout::Tcp(t) => tcp_timeout(c, &format!("{path}.{member}"), t),
    }
    member_matches_protocol(c, path, member, listener_protocol);
}

/// Semantic rule shared by listener timeouts and connection pools: the one-of member
/// must be named after the listener protocol. Skipped when the protocol is unknown
/// (that is already reported on the port mapping).
pub(crate) fn member_matches_protocol(
    c: &mut Checker,
    path: &str,
    member: &str,
    listener_protocol: &PortProtocol,
) {
    if listener_protocol.is_known() && listener_protocol.as_str() != member {
        c.report(
            path,
            format!(
                "must use the listener protocol member {}, got {member}",
                listener_protocol.as_str()
            ),
        );
    }
}

/// `ListenerTlsFileCertificate`.
fn file_certificate(c: &mut Checker, path: &str, f: &TlsFileCertificate) {
    c.len(
        &format!("{path}.certificateChain"),
        &f.certificate_chain,
        1,
        255,
    );
    c.len(&format!("{path}.privateKey"), &f.private_key, 1, 255);
}

/// `SubjectAlternativeNames`.
///
/// Decision: the model requires the `exact` list but sets no item count; an empty list
/// would silently verify nothing (or, in Envoy, match no SAN), so at least one name is
/// required. Each name is 1..254 characters.
fn subject_alternative_names(c: &mut Checker, path: &str, san: &SubjectAlternativeNames) {
    let list = format!("{path}.match.exact");
    c.at_least_items(&list, san.match_.exact.len(), 1);
    for (i, name) in san.match_.exact.iter().enumerate() {
        c.len(&format!("{list}[{i}]"), name, 1, 254);
    }
}

/// `ListenerTls` (and `VirtualGatewayListenerTls`).
pub(crate) fn listener_tls(c: &mut Checker, path: &str, tls: &ListenerTls) {
    let cert = format!("{path}.certificate.{}", tls.certificate.member());
    match &tls.certificate {
        ListenerTlsCertificate::File(f) => file_certificate(c, &cert, f),
        ListenerTlsCertificate::Acm(_) | ListenerTlsCertificate::Sds(_) => {}
    }
    c.known(&format!("{path}.mode"), &tls.mode);
    if let Some(v) = &tls.validation {
        let v_path = format!("{path}.validation");
        if let Some(san) = &v.subject_alternative_names {
            subject_alternative_names(c, &format!("{v_path}.subjectAlternativeNames"), san);
        }
        if let ListenerTlsValidationTrust::File(f) = &v.trust {
            c.len(
                &format!("{v_path}.trust.file.certificateChain"),
                &f.certificate_chain,
                1,
                255,
            );
        }
    }
}

/// `TlsValidationContext` (client side).
fn tls_validation_context(c: &mut Checker, path: &str, v: &TlsValidationContext) {
    if let Some(san) = &v.subject_alternative_names {
        subject_alternative_names(c, &format!("{path}.subjectAlternativeNames"), san);
    }
    let trust = format!("{path}.trust.{}", v.trust.member());
    match &v.trust {
        TlsValidationTrust::Acm(a) => {
            c.items(
                &format!("{trust}.certificateAuthorityArns"),
                a.certificate_authority_arns.len(),
                1,
                3,
            );
        }
        TlsValidationTrust::File(f) => {
            c.len(
                &format!("{trust}.certificateChain"),
                &f.certificate_chain,
                1,
                255,
            );
        }
        TlsValidationTrust::Sds(_) => {}
    }
}

/// `ClientPolicy` (and `VirtualGatewayClientPolicy`).
pub(crate) fn client_policy(c: &mut Checker, path: &str, cp: &ClientPolicy) {
    let Some(tls) = &cp.tls else { return };
    let path = format!("{path}.tls");
    if let Some(cert) = &tls.certificate {
        let cert_path = format!("{path}.certificate.{}", cert.member());
        if let ClientTlsCertificate::File(f) = cert {
            file_certificate(c, &cert_path, f);
        }
    }
    for (i, p) in tls.ports.iter().flatten().enumerate() {
        port(c, &format!("{path}.ports[{i}]"), *p);
    }
    tls_validation_context(c, &format!("{path}.validation"), &tls.validation);
}

/// `Logging` (and `VirtualGatewayLogging`).
///
/// Semantic rules: a `json` format needs at least one key/value pair, and keys must be
/// unique (they become the members of one JSON object).
pub(crate) fn logging(c: &mut Checker, path: &str, l: &Logging) {
    let Some(crate::common::AccessLog::File(f)) = &l.access_log else {
        return;
    };
    let path = format!("{path}.accessLog.file");
    c.len(&format!("{path}.path"), &f.path, 1, 255);
    match &f.format {
        Some(LoggingFormat::Json(pairs)) => {
            let list = format!("{path}.format.json");
            c.at_least_items(&list, pairs.len(), 1);
            for (i, p) in pairs.iter().enumerate() {
                c.len(&format!("{list}[{i}].key"), &p.key, 1, 100);
                c.len(&format!("{list}[{i}].value"), &p.value, 1, 100);
            }
            let keys: Vec<&str> = pairs.iter().map(|p| p.key.as_str()).collect();
            c.unique(&keys, "key", |i| format!("{list}[{i}].key"));
        }
        Some(LoggingFormat::Text(t)) => {
            c.len(&format!("{path}.format.text"), t, 1, 1000);
        }
        None => {}
    }
}

/// A list of header (or gRPC metadata) matches: 1..10 items, each checked.
pub(crate) fn header_matches(c: &mut Checker, path: &str, list: &[HeaderMatch]) {
    c.items(path, list.len(), 1, 10);
    for (i, h) in list.iter().enumerate() {
        header_match(c, &format!("{path}[{i}]"), h);
    }
}

/// `HttpRouteHeader` / `GrpcRouteMetadata` and the gateway variants.
///
/// Semantic rules: a `range` must have `start < end` (start inclusive, end exclusive,
/// so `start == end` matches nothing); a `regex` must compile. Decision: the name must
/// be an HTTP header name (an RFC 7230 token, optionally after a leading `:` for pseudo
/// headers), because gRPC metadata are HTTP/2 headers too and Envoy rejects the whole
/// route configuration for any other name.
fn header_match(c: &mut Checker, path: &str, h: &HeaderMatch) {
    let name_path = format!("{path}.name");
    if c.len(&name_path, &h.name, 1, 50) && !is_header_name(&h.name) {
        c.report(
            name_path,
            format!(
                "must be an http header name (letters, digits and !#$%&'*+-.^_`|~, \
                 optionally after a leading ':'), got {:?}",
                h.name
            ),
        );
    }
    let Some(m) = &h.match_ else { return };
    let m_path = format!("{path}.match.{}", m.member());
    match m {
        HeaderMatchMethod::Exact(s)
        | HeaderMatchMethod::Prefix(s)
        | HeaderMatchMethod::Suffix(s) => {
            c.len(&m_path, s, 1, 255);
        }
        HeaderMatchMethod::Regex(s) => {
            if c.len(&m_path, s, 1, 255) {
                regex_syntax(c, &m_path, s);
            }
        }
        HeaderMatchMethod::Range(r) => {
            if r.start >= r.end {
                c.report(
                    m_path,
                    format!(
                        "start must be less than end, got start {} and end {}",
                        r.start, r.end
                    ),
                );
            }
        }
    }
}

/// `HttpPathMatch`: exactly one of `exact` / `regex`, each 1..255 characters.
pub(crate) fn http_path_match(c: &mut Checker, path: &str, pm: &HttpPathMatch) {
    match (&pm.exact, &pm.regex) {
        (None, None) => c.report(path, "exactly one of exact, regex must be set, got none"),
        (Some(_), Some(_)) => c.report(
            path,
            "exactly one of exact, regex must be set, got exact and regex",
        ),
        _ => {}
    }
    if let Some(s) = &pm.exact {
        c.len(&format!("{path}.exact"), s, 1, 255);
    }
    if let Some(s) = &pm.regex {
        let r_path = format!("{path}.regex");
        if c.len(&r_path, s, 1, 255) {
            regex_syntax(c, &r_path, s);
        }
    }
}

/// An HTTP header name: an RFC 7230 token, optionally after a leading `:`.
fn is_header_name(name: &str) -> bool {
    let token = name.strip_prefix(':').unwrap_or(name);
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Semantic rule: a regex must compile. Envoy uses RE2; the `regex` crate accepts the
/// same syntax (no backreferences, no lookaround), and an invalid regex would make Envoy
/// reject the whole route configuration, so it is refused here instead.
fn regex_syntax(c: &mut Checker, path: &str, s: &str) {
    if regex::Regex::new(s).is_err() {
        c.report(
            path,
            format!("must be a valid regular expression, got {s:?}"),
        );
    }
}

/// A list of `HttpQueryParameter`: 1..10 items.
///
/// Decision: the model sets no length on `name`, but an empty name matches nothing and
/// Envoy rejects it, so it must not be empty.
pub(crate) fn query_parameters(c: &mut Checker, path: &str, list: &[HttpQueryParameter]) {
    c.items(path, list.len(), 1, 10);
    for (i, q) in list.iter().enumerate() {
        if q.name.is_empty() {
            c.report(format!("{path}[{i}].name"), "must not be empty");
        }
    }
}

/// A route prefix must start with `/` (`/` alone matches everything).
pub(crate) fn path_prefix(c: &mut Checker, path: &str, prefix: &str) -> bool {
    if prefix.starts_with('/') {
        return true;
    }
    c.report(path, format!("must start with \"/\", got {prefix:?}"));
    false
}

/// `weightedTargets`: 1..10 items, each `port` 1..65535, `virtualNode` 1..255
/// characters, `weight` 0..100.
///
/// Semantic rules (api.md §6): the weights are relative but their total may not exceed
/// 100, and at least one target needs a positive weight (a total of 0 leaves nothing to
/// route to, and Envoy rejects weighted clusters whose weights sum to 0). Both are
/// reported on the list and only when every weight is in range and the list is not
/// empty, so they never restate an item-level problem.
pub(crate) fn weighted_targets(c: &mut Checker, path: &str, targets: &[WeightedTarget]) {
    c.items(path, targets.len(), 1, 10);
    let mut weights_ok = true;
    for (i, t) in targets.iter().enumerate() {
        let t_path = format!("{path}[{i}]");
        if let Some(p) = t.port {
            port(c, &format!("{t_path}.port"), p);
        }
        c.len(&format!("{t_path}.virtualNode"), &t.virtual_node, 1, 255);
        weights_ok &= c.range(&format!("{t_path}.weight"), t.weight, 0, 100);
    }
    if !weights_ok || targets.is_empty() {
        return;
    }
    let total: i64 = targets.iter().map(|t| t.weight).sum();
    if total > 100 {
        c.report(
            path,
            format!("total weight must be at most 100, got {total}"),
        );
    } else if total == 0 {
        c.report(
            path,
            "at least one target must have a weight greater than 0, got a total of 0",
        );
    }
}

/// `GatewayRouteHostnameMatch`: exactly one of `exact` / `suffix`, each 1..253 characters.
///
/// Decision: the model lists both as optional; a hostname match with neither matches
/// nothing useful and with both is ambiguous, so exactly one is required.
pub(crate) fn hostname_match(c: &mut Checker, path: &str, h: &GatewayRouteHostnameMatch) {
    match (&h.exact, &h.suffix) {
        (None, None) => c.report(path, "exactly one of exact, suffix must be set, got none"),
        (Some(_), Some(_)) => c.report(
            path,
            "exactly one of exact, suffix must be set, got exact and suffix",
        ),
        _ => {}
    }
    if let Some(s) = &h.exact {
        c.len(&format!("{path}.exact"), s, 1, 253);
    }
    if let Some(s) = &h.suffix {
        c.len(&format!("{path}.suffix"), s, 1, 253);
    }
}

/// `MaxRequests` of an http2/grpc connection pool (node or gateway): an `int` of at least 1.
pub(crate) fn pool_max_requests(c: &mut Checker, path: &str, p: &MaxRequests) {
    c.range(
        &format!("{path}.maxRequests"),
        p.max_requests,
        1,
        super::INT_MAX,
    );
}

/// An http connection pool (node or gateway): every limit is an `int` of at least 1.
pub(crate) fn http_pool(c: &mut Checker, path: &str, p: &HttpConnectionPool) {
    c.range(
        &format!("{path}.maxConnections"),
        p.max_connections,
        1,
        super::INT_MAX,
    );
    if let Some(n) = p.max_pending_requests {
        c.range(&format!("{path}.maxPendingRequests"), n, 1, super::INT_MAX);
    }
}
