//! The control plane under test: the real `meshplane serve` process on `127.0.0.1:0`,
//! with its own data directory, plus JSON helpers for the App Mesh REST API.
//!
//! The binary is built into, and taken from, the target directory of the running test
//! (`<target>/debug/meshplane`, next to `deps/`): see [`meshplane_binary`].

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::tail;

/// How long `meshplane serve` may take to print its listening lines.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The tag that puts a virtual node's proxies in explicit mode (see the reconciler).
pub const LISTEN_ADDRESS_TAG: &str = "meshplane.io/listen-address";

/// An announced listen address as a client reaches it: `0.0.0.0`/`::` become loopback.
fn reachable(announced: &str) -> Option<SocketAddr> {
    let mut a: SocketAddr = announced.trim().parse().ok()?;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Some(a)
}

/// A running `meshplane serve`; killed on drop (its log is printed if the test panicked).
pub struct ControlPlane {
    child: Child,
    api: SocketAddr,
    /// `listening api https://…`: TLS on both ports.
    tls: bool,
    xds: SocketAddr,
    log: PathBuf,
    http: reqwest::Client,
    data_dir: PathBuf,
    /// The administrator key `serve` issued (`<data-dir>/credentials`) when authentication
    /// is on; every request of this harness is then SigV4-signed with it.
    credentials: Option<meshplane_auth::sign::Credentials>,
    _dir: tempfile::TempDir,
}

/// The node-token sources of the running authenticated control planes, by xDS address:
/// [`crate::Envoy::start_with`] mints a token for its node from the control plane it
/// connects to, the way `meshplane envoy token` does for an operator.
static TOKEN_SOURCES: std::sync::Mutex<Vec<(SocketAddr, TokenSource)>> =
    std::sync::Mutex::new(Vec::new());

/// How to mint node tokens from one control plane: the `meshplane envoy token` environment.
#[derive(Clone, Debug)]
pub(crate) struct TokenSource {
    pub(crate) env: Vec<(String, PathBuf)>,
}

/// The token source of the authenticated control plane serving xDS on `xds`, if any.
pub(crate) fn token_source(xds: SocketAddr) -> Option<TokenSource> {
    let sources = TOKEN_SOURCES.lock().unwrap_or_else(|e| e.into_inner());
    sources
        .iter()
        .find(|(a, _)| *a == xds)
        .map(|(_, t)| t.clone())
}

// === impl ControlPlane ===

impl ControlPlane {
    /// Starts `meshplane serve` with a fresh data directory and waits for its addresses.
    pub async fn start() -> ControlPlane {
        ControlPlane::start_with(&[]).await
    }

    /// As [`ControlPlane::start`], with extra `serve` flags (e.g. `["--api-max-connections", "100"]`).
    ///
    /// Authentication is on, as `serve`'s default: the first start writes the
    /// administrator key to [`ControlPlane::credentials_file`] and the profile to
    /// [`ControlPlane::config_file`]; the JSON helpers of this type sign every request with
    /// that key, and [`crate::Envoy`]s started against [`ControlPlane::xds_addr`] get a node
    /// token minted with it (`meshplane envoy token`). `--auth none` in `extra_args` turns
    /// it off (a later `--auth` wins).
    pub async fn start_with(extra_args: &[&str]) -> ControlPlane {
        ControlPlane::spawn(extra_args).await
    }

    /// [`ControlPlane::start_with`] with `--auth sigv4` spelled out.
    pub async fn start_secure(extra_args: &[&str]) -> ControlPlane {
        let mut args = vec!["--auth", "sigv4"];
        args.extend_from_slice(extra_args);
        ControlPlane::spawn(&args).await
    }

    /// `serve --auth none` (plus `extra_args`): unsigned requests, unauthenticated ADS
    /// streams, for tests whose subject is below authentication (raw ADS clients, limits).
    pub async fn start_insecure(extra_args: &[&str]) -> ControlPlane {
        let mut args = vec!["--auth", "none"];
        args.extend_from_slice(extra_args);
        ControlPlane::spawn(&args).await
    }

    /// Whether the API and xDS ports authenticate (`--auth sigv4`, the default).
    pub fn authenticated(&self) -> bool {
        self.credentials.is_some()
    }

    /// The environment that points the AWS CLI, boto3 and `meshplane`'s own CLI and agent at
    /// this control plane's generated profile (`AWS_SHARED_CREDENTIALS_FILE`,
    /// `AWS_CONFIG_FILE`, `AWS_PROFILE=meshplane`); empty without authentication.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        if !self.authenticated() {
            return Vec::new();
        }
        vec![
            (
                "AWS_SHARED_CREDENTIALS_FILE".to_owned(),
                self.credentials_file().display().to_string(),
            ),
            (
                "AWS_CONFIG_FILE".to_owned(),
                self.config_file().display().to_string(),
            ),
            ("AWS_PROFILE".to_owned(), "meshplane".to_owned()),
        ]
    }

    /// `<data-dir>/credentials` (AWS shared-credentials format, profile `meshplane`).
    pub fn credentials_file(&self) -> PathBuf {
        self.data_dir.join("credentials")
    }

    /// `<data-dir>/config` (AWS config format, `[profile meshplane]`).
    pub fn config_file(&self) -> PathBuf {
        self.data_dir.join("config")
    }

    /// The data directory of this control plane.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    async fn spawn(extra_args: &[&str]) -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix("meshplane-e2e-cp-")
            .tempdir()
            .expect("temp dir");
        let bin = meshplane_binary();
        let log = dir.path().join("meshplane.log");
        let stderr = std::fs::File::create(&log).expect("create control plane log");
        // Loopback port 0 unless the test chose its own listen addresses.
        let mut defaults = vec!["serve"];
        for flag in ["--api-listen", "--xds-listen"] {
            if !extra_args.contains(&flag) {
                defaults.extend([flag, "127.0.0.1:0"]);
            }
        }
        let mut child = Command::new(&bin)
            .args(defaults)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--log", "info,meshplane_server=debug"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    // Keep draining so the child never blocks on a full pipe.
                    continue;
                }
            }
        });
        let (mut api, mut xds, mut tls) = (None, None, false);
        let deadline = Instant::now() + START_TIMEOUT;
        while api.is_none() || xds.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening api http://") {
                        api = reachable(a);
                    } else if let Some(a) = line.strip_prefix("listening api https://") {
                        api = reachable(a);
                        tls = true;
                    } else if let Some(a) = line.strip_prefix("listening xds ") {
                        xds = reachable(a);
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "meshplane serve did not print its listening addresses within {START_TIMEOUT:?}; log:\n{}",
                        tail(&log, 40)
                    );
                }
            }
        }
        // The last `--auth` wins, as in clap.
        let auth_on = extra_args
            .iter()
            .rposition(|a| *a == "--auth")
            .and_then(|i| extra_args.get(i + 1))
            .is_none_or(|mode| *mode != "none");
        let data_dir = dir.path().join("data");
        let credentials = auth_on.then(|| read_credentials(&data_dir.join("credentials")));
        let cp = ControlPlane {
            child,
            api: api.expect("api address"),
            tls,
            xds: xds.expect("xds address"),
            log,
            data_dir,
            credentials,
            http: crate::http_client_builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
            _dir: dir,
        };
        cp.wait_healthy().await;
        if cp.authenticated() {
            let env = cp
                .aws_env()
                .into_iter()
                .map(|(k, v)| (k, PathBuf::from(v)))
                .collect();
            TOKEN_SOURCES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((cp.xds, TokenSource { env }));
        }
        cp
    }

    /// The SigV4 headers for `method path` with a JSON `body` (none without authentication).
    fn signature(&self, method: &str, path: &str, body: &[u8]) -> Vec<(String, String)> {
        self.sigv4_headers("appmesh", method, path, body)
    }

    /// The SigV4 headers (`authorization`, `x-amz-date`, `x-amz-content-sha256`) that sign
    /// `method path` with `body` for `service` (`appmesh`, or `servicediscovery` for Cloud
    /// Map) with the administrator key, for tests that write their own requests; empty
    /// without authentication. The request's `Host` must be [`ControlPlane::api_addr`]
    /// (`localhost:<port>` over TLS).
    pub fn sigv4_headers(
        &self,
        service: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Vec<(String, String)> {
        let Some(creds) = &self.credentials else {
            return Vec::new();
        };
        let uri: http::Uri = format!("{}{path}", self.signing_base())
            .parse()
            .unwrap_or_else(|e| panic!("uri for {path}: {e}"));
        let headers = http::HeaderMap::new();
        let params = meshplane_auth::sign::SigningParams {
            region: "us-east-1",
            service,
            now: std::time::SystemTime::now(),
        };
        meshplane_auth::sign::sign(method, &uri, &headers, body, creds, &params)
            .unwrap_or_else(|e| panic!("signing {method} {path}: {e}"))
            .into_iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().expect("signature headers are ASCII").to_owned(),
                )
            })
            .collect()
    }

    /// The scheme and authority requests are signed for (the `Host` they carry).
    fn signing_base(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.api.port())
        } else {
            self.api_url()
        }
    }

    async fn wait_healthy(&self) {
        if self.tls {
            // The plain reqwest client cannot speak TLS: probe /healthz over rustls, trusting
            // meshplane's CA when it issued the certificate (else only the handshake's
            // transport is awaited: the test brought its own certificate).
            let ca = self.ca_pem();
            crate::wait_for("control plane /healthz over tls", START_TIMEOUT, || async {
                match &ca {
                    Some(ca) => {
                        match crate::tls::https_request(
                            self.api,
                            "localhost",
                            "GET",
                            "/healthz",
                            None,
                            &[],
                            ca,
                        )
                        .await
                        {
                            Ok((200, _)) => Ok(()),
                            Ok((status, body)) => Err(format!("status {status}: {body}")),
                            Err(e) => Err(e),
                        }
                    }
                    None => tokio::net::TcpStream::connect(self.api)
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string()),
                }
            })
            .await;
            return;
        }
        let url = format!("{}/healthz", self.api_url());
        crate::wait_for("control plane /healthz", START_TIMEOUT, || async {
            match self.http.get(&url).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// `http://127.0.0.1:PORT` (`https://` when TLS is on).
    pub fn api_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.api)
    }

    /// The API port's address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api
    }

    /// Whether `serve` announced TLS (`listening api https://…`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// `<data-dir>/ca.pem` when meshplane's CA issued the ports' certificate.
    pub fn ca_pem(&self) -> Option<PathBuf> {
        let path = self._dir.path().join("data").join("ca.pem");
        path.exists().then_some(path)
    }

    /// The process id of `meshplane serve`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The ADS address Envoy connects to.
    pub fn xds_addr(&self) -> SocketAddr {
        self.xds
    }

    /// The control plane's log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Any request; returns the status and the JSON body (`Null` when empty or not JSON).
    /// Signed with the administrator key when authentication is on.
    pub async fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send(method, path, body, true).await
    }

    /// [`ControlPlane::request`] without a signature, as an anonymous caller sends it.
    pub async fn request_unsigned(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.send(method, path, body, false).await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        sign: bool,
    ) -> (u16, Value) {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let signature = if sign {
            self.signature(method, path, &bytes)
        } else {
            Vec::new()
        };
        if let (true, Some(ca)) = (self.tls, self.ca_pem()) {
            let (status, text) = crate::tls::https_request(
                self.api,
                "localhost",
                method,
                path,
                (!bytes.is_empty()).then_some(bytes),
                &signature,
                &ca,
            )
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            return (status, serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.api_url()));
        for (k, v) in &signature {
            req = req.header(k.as_str(), v.as_str());
        }
        if !bytes.is_empty() {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// One Cloud Map (AWS JSON 1.1) call to the registry on the API port, signed for
    /// `servicediscovery` when authentication is on; returns the status and the JSON body.
    pub async fn cloud_map(&self, operation: &str, body: Value) -> (u16, Value) {
        let payload = body.to_string();
        let signature = self.sigv4_headers("servicediscovery", "POST", "/", payload.as_bytes());
        let mut req = self
            .http
            .post(format!("{}/", self.api_url()))
            .header(reqwest::header::CONTENT_TYPE, "application/x-amz-json-1.1")
            .header(
                "x-amz-target",
                format!("Route53AutoNaming_v20170314.{operation}"),
            )
            .body(payload);
        for (k, v) in &signature {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("Cloud Map {operation}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A request that must succeed (2xx); returns the JSON body.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.request(method, path, body.clone()).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} {} -> {status}: {v}",
            body.map(|b| b.to_string()).unwrap_or_default()
        );
        v
    }

    /// CreateMesh.
    pub async fn create_mesh(&self, mesh: &str, spec: Value) -> Value {
        self.call(
            "PUT",
            "/v20190125/meshes",
            Some(json!({"meshName": mesh, "spec": spec})),
        )
        .await
    }

    /// CreateVirtualNode (no tags: default App Mesh listeners on `0.0.0.0`).
    pub async fn create_virtual_node(&self, mesh: &str, name: &str, spec: Value) -> Value {
        self.call(
            "PUT",
            &format!("/v20190125/meshes/{mesh}/virtualNodes"),
            Some(json!({"virtualNodeName": name, "spec": spec})),
        )
        .await
    }

    /// CreateVirtualNode tagged [`LISTEN_ADDRESS_TAG`]` = ip`: its Envoys bind `ip` (explicit
    /// mode), so several of them can share the host.
    pub async fn create_virtual_node_at(
        &self,
        mesh: &str,
        name: &str,
        spec: Value,
        ip: std::net::Ipv4Addr,
    ) -> Value {
        self.call(
            "PUT",
            &format!("/v20190125/meshes/{mesh}/virtualNodes"),
            Some(json!({
                "virtualNodeName": name,
                "spec": spec,
                "tags": [{"key": LISTEN_ADDRESS_TAG, "value": ip.to_string()}],
            })),
        )
        .await
    }

    /// UpdateVirtualNode.
    pub async fn update_virtual_node(&self, mesh: &str, name: &str, spec: Value) -> Value {
        self.call(
            "PUT",
            &format!("/v20190125/meshes/{mesh}/virtualNodes/{name}"),
            Some(json!({"spec": spec})),
        )
        .await
    }

    /// DescribeVirtualNode (with meshplane's extra `status.proxies` and
    /// `status.rejectedConfig` members).
    pub async fn describe_virtual_node(&self, mesh: &str, name: &str) -> Value {
        self.call(
            "GET",
            &format!("/v20190125/meshes/{mesh}/virtualNodes/{name}"),
            None,
        )
        .await
    }

    /// CreateVirtualRouter.
    pub async fn create_virtual_router(&self, mesh: &str, name: &str, spec: Value) -> Value {
        self.call(
            "PUT",
            &format!("/v20190125/meshes/{mesh}/virtualRouters"),
            Some(json!({"virtualRouterName": name, "spec": spec})),
        )
        .await
    }

    /// CreateVirtualService.
    pub async fn create_virtual_service(&self, mesh: &str, name: &str, spec: Value) -> Value {
        self.call(
            "PUT",
            &format!("/v20190125/meshes/{mesh}/virtualServices"),
            Some(json!({"virtualServiceName": name, "spec": spec})),
        )
        .await
    }

    /// CreateRoute.
    pub async fn create_route(&self, mesh: &str, router: &str, name: &str, spec: Value) -> Value {
        self.call(
            "PUT",
            &format!("/v20190125/meshes/{mesh}/virtualRouter/{router}/routes"),
            Some(json!({"routeName": name, "spec": spec})),
        )
        .await
    }

    /// UpdateRoute.
    pub async fn update_route(&self, mesh: &str, router: &str, name: &str, spec: Value) -> Value {
        self.call(
            "PUT",
            &format!("/v20190125/meshes/{mesh}/virtualRouter/{router}/routes/{name}"),
            Some(json!({"spec": spec})),
        )
        .await
    }

    /// DeleteRoute.
    pub async fn delete_route(&self, mesh: &str, router: &str, name: &str) -> Value {
        self.call(
            "DELETE",
            &format!("/v20190125/meshes/{mesh}/virtualRouter/{router}/routes/{name}"),
            None,
        )
        .await
    }

    /// `GET /meshplane/v1/proxy-status` (`{"proxies": [...]}`).
    pub async fn proxy_status(&self) -> Value {
        self.call("GET", "/meshplane/v1/proxy-status", None).await
    }

    /// The proxy-status entries whose `node` equals `node_id`.
    pub async fn proxies_of(&self, node_id: &str) -> Vec<Value> {
        let st = self.proxy_status().await;
        st["proxies"]
            .as_array()
            .map(|a| a.iter().filter(|p| p["node"] == node_id).cloned().collect())
            .unwrap_or_default()
    }

    /// `GET /meshplane/v1/proxy-config?node=...`: the resources and per-type versions the
    /// control plane serves to a node.
    pub async fn proxy_config(&self, node_id: &str) -> Value {
        let q: String = node_id
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        self.call("GET", &format!("/meshplane/v1/proxy-config?node={q}"), None)
            .await
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.api_url()))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }
}

/// `aws_access_key_id`/`aws_secret_access_key` of `[meshplane]` in a credentials file.
fn read_credentials(path: &Path) -> meshplane_auth::sign::Credentials {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "reading {} (serve writes it on first start): {e}",
            path.display()
        )
    });
    let value = |key: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| panic!("{key} missing in {}", path.display()))
    };
    meshplane_auth::sign::Credentials {
        access_key_id: value("aws_access_key_id"),
        secret_access_key: value("aws_secret_access_key"),
        session_token: None,
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        TOKEN_SOURCES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(a, _)| *a != self.xds);
        if std::thread::panicking() {
            eprintln!(
                "---- meshplane serve log (last 60 lines, {}) ----\n{}\n----",
                self.log.display(),
                tail(&self.log, 60)
            );
        }
    }
}

/// The `meshplane` binary to test: `$MESHPLANE_BIN` if set; else
/// `<target>/<profile>/meshplane` next to the running test executable, (re)built once per
/// test process with `cargo build -p meshplane --target-dir <target>` when it is missing or
/// older than the workspace's sources, so the suite never tests stale code.
/// `MESHPLANE_E2E_NO_BUILD=1` skips the build. Panics with the build output when the build
/// fails.
///
/// Running cargo from a test is safe: `cargo test` releases the target directory's build
/// lock before it runs test executables (checked). After `cargo test --workspace` the
/// binary is fresh and no build runs (a `-p meshplane` build could unify features
/// differently and recompile dependencies for nothing).
pub fn meshplane_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MESHPLANE_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(|deps| {
                if deps.file_name().is_some_and(|n| n == "deps") {
                    deps.parent()
                } else {
                    Some(deps)
                }
            })
            .expect("test executable lives in <target>/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("<target>").to_path_buf();
        let bin = profile_dir.join("meshplane");
        if std::env::var_os("MESHPLANE_E2E_NO_BUILD").is_none() && is_stale(&bin) {
            build(
                &target_dir,
                profile_dir.file_name().is_some_and(|n| n == "release"),
            );
        }
        assert!(
            bin.is_file(),
            "the meshplane binary is missing at {}: build it with `cargo build -p meshplane \
             --target-dir {}` (or unset MESHPLANE_E2E_NO_BUILD)",
            bin.display(),
            target_dir.display()
        );
        bin
    })
    .clone()
}

fn build(target_dir: &Path, release: bool) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "meshplane", "--target-dir"])
        .arg(target_dir)
        .current_dir(crate::workspace_root());
    if release {
        cmd.arg("--release");
    }
    let started = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    if started.elapsed() > Duration::from_secs(5) {
        eprintln!("built meshplane in {:?}", started.elapsed());
    }
}

/// Missing, or older than some source that can change it (`crates/*/src`, manifests, lock).
fn is_stale(bin: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return true;
    };
    let root = crate::workspace_root();
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for f in ["Cargo.toml", "Cargo.lock"] {
        newest = newest.max(mtime(&root.join(f)));
    }
    for entry in std::fs::read_dir(root.join("crates"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = entry.path();
        newest = newest.max(mtime(&dir.join("Cargo.toml")));
        newest = newest.max(newest_in(&dir.join("src"), 0));
    }
    newest > built
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::SystemTime::UNIX_EPOCH)
}

fn newest_in(dir: &Path, depth: usize) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    if depth > 8 {
        return newest;
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        newest = newest.max(if p.is_dir() {
            newest_in(&p, depth + 1)
        } else {
            mtime(&p)
        });
    }
    newest
}
