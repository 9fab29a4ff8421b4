//! `VirtualNodeSpec` checks.

use std::sync::LazyLock;

use regex::Regex;

use crate::validate::{Checker, INT_MAX, common};
use crate::virtual_node::{
    AwsCloudMapServiceDiscovery, Backend, DnsServiceDiscovery, Listener, ServiceDiscovery,
    VirtualNodeConnectionPool, VirtualNodeSpec,
};

/// `AwsCloudMapInstanceAttribute.key` pattern, as the model spells it.
const ATTRIBUTE_KEY_PATTERN: &str = "^[a-zA-Z0-9!-~]+$";
/// `AwsCloudMapInstanceAttribute.value` pattern, as the model spells it.
const ATTRIBUTE_VALUE_PATTERN: &str =
    r"^([a-zA-Z0-9!-~][\x20a-zA-Z0-9!-~]*){0,1}[a-zA-Z0-9!-~]{0,1}$";

static ATTRIBUTE_KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(ATTRIBUTE_KEY_PATTERN).expect("attribute key pattern compiles"));
static ATTRIBUTE_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(ATTRIBUTE_VALUE_PATTERN).expect("attribute value pattern compiles")
});

/// Checks a virtual node spec rooted at `path`.
///
/// Semantic rules (api.md §6): a node with listeners needs `serviceDiscovery`;
/// listener ports are unique; backends are unique; plus the per-listener rules in
/// [`listener`].
pub(crate) fn validate(c: &mut Checker, path: &str, s: &VirtualNodeSpec) {
    if let Some(cp) = s
        .backend_defaults
        .as_ref()
        .and_then(|d| d.client_policy.as_ref())
    {
        common::client_policy(c, &format!("{path}.backendDefaults.clientPolicy"), cp);
    }

    let backends = s.backends();
    for (i, b) in backends.iter().enumerate() {
        let Backend::VirtualService(vs) = b;
        if let Some(cp) = &vs.client_policy {
            common::client_policy(
                c,
                &format!("{path}.backends[{i}].virtualService.clientPolicy"),
                cp,
            );
        }
    }
    let names: Vec<&str> = s.backend_service_names().collect();
    c.unique(&names, "backend", |i| {
        format!("{path}.backends[{i}].virtualService.virtualServiceName")
    });

    let listeners = s.listeners();
    let mut ports = Vec::with_capacity(listeners.len());
    for (i, l) in listeners.iter().enumerate() {
        let l_path = format!("{path}.listeners[{i}]");
        if let Some(p) = listener(c, &l_path, l) {
            ports.push((i, p));
        }
    }
    duplicate_ports(c, path, &ports);

    if let Some(l) = &s.logging {
        common::logging(c, &format!("{path}.logging"), l);
    }

    match &s.service_discovery {
        Some(sd) => service_discovery(c, &format!("{path}.serviceDiscovery"), sd),
        None if !listeners.is_empty() => c.report(
            format!("{path}.serviceDiscovery"),
            "is required when listeners are present",
        ),
        None => {}
    }
}

/// Reports listener ports (given as `(listener index, valid port)`) used twice, at the
/// later listener's `portMapping.port`. Shared by nodes, routers and gateways.
pub(crate) fn duplicate_ports(c: &mut Checker, path: &str, ports: &[(usize, i64)]) {
    for (k, (i, p)) in ports.iter().enumerate() {
        if let Some((first, _)) = ports[..k].iter().find(|(_, q)| q == p) {
            c.report(
                format!("{path}.listeners[{i}].portMapping.port"),
                format!(
                    "duplicate port {p}, already used at {path}.listeners[{first}].portMapping.port"
                ),
            );
        }
    }
}

/// One `Listener`; returns its port when valid.
///
/// Semantic rules: the health-check port equals the listener port, and the connection
/// pool and timeout members match the listener protocol.
fn listener(c: &mut Checker, path: &str, l: &Listener) -> Option<i64> {
    let port = common::port_mapping(c, &format!("{path}.portMapping"), &l.port_mapping, false);
    let protocol = &l.port_mapping.protocol;
    if let Some(pool) = &l.connection_pool {
        connection_pool(c, &format!("{path}.connectionPool"), pool);
        common::member_matches_protocol(
            c,
            &format!("{path}.connectionPool"),
            pool.member(),
            protocol,
        );
    }
    if let Some(hc) = &l.health_check {
        common::health_check(c, &format!("{path}.healthCheck"), hc, port, false);
    }
    if let Some(od) = &l.outlier_detection {
        common::outlier_detection(c, &format!("{path}.outlierDetection"), od);
    }
    if let Some(t) = &l.timeout {
        common::listener_timeout(c, &format!("{path}.timeout"), t, protocol);
    }
    if let Some(tls) = &l.tls {
        common::listener_tls(c, &format!("{path}.tls"), tls);
    }
    port
}

/// `VirtualNodeConnectionPool`: every limit is an `int` of at least 1.
fn connection_pool(c: &mut Checker, path: &str, pool: &VirtualNodeConnectionPool) {
    let path = format!("{path}.{}", pool.member());
    match pool {
        VirtualNodeConnectionPool::Grpc(p) | VirtualNodeConnectionPool::Http2(p) => {
            common::pool_max_requests(c, &path, p);
        }
        VirtualNodeConnectionPool::Http(p) => {
            common::http_pool(c, &path, p);
        }
        VirtualNodeConnectionPool::Tcp(p) => {
            c.range(
                &format!("{path}.maxConnections"),
                p.max_connections,
                1,
                INT_MAX,
            );
        }
    }
}

/// `ServiceDiscovery`.
fn service_discovery(c: &mut Checker, path: &str, sd: &ServiceDiscovery) {
    let path = format!("{path}.{}", sd.member());
    match sd {
        ServiceDiscovery::AwsCloudMap(m) => cloud_map(c, &path, m),
        ServiceDiscovery::Dns(d) => dns(c, &path, d),
    }
}

fn cloud_map(c: &mut Checker, path: &str, m: &AwsCloudMapServiceDiscovery) {
    for (i, a) in m.attributes.iter().flatten().enumerate() {
        let key = format!("{path}.attributes[{i}].key");
        if c.len(&key, &a.key, 1, 255) {
            c.pattern(&key, &a.key, &ATTRIBUTE_KEY, ATTRIBUTE_KEY_PATTERN);
        }
        let value = format!("{path}.attributes[{i}].value");
        if c.len(&value, &a.value, 1, 1024) {
            c.pattern(&value, &a.value, &ATTRIBUTE_VALUE, ATTRIBUTE_VALUE_PATTERN);
        }
    }
    if let Some(ip) = &m.ip_preference {
        c.known(&format!("{path}.ipPreference"), ip);
    }
    c.len(&format!("{path}.namespaceName"), &m.namespace_name, 1, 1024);
    c.len(&format!("{path}.serviceName"), &m.service_name, 1, 1024);
}

/// `DnsServiceDiscovery`. Decision: the model sets no length on `hostname`, but a
/// blank hostname cannot be resolved, so it must not be blank.
fn dns(c: &mut Checker, path: &str, d: &DnsServiceDiscovery) {
    if d.hostname.trim().is_empty() {
        c.report(
            format!("{path}.hostname"),
            format!("must not be blank, got {:?}", d.hostname),
        );
    }
    if let Some(ip) = &d.ip_preference {
        c.known(&format!("{path}.ipPreference"), ip);
    }
    if let Some(rt) = &d.response_type {
        c.known(&format!("{path}.responseType"), rt);
    }
}
