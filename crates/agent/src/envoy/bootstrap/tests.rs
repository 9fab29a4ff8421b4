//! Bootstrap resolution and rendering tests (real-Envoy validation is in `tests/envoy_bootstrap.rs`).

use super::*;
use crate::envoy::env::EnvMap;

fn resolve(pairs: &[(&str, &str)]) -> anyhow::Result<BootstrapConfig> {
    BootstrapConfig::resolve_with(
        &BootstrapArgs::default(),
        &EnvMap::from_pairs(pairs.iter().copied()),
        &|p| std::fs::read_to_string(p),
    )
}

#[test]
fn defaults_follow_app_mesh() {
    let c = resolve(&[("APPMESH_RESOURCE_ARN", "mesh/colorapp/virtualNode/front")]).unwrap();
    assert_eq!(c.node_id, "mesh/colorapp/virtualNode/front");
    assert_eq!(c.cluster, c.node_id);
    assert_eq!((c.xds_host.as_str(), c.xds_port), ("127.0.0.1", 7081));
    assert_eq!(c.xds_api, XdsApi::Delta);
    assert_eq!(
        (c.admin_address.as_str(), c.admin_port),
        ("127.0.0.1", 9901)
    );
    assert_eq!(c.admin_access_log, "/tmp/envoy_admin_access.log");
    assert_eq!(c.initial_fetch_timeout_s, 0);
    let v = c.to_value();
    assert_eq!(
        v["dynamic_resources"]["ads_config"]["api_type"],
        "DELTA_GRPC"
    );
    assert_eq!(
        v["dynamic_resources"]["ads_config"]["set_node_on_first_message_only"],
        true
    );
    assert_eq!(
        v["dynamic_resources"]["cds_config"]["initial_fetch_timeout"],
        "0s"
    );
    let xds = &v["static_resources"]["clusters"][0];
    assert_eq!(xds["name"], XDS_CLUSTER);
    let h2 = &xds["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        ["explicit_http_config"]["http2_protocol_options"];
    assert_eq!(h2["connection_keepalive"]["interval"], "10s");
    assert_eq!(v["node"]["metadata"]["meshplane.mesh"], "colorapp");
}

#[test]
fn node_id_fallbacks_and_forms() {
    let c = resolve(&[("APPMESH_VIRTUAL_NODE_NAME", "mesh/m/virtualGateway/gw")]).unwrap();
    assert_eq!(c.node.kind, meshplane_model::ProxyKind::VirtualGateway);
    let c = resolve(&[
        ("APPMESH_RESOURCE_ARN", "mesh/m@111122223333/virtualNode/n"),
        ("APPMESH_VIRTUAL_NODE_NAME", "mesh/other/virtualNode/x"),
    ])
    .unwrap();
    assert_eq!(c.node.owner.as_deref(), Some("111122223333"));
    let arn = "arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualNode/n";
    let c = resolve(&[("APPMESH_RESOURCE_ARN", arn)]).unwrap();
    assert_eq!(c.node_id, arn);
    assert_eq!(c.node.name, "n");
    let e = resolve(&[("APPMESH_RESOURCE_ARN", "mesh/m/virtualRouter/r")]).unwrap_err();
    assert!(e.to_string().contains("APPMESH_RESOURCE_ARN"), "{e}");
    let e = resolve(&[]).unwrap_err();
    assert!(e.to_string().contains("--node-id"), "{e}");
}

#[test]
fn flags_override_variables() {
    let args = BootstrapArgs {
        node_id: Some("mesh/a/virtualNode/b".into()),
        cluster: Some("c".into()),
        xds_address: Some("[::1]:9000".into()),
        xds_api: Some("sotw".into()),
        admin_port: Some(19000),
        admin_address: Some("0.0.0.0".into()),
        ..BootstrapArgs::default()
    };
    let env = EnvMap::from_pairs([
        ("APPMESH_RESOURCE_ARN", "mesh/x/virtualNode/y"),
        ("APPMESH_XDS_ENDPOINT", "10.0.0.1:1"),
        ("ENVOY_ADMIN_ACCESS_PORT", "1"),
    ]);
    let c = BootstrapConfig::resolve(&args, &env).unwrap();
    assert_eq!(c.node_id, "mesh/a/virtualNode/b");
    assert_eq!(c.cluster, "c");
    assert_eq!((c.xds_host.as_str(), c.xds_port), ("::1", 9000));
    assert_eq!(c.xds_api, XdsApi::Sotw);
    assert_eq!((c.admin_address.as_str(), c.admin_port), ("0.0.0.0", 19000));
}

#[test]
fn every_bad_value_is_reported_with_its_variable() {
    let e = resolve(&[
        ("APPMESH_RESOURCE_ARN", "mesh/m/virtualNode/n"),
        ("APPMESH_XDS_ENDPOINT", "nohost"),
        ("ENVOY_ADMIN_ACCESS_PORT", "99999"),
        ("ENVOY_ADMIN_ACCESS_ENABLE_IPV6", "yes"),
        ("ENVOY_LOG_LEVEL", "loud"),
        ("ENVOY_INITIAL_FETCH_TIMEOUT", "-1"),
        ("ENVOY_CONCURRENCY", "zero"),
        ("ENABLE_ENVOY_STATS_TAGS", "2"),
        ("ENABLE_ENVOY_DOG_STATSD", "1"),
        ("STATSD_PORT", "0"),
        ("STATSD_ADDRESS", "bad host"),
        ("ENVOY_STATS_FLUSH_INTERVAL", "10h"),
        ("ENABLE_ENVOY_JAEGER_TRACING", "1"),
        ("JAEGER_TRACER_VERSION", "THRIFT"),
        ("JAEGER_TRACER_PORT", "x"),
        (
            "ENVOY_STATS_CONFIG_FILE",
            "/nonexistent/meshplane-stats.yaml",
        ),
        ("APPMESH_SDS_SOCKET_PATH", "relative.sock"),
        ("MESHPLANE_XDS_API", "rest"),
    ])
    .unwrap_err()
    .to_string();
    for var in [
        "APPMESH_XDS_ENDPOINT",
        "ENVOY_ADMIN_ACCESS_PORT",
        "ENVOY_ADMIN_ACCESS_ENABLE_IPV6",
        "ENVOY_LOG_LEVEL",
        "ENVOY_INITIAL_FETCH_TIMEOUT",
        "ENVOY_CONCURRENCY",
        "ENABLE_ENVOY_STATS_TAGS",
        "STATSD_PORT",
        "STATSD_ADDRESS",
        "ENVOY_STATS_FLUSH_INTERVAL",
        "JAEGER_TRACER_VERSION",
        "JAEGER_TRACER_PORT",
        "ENVOY_STATS_CONFIG_FILE",
        "APPMESH_SDS_SOCKET_PATH",
        "MESHPLANE_XDS_API",
    ] {
        assert!(e.contains(var), "{var} missing from: {e}");
    }
}

#[test]
fn only_one_tracer() {
    let e = resolve(&[
        ("APPMESH_RESOURCE_ARN", "mesh/m/virtualNode/n"),
        ("ENABLE_ENVOY_JAEGER_TRACING", "1"),
        ("ENABLE_ENVOY_OPENTELEMETRY_TRACING", "1"),
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("only one tracer"), "{e}");
    let e = resolve(&[
        ("APPMESH_RESOURCE_ARN", "mesh/m/virtualNode/n"),
        ("ENABLE_ENVOY_XRAY_TRACING", "1"),
        ("ENABLE_ENVOY_DATADOG_TRACING", "true"),
        ("ENABLE_ENVOY_JAEGER_TRACING", "0"),
    ])
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "ENABLE_ENVOY_XRAY_TRACING and ENABLE_ENVOY_DATADOG_TRACING: only one tracer can be \
         enabled"
    );
}

#[test]
fn xray_follows_app_mesh_defaults() {
    let c = resolve(&[
        (
            "APPMESH_RESOURCE_ARN",
            "arn:aws:appmesh:us-west-2:111122223333:mesh/colorapp/virtualNode/front",
        ),
        ("ENABLE_ENVOY_XRAY_TRACING", "1"),
    ])
    .unwrap();
    assert_eq!(
        c.tracing,
        Some(Tracing::Xray {
            address: "127.0.0.1".into(),
            port: 2000,
            segment_name: "colorapp/front".into(),
            sampling: XraySampling::Rate(0.05),
        })
    );
    let v = c.to_value();
    let t = &v["tracing"]["http"];
    assert_eq!(t["name"], "envoy.tracers.xray");
    let cfg = &t["typed_config"];
    assert_eq!(cfg["daemon_endpoint"]["protocol"], "UDP");
    assert_eq!(cfg["daemon_endpoint"]["port_value"], 2000);
    assert_eq!(cfg["segment_name"], "colorapp/front");
    let manifest: serde_json::Value = serde_json::from_str(
        cfg["sampling_rule_manifest"]["inline_string"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["default"]["rate"], 0.05);
    assert_eq!(manifest["default"]["fixed_target"], 1);
    assert_eq!(
        cfg["segment_fields"]["aws"]["app_mesh"]["virtual_node_name"],
        "front"
    );
    assert_eq!(cfg["segment_fields"]["origin"], "AWS::AppMesh::Proxy");
}

#[test]
fn xray_variables() {
    let c = resolve(&[
        ("APPMESH_RESOURCE_ARN", "mesh/m/virtualGateway/gw"),
        ("ENABLE_ENVOY_XRAY_TRACING", "1"),
        ("XRAY_DAEMON_PORT", "2001"),
        ("AWS_XRAY_DAEMON_ADDRESS", "127.0.0.9"),
        ("XRAY_SAMPLING_RATE", "1"),
        ("XRAY_SEGMENT_NAME", "edge"),
    ])
    .unwrap();
    assert_eq!(
        c.tracing,
        Some(Tracing::Xray {
            address: "127.0.0.9".into(),
            port: 2001,
            segment_name: "edge".into(),
            sampling: XraySampling::Rate(1.0),
        })
    );
    assert_eq!(
        c.to_value()["tracing"]["http"]["typed_config"]["segment_fields"]["aws"]["app_mesh"]["virtual_gateway_name"],
        "gw"
    );
    // The SDK's two-protocol form: the udp member wins.
    let c = resolve(&[
        ("APPMESH_RESOURCE_ARN", "mesh/m/virtualNode/n"),
        ("ENABLE_ENVOY_XRAY_TRACING", "1"),
        (
            "AWS_XRAY_DAEMON_ADDRESS",
            "tcp:127.0.0.1:2000 udp:127.0.0.2:2002",
        ),
        ("XRAY_SAMPLING_RULE_MANIFEST", "/etc/xray/rules.json"),
    ])
    .unwrap();
    assert_eq!(
        c.tracing,
        Some(Tracing::Xray {
            address: "127.0.0.2".into(),
            port: 2002,
            segment_name: "m/n".into(),
            sampling: XraySampling::Manifest("/etc/xray/rules.json".into()),
        })
    );
    assert_eq!(
        c.to_value()["tracing"]["http"]["typed_config"]["sampling_rule_manifest"]["filename"],
        "/etc/xray/rules.json"
    );
    for (var, value, want) in [
        (
            "XRAY_SAMPLING_RATE",
            "1.5",
            "XRAY_SAMPLING_RATE: expected a decimal between 0 and 1",
        ),
        (
            "XRAY_SAMPLING_RATE",
            "five",
            "XRAY_SAMPLING_RATE: expected a decimal",
        ),
        ("XRAY_DAEMON_PORT", "0", "XRAY_DAEMON_PORT: port 0"),
        (
            "AWS_XRAY_DAEMON_ADDRESS",
            "xray.local:2000",
            "is not an IP address",
        ),
        (
            "AWS_XRAY_DAEMON_ADDRESS",
            "tcp:127.0.0.1:2000 x",
            "has no udp: address",
        ),
        (
            "XRAY_SAMPLING_RULE_MANIFEST",
            "rules.json",
            "not an absolute path",
        ),
    ] {
        let e = resolve(&[
            ("APPMESH_RESOURCE_ARN", "mesh/m/virtualNode/n"),
            ("ENABLE_ENVOY_XRAY_TRACING", "1"),
            (var, value),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains(want), "{var}={value}: {e}");
    }
}

#[test]
fn datadog_variables() {
    let c = resolve(&[
        ("APPMESH_RESOURCE_ARN", "mesh/colorapp/virtualNode/front"),
        ("ENABLE_ENVOY_DATADOG_TRACING", "1"),
    ])
    .unwrap();
    assert_eq!(
        c.tracing,
        Some(Tracing::Datadog {
            address: "127.0.0.1".into(),
            port: 8126,
            service: "envoy-colorapp/front".into(),
        })
    );
    let v = c.to_value();
    assert_eq!(v["tracing"]["http"]["name"], "envoy.tracers.datadog");
    assert_eq!(
        v["tracing"]["http"]["typed_config"]["collector_cluster"],
        "datadog_agent"
    );
    assert!(
        v["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "datadog_agent")
    );
    let c = resolve(&[
        ("APPMESH_RESOURCE_ARN", "mesh/colorapp/virtualNode/front"),
        ("ENABLE_ENVOY_DATADOG_TRACING", "1"),
        ("DATADOG_TRACER_ADDRESS", "dd-agent.local"),
        ("DATADOG_TRACER_PORT", "8127"),
        ("DD_SERVICE", "front"),
    ])
    .unwrap();
    assert_eq!(
        c.tracing,
        Some(Tracing::Datadog {
            address: "dd-agent.local".into(),
            port: 8127,
            service: "front".into(),
        })
    );
    let e = resolve(&[
        ("APPMESH_RESOURCE_ARN", "mesh/colorapp/virtualNode/front"),
        ("ENABLE_ENVOY_DATADOG_TRACING", "1"),
        ("DATADOG_TRACER_ADDRESS", "bad host"),
        ("DATADOG_TRACER_PORT", "70000"),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("DATADOG_TRACER_ADDRESS") && e.contains("DATADOG_TRACER_PORT"),
        "{e}"
    );
}

#[test]
fn render_is_yaml_of_the_value() {
    let c = resolve(&[("APPMESH_RESOURCE_ARN", "mesh/m/virtualNode/n")]).unwrap();
    let text = render(&c);
    let back: serde_json::Value = yaml_serde::from_str(&text).unwrap();
    assert_eq!(back, c.to_value());
}

fn xds(v: &serde_json::Value) -> serde_json::Value {
    v["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == XDS_CLUSTER)
        .unwrap()
        .clone()
}

#[test]
fn token_file_and_tls_shape_the_xds_cluster() {
    let plain = xds(
        &resolve(&[("APPMESH_RESOURCE_ARN", "mesh/m/virtualNode/n")])
            .unwrap()
            .to_value(),
    );
    let opts = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    assert!(
        plain["typed_extension_protocol_options"][opts]
            .get("http_filters")
            .is_none()
    );
    assert!(plain.get("transport_socket").is_none());

    let c = xds(&resolve(&[
        ("APPMESH_RESOURCE_ARN", "mesh/m/virtualNode/n"),
        ("APPMESH_XDS_ENDPOINT", "cp.example:7443"),
        ("MESHPLANE_TOKEN_FILE", "/run/meshplane/token.yaml"),
        ("MESHPLANE_CA_BUNDLE", "/etc/meshplane/ca.pem"),
    ])
    .unwrap()
    .to_value());
    let filters = &c["typed_extension_protocol_options"][opts]["http_filters"];
    assert_eq!(filters[0]["name"], "envoy.filters.http.credential_injector");
    let generic = &filters[0]["typed_config"]["credential"]["typed_config"];
    assert_eq!(generic["header"], "authorization");
    assert_eq!(generic["credential"]["name"], TOKEN_SECRET_NAME);
    assert_eq!(
        generic["credential"]["sds_config"]["path_config_source"]["path"],
        "/run/meshplane/token.yaml"
    );
    assert_eq!(filters[1]["name"], "envoy.filters.http.upstream_codec");
    let tls = &c["transport_socket"]["typed_config"];
    assert_eq!(tls["sni"], "cp.example");
    let v = &tls["common_tls_context"]["validation_context"];
    assert_eq!(v["trusted_ca"]["filename"], "/etc/meshplane/ca.pem");
    assert_eq!(
        v["match_typed_subject_alt_names"],
        serde_json::json!([{ "san_type": "DNS", "matcher": { "exact": "cp.example" } }])
    );

    // --xds-tls alone trusts the system CA file; an IP host is matched as an IP SAN, no SNI.
    let args = BootstrapArgs {
        node_id: Some("mesh/m/virtualGateway/g".into()),
        xds_address: Some("10.1.2.3:7081".into()),
        xds_tls: true,
        ..BootstrapArgs::default()
    };
    let c = xds(&BootstrapConfig::resolve(&args, &EnvMap::default())
        .unwrap()
        .to_value());
    let tls = &c["transport_socket"]["typed_config"];
    assert!(tls.get("sni").is_none());
    let v = &tls["common_tls_context"]["validation_context"];
    assert_eq!(v["trusted_ca"]["filename"], SYSTEM_CA_FILE);
    assert_eq!(
        v["match_typed_subject_alt_names"][0]["san_type"],
        "IP_ADDRESS"
    );

    let e = resolve(&[
        ("APPMESH_RESOURCE_ARN", "mesh/m/virtualNode/n"),
        ("MESHPLANE_XDS_TLS", "maybe"),
    ])
    .unwrap_err();
    assert!(e.to_string().contains("MESHPLANE_XDS_TLS"), "{e}");
}
