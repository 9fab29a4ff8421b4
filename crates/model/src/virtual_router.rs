//! `VirtualRouterSpec`.

use serde::{Deserialize, Serialize};

use crate::common::PortMapping;

/// `VirtualRouterSpec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualRouterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners: Option<Vec<VirtualRouterListener>>,
}

impl VirtualRouterSpec {
    /// The listeners, empty when unset.
    pub fn listeners(&self) -> &[VirtualRouterListener] {
        self.listeners.as_deref().unwrap_or(&[])
    }
}

/// `VirtualRouterListener`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualRouterListener {
    pub port_mapping: PortMapping,
}
