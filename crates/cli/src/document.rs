//! The document format of `apply -f`, `delete -f` and `export`: parsing (three input
//! forms, YAML streams and JSON arrays) and printing (the native form).
//!
//! Forms accepted for each document (see docs/cli.md):
//!
//! ```text
//!   native     {kind: VirtualNode, mesh: m, name: n, [virtualRouter|virtualGateway: p], spec, tags}
//!   wrapped    {"virtualNode": {"meshName": ..., "virtualNodeName": ..., "spec": ..., ...}}  (aws appmesh describe-*)
//!   unwrapped  {"meshName": ..., "virtualNodeName": ..., "spec": ..., "metadata": ..., "status": ...}
//! ```

use std::collections::BTreeMap;
use std::fmt;

use meshplane_api::{name_fields, parse_spec, parse_tags, spec_to_json};
use meshplane_model::{ResourceId, ResourceKind, Spec, Tag};
use serde::Serialize;
use serde::de::Deserialize;
use serde_json::{Map, Value};

/// One resource declared in a file: identity, desired spec, tags to set on create.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// Kind and names.
    pub id: ResourceId,
    /// Desired spec (parsed, so comparisons ignore formatting and key order).
    pub spec: Spec,
    /// Tags (applied on create; added to an existing resource when missing).
    pub tags: Vec<Tag>,
    /// Where the document came from.
    pub origin: Origin,
}

/// The file and position of a document, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// File name as given, or `-` for stdin.
    pub source: String,
    /// 1-based position in the file, counting the elements of a top-level JSON/YAML list
    /// one by one and skipping empty YAML documents.
    pub index: usize,
}

/// A document that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocError {
    /// Where it is.
    pub origin: Origin,
    /// What is wrong, starting with the field path when there is one.
    pub message: String,
}

// === impl Origin ===

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.source, self.index)
    }
}

// === impl DocError ===

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// Parses every document of one file. Returns all documents, or every error found.
pub fn parse_documents(source: &str, text: &str) -> Result<Vec<Document>, Vec<DocError>> {
    let values = split_values(text).map_err(|message| {
        vec![DocError {
            origin: Origin {
                source: source.to_owned(),
                index: 0,
            },
            message,
        }]
    })?;
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let origin = Origin {
            source: source.to_owned(),
            index: i + 1,
        };
        match document_from_value(v) {
            Ok((id, spec, tags)) => docs.push(Document {
                id,
                spec,
                tags,
                origin,
            }),
            Err(message) => errors.push(DocError { origin, message }),
        }
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(errors)
    }
}

/// Splits a file into document values: a JSON value (object or array) or a YAML stream
/// (`---` separated); a top-level list contributes one document per element, empty
/// documents are dropped.
fn split_values(text: &str) -> Result<Vec<Value>, String> {
    let trimmed = text.trim_start();
    let mut raw = Vec::new();
    // JSON first when it looks like JSON: exact error positions, and JSON that YAML
    // would reject (tabs) still parses.
    let json = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::from_str::<Value>(text).ok()
    } else {
        None
    };
    match json {
        Some(v) => raw.push(v),
        None => {
            for (i, de) in yaml_serde::Deserializer::from_str(text).enumerate() {
                let v = Value::deserialize(de)
                    .map_err(|e| format!("invalid YAML/JSON in document {}: {e}", i + 1))?;
                raw.push(v);
            }
        }
    }
    let mut out = Vec::new();
    for v in raw {
        match v {
            Value::Null => {}
            Value::Array(items) => out.extend(items),
            v => out.push(v),
        }
    }
    Ok(out)
}

const KIND_NAMES: &str =
    "Mesh, VirtualNode, VirtualService, VirtualRouter, Route, VirtualGateway, GatewayRoute";

/// Parses a kind loosely (`VirtualNode`, `virtualNode`, `virtual-node`, `virtualnodes`)
/// or by its short name (`vn`, `vs`, `vr`, `vg`, `gr`).
pub fn kind_from_str(s: &str) -> Option<ResourceKind> {
    // The short names first: `parse_loose` strips a plural `s` and would read `vs` as `v`.
    match s.to_ascii_lowercase().as_str() {
        "vn" => Some(ResourceKind::VirtualNode),
        "vs" => Some(ResourceKind::VirtualService),
        "vr" => Some(ResourceKind::VirtualRouter),
        "vg" => Some(ResourceKind::VirtualGateway),
        "gr" => Some(ResourceKind::GatewayRoute),
        _ => ResourceKind::parse_loose(s),
    }
}

/// Reads one document in any of the three forms.
pub fn document_from_value(v: &Value) -> Result<(ResourceId, Spec, Vec<Tag>), String> {
    let obj = v
        .as_object()
        .ok_or("a document must be a mapping (JSON object)")?;
    if obj.contains_key("kind") {
        return native(obj);
    }
    if obj.len() == 1 {
        let (key, inner) = obj.iter().next().ok_or("empty document")?;
        if let Some(kind) = ResourceKind::ALL.into_iter().find(|k| k.as_str() == key) {
            let inner = inner
                .as_object()
                .ok_or_else(|| format!("{key}: must be a mapping (JSON object)"))?;
            return unwrapped(kind, inner, &format!("{key}."));
        }
    }
    if let Some(kind) = detect_kind(obj) {
        return unwrapped(kind, obj, "");
    }
    Err(
        "cannot tell the resource kind: expected a `kind` member (kind: VirtualNode), \
         `aws appmesh describe-*` output ({\"virtualNode\": {...}}), or an object with name \
         members (meshName, virtualNodeName, ...)"
            .to_owned(),
    )
}

/// The kind of an unwrapped `XData` object, from the most specific name member present.
fn detect_kind(obj: &Map<String, Value>) -> Option<ResourceKind> {
    const BY_NAME: [(&str, ResourceKind); 7] = [
        ("gatewayRouteName", ResourceKind::GatewayRoute),
        ("routeName", ResourceKind::Route),
        ("virtualGatewayName", ResourceKind::VirtualGateway),
        ("virtualRouterName", ResourceKind::VirtualRouter),
        ("virtualServiceName", ResourceKind::VirtualService),
        ("virtualNodeName", ResourceKind::VirtualNode),
        ("meshName", ResourceKind::Mesh),
    ];
    BY_NAME
        .iter()
        .find(|(f, _)| obj.contains_key(*f))
        .map(|(_, k)| *k)
}

fn name_member(obj: &Map<String, Value>, field: &str, prefix: &str) -> Result<String, String> {
    match obj.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("{prefix}{field}: must not be empty")),
        Some(_) => Err(format!("{prefix}{field}: must be a string")),
        None => Err(format!("{prefix}{field}: required member is missing")),
    }
}

fn spec_member(kind: ResourceKind, obj: &Map<String, Value>, prefix: &str) -> Result<Spec, String> {
    let v = match obj.get("spec") {
        Some(v) if !v.is_null() => v.clone(),
        // CreateMesh is the only operation where the spec is optional.
        _ if kind == ResourceKind::Mesh => Value::Object(Map::new()),
        _ => return Err(format!("{prefix}spec: required member is missing")),
    };
    parse_spec(kind, v).map_err(|e| format!("{prefix}{}", e.message))
}

fn tags_member(obj: &Map<String, Value>) -> Result<Vec<Tag>, String> {
    match obj.get("tags") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => String::new(),
                    _ => return Err(format!("tags.{k}: must be a string")),
                };
                Ok(Tag {
                    key: k.clone(),
                    value,
                })
            })
            .collect(),
        Some(v @ Value::Array(_)) => parse_tags(v, "tags").map_err(|e| e.message),
        Some(_) => Err("tags: must be a mapping (key: value) or a list of {key, value}".to_owned()),
    }
}

/// `{kind, mesh, name, [virtualRouter|virtualGateway], spec, tags}`.
fn native(obj: &Map<String, Value>) -> Result<(ResourceId, Spec, Vec<Tag>), String> {
    let kind_str = obj
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("kind: must be a string")?;
    let kind = kind_from_str(kind_str)
        .ok_or_else(|| format!("kind: unknown kind `{kind_str}`, expected one of {KIND_NAMES}"))?;
    let parent_field = match kind {
        ResourceKind::Route => Some("virtualRouter"),
        ResourceKind::GatewayRoute => Some("virtualGateway"),
        _ => None,
    };
    for key in obj.keys() {
        let known = matches!(key.as_str(), "kind" | "mesh" | "name" | "spec" | "tags")
            || Some(key.as_str()) == parent_field;
        if !known {
            let hint = match key.as_str() {
                "virtualRouter" | "virtualGateway" => {
                    " (only routes have `virtualRouter`, only gateway routes `virtualGateway`)"
                }
                _ => "",
            };
            return Err(format!(
                "{key}: unknown member{hint}; a document has kind, mesh, name, {}spec and tags",
                parent_field.map(|p| format!("{p}, ")).unwrap_or_default()
            ));
        }
    }
    let id = if kind == ResourceKind::Mesh {
        let name = match (obj.get("name"), obj.get("mesh")) {
            (Some(_), _) => name_member(obj, "name", "")?,
            (None, Some(_)) => name_member(obj, "mesh", "")?,
            (None, None) => return Err("name: required member is missing".to_owned()),
        };
        if obj.contains_key("mesh")
            && obj.contains_key("name")
            && name_member(obj, "mesh", "")? != name
        {
            return Err(
                "mesh: a mesh document's `mesh` must equal its `name` (or be left out)".to_owned(),
            );
        }
        ResourceId::mesh(name)
    } else {
        let mesh = name_member(obj, "mesh", "")?;
        let name = name_member(obj, "name", "")?;
        match parent_field {
            Some(p) => ResourceId::grandchild(kind, mesh, name_member(obj, p, "")?, name),
            None => ResourceId::child(kind, mesh, name),
        }
    };
    let spec = spec_member(kind, obj, "")?;
    let tags = tags_member(obj)?;
    Ok((id, spec, tags))
}

/// `XData` as the API returns it; `metadata` and `status` are ignored.
fn unwrapped(
    kind: ResourceKind,
    obj: &Map<String, Value>,
    prefix: &str,
) -> Result<(ResourceId, Spec, Vec<Tag>), String> {
    let fields = name_fields(kind);
    for key in obj.keys() {
        if !fields.contains(&key.as_str())
            && !matches!(key.as_str(), "spec" | "metadata" | "status" | "tags")
        {
            return Err(format!(
                "{prefix}{key}: unknown member of a {} resource",
                kind.pascal()
            ));
        }
    }
    let names = fields
        .iter()
        .map(|f| name_member(obj, f, prefix))
        .collect::<Result<Vec<_>, _>>()?;
    let id = match names.as_slice() {
        [m] => ResourceId::mesh(m.clone()),
        [m, n] => ResourceId::child(kind, m.clone(), n.clone()),
        [m, p, n] => ResourceId::grandchild(kind, m.clone(), p.clone(), n.clone()),
        _ => return Err("unexpected name members".to_owned()),
    };
    let spec = spec_member(kind, obj, prefix)?;
    let tags = tags_member(obj).map_err(|e| format!("{prefix}{e}"))?;
    Ok((id, spec, tags))
}

/// A document in the native form, members in reading order.
#[derive(Serialize)]
struct NativeOut<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh: Option<&'a str>,
    name: &'a str,
    #[serde(rename = "virtualRouter", skip_serializing_if = "Option::is_none")]
    virtual_router: Option<&'a str>,
    #[serde(rename = "virtualGateway", skip_serializing_if = "Option::is_none")]
    virtual_gateway: Option<&'a str>,
    spec: Value,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<&'a str, &'a str>,
}

impl<'a> NativeOut<'a> {
    fn new(id: &'a ResourceId, spec: &Spec, tags: &'a [Tag]) -> Self {
        let parent = id.parent.as_deref();
        NativeOut {
            kind: id.kind.pascal(),
            mesh: (id.kind != ResourceKind::Mesh).then_some(id.mesh.as_str()),
            name: &id.name,
            virtual_router: parent.filter(|_| id.kind == ResourceKind::Route),
            virtual_gateway: parent.filter(|_| id.kind == ResourceKind::GatewayRoute),
            spec: spec_to_json(spec),
            tags: tags
                .iter()
                .map(|t| (t.key.as_str(), t.value.as_str()))
                .collect(),
        }
    }
}

/// Renders resources as native documents: a YAML stream (`---` between documents) or a
/// JSON array. Members of each document keep the order kind, mesh, name, parent, spec,
/// tags (the structs are serialized directly: JSON maps in this build sort their keys).
pub fn render_documents(
    docs: &[(ResourceId, Spec, Vec<Tag>)],
    json: bool,
) -> anyhow::Result<String> {
    let outs: Vec<NativeOut<'_>> = docs
        .iter()
        .map(|(id, spec, tags)| NativeOut::new(id, spec, tags))
        .collect();
    if json {
        let mut s = serde_json::to_string_pretty(&outs)?;
        s.push('\n');
        return Ok(s);
    }
    let mut out = String::new();
    for (i, doc) in outs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&yaml_serde::to_string(doc)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
