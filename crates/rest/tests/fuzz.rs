//! Fuzzing the App Mesh REST API in-process: the axum router over a `MemoryStore`, driven
//! with `oneshot` by random methods, raw paths (percent-encoding, `/`, long segments),
//! query strings and bodies (random bytes, random JSON, mutated valid requests).
//!
//! The contract: no panic, never a 5xx, every error is a 4xx with an `x-amzn-ErrorType`
//! header and a JSON `{"message"}` body, and an accepted write echoes its spec as given.
//! Cases are bounded by default; `MESHPLANE_FUZZ_CASES=100000` runs longer.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use meshplane_rest::{ApiConfig, ApiMetrics, MeshService};
use meshplane_store::MemoryStore;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Cases per target unless `MESHPLANE_FUZZ_CASES` says otherwise.
const DEFAULT_CASES: u32 = 5000;

fn cases() -> u32 {
    std::env::var("MESHPLANE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// One fuzzed request.
#[derive(Clone, Debug)]
struct Call {
    method: String,
    uri: String,
    content_type: bool,
    body: Vec<u8>,
}

/// What one call answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    error_type: Option<String>,
    body: Vec<u8>,
}

// === the router under test ===

fn router() -> Router {
    let svc = MeshService::new(Arc::new(MemoryStore::new()), ApiConfig::default());
    meshplane_rest::router(svc, Arc::new(ApiMetrics::unregistered()))
}

async fn send(router: &Router, call: &Call) -> Option<Answer> {
    let mut b = Request::builder()
        .method(call.method.as_str())
        .uri(call.uri.as_str());
    if call.content_type {
        b = b.header("content-type", "application/json");
    }
    // A method or URI `http` itself refuses never reaches a server; nothing to test.
    let req = b.body(Body::from(call.body.clone())).ok()?;
    let resp = router
        .clone()
        .oneshot(req)
        .await
        .expect("infallible router");
    let status = resp.status().as_u16();
    let error_type = resp
        .headers()
        .get("x-amzn-errortype")
        .map(|v| v.to_str().expect("ascii error type").to_owned());
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Some(Answer {
        status,
        error_type,
        body,
    })
}

/// The contract every answer must keep.
fn check(call: &Call, a: &Answer) -> Result<(), TestCaseError> {
    prop_assert!(
        (200..300).contains(&a.status) || (400..500).contains(&a.status),
        "status {} for {call:?}: {}",
        a.status,
        String::from_utf8_lossy(&a.body)
    );
    if a.status >= 400 {
        prop_assert!(
            a.error_type.as_deref().is_some_and(|t| !t.is_empty()),
            "error {} without x-amzn-ErrorType for {call:?}",
            a.status
        );
        if call.method != "HEAD" {
            let v: Value = serde_json::from_slice(&a.body).map_err(|e| {
                TestCaseError::fail(format!("error body is not JSON ({e}) for {call:?}"))
            })?;
            prop_assert!(v["message"].is_string(), "no message in {v} for {call:?}");
        }
    } else if call.method != "HEAD" {
        let answer: Value = serde_json::from_slice(&a.body)
            .map_err(|e| TestCaseError::fail(format!("2xx body is not JSON ({e}) for {call:?}")))?;
        // An accepted create or update echoes the spec exactly as given (App Mesh does),
        // so every accepted field reads back unchanged.
        let sent: Option<Value> = serde_json::from_slice(&call.body).ok();
        // A `null` member is an absent one (`"spec": null` is answered as `{}`), and absent
        // members are omitted, never `null`, on output.
        if let Some(spec) = sent
            .as_ref()
            .and_then(|b| b.get("spec"))
            .filter(|s| !s.is_null() && call.method == "PUT")
        {
            prop_assert_eq!(
                answer.get("spec"),
                Some(&without_nulls(spec)),
                "accepted spec not echoed as given for {} {}",
                &call.uri,
                String::from_utf8_lossy(&call.body)
            );
        }
    }
    Ok(())
}

/// `v` without object members whose value is `null`, at any depth.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// A mesh `m` with nodes `red`/`blue`, router `r` with route `rt`, service `color.local`
/// and gateway `gw` with route `gr`, so fuzzed calls reach existing resources too.
async fn seed(router: &Router) {
    for (uri, body) in valid_writes() {
        let call = Call {
            method: "PUT".into(),
            uri: format!("/v20190125{uri}"),
            content_type: true,
            body: body.to_string().into_bytes(),
        };
        let a = send(router, &call).await.expect("valid request");
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    }
}

fn listeners() -> Value {
    json!([{"portMapping": {"port": 8080, "protocol": "http"}}])
}

/// Valid create calls, in dependency order: the seed and the templates for mutation.
fn valid_writes() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/meshes",
            json!({"meshName": "m", "spec": {"egressFilter": {"type": "DROP_ALL"}}}),
        ),
        (
            "/meshes/m/virtualNodes",
            json!({"virtualNodeName": "red", "spec": {"listeners": listeners(), "serviceDiscovery": {"dns": {"hostname": "red.local"}}}}),
        ),
        (
            "/meshes/m/virtualNodes",
            json!({"virtualNodeName": "blue", "spec": {"listeners": listeners(), "serviceDiscovery": {"dns": {"hostname": "blue.local"}}, "backends": [{"virtualService": {"virtualServiceName": "color.local"}}]}, "tags": [{"key": "k", "value": "v"}]}),
        ),
        (
            "/meshes/m/virtualRouters",
            json!({"virtualRouterName": "r", "spec": {"listeners": listeners()}}),
        ),
        (
            "/meshes/m/virtualRouter/r/routes",
            json!({"routeName": "rt", "spec": {"priority": 1, "httpRoute": {"match": {"prefix": "/", "headers": [{"name": "x", "match": {"exact": "1"}}]}, "action": {"weightedTargets": [{"virtualNode": "red", "weight": 1}]}, "retryPolicy": {"maxRetries": 2, "perRetryTimeout": {"unit": "ms", "value": 100}, "httpRetryEvents": ["server-error"]}}}}),
        ),
        (
            "/meshes/m/virtualServices",
            json!({"virtualServiceName": "color.local", "spec": {"provider": {"virtualRouter": {"virtualRouterName": "r"}}}}),
        ),
        (
            "/meshes/m/virtualGateways",
            json!({"virtualGatewayName": "gw", "spec": {"listeners": listeners()}}),
        ),
        (
            "/meshes/m/virtualGateway/gw/gatewayRoutes",
            json!({"gatewayRouteName": "gr", "spec": {"httpRoute": {"match": {"prefix": "/"}, "action": {"target": {"virtualService": {"virtualServiceName": "color.local"}}}}}}),
        ),
    ]
}

// === strategies ===

/// Segments that reach real routes, and a few that stress the raw-path decoder.
const SEGMENTS: &[&str] = &[
    "meshes",
    "virtualNodes",
    "virtualRouters",
    "virtualRouter",
    "routes",
    "virtualServices",
    "virtualGateways",
    "virtualGateway",
    "gatewayRoutes",
    "tags",
    "tag",
    "untag",
    "m",
    "red",
    "blue",
    "r",
    "rt",
    "gw",
    "gr",
    "color.local",
    "v20190125",
    "",
    ".",
    "..",
    "%",
    "%Z",
    "%ZZ",
    "%2F",
    "%2f",
    "%00",
    "%FF%FE",
    "%C3%28",
    "%E2%80%AE",
    "a%20b",
    "+",
    "%2B",
];

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(SEGMENTS).prop_map(str::to_owned),
        2 => any::<String>().prop_map(|s| encode(&s)),
        1 => (1usize..6000).prop_map(|n| "a".repeat(n)),
        1 => "[a-zA-Z0-9%./+:~-]{0,12}",
    ]
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        proptest::sample::select(&["limit", "nextToken", "meshOwner", "resourceArn", "x"][..])
            .prop_map(str::to_owned),
        "[a-zA-Z%+=&]{0,6}",
    ];
    let value = prop_oneof![
        proptest::sample::select(
            &[
                "0",
                "1",
                "100",
                "101",
                "-1",
                "99999999999999999999",
                "abc",
                "%ZZ",
                "%00",
                "111122223333",
                "arn%3Aaws%3Aappmesh%3Aus-east-1%3A111122223333%3Amesh%2Fm",
                "arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualNode/red",
                "bm9wZQ",
            ][..]
        )
        .prop_map(str::to_owned),
        any::<String>().prop_map(|s| encode(&s)),
    ];
    proptest::collection::vec((key, value), 0..4).prop_map(|kv| {
        kv.into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => proptest::sample::select(&["GET", "PUT", "POST", "DELETE"][..]).prop_map(str::to_owned),
        1 => proptest::sample::select(&["PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT"][..]).prop_map(str::to_owned),
        1 => "[A-Z]{1,8}",
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        proptest::sample::select(&[0i64, -1, 1, 65535, 65536, i32::MAX as i64 + 1, i64::MIN][..])
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        proptest::sample::select(SEGMENTS).prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    proptest::sample::select(FIELD_NAMES).prop_map(str::to_owned),
                    any::<String>(),
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Member names of the request shapes, so random objects hit real fields.
const FIELD_NAMES: &[&str] = &[
    "meshName",
    "virtualNodeName",
    "virtualRouterName",
    "routeName",
    "virtualServiceName",
    "virtualGatewayName",
    "gatewayRouteName",
    "spec",
    "tags",
    "key",
    "value",
    "clientToken",
    "listeners",
    "portMapping",
    "port",
    "protocol",
    "httpRoute",
    "http2Route",
    "grpcRoute",
    "tcpRoute",
    "match",
    "prefix",
    "path",
    "action",
    "weightedTargets",
    "virtualNode",
    "weight",
    "provider",
    "virtualRouter",
    "backends",
    "virtualService",
    "serviceDiscovery",
    "dns",
    "hostname",
    "egressFilter",
    "type",
    "tagKeys",
    "healthCheck",
    "timeout",
    "priority",
];

/// One edit of a JSON document: `at` picks the node (walked by index), `op` what happens.
#[derive(Clone, Debug)]
struct Edit {
    at: Vec<usize>,
    op: u8,
    value: Value,
}

fn edit() -> impl Strategy<Value = Edit> {
    (
        proptest::collection::vec(any::<usize>(), 0..8),
        0u8..4,
        json_value(),
    )
        .prop_map(|(at, op, value)| Edit { at, op, value })
}

/// Applies `e`: 0 replace the node, 1 remove it from its parent, 2 insert `value` beside
/// it under a known field name, 3 duplicate it inside its parent array.
fn apply(doc: &mut Value, e: &Edit) {
    fn walk(v: &mut Value, at: &[usize], e: &Edit) -> bool {
        let Some((&i, rest)) = at.split_first() else {
            return false;
        };
        let n = match v {
            Value::Object(m) if !m.is_empty() => m.len(),
            Value::Array(a) if !a.is_empty() => a.len(),
            _ => return false,
        };
        let i = i % n;
        let child_done = match v {
            Value::Object(m) => {
                let k = m.keys().nth(i).cloned().unwrap_or_default();
                walk(m.get_mut(&k).unwrap_or(&mut Value::Null), rest, e)
            }
            Value::Array(a) => walk(&mut a[i], rest, e),
            _ => false,
        };
        if child_done {
            return true;
        }
        match (v, e.op) {
            (Value::Object(m), 0) => {
                let k = m.keys().nth(i).cloned().unwrap_or_default();
                m.insert(k, e.value.clone());
            }
            (Value::Object(m), 1) => {
                let k = m.keys().nth(i).cloned().unwrap_or_default();
                m.remove(&k);
            }
            (Value::Object(m), _) => {
                m.insert(
                    FIELD_NAMES[i % FIELD_NAMES.len()].to_owned(),
                    e.value.clone(),
                );
            }
            (Value::Array(a), 0) => a[i] = e.value.clone(),
            (Value::Array(a), 1) => {
                a.remove(i);
            }
            (Value::Array(a), 2) => a.insert(i, e.value.clone()),
            (Value::Array(a), _) => {
                let dup = a[i].clone();
                a.push(dup);
            }
            _ => {}
        }
        true
    }
    if !walk(doc, &e.at, e) && e.op == 0 {
        *doc = e.value.clone();
    }
}

/// A valid create (or the same body as an update of the created resource), mutated.
fn mutated_write() -> impl Strategy<Value = Call> {
    let n = valid_writes().len();
    (0..n, any::<bool>(), proptest::collection::vec(edit(), 0..4)).prop_map(|(i, update, edits)| {
        let (uri, mut body) = valid_writes().swap_remove(i);
        for e in &edits {
            apply(&mut body, e);
        }
        let (method, uri) = if update {
            // PUT .../<collection>/<name> with the name moved out of the body.
            let name_key = body
                .as_object()
                .and_then(|o| o.keys().find(|k| k.ends_with("Name")).cloned());
            let name = name_key
                .and_then(|k| body.as_object_mut().and_then(|o| o.remove(&k)))
                .and_then(|v| v.as_str().map(encode))
                .unwrap_or_else(|| "x".into());
            ("PUT", format!("{uri}/{name}"))
        } else {
            ("PUT", uri.to_owned())
        };
        Call {
            method: method.into(),
            uri: format!("/v20190125{uri}"),
            content_type: true,
            body: body.to_string().into_bytes(),
        }
    })
}

fn random_call() -> impl Strategy<Value = Call> {
    let body = prop_oneof![
        2 => Just(Vec::new()),
        2 => proptest::collection::vec(any::<u8>(), 0..256),
        4 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => (1usize..3_000_000).prop_map(|n| {
            // Large bodies around the size limit.
            let mut b = b"{\"meshName\":\"".to_vec();
            b.resize(n, b'a');
            b
        }),
    ];
    (
        method(),
        proptest::collection::vec(segment(), 0..7),
        query(),
        any::<bool>(),
        any::<bool>(),
        body,
    )
        .prop_map(|(method, segs, q, versioned, content_type, body)| {
            let prefix = if versioned { "/v20190125" } else { "" };
            let q = if q.is_empty() { q } else { format!("?{q}") };
            Call {
                method,
                uri: format!("{prefix}/{}{q}", segs.join("/")),
                content_type,
                body,
            }
        })
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![3 => random_call(), 2 => mutated_write()]
}

// === the target ===

fn run(strategy: impl Strategy<Value = Call>, cases: u32) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let router = router();
    rt.block_on(seed(&router));
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    // Answers by status, so the run proves it reached both the happy and the error paths.
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    runner
        .run(&strategy, |call| {
            if let Some(a) = rt.block_on(send(&router, &call)) {
                check(&call, &a)?;
                *seen.borrow_mut().entry(a.status).or_default() += 1;
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
    assert!(
        total >= cases / 2,
        "most cases must reach the router: {seen:?}"
    );
}

#[test]
fn rest_requests_never_panic_or_answer_5xx() {
    run(call(), cases());
}
