//! `VirtualNodeSpec`.

use serde::{Deserialize, Serialize};

use crate::common::{
    ClientPolicy, HealthCheckPolicy, IpPreference, ListenerTimeout, ListenerTls, Logging,
    OutlierDetection, PortMapping,
};

/// `VirtualNodeSpec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualNodeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_defaults: Option<BackendDefaults>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<Backend>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners: Option<Vec<Listener>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_discovery: Option<ServiceDiscovery>,
}

impl VirtualNodeSpec {
    /// The listeners, empty when unset.
    pub fn listeners(&self) -> &[Listener] {
        self.listeners.as_deref().unwrap_or(&[])
    }

    /// The backends, empty when unset.
    pub fn backends(&self) -> &[Backend] {
        self.backends.as_deref().unwrap_or(&[])
    }

    /// Names of the virtual services this node declares as backends.
    pub fn backend_service_names(&self) -> impl Iterator<Item = &str> {
        self.backends().iter().map(|b| match b {
            Backend::VirtualService(vs) => vs.virtual_service_name.as_str(),
        })
    }
}

/// `BackendDefaults`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_policy: Option<ClientPolicy>,
}

one_of! {
    /// `Backend`.
    pub enum Backend {
        VirtualService("virtualService", VirtualServiceBackend),
    }
}

/// `VirtualServiceBackend`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_policy: Option<ClientPolicy>,
    pub virtual_service_name: String,
}

/// `Listener`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<VirtualNodeConnectionPool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    pub port_mapping: PortMapping,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<ListenerTimeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
}

one_of! {
    /// `VirtualNodeConnectionPool`.
    pub enum VirtualNodeConnectionPool {
        Grpc("grpc", MaxRequests),
        Http("http", HttpConnectionPool),
        Http2("http2", MaxRequests),
        Tcp("tcp", TcpConnectionPool),
    }
}

/// `VirtualNodeHttpConnectionPool` (and the gateway variant).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpConnectionPool {
    pub max_connections: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<i64>,
}

/// `VirtualNodeHttp2ConnectionPool` / `VirtualNodeGrpcConnectionPool` (and gateway variants).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaxRequests {
    pub max_requests: i64,
}

/// `VirtualNodeTcpConnectionPool`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpConnectionPool {
    pub max_connections: i64,
}

one_of! {
    /// `ServiceDiscovery`.
    pub enum ServiceDiscovery {
        AwsCloudMap("awsCloudMap", AwsCloudMapServiceDiscovery),
        Dns("dns", DnsServiceDiscovery),
    }
}

string_enum! {
    /// `DnsResponseType`.
    pub enum DnsResponseType { LoadBalancer = "LOADBALANCER", Endpoints = "ENDPOINTS" }
}

/// `DnsServiceDiscovery`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsServiceDiscovery {
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_preference: Option<IpPreference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_type: Option<DnsResponseType>,
}

/// `AwsCloudMapServiceDiscovery`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsCloudMapServiceDiscovery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<AwsCloudMapInstanceAttribute>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_preference: Option<IpPreference>,
    pub namespace_name: String,
    pub service_name: String,
}

/// `AwsCloudMapInstanceAttribute`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsCloudMapInstanceAttribute {
    pub key: String,
    pub value: String,
}
