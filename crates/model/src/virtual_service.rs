//! `VirtualServiceSpec`.

use serde::{Deserialize, Serialize};

/// `VirtualServiceSpec`: `{}` is valid (a service with no provider yet).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<VirtualServiceProvider>,
}

one_of! {
    /// `VirtualServiceProvider`.
    pub enum VirtualServiceProvider {
        VirtualNode("virtualNode", VirtualNodeServiceProvider),
        VirtualRouter("virtualRouter", VirtualRouterServiceProvider),
    }
}

/// `VirtualNodeServiceProvider`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualNodeServiceProvider {
    pub virtual_node_name: String,
}

/// `VirtualRouterServiceProvider`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualRouterServiceProvider {
    pub virtual_router_name: String,
}
