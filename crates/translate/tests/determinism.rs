//! Properties of the translator as a whole:
//! - determinism: the same input translated twice gives byte-identical encodings, and the
//!   order of the input resources does not matter (proptest over permutations of every
//!   fixture);
//! - RDS isolation: a route weight change alters only `RouteConfiguration` resources, never
//!   the bytes of a Listener or Cluster (so Envoy never drains a listener for it);
//! - dependencies: the dependency set names exactly what the node reads.

mod common;

use std::collections::BTreeMap;

use meshplane_model::{NodeId, ProxyKind, ResourceId, ResourceKind, Spec};
use meshplane_translate::{
    MeshSnapshot, TranslateOptions, dependencies, output, output::ROUTE_TYPE_URL, translate_node,
};
use proptest::prelude::*;

type Encoded = BTreeMap<String, BTreeMap<(String, String), Vec<u8>>>;

/// Every proxy's resource encodings, plus its diagnostics (as pseudo-resources, in order).
fn encode_all(resources: Vec<meshplane_model::Resource>, case: &common::Case) -> Encoded {
    common::translate_all(resources, &case.endpoints)
        .into_iter()
        .map(|(k, v)| {
            let mut e = common::encodings(&v);
            for (i, d) in v.diagnostics.iter().enumerate() {
                e.insert(
                    ("diagnostic".into(), format!("{i:04}")),
                    d.to_string().into_bytes(),
                );
            }
            (k, e)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn translation_is_deterministic_and_order_independent(
        case_idx in 0usize..64,
        perm_seed in proptest::collection::vec(any::<u32>(), 64),
    ) {
        let names = common::case_names();
        let case = common::load_case(&names[case_idx % names.len()]);
        let baseline = encode_all(case.resources.clone(), &case);
        // Same input again: byte-identical.
        prop_assert_eq!(&baseline, &encode_all(case.resources.clone(), &case));
        // Shuffled input (sort by a random key per position): same output.
        let mut keyed: Vec<(u32, usize)> = (0..case.resources.len())
            .map(|i| (perm_seed[i % perm_seed.len()].wrapping_mul(i as u32 + 1), i))
            .collect();
        keyed.sort();
        let shuffled: Vec<_> = keyed.iter().map(|(_, i)| case.resources[*i].clone()).collect();
        prop_assert_eq!(&baseline, &encode_all(shuffled, &case), "case {}", case.name);
    }
}

/// colorapp with the route's targets edited by `f`.
fn colorapp_with(f: impl Fn(&mut Vec<meshplane_model::common::WeightedTarget>)) -> common::Case {
    let mut case = common::load_case("colorapp");
    let mut touched = false;
    for r in &mut case.resources {
        if let Spec::Route(route) = &mut r.spec {
            f(&mut route
                .http_route
                .as_mut()
                .expect("colorapp route is http")
                .action
                .weighted_targets);
            touched = true;
        }
    }
    assert!(touched);
    case
}

const FRONT: &str = "mesh/demo/virtualNode/front";

#[test]
fn weight_change_touches_only_route_configurations() {
    let before_case = colorapp_with(|_| {});
    let after_case = colorapp_with(|t| t[0].weight = 7);
    let before = &common::translate_all(before_case.resources, &before_case.endpoints)[FRONT];
    let after = &common::translate_all(after_case.resources, &after_case.endpoints)[FRONT];
    let (b, a) = (common::encodings(before), common::encodings(after));
    assert_eq!(
        b.keys().collect::<Vec<_>>(),
        a.keys().collect::<Vec<_>>(),
        "same resources"
    );
    for (key, bytes) in &b {
        if key.0 == ROUTE_TYPE_URL {
            assert_ne!(
                &a[key], bytes,
                "the route configuration carries the new weight"
            );
        } else {
            assert_eq!(
                &a[key], bytes,
                "{} {} changed on a weight change",
                key.0, key.1
            );
        }
    }
    for t in [
        output::CLUSTER_TYPE_URL,
        output::LISTENER_TYPE_URL,
        output::ENDPOINT_TYPE_URL,
    ] {
        assert_eq!(before.version_of(t), after.version_of(t), "{t}");
    }
    assert_ne!(
        before.version_of(ROUTE_TYPE_URL),
        after.version_of(ROUTE_TYPE_URL)
    );
}

#[test]
fn target_set_change_never_touches_the_listener() {
    // Dropping a target removes its cluster (CDS) and changes RDS, but the listener bytes
    // stay identical: Envoy never drains connections for a routing change.
    let before_case = colorapp_with(|_| {});
    let after_case = colorapp_with(|t| {
        t.pop();
    });
    let before = &common::translate_all(before_case.resources, &before_case.endpoints)[FRONT];
    let after = &common::translate_all(after_case.resources, &after_case.endpoints)[FRONT];
    assert_eq!(before.listeners, after.listeners);
    assert_eq!(
        before.version_of(output::LISTENER_TYPE_URL),
        after.version_of(output::LISTENER_TYPE_URL)
    );
    assert_eq!(after.clusters.len() + 1, before.clusters.len());
}

#[test]
fn dependencies_of_the_colorapp_front() {
    let case = common::load_case("colorapp");
    let snap = MeshSnapshot::from_resources("demo", case.resources);
    let front = NodeId {
        mesh: "demo".into(),
        owner: None,
        kind: ProxyKind::VirtualNode,
        name: "front".into(),
    };
    let deps = dependencies(&snap, &front);
    let id = |k, n: &str| ResourceId::child(k, "demo", n);
    let expected: std::collections::BTreeSet<ResourceId> = [
        ResourceId::mesh("demo"),
        id(ResourceKind::VirtualNode, "front"),
        id(ResourceKind::VirtualService, "color.demo.local"),
        id(ResourceKind::VirtualRouter, "color-router"),
        ResourceId::grandchild(ResourceKind::Route, "demo", "color-router", "color-route"),
        id(ResourceKind::VirtualNode, "red"),
        id(ResourceKind::VirtualNode, "blue"),
        id(ResourceKind::VirtualNode, "green"),
    ]
    .into();
    assert_eq!(deps.resources, expected);
    // Not a dependency: another service nobody on front's path uses.
    assert!(!deps.affected_by(&id(ResourceKind::VirtualService, "front.demo.local")));
    // A route created later under the router is caught through its parent.
    assert!(deps.affected_by(&ResourceId::grandchild(
        ResourceKind::Route,
        "demo",
        "color-router",
        "new"
    )));
    // A leaf node's config depends on itself and the mesh only.
    let red = NodeId {
        name: "red".into(),
        ..front.clone()
    };
    assert_eq!(dependencies(&snap, &red).resources.len(), 2);
}

#[test]
fn dependencies_cover_missing_references_and_cloud_map() {
    let case = common::load_case("missing_references");
    let snap = MeshSnapshot::from_resources("demo", case.resources);
    let client = NodeId {
        mesh: "demo".into(),
        owner: None,
        kind: ProxyKind::VirtualNode,
        name: "client".into(),
    };
    let deps = dependencies(&snap, &client);
    // Creating the missing service must trigger a recompute.
    assert!(deps.affected_by(&ResourceId::child(
        ResourceKind::VirtualService,
        "demo",
        "ghost.demo.local"
    )));
    assert!(deps.affected_by(&ResourceId::child(
        ResourceKind::VirtualNode,
        "demo",
        "vanished"
    )));
    assert!(deps.affected_by(&ResourceId::child(
        ResourceKind::VirtualRouter,
        "demo",
        "vanished"
    )));

    let case = common::load_case("cloud_map");
    let snap = MeshSnapshot::from_resources("demo", case.resources);
    let client = NodeId {
        name: "client".into(),
        ..client
    };
    let deps = dependencies(&snap, &client);
    assert_eq!(deps.cloud_map_services.len(), 2);
}

#[test]
fn gateway_dependencies_follow_its_routes_to_routers_and_nodes() {
    let case = common::load_case("gateway_http_matches");
    let snap = MeshSnapshot::from_resources("demo", case.resources.clone());
    let gw = NodeId {
        mesh: "demo".into(),
        owner: None,
        kind: ProxyKind::VirtualGateway,
        name: "gw".into(),
    };
    let deps = dependencies(&snap, &gw);
    let id = |k, n: &str| ResourceId::child(k, "demo", n);
    for dep in [
        id(ResourceKind::VirtualGateway, "gw"),
        ResourceId::grandchild(ResourceKind::GatewayRoute, "demo", "gw", "paths"),
        id(ResourceKind::VirtualService, "color.demo.local"),
        id(ResourceKind::VirtualRouter, "color"),
        ResourceId::grandchild(ResourceKind::Route, "demo", "color", "split"),
        id(ResourceKind::VirtualNode, "red"),
        id(ResourceKind::VirtualService, "blue.demo.local"),
        id(ResourceKind::VirtualNode, "blue"),
        // A target that does not exist yet: its creation must recompute the gateway.
        id(ResourceKind::VirtualService, "nope.demo.local"),
    ] {
        assert!(deps.affected_by(&dep), "{dep} missing from {deps:?}");
    }
    // A gateway route created later is caught through the gateway.
    assert!(deps.affected_by(&ResourceId::grandchild(
        ResourceKind::GatewayRoute,
        "demo",
        "gw",
        "new"
    )));
    // Another gateway's routes are not.
    assert!(!deps.affected_by(&ResourceId::grandchild(
        ResourceKind::GatewayRoute,
        "demo",
        "other",
        "r"
    )));
    // A router weight change reaches the gateway's output (hop 2), in RDS only.
    let opts = TranslateOptions::default();
    let before = translate_node(&snap, &case.endpoints, &gw, &opts);
    let mut snap2 = snap.clone();
    let route = snap2
        .routes
        .get_mut(&("color".to_owned(), "split".to_owned()))
        .expect("route split");
    route
        .http_route
        .as_mut()
        .expect("http route")
        .action
        .weighted_targets[0]
        .weight = 7;
    let after = translate_node(&snap2, &case.endpoints, &gw, &opts);
    assert_ne!(before.route_configs, after.route_configs);
    assert_eq!(before.listeners, after.listeners);
    assert_eq!(before.clusters, after.clusters);
}

#[test]
fn every_dependency_change_is_visible_and_others_are_not() {
    // Removing resources outside the dependency set must not change the output: the
    // contract the reconciler relies on (colorapp: `front.demo.local` is not read by front).
    let case = common::load_case("colorapp");
    let snap = MeshSnapshot::from_resources("demo", case.resources.clone());
    let front = NodeId {
        mesh: "demo".into(),
        owner: None,
        kind: ProxyKind::VirtualNode,
        name: "front".into(),
    };
    let opts = TranslateOptions::default();
    let before = translate_node(&snap, &case.endpoints, &front, &opts);
    let deps = dependencies(&snap, &front);
    let mut snap2 = snap.clone();
    for name in snap.virtual_services.keys() {
        let id = ResourceId::child(ResourceKind::VirtualService, "demo", name.clone());
        if !deps.affected_by(&id) {
            snap2.virtual_services.remove(name);
        }
    }
    assert_eq!(
        snap2.virtual_services.len(),
        1,
        "front.demo.local was removed"
    );
    assert_eq!(
        before,
        translate_node(&snap2, &case.endpoints, &front, &opts)
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The reconciler keeps one `MeshSnapshot` per mesh and applies store events to it
    /// (`apply`/`remove`) instead of rebuilding it per change; after any sequence of puts
    /// and deletes it must equal the snapshot rebuilt from what is left.
    #[test]
    fn incremental_snapshot_equals_rebuild(
        case_idx in 0usize..64,
        ops in proptest::collection::vec((any::<bool>(), any::<u16>()), 0..40),
    ) {
        let names = common::case_names();
        let case = common::load_case(&names[case_idx % names.len()]);
        let mesh = case.resources.iter().map(|r| r.id.mesh.clone()).next()
            .unwrap_or_else(|| "demo".to_owned());
        let mut live: BTreeMap<ResourceId, meshplane_model::Resource> = case
            .resources
            .iter()
            .filter(|r| r.id.mesh == mesh)
            .map(|r| (r.id.clone(), r.clone()))
            .collect();
        let mut incremental = MeshSnapshot::from_resources(&mesh, live.values().cloned());
        let all: Vec<meshplane_model::Resource> =
            case.resources.iter().filter(|r| r.id.mesh == mesh).cloned().collect();
        prop_assume!(!all.is_empty());
        for (put, pick) in ops {
            let r = &all[pick as usize % all.len()];
            if put {
                live.insert(r.id.clone(), r.clone());
                incremental.apply(r);
            } else {
                live.remove(&r.id);
                incremental.remove(&r.id);
            }
        }
        let rebuilt = MeshSnapshot::from_resources(&mesh, live.values().cloned());
        prop_assert_eq!(incremental, rebuilt, "case {}", case.name);
    }
}
