//! The store key layout for App Mesh resources and the persisted record format.
//!
//! ```text
//! appmesh/meshes/<mesh>                                  a mesh
//! appmesh/mesh/<mesh>/virtualNode/<name>                 direct children of a mesh
//! appmesh/mesh/<mesh>/virtualService/<name>
//! appmesh/mesh/<mesh>/virtualRouter/<name>
//! appmesh/mesh/<mesh>/virtualGateway/<name>
//! appmesh/mesh/<mesh>/route/<router>/<name>              routes, grouped by router
//! appmesh/mesh/<mesh>/gatewayRoute/<gateway>/<name>      gateway routes, grouped by gateway
//! appmesh-idempotency/<clientToken>                      clientToken records
//! ```
//!
//! Names are escaped (`%` → `%25`, `/` → `%2F`) so that any name stays one segment.
//! Everything a mesh contains lives under `appmesh/mesh/<mesh>/`, so one prefix read
//! (and one `PrefixUnchangedSince` precondition) covers a mesh's referential integrity.

use meshplane_model::{Resource, ResourceId, ResourceKind};
use serde::{Deserialize, Serialize};

/// Prefix of every mesh record.
pub const MESHES_PREFIX: &str = "appmesh/meshes/";
/// Prefix of everything App Mesh stores (meshes and their contents).
pub const APPMESH_PREFIX: &str = "appmesh/";
/// Prefix of idempotency records.
pub const IDEMPOTENCY_PREFIX: &str = "appmesh-idempotency/";

/// Escapes a name into one key segment.
pub fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

/// Reverses [`escape`].
pub fn unescape(seg: &str) -> String {
    seg.replace("%2F", "/").replace("%25", "%")
}

/// The key of the mesh record.
pub fn mesh_key(mesh: &str) -> String {
    format!("{MESHES_PREFIX}{}", escape(mesh))
}

/// The prefix under which all of a mesh's resources live.
pub fn mesh_contents_prefix(mesh: &str) -> String {
    format!("appmesh/mesh/{}/", escape(mesh))
}

/// The prefix listing resources of `kind` in `mesh` (under `parent` for routes and
/// gateway routes).
pub fn kind_prefix(kind: ResourceKind, mesh: &str, parent: Option<&str>) -> String {
    match kind {
        ResourceKind::Mesh => MESHES_PREFIX.to_owned(),
        _ => {
            let base = format!("{}{}/", mesh_contents_prefix(mesh), kind.as_str());
            match parent {
                Some(p) => format!("{base}{}/", escape(p)),
                None => base,
            }
        }
    }
}

/// The key of a resource.
pub fn resource_key(id: &ResourceId) -> String {
    match id.kind {
        ResourceKind::Mesh => mesh_key(&id.mesh),
        k => format!(
            "{}{}",
            kind_prefix(k, &id.mesh, id.parent.as_deref()),
            escape(&id.name)
        ),
    }
}

/// The key of an idempotency record.
pub fn idempotency_key(token: &str) -> String {
    format!("{IDEMPOTENCY_PREFIX}{}", escape(token))
}

/// Current persisted record format.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    format_version: u32,
    #[serde(flatten)]
    resource: Resource,
}

/// Encodes a resource for the store.
pub fn encode(resource: &Resource) -> Vec<u8> {
    let record = Record {
        format_version: FORMAT_VERSION,
        resource: resource.clone(),
    };
    // A Resource is strings, numbers and maps: serializing it cannot fail.
    serde_json::to_vec(&record).unwrap_or_default()
}

/// Decodes a stored resource; fails on an unknown (newer) format version.
pub fn decode(bytes: &[u8]) -> Result<Resource, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let fv = v
        .get("formatVersion")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    if fv != u64::from(FORMAT_VERSION) {
        return Err(format!("unsupported record format version {fv}"));
    }
    let r: Record = serde_json::from_value(v).map_err(|e| e.to_string())?;
    Ok(r.resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_names_with_slashes_in_one_segment() {
        let id = ResourceId::grandchild(ResourceKind::Route, "m/1", "r%x", "a/b");
        assert_eq!(resource_key(&id), "appmesh/mesh/m%2F1/route/r%25x/a%2Fb");
        assert!(resource_key(&id).starts_with(&mesh_contents_prefix("m/1")));
        assert!(!resource_key(&id).starts_with(&mesh_contents_prefix("m")));
        assert_eq!(unescape(&escape("a/%2F")), "a/%2F");
        // A router's routes never list under another router whose name is a prefix.
        assert!(
            !kind_prefix(ResourceKind::Route, "m", Some("r2")).starts_with(&kind_prefix(
                ResourceKind::Route,
                "m",
                Some("r")
            ))
        );
    }
}
