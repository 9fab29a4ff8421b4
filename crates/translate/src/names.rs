//! Envoy resource names. They are what dashboards, alarms and `config_dump` readers see, so
//! they follow App Mesh's observed conventions (envoy-compat.md §2.3) and never change for
//! the same input.
//!
//! | resource | name |
//! | --- | --- |
//! | ingress listener | `lds_ingress_0.0.0.0_<ingressPort>` (15000) |
//! | egress listener | `lds_egress_0.0.0.0_<egressPort>` (15001) |
//! | ingress cluster | `cds_ingress_<mesh>_<node>_<proto>_<port>` |
//! | egress cluster | `cds_egress_<mesh>_<targetNode>_<proto>_<port>` |
//! | pass-through cluster (`ALLOW_ALL`) | `cds_egress_<mesh>_passthrough` |
//! | `*.amazonaws.com:443` cluster (`DROP_ALL`) | `cds_egress_<mesh>_amazonaws` |
//! | egress route configuration (RDS) | `rds_egress_http_<port>` |
//! | ingress route configuration (inline) | `rds_ingress_<proto>_<port>` |
//! | gateway listener | `lds_ingress_0.0.0.0_<listenerPort>` |
//! | gateway route configuration (RDS, hop 1) | `rds_ingress_<proto>_<port>` |
//! | gateway self-redirect cluster (hop 1 → hop 2) | `cds_ingress_<mesh>_<gateway>_self_redirect_<proto>_<port>` |
//! | gateway hop-2 listener and route configuration | `lds_egress_0.0.0.0_<egressPort>`, `rds_egress_http_<egressPort>` |
//!
//! EDS resources (`ClusterLoadAssignment`) carry the name of their cluster. Listener names keep
//! `0.0.0.0` even when an IP preference makes the listener bind `::` (as App Mesh does), so
//! dashboards keyed on them keep working.

use meshplane_model::common::PortProtocol;

/// `lds_ingress_0.0.0.0_<port>`.
pub fn ingress_listener(port: u32) -> String {
    format!("lds_ingress_0.0.0.0_{port}")
}

/// `lds_egress_0.0.0.0_<port>`.
pub fn egress_listener(port: u32) -> String {
    format!("lds_egress_0.0.0.0_{port}")
}

/// `cds_ingress_<mesh>_<node>_<proto>_<port>`.
pub fn ingress_cluster(mesh: &str, node: &str, protocol: &PortProtocol, port: i64) -> String {
    format!("cds_ingress_{mesh}_{node}_{}_{port}", protocol.as_str())
}

/// `cds_egress_<mesh>_<targetNode>_<proto>_<port>`.
pub fn egress_cluster(mesh: &str, node: &str, protocol: &PortProtocol, port: i64) -> String {
    format!("cds_egress_{mesh}_{node}_{}_{port}", protocol.as_str())
}

/// `cds_egress_<mesh>_passthrough`: the `ORIGINAL_DST` cluster used under `ALLOW_ALL`.
pub fn passthrough_cluster(mesh: &str) -> String {
    format!("cds_egress_{mesh}_passthrough")
}

/// `cds_egress_<mesh>_amazonaws`: the `ORIGINAL_DST` cluster that keeps `*.amazonaws.com:443`
/// reachable under `DROP_ALL` (App Mesh's exception for AWS APIs).
pub fn amazonaws_cluster(mesh: &str) -> String {
    format!("cds_egress_{mesh}_amazonaws")
}

/// `rds_egress_http_<port>`: the RDS route configuration of one egress HTTP port.
pub fn egress_route_config(port: i64) -> String {
    format!("rds_egress_http_{port}")
}

/// `rds_ingress_<proto>_<port>`: the (inline) route configuration of one ingress port.
pub fn ingress_route_config(protocol: &PortProtocol, port: i64) -> String {
    format!("rds_ingress_{}_{port}", protocol.as_str())
}

/// `cds_ingress_<mesh>_<gateway>_self_redirect_<proto>_<port>`: the cluster from a gateway
/// listener (hop 1) to the gateway's own egress listener (hop 2).
pub fn gateway_self_redirect_cluster(
    mesh: &str,
    gateway: &str,
    protocol: &PortProtocol,
    port: i64,
) -> String {
    format!(
        "cds_ingress_{mesh}_{gateway}_self_redirect_{}_{port}",
        protocol.as_str()
    )
}
