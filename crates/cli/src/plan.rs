//! Pure planning for `apply` and `delete -f`: dependency order, the hard dependencies of
//! a document (what must exist before it can be created), and the spec diff shown by
//! `apply --dry-run`.
//!
//! ```text
//!   apply order:   Mesh → VirtualNode → VirtualRouter → VirtualService → Route → VirtualGateway → GatewayRoute
//!   delete order:  the reverse
//! ```
//!
//! A virtual service needs its provider (node or router), a route its router and target
//! nodes, a gateway route its gateway and target service. A virtual node's backends are
//! *not* hard dependencies: App Mesh accepts a backend naming a service that does not
//! exist yet, and a node may well be the provider of a service it lists as a backend.

use std::collections::HashMap;

use meshplane_model::virtual_service::VirtualServiceProvider;
use meshplane_model::{ResourceId, ResourceKind, Spec};
use serde_json::Value;

use super::document::Document;

/// Position of `kind` in the apply order ([`ResourceKind::ALL`]).
pub fn rank(kind: ResourceKind) -> usize {
    ResourceKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(ResourceKind::ALL.len())
}

/// Sorts documents into apply order: by kind rank, file order within a kind.
pub fn apply_order(docs: &mut [Document]) {
    docs.sort_by_key(|d| rank(d.id.kind));
}

/// Sorts documents into delete order: children before parents, users before providers.
pub fn delete_order(docs: &mut [Document]) {
    apply_order(docs);
    docs.reverse();
}

/// Resources that must exist before `id` with `spec` can be created.
pub fn hard_deps(id: &ResourceId, spec: &Spec) -> Vec<ResourceId> {
    let mut deps = Vec::new();
    if id.kind != ResourceKind::Mesh {
        deps.push(ResourceId::mesh(id.mesh.clone()));
    }
    if let Some(p) = id.parent_id().filter(|p| p.kind != ResourceKind::Mesh) {
        deps.push(p);
    }
    let child = |kind, name: &str| ResourceId::child(kind, id.mesh.clone(), name.to_owned());
    match spec {
        Spec::VirtualService(s) => match &s.provider {
            Some(VirtualServiceProvider::VirtualNode(p)) => {
                deps.push(child(ResourceKind::VirtualNode, &p.virtual_node_name))
            }
            Some(VirtualServiceProvider::VirtualRouter(p)) => {
                deps.push(child(ResourceKind::VirtualRouter, &p.virtual_router_name))
            }
            None => {}
        },
        Spec::Route(s) => {
            for t in s.weighted_targets() {
                deps.push(child(ResourceKind::VirtualNode, &t.virtual_node));
            }
        }
        Spec::GatewayRoute(s) => {
            if let Some(t) = s.target() {
                deps.push(child(
                    ResourceKind::VirtualService,
                    &t.virtual_service.virtual_service_name,
                ));
            }
        }
        _ => {}
    }
    deps.dedup();
    deps
}

/// Finds documents declaring the same resource twice; returns `(first, duplicate)` pairs
/// of indexes into `docs`.
pub fn duplicates(docs: &[Document]) -> Vec<(usize, usize)> {
    let mut seen: HashMap<&ResourceId, usize> = HashMap::new();
    let mut dups = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        if let Some(first) = seen.get(&d.id) {
            dups.push((*first, i));
        } else {
            seen.insert(&d.id, i);
        }
    }
    dups
}

/// How a resource is named in CLI output: `virtualnode/red`, `route/color-router/color-route`.
pub fn display_name(id: &ResourceId) -> String {
    let kind = id.kind.as_str().to_ascii_lowercase();
    match &id.parent {
        Some(p) => format!("{kind}/{p}/{}", id.name),
        None => format!("{kind}/{}", id.name),
    }
}

/// One changed leaf between two JSON values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiffLine {
    /// Present only in the new value.
    Added(String, String),
    /// Present only in the old value.
    Removed(String, String),
    /// Present in both with different values: path, old, new.
    Changed(String, String, String),
}

impl std::fmt::Display for DiffLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiffLine::Added(p, v) => write!(f, "+ {p}: {v}"),
            DiffLine::Removed(p, v) => write!(f, "- {p}: {v}"),
            DiffLine::Changed(p, o, n) => write!(f, "~ {p}: {o} -> {n}"),
        }
    }
}

/// The leaf-level differences between `old` and `new`, paths rooted at `root`
/// (`spec.listeners[0].portMapping.port`). Objects are compared member by member, lists
/// element by element; anything else that differs is one `Changed` line.
pub fn json_diff(root: &str, old: &Value, new: &Value) -> Vec<DiffLine> {
    let mut out = Vec::new();
    diff_into(root, old, new, &mut out);
    out
}

fn compact(v: &Value) -> String {
    v.to_string()
}

fn diff_into(path: &str, old: &Value, new: &Value, out: &mut Vec<DiffLine>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{path}.{k}");
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_into(&p, x, y, out),
                    (Some(x), None) => out.push(DiffLine::Removed(p, compact(x))),
                    (None, Some(y)) => out.push(DiffLine::Added(p, compact(y))),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                let p = format!("{path}[{i}]");
                match (a.get(i), b.get(i)) {
                    (Some(x), Some(y)) => diff_into(&p, x, y, out),
                    (Some(x), None) => out.push(DiffLine::Removed(p, compact(x))),
                    (None, Some(y)) => out.push(DiffLine::Added(p, compact(y))),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => out.push(DiffLine::Changed(path.to_owned(), compact(a), compact(b))),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use meshplane_api::parse_spec;
    use serde_json::json;

    use super::*;
    use crate::document::parse_documents;

    fn docs(yaml: &str) -> Vec<Document> {
        parse_documents("t.yaml", yaml).unwrap()
    }

    #[test]
    fn apply_order_puts_parents_and_providers_first_and_keeps_file_order_within_a_kind() {
        let mut d = docs(
            "kind: GatewayRoute\nmesh: m\nvirtualGateway: g\nname: gr\nspec: {httpRoute: {match: {prefix: /}, action: {target: {virtualService: {virtualServiceName: s}}}}}\n---\n\
             kind: Route\nmesh: m\nvirtualRouter: r\nname: rt\nspec: {tcpRoute: {action: {weightedTargets: [{virtualNode: b, weight: 1}]}}}\n---\n\
             kind: VirtualService\nmesh: m\nname: s\nspec: {provider: {virtualRouter: {virtualRouterName: r}}}\n---\n\
             kind: VirtualGateway\nmesh: m\nname: g\nspec: {listeners: [{portMapping: {port: 80, protocol: http}}]}\n---\n\
             kind: VirtualNode\nmesh: m\nname: b\nspec: {}\n---\n\
             kind: VirtualRouter\nmesh: m\nname: r\nspec: {}\n---\n\
             kind: VirtualNode\nmesh: m\nname: a\nspec: {}\n---\n\
             kind: Mesh\nname: m\n",
        );
        apply_order(&mut d);
        let names: Vec<String> = d.iter().map(|d| display_name(&d.id)).collect();
        assert_eq!(
            names,
            [
                "mesh/m",
                "virtualnode/b",
                "virtualnode/a",
                "virtualrouter/r",
                "virtualservice/s",
                "route/r/rt",
                "virtualgateway/g",
                "gatewayroute/g/gr"
            ]
        );
        delete_order(&mut d);
        assert_eq!(display_name(&d[0].id), "gatewayroute/g/gr");
        assert_eq!(display_name(&d[7].id), "mesh/m");
        let pos = |n: &str| d.iter().position(|x| display_name(&x.id) == n).unwrap();
        assert!(
            pos("virtualservice/s") < pos("virtualrouter/r"),
            "users before providers"
        );
        assert!(
            pos("route/r/rt") < pos("virtualnode/b"),
            "routes before their targets"
        );
    }

    #[test]
    fn hard_deps_follow_parents_providers_and_targets_but_not_backends() {
        let route = ResourceId::grandchild(ResourceKind::Route, "m", "r", "rt");
        let spec = parse_spec(
            ResourceKind::Route,
            json!({"httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": [
                {"virtualNode": "a", "weight": 1}, {"virtualNode": "b", "weight": 0}]}}}),
        )
        .unwrap();
        let vn = |n: &str| ResourceId::child(ResourceKind::VirtualNode, "m", n);
        assert_eq!(
            hard_deps(&route, &spec),
            [
                ResourceId::mesh("m"),
                ResourceId::child(ResourceKind::VirtualRouter, "m", "r"),
                vn("a"),
                vn("b")
            ]
        );

        let node = vn("front");
        let spec = parse_spec(
            ResourceKind::VirtualNode,
            json!({"backends": [{"virtualService": {"virtualServiceName": "color.local"}}]}),
        )
        .unwrap();
        assert_eq!(hard_deps(&node, &spec), [ResourceId::mesh("m")]);

        let vs = ResourceId::child(ResourceKind::VirtualService, "m", "s");
        let spec = parse_spec(
            ResourceKind::VirtualService,
            json!({"provider": {"virtualNode": {"virtualNodeName": "a"}}}),
        )
        .unwrap();
        assert_eq!(hard_deps(&vs, &spec), [ResourceId::mesh("m"), vn("a")]);
        assert!(
            hard_deps(
                &ResourceId::mesh("m"),
                &parse_spec(ResourceKind::Mesh, json!({})).unwrap()
            )
            .is_empty()
        );
    }

    #[test]
    fn duplicates_are_found_across_forms() {
        let d = docs(
            "kind: VirtualNode\nmesh: m\nname: a\nspec: {}\n---\n\
             {\"virtualNode\": {\"meshName\": \"m\", \"virtualNodeName\": \"a\", \"spec\": {}}}\n---\n\
             kind: VirtualNode\nmesh: m2\nname: a\nspec: {}\n",
        );
        assert_eq!(duplicates(&d), [(0, 1)]);
    }

    #[test]
    fn json_diff_lists_leaf_changes_with_paths() {
        let old = json!({"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}], "logging": {"x": 1}});
        let new = json!({"listeners": [{"portMapping": {"port": 9090, "protocol": "http"}}, {"portMapping": {"port": 1, "protocol": "tcp"}}]});
        let lines: Vec<String> = json_diff("spec", &old, &new)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "~ spec.listeners[0].portMapping.port: 8080 -> 9090",
                "+ spec.listeners[1]: {\"portMapping\":{\"port\":1,\"protocol\":\"tcp\"}}",
                "- spec.logging: {\"x\":1}",
            ]
        );
        assert!(json_diff("spec", &old, &old).is_empty());
    }
}
