//! Document parsing: the three input forms, YAML streams, JSON arrays, tags, and errors
//! that name the document and the field.

use meshplane_api::parse_spec;
use meshplane_model::{ResourceId, ResourceKind, Tag};
use serde_json::json;

use super::*;

fn one(text: &str) -> Document {
    let mut d = parse_documents("t", text).unwrap();
    assert_eq!(d.len(), 1);
    d.remove(0)
}

fn errors(text: &str) -> Vec<String> {
    parse_documents("t.yaml", text)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

const NODE_SPEC: &str = r#"{"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}], "serviceDiscovery": {"dns": {"hostname": "red.colorapp.local"}}}"#;

fn node_spec() -> Spec {
    parse_spec(
        ResourceKind::VirtualNode,
        serde_json::from_str(NODE_SPEC).unwrap(),
    )
    .unwrap()
}

#[test]
fn the_three_forms_of_one_resource_parse_to_the_same_document() {
    let native = one(
        "kind: VirtualNode\nmesh: colorapp\nname: red\nspec:\n  listeners:\n  - portMapping: {port: 8080, protocol: http}\n  serviceDiscovery:\n    dns: {hostname: red.colorapp.local}\n",
    );
    // What `aws appmesh describe-virtual-node` prints.
    let wrapped = one(&format!(
        r#"{{"virtualNode": {{"meshName": "colorapp", "virtualNodeName": "red", "spec": {NODE_SPEC},
            "metadata": {{"arn": "arn:aws:appmesh:us-east-1:111122223333:mesh/colorapp/virtualNode/red", "version": 4,
            "uid": "u", "createdAt": 1700000000.5, "lastUpdatedAt": 1700000000.5,
            "meshOwner": "111122223333", "resourceOwner": "111122223333"}},
            "status": {{"status": "ACTIVE"}}}}}}"#
    ));
    // The API response body.
    let unwrapped = one(&format!(
        r#"{{"meshName": "colorapp", "virtualNodeName": "red", "spec": {NODE_SPEC}, "status": {{"status": "ACTIVE"}}}}"#
    ));
    for d in [&native, &wrapped, &unwrapped] {
        assert_eq!(
            d.id,
            ResourceId::child(ResourceKind::VirtualNode, "colorapp", "red")
        );
        assert_eq!(d.spec, node_spec());
        assert!(d.tags.is_empty());
    }
}

#[test]
fn kinds_are_detected_from_name_members_and_wrappers() {
    let cases = [
        (r#"{"meshName": "m"}"#, ResourceId::mesh("m")),
        (
            r#"{"mesh": {"meshName": "m", "spec": {}}}"#,
            ResourceId::mesh("m"),
        ),
        (
            r#"{"meshName": "m", "virtualServiceName": "s.local", "spec": {}}"#,
            ResourceId::child(ResourceKind::VirtualService, "m", "s.local"),
        ),
        (
            r#"{"meshName": "m", "virtualRouterName": "r", "spec": {}}"#,
            ResourceId::child(ResourceKind::VirtualRouter, "m", "r"),
        ),
        (
            r#"{"route": {"meshName": "m", "virtualRouterName": "r", "routeName": "rt", "spec": {"tcpRoute": {"action": {"weightedTargets": [{"virtualNode": "n", "weight": 1}]}}}}}"#,
            ResourceId::grandchild(ResourceKind::Route, "m", "r", "rt"),
        ),
        (
            r#"{"meshName": "m", "virtualGatewayName": "g", "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]}}"#,
            ResourceId::child(ResourceKind::VirtualGateway, "m", "g"),
        ),
        (
            r#"{"meshName": "m", "virtualGatewayName": "g", "gatewayRouteName": "gr", "spec": {"httpRoute": {"match": {"prefix": "/"}, "action": {"target": {"virtualService": {"virtualServiceName": "s"}}}}}}"#,
            ResourceId::grandchild(ResourceKind::GatewayRoute, "m", "g", "gr"),
        ),
    ];
    for (text, id) in cases {
        assert_eq!(one(text).id, id, "{text}");
    }
}

#[test]
fn native_routes_need_their_parent_and_meshes_need_no_spec() {
    let d = one(
        "kind: Route\nmesh: m\nvirtualRouter: r\nname: rt\nspec: {tcpRoute: {action: {weightedTargets: [{virtualNode: n, weight: 1}]}}}\n",
    );
    assert_eq!(
        d.id,
        ResourceId::grandchild(ResourceKind::Route, "m", "r", "rt")
    );
    let m = one("kind: mesh\nname: m\n");
    assert_eq!(m.id, ResourceId::mesh("m"));
    assert_eq!(spec_to_json(&m.spec), json!({}));
    assert_eq!(one("kind: Mesh\nmesh: m\n").id, ResourceId::mesh("m"));

    let e = errors("kind: Route\nmesh: m\nname: rt\nspec: {}\n");
    assert_eq!(
        e,
        ["t.yaml: document 1: virtualRouter: required member is missing"]
    );
    let e = errors("kind: VirtualNode\nmesh: m\nname: n\nvirtualRouter: r\nspec: {}\n");
    assert!(
        e[0].starts_with("t.yaml: document 1: virtualRouter: unknown member"),
        "{e:?}"
    );
    let e = errors("kind: VirtualNode\nmesh: m\nname: n\n");
    assert_eq!(e, ["t.yaml: document 1: spec: required member is missing"]);
}

#[test]
fn multi_document_yaml_and_json_arrays_number_documents_in_order() {
    let yaml = "---\nkind: Mesh\nname: m\n---\n# only a comment\n---\nkind: VirtualRouter\nmesh: m\nname: r\nspec: {}\n...\n---\n- kind: VirtualNode\n  mesh: m\n  name: a\n  spec: {}\n- kind: VirtualNode\n  mesh: m\n  name: b\n  spec: {}\n";
    let d = parse_documents("f.yaml", yaml).unwrap();
    let got: Vec<(String, usize)> = d
        .iter()
        .map(|d| (d.id.name.clone(), d.origin.index))
        .collect();
    assert_eq!(
        got,
        [
            ("m".into(), 1),
            ("r".into(), 2),
            ("a".into(), 3),
            ("b".into(), 4)
        ]
    );

    let json = "[{\"kind\": \"Mesh\", \"name\": \"m\"},\n\t{\"kind\": \"VirtualRouter\", \"mesh\": \"m\", \"name\": \"r\", \"spec\": {}}]";
    let d = parse_documents("f.json", json).unwrap();
    assert_eq!(
        d.iter().map(|d| d.id.kind).collect::<Vec<_>>(),
        [ResourceKind::Mesh, ResourceKind::VirtualRouter]
    );
    assert_eq!(d[1].origin.to_string(), "f.json: document 2");
}

#[test]
fn bad_kinds_and_bad_specs_name_the_document_and_field_and_all_are_reported() {
    let e = errors(
        "kind: Mesh\nname: m\n---\nkind: VirtualNod\nmesh: m\nname: a\nspec: {}\n---\n\
         kind: VirtualNode\nmesh: m\nname: b\nspec: {listeners: [{portMapping: {port: x, protocol: http}}]}\n---\n\
         just a string\n---\n{foo: 1}\n",
    );
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(
        e[0].starts_with(
            "t.yaml: document 2: kind: unknown kind `VirtualNod`, expected one of Mesh, VirtualNode"
        ),
        "{}",
        e[0]
    );
    assert!(
        e[1].starts_with("t.yaml: document 3: spec.listeners[0].portMapping.port:"),
        "{}",
        e[1]
    );
    assert_eq!(
        e[2],
        "t.yaml: document 4: a document must be a mapping (JSON object)"
    );
    assert!(
        e[3].starts_with("t.yaml: document 5: cannot tell the resource kind"),
        "{}",
        e[3]
    );

    let e = errors(
        r#"{"virtualNode": {"meshName": "m", "virtualNodeName": "n", "spec": {"bogus": 1}}}"#,
    );
    assert!(
        e[0].starts_with("t.yaml: document 1: virtualNode.spec.bogus: unknown field `bogus`"),
        "{}",
        e[0]
    );
    let e = errors("kind: VirtualNode\nmesh: m\nname: n\nspec: {}\nlabels: {}\n");
    assert!(e[0].contains("labels: unknown member"), "{}", e[0]);
}

#[test]
fn invalid_yaml_is_one_error_with_the_position() {
    let e = errors("kind: Mesh\nname: [unclosed\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("t.yaml: document 0: invalid YAML/JSON in document 1:"),
        "{}",
        e[0]
    );
}

#[test]
fn tags_are_a_map_or_a_list() {
    let tag = |k: &str, v: &str| Tag {
        key: k.into(),
        value: v.into(),
    };
    let d = one("kind: Mesh\nname: m\ntags: {team: blue, cost: 42, empty: ''}\n");
    assert_eq!(
        d.tags,
        [tag("cost", "42"), tag("empty", ""), tag("team", "blue")]
    );
    let d = one("kind: Mesh\nname: m\ntags: [{key: team, value: blue}]\n");
    assert_eq!(d.tags, [tag("team", "blue")]);
    let e = errors("kind: Mesh\nname: m\ntags: [{key: team}]\n");
    assert_eq!(
        e,
        ["t.yaml: document 1: tags[0].value: required string member"]
    );
}

#[test]
fn rendered_documents_parse_back_to_the_same_resources() {
    let docs = vec![
        (ResourceId::mesh("m"), parse_spec(ResourceKind::Mesh, json!({})).unwrap(), vec![Tag { key: "a b".into(), value: "c: d".into() }]),
        (ResourceId::child(ResourceKind::VirtualNode, "m", "red"), node_spec(), vec![]),
        (
            ResourceId::grandchild(ResourceKind::Route, "m", "r", "rt"),
            parse_spec(ResourceKind::Route, json!({"tcpRoute": {"action": {"weightedTargets": [{"virtualNode": "red", "weight": 1}]}}})).unwrap(),
            vec![],
        ),
    ];
    for json in [false, true] {
        let text = render_documents(&docs, json).unwrap();
        let back = parse_documents("x", &text).unwrap();
        let got: Vec<_> = back.into_iter().map(|d| (d.id, d.spec, d.tags)).collect();
        assert_eq!(got, docs, "{text}");
    }
    let yaml = render_documents(&docs[2..], false).unwrap();
    assert!(
        yaml.starts_with("kind: Route\nmesh: m\nname: rt\nvirtualRouter: r\nspec:\n"),
        "{yaml}"
    );
}

#[test]
fn the_colorapp_example_parses_and_passes_model_validation() {
    let text = include_str!("../../../../examples/colorapp.yaml");
    let mut docs = parse_documents("examples/colorapp.yaml", text).unwrap();
    crate::plan::apply_order(&mut docs);
    let names: Vec<String> = docs
        .iter()
        .map(|d| crate::plan::display_name(&d.id))
        .collect();
    assert_eq!(
        names,
        [
            "mesh/colorapp",
            "virtualnode/front",
            "virtualnode/red",
            "virtualnode/blue",
            "virtualnode/green",
            "virtualrouter/color-router",
            "virtualservice/color.colorapp.local",
            "route/color-router/color-route",
        ]
    );
    for d in &docs {
        meshplane_model::validate::validate_spec(&d.spec)
            .unwrap_or_else(|v| panic!("{}: {v}", d.origin));
    }
}
