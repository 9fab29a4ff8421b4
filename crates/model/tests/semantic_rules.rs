//! One test per semantic rule of api.md §6 (and the decisions documented in
//! `validate/`): each starts from a complete valid example, breaks one rule, and checks
//! the exact path and message reported.

mod common;

use common::{assert_rejected, assert_valid, gateway_route, remove, route, set};
use meshplane_model::{Tag, validate_name, validate_tags};
use serde_json::json;

// === routes ===

#[test]
fn rejects_route_with_two_route_kinds() {
    let mut r = route("httpRoute");
    set(&mut r, "tcpRoute", route("tcpRoute")["tcpRoute"].clone());
    assert_rejected("RouteSpec", &r, &["spec"], "got httpRoute and tcpRoute");
}

#[test]
fn rejects_route_without_route_kind() {
    assert_rejected(
        "RouteSpec",
        &json!({ "priority": 1 }),
        &["spec"],
        "got none",
    );
}

#[test]
fn rejects_gateway_route_with_two_route_kinds() {
    let mut r = gateway_route("httpRoute");
    set(
        &mut r,
        "grpcRoute",
        gateway_route("grpcRoute")["grpcRoute"].clone(),
    );
    assert_rejected(
        "GatewayRouteSpec",
        &r,
        &["spec"],
        "exactly one of grpcRoute, http2Route, httpRoute",
    );
}

#[test]
fn rejects_gateway_route_without_route_kind() {
    assert_rejected("GatewayRouteSpec", &json!({}), &["spec"], "got none");
}

#[test]
fn rejects_route_match_with_prefix_and_path() {
    for kind in ["httpRoute", "http2Route"] {
        let mut r = route(kind);
        set(
            &mut r,
            &format!("{kind}.match.path"),
            json!({ "exact": "/color" }),
        );
        assert_rejected(
            "RouteSpec",
            &r,
            &[&format!("spec.{kind}.match")],
            "got prefix and path",
        );
    }
}

#[test]
fn rejects_route_match_without_prefix_or_path() {
    let mut r = route("httpRoute");
    remove(&mut r, "httpRoute.match.prefix");
    remove(&mut r, "httpRoute.match.port");
    assert_rejected(
        "RouteSpec",
        &r,
        &["spec.httpRoute.match"],
        "exactly one of prefix, path must be set (or port alone), got none",
    );
}

/// Issue 16 item 7: App Mesh accepts a match on `port` alone (howto-multiple-listeners).
#[test]
fn accepts_route_match_on_port_only() {
    for kind in ["httpRoute", "http2Route"] {
        let mut r = route(kind);
        set(&mut r, &format!("{kind}.match"), json!({ "port": 8080 }));
        assert_valid("RouteSpec", &r);
        // Port plus conditions other than a path is a port-wide match too.
        let mut r = route(kind);
        remove(&mut r, &format!("{kind}.match.prefix"));
        assert_valid("RouteSpec", &r);
        // The port itself is still range-checked.
        set(&mut r, &format!("{kind}.match"), json!({ "port": 0 }));
        assert_rejected(
            "RouteSpec",
            &r,
            &[&format!("spec.{kind}.match.port")],
            "must be between 1 and 65535, got 0",
        );
    }
    let mut g = route("grpcRoute");
    set(&mut g, "grpcRoute.match", json!({ "port": 8080 }));
    assert_valid("RouteSpec", &g);
    let mut t = route("tcpRoute");
    set(&mut t, "tcpRoute.match", json!({ "port": 8080 }));
    assert_valid("RouteSpec", &t);
}

#[test]
fn accepts_route_match_on_path_only() {
    for path in [json!({ "exact": "/color" }), json!({ "regex": "/colou?r" })] {
        let mut r = route("http2Route");
        remove(&mut r, "http2Route.match.prefix");
        set(&mut r, "http2Route.match.path", path);
        assert_valid("RouteSpec", &r);
    }
}

#[test]
fn rejects_prefix_without_leading_slash() {
    let mut r = route("httpRoute");
    set(&mut r, "httpRoute.match.prefix", json!("color"));
    assert_rejected(
        "RouteSpec",
        &r,
        &["spec.httpRoute.match.prefix"],
        "must start with \"/\"",
    );
    let mut g = gateway_route("http2Route");
    set(&mut g, "http2Route.match.prefix", json!("shop/"));
    assert_rejected(
        "GatewayRouteSpec",
        &g,
        &["spec.http2Route.match.prefix"],
        "got \"shop/\"",
    );
}

#[test]
fn rejects_path_match_with_both_or_neither_of_exact_and_regex() {
    let mut r = route("httpRoute");
    remove(&mut r, "httpRoute.match.prefix");
    set(
        &mut r,
        "httpRoute.match.path",
        json!({ "exact": "/a", "regex": "/a.*" }),
    );
    assert_rejected(
        "RouteSpec",
        &r,
        &["spec.httpRoute.match.path"],
        "got exact and regex",
    );
    set(&mut r, "httpRoute.match.path", json!({}));
    assert_rejected("RouteSpec", &r, &["spec.httpRoute.match.path"], "got none");
}

#[test]
fn rejects_grpc_method_name_without_service_name() {
    let mut r = route("grpcRoute");
    remove(&mut r, "grpcRoute.match.serviceName");
    assert_rejected(
        "RouteSpec",
        &r,
        &["spec.grpcRoute.match.methodName"],
        "requires serviceName",
    );
    // A service name alone is fine.
    let mut r = route("grpcRoute");
    remove(&mut r, "grpcRoute.match.methodName");
    assert_valid("RouteSpec", &r);
}

#[test]
fn rejects_match_range_whose_start_is_not_below_end() {
    let cases = [
        (
            "RouteSpec",
            route("httpRoute"),
            "httpRoute.match.headers[0].match",
        ),
        (
            "RouteSpec",
            route("grpcRoute"),
            "grpcRoute.match.metadata[0].match",
        ),
        (
            "GatewayRouteSpec",
            gateway_route("httpRoute"),
            "httpRoute.match.headers[0].match",
        ),
        (
            "GatewayRouteSpec",
            gateway_route("grpcRoute"),
            "grpcRoute.match.metadata[0].match",
        ),
    ];
    for (spec, base, at) in cases {
        for (start, end) in [(150, 150), (150, 100)] {
            let mut s = base.clone();
            set(
                &mut s,
                at,
                json!({ "range": { "start": start, "end": end } }),
            );
            let want = format!("spec.{at}.range");
            assert_rejected(spec, &s, &[&want], "start must be less than end");
        }
        let mut s = base.clone();
        set(&mut s, at, json!({ "range": { "start": 100, "end": 150 } }));
        assert_valid(spec, &s);
    }
}

#[test]
fn rejects_weighted_targets_totalling_more_than_100() {
    let mut r = route("tcpRoute");
    set(
        &mut r,
        "tcpRoute.action.weightedTargets[0].weight",
        json!(60),
    );
    set(
        &mut r,
        "tcpRoute.action.weightedTargets[1].weight",
        json!(41),
    );
    assert_rejected(
        "RouteSpec",
        &r,
        &["spec.tcpRoute.action.weightedTargets"],
        "total weight must be at most 100, got 101",
    );
}

#[test]
fn rejects_weighted_targets_that_all_weigh_zero() {
    let mut r = route("grpcRoute");
    set(
        &mut r,
        "grpcRoute.action.weightedTargets[0].weight",
        json!(0),
    );
    set(
        &mut r,
        "grpcRoute.action.weightedTargets[1].weight",
        json!(0),
    );
    assert_rejected(
        "RouteSpec",
        &r,
        &["spec.grpcRoute.action.weightedTargets"],
        "at least one target must have a weight greater than 0",
    );
}

#[test]
fn accepts_relative_weights_that_do_not_sum_to_100() {
    let mut r = route("httpRoute");
    set(
        &mut r,
        "httpRoute.action.weightedTargets[0].weight",
        json!(2),
    );
    set(
        &mut r,
        "httpRoute.action.weightedTargets[1].weight",
        json!(1),
    );
    assert_valid("RouteSpec", &r);
}

#[test]
fn rejects_retry_policy_without_events() {
    let mut r = route("httpRoute");
    remove(&mut r, "httpRoute.retryPolicy.httpRetryEvents");
    remove(&mut r, "httpRoute.retryPolicy.tcpRetryEvents");
    assert_rejected(
        "RouteSpec",
        &r,
        &["spec.httpRoute.retryPolicy"],
        "at least one retry event",
    );
    let mut r = route("grpcRoute");
    for list in ["grpcRetryEvents", "httpRetryEvents", "tcpRetryEvents"] {
        remove(&mut r, &format!("grpcRoute.retryPolicy.{list}"));
    }
    assert_rejected(
        "RouteSpec",
        &r,
        &["spec.grpcRoute.retryPolicy"],
        "at least one retry event",
    );
}

#[test]
fn accepts_retry_policy_with_a_single_event_list() {
    let mut r = route("grpcRoute");
    remove(&mut r, "grpcRoute.retryPolicy.httpRetryEvents");
    remove(&mut r, "grpcRoute.retryPolicy.tcpRetryEvents");
    assert_valid("RouteSpec", &r);
}

#[test]
fn rejects_undocumented_http_retry_event() {
    let mut r = route("http2Route");
    set(
        &mut r,
        "http2Route.retryPolicy.httpRetryEvents",
        json!(["server-error", "5xx"]),
    );
    assert_rejected(
        "RouteSpec",
        &r,
        &["spec.http2Route.retryPolicy.httpRetryEvents[1]"],
        "must be one of server-error, gateway-error, client-error, stream-error, got \"5xx\"",
    );
}

#[test]
fn rejects_duplicate_retry_events() {
    let mut r = route("grpcRoute");
    set(
        &mut r,
        "grpcRoute.retryPolicy.httpRetryEvents",
        json!(["gateway-error", "gateway-error"]),
    );
    set(
        &mut r,
        "grpcRoute.retryPolicy.grpcRetryEvents",
        json!(["internal", "cancelled", "internal"]),
    );
    assert_rejected(
        "RouteSpec",
        &r,
        &[
            "spec.grpcRoute.retryPolicy.grpcRetryEvents[2]",
            "spec.grpcRoute.retryPolicy.httpRetryEvents[1]",
        ],
        "duplicate retry event \"internal\"",
    );
}

// === gateway routes ===

#[test]
fn accepts_gateway_route_matching_on_hostname_only() {
    let mut g = gateway_route("httpRoute");
    set(
        &mut g,
        "httpRoute.match",
        json!({ "hostname": { "suffix": ".example.com" } }),
    );
    remove(&mut g, "httpRoute.action.rewrite.prefix");
    assert_valid("GatewayRouteSpec", &g);
}

#[test]
fn rejects_gateway_route_match_with_prefix_and_path() {
    let mut g = gateway_route("httpRoute");
    set(&mut g, "httpRoute.match.path", json!({ "exact": "/shop" }));
    assert_rejected(
        "GatewayRouteSpec",
        &g,
        &["spec.httpRoute.match"],
        "at most one of prefix, path",
    );
}

#[test]
fn rejects_reserved_gateway_route_prefix() {
    for prefix in ["/aws-appmesh", "/aws-app-mesh/x"] {
        let mut g = gateway_route("httpRoute");
        set(&mut g, "httpRoute.match.prefix", json!(prefix));
        assert_rejected(
            "GatewayRouteSpec",
            &g,
            &["spec.httpRoute.match.prefix"],
            "reserved prefix",
        );
    }
}

#[test]
fn rejects_hostname_match_with_both_or_neither_of_exact_and_suffix() {
    let mut g = gateway_route("grpcRoute");
    set(
        &mut g,
        "grpcRoute.match.hostname",
        json!({ "exact": "a.example.com", "suffix": ".com" }),
    );
    assert_rejected(
        "GatewayRouteSpec",
        &g,
        &["spec.grpcRoute.match.hostname"],
        "got exact and suffix",
    );
    set(&mut g, "grpcRoute.match.hostname", json!({}));
    assert_rejected(
        "GatewayRouteSpec",
        &g,
        &["spec.grpcRoute.match.hostname"],
        "got none",
    );
}

#[test]
fn rejects_prefix_rewrite_without_prefix_match() {
    let mut g = gateway_route("httpRoute");
    remove(&mut g, "httpRoute.match.prefix");
    set(&mut g, "httpRoute.match.path", json!({ "exact": "/shop" }));
    assert_rejected(
        "GatewayRouteSpec",
        &g,
        &["spec.httpRoute.action.rewrite.prefix"],
        "requires the route to match on prefix",
    );
}

#[test]
fn rejects_path_rewrite_without_path_match() {
    let mut g = gateway_route("http2Route");
    set(
        &mut g,
        "http2Route.action.rewrite.path",
        json!({ "exact": "/new" }),
    );
    remove(&mut g, "http2Route.action.rewrite.prefix");
    assert_rejected(
        "GatewayRouteSpec",
        &g,
        &["spec.http2Route.action.rewrite.path"],
        "requires the route to match on path",
    );
}

#[test]
fn rejects_prefix_rewrite_with_default_prefix_and_value() {
    let mut g = gateway_route("httpRoute");
    set(
        &mut g,
        "httpRoute.action.rewrite.prefix.defaultPrefix",
        json!("DISABLED"),
    );
    assert_rejected(
        "GatewayRouteSpec",
        &g,
        &["spec.httpRoute.action.rewrite.prefix"],
        "at most one of defaultPrefix, value",
    );
}

// === virtual nodes ===

#[test]
fn rejects_node_with_listener_but_no_service_discovery() {
    let mut n = common::virtual_node();
    remove(&mut n, "serviceDiscovery");
    assert_rejected(
        "VirtualNodeSpec",
        &n,
        &["spec.serviceDiscovery"],
        "is required when listeners are present",
    );
}

#[test]
fn accepts_node_without_listeners_or_service_discovery() {
    let mut n = common::virtual_node();
    remove(&mut n, "serviceDiscovery");
    remove(&mut n, "listeners");
    assert_valid("VirtualNodeSpec", &n);
    set(&mut n, "listeners", json!([]));
    assert_valid("VirtualNodeSpec", &n);
}

#[test]
fn rejects_health_check_port_other_than_listener_port() {
    for spec in ["VirtualNodeSpec", "VirtualGatewaySpec"] {
        let mut s = common::example(spec, "");
        set(&mut s, "listeners[0].healthCheck.port", json!(9090));
        assert_rejected(
            spec,
            &s,
            &["spec.listeners[0].healthCheck.port"],
            "must equal the listener port 8080, got 9090",
        );
    }
}

#[test]
fn rejects_connection_pool_for_another_protocol() {
    let mut n = common::virtual_node();
    set(
        &mut n,
        "listeners[0].connectionPool",
        json!({ "tcp": { "maxConnections": 5 } }),
    );
    assert_rejected(
        "VirtualNodeSpec",
        &n,
        &["spec.listeners[0].connectionPool"],
        "must use the listener protocol member http, got tcp",
    );
    let mut g = common::virtual_gateway();
    set(
        &mut g,
        "listeners[0].connectionPool",
        json!({ "grpc": { "maxRequests": 5 } }),
    );
    assert_rejected(
        "VirtualGatewaySpec",
        &g,
        &["spec.listeners[0].connectionPool"],
        "must use the listener protocol member http, got grpc",
    );
}

#[test]
fn rejects_listener_timeout_for_another_protocol() {
    let mut n = common::virtual_node();
    set(
        &mut n,
        "listeners[0].timeout",
        json!({ "http2": { "perRequest": { "unit": "s", "value": 5 } } }),
    );
    assert_rejected(
        "VirtualNodeSpec",
        &n,
        &["spec.listeners[0].timeout"],
        "must use the listener protocol member http, got http2",
    );
}

#[test]
fn rejects_duplicate_listener_ports() {
    for spec in ["VirtualNodeSpec", "VirtualRouterSpec", "VirtualGatewaySpec"] {
        let mut s = common::example(spec, "");
        let mut second = s["listeners"][0].clone();
        second["portMapping"]["protocol"] = json!("grpc");
        for member in ["connectionPool", "timeout", "healthCheck"] {
            if let Some(o) = second.as_object_mut() {
                o.remove(member);
            }
        }
        s["listeners"].as_array_mut().unwrap().push(second);
        assert_rejected(
            spec,
            &s,
            &["spec.listeners[1].portMapping.port"],
            "duplicate port 8080, already used at spec.listeners[0].portMapping.port",
        );
        s["listeners"][1]["portMapping"]["port"] = json!(9090);
        assert_valid(spec, &s);
    }
}

#[test]
fn rejects_duplicate_backends() {
    let mut n = common::virtual_node();
    set(
        &mut n,
        "backends[1].virtualService.virtualServiceName",
        json!("colors.example.local"),
    );
    assert_rejected(
        "VirtualNodeSpec",
        &n,
        &["spec.backends[1].virtualService.virtualServiceName"],
        "duplicate backend \"colors.example.local\"",
    );
}

#[test]
fn rejects_zero_or_missing_outlier_detection_durations() {
    let mut n = common::virtual_node();
    set(
        &mut n,
        "listeners[0].outlierDetection.interval.value",
        json!(0),
    );
    set(
        &mut n,
        "listeners[0].outlierDetection.baseEjectionDuration",
        json!({ "unit": "s" }),
    );
    assert_rejected(
        "VirtualNodeSpec",
        &n,
        &[
            "spec.listeners[0].outlierDetection.interval.value",
            "spec.listeners[0].outlierDetection.baseEjectionDuration.value",
        ],
        "must be greater than 0, got 0",
    );
}

// === virtual gateways ===

#[test]
fn rejects_gateway_without_listeners() {
    let mut g = common::virtual_gateway();
    set(&mut g, "listeners", json!([]));
    assert_rejected(
        "VirtualGatewaySpec",
        &g,
        &["spec.listeners"],
        "must have at least 1 item, got 0",
    );
}

#[test]
fn rejects_tcp_on_gateway_listener_and_health_check() {
    let mut g = common::virtual_gateway();
    set(&mut g, "listeners[0].portMapping.protocol", json!("tcp"));
    set(&mut g, "listeners[0].healthCheck.protocol", json!("tcp"));
    assert_rejected(
        "VirtualGatewaySpec",
        &g,
        &[
            "spec.listeners[0].healthCheck.protocol",
            "spec.listeners[0].portMapping.protocol",
        ],
        "must be one of http, http2, grpc, got \"tcp\"",
    );
}

// === TLS and logging ===

#[test]
fn rejects_empty_subject_alternative_names() {
    let mut n = common::virtual_node();
    set(
        &mut n,
        "listeners[0].tls.validation.subjectAlternativeNames.match.exact",
        json!([]),
    );
    set(
        &mut n,
        "backendDefaults.clientPolicy.tls.validation.subjectAlternativeNames.match.exact",
        json!([]),
    );
    assert_rejected(
        "VirtualNodeSpec",
        &n,
        &[
            "spec.backendDefaults.clientPolicy.tls.validation.subjectAlternativeNames.match.exact",
            "spec.listeners[0].tls.validation.subjectAlternativeNames.match.exact",
        ],
        "must have at least 1 item, got 0",
    );
}

#[test]
fn rejects_empty_json_log_format() {
    let mut g = common::virtual_gateway();
    set(
        &mut g,
        "logging.accessLog.file.format",
        json!({ "json": [] }),
    );
    assert_rejected(
        "VirtualGatewaySpec",
        &g,
        &["spec.logging.accessLog.file.format.json"],
        "must have at least 1 item, got 0",
    );
}

#[test]
fn rejects_duplicate_json_log_keys() {
    let mut n = common::virtual_node();
    set(
        &mut n,
        "logging.accessLog.file.format",
        json!({ "json": [
            { "key": "status", "value": "%RESPONSE_CODE%" },
            { "key": "path", "value": "%REQ(:PATH)%" },
            { "key": "status", "value": "%RESPONSE_FLAGS%" }
        ] }),
    );
    assert_rejected(
        "VirtualNodeSpec",
        &n,
        &["spec.logging.accessLog.file.format.json[2].key"],
        "duplicate key \"status\", already used at spec.logging.accessLog.file.format.json[0].key",
    );
}

#[test]
fn rejects_unknown_enum_value_naming_the_allowed_values() {
    let mut n = common::virtual_node();
    set(&mut n, "listeners[0].portMapping.protocol", json!("foo"));
    assert_rejected(
        "VirtualNodeSpec",
        &n,
        &["spec.listeners[0].portMapping.protocol"],
        "must be one of http, tcp, http2, grpc, got \"foo\"",
    );
}

// === names and tags ===

#[test]
fn rejects_names_outside_1_to_255_characters() {
    assert!(validate_name("meshName", "colorapp").is_ok());
    assert!(
        validate_name("meshName", &"é".repeat(255)).is_ok(),
        "length is in characters"
    );
    for bad in [String::new(), "a".repeat(256)] {
        let v = validate_name("meshName", &bad).unwrap_err();
        assert_eq!(v.0.len(), 1);
        assert_eq!(v.0[0].path, "meshName");
        assert!(
            v.0[0]
                .message
                .starts_with("length must be between 1 and 255"),
            "{v}"
        );
    }
}

#[test]
fn rejects_names_with_control_or_bidi_characters() {
    for field in [
        "meshName",
        "virtualNodeName",
        "virtualRouterName",
        "routeName",
    ] {
        for bad in [
            "a\u{0}b",
            "a\nb",
            "a\rb",
            "a\tb",
            "a\u{7f}b",
            "a\u{85}b",
            "a\u{9f}b",
            "a\u{202e}b",
            "a\u{2066}b",
            "a\u{200f}b",
            "a\u{61c}b",
        ] {
            let v = validate_name(field, bad).unwrap_err();
            assert_eq!(v.0.len(), 1, "{field} {bad:?}: {v}");
            assert_eq!(v.0[0].path, field);
            assert!(
                v.0[0]
                    .message
                    .starts_with("must not contain control or bidi characters, got U+"),
                "{v}"
            );
        }
    }
    let v = validate_name("virtualNodeName", "a\u{202e}b").unwrap_err();
    assert!(v.0[0].message.ends_with("got U+202E"), "{v}");
    // Visible unicode, spaces and punctuation stay valid.
    for ok in [
        "ünïcødé-名前",
        "a b",
        "x:y",
        "p+q",
        "pct%2Fname",
        "e\u{301}",
    ] {
        assert!(validate_name("virtualNodeName", ok).is_ok(), "{ok:?}");
    }
}

#[test]
fn rejects_slash_only_in_names_that_become_node_ids() {
    for field in ["meshName", "virtualNodeName", "virtualGatewayName"] {
        let v = validate_name(field, "a/b").unwrap_err();
        assert_eq!(v.0.len(), 1);
        assert_eq!(v.0[0].path, field);
        assert!(v.0[0].message.starts_with("must not contain \"/\""), "{v}");
    }
    for field in [
        "virtualServiceName",
        "virtualRouterName",
        "routeName",
        "gatewayRouteName",
    ] {
        assert!(validate_name(field, "a/b").is_ok(), "{field}");
    }
}

#[test]
fn rejects_tags_with_bad_key_or_value_lengths() {
    let tag = |k: &str, v: &str| Tag {
        key: k.to_owned(),
        value: v.to_owned(),
    };
    assert!(validate_tags(&[tag("team", ""), tag(&"k".repeat(128), &"v".repeat(256))]).is_ok());
    let v = validate_tags(&[
        tag("ok", "ok"),
        tag("", "x"),
        tag(&"k".repeat(129), &"v".repeat(257)),
    ])
    .unwrap_err();
    let got: Vec<(&str, &str)> = v
        .iter()
        .map(|v| (v.path.as_str(), v.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("tags[1].key", "length must be between 1 and 128, got 0"),
            ("tags[2].key", "length must be between 1 and 128, got 129"),
            ("tags[2].value", "length must be between 0 and 256, got 257"),
        ]
    );
}

// === inputs Envoy would reject ===

#[test]
fn rejects_regex_that_does_not_compile() {
    let mut r = route("httpRoute");
    set(
        &mut r,
        "httpRoute.match.headers[0].match",
        json!({ "regex": "(red|green" }),
    );
    remove(&mut r, "httpRoute.match.prefix");
    set(
        &mut r,
        "httpRoute.match.path",
        json!({ "regex": "/colou?r[" }),
    );
    assert_rejected(
        "RouteSpec",
        &r,
        &[
            "spec.httpRoute.match.headers[0].match.regex",
            "spec.httpRoute.match.path.regex",
        ],
        "must be a valid regular expression, got \"(red|green\"",
    );
}

#[test]
fn rejects_header_name_that_is_not_an_http_token() {
    let mut g = gateway_route("grpcRoute");
    set(
        &mut g,
        "grpcRoute.match.metadata[0].name",
        json!("device type"),
    );
    assert_rejected(
        "GatewayRouteSpec",
        &g,
        &["spec.grpcRoute.match.metadata[0].name"],
        "must be an http header name",
    );
    set(
        &mut g,
        "grpcRoute.match.metadata[0].name",
        json!(":authority"),
    );
    assert_valid("GatewayRouteSpec", &g);
}

#[test]
fn rejects_empty_query_parameter_name() {
    let mut r = route("http2Route");
    set(
        &mut r,
        "http2Route.match.queryParameters[0].name",
        json!(""),
    );
    assert_rejected(
        "RouteSpec",
        &r,
        &["spec.http2Route.match.queryParameters[0].name"],
        "must not be empty",
    );
}

#[test]
fn rejects_blank_dns_hostname() {
    let mut n = common::virtual_node();
    set(
        &mut n,
        "serviceDiscovery",
        json!({ "dns": { "hostname": " " } }),
    );
    assert_rejected(
        "VirtualNodeSpec",
        &n,
        &["spec.serviceDiscovery.dns.hostname"],
        "must not be blank",
    );
}
