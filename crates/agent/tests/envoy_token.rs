//! The node token reaches the xDS server through real Envoy 1.40: the bootstrap from
//! `--token-file` makes Envoy send `authorization: Bearer <token>` on its ADS stream, a token
//! file replaced by rename is used on the next reconnect without restarting Envoy, and
//! `--ca-bundle` carries it over TLS.
//!
//! The "xDS server" is a second Envoy that records the `authorization` header of every
//! request in its access log and answers 503, so the proxy under test keeps reconnecting.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshplane_agent::envoy::bootstrap::{BootstrapArgs, BootstrapConfig};
use meshplane_agent::envoy::env::EnvMap;
use meshplane_agent::envoy::token::write_token_file;
use serde_json::{Value, json};

const DEFAULT_ENVOY: &str = "/work/main/.venv/lib/python3.11/site-packages/envoy/_bin/envoy";
const ADS_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

fn envoy_binary() -> PathBuf {
    let path = std::env::var_os("MESHPLANE_ENVOY")
        .map(PathBuf::from)
        .unwrap_or(DEFAULT_ENVOY.into());
    assert!(
        path.is_file(),
        "envoy not found at {}: install it with `cargo xtask envoy` or set MESHPLANE_ENVOY to \
         an Envoy 1.40 binary",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An Envoy process, killed on drop.
struct Envoy(Child);

impl Envoy {
    fn start(config: &Path, log: &Path) -> Envoy {
        let child = Command::new(envoy_binary())
            .arg("-c")
            .arg(config)
            .args(["--disable-hot-restart", "-l", "info", "--log-path"])
            .arg(log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start envoy");
        Envoy(child)
    }

    fn still_running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The recorder: HTTP/1 or HTTP/2 (plaintext or TLS) on `port`; logs `<path> <authorization>`.
fn recorder_config(port: u16, admin: u16, log: &Path, tls: Option<(&Path, &Path)>) -> Value {
    let mut chain = json!({ "filters": [{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "recorder",
            "codec_type": "AUTO",
            "access_log": [{
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": log,
                    "log_format": { "text_format_source": {
                        "inline_string": "%REQ(:PATH)% %REQ(AUTHORIZATION)%\n"
                    }},
                },
            }],
            "route_config": { "virtual_hosts": [{
                "name": "all",
                "domains": ["*"],
                "routes": [{ "match": { "prefix": "/" }, "direct_response": { "status": 503 } }],
            }]},
            "http_filters": [{
                "name": "envoy.filters.http.router",
                "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" },
            }],
        },
    }]});
    if let Some((cert, key)) = tls {
        chain["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "tls_certificates": [{
                        "certificate_chain": { "filename": cert },
                        "private_key": { "filename": key },
                    }],
                },
            },
        });
    }
    json!({
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": admin } } },
        "static_resources": { "listeners": [{
            "name": "recorder",
            "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } },
            "filter_chains": [chain],
        }]},
    })
}

/// Waits (bounded) for a line of `log` equal to `<ADS path> Bearer <token>`.
fn wait_for_token(log: &Path, token: &str, timeout: Duration) -> bool {
    let want = format!("{ADS_PATH} Bearer {token}");
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let found = std::fs::File::open(log).is_ok_and(|f| {
            BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.trim_end() == want)
        });
        if found {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// The warning and error lines of an Envoy log, for failure messages.
fn important(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.contains("][warning][") || l.contains("][error][") || l.contains("][critical][")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

/// The proxy under test's bootstrap, exactly as `envoy bootstrap` renders it.
fn proxy_bootstrap(xds_port: u16, token_file: &Path, ca: Option<&Path>) -> Value {
    let args = BootstrapArgs {
        node_id: Some("mesh/m/virtualNode/n".into()),
        xds_address: Some(format!("127.0.0.1:{xds_port}")),
        admin_port: Some(free_port()),
        token_file: Some(token_file.to_path_buf()),
        ca_bundle: ca.map(Path::to_path_buf),
        ..Default::default()
    };
    BootstrapConfig::resolve(&args, &EnvMap::default())
        .unwrap()
        .to_value()
}

/// The xDS cluster's TLS and connection counters, for failure messages.
fn stats_text(admin_port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin_port)).unwrap();
    write!(
        s,
        "GET /stats?filter=meshplane_xds HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .filter(|l| {
            l.contains("ssl") || l.contains("cx_connect_fail") || l.contains("upstream_cx_total")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One counter from Envoy's admin `/stats` (0 when absent).
fn stat(admin_port: u16, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /stats?filter=^{name}$ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A CA and a server certificate for `ip` signed by it, as meshplane's own CA issues them:
/// `(<name>.pem, <name>-server.pem, <name>-server.key)` in `dir`.
fn tls_files(dir: &Path, name: &str, ip: [u8; 4]) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    // Distinct names: BoringSSL takes a leaf whose subject equals its issuer as self-signed.
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("meshplane test CA {name}"),
    );
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress(ip.into())];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "meshplane xds");
    let cert = params.signed_by(&key, &issuer).unwrap();
    let files = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-server.pem")),
        dir.join(format!("{name}-server.key")),
    );
    std::fs::write(&files.0, ca.pem()).unwrap();
    std::fs::write(&files.1, cert.pem()).unwrap();
    std::fs::write(&files.2, key.serialize_pem()).unwrap();
    files
}

#[test]
fn the_token_is_never_sent_to_a_server_the_bundle_does_not_vouch_for() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, _, _) = tls_files(dir.path(), "trusted", [127, 0, 0, 1]);
    // Two wrong servers: one whose CA is another, one with the right CA but the wrong address.
    let (_, other_cert, other_key) = tls_files(dir.path(), "other", [127, 0, 0, 1]);
    let (_, wrong_ip_cert, wrong_ip_key) = {
        let ca_text = std::fs::read_to_string(&ca_file).unwrap();
        let files = tls_files(dir.path(), "wrongip", [127, 0, 0, 2]);
        // Same trust for the proxy, certificate for 127.0.0.2 from a CA the proxy also trusts.
        std::fs::write(
            &ca_file,
            format!("{ca_text}{}", std::fs::read_to_string(&files.0).unwrap()),
        )
        .unwrap();
        files
    };
    let mut recorders = Vec::new();
    let mut proxies = Vec::new();
    let mut logs = Vec::new();
    let mut admins = Vec::new();
    for (i, (cert, key)) in [(&other_cert, &other_key), (&wrong_ip_cert, &wrong_ip_key)]
        .into_iter()
        .enumerate()
    {
        let log = dir.path().join(format!("auth{i}.log"));
        let port = free_port();
        let rec = dir.path().join(format!("recorder{i}.json"));
        write_json(
            &rec,
            &recorder_config(port, free_port(), &log, Some((cert, key))),
        );
        recorders.push(Envoy::start(&rec, &dir.path().join(format!("r{i}.log"))));
        let token_file = dir.path().join(format!("token{i}.yaml"));
        write_token_file(&token_file, "mpt1.secret.DDDD", None).unwrap();
        let proxy = dir.path().join(format!("proxy{i}.json"));
        let bootstrap = proxy_bootstrap(port, &token_file, Some(&ca_file));
        admins.push(
            bootstrap["admin"]["address"]["socket_address"]["port_value"]
                .as_u64()
                .unwrap() as u16,
        );
        write_json(&proxy, &bootstrap);
        proxies.push(Envoy::start(&proxy, &dir.path().join(format!("p{i}.log"))));
        logs.push(log);
    }
    // Envoy retries the handshake for these 8 s (several attempts); none may get through.
    std::thread::sleep(Duration::from_secs(8));
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(!text.contains("mpt1.secret"), "{}: {text}", log.display());
    }
    // The handshakes did happen and the proxy refused them for the right reason.
    assert!(
        stat(admins[0], "cluster.meshplane_xds.ssl.fail_verify_error") > 0,
        "{}",
        stats_text(admins[0])
    );
    assert!(
        stat(admins[1], "cluster.meshplane_xds.ssl.fail_verify_san") > 0,
        "{}",
        stats_text(admins[1])
    );
}

#[test]
fn envoy_sends_the_token_and_picks_up_a_renewed_one_without_restarting() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let port = free_port();
    write_json(
        &dir.path().join("recorder.json"),
        &recorder_config(port, free_port(), &log, None),
    );
    let _recorder = Envoy::start(&dir.path().join("recorder.json"), &dir.path().join("r.log"));

    let token_file = dir.path().join("token.yaml");
    write_token_file(&token_file, "mpt1.first.AAAA", None).unwrap();
    write_json(
        &dir.path().join("proxy.json"),
        &proxy_bootstrap(port, &token_file, None),
    );
    let mut proxy = Envoy::start(&dir.path().join("proxy.json"), &dir.path().join("p.log"));

    assert!(
        wait_for_token(&log, "mpt1.first.AAAA", Duration::from_secs(30)),
        "the first token never reached the xDS server; recorder log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Renewal: replace the file (rename); the next reconnect carries the new token.
    write_token_file(&token_file, "mpt1.second.BBBB", None).unwrap();
    assert!(
        wait_for_token(&log, "mpt1.second.BBBB", Duration::from_secs(60)),
        "the renewed token never reached the xDS server; recorder log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(proxy.still_running(), "envoy must not restart to renew");
}

#[test]
fn the_token_travels_over_tls_trusting_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, cert_file, key_file) = tls_files(dir.path(), "ca", [127, 0, 0, 1]);
    let log = dir.path().join("auth.log");
    let port = free_port();
    write_json(
        &dir.path().join("recorder.json"),
        &recorder_config(port, free_port(), &log, Some((&cert_file, &key_file))),
    );
    let _recorder = Envoy::start(&dir.path().join("recorder.json"), &dir.path().join("r.log"));

    let token_file = dir.path().join("token.yaml");
    write_token_file(&token_file, "mpt1.tls.CCCC", None).unwrap();
    let bootstrap = proxy_bootstrap(port, &token_file, Some(&ca_file));
    let xds = bootstrap["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "meshplane_xds")
        .unwrap()
        .clone();
    let tls = &xds["transport_socket"]["typed_config"];
    assert_eq!(
        tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"],
        json!(ca_file)
    );
    write_json(&dir.path().join("proxy.json"), &bootstrap);
    let mut proxy = Envoy::start(&dir.path().join("proxy.json"), &dir.path().join("p.log"));
    assert!(
        wait_for_token(&log, "mpt1.tls.CCCC", Duration::from_secs(30)),
        "the token never arrived over TLS; recorder log:\n{}\nproxy log:\n{}",
        important(&dir.path().join("r.log")),
        important(&dir.path().join("p.log"))
    );
    assert!(proxy.still_running());
}
