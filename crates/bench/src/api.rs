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
}

/// Runs the API benchmark; prints a table and writes `--json`.
pub async fn run(args: ApiArgs) -> anyhow::Result<bool> {
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
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.writers {
        let api = api.clone();
        let mesh = mesh.clone();
        let writers = args.writers;
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
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let (l, e) = t.await?;
        latencies.extend(l);
        errors.extend(e);
    }
    let elapsed = started.elapsed();
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
