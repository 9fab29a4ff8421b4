//! The Envoy bootstrap for a virtual node or virtual gateway: flags and App Mesh image
//! variables (`envoy-compat.md` §2.1–2.2) resolved into a [`BootstrapConfig`], rendered as YAML.
//!
//! Precedence: a flag, else its variable, else the App Mesh default. Every variable is parsed
//! strictly and all problems are reported at once.

use std::path::PathBuf;

use meshplane_model::{NodeId, ProxyKind};
use serde_json::{Value, json};

use super::env::{
    Problems, Strings, check_host, parse_bool, parse_duration_ms, parse_host_port, parse_port,
    parse_u64_in,
};

/// The xDS cluster's name in the bootstrap.
pub const XDS_CLUSTER: &str = "meshplane_xds";
/// The Zipkin/Jaeger collector cluster (App Mesh's name).
pub const JAEGER_CLUSTER: &str = "jaeger";
/// The OpenTelemetry collector cluster.
pub const OTEL_CLUSTER: &str = "opentelemetry_collector";
/// The Datadog agent cluster (App Mesh's name).
pub const DATADOG_CLUSTER: &str = "datadog_agent";
/// App Mesh's X-Ray sampling rate: 5 % of requests (plus one a second, X-Ray's fixed target).
const XRAY_DEFAULT_SAMPLING_RATE: &str = "0.05";
/// The variables that each enable one tracer; App Mesh allows one at a time.
const TRACER_VARIABLES: [&str; 4] = [
    "ENABLE_ENVOY_XRAY_TRACING",
    "ENABLE_ENVOY_DATADOG_TRACING",
    "ENABLE_ENVOY_JAEGER_TRACING",
    "ENABLE_ENVOY_OPENTELEMETRY_TRACING",
];
/// The SDS cluster App Mesh adds for `APPMESH_SDS_SOCKET_PATH`.
pub const SDS_CLUSTER: &str = "static_cluster_sds_unix_socket";

/// HTTP/2 keepalive on the xDS connection: App Mesh's agent uses 10 s pings and a 20 s timeout,
/// so a dead control-plane connection is noticed within half a minute.
const XDS_KEEPALIVE_INTERVAL_S: u64 = 10;
const XDS_KEEPALIVE_TIMEOUT_S: u64 = 20;

/// Bootstrap flags (each falls back to its App Mesh variable, then the App Mesh default).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct BootstrapArgs {
    /// Envoy node id: `mesh/<mesh>[@<owner>]/virtualNode/<name>`, the virtualGateway form, or
    /// an App Mesh ARN. [env: APPMESH_RESOURCE_ARN, APPMESH_RESOURCE_NAME,
    /// APPMESH_VIRTUAL_NODE_NAME]
    #[arg(long)]
    pub node_id: Option<String>,
    /// Envoy `node.cluster` (default: the node id). [env: APPMESH_RESOURCE_CLUSTER,
    /// APPMESH_VIRTUAL_NODE_CLUSTER]
    #[arg(long)]
    pub cluster: Option<String>,
    /// The control plane's xDS address, host:port. [env: APPMESH_XDS_ENDPOINT; default
    /// 127.0.0.1:7081]
    #[arg(long)]
    pub xds_address: Option<String>,
    /// ADS flavour: delta or sotw. [env: MESHPLANE_XDS_API; default delta]
    #[arg(long)]
    pub xds_api: Option<String>,
    /// Admin port. [env: ENVOY_ADMIN_ACCESS_PORT; default 9901]
    #[arg(long)]
    pub admin_port: Option<u16>,
    /// Admin bind address. [default 127.0.0.1, or `::` with ENVOY_ADMIN_ACCESS_ENABLE_IPV6=1]
    #[arg(long)]
    pub admin_address: Option<String>,
    /// The node token file (an SDS YAML written by `meshplane envoy token`): Envoy sends its
    /// token as `authorization` on every xDS connection and re-reads the file when it is
    /// replaced, so a renewed token needs no restart. [env: MESHPLANE_TOKEN_FILE]
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle trusted for the control plane's TLS (meshplane's CA is
    /// `<data-dir>/ca.pem`); implies --xds-tls. [env: MESHPLANE_CA_BUNDLE]
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
    /// Connect to the xDS port over TLS, trusting --ca-bundle, else AWS_CA_BUNDLE, else the
    /// system's CA file. [env: MESHPLANE_XDS_TLS]
    #[arg(long)]
    pub xds_tls: bool,
}

/// The SDS secret name the token file holds and the xDS cluster's credential injector reads.
pub const TOKEN_SECRET_NAME: &str = "meshplane-xds-token";
/// The CA file Envoy trusts with `--xds-tls` and no `--ca-bundle` (Debian's system bundle).
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Which ADS protocol Envoy speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdsApi {
    Delta,
    Sotw,
}

/// Envoy's log levels (`ENVOY_LOG_LEVEL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
    Critical,
    Off,
}

/// Where DogStatsD metrics go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatsdTarget {
    Udp { address: String, port: u16 },
    Unix { path: String },
}

/// The one tracer App Mesh allows at a time.
#[derive(Clone, Debug, PartialEq)]
pub enum Tracing {
    /// `ENABLE_ENVOY_XRAY_TRACING`: Envoy's X-Ray tracer, segments over UDP to the daemon.
    Xray {
        /// The daemon's IP address (Envoy's X-Ray tracer does not resolve names).
        address: String,
        port: u16,
        /// `XRAY_SEGMENT_NAME`, default `<mesh>/<resource name>`.
        segment_name: String,
        /// The sampling rule manifest: `XRAY_SAMPLING_RULE_MANIFEST`'s file, else a default
        /// rule at `XRAY_SAMPLING_RATE` (0.05).
        sampling: XraySampling,
    },
    /// `ENABLE_ENVOY_DATADOG_TRACING`: Envoy's Datadog tracer to the agent's trace port.
    Datadog {
        address: String,
        port: u16,
        /// `DD_SERVICE`, default `envoy-<mesh>/<resource name>`.
        service: String,
    },
    /// `ENABLE_ENVOY_JAEGER_TRACING`: the Zipkin tracer to a Jaeger collector.
    Zipkin {
        address: String,
        port: u16,
        json: bool,
    },
    /// `ENABLE_ENVOY_OPENTELEMETRY_TRACING`: OTLP over gRPC.
    OpenTelemetry { address: String, port: u16 },
}

/// Where the X-Ray tracer's sampling rules come from.
#[derive(Clone, Debug, PartialEq)]
pub enum XraySampling {
    /// A default rule: one request a second, then this fraction (0..=1).
    Rate(f64),
    /// `XRAY_SAMPLING_RULE_MANIFEST`: a manifest file Envoy reads itself.
    Manifest(String),
}

/// Everything the bootstrap (and `envoy run`) needs, resolved and validated.
#[derive(Clone, Debug)]
pub struct BootstrapConfig {
    /// `node.id` exactly as given (App Mesh keeps the ARN form).
    pub node_id: String,
    /// The parsed identity.
    pub node: NodeId,
    pub cluster: String,
    pub xds_host: String,
    pub xds_port: u16,
    pub xds_api: XdsApi,
    pub admin_address: String,
    pub admin_port: u16,
    pub admin_access_log: String,
    /// Seconds; 0 waits forever (App Mesh default).
    pub initial_fetch_timeout_s: u64,
    pub log_level: LogLevel,
    pub concurrency: Option<u32>,
    pub stats_tags: bool,
    pub statsd: Option<StatsdTarget>,
    pub stats_flush_interval_ms: Option<u64>,
    pub tracing: Option<Tracing>,
    /// Parsed `ENVOY_STATS_CONFIG_FILE` (a StatsConfig, merged into ours).
    pub stats_config: Option<Value>,
    /// Parsed `ENVOY_STATS_SINKS_CFG_FILE` (extra stats sinks).
    pub stats_sinks: Vec<Value>,
    /// Parsed `ENVOY_RESOURCES_CONFIG_FILE` (extra static resources).
    pub extra_resources: Option<Value>,
    pub sds_socket_path: Option<String>,
    /// The node token file the xDS cluster injects `authorization` from.
    pub token_file: Option<String>,
    /// TLS to the xDS port: the CA file Envoy trusts.
    pub xds_tls_ca: Option<String>,
    /// `ENVOY_OUTLIER_DETECTION_EVENT_LOG_PATH`. Unlike App Mesh (default `/dev/stdout`) it is
    /// off unless set: Envoy running as the proxy uid cannot reopen a stdout owned by root.
    pub outlier_event_log: Option<String>,
    /// `aws.appmesh.platformInfo` node metadata.
    pub platform_info: serde_json::Map<String, Value>,
}

// === impl BootstrapConfig ===

impl BootstrapConfig {
    /// Resolves flags, then variables from `env`, then defaults. `read_file` loads the files
    /// named by `ENVOY_STATS_CONFIG_FILE` and friends (injectable for tests).
    pub fn resolve(args: &BootstrapArgs, env: &dyn Strings) -> anyhow::Result<BootstrapConfig> {
        Self::resolve_with(args, env, &|p: &PathBuf| std::fs::read_to_string(p))
    }

    /// [`resolve`](Self::resolve) with an explicit file reader.
    pub fn resolve_with(
        args: &BootstrapArgs,
        env: &dyn Strings,
        read_file: &dyn Fn(&PathBuf) -> std::io::Result<String>,
    ) -> anyhow::Result<BootstrapConfig> {
        let mut p = Problems::default();

        // Identity.
        let (id_src, raw) = match &args.node_id {
            Some(v) => ("--node-id", Some(v.clone())),
            None => [
                "APPMESH_RESOURCE_ARN",
                "APPMESH_RESOURCE_NAME",
                "APPMESH_VIRTUAL_NODE_NAME",
            ]
            .into_iter()
            .find_map(|n| env.get(n).map(|v| (n, Some(v))))
            .unwrap_or(("APPMESH_RESOURCE_ARN", None)),
        };
        let node = match raw.as_deref().map(|s| (s, NodeId::parse(s.trim()))) {
            None => {
                p.push(
                    "no node id: pass --node-id or set APPMESH_RESOURCE_ARN \
                     (e.g. mesh/colorapp/virtualNode/front)",
                );
                None
            }
            Some((_, Ok(n))) => Some(n),
            Some((_, Err(e))) => {
                p.push(format!("{id_src}: {e}"));
                None
            }
        };
        let node_id = raw.map(|s| s.trim().to_owned()).unwrap_or_default();
        let cluster = args
            .cluster
            .clone()
            .or_else(|| env.get("APPMESH_RESOURCE_CLUSTER"))
            .or_else(|| env.get("APPMESH_VIRTUAL_NODE_CLUSTER"))
            .unwrap_or_else(|| node_id.clone());

        // Control plane.
        let (xds_src, xds_raw) = match &args.xds_address {
            Some(v) => ("--xds-address", v.clone()),
            None => (
                "APPMESH_XDS_ENDPOINT",
                env.get("APPMESH_XDS_ENDPOINT")
                    .unwrap_or_else(|| "127.0.0.1:7081".into()),
            ),
        };
        let (xds_host, xds_port) =
            take(&mut p, parse_host_port(xds_src, &xds_raw)).unwrap_or_else(|| (String::new(), 0));
        let (api_src, api_raw) = match &args.xds_api {
            Some(v) => ("--xds-api", Some(v.clone())),
            None => ("MESHPLANE_XDS_API", env.get("MESHPLANE_XDS_API")),
        };
        let xds_api = match api_raw.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("delta") => XdsApi::Delta,
            Some("sotw") => XdsApi::Sotw,
            Some(_) => {
                p.push(format!(
                    "{api_src}: expected delta or sotw, got `{}`",
                    api_raw.unwrap_or_default()
                ));
                XdsApi::Delta
            }
        };
        let initial_fetch_timeout_s = opt(&mut p, env, "ENVOY_INITIAL_FETCH_TIMEOUT", |n, v| {
            parse_u64_in(n, v, 0, 86_400)
        })
        .unwrap_or(0);

        // Admin.
        let admin_port = match args.admin_port {
            Some(0) => {
                p.push("--admin-port: port 0 is out of range 1..65535");
                0
            }
            Some(v) => v,
            None => opt(&mut p, env, "ENVOY_ADMIN_ACCESS_PORT", parse_port).unwrap_or(9901),
        };
        let ipv6 = opt(&mut p, env, "ENVOY_ADMIN_ACCESS_ENABLE_IPV6", parse_bool).unwrap_or(false);
        let admin_address = match &args.admin_address {
            Some(a) => {
                if a.parse::<std::net::IpAddr>().is_err() {
                    p.push(format!("--admin-address: `{a}` is not an IP address"));
                }
                a.clone()
            }
            None if ipv6 => "::".into(),
            None => "127.0.0.1".into(),
        };
        let admin_access_log = env
            .get("ENVOY_ADMIN_ACCESS_LOG_FILE")
            .unwrap_or_else(|| "/tmp/envoy_admin_access.log".into());
        let log_level = match env.get("ENVOY_LOG_LEVEL") {
            None => LogLevel::Info,
            Some(v) => {
                take(&mut p, LogLevel::parse("ENVOY_LOG_LEVEL", &v)).unwrap_or(LogLevel::Info)
            }
        };
        let concurrency = opt(&mut p, env, "ENVOY_CONCURRENCY", |n, v| {
            parse_u64_in(n, v, 1, 1024)
        })
        .map(|c| c as u32);

        // Stats.
        let stats_tags = opt(&mut p, env, "ENABLE_ENVOY_STATS_TAGS", parse_bool).unwrap_or(false);
        let statsd = if opt(&mut p, env, "ENABLE_ENVOY_DOG_STATSD", parse_bool).unwrap_or(false) {
            match env.get("STATSD_SOCKET_PATH") {
                Some(path) => Some(StatsdTarget::Unix { path }),
                None => {
                    let port = opt(&mut p, env, "STATSD_PORT", parse_port).unwrap_or(8125);
                    let address = addr(&mut p, env, "STATSD_ADDRESS");
                    Some(StatsdTarget::Udp { address, port })
                }
            }
        } else {
            None
        };
        let stats_flush_interval_ms = opt(&mut p, env, "ENVOY_STATS_FLUSH_INTERVAL", |n, v| {
            let ms = parse_duration_ms(n, v)?;
            // Envoy accepts 1 ms to 300 s.
            if (1..=300_000).contains(&ms) {
                Ok(ms)
            } else {
                Err(format!("{n}: must be between 1ms and 300s, got `{v}`"))
            }
        });

        // Tracing (one at a time, as App Mesh).
        let enabled: Vec<&str> = TRACER_VARIABLES
            .into_iter()
            .filter(|v| opt(&mut p, env, v, parse_bool).unwrap_or(false))
            .collect();
        let tracing = match enabled.as_slice() {
            [] => None,
            [one] => resolve_tracer(&mut p, env, one, node.as_ref()),
            many => {
                p.push(format!(
                    "{}: only one tracer can be enabled",
                    many.join(" and ")
                ));
                None
            }
        };

        // Files merged into the bootstrap.
        let mut load = |name: &str| -> Option<Value> {
            let path = PathBuf::from(env.get(name)?);
            let text = match read_file(&path) {
                Ok(t) => t,
                Err(e) => {
                    p.push(format!("{name}: cannot read {}: {e}", path.display()));
                    return None;
                }
            };
            match yaml_serde::from_str::<Value>(&text) {
                Ok(Value::Object(m)) => Some(Value::Object(m)),
                Ok(_) => {
                    p.push(format!("{name}: {} is not a YAML mapping", path.display()));
                    None
                }
                Err(e) => {
                    p.push(format!("{name}: {} is not valid YAML: {e}", path.display()));
                    None
                }
            }
        };
        let stats_config = load("ENVOY_STATS_CONFIG_FILE").map(|v| unwrap_key(v, "stats_config"));
        let sinks_file = load("ENVOY_STATS_SINKS_CFG_FILE");
        let extra_resources =
            load("ENVOY_RESOURCES_CONFIG_FILE").map(|v| unwrap_key(v, "static_resources"));
        let stats_sinks = match sinks_file.map(|v| unwrap_key(v, "stats_sinks")) {
            None => vec![],
            Some(Value::Array(a)) => a,
            Some(_) => {
                p.push("ENVOY_STATS_SINKS_CFG_FILE: expected a `stats_sinks` list");
                vec![]
            }
        };
        if let Some(Value::Object(m)) = &extra_resources {
            for k in m.keys() {
                if !["clusters", "listeners", "secrets"].contains(&k.as_str()) {
                    p.push(format!(
                        "ENVOY_RESOURCES_CONFIG_FILE: unknown static resource kind `{k}` \
                         (expected clusters, listeners or secrets)"
                    ));
                }
            }
        }
        if let Some(Value::Object(m)) = &stats_config
            && let Some(v) = m.get("stats_tags")
            && !v.is_array()
        {
            p.push("ENVOY_STATS_CONFIG_FILE: `stats_tags` must be a list");
        }

        let sds_socket_path = env.get("APPMESH_SDS_SOCKET_PATH");
        if let Some(s) = &sds_socket_path
            && !s.starts_with('/')
        {
            p.push(format!(
                "APPMESH_SDS_SOCKET_PATH: `{s}` is not an absolute path"
            ));
        }
        let outlier_event_log = env.get("ENVOY_OUTLIER_DETECTION_EVENT_LOG_PATH");
        let mut platform_info = serde_json::Map::new();
        for (var, key) in [
            ("APPMESH_PLATFORM_K8S_VERSION", "k8sVersion"),
            (
                "APPMESH_PLATFORM_APP_MESH_CONTROLLER_VERSION",
                "appMeshControllerVersion",
            ),
            ("APPMESH_PLATFORM_K8S_POD_UID", "k8sPodUid"),
        ] {
            if let Some(v) = env.get(var) {
                platform_info.insert(key.into(), Value::String(v));
            }
        }

        // Authentication and TLS towards the control plane.
        let token_file = args
            .token_file
            .as_ref()
            .map(|f| f.display().to_string())
            .or_else(|| env.get("MESHPLANE_TOKEN_FILE"));
        // An explicit bundle turns TLS on; AWS_CA_BUNDLE only says whom to trust once it is on,
        // since it is often set machine-wide (for the AWS CLI) where the xDS port is plaintext.
        let explicit_ca = args
            .ca_bundle
            .as_ref()
            .map(|f| f.display().to_string())
            .or_else(|| env.get("MESHPLANE_CA_BUNDLE"));
        let xds_tls = args.xds_tls
            || match env.get("MESHPLANE_XDS_TLS") {
                None => false,
                Some(v) => parse_bool("MESHPLANE_XDS_TLS", &v)
                    .map_err(|e| p.push(e))
                    .unwrap_or(false),
            };
        let xds_tls_ca = match explicit_ca {
            Some(ca) => Some(ca),
            None if xds_tls => Some(
                env.get("AWS_CA_BUNDLE")
                    .unwrap_or_else(|| SYSTEM_CA_FILE.to_owned()),
            ),
            None => None,
        };

        p.into_result()?;
        let node = node.ok_or_else(|| anyhow::anyhow!("no node id"))?;
        Ok(BootstrapConfig {
            node_id,
            node,
            cluster,
            xds_host,
            xds_port,
            xds_api,
            admin_address,
            admin_port,
            admin_access_log,
            initial_fetch_timeout_s,
            log_level,
            concurrency,
            stats_tags,
            statsd,
            stats_flush_interval_ms,
            tracing,
            stats_config,
            stats_sinks,
            extra_resources,
            sds_socket_path,
            token_file,
            xds_tls_ca,
            outlier_event_log,
            platform_info,
        })
    }

    /// A config for `node_id` against an xDS server, everything else at its default (tests
    /// and the demo).
    pub fn for_node(node_id: &str, xds_port: u16, admin_port: u16) -> anyhow::Result<Self> {
        let args = BootstrapArgs {
            node_id: Some(node_id.into()),
            xds_address: Some(format!("127.0.0.1:{xds_port}")),
            admin_port: Some(admin_port),
            ..Default::default()
        };
        Self::resolve(&args, &super::env::EnvMap::default())
    }

    /// The bootstrap as a JSON value (what [`render`] prints as YAML).
    pub fn to_value(&self) -> Value {
        let mut clusters = vec![xds_cluster(self)];
        let mut bootstrap = serde_json::Map::new();
        let (kind, kind_tag) = match self.node.kind {
            ProxyKind::VirtualNode => ("virtualNode", "appmesh.virtual_node"),
            ProxyKind::VirtualGateway => ("virtualGateway", "appmesh.virtual_gateway"),
        };
        let mut metadata = json!({
            "meshplane.mesh": self.node.mesh,
            "meshplane.resource_type": kind,
            "meshplane.resource_name": self.node.name,
            "meshplane.version": env!("CARGO_PKG_VERSION"),
        });
        if let Some(o) = &self.node.owner {
            metadata["meshplane.mesh_owner"] = json!(o);
        }
        if !self.platform_info.is_empty() {
            metadata["aws.appmesh.platformInfo"] = Value::Object(self.platform_info.clone());
        }
        bootstrap.insert(
            "node".into(),
            json!({ "id": self.node_id, "cluster": self.cluster, "metadata": metadata }),
        );
        bootstrap.insert(
            "admin".into(),
            json!({
                "access_log": [{
                    "name": "envoy.access_loggers.file",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                        "path": self.admin_access_log,
                    }
                }],
                "address": { "socket_address": {
                    "address": self.admin_address, "port_value": self.admin_port,
                }},
            }),
        );
        let api_type = match self.xds_api {
            XdsApi::Delta => "DELTA_GRPC",
            XdsApi::Sotw => "GRPC",
        };
        let fetch = format!("{}s", self.initial_fetch_timeout_s);
        bootstrap.insert(
            "dynamic_resources".into(),
            json!({
                "ads_config": {
                    "api_type": api_type,
                    "transport_api_version": "V3",
                    "set_node_on_first_message_only": true,
                    "grpc_services": [{ "envoy_grpc": { "cluster_name": XDS_CLUSTER } }],
                },
                "cds_config": { "ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": fetch },
                "lds_config": { "ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": fetch },
            }),
        );
        if let Some(path) = &self.outlier_event_log {
            bootstrap.insert(
                "cluster_manager".into(),
                json!({ "outlier_detection": { "event_log_path": path } }),
            );
        }
        bootstrap.insert(
            "layered_runtime".into(),
            json!({ "layers": [
                { "name": "static_layer_0", "static_layer": {
                    "envoy.features.enable_all_deprecated_features": true,
                    "re2.max_program_size.error_level": 1000,
                }},
                { "name": "admin_layer", "admin_layer": {} },
            ]}),
        );

        // Stats.
        let mut stats_config = serde_json::Map::new();
        if self.stats_tags {
            stats_config.insert(
                "stats_tags".into(),
                json!([
                    { "tag_name": "appmesh.mesh", "fixed_value": self.node.mesh },
                    { "tag_name": kind_tag, "fixed_value": self.node.name },
                ]),
            );
        }
        if let Some(Value::Object(extra)) = &self.stats_config {
            for (k, v) in extra {
                match (stats_config.get_mut(k), v) {
                    // Tag lists concatenate (ours first); anything else the file overrides.
                    (Some(Value::Array(ours)), Value::Array(theirs)) => {
                        ours.extend(theirs.iter().cloned())
                    }
                    _ => {
                        stats_config.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        if !stats_config.is_empty() {
            bootstrap.insert("stats_config".into(), Value::Object(stats_config));
        }
        let mut sinks = vec![];
        if let Some(t) = &self.statsd {
            let address = match t {
                StatsdTarget::Udp { address, port } => json!({ "socket_address": {
                    "protocol": "UDP", "address": address, "port_value": port,
                }}),
                StatsdTarget::Unix { path } => json!({ "pipe": { "path": path } }),
            };
            sinks.push(json!({
                "name": "envoy.stat_sinks.dog_statsd",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.metrics.v3.DogStatsdSink",
                    "address": address,
                },
            }));
        }
        sinks.extend(self.stats_sinks.iter().cloned());
        if !sinks.is_empty() {
            bootstrap.insert("stats_sinks".into(), Value::Array(sinks));
        }
        if let Some(ms) = self.stats_flush_interval_ms {
            bootstrap.insert(
                "stats_flush_interval".into(),
                json!(format!("{}.{:03}s", ms / 1000, ms % 1000)),
            );
        }

        // Tracing: the provider lives in the bootstrap; every HTTP connection manager the
        // control plane sends carries `tracing`, which falls back to it (Envoy 1.40 still
        // honours the deprecated field; the runtime layer allows deprecated features).
        match &self.tracing {
            None => {}
            Some(Tracing::Xray {
                address,
                port,
                segment_name,
                sampling,
            }) => {
                let manifest = match sampling {
                    XraySampling::Rate(rate) => json!({ "inline_string": json!({
                        "version": 2,
                        "rules": [],
                        "default": { "fixed_target": 1, "rate": rate },
                    }).to_string() }),
                    XraySampling::Manifest(path) => json!({ "filename": path }),
                };
                let name_key = match self.node.kind {
                    ProxyKind::VirtualNode => "virtual_node_name",
                    ProxyKind::VirtualGateway => "virtual_gateway_name",
                };
                bootstrap.insert(
                    "tracing".into(),
                    json!({ "http": {
                        "name": "envoy.tracers.xray",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.config.trace.v3.XRayConfig",
                            "daemon_endpoint": {
                                "protocol": "UDP", "address": address, "port_value": port,
                            },
                            "segment_name": segment_name,
                            "sampling_rule_manifest": manifest,
                            "segment_fields": {
                                "origin": "AWS::AppMesh::Proxy",
                                "aws": { "app_mesh": {
                                    "mesh_name": self.node.mesh,
                                    name_key: self.node.name,
                                }},
                            },
                        },
                    }}),
                );
            }
            Some(Tracing::Datadog {
                address,
                port,
                service,
            }) => {
                clusters.push(plain_cluster(DATADOG_CLUSTER, address, *port, false));
                bootstrap.insert(
                    "tracing".into(),
                    json!({ "http": {
                        "name": "envoy.tracers.datadog",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.config.trace.v3.DatadogConfig",
                            "collector_cluster": DATADOG_CLUSTER,
                            "service_name": service,
                        },
                    }}),
                );
            }
            Some(Tracing::Zipkin {
                address,
                port,
                json,
            }) => {
                clusters.push(plain_cluster(JAEGER_CLUSTER, address, *port, false));
                bootstrap.insert(
                    "tracing".into(),
                    json!({ "http": {
                        "name": "envoy.tracers.zipkin",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                            "collector_cluster": JAEGER_CLUSTER,
                            "collector_endpoint": "/api/v2/spans",
                            "collector_endpoint_version": if *json { "HTTP_JSON" } else { "HTTP_PROTO" },
                            "shared_span_context": false,
                        },
                    }}),
                );
            }
            Some(Tracing::OpenTelemetry { address, port }) => {
                clusters.push(plain_cluster(OTEL_CLUSTER, address, *port, true));
                bootstrap.insert(
                    "tracing".into(),
                    json!({ "http": {
                        "name": "envoy.tracers.opentelemetry",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                            "grpc_service": { "envoy_grpc": { "cluster_name": OTEL_CLUSTER } },
                            "service_name": self.cluster,
                        },
                    }}),
                );
            }
        }

        if let Some(path) = &self.sds_socket_path {
            let mut c = json!({
                "name": SDS_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {
                    "cluster_name": SDS_CLUSTER,
                    "endpoints": [{ "lb_endpoints": [{ "endpoint": {
                        "address": { "pipe": { "path": path } }
                    }}]}],
                },
            });
            c["typed_extension_protocol_options"] = http2_options(None);
            clusters.push(c);
        }

        let mut static_resources = serde_json::Map::new();
        if let Some(Value::Object(extra)) = &self.extra_resources {
            for (k, v) in extra {
                let list = v.as_array().cloned().unwrap_or_default();
                if k == "clusters" {
                    clusters.extend(list);
                } else {
                    static_resources.insert(k.clone(), Value::Array(list));
                }
            }
        }
        static_resources.insert("clusters".into(), Value::Array(clusters));
        bootstrap.insert("static_resources".into(), Value::Object(static_resources));
        Value::Object(bootstrap)
    }
}

/// Renders the bootstrap as YAML (what `meshplane envoy bootstrap` prints).
pub fn render(cfg: &BootstrapConfig) -> String {
    let body = yaml_serde::to_string(&cfg.to_value()).unwrap_or_default();
    format!(
        "# Envoy bootstrap generated by meshplane {} for {}\n{body}",
        env!("CARGO_PKG_VERSION"),
        cfg.node_id
    )
}

// === impl LogLevel ===

impl LogLevel {
    /// Parses an `ENVOY_LOG_LEVEL` value.
    pub fn parse(name: &str, v: &str) -> Result<LogLevel, String> {
        Ok(match v.trim().to_ascii_lowercase().as_str() {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warning" | "warn" => LogLevel::Warning,
            "error" => LogLevel::Error,
            "critical" => LogLevel::Critical,
            "off" => LogLevel::Off,
            _ => {
                return Err(format!(
                    "{name}: expected trace, debug, info, warning, error, critical or off, got `{v}`"
                ));
            }
        })
    }

    /// The value for Envoy's `-l` flag.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
            LogLevel::Off => "off",
        }
    }
}

/// The tracer enabled by `var` (one of [`TRACER_VARIABLES`]) with its own variables.
fn resolve_tracer(
    p: &mut Problems,
    env: &dyn Strings,
    var: &str,
    node: Option<&NodeId>,
) -> Option<Tracing> {
    let resource = node
        .map(|n| format!("{}/{}", n.mesh, n.name))
        .unwrap_or_default();
    match var {
        "ENABLE_ENVOY_XRAY_TRACING" => {
            let default_port = opt(p, env, "XRAY_DAEMON_PORT", parse_port).unwrap_or(2000);
            let (address, port) = match env.get("AWS_XRAY_DAEMON_ADDRESS") {
                None => ("127.0.0.1".to_owned(), default_port),
                Some(v) => take(p, parse_xray_daemon(&v, default_port))?,
            };
            let segment_name = env.get("XRAY_SEGMENT_NAME").unwrap_or(resource);
            let sampling = match env.get("XRAY_SAMPLING_RULE_MANIFEST") {
                Some(path) if path.starts_with('/') => XraySampling::Manifest(path),
                Some(path) => {
                    p.push(format!(
                        "XRAY_SAMPLING_RULE_MANIFEST: `{path}` is not an absolute path"
                    ));
                    return None;
                }
                None => {
                    let raw = env
                        .get("XRAY_SAMPLING_RATE")
                        .unwrap_or_else(|| XRAY_DEFAULT_SAMPLING_RATE.into());
                    match raw.trim().parse::<f64>() {
                        Ok(r) if (0.0..=1.0).contains(&r) => XraySampling::Rate(r),
                        _ => {
                            p.push(format!(
                                "XRAY_SAMPLING_RATE: expected a decimal between 0 and 1, got \
                                 `{raw}`"
                            ));
                            return None;
                        }
                    }
                }
            };
            Some(Tracing::Xray {
                address,
                port,
                segment_name,
                sampling,
            })
        }
        "ENABLE_ENVOY_DATADOG_TRACING" => {
            let port = opt(p, env, "DATADOG_TRACER_PORT", parse_port).unwrap_or(8126);
            let address = addr(p, env, "DATADOG_TRACER_ADDRESS");
            let service = env
                .get("DD_SERVICE")
                .unwrap_or_else(|| format!("envoy-{resource}"));
            Some(Tracing::Datadog {
                address,
                port,
                service,
            })
        }
        "ENABLE_ENVOY_JAEGER_TRACING" => {
            let port = opt(p, env, "JAEGER_TRACER_PORT", parse_port).unwrap_or(9411);
            let address = addr(p, env, "JAEGER_TRACER_ADDRESS");
            let json = match env.get("JAEGER_TRACER_VERSION").as_deref() {
                None => false,
                Some(v) if v.eq_ignore_ascii_case("proto") => false,
                Some(v) if v.eq_ignore_ascii_case("json") => true,
                Some(v) => {
                    p.push(format!(
                        "JAEGER_TRACER_VERSION: expected PROTO or JSON, got `{v}`"
                    ));
                    false
                }
            };
            Some(Tracing::Zipkin {
                address,
                port,
                json,
            })
        }
        _ => {
            let port = opt(p, env, "OTEL_COLLECTOR_PORT", parse_port).unwrap_or(4317);
            let address = addr(p, env, "OTEL_COLLECTOR_ADDRESS");
            Some(Tracing::OpenTelemetry { address, port })
        }
    }
}

/// Parses `AWS_XRAY_DAEMON_ADDRESS`: an IP (the port from `XRAY_DAEMON_PORT`), `ip:port`, or
/// the X-Ray SDK form `tcp:ip:port udp:ip:port` (Envoy sends segments over UDP, so the `udp:`
/// member is used). Names are refused: Envoy's X-Ray tracer takes an IP address only.
fn parse_xray_daemon(v: &str, default_port: u16) -> Result<(String, u16), String> {
    const NAME: &str = "AWS_XRAY_DAEMON_ADDRESS";
    let t = v.trim();
    let member = if t.contains(char::is_whitespace) {
        t.split_whitespace()
            .find_map(|m| m.strip_prefix("udp:"))
            .ok_or_else(|| format!("{NAME}: `{v}` has no udp: address"))?
    } else {
        t.strip_prefix("udp:").unwrap_or(t)
    };
    let (host, port) = if member.parse::<std::net::IpAddr>().is_ok() {
        (member.to_owned(), default_port)
    } else {
        parse_host_port(NAME, member)?
    };
    if host.parse::<std::net::IpAddr>().is_err() {
        return Err(format!(
            "{NAME}: `{host}` is not an IP address (Envoy's X-Ray tracer does not resolve names)"
        ));
    }
    Ok((host, port))
}

fn take<T>(p: &mut Problems, r: Result<T, String>) -> Option<T> {
    r.map_err(|e| p.push(e)).ok()
}

fn opt<T>(
    p: &mut Problems,
    env: &dyn Strings,
    name: &str,
    parse: impl Fn(&str, &str) -> Result<T, String>,
) -> Option<T> {
    let v = env.get(name)?;
    take(p, parse(name, &v))
}

fn addr(p: &mut Problems, env: &dyn Strings, name: &str) -> String {
    match env.get(name) {
        None => "127.0.0.1".into(),
        Some(v) => {
            let v = v.trim().to_owned();
            take(p, check_host(name, &v));
            v
        }
    }
}

/// Unwraps `{key: inner}` into `inner`, leaving other shapes as they are.
fn unwrap_key(v: Value, key: &str) -> Value {
    match v {
        Value::Object(mut m) if m.len() == 1 && m.contains_key(key) => {
            m.remove(key).unwrap_or(Value::Null)
        }
        other => other,
    }
}

fn http2_options(keepalive: Option<(u64, u64)>) -> Value {
    let mut h2 = json!({});
    if let Some((interval, timeout)) = keepalive {
        h2["connection_keepalive"] = json!({
            "interval": format!("{interval}s"),
            "timeout": format!("{timeout}s"),
        });
    }
    json!({ "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": { "http2_protocol_options": h2 },
    }})
}

fn discovery_type(host: &str) -> &'static str {
    if host.parse::<std::net::IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    }
}

fn plain_cluster(name: &str, host: &str, port: u16, http2: bool) -> Value {
    let mut c = json!({
        "name": name,
        "type": discovery_type(host),
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": { "socket_address": {
                "address": host, "port_value": port,
            }}}}]}],
        },
    });
    if http2 {
        c["typed_extension_protocol_options"] = http2_options(None);
    }
    c
}

fn xds_cluster(cfg: &BootstrapConfig) -> Value {
    let mut c = plain_cluster(XDS_CLUSTER, &cfg.xds_host, cfg.xds_port, false);
    let mut options = http2_options(Some((XDS_KEEPALIVE_INTERVAL_S, XDS_KEEPALIVE_TIMEOUT_S)));
    if let Some(file) = &cfg.token_file {
        // The token reaches Envoy through SDS from a file, not as a static value: Envoy
        // re-reads the file when it is replaced (rename), and the upstream credential
        // injector puts the current value on each new xDS stream. gRPC call credentials
        // (google_grpc) would not do: gRPC drops them on a plaintext channel.
        options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"] = json!([
            {
                "name": "envoy.filters.http.credential_injector",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
                    "overwrite": true,
                    "credential": {
                        "name": "envoy.http.injected_credentials.generic",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic",
                            "credential": {
                                "name": TOKEN_SECRET_NAME,
                                "sds_config": { "path_config_source": { "path": file } },
                            },
                            "header": "authorization",
                        },
                    },
                },
            },
            {
                "name": "envoy.filters.http.upstream_codec",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec",
                },
            },
        ]);
    }
    c["typed_extension_protocol_options"] = options;
    if let Some(ca) = &cfg.xds_tls_ca {
        // Envoy checks the chain against `trusted_ca` but the name only when told to: the
        // SAN must be the host dialled (meshplane's CA puts the listen IPs, localhost and the
        // hostname in its server certificate). SNI carries DNS names only (RFC 6066).
        let is_ip = cfg.xds_host.parse::<std::net::IpAddr>().is_ok();
        let san_type = if is_ip { "IP_ADDRESS" } else { "DNS" };
        let mut tls = json!({
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "validation_context": {
                    "trusted_ca": { "filename": ca },
                    "match_typed_subject_alt_names": [
                        { "san_type": san_type, "matcher": { "exact": cfg.xds_host } },
                    ],
                },
            },
        });
        if !is_ip {
            tls["sni"] = json!(cfg.xds_host);
        }
        c["transport_socket"] =
            json!({ "name": "envoy.transport_sockets.tls", "typed_config": tls });
    }
    c["upstream_connection_options"] = json!({ "tcp_keepalive": {
        "keepalive_time": XDS_KEEPALIVE_INTERVAL_S,
        "keepalive_interval": XDS_KEEPALIVE_INTERVAL_S,
        "keepalive_probes": 3,
    }});
    c
}

#[cfg(test)]
mod tests;
