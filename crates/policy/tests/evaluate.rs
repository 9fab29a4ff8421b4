//! Table tests of the policy evaluator: the issue's cases, wildcard corners, NotAction/NotResource, every ARN form, and a fuzz of documents.

use meshplane_model::{NodeId, ResourceId, ResourceKind as K};
use meshplane_policy::operation::{self, APP_MESH_OPERATIONS, CLOUD_MAP_OPERATIONS, Scope};
use meshplane_policy::{Decision, Policy, StatementRef, evaluate, evaluate_all};
use proptest::prelude::*;
use serde_json::{Value, json};

const ACCOUNT: &str = "111122223333";

fn scope() -> Scope {
    Scope::new("aws", "us-east-1", ACCOUNT)
}

fn policy(v: Value) -> Policy {
    Policy::from_value(&v).unwrap_or_else(|e| panic!("policy refused: {e}"))
}

fn arn(path: &str) -> String {
    format!("arn:aws:appmesh:us-east-1:{ACCOUNT}:{path}")
}

/// The decision for App Mesh `op` on `target`, through the operation table.
fn decide(policies: &[Policy], op: &str, target: Option<&ResourceId>) -> Decision {
    let a = operation::app_mesh(&scope(), op, target).unwrap();
    evaluate(policies, &a.action, &a.resource)
}

fn dev_only() -> Policy {
    policy(json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": "appmesh:*",
            "Resource": ["arn:aws:appmesh:*:*:mesh/dev", "arn:aws:appmesh:*:*:mesh/dev/*"]
        }]
    }))
}

#[test]
fn key_limited_to_dev_changes_dev_and_is_denied_on_prod() {
    let p = [dev_only()];
    let route = |m: &str| ResourceId::grandchild(K::Route, m, "r", "rt");
    let node = |m: &str| ResourceId::child(K::VirtualNode, m, "n");
    for (op, target) in [
        ("CreateRoute", route("dev")),
        ("UpdateRoute", route("dev")),
        ("DeleteVirtualNode", node("dev")),
        ("UpdateMesh", ResourceId::mesh("dev")),
        ("ListVirtualNodes", ResourceId::mesh("dev")),
    ] {
        assert_eq!(
            decide(&p, op, Some(&target)),
            Decision::Allow,
            "{op} {target}"
        );
    }
    for (op, target) in [
        ("CreateRoute", route("prod")),
        ("DeleteVirtualNode", node("prod")),
        ("UpdateMesh", ResourceId::mesh("prod")),
        ("ListVirtualNodes", ResourceId::mesh("prod")),
        // `mesh/dev/*` must not reach a mesh whose name only starts with `dev`.
        ("UpdateMesh", ResourceId::mesh("devil")),
        ("CreateRoute", route("dev2")),
    ] {
        assert_eq!(
            decide(&p, op, Some(&target)),
            Decision::ImplicitDeny,
            "{op} {target}"
        );
    }
    // ListMeshes has no resource: a statement scoped to ARNs does not grant it.
    assert_eq!(decide(&p, "ListMeshes", None), Decision::ImplicitDeny);
}

#[test]
fn read_only_key_lists_and_describes_but_cannot_update() {
    let p = [policy(json!({
        "Version": "2012-10-17",
        "Statement": {"Effect": "Allow", "Action": ["appmesh:Describe*", "appmesh:List*"], "Resource": "*"}
    }))];
    let vn = ResourceId::child(K::VirtualNode, "prod", "n");
    assert_eq!(decide(&p, "ListMeshes", None), Decision::Allow);
    assert_eq!(
        decide(&p, "ListVirtualNodes", Some(&ResourceId::mesh("prod"))),
        Decision::Allow
    );
    assert_eq!(
        decide(&p, "DescribeVirtualNode", Some(&vn)),
        Decision::Allow
    );
    assert_eq!(
        decide(&p, "ListTagsForResource", Some(&vn)),
        Decision::Allow
    );
    for op in [
        "UpdateVirtualNode",
        "DeleteVirtualNode",
        "CreateVirtualNode",
        "TagResource",
    ] {
        assert_eq!(decide(&p, op, Some(&vn)), Decision::ImplicitDeny, "{op}");
    }
    // List* does not reach the other service either.
    assert_eq!(
        evaluate(&p, "servicediscovery:ListServices", "*"),
        Decision::ImplicitDeny
    );
}

#[test]
fn explicit_deny_beats_allow_in_any_policy_and_any_order() {
    let allow_all =
        policy(json!({"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}));
    let deny_prod = policy(json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Fine", "Effect": "Allow", "Action": "appmesh:*", "Resource": "*"},
            {"Sid": "NoProdDeletes", "Effect": "Deny", "Action": "appmesh:Delete*", "Resource": "arn:aws:appmesh:*:*:mesh/prod*"}
        ]
    }));
    let target = ResourceId::child(K::VirtualService, "prod", "svc.local");
    let denied = Decision::ExplicitDeny {
        statement: StatementRef {
            policy: 1,
            index: 1,
            sid: Some("NoProdDeletes".into()),
        },
    };
    assert_eq!(
        decide(
            &[allow_all.clone(), deny_prod.clone()],
            "DeleteVirtualService",
            Some(&target)
        ),
        denied
    );
    let Decision::ExplicitDeny { statement } = decide(
        &[deny_prod.clone(), allow_all.clone()],
        "DeleteVirtualService",
        Some(&target),
    ) else {
        panic!("deny must win regardless of order")
    };
    assert_eq!((statement.policy, statement.index), (0, 1));
    // Deny covers only what it names.
    assert_eq!(
        decide(
            &[allow_all.clone(), deny_prod.clone()],
            "UpdateVirtualService",
            Some(&target)
        ),
        Decision::Allow
    );
    assert_eq!(
        decide(
            &[allow_all, deny_prod],
            "DeleteVirtualService",
            Some(&ResourceId::child(K::VirtualService, "dev", "s"))
        ),
        Decision::Allow
    );
    // No policy at all: implicit deny.
    assert_eq!(
        evaluate(&[], "appmesh:ListMeshes", "*"),
        Decision::ImplicitDeny
    );
}

#[test]
fn wildcard_corners() {
    let allow = |action: &str, resource: &str| {
        [policy(
            json!({"Statement": {"Effect": "Allow", "Action": action, "Resource": resource}}),
        )]
    };
    let cases: &[(&str, &str, &str, &str, bool)] = &[
        // action pattern, resource pattern, action, resource, allowed?
        // `mesh/dev*` spans `/`: it covers mesh dev, dev2 and everything inside them.
        (
            "appmesh:*",
            "arn:aws:appmesh:*:*:mesh/dev*",
            "appmesh:UpdateMesh",
            &arn("mesh/dev"),
            true,
        ),
        (
            "appmesh:*",
            "arn:aws:appmesh:*:*:mesh/dev*",
            "appmesh:UpdateMesh",
            &arn("mesh/dev2"),
            true,
        ),
        (
            "appmesh:*",
            "arn:aws:appmesh:*:*:mesh/dev*",
            "appmesh:CreateRoute",
            &arn("mesh/dev/virtualRouter/r/route/x"),
            true,
        ),
        (
            "appmesh:*",
            "arn:aws:appmesh:*:*:mesh/dev/*",
            "appmesh:UpdateMesh",
            &arn("mesh/dev"),
            false,
        ),
        // `*` in the resource part spans `:` too (names may contain it).
        (
            "appmesh:*",
            "arn:aws:appmesh:*:*:mesh/a*z",
            "appmesh:UpdateMesh",
            &arn("mesh/a:b/virtualNode/c:z"),
            true,
        ),
        // A wildcard in the region stays in the region.
        (
            "appmesh:*",
            "arn:aws:appmesh:us-*:*:mesh/m",
            "appmesh:UpdateMesh",
            "arn:aws:appmesh:us-east-1:1:mesh/m",
            true,
        ),
        (
            "appmesh:*",
            "arn:aws:appmesh:us-*:*:mesh/m",
            "appmesh:UpdateMesh",
            "arn:aws:appmesh:eu-west-1:1:mesh/m",
            false,
        ),
        (
            "appmesh:*",
            "arn:aws:appmesh:*:222233334444:*",
            "appmesh:UpdateMesh",
            &arn("mesh/m"),
            false,
        ),
        (
            "appmesh:*",
            "arn:aws:appmesh:*:*:*",
            "appmesh:ListMeshes",
            "*",
            false,
        ),
        // Another service's ARN is not an App Mesh one.
        (
            "*",
            "arn:aws:appmesh:*:*:*",
            "servicediscovery:GetService",
            "arn:aws:servicediscovery:us-east-1:1:service/srv-1",
            false,
        ),
        // `?` is exactly one character.
        (
            "appmesh:*",
            "arn:aws:appmesh:*:*:mesh/team-?",
            "appmesh:UpdateMesh",
            &arn("mesh/team-a"),
            true,
        ),
        (
            "appmesh:*",
            "arn:aws:appmesh:*:*:mesh/team-?",
            "appmesh:UpdateMesh",
            &arn("mesh/team-ab"),
            false,
        ),
        (
            "appmesh:*",
            "arn:aws:appmesh:*:*:mesh/team-?",
            "appmesh:UpdateMesh",
            &arn("mesh/team-"),
            false,
        ),
        (
            "appmesh:Update?esh",
            "*",
            "appmesh:UpdateMesh",
            &arn("mesh/m"),
            true,
        ),
        (
            "appmesh:Update?esh",
            "*",
            "appmesh:UpdateVirtualNode",
            &arn("mesh/m"),
            false,
        ),
        // Actions ignore case; resources do not.
        (
            "APPMESH:describe*",
            "*",
            "appmesh:DescribeMesh",
            &arn("mesh/m"),
            true,
        ),
        (
            "AppMesh:CreateMesh",
            "*",
            "appmesh:createmesh",
            &arn("mesh/m"),
            true,
        ),
        (
            "appmesh:*",
            "arn:aws:appmesh:*:*:mesh/Dev",
            "appmesh:UpdateMesh",
            &arn("mesh/dev"),
            false,
        ),
        (
            "appmesh:*",
            "arn:aws:appmesh:*:*:mesh/dev/virtualnode/*",
            "appmesh:UpdateVirtualNode",
            &arn("mesh/dev/virtualNode/n"),
            false,
        ),
        // `appmesh:*` does not reach Cloud Map; `*` reaches both.
        (
            "appmesh:*",
            "*",
            "servicediscovery:RegisterInstance",
            "*",
            false,
        ),
        ("*", "*", "servicediscovery:RegisterInstance", "*", true),
        ("appmesh:Describe*", "*", "appmesh:ListMeshes", "*", false),
    ];
    for (ap, rp, action, resource, want) in cases {
        let got = evaluate(&allow(ap, rp), action, resource).is_allowed();
        assert_eq!(
            got, *want,
            "Action {ap} Resource {rp} vs {action} on {resource}"
        );
    }
}

#[test]
fn not_action_and_not_resource() {
    let p = [policy(json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "NotAction": ["appmesh:Delete*", "servicediscovery:*"], "Resource": "*"},
            {"Effect": "Deny", "Action": "appmesh:*", "NotResource": ["arn:aws:appmesh:*:*:mesh/dev", "arn:aws:appmesh:*:*:mesh/dev/*"]}
        ]
    }))];
    let dev = ResourceId::child(K::VirtualRouter, "dev", "r");
    let prod = ResourceId::child(K::VirtualRouter, "prod", "r");
    assert_eq!(
        decide(&p, "UpdateVirtualRouter", Some(&dev)),
        Decision::Allow
    );
    assert_eq!(
        decide(&p, "DeleteVirtualRouter", Some(&dev)),
        Decision::ImplicitDeny
    );
    assert!(matches!(
        decide(&p, "UpdateVirtualRouter", Some(&prod)),
        Decision::ExplicitDeny { .. }
    ));
    // NotResource also covers `*`: ListMeshes is outside mesh/dev, so denied.
    assert!(matches!(
        decide(&p, "ListMeshes", None),
        Decision::ExplicitDeny { .. }
    ));
    assert_eq!(
        evaluate(&p, "servicediscovery:ListServices", "*"),
        Decision::ImplicitDeny
    );
}

#[test]
fn evaluate_all_needs_every_resource() {
    let p = [dev_only()];
    let a = arn("mesh/dev/virtualNode/a");
    let b = arn("mesh/prod/virtualNode/b");
    assert_eq!(
        evaluate_all(&p, "appmesh:UpdateVirtualNode", [a.as_str()]),
        Decision::Allow
    );
    assert_eq!(
        evaluate_all(&p, "appmesh:UpdateVirtualNode", [a.as_str(), b.as_str()]),
        Decision::ImplicitDeny
    );
}

#[test]
fn every_resource_kind_has_its_arn() {
    let s = scope();
    let cases: &[(&str, ResourceId, &str)] = &[
        ("CreateMesh", ResourceId::mesh("m"), "mesh/m"),
        (
            "DescribeVirtualNode",
            ResourceId::child(K::VirtualNode, "m", "n"),
            "mesh/m/virtualNode/n",
        ),
        (
            "UpdateVirtualService",
            ResourceId::child(K::VirtualService, "m", "svc.ns.local"),
            "mesh/m/virtualService/svc.ns.local",
        ),
        (
            "DeleteVirtualRouter",
            ResourceId::child(K::VirtualRouter, "m", "r"),
            "mesh/m/virtualRouter/r",
        ),
        (
            "CreateRoute",
            ResourceId::grandchild(K::Route, "m", "r", "rt"),
            "mesh/m/virtualRouter/r/route/rt",
        ),
        (
            "UpdateVirtualGateway",
            ResourceId::child(K::VirtualGateway, "m", "g"),
            "mesh/m/virtualGateway/g",
        ),
        (
            "DeleteGatewayRoute",
            ResourceId::grandchild(K::GatewayRoute, "m", "g", "gr"),
            "mesh/m/virtualGateway/g/gatewayRoute/gr",
        ),
        ("ListVirtualNodes", ResourceId::mesh("m"), "mesh/m"),
        ("ListVirtualServices", ResourceId::mesh("m"), "mesh/m"),
        ("ListVirtualRouters", ResourceId::mesh("m"), "mesh/m"),
        ("ListVirtualGateways", ResourceId::mesh("m"), "mesh/m"),
        (
            "ListRoutes",
            ResourceId::child(K::VirtualRouter, "m", "r"),
            "mesh/m/virtualRouter/r",
        ),
        (
            "ListGatewayRoutes",
            ResourceId::child(K::VirtualGateway, "m", "g"),
            "mesh/m/virtualGateway/g",
        ),
        (
            "TagResource",
            ResourceId::grandchild(K::Route, "m", "r", "rt"),
            "mesh/m/virtualRouter/r/route/rt",
        ),
        ("UntagResource", ResourceId::mesh("m"), "mesh/m"),
        (
            "ListTagsForResource",
            ResourceId::child(K::VirtualGateway, "m", "g"),
            "mesh/m/virtualGateway/g",
        ),
    ];
    for (op, id, path) in cases {
        let a = operation::app_mesh(&s, op, Some(id)).unwrap();
        assert_eq!(a.action, format!("appmesh:{op}"));
        assert_eq!(a.resource, arn(path), "{op}");
        // And a policy naming exactly that ARN grants exactly that.
        let p = [policy(
            json!({"Statement": {"Effect": "Allow", "Action": format!("appmesh:{op}"), "Resource": arn(path)}}),
        )];
        assert_eq!(
            evaluate(&p, &a.action, &a.resource),
            Decision::Allow,
            "{op}"
        );
    }
    let lm = operation::app_mesh(&s, "ListMeshes", None).unwrap();
    assert_eq!(
        (lm.action.as_str(), lm.resource.as_str()),
        ("appmesh:ListMeshes", "*")
    );
    // A shared mesh's resources carry the owner's account.
    let shared = operation::app_mesh(
        &s.for_owner(Some("444455556666")),
        "DescribeMesh",
        Some(&ResourceId::mesh("m")),
    )
    .unwrap();
    assert_eq!(
        shared.resource,
        "arn:aws:appmesh:us-east-1:444455556666:mesh/m"
    );
}

#[test]
fn every_app_mesh_operation_maps_and_wrong_targets_are_refused() {
    let s = scope();
    let mesh = ResourceId::mesh("m");
    for op in APP_MESH_OPERATIONS {
        let r =
            operation::app_mesh(&s, op, None).or_else(|_| operation::app_mesh(&s, op, Some(&mesh)));
        let ok = r.is_ok()
            || [
                K::VirtualNode,
                K::VirtualService,
                K::VirtualRouter,
                K::VirtualGateway,
            ]
            .into_iter()
            .any(|k| operation::app_mesh(&s, op, Some(&ResourceId::child(k, "m", "x"))).is_ok())
            || [K::Route, K::GatewayRoute].into_iter().any(|k| {
                operation::app_mesh(&s, op, Some(&ResourceId::grandchild(k, "m", "p", "x"))).is_ok()
            });
        assert!(ok, "{op} maps with no resource fitting");
    }
    let err = operation::app_mesh(
        &s,
        "CreateRoute",
        Some(&ResourceId::child(K::VirtualNode, "m", "n")),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "CreateRoute addresses a route, got mesh/m/virtualNode/n"
    );
    assert!(operation::app_mesh(&s, "ListMeshes", Some(&mesh)).is_err());
    assert!(operation::app_mesh(&s, "DescribeMesh", None).is_err());
    assert!(
        operation::app_mesh(
            &s,
            "ListVirtualNodes",
            Some(&ResourceId::child(K::VirtualRouter, "m", "r"))
        )
        .is_err()
    );
    assert_eq!(
        operation::app_mesh(&s, "DescribeMeshes", Some(&mesh))
            .unwrap_err()
            .to_string(),
        "unknown operation \"DescribeMeshes\""
    );
}

#[test]
fn stream_aggregated_resources_names_the_proxy() {
    let s = scope();
    let node = NodeId::parse("mesh/dev/virtualNode/front").unwrap();
    let gw = NodeId::parse("mesh/dev@444455556666/virtualGateway/ingress").unwrap();
    let a = operation::stream_aggregated_resources(&s, &node);
    assert_eq!(a.action, "appmesh:StreamAggregatedResources");
    assert_eq!(a.resource, arn("mesh/dev/virtualNode/front"));
    let g = operation::stream_aggregated_resources(&s, &gw);
    assert_eq!(
        g.resource,
        "arn:aws:appmesh:us-east-1:444455556666:mesh/dev/virtualGateway/ingress"
    );
    // An Envoy policy for its own node only.
    let p = [policy(
        json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow",
        "Action": "appmesh:StreamAggregatedResources", "Resource": arn("mesh/dev/virtualNode/front")}}),
    )];
    assert_eq!(evaluate(&p, &a.action, &a.resource), Decision::Allow);
    let other = operation::stream_aggregated_resources(
        &s,
        &NodeId::parse("mesh/dev/virtualNode/back").unwrap(),
    );
    assert_eq!(
        evaluate(&p, &other.action, &other.resource),
        Decision::ImplicitDeny
    );
    assert_eq!(
        evaluate(&p, "appmesh:DescribeVirtualNode", &a.resource),
        Decision::ImplicitDeny
    );
}

#[test]
fn every_cloud_map_operation_maps() {
    let s = scope();
    let input = json!({"Id": "srv-1", "ServiceId": "arn:aws:servicediscovery:us-east-1:111122223333:service/srv-2", "NamespaceId": "ns-3"});
    let ns = |id: &str| format!("arn:aws:servicediscovery:us-east-1:{ACCOUNT}:namespace/{id}");
    let svc = |id: &str| format!("arn:aws:servicediscovery:us-east-1:{ACCOUNT}:service/{id}");
    for op in CLOUD_MAP_OPERATIONS {
        let a = operation::cloud_map(&s, op, &input).unwrap();
        assert_eq!(a.action, format!("servicediscovery:{op}"));
        let want = match op {
            "GetNamespace" | "DeleteNamespace" => ns("srv-1"),
            "CreateService" => ns("ns-3"),
            "GetService" | "DeleteService" => svc("srv-1"),
            "RegisterInstance"
            | "DeregisterInstance"
            | "GetInstance"
            | "ListInstances"
            | "GetInstancesHealthStatus"
            | "UpdateInstanceCustomHealthStatus" => svc("srv-2"),
            _ => "*".to_owned(),
        };
        assert_eq!(a.resource, want, "{op}");
    }
    let err = operation::cloud_map(&s, "RegisterInstance", &json!({"ServiceId": 7})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "RegisterInstance: ServiceId is required and must be a string"
    );
    assert!(operation::cloud_map(&s, "CreatePrivateDnsNamespace", &json!({})).is_err());
    // A registrant limited to one service.
    let p = [policy(
        json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow",
        "Action": ["servicediscovery:RegisterInstance", "servicediscovery:DeregisterInstance"], "Resource": svc("srv-2")}}),
    )];
    let reg = operation::cloud_map(&s, "RegisterInstance", &json!({"ServiceId": "srv-2"})).unwrap();
    assert_eq!(evaluate(&p, &reg.action, &reg.resource), Decision::Allow);
    let other =
        operation::cloud_map(&s, "RegisterInstance", &json!({"ServiceId": "srv-9"})).unwrap();
    assert_eq!(
        evaluate(&p, &other.action, &other.resource),
        Decision::ImplicitDeny
    );
}

#[test]
fn names_with_special_characters() {
    // App Mesh names are free strings: `+`, `:`, `@`-free unicode, `*` and `?` literally.
    let names = ["a+b", "a:b", "café-ü", "日本", "svc.ns.local", "x*y", "q?"];
    for name in names {
        let id = ResourceId::child(K::VirtualNode, "dev", name);
        let a = operation::app_mesh(&scope(), "UpdateVirtualNode", Some(&id)).unwrap();
        assert_eq!(a.resource, arn(&format!("mesh/dev/virtualNode/{name}")));
        assert_eq!(
            decide(&[dev_only()], "UpdateVirtualNode", Some(&id)),
            Decision::Allow,
            "{name}"
        );
        let exact = [policy(
            json!({"Statement": {"Effect": "Allow", "Action": "appmesh:UpdateVirtualNode", "Resource": a.resource}}),
        )];
        assert_eq!(
            evaluate(&exact, &a.action, &a.resource),
            Decision::Allow,
            "{name}"
        );
        let prod = ResourceId::child(K::VirtualNode, "prod", name);
        assert_eq!(
            decide(&exact, "UpdateVirtualNode", Some(&prod)),
            Decision::ImplicitDeny,
            "{name}"
        );
    }
    // `?` matches one unicode character, not one byte.
    let p = [policy(
        json!({"Statement": {"Effect": "Allow", "Action": "*", "Resource": "arn:aws:appmesh:*:*:mesh/caf?"}}),
    )];
    assert_eq!(
        evaluate(&p, "appmesh:UpdateMesh", &arn("mesh/café")),
        Decision::Allow
    );
    // A literal `*` in a policy is still a wildcard: `x*y` also covers `xzzy`.
    let p = [policy(
        json!({"Statement": {"Effect": "Allow", "Action": "*", "Resource": arn("mesh/dev/virtualNode/x*y")}}),
    )];
    assert_eq!(
        evaluate(
            &p,
            "appmesh:UpdateVirtualNode",
            &arn("mesh/dev/virtualNode/xzzy")
        ),
        Decision::Allow
    );
}

fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("Version".to_owned()),
        Just("Statement".to_owned()),
        Just("Effect".to_owned()),
        Just("Action".to_owned()),
        Just("NotAction".to_owned()),
        Just("Resource".to_owned()),
        Just("NotResource".to_owned()),
        Just("Sid".to_owned()),
        Just("Condition".to_owned()),
        Just("Principal".to_owned()),
        "[a-zA-Z]{0,6}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("2012-10-17".to_owned()),
            Just("Allow".to_owned()),
            Just("Deny".to_owned()),
            Just("*".to_owned()),
            Just("appmesh:*".to_owned()),
            Just("arn:aws:appmesh:*:*:mesh/dev/*".to_owned()),
            Just("${aws:username}".to_owned()),
            "\\PC{0,12}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Documents close to valid: known member names with values from a pool of good and
/// bad ones, so the fuzz reaches both acceptance and every kind of rejection.
fn arb_near_policy() -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        Just(json!("Allow")),
        Just(json!("Deny")),
        Just(json!("allow")),
        Just(json!("*")),
        Just(json!("appmesh:Describe*")),
        Just(json!("AppMesh:?reate*")),
        Just(json!("servicediscovery:RegisterInstance")),
        Just(json!("s3:GetObject")),
        Just(json!(["appmesh:*", "servicediscovery:Get*"])),
        Just(json!("arn:aws:appmesh:*:*:mesh/dev/*")),
        Just(json!([
            "arn:aws:appmesh:*:*:mesh/dev",
            "arn:aws:servicediscovery:*:*:service/*"
        ])),
        Just(json!("mesh/dev")),
        Just(json!("arn:aws:appmesh:*:*:mesh/${aws:username}")),
        Just(json!([])),
        Just(json!({"StringEquals": {"aws:RequestedRegion": "us-east-1"}})),
        Just(json!(1)),
        Just(json!(null)),
        "[A-Za-z0-9 ]{0,6}".prop_map(Value::from),
    ];
    let effect =
        prop_oneof![4 => Just(json!("Allow")), 4 => Just(json!("Deny")), 1 => value.clone()];
    let action = prop_oneof![
        3 => Just(json!("appmesh:*")),
        3 => Just(json!(["appmesh:Describe*", "servicediscovery:*"])),
        3 => Just(json!("*")),
        1 => value.clone(),
    ];
    let resource = prop_oneof![
        3 => Just(json!("*")),
        3 => Just(json!(["arn:aws:appmesh:*:*:mesh/dev", "arn:aws:appmesh:*:*:mesh/dev/*"])),
        1 => value.clone(),
    ];
    let extra_key = prop_oneof![
        Just("NotAction"),
        Just("NotResource"),
        Just("Sid"),
        Just("Condition"),
        Just("Principal"),
        Just("effect"),
    ];
    // Each member present most of the time; an extra member now and then.
    let statement = (
        prop::option::weighted(0.95, effect),
        prop::option::weighted(0.95, action),
        prop::option::weighted(0.95, resource),
        prop::option::weighted(0.2, (extra_key, value)),
    )
        .prop_map(|(e, a, r, extra)| {
            let mut m = serde_json::Map::new();
            for (k, v) in [("Effect", e), ("Action", a), ("Resource", r)] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            if let Some((k, v)) = extra {
                m.insert(k.into(), v);
            }
            Value::Object(m)
        });
    let version = prop_oneof![
        Just(json!("2012-10-17")),
        Just(json!("2008-10-17")),
        Just(json!("2012-10-18")),
        Just(json!(null))
    ];
    (
        version,
        prop::collection::vec(statement, 0..4),
        any::<bool>(),
    )
        .prop_map(|(v, st, single)| {
            let mut doc = serde_json::Map::new();
            if !v.is_null() {
                doc.insert("Version".into(), v);
            }
            let st = match (single, st.first()) {
                (true, Some(one)) => one.clone(),
                _ => Value::Array(st),
            };
            doc.insert("Statement".into(), st);
            Value::Object(doc)
        })
}

/// Checks one fuzzed document; returns whether it was accepted.
fn check_fuzzed(doc: &Value, action: &str, resource: &str) -> Result<bool, TestCaseError> {
    match Policy::from_value(doc) {
        Ok(p) => {
            prop_assert!(!p.statements.is_empty());
            let _ = evaluate(&[p.clone(), p], action, resource);
            Ok(true)
        }
        Err(e) => {
            prop_assert!(!e.problems.is_empty());
            for pr in &e.problems {
                prop_assert!(!pr.message.is_empty(), "{pr:?}");
                prop_assert!(
                    ["$", "Version", "Id", "Statement", "[\""]
                        .iter()
                        .any(|p| pr.path.starts_with(p))
                        || doc.as_object().is_some_and(|o| o.contains_key(&pr.path)),
                    "{pr:?}"
                );
            }
            Ok(false)
        }
    }
}

#[test]
fn near_policy_fuzz_reaches_both_outcomes() {
    // Guards the fuzz below against vacuity: its generator must produce both accepted and
    // refused documents in quantity.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..2000 {
        let doc = arb_near_policy().new_tree(&mut runner).unwrap().current();
        if check_fuzzed(&doc, "appmesh:CreateMesh", &arn("mesh/dev")).unwrap() {
            ok += 1;
        } else {
            refused += 1;
        }
    }
    eprintln!("near-policy fuzz: accepted {ok}, refused {refused}");
    assert!(ok > 50 && refused > 50, "accepted {ok}, refused {refused}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random JSON never panics the parser; every rejection names a path and a message;
    /// an accepted document evaluates without panicking.
    #[test]
    fn fuzzed_documents_never_panic_and_rejections_have_paths(doc in arb_json(), action in "[a-zA-Z:*?]{0,20}", res in "\\PC{0,30}") {
        match Policy::from_value(&doc) {
            Ok(p) => {
                prop_assert!(!p.statements.is_empty());
                let _ = evaluate(&[p], &action, &res);
            }
            Err(e) => {
                prop_assert!(!e.problems.is_empty());
                for pr in &e.problems {
                    prop_assert!(!pr.message.is_empty(), "{pr:?}");
                    // A path is `$`, or starts with a top-level member name or `["…"]`.
                    prop_assert!(
                        pr.path == "$"
                            || pr.path.starts_with("[\"")
                            || pr.path.starts_with(|c: char| c.is_ascii_alphanumeric()),
                        "{pr:?}"
                    );
                }
            }
        }
        // The text path too, whole and cut in half (not JSON).
        let text = doc.to_string();
        let _ = Policy::parse(&text);
        let half = text.char_indices().nth(text.chars().count() / 2).map_or(0, |(i, _)| i);
        // Never a panic; a cut document is refused at `$` (it is not JSON).
        if let Err(e) = Policy::parse(&text[..half]) {
            prop_assert!(!e.problems.is_empty());
        }
    }

    /// A statement built from random well-formed parts always parses, and its decision
    /// agrees with a direct reading of the patterns.
    /// Near-valid documents: never a panic, every rejection has a path, accepted ones evaluate.
    #[test]
    fn fuzzed_near_policies(doc in arb_near_policy(), action in "[a-zA-Z:*?]{0,20}", res in "\\PC{0,30}") {
        check_fuzzed(&doc, &action, &res)?;
    }

    #[test]
    fn well_formed_statements_parse(effect in prop_oneof![Just("Allow"), Just("Deny")],
                                     mesh in "[a-z*?]{1,6}", name in "[a-z]{1,6}") {
        let doc = json!({"Version": "2012-10-17", "Statement": [{"Effect": effect, "Action": "appmesh:*", "Resource": format!("arn:aws:appmesh:*:*:mesh/{mesh}")}]});
        let p = Policy::from_value(&doc).unwrap();
        let target = arn(&format!("mesh/{name}"));
        let hit = meshplane_policy::glob(&mesh, &name);
        let d = evaluate(&[p], "appmesh:UpdateMesh", &target);
        let want = match (hit, effect) {
            (false, _) => Decision::ImplicitDeny,
            (true, "Allow") => Decision::Allow,
            (true, _) => Decision::ExplicitDeny { statement: StatementRef { policy: 0, index: 0, sid: None } },
        };
        prop_assert_eq!(d, want);
    }
}
