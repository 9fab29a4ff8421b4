//! `meshplane serve`: the control plane process.
//!
//! Opens the embedded store under `--data-dir` (checked against its marker, see
//! [`crate::data_dir`]), serves the App Mesh API and the Cloud Map-compatible registry (plus
//! `/healthz`, `/readyz` and Prometheus `/metrics`) on `--api-listen`, and prints one line per bound listener
//! on stdout (`listening api http://127.0.0.1:7080`, `https://` when TLS is on, see
//! [`crate::tls`]) so that port 0 is usable by scripts.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use meshplane_rest::{ApiConfig, ApiMetrics, MeshService, Quotas};
use meshplane_store::Store;
use meshplane_translate::TranslateOptions;
use meshplane_xds::{SnapshotCache, XdsServer, XdsServerConfig};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::observe::{ProxyStatusExtension, XdsMetrics, proxy_status_json};
use crate::reconcile::Reconciler;

/// Flags of `meshplane serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Directory of the embedded store (one SQLite file, `meshplane.db`).
    #[arg(long, env = "MESHPLANE_DATA_DIR", default_value = "./meshplane-data")]
    pub data_dir: PathBuf,
    /// Address of the App Mesh REST API, `/healthz` and `/metrics` (port 0 picks a free port).
    #[arg(long, env = "MESHPLANE_API_LISTEN", default_value = "127.0.0.1:7080")]
    pub api_listen: SocketAddr,
    /// Address of the xDS (ADS) gRPC server for Envoy (port 0 picks a free port).
    #[arg(long, env = "MESHPLANE_XDS_LISTEN", default_value = "127.0.0.1:7081")]
    pub xds_listen: SocketAddr,
    /// Most connections open at once on the xDS port (one per Envoy); connections past it
    /// are closed as soon as they are accepted, with one WARN line per 10 s.
    #[arg(long, env = "MESHPLANE_XDS_MAX_CONNECTIONS", default_value_t = 20_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub xds_max_connections: u32,
    /// Region written into ARNs.
    #[arg(long, env = "MESHPLANE_REGION", default_value = "us-east-1")]
    pub region: String,
    /// 12-digit account id that owns every mesh (ARNs, meshOwner, resourceOwner).
    #[arg(long, env = "MESHPLANE_ACCOUNT_ID", default_value = "000000000000")]
    pub account_id: String,
    /// ARN partition.
    #[arg(long, env = "MESHPLANE_PARTITION", default_value = "aws")]
    pub partition: String,
    /// Start even though `<data-dir>/meshplane.id` records a store and `meshplane.db` is
    /// missing, empty or another store's file (its data is then gone); rewrites the marker.
    #[arg(long, env = "MESHPLANE_ALLOW_EMPTY_STORE")]
    pub allow_empty_store: bool,
    /// API authentication: `sigv4` (every API request signed with a meshplane access key;
    /// the first start writes an administrator key to `<data-dir>/credentials`) or `none`
    /// (anyone who reaches the ports can read and change the mesh; logged at every start).
    #[arg(
        long,
        env = "MESHPLANE_AUTH",
        value_enum,
        default_value = "sigv4",
        overrides_with = "auth"
    )]
    pub auth: crate::auth::AuthMode,
    /// The longest time-to-live a node token may be minted with, and the default
    /// (`30m`, `24h`, `7d`).
    #[arg(long, env = "MESHPLANE_NODE_TOKEN_TTL", default_value = "24h",
          value_parser = crate::auth::parse_ttl)]
    pub node_token_ttl: std::time::Duration,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `meshplane_rest=debug`.
    #[arg(long, env = "MESHPLANE_LOG", default_value = "info")]
    pub log: String,
    #[command(flatten)]
    pub quotas: QuotaArgs,
    #[command(flatten)]
    pub api_limits: crate::listener::ApiLimitArgs,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

/// App Mesh's default quotas; raise them for large meshes.
#[derive(Debug, clap::Args)]
pub struct QuotaArgs {
    /// Meshes per account.
    #[arg(long, default_value_t = Quotas::default().meshes)]
    pub quota_meshes: usize,
    /// Virtual nodes per mesh.
    #[arg(long, default_value_t = Quotas::default().virtual_nodes_per_mesh)]
    pub quota_virtual_nodes: usize,
    /// Virtual routers per mesh.
    #[arg(long, default_value_t = Quotas::default().virtual_routers_per_mesh)]
    pub quota_virtual_routers: usize,
    /// Virtual services per mesh.
    #[arg(long, default_value_t = Quotas::default().virtual_services_per_mesh)]
    pub quota_virtual_services: usize,
    /// Virtual gateways per mesh.
    #[arg(long, default_value_t = Quotas::default().virtual_gateways_per_mesh)]
    pub quota_virtual_gateways: usize,
    /// Routes per virtual router.
    #[arg(long, default_value_t = Quotas::default().routes_per_virtual_router)]
    pub quota_routes: usize,
    /// Gateway routes per virtual gateway.
    #[arg(long, default_value_t = Quotas::default().gateway_routes_per_virtual_gateway)]
    pub quota_gateway_routes: usize,
    /// Backends per virtual node.
    #[arg(long, default_value_t = Quotas::default().backends_per_virtual_node)]
    pub quota_backends: usize,
}

impl ServeArgs {
    fn api_config(&self) -> anyhow::Result<ApiConfig> {
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            bail!("--account-id must be 12 digits, got {:?}", self.account_id);
        }
        let q = &self.quotas;
        Ok(ApiConfig {
            partition: self.partition.clone(),
            region: self.region.clone(),
            account_id: self.account_id.clone(),
            quotas: Quotas {
                meshes: q.quota_meshes,
                virtual_nodes_per_mesh: q.quota_virtual_nodes,
                virtual_routers_per_mesh: q.quota_virtual_routers,
                virtual_services_per_mesh: q.quota_virtual_services,
                virtual_gateways_per_mesh: q.quota_virtual_gateways,
                routes_per_virtual_router: q.quota_routes,
                gateway_routes_per_virtual_gateway: q.quota_gateway_routes,
                backends_per_virtual_node: q.quota_backends,
            },
            ..ApiConfig::default()
        })
    }
}

/// Shared state of the non-App Mesh endpoints.
#[derive(Clone)]
struct OpsState {
    store: Arc<dyn Store>,
    registry: Arc<Mutex<Registry>>,
    xds_load: XdsLoad,
    xds: XdsServer,
    state: crate::reconcile::SharedState,
}

/// Open xDS connections and ADS streams, read from the server when `/metrics` is scraped.
#[derive(Clone, Default)]
struct XdsLoad {
    connections: Gauge,
    streams: Gauge,
}

impl XdsLoad {
    fn register(registry: &mut Registry) -> XdsLoad {
        let load = XdsLoad::default();
        registry.register(
            "meshplane_xds_connections",
            "Open connections to the xDS port (capped by --xds-max-connections)",
            load.connections.clone(),
        );
        registry.register(
            "meshplane_xds_streams",
            "Open ADS streams over all connections",
            load.streams.clone(),
        );
        load
    }
}

/// Runs the control plane until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_tracing(&args.log);
    let api_config = args.api_config()?;
    // Before the runtime and the store open anything.
    let fd_limit = crate::listener::raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(args, api_config, fd_limit))?;
    Ok(ExitCode::SUCCESS)
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr; stdout carries only the `listening ...` lines. Colours only on a
    // terminal: a log file or journald gets plain text.
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

async fn serve(
    args: ServeArgs,
    api_config: ApiConfig,
    fd_limit: crate::listener::FdLimit,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let sqlite = crate::data_dir::open_store(&args.data_dir, args.allow_empty_store)?;
    tracing::info!(path = %sqlite.path().display(), store = %format!("{:016x}", sqlite.store_id()), "store opened");
    let store: Arc<dyn Store> = Arc::new(sqlite);
    // The data directory's key, in every --auth mode: it seals secrets at rest.
    let seal = crate::auth::key_file::load_or_create(&args.data_dir, store.as_ref()).await?;
    let token_key = seal.token_key();
    let seal = Arc::new(seal);
    let access_keys = crate::auth::AccessKeys::load(store.clone(), seal.clone())
        .await
        .context("loading access keys")?;

    let mut registry = Registry::default();
    let api_metrics = Arc::new(ApiMetrics::register(&mut registry));
    let xds_metrics = XdsMetrics::register(&mut registry);
    let xds_load = XdsLoad::register(&mut registry);

    let api = crate::listener::bind(args.api_listen)
        .with_context(|| format!("binding API listener {}", args.api_listen))?;
    let xds_listener = crate::listener::bind(args.xds_listen)
        .with_context(|| format!("binding xDS listener {}", args.xds_listen))?;
    let api_addr = api.local_addr()?;
    let xds_addr = xds_listener.local_addr()?;

    // TLS on both ports, decided once for both (see `crate::tls`).
    let tls = if args.tls.enabled(&[api_addr, xds_addr]) {
        let tls = crate::tls::server_tls(
            &args.tls,
            &[api_addr, xds_addr],
            &*store,
            &seal,
            &args.data_dir,
        )
        .await?;
        if let Some(ca) = &tls.ca_pem {
            tracing::info!(ca = %ca.display(), "tls on, certificate issued by meshplane's CA (trust this file)");
        } else {
            tracing::info!("tls on, certificate from --tls-cert");
        }
        Some(tls)
    } else {
        if args.tls.tls_cert.is_some() && args.tls.tls == crate::tls::TlsMode::Auto {
            tracing::warn!(api = %api_addr, xds = %xds_addr, "--tls-cert is ignored: tls is off because both ports are on loopback (--tls auto); pass --tls on to use it");
        } else {
            tracing::info!(api = %api_addr, xds = %xds_addr, tls = ?args.tls.tls, "tls off");
        }
        None
    };

    // xDS: the reconciler fills the snapshot cache; the server streams it to Envoy. With
    // authentication on, every ADS stream presents a node token and is pinned to its node.
    let authenticator: Option<Arc<dyn meshplane_xds::StreamAuthenticator>> = match args.auth {
        crate::auth::AuthMode::Sigv4 => Some(Arc::new(NodeTokens(
            crate::auth::NodeTokenVerifier::new(token_key.clone(), access_keys.clone()),
        ))),
        crate::auth::AuthMode::None => None,
    };
    let cache = SnapshotCache::new();
    let xds = XdsServer::with_config(
        Arc::new(cache.clone()),
        XdsServerConfig {
            max_connections: args.xds_max_connections as usize,
            tls: tls.as_ref().map(|t| t.xds.clone()),
            authenticator,
            ..XdsServerConfig::default()
        },
    );
    let reconciler = Reconciler::new(store.clone(), cache, TranslateOptions::default());
    let state = reconciler.state();

    let auth = crate::auth::AuthState::new(
        access_keys.clone(),
        token_key,
        meshplane_policy::operation::Scope::new(&args.partition, &args.region, &args.account_id),
        args.auth,
        args.node_token_ttl,
        api_config.max_body_bytes,
    );
    let service = MeshService::new(store.clone(), api_config).with_status_extension(Arc::new(
        ProxyStatusExtension {
            server: xds.clone(),
            state: state.clone(),
        },
    ));
    let ops = OpsState {
        store: store.clone(),
        registry: Arc::new(Mutex::new(registry)),
        xds_load,
        xds: xds.clone(),
        state: state.clone(),
    };

    // The Cloud Map-compatible registry (`POST /` with `X-Amz-Target`) shares the API port
    // and the store; its lease sweeper deregisters instances whose TTL ran out.
    let registry = meshplane_discovery::Registry::new(
        store.clone(),
        meshplane_discovery::RegistryConfig {
            partition: args.partition.clone(),
            region: args.region.clone(),
            account_id: args.account_id.clone(),
        },
    );
    let sweeper_task = tokio::spawn(registry.clone().run_sweeper());

    let app: Router = meshplane_rest::router(service.clone(), api_metrics)
        .merge(meshplane_discovery::http::router(registry))
        .merge(
            Router::new()
                .route("/healthz", get(healthz))
                .route("/readyz", get(readyz))
                .route("/metrics", get(metrics))
                .route("/meshplane/v1/proxy-status", get(proxy_status))
                .route("/meshplane/v1/proxy-config", get(proxy_config))
                .with_state(ops),
        )
        .merge(crate::auth::endpoints::router(auth.clone()));
    // Every route above, including the fallbacks, is behind the layer (it lets /healthz,
    // /readyz and /metrics through).
    let app = match args.auth {
        crate::auth::AuthMode::Sigv4 => app.layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            crate::auth::require_sigv4,
        )),
        crate::auth::AuthMode::None => app,
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    let keys_task = tokio::spawn(access_keys.clone().run_watch());
    let token_prune_task = tokio::spawn(prune_node_tokens(access_keys.clone()));
    // The revocation feed closes the live xDS streams of revoked tokens (explicitly, or
    // by the deletion of the access key that minted them); Envoy keeps its last config.
    let revocation_task = tokio::spawn({
        let xds = xds.clone();
        crate::auth::run_revocation_feed(
            access_keys.clone(),
            Arc::new(move |t: &str| xds.close_streams_for_token(t)),
        )
    });
    match args.auth {
        crate::auth::AuthMode::Sigv4 => {
            crate::auth::bootstrap::ensure_admin(&args.data_dir, &access_keys).await?;
            crate::auth::bootstrap::write_config(
                &args.data_dir,
                &args.region,
                if tls.is_some() { "https" } else { "http" },
                api_addr,
                tls.as_ref().and_then(|t| t.ca_pem.as_deref()),
            )?;
        }
        crate::auth::AuthMode::None => tracing::warn!(
            "authentication is off (--auth none): anyone who can reach {api_addr} and {xds_addr} can read and change the mesh"
        ),
    }

    let reconcile_task = tokio::spawn(reconciler.run());
    let prune_task = tokio::spawn(prune_client_tokens(service.clone()));
    xds.add_observer(xds_metrics);
    let xds_task = tokio::spawn({
        let xds = xds.clone();
        let stop = stopped();
        async move { xds.serve(xds_listener, stop).await }
    });

    let scheme = if tls.is_some() { "https" } else { "http" };
    announce(&format!("listening api {scheme}://{api_addr}"));
    announce(&format!("listening xds {xds_addr}"));
    tracing::info!(api = %api_addr, xds = %xds_addr, "meshplane serving");
    if args.auth == crate::auth::AuthMode::Sigv4 {
        tracing::info!(
            "API authentication is on; call it with: {}",
            crate::auth::bootstrap::usage_line(&args.data_dir)
        );
    }

    let api_tls = tls.map(|t| crate::listener::ApiTls {
        acceptor: tokio_rustls::TlsAcceptor::from(t.api),
        handshake_timeout: args.tls.tls_handshake_timeout,
    });
    crate::listener::serve_api(
        api,
        app,
        args.api_limits.clone(),
        fd_limit,
        api_tls,
        stopped(),
    )
    .await;
    xds.close_streams();
    reconcile_task.abort();
    prune_task.abort();
    keys_task.abort();
    revocation_task.abort();
    token_prune_task.abort();
    sweeper_task.abort();
    match xds_task.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "xds server ended with an error"),
        Err(e) => tracing::warn!(error = %e, "xds server task failed"),
        Ok(Ok(())) => {}
    }
    tracing::info!("shut down");
    Ok(())
}

/// The xDS server's view of node tokens: [`crate::auth::NodeTokenVerifier`] answering
/// `UNAUTHENTICATED` with a short reason.
struct NodeTokens(crate::auth::NodeTokenVerifier);

impl meshplane_xds::StreamAuthenticator for NodeTokens {
    fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<meshplane_xds::StreamIdentity, tonic::Status> {
        match self.0.verify(authorization) {
            Ok(v) => Ok(meshplane_xds::StreamIdentity {
                node: v.node,
                token_id: v.token_id,
                expires_at: v.expires_at,
            }),
            Err(e) => {
                tracing::debug!(reason = %e, "xDS stream refused");
                Err(tonic::Status::unauthenticated(e.message()))
            }
        }
    }
}

/// Deletes expired clientToken records every 10 minutes (they live 24 h), so their number
/// stays bounded by the write rate of one day.
async fn prune_client_tokens(service: MeshService) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tick.tick().await;
        match service.prune_idempotency().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expired clientToken records pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning clientToken records failed"),
        }
    }
}

/// Deletes node-token and revocation records of expired tokens every 10 minutes.
async fn prune_node_tokens(keys: crate::auth::AccessKeys) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tick.tick().await;
        match keys.prune_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expired node token records pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning node token records failed"),
        }
    }
}

/// Prints a line on stdout and flushes it, for scripts waiting on the bound address.
fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Liveness for load balancers: 200 `{"status":"ok","revision":N}` while the store can
/// take writes, 503 `{"status":"unavailable","reason":...}` once it cannot (its file was
/// removed or replaced, corruption was seen, reads fail).
async fn healthz(State(st): State<OpsState>) -> axum::response::Response {
    match store_health(&st).await {
        Ok(revision) => axum::Json(json!({"status": "ok", "revision": revision})).into_response(),
        Err(reason) => unavailable("unavailable", &reason),
    }
}

/// Readiness: healthy, and the reconciler has translated the whole store once (so
/// proxies connecting now get their configuration, not an empty one).
async fn readyz(State(st): State<OpsState>) -> axum::response::Response {
    let revision = match store_health(&st).await {
        Ok(revision) => revision,
        Err(reason) => return unavailable("unavailable", &reason),
    };
    let synced = st.state.read().map(|s| s.synced).unwrap_or(false);
    if !synced {
        return unavailable(
            "starting",
            "the reconciler has not finished its initial sync",
        );
    }
    axum::Json(json!({"status": "ready", "revision": revision})).into_response()
}

/// The store's revision when it is healthy, else why not.
async fn store_health(st: &OpsState) -> Result<u64, String> {
    st.store.health().await.map_err(|e| e.to_string())?;
    st.store.revision().await.map_err(|e| e.to_string())
}

fn unavailable(status: &str, reason: &str) -> axum::response::Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"status": status, "reason": reason})),
    )
        .into_response()
}

async fn proxy_status(State(st): State<OpsState>) -> impl IntoResponse {
    let proxies: Vec<serde_json::Value> = st.xds.status().iter().map(proxy_status_json).collect();
    axum::Json(json!({ "proxies": proxies }))
}

#[derive(serde::Deserialize)]
struct ProxyConfigQuery {
    node: String,
}

/// The Envoy resources meshplane serves to a node, as proto3 JSON, with the translation
/// diagnostics and the per-type versions.
async fn proxy_config(
    State(st): State<OpsState>,
    axum::extract::Query(q): axum::extract::Query<ProxyConfigQuery>,
) -> axum::response::Response {
    let node = match meshplane_model::NodeId::parse(&q.node) {
        Ok(n) => n,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"message": e.to_string()})),
            )
                .into_response();
        }
    };
    let found = st
        .state
        .read()
        .ok()
        .and_then(|s| s.node(&node.mesh, node.kind, &node.name).cloned());
    let Some(ns) = found else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": format!("no configuration for {node}: the virtual node or gateway does not exist")})),
        )
            .into_response();
    };
    let mut resources = serde_json::Map::new();
    let served = meshplane_xds::ResourceType::ALL
        .iter()
        .flat_map(|t| ns.snapshot.resources(*t).iter().map(|r| (*t, r)));
    for (ty, r) in served {
        let short = ty.short_name();
        let name = r.name();
        let rendered =
            crate::envoy_json::any_to_json(r.any()).unwrap_or_else(|e| json!({"error": e}));
        let entry = resources
            .entry(short.to_owned())
            .or_insert_with(|| json!({}));
        if let Some(o) = entry.as_object_mut() {
            o.insert(name.to_owned(), rendered);
        }
    }
    let versions: serde_json::Map<String, serde_json::Value> = meshplane_xds::ResourceType::ALL
        .iter()
        .map(|t| (t.short_name().to_owned(), json!(ns.snapshot.version(*t))))
        .collect();
    let diagnostics: Vec<serde_json::Value> = ns
        .diagnostics
        .iter()
        .map(|d| json!({"severity": format!("{:?}", d.severity).to_lowercase(), "message": d.message}))
        .collect();
    axum::Json(json!({"node": node.to_string(), "versions": versions, "diagnostics": diagnostics, "resources": resources}))
        .into_response()
}

async fn metrics(State(st): State<OpsState>) -> impl IntoResponse {
    st.xds_load
        .connections
        .set(i64::try_from(st.xds.connections()).unwrap_or(i64::MAX));
    st.xds_load
        .streams
        .set(i64::try_from(st.xds.streams()).unwrap_or(i64::MAX));
    let mut body = String::new();
    let encoded = match st.registry.lock() {
        Ok(reg) => prometheus_client::encoding::text::encode(&mut body, &reg).is_ok(),
        Err(_) => false,
    };
    if !encoded {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            String::new(),
        );
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
