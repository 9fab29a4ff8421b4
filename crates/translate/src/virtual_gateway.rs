//! Virtual gateways: not translated yet (tracked separately). The proxy gets an empty
//! configuration and an error diagnostic rather than a pretend translation.

use meshplane_model::NodeId;

use crate::{Diagnostic, DiagnosticCode, MeshSnapshot, ProxyConfig, Severity};

/// Reports that gateways are not translated (and whether the gateway exists at all).
pub(crate) fn translate(snap: &MeshSnapshot, node: &NodeId, out: &mut ProxyConfig) {
    let (code, message) = if snap.virtual_gateways.contains_key(&node.name) {
        (
            DiagnosticCode::VirtualGatewayNotTranslated,
            format!(
                "virtual gateways not yet translated: `{}` gets no configuration",
                node.name
            ),
        )
    } else {
        (
            DiagnosticCode::ProxyResourceMissing,
            format!(
                "virtual gateway `{}` does not exist in mesh `{}`",
                node.name, node.mesh
            ),
        )
    };
    out.diagnostics.push(Diagnostic {
        severity: Severity::Error,
        code,
        resource: Some(node.resource_id()),
        message,
    });
}
