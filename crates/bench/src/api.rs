//! `meshplane-bench api`: the App Mesh write path under concurrency.
//!
//! ```text
//!  meshplane-bench api ──spawns──▶ meshplane serve (fresh data dir, quotas raised)
//!   1. create the generated mesh (V nodes, V services, V routers, V routes) with
//!      --api-concurrency writers: seconds, writes/s, 409s the server let through
//!   2. --writers tasks, each updating only its own nodes and routes, for --seconds:
//!      writes/s, latency p50/p99/max, 409s, errors
//! ```
//!
//! Every 409 "modified concurrently" is counted (and retried, as older servers needed); a
//! server with fine-grained concurrency control answers none on disjoint resources.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Map, Value, json};

use crate::mesh::{Api, Mesh, router_name};
use crate::scenario::{find_meshplane, ms, percentile, secs};
use crate::server::{ServerProcess, raise_nofile};

/// Flags of `meshplane-bench api`.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Virtual nodes (and services, routers, routes) of the generated mesh: 1,000 makes a
    /// 4,001-resource mesh.
    #[arg(long, default_value_t = 1000)]
    pub virtual_nodes: usize,
    /// Concurrent requests while creating the mesh.
    #[arg(long, default_value_t = 16)]
    pub api_concurrency: usize,
    /// Concurrent writers in the disjoint-writers phase; writer `w` updates only nodes and
    /// routes `i` with `i % writers == w`.
    #[arg(long, default_value_t = 32)]
    pub writers: usize,
    /// Length of the disjoint-writers phase, seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Seed of the generated mesh.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The `meshplane` binary to start (default: `$MESHPLANE_BIN`, else next to this binary).
    #[arg(long, env = "MESHPLANE_BIN")]
    pub meshplane: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Log filter of the started control plane.
    #[arg(long, default_value = "warn")]
    pub server_log: String,
    /// Instead of the phases above: the same workload against `serve --auth none` and
    /// `serve --auth sigv4` (every request signed with the administrator key), in
    /// interleaved rounds, side by side (see `auth_compare`).
    #[arg(long)]
    pub auth_compare: bool,
    /// With `--auth-compare`: also `serve --auth sigv4 --tls on` (meshplane's CA trusted).
    #[arg(long, requires = "auth_compare")]
    pub with_tls: bool,
    /// With `--auth-compare`: also `serve --auth none` with a client that signs anyway
    /// (the signature unchecked), to tell the bench's signing cost from the server's.
    #[arg(long, requires = "auth_compare")]
    pub signing_control: bool,
    /// With `--auth-compare`: rounds; each round runs every variant once, the order
    /// rotating from round to round (A B, B A, …).
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// With `--auth-compare`: seconds of disjoint writes per variant and round.
    #[arg(long, default_value_t = 5.0)]
    pub round_seconds: f64,
    /// With `--auth-compare`: seconds of reads (DescribeVirtualNode, ListVirtualNodes) per
    /// variant and round, after its writes; 0 skips them.
    #[arg(long, default_value_t = 2.0)]
    pub read_seconds: f64,
}

/// What one timed phase of concurrent requests produced.
pub struct Phase {
    /// Latency of every successful request, ms (unsorted).
    pub latencies: Vec<f64>,
    /// Every failed request's error.
    pub errors: Vec<String>,
    /// Wall time of the phase.
    pub elapsed: Duration,
}

/// `writers` tasks for `duration`, writer `w` updating only the nodes and routes `i` with
/// `i % writers == w`, alternating UpdateVirtualNode and UpdateRoute.
pub async fn disjoint_writes(
    api: &Api,
    mesh: &Mesh,
    writers: usize,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let api = api.clone();
        let mesh = mesh.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            let owned: Vec<usize> = (w..mesh.nodes.len()).step_by(writers).collect();
            let mut k = 0;
            while Instant::now() < deadline && !owned.is_empty() {
                let i = owned[k % owned.len()];
                let t = Instant::now();
                let r = if k % 2 == 0 {
                    let (path, body) = mesh.node_request(i);
                    let name = body["virtualNodeName"].as_str().unwrap_or_default();
                    api.call(
                        "PUT",
                        &format!("{path}/{name}"),
                        json!({"spec": body["spec"]}),
                    )
                    .await
                    .map(|_| ())
                } else {
                    api.call(
                        "PUT",
                        &format!(
                            "/v20190125/meshes/{}/virtualRouter/{}/routes/route",
                            mesh.name,
                            router_name(i)
                        ),
                        json!({"spec": mesh.route_spec(i)}),
                    )
                    .await
                    .map(|_| ())
                };
                match r {
                    Ok(()) => latencies.push(ms(t.elapsed())),
                    Err(e) => errors.push(format!("{e:#}")),
                }
                k += 1;
            }
            (latencies, errors)
        }));
    }
    collect(tasks, started).await
}

/// `readers` tasks for `duration`, reader `r` alternating DescribeVirtualNode of its own
/// nodes (`i % readers == r`) and ListVirtualNodes (first page of 25).
pub async fn reads(
    api: &Api,
    mesh: &Mesh,
    readers: usize,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..readers {
        let api = api.clone();
        let mesh = mesh.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            let owned: Vec<usize> = (r..mesh.nodes.len()).step_by(readers).collect();
            let nodes = format!("/v20190125/meshes/{}/virtualNodes", mesh.name);
            let mut k = 0;
            while Instant::now() < deadline && !owned.is_empty() {
                let t = Instant::now();
                let path = if k % 2 == 0 {
                    format!("{nodes}/{}", mesh.nodes[owned[k / 2 % owned.len()]].name)
                } else {
                    format!("{nodes}?limit=25")
                };
                match api.get(&path).await {
                    Ok(_) => latencies.push(ms(t.elapsed())),
                    Err(e) => errors.push(format!("{e:#}")),
                }
                k += 1;
            }
            (latencies, errors)
        }));
    }
    collect(tasks, started).await
}

type Worker = tokio::task::JoinHandle<(Vec<f64>, Vec<String>)>;

async fn collect(tasks: Vec<Worker>, started: Instant) -> anyhow::Result<Phase> {
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let (l, e) = t.await?;
        latencies.extend(l);
        errors.extend(e);
    }
    Ok(Phase {
        latencies,
        errors,
        elapsed: started.elapsed(),
    })
}

/// Runs the API benchmark; prints a table and writes `--json`.
pub async fn run(args: ApiArgs) -> anyhow::Result<bool> {
    if args.auth_compare {
        return crate::auth_compare::run(args).await;
    }
    raise_nofile();
    let bin = find_meshplane(args.meshplane.as_ref())?;
    let server = ServerProcess::start(&bin, &args.server_log)?;
    let api = Api::new(&format!("http://{}", server.api))?;
    let mesh = Mesh::generate(args.virtual_nodes, args.seed);
    let mut out = Map::new();
    out.insert("meshplane".into(), json!(bin.display().to_string()));
    out.insert("virtual_nodes".into(), json!(args.virtual_nodes));
    out.insert("mesh_resources".into(), json!(mesh.resource_count()));
    out.insert("create_concurrency".into(), json!(args.api_concurrency));

    let created = mesh
        .create(&api, args.api_concurrency)
        .await
        .context("creating the mesh")?;
    let create_conflicts = api.conflicts.swap(0, Ordering::Relaxed);
    out.insert("mesh_create_s".into(), json!(secs(created)));
    out.insert(
        "mesh_create_writes_per_s".into(),
        json!((mesh.resource_count() as f64 / created.as_secs_f64()).round()),
    );
    out.insert("mesh_create_conflicts".into(), json!(create_conflicts));

    // Disjoint writers: each owns every `writers`-th node and route.
    let phase =
        disjoint_writes(&api, &mesh, args.writers, Duration::from_secs(args.seconds)).await?;
    let (mut latencies, errors, elapsed) = (phase.latencies, phase.errors, phase.elapsed);
    latencies.sort_by(f64::total_cmp);
    let writes = latencies.len();
    out.insert("writers".into(), json!(args.writers));
    out.insert("disjoint_writes".into(), json!(writes));
    out.insert(
        "disjoint_writes_per_s".into(),
        json!((writes as f64 / elapsed.as_secs_f64()).round()),
    );
    out.insert(
        "disjoint_write_p50_ms".into(),
        json!(percentile(&latencies, 50.0)),
    );
    out.insert(
        "disjoint_write_p99_ms".into(),
        json!(percentile(&latencies, 99.0)),
    );
    out.insert(
        "disjoint_write_max_ms".into(),
        json!(latencies.last().copied().unwrap_or(0.0)),
    );
    out.insert(
        "disjoint_conflicts".into(),
        json!(api.conflicts.load(Ordering::Relaxed)),
    );
    out.insert("disjoint_errors".into(), json!(errors.len()));
    if let Some(first) = errors.first() {
        eprintln!("{} writes failed, first: {first}", errors.len());
    }
    let usage = server.usage();
    out.insert("server_cpu_s".into(), json!(usage.cpu_s));
    out.insert("server_rss_mb".into(), json!(usage.rss / (1 << 20)));

    println!("{:<36} value", "measurement");
    println!("{:-<36} -----", "");
    for (k, v) in &out {
        println!("{k:<36} {v}");
    }
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&Value::Object(out.clone()))?,
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(errors.is_empty())
}
