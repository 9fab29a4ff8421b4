//! A real Envoy process connected to the control plane over ADS (SotW or delta), with admin
//! helpers: readiness, stats as a map, config dumps.
//!
//! The bootstrap is the product's own: `meshplane envoy bootstrap --node-id ID --xds-address
//! HOST:PORT --xds-api sotw|delta --admin-port N` (the App Mesh-compatible one, with the
//! environment cleared so no `APPMESH_*`/`ENVOY_*` variable of the caller leaks in), so the
//! suite also proves that bootstrap against the whole stack. Admin listens on
//! `127.0.0.1:<free port>`; each Envoy runs with `--disable-hot-restart` and
//! `--concurrency 1`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{envoy_binary, free_port, tail};

/// How long Envoy may take to become LIVE once the control plane serves its node.
const LIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Which ADS variant Envoy speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdsFlavor {
    /// `api_type: GRPC` (state of the world).
    Sotw,
    /// `api_type: DELTA_GRPC` (incremental).
    Delta,
}

/// How to start one Envoy.
#[derive(Clone, Debug)]
pub struct EnvoyOptions {
    /// `node.id`, e.g. `mesh/demo/virtualNode/front`.
    pub node_id: String,
    /// The control plane's xDS address.
    pub xds: SocketAddr,
    /// SotW or delta.
    pub flavor: XdsFlavor,
    /// `-l` (default `info`, so config updates and rejections are in the log).
    pub log_level: String,
    /// App Mesh image variables given to `meshplane envoy bootstrap` (e.g. a tracer's), on
    /// top of the otherwise cleared environment.
    pub env: Vec<(String, String)>,
    /// A private `/etc/hosts` for this Envoy only (names its DNS clusters resolve): Envoy runs
    /// in its own mount namespace (`unshare --mount`, needs root) with this file bound over
    /// `/etc/hosts`; the network namespace is the host's.
    pub hosts_file: Option<PathBuf>,
    /// Connect to the xDS port over TLS, trusting this CA file (SNI and SAN `localhost`):
    /// the bootstrap's xDS cluster gets an `UpstreamTlsContext` (added by the testkit, not
    /// by the agent).
    pub xds_tls_ca: Option<PathBuf>,
    /// The node token file (`meshplane envoy bootstrap --token-file`). Left `None` against
    /// an authenticated [`crate::ControlPlane`], [`Envoy::start_with`] mints one for
    /// `node_id` with the control plane's administrator key (`meshplane envoy token`).
    pub token_file: Option<PathBuf>,
}

impl EnvoyOptions {
    /// Defaults for `node_id` on `xds`.
    pub fn new(node_id: impl Into<String>, xds: SocketAddr, flavor: XdsFlavor) -> Self {
        EnvoyOptions {
            node_id: node_id.into(),
            xds,
            flavor,
            log_level: "info".to_owned(),
            env: Vec::new(),
            hosts_file: None,
            xds_tls_ca: None,
            token_file: None,
        }
    }
}

/// A running Envoy; killed on drop (its log tail and dynamic config are printed if the test
/// panicked).
pub struct Envoy {
    child: Child,
    admin: SocketAddr,
    log: PathBuf,
    opts: EnvoyOptions,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

// === impl Envoy ===

impl Envoy {
    /// Starts Envoy for `node_id` on the control plane at `xds` (no wait; see
    /// [`wait_live`](Self::wait_live)).
    pub fn start(node_id: &str, xds: SocketAddr, flavor: XdsFlavor) -> Envoy {
        Envoy::start_with(EnvoyOptions::new(node_id, xds, flavor))
    }

    /// Starts Envoy with explicit options.
    pub fn start_with(mut opts: EnvoyOptions) -> Envoy {
        let dir = tempfile::Builder::new()
            .prefix("meshplane-e2e-envoy-")
            .tempdir()
            .expect("temp dir");
        if opts.token_file.is_none()
            && let Some(source) = crate::control_plane::token_source(opts.xds)
        {
            let file = dir.path().join("xds-token.yaml");
            if mint_token(&source, &opts.node_id, &file) {
                opts.token_file = Some(file);
            }
        }
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let bootstrap = dir.path().join("bootstrap.yaml");
        let yaml = bootstrap_yaml(&opts, admin, &dir.path().join("admin_access.log"));
        std::fs::write(&bootstrap, yaml).expect("write bootstrap");
        let log = dir.path().join("envoy.log");
        let stderr = std::fs::File::create(&log).expect("create envoy log");
        let bin = envoy_binary();
        let mut cmd = match &opts.hosts_file {
            None => Command::new(&bin),
            Some(hosts) => {
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
                    .arg(hosts)
                    .arg(&bin);
                c
            }
        };
        let child = cmd
            .arg("-c")
            .arg(&bootstrap)
            .args(["--disable-hot-restart", "--concurrency", "1", "-l"])
            .arg(&opts.log_level)
            // Quick exit on kill and on listener drain (tests delete and re-add routes).
            .args(["--drain-time-s", "1", "--parent-shutdown-time-s", "2"])
            // Access log lines reach their files within 100 ms (Envoy's default is 10 s).
            .args(["--file-flush-interval-msec", "100"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting envoy {}: {e}", bin.display()));
        Envoy {
            child,
            admin,
            log,
            opts,
            http: crate::http_client_builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("http client"),
            _dir: dir,
        }
    }

    /// The admin address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The node id it announces.
    pub fn node_id(&self) -> &str {
        &self.opts.node_id
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET` on the admin interface; the body as text.
    pub async fn admin_get(&self, path: &str) -> Result<(u16, String), String> {
        let r = self
            .http
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = r.status().as_u16();
        let body = r.text().await.map_err(|e| format!("GET {path}: {e}"))?;
        Ok((status, body))
    }

    /// `POST` on the admin interface.
    pub async fn admin_post(&self, path: &str) -> Result<String, String> {
        self.http
            .post(format!("http://{}{path}", self.admin))
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?
            .text()
            .await
            .map_err(|e| format!("POST {path}: {e}"))
    }

    /// Waits until `/ready` says LIVE (the initial CDS/LDS/RDS/EDS arrived and warmed).
    pub async fn wait_live(&self) {
        self.wait_live_within(LIVE_TIMEOUT).await
    }

    /// [`wait_live`](Self::wait_live) with a custom bound.
    pub async fn wait_live_within(&self, timeout: Duration) {
        let what = format!("envoy {} to be LIVE", self.opts.node_id);
        crate::wait_for(&what, timeout, || async {
            self.check_running()?;
            match self.admin_get("/ready").await {
                Ok((200, body)) if body.trim() == "LIVE" => Ok(()),
                Ok((s, body)) => Err(format!("{s} {}", body.trim())),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Err if the process has exited (with the log tail).
    pub fn check_running(&self) -> Result<(), String> {
        // `try_wait` needs `&mut`; peek at /proc instead to keep `&self`.
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next());
        if stat.is_empty() || state == Some("Z") {
            return Err(format!("envoy exited; log:\n{}", tail(&self.log, 30)));
        }
        Ok(())
    }

    /// Every counter and gauge (`/stats`, histograms left out).
    pub async fn stats(&self) -> BTreeMap<String, u64> {
        let (_, body) = self.admin_get("/stats").await.expect("GET /stats");
        body.lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.to_owned(), v.trim().parse().ok()?))
            })
            .collect()
    }

    /// One counter or gauge; 0 when Envoy does not have it (yet).
    pub async fn stat(&self, name: &str) -> u64 {
        let filter = format!("/stats?filter=^{}$", name.replace('.', "\\."));
        let (_, body) = self.admin_get(&filter).await.expect("GET /stats");
        body.lines()
            .filter_map(|l| l.split_once(": "))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `/config_dump` (with `?resource=...` when given) as JSON.
    pub async fn config_dump(&self, resource: Option<&str>) -> Value {
        let path = match resource {
            Some(r) => format!("/config_dump?resource={r}"),
            None => "/config_dump".to_owned(),
        };
        let (_, body) = self.admin_get(&path).await.expect("GET /config_dump");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("config_dump is not JSON: {e}"))
    }

    /// The dynamic config of one kind, as `name -> (version_info, config)`: `resource` is
    /// `dynamic_active_clusters`, `dynamic_listeners` or `dynamic_route_configs`.
    pub async fn dynamic(&self, resource: &str) -> BTreeMap<String, (String, Value)> {
        let dump = self.config_dump(Some(resource)).await;
        let mut out = BTreeMap::new();
        for c in dump["configs"].as_array().into_iter().flatten() {
            // Clusters and routes: {version_info, cluster|route_config}; listeners:
            // {name, active_state: {version_info, listener}}.
            let (version, config) = if let Some(a) = c.get("active_state") {
                (&a["version_info"], &a["listener"])
            } else if let Some(rc) = c.get("route_config") {
                (&c["version_info"], rc)
            } else {
                (&c["version_info"], &c["cluster"])
            };
            let Some(name) = config["name"].as_str() else {
                continue;
            };
            out.insert(
                name.to_owned(),
                (version.as_str().unwrap_or("").to_owned(), config.clone()),
            );
        }
        out
    }

    /// A short description of the dynamic state (names and versions), for failure messages.
    pub async fn describe(&self) -> String {
        let mut out = String::new();
        for r in [
            "dynamic_active_clusters",
            "dynamic_listeners",
            "dynamic_route_configs",
        ] {
            let d = self.dynamic(r).await;
            let items: Vec<String> = d.iter().map(|(n, (v, _))| format!("{n}@{v}")).collect();
            out.push_str(&format!("{r}: {}\n", items.join(", ")));
        }
        out
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let dump = blocking_get(self.admin, "/config_dump?resource=dynamic_route_configs")
                .unwrap_or_else(|e| format!("(no config dump: {e})"));
            let dump: String = dump.chars().take(6000).collect();
            eprintln!(
                "---- envoy {} (admin {}) log, last 60 lines ----\n{}\n---- its dynamic route configs ----\n{dump}\n----",
                self.opts.node_id,
                self.admin,
                tail(&self.log, 60)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP/1.1 GET (usable in `Drop`; Envoy admin refuses HTTP/1.0).
fn blocking_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(out))
}

/// The bootstrap printed by `meshplane envoy bootstrap` for these options.
pub fn bootstrap_yaml(opts: &EnvoyOptions, admin: SocketAddr, admin_log: &Path) -> String {
    let api = match opts.flavor {
        XdsFlavor::Sotw => "sotw",
        XdsFlavor::Delta => "delta",
    };
    let bin = crate::control_plane::meshplane_binary();
    let mut cmd = Command::new(&bin);
    cmd.env_clear()
        .env("ENVOY_ADMIN_ACCESS_LOG_FILE", admin_log)
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        .args(["envoy", "bootstrap", "--node-id", &opts.node_id])
        .args(["--xds-address", &opts.xds.to_string(), "--xds-api", api])
        .args(["--admin-port", &admin.port().to_string()]);
    if let Some(token) = &opts.token_file {
        cmd.arg("--token-file").arg(token);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).expect("bootstrap is UTF-8");
    match &opts.xds_tls_ca {
        Some(ca) => with_xds_tls(&yaml, ca),
        None => yaml,
    }
}

/// Mints a node token for `node_id` into `file` with `meshplane envoy token`, signed with
/// the control plane's administrator profile (what an operator or a cron job runs).
fn mint_token(source: &crate::control_plane::TokenSource, node_id: &str, file: &Path) -> bool {
    let parts: Vec<&str> = node_id.split('/').collect();
    let (mesh, kind_flag, name) = match parts.as_slice() {
        ["mesh", mesh, "virtualNode", name] => (*mesh, "--virtual-node", *name),
        ["mesh", mesh, "virtualGateway", name] => (*mesh, "--virtual-gateway", *name),
        // Not a node id meshplane mints for: no token, so the stream is refused.
        _ => return false,
    };
    let bin = crate::control_plane::meshplane_binary();
    let mut cmd = Command::new(&bin);
    cmd.env_clear()
        .envs(source.env.iter().map(|(k, v)| (k, v)))
        .args(["envoy", "token", "--mesh", mesh, kind_flag, name])
        .arg("--out")
        .arg(file);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// `yaml` with an `UpstreamTlsContext` on the `meshplane_xds` cluster: verify the server as
/// `localhost` against `ca`, offer ALPN `h2`.
fn with_xds_tls(yaml: &str, ca: &Path) -> String {
    let anchor = "    name: meshplane_xds\n";
    assert!(
        yaml.contains(anchor),
        "the bootstrap's xds cluster is not where the testkit expects it:\n{yaml}"
    );
    let tls = format!(
        "{anchor}    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \
         '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        \
         sni: localhost\n        common_tls_context:\n          alpn_protocols: [h2]\n          \
         validation_context:\n            trusted_ca: {{filename: {}}}\n            \
         match_typed_subject_alt_names:\n            - {{san_type: DNS, matcher: {{exact: localhost}}}}\n",
        ca.display()
    );
    yaml.replacen(anchor, &tls, 1)
}
