//! Which action and resource ARN each App Mesh and Cloud Map operation is authorised as.
//!
//! App Mesh follows the IAM service-authorization reference: an operation on a resource
//! names that resource's ARN (`CreateRoute` → the route), `List*` names the container
//! (`ListVirtualNodes` → the mesh, `ListRoutes` → the router), `ListMeshes` has no
//! resource (`*`), tag operations name the tagged resource, and
//! `appmesh:StreamAggregatedResources` names the proxy's virtual node or gateway.
//! Cloud Map names the namespace or service an operation addresses by id, and `*` for
//! creating a namespace, listing, operations and discovery (which address by name).
//!
//! Not mapped here (the caller adds them where it wants them): a `Create*` with `tags` also
//! needs `appmesh:TagResource` on the new resource (`app_mesh(scope, "TagResource", id)`),
//! and the reference's optional resources (a route's target virtual nodes, a virtual
//! service's provider) are not checked.

use meshplane_model::{Arn, NodeId, ResourceId, ResourceKind};
use serde_json::Value;

/// The 38 App Mesh operations (API 2019-01-25).
pub const APP_MESH_OPERATIONS: [&str; 38] = [
    "CreateMesh",
    "DescribeMesh",
    "UpdateMesh",
    "DeleteMesh",
    "ListMeshes",
    "CreateVirtualNode",
    "DescribeVirtualNode",
    "UpdateVirtualNode",
    "DeleteVirtualNode",
    "ListVirtualNodes",
    "CreateVirtualService",
    "DescribeVirtualService",
    "UpdateVirtualService",
    "DeleteVirtualService",
    "ListVirtualServices",
    "CreateVirtualRouter",
    "DescribeVirtualRouter",
    "UpdateVirtualRouter",
    "DeleteVirtualRouter",
    "ListVirtualRouters",
    "CreateRoute",
    "DescribeRoute",
    "UpdateRoute",
    "DeleteRoute",
    "ListRoutes",
    "CreateVirtualGateway",
    "DescribeVirtualGateway",
    "UpdateVirtualGateway",
    "DeleteVirtualGateway",
    "ListVirtualGateways",
    "CreateGatewayRoute",
    "DescribeGatewayRoute",
    "UpdateGatewayRoute",
    "DeleteGatewayRoute",
    "ListGatewayRoutes",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
];

/// The 17 Cloud Map operations meshplane serves.
pub const CLOUD_MAP_OPERATIONS: [&str; 17] = [
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

/// The action an Envoy needs on its own virtual node or gateway to receive configuration.
pub const STREAM_AGGREGATED_RESOURCES: &str = "appmesh:StreamAggregatedResources";

/// Where ARNs live: partition, region and account of this control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// ARN partition (`aws`).
    pub partition: String,
    /// ARN region (`us-east-1`).
    pub region: String,
    /// ARN account (the mesh owner's, for shared meshes).
    pub account: String,
}

/// What one operation is authorised as: `action` on `resource`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// `appmesh:CreateRoute`, `servicediscovery:RegisterInstance`, ...
    pub action: String,
    /// The resource ARN, or `*` for an action without a resource type.
    pub resource: String,
}

/// Why an operation could not be mapped (the caller should refuse the request).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OperationError {
    /// Not an operation of that API.
    #[error("unknown operation {0:?}")]
    Unknown(String),
    /// The resource given does not fit the operation.
    #[error("{operation} addresses {expected}, got {got}")]
    WrongTarget {
        /// The operation.
        operation: String,
        /// What it addresses.
        expected: &'static str,
        /// What was given.
        got: String,
    },
    /// A Cloud Map request lacks the id member that names its resource.
    #[error("{operation}: {member} is required and must be a string")]
    MissingMember {
        /// The operation.
        operation: String,
        /// The member (`Id`, `ServiceId`, `NamespaceId`).
        member: &'static str,
    },
}

// === impl Scope ===

impl Scope {
    /// A scope.
    pub fn new(
        partition: impl Into<String>,
        region: impl Into<String>,
        account: impl Into<String>,
    ) -> Scope {
        Scope {
            partition: partition.into(),
            region: region.into(),
            account: account.into(),
        }
    }

    /// This scope with the account replaced by a mesh owner (`meshOwner`), if given:
    /// a shared mesh's resources carry the owner's account in their ARNs.
    pub fn for_owner(&self, owner: Option<&str>) -> Scope {
        match owner.filter(|o| !o.is_empty()) {
            Some(o) => Scope {
                account: o.to_owned(),
                ..self.clone()
            },
            None => self.clone(),
        }
    }

    /// The App Mesh ARN of `id` (formatted by [`Arn::format`]).
    pub fn arn(&self, id: &ResourceId) -> String {
        Arn::format(&self.partition, &self.region, &self.account, id)
    }

    /// The Cloud Map ARN `arn:<p>:servicediscovery:<r>:<a>:<kind>/<id>`.
    pub fn cloud_map_arn(&self, kind: &str, id: &str) -> String {
        format!(
            "arn:{}:servicediscovery:{}:{}:{kind}/{id}",
            self.partition, self.region, self.account
        )
    }
}

/// The authorization of App Mesh `operation` (`CreateRoute`).
///
/// `target` is the resource the call addresses: the resource itself for `Create*`,
/// `Describe*`, `Update*`, `Delete*` and the tag operations (the resource the ARN
/// resolved to), the container for `List*` (the mesh; the router for `ListRoutes`, the
/// gateway for `ListGatewayRoutes`), and `None` for `ListMeshes`. Use
/// [`Scope::for_owner`] for calls with `meshOwner`.
pub fn app_mesh(
    scope: &Scope,
    operation: &str,
    target: Option<&ResourceId>,
) -> Result<Authorization, OperationError> {
    use ResourceKind as K;
    if !APP_MESH_OPERATIONS.contains(&operation) {
        return Err(OperationError::Unknown(operation.to_owned()));
    }
    // What the operation addresses: None = nothing, Some(None) = any kind, Some(Some(k)).
    let expected: Option<Option<ResourceKind>> = match operation {
        "ListMeshes" => None,
        "TagResource" | "UntagResource" | "ListTagsForResource" => Some(None),
        "ListVirtualNodes"
        | "ListVirtualServices"
        | "ListVirtualRouters"
        | "ListVirtualGateways" => Some(Some(K::Mesh)),
        "ListRoutes" => Some(Some(K::VirtualRouter)),
        "ListGatewayRoutes" => Some(Some(K::VirtualGateway)),
        op => {
            let noun = ["Create", "Describe", "Update", "Delete"]
                .iter()
                .find_map(|verb| op.strip_prefix(verb))
                .unwrap_or_default();
            Some(K::ALL.into_iter().find(|k| k.pascal() == noun))
        }
    };
    let wrong = |expected: &'static str| OperationError::WrongTarget {
        operation: operation.to_owned(),
        expected,
        got: target.map_or_else(|| "no resource".to_owned(), ResourceId::path),
    };
    let resource = match (expected, target) {
        (None, None) => "*".to_owned(),
        (None, Some(_)) => return Err(wrong("no resource")),
        (Some(_), None) => return Err(wrong("a resource")),
        (Some(None), Some(id)) => scope.arn(id),
        (Some(Some(k)), Some(id)) if id.kind == k => scope.arn(id),
        (Some(Some(k)), Some(_)) => return Err(wrong(kind_phrase(k))),
    };
    Ok(Authorization {
        action: format!("appmesh:{operation}"),
        resource,
    })
}

/// The authorization an Envoy needs to stream `node`'s configuration:
/// `appmesh:StreamAggregatedResources` on its virtual node or gateway (in the owner's
/// account when the node id names one).
pub fn stream_aggregated_resources(scope: &Scope, node: &NodeId) -> Authorization {
    Authorization {
        action: STREAM_AGGREGATED_RESOURCES.to_owned(),
        resource: scope
            .for_owner(node.owner.as_deref())
            .arn(&node.resource_id()),
    }
}

/// The authorization of Cloud Map `operation` (`RegisterInstance`) with its JSON `input`
/// (ids may be given as ARNs, as the registry accepts).
pub fn cloud_map(
    scope: &Scope,
    operation: &str,
    input: &Value,
) -> Result<Authorization, OperationError> {
    let member = |name: &'static str| -> Result<String, OperationError> {
        match input.get(name).and_then(Value::as_str) {
            Some(v) if !v.is_empty() => Ok(id_of(v).to_owned()),
            _ => Err(OperationError::MissingMember {
                operation: operation.to_owned(),
                member: name,
            }),
        }
    };
    let resource = match operation {
        "CreateHttpNamespace"
        | "GetOperation"
        | "ListNamespaces"
        | "ListServices"
        | "DiscoverInstances"
        | "DiscoverInstancesRevision" => "*".to_owned(),
        "GetNamespace" | "DeleteNamespace" => scope.cloud_map_arn("namespace", &member("Id")?),
        "CreateService" => scope.cloud_map_arn("namespace", &member("NamespaceId")?),
        "GetService" | "DeleteService" => scope.cloud_map_arn("service", &member("Id")?),
        "RegisterInstance"
        | "DeregisterInstance"
        | "GetInstance"
        | "ListInstances"
        | "GetInstancesHealthStatus"
        | "UpdateInstanceCustomHealthStatus" => {
            scope.cloud_map_arn("service", &member("ServiceId")?)
        }
        _ => return Err(OperationError::Unknown(operation.to_owned())),
    };
    Ok(Authorization {
        action: format!("servicediscovery:{operation}"),
        resource,
    })
}

fn kind_phrase(k: ResourceKind) -> &'static str {
    match k {
        ResourceKind::Mesh => "a mesh",
        ResourceKind::VirtualNode => "a virtual node",
        ResourceKind::VirtualService => "a virtual service",
        ResourceKind::VirtualRouter => "a virtual router",
        ResourceKind::Route => "a route",
        ResourceKind::VirtualGateway => "a virtual gateway",
        ResourceKind::GatewayRoute => "a gateway route",
    }
}

/// The id inside an id-or-ARN (`arn:…:namespace/ns-x` → `ns-x`), as the registry reads it.
fn id_of(v: &str) -> &str {
    if v.starts_with("arn:") {
        v.rsplit('/').next().unwrap_or(v)
    } else {
        v
    }
}
