//! Fuzzing validation: mutated valid specs of every kind (members replaced, removed,
//! added, lists grown) are parsed and validated.
//!
//! The contract: no panic; validation is deterministic; every violation has a path rooted
//! at `spec` that names a member present in the input or its missing child, and a
//! non-empty message. Names: any string either passes `validate_name` or is refused at
//! the field with a reason. Cases are bounded by default; `MESHPLANE_FUZZ_CASES=100000`
//! runs longer.

mod common;

use common::{
    gateway_route, get, kind_tag, mesh, route, virtual_gateway, virtual_node, virtual_router,
    virtual_service,
};
use meshplane_model::{NODE_ID_NAME_FIELDS, Spec, validate_name, validate_spec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

/// Cases per target unless `MESHPLANE_FUZZ_CASES` says otherwise.
const DEFAULT_CASES: u32 = 10000;

/// Member names of the specs, so added members hit real fields.
const FIELDS: &[&str] = &[
    "listeners",
    "portMapping",
    "port",
    "protocol",
    "healthCheck",
    "timeout",
    "tls",
    "mode",
    "backends",
    "virtualService",
    "virtualServiceName",
    "clientPolicy",
    "serviceDiscovery",
    "dns",
    "hostname",
    "awsCloudMap",
    "attributes",
    "match",
    "prefix",
    "path",
    "exact",
    "regex",
    "headers",
    "name",
    "range",
    "start",
    "end",
    "weightedTargets",
    "virtualNode",
    "weight",
    "retryPolicy",
    "maxRetries",
    "perRetryTimeout",
    "unit",
    "value",
    "priority",
    "httpRoute",
    "http2Route",
    "grpcRoute",
    "tcpRoute",
    "serviceName",
    "methodName",
    "metadata",
    "rewrite",
    "hostname",
    "defaultPrefix",
    "target",
    "provider",
    "virtualRouter",
    "egressFilter",
    "type",
    "connectionPool",
    "outlierDetection",
    "logging",
    "accessLog",
];

fn cases() -> u32 {
    std::env::var("MESHPLANE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// Every valid example, as (spec name, JSON).
fn examples() -> Vec<(&'static str, Value)> {
    let mut v = vec![
        ("MeshSpec", mesh()),
        ("VirtualNodeSpec", virtual_node()),
        ("VirtualServiceSpec", virtual_service()),
        ("VirtualRouterSpec", virtual_router()),
        ("VirtualGatewaySpec", virtual_gateway()),
    ];
    for k in ["httpRoute", "http2Route", "grpcRoute", "tcpRoute"] {
        v.push(("RouteSpec", route(k)));
    }
    for k in ["httpRoute", "http2Route", "grpcRoute"] {
        v.push(("GatewayRouteSpec", gateway_route(k)));
    }
    v
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        proptest::sample::select(
            &[
                0i64,
                -1,
                1,
                255,
                256,
                65535,
                65536,
                i32::MAX as i64,
                i32::MAX as i64 + 1,
                i64::MIN
            ][..]
        )
        .prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
        proptest::sample::select(
            &[
                "", "/", "http", "grpc", "tcp", "ms", "s", "(", "[a-", "\u{0}", "\u{202e}",
                "a.local"
            ][..]
        )
        .prop_map(|s| Value::String(s.to_owned())),
        (1usize..600).prop_map(|n| Value::String("é".repeat(n))),
    ];
    leaf.prop_recursive(3, 20, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..12).prop_map(Value::Array),
            proptest::collection::btree_map(
                proptest::sample::select(FIELDS).prop_map(str::to_owned),
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One edit: `at` walks the document by index; `op` 0 replaces the node, 1 removes it,
/// 2 adds `value` under a known member name beside it, 3 repeats a list item, 4 replaces
/// a number or string leaf by another of the same JSON type.
#[derive(Clone, Debug)]
struct Edit {
    at: Vec<usize>,
    op: u8,
    value: Value,
    /// For op 4: a number replaces a number, a string a string (the shape stays parseable).
    int: i64,
    text: String,
}

fn apply(v: &mut Value, at: &[usize], e: &Edit) {
    let Some((&i, rest)) = at.split_first() else {
        match (e.op, &*v) {
            (0, _) => *v = e.value.clone(),
            (4, Value::Number(_)) => *v = Value::from(e.int),
            (4, Value::String(_)) => *v = Value::String(e.text.clone()),
            _ => {}
        }
        return;
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            let k = m.keys().nth(i % m.len()).cloned().unwrap_or_default();
            match (rest.is_empty(), e.op) {
                (true, 1) => {
                    m.remove(&k);
                }
                (true, 2) => {
                    m.insert(FIELDS[i % FIELDS.len()].to_owned(), e.value.clone());
                }
                _ => apply(m.get_mut(&k).expect("key"), rest, e),
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let n = a.len();
            match (rest.is_empty(), e.op) {
                (true, 1) => {
                    a.remove(i % n);
                }
                (true, 2) => a.push(e.value.clone()),
                (true, 3) => {
                    let dup = a[i % n].clone();
                    a.extend(std::iter::repeat_n(dup, i % 12));
                }
                _ => apply(&mut a[i % n], rest, e),
            }
        }
        Value::Number(_) if e.op == 4 => *v = Value::from(e.int),
        Value::String(_) if e.op == 4 => *v = Value::String(e.text.clone()),
        _ if e.op == 4 => {}
        _ => *v = e.value.clone(),
    }
}

fn mutated_spec() -> impl Strategy<Value = (&'static str, Value)> {
    let n = examples().len();
    let edit = (
        proptest::collection::vec(any::<usize>(), 1..7),
        prop_oneof![2 => 0u8..4, 3 => Just(4u8)],
        json_value(),
        prop_oneof![
            any::<i64>(),
            proptest::sample::select(
                &[
                    0i64,
                    -1,
                    1,
                    10,
                    100,
                    255,
                    256,
                    1000,
                    1001,
                    65535,
                    65536,
                    i32::MAX as i64 + 1
                ][..]
            ),
        ],
        prop_oneof![
            any::<String>(),
            proptest::sample::select(
                &[
                    "", "/", "x", "http", "grpc", "tcp", "http2", "ms", "s", "(", "[a-", ".*",
                    "a.local", "*.local", "GET"
                ][..]
            )
            .prop_map(str::to_owned),
            (1usize..600).prop_map(|n| "é".repeat(n)),
        ],
    )
        .prop_map(|(at, op, value, int, text)| Edit {
            at,
            op,
            value,
            int,
            text,
        });
    (0..n, proptest::collection::vec(edit, 1..5)).prop_map(|(i, edits)| {
        let (name, mut spec) = examples().swap_remove(i);
        for e in &edits {
            apply(&mut spec, &e.at, e);
        }
        (name, spec)
    })
}

/// `spec.listeners[0].portMapping` → `listeners[0].portMapping` (the fixture path syntax);
/// `None` for `spec` itself.
fn relative(path: &str) -> Option<&str> {
    path.strip_prefix("spec.")
        .or_else(|| path.strip_prefix("spec").filter(|r| r.starts_with('[')))
}

/// The path minus its last segment (`a.b[2]` → `a.b`, `a.b` → `a`).
fn parent(path: &str) -> Option<&str> {
    let cut = path.rfind(['.', '['])?;
    Some(&path[..cut])
}

#[test]
fn mutated_specs_never_panic_and_every_violation_has_a_real_path() {
    // Counted so a run that parses nothing, or rejects everything, fails.
    let parsed = std::cell::Cell::new(0u32);
    let rejected = std::cell::Cell::new(0u32);
    runner()
        .run(&mutated_spec(), |(name, spec)| {
            let tagged = json!({ "kind": kind_tag(name), "spec": spec });
            // Shapes serde refuses are the parser's to report (with its own path).
            let Ok(typed) = serde_json::from_value::<Spec>(tagged) else {
                return Ok(());
            };
            parsed.set(parsed.get() + 1);
            let first = validate_spec(&typed);
            prop_assert_eq!(&first, &validate_spec(&typed), "validation is deterministic");
            let Err(violations) = first else {
                return Ok(());
            };
            rejected.set(rejected.get() + 1);
            prop_assert!(!violations.is_empty());
            for v in &violations {
                prop_assert!(!v.message.is_empty(), "empty message at {}", v.path);
                prop_assert!(
                    v.path == "spec" || relative(&v.path).is_some(),
                    "path {:?} not rooted at spec ({})",
                    v.path,
                    v.message
                );
                if let Some(rel) = relative(&v.path) {
                    let here = get(&spec, rel).is_some();
                    let parent_here = parent(rel).is_none_or(|p| get(&spec, p).is_some());
                    prop_assert!(
                        here || parent_here,
                        "{}: {} names neither a member of the input nor a missing child of one\n{spec:#}",
                        v.path,
                        v.message
                    );
                }
            }
            Ok(())
        })
        .unwrap();
    let (parsed, rejected) = (parsed.get(), rejected.get());
    eprintln!("parsed {parsed}, rejected {rejected}");
    assert!(
        parsed > 0 && rejected > 0 && rejected < parsed,
        "parsed {parsed}, rejected {rejected}"
    );
}

#[test]
fn any_name_is_accepted_only_when_usable() {
    let name = prop_oneof![
        any::<String>(),
        "[a-z/.:+ \u{0}-\u{1f}\u{7f}-\u{9f}\u{200e}\u{202a}-\u{202e}\u{2066}-\u{2069}é名]{0,300}",
    ];
    let field = proptest::sample::select(
        &[
            "meshName",
            "virtualNodeName",
            "virtualGatewayName",
            "virtualRouterName",
            "routeName",
            "virtualServiceName",
        ][..],
    );
    runner()
        .run(&(field, name), |(field, name)| {
            match validate_name(field, &name) {
                Ok(()) => {
                    let n = name.chars().count();
                    prop_assert!((1..=255).contains(&n));
                    prop_assert!(!name.chars().any(char::is_control));
                    let bidi = name.chars().any(|c| {
                        matches!(c, '\u{200e}' | '\u{200f}' | '\u{61c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
                    });
                    prop_assert!(!bidi);
                    prop_assert!(!(NODE_ID_NAME_FIELDS.contains(&field) && name.contains('/')));
                }
                Err(v) => {
                    prop_assert!(!v.is_empty());
                    prop_assert!(v.iter().all(|x| x.path == field && !x.message.is_empty()));
                }
            }
            Ok(())
        })
        .unwrap();
}
