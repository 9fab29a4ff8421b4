//! `meshplane-bench`: the scale benchmark of meshplane's xDS path (see `docs/benchmarks.md`).
//!
//! ```text
//!  meshplane-bench xds ──spawns──▶ meshplane serve (child: fresh data dir, quotas raised)
//!        │  REST: generated mesh, route weight changes, gateway route retargets (mesh::Api)
//!        │  ADS:  N simulated Envoys (proxy::Fleet), SotW and delta, 100 streams/connection
//!        ▼
//!  table on stdout + --json FILE: convergence p50/p90/p99/max, initial sync, resync after
//!  restart, RSS per proxy, CPU, bytes per proxy, pushes by type, lost updates
//! ```
//!
//! Kept out of the `meshplane` binary so the product stays lean; it depends on the product
//! only through its wire interfaces (App Mesh REST, ADS, `/metrics`, proxy status).
#![forbid(unsafe_code)]

mod api;
mod auth_compare;
mod mesh;
mod proxy;
mod rng;
mod scenario;
mod server;
mod xds_auth;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Scale benchmark for meshplane's xDS path.
#[derive(Debug, Parser)]
#[command(name = "meshplane-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulated Envoys against a control plane: convergence, memory, reconnect storms.
    Xds(Box<XdsArgs>),
    /// The App Mesh write path: creating a large mesh, then disjoint concurrent writers.
    Api(api::ApiArgs),
}

/// Which measurement to run after the initial sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// (a) Route weight changes: mesh-wide (every proxy) and scoped (one service's callers).
    RouteChange,
    /// (b) Sustained churn: `--churn-rate` route changes per second for `--churn-seconds`.
    Churn,
    /// (c) Endpoint churn: Cloud Map-discovered nodes (EDS), `--churn-rate` instance
    /// registrations/deregistrations per second for `--churn-seconds`.
    EndpointChurn,
    /// (d) Kill the control plane, restart it on the same data, measure the resync.
    ReconnectStorm,
    /// (e) Real Envoys next to the simulated ones, one mesh-wide change.
    RealEnvoy,
    /// (f) Virtual gateways: simulated gateway Envoys next to the sidecars, `--changes`
    /// gateway routes retargeted one at a time (write → ACK of the gateway's hop-2 RDS).
    Gateway,
}

/// Flags of `meshplane-bench xds`.
#[derive(Debug, clap::Args)]
pub struct XdsArgs {
    /// Simulated proxies (ADS streams).
    #[arg(long, default_value_t = 1000)]
    pub proxies: usize,
    /// Virtual nodes (and services, routers, routes) of the generated mesh; proxies are
    /// spread over the nodes round-robin.
    #[arg(long, default_value_t = 100)]
    pub virtual_nodes: usize,
    /// Fraction of proxies speaking delta xDS (the rest state of the world).
    #[arg(long, default_value_t = 0.5)]
    pub delta_fraction: f64,
    /// Fraction of proxies that reject (NACK) every route update after their initial sync;
    /// they are left out of convergence and lost-update counts.
    #[arg(long, default_value_t = 0.0)]
    pub nack_fraction: f64,
    /// Seed of the mesh, the flavours and the change sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// What to measure after the initial sync.
    #[arg(long, value_enum, default_value_t = Scenario::RouteChange)]
    pub scenario: Scenario,
    /// An already running control plane's API (`http://HOST:PORT`); needs `--xds`. Without
    /// it the bench starts its own `meshplane serve`.
    #[arg(long, requires = "xds")]
    pub endpoint: Option<String>,
    /// The xDS address of `--endpoint`.
    #[arg(long)]
    pub xds: Option<std::net::SocketAddr>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The `meshplane` binary to start (default: `$MESHPLANE_BIN`, else next to this binary).
    #[arg(long, env = "MESHPLANE_BIN")]
    pub meshplane: Option<PathBuf>,
    /// ADS streams per HTTP/2 connection (Envoys each have their own; 100 keeps the
    /// bench's file descriptors and ports reasonable).
    #[arg(long, default_value_t = 100)]
    pub streams_per_conn: usize,
    /// Mesh-wide changes, then as many scoped changes (route-change); gateway route
    /// retargets (gateway).
    #[arg(long, default_value_t = 3)]
    pub changes: usize,
    /// Changes per second: route changes (churn), Cloud Map instance registrations and
    /// deregistrations (endpoint-churn).
    #[arg(long, default_value_t = 100.0)]
    pub churn_rate: f64,
    /// Duration of the churn (churn, endpoint-churn), seconds.
    #[arg(long, default_value_t = 30)]
    pub churn_seconds: u64,
    /// Cloud Map instances registered per virtual node's service before the fleet connects
    /// (endpoint-churn).
    #[arg(long, default_value_t = 3)]
    pub instances_per_node: usize,
    /// Real Envoys (real-envoy).
    #[arg(long, default_value_t = 20)]
    pub real_envoys: usize,
    /// Virtual gateways (gateway): one http listener on 8088 each.
    #[arg(long, default_value_t = 10)]
    pub gateways: usize,
    /// Gateway routes per virtual gateway (gateway), each targeting a distinct virtual
    /// service with prefix `/<service>/`; must be below `--virtual-nodes`.
    #[arg(long, default_value_t = 5)]
    pub gateway_routes: usize,
    /// Simulated gateway Envoys per virtual gateway (gateway), next to the `--proxies`
    /// sidecars.
    #[arg(long, default_value_t = 10)]
    pub gateway_proxies: usize,
    /// Concurrent API requests while creating the mesh.
    #[arg(long, default_value_t = 16)]
    pub api_concurrency: usize,
    /// Log filter of the started control plane.
    #[arg(long, default_value = "warn")]
    pub server_log: String,
    /// How long to wait for any one phase (sync, convergence) before giving up on it.
    #[arg(long, default_value_t = 120)]
    pub phase_timeout_s: u64,
    /// Instead of `--scenario`: connect and fully sync all `--proxies` at once against
    /// `serve --auth none` and `serve --auth sigv4` (each proxy presenting its own node
    /// token), in interleaved rounds, and compare (see `xds_auth`).
    #[arg(long)]
    pub auth_compare: bool,
    /// Rounds of `--auth-compare`; each round storms every variant once, order rotating.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = match cli.command {
        Command::Xds(args) if args.auth_compare => rt.block_on(xds_auth::run(*args)),
        Command::Xds(args) => rt.block_on(scenario::run(*args)),
        Command::Api(args) => rt.block_on(api::run(args)),
    };
    match run {
        Ok(ok) if ok => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
