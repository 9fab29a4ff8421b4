//! Request paths of the App Mesh API and the percent-encoding of their segments.
//!
//! Paths are built without sending anything, so they are unit-tested directly.

use meshplane_api::list_key;
use meshplane_model::{ResourceId, ResourceKind};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// The API version prefix of every App Mesh 2019-01-25 path.
pub const API_PREFIX: &str = "/v20190125";

/// Everything but RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`) is encoded, as
/// botocore does for URI labels and query values: a space is `%20` (never `+`), `/` is
/// `%2F` (so a name containing `/` stays one segment), `:` is `%3A`, `+` is `%2B`.
const STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Where the resources of one kind live: every mesh (`kind == Mesh`), one mesh, or one
/// virtual router / virtual gateway (routes and gateway routes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Collection {
    /// The kind listed or created.
    pub kind: ResourceKind,
    /// The mesh (ignored for `Mesh`).
    pub mesh: String,
    /// The virtual router of a route, the virtual gateway of a gateway route.
    pub parent: Option<String>,
}

// === impl Collection ===

impl Collection {
    /// All meshes.
    pub fn meshes() -> Collection {
        Collection {
            kind: ResourceKind::Mesh,
            mesh: String::new(),
            parent: None,
        }
    }

    /// The virtual nodes, services, routers or gateways of `mesh`.
    pub fn in_mesh(kind: ResourceKind, mesh: impl Into<String>) -> Collection {
        Collection {
            kind,
            mesh: mesh.into(),
            parent: None,
        }
    }

    /// The routes of a virtual router or the gateway routes of a virtual gateway.
    pub fn under(
        kind: ResourceKind,
        mesh: impl Into<String>,
        parent: impl Into<String>,
    ) -> Collection {
        Collection {
            kind,
            mesh: mesh.into(),
            parent: Some(parent.into()),
        }
    }

    /// The collection `id` belongs to (where it is created and listed).
    pub fn of(id: &ResourceId) -> Collection {
        Collection {
            kind: id.kind,
            mesh: id.mesh.clone(),
            parent: id.parent.clone(),
        }
    }
}

/// Percent-encodes one path segment (a resource name).
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, STRICT).to_string()
}

/// Percent-encodes one query value (`%20` for a space, never `+`).
pub fn encode_query_value(s: &str) -> String {
    utf8_percent_encode(s, STRICT).to_string()
}

/// The collection path, e.g. `/v20190125/meshes/m/virtualRouter/r/routes`.
///
/// A route or gateway route collection without a parent yields the (non-existent)
/// path with an empty parent segment, which the server answers with an error; callers
/// build collections with [`Collection::under`].
pub fn collection_path(c: &Collection) -> String {
    let m = encode_segment(&c.mesh);
    match c.kind {
        ResourceKind::Mesh => format!("{API_PREFIX}/meshes"),
        ResourceKind::Route | ResourceKind::GatewayRoute => {
            let parent_seg = if c.kind == ResourceKind::Route {
                "virtualRouter"
            } else {
                "virtualGateway"
            };
            let p = encode_segment(c.parent.as_deref().unwrap_or(""));
            format!(
                "{API_PREFIX}/meshes/{m}/{parent_seg}/{p}/{}",
                list_key(c.kind)
            )
        }
        k => format!("{API_PREFIX}/meshes/{m}/{}", list_key(k)),
    }
}

/// The item path, e.g. `/v20190125/meshes/m/virtualNodes/n`.
pub fn item_path(id: &ResourceId) -> String {
    if id.kind == ResourceKind::Mesh {
        return format!("{API_PREFIX}/meshes/{}", encode_segment(&id.mesh));
    }
    format!(
        "{}/{}",
        collection_path(&Collection::of(id)),
        encode_segment(&id.name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_paths_use_singular_parents_for_routes_and_plural_collections() {
        let cases = [
            (ResourceId::mesh("m"), "/v20190125/meshes/m"),
            (
                ResourceId::child(ResourceKind::VirtualNode, "m", "n"),
                "/v20190125/meshes/m/virtualNodes/n",
            ),
            (
                ResourceId::child(ResourceKind::VirtualService, "m", "s.local"),
                "/v20190125/meshes/m/virtualServices/s.local",
            ),
            (
                ResourceId::child(ResourceKind::VirtualRouter, "m", "r"),
                "/v20190125/meshes/m/virtualRouters/r",
            ),
            (
                ResourceId::child(ResourceKind::VirtualGateway, "m", "g"),
                "/v20190125/meshes/m/virtualGateways/g",
            ),
            (
                ResourceId::grandchild(ResourceKind::Route, "m", "r", "rt"),
                "/v20190125/meshes/m/virtualRouter/r/routes/rt",
            ),
            (
                ResourceId::grandchild(ResourceKind::GatewayRoute, "m", "g", "gr"),
                "/v20190125/meshes/m/virtualGateway/g/gatewayRoutes/gr",
            ),
        ];
        for (id, want) in cases {
            assert_eq!(item_path(&id), want, "{id}");
        }
        assert_eq!(collection_path(&Collection::meshes()), "/v20190125/meshes");
        assert_eq!(
            collection_path(&Collection::under(ResourceKind::Route, "m", "r")),
            "/v20190125/meshes/m/virtualRouter/r/routes"
        );
    }

    #[test]
    fn segments_and_query_values_are_strictly_percent_encoded() {
        // The botocore example from the API notes: `a b/c:d.local`.
        assert_eq!(encode_segment("a b/c:d.local"), "a%20b%2Fc%3Ad.local");
        assert_eq!(encode_query_value("tok/+=2"), "tok%2F%2B%3D2");
        assert_eq!(
            encode_query_value("arn:aws:appmesh:us-east-1:111122223333:mesh/demo"),
            "arn%3Aaws%3Aappmesh%3Aus-east-1%3A111122223333%3Amesh%2Fdemo"
        );
        assert_eq!(encode_segment("ünï~-_."), "%C3%BCn%C3%AF~-_.");
        let id = ResourceId::grandchild(ResourceKind::Route, "my mesh", "r/1", "a:b");
        assert_eq!(
            item_path(&id),
            "/v20190125/meshes/my%20mesh/virtualRouter/r%2F1/routes/a%3Ab"
        );
    }
}
