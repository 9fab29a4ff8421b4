//! Fuzzing the Cloud Map JSON 1.1 router in-process (`POST /` over a `MemoryStore`):
//! random `X-Amz-Target`s, random bytes, random JSON and mutated valid requests of every
//! operation, with real namespace, service, instance and operation ids in them.
//!
//! The contract: no panic, never a 5xx, every error is a 4xx whose JSON body has
//! `__type` and `Message`, every success a JSON body. Cases are bounded by default;
//! `MESHPLANE_FUZZ_CASES=100000` runs longer.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use meshplane_discovery::{OPERATIONS, Registry, RegistryConfig};
use meshplane_store::MemoryStore;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Cases unless `MESHPLANE_FUZZ_CASES` says otherwise.
const DEFAULT_CASES: u32 = 5000;

const TARGET_PREFIX: &str = "Route53AutoNaming_v20170314.";

/// Member names of the request shapes, so random objects hit real fields.
const FIELDS: &[&str] = &[
    "Name",
    "NamespaceId",
    "NamespaceName",
    "ServiceId",
    "ServiceName",
    "InstanceId",
    "Id",
    "OperationId",
    "Attributes",
    "AWS_INSTANCE_IPV4",
    "AWS_INSTANCE_PORT",
    "AWS_INSTANCE_IPV6",
    "CreatorRequestId",
    "Description",
    "Tags",
    "Key",
    "Value",
    "MaxResults",
    "NextToken",
    "Filters",
    "Condition",
    "Values",
    "QueryParameters",
    "OptionalParameters",
    "HealthStatus",
    "Status",
    "Instances",
    "HealthCheckCustomConfig",
    "HealthCheckConfig",
    "DnsConfig",
    "FailureThreshold",
    "Type",
];

/// Strings that mean something to the registry.
const WORDS: &[&str] = &[
    "",
    "apps",
    "b",
    "i-1",
    "10.0.0.1",
    "::1",
    "8080",
    "0",
    "65536",
    "-1",
    "HEALTHY",
    "UNHEALTHY",
    "ALL",
    "HEALTHY_OR_ELSE_ALL",
    "EQ",
    "IN",
    "BETWEEN",
    "NAME",
    "TYPE",
    "HTTP",
    "%00",
    "\u{0}",
    "\n",
    "\u{202e}",
    "ns-",
    "srv-",
];

fn cases() -> u32 {
    std::env::var("MESHPLANE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

#[derive(Clone, Debug)]
struct Call {
    target: Option<String>,
    body: Vec<u8>,
}

/// Real ids, filled in by the seed.
#[derive(Clone, Debug, Default)]
struct Ids {
    namespace: String,
    service: String,
    operation: String,
}

async fn send(router: &Router, call: &Call) -> Option<(u16, Vec<u8>)> {
    let mut b = Request::builder().method("POST").uri("/");
    if let Some(t) = &call.target {
        b = b.header("x-amz-target", t.as_str());
    }
    let req = b
        .header("content-type", "application/x-amz-json-1.1")
        .body(Body::from(call.body.clone()))
        .ok()?;
    let resp = router
        .clone()
        .oneshot(req)
        .await
        .expect("infallible router");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Some((status, body.to_vec()))
}

fn check(call: &Call, status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(body);
    prop_assert!(
        (200..300).contains(&status) || (400..500).contains(&status),
        "status {status} for {call:?}: {text}"
    );
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| TestCaseError::fail(format!("body is not JSON ({e}) for {call:?}")))?;
    if status >= 400 {
        prop_assert!(
            v["__type"].as_str().is_some_and(|t| !t.is_empty()) && v["Message"].is_string(),
            "error without __type/Message for {call:?}: {v}"
        );
    }
    Ok(())
}

async fn ok(router: &Router, op: &str, body: Value) -> Value {
    let call = Call {
        target: Some(format!("{TARGET_PREFIX}{op}")),
        body: body.to_string().into_bytes(),
    };
    let (status, bytes) = send(router, &call).await.expect("valid request");
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, 200, "{op}: {v}");
    v
}

/// Namespace `apps`, service `b` with custom health, two instances.
async fn seed(router: &Router) -> Ids {
    let op = ok(router, "CreateHttpNamespace", json!({"Name": "apps"})).await;
    let operation = op["OperationId"].as_str().unwrap().to_owned();
    let got = ok(router, "GetOperation", json!({"OperationId": operation})).await;
    let namespace = got["Operation"]["Targets"]["NAMESPACE"]
        .as_str()
        .unwrap()
        .to_owned();
    let svc = ok(
        router,
        "CreateService",
        json!({"Name": "b", "NamespaceId": namespace, "HealthCheckCustomConfig": {}}),
    )
    .await;
    let service = svc["Service"]["Id"].as_str().unwrap().to_owned();
    for (i, ip) in [(1, "10.0.0.1"), (2, "10.0.0.2")] {
        ok(
            router,
            "RegisterInstance",
            json!({"ServiceId": service, "InstanceId": format!("i-{i}"), "Attributes": {"AWS_INSTANCE_IPV4": ip, "AWS_INSTANCE_PORT": "8080", "version": "v1"}}),
        )
        .await;
    }
    Ids {
        namespace,
        service,
        operation,
    }
}

/// One valid request per operation.
fn templates(ids: &Ids) -> Vec<(&'static str, Value)> {
    let (ns, svc, op) = (&ids.namespace, &ids.service, &ids.operation);
    vec![
        (
            "CreateHttpNamespace",
            json!({"Name": "other", "CreatorRequestId": "r1", "Tags": [{"Key": "k", "Value": "v"}]}),
        ),
        ("GetOperation", json!({"OperationId": op})),
        ("GetNamespace", json!({"Id": ns})),
        (
            "ListNamespaces",
            json!({"MaxResults": 1, "Filters": [{"Name": "TYPE", "Values": ["HTTP"], "Condition": "EQ"}]}),
        ),
        ("DeleteNamespace", json!({"Id": ns})),
        (
            "CreateService",
            json!({"Name": "c", "NamespaceId": ns, "CreatorRequestId": "r2", "HealthCheckCustomConfig": {"FailureThreshold": 1}}),
        ),
        ("GetService", json!({"Id": svc})),
        (
            "ListServices",
            json!({"MaxResults": 2, "Filters": [{"Name": "NAMESPACE_ID", "Values": [ns], "Condition": "EQ"}]}),
        ),
        ("DeleteService", json!({"Id": svc})),
        (
            "RegisterInstance",
            json!({"ServiceId": svc, "InstanceId": "i-3", "CreatorRequestId": "r3", "Attributes": {"AWS_INSTANCE_IPV4": "10.0.0.3", "AWS_INSTANCE_PORT": "8080"}}),
        ),
        (
            "DeregisterInstance",
            json!({"ServiceId": svc, "InstanceId": "i-2"}),
        ),
        (
            "GetInstance",
            json!({"ServiceId": svc, "InstanceId": "i-1"}),
        ),
        ("ListInstances", json!({"ServiceId": svc, "MaxResults": 1})),
        (
            "DiscoverInstances",
            json!({"NamespaceName": "apps", "ServiceName": "b", "MaxResults": 5, "HealthStatus": "HEALTHY_OR_ELSE_ALL", "QueryParameters": {"version": "v1"}, "OptionalParameters": {"zone": "a"}}),
        ),
        (
            "DiscoverInstancesRevision",
            json!({"NamespaceName": "apps", "ServiceName": "b"}),
        ),
        (
            "GetInstancesHealthStatus",
            json!({"ServiceId": svc, "Instances": ["i-1"], "MaxResults": 5}),
        ),
        (
            "UpdateInstanceCustomHealthStatus",
            json!({"ServiceId": svc, "InstanceId": "i-1", "Status": "UNHEALTHY"}),
        ),
    ]
}

// === strategies ===

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        proptest::sample::select(&[0i64, -1, 1, 100, 101, 65536, i64::MAX][..])
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        proptest::sample::select(WORDS).prop_map(|s| Value::String(s.to_owned())),
        (1usize..5000).prop_map(|n| Value::String("x".repeat(n))),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    proptest::sample::select(FIELDS).prop_map(str::to_owned),
                    any::<String>(),
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One edit: `at` walks the document by index; `op` 0 replaces the node, 1 removes it,
/// 2 adds `value` under a known member name beside it.
#[derive(Clone, Debug)]
struct Edit {
    at: Vec<usize>,
    op: u8,
    value: Value,
}

fn apply(v: &mut Value, at: &[usize], e: &Edit) {
    let Some((&i, rest)) = at.split_first() else {
        if e.op == 0 {
            *v = e.value.clone();
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
                _ => apply(&mut a[i % n], rest, e),
            }
        }
        _ => *v = e.value.clone(),
    }
}

fn call(ids: Ids) -> impl Strategy<Value = Call> {
    let n = templates(&ids).len();
    let target = prop_oneof![
        8 => proptest::sample::select(OPERATIONS).prop_map(|o| Some(format!("{TARGET_PREFIX}{o}"))),
        1 => Just(None),
        1 => "[ -~]{0,40}".prop_map(Some),
        1 => any::<String>().prop_map(|s| Some(format!("{TARGET_PREFIX}{s}"))),
    ];
    let random_body = prop_oneof![
        Just(Vec::new()),
        Just(b"  \n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (1usize..1_200_000).prop_map(|n| vec![b' '; n]),
    ];
    let edits = proptest::collection::vec(
        (
            proptest::collection::vec(any::<usize>(), 1..5),
            0u8..3,
            json_value(),
        )
            .prop_map(|(at, op, value)| Edit { at, op, value }),
        0..4,
    );
    let mutated = (0..n, edits).prop_map(move |(i, edits)| {
        let (op, mut body) = templates(&ids).swap_remove(i);
        for e in &edits {
            apply(&mut body, &e.at, e);
        }
        Call {
            target: Some(format!("{TARGET_PREFIX}{op}")),
            body: body.to_string().into_bytes(),
        }
    });
    prop_oneof![
        2 => (target, random_body).prop_map(|(target, body)| Call { target, body }),
        3 => mutated,
    ]
}

#[test]
fn cloud_map_requests_never_panic_or_answer_5xx() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = Registry::new(Arc::new(MemoryStore::new()), RegistryConfig::default());
    let router = meshplane_discovery::http::router(registry);
    let ids = rt.block_on(seed(&router));
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    runner
        .run(&call(ids), |call| {
            if let Some((status, body)) = rt.block_on(send(&router, &call)) {
                check(&call, status, &body)?;
                *seen.borrow_mut().entry(status).or_default() += 1;
            }
            Ok(())
        })
        .unwrap();
    let seen = seen.into_inner();
    eprintln!("answers by status: {seen:?}");
    let ok: u32 = seen.range(200..300).map(|(_, n)| n).sum();
    let total: u32 = seen.values().sum();
    assert!(
        ok > 0 && total > ok,
        "the run must reach both 2xx and 4xx: {seen:?}"
    );
}
