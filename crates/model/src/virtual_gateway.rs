//! `VirtualGatewaySpec`.
//!
//! Structurally the virtual-node shapes minus `tcp`, `timeout` and `outlierDetection`;
//! the narrower protocol enums are enforced by validation.

use serde::{Deserialize, Serialize};

use crate::common::{ClientPolicy, HealthCheckPolicy, ListenerTls, Logging, PortMapping};
use crate::virtual_node::{HttpConnectionPool, MaxRequests};

/// `VirtualGatewaySpec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualGatewaySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_defaults: Option<VirtualGatewayBackendDefaults>,
    pub listeners: Vec<VirtualGatewayListener>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
}

/// `VirtualGatewayBackendDefaults`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualGatewayBackendDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_policy: Option<ClientPolicy>,
}

/// `VirtualGatewayListener`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualGatewayListener {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<VirtualGatewayConnectionPool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckPolicy>,
    /// Protocol limited to `http|http2|grpc` (validation).
    pub port_mapping: PortMapping,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
}

one_of! {
    /// `VirtualGatewayConnectionPool`.
    pub enum VirtualGatewayConnectionPool {
        Grpc("grpc", MaxRequests),
        Http("http", HttpConnectionPool),
        Http2("http2", MaxRequests),
    }
}
