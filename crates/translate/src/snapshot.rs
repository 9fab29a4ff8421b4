//! The translator's input: one mesh and everything in it, as plain specs in `BTreeMap`s.

use std::collections::BTreeMap;

use meshplane_model::{
    GatewayRouteSpec, MeshSpec, Resource, ResourceId, ResourceKind, RouteSpec, Spec, Status,
    VirtualGatewaySpec, VirtualNodeSpec, VirtualRouterSpec, VirtualServiceSpec,
};

/// All App Mesh resources of one mesh, keyed by name (routes and gateway routes by
/// `(parent, name)`).
///
/// Build it with [`MeshSnapshot::from_resources`] (or [`MeshSnapshot::partition`] for a
/// store listing that spans several meshes). The maps are `BTreeMap`s so that iteration, and
/// therefore translation output, never depends on insertion order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeshSnapshot {
    /// The mesh name (every resource below belongs to it).
    pub mesh_name: String,
    /// The mesh spec; `None` when the mesh resource itself is absent (defaults apply and a
    /// diagnostic is emitted).
    pub mesh: Option<MeshSpec>,
    /// Virtual nodes by name.
    pub virtual_nodes: BTreeMap<String, VirtualNodeSpec>,
    /// Virtual services by name.
    pub virtual_services: BTreeMap<String, VirtualServiceSpec>,
    /// Virtual routers by name.
    pub virtual_routers: BTreeMap<String, VirtualRouterSpec>,
    /// Routes by `(router name, route name)`.
    pub routes: BTreeMap<(String, String), RouteSpec>,
    /// Virtual gateways by name.
    pub virtual_gateways: BTreeMap<String, VirtualGatewaySpec>,
    /// Gateway routes by `(gateway name, gateway route name)`.
    pub gateway_routes: BTreeMap<(String, String), GatewayRouteSpec>,
}

impl MeshSnapshot {
    /// An empty snapshot of mesh `mesh_name` (no mesh resource yet).
    pub fn new(mesh_name: impl Into<String>) -> Self {
        MeshSnapshot {
            mesh_name: mesh_name.into(),
            ..Default::default()
        }
    }

    /// The snapshot of mesh `mesh_name` from a list of resources.
    ///
    /// Resources of other meshes and resources whose status is `DELETED` are ignored. A
    /// resource whose spec kind differs from its id kind is filed under its spec kind. If
    /// the same id appears twice, the one with the higher `metadata.version` wins (ties: the
    /// later one), so a listing that contains an old and a new copy resolves correctly.
    pub fn from_resources(
        mesh_name: &str,
        resources: impl IntoIterator<Item = Resource>,
    ) -> MeshSnapshot {
        let mut snap = MeshSnapshot::new(mesh_name);
        let mut versions: BTreeMap<ResourceId, i64> = BTreeMap::new();
        for r in resources {
            if r.id.mesh != mesh_name || r.status == Status::Deleted {
                continue;
            }
            match versions.get(&r.id) {
                Some(v) if *v > r.metadata.version => continue,
                _ => {}
            }
            versions.insert(r.id.clone(), r.metadata.version);
            snap.insert(r.id, r.spec);
        }
        snap
    }

    /// Splits a listing spanning several meshes into one snapshot per mesh.
    pub fn partition(
        resources: impl IntoIterator<Item = Resource>,
    ) -> BTreeMap<String, MeshSnapshot> {
        let mut by_mesh: BTreeMap<String, Vec<Resource>> = BTreeMap::new();
        for r in resources {
            by_mesh.entry(r.id.mesh.clone()).or_default().push(r);
        }
        by_mesh
            .into_iter()
            .map(|(m, rs)| {
                let s = MeshSnapshot::from_resources(&m, rs);
                (m, s)
            })
            .collect()
    }

    /// Inserts (or replaces) one spec under `id`'s name. `id.mesh` is not checked.
    pub fn insert(&mut self, id: ResourceId, spec: Spec) {
        let parent = id.parent.clone().unwrap_or_default();
        match spec {
            Spec::Mesh(m) => self.mesh = Some(m),
            Spec::VirtualNode(s) => {
                self.virtual_nodes.insert(id.name, s);
            }
            Spec::VirtualService(s) => {
                self.virtual_services.insert(id.name, s);
            }
            Spec::VirtualRouter(s) => {
                self.virtual_routers.insert(id.name, s);
            }
            Spec::Route(s) => {
                self.routes.insert((parent, id.name), s);
            }
            Spec::VirtualGateway(s) => {
                self.virtual_gateways.insert(id.name, s);
            }
            Spec::GatewayRoute(s) => {
                self.gateway_routes.insert((parent, id.name), s);
            }
        }
    }

    /// Removes the spec filed under `id` (by `id.kind`); `true` when something was removed.
    /// Removing the mesh resource leaves the children in place (defaults then apply, as
    /// for a snapshot built without the mesh resource).
    pub fn remove(&mut self, id: &ResourceId) -> bool {
        let parent = id.parent.clone().unwrap_or_default();
        match id.kind {
            ResourceKind::Mesh => self.mesh.take().is_some(),
            ResourceKind::VirtualNode => self.virtual_nodes.remove(&id.name).is_some(),
            ResourceKind::VirtualService => self.virtual_services.remove(&id.name).is_some(),
            ResourceKind::VirtualRouter => self.virtual_routers.remove(&id.name).is_some(),
            ResourceKind::Route => self.routes.remove(&(parent, id.name.clone())).is_some(),
            ResourceKind::VirtualGateway => self.virtual_gateways.remove(&id.name).is_some(),
            ResourceKind::GatewayRoute => self
                .gateway_routes
                .remove(&(parent, id.name.clone()))
                .is_some(),
        }
    }

    /// Applies one resource as a store event would: a live resource is inserted (or
    /// replaces its previous spec), a `DELETED` one is removed. Resources of other meshes
    /// are ignored. Equivalent to rebuilding with [`MeshSnapshot::from_resources`] from the
    /// updated listing, without touching the rest of the mesh.
    pub fn apply(&mut self, r: &Resource) {
        if r.id.mesh != self.mesh_name {
            return;
        }
        if r.status == Status::Deleted {
            self.remove(&r.id);
        } else {
            self.insert(r.id.clone(), r.spec.clone());
        }
    }

    /// The routes of router `router`, by route name.
    pub fn routes_of<'a>(
        &'a self,
        router: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a RouteSpec)> + 'a {
        self.routes
            .range((router.to_owned(), String::new())..)
            .take_while(move |((r, _), _)| r == router)
            .map(|((_, n), s)| (n.as_str(), s))
    }

    /// The gateway routes of gateway `gateway`, by gateway route name.
    pub fn gateway_routes_of<'a>(
        &'a self,
        gateway: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a GatewayRouteSpec)> + 'a {
        self.gateway_routes
            .range((gateway.to_owned(), String::new())..)
            .take_while(move |((g, _), _)| g == gateway)
            .map(|((_, n), s)| (n.as_str(), s))
    }

    /// Id of a gateway route of gateway `gateway`.
    pub fn gateway_route_id(&self, gateway: &str, route: &str) -> ResourceId {
        ResourceId::grandchild(
            ResourceKind::GatewayRoute,
            self.mesh_name.clone(),
            gateway,
            route,
        )
    }

    /// Id of a direct child of this mesh.
    pub fn id(&self, kind: ResourceKind, name: &str) -> ResourceId {
        ResourceId::child(kind, self.mesh_name.clone(), name.to_owned())
    }

    /// Id of a route of router `router`.
    pub fn route_id(&self, router: &str, route: &str) -> ResourceId {
        ResourceId::grandchild(ResourceKind::Route, self.mesh_name.clone(), router, route)
    }
}
