//! Store key layout of the registry and the persisted records (JSON, versioned by field
//! defaults: new optional fields must default so that old records still decode).
//!
//! ```text
//! cloudmap/namespaces/<nsId>                    NamespaceRecord
//! cloudmap/namespace-names/<escaped name>       nsId            (name uniqueness)
//! cloudmap/services/<svcId>                     ServiceRecord
//! cloudmap/service-names/<nsId>/<name>          svcId           (uniqueness; "namespace in use")
//! cloudmap/instances/<svcId>/<instanceId>       InstanceRecord  (the reconciler watches this)
//! cloudmap/revisions/<svcId>                    its mod_revision is the service's InstancesRevision
//! cloudmap/operations/<operationId>             OperationRecord
//! cloudmap/requests/<creatorRequestId>          RequestRecord   (CreateHttpNamespace idempotency)
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything the registry stores lives under this prefix.
pub const PREFIX: &str = "cloudmap/";
/// Namespace records.
pub const NAMESPACES: &str = "cloudmap/namespaces/";
/// Namespace name index.
pub const NAMESPACE_NAMES: &str = "cloudmap/namespace-names/";
/// Service records.
pub const SERVICES: &str = "cloudmap/services/";
/// Service name index, per namespace.
pub const SERVICE_NAMES: &str = "cloudmap/service-names/";
/// Instance records, per service.
pub const INSTANCES: &str = "cloudmap/instances/";
/// Per-service instance revision markers.
pub const REVISIONS: &str = "cloudmap/revisions/";
/// Operation records.
pub const OPERATIONS: &str = "cloudmap/operations/";
/// Idempotency records.
pub const REQUESTS: &str = "cloudmap/requests/";

/// Escapes a value into one key segment (`%` → `%25`, `/` → `%2F`).
pub fn escape(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

/// Key of a namespace record.
pub fn namespace(id: &str) -> String {
    format!("{NAMESPACES}{id}")
}
/// Key of a namespace name index entry.
pub fn namespace_name(name: &str) -> String {
    format!("{NAMESPACE_NAMES}{}", escape(name))
}
/// Key of a service record.
pub fn service(id: &str) -> String {
    format!("{SERVICES}{id}")
}
/// Prefix of the service names of one namespace.
pub fn service_names_of(namespace_id: &str) -> String {
    format!("{SERVICE_NAMES}{namespace_id}/")
}
/// Key of a service name index entry.
pub fn service_name(namespace_id: &str, name: &str) -> String {
    format!("{SERVICE_NAMES}{namespace_id}/{}", escape(name))
}
/// Prefix of the instances of one service.
pub fn instances_of(service_id: &str) -> String {
    format!("{INSTANCES}{service_id}/")
}
/// Key of an instance record.
pub fn instance(service_id: &str, instance_id: &str) -> String {
    format!("{INSTANCES}{service_id}/{}", escape(instance_id))
}
/// Key of a service's instance revision marker.
pub fn revision(service_id: &str) -> String {
    format!("{REVISIONS}{service_id}")
}
/// Key of an operation record.
pub fn operation(id: &str) -> String {
    format!("{OPERATIONS}{id}")
}
/// Key of an idempotency record.
pub fn request(creator_request_id: &str) -> String {
    format!("{REQUESTS}{}", escape(creator_request_id))
}

/// A tag (`Key`, `Value`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    /// 1..128 characters.
    pub key: String,
    /// 0..256 characters.
    pub value: String,
}

/// An HTTP namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamespaceRecord {
    /// `ns-…`.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Optional description.
    #[serde(default)]
    pub description: Option<String>,
    /// The request id it was created with.
    pub creator_request_id: String,
    /// Creation time, epoch milliseconds.
    pub created_ms: i64,
    /// Tags given at creation.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// A service of a namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// `srv-…`.
    pub id: String,
    /// Name, unique within the namespace.
    pub name: String,
    /// The namespace's id.
    pub namespace_id: String,
    /// The namespace's name (namespaces cannot be renamed).
    pub namespace_name: String,
    /// Optional description.
    #[serde(default)]
    pub description: Option<String>,
    /// The request id it was created with, if any.
    #[serde(default)]
    pub creator_request_id: Option<String>,
    /// Creation time, epoch milliseconds.
    pub created_ms: i64,
    /// `HealthCheckCustomConfig` as given (`{}` or `{"FailureThreshold": n}`); its presence
    /// enables custom health status.
    #[serde(default)]
    pub health_check_custom_config: Option<serde_json::Value>,
    /// Tags given at creation.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// Custom health status of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Health {
    /// Receives traffic.
    Healthy,
    /// Left out of discovery results (with `HealthStatus=HEALTHY`) and of EDS.
    Unhealthy,
}

impl Health {
    /// `HEALTHY` or `UNHEALTHY`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "HEALTHY",
            Health::Unhealthy => "UNHEALTHY",
        }
    }
}

/// A registered instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Instance id, unique within the service.
    pub id: String,
    /// The service's id.
    pub service_id: String,
    /// The namespace's name (denormalised so that the reconciler needs only this record).
    pub namespace_name: String,
    /// The service's name.
    pub service_name: String,
    /// All attributes, reserved (`AWS_INSTANCE_IPV4`, …) and custom.
    pub attributes: BTreeMap<String, String>,
    /// The request id of the last registration, if any.
    #[serde(default)]
    pub creator_request_id: Option<String>,
    /// Custom health; `None` when the service has no custom health check (reported as
    /// `UNKNOWN`, treated as healthy).
    #[serde(default)]
    pub health: Option<Health>,
    /// Lease length in milliseconds (from the `MESHPLANE_INSTANCE_TTL` attribute).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// When the lease runs out (epoch milliseconds); renewed by heartbeats.
    #[serde(default)]
    pub expires_ms: Option<i64>,
}

/// A finished (always successful) asynchronous operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationRecord {
    /// Operation id.
    pub id: String,
    /// `CREATE_NAMESPACE`, `DELETE_NAMESPACE`, `REGISTER_INSTANCE`, `DEREGISTER_INSTANCE`.
    pub kind: String,
    /// `NAMESPACE` / `SERVICE` / `INSTANCE` → id.
    pub targets: BTreeMap<String, String>,
    /// Epoch milliseconds.
    pub created_ms: i64,
}

/// What a `CreatorRequestId` was used for (CreateHttpNamespace).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The operation name.
    pub operation: String,
    /// The namespace name it created.
    pub name: String,
    /// The operation id returned.
    pub operation_id: String,
}
