//! Shapes shared by several specs: durations, ports, health checks, timeouts, TLS, logging, matches.
//!
//! Field names and nesting follow the App Mesh 2019-01-25 model exactly; integers are `i64`
//! so that out-of-range input is reported by validation with its path instead of failing
//! the parse.

use serde::{Deserialize, Serialize};

string_enum! {
    /// `DurationUnit`.
    pub enum DurationUnit { S = "s", Ms = "ms" }
}

string_enum! {
    /// `PortProtocol` (virtual nodes and routers).
    pub enum PortProtocol { Http = "http", Tcp = "tcp", Http2 = "http2", Grpc = "grpc" }
}

string_enum! {
    /// `IpPreference`.
    pub enum IpPreference {
        Ipv6Preferred = "IPv6_PREFERRED",
        Ipv4Preferred = "IPv4_PREFERRED",
        Ipv4Only = "IPv4_ONLY",
        Ipv6Only = "IPv6_ONLY",
    }
}

string_enum! {
    /// `HttpMethod`.
    pub enum HttpMethod {
        Get = "GET", Head = "HEAD", Post = "POST", Put = "PUT", Delete = "DELETE",
        Connect = "CONNECT", Options = "OPTIONS", Trace = "TRACE", Patch = "PATCH",
    }
}

string_enum! {
    /// `HttpScheme`.
    pub enum HttpScheme { Http = "http", Https = "https" }
}

string_enum! {
    /// `ListenerTlsMode` and `VirtualGatewayListenerTlsMode`.
    pub enum TlsMode { Strict = "STRICT", Permissive = "PERMISSIVE", Disabled = "DISABLED" }
}

string_enum! {
    /// `TcpRetryPolicyEvent`.
    pub enum TcpRetryPolicyEvent { ConnectionError = "connection-error" }
}

string_enum! {
    /// `GrpcRetryPolicyEvent`.
    pub enum GrpcRetryPolicyEvent {
        Cancelled = "cancelled",
        DeadlineExceeded = "deadline-exceeded",
        Internal = "internal",
        ResourceExhausted = "resource-exhausted",
        Unavailable = "unavailable",
    }
}

/// `Duration`: both members optional in the model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Duration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<DurationUnit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<i64>,
}

impl Duration {
    /// The duration in milliseconds; a missing unit means seconds, a missing value zero.
    pub fn as_millis(&self) -> i64 {
        let v = self.value.unwrap_or(0);
        match self.unit {
            Some(DurationUnit::Ms) => v,
            _ => v.saturating_mul(1000),
        }
    }
}

/// `PortMapping`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    pub port: i64,
    pub protocol: PortProtocol,
}

/// `HealthCheckPolicy` (and `VirtualGatewayHealthCheckPolicy`, whose protocol enum lacks `tcp`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckPolicy {
    pub healthy_threshold: i64,
    pub interval_millis: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    pub protocol: PortProtocol,
    pub timeout_millis: i64,
    pub unhealthy_threshold: i64,
}

/// `OutlierDetection`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    pub base_ejection_duration: Duration,
    pub interval: Duration,
    pub max_ejection_percent: i64,
    pub max_server_errors: i64,
}

/// `HttpTimeout` (also used for http2 and, with the same members, `GrpcTimeout`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_request: Option<Duration>,
}

/// `GrpcTimeout`: same members as [`HttpTimeout`].
pub type GrpcTimeout = HttpTimeout;

/// `TcpTimeout`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpTimeout {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Duration>,
}

one_of! {
    /// `ListenerTimeout`.
    pub enum ListenerTimeout {
        Grpc("grpc", GrpcTimeout),
        Http("http", HttpTimeout),
        Http2("http2", HttpTimeout),
        Tcp("tcp", TcpTimeout),
    }
}

/// `ListenerTlsFileCertificate` (and the gateway variant).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsFileCertificate {
    pub certificate_chain: String,
    pub private_key: String,
}

/// `ListenerTlsSdsCertificate` and `TlsValidationContextSdsTrust`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SdsSecret {
    pub secret_name: String,
}

/// `ListenerTlsAcmCertificate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsAcmCertificate {
    pub certificate_arn: String,
}

/// `TlsValidationContextFileTrust`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsFileTrust {
    pub certificate_chain: String,
}

/// `TlsValidationContextAcmTrust`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsAcmTrust {
    pub certificate_authority_arns: Vec<String>,
}

one_of! {
    /// `ListenerTlsCertificate` (and `VirtualGatewayListenerTlsCertificate`).
    pub enum ListenerTlsCertificate {
        Acm("acm", TlsAcmCertificate),
        File("file", TlsFileCertificate),
        Sds("sds", SdsSecret),
    }
}

one_of! {
    /// `ClientTlsCertificate` (and the gateway variant).
    pub enum ClientTlsCertificate {
        File("file", TlsFileCertificate),
        Sds("sds", SdsSecret),
    }
}

one_of! {
    /// `ListenerTlsValidationContextTrust` (and the gateway variant): no ACM.
    pub enum ListenerTlsValidationTrust {
        File("file", TlsFileTrust),
        Sds("sds", SdsSecret),
    }
}

one_of! {
    /// `TlsValidationContextTrust` (and the gateway variant).
    pub enum TlsValidationTrust {
        Acm("acm", TlsAcmTrust),
        File("file", TlsFileTrust),
        Sds("sds", SdsSecret),
    }
}

/// `SubjectAlternativeNameMatchers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubjectAlternativeNameMatchers {
    pub exact: Vec<String>,
}

/// `SubjectAlternativeNames`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubjectAlternativeNames {
    #[serde(rename = "match")]
    pub match_: SubjectAlternativeNameMatchers,
}

/// `ListenerTlsValidationContext` (and the gateway variant).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerTlsValidationContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alternative_names: Option<SubjectAlternativeNames>,
    pub trust: ListenerTlsValidationTrust,
}

/// `ListenerTls` (and `VirtualGatewayListenerTls`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerTls {
    pub certificate: ListenerTlsCertificate,
    pub mode: TlsMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ListenerTlsValidationContext>,
}

/// `TlsValidationContext` (and the gateway variant).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsValidationContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_alternative_names: Option<SubjectAlternativeNames>,
    pub trust: TlsValidationTrust,
}

/// `ClientPolicyTls` (and `VirtualGatewayClientPolicyTls`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientPolicyTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<ClientTlsCertificate>,
    /// Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<i64>>,
    pub validation: TlsValidationContext,
}

/// `ClientPolicy` (and `VirtualGatewayClientPolicy`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientPolicyTls>,
}

/// `JsonFormatRef`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsonFormatRef {
    pub key: String,
    pub value: String,
}

one_of! {
    /// `LoggingFormat`.
    pub enum LoggingFormat {
        Json("json", Vec<JsonFormatRef>),
        Text("text", String),
    }
}

/// `FileAccessLog` (and the gateway variant).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileAccessLog {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<LoggingFormat>,
    pub path: String,
}

one_of! {
    /// `AccessLog` (and `VirtualGatewayAccessLog`).
    pub enum AccessLog {
        File("file", FileAccessLog),
    }
}

/// `Logging` (and `VirtualGatewayLogging`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Logging {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
}

/// `MatchRange`: start inclusive, end exclusive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchRange {
    pub end: i64,
    pub start: i64,
}

one_of! {
    /// `HeaderMatchMethod`, `GrpcRouteMetadataMatchMethod` and `GrpcMetadataMatchMethod`.
    pub enum HeaderMatchMethod {
        Exact("exact", String),
        Prefix("prefix", String),
        Range("range", MatchRange),
        Regex("regex", String),
        Suffix("suffix", String),
    }
}

/// `HttpRouteHeader`, `HttpGatewayRouteHeader`, `GrpcRouteMetadata`, `GrpcGatewayRouteMetadata`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invert: Option<bool>,
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub match_: Option<HeaderMatchMethod>,
    pub name: String,
}

/// `HttpPathMatch`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPathMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `QueryParameterMatch`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryParameterMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
}

/// `HttpQueryParameter`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpQueryParameter {
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub match_: Option<QueryParameterMatch>,
    pub name: String,
}

/// `WeightedTarget`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    pub virtual_node: String,
    pub weight: i64,
}

/// `GatewayRouteHostnameMatch`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayRouteHostnameMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
}
