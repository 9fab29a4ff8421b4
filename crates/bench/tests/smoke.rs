//! Keeps the bench tool working: a tiny run (20 proxies, both xDS flavours) must sync every
//! proxy, converge a change and lose no update. No timing is asserted.

use std::process::Command;

use serde_json::Value;

fn run(scenario: &str, extra: &[&str]) -> Value {
    run_with(scenario, "8", extra)
}

fn run_with(scenario: &str, virtual_nodes: &str, extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("out.json");
    let meshplane = meshplane_testkit::control_plane::meshplane_binary();
    let out = Command::new(env!("CARGO_BIN_EXE_meshplane-bench"))
        .args([
            "xds",
            "--proxies",
            "20",
            "--virtual-nodes",
            virtual_nodes,
            "--seed",
            "7",
        ])
        .args([
            "--scenario",
            scenario,
            "--changes",
            "1",
            "--phase-timeout-s",
            "60",
        ])
        .args(extra)
        .arg("--meshplane")
        .arg(&meshplane)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run meshplane-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "meshplane-bench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let text = std::fs::read_to_string(&json).expect("json written");
    serde_json::from_str(&text).expect("json parses")
}

#[test]
fn route_change_syncs_every_proxy_and_loses_no_update() {
    let v = run("route-change", &[]);
    assert_eq!(v["proxies"], 20);
    assert_eq!(v["initial_synced"], 20, "{v:#}");
    assert_eq!(v["lost_updates"], 0, "{v:#}");
    assert_eq!(v["stale_versions"], 0, "{v:#}");
    assert_eq!(v["not_converged"], 0, "{v:#}");
    assert!(v["delta_proxies"].as_u64().unwrap() > 0, "{v:#}");
    for key in [
        "convergence_p50_ms",
        "convergence_p99_ms",
        "convergence_max_ms",
        "initial_sync_s",
        "rss_per_proxy_bytes",
    ] {
        assert!(v[key].is_number(), "{key} missing: {v:#}");
    }
}

#[test]
fn reconnect_storm_resyncs_every_proxy() {
    let v = run("reconnect-storm", &[]);
    assert_eq!(v["resynced"], 20, "{v:#}");
    assert_eq!(v["lost_updates"], 0, "{v:#}");
    assert!(v["resync_after_restart_s"].is_number(), "{v:#}");
}

#[test]
fn endpoint_churn_converges_and_loses_no_endpoint() {
    let v = run_with(
        "endpoint-churn",
        "10",
        &["--churn-rate", "20", "--churn-seconds", "2"],
    );
    assert_eq!(v["initial_synced"], 20, "{v:#}");
    assert!(v["endpoint_changes"].as_u64().unwrap() > 0, "{v:#}");
    assert!(
        v["endpoint_convergence_samples"].as_u64().unwrap() > 0,
        "no endpoint change converged: {v:#}"
    );
    assert_eq!(v["endpoint_not_converged"], 0, "{v:#}");
    assert!(v["checked_eds_clusters"].as_u64().unwrap() > 0, "{v:#}");
    assert_eq!(v["endpoint_lost_updates"], 0, "{v:#}");
    assert_eq!(v["lost_updates"], 0, "{v:#}");
    assert_eq!(v["stale_versions"], 0, "{v:#}");
    for key in [
        "convergence_p50_ms",
        "convergence_p99_ms",
        "convergence_max_ms",
        "initial_sync_s",
        "rss_per_proxy_bytes",
        "endpoint_changes_per_s",
    ] {
        assert!(v[key].is_number(), "{key} missing: {v:#}");
    }
}

/// The gateway scenario: 2 virtual gateways × 2 gateway Envoys next to 20 sidecars; one
/// gateway route is retargeted to another service, every Envoy of that gateway ACKs an RDS
/// response holding the new service's hop-2 virtual host, and no sidecar gets a push.
#[test]
fn gateway_route_change_reaches_its_gateway_and_no_sidecar() {
    let v = run("gateway", &["--gateways", "2", "--gateway-proxies", "2"]);
    assert_eq!(v["initial_synced"], 20, "{v:#}");
    assert_eq!(v["gateways"], 2, "{v:#}");
    assert_eq!(v["gateway_proxies"], 4, "{v:#}");
    assert_eq!(v["gateway_initial_synced"], 4, "{v:#}");
    assert_eq!(v["gateway_changes"], 1, "{v:#}");
    assert_eq!(v["gateway_affected_proxies"], 2, "{v:#}");
    assert_eq!(v["gateway_convergence_samples"], 2, "{v:#}");
    assert_eq!(v["gateway_not_converged"], 0, "{v:#}");
    assert_eq!(v["gateway_sidecar_rds_responses"], 0, "{v:#}");
    for t in ["cds", "eds", "lds", "rds"] {
        assert_eq!(v["gateway_sidecar_responses_by_type"][t], 0, "{t}: {v:#}");
    }
    // The gateway Envoys did get the change (RDS pushes only to them).
    assert!(
        v["gateway_server_pushes_by_type"]["rds"].as_f64().unwrap() >= 2.0,
        "{v:#}"
    );
    assert!(
        v["gateway_proxy_responses_by_type"]["rds"]
            .as_u64()
            .unwrap()
            >= 2,
        "{v:#}"
    );
    assert!(
        v["gateway_checked_hosts"].as_u64().unwrap() >= 4 * 5,
        "{v:#}"
    );
    assert_eq!(v["gateway_lost_updates"], 0, "{v:#}");
    assert_eq!(v["gateway_stale_versions"], 0, "{v:#}");
    assert_eq!(v["lost_updates"], 0, "{v:#}");
    assert_eq!(v["stale_versions"], 0, "{v:#}");
    for key in [
        "gateway_convergence_p50_ms",
        "gateway_convergence_p90_ms",
        "gateway_convergence_p99_ms",
        "gateway_convergence_max_ms",
    ] {
        assert!(v[key].is_number(), "{key} missing: {v:#}");
    }
}

/// The API bench: a small mesh is created and 8 disjoint writers run for 2 s; the server
/// lets no 409 through to them (fine-grained concurrency control) and no write fails.
#[test]
fn api_bench_disjoint_writers_see_no_conflict() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_meshplane-bench"))
        .args([
            "api",
            "--virtual-nodes",
            "24",
            "--writers",
            "8",
            "--seconds",
            "2",
        ])
        .arg("--meshplane")
        .arg(meshplane_testkit::control_plane::meshplane_binary())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run meshplane-bench api");
    assert!(
        out.status.success(),
        "meshplane-bench api failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["mesh_resources"], 97, "{v:#}");
    assert_eq!(v["mesh_create_conflicts"], 0, "{v:#}");
    assert_eq!(v["disjoint_conflicts"], 0, "{v:#}");
    assert_eq!(v["disjoint_errors"], 0, "{v:#}");
    assert!(v["disjoint_writes"].as_u64().unwrap() > 0, "{v:#}");
    assert!(v["disjoint_writes_per_s"].is_number(), "{v:#}");
}

/// `api --auth-compare` (with TLS): every variant's server is started, the signed ones
/// refuse an unsigned request, and the same writes and reads succeed on all of them, signed
/// with the generated administrator key and over TLS trusting `ca.pem`. No timing asserted.
#[test]
fn api_bench_auth_compare_signs_every_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_meshplane-bench"))
        .args([
            "api",
            "--auth-compare",
            "--with-tls",
            "--virtual-nodes",
            "12",
            "--writers",
            "4",
            "--rounds",
            "2",
            "--round-seconds",
            "0.5",
            "--read-seconds",
            "0.3",
        ])
        .arg("--meshplane")
        .arg(meshplane_testkit::control_plane::meshplane_binary())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run meshplane-bench api --auth-compare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "meshplane-bench api --auth-compare failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sigv4/none"), "{stdout}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["mode"], "auth-compare", "{v:#}");
    assert_eq!(v["unsigned_refused"], true, "{v:#}");
    for variant in ["none", "sigv4", "sigv4+tls"] {
        let r = &v["variants"][variant];
        assert!(r["writes"].as_u64().unwrap() > 0, "{variant}: {v:#}");
        assert!(r["reads"].as_u64().unwrap() > 0, "{variant}: {v:#}");
        assert_eq!(r["write_errors"], 0, "{variant}: {v:#}");
        assert_eq!(r["read_errors"], 0, "{variant}: {v:#}");
        assert_eq!(r["write_conflicts"], 0, "{variant}: {v:#}");
        assert_eq!(
            r["round_writes_per_s"].as_array().map(Vec::len),
            Some(2),
            "{variant}: {v:#}"
        );
        assert!(v["mesh_create"][variant]["seconds"].is_number(), "{v:#}");
    }
    for variant in ["sigv4", "sigv4+tls"] {
        assert!(
            v["ratio_to_none"][variant]["writes_per_s"].is_number(),
            "{variant}: {v:#}"
        );
    }
}

/// `xds --auth-compare`: 20 proxies storm `serve --auth none` and `serve --auth sigv4` in two
/// interleaved rounds; the sigv4 server refuses a stream without a node token with
/// UNAUTHENTICATED, and every proxy there syncs with the token minted for it. No timing
/// asserted.
#[test]
fn xds_auth_compare_syncs_every_proxy_with_its_node_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_meshplane-bench"))
        .args([
            "xds",
            "--auth-compare",
            "--proxies",
            "20",
            "--virtual-nodes",
            "8",
            "--rounds",
            "2",
            "--streams-per-conn",
            "5",
            "--phase-timeout-s",
            "60",
        ])
        .arg("--meshplane")
        .arg(meshplane_testkit::control_plane::meshplane_binary())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run meshplane-bench xds --auth-compare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "meshplane-bench xds --auth-compare failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sigv4/none"), "{stdout}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["mode"], "xds-auth-compare", "{v:#}");
    assert_eq!(
        v["tokenless_stream_refused_with"], "UNAUTHENTICATED",
        "{v:#}"
    );
    assert_eq!(v["mint"]["tokens"], 20, "{v:#}");
    assert!(v["mint"]["tokens_per_s"].is_number(), "{v:#}");
    for variant in ["none", "sigv4"] {
        let r = &v["variants"][variant];
        assert_eq!(
            r["round_synced"],
            serde_json::json!([20, 20]),
            "{variant}: {v:#}"
        );
        for key in [
            "sync_all_s_median",
            "streams_per_s",
            "first_config_p50_ms",
            "first_config_p99_ms",
            "server_cpu_ms_per_stream",
        ] {
            assert!(r[key].is_number(), "{variant} {key}: {v:#}");
        }
    }
    assert!(
        v["ratio_to_none"]["sigv4"]["sync_all_s_round_median"].is_number(),
        "{v:#}"
    );
}
