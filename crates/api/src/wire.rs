//! Resource envelopes and request bodies exactly as App Mesh puts them on the wire.
//!
//! Gotchas honoured here (see the App Mesh API notes, §4): response bodies are the
//! unwrapped `XData` object; timestamps are JSON numbers of epoch seconds with
//! millisecond precision; absent optionals are omitted, never `null`.

use meshplane_model::{
    GatewayRouteSpec, MeshSpec, ResourceId, ResourceKind, RouteSpec, Spec, Status, Tag,
    VirtualGatewaySpec, VirtualNodeSpec, VirtualRouterSpec, VirtualServiceSpec,
};
use serde_json::{Map, Value, json};

use crate::ApiError;

/// The JSON member names that identify a resource of `kind`, outermost first:
/// `["meshName", "virtualRouterName", "routeName"]` for a route.
pub fn name_fields(kind: ResourceKind) -> &'static [&'static str] {
    match kind {
        ResourceKind::Mesh => &["meshName"],
        ResourceKind::VirtualNode => &["meshName", "virtualNodeName"],
        ResourceKind::VirtualService => &["meshName", "virtualServiceName"],
        ResourceKind::VirtualRouter => &["meshName", "virtualRouterName"],
        ResourceKind::Route => &["meshName", "virtualRouterName", "routeName"],
        ResourceKind::VirtualGateway => &["meshName", "virtualGatewayName"],
        ResourceKind::GatewayRoute => &["meshName", "virtualGatewayName", "gatewayRouteName"],
    }
}

/// The member holding the items of a `List*` output (`virtualNodes`).
pub fn list_key(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Mesh => "meshes",
        ResourceKind::VirtualNode => "virtualNodes",
        ResourceKind::VirtualService => "virtualServices",
        ResourceKind::VirtualRouter => "virtualRouters",
        ResourceKind::Route => "routes",
        ResourceKind::VirtualGateway => "virtualGateways",
        ResourceKind::GatewayRoute => "gatewayRoutes",
    }
}

fn own_name_field(kind: ResourceKind) -> &'static str {
    name_fields(kind).last().copied().unwrap_or("meshName")
}

fn id_names(id: &ResourceId) -> Vec<&str> {
    let mut v = vec![id.mesh.as_str()];
    if let Some(p) = &id.parent {
        v.push(p);
    }
    if id.kind != ResourceKind::Mesh {
        v.push(&id.name);
    }
    v
}

fn write_names(obj: &mut Map<String, Value>, id: &ResourceId) {
    for (field, name) in name_fields(id.kind).iter().zip(id_names(id)) {
        obj.insert((*field).to_owned(), Value::String(name.to_owned()));
    }
}

fn read_names(kind: ResourceKind, obj: &Map<String, Value>) -> Result<ResourceId, String> {
    let fields = name_fields(kind);
    let mut names = Vec::with_capacity(fields.len());
    for f in fields {
        let v = obj
            .get(*f)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("missing `{f}`"))?;
        names.push(v.to_owned());
    }
    Ok(match names.as_slice() {
        [m] => ResourceId::mesh(m.clone()),
        [m, n] => ResourceId::child(kind, m.clone(), n.clone()),
        [m, p, n] => ResourceId::grandchild(kind, m.clone(), p.clone(), n.clone()),
        _ => return Err("bad name fields".to_owned()),
    })
}

fn secs(ms: i64) -> Value {
    // Millisecond precision, as the real service returns (`1563809909.282`).
    json!(ms as f64 / 1000.0)
}

fn millis(v: Option<&Value>) -> Result<i64, String> {
    let s = v
        .and_then(Value::as_f64)
        .ok_or("timestamp must be a number of epoch seconds")?;
    Ok((s * 1000.0).round() as i64)
}

/// `ResourceMetadata`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceMetadata {
    /// The resource ARN.
    pub arn: String,
    /// 1 on create, +1 per update.
    pub version: i64,
    /// Unique id of this incarnation of the resource.
    pub uid: String,
    /// Epoch milliseconds.
    pub created_at_ms: i64,
    /// Epoch milliseconds.
    pub last_updated_at_ms: i64,
    /// Account id owning the mesh.
    pub mesh_owner: String,
    /// Account id owning the resource.
    pub resource_owner: String,
}

impl ResourceMetadata {
    fn to_json(&self) -> Value {
        json!({
            "arn": self.arn,
            "version": self.version,
            "uid": self.uid,
            "createdAt": secs(self.created_at_ms),
            "lastUpdatedAt": secs(self.last_updated_at_ms),
            "meshOwner": self.mesh_owner,
            "resourceOwner": self.resource_owner,
        })
    }

    fn from_json(v: &Value) -> Result<Self, String> {
        let s = |k: &str| -> Result<String, String> {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("metadata.{k} missing"))
        };
        Ok(ResourceMetadata {
            arn: s("arn")?,
            version: v
                .get("version")
                .and_then(Value::as_i64)
                .ok_or("metadata.version missing")?,
            uid: s("uid").unwrap_or_default(),
            created_at_ms: millis(v.get("createdAt"))?,
            last_updated_at_ms: millis(v.get("lastUpdatedAt"))?,
            mesh_owner: s("meshOwner")?,
            resource_owner: s("resourceOwner")?,
        })
    }
}

/// `MeshData`, `VirtualNodeData`, ...: the body of Create/Describe/Update/Delete responses.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceData {
    /// Names of the resource and its parents.
    pub id: ResourceId,
    /// The declared spec, echoed as stored.
    pub spec: Spec,
    /// Metadata.
    pub metadata: ResourceMetadata,
    /// `ACTIVE`, or `DELETED` in a Delete response.
    pub status: Status,
}

impl ResourceData {
    /// The unwrapped JSON body.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        write_names(&mut obj, &self.id);
        obj.insert("spec".into(), spec_to_json(&self.spec));
        obj.insert("metadata".into(), self.metadata.to_json());
        obj.insert("status".into(), json!({ "status": self.status.as_str() }));
        Value::Object(obj)
    }

    /// Parses a response body (as printed by `aws appmesh describe-*` once unwrapped).
    pub fn from_json(kind: ResourceKind, v: &Value) -> Result<Self, String> {
        let obj = v.as_object().ok_or("resource must be a JSON object")?;
        let id = read_names(kind, obj)?;
        let spec = parse_spec(kind, obj.get("spec").cloned().unwrap_or(json!({})))
            .map_err(|e| e.message)?;
        let metadata = ResourceMetadata::from_json(obj.get("metadata").ok_or("missing metadata")?)?;
        let status = obj
            .get("status")
            .and_then(|s| s.get("status"))
            .and_then(Value::as_str)
            .map(Status::parse)
            .unwrap_or(Status::Active);
        Ok(ResourceData {
            id,
            spec,
            metadata,
            status,
        })
    }
}

/// `MeshRef`, `VirtualNodeRef`, ...: one item of a `List*` output (no uid, no spec).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceRef {
    /// Names of the resource and its parents.
    pub id: ResourceId,
    /// Metadata (the `uid` is not part of a ref and is left empty when parsed).
    pub metadata: ResourceMetadata,
}

impl ResourceRef {
    /// The JSON of one list item.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        write_names(&mut obj, &self.id);
        let m = &self.metadata;
        obj.insert("arn".into(), json!(m.arn));
        obj.insert("version".into(), json!(m.version));
        obj.insert("createdAt".into(), secs(m.created_at_ms));
        obj.insert("lastUpdatedAt".into(), secs(m.last_updated_at_ms));
        obj.insert("meshOwner".into(), json!(m.mesh_owner));
        obj.insert("resourceOwner".into(), json!(m.resource_owner));
        Value::Object(obj)
    }

    /// Parses one list item.
    pub fn from_json(kind: ResourceKind, v: &Value) -> Result<Self, String> {
        let obj = v.as_object().ok_or("ref must be a JSON object")?;
        let id = read_names(kind, obj)?;
        let mut meta = v.clone();
        if let Some(o) = meta.as_object_mut() {
            o.entry("uid").or_insert(json!(""));
        }
        Ok(ResourceRef {
            id,
            metadata: ResourceMetadata::from_json(&meta)?,
        })
    }
}

/// A page of a `List*` output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListOutput {
    /// Items of this page.
    pub items: Vec<ResourceRef>,
    /// Present when more pages follow.
    pub next_token: Option<String>,
}

impl ListOutput {
    /// The JSON body for a list of `kind`.
    pub fn to_json(&self, kind: ResourceKind) -> Value {
        let mut obj = Map::new();
        obj.insert(
            list_key(kind).into(),
            Value::Array(self.items.iter().map(ResourceRef::to_json).collect()),
        );
        if let Some(t) = &self.next_token {
            obj.insert("nextToken".into(), json!(t));
        }
        Value::Object(obj)
    }

    /// Parses a list body.
    pub fn from_json(kind: ResourceKind, v: &Value) -> Result<Self, String> {
        let items = v
            .get(list_key(kind))
            .and_then(Value::as_array)
            .ok_or_else(|| format!("missing `{}`", list_key(kind)))?
            .iter()
            .map(|i| ResourceRef::from_json(kind, i))
            .collect::<Result<_, _>>()?;
        let next_token = v
            .get("nextToken")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(ListOutput { items, next_token })
    }
}

/// The JSON of a spec (the inner object, without the kind).
pub fn spec_to_json(spec: &Spec) -> Value {
    let r = match spec {
        Spec::Mesh(s) => serde_json::to_value(s),
        Spec::VirtualNode(s) => serde_json::to_value(s),
        Spec::VirtualService(s) => serde_json::to_value(s),
        Spec::VirtualRouter(s) => serde_json::to_value(s),
        Spec::Route(s) => serde_json::to_value(s),
        Spec::VirtualGateway(s) => serde_json::to_value(s),
        Spec::GatewayRoute(s) => serde_json::to_value(s),
    };
    // Serializing plain structs of strings and numbers into a Value cannot fail.
    r.unwrap_or(Value::Null)
}

fn de<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "spec".to_owned()
        } else {
            format!("spec.{path}")
        };
        ApiError::bad_request(format!("{path}: {}", e.into_inner()))
    })
}

/// Parses the `spec` member of a request for `kind`; type errors name the field path.
///
/// The spec is echoed as given, so it must read back as sent: serde's derive also builds
/// a struct from a JSON list of its members in order (`"perRetryTimeout": ["s", 5]`),
/// which App Mesh refuses; any member that does not read back (`null` members aside,
/// which mean absent) is reported at its path.
pub fn parse_spec(kind: ResourceKind, v: Value) -> Result<Spec, ApiError> {
    if !v.is_object() {
        return Err(ApiError::bad_request("spec: must be a JSON object"));
    }
    let sent = without_nulls(&v);
    let spec = parse_spec_members(kind, v)?;
    if let Some((path, message)) = first_difference("spec", &sent, &spec_to_json(&spec)) {
        return Err(ApiError::bad_request(format!("{path}: {message}")));
    }
    Ok(spec)
}

fn parse_spec_members(kind: ResourceKind, v: Value) -> Result<Spec, ApiError> {
    Ok(match kind {
        ResourceKind::Mesh => Spec::Mesh(de::<MeshSpec>(v)?),
        ResourceKind::VirtualNode => Spec::VirtualNode(de::<VirtualNodeSpec>(v)?),
        ResourceKind::VirtualService => Spec::VirtualService(de::<VirtualServiceSpec>(v)?),
        ResourceKind::VirtualRouter => Spec::VirtualRouter(de::<VirtualRouterSpec>(v)?),
        ResourceKind::Route => Spec::Route(de::<RouteSpec>(v)?),
        ResourceKind::VirtualGateway => Spec::VirtualGateway(de::<VirtualGatewaySpec>(v)?),
        ResourceKind::GatewayRoute => Spec::GatewayRoute(de::<GatewayRouteSpec>(v)?),
    })
}

/// `v` without object members whose value is `null` (absent), at any depth.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// The first path where the parsed spec (`got`) does not read back as `sent`, and why.
fn first_difference(path: &str, sent: &Value, got: &Value) -> Option<(String, String)> {
    match (sent, got) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(w) => {
                        if let Some(d) = first_difference(&p, v, w) {
                            return Some(d);
                        }
                    }
                    None => return Some((p, "is not a valid value".into())),
                }
            }
            b.keys()
                .find(|k| !a.contains_key(*k))
                .map(|k| (format!("{path}.{k}"), "is not a valid value".into()))
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(&format!("{path}[{i}]"), v, w)),
        (Value::Array(_), Value::Object(_)) => {
            Some((path.to_owned(), "must be a JSON object, got a list".into()))
        }
        (a, b) if a == b => None,
        _ => Some((path.to_owned(), "is not a valid value".into())),
    }
}

/// Parses a `tags` list: `[{"key": "...", "value": "..."}]`.
pub fn parse_tags(v: &Value, path: &str) -> Result<Vec<Tag>, ApiError> {
    let arr = v
        .as_array()
        .ok_or_else(|| ApiError::bad_request(format!("{path}: must be a list")))?;
    arr.iter()
        .enumerate()
        .map(|(i, t)| {
            let field = |k: &str| {
                t.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("{path}[{i}].{k}: required string member"))
                    })
            };
            if let Some(extra) = t
                .as_object()
                .and_then(|o| o.keys().find(|k| *k != "key" && *k != "value"))
            {
                return Err(ApiError::bad_request(format!(
                    "{path}[{i}]: unknown member `{extra}`"
                )));
            }
            Ok(Tag {
                key: field("key")?,
                value: field("value")?,
            })
        })
        .collect()
}

/// A parsed Create* request body.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateInput {
    /// The new resource's own name (`virtualNodeName`...).
    pub name: String,
    /// The spec (`{}` for a mesh created without one).
    pub spec: Spec,
    /// Tags to attach.
    pub tags: Vec<Tag>,
    /// Idempotency token.
    pub client_token: Option<String>,
}

/// A parsed Update* request body.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateInput {
    /// The replacement spec (PUT semantics).
    pub spec: Spec,
    /// Idempotency token.
    pub client_token: Option<String>,
}

fn body_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::bad_request("request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!(
            "malformed JSON request body: {e}"
        ))),
    }
}

fn client_token(obj: &mut Map<String, Value>) -> Result<Option<String>, ApiError> {
    match obj.remove("clientToken") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(
            "clientToken: must be a string of 1 to 64 characters",
        )),
    }
}

fn reject_unknown(obj: &Map<String, Value>) -> Result<(), ApiError> {
    match obj.keys().next() {
        Some(k) => Err(ApiError::bad_request(format!(
            "unknown request member `{k}`"
        ))),
        None => Ok(()),
    }
}

/// Parses a Create* body for `kind`.
pub fn parse_create(kind: ResourceKind, body: &[u8]) -> Result<CreateInput, ApiError> {
    let mut obj = body_object(body)?;
    let name_field = own_name_field(kind);
    let name = match obj.remove(name_field) {
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "{name_field}: must be a string"
            )));
        }
        None => {
            return Err(ApiError::bad_request(format!(
                "{name_field}: required member is missing"
            )));
        }
    };
    let client_token = client_token(&mut obj)?;
    let spec = match obj.remove("spec") {
        Some(v) if !v.is_null() => parse_spec(kind, v)?,
        _ if kind == ResourceKind::Mesh => Spec::Mesh(MeshSpec::default()),
        _ => return Err(ApiError::bad_request("spec: required member is missing")),
    };
    let tags = match obj.remove("tags") {
        Some(v) if !v.is_null() => parse_tags(&v, "tags")?,
        _ => Vec::new(),
    };
    reject_unknown(&obj)?;
    Ok(CreateInput {
        name,
        spec,
        tags,
        client_token,
    })
}

/// Parses an Update* body for `kind`.
pub fn parse_update(kind: ResourceKind, body: &[u8]) -> Result<UpdateInput, ApiError> {
    let mut obj = body_object(body)?;
    let client_token = client_token(&mut obj)?;
    let spec = match obj.remove("spec") {
        Some(v) if !v.is_null() => parse_spec(kind, v)?,
        _ if kind == ResourceKind::Mesh => Spec::Mesh(MeshSpec::default()),
        _ => return Err(ApiError::bad_request("spec: required member is missing")),
    };
    reject_unknown(&obj)?;
    Ok(UpdateInput { spec, client_token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_parses_and_reports_type_errors_with_paths() {
        let body = br#"{"virtualNodeName":"a","clientToken":"t","spec":{"listeners":[{"portMapping":{"port":"x","protocol":"http"}}]}}"#;
        let err = parse_create(ResourceKind::VirtualNode, body).unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::BadRequest);
        assert!(
            err.message
                .starts_with("spec.listeners[0].portMapping.port:"),
            "{}",
            err.message
        );

        let ok = parse_create(
            ResourceKind::Mesh,
            br#"{"meshName":"m","tags":[{"key":"k","value":""}]}"#,
        )
        .unwrap();
        assert_eq!(ok.name, "m");
        assert_eq!(
            ok.tags,
            vec![Tag {
                key: "k".into(),
                value: "".into()
            }]
        );
        assert_eq!(spec_to_json(&ok.spec), json!({}));
    }

    /// Found by the REST fuzz target: serde built a struct from a JSON list, so
    /// `"perRetryTimeout": []` was accepted and echoed as `{}`.
    #[test]
    fn a_list_where_an_object_belongs_is_refused_with_its_path() {
        let route = |timeout: Value| {
            json!({"httpRoute": {
                "match": {"prefix": "/"},
                "action": {"weightedTargets": [{"virtualNode": "n", "weight": 1}]},
                "retryPolicy": {"maxRetries": 2, "perRetryTimeout": timeout, "httpRetryEvents": ["server-error"]},
            }})
        };
        for list in [json!([]), json!(["s", 5])] {
            let e = parse_spec(ResourceKind::Route, route(list.clone())).unwrap_err();
            assert_eq!(e.code, crate::ErrorCode::BadRequest);
            assert_eq!(
                e.message,
                "spec.httpRoute.retryPolicy.perRetryTimeout: must be a JSON object, got a list",
                "{list}"
            );
        }
        let e = parse_spec(ResourceKind::Mesh, json!({"egressFilter": ["DROP_ALL"]})).unwrap_err();
        assert_eq!(
            e.message,
            "spec.egressFilter: must be a JSON object, got a list"
        );
        // The object form, and `null` members (absent), still parse and read back.
        let ok = parse_spec(ResourceKind::Route, route(json!({"unit": "s", "value": 5}))).unwrap();
        assert_eq!(spec_to_json(&ok), route(json!({"unit": "s", "value": 5})));
        let ok = parse_spec(ResourceKind::Mesh, json!({"egressFilter": null})).unwrap();
        assert_eq!(spec_to_json(&ok), json!({}));
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        for body in [
            &b"{"[..],
            b"[]",
            b"{\"meshName\": 3}",
            b"{\"meshName\":\"m\",\"bogus\":1}",
        ] {
            let e = parse_create(ResourceKind::Mesh, body).unwrap_err();
            assert_eq!(
                e.code,
                crate::ErrorCode::BadRequest,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let e = parse_create(ResourceKind::VirtualNode, br#"{"virtualNodeName":"a"}"#).unwrap_err();
        assert!(e.message.contains("spec"), "{}", e.message);
    }

    #[test]
    fn resource_data_round_trips_with_numeric_timestamps() {
        let d = ResourceData {
            id: ResourceId::grandchild(ResourceKind::Route, "m", "r", "rt"),
            spec: parse_spec(
                ResourceKind::Route,
                json!({"tcpRoute":{"action":{"weightedTargets":[{"virtualNode":"n","weight":1}]}}}),
            )
            .unwrap(),
            metadata: ResourceMetadata {
                arn: "arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualRouter/r/route/rt"
                    .into(),
                version: 3,
                uid: "u".into(),
                created_at_ms: 1_700_000_000_123,
                last_updated_at_ms: 1_700_000_001_000,
                mesh_owner: "111122223333".into(),
                resource_owner: "111122223333".into(),
            },
            status: Status::Active,
        };
        let j = d.to_json();
        assert_eq!(j["routeName"], "rt");
        assert_eq!(j["virtualRouterName"], "r");
        assert!(j["metadata"]["createdAt"].is_f64());
        assert_eq!(j["metadata"]["createdAt"].as_f64(), Some(1_700_000_000.123));
        assert_eq!(ResourceData::from_json(ResourceKind::Route, &j).unwrap(), d);
    }
}
