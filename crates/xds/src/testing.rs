//! Test support (feature `test-util`): an ADS server on `127.0.0.1:0`,
//! scripted ADS clients that play Envoy (SotW and delta), and Envoy resource
//! fixtures. Helpers panic with a message on failure; they are for tests only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, Node, SocketAddress,
    address, config_source, data_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteConfiguration, RouteMatch, VirtualHost, route, route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use envoy_types::util::pack_any;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Streaming;

use crate::{ResourceType, SnapshotCache, SnapshotSource, XdsServer, XdsServerConfig};

/// How long `recv` waits before failing the test.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// An [`XdsServer`] serving on `127.0.0.1:0`; shut down on drop.
pub struct TestServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The server (for `status()` and `subscribe_events()`).
    pub server: XdsServer,
    shutdown: Option<oneshot::Sender<()>>,
}

/// A scripted state-of-the-world ADS client.
pub struct SotwClient {
    node_id: String,
    node_sent: bool,
    tx: mpsc::UnboundedSender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

/// A scripted delta ADS client.
pub struct DeltaClient {
    node_id: String,
    node_sent: bool,
    tx: mpsc::UnboundedSender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

// === impl TestServer ===

impl TestServer {
    /// Starts a server over `cache`.
    pub async fn start(cache: &SnapshotCache) -> TestServer {
        TestServer::start_with(Arc::new(cache.clone())).await
    }

    /// Starts a server over any source.
    pub async fn start_with(source: Arc<dyn SnapshotSource>) -> TestServer {
        TestServer::start_with_config(source, XdsServerConfig::default()).await
    }

    /// Starts a server over any source with explicit tuning (limits, timeouts).
    pub async fn start_with_config(
        source: Arc<dyn SnapshotSource>,
        config: XdsServerConfig,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let server = XdsServer::with_config(source, config);
        let (shutdown, rx) = oneshot::channel::<()>();
        let s = server.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.await;
            };
            if let Err(error) = s.serve(listener, stop).await {
                tracing::error!(%error, "test xds server failed");
            }
        });
        TestServer {
            addr,
            server,
            shutdown: Some(shutdown),
        }
    }

    /// A connected SotW client for `node_id`.
    pub async fn sotw(&self, node_id: &str) -> SotwClient {
        SotwClient::connect(self.addr, node_id).await
    }

    /// A connected delta client for `node_id`.
    pub async fn delta(&self, node_id: &str) -> DeltaClient {
        DeltaClient::connect(self.addr, node_id).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.close_streams();
    }
}

async fn client(addr: SocketAddr) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.expect("connect to xds server");
    AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20)
}

/// A streaming request carrying `authorization` metadata when given.
fn with_authorization<T>(stream: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(stream);
    if let Some(value) = authorization {
        let value = value.parse().expect("authorization is valid metadata");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// A [`StreamAuthenticator`](crate::StreamAuthenticator) over a fixed map of bearer tokens,
/// for tests: `Bearer <token>` is valid when the map holds `<token>`.
#[derive(Clone, Debug, Default)]
pub struct MapAuthenticator {
    tokens: Arc<std::sync::Mutex<std::collections::HashMap<String, crate::StreamIdentity>>>,
}

impl MapAuthenticator {
    /// Accepts `Bearer <token>` as `identity` from now on.
    pub fn insert(&self, token: &str, identity: crate::StreamIdentity) {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_owned(), identity);
    }

    /// Stops accepting `token` (what revocation does to the real verifier).
    pub fn remove(&self, token: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }
}

impl crate::StreamAuthenticator for MapAuthenticator {
    fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<crate::StreamIdentity, tonic::Status> {
        let Some(value) = authorization else {
            return Err(tonic::Status::unauthenticated("missing node token"));
        };
        let token = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| tonic::Status::unauthenticated("invalid node token"))?;
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
            .ok_or_else(|| tonic::Status::unauthenticated("invalid node token"))
    }
}

fn node(id: &str) -> Node {
    Node {
        id: id.to_owned(),
        cluster: "test".into(),
        ..Default::default()
    }
}

// === impl SotwClient ===

impl SotwClient {
    /// Opens a `StreamAggregatedResources` stream. The node is attached to the
    /// first request sent (as Envoy's `set_node_on_first_message_only`).
    pub async fn connect(addr: SocketAddr, node_id: &str) -> SotwClient {
        SotwClient::connect_with(addr, node_id, None)
            .await
            .expect("open sotw stream")
    }

    /// Opens a stream presenting `authorization` metadata (e.g. `Bearer mpt1…`); `Err` is
    /// the status the server refused the stream with.
    pub async fn connect_with(
        addr: SocketAddr,
        node_id: &str,
        authorization: Option<&str>,
    ) -> Result<SotwClient, tonic::Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut c = client(addr).await;
        let request = with_authorization(UnboundedReceiverStream::new(rx), authorization);
        // The call completes when response headers arrive; the server sends
        // them as soon as its handler returns, before any request is read.
        let rx = c.stream_aggregated_resources(request).await?.into_inner();
        Ok(SotwClient {
            node_id: node_id.to_owned(),
            node_sent: false,
            tx,
            rx,
        })
    }

    /// Sends a raw request (node added if this is the stream's first).
    pub fn send(&mut self, mut req: DiscoveryRequest) {
        if !self.node_sent {
            req.node = Some(node(&self.node_id));
            self.node_sent = true;
        }
        self.tx.send(req).expect("sotw request channel open");
    }

    /// First request of a type (empty nonce); `names` empty = wildcard.
    /// `version` is the version a reconnecting proxy reports ("" when fresh).
    pub fn subscribe(&mut self, ty: ResourceType, names: &[&str], version: &str) {
        self.send(DiscoveryRequest {
            type_url: ty.type_url().into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: version.into(),
            ..Default::default()
        });
    }

    /// ACKs `resp`, (re)stating the subscription `names`.
    pub fn ack(&mut self, resp: &DiscoveryResponse, names: &[&str]) {
        self.send(DiscoveryRequest {
            type_url: resp.type_url.clone(),
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        });
    }

    /// NACKs `resp` as Envoy does: previous good `version`, the response's
    /// nonce, `error_detail` code 13 with `message`.
    pub fn nack(&mut self, resp: &DiscoveryResponse, version: &str, names: &[&str], message: &str) {
        self.send(DiscoveryRequest {
            type_url: resp.type_url.clone(),
            version_info: version.into(),
            response_nonce: resp.nonce.clone(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            error_detail: Some(RpcStatus {
                code: 13,
                message: message.into(),
                details: vec![],
            }),
            ..Default::default()
        });
    }

    /// The next response; fails the test after [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> DiscoveryResponse {
        match self.try_recv(RECV_TIMEOUT).await {
            Some(r) => r,
            None => panic!("no sotw response within {RECV_TIMEOUT:?}"),
        }
    }

    /// The next response if one arrives within `within`.
    pub async fn try_recv(&mut self, within: Duration) -> Option<DiscoveryResponse> {
        match tokio::time::timeout(within, self.rx.message()).await {
            Err(_) => None,
            Ok(Ok(Some(r))) => Some(r),
            Ok(Ok(None)) => panic!("sotw stream ended"),
            Ok(Err(status)) => panic!("sotw stream failed: {status}"),
        }
    }

    /// The stream's end: `Ok(())` if closed cleanly, `Err(status)` if the
    /// server failed it. Fails the test if a response arrives instead.
    pub async fn closed(&mut self) -> Result<(), tonic::Status> {
        match tokio::time::timeout(RECV_TIMEOUT, self.rx.message()).await {
            Err(_) => panic!("sotw stream still open"),
            Ok(Ok(Some(r))) => panic!("expected end of stream, got {}", r.type_url),
            Ok(Ok(None)) => Ok(()),
            Ok(Err(s)) => Err(s),
        }
    }

    /// Fails the test if any response arrives within `within`.
    pub async fn expect_silence(&mut self, within: Duration) {
        if let Some(r) = self.try_recv(within).await {
            panic!(
                "expected no response, got {} version {} ({:?})",
                r.type_url,
                r.version_info,
                resource_names(&r)
            );
        }
    }
}

// === impl DeltaClient ===

impl DeltaClient {
    /// Opens a `DeltaAggregatedResources` stream.
    pub async fn connect(addr: SocketAddr, node_id: &str) -> DeltaClient {
        DeltaClient::connect_with(addr, node_id, None)
            .await
            .expect("open delta stream")
    }

    /// Opens a stream presenting `authorization` metadata; `Err` is the refusal status.
    pub async fn connect_with(
        addr: SocketAddr,
        node_id: &str,
        authorization: Option<&str>,
    ) -> Result<DeltaClient, tonic::Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut c = client(addr).await;
        let request = with_authorization(UnboundedReceiverStream::new(rx), authorization);
        let rx = c.delta_aggregated_resources(request).await?.into_inner();
        Ok(DeltaClient {
            node_id: node_id.to_owned(),
            node_sent: false,
            tx,
            rx,
        })
    }

    /// Sends a raw request (node added if this is the stream's first).
    pub fn send(&mut self, mut req: DeltaDiscoveryRequest) {
        if !self.node_sent {
            req.node = Some(node(&self.node_id));
            self.node_sent = true;
        }
        self.tx.send(req).expect("delta request channel open");
    }

    /// First request of a type: `names` empty = wildcard; `initial` are the
    /// `(name, version)` pairs a reconnecting proxy already holds.
    pub fn subscribe(&mut self, ty: ResourceType, names: &[&str], initial: &[(&str, &str)]) {
        self.send(DeltaDiscoveryRequest {
            type_url: ty.type_url().into(),
            resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
            initial_resource_versions: initial
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        });
    }

    /// Changes the subscription of a type, carrying `nonce` (may be stale or empty).
    pub fn update(
        &mut self,
        ty: ResourceType,
        subscribe: &[&str],
        unsubscribe: &[&str],
        nonce: &str,
    ) {
        self.send(DeltaDiscoveryRequest {
            type_url: ty.type_url().into(),
            resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            resource_names_unsubscribe: unsubscribe.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        });
    }

    /// ACKs `resp`.
    pub fn ack(&mut self, resp: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        });
    }

    /// NACKs `resp` with `message` (code 13, as Envoy).
    pub fn nack(&mut self, resp: &DeltaDiscoveryResponse, message: &str) {
        self.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 13,
                message: message.into(),
                details: vec![],
            }),
            ..Default::default()
        });
    }

    /// The next response; fails the test after [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> DeltaDiscoveryResponse {
        match self.try_recv(RECV_TIMEOUT).await {
            Some(r) => r,
            None => panic!("no delta response within {RECV_TIMEOUT:?}"),
        }
    }

    /// The next response if one arrives within `within`.
    pub async fn try_recv(&mut self, within: Duration) -> Option<DeltaDiscoveryResponse> {
        match tokio::time::timeout(within, self.rx.message()).await {
            Err(_) => None,
            Ok(Ok(Some(r))) => Some(r),
            Ok(Ok(None)) => panic!("delta stream ended"),
            Ok(Err(status)) => panic!("delta stream failed: {status}"),
        }
    }

    /// The stream's end: `Ok(())` if closed cleanly, `Err(status)` if the
    /// server failed it. Fails the test if a response arrives instead.
    pub async fn closed(&mut self) -> Result<(), tonic::Status> {
        match tokio::time::timeout(RECV_TIMEOUT, self.rx.message()).await {
            Err(_) => panic!("delta stream still open"),
            Ok(Ok(Some(r))) => panic!("expected end of stream, got {}", r.type_url),
            Ok(Ok(None)) => Ok(()),
            Ok(Err(s)) => Err(s),
        }
    }

    /// Fails the test if any response arrives within `within`.
    pub async fn expect_silence(&mut self, within: Duration) {
        if let Some(r) = self.try_recv(within).await {
            let names: Vec<&str> = r.resources.iter().map(|r| r.name.as_str()).collect();
            panic!(
                "expected no response, got {} {:?} removed {:?}",
                r.type_url, names, r.removed_resources
            );
        }
    }
}

/// Names of the resources in a delta response, in order.
pub fn delta_names(resp: &DeltaDiscoveryResponse) -> Vec<String> {
    resp.resources.iter().map(|r| r.name.clone()).collect()
}

/// Names of the resources in a SotW response, decoded by type.
pub fn resource_names(resp: &DiscoveryResponse) -> Vec<String> {
    resp.resources
        .iter()
        .map(|a| any_name(a).unwrap_or_default())
        .collect()
}

/// The name of a packed resource of one of the five served types.
pub fn any_name(any: &Any) -> Option<String> {
    let v = &any.value[..];
    Some(match ResourceType::from_type_url(&any.type_url)? {
        ResourceType::Cluster => Cluster::decode(v).ok()?.name,
        ResourceType::Endpoint => ClusterLoadAssignment::decode(v).ok()?.cluster_name,
        ResourceType::Listener => Listener::decode(v).ok()?.name,
        ResourceType::Route => RouteConfiguration::decode(v).ok()?.name,
        ResourceType::Secret => Secret::decode(v).ok()?.name,
    })
}

/// Decodes a packed message.
pub fn decode<M: Message + Default>(any: &Any) -> M {
    M::decode(&any.value[..]).expect("decode packed resource")
}

/// Envoy resource fixtures.
pub mod fixtures {
    use super::*;

    fn ads() -> ConfigSource {
        ConfigSource {
            resource_api_version: ApiVersion::V3 as i32,
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                AggregatedConfigSource {},
            )),
            ..Default::default()
        }
    }

    fn socket(ip: &str, port: u32) -> Address {
        Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }
    }

    /// An EDS cluster (endpoints over ADS) with the given connect timeout.
    pub fn eds_cluster(name: &str, connect_timeout_ms: i32) -> Cluster {
        Cluster {
            name: name.into(),
            connect_timeout: Some(PbDuration {
                seconds: 0,
                nanos: connect_timeout_ms * 1_000_000,
            }),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: String::new(),
            }),
            ..Default::default()
        }
    }

    /// An assignment with one endpoint on 127.0.0.1:`port`.
    pub fn cla(cluster: &str, port: u32) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: cluster.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket("127.0.0.1", port)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// An HTTP listener on 127.0.0.1:`port` whose routes come from RDS
    /// (`route_config_name` over ADS).
    pub fn http_listener(name: &str, port: u32, route_config_name: &str) -> Listener {
        let hcm = HttpConnectionManager {
            stat_prefix: name.into(),
            route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
                config_source: Some(ads()),
                route_config_name: route_config_name.into(),
            })),
            http_filters: vec![HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                    Router::default(),
                ))),
                ..Default::default()
            }],
            ..Default::default()
        };
        Listener {
            name: name.into(),
            address: Some(socket("127.0.0.1", port)),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// A route configuration answering every request with 200 and `body`.
    pub fn direct_response_route(name: &str, body: &str) -> RouteConfiguration {
        route_config(
            name,
            route_match::PathSpecifier::Prefix("/".into()),
            DirectResponseAction {
                status: 200,
                body: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineString(body.into())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    }

    /// A route configuration Envoy rejects: its path regex does not compile
    /// with RE2 (an unbalanced parenthesis).
    pub fn invalid_regex_route(name: &str) -> RouteConfiguration {
        route_config(
            name,
            route_match::PathSpecifier::SafeRegex(RegexMatcher {
                regex: "/(unbalanced".into(),
                ..Default::default()
            }),
            DirectResponseAction {
                status: 200,
                ..Default::default()
            },
        )
    }

    fn route_config(
        name: &str,
        path: route_match::PathSpecifier,
        action: DirectResponseAction,
    ) -> RouteConfiguration {
        RouteConfiguration {
            name: name.into(),
            virtual_hosts: vec![VirtualHost {
                name: "all".into(),
                domains: vec!["*".into()],
                routes: vec![Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(path),
                        ..Default::default()
                    }),
                    action: Some(route::Action::DirectResponse(action)),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// A secret with no content (enough to exercise SDS ordering).
    pub fn secret(name: &str) -> Secret {
        Secret {
            name: name.into(),
            ..Default::default()
        }
    }
}
