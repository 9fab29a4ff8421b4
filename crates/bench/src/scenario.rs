//! The scenarios and their measurements: set up (server, mesh, fleet, initial sync, memory),
//! run one scenario, check that no update was lost, print the table and write the JSON.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Map, Value, json};

use crate::mesh::{Api, Mesh, Registry};
use crate::proxy::{Flavor, Fleet, ProxySpec, TYPES};
use crate::rng::Rng;
use crate::server::{ServerProcess, Usage, raise_nofile, usage};
use crate::{Scenario, XdsArgs};

/// One change (a route's weights, or a Cloud Map instance) and who must see it.
struct Change {
    /// The route, or for an endpoint change the node whose Cloud Map service changed; two
    /// changes of the same index are never in flight at once.
    route: usize,
    /// The virtual host (route change) or the EDS cluster (endpoint change) to watch.
    service: String,
    /// The weights a route change must produce (empty for an endpoint change).
    weights: Vec<(String, u32)>,
    /// An endpoint change: `(ip:port, present)`, the endpoint that must appear in (or leave)
    /// the EDS cluster `service`.
    endpoint: Option<(String, bool)>,
    t0: Instant,
    /// Proxies that have not ACKed the change yet.
    pending: Vec<usize>,
    /// Convergence per proxy, ms.
    lat_ms: Vec<f64>,
    affected: usize,
    /// A later change of the same route came before every proxy converged; the rest of
    /// this one's proxies are not counted.
    superseded: bool,
    mesh_wide: bool,
    write_ms: f64,
}

/// Results, as JSON keys.
type Out = Map<String, Value>;

/// The Cloud Map HTTP namespace of the endpoint-churn mesh.
const NAMESPACE: &str = "bench.local";

/// JSON keys every run reports (null when its scenario does not measure them).
const REQUIRED_KEYS: [&str; 9] = [
    "proxies",
    "virtual_nodes",
    "convergence_p50_ms",
    "convergence_p99_ms",
    "convergence_max_ms",
    "initial_sync_s",
    "resync_after_restart_s",
    "rss_per_proxy_bytes",
    "lost_updates",
];

/// Runs the whole benchmark; `Ok(false)` when a correctness check failed.
pub async fn run(args: XdsArgs) -> anyhow::Result<bool> {
    let nofile = raise_nofile();
    let mut out = Out::new();
    let wall = Instant::now();
    out.insert("scenario".into(), json!(format!("{:?}", args.scenario)));
    out.insert("proxies".into(), json!(args.proxies));
    out.insert("virtual_nodes".into(), json!(args.virtual_nodes));
    out.insert("seed".into(), json!(args.seed));
    out.insert("delta_fraction".into(), json!(args.delta_fraction));
    out.insert("nack_fraction".into(), json!(args.nack_fraction));
    out.insert("nofile_limit".into(), json!(nofile));
    if args.proxies as u64 / args.streams_per_conn.max(1) as u64 + 256 > nofile {
        bail!(
            "RLIMIT_NOFILE {nofile} is too low for {} proxies",
            args.proxies
        );
    }

    // 1. The control plane.
    let mut server = match (&args.endpoint, args.xds) {
        (Some(_), _) => None,
        (None, _) => {
            let bin = meshplane_bin(&args)?;
            Some(ServerProcess::start(&bin, &args.server_log)?)
        }
    };
    let (api_url, xds) = match &server {
        Some(s) => (s.api_url(), s.xds),
        None => (
            args.endpoint.clone().context("--endpoint")?,
            args.xds.context("--xds")?,
        ),
    };
    let api = Api::new(&api_url)?;
    let pid = server.as_ref().and_then(|s| s.pid());
    let cpu0 = server.as_ref().map(|s| s.usage()).unwrap_or_default();

    // 2. The mesh.
    let mut mesh = Mesh::generate(args.virtual_nodes, args.seed);
    let sim_nodes = mesh.nodes.len();
    let real_nodes: Vec<usize> = if args.scenario == Scenario::RealEnvoy {
        (0..args.real_envoys)
            .map(|i| {
                // Explicit mode on its own loopback IP: 20 Envoys share the host without
                // fighting over 15000/15001.
                let ip = format!("127.0.1.{}", 10 + i);
                let backends = mesh.nodes[i % sim_nodes].backends.clone();
                mesh.add_node(format!("envoy{i:02}"), backends, Some(ip))
            })
            .collect()
    } else {
        Vec::new()
    };
    // (c): nodes discovered through Cloud Map; the registry exists before the nodes, so the
    // initial sync already carries the instances.
    let mut registry = None;
    if args.scenario == Scenario::EndpointChurn {
        let t = Instant::now();
        mesh.cloud_map = Some(NAMESPACE.to_owned());
        let reg = Registry::create(
            &api,
            &mesh,
            NAMESPACE,
            args.instances_per_node,
            args.api_concurrency,
        )
        .await
        .context("creating the Cloud Map registry")?;
        eprintln!(
            "registry: {} services, {} instances ({:.1} s)",
            reg.service_ids.len(),
            reg.instances.iter().map(Vec::len).sum::<usize>(),
            t.elapsed().as_secs_f64()
        );
        out.insert("registry_create_s".into(), json!(secs(t.elapsed())));
        out.insert("registry_namespace_id".into(), json!(reg.namespace_id));
        registry = Some(reg);
    }
    if args.scenario == Scenario::Gateway {
        mesh.add_gateways(args.gateways, args.gateway_routes)?;
    }
    let created = mesh.create(&api, args.api_concurrency).await?;
    out.insert("mesh_resources".into(), json!(mesh.resource_count()));
    out.insert("mesh_create_s".into(), json!(secs(created)));
    let backends: Vec<usize> = mesh.nodes[..sim_nodes]
        .iter()
        .map(|n| n.backends.len())
        .collect();
    out.insert(
        "backends_per_node_avg".into(),
        json!(backends.iter().sum::<usize>() as f64 / backends.len() as f64),
    );
    wait_translated(&api, &mesh, sim_nodes - 1).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = pid.map(usage).unwrap_or_default();

    // 3. The fleet and its initial sync.
    let mut rng = Rng::new(args.seed ^ 0x5eed);
    let specs: Vec<ProxySpec> = (0..args.proxies)
        .map(|i| ProxySpec {
            node_id: mesh.node_id(i % sim_nodes),
            flavor: if rng.unit() < args.delta_fraction {
                Flavor::Delta
            } else {
                Flavor::Sotw
            },
            nack_routes: rng.unit() < args.nack_fraction,
            token: None,
        })
        .collect();
    let nackers: HashSet<usize> = (0..specs.len()).filter(|i| specs[*i].nack_routes).collect();
    // Proxies per service (callers), NACKing proxies left out.
    let mut callers: Vec<Vec<usize>> = vec![Vec::new(); mesh.routes.len()];
    for p in 0..specs.len() {
        if nackers.contains(&p) {
            continue;
        }
        for b in &mesh.nodes[p % sim_nodes].backends {
            callers[*b].push(p);
        }
    }
    // Proxies per node's EDS cluster: those whose node routes to it (every proxy holds the
    // EDS clusters of its egress targets; NACKing proxies reject only routes).
    let mut eds_callers: Vec<Vec<usize>> = vec![Vec::new(); mesh.nodes.len()];
    if mesh.cloud_map.is_some() {
        for p in 0..specs.len() {
            for t in mesh.egress_targets(p % sim_nodes) {
                eds_callers[t].push(p);
            }
        }
    }
    let timeout = Duration::from_secs(args.phase_timeout_s);
    let t_connect = Instant::now();
    let fleet = Fleet::start(
        xds,
        specs.clone(),
        args.streams_per_conn,
        Duration::ZERO,
        args.seed,
    )?;
    // Gateway Envoys (gateway scenario): `--gateway-proxies` per gateway, gateway `g`'s at
    // indexes `g * P .. (g + 1) * P` of their own fleet (so the sidecar checks stay per node).
    let per_gw = args.gateway_proxies;
    let gw_specs: Vec<ProxySpec> = (0..mesh.gateways.len() * per_gw)
        .map(|i| ProxySpec {
            node_id: mesh.gateway_id(i / per_gw),
            flavor: if rng.unit() < args.delta_fraction {
                Flavor::Delta
            } else {
                Flavor::Sotw
            },
            nack_routes: false,
            token: None,
        })
        .collect();
    let gw_fleet = Fleet::start(
        xds,
        gw_specs,
        args.streams_per_conn,
        Duration::ZERO,
        args.seed ^ 0x6a7e,
    )?;
    let synced = wait_synced(&fleet, None, timeout, "initial sync").await;
    let gw_synced = wait_synced(&gw_fleet, None, timeout, "gateway initial sync").await;
    let initial = fleet
        .last_sync(None)
        .into_iter()
        .chain(gw_fleet.last_sync(None))
        .max()
        .map(|t| t.duration_since(t_connect))
        .unwrap_or(timeout);
    out.insert("initial_synced".into(), json!(synced));
    out.insert("initial_sync_s".into(), json!(secs(initial)));
    if args.scenario == Scenario::Gateway {
        out.insert("gateways".into(), json!(mesh.gateways.len()));
        out.insert(
            "gateway_routes_per_gateway".into(),
            json!(args.gateway_routes),
        );
        out.insert("gateway_proxies".into(), json!(gw_fleet.specs.len()));
        out.insert("gateway_initial_synced".into(), json!(gw_synced));
        let gw_bytes: u64 = (0..gw_fleet.specs.len())
            .map(|i| gw_fleet.with(i, |v| v.initial_bytes))
            .sum();
        out.insert(
            "gateway_initial_bytes_per_proxy".into(),
            json!((gw_bytes as f64 / gw_fleet.specs.len().max(1) as f64).round()),
        );
    }
    let cpu_sync = pid.map(usage).unwrap_or_default().cpu_s - before.cpu_s;
    out.insert("initial_sync_cpu_s".into(), json!(cpu_sync));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = pid.map(usage).unwrap_or_default();
    memory(&mut out, before, after, args.proxies + gw_fleet.specs.len());
    bytes_by_backends(&mut out, &fleet, &mesh, sim_nodes);

    // 4. The scenario.
    let mut ok = synced == args.proxies && gw_synced == gw_fleet.specs.len();
    let cpu_before_scenario = pid.map(usage).unwrap_or_default().cpu_s;
    let t_scenario = Instant::now();
    let mut seen = BTreeMap::new();
    match args.scenario {
        Scenario::RouteChange => {
            let mut all = Vec::new();
            for k in 0..args.changes * 2 {
                let mesh_wide = k < args.changes;
                let route = if mesh_wide {
                    0
                } else {
                    rng.range(1, mesh.routes.len() as u64 - 1) as usize
                };
                let c = change(&mut mesh, &api, route, &callers, &mut rng, &mut seen).await?;
                let mut cs = vec![c];
                track(&fleet, &mut cs, timeout).await;
                all.extend(cs);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            convergence(&mut out, "", all.iter().filter(|c| c.mesh_wide));
            convergence(&mut out, "scoped_", all.iter().filter(|c| !c.mesh_wide));
            changes_summary(&mut out, &all);
        }
        Scenario::Churn => {
            let all = churn(&mut mesh, &api, &fleet, &callers, &mut rng, &args).await?;
            convergence(&mut out, "", all.iter());
            changes_summary(&mut out, &all);
        }
        Scenario::ReconnectStorm => {
            let Some(s) = server.as_mut() else {
                bail!("reconnect-storm needs the bench's own control plane (no --endpoint)");
            };
            let t_kill = Instant::now();
            s.restart()?;
            let t_up = Instant::now();
            let resynced = wait_synced(&fleet, Some(t_up), timeout, "resync").await;
            let last = fleet.last_sync(Some(t_up)).unwrap_or(t_up + timeout);
            out.insert("resynced".into(), json!(resynced));
            out.insert("restart_s".into(), json!(secs(t_up.duration_since(t_kill))));
            out.insert(
                "resync_after_restart_s".into(),
                json!(secs(last.duration_since(t_up))),
            );
            out.insert(
                "resync_after_kill_s".into(),
                json!(secs(last.duration_since(t_kill))),
            );
            let pid2 = s.pid();
            let u = pid2.map(usage).unwrap_or_default();
            out.insert("resync_cpu_s".into(), json!(u.cpu_s));
            out.insert("rss_after_resync_bytes".into(), json!(u.rss));
            ok &= resynced == args.proxies;
            // The restarted control plane still converges.
            let c = change(&mut mesh, &api, 0, &callers, &mut rng, &mut seen).await?;
            let mut cs = vec![c];
            track(&fleet, &mut cs, timeout).await;
            convergence(&mut out, "", cs.iter());
        }
        Scenario::RealEnvoy => {
            let envoys = real_envoys(&mesh, &real_nodes, xds, &api, timeout).await?;
            let c = change(&mut mesh, &api, 0, &callers, &mut rng, &mut seen).await?;
            let t0_wall = SystemTime::now();
            let t0 = c.t0;
            let expected = c.weights.clone();
            let mut cs = vec![c];
            let service0 = mesh.service(0);
            let ((), real) = tokio::join!(
                track(&fleet, &mut cs, timeout),
                envoy_convergence(&envoys, &service0, &expected, t0, timeout)
            );
            convergence(&mut out, "", cs.iter());
            let acked = envoy_acked_at(&api, &mesh, &real_nodes, t0_wall).await;
            let mut real_ms: Vec<f64> = real.iter().flatten().copied().collect();
            stats(&mut out, "real_envoy_config_dump_", &mut real_ms);
            let mut acked_ms = acked.clone();
            stats(&mut out, "real_envoy_acked_", &mut acked_ms);
            out.insert("real_envoys".into(), json!(envoys.len()));
            let missing = real.iter().filter(|r| r.is_none()).count();
            out.insert("real_envoys_not_converged".into(), json!(missing));
            ok &= missing == 0;
            drop(envoys);
        }
        Scenario::Gateway => {
            if mesh.gateways.is_empty() || per_gw == 0 {
                bail!("the gateway scenario needs --gateways and --gateway-proxies above 0");
            }
            let pushes0 = server_pushes(&api).await;
            let sidecar0: Vec<[u64; 4]> = (0..fleet.specs.len())
                .map(|i| fleet.with(i, |v| v.responses))
                .collect();
            let gateway0: Vec<[u64; 4]> = (0..gw_fleet.specs.len())
                .map(|i| gw_fleet.with(i, |v| v.responses))
                .collect();
            let mut all = Vec::new();
            for k in 0..args.changes {
                let g = k % mesh.gateways.len();
                let r = rng.range(0, mesh.gateways[g].routes.len() as u64 - 1) as usize;
                let target = mesh.retarget(g, r, &mut rng);
                let t0 = Instant::now();
                mesh.write_gateway_route(&api, g, r).await?;
                let write_ms = ms(t0.elapsed());
                let pending: Vec<usize> = (g * per_gw..(g + 1) * per_gw).collect();
                // Converged: the gateway route's hop-2 virtual host holds the new target's
                // routes (its router's weights).
                let mut cs = vec![Change {
                    route: g,
                    service: mesh.gateway_host(r),
                    weights: mesh.expected_weights(target),
                    endpoint: None,
                    t0,
                    affected: pending.len(),
                    pending,
                    lat_ms: Vec::new(),
                    superseded: false,
                    mesh_wide: false,
                    write_ms,
                }];
                track(&gw_fleet, &mut cs, timeout).await;
                all.extend(cs);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            convergence(&mut out, "", all.iter());
            convergence(&mut out, "gateway_", all.iter());
            // No sidecar depends on a gateway route: the sidecar fleet gets nothing.
            settle(&fleet, Duration::from_secs(2), timeout).await;
            let pushes1 = server_pushes(&api).await;
            let diff: Map<String, Value> = pushes1
                .iter()
                .map(|(t, v)| {
                    let before = pushes0.get(t).and_then(Value::as_f64).unwrap_or(0.0);
                    (t.clone(), json!(v.as_f64().unwrap_or(0.0) - before))
                })
                .collect();
            out.insert("gateway_server_pushes_by_type".into(), Value::Object(diff));
            // Responses received during the changes, by type, summed over a fleet.
            let received = |f: &Fleet, before: &[[u64; 4]]| {
                let mut sum = [0u64; 4];
                for (p, before) in before.iter().enumerate() {
                    let now = f.with(p, |v| v.responses);
                    for t in 0..4 {
                        sum[t] += now[t] - before[t];
                    }
                }
                sum
            };
            let by_type = |sum: [u64; 4]| -> Value {
                Value::Object(
                    TYPES
                        .iter()
                        .zip(sum)
                        .map(|(name, n)| (name.to_string(), json!(n)))
                        .collect(),
                )
            };
            let sidecar = received(&fleet, &sidecar0);
            let gateway = received(&gw_fleet, &gateway0);
            out.insert("gateway_sidecar_responses_by_type".into(), by_type(sidecar));
            out.insert("gateway_proxy_responses_by_type".into(), by_type(gateway));
            out.insert("gateway_sidecar_rds_responses".into(), json!(sidecar[3]));
            let missing: usize = all.iter().map(|c| c.pending.len()).sum();
            ok &= missing == 0 && sidecar.iter().sum::<u64>() == 0;
        }
        Scenario::EndpointChurn => {
            let reg = registry.as_mut().context("endpoint-churn: no registry")?;
            let pushes0 = server_pushes(&api).await;
            let eds0: Vec<u64> = (0..fleet.specs.len())
                .map(|i| fleet.with(i, |v| v.responses[1]))
                .collect();
            let noop0: u64 = (0..fleet.specs.len())
                .map(|i| fleet.with(i, |v| v.eds_noop))
                .sum();
            let all =
                endpoint_churn(reg, &mesh, &api, &fleet, &eds_callers, &mut rng, &args).await?;
            convergence(&mut out, "", all.iter());
            convergence(&mut out, "endpoint_", all.iter());
            changes_summary(&mut out, &all);
            if let Some(r) = out.get("changes_per_s").cloned() {
                out.insert("endpoint_changes_per_s".into(), r);
            }
            // The part after the API answered: translation, debounce, push and ACK only.
            let mut after: Vec<f64> = all
                .iter()
                .flat_map(|c| c.lat_ms.iter().map(move |l| (l - c.write_ms).max(0.0)))
                .collect();
            stats(&mut out, "endpoint_after_write_", &mut after);
            let mut writes: Vec<f64> = all.iter().map(|c| c.write_ms).collect();
            stats(&mut out, "endpoint_api_write_", &mut writes);
            let affected: usize = all.iter().map(|c| c.affected).sum();
            out.insert(
                "endpoint_affected_proxies_per_change".into(),
                json!((affected as f64 / all.len().max(1) as f64 * 10.0).round() / 10.0),
            );
            out.insert(
                "endpoint_changes_without_affected_proxies".into(),
                json!(all.iter().filter(|c| c.affected == 0).count()),
            );
            // Pushes during the churn: server side by type, client side EDS responses to
            // proxies no change concerned, and EDS responses that changed nothing.
            settle(&fleet, Duration::from_secs(2), timeout).await;
            let pushes1 = server_pushes(&api).await;
            let diff: Map<String, Value> = pushes1
                .iter()
                .map(|(t, v)| {
                    let before = pushes0.get(t).and_then(Value::as_f64).unwrap_or(0.0);
                    (t.clone(), json!(v.as_f64().unwrap_or(0.0) - before))
                })
                .collect();
            out.insert("churn_server_pushes_by_type".into(), Value::Object(diff));
            let concerned: HashSet<usize> = all
                .iter()
                .flat_map(|c| eds_callers[c.route].iter().copied())
                .collect();
            let (mut eds_total, mut eds_unaffected, mut unaffected) = (0u64, 0u64, 0usize);
            for (p, before) in eds0.iter().enumerate() {
                let n = fleet.with(p, |v| v.responses[1]) - before;
                eds_total += n;
                if !concerned.contains(&p) {
                    unaffected += 1;
                    eds_unaffected += n;
                }
            }
            let noop1: u64 = (0..fleet.specs.len())
                .map(|i| fleet.with(i, |v| v.eds_noop))
                .sum();
            out.insert("churn_eds_responses".into(), json!(eds_total));
            out.insert("churn_unaffected_proxies".into(), json!(unaffected));
            out.insert(
                "churn_eds_responses_to_unaffected_proxies".into(),
                json!(eds_unaffected),
            );
            out.insert("churn_eds_noop_responses".into(), json!(noop1 - noop0));
            out.insert(
                "instances_end".into(),
                json!(reg.instances.iter().map(Vec::len).sum::<usize>()),
            );
        }
    }
    // After a restart the current child is a new process.
    let cpu_scenario = server
        .as_ref()
        .and_then(|s| s.pid())
        .or(pid)
        .map(usage)
        .unwrap_or_default()
        .cpu_s;
    out.insert(
        "scenario_cpu_s".into(),
        json!(if args.scenario == Scenario::ReconnectStorm {
            cpu_scenario
        } else {
            cpu_scenario - cpu_before_scenario
        }),
    );
    out.insert("scenario_s".into(), json!(secs(t_scenario.elapsed())));

    // 5. No lost update: every proxy holds what the store says.
    settle(&fleet, Duration::from_secs(2), timeout).await;
    let (mut lost, checked, stale) = lost_updates(&api, &mesh, &fleet, &nackers, sim_nodes).await?;
    if let Some(reg) = &registry {
        let (ep_lost, ep_checked) =
            endpoint_lost_updates(&api, reg, &mesh, &fleet, sim_nodes).await?;
        out.insert("route_lost_updates".into(), json!(lost));
        out.insert("endpoint_lost_updates".into(), json!(ep_lost));
        out.insert("checked_eds_clusters".into(), json!(ep_checked));
        lost += ep_lost;
    }
    let mut stale = stale;
    if !gw_fleet.specs.is_empty() {
        settle(&gw_fleet, Duration::from_secs(1), timeout).await;
        let (gw_lost, gw_checked, gw_stale) =
            gateway_lost_updates(&api, &mesh, &gw_fleet, per_gw).await;
        out.insert("gateway_lost_updates".into(), json!(gw_lost));
        out.insert("gateway_checked_hosts".into(), json!(gw_checked));
        out.insert("gateway_stale_versions".into(), json!(gw_stale));
        lost += gw_lost;
        stale += gw_stale;
    }
    out.insert("lost_updates".into(), json!(lost));
    out.insert("checked_backends".into(), json!(checked));
    out.insert("stale_versions".into(), json!(stale));
    ok &= lost == 0 && stale == 0;
    let nacks: u64 = (0..fleet.specs.len())
        .map(|i| fleet.with(i, |v| v.nacks))
        .sum();
    out.insert("nacks_sent".into(), json!(nacks));
    out.insert("nacking_proxies".into(), json!(nackers.len()));

    // 6. Totals.
    traffic(&mut out, &fleet);
    server_metrics(&mut out, &api).await;
    let end = server.as_ref().map(|s| s.usage()).unwrap_or_default();
    out.insert("server_cpu_total_s".into(), json!(end.cpu_s - cpu0.cpu_s));
    out.insert("server_rss_end_bytes".into(), json!(end.rss));
    out.insert(
        "server_rss_peak_bytes".into(),
        json!(end.hwm.max(after.hwm)),
    );
    let bench = usage(std::process::id());
    out.insert("bench_cpu_s".into(), json!(bench.cpu_s));
    out.insert("bench_rss_bytes".into(), json!(bench.rss));
    out.insert("wall_s".into(), json!(secs(wall.elapsed())));
    out.insert("ok".into(), json!(ok));
    // Keys every scenario reports; null when the scenario does not measure them.
    for key in REQUIRED_KEYS {
        out.entry(key.to_owned()).or_insert(Value::Null);
    }
    fleet.stop().await;
    gw_fleet.stop().await;
    if let Some(mut s) = server.take() {
        if !ok {
            eprintln!("control plane log tail:\n{}", s.log_tail(20));
        }
        s.kill();
    }
    print_table(&out);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&Value::Object(out))?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ok)
}

fn meshplane_bin(args: &XdsArgs) -> anyhow::Result<PathBuf> {
    find_meshplane(args.meshplane.as_ref())
}

/// `explicit`, else the `meshplane` binary next to this one.
pub(crate) fn find_meshplane(explicit: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("exe dir")?;
    for cand in [dir.join("meshplane"), dir.join("../meshplane")] {
        if cand.is_file() {
            return Ok(cand);
        }
    }
    bail!(
        "no meshplane binary next to {}: build it (`cargo build --release -p meshplane`) or pass --meshplane",
        exe.display()
    )
}

pub(crate) fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1000.0
}

/// Waits until the reconciler serves node `i`'s configuration with its routes.
pub(crate) async fn wait_translated(api: &Api, mesh: &Mesh, i: usize) -> anyhow::Result<()> {
    let node = mesh.node_id(i);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(v) = api
            .get(&format!("/meshplane/v1/proxy-config?node={node}"))
            .await
            && v["resources"]["rds"]
                .as_object()
                .is_some_and(|o| !o.is_empty())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the control plane never served {node}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn wait_synced(
    fleet: &Fleet,
    since: Option<Instant>,
    timeout: Duration,
    what: &str,
) -> usize {
    let deadline = Instant::now() + timeout;
    let mut last_print = Instant::now();
    loop {
        let n = fleet.synced_since(since);
        if n == fleet.specs.len() || Instant::now() > deadline {
            if n < fleet.specs.len() {
                let errs: BTreeMap<String, usize> = (0..fleet.specs.len())
                    .filter_map(|i| fleet.with(i, |v| v.last_error.clone()))
                    .fold(BTreeMap::new(), |mut m, e| {
                        *m.entry(e).or_default() += 1;
                        m
                    });
                eprintln!(
                    "{what}: only {n}/{} synced; stream errors: {errs:?}",
                    fleet.specs.len()
                );
            }
            return n;
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!("{what}: {n}/{} synced", fleet.specs.len());
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no proxy's view changed for `quiet` (bounded by `timeout`).
async fn settle(fleet: &Fleet, quiet: Duration, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let total = |f: &Fleet| -> u64 {
        (0..f.specs.len())
            .map(|i| f.with(i, |v| v.responses.iter().sum::<u64>()))
            .sum()
    };
    let mut last = total(fleet);
    let mut since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = total(fleet);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
    }
}

fn memory(out: &mut Out, before: Usage, after: Usage, proxies: usize) {
    out.insert("rss_before_bytes".into(), json!(before.rss));
    out.insert("rss_after_bytes".into(), json!(after.rss));
    let per = after.rss.saturating_sub(before.rss) as f64 / proxies.max(1) as f64;
    out.insert("rss_per_proxy_bytes".into(), json!(per.round()));
}

/// Initial-sync bytes per proxy grouped by its node's number of backends.
fn bytes_by_backends(out: &mut Out, fleet: &Fleet, mesh: &Mesh, sim_nodes: usize) {
    let mut by: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
    for i in 0..fleet.specs.len() {
        let b = mesh.nodes[i % sim_nodes].backends.len();
        let bytes = fleet.with(i, |v| v.initial_bytes);
        let e = by.entry(b).or_default();
        e.0 += bytes;
        e.1 += 1;
    }
    let total: u64 = by.values().map(|e| e.0).sum();
    let n: u64 = by.values().map(|e| e.1).sum();
    out.insert(
        "initial_bytes_per_proxy".into(),
        json!((total as f64 / n.max(1) as f64).round()),
    );
    let m: Map<String, Value> = by
        .into_iter()
        .map(|(b, (bytes, n))| (b.to_string(), json!((bytes as f64 / n as f64).round())))
        .collect();
    out.insert("initial_bytes_by_backends".into(), Value::Object(m));
}

/// Changes route `i`'s weights through the API; returns the change to track.
async fn change(
    mesh: &mut Mesh,
    api: &Api,
    route: usize,
    callers: &[Vec<usize>],
    rng: &mut Rng,
    seen: &mut BTreeMap<usize, Vec<Vec<u32>>>,
) -> anyhow::Result<Change> {
    mesh.reweigh(route, rng, seen);
    let t0 = Instant::now();
    mesh.write_route(api, route).await?;
    let write_ms = ms(t0.elapsed());
    Ok(Change {
        route,
        service: mesh.service(route),
        weights: mesh.expected_weights(route),
        endpoint: None,
        t0,
        pending: callers[route].clone(),
        lat_ms: Vec::new(),
        affected: callers[route].len(),
        superseded: false,
        mesh_wide: route == 0,
        write_ms,
    })
}

/// Moves converged proxies of each change from `pending` to `lat_ms`.
fn poll(fleet: &Fleet, changes: &mut [Change]) {
    for c in changes.iter_mut().filter(|c| !c.superseded) {
        let mut still = Vec::with_capacity(c.pending.len());
        for &p in &c.pending {
            let done = fleet.with(p, |v| match &c.endpoint {
                None => (v.routes.get(&c.service) == Some(&c.weights))
                    .then(|| v.route_changed_at.get(&c.service).copied())
                    .flatten(),
                Some((addr, present)) => {
                    let has = v
                        .endpoints
                        .get(&c.service)
                        .is_some_and(|eps| eps.iter().any(|e| e == addr));
                    (has == *present)
                        .then(|| v.endpoints_changed_at.get(&c.service).copied())
                        .flatten()
                }
            });
            match done {
                Some(at) => c.lat_ms.push(ms(at.saturating_duration_since(c.t0))),
                None => still.push(p),
            }
        }
        c.pending = still;
    }
}

/// Polls until every change converged (or `timeout`).
async fn track(fleet: &Fleet, changes: &mut [Change], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        poll(fleet, changes);
        if changes.iter().all(|c| c.superseded || c.pending.is_empty()) || Instant::now() > deadline
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// (b): `churn_rate` changes per second of random routes for `churn_seconds`, writes
/// concurrent but never two in flight for one route.
async fn churn(
    mesh: &mut Mesh,
    api: &Api,
    fleet: &Fleet,
    callers: &[Vec<usize>],
    rng: &mut Rng,
    args: &XdsArgs,
) -> anyhow::Result<Vec<Change>> {
    let changes: Arc<Mutex<Vec<Change>>> = Arc::default();
    let in_flight: Arc<Mutex<HashSet<usize>>> = Arc::default();
    let mut seen = BTreeMap::new();
    let period = Duration::from_secs_f64(1.0 / args.churn_rate.max(0.1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + Duration::from_secs(args.churn_seconds);
    let mut writes = Vec::new();
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut polled = Instant::now();
    while Instant::now() < end {
        tick.tick().await;
        let route = loop {
            let r = rng.range(0, mesh.routes.len() as u64 - 1) as usize;
            if !in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&r)
            {
                break r;
            }
        };
        mesh.reweigh(route, rng, &mut seen);
        let spec = mesh.clone();
        let api = api.clone();
        let pending = callers[route].clone();
        let (changes2, in_flight2, errors2) = (changes.clone(), in_flight.clone(), errors.clone());
        in_flight2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(route);
        writes.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = spec.write_route(&api, route).await;
            let write_ms = ms(t0.elapsed());
            in_flight2
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&route);
            if let Err(e) = r {
                errors2
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(e.to_string());
                return;
            }
            record(
                &changes2,
                Change {
                    route,
                    service: spec.service(route),
                    weights: spec.expected_weights(route),
                    endpoint: None,
                    t0,
                    affected: pending.len(),
                    pending,
                    lat_ms: Vec::new(),
                    superseded: false,
                    mesh_wide: route == 0,
                    write_ms,
                },
            );
        }));
        if polled.elapsed() > Duration::from_millis(5) {
            poll(
                fleet,
                &mut changes.lock().unwrap_or_else(|e| e.into_inner()),
            );
            polled = Instant::now();
        }
    }
    // Superseded flags were set in commit order; a change superseded by an earlier-started
    // write cannot happen (one write per route at a time).
    Ok(finish_churn("churn", writes, &errors, &changes, fleet, args).await)
}

/// (c): `churn_rate` Cloud Map instance changes per second for `churn_seconds`; each
/// registers a new instance in, or deregisters one from, a random node's service (at least
/// one instance stays), never two in flight for one service.
async fn endpoint_churn(
    reg: &mut Registry,
    mesh: &Mesh,
    api: &Api,
    fleet: &Fleet,
    eds_callers: &[Vec<usize>],
    rng: &mut Rng,
    args: &XdsArgs,
) -> anyhow::Result<Vec<Change>> {
    let changes: Arc<Mutex<Vec<Change>>> = Arc::default();
    let in_flight: Arc<Mutex<HashSet<usize>>> = Arc::default();
    let period = Duration::from_secs_f64(1.0 / args.churn_rate.max(0.1));
    let mut tick = tokio::time::interval(period);
    // Burst: a loop woken late (two shared cores) catches up, so the rate offered to the
    // control plane is `churn_rate` on average rather than bounded by the bench's scheduling.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs(args.churn_seconds);
    let mut writes = Vec::new();
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut polled = Instant::now();
    let services = reg.service_ids.len();
    while Instant::now() < end {
        tick.tick().await;
        let mut pick = None;
        for _ in 0..100 {
            let s = rng.range(0, services as u64 - 1) as usize;
            if !in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&s)
            {
                pick = Some(s);
                break;
            }
        }
        let Some(s) = pick else { continue };
        let register = reg.instances[s].len() <= 1 || rng.unit() < 0.5;
        let (op, body, addr) = if register {
            let inst = reg.new_instance();
            let body = reg.register_request(s, &inst);
            let addr = inst.addr.clone();
            reg.instances[s].push(inst);
            ("RegisterInstance", body, addr)
        } else {
            let k = rng.range(0, reg.instances[s].len() as u64 - 1) as usize;
            let inst = reg.instances[s].remove(k);
            (
                "DeregisterInstance",
                reg.deregister_request(s, &inst),
                inst.addr,
            )
        };
        let api = api.clone();
        let cluster = mesh.cluster(s);
        let pending = eds_callers[s].clone();
        let (changes2, in_flight2, errors2) = (changes.clone(), in_flight.clone(), errors.clone());
        in_flight2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(s);
        writes.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = api.cloud_map(op, body).await;
            let write_ms = ms(t0.elapsed());
            in_flight2
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&s);
            if let Err(e) = r {
                errors2
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("{e:#}"));
                return;
            }
            record(
                &changes2,
                Change {
                    route: s,
                    service: cluster,
                    weights: Vec::new(),
                    endpoint: Some((addr, register)),
                    t0,
                    affected: pending.len(),
                    pending,
                    lat_ms: Vec::new(),
                    superseded: false,
                    mesh_wide: false,
                    write_ms,
                },
            );
        }));
        if polled.elapsed() > Duration::from_millis(5) {
            poll(
                fleet,
                &mut changes.lock().unwrap_or_else(|e| e.into_inner()),
            );
            polled = Instant::now();
        }
    }
    Ok(finish_churn("endpoint churn", writes, &errors, &changes, fleet, args).await)
}

/// Records a committed change; earlier changes of the same route (or service) that had not
/// converged yet are overtaken by it (the loop polls every 5 ms, so a converged change has
/// an empty `pending` by now).
fn record(changes: &Mutex<Vec<Change>>, change: Change) {
    let mut cs = changes.lock().unwrap_or_else(|e| e.into_inner());
    for c in cs
        .iter_mut()
        .filter(|c| c.route == change.route && !c.pending.is_empty())
    {
        c.superseded = true;
    }
    cs.push(change);
}

/// Waits for the churn's writes, reports failed ones, and tracks every change until its
/// proxies converged (or the phase timeout).
async fn finish_churn(
    label: &str,
    writes: Vec<tokio::task::JoinHandle<()>>,
    errors: &Mutex<Vec<String>>,
    changes: &Mutex<Vec<Change>>,
    fleet: &Fleet,
    args: &XdsArgs,
) -> Vec<Change> {
    for w in writes {
        let _ = w.await;
    }
    let errs = errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(first) = errs.first() {
        eprintln!("{label}: {} writes failed, first: {first}", errs.len());
    }
    let mut all = std::mem::take(&mut *changes.lock().unwrap_or_else(|e| e.into_inner()));
    all.sort_by_key(|c| c.t0);
    track(fleet, &mut all, Duration::from_secs(args.phase_timeout_s)).await;
    all
}

/// Compares every proxy's held EDS endpoints with the registry's instances (DiscoverInstances,
/// HealthStatus ALL): one mismatch per (proxy, cluster) whose endpoints differ, that the proxy
/// lacks, or that it holds without needing it. Returns `(lost, checked)`.
async fn endpoint_lost_updates(
    api: &Api,
    reg: &Registry,
    mesh: &Mesh,
    fleet: &Fleet,
    sim_nodes: usize,
) -> anyhow::Result<(usize, usize)> {
    let truth: Vec<Vec<String>> = futures::stream::iter(0..reg.service_ids.len())
        .map(|i| async move { reg.read_endpoints(api, &mesh.nodes[i].name).await })
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()
        .context("reading the registry's instances")?;
    let targets: Vec<Vec<(String, usize)>> = (0..sim_nodes)
        .map(|n| {
            mesh.egress_targets(n)
                .into_iter()
                .map(|t| (mesh.cluster(t), t))
                .collect()
        })
        .collect();
    let (mut lost, mut checked) = (0, 0);
    let mut examples = Vec::new();
    for p in 0..fleet.specs.len() {
        let want = &targets[p % sim_nodes];
        fleet.with(p, |v| {
            for (cluster, t) in want {
                checked += 1;
                if v.endpoints.get(cluster) != Some(&truth[*t]) {
                    lost += 1;
                    if examples.len() < 3 {
                        examples.push(format!(
                            "proxy {p} ({:?}) holds {:?} for {cluster}, registry says {:?}",
                            fleet.specs[p].flavor,
                            v.endpoints.get(cluster),
                            truth[*t]
                        ));
                    }
                }
            }
            for cluster in v.endpoints.keys() {
                if !want.iter().any(|(c, _)| c == cluster) {
                    lost += 1;
                    if examples.len() < 3 {
                        examples.push(format!("proxy {p} holds unexpected cluster {cluster}"));
                    }
                }
            }
        });
    }
    for e in examples {
        eprintln!("endpoint mismatch: {e}");
    }
    Ok((lost, checked))
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn stats(out: &mut Out, prefix: &str, samples: &mut [f64]) {
    samples.sort_by(|a, b| a.total_cmp(b));
    out.insert(format!("{prefix}samples"), json!(samples.len()));
    for (k, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0)] {
        out.insert(format!("{prefix}{k}_ms"), json!(percentile(samples, p)));
    }
    out.insert(
        format!("{prefix}max_ms"),
        json!(samples.last().copied().unwrap_or(0.0)),
    );
}

fn convergence<'a>(out: &mut Out, prefix: &str, changes: impl Iterator<Item = &'a Change>) {
    let mut lat = Vec::new();
    let mut missing = 0;
    let mut affected = 0;
    let mut n = 0;
    let mut writes = Vec::new();
    for c in changes {
        n += 1;
        lat.extend_from_slice(&c.lat_ms);
        affected += c.affected;
        writes.push(c.write_ms);
        if !c.superseded {
            missing += c.pending.len();
        }
    }
    stats(out, &format!("{prefix}convergence_"), &mut lat);
    out.insert(format!("{prefix}changes"), json!(n));
    out.insert(format!("{prefix}affected_proxies"), json!(affected));
    out.insert(format!("{prefix}not_converged"), json!(missing));
    writes.sort_by(|a, b| a.total_cmp(b));
    out.insert(
        format!("{prefix}api_write_p50_ms"),
        json!(percentile(&writes, 50.0)),
    );
}

fn changes_summary(out: &mut Out, all: &[Change]) {
    let superseded = all.iter().filter(|c| c.superseded).count();
    out.insert("superseded_changes".into(), json!(superseded));
    if let (Some(a), Some(b)) = (all.first(), all.last()) {
        let span = b.t0.duration_since(a.t0).as_secs_f64();
        if span > 0.0 {
            out.insert(
                "changes_per_s".into(),
                json!(((all.len() - 1) as f64 / span * 10.0).round() / 10.0),
            );
        }
    }
}

/// Compares every proxy's held RDS weights with the store's routes, and its held versions
/// with what the control plane serves for its node.
async fn lost_updates(
    api: &Api,
    mesh: &Mesh,
    fleet: &Fleet,
    nackers: &HashSet<usize>,
    sim_nodes: usize,
) -> anyhow::Result<(usize, usize, usize)> {
    let truth: Vec<Vec<(String, u32)>> = futures::stream::iter(0..mesh.routes.len())
        .map(|i| async move { mesh.read_weights(api, i).await })
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let served: Vec<Value> = futures::stream::iter(0..sim_nodes)
        .map(|i| async move {
            api.get(&format!(
                "/meshplane/v1/proxy-config?node={}",
                mesh.node_id(i)
            ))
            .await
            .map(|v| v["versions"].clone())
            .unwrap_or(Value::Null)
        })
        .buffered(8)
        .collect()
        .await;
    let (mut lost, mut checked, mut stale) = (0, 0, 0);
    let mut examples = Vec::new();
    for p in 0..fleet.specs.len() {
        if nackers.contains(&p) {
            continue;
        }
        let node = p % sim_nodes;
        fleet.with(p, |v| {
            for b in &mesh.nodes[node].backends {
                checked += 1;
                if v.routes.get(&mesh.service(*b)) != Some(&truth[*b]) {
                    lost += 1;
                    if examples.len() < 3 {
                        examples.push(format!(
                            "proxy {p} ({}) holds {:?} for {}, store says {:?}",
                            fleet.specs[p].node_id,
                            v.routes.get(&mesh.service(*b)),
                            mesh.service(*b),
                            truth[*b]
                        ));
                    }
                }
            }
            for (t, name) in TYPES.iter().enumerate() {
                let want = served[node][*name].as_str().unwrap_or_default();
                if t == 1 && v.acked_version[t].is_none() {
                    continue; // no EDS clusters: never subscribed
                }
                if v.acked_version[t].as_deref() != Some(want) {
                    stale += 1;
                    if examples.len() < 6 {
                        examples.push(format!(
                            "proxy {p} ({:?}) acked {name} {:?}, served {want}",
                            fleet.specs[p].flavor, v.acked_version[t]
                        ));
                    }
                }
            }
        });
    }
    for e in examples {
        eprintln!("mismatch: {e}");
    }
    Ok((lost, checked, stale))
}

/// Compares every gateway proxy's hop-2 virtual hosts (one per gateway route, with its
/// target router's weights) with its gateway's gateway routes, and its held versions with what the
/// control plane serves for the gateway. Returns (lost, checked, stale).
async fn gateway_lost_updates(
    api: &Api,
    mesh: &Mesh,
    fleet: &Fleet,
    per_gw: usize,
) -> (usize, usize, usize) {
    let served: Vec<Value> = futures::stream::iter(0..mesh.gateways.len())
        .map(|g| async move {
            api.get(&format!(
                "/meshplane/v1/proxy-config?node={}",
                mesh.gateway_id(g)
            ))
            .await
            .map(|v| v["versions"].clone())
            .unwrap_or(Value::Null)
        })
        .buffered(8)
        .collect()
        .await;
    let (mut lost, mut checked, mut stale) = (0, 0, 0);
    let mut examples = Vec::new();
    for p in 0..fleet.specs.len() {
        let g = p / per_gw;
        let want: BTreeMap<String, Vec<(String, u32)>> = mesh.gateways[g]
            .routes
            .iter()
            .enumerate()
            .map(|(k, s)| (mesh.gateway_host(k), mesh.expected_weights(*s)))
            .collect();
        fleet.with(p, |v| {
            // Hop 2's gateway-route virtual hosts (not its unknown-target catch-all, not
            // hop 1's `*`).
            let held: BTreeMap<&String, &Vec<(String, u32)>> = v
                .routes
                .iter()
                .filter(|(n, _)| n.ends_with(".gateway.meshplane"))
                .collect();
            checked += want.len();
            let missing = want.iter().filter(|(n, w)| held.get(n) != Some(w)).count();
            let extra = held.keys().filter(|n| !want.contains_key(**n)).count();
            if missing + extra > 0 && examples.len() < 3 {
                examples.push(format!(
                    "gateway proxy {p} ({}) holds {:?}, wants {:?}",
                    fleet.specs[p].node_id,
                    held.keys().collect::<Vec<_>>(),
                    want.keys().collect::<Vec<_>>()
                ));
            }
            lost += missing + extra;
            for (t, name) in TYPES.iter().enumerate() {
                let want = served[g][*name].as_str().unwrap_or_default();
                if t == 1 && v.acked_version[t].is_none() {
                    continue; // no EDS clusters: never subscribed
                }
                if v.acked_version[t].as_deref() != Some(want) {
                    stale += 1;
                    if examples.len() < 6 {
                        examples.push(format!(
                            "gateway proxy {p} ({:?}) acked {name} {:?}, served {want}",
                            fleet.specs[p].flavor, v.acked_version[t]
                        ));
                    }
                }
            }
        });
    }
    for e in examples {
        eprintln!("mismatch: {e}");
    }
    (lost, checked, stale)
}

fn traffic(out: &mut Out, fleet: &Fleet) {
    let n = fleet.specs.len().max(1) as f64;
    let mut bytes = [0u64; 4];
    let mut responses = [0u64; 4];
    for i in 0..fleet.specs.len() {
        fleet.with(i, |v| {
            for t in 0..4 {
                bytes[t] += v.bytes[t];
                responses[t] += v.responses[t];
            }
        });
    }
    out.insert(
        "bytes_per_proxy".into(),
        json!((bytes.iter().sum::<u64>() as f64 / n).round()),
    );
    let by: Map<String, Value> = TYPES
        .iter()
        .enumerate()
        .map(|(t, name)| (name.to_string(), json!(responses[t])))
        .collect();
    out.insert("responses_by_type".into(), Value::Object(by));
    let by: Map<String, Value> = TYPES
        .iter()
        .enumerate()
        .map(|(t, name)| (name.to_string(), json!(bytes[t])))
        .collect();
    out.insert("bytes_by_type".into(), Value::Object(by));
    let delta = fleet
        .specs
        .iter()
        .filter(|s| s.flavor == Flavor::Delta)
        .count();
    out.insert("delta_proxies".into(), json!(delta));
}

/// `meshplane_xds_pushes_total{type}` and `meshplane_xds_push_bytes_total{type}`.
async fn server_metrics(out: &mut Out, api: &Api) {
    let Ok(text) = api.get_text("/metrics").await else {
        return;
    };
    let (pushes, bytes) = parse_metrics(&text);
    out.insert("server_pushes_by_type".into(), Value::Object(pushes));
    out.insert("server_push_bytes_by_type".into(), Value::Object(bytes));
}

/// `meshplane_xds_pushes_total{type}` now (empty when `/metrics` does not answer).
async fn server_pushes(api: &Api) -> Map<String, Value> {
    match api.get_text("/metrics").await {
        Ok(text) => parse_metrics(&text).0,
        Err(_) => Map::new(),
    }
}

/// Pushes and pushed bytes by xDS type from the Prometheus text.
fn parse_metrics(text: &str) -> (Map<String, Value>, Map<String, Value>) {
    let mut pushes = Map::new();
    let mut bytes = Map::new();
    for line in text.lines() {
        let target = if line.starts_with("meshplane_xds_pushes_total{") {
            &mut pushes
        } else if line.starts_with("meshplane_xds_push_bytes_total{") {
            &mut bytes
        } else {
            continue;
        };
        let ty = line
            .split("type=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        let v: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        target.insert(ty.to_owned(), json!(v));
    }
    (pushes, bytes)
}

// --- real Envoys --------------------------------------------------------------------------

async fn real_envoys(
    mesh: &Mesh,
    nodes: &[usize],
    xds: std::net::SocketAddr,
    api: &Api,
    timeout: Duration,
) -> anyhow::Result<Vec<meshplane_testkit::envoy::Envoy>> {
    use meshplane_testkit::envoy::{Envoy, EnvoyOptions, XdsFlavor};
    let mut envoys = Vec::new();
    for (k, n) in nodes.iter().enumerate() {
        let flavor = if k % 2 == 0 {
            XdsFlavor::Sotw
        } else {
            XdsFlavor::Delta
        };
        let mut opts = EnvoyOptions::new(mesh.node_id(*n), xds, flavor);
        opts.log_level = "warn".into();
        envoys.push(Envoy::start_with(opts));
    }
    // Ready when each holds the route of the mesh-wide service.
    let want = mesh.expected_weights(0);
    let deadline = Instant::now() + timeout;
    for e in &envoys {
        // LIVE once its initial CDS/LDS fetch completed; the admin API answers from then on.
        e.wait_live_within(timeout).await;
        loop {
            if envoy_weights(e, &mesh.service(0)).await.as_ref() == Some(&want) {
                break;
            }
            if Instant::now() > deadline {
                bail!("real Envoy {} never got its routes", e.node_id());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let _ = api;
    Ok(envoys)
}

/// The weights an Envoy holds for virtual host `service`, from its config dump.
async fn envoy_weights(
    e: &meshplane_testkit::envoy::Envoy,
    service: &str,
) -> Option<Vec<(String, u32)>> {
    let dump = e.config_dump(Some("dynamic_route_configs")).await;
    let configs = dump["configs"].as_array()?;
    for c in configs {
        for vh in c["route_config"]["virtual_hosts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if vh["name"].as_str() != Some(service) {
                continue;
            }
            let mut w = Vec::new();
            for r in vh["routes"].as_array().into_iter().flatten() {
                for c in r["route"]["weighted_clusters"]["clusters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    w.push((
                        c["name"].as_str().unwrap_or_default().to_owned(),
                        c["weight"].as_u64().unwrap_or(0) as u32,
                    ));
                }
            }
            w.sort();
            return Some(w);
        }
    }
    None
}

/// Per Envoy: ms from the write until its config dump shows the new weights (polled).
async fn envoy_convergence(
    envoys: &[meshplane_testkit::envoy::Envoy],
    service: &str,
    want: &[(String, u32)],
    t0: Instant,
    timeout: Duration,
) -> Vec<Option<f64>> {
    let polls = envoys.iter().map(|e| async move {
        let deadline = t0 + timeout;
        loop {
            if envoy_weights(e, service).await.as_deref() == Some(want) {
                return Some(ms(t0.elapsed()));
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    futures::future::join_all(polls).await
}

/// ms from the write to each real Envoy's last RDS ACK, from proxy status `ackedAt`.
async fn envoy_acked_at(api: &Api, mesh: &Mesh, nodes: &[usize], t0: SystemTime) -> Vec<f64> {
    let Ok(v) = api.get("/meshplane/v1/proxy-status").await else {
        return Vec::new();
    };
    let t0 = t0
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let ids: HashSet<String> = nodes.iter().map(|n| mesh.node_id(*n)).collect();
    let mut out = Vec::new();
    for p in v["proxies"].as_array().into_iter().flatten() {
        if !ids.contains(p["node"].as_str().unwrap_or_default()) {
            continue;
        }
        for t in p["types"].as_array().into_iter().flatten() {
            if t["type"].as_str() == Some("rds")
                && let Some(at) = t["ackedAt"].as_f64()
            {
                out.push(((at - t0) * 1000.0).max(0.0));
            }
        }
    }
    out
}

// --- output -------------------------------------------------------------------------------

fn print_table(out: &Out) {
    let rows: &[(&str, &str)] = &[
        ("scenario", "scenario"),
        ("proxies", "proxies"),
        ("virtual_nodes", "virtual nodes"),
        ("delta_proxies", "delta proxies"),
        ("mesh_create_s", "mesh created through the API (s)"),
        (
            "initial_sync_s",
            "initial connect + sync of all proxies (s)",
        ),
        (
            "initial_sync_cpu_s",
            "control-plane CPU during initial sync (s)",
        ),
        (
            "rss_before_bytes",
            "control-plane RSS before connections (B)",
        ),
        ("rss_after_bytes", "control-plane RSS after connections (B)"),
        (
            "rss_per_proxy_bytes",
            "control-plane RSS per connected proxy (B)",
        ),
        (
            "initial_bytes_per_proxy",
            "config bytes per proxy, initial sync",
        ),
        ("changes", "changes measured"),
        ("affected_proxies", "proxy updates expected"),
        ("convergence_p50_ms", "write -> ACK p50 (ms)"),
        ("convergence_p90_ms", "write -> ACK p90 (ms)"),
        ("convergence_p99_ms", "write -> ACK p99 (ms)"),
        ("convergence_max_ms", "write -> ACK max (ms)"),
        ("not_converged", "proxies that never converged"),
        ("scoped_convergence_p50_ms", "scoped change p50 (ms)"),
        ("scoped_convergence_p99_ms", "scoped change p99 (ms)"),
        ("scoped_convergence_max_ms", "scoped change max (ms)"),
        ("changes_per_s", "changes per second achieved"),
        (
            "endpoint_affected_proxies_per_change",
            "endpoint change: affected proxies (avg)",
        ),
        (
            "endpoint_api_write_p99_ms",
            "endpoint change: API write p99 (ms)",
        ),
        (
            "endpoint_after_write_p50_ms",
            "endpoint change: API answer -> ACK p50 (ms)",
        ),
        (
            "endpoint_after_write_p99_ms",
            "endpoint change: API answer -> ACK p99 (ms)",
        ),
        (
            "churn_eds_responses_to_unaffected_proxies",
            "EDS responses to unaffected proxies",
        ),
        ("churn_eds_noop_responses", "EDS responses changing nothing"),
        ("gateway_proxies", "gateway proxies (simulated)"),
        ("gateway_initial_synced", "gateway proxies synced"),
        (
            "gateway_initial_bytes_per_proxy",
            "config bytes per gateway proxy, initial sync",
        ),
        ("gateway_changes", "gateway route changes"),
        ("gateway_affected_proxies", "gateway proxy updates expected"),
        (
            "gateway_convergence_p50_ms",
            "gateway route write -> ACK p50 (ms)",
        ),
        (
            "gateway_convergence_p90_ms",
            "gateway route write -> ACK p90 (ms)",
        ),
        (
            "gateway_convergence_p99_ms",
            "gateway route write -> ACK p99 (ms)",
        ),
        (
            "gateway_convergence_max_ms",
            "gateway route write -> ACK max (ms)",
        ),
        (
            "gateway_not_converged",
            "gateway proxies that never converged",
        ),
        (
            "gateway_sidecar_rds_responses",
            "RDS responses to sidecars during the changes",
        ),
        ("gateway_lost_updates", "lost updates: gateways"),
        ("gateway_stale_versions", "stale versions: gateways"),
        ("resync_after_restart_s", "resync after restart (s)"),
        (
            "real_envoy_config_dump_p50_ms",
            "real Envoy write -> config p50 (ms)",
        ),
        (
            "real_envoy_acked_p99_ms",
            "real Envoy write -> ACK p99 (ms)",
        ),
        ("scenario_cpu_s", "control-plane CPU during scenario (s)"),
        ("bytes_per_proxy", "bytes received per proxy, total"),
        ("lost_updates", "lost updates"),
        ("endpoint_lost_updates", "lost updates: endpoints"),
        ("stale_versions", "stale versions"),
        ("server_cpu_total_s", "control-plane CPU total (s)"),
    ];
    println!("{:<48} value", "measurement");
    println!("{:-<48} -----", "");
    for (key, label) in rows.iter().copied() {
        if let Some(v) = out.get(key) {
            println!("{label:<48} {v}");
        }
    }
    if let Some(v) = out.get("initial_bytes_by_backends") {
        println!("{:<48} {v}", "initial config bytes by backends");
    }
    if let Some(v) = out.get("server_pushes_by_type") {
        println!("{:<48} {v}", "server pushes by type");
    }
    if let Some(v) = out.get("gateway_server_pushes_by_type") {
        println!(
            "{:<48} {v}",
            "server pushes by type during the gateway changes"
        );
    }
    if let Some(v) = out.get("gateway_sidecar_responses_by_type") {
        println!("{:<48} {v}", "sidecar responses during the gateway changes");
    }
    if let Some(v) = out.get("gateway_proxy_responses_by_type") {
        println!("{:<48} {v}", "gateway proxy responses during the changes");
    }
    if let Some(v) = out.get("churn_server_pushes_by_type") {
        println!("{:<48} {v}", "server pushes by type during the churn");
    }
}
