//! Resource identity, kinds, metadata and the stored resource record.

use serde::{Deserialize, Serialize};

use crate::{
    GatewayRouteSpec, MeshSpec, RouteSpec, VirtualGatewaySpec, VirtualNodeSpec, VirtualRouterSpec,
    VirtualServiceSpec,
};

/// The seven App Mesh resource kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ResourceKind {
    Mesh,
    VirtualNode,
    VirtualService,
    VirtualRouter,
    Route,
    VirtualGateway,
    GatewayRoute,
}

impl ResourceKind {
    /// All kinds, parents before children (the order in which `apply` creates them).
    pub const ALL: [ResourceKind; 7] = [
        ResourceKind::Mesh,
        ResourceKind::VirtualNode,
        ResourceKind::VirtualRouter,
        ResourceKind::VirtualService,
        ResourceKind::Route,
        ResourceKind::VirtualGateway,
        ResourceKind::GatewayRoute,
    ];

    /// The camelCase name used in ARNs and JSON (`virtualNode`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Mesh => "mesh",
            ResourceKind::VirtualNode => "virtualNode",
            ResourceKind::VirtualService => "virtualService",
            ResourceKind::VirtualRouter => "virtualRouter",
            ResourceKind::Route => "route",
            ResourceKind::VirtualGateway => "virtualGateway",
            ResourceKind::GatewayRoute => "gatewayRoute",
        }
    }

    /// The PascalCase name used in operation names and documents (`VirtualNode`).
    pub fn pascal(self) -> &'static str {
        match self {
            ResourceKind::Mesh => "Mesh",
            ResourceKind::VirtualNode => "VirtualNode",
            ResourceKind::VirtualService => "VirtualService",
            ResourceKind::VirtualRouter => "VirtualRouter",
            ResourceKind::Route => "Route",
            ResourceKind::VirtualGateway => "VirtualGateway",
            ResourceKind::GatewayRoute => "GatewayRoute",
        }
    }

    /// Parses `virtualNode`, `VirtualNode`, `virtual-node`, `virtualnodes`, `vn`...
    pub fn parse_loose(s: &str) -> Option<ResourceKind> {
        let k: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        // Short names first: stripping a plural `s` would turn `vs` into `v`.
        let short = match k.as_str() {
            "vn" => Some(ResourceKind::VirtualNode),
            "vs" => Some(ResourceKind::VirtualService),
            "vr" => Some(ResourceKind::VirtualRouter),
            "vg" => Some(ResourceKind::VirtualGateway),
            "gr" => Some(ResourceKind::GatewayRoute),
            _ => None,
        };
        if short.is_some() {
            return short;
        }
        let k = match k.as_str() {
            "meshes" => "mesh",
            other => other
                .strip_suffix('s')
                .filter(|k| !k.is_empty())
                .unwrap_or(other),
        };
        Some(match k {
            "mesh" => ResourceKind::Mesh,
            "virtualnode" | "node" => ResourceKind::VirtualNode,
            "virtualservice" | "service" => ResourceKind::VirtualService,
            "virtualrouter" | "router" => ResourceKind::VirtualRouter,
            "route" => ResourceKind::Route,
            "virtualgateway" | "gateway" => ResourceKind::VirtualGateway,
            "gatewayroute" => ResourceKind::GatewayRoute,
            _ => return None,
        })
    }

    /// The kind of the parent that a route or gateway route lives under.
    pub fn parent_kind(self) -> Option<ResourceKind> {
        match self {
            ResourceKind::Route => Some(ResourceKind::VirtualRouter),
            ResourceKind::GatewayRoute => Some(ResourceKind::VirtualGateway),
            _ => None,
        }
    }
}

impl std::fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of a resource: its mesh, its parent (for routes and gateway routes) and itself.
///
/// For a mesh, `mesh == name` and `parent` is `None`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceId {
    pub kind: ResourceKind,
    pub mesh: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub name: String,
}

impl ResourceId {
    /// A mesh.
    pub fn mesh(name: impl Into<String>) -> Self {
        let name = name.into();
        ResourceId {
            kind: ResourceKind::Mesh,
            mesh: name.clone(),
            parent: None,
            name,
        }
    }

    /// A direct child of a mesh (virtual node, service, router or gateway).
    pub fn child(kind: ResourceKind, mesh: impl Into<String>, name: impl Into<String>) -> Self {
        ResourceId {
            kind,
            mesh: mesh.into(),
            parent: None,
            name: name.into(),
        }
    }

    /// A route (parent = router) or gateway route (parent = gateway).
    pub fn grandchild(
        kind: ResourceKind,
        mesh: impl Into<String>,
        parent: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        ResourceId {
            kind,
            mesh: mesh.into(),
            parent: Some(parent.into()),
            name: name.into(),
        }
    }

    /// The id of the parent resource (router, gateway, or mesh), if any.
    pub fn parent_id(&self) -> Option<ResourceId> {
        match (self.kind, &self.parent) {
            (ResourceKind::Mesh, _) => None,
            (k, Some(p)) => Some(ResourceId::child(
                k.parent_kind()?,
                self.mesh.clone(),
                p.clone(),
            )),
            (_, None) => Some(ResourceId::mesh(self.mesh.clone())),
        }
    }

    /// `mesh/m/virtualNode/n`-style path used in ARNs and messages.
    pub fn path(&self) -> String {
        match (self.kind, &self.parent) {
            (ResourceKind::Mesh, _) => format!("mesh/{}", self.mesh),
            (k, Some(p)) => format!(
                "mesh/{}/{}/{}/{}/{}",
                self.mesh,
                k.parent_kind().map_or("", |pk| pk.as_str()),
                p,
                k.as_str(),
                self.name
            ),
            (k, None) => format!("mesh/{}/{}/{}", self.mesh, k.as_str(), self.name),
        }
    }
}

impl std::fmt::Display for ResourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path())
    }
}

/// The spec of any kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "spec", rename_all = "camelCase")]
#[allow(clippy::large_enum_variant)]
pub enum Spec {
    Mesh(MeshSpec),
    VirtualNode(VirtualNodeSpec),
    VirtualService(VirtualServiceSpec),
    VirtualRouter(VirtualRouterSpec),
    Route(RouteSpec),
    VirtualGateway(VirtualGatewaySpec),
    GatewayRoute(GatewayRouteSpec),
}

impl Spec {
    /// The kind this spec belongs to.
    pub fn kind(&self) -> ResourceKind {
        match self {
            Spec::Mesh(_) => ResourceKind::Mesh,
            Spec::VirtualNode(_) => ResourceKind::VirtualNode,
            Spec::VirtualService(_) => ResourceKind::VirtualService,
            Spec::VirtualRouter(_) => ResourceKind::VirtualRouter,
            Spec::Route(_) => ResourceKind::Route,
            Spec::VirtualGateway(_) => ResourceKind::VirtualGateway,
            Spec::GatewayRoute(_) => ResourceKind::GatewayRoute,
        }
    }
}

/// `ResourceMetadata` minus the ARN (derived from the id and the configured partition).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub uid: String,
    /// 1 on create, +1 on every update.
    pub version: i64,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Milliseconds since the Unix epoch.
    pub last_updated_at_ms: i64,
    pub mesh_owner: String,
    pub resource_owner: String,
}

string_enum! {
    /// The resource status code (all seven `*StatusCode` enums share these values).
    pub enum Status { Active = "ACTIVE", Inactive = "INACTIVE", Deleted = "DELETED" }
}

/// A tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// A stored resource: identity, declared spec, metadata, tags and status.
///
/// This is the persisted record (JSON, with a format version) and the unit the
/// translator reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub id: ResourceId,
    #[serde(flatten)]
    pub spec: Spec,
    pub metadata: Metadata,
    #[serde(default)]
    pub tags: Vec<Tag>,
    pub status: Status,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_kind_names_parse() {
        let cases = [
            ("vs", ResourceKind::VirtualService),
            ("VS", ResourceKind::VirtualService),
            ("virtual-services", ResourceKind::VirtualService),
            ("vn", ResourceKind::VirtualNode),
            ("virtualNodes", ResourceKind::VirtualNode),
            ("meshes", ResourceKind::Mesh),
            ("mesh", ResourceKind::Mesh),
            ("routes", ResourceKind::Route),
            ("gr", ResourceKind::GatewayRoute),
            ("gatewayRoutes", ResourceKind::GatewayRoute),
            ("vg", ResourceKind::VirtualGateway),
            ("vr", ResourceKind::VirtualRouter),
        ];
        for (s, k) in cases {
            assert_eq!(ResourceKind::parse_loose(s), Some(k), "{s}");
        }
        assert_eq!(ResourceKind::parse_loose("v"), None);
        assert_eq!(ResourceKind::parse_loose("s"), None);
    }
}
