//! `MeshSpec` checks: the egress filter type and the mesh-wide IP preference.

use crate::mesh::MeshSpec;
use crate::validate::Checker;

/// Checks a mesh spec rooted at `path`.
pub(crate) fn validate(c: &mut Checker, path: &str, s: &MeshSpec) {
    if let Some(f) = &s.egress_filter {
        c.known(&format!("{path}.egressFilter.type"), &f.type_);
    }
    if let Some(ip) = s
        .service_discovery
        .as_ref()
        .and_then(|sd| sd.ip_preference.as_ref())
    {
        c.known(&format!("{path}.serviceDiscovery.ipPreference"), ip);
    }
}
