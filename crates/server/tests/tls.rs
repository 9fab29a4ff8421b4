//! TLS on the API and xDS ports, through the real `meshplane serve` process: the real AWS
//! CLI over https with meshplane's CA as its bundle, a real Envoy fetching its config over
//! TLS and serving traffic, plaintext clients failing fast on TLS ports, a stalled handshake
//! cut by `--tls-handshake-timeout`, the connection cap holding over TLS, and `--tls auto`
//! turning TLS on for `0.0.0.0`.
//!
//! Needs the project venv's `aws` (`MESHPLANE_VENV`, default `<workspace>/.venv`) and Envoy
//! (`MESHPLANE_ENVOY`); a missing one fails the test with how to install it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use meshplane_testkit::{
    ControlPlane, Envoy, EnvoyOptions, HttpBackend, Target, XdsFlavor, addr, loopback_ip, wait_for,
    workspace_root,
};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

fn aws_bin() -> PathBuf {
    let venv = std::env::var_os("MESHPLANE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv"));
    let aws = venv.join("bin/aws");
    assert!(
        aws.exists(),
        "{} is missing: run `cargo xtask setup` (installs awscli into {})",
        aws.display(),
        venv.display()
    );
    aws
}

/// Runs `aws <args>` with no ambient AWS configuration but the administrator key `serve`
/// issued (`<data-dir>/credentials`, profile `meshplane`); returns (success, stdout, stderr).
fn aws(cp: &ControlPlane, args: &[&str], env: &[(&str, &Path)]) -> (bool, String, String) {
    let mut cmd = Command::new(aws_bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", cp.credentials_file())
        .env("AWS_PROFILE", "meshplane")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(args)
        .args(["--region", "us-east-1", "--output", "json"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running aws");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn aws_cli_over_https_trusts_meshplanes_ca_through_its_bundle() {
    let cp = ControlPlane::start_with(&["--tls", "on"]).await;
    assert!(cp.tls(), "serve announced https");
    assert!(cp.api_url().starts_with("https://"));
    let ca = cp.ca_pem().expect("<data-dir>/ca.pem written");
    let endpoint = cp.api_url();

    // --ca-bundle.
    let ca_arg = ca.to_str().expect("utf-8 path");
    let (ok, out, err) = aws(
        &cp,
        &[
            "appmesh",
            "create-mesh",
            "--mesh-name",
            "tls-mesh",
            "--endpoint-url",
            &endpoint,
            "--ca-bundle",
            ca_arg,
        ],
        &[],
    );
    assert!(ok, "create-mesh over https failed: {err}");
    assert!(out.contains("\"meshName\": \"tls-mesh\""), "{out}");

    // AWS_CA_BUNDLE.
    let (ok, out, err) = aws(
        &cp,
        &["appmesh", "list-meshes", "--endpoint-url", &endpoint],
        &[("AWS_CA_BUNDLE", &ca)],
    );
    assert!(ok, "list-meshes over https failed: {err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["meshes"][0]["meshName"], "tls-mesh", "{v}");

    // Without the bundle the CLI refuses meshplane's certificate (it is not a public CA).
    let (ok, _, err) = aws(
        &cp,
        &["appmesh", "list-meshes", "--endpoint-url", &endpoint],
        &[],
    );
    assert!(!ok, "an untrusted certificate must fail");
    assert!(
        err.contains("CERTIFICATE_VERIFY_FAILED") || err.contains("SSL"),
        "{err}"
    );

    // The CA persists in the store: a restart would reuse it (the data-dir file is the root).
    let pem = std::fs::read_to_string(&ca).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
}

/// Sends `bytes` and returns what came back before the server closed the connection, and
/// how long that took; fails if the connection is still open after `within`.
async fn closed_after(
    addr: std::net::SocketAddr,
    bytes: &[u8],
    within: Duration,
) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut got = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut got)).await {
        Ok(_) => (got, started.elapsed()),
        Err(_) => panic!("{addr}: connection still open after {within:?} (got {got:?})"),
    }
}

#[tokio::test]
async fn plaintext_clients_on_tls_ports_fail_fast_and_a_stalled_handshake_is_cut() {
    let cp = ControlPlane::start_with(&["--tls", "on", "--tls-handshake-timeout", "1s"]).await;
    // Plain HTTP/1.1 on the API port and an HTTP/2 preface on the xDS port: the TLS layer
    // refuses them at once (an alert or a close), never an HTTP answer, never a hang.
    let http1 = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let (got, took) = closed_after(cp.api_addr(), http1, Duration::from_secs(5)).await;
    assert!(
        !got.starts_with(b"HTTP/"),
        "plaintext was answered: {got:?}"
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let (got, took) = closed_after(cp.xds_addr(), preface, Duration::from_secs(5)).await;
    assert!(!got.starts_with(b"HTTP/"), "{got:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // A client that starts a TLS record and stalls is closed after the handshake timeout.
    let (_, took) = closed_after(cp.api_addr(), &[0x16, 0x03, 0x01], Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "stalled api handshake closed after {took:?}, expected about 1 s"
    );
    // The server is unaffected.
    let (status, _) = cp.request("GET", "/healthz", None).await;
    assert_eq!(status, 200);
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    ca: &Path,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = meshplane_testkit::tls::client_config(ca, &[b"http/1.1"]).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("tls handshake")
}

#[tokio::test]
async fn connection_cap_holds_over_tls() {
    let cp = ControlPlane::start_with(&["--tls", "on", "--api-max-connections", "2"]).await;
    let ca = cp.ca_pem().unwrap();
    // Let the health probes' connections close.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = tls_connect(cp.api_addr(), &ca).await;
    let b = tls_connect(cp.api_addr(), &ca).await;
    // The third is accepted and closed at once, before any handshake.
    let (got, took) = closed_after(cp.api_addr(), &[], Duration::from_secs(3)).await;
    assert!(
        got.is_empty() && took < Duration::from_secs(1),
        "{got:?} {took:?}"
    );
    drop((a, b));
    wait_for(
        "a connection slot after closing two",
        Duration::from_secs(5),
        || async {
            match meshplane_testkit::tls::https_request(
                cp.api_addr(),
                "localhost",
                "GET",
                "/healthz",
                None,
                &[],
                &ca,
            )
            .await
            {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn tls_auto_is_on_for_0_0_0_0_and_reached_through_loopback() {
    let cp =
        ControlPlane::start_with(&["--api-listen", "0.0.0.0:0", "--xds-listen", "0.0.0.0:0"]).await;
    assert!(cp.tls(), "--tls auto must turn TLS on beyond loopback");
    assert_eq!(cp.api_addr().ip().to_string(), "127.0.0.1");
    let (status, body) = cp.request("GET", "/healthz", None).await;
    assert_eq!(status, 200, "{body}");
    // And off on loopback.
    let lo = ControlPlane::start().await;
    assert!(!lo.tls());
    assert!(lo.ca_pem().is_none());
}

#[tokio::test]
async fn envoy_gets_its_config_over_tls_and_serves_traffic() {
    let cp = ControlPlane::start_with(&["--tls", "on"]).await;
    let ca = cp.ca_pem().unwrap();
    cp.create_mesh("tls", json!({})).await;
    let app = HttpBackend::start("over-tls").await;
    let ip = loopback_ip();
    cp.create_virtual_node_at(
        "tls",
        "server",
        json!({
            "listeners": [{"portMapping": {"port": app.port(), "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": ip.to_string()}},
        }),
        ip,
    )
    .await;
    let node = "mesh/tls/virtualNode/server";
    for flavor in [XdsFlavor::Delta, XdsFlavor::Sotw] {
        let mut opts = EnvoyOptions::new(node, cp.xds_addr(), flavor);
        opts.xds_tls_ca = Some(ca.clone());
        let envoy = Envoy::start_with(opts);
        envoy.wait_live().await;
        // ACKed: every type the proxy subscribed to is in sync in proxy status.
        wait_for(
            "envoy in sync over tls",
            Duration::from_secs(10),
            || async {
                let (_, v) = cp.request("GET", "/meshplane/v1/proxy-status", None).await;
                let p = v["proxies"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|p| p["node"] == node).cloned());
                match p {
                    Some(p)
                        if p["types"].as_array().is_some_and(|t| {
                            !t.is_empty() && t.iter().all(|t| t["inSync"] == true)
                        }) =>
                    {
                        Ok(())
                    }
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        assert_eq!(envoy.stat("control_plane.connected_state").await, 1);
        // The xDS cluster really is TLS.
        assert!(envoy.stat("cluster.meshplane_xds.ssl.handshake").await >= 1);
        let t = Target::new("server.local", addr(ip, app.port()));
        let r = t.get("/").await;
        assert_eq!((r.status, r.body.as_str()), (200, "over-tls"), "{r:?}");
        drop(envoy);
    }
}
