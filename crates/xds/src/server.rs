//! `XdsServer`: the tonic ADS service (SotW and delta on one port) and its listener loop.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::auth::{StreamAuth, StreamAuthenticator, TokenIndex};
use crate::cache::{NodeKey, SnapshotSource};
use crate::conn::{LimitedIncoming, XdsConnInfo};
use crate::limits::{LogLimiter, Untrusted};
use crate::status::{ProxyStatus, StatusRegistry, XdsEvent};
use crate::stream::StreamCtx;
use crate::{delta, sotw};

/// Tuning of the gRPC server; [`Default`] gives the values below.
#[derive(Clone)]
pub struct XdsServerConfig {
    /// HTTP/2 PING interval on idle connections, to reap dead proxies. 30 s,
    /// as Istio; Envoy's own xDS-cluster keepalive should not be more eager.
    pub keepalive_interval: Duration,
    /// How long an unanswered PING may take before the connection is closed. 10 s.
    pub keepalive_timeout: Duration,
    /// Largest request tonic decodes. 64 MiB: a delta reconnect carrying
    /// `initial_resource_versions` for thousands of resources, or a large NACK
    /// message, exceeds tonic's 4 MiB default.
    pub max_decoding_message_size: usize,
    /// Largest response tonic encodes. 256 MiB (a full CDS of thousands of clusters).
    pub max_encoding_message_size: usize,
    /// Close connections after this long so proxies re-balance across
    /// replicas (Istio: 30 min). `None` (default): connections live until the
    /// proxy or the server ends them. tonic does not jitter the age, so enable
    /// it only with a stream rate limit in front or few proxies.
    pub max_connection_age: Option<Duration>,
    /// Responses buffered per stream before the stream task waits for the
    /// proxy to read (back-pressure). 16.
    pub response_buffer: usize,
    /// Most connections open at once on the xDS port; a connection past the cap is
    /// closed as soon as it is accepted (one rate-limited WARN line says so). 20,000:
    /// each Envoy holds one; the process needs a file descriptor for each.
    pub max_connections: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`: streams one connection may hold. Envoy
    /// opens one ADS stream per connection; 128 leaves room for test and benchmark
    /// clients that multiplex (the benchmark uses 100 per connection), and with
    /// `max_connections` bounds the streams (tasks, status entries) a client can open.
    pub max_streams_per_connection: u32,
    /// How long a new connection may take to send the 24-byte HTTP/2 connection preface,
    /// and a new stream its first request, before it is closed. 10 s: Envoy sends both
    /// at once; a socket that stays silent would otherwise hold a connection slot forever
    /// (HTTP/2 keepalive PINGs start only after the handshake).
    pub handshake_timeout: Duration,
    /// How long a connection may stay open without an ADS stream before it is closed.
    /// 5 min: an Envoy holds its stream for the connection's life; a client that
    /// connected and opened nothing (or whose streams all ended) only holds a slot.
    pub idle_timeout: Duration,
    /// Most ADS streams open at once over all connections; a stream past it is refused
    /// with `RESOURCE_EXHAUSTED` (Envoy retries with back-off). 100,000: five times the
    /// default connection cap (Envoy holds one stream per connection), while
    /// `max_connections` x `max_streams_per_connection` alone would allow 2.5 million.
    pub max_streams: usize,
    /// Verifies the `authorization` metadata of every ADS stream and pins the stream to
    /// the identity's node. `None` (default): no authentication (`--auth none`).
    pub authenticator: Option<Arc<dyn StreamAuthenticator>>,
    /// Serve TLS on the port [`serve`](XdsServer::serve) listens on. The handshake runs in
    /// the accept loop's connection wrapper, so the connection cap holds during it and
    /// `handshake_timeout` covers handshake and HTTP/2 preface together. The config should
    /// offer ALPN `h2`. `None` (default): plaintext HTTP/2.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

/// The ADS server. Cheap to clone; clones share streams, status and events.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use meshplane_xds::{SnapshotCache, XdsServer};
/// let cache = SnapshotCache::new();
/// let server = XdsServer::new(Arc::new(cache.clone()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:7081").await?;
/// server.serve(listener, std::future::pending()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct XdsServer {
    inner: Arc<Inner>,
}

struct Inner {
    source: Arc<dyn SnapshotSource>,
    registry: Arc<StatusRegistry>,
    config: XdsServerConfig,
    next_stream: AtomicU64,
    shutdown: watch::Sender<bool>,
    /// One permit per open connection on the port `serve` listens on.
    connections: Arc<Semaphore>,
    /// One permit per open stream.
    streams: Arc<Semaphore>,
    /// Streams refused for `max_streams` are logged at most once per 10 s.
    streams_full_log: LogLimiter,
    /// Authenticated streams by token id.
    tokens: Arc<TokenIndex>,
    /// Streams refused for their credential are logged at most once per 10 s.
    auth_log: LogLimiter,
}

/// The tonic service implementation; get it wrapped from [`XdsServer::service`].
#[derive(Clone)]
pub struct AdsService {
    inner: Arc<Inner>,
}

// === impl XdsServerConfig ===

impl Default for XdsServerConfig {
    fn default() -> Self {
        XdsServerConfig {
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_decoding_message_size: 64 << 20,
            max_encoding_message_size: 256 << 20,
            max_connection_age: None,
            response_buffer: 16,
            max_connections: 20_000,
            max_streams_per_connection: 128,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_streams: 100_000,
            authenticator: None,
            tls: None,
        }
    }
}

impl std::fmt::Debug for XdsServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsServerConfig")
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("max_decoding_message_size", &self.max_decoding_message_size)
            .field("max_encoding_message_size", &self.max_encoding_message_size)
            .field("max_connection_age", &self.max_connection_age)
            .field("response_buffer", &self.response_buffer)
            .field("max_connections", &self.max_connections)
            .field(
                "max_streams_per_connection",
                &self.max_streams_per_connection,
            )
            .field("handshake_timeout", &self.handshake_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_streams", &self.max_streams)
            .field("authenticator", &self.authenticator.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

// === impl XdsServer ===

impl XdsServer {
    /// A server over `source`, with the default [`XdsServerConfig`].
    pub fn new(source: Arc<dyn SnapshotSource>) -> XdsServer {
        XdsServer::with_config(source, XdsServerConfig::default())
    }

    /// A server over `source` with explicit tuning.
    pub fn with_config(source: Arc<dyn SnapshotSource>, config: XdsServerConfig) -> XdsServer {
        XdsServer {
            inner: Arc::new(Inner {
                source,
                registry: Arc::new(StatusRegistry::default()),
                next_stream: AtomicU64::new(1),
                shutdown: watch::Sender::new(false),
                connections: Arc::new(Semaphore::new(config.max_connections)),
                streams: Arc::new(Semaphore::new(config.max_streams)),
                streams_full_log: LogLimiter::new(Duration::from_secs(10)),
                tokens: Arc::default(),
                auth_log: LogLimiter::new(Duration::from_secs(10)),
                config,
            }),
        }
    }

    /// The tonic service, for embedding in another tonic `Server` or router
    /// and for in-process tests. Message size limits are applied; keepalives
    /// are a property of the HTTP/2 server and are set by [`serve`](Self::serve).
    pub fn service(&self) -> AggregatedDiscoveryServiceServer<AdsService> {
        AggregatedDiscoveryServiceServer::new(AdsService {
            inner: self.inner.clone(),
        })
        .max_decoding_message_size(self.inner.config.max_decoding_message_size)
        .max_encoding_message_size(self.inner.config.max_encoding_message_size)
    }

    /// Serves ADS on `listener` until `shutdown` resolves, then ends every
    /// open stream (proxies keep their config and reconnect elsewhere) and
    /// returns once connections have closed.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let incoming =
            LimitedIncoming::new(listener, self.inner.connections.clone(), &self.inner.config);
        let inner = self.inner.clone();
        let shutdown = async move {
            shutdown.await;
            tracing::info!("xds server shutting down");
            inner.shutdown.send_replace(true);
        };
        let config = &self.inner.config;
        // HTTP/2 PINGs reap dead peers of established connections (TCP keepalive would
        // add nothing: a connection that never finishes its handshake is closed after
        // `handshake_timeout`). `max_concurrent_streams` is the per-connection stream
        // bound; tonic's `concurrency_limit_per_connection` would not bound streaming
        // calls (their handler returns at once).
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(config.keepalive_interval))
            .http2_keepalive_timeout(Some(config.keepalive_timeout))
            .max_concurrent_streams(Some(config.max_streams_per_connection));
        if let Some(age) = config.max_connection_age {
            builder = builder.max_connection_age(age);
        }
        builder
            .add_service(self.service())
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }

    /// Connections open on the port [`serve`](Self::serve) listens on.
    pub fn connections(&self) -> usize {
        self.inner.config.max_connections - self.inner.connections.available_permits()
    }

    /// ADS streams open (including ones still before their first request).
    pub fn streams(&self) -> usize {
        self.inner.config.max_streams - self.inner.streams.available_permits()
    }

    /// Status of every connected stream (copied; a few allocations per stream).
    pub fn status(&self) -> Vec<ProxyStatus> {
        self.inner.registry.status()
    }

    /// Status of the streams of one node.
    pub fn node_status(&self, node: &NodeKey) -> Vec<ProxyStatus> {
        self.inner.registry.node_status(node)
    }

    /// Adds an observer that sees every event synchronously (see [`XdsEventObserver`]).
    pub fn add_observer(&self, observer: Arc<dyn crate::XdsEventObserver>) {
        self.inner.registry.add_observer(observer);
    }

    /// The shared status registry (to hand to the runtime without the server).
    pub fn registry(&self) -> Arc<StatusRegistry> {
        self.inner.registry.clone()
    }

    /// Subscribes to connect/send/ACK/NACK/disconnect events from now on.
    pub fn subscribe_events(&self) -> broadcast::Receiver<XdsEvent> {
        self.inner.registry.subscribe()
    }

    /// Ends the live streams of `token_id` with `UNAUTHENTICATED` (the token was revoked or
    /// its access key deleted); returns how many. Envoy keeps its last configuration and
    /// reconnects; the authenticator then refuses the revoked token.
    pub fn close_streams_for_token(&self, token_id: &str) -> usize {
        let n = self.inner.tokens.revoke(token_id);
        if n > 0 {
            tracing::info!(token_id = %Untrusted(token_id), streams = n, "closing ads streams of a revoked token");
        }
        n
    }

    /// Ends every open stream now (what `serve` does on shutdown); for servers
    /// embedded through [`service`](Self::service).
    pub fn close_streams(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

impl std::fmt::Debug for XdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsServer")
            .field("connected", &self.inner.registry.connected())
            .field("config", &self.inner.config)
            .finish()
    }
}

// === impl AdsService ===

impl AdsService {
    /// The stream's identity when an authenticator is set: `Err` refuses the stream
    /// (`UNAUTHENTICATED`) before it holds anything.
    fn authenticate<T>(&self, req: &Request<T>, id: u64) -> Result<Option<StreamAuth>, Status> {
        let Some(authenticator) = &self.inner.config.authenticator else {
            return Ok(None);
        };
        // A value that is not visible ASCII cannot be a token: treated as absent.
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let refused = |status: Status| {
            if let Some(skipped) = self.inner.auth_log.permit() {
                tracing::warn!(
                    stream = id, code = ?status.code(), reason = %Untrusted(status.message()),
                    peer = ?req.remote_addr(), refused_since_last_log = skipped,
                    "refusing unauthenticated ads stream"
                );
            }
            status
        };
        let identity = authenticator.authenticate(header).map_err(refused)?;
        match self.inner.tokens.enter(id, identity) {
            Some(auth) => Ok(Some(auth)),
            None => Err(refused(Status::unauthenticated("node token expired"))),
        }
    }

    fn ctx<T>(&self, req: &Request<T>) -> Result<StreamCtx, Status> {
        let id = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        let auth = self.authenticate(req, id)?;
        let Ok(permit) = self.inner.streams.clone().try_acquire_owned() else {
            let limit = self.inner.config.max_streams;
            if let Some(skipped) = self.inner.streams_full_log.permit() {
                tracing::warn!(
                    limit,
                    refused_since_last_log = skipped,
                    "ads stream limit reached, refusing new streams"
                );
            }
            return Err(Status::resource_exhausted(format!(
                "too many ads streams on this server (the limit is {limit})"
            )));
        };
        // Connections accepted by `serve` carry their `XdsConnInfo`; an embedded service
        // (tests over a duplex, another tonic server) may have only the TCP peer.
        let conn = req.extensions().get::<XdsConnInfo>();
        Ok(StreamCtx {
            source: self.inner.source.clone(),
            registry: self.inner.registry.clone(),
            id,
            auth,
            peer: conn
                .and_then(|c| c.tcp.remote_addr())
                .or_else(|| req.remote_addr()),
            _conn: conn.map(|c| c.activity.enter()),
            shutdown: self.inner.shutdown.subscribe(),
            first_request_timeout: self.inner.config.handshake_timeout,
            _permit: permit,
        })
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let ctx = self.ctx(&request)?;
        let span = tracing::debug_span!("ads", stream = ctx.id, flavor = "sotw");
        let (tx, rx) = mpsc::channel(self.inner.config.response_buffer);
        tokio::spawn(sotw::run(ctx, request.into_inner(), tx).instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let ctx = self.ctx(&request)?;
        let span = tracing::debug_span!("ads", stream = ctx.id, flavor = "delta");
        let (tx, rx) = mpsc::channel(self.inner.config.response_buffer);
        tokio::spawn(delta::run(ctx, request.into_inner(), tx).instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
