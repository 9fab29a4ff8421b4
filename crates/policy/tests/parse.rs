//! Malformed policy documents: each refused with the JSON path of every offending element.

use meshplane_policy::{Effect, Patterns, Policy, Version};
use serde_json::json;

fn problems(doc: serde_json::Value) -> Vec<String> {
    Policy::from_value(&doc)
        .expect_err("document must be refused")
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn effect_is_case_sensitive_and_reported_with_its_path() {
    let p = problems(json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "allow", "Action": "*", "Resource": "*"}
        ]
    }));
    assert_eq!(
        p,
        ["Statement[2].Effect: must be Allow or Deny, got \"allow\""]
    );
}

#[test]
fn all_problems_at_once() {
    let p = problems(json!({
        "Version": "2012-10-18",
        "Extra": 1,
        "Statement": [
            {"Effect": "Permit", "Action": ["appmesh:*", 3], "NotResource": "*", "Resource": "*"},
            "not an object",
            {"Sid": "bad sid", "Effect": "Deny", "Action": "ec2:*", "Resource": "mesh/dev"},
            {"Effect": "Allow", "Resource": []},
            {"Effect": "Allow", "Action": "appmesh:Create-Mesh", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "true"}}},
            {"Effect": "Allow", "Action": "appmesh", "Resource": "*", "Principal": "*"}
        ]
    }));
    let expected = [
        "Extra: unknown element (expected Version, Id or Statement; names are case-sensitive)",
        "Version: must be \"2012-10-17\" or \"2008-10-17\", got \"2012-10-18\"",
        "Statement[0].Effect: must be Allow or Deny, got \"Permit\"",
        "Statement[0].Action[1]: must be a string, got a number",
        "Statement[0].NotResource: a statement has either Resource or NotResource, not both",
        "Statement[1]: must be an object, got a string",
        "Statement[2].Sid: must hold only ASCII letters and digits, got \"bad sid\"",
        "Statement[2].Action: unknown service prefix \"ec2\" (meshplane serves appmesh, servicediscovery and meshplane)",
        "Statement[2].Resource: must be \"*\" or an ARN (arn:<partition>:<service>:<region>:<account>:<resource>), got \"mesh/dev\"",
        "Statement[3].Action: required element is missing (or give NotAction)",
        "Statement[3].Resource: must hold at least one entry",
        "Statement[4].Condition: conditions are not supported (an ignored condition would widen access)",
        "Statement[4].Action: action name must be letters, digits, * and ?, got \"Create-Mesh\"",
        "Statement[5].Principal: not allowed in an identity policy (the key the policy is attached to is the principal)",
        "Statement[5].Action: must be \"*\" or <service>:<action>, got \"appmesh\"",
    ];
    let mut got = p.clone();
    got.sort();
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "{p:#?}");
}

#[test]
fn document_shape_errors() {
    assert_eq!(
        problems(json!([])),
        ["$: must be a JSON object, got an array"]
    );
    assert_eq!(
        problems(json!({"Version": "2012-10-17"})),
        ["Statement: required element is missing"]
    );
    assert_eq!(
        problems(json!({"Statement": []})),
        ["Statement: must hold at least one statement"]
    );
    assert_eq!(
        problems(json!({"Statement": "x"})),
        ["Statement: must be an object or an array of objects, got a string"]
    );
    assert_eq!(
        problems(json!({"Statement": {"Action": "*", "Resource": "*"}})),
        ["Statement.Effect: required element is missing"]
    );
    assert_eq!(
        problems(
            json!({"Statement": {"effect": "Allow", "Effect": "Allow", "Action": "*", "Resource": "*"}})
        ),
        [
            "Statement.effect: unknown element (expected Sid, Effect, Action, NotAction, Resource, NotResource; names are case-sensitive)"
        ]
    );
    assert_eq!(
        problems(
            json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "arn:aws:appmesh:*:*:mesh/${aws:username}"}})
        ),
        ["Statement.Resource: policy variables (${...}) are not supported"]
    );
    // Keys that are not plain words are quoted, so the path still names them.
    assert_eq!(
        problems(
            json!({"": 1, "a.b": 2, "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "x y": 0}})
        ),
        [
            "[\"\"]: unknown element (expected Version, Id or Statement; names are case-sensitive)",
            "[\"a.b\"]: unknown element (expected Version, Id or Statement; names are case-sensitive)",
            "Statement[\"x y\"]: unknown element (expected Sid, Effect, Action, NotAction, Resource, NotResource; names are case-sensitive)",
        ]
    );
    let e = Policy::parse("{\"Statement\": ").unwrap_err();
    assert_eq!(e.problems.len(), 1);
    assert_eq!(e.problems[0].path, "$");
    assert!(e.problems[0].message.starts_with("not valid JSON"), "{e}");
    // Display joins every problem.
    let e = Policy::parse(r#"{"Statement": {"Effect": "x", "Action": 1, "Resource": "*"}}"#)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Statement.Effect: must be Allow or Deny, got \"x\"; Statement.Action: must be a string or an array of strings, got a number"
    );
}

#[test]
fn accepted_forms() {
    let p = Policy::parse(
        r#"{"Version": "2012-10-17", "Id": "dev-team",
            "Statement": {"Sid": "Dev1", "Effect": "Deny", "NotAction": "servicediscovery:Get*",
                          "NotResource": ["arn:aws:servicediscovery:*:*:namespace/*"]}}"#,
    )
    .unwrap();
    assert_eq!(p.version, Version::V2012_10_17);
    assert_eq!(p.id.as_deref(), Some("dev-team"));
    let s = &p.statements[0];
    assert_eq!(s.sid.as_deref(), Some("Dev1"));
    assert_eq!(s.effect, Effect::Deny);
    assert_eq!(
        s.action,
        Patterns::None(vec!["servicediscovery:Get*".into()])
    );
    assert_eq!(
        s.resource,
        Patterns::None(vec!["arn:aws:servicediscovery:*:*:namespace/*".into()])
    );
    // No Version means 2008-10-17, where `${` is literal text.
    let old = Policy::parse(
        r#"{"Statement": [{"Effect": "Allow", "Action": ["AppMesh:List*"], "Resource": "arn:aws:appmesh:*:*:mesh/${x}"}]}"#,
    )
    .unwrap();
    assert_eq!(old.version, Version::V2008_10_17);
    assert!(Policy::parse(r#"{"Version": "2008-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}"#).is_ok());
}
