//! `VirtualRouterSpec` checks: listener port mappings and unique ports.

use crate::validate::{Checker, common, virtual_node};
use crate::virtual_router::VirtualRouterSpec;

/// Checks a virtual router spec rooted at `path`.
///
/// Router listeners accept all four protocols (`http|tcp|http2|grpc`), like nodes.
/// Semantic rule: two listeners may not share a port.
///
/// Decision: a router without listeners is accepted; the model makes the list optional
/// and a router with no listener simply receives no traffic until one is added.
pub(crate) fn validate(c: &mut Checker, path: &str, s: &VirtualRouterSpec) {
    let mut ports = Vec::new();
    for (i, l) in s.listeners().iter().enumerate() {
        let pm_path = format!("{path}.listeners[{i}].portMapping");
        if let Some(p) = common::port_mapping(c, &pm_path, &l.port_mapping, false) {
            ports.push((i, p));
        }
    }
    virtual_node::duplicate_ports(c, path, &ports);
}
