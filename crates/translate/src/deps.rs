//! Which inputs a proxy's configuration reads: the reconciler's dependency index.
//!
//! A change to any resource in [`Dependencies::resources`] (including its creation, for ids
//! that do not exist yet, e.g. a missing backend service) or to the instances of any service
//! in [`Dependencies::cloud_map_services`] may change the proxy's output; a change to anything
//! else cannot. The set is computed from the same snapshot the translation used, so after a
//! change the reconciler recomputes both for the affected proxies.

use std::collections::BTreeSet;

use meshplane_model::virtual_node::ServiceDiscovery;
use meshplane_model::virtual_service::VirtualServiceProvider;
use meshplane_model::{NodeId, ProxyKind, ResourceId, ResourceKind};

use crate::{CloudMapService, MeshSnapshot};

/// The inputs one proxy's configuration depends on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dependencies {
    /// App Mesh resources (present or referenced-but-missing).
    pub resources: BTreeSet<ResourceId>,
    /// Cloud Map services whose instances feed this proxy's EDS clusters.
    pub cloud_map_services: BTreeSet<CloudMapService>,
}

impl Dependencies {
    /// Whether a change to resource `id` may alter the proxy's configuration.
    ///
    /// A route (or gateway route) is covered through its parent as well, so a route that is
    /// *created* under a router this proxy reaches is caught although its id was not known
    /// when the set was computed.
    pub fn affected_by(&self, id: &ResourceId) -> bool {
        if self.resources.contains(id) {
            return true;
        }
        matches!(id.kind, ResourceKind::Route | ResourceKind::GatewayRoute)
            && id.parent_id().is_some_and(|p| self.resources.contains(&p))
    }
}

/// The resources whose change can alter `node`'s configuration: the node (or gateway) itself,
/// the mesh, its backend virtual services (for a gateway: its gateway routes and the
/// services they target), their provider nodes or routers, the routers'
/// routes and every route target node; plus the Cloud Map services of target nodes.
pub fn dependencies(snap: &MeshSnapshot, node: &NodeId) -> Dependencies {
    let mut d = Dependencies::default();
    d.resources.insert(ResourceId::mesh(snap.mesh_name.clone()));
    d.resources.insert(node.resource_id());
    if node.mesh != snap.mesh_name {
        return d;
    }
    match node.kind {
        ProxyKind::VirtualGateway => {
            // A gateway reads its gateway routes and whatever their targets reach.
            for (name, r) in snap.gateway_routes_of(&node.name) {
                d.resources.insert(snap.gateway_route_id(&node.name, name));
                if let Some(t) = r.target() {
                    add_service(snap, &mut d, &t.virtual_service.virtual_service_name);
                }
            }
        }
        ProxyKind::VirtualNode => {
            let Some(spec) = snap.virtual_nodes.get(&node.name) else {
                return d;
            };
            for vs in spec.backend_service_names() {
                add_service(snap, &mut d, vs);
            }
        }
    }
    d
}

/// A virtual service, its provider node or router, the router's routes and their targets.
fn add_service(snap: &MeshSnapshot, d: &mut Dependencies, vs: &str) {
    d.resources
        .insert(snap.id(ResourceKind::VirtualService, vs));
    let Some(provider) = snap
        .virtual_services
        .get(vs)
        .and_then(|s| s.provider.as_ref())
    else {
        return;
    };
    match provider {
        VirtualServiceProvider::VirtualNode(p) => {
            add_node(snap, d, &p.virtual_node_name);
        }
        VirtualServiceProvider::VirtualRouter(p) => {
            let router = &p.virtual_router_name;
            d.resources
                .insert(snap.id(ResourceKind::VirtualRouter, router));
            for (name, r) in snap.routes_of(router) {
                d.resources.insert(snap.route_id(router, name));
                for t in r.weighted_targets() {
                    add_node(snap, d, &t.virtual_node);
                }
            }
        }
    }
}

fn add_node(snap: &MeshSnapshot, d: &mut Dependencies, name: &str) {
    d.resources.insert(snap.id(ResourceKind::VirtualNode, name));
    if let Some(ServiceDiscovery::AwsCloudMap(cm)) = snap
        .virtual_nodes
        .get(name)
        .and_then(|n| n.service_discovery.as_ref())
    {
        d.cloud_map_services
            .insert(CloudMapService::new(&cm.namespace_name, &cm.service_name));
    }
}
