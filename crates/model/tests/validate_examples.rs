//! Whole-spec validation: realistic specs from the App Mesh walkthroughs validate
//! cleanly, and one request with several problems reports all of them at once.

mod common;

use common::{assert_valid, violations};
use serde_json::{Value, json};

fn colorteller_node(color: &str) -> Value {
    json!({
        "listeners": [{
            "portMapping": { "port": 9080, "protocol": "http" },
            "healthCheck": {
                "protocol": "http",
                "path": "/ping",
                "healthyThreshold": 2,
                "unhealthyThreshold": 2,
                "timeoutMillis": 2000,
                "intervalMillis": 5000
            }
        }],
        "serviceDiscovery": { "dns": { "hostname": format!("colorteller-{color}.default.svc.cluster.local") } }
    })
}

/// The colorapp walkthrough (aws-app-mesh-examples `examples/apps/colorapp`), plus the
/// ingress-gateway variant: every resource must validate without a single violation.
#[test]
fn accepts_the_colorapp_walkthrough() {
    let mut specs: Vec<(&str, Value)> = vec![
        (
            "MeshSpec",
            json!({ "egressFilter": { "type": "DROP_ALL" } }),
        ),
        (
            "VirtualNodeSpec",
            json!({
                "listeners": [{
                    "portMapping": { "port": 9080, "protocol": "http" },
                    "healthCheck": {
                        "protocol": "http", "path": "/ping", "port": 9080,
                        "healthyThreshold": 2, "unhealthyThreshold": 2,
                        "timeoutMillis": 2000, "intervalMillis": 5000
                    }
                }],
                "backends": [
                    { "virtualService": { "virtualServiceName": "colorteller.default.svc.cluster.local" } },
                    { "virtualService": { "virtualServiceName": "tcpecho.default.svc.cluster.local" } }
                ],
                "serviceDiscovery": { "dns": { "hostname": "colorgateway.default.svc.cluster.local" } },
                "logging": { "accessLog": { "file": { "path": "/dev/stdout" } } }
            }),
        ),
        (
            "VirtualNodeSpec",
            json!({
                "listeners": [{
                    "portMapping": { "port": 2701, "protocol": "tcp" },
                    "healthCheck": {
                        "protocol": "tcp", "healthyThreshold": 2, "unhealthyThreshold": 2,
                        "timeoutMillis": 2000, "intervalMillis": 5000
                    }
                }],
                "serviceDiscovery": { "dns": { "hostname": "tcpecho.default.svc.cluster.local" } }
            }),
        ),
        (
            "VirtualServiceSpec",
            json!({ "provider": { "virtualRouter": { "virtualRouterName": "colorteller-vr" } } }),
        ),
        (
            "VirtualServiceSpec",
            json!({ "provider": { "virtualNode": { "virtualNodeName": "tcpecho-vn" } } }),
        ),
        ("VirtualServiceSpec", json!({})),
        (
            "VirtualRouterSpec",
            json!({ "listeners": [{ "portMapping": { "port": 9080, "protocol": "http" } }] }),
        ),
        (
            "RouteSpec",
            json!({
                "httpRoute": {
                    "match": { "prefix": "/" },
                    "action": { "weightedTargets": [
                        { "virtualNode": "colorteller-blue-vn", "weight": 1 },
                        { "virtualNode": "colorteller-red-vn", "weight": 1 },
                        { "virtualNode": "colorteller-green-vn", "weight": 1 }
                    ] },
                    "retryPolicy": {
                        "maxRetries": 4,
                        "perRetryTimeout": { "unit": "ms", "value": 2000 },
                        "httpRetryEvents": ["server-error", "gateway-error"]
                    }
                }
            }),
        ),
        (
            "VirtualGatewaySpec",
            json!({ "listeners": [{ "portMapping": { "port": 9080, "protocol": "http" } }] }),
        ),
        (
            "GatewayRouteSpec",
            json!({
                "httpRoute": {
                    "match": { "prefix": "/color1" },
                    "action": { "target": { "virtualService": {
                        "virtualServiceName": "colorteller.default.svc.cluster.local"
                    } } }
                }
            }),
        ),
        (
            "RouteSpec",
            json!({
                "grpcRoute": {
                    "match": { "serviceName": "color.ColorService", "methodName": "GetColor" },
                    "action": { "weightedTargets": [{ "virtualNode": "color-server", "weight": 100 }] },
                    "retryPolicy": {
                        "grpcRetryEvents": ["internal"],
                        "maxRetries": 3,
                        "perRetryTimeout": { "unit": "s", "value": 2 }
                    }
                }
            }),
        ),
    ];
    for color in ["red", "blue", "green"] {
        specs.push(("VirtualNodeSpec", colorteller_node(color)));
    }
    for (kind, spec) in &specs {
        assert_valid(kind, spec);
    }
}

/// One request with problems in several places reports every one of them, each at its
/// own path, in one `Violations`.
#[test]
fn reports_every_problem_in_one_request() {
    let spec = json!({
        "listeners": [
            {
                "portMapping": { "port": 0, "protocol": "udp" },
                "healthCheck": {
                    "protocol": "http", "healthyThreshold": 1, "unhealthyThreshold": 11,
                    "timeoutMillis": 2000, "intervalMillis": 5000
                },
                "connectionPool": { "http": { "maxConnections": 0 } }
            },
            {
                "portMapping": { "port": 8080, "protocol": "http" },
                "timeout": { "tcp": { "idle": { "unit": "minutes", "value": -1 } } }
            }
        ],
        "backends": [
            { "virtualService": { "virtualServiceName": "a" } },
            { "virtualService": { "virtualServiceName": "a" } }
        ],
        "logging": { "accessLog": { "file": { "path": "" } } }
    });
    let v = violations("VirtualNodeSpec", &spec);
    let got: Vec<(&str, &str)> = v
        .iter()
        .map(|v| (v.path.as_str(), v.message.as_str()))
        .collect();
    let expected = [
        (
            "spec.backends[1].virtualService.virtualServiceName",
            "duplicate backend \"a\", already used at spec.backends[0].virtualService.virtualServiceName",
        ),
        (
            "spec.listeners[0].portMapping.protocol",
            "must be one of http, tcp, http2, grpc, got \"udp\"",
        ),
        (
            "spec.listeners[0].portMapping.port",
            "must be between 1 and 65535, got 0",
        ),
        (
            "spec.listeners[0].connectionPool.http.maxConnections",
            "must be between 1 and 2147483647, got 0",
        ),
        (
            "spec.listeners[0].healthCheck.healthyThreshold",
            "must be between 2 and 10, got 1",
        ),
        (
            "spec.listeners[0].healthCheck.unhealthyThreshold",
            "must be between 2 and 10, got 11",
        ),
        (
            "spec.listeners[1].timeout.tcp.idle.unit",
            "must be one of s, ms, got \"minutes\"",
        ),
        (
            "spec.listeners[1].timeout.tcp.idle.value",
            "must be at least 0, got -1",
        ),
        (
            "spec.listeners[1].timeout",
            "must use the listener protocol member http, got tcp",
        ),
        (
            "spec.logging.accessLog.file.path",
            "length must be between 1 and 255, got 0",
        ),
        (
            "spec.serviceDiscovery",
            "is required when listeners are present",
        ),
    ];
    for e in &expected {
        assert!(got.contains(e), "missing {e:?} in {got:#?}");
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "unexpected extra violations: {got:#?}"
    );
}
