//! `MeshSpec`.

use serde::{Deserialize, Serialize};

use crate::common::IpPreference;

string_enum! {
    /// `EgressFilterType`; `DROP_ALL` is the default.
    pub enum EgressFilterType { AllowAll = "ALLOW_ALL", DropAll = "DROP_ALL" }
}

/// `MeshSpec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_filter: Option<EgressFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_discovery: Option<MeshServiceDiscovery>,
}

/// `EgressFilter`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressFilter {
    #[serde(rename = "type")]
    pub type_: EgressFilterType,
}

/// `MeshServiceDiscovery`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshServiceDiscovery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_preference: Option<IpPreference>,
}

impl MeshSpec {
    /// The effective egress filter (`DROP_ALL` when unset).
    pub fn egress_filter_type(&self) -> EgressFilterType {
        self.egress_filter
            .as_ref()
            .map_or(EgressFilterType::DropAll, |f| f.type_.clone())
    }
}
