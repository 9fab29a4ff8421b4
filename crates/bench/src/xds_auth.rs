//! `meshplane-bench xds --auth-compare`: what node-token authentication costs the xDS side,
//! measured side by side in one run.
//!
//! ```text
//!  meshplane-bench ──spawns──▶ serve --auth none     (variant "none", the baseline)
//!                 ──spawns──▶ serve --auth sigv4    (variant "sigv4": each proxy presents
//!                                                    its own node token, `authorization:
//!                                                    Bearer mpt1…` gRPC metadata)
//!  1. the same generated mesh is created on both (signed where auth is on)
//!  2. sigv4: one token per proxy minted through POST /meshplane/v1/node-tokens (signed with
//!     <data-dir>/credentials), before anything is timed; a stream without a token must be
//!     refused with UNAUTHENTICATED, else the run stops
//!  3. --rounds rounds; in each, every variant in turn (order rotating: A B, B A, …) gets a
//!     storm: all --proxies connect at once on fresh connections, the bench waits until every
//!     one holds a full configuration (CDS, EDS, LDS, RDS ACKed), then drops them all
//!  4. per variant: time to sync all, streams/s, p50/p99 time to first full config, server
//!     CPU per stream, and the ratio to "none"
//! ```
//!
//! Both servers run for the whole measurement but only one is stormed at a time, and each
//! variant's server CPU is read from `/proc` around its own storms, so CPU per stream is
//! attributable even when wall-clock numbers are noisy on a shared machine.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use futures::StreamExt;
use serde_json::{Map, Value, json};

use crate::XdsArgs;
use crate::auth_compare::{median, round3};
use crate::mesh::{Api, Mesh, Signer};
use crate::proxy::{Flavor, Fleet, ProxySpec};
use crate::rng::Rng;
use crate::scenario::{find_meshplane, percentile, secs, wait_synced, wait_translated};
use crate::server::{REGION, Security, ServerProcess, raise_nofile};

/// Pause after a storm's streams are dropped, so the server has torn them down (and its
/// CPU for that is counted) before the other variant is stormed.
const SETTLE: Duration = Duration::from_millis(500);

/// One server configuration under test.
struct Variant {
    label: &'static str,
    server: ServerProcess,
    specs: Vec<ProxySpec>,
    /// Time from the storm's start to each proxy's first full configuration, ms, all rounds.
    first_config_ms: Vec<f64>,
    /// Per round: seconds until the last proxy was synced.
    round_sync_all_s: Vec<f64>,
    /// Per round: proxies synced before the phase timeout.
    round_synced: Vec<usize>,
    /// Server CPU seconds over this variant's storms (teardown included).
    cpu_s: f64,
}

/// Runs the comparison; prints a table and writes `--json`. `Ok(false)` when a proxy did not
/// sync in some round.
pub async fn run(args: XdsArgs) -> anyhow::Result<bool> {
    let nofile = raise_nofile();
    if args.proxies as u64 / args.streams_per_conn.max(1) as u64 * 2 + 256 > nofile {
        bail!(
            "RLIMIT_NOFILE {nofile} is too low for {} proxies",
            args.proxies
        );
    }
    let bin = find_meshplane(args.meshplane.as_ref())?;
    let mesh = Mesh::generate(args.virtual_nodes, args.seed);
    let mut rng = Rng::new(args.seed ^ 0x5eed);
    let base_specs: Vec<ProxySpec> = (0..args.proxies)
        .map(|i| ProxySpec {
            node_id: mesh.node_id(i % mesh.nodes.len()),
            flavor: if rng.unit() < args.delta_fraction {
                Flavor::Delta
            } else {
                Flavor::Sotw
            },
            nack_routes: false,
            token: None,
        })
        .collect();

    let mut out = Map::new();
    out.insert("mode".into(), json!("xds-auth-compare"));
    out.insert("meshplane".into(), json!(bin.display().to_string()));
    out.insert("proxies".into(), json!(args.proxies));
    out.insert(
        "delta_proxies".into(),
        json!(
            base_specs
                .iter()
                .filter(|s| s.flavor == Flavor::Delta)
                .count()
        ),
    );
    out.insert("virtual_nodes".into(), json!(args.virtual_nodes));
    out.insert("mesh_resources".into(), json!(mesh.resource_count()));
    out.insert("streams_per_conn".into(), json!(args.streams_per_conn));
    out.insert("rounds".into(), json!(args.rounds));

    let mut variants = Vec::new();
    for (label, auth) in [("none", false), ("sigv4", true)] {
        let security = Security { auth, tls: false };
        let server = ServerProcess::start_with(&bin, &args.server_log, security)
            .with_context(|| format!("starting the {label} server"))?;
        let signer = if auth {
            Some(Signer::from_credentials_file(
                &server.data_dir().join("credentials"),
                "meshplane",
                REGION,
            )?)
        } else {
            None
        };
        let api = Api::secured(&server.api_url(), signer, None)?;
        mesh.create(&api, args.api_concurrency)
            .await
            .with_context(|| format!("creating the mesh on the {label} server"))?;
        wait_translated(&api, &mesh, mesh.nodes.len() - 1).await?;
        let mut specs = base_specs.clone();
        if auth {
            let t = Instant::now();
            let tokens = mint_tokens(&api, &mesh, &specs, args.api_concurrency).await?;
            let took = t.elapsed();
            out.insert(
                "mint".into(),
                json!({
                    "tokens": tokens.len(),
                    "concurrency": args.api_concurrency,
                    "seconds": secs(took),
                    "tokens_per_s": (tokens.len() as f64 / took.as_secs_f64()).round(),
                }),
            );
            for (s, t) in specs.iter_mut().zip(tokens) {
                s.token = Some(t);
            }
            let code = tokenless_refusal(&server, &mesh).await?;
            if code != tonic::Code::Unauthenticated {
                bail!(
                    "a server started with --auth sigv4 answered a stream without a node token with {code:?}, not UNAUTHENTICATED"
                );
            }
            out.insert(
                "tokenless_stream_refused_with".into(),
                json!("UNAUTHENTICATED"),
            );
        }
        variants.push(Variant {
            label,
            server,
            specs,
            first_config_ms: Vec::new(),
            round_sync_all_s: Vec::new(),
            round_synced: Vec::new(),
            cpu_s: 0.0,
        });
    }
    // Let both servers finish their start-up work before anything is timed.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let timeout = Duration::from_secs(args.phase_timeout_s);
    let n = variants.len();
    let mut ok = true;
    for round in 0..args.rounds {
        for k in 0..n {
            let v = &mut variants[(round + k) % n];
            let cpu_before = v.server.usage().cpu_s;
            let t0 = Instant::now();
            let fleet = Fleet::start(
                v.server.xds,
                v.specs.clone(),
                args.streams_per_conn,
                Duration::ZERO,
                args.seed ^ round as u64,
            )?;
            let what = format!("{} round {}", v.label, round + 1);
            let synced = wait_synced(&fleet, None, timeout, &what).await;
            let last = fleet.last_sync(None).map_or(timeout, |t| t - t0);
            for i in 0..fleet.specs.len() {
                if let Some(t) = fleet.with(i, |p| p.synced_at) {
                    v.first_config_ms.push((t - t0).as_secs_f64() * 1000.0);
                }
            }
            fleet.stop().await;
            tokio::time::sleep(SETTLE).await;
            v.cpu_s += v.server.usage().cpu_s - cpu_before;
            v.round_sync_all_s.push(secs(last));
            v.round_synced.push(synced);
            if synced < args.proxies {
                ok = false;
            }
            eprintln!(
                "{what}: {synced}/{} synced in {:.3} s",
                args.proxies,
                last.as_secs_f64()
            );
        }
    }

    let mut results = Map::new();
    for v in &mut variants {
        v.first_config_ms.sort_by(f64::total_cmp);
        let mut sorted = v.round_sync_all_s.clone();
        sorted.sort_by(f64::total_cmp);
        let median = median(&sorted);
        let streams = v.first_config_ms.len();
        let mut r = Map::new();
        r.insert("round_synced".into(), json!(v.round_synced));
        r.insert(
            "synced_min".into(),
            json!(v.round_synced.iter().min().copied().unwrap_or(0)),
        );
        r.insert("round_sync_all_s".into(), json!(v.round_sync_all_s));
        r.insert("sync_all_s_median".into(), json!(round3(median)));
        r.insert(
            "streams_per_s".into(),
            json!(if median > 0.0 {
                (args.proxies as f64 / median).round()
            } else {
                0.0
            }),
        );
        r.insert(
            "first_config_p50_ms".into(),
            json!(round1(percentile(&v.first_config_ms, 50.0))),
        );
        r.insert(
            "first_config_p99_ms".into(),
            json!(round1(percentile(&v.first_config_ms, 99.0))),
        );
        r.insert(
            "first_config_max_ms".into(),
            json!(round1(v.first_config_ms.last().copied().unwrap_or(0.0))),
        );
        r.insert("server_cpu_s".into(), json!(round3(v.cpu_s)));
        r.insert(
            "server_cpu_ms_per_stream".into(),
            json!(round3(v.cpu_s * 1000.0 / streams.max(1) as f64)),
        );
        results.insert(v.label.into(), Value::Object(r));
    }
    let ratios = ratios(&results);
    out.insert("variants".into(), Value::Object(results.clone()));
    out.insert("ratio_to_none".into(), Value::Object(ratios.clone()));
    print_table(&out, &results, &ratios);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&Value::Object(out))?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ok)
}

/// One node token per proxy (several proxies of one virtual node each get their own, as
/// separate Envoy tasks would), `concurrency` requests at a time.
async fn mint_tokens(
    api: &Api,
    mesh: &Mesh,
    specs: &[ProxySpec],
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let prefix = format!("mesh/{}/virtualNode/", mesh.name);
    let calls = specs.iter().map(|s| {
        let node = s.node_id.strip_prefix(&prefix).unwrap_or(&s.node_id);
        let body = json!({ "mesh": mesh.name, "virtualNodeName": node });
        async move {
            let answer = api.call("POST", "/meshplane/v1/node-tokens", body).await?;
            answer["token"]
                .as_str()
                .map(str::to_owned)
                .context("the node-token answer has no token")
        }
    });
    futures::stream::iter(calls)
        .buffered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Opens one ADS stream without a token, for a node that exists, and returns the status it
/// ends with (the server may refuse at the call or as the stream's first message).
async fn tokenless_refusal(server: &ServerProcess, mesh: &Mesh) -> anyhow::Result<tonic::Code> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.xds))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let first = DiscoveryRequest {
        node: Some(Node {
            id: mesh.node_id(0),
            cluster: "bench".into(),
            ..Default::default()
        }),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        ..Default::default()
    };
    // The request stream stays open (pending) so the server, not the bench, ends it.
    let requests = futures::stream::iter([first]).chain(futures::stream::pending());
    tokio::time::timeout(Duration::from_secs(10), async {
        match client.stream_aggregated_resources(requests).await {
            Err(status) => Ok(status.code()),
            Ok(resp) => match resp.into_inner().message().await {
                Err(status) => Ok(status.code()),
                Ok(Some(_)) => bail!("a stream without a node token was served a configuration"),
                Ok(None) => Ok(tonic::Code::Ok),
            },
        }
    })
    .await
    .context("a stream without a node token was neither served nor refused within 10 s")?
}

/// Each variant's figures divided by the baseline's ("none"), plus the median of the
/// per-round ratios of the time to sync all (rounds pair the variants in time, so this is
/// the least noise-sensitive figure on a shared machine).
fn ratios(results: &Map<String, Value>) -> Map<String, Value> {
    crate::auth_compare::ratios_to_none(
        results,
        &[
            "sync_all_s_median",
            "streams_per_s",
            "first_config_p50_ms",
            "first_config_p99_ms",
            "server_cpu_ms_per_stream",
        ],
        "round_sync_all_s",
        "sync_all_s_round_median",
    )
}

fn print_table(
    out: &Map<String, Value>,
    results: &Map<String, Value>,
    ratios: &Map<String, Value>,
) {
    if let Some(m) = out.get("mint") {
        println!(
            "node tokens minted: {} in {} s ({} tokens/s, {} concurrent)",
            m["tokens"], m["seconds"], m["tokens_per_s"], m["concurrency"]
        );
    }
    let header = format!(
        "{:<28} {:>12} {:>12} {:>16}",
        "measurement", "none", "sigv4", "sigv4/none"
    );
    println!("{header}");
    println!("{:-<width$}", "", width = header.len());
    for key in [
        "synced_min",
        "sync_all_s_median",
        "sync_all_s_round_median",
        "streams_per_s",
        "first_config_p50_ms",
        "first_config_p99_ms",
        "first_config_max_ms",
        "server_cpu_s",
        "server_cpu_ms_per_stream",
    ] {
        let cell = |v: Option<&Value>| {
            v.filter(|v| !v.is_null())
                .map_or(String::new(), Value::to_string)
        };
        println!(
            "{key:<28} {:>12} {:>12} {:>16}",
            cell(results.get("none").and_then(|r| r.get(key))),
            cell(results.get("sigv4").and_then(|r| r.get(key))),
            cell(ratios.get("sigv4").and_then(|r| r.get(key))),
        );
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
