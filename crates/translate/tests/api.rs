//! The public API's edge cases: snapshot building, proxies that cannot be translated, and a
//! minimal end-to-end use as the xDS server and reconciler will make it.

use meshplane_model::{
    Metadata, NodeId, ProxyKind, Resource, ResourceId, ResourceKind, Spec, Status, VirtualNodeSpec,
    VirtualServiceSpec,
};
use meshplane_translate::{
    DiagnosticCode, Endpoints, MeshSnapshot, Severity, TranslateOptions, dependencies, names,
    output, translate_node,
};

fn resource(id: ResourceId, spec: Spec, version: i64, status: Status) -> Resource {
    Resource {
        id,
        spec,
        metadata: Metadata {
            uid: "u".into(),
            version,
            created_at_ms: 0,
            last_updated_at_ms: 0,
            mesh_owner: "1".into(),
            resource_owner: "1".into(),
        },
        tags: vec![],
        status,
    }
}

fn node(name: &str) -> NodeId {
    NodeId {
        mesh: "demo".into(),
        owner: None,
        kind: ProxyKind::VirtualNode,
        name: name.into(),
    }
}

fn vn(json: &str) -> Spec {
    Spec::VirtualNode(serde_json::from_str::<VirtualNodeSpec>(json).unwrap())
}

#[test]
fn snapshot_keeps_one_mesh_the_newest_version_and_skips_deleted() {
    let a = ResourceId::child(ResourceKind::VirtualNode, "demo", "a");
    let old = vn(r#"{"listeners":[{"portMapping":{"port":1,"protocol":"http"}}]}"#);
    let new = vn(r#"{"listeners":[{"portMapping":{"port":2,"protocol":"http"}}]}"#);
    let resources = vec![
        resource(a.clone(), new.clone(), 3, Status::Active),
        resource(a.clone(), old, 2, Status::Active),
        resource(
            ResourceId::child(ResourceKind::VirtualNode, "other", "x"),
            new,
            1,
            Status::Active,
        ),
        resource(
            ResourceId::child(ResourceKind::VirtualService, "demo", "gone"),
            Spec::VirtualService(VirtualServiceSpec::default()),
            1,
            Status::Deleted,
        ),
    ];
    let snap = MeshSnapshot::from_resources("demo", resources.clone());
    assert_eq!(snap.virtual_nodes.len(), 1);
    assert_eq!(snap.virtual_nodes["a"].listeners()[0].port_mapping.port, 2);
    assert!(snap.virtual_services.is_empty());
    assert!(snap.mesh.is_none());
    let parts = MeshSnapshot::partition(resources);
    assert_eq!(parts.keys().collect::<Vec<_>>(), ["demo", "other"]);
    assert_eq!(parts["other"].virtual_nodes.len(), 1);
}

#[test]
fn unknown_proxies_get_an_empty_config_and_an_error() {
    let snap = MeshSnapshot::new("demo");
    let opts = TranslateOptions::default();
    let none = Endpoints::none();

    let missing = translate_node(&snap, &none, &node("nobody"), &opts);
    assert!(missing.listeners.is_empty() && missing.clusters.is_empty());
    assert_eq!(
        missing.diagnostics[0].code,
        DiagnosticCode::ProxyResourceMissing
    );
    assert!(missing.has_errors());

    let other_mesh = NodeId {
        mesh: "elsewhere".into(),
        ..node("a")
    };
    let c = translate_node(&snap, &none, &other_mesh, &opts);
    assert_eq!(c.diagnostics[0].code, DiagnosticCode::MeshMismatch);

    let gw = NodeId {
        kind: ProxyKind::VirtualGateway,
        ..node("gw")
    };
    let c = translate_node(&snap, &none, &gw, &opts);
    assert_eq!(c.diagnostics[0].code, DiagnosticCode::ProxyResourceMissing);
    assert_eq!(c.diagnostics[0].severity, Severity::Error);
}

#[test]
fn a_node_without_mesh_resource_is_served_with_defaults() {
    let mut snap = MeshSnapshot::new("demo");
    snap.insert(
        ResourceId::child(ResourceKind::VirtualNode, "demo", "a"),
        vn(
            r#"{"listeners":[{"portMapping":{"port":8080,"protocol":"http"}}],
               "serviceDiscovery":{"dns":{"hostname":"a.local"}}}"#,
        ),
    );
    let c = translate_node(
        &snap,
        &Endpoints::none(),
        &node("a"),
        &TranslateOptions::default(),
    );
    assert_eq!(c.diagnostics.len(), 1);
    assert_eq!(c.diagnostics[0].code, DiagnosticCode::MeshMissing);
    assert!(!c.has_errors());
    assert!(c.listeners.contains_key("lds_ingress_0.0.0.0_15000"));
    assert!(c.clusters.contains_key("cds_ingress_demo_a_http_8080"));
    // Resources come out in xDS push order with their type URLs.
    // (Two of each: the egress listener and cds_egress_demo_amazonaws exist under DROP_ALL.)
    let mut types: Vec<&str> = c.resources().iter().map(|(t, _, _)| *t).collect();
    assert_eq!(types.len(), 4);
    types.dedup();
    assert_eq!(types, [output::CLUSTER_TYPE_URL, output::LISTENER_TYPE_URL]);
    // Ports are options.
    let opts = TranslateOptions {
        ingress_port: 25000,
        ..TranslateOptions::default()
    };
    let c = translate_node(&snap, &Endpoints::none(), &node("a"), &opts);
    assert!(c.listeners.contains_key(&names::ingress_listener(25000)));
    let deps = dependencies(&snap, &node("a"));
    assert_eq!(deps.resources.len(), 2);
}

#[test]
fn node_tags_set_explicit_mode_and_report_bad_values() {
    use meshplane_model::Tag;
    use meshplane_translate::{APP_ADDRESS_TAG, LISTEN_ADDRESS_TAG};
    let tag = |k: &str, v: &str| Tag {
        key: k.into(),
        value: v.into(),
    };
    let base = TranslateOptions::default();
    let (o, errors) = base.with_node_tags(&[
        tag(LISTEN_ADDRESS_TAG, "127.0.0.9"),
        tag(APP_ADDRESS_TAG, "::1"),
        tag("team", "blue"),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(o.listen_address, Some("127.0.0.9".parse().unwrap()));
    assert_eq!(o.app_address, Some("::1".parse().unwrap()));
    assert_eq!(o.ingress_port, base.ingress_port);
    let (o, errors) = base.with_node_tags(&[tag(APP_ADDRESS_TAG, "app.local")]);
    assert_eq!(o, base, "a bad value changes nothing");
    assert_eq!(
        errors,
        ["tag meshplane.io/app-address is not an IP address: \"app.local\"; ignored"]
    );
}
