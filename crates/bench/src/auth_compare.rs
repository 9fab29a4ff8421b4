//! `meshplane-bench api --auth-compare`: what authentication costs the API, measured side
//! by side in one run.
//!
//! ```text
//!  meshplane-bench ──spawns──▶ serve --auth none            (variant "none", the baseline)
//!                 ──spawns──▶ serve --auth sigv4           (variant "sigv4": every request
//!                 ──spawns──▶ serve --auth sigv4 --tls on   signed with <data-dir>/credentials)
//!                              (variant "sigv4+tls", with --with-tls: <data-dir>/ca.pem trusted)
//!                 ──spawns──▶ serve --auth none, client signs anyway
//!                              (variant "none+signing", with --signing-control: the bench's
//!                              own signing cost, which shares the machine with the server)
//!  1. the same generated mesh is created on each (signed where auth is on)
//!  2. --rounds rounds; in each, every variant in turn runs --round-seconds of disjoint writes
//!     then --read-seconds of reads; the order rotates per round (A B, B A, …) so machine
//!     noise and drift hit every variant alike
//!  3. per variant: writes/s, latency p50/p99/max, errors, reads/s, server and bench CPU
//!     per request, and each variant's ratio to "none"
//! ```
//!
//! All servers run for the whole measurement but only one is loaded at a time; each
//! variant's server CPU is read from `/proc` before and after its own phases, so CPU per
//! request is attributable even when wall-clock throughput is noisy on a shared machine.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

use crate::api::{ApiArgs, Phase, disjoint_writes, reads};
use crate::mesh::{Api, Mesh, Signer};
use crate::scenario::{find_meshplane, percentile, secs};
use crate::server::{REGION, Security, ServerProcess, raise_nofile, usage};

/// One server configuration under test.
struct Variant {
    label: &'static str,
    server: ServerProcess,
    api: Api,
    writes: Samples,
    reads: Samples,
    /// Server CPU seconds spent during this variant's write phases.
    cpu_s: f64,
    /// Server CPU seconds spent during its read phases (no reconciliation follows a read, so
    /// this is the per-request cost of the HTTP path, auth included).
    read_cpu_s: f64,
    /// The bench's own CPU seconds during this variant's phases (signing happens here).
    bench_cpu_s: f64,
    /// Writes per second of each round, in round order.
    round_writes_per_s: Vec<f64>,
}

/// Requests of one kind over every round.
#[derive(Default)]
struct Samples {
    latencies: Vec<f64>,
    errors: Vec<String>,
    seconds: f64,
}

// === impl Samples ===

impl Samples {
    fn add(&mut self, phase: Phase) {
        self.latencies.extend(phase.latencies);
        self.errors.extend(phase.errors);
        self.seconds += phase.elapsed.as_secs_f64();
    }

    fn per_s(&self) -> f64 {
        if self.seconds == 0.0 {
            0.0
        } else {
            self.latencies.len() as f64 / self.seconds
        }
    }

    /// `{prefix}per_s`, `{prefix}p50_ms`, … of these samples.
    fn report(&mut self, out: &mut Map<String, Value>, prefix: &str) {
        self.latencies.sort_by(f64::total_cmp);
        out.insert(format!("{prefix}s"), json!(self.latencies.len()));
        out.insert(format!("{prefix}s_per_s"), json!(round1(self.per_s())));
        out.insert(
            format!("{prefix}_p50_ms"),
            json!(percentile(&self.latencies, 50.0)),
        );
        out.insert(
            format!("{prefix}_p99_ms"),
            json!(percentile(&self.latencies, 99.0)),
        );
        out.insert(
            format!("{prefix}_max_ms"),
            json!(self.latencies.last().copied().unwrap_or(0.0)),
        );
        out.insert(format!("{prefix}_errors"), json!(self.errors.len()));
    }
}

/// Runs the comparison; prints a table and writes `--json`. `Ok(false)` when a request
/// failed.
pub async fn run(args: ApiArgs) -> anyhow::Result<bool> {
    raise_nofile();
    let bin = find_meshplane(args.meshplane.as_ref())?;
    let mesh = Mesh::generate(args.virtual_nodes, args.seed);
    let signed = Security {
        auth: true,
        tls: false,
    };
    let mut configs = vec![
        ("none", Security::default(), false),
        ("sigv4", signed, false),
    ];
    if args.with_tls {
        configs.push((
            "sigv4+tls",
            Security {
                tls: true,
                ..signed
            },
            false,
        ));
    }
    if args.signing_control {
        configs.push(("none+signing", Security::default(), true));
    }

    let mut out = Map::new();
    out.insert("mode".into(), json!("auth-compare"));
    out.insert("meshplane".into(), json!(bin.display().to_string()));
    out.insert("virtual_nodes".into(), json!(args.virtual_nodes));
    out.insert("mesh_resources".into(), json!(mesh.resource_count()));
    out.insert("writers".into(), json!(args.writers));
    out.insert("rounds".into(), json!(args.rounds));
    out.insert("round_seconds".into(), json!(args.round_seconds));
    out.insert("read_seconds".into(), json!(args.read_seconds));

    let mut variants = Vec::new();
    let mut created = Map::new();
    for (label, security, control) in configs {
        let server = ServerProcess::start_with(&bin, &args.server_log, security)
            .with_context(|| format!("starting the {label} server"))?;
        let api = client_for(&server, security, control)?;
        if security.auth {
            refuses_unsigned(&server, security).await?;
        }
        let took = mesh
            .create(&api, args.api_concurrency)
            .await
            .with_context(|| format!("creating the mesh on the {label} server"))?;
        created.insert(
            label.into(),
            json!({
                "seconds": secs(took),
                "writes_per_s": (mesh.resource_count() as f64 / took.as_secs_f64()).round(),
            }),
        );
        variants.push(Variant {
            label,
            server,
            api,
            writes: Samples::default(),
            reads: Samples::default(),
            cpu_s: 0.0,
            read_cpu_s: 0.0,
            bench_cpu_s: 0.0,
            round_writes_per_s: Vec::new(),
        });
    }
    out.insert("mesh_create".into(), Value::Object(created));
    // Auth on was proven above: each signed server refused an unsigned request.
    out.insert("unsigned_refused".into(), json!(true));

    let write_for = Duration::from_secs_f64(args.round_seconds);
    let read_for = Duration::from_secs_f64(args.read_seconds);
    let n = variants.len();
    for round in 0..args.rounds {
        for k in 0..n {
            let v = &mut variants[(round + k) % n];
            let cpu_before = v.server.usage().cpu_s;
            let bench_before = usage(std::process::id()).cpu_s;
            let w = disjoint_writes(&v.api, &mesh, args.writers, write_for).await?;
            v.round_writes_per_s
                .push(round1(w.latencies.len() as f64 / w.elapsed.as_secs_f64()));
            v.writes.add(w);
            let cpu_between = v.server.usage().cpu_s;
            v.cpu_s += cpu_between - cpu_before;
            if args.read_seconds > 0.0 {
                v.reads
                    .add(reads(&v.api, &mesh, args.writers, read_for).await?);
            }
            v.read_cpu_s += v.server.usage().cpu_s - cpu_between;
            v.bench_cpu_s += usage(std::process::id()).cpu_s - bench_before;
        }
    }

    let mut results = Map::new();
    let mut ok = true;
    for v in &mut variants {
        let mut r = Map::new();
        v.writes.report(&mut r, "write");
        v.reads.report(&mut r, "read");
        r.insert(
            "write_conflicts".into(),
            json!(v.api.conflicts.load(std::sync::atomic::Ordering::Relaxed)),
        );
        r.insert("round_writes_per_s".into(), json!(v.round_writes_per_s));
        r.insert("server_cpu_s".into(), json!(round3(v.cpu_s + v.read_cpu_s)));
        let per = |cpu: f64, n: usize| json!(round3(cpu * 1000.0 / n.max(1) as f64));
        r.insert(
            "server_cpu_ms_per_write".into(),
            per(v.cpu_s, v.writes.latencies.len()),
        );
        r.insert(
            "server_cpu_ms_per_read".into(),
            per(v.read_cpu_s, v.reads.latencies.len()),
        );
        let requests = v.writes.latencies.len() + v.reads.latencies.len();
        r.insert("bench_cpu_s".into(), json!(round3(v.bench_cpu_s)));
        r.insert(
            "bench_cpu_ms_per_request".into(),
            per(v.bench_cpu_s, requests),
        );
        for e in v.writes.errors.iter().chain(&v.reads.errors).take(1) {
            eprintln!(
                "{}: {} requests failed, first: {e}",
                v.label,
                v.writes.errors.len() + v.reads.errors.len()
            );
            ok = false;
        }
        results.insert(v.label.into(), Value::Object(r));
    }
    let ratios = ratios(&results);
    out.insert("variants".into(), Value::Object(results.clone()));
    out.insert("ratio_to_none".into(), Value::Object(ratios.clone()));
    print_table(&variants, &results, &ratios);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&Value::Object(out))?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ok)
}

/// The bench's client for `server`: signing with the administrator key `serve` wrote to
/// `<data-dir>/credentials` when auth is on, trusting `<data-dir>/ca.pem` when TLS is on.
/// `control`: sign with a made-up key although the server does not check (`--auth none`).
fn client_for(server: &ServerProcess, security: Security, control: bool) -> anyhow::Result<Api> {
    let dir = server.data_dir();
    let signer = if security.auth {
        Some(Signer::from_credentials_file(
            &dir.join("credentials"),
            "meshplane",
            REGION,
        )?)
    } else if control {
        Some(Signer::new(
            "MPAKCONTROLCONTROL00",
            "not-checked-by-a-server-with-auth-none",
            REGION,
        ))
    } else {
        None
    };
    if security.tls != server.tls {
        bail!(
            "the server was asked for TLS {} but did not announce it",
            security.tls
        );
    }
    let ca = security.tls.then(|| dir.join("ca.pem"));
    Api::secured(&server.api_url(), signer, ca.as_deref())
}

/// Proves the signed variant measures what it claims: an unsigned request is refused with
/// `MissingAuthenticationTokenException`.
async fn refuses_unsigned(server: &ServerProcess, security: Security) -> anyhow::Result<()> {
    let ca = security.tls.then(|| server.data_dir().join("ca.pem"));
    let unsigned = Api::secured(&server.api_url(), None, ca.as_deref())?;
    match unsigned.probe("/v20190125/meshes").await? {
        (403, name) if name == "MissingAuthenticationTokenException" => Ok(()),
        (status, name) => bail!(
            "a server started with --auth sigv4 answered an unsigned request with {status} {name:?}, not 403 MissingAuthenticationTokenException"
        ),
    }
}

/// Each variant's throughput and latency divided by the baseline's ("none").
fn ratios(results: &Map<String, Value>) -> Map<String, Value> {
    ratios_to_none(
        results,
        &[
            "writes_per_s",
            "write_p50_ms",
            "write_p99_ms",
            "reads_per_s",
            "read_p50_ms",
            "read_p99_ms",
            "server_cpu_ms_per_write",
            "server_cpu_ms_per_read",
            "bench_cpu_ms_per_request",
        ],
        "round_writes_per_s",
        "writes_per_s_round_median",
    )
}

/// For each variant but `"none"`: every figure of `keys` divided by the baseline's, and,
/// under `median_key`, the median of the per-round ratios of `round_key` (rounds pair the
/// variants in time, so that median is the least noise-sensitive figure on a shared
/// machine). Shared by `api --auth-compare` and `xds --auth-compare`.
pub(crate) fn ratios_to_none(
    results: &Map<String, Value>,
    keys: &[&str],
    round_key: &str,
    median_key: &str,
) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(base) = results.get("none") else {
        return out;
    };
    let rounds = |r: &Value| -> Vec<f64> {
        r[round_key]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    for (label, r) in results.iter().filter(|(l, _)| l.as_str() != "none") {
        let mut m = Map::new();
        for key in keys {
            if let (Some(a), Some(b)) = (r[*key].as_f64(), base[*key].as_f64())
                && b > 0.0
            {
                m.insert((*key).into(), json!(round3(a / b)));
            }
        }
        let mut per_round: Vec<f64> = rounds(r)
            .iter()
            .zip(rounds(base))
            .filter(|(_, b)| *b > 0.0)
            .map(|(a, b)| a / b)
            .collect();
        per_round.sort_by(f64::total_cmp);
        if !per_round.is_empty() {
            m.insert(median_key.into(), json!(round3(median(&per_round))));
        }
        out.insert(label.clone(), Value::Object(m));
    }
    out
}

/// The median of sorted values (0 for none).
pub(crate) fn median(sorted: &[f64]) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

fn print_table(variants: &[Variant], results: &Map<String, Value>, ratios: &Map<String, Value>) {
    let labels: Vec<&str> = variants.iter().map(|v| v.label).collect();
    let mut header = format!("{:<28}", "measurement");
    for l in &labels {
        header.push_str(&format!(" {l:>12}"));
    }
    for l in labels.iter().filter(|l| **l != "none") {
        header.push_str(&format!(" {:>16}", format!("{l}/none")));
    }
    println!("{header}");
    println!("{:-<width$}", "", width = header.len());
    for key in [
        "writes",
        "writes_per_s",
        "writes_per_s_round_median",
        "write_p50_ms",
        "write_p99_ms",
        "write_max_ms",
        "write_errors",
        "write_conflicts",
        "reads",
        "reads_per_s",
        "read_p50_ms",
        "read_p99_ms",
        "read_errors",
        "server_cpu_ms_per_write",
        "server_cpu_ms_per_read",
        "bench_cpu_ms_per_request",
    ] {
        let mut line = format!("{key:<28}");
        for l in &labels {
            let v = &results[*l][key];
            let cell = if v.is_null() {
                String::new()
            } else {
                v.to_string()
            };
            line.push_str(&format!(" {cell:>12}"));
        }
        for l in labels.iter().filter(|l| **l != "none") {
            let r = ratios
                .get(*l)
                .and_then(|m| m.get(key))
                .map_or(String::new(), |v| v.to_string());
            line.push_str(&format!(" {r:>16}"));
        }
        println!("{line}");
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
