//! The registry service: Cloud Map's rules over the store (read, decide, commit with
//! preconditions, retry on contention). One method per operation, JSON in and JSON out
//! (the wire shapes are PascalCase objects; [`Registry::call`] dispatches by name).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use meshplane_store::{Backoff, KeyValue, Op, Precondition, Store, StoreError, Txn, TxnOutcome};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{CloudMapError, ErrorCode};
use crate::keys::{
    self, Health, InstanceRecord, NamespaceRecord, OperationRecord, RequestRecord, ServiceRecord,
    Tag,
};

/// Instance attribute (a meshplane extension) that makes the registration a lease of this
/// many seconds: unless renewed by a heartbeat (RegisterInstance again, or
/// UpdateInstanceCustomHealthStatus) the instance is deregistered when it runs out.
pub const TTL_ATTRIBUTE: &str = "MESHPLANE_INSTANCE_TTL";
/// Longest accepted lease, in seconds.
pub const MAX_TTL_SECONDS: u64 = 3600;
/// Cloud Map's limit of custom attributes per instance.
const MAX_CUSTOM_ATTRIBUTES: usize = 30;
/// Cloud Map's limit of tags per resource.
const MAX_TAGS: usize = 200;
/// The sweeper never sleeps longer than this (it also picks up leases written by others).
const SWEEP_MAX_SLEEP: Duration = Duration::from_millis(500);

/// The registry's process settings (ARNs and owner ids).
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// ARN partition.
    pub partition: String,
    /// Region in ARNs.
    pub region: String,
    /// 12-digit account id (ResourceOwner, CreatedByAccount).
    pub account_id: String,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            partition: "aws".into(),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        }
    }
}

/// The Cloud Map-compatible registry over a [`Store`].
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    cfg: Arc<RegistryConfig>,
}

/// The operations served, as named in `X-Amz-Target`.
pub const OPERATIONS: &[&str] = &[
    "CreateHttpNamespace",
    "GetOperation",
    "GetNamespace",
    "ListNamespaces",
    "DeleteNamespace",
    "CreateService",
    "GetService",
    "ListServices",
    "DeleteService",
    "RegisterInstance",
    "DeregisterInstance",
    "GetInstance",
    "ListInstances",
    "DiscoverInstances",
    "DiscoverInstancesRevision",
    "GetInstancesHealthStatus",
    "UpdateInstanceCustomHealthStatus",
];

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn epoch(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

fn store_err(e: StoreError) -> CloudMapError {
    tracing::error!(error = %e, "registry store failure");
    match e {
        StoreError::Unavailable(_) => CloudMapError::new(
            ErrorCode::ServiceUnavailable,
            "the store is unavailable, retry later",
        ),
        _ => CloudMapError::new(ErrorCode::InternalFailure, "internal failure"),
    }
}

fn corrupt(key: &str, e: impl std::fmt::Display) -> CloudMapError {
    tracing::error!(key, error = %e, "undecodable registry record");
    CloudMapError::new(ErrorCode::InternalFailure, "internal failure")
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, CloudMapError> {
    serde_json::from_slice(&kv.value).map_err(|e| corrupt(&kv.key, e))
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Records are plain structs of strings, numbers and maps: serialisation cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn random_id(prefix: &str) -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &u[..16])
}

fn contended() -> CloudMapError {
    CloudMapError::new(
        ErrorCode::ServiceUnavailable,
        "the registry is being modified concurrently, retry",
    )
}

fn parse<T: DeserializeOwned>(body: Value) -> Result<T, CloudMapError> {
    // serde's derive also builds a struct from a JSON list of its members in order
    // (`[["TYPE", ["HTTP"], "EQ"]]` as a filter); AWS JSON 1.1 takes structures as
    // objects only. (`call` already refuses a body that is not an object.)
    if let Some(path) = list_for_structure(&body) {
        return Err(CloudMapError::invalid(format!(
            "invalid request: {path} must be a JSON object, got a list"
        )));
    }
    serde_path_to_error_lite(body)
}

/// Where `body` has a list in place of one of the nested structures the requests
/// derive (`Filters[i]`, `Tags[i]`).
fn list_for_structure(body: &Value) -> Option<String> {
    ["Filters", "Tags"].iter().find_map(|member| {
        body.get(member)?
            .as_array()?
            .iter()
            .position(Value::is_array)
            .map(|i| format!("{member}[{i}]"))
    })
}

// serde_json's own error names the field and the problem; good enough for InvalidInput.
fn serde_path_to_error_lite<T: DeserializeOwned>(body: Value) -> Result<T, CloudMapError> {
    serde_json::from_value(body)
        .map_err(|e| CloudMapError::invalid(format!("invalid request: {e}")))
}

fn required<'a>(v: &'a Option<String>, name: &str) -> Result<&'a str, CloudMapError> {
    match v.as_deref() {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(CloudMapError::invalid(format!("{name} is required"))),
    }
}

fn check_len(v: Option<&str>, name: &str, max: usize) -> Result<(), CloudMapError> {
    match v {
        Some(s) if s.chars().count() > max => Err(CloudMapError::invalid(format!(
            "{name} must be at most {max} characters"
        ))),
        _ => Ok(()),
    }
}

fn check_tags(tags: &[Tag]) -> Result<(), CloudMapError> {
    if tags.len() > MAX_TAGS {
        return Err(CloudMapError::new(
            ErrorCode::TooManyTagsException,
            format!("at most {MAX_TAGS} tags are allowed"),
        ));
    }
    for t in tags {
        if t.key.is_empty() || t.key.chars().count() > 128 || t.value.chars().count() > 256 {
            return Err(CloudMapError::invalid(
                "tag keys must be 1..128 characters and values at most 256",
            ));
        }
    }
    Ok(())
}

fn max_results(v: Option<i64>, max: i64, default: i64) -> Result<usize, CloudMapError> {
    match v {
        None => Ok(default as usize),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(n) => Err(CloudMapError::invalid(format!(
            "MaxResults must be between 1 and {max}, got {n}"
        ))),
    }
}

/// Opaque page token: the base64 of the last id returned.
fn encode_token(last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last)
}

fn decode_token(t: Option<&str>) -> Result<Option<String>, CloudMapError> {
    let Some(t) = t else { return Ok(None) };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(Some)
        .ok_or_else(|| CloudMapError::invalid("NextToken is not valid"))
}

/// Pages `items` (sorted by key) after the token.
fn page<T>(
    items: Vec<(String, T)>,
    token: Option<&str>,
    max: usize,
) -> Result<(Vec<T>, Option<String>), CloudMapError> {
    let after = decode_token(token)?;
    let mut rest: Vec<(String, T)> = items
        .into_iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
        .collect();
    let next = if rest.len() > max {
        rest.truncate(max);
        rest.last().map(|(k, _)| encode_token(k))
    } else {
        None
    };
    Ok((rest.into_iter().map(|(_, v)| v).collect(), next))
}

/// `^(?!arn:)[!-~]{1,1024}$`
fn valid_namespace_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 1024
        && !n.starts_with("arn:")
        && n.bytes().all(|b| (b'!'..=b'~').contains(&b))
}

/// DNS-label-style service name (the model's `ServiceName` pattern), or `.`... which only
/// DNS namespaces use; rejected here.
fn valid_service_name(n: &str) -> bool {
    if n.is_empty() || n.len() > 127 {
        return false;
    }
    n.split('.').all(|label| {
        let b = label.as_bytes();
        let inner = |c: &u8| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_';
        let edge = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
        match b.len() {
            0 => false,
            1 => b[0].is_ascii_alphanumeric(),
            n if n <= 63 => edge(&b[0]) && edge(&b[n - 1]) && b.iter().all(inner),
            _ => false,
        }
    })
}

/// `^[0-9a-zA-Z_/:.@-]+$`, at most 64.
fn valid_instance_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_/:.@-".contains(&b))
}

fn valid_attr_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (b'!'..=b'~').contains(&b))
}

fn valid_attr_value(v: &str) -> bool {
    let b = v.as_bytes();
    let printable = |c: &u8| (b'!'..=b'~').contains(c);
    !b.is_empty()
        && b.len() <= 1024
        && printable(&b[0])
        && printable(&b[b.len() - 1])
        && b.iter().all(|c| printable(c) || *c == b' ' || *c == b'\t')
}

/// The id inside an id-or-ARN (`arn:…:namespace/ns-x` → `ns-x`).
fn id_of(v: &str) -> &str {
    if v.starts_with("arn:") {
        v.rsplit('/').next().unwrap_or(v)
    } else {
        v
    }
}

/// Validates instance attributes; returns the lease length if `MESHPLANE_INSTANCE_TTL` is set.
fn check_attributes(
    attrs: &BTreeMap<String, String>,
    custom_health: bool,
) -> Result<Option<u64>, CloudMapError> {
    let mut custom = 0;
    for (k, v) in attrs {
        if !valid_attr_key(k) {
            return Err(CloudMapError::invalid(format!(
                "attribute key {k:?} must be 1..255 printable ASCII characters"
            )));
        }
        if !valid_attr_value(v) {
            return Err(CloudMapError::invalid(format!(
                "attribute {k} has an invalid value (1..1024 printable characters)"
            )));
        }
        match k.as_str() {
            "AWS_INSTANCE_IPV4" if v.parse::<std::net::Ipv4Addr>().is_err() => {
                return Err(CloudMapError::invalid(format!(
                    "AWS_INSTANCE_IPV4 {v:?} is not an IPv4 address"
                )));
            }
            "AWS_INSTANCE_IPV6" if v.parse::<std::net::Ipv6Addr>().is_err() => {
                return Err(CloudMapError::invalid(format!(
                    "AWS_INSTANCE_IPV6 {v:?} is not an IPv6 address"
                )));
            }
            "AWS_INSTANCE_PORT" if !v.parse::<u16>().is_ok_and(|p| p > 0) => {
                return Err(CloudMapError::invalid(format!(
                    "AWS_INSTANCE_PORT {v:?} must be an integer between 1 and 65535"
                )));
            }
            "AWS_INIT_HEALTH_STATUS" => {
                if v != "HEALTHY" && v != "UNHEALTHY" {
                    return Err(CloudMapError::invalid(
                        "AWS_INIT_HEALTH_STATUS must be HEALTHY or UNHEALTHY",
                    ));
                }
                if !custom_health {
                    return Err(CloudMapError::invalid(
                        "AWS_INIT_HEALTH_STATUS requires a service with HealthCheckCustomConfig",
                    ));
                }
            }
            k if k.starts_with("AWS_") => {}
            _ => custom += 1,
        }
    }
    if custom > MAX_CUSTOM_ATTRIBUTES {
        return Err(CloudMapError::invalid(format!(
            "at most {MAX_CUSTOM_ATTRIBUTES} custom attributes are allowed"
        )));
    }
    let total: usize = attrs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > 5000 {
        return Err(CloudMapError::invalid(
            "attributes must total at most 5000 bytes",
        ));
    }
    match attrs.get(TTL_ATTRIBUTE) {
        None => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(s) if (1..=MAX_TTL_SECONDS).contains(&s) => Ok(Some(s)),
            _ => Err(CloudMapError::invalid(format!(
                "{TTL_ATTRIBUTE} must be a whole number of seconds between 1 and {MAX_TTL_SECONDS}"
            ))),
        },
    }
}

// === requests ===

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateHttpNamespaceReq {
    name: Option<String>,
    creator_request_id: Option<String>,
    description: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IdReq {
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OperationReq {
    operation_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Filter {
    name: Option<String>,
    #[serde(default)]
    values: Vec<String>,
    condition: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListReq {
    next_token: Option<String>,
    max_results: Option<i64>,
    #[serde(default)]
    filters: Vec<Filter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateServiceReq {
    name: Option<String>,
    namespace_id: Option<String>,
    creator_request_id: Option<String>,
    description: Option<String>,
    dns_config: Option<Value>,
    health_check_config: Option<Value>,
    health_check_custom_config: Option<Value>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(rename = "Type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RegisterReq {
    service_id: Option<String>,
    instance_id: Option<String>,
    creator_request_id: Option<String>,
    attributes: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InstanceReq {
    service_id: Option<String>,
    instance_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListInstancesReq {
    service_id: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DiscoverReq {
    namespace_name: Option<String>,
    service_name: Option<String>,
    max_results: Option<i64>,
    #[serde(default)]
    query_parameters: BTreeMap<String, String>,
    #[serde(default)]
    optional_parameters: BTreeMap<String, String>,
    health_status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthStatusReq {
    service_id: Option<String>,
    instances: Option<Vec<String>>,
    next_token: Option<String>,
    max_results: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CustomHealthReq {
    service_id: Option<String>,
    instance_id: Option<String>,
    status: Option<String>,
}

// === impl Registry ===

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn Store>, cfg: RegistryConfig) -> Self {
        Registry {
            store,
            cfg: Arc::new(cfg),
        }
    }

    /// Runs `operation` (the `X-Amz-Target` suffix) on a JSON request body.
    pub async fn call(&self, operation: &str, body: Value) -> Result<Value, CloudMapError> {
        let body = if body.is_null() { json!({}) } else { body };
        if !body.is_object() {
            return Err(CloudMapError::new(
                ErrorCode::SerializationException,
                "the request body must be a JSON object",
            ));
        }
        match operation {
            "CreateHttpNamespace" => self.create_http_namespace(parse(body)?).await,
            "GetOperation" => self.get_operation(parse(body)?).await,
            "GetNamespace" => self.get_namespace(parse(body)?).await,
            "ListNamespaces" => self.list_namespaces(parse(body)?).await,
            "DeleteNamespace" => self.delete_namespace(parse(body)?).await,
            "CreateService" => self.create_service(parse(body)?).await,
            "GetService" => self.get_service(parse(body)?).await,
            "ListServices" => self.list_services(parse(body)?).await,
            "DeleteService" => self.delete_service(parse(body)?).await,
            "RegisterInstance" => self.register_instance(parse(body)?).await,
            "DeregisterInstance" => self.deregister_instance(parse(body)?).await,
            "GetInstance" => self.get_instance(parse(body)?).await,
            "ListInstances" => self.list_instances(parse(body)?).await,
            "DiscoverInstances" => self.discover_instances(parse(body)?).await,
            "DiscoverInstancesRevision" => self.discover_revision(parse(body)?).await,
            "GetInstancesHealthStatus" => self.health_status(parse(body)?).await,
            "UpdateInstanceCustomHealthStatus" => self.update_custom_health(parse(body)?).await,
            other => Err(CloudMapError::new(
                ErrorCode::UnknownOperationException,
                format!("unknown or unsupported operation {other:?}"),
            )),
        }
    }

    fn arn(&self, kind: &str, id: &str) -> String {
        let c = &self.cfg;
        format!(
            "arn:{}:servicediscovery:{}:{}:{kind}/{id}",
            c.partition, c.region, c.account_id
        )
    }

    async fn commit(&self, txn: Txn) -> Result<bool, CloudMapError> {
        match self.store.txn(txn).await.map_err(store_err)? {
            TxnOutcome::Committed { .. } => Ok(true),
            TxnOutcome::Failed { .. } => Ok(false),
        }
    }

    async fn list_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>, CloudMapError> {
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let p = self
                .store
                .list(prefix, start.as_deref(), 1000)
                .await
                .map_err(store_err)?;
            start = p.items.last().map(|kv| kv.key.clone());
            out.extend(p.items);
            if !p.more {
                return Ok(out);
            }
        }
    }

    async fn count_prefix(&self, prefix: &str) -> Result<usize, CloudMapError> {
        Ok(self.list_prefix(prefix).await?.len())
    }

    fn operation_op(&self, kind: &str, targets: &[(&str, &str)]) -> (String, Op) {
        let id = format!(
            "{}-{}",
            uuid::Uuid::new_v4().simple(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let rec = OperationRecord {
            id: id.clone(),
            kind: kind.to_owned(),
            targets: targets
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            created_ms: now_ms(),
        };
        (
            id.clone(),
            Op::Put {
                key: keys::operation(&id),
                value: encode(&rec),
            },
        )
    }

    async fn load_namespace(&self, id: &str) -> Result<(KeyValue, NamespaceRecord), CloudMapError> {
        let kv = self
            .store
            .get(&keys::namespace(id))
            .await
            .map_err(store_err)?
            .ok_or_else(|| {
                CloudMapError::new(
                    ErrorCode::NamespaceNotFound,
                    format!("namespace {id} not found"),
                )
            })?;
        let rec = decode(&kv)?;
        Ok((kv, rec))
    }

    async fn load_service(&self, id: &str) -> Result<(KeyValue, ServiceRecord), CloudMapError> {
        let kv = self
            .store
            .get(&keys::service(id))
            .await
            .map_err(store_err)?
            .ok_or_else(|| {
                CloudMapError::new(
                    ErrorCode::ServiceNotFound,
                    format!("service {id} not found"),
                )
            })?;
        let rec = decode(&kv)?;
        Ok((kv, rec))
    }

    async fn load_instance(
        &self,
        service_id: &str,
        instance_id: &str,
    ) -> Result<(KeyValue, InstanceRecord), CloudMapError> {
        let kv = self
            .store
            .get(&keys::instance(service_id, instance_id))
            .await
            .map_err(store_err)?
            .ok_or_else(|| {
                CloudMapError::new(
                    ErrorCode::InstanceNotFound,
                    format!("instance {instance_id} not found in service {service_id}"),
                )
            })?;
        let rec = decode(&kv)?;
        Ok((kv, rec))
    }

    async fn namespace_json(&self, ns: &NamespaceRecord) -> Result<Value, CloudMapError> {
        let count = self.count_prefix(&keys::service_names_of(&ns.id)).await?;
        let mut v = json!({
            "Id": ns.id,
            "Arn": self.arn("namespace", &ns.id),
            "ResourceOwner": self.cfg.account_id,
            "Name": ns.name,
            "Type": "HTTP",
            "ServiceCount": count,
            "Properties": {"DnsProperties": {}, "HttpProperties": {"HttpName": ns.name}},
            "CreateDate": epoch(ns.created_ms),
            "CreatorRequestId": ns.creator_request_id,
        });
        if let Some(d) = &ns.description {
            v["Description"] = json!(d);
        }
        Ok(v)
    }

    async fn service_json(&self, s: &ServiceRecord, summary: bool) -> Result<Value, CloudMapError> {
        let count = self.count_prefix(&keys::instances_of(&s.id)).await?;
        let mut v = json!({
            "Id": s.id,
            "Arn": self.arn("service", &s.id),
            "ResourceOwner": self.cfg.account_id,
            "Name": s.name,
            "Type": "HTTP",
            "InstanceCount": count,
            "CreateDate": epoch(s.created_ms),
            "CreatedByAccount": self.cfg.account_id,
        });
        if !summary {
            v["NamespaceId"] = json!(s.namespace_id);
            if let Some(r) = &s.creator_request_id {
                v["CreatorRequestId"] = json!(r);
            }
        }
        if let Some(d) = &s.description {
            v["Description"] = json!(d);
        }
        if let Some(h) = &s.health_check_custom_config {
            v["HealthCheckCustomConfig"] = h.clone();
        }
        Ok(v)
    }

    // --- namespaces ---

    async fn create_http_namespace(
        &self,
        r: CreateHttpNamespaceReq,
    ) -> Result<Value, CloudMapError> {
        let name = required(&r.name, "Name")?.to_owned();
        if !valid_namespace_name(&name) {
            return Err(CloudMapError::invalid(
                "Name must be 1..1024 printable ASCII characters and not start with arn:",
            ));
        }
        check_len(r.creator_request_id.as_deref(), "CreatorRequestId", 64)?;
        check_len(r.description.as_deref(), "Description", 1024)?;
        check_tags(&r.tags)?;
        let cri = r
            .creator_request_id
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut backoff = Backoff::default();
        loop {
            // Idempotent replay: same request id and name → the same operation.
            let req_key = keys::request(&cri);
            if let Some(kv) = self.store.get(&req_key).await.map_err(store_err)? {
                let prev: RequestRecord = decode(&kv)?;
                if prev.operation == "CreateHttpNamespace" && prev.name == name {
                    return Ok(json!({"OperationId": prev.operation_id}));
                }
                return Err(CloudMapError::new(
                    ErrorCode::DuplicateRequest,
                    format!("CreatorRequestId {cri:?} was already used for another request"),
                )
                .with("DuplicateOperationId", prev.operation_id));
            }
            let name_key = keys::namespace_name(&name);
            if let Some(kv) = self.store.get(&name_key).await.map_err(store_err)? {
                let id = String::from_utf8_lossy(&kv.value).into_owned();
                let existing = self.load_namespace(&id).await.ok().map(|(_, n)| n);
                let mut e = CloudMapError::new(
                    ErrorCode::NamespaceAlreadyExists,
                    format!("namespace {name:?} already exists"),
                )
                .with("NamespaceId", id);
                if let Some(n) = existing {
                    e = e.with("CreatorRequestId", n.creator_request_id);
                }
                return Err(e);
            }
            let id = random_id("ns-");
            let rec = NamespaceRecord {
                id: id.clone(),
                name: name.clone(),
                description: r.description.clone(),
                creator_request_id: cri.clone(),
                created_ms: now_ms(),
                tags: r.tags.clone(),
            };
            let (op_id, op) = self.operation_op("CREATE_NAMESPACE", &[("NAMESPACE", &id)]);
            let req = RequestRecord {
                operation: "CreateHttpNamespace".into(),
                name: name.clone(),
                operation_id: op_id.clone(),
            };
            let txn = Txn {
                preconditions: vec![
                    Precondition::Absent(name_key.clone()),
                    Precondition::Absent(req_key.clone()),
                ],
                ops: vec![
                    Op::Put {
                        key: keys::namespace(&id),
                        value: encode(&rec),
                    },
                    Op::Put {
                        key: name_key,
                        value: id.clone().into_bytes(),
                    },
                    Op::Put {
                        key: req_key,
                        value: encode(&req),
                    },
                    op,
                ],
            };
            if self.commit(txn).await? {
                tracing::info!(namespace = %name, id = %id, "cloud map namespace created");
                return Ok(json!({"OperationId": op_id}));
            }
            if !backoff.wait().await {
                return Err(contended());
            }
        }
    }

    async fn get_operation(&self, r: OperationReq) -> Result<Value, CloudMapError> {
        let id = required(&r.operation_id, "OperationId")?;
        check_len(Some(id), "OperationId", 255)?;
        let kv = self
            .store
            .get(&keys::operation(id))
            .await
            .map_err(store_err)?
            .ok_or_else(|| {
                CloudMapError::new(
                    ErrorCode::OperationNotFound,
                    format!("operation {id} not found"),
                )
            })?;
        let op: OperationRecord = decode(&kv)?;
        Ok(json!({"Operation": {
            "Id": op.id,
            "OwnerAccount": self.cfg.account_id,
            "Type": op.kind,
            "Status": "SUCCESS",
            "CreateDate": epoch(op.created_ms),
            "UpdateDate": epoch(op.created_ms),
            "Targets": op.targets,
        }}))
    }

    async fn get_namespace(&self, r: IdReq) -> Result<Value, CloudMapError> {
        let id = id_of(required(&r.id, "Id")?);
        check_len(Some(id), "Id", 255)?;
        let (_, ns) = self.load_namespace(id).await?;
        Ok(json!({"Namespace": self.namespace_json(&ns).await?}))
    }

    async fn list_namespaces(&self, r: ListReq) -> Result<Value, CloudMapError> {
        let max = max_results(r.max_results, 100, 100)?;
        let mut items = Vec::new();
        for kv in self.list_prefix(keys::NAMESPACES).await? {
            let ns: NamespaceRecord = decode(&kv)?;
            if namespace_matches(&ns, &r.filters, &self.cfg.account_id)? {
                items.push((ns.id.clone(), ns));
            }
        }
        let (page, next) = page(items, r.next_token.as_deref(), max)?;
        let mut out = Vec::new();
        for ns in &page {
            let mut v = self.namespace_json(ns).await?;
            if let Some(o) = v.as_object_mut() {
                o.remove("CreatorRequestId");
            }
            out.push(v);
        }
        Ok(with_token(json!({"Namespaces": out}), next))
    }

    async fn delete_namespace(&self, r: IdReq) -> Result<Value, CloudMapError> {
        let id = id_of(required(&r.id, "Id")?).to_owned();
        let mut backoff = Backoff::default();
        loop {
            let (kv, ns) = self.load_namespace(&id).await?;
            let prefix = keys::service_names_of(&id);
            let services = self.store.list(&prefix, None, 1).await.map_err(store_err)?;
            if !services.items.is_empty() {
                return Err(CloudMapError::new(
                    ErrorCode::ResourceInUse,
                    format!("namespace {id} still has services; delete them first"),
                ));
            }
            let (op_id, op) = self.operation_op("DELETE_NAMESPACE", &[("NAMESPACE", &id)]);
            let txn = Txn {
                preconditions: vec![
                    Precondition::ModRevision(kv.key.clone(), kv.mod_revision),
                    Precondition::PrefixUnchangedSince(prefix, services.revision),
                ],
                ops: vec![
                    Op::Delete { key: kv.key },
                    Op::Delete {
                        key: keys::namespace_name(&ns.name),
                    },
                    op,
                ],
            };
            if self.commit(txn).await? {
                tracing::info!(namespace = %ns.name, id = %id, "cloud map namespace deleted");
                return Ok(json!({"OperationId": op_id}));
            }
            if !backoff.wait().await {
                return Err(contended());
            }
        }
    }

    // --- services ---

    async fn create_service(&self, r: CreateServiceReq) -> Result<Value, CloudMapError> {
        let name = required(&r.name, "Name")?.to_owned();
        if !valid_service_name(&name) {
            return Err(CloudMapError::invalid(format!(
                "Name {name:?} must be a DNS label (letters, digits, '-', '_'; dots between labels)"
            )));
        }
        let ns_id = id_of(required(&r.namespace_id, "NamespaceId")?).to_owned();
        check_len(r.creator_request_id.as_deref(), "CreatorRequestId", 64)?;
        check_len(r.description.as_deref(), "Description", 1024)?;
        check_tags(&r.tags)?;
        if let Some(k) = &r.kind
            && k != "HTTP"
        {
            return Err(CloudMapError::invalid(
                "Type must be HTTP (only HTTP namespaces are supported)",
            ));
        }
        if r.dns_config.is_some() {
            return Err(CloudMapError::invalid(
                "DnsConfig is not supported for services in HTTP namespaces",
            ));
        }
        if r.health_check_config.is_some() {
            return Err(CloudMapError::invalid(
                "HealthCheckConfig is only supported for public DNS namespaces; use HealthCheckCustomConfig",
            ));
        }
        let custom = match r.health_check_custom_config {
            None => None,
            Some(Value::Object(m)) => {
                if let Some(t) = m.get("FailureThreshold")
                    && !t.as_i64().is_some_and(|t| (1..=10).contains(&t))
                {
                    return Err(CloudMapError::invalid(
                        "HealthCheckCustomConfig.FailureThreshold must be between 1 and 10",
                    ));
                }
                Some(Value::Object(m))
            }
            Some(_) => {
                return Err(CloudMapError::invalid(
                    "HealthCheckCustomConfig must be an object",
                ));
            }
        };
        let mut backoff = Backoff::default();
        loop {
            let (ns_kv, ns) = self.load_namespace(&ns_id).await?;
            let name_key = keys::service_name(&ns_id, &name);
            if let Some(kv) = self.store.get(&name_key).await.map_err(store_err)? {
                let id = String::from_utf8_lossy(&kv.value).into_owned();
                if let Ok((_, existing)) = self.load_service(&id).await {
                    // A retried request (same CreatorRequestId) gets the service it created.
                    if r.creator_request_id.is_some()
                        && existing.creator_request_id == r.creator_request_id
                    {
                        return Ok(json!({"Service": self.service_json(&existing, false).await?}));
                    }
                    return Err(CloudMapError::new(
                        ErrorCode::ServiceAlreadyExists,
                        format!("service {name:?} already exists in namespace {ns_id}"),
                    )
                    .with("ServiceId", id.clone())
                    .with("ServiceArn", self.arn("service", &id))
                    .with(
                        "CreatorRequestId",
                        existing.creator_request_id.unwrap_or_default(),
                    ));
                }
            }
            let id = random_id("srv-");
            let rec = ServiceRecord {
                id: id.clone(),
                name: name.clone(),
                namespace_id: ns_id.clone(),
                namespace_name: ns.name.clone(),
                description: r.description.clone(),
                creator_request_id: r.creator_request_id.clone(),
                created_ms: now_ms(),
                health_check_custom_config: custom.clone(),
                tags: r.tags.clone(),
            };
            let txn = Txn {
                preconditions: vec![
                    Precondition::ModRevision(ns_kv.key.clone(), ns_kv.mod_revision),
                    Precondition::Absent(name_key.clone()),
                ],
                ops: vec![
                    Op::Put {
                        key: keys::service(&id),
                        value: encode(&rec),
                    },
                    Op::Put {
                        key: name_key,
                        value: id.clone().into_bytes(),
                    },
                    Op::Put {
                        key: keys::revision(&id),
                        value: Vec::new(),
                    },
                ],
            };
            if self.commit(txn).await? {
                tracing::info!(namespace = %ns.name, service = %name, id = %id, "cloud map service created");
                return Ok(json!({"Service": self.service_json(&rec, false).await?}));
            }
            if !backoff.wait().await {
                return Err(contended());
            }
        }
    }

    async fn get_service(&self, r: IdReq) -> Result<Value, CloudMapError> {
        let id = id_of(required(&r.id, "Id")?);
        check_len(Some(id), "Id", 255)?;
        let (_, s) = self.load_service(id).await?;
        Ok(json!({"Service": self.service_json(&s, false).await?}))
    }

    async fn list_services(&self, r: ListReq) -> Result<Value, CloudMapError> {
        let max = max_results(r.max_results, 100, 100)?;
        let mut items = Vec::new();
        for kv in self.list_prefix(keys::SERVICES).await? {
            let s: ServiceRecord = decode(&kv)?;
            if service_matches(&s, &r.filters, &self.cfg.account_id)? {
                items.push((s.id.clone(), s));
            }
        }
        let (page, next) = page(items, r.next_token.as_deref(), max)?;
        let mut out = Vec::new();
        for s in &page {
            out.push(self.service_json(s, true).await?);
        }
        Ok(with_token(json!({"Services": out}), next))
    }

    async fn delete_service(&self, r: IdReq) -> Result<Value, CloudMapError> {
        let id = id_of(required(&r.id, "Id")?).to_owned();
        let mut backoff = Backoff::default();
        loop {
            let (kv, s) = self.load_service(&id).await?;
            let prefix = keys::instances_of(&id);
            let inst = self.store.list(&prefix, None, 1).await.map_err(store_err)?;
            if !inst.items.is_empty() {
                return Err(CloudMapError::new(
                    ErrorCode::ResourceInUse,
                    format!("service {id} still has registered instances; deregister them first"),
                ));
            }
            let txn = Txn {
                preconditions: vec![
                    Precondition::ModRevision(kv.key.clone(), kv.mod_revision),
                    Precondition::PrefixUnchangedSince(prefix, inst.revision),
                ],
                ops: vec![
                    Op::Delete { key: kv.key },
                    Op::Delete {
                        key: keys::service_name(&s.namespace_id, &s.name),
                    },
                    Op::Delete {
                        key: keys::revision(&id),
                    },
                ],
            };
            if self.commit(txn).await? {
                tracing::info!(service = %s.name, id = %id, "cloud map service deleted");
                return Ok(json!({}));
            }
            if !backoff.wait().await {
                return Err(contended());
            }
        }
    }

    // --- instances ---

    async fn register_instance(&self, r: RegisterReq) -> Result<Value, CloudMapError> {
        let service_id = id_of(required(&r.service_id, "ServiceId")?).to_owned();
        let instance_id = required(&r.instance_id, "InstanceId")?.to_owned();
        if !valid_instance_id(&instance_id) {
            return Err(CloudMapError::invalid(
                "InstanceId must be 1..64 characters of [0-9a-zA-Z_/:.@-]",
            ));
        }
        check_len(r.creator_request_id.as_deref(), "CreatorRequestId", 64)?;
        let Some(attributes) = r.attributes else {
            return Err(CloudMapError::invalid("Attributes is required"));
        };
        let mut backoff = Backoff::default();
        loop {
            let (svc_kv, svc) = self.load_service(&service_id).await?;
            let custom = svc.health_check_custom_config.is_some();
            let ttl = check_attributes(&attributes, custom)?;
            let key = keys::instance(&service_id, &instance_id);
            let existing = self.store.get(&key).await.map_err(store_err)?;
            let prev: Option<InstanceRecord> = existing.as_ref().map(decode).transpose()?;
            let health = match (&prev, custom) {
                (_, false) => None,
                // Re-registration (a heartbeat, or new attributes) keeps the current health.
                (Some(p), true) if p.health.is_some() => p.health,
                _ => Some(
                    match attributes.get("AWS_INIT_HEALTH_STATUS").map(String::as_str) {
                        Some("UNHEALTHY") => Health::Unhealthy,
                        _ => Health::Healthy,
                    },
                ),
            };
            let ttl_ms = ttl.map(|s| s * 1000);
            let rec = InstanceRecord {
                id: instance_id.clone(),
                service_id: service_id.clone(),
                namespace_name: svc.namespace_name.clone(),
                service_name: svc.name.clone(),
                attributes: attributes.clone(),
                creator_request_id: r.creator_request_id.clone(),
                health,
                ttl_ms,
                expires_ms: ttl_ms.map(|t| now_ms() + t as i64),
            };
            // Only a change of what clients discover moves InstancesRevision: a renewal
            // (same attributes) does not.
            let membership_changed = prev.as_ref().is_none_or(|p| p.attributes != attributes);
            let mut preconditions = vec![Precondition::ModRevision(
                svc_kv.key.clone(),
                svc_kv.mod_revision,
            )];
            preconditions.push(match &existing {
                Some(kv) => Precondition::ModRevision(key.clone(), kv.mod_revision),
                None => Precondition::Absent(key.clone()),
            });
            let (op_id, op) = self.operation_op(
                "REGISTER_INSTANCE",
                &[("SERVICE", &service_id), ("INSTANCE", &instance_id)],
            );
            let mut ops = vec![Op::Put {
                key,
                value: encode(&rec),
            }];
            if membership_changed {
                ops.push(Op::Put {
                    key: keys::revision(&service_id),
                    value: Vec::new(),
                });
            }
            ops.push(op);
            if self.commit(Txn { preconditions, ops }).await? {
                if membership_changed {
                    tracing::info!(service = %svc.name, instance = %instance_id, "instance registered");
                }
                return Ok(json!({"OperationId": op_id}));
            }
            if !backoff.wait().await {
                return Err(contended());
            }
        }
    }

    async fn deregister_instance(&self, r: InstanceReq) -> Result<Value, CloudMapError> {
        let service_id = id_of(required(&r.service_id, "ServiceId")?).to_owned();
        let instance_id = required(&r.instance_id, "InstanceId")?.to_owned();
        let mut backoff = Backoff::default();
        loop {
            let (svc_kv, svc) = self.load_service(&service_id).await?;
            let (kv, _) = self.load_instance(&service_id, &instance_id).await?;
            let (op_id, op) = self.operation_op(
                "DEREGISTER_INSTANCE",
                &[("SERVICE", &service_id), ("INSTANCE", &instance_id)],
            );
            let txn = Txn {
                preconditions: vec![
                    Precondition::ModRevision(svc_kv.key.clone(), svc_kv.mod_revision),
                    Precondition::ModRevision(kv.key.clone(), kv.mod_revision),
                ],
                ops: vec![
                    Op::Delete { key: kv.key },
                    Op::Put {
                        key: keys::revision(&service_id),
                        value: Vec::new(),
                    },
                    op,
                ],
            };
            if self.commit(txn).await? {
                tracing::info!(service = %svc.name, instance = %instance_id, "instance deregistered");
                return Ok(json!({"OperationId": op_id}));
            }
            if !backoff.wait().await {
                return Err(contended());
            }
        }
    }

    async fn get_instance(&self, r: InstanceReq) -> Result<Value, CloudMapError> {
        let service_id = id_of(required(&r.service_id, "ServiceId")?);
        let instance_id = required(&r.instance_id, "InstanceId")?;
        self.load_service(service_id).await?;
        let (_, i) = self.load_instance(service_id, instance_id).await?;
        let mut inst = json!({
            "Id": i.id,
            "Attributes": i.attributes,
            "CreatedByAccount": self.cfg.account_id,
        });
        if let Some(c) = &i.creator_request_id {
            inst["CreatorRequestId"] = json!(c);
        }
        Ok(json!({"ResourceOwner": self.cfg.account_id, "Instance": inst}))
    }

    async fn instances(&self, service_id: &str) -> Result<Vec<InstanceRecord>, CloudMapError> {
        self.list_prefix(&keys::instances_of(service_id))
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    async fn list_instances(&self, r: ListInstancesReq) -> Result<Value, CloudMapError> {
        let service_id = id_of(required(&r.service_id, "ServiceId")?);
        let max = max_results(r.max_results, 100, 100)?;
        self.load_service(service_id).await?;
        let items = self
            .instances(service_id)
            .await?
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect();
        let (page, next) = page(items, r.next_token.as_deref(), max)?;
        let out: Vec<Value> = page
            .iter()
            .map(|i| {
                json!({"Id": i.id, "Attributes": i.attributes, "CreatedByAccount": self.cfg.account_id})
            })
            .collect();
        Ok(with_token(
            json!({"ResourceOwner": self.cfg.account_id, "Instances": out}),
            next,
        ))
    }

    /// Resolves `(namespace name, service name)` for the discovery operations.
    async fn service_by_names(
        &self,
        namespace: &Option<String>,
        service: &Option<String>,
    ) -> Result<ServiceRecord, CloudMapError> {
        let ns = required(namespace, "NamespaceName")?;
        let svc = required(service, "ServiceName")?;
        check_len(Some(ns), "NamespaceName", 1024)?;
        check_len(Some(svc), "ServiceName", 127)?;
        let ns_id = self
            .store
            .get(&keys::namespace_name(ns))
            .await
            .map_err(store_err)?
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .ok_or_else(|| {
                CloudMapError::new(
                    ErrorCode::NamespaceNotFound,
                    format!("namespace {ns:?} not found"),
                )
            })?;
        let svc_id = self
            .store
            .get(&keys::service_name(&ns_id, svc))
            .await
            .map_err(store_err)?
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .ok_or_else(|| {
                CloudMapError::new(
                    ErrorCode::ServiceNotFound,
                    format!("service {svc:?} not found in namespace {ns:?}"),
                )
            })?;
        Ok(self.load_service(&svc_id).await?.1)
    }

    async fn instances_revision(&self, service_id: &str) -> Result<u64, CloudMapError> {
        Ok(self
            .store
            .get(&keys::revision(service_id))
            .await
            .map_err(store_err)?
            .map(|kv| kv.mod_revision)
            .unwrap_or(0))
    }

    async fn discover_instances(&self, r: DiscoverReq) -> Result<Value, CloudMapError> {
        let max = max_results(r.max_results, 1000, 100)?;
        let filter = match r.health_status.as_deref() {
            None | Some("HEALTHY") => HealthFilter::Healthy,
            Some("UNHEALTHY") => HealthFilter::Unhealthy,
            Some("ALL") => HealthFilter::All,
            Some("HEALTHY_OR_ELSE_ALL") => HealthFilter::HealthyOrElseAll,
            Some(o) => {
                return Err(CloudMapError::invalid(format!(
                    "HealthStatus {o:?} must be HEALTHY, UNHEALTHY, ALL or HEALTHY_OR_ELSE_ALL"
                )));
            }
        };
        let svc = self
            .service_by_names(&r.namespace_name, &r.service_name)
            .await?;
        let revision = self.instances_revision(&svc.id).await?;
        let all = self.instances(&svc.id).await?;
        let selected = discover(
            &all,
            &r.query_parameters,
            &r.optional_parameters,
            filter,
            svc.health_check_custom_config.is_some(),
        );
        let out: Vec<Value> = selected
            .into_iter()
            .take(max)
            .map(|i| {
                json!({
                    "InstanceId": i.id,
                    "NamespaceName": i.namespace_name,
                    "ServiceName": i.service_name,
                    "HealthStatus": i.health.map_or("UNKNOWN", Health::as_str),
                    "Attributes": i.attributes,
                })
            })
            .collect();
        Ok(json!({"Instances": out, "InstancesRevision": revision}))
    }

    async fn discover_revision(&self, r: DiscoverReq) -> Result<Value, CloudMapError> {
        let svc = self
            .service_by_names(&r.namespace_name, &r.service_name)
            .await?;
        Ok(json!({"InstancesRevision": self.instances_revision(&svc.id).await?}))
    }

    async fn health_status(&self, r: HealthStatusReq) -> Result<Value, CloudMapError> {
        let service_id = id_of(required(&r.service_id, "ServiceId")?);
        let max = max_results(r.max_results, 100, 100)?;
        if r.instances.as_ref().is_some_and(Vec::is_empty) {
            return Err(CloudMapError::invalid(
                "Instances must list at least one id",
            ));
        }
        self.load_service(service_id).await?;
        let all: BTreeMap<String, InstanceRecord> = self
            .instances(service_id)
            .await?
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect();
        let ids: Vec<String> = match &r.instances {
            Some(ids) => {
                for id in ids {
                    if !all.contains_key(id) {
                        return Err(CloudMapError::new(
                            ErrorCode::InstanceNotFound,
                            format!("instance {id} not found in service {service_id}"),
                        ));
                    }
                }
                let mut ids = ids.clone();
                ids.sort();
                ids.dedup();
                ids
            }
            None => all.keys().cloned().collect(),
        };
        let items = ids.into_iter().map(|id| (id.clone(), id)).collect();
        let (page, next) = page(items, r.next_token.as_deref(), max)?;
        let status: serde_json::Map<String, Value> = page
            .into_iter()
            .map(|id| {
                let h = all
                    .get(&id)
                    .and_then(|i| i.health)
                    .map_or("UNKNOWN", Health::as_str);
                (id, json!(h))
            })
            .collect();
        Ok(with_token(json!({"Status": status}), next))
    }

    async fn update_custom_health(&self, r: CustomHealthReq) -> Result<Value, CloudMapError> {
        let service_id = id_of(required(&r.service_id, "ServiceId")?).to_owned();
        let instance_id = required(&r.instance_id, "InstanceId")?.to_owned();
        let health = match required(&r.status, "Status")? {
            "HEALTHY" => Health::Healthy,
            "UNHEALTHY" => Health::Unhealthy,
            o => {
                return Err(CloudMapError::invalid(format!(
                    "Status {o:?} must be HEALTHY or UNHEALTHY"
                )));
            }
        };
        let mut backoff = Backoff::default();
        loop {
            let (_, svc) = self.load_service(&service_id).await?;
            let (kv, mut rec) = self.load_instance(&service_id, &instance_id).await?;
            if svc.health_check_custom_config.is_none() {
                return Err(CloudMapError::new(
                    ErrorCode::CustomHealthNotFound,
                    format!("service {service_id} has no HealthCheckCustomConfig"),
                ));
            }
            rec.health = Some(health);
            // A status report is also a heartbeat for leased instances.
            rec.expires_ms = rec.ttl_ms.map(|t| now_ms() + t as i64);
            let txn = Txn {
                preconditions: vec![Precondition::ModRevision(kv.key.clone(), kv.mod_revision)],
                ops: vec![Op::Put {
                    key: kv.key,
                    value: encode(&rec),
                }],
            };
            if self.commit(txn).await? {
                return Ok(json!({}));
            }
            if !backoff.wait().await {
                return Err(contended());
            }
        }
    }

    // --- leases ---

    /// Deregisters every instance whose lease ran out at `now_ms`; returns how many it
    /// removed and the earliest remaining expiry.
    pub async fn sweep_expired_at(&self, now: i64) -> Result<(usize, Option<i64>), CloudMapError> {
        let mut removed = 0;
        let mut next: Option<i64> = None;
        for kv in self.list_prefix(keys::INSTANCES).await? {
            let rec: InstanceRecord = decode(&kv)?;
            let Some(exp) = rec.expires_ms else { continue };
            if exp > now {
                next = Some(next.map_or(exp, |n| n.min(exp)));
                continue;
            }
            // A heartbeat that lands first wins (the record's revision moved).
            let txn = Txn {
                preconditions: vec![Precondition::ModRevision(kv.key.clone(), kv.mod_revision)],
                ops: vec![
                    Op::Delete { key: kv.key },
                    Op::Put {
                        key: keys::revision(&rec.service_id),
                        value: Vec::new(),
                    },
                ],
            };
            if self.commit(txn).await? {
                removed += 1;
                tracing::info!(
                    service = %rec.service_name,
                    instance = %rec.id,
                    "instance lease expired; deregistered"
                );
            }
        }
        Ok((removed, next))
    }

    /// Runs the lease sweeper forever: sleeps until the earliest lease runs out (at most
    /// half a second, so leases written meanwhile are seen), then deregisters what expired.
    pub async fn run_sweeper(self) {
        loop {
            let sleep = match self.sweep_expired_at(now_ms()).await {
                Ok((_, Some(next))) => {
                    let wait = (next - now_ms()).max(1) as u64;
                    Duration::from_millis(wait).min(SWEEP_MAX_SLEEP)
                }
                Ok((_, None)) => SWEEP_MAX_SLEEP,
                Err(e) => {
                    tracing::warn!(error = %e, "lease sweep failed");
                    SWEEP_MAX_SLEEP
                }
            };
            tokio::time::sleep(sleep).await;
        }
    }
}

fn with_token(mut v: Value, next: Option<String>) -> Value {
    if let Some(t) = next {
        v["NextToken"] = json!(t);
    }
    v
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum HealthFilter {
    Healthy,
    Unhealthy,
    All,
    HealthyOrElseAll,
}

/// DiscoverInstances selection: `query` must all match; `optional` narrows only when
/// something still matches; the health filter applies to services with custom health only.
fn discover<'a>(
    all: &'a [InstanceRecord],
    query: &BTreeMap<String, String>,
    optional: &BTreeMap<String, String>,
    filter: HealthFilter,
    custom_health: bool,
) -> Vec<&'a InstanceRecord> {
    let matches = |i: &InstanceRecord, q: &BTreeMap<String, String>| {
        q.iter().all(|(k, v)| i.attributes.get(k) == Some(v))
    };
    let mut out: Vec<&InstanceRecord> = all.iter().filter(|i| matches(i, query)).collect();
    if !optional.is_empty() {
        let narrowed: Vec<&InstanceRecord> = out
            .iter()
            .copied()
            .filter(|i| matches(i, optional))
            .collect();
        if !narrowed.is_empty() {
            out = narrowed;
        }
    }
    if !custom_health {
        return out;
    }
    let healthy = |i: &&InstanceRecord| i.health != Some(Health::Unhealthy);
    match filter {
        HealthFilter::All => out,
        HealthFilter::Healthy => out.into_iter().filter(healthy).collect(),
        HealthFilter::Unhealthy => out.into_iter().filter(|i| !healthy(i)).collect(),
        HealthFilter::HealthyOrElseAll => {
            let h: Vec<&InstanceRecord> = out.iter().copied().filter(healthy).collect();
            if h.is_empty() { out } else { h }
        }
    }
}

fn condition_matches(f: &Filter, value: &str, allowed: &[&str]) -> Result<bool, CloudMapError> {
    let cond = f.condition.as_deref().unwrap_or("EQ");
    if !allowed.contains(&cond) {
        return Err(CloudMapError::invalid(format!(
            "filter {} does not support condition {cond}",
            f.name.as_deref().unwrap_or("")
        )));
    }
    if f.values.is_empty() {
        return Err(CloudMapError::invalid("a filter needs at least one value"));
    }
    Ok(match cond {
        "EQ" => {
            if f.values.len() != 1 {
                return Err(CloudMapError::invalid("EQ takes exactly one value"));
            }
            f.values[0] == value
        }
        "IN" => f.values.iter().any(|v| v == value),
        "BEGINS_WITH" => {
            if f.values.len() != 1 {
                return Err(CloudMapError::invalid(
                    "BEGINS_WITH takes exactly one value",
                ));
            }
            value.starts_with(&f.values[0])
        }
        _ => false,
    })
}

fn namespace_matches(
    ns: &NamespaceRecord,
    filters: &[Filter],
    account: &str,
) -> Result<bool, CloudMapError> {
    for f in filters {
        let ok = match f.name.as_deref() {
            Some("TYPE") => condition_matches(f, "HTTP", &["EQ", "IN"])?,
            Some("NAME") | Some("HTTP_NAME") => {
                condition_matches(f, &ns.name, &["EQ", "BEGINS_WITH"])?
            }
            Some("RESOURCE_OWNER") => condition_matches(f, account, &["EQ"])?,
            o => {
                return Err(CloudMapError::invalid(format!(
                    "unknown namespace filter {o:?} (TYPE, NAME, HTTP_NAME, RESOURCE_OWNER)"
                )));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn service_matches(
    s: &ServiceRecord,
    filters: &[Filter],
    account: &str,
) -> Result<bool, CloudMapError> {
    for f in filters {
        let ok = match f.name.as_deref() {
            Some("NAMESPACE_ID") => condition_matches(f, &s.namespace_id, &["EQ", "IN"])?,
            Some("RESOURCE_OWNER") => condition_matches(f, account, &["EQ"])?,
            o => {
                return Err(CloudMapError::invalid(format!(
                    "unknown service filter {o:?} (NAMESPACE_ID, RESOURCE_OWNER)"
                )));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
