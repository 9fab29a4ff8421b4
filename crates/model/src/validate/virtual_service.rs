//! `VirtualServiceSpec` checks: the provider name lengths.

use crate::validate::Checker;
use crate::virtual_service::{VirtualServiceProvider, VirtualServiceSpec};

/// Checks a virtual service spec rooted at `path`; `{}` (no provider yet) is valid.
pub(crate) fn validate(c: &mut Checker, path: &str, s: &VirtualServiceSpec) {
    match &s.provider {
        Some(VirtualServiceProvider::VirtualNode(p)) => {
            let p_path = format!("{path}.provider.virtualNode.virtualNodeName");
            c.len(&p_path, &p.virtual_node_name, 1, 255);
        }
        Some(VirtualServiceProvider::VirtualRouter(p)) => {
            let p_path = format!("{path}.provider.virtualRouter.virtualRouterName");
            c.len(&p_path, &p.virtual_router_name, 1, 255);
        }
        None => {}
    }
}
