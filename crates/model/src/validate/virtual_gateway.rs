//! `VirtualGatewaySpec` checks: the virtual-node listener checks with the narrower
//! gateway protocol enum (`http|http2|grpc`, no `tcp`).

use crate::validate::{Checker, common, virtual_node};
use crate::virtual_gateway::{
    VirtualGatewayConnectionPool, VirtualGatewayListener, VirtualGatewaySpec,
};

/// Checks a virtual gateway spec rooted at `path`.
///
/// Semantic rules: at least one listener (the model requires the list, a gateway with
/// none cannot receive traffic) and no two listeners on the same port.
pub(crate) fn validate(c: &mut Checker, path: &str, s: &VirtualGatewaySpec) {
    if let Some(cp) = s
        .backend_defaults
        .as_ref()
        .and_then(|d| d.client_policy.as_ref())
    {
        common::client_policy(c, &format!("{path}.backendDefaults.clientPolicy"), cp);
    }
    c.at_least_items(&format!("{path}.listeners"), s.listeners.len(), 1);
    let mut ports = Vec::new();
    for (i, l) in s.listeners.iter().enumerate() {
        if let Some(p) = listener(c, &format!("{path}.listeners[{i}]"), l) {
            ports.push((i, p));
        }
    }
    virtual_node::duplicate_ports(c, path, &ports);
    if let Some(l) = &s.logging {
        common::logging(c, &format!("{path}.logging"), l);
    }
}

/// One gateway listener; returns its port when valid. Same semantic rules as a node
/// listener: the health-check port equals the listener port and the connection pool
/// member matches the listener protocol.
fn listener(c: &mut Checker, path: &str, l: &VirtualGatewayListener) -> Option<i64> {
    let port = common::port_mapping(c, &format!("{path}.portMapping"), &l.port_mapping, true);
    if let Some(pool) = &l.connection_pool {
        let pool_path = format!("{path}.connectionPool");
        connection_pool(c, &pool_path, pool);
        // A `tcp` gateway listener is already reported; don't add a pool mismatch on top.
        if common::GATEWAY_PROTOCOLS.contains(&l.port_mapping.protocol.as_str()) {
            common::member_matches_protocol(c, &pool_path, pool.member(), &l.port_mapping.protocol);
        }
    }
    if let Some(hc) = &l.health_check {
        common::health_check(c, &format!("{path}.healthCheck"), hc, port, true);
    }
    if let Some(tls) = &l.tls {
        common::listener_tls(c, &format!("{path}.tls"), tls);
    }
    port
}

/// `VirtualGatewayConnectionPool`: every limit is an `int` of at least 1.
fn connection_pool(c: &mut Checker, path: &str, pool: &VirtualGatewayConnectionPool) {
    let path = format!("{path}.{}", pool.member());
    match pool {
        VirtualGatewayConnectionPool::Grpc(p) | VirtualGatewayConnectionPool::Http2(p) => {
            common::pool_max_requests(c, &path, p);
        }
        VirtualGatewayConnectionPool::Http(p) => {
            common::http_pool(c, &path, p);
        }
    }
}
