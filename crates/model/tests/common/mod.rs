//! Shared fixtures for the validation tests: one complete, valid example per spec kind
//! (as JSON), one-of member templates, and helpers to edit JSON by dotted path and to
//! run `validate_spec` on the result.
#![allow(dead_code)] // each test binary uses a different subset

use meshplane_model::{Spec, Violation, validate_spec};
use serde_json::{Value, json};

/// The JSON `kind` tag of `Spec` for a model spec name (`VirtualNodeSpec` → `virtualNode`).
pub fn kind_tag(spec_name: &str) -> &'static str {
    match spec_name {
        "MeshSpec" => "mesh",
        "VirtualNodeSpec" => "virtualNode",
        "VirtualServiceSpec" => "virtualService",
        "VirtualRouterSpec" => "virtualRouter",
        "RouteSpec" => "route",
        "VirtualGatewaySpec" => "virtualGateway",
        "GatewayRouteSpec" => "gatewayRoute",
        other => panic!("unknown spec kind {other}"),
    }
}

/// Deserializes `spec` as the typed spec of `spec_name`; panics with the serde error.
pub fn parse(spec_name: &str, spec: &Value) -> Spec {
    let tagged = json!({ "kind": kind_tag(spec_name), "spec": spec });
    serde_json::from_value(tagged)
        .unwrap_or_else(|e| panic!("{spec_name} does not parse: {e}\n{spec:#}"))
}

/// Parses and validates; returns the violations (empty when valid).
pub fn violations(spec_name: &str, spec: &Value) -> Vec<Violation> {
    match validate_spec(&parse(spec_name, spec)) {
        Ok(()) => Vec::new(),
        Err(v) => v.0,
    }
}

/// The reported paths, sorted and deduplicated.
pub fn paths(spec_name: &str, spec: &Value) -> Vec<String> {
    let mut p: Vec<String> = violations(spec_name, spec)
        .into_iter()
        .map(|v| v.path)
        .collect();
    p.sort();
    p.dedup();
    p
}

/// Asserts that `spec` validates cleanly.
pub fn assert_valid(spec_name: &str, spec: &Value) {
    let v = violations(spec_name, spec);
    assert!(
        v.is_empty(),
        "{spec_name} should be valid, got {v:#?}\n{spec:#}"
    );
}

/// Asserts that exactly `expected` paths are reported, and that some message at the
/// first path contains `needle`.
pub fn assert_rejected(spec_name: &str, spec: &Value, expected: &[&str], needle: &str) {
    let v = violations(spec_name, spec);
    let mut got: Vec<&str> = v.iter().map(|v| v.path.as_str()).collect();
    got.sort();
    got.dedup();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(got, want, "unexpected violation paths: {v:#?}\n{spec:#}");
    assert!(
        v.iter()
            .any(|x| x.path == expected[0] && x.message.contains(needle)),
        "no message at {} contains {needle:?}: {v:#?}",
        expected[0]
    );
}

// === JSON editing by dotted path (`listeners[0].portMapping.port`) ===

/// One step of a dotted path.
#[derive(Clone, Debug, PartialEq)]
pub enum Seg {
    /// An object member.
    Key(String),
    /// A list index.
    Index(usize),
}

/// Splits `a.b[0].c` into segments; `[]` is read as `[0]`.
pub fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        let key_end = rest.find('[').unwrap_or(rest.len());
        if key_end > 0 {
            out.push(Seg::Key(rest[..key_end].to_owned()));
        }
        rest = &rest[key_end..];
        while let Some(stripped) = rest.strip_prefix('[') {
            let close = stripped.find(']').expect("closing bracket");
            let idx = &stripped[..close];
            out.push(Seg::Index(if idx.is_empty() {
                0
            } else {
                idx.parse().expect("index")
            }));
            rest = &stripped[close + 1..];
        }
    }
    out
}

/// The value at `path`, creating missing objects on the way; indices must exist.
pub fn at_mut<'a>(root: &'a mut Value, path: &str) -> &'a mut Value {
    let mut cur = root;
    for seg in segments(path) {
        cur = match seg {
            Seg::Key(k) => {
                let obj = cur
                    .as_object_mut()
                    .unwrap_or_else(|| panic!("{path}: not an object"));
                obj.entry(k).or_insert_with(|| json!({}))
            }
            Seg::Index(i) => cur
                .as_array_mut()
                .and_then(|a| a.get_mut(i))
                .unwrap_or_else(|| panic!("{path}: no element {i}")),
        };
    }
    cur
}

/// Sets `path` to `v`, creating missing objects.
pub fn set(root: &mut Value, path: &str, v: Value) {
    *at_mut(root, path) = v;
}

/// Removes the member at `path` if present.
pub fn remove(root: &mut Value, path: &str) {
    let (parent, key) = path.rsplit_once('.').map_or(("", path), |(p, k)| (p, k));
    let mut cur = root;
    for seg in segments(parent) {
        let next = match seg {
            Seg::Key(k) => cur.get_mut(k.as_str()),
            Seg::Index(i) => cur.get_mut(i),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(o) = cur.as_object_mut() {
        o.remove(key);
    }
}

/// The value at `path`, if present (no creation).
pub fn get<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = root;
    for seg in segments(path) {
        cur = match seg {
            Seg::Key(k) => cur.get(k.as_str())?,
            Seg::Index(i) => cur.get(i)?,
        };
    }
    Some(cur)
}

// === complete valid examples ===

fn file_certificate() -> Value {
    json!({ "certificateChain": "/certs/chain.pem", "privateKey": "/certs/key.pem" })
}

fn client_policy(san: &str) -> Value {
    json!({
        "tls": {
            "certificate": { "file": file_certificate() },
            "enforce": true,
            "ports": [8080],
            "validation": {
                "subjectAlternativeNames": { "match": { "exact": [san] } },
                "trust": { "file": { "certificateChain": "/certs/ca.pem" } }
            }
        }
    })
}

fn listener_tls() -> Value {
    json!({
        "certificate": { "file": file_certificate() },
        "mode": "STRICT",
        "validation": {
            "subjectAlternativeNames": { "match": { "exact": ["gateway.example.local"] } },
            "trust": { "file": { "certificateChain": "/certs/ca.pem" } }
        }
    })
}

fn health_check(protocol: &str, port: i64) -> Value {
    json!({
        "healthyThreshold": 2,
        "intervalMillis": 5000,
        "path": "/ping",
        "port": port,
        "protocol": protocol,
        "timeoutMillis": 2000,
        "unhealthyThreshold": 2
    })
}

fn seconds(v: i64) -> Value {
    json!({ "unit": "s", "value": v })
}

fn logging() -> Value {
    json!({ "accessLog": { "file": { "format": { "text": "%START_TIME% %PROTOCOL%\n" }, "path": "/dev/stdout" } } })
}

fn weighted_targets() -> Value {
    json!([
        { "port": 8080, "virtualNode": "blue", "weight": 5 },
        { "port": 8080, "virtualNode": "red", "weight": 5 }
    ])
}

fn headers(first: &str) -> Value {
    json!([
        { "invert": false, "match": { "exact": "blue" }, "name": first },
        { "name": "x-present" }
    ])
}

fn query_parameters() -> Value {
    json!([{ "match": { "exact": "1" }, "name": "v" }])
}

/// A complete, valid `MeshSpec`.
pub fn mesh() -> Value {
    json!({ "egressFilter": { "type": "DROP_ALL" }, "serviceDiscovery": { "ipPreference": "IPv4_PREFERRED" } })
}

/// A complete, valid `VirtualNodeSpec`: client TLS defaults and per backend, one http
/// listener with every optional member, a text access log and Cloud Map discovery.
pub fn virtual_node() -> Value {
    json!({
        "backendDefaults": { "clientPolicy": client_policy("backend.example.local") },
        "backends": [
            { "virtualService": { "clientPolicy": client_policy("colors.example.local"), "virtualServiceName": "colors.example.local" } },
            { "virtualService": { "virtualServiceName": "tcpecho.example.local" } }
        ],
        "listeners": [{
            "connectionPool": { "http": { "maxConnections": 100, "maxPendingRequests": 50 } },
            "healthCheck": health_check("http", 8080),
            "outlierDetection": {
                "baseEjectionDuration": seconds(10),
                "interval": seconds(10),
                "maxEjectionPercent": 50,
                "maxServerErrors": 5
            },
            "portMapping": { "port": 8080, "protocol": "http" },
            "timeout": { "http": { "idle": seconds(60), "perRequest": seconds(15) } },
            "tls": listener_tls()
        }],
        "logging": logging(),
        "serviceDiscovery": {
            "awsCloudMap": {
                "attributes": [{ "key": "version", "value": "blue" }],
                "ipPreference": "IPv4_ONLY",
                "namespaceName": "example.local",
                "serviceName": "front"
            }
        }
    })
}

/// A complete, valid `VirtualServiceSpec`.
pub fn virtual_service() -> Value {
    json!({ "provider": { "virtualNode": { "virtualNodeName": "front" } } })
}

/// A complete, valid `VirtualRouterSpec`.
pub fn virtual_router() -> Value {
    json!({ "listeners": [{ "portMapping": { "port": 8080, "protocol": "http" } }] })
}

/// A complete, valid `RouteSpec` of the given kind (`httpRoute`, `http2Route`,
/// `grpcRoute`, `tcpRoute`).
pub fn route(kind: &str) -> Value {
    let http = |scheme: &str| {
        json!({
            "action": { "weightedTargets": weighted_targets() },
            "match": {
                "headers": headers("color"),
                "method": "GET",
                "port": 8080,
                "prefix": "/",
                "queryParameters": query_parameters(),
                "scheme": scheme
            },
            "retryPolicy": {
                "httpRetryEvents": ["server-error", "gateway-error"],
                "maxRetries": 3,
                "perRetryTimeout": { "unit": "ms", "value": 2000 },
                "tcpRetryEvents": ["connection-error"]
            },
            "timeout": { "idle": seconds(60), "perRequest": seconds(15) }
        })
    };
    let body = match kind {
        "httpRoute" => http("http"),
        "http2Route" => http("https"),
        "grpcRoute" => json!({
            "action": { "weightedTargets": weighted_targets() },
            "match": {
                "metadata": headers("device"),
                "methodName": "GetColor",
                "port": 8080,
                "serviceName": "color.ColorService"
            },
            "retryPolicy": {
                "grpcRetryEvents": ["unavailable", "internal"],
                "httpRetryEvents": ["stream-error"],
                "maxRetries": 3,
                "perRetryTimeout": seconds(2),
                "tcpRetryEvents": ["connection-error"]
            },
            "timeout": { "idle": seconds(60), "perRequest": seconds(15) }
        }),
        "tcpRoute" => json!({
            "action": { "weightedTargets": weighted_targets() },
            "match": { "port": 8080 },
            "timeout": { "idle": seconds(60) }
        }),
        other => panic!("unknown route kind {other}"),
    };
    json!({ "priority": 10, kind: body })
}

/// A complete, valid `VirtualGatewaySpec`.
pub fn virtual_gateway() -> Value {
    json!({
        "backendDefaults": { "clientPolicy": client_policy("colors.example.local") },
        "listeners": [{
            "connectionPool": { "http": { "maxConnections": 100, "maxPendingRequests": 50 } },
            "healthCheck": health_check("http", 8080),
            "portMapping": { "port": 8080, "protocol": "http" },
            "tls": listener_tls()
        }],
        "logging": logging()
    })
}

/// A complete, valid `GatewayRouteSpec` of the given kind (`httpRoute`, `http2Route`,
/// `grpcRoute`).
pub fn gateway_route(kind: &str) -> Value {
    let target =
        json!({ "port": 8080, "virtualService": { "virtualServiceName": "colors.example.local" } });
    let body = match kind {
        "httpRoute" | "http2Route" => json!({
            "action": {
                "rewrite": {
                    "hostname": { "defaultTargetHostname": "ENABLED" },
                    "prefix": { "value": "/v2/" }
                },
                "target": target
            },
            "match": {
                "headers": headers("color"),
                "hostname": { "exact": "www.example.com" },
                "method": "GET",
                "port": 8080,
                "prefix": "/shop/",
                "queryParameters": query_parameters()
            }
        }),
        "grpcRoute" => json!({
            "action": { "rewrite": { "hostname": { "defaultTargetHostname": "DISABLED" } }, "target": target },
            "match": {
                "hostname": { "suffix": ".example.com" },
                "metadata": headers("device"),
                "port": 8080,
                "serviceName": "color.ColorService"
            }
        }),
        other => panic!("unknown gateway route kind {other}"),
    };
    json!({ "priority": 5, kind: body })
}

/// The complete example for a spec kind; for routes the route kind is taken from the
/// first segment of `path` (`httpRoute` when it is not a route kind, e.g. `priority`).
pub fn example(spec_name: &str, path: &str) -> Value {
    let first = path.split(['.', '[']).next().unwrap_or("");
    let kind = if ["httpRoute", "http2Route", "grpcRoute", "tcpRoute"].contains(&first) {
        first
    } else {
        "httpRoute"
    };
    match spec_name {
        "MeshSpec" => mesh(),
        "VirtualNodeSpec" => virtual_node(),
        "VirtualServiceSpec" => virtual_service(),
        "VirtualRouterSpec" => virtual_router(),
        "RouteSpec" => route(kind),
        "VirtualGatewaySpec" => virtual_gateway(),
        "GatewayRouteSpec" => gateway_route(kind),
        other => panic!("unknown spec kind {other}"),
    }
}

/// A valid value for one-of member `member` of the union found at a member named `seg`.
pub fn one_of_template(seg: &str, member: &str) -> Value {
    match (seg, member) {
        ("certificate", "file") => file_certificate(),
        ("certificate", "sds") => json!({ "secretName": "spiffe://example.org/front" }),
        ("certificate", "acm") => {
            json!({ "certificateArn": "arn:aws:acm:us-west-2:111122223333:certificate/abc" })
        }
        ("trust", "acm") => json!({
            "certificateAuthorityArns": ["arn:aws:acm-pca:us-west-2:111122223333:certificate-authority/ca"]
        }),
        ("trust", "file") => json!({ "certificateChain": "/certs/ca.pem" }),
        ("trust", "sds") => json!({ "secretName": "spiffe://example.org" }),
        ("connectionPool", "http") => json!({ "maxConnections": 10, "maxPendingRequests": 5 }),
        ("connectionPool", "tcp") => json!({ "maxConnections": 10 }),
        ("connectionPool", "http2" | "grpc") => json!({ "maxRequests": 10 }),
        ("timeout", "tcp") => json!({ "idle": seconds(60) }),
        ("timeout", "http" | "http2" | "grpc") => {
            json!({ "idle": seconds(60), "perRequest": seconds(15) })
        }
        ("match", "range") => json!({ "start": 100, "end": 150 }),
        ("match", "exact" | "prefix" | "regex" | "suffix") => json!("blue"),
        ("serviceDiscovery", "awsCloudMap") => json!({
            "namespaceName": "example.local",
            "serviceName": "front",
            "attributes": [{ "key": "version", "value": "blue" }]
        }),
        ("serviceDiscovery", "dns") => json!({
            "hostname": "front.example.local",
            "ipPreference": "IPv4_PREFERRED",
            "responseType": "LOADBALANCER"
        }),
        ("provider", "virtualNode") => json!({ "virtualNodeName": "front" }),
        ("provider", "virtualRouter") => json!({ "virtualRouterName": "colors" }),
        ("accessLog", "file") => json!({ "path": "/dev/stdout" }),
        ("format", "json") => json!([
            { "key": "protocol", "value": "%PROTOCOL%" },
            { "key": "path", "value": "%REQ(:PATH)%" }
        ]),
        ("format", "text") => json!("%PROTOCOL%\n"),
        ("backends[]", "virtualService") => json!({ "virtualServiceName": "colors.example.local" }),
        other => panic!("no template for one-of {other:?}"),
    }
}
