//! Simulated Envoys: ADS streams (state of the world or delta) that subscribe, follow
//! CDS → EDS and LDS → RDS as Envoy does, ACK with version and nonce (or NACK route updates
//! when told to), reconnect with jittered back-off, and record what they hold.
//!
//! ```text
//!  Fleet ──spawn──▶ one task per proxy ──stream──▶ tonic Channel (one HTTP/2 connection
//!    │                    │                        per `streams_per_conn` proxies)
//!    │                    ▼ on every ACK
//!    └──── views[i]: Mutex<ProxyView> (held versions, RDS weights per virtual host,
//!                                        sync time, bytes and responses per type)
//! ```
//!
//! The coordinator only reads the views; it never talks to the streams.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Node, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, route, route_action};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;

use crate::rng::Rng;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// Short type names in wire order, indexes of [`ProxyView`] arrays.
pub const TYPES: [&str; 4] = ["cds", "eds", "lds", "rds"];
const URLS: [&str; 4] = [CDS, EDS, LDS, RDS];

/// First reconnect delay; doubled per failed attempt up to [`BACKOFF_MAX`], full jitter
/// (Envoy's default xDS back-off is 500 ms base, 30 s max; a shorter cap keeps the bench
/// measuring the control plane, not the clients' sleep).
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// SotW or delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Sotw,
    Delta,
}

/// Weighted clusters of one virtual host, sorted by cluster name.
pub type Weights = Vec<(String, u32)>;

/// Endpoints of one EDS cluster as sorted `ip:port` strings; a host whose health status is
/// neither HEALTHY nor UNKNOWN carries it as a suffix (`10.0.0.1:8080 UNHEALTHY`).
pub type Endpoints = Vec<String>;

/// What one simulated proxy holds (only ACKed content) and what it saw.
#[derive(Default, Debug)]
pub struct ProxyView {
    /// Streams opened so far (1 on the first connection).
    pub streams: u64,
    /// When the current stream finished its initial sync (`None` while syncing).
    pub synced_at: Option<Instant>,
    /// Version last ACKed per type (SotW `version_info`, delta `system_version_info`).
    pub acked_version: [Option<String>; 4],
    /// RDS weights per virtual host (virtual service name) of the ACKed route configurations.
    pub routes: BTreeMap<String, Weights>,
    /// When the ACKed weights of a virtual host last changed.
    pub route_changed_at: HashMap<String, Instant>,
    /// Endpoints per EDS cluster of the ACKed cluster load assignments.
    pub endpoints: BTreeMap<String, Endpoints>,
    /// When the ACKed endpoints of a cluster last changed.
    pub endpoints_changed_at: HashMap<String, Instant>,
    /// ACKed EDS responses after the initial sync that changed no endpoint the proxy held
    /// (a push that was not needed).
    pub eds_noop: u64,
    /// Responses received per type.
    pub responses: [u64; 4],
    /// Encoded resource bytes received per type.
    pub bytes: [u64; 4],
    /// Bytes received until the first sync.
    pub initial_bytes: u64,
    /// NACKs sent.
    pub nacks: u64,
    /// Last stream error.
    pub last_error: Option<String>,
}

/// One proxy's identity and behaviour.
#[derive(Clone, Debug)]
pub struct ProxySpec {
    pub node_id: String,
    pub flavor: Flavor,
    /// NACK every route update after the initial sync.
    pub nack_routes: bool,
    /// Node token presented as `authorization: Bearer …` metadata on every stream (a server
    /// with `--auth sigv4` refuses streams without one).
    pub token: Option<String>,
}

/// The simulated fleet.
pub struct Fleet {
    pub specs: Vec<ProxySpec>,
    pub views: Arc<Vec<Mutex<ProxyView>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What a resource contributes to the proxy's view.
#[derive(Clone, Debug)]
enum Info {
    None,
    /// A cluster's EDS service name (EDS clusters only).
    Eds(Option<String>),
    /// A listener's RDS route configuration names.
    Rds(Vec<String>),
    /// A route configuration's virtual hosts.
    Hosts(Vec<(String, Weights)>),
    /// A cluster load assignment's endpoints.
    Endpoints(Endpoints),
}

/// Per-type state of one stream (held resources survive reconnects, as in Envoy).
#[derive(Default, Clone)]
struct Held {
    /// name → (version, info). SotW versions are empty.
    resources: BTreeMap<String, (String, Info)>,
    version: Option<String>,
}

// === impl Fleet ===

impl Fleet {
    /// Starts one task per proxy, `per_conn` streams per HTTP/2 connection. Each task
    /// starts after `i * ramp` (spread the connects).
    pub fn start(
        xds: SocketAddr,
        specs: Vec<ProxySpec>,
        per_conn: usize,
        ramp: Duration,
        seed: u64,
    ) -> anyhow::Result<Fleet> {
        let views: Arc<Vec<Mutex<ProxyView>>> =
            Arc::new(specs.iter().map(|_| Mutex::default()).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::with_capacity(specs.len());
        let mut channel = None;
        for (i, spec) in specs.iter().enumerate() {
            if i % per_conn.max(1) == 0 {
                channel = Some(
                    tonic::transport::Endpoint::from_shared(format!("http://{xds}"))?
                        .connect_timeout(Duration::from_secs(5))
                        .tcp_nodelay(true)
                        .initial_connection_window_size(Some(16 << 20))
                        .connect_lazy(),
                );
            }
            let ch = channel.clone().expect("channel set at i = 0");
            let spec = spec.clone();
            let views = views.clone();
            let stop = stop.clone();
            let delay = ramp * i as u32;
            let rng = Rng::new(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                run_proxy(i, spec, ch, views, stop, rng).await;
            }));
        }
        Ok(Fleet {
            specs,
            views,
            stop,
            tasks,
        })
    }

    /// Number of proxies whose current stream is synced (and that synced after `since`).
    pub fn synced_since(&self, since: Option<Instant>) -> usize {
        self.views
            .iter()
            .filter(|v| {
                let v = v.lock().unwrap_or_else(|e| e.into_inner());
                v.synced_at.is_some_and(|t| since.is_none_or(|s| t >= s))
            })
            .count()
    }

    /// Latest sync time over all proxies synced after `since`.
    pub fn last_sync(&self, since: Option<Instant>) -> Option<Instant> {
        self.views
            .iter()
            .filter_map(|v| v.lock().unwrap_or_else(|e| e.into_inner()).synced_at)
            .filter(|t| since.is_none_or(|s| *t >= s))
            .max()
    }

    /// Runs `f` on proxy `i`'s view.
    pub fn with<R>(&self, i: usize, f: impl FnOnce(&ProxyView) -> R) -> R {
        f(&self.views[i].lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Stops every stream.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn run_proxy(
    idx: usize,
    spec: ProxySpec,
    channel: Channel,
    views: Arc<Vec<Mutex<ProxyView>>>,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
) {
    let mut held: [Held; 4] = Default::default();
    let mut attempt = 0u32;
    while !stop.load(Ordering::Relaxed) {
        {
            let mut v = views[idx].lock().unwrap_or_else(|e| e.into_inner());
            v.streams += 1;
            v.synced_at = None;
        }
        let started = Instant::now();
        let result = match spec.flavor {
            Flavor::Sotw => sotw(idx, &spec, channel.clone(), &views, &mut held).await,
            Flavor::Delta => delta(idx, &spec, channel.clone(), &views, &mut held).await,
        };
        if let Err(e) = result {
            views[idx]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .last_error = Some(e);
        }
        // A stream that lived a while resets the back-off.
        if started.elapsed() > Duration::from_secs(5) {
            attempt = 0;
        }
        let cap = BACKOFF_BASE
            .saturating_mul(1 << attempt.min(8))
            .min(BACKOFF_MAX);
        attempt += 1;
        let wait = cap.mul_f64(rng.unit());
        tokio::time::sleep(wait).await;
    }
}

/// The stream's request, carrying the proxy's node token as Envoy's credential injector
/// does (`authorization: Bearer …`).
fn with_token<S>(stream: S, spec: &ProxySpec) -> Result<tonic::Request<S>, String> {
    let mut req = tonic::Request::new(stream);
    if let Some(token) = &spec.token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|e| format!("token is not valid metadata: {e}"))?;
        req.metadata_mut().insert("authorization", value);
    }
    Ok(req)
}

fn node(id: &str) -> Node {
    Node {
        id: id.to_owned(),
        cluster: "bench".into(),
        ..Default::default()
    }
}

fn ty_index(url: &str) -> Option<usize> {
    URLS.iter().position(|u| *u == url)
}

/// Names the proxy must subscribe to for EDS (from clusters) and RDS (from listeners).
fn dependent_names(held: &[Held; 4], ty: usize) -> BTreeSet<String> {
    held[ty]
        .resources
        .values()
        .flat_map(|(_, info)| match info {
            Info::Eds(Some(n)) => vec![n.clone()],
            Info::Rds(names) => names.clone(),
            _ => vec![],
        })
        .collect()
}

fn decode_info(ty: usize, any: &Any) -> Info {
    match ty {
        0 => match Cluster::decode(&any.value[..]) {
            Ok(c) => {
                let eds = matches!(
                    c.cluster_discovery_type,
                    Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32
                );
                if eds {
                    let service = c
                        .eds_cluster_config
                        .map(|e| e.service_name)
                        .filter(|s| !s.is_empty());
                    Info::Eds(Some(service.unwrap_or(c.name)))
                } else {
                    Info::Eds(None)
                }
            }
            Err(_) => Info::None,
        },
        1 => match ClusterLoadAssignment::decode(&any.value[..]) {
            Ok(cla) => {
                let mut eps: Endpoints = Vec::new();
                for lb in cla.endpoints.iter().flat_map(|l| &l.lb_endpoints) {
                    let Some(lb_endpoint::HostIdentifier::Endpoint(e)) = &lb.host_identifier else {
                        continue;
                    };
                    let Some(address::Address::SocketAddress(sa)) =
                        e.address.as_ref().and_then(|a| a.address.as_ref())
                    else {
                        continue;
                    };
                    let port = match sa.port_specifier {
                        Some(socket_address::PortSpecifier::PortValue(p)) => p,
                        _ => 0,
                    };
                    let mut ep = format!("{}:{port}", sa.address);
                    let health =
                        HealthStatus::try_from(lb.health_status).unwrap_or(HealthStatus::Unknown);
                    if !matches!(health, HealthStatus::Healthy | HealthStatus::Unknown) {
                        ep.push(' ');
                        ep.push_str(health.as_str_name());
                    }
                    eps.push(ep);
                }
                eps.sort();
                Info::Endpoints(eps)
            }
            Err(_) => Info::None,
        },
        2 => match Listener::decode(&any.value[..]) {
            Ok(l) => {
                let mut names = Vec::new();
                for fc in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
                    for f in &fc.filters {
                        let Some(filter::ConfigType::TypedConfig(tc)) = &f.config_type else {
                            continue;
                        };
                        if tc.type_url != HCM {
                            continue;
                        }
                        if let Ok(h) = HttpConnectionManager::decode(&tc.value[..])
                            && let Some(http_connection_manager::RouteSpecifier::Rds(r)) =
                                h.route_specifier
                        {
                            names.push(r.route_config_name);
                        }
                    }
                }
                Info::Rds(names)
            }
            Err(_) => Info::None,
        },
        3 => match RouteConfiguration::decode(&any.value[..]) {
            Ok(rc) => Info::Hosts(
                rc.virtual_hosts
                    .into_iter()
                    .map(|vh| {
                        let mut w: Weights = Vec::new();
                        for r in vh.routes {
                            if let Some(route::Action::Route(a)) = r.action {
                                match a.cluster_specifier {
                                    Some(route_action::ClusterSpecifier::Cluster(c)) => {
                                        w.push((c, 1))
                                    }
                                    Some(route_action::ClusterSpecifier::WeightedClusters(wc)) => {
                                        for c in wc.clusters {
                                            w.push((c.name, c.weight.map_or(0, |x| x.value)));
                                        }
                                    }
                                    _ => {}
                                }
                            }
                        }
                        w.sort();
                        (vh.name, w)
                    })
                    .collect(),
            ),
            Err(_) => Info::None,
        },
        _ => Info::None,
    }
}

fn name_of(ty: usize, any: &Any) -> String {
    let v = &any.value[..];
    match ty {
        0 => Cluster::decode(v).map(|c| c.name).unwrap_or_default(),
        1 => ClusterLoadAssignment::decode(v)
            .map(|c| c.cluster_name)
            .unwrap_or_default(),
        2 => Listener::decode(v).map(|l| l.name).unwrap_or_default(),
        3 => RouteConfiguration::decode(v)
            .map(|r| r.name)
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Applies an ACKed change of `held` to the shared view (routes, sync state).
fn commit(
    view: &Mutex<ProxyView>,
    held: &[Held; 4],
    ty: usize,
    version: &str,
    acked: &[bool; 4],
    now: Instant,
) {
    let mut v = view.lock().unwrap_or_else(|e| e.into_inner());
    v.acked_version[ty] = Some(version.to_owned());
    if ty == 3 {
        let mut next: BTreeMap<String, Weights> = BTreeMap::new();
        for (_, info) in held[3].resources.values() {
            if let Info::Hosts(hosts) = info {
                for (name, w) in hosts {
                    next.insert(name.clone(), w.clone());
                }
            }
        }
        for (name, w) in &next {
            if v.routes.get(name) != Some(w) {
                v.route_changed_at.insert(name.clone(), now);
            }
        }
        v.routes = next;
    }
    if ty == 1 {
        let mut next: BTreeMap<String, Endpoints> = BTreeMap::new();
        for (name, (_, info)) in &held[1].resources {
            if let Info::Endpoints(eps) = info {
                next.insert(name.clone(), eps.clone());
            }
        }
        let mut changed = false;
        for (name, eps) in &next {
            if v.endpoints.get(name) != Some(eps) {
                v.endpoints_changed_at.insert(name.clone(), now);
                changed = true;
            }
        }
        changed |= v.endpoints.keys().any(|n| !next.contains_key(n));
        if !changed && v.synced_at.is_some() {
            v.eds_noop += 1;
        }
        v.endpoints = next;
    }
    if v.synced_at.is_none() {
        // Synced: CDS and LDS ACKed, and EDS/RDS ACKed when the proxy needs them.
        let eds_needed = !dependent_names(held, 0).is_empty();
        let rds_needed = !dependent_names(held, 2).is_empty();
        let ok = |t: usize| acked[t];
        let rds_complete = dependent_names(held, 2)
            .iter()
            .all(|n| held[3].resources.contains_key(n));
        if ok(0) && ok(2) && (!eds_needed || ok(1)) && (!rds_needed || (ok(3) && rds_complete)) {
            v.synced_at = Some(now);
            if v.streams == 1 {
                v.initial_bytes = v.bytes.iter().sum();
            }
        }
    }
}

// --- state of the world -----------------------------------------------------------------

async fn sotw(
    idx: usize,
    spec: &ProxySpec,
    channel: Channel,
    views: &Arc<Vec<Mutex<ProxyView>>>,
    held: &mut [Held; 4],
) -> Result<(), String> {
    let view = &views[idx];
    let (tx, rx) = mpsc::unbounded_channel::<DiscoveryRequest>();
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let mut subscribed = [false; 4];
    let mut names: [BTreeSet<String>; 4] = Default::default();
    // Envoy re-sends, per type, the version it holds and its subscription.
    let mut first = true;
    let send = |req: DiscoveryRequest, first: &mut bool| {
        let mut req = req;
        if *first {
            req.node = Some(node(&spec.node_id));
            *first = false;
        }
        let _ = tx.send(req);
    };
    for t in [0usize, 2] {
        subscribed[t] = true;
        send(
            DiscoveryRequest {
                type_url: URLS[t].into(),
                version_info: held[t].version.clone().unwrap_or_default(),
                ..Default::default()
            },
            &mut first,
        );
    }
    let mut stream = client
        .stream_aggregated_resources(with_token(UnboundedReceiverStream::new(rx), spec)?)
        .await
        .map_err(|s| format!("open: {s}"))?
        .into_inner();
    let mut initial_synced = false;
    let mut acked = [false; 4];
    loop {
        let resp: DiscoveryResponse = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return Err("stream ended".into()),
            Err(s) => return Err(format!("stream: {s}")),
        };
        let now = Instant::now();
        let Some(t) = ty_index(&resp.type_url) else {
            continue;
        };
        let bytes: usize = resp.resources.iter().map(|a| a.value.len()).sum();
        {
            let mut v = view.lock().unwrap_or_else(|e| e.into_inner());
            v.responses[t] += 1;
            v.bytes[t] += bytes as u64;
            initial_synced = initial_synced || v.synced_at.is_some();
        }
        let nack = spec.nack_routes && t == 3 && initial_synced;
        if nack {
            view.lock().unwrap_or_else(|e| e.into_inner()).nacks += 1;
            send(
                DiscoveryRequest {
                    type_url: resp.type_url.clone(),
                    version_info: held[t].version.clone().unwrap_or_default(),
                    response_nonce: resp.nonce.clone(),
                    resource_names: names[t].iter().cloned().collect(),
                    error_detail: Some(RpcStatus {
                        code: 13,
                        message: "bench: simulated rejection".into(),
                        details: vec![],
                    }),
                    ..Default::default()
                },
                &mut first,
            );
            continue;
        }
        // Accept. CDS and LDS responses are the full state of the type; EDS and RDS ones
        // may name only some of the subscribed resources, and Envoy keeps the others.
        let mut next = if t == 1 || t == 3 {
            let mut keep = std::mem::take(&mut held[t].resources);
            keep.retain(|n, _| names[t].contains(n));
            keep
        } else {
            BTreeMap::new()
        };
        for any in &resp.resources {
            next.insert(name_of(t, any), (String::new(), decode_info(t, any)));
        }
        held[t].resources = next;
        held[t].version = Some(resp.version_info.clone());
        send(
            DiscoveryRequest {
                type_url: resp.type_url.clone(),
                version_info: resp.version_info.clone(),
                response_nonce: resp.nonce.clone(),
                resource_names: names[t].iter().cloned().collect(),
                ..Default::default()
            },
            &mut first,
        );
        // CDS → EDS names, LDS → RDS names (Envoy subscribes after applying the parent).
        if t == 0 || t == 2 {
            let dep = t + 1;
            let want = dependent_names(held, t);
            if want != names[dep] || (!subscribed[dep] && !want.is_empty()) {
                names[dep] = want;
                let version = held[dep].version.clone().unwrap_or_default();
                subscribed[dep] = true;
                send(
                    DiscoveryRequest {
                        type_url: URLS[dep].into(),
                        version_info: version,
                        resource_names: names[dep].iter().cloned().collect(),
                        response_nonce: String::new(),
                        ..Default::default()
                    },
                    &mut first,
                );
            }
        }
        acked[t] = true;
        commit(view, held, t, &resp.version_info, &acked, now);
    }
}

// --- delta ------------------------------------------------------------------------------

async fn delta(
    idx: usize,
    spec: &ProxySpec,
    channel: Channel,
    views: &Arc<Vec<Mutex<ProxyView>>>,
    held: &mut [Held; 4],
) -> Result<(), String> {
    let view = &views[idx];
    let (tx, rx) = mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let mut subscribed = [false; 4];
    let mut names: [BTreeSet<String>; 4] = Default::default();
    let mut first = true;
    let send = |req: DeltaDiscoveryRequest, first: &mut bool| {
        let mut req = req;
        if *first {
            req.node = Some(node(&spec.node_id));
            *first = false;
        }
        let _ = tx.send(req);
    };
    let initial = |h: &Held| -> HashMap<String, String> {
        h.resources
            .iter()
            .map(|(n, (v, _))| (n.clone(), v.clone()))
            .collect()
    };
    for t in [0usize, 2] {
        subscribed[t] = true;
        send(
            DeltaDiscoveryRequest {
                type_url: URLS[t].into(),
                initial_resource_versions: initial(&held[t]),
                ..Default::default()
            },
            &mut first,
        );
    }
    // Named types held from an earlier stream are re-subscribed with their versions.
    for t in [1usize, 3] {
        let want = dependent_names(held, t - 1);
        if !want.is_empty() {
            subscribed[t] = true;
            names[t] = want;
            send(
                DeltaDiscoveryRequest {
                    type_url: URLS[t].into(),
                    resource_names_subscribe: names[t].iter().cloned().collect(),
                    initial_resource_versions: initial(&held[t]),
                    ..Default::default()
                },
                &mut first,
            );
        }
    }
    let mut stream = client
        .delta_aggregated_resources(with_token(UnboundedReceiverStream::new(rx), spec)?)
        .await
        .map_err(|s| format!("open: {s}"))?
        .into_inner();
    let mut initial_synced = false;
    let mut acked = [false; 4];
    loop {
        let resp: DeltaDiscoveryResponse = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return Err("stream ended".into()),
            Err(s) => return Err(format!("stream: {s}")),
        };
        let now = Instant::now();
        let Some(t) = ty_index(&resp.type_url) else {
            continue;
        };
        let bytes: usize = resp
            .resources
            .iter()
            .filter_map(|r| r.resource.as_ref())
            .map(|a| a.value.len())
            .sum();
        {
            let mut v = view.lock().unwrap_or_else(|e| e.into_inner());
            v.responses[t] += 1;
            v.bytes[t] += bytes as u64;
            initial_synced = initial_synced || v.synced_at.is_some();
        }
        if spec.nack_routes && t == 3 && initial_synced && !resp.resources.is_empty() {
            view.lock().unwrap_or_else(|e| e.into_inner()).nacks += 1;
            send(
                DeltaDiscoveryRequest {
                    type_url: resp.type_url.clone(),
                    response_nonce: resp.nonce.clone(),
                    error_detail: Some(RpcStatus {
                        code: 13,
                        message: "bench: simulated rejection".into(),
                        details: vec![],
                    }),
                    ..Default::default()
                },
                &mut first,
            );
            continue;
        }
        for r in &resp.resources {
            let Some(any) = &r.resource else { continue };
            held[t]
                .resources
                .insert(r.name.clone(), (r.version.clone(), decode_info(t, any)));
        }
        for name in &resp.removed_resources {
            held[t].resources.remove(name);
        }
        held[t].version = Some(resp.system_version_info.clone());
        send(
            DeltaDiscoveryRequest {
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce.clone(),
                ..Default::default()
            },
            &mut first,
        );
        if t == 0 || t == 2 {
            let dep = t + 1;
            let want = dependent_names(held, t);
            if want != names[dep] {
                let sub: Vec<String> = want.difference(&names[dep]).cloned().collect();
                let unsub: Vec<String> = names[dep].difference(&want).cloned().collect();
                for n in &unsub {
                    held[dep].resources.remove(n);
                }
                names[dep] = want;
                subscribed[dep] = true;
                send(
                    DeltaDiscoveryRequest {
                        type_url: URLS[dep].into(),
                        resource_names_subscribe: sub,
                        resource_names_unsubscribe: unsub,
                        ..Default::default()
                    },
                    &mut first,
                );
            }
        }
        acked[t] = true;
        commit(view, held, t, &resp.system_version_info, &acked, now);
    }
}
