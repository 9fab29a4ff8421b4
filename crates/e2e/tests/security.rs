//! Issue 12 end to end, the way a user secures a mesh (docs/security.md, "Walkthrough:
//! securing a mesh", runs the same commands): the real `meshplane serve --tls on` with
//! authentication, the real AWS CLI, the `meshplane` CLI, `meshplane envoy run` supervising a
//! real Envoy 1.40, and real traffic through it.
//!
//! a. the AWS CLI with only the generated `credentials`/`config` (https endpoint, meshplane's
//!    CA as `ca_bundle`) lists and creates meshes;
//! b. a key whose policy allows `appmesh:StreamAggregatedResources` on `front` only: `envoy
//!    run` for `front` with it gets its configuration over TLS (ACKed in proxy-status, whose
//!    TOKEN column shows the stream's token) and serves traffic; `envoy run` for another node
//!    with the same key gives up with `AccessDeniedException` and never starts Envoy;
//! c. a real Envoy whose token file holds `front`'s token but whose bootstrap says `other` is
//!    refused: no stream in proxy-status, `control_plane.connected_state` 0, none of
//!    `other`'s listeners in its config dump;
//! d. under a bounded load loop, `meshplane node-tokens revoke` ends `front`'s stream and its
//!    reconnects are refused, with zero failed requests before, during and after; then the same
//!    with `meshplane access-keys delete`, after which `envoy run` cannot renew its token;
//! e. the audit log has the revocation and the deletion (key name, action, resource, outcome).
//!
//! Every command runs with a cleared environment plus exactly what the walkthrough exports,
//! so nothing of the machine's (a system-wide `AWS_CA_BUNDLE`, `~/.aws`) helps it pass.
//! Every step is bounded; the whole test takes about 40 s.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use meshplane_testkit::control_plane::meshplane_binary;
use meshplane_testkit::{
    ControlPlane, HttpBackend, Target, addr, envoy_binary, free_port, loopback_ip, tail, wait_for,
    workspace_root,
};
use serde_json::Value;

/// Bound of one CLI command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound of a "state has arrived" wait.
const STEP: Duration = Duration::from_secs(20);
/// Hard cap on each load loop (revocation, then key deletion).
const LOAD_CAP: Duration = Duration::from_secs(40);
/// The lifetime `envoy run` asks for in the key-deletion round: renewal (at 2/3) comes
/// about 8 s after the mint, well after the key is gone.
const SHORT_TTL: &str = "12s";

const MESH: &str = "m";
const FRONT: &str = "mesh/m/virtualNode/front";
const OTHER: &str = "mesh/m/virtualNode/other";

const FRONT_POLICY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [{
    "Effect": "Allow",
    "Action": "appmesh:StreamAggregatedResources",
    "Resource": "arn:aws:appmesh:*:*:mesh/m/virtualNode/front"
  }]
}"#;

// ---------------------------------------------------------------- a user's shell

/// What a user's shell holds: a private HOME, a plain PATH with the AWS CLI, and the
/// variables the walkthrough exports. Nothing else of the test's environment.
#[derive(Clone)]
struct Shell {
    home: PathBuf,
    vars: Vec<(String, String)>,
}

impl Shell {
    fn new(home: &Path) -> Shell {
        Shell {
            home: home.to_path_buf(),
            vars: Vec::new(),
        }
    }

    /// A shell that also exports `AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE` and
    /// `AWS_PROFILE`.
    fn profile(&self, credentials: &Path, config: &Path, profile: &str) -> Shell {
        self.with(
            "AWS_SHARED_CREDENTIALS_FILE",
            &credentials.display().to_string(),
        )
        .with("AWS_CONFIG_FILE", &config.display().to_string())
        .with("AWS_PROFILE", profile)
    }

    fn with(&self, k: &str, v: &str) -> Shell {
        let mut s = self.clone();
        s.vars.push((k.to_owned(), v.to_owned()));
        s
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.home)
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `program args` to completion (bounded).
    async fn run(&self, program: &Path, args: &[&str]) -> Output {
        let mut cmd = tokio::process::Command::from(self.command(program));
        cmd.args(args).kill_on_drop(true);
        let what = format!("{} {}", program.display(), args.join(" "));
        match tokio::time::timeout(COMMAND_TIMEOUT, cmd.output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => panic!("running {what}: {e}"),
            Err(_) => panic!("{what} did not finish within {COMMAND_TIMEOUT:?}"),
        }
    }

    /// Runs a command that must succeed; its stdout.
    async fn ok(&self, program: &Path, args: &[&str]) -> String {
        let out = self.run(program, args).await;
        assert!(
            out.status.success(),
            "{} {} failed ({}):\n{}",
            program.display(),
            args.join(" "),
            out.status,
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    async fn meshplane(&self, args: &[&str]) -> String {
        self.ok(&meshplane_binary(), args).await
    }

    /// `meshplane proxy-status -o json`: the proxies.
    async fn proxies(&self) -> Vec<Value> {
        let out = self.meshplane(&["proxy-status", "-o", "json"]).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("proxy-status json: {e}: {out}"))
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The AWS CLI of the project's virtualenv (`$MESHPLANE_VENV`, else `<workspace>/.venv`).
fn aws_cli() -> PathBuf {
    let venv = std::env::var_os("MESHPLANE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv"));
    let aws = venv.join("bin/aws");
    assert!(
        aws.is_file(),
        "the AWS CLI is missing at {} (set MESHPLANE_VENV or run `cargo xtask setup`)",
        aws.display()
    );
    aws
}

// ---------------------------------------------------------------- processes

/// A long-running process (`envoy run`, Envoy) with its stderr in a file; stopped with
/// SIGTERM on drop (so a supervisor stops its Envoy), killed if it lingers.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let err = std::fs::File::create(&log).expect("create log");
        let child = cmd
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) for the process to exit on its own.
    async fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {within:?}; log:\n{}",
                self.name,
                tail(&self.log, 30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then up to 10 s for the exit.
    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} log (last 40 lines) ----\n{}\n----",
                self.name,
                tail(&self.log, 40)
            );
        }
        self.stop();
    }
}

/// Envoy's admin interface on `127.0.0.1:port`.
#[derive(Clone)]
struct Admin {
    port: u16,
    http: reqwest::Client,
}

impl Admin {
    fn new(port: u16) -> Admin {
        Admin {
            port,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(3))
                .build()
                .expect("http client"),
        }
    }

    async fn get(&self, path: &str) -> Result<String, String> {
        let r = self
            .http
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        r.text().await.map_err(|e| format!("GET {path}: {e}"))
    }

    /// One counter or gauge (`None` when Envoy does not have it, or admin is not up).
    async fn stat(&self, name: &str) -> Option<u64> {
        let body = self
            .get(&format!("/stats?filter=^{}$", name.replace('.', "\\.")))
            .await
            .ok()?;
        body.lines()
            .filter_map(|l| l.split_once(": "))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.trim().parse().ok())
    }

    /// Names of the dynamic listeners in `/config_dump`.
    async fn dynamic_listeners(&self) -> Vec<String> {
        let body = self
            .get("/config_dump?resource=dynamic_listeners")
            .await
            .expect("config_dump");
        let dump: Value = serde_json::from_str(&body).expect("config_dump is JSON");
        dump["configs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    }

    async fn wait_live(&self, proc: &Proc) {
        wait_for(&format!("{} LIVE", proc.name), STEP, || async {
            match self.get("/ready").await {
                Ok(b) if b.trim() == "LIVE" => Ok(()),
                Ok(b) => Err(b.trim().to_owned()),
                Err(e) => Err(format!("{e}; log tail:\n{}", tail(&proc.log, 5))),
            }
        })
        .await
    }
}

// ---------------------------------------------------------------- the scenario

/// The stream of `node` in proxy-status whose every subscribed type is in sync (ACKed).
fn synced_stream<'a>(proxies: &'a [Value], node: &str) -> Option<&'a Value> {
    proxies.iter().find(|p| {
        p["node"] == node
            && p["types"].as_array().is_some_and(|ts| {
                ["cds", "lds"].iter().all(|want| {
                    ts.iter()
                        .any(|t| t["type"] == *want && t["inSync"].as_bool() == Some(true))
                })
            })
    })
}

/// `envoy run` for `node` as `shell`'s profile, over TLS trusting `ca`.
fn envoy_run(
    name: &str,
    shell: &Shell,
    cp: &ControlPlane,
    node: &str,
    admin_port: u16,
    dir: &Path,
    extra: &[&str],
) -> Proc {
    let xds = cp.xds_addr().to_string();
    let ca = cp.ca_pem().expect("meshplane's CA");
    let mut cmd = shell
        .with("MESHPLANE_ENVOY", &envoy_binary().display().to_string())
        .with(
            "ENVOY_ADMIN_ACCESS_LOG_FILE",
            &dir.join(format!("{name}-admin.log")).display().to_string(),
        )
        .command(&meshplane_binary());
    cmd.args(["envoy", "run", "--node-id", node, "--xds-address", &xds])
        .arg("--ca-bundle")
        .arg(&ca)
        .args([
            "--admin-port",
            &admin_port.to_string(),
            "--drain-time-s",
            "0",
        ])
        .args(extra);
    Proc::spawn(name, cmd, dir.join(format!("{name}.log")))
}

/// Requests per window of a load loop: before `a`, in `[a, b)`, from `b`.
fn windows(samples: &Samples, a: Duration, b: Duration) -> [usize; 3] {
    let mut n = [0; 3];
    for (t, _, _) in samples {
        let i = if *t < a {
            0
        } else if *t < b {
            1
        } else {
            2
        };
        n[i] += 1;
    }
    n
}

/// The `meshplane::audit` lines of `log` as field maps (quotes stripped).
fn audit_lines(log: &str) -> Vec<BTreeMap<String, String>> {
    log.lines()
        .filter(|l| l.contains("meshplane::audit"))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                .collect()
        })
        .collect()
}

/// What a load loop saw: (time since its start, status, body) per request.
type Samples = Vec<(Duration, u16, String)>;

/// Sends requests through `target` (two at a time) for a second, then while `during` runs,
/// then for a second more (at most [`LOAD_CAP`] in all); fails on any failed request.
/// Returns the samples and when (since the loop started) `during` began and ended.
async fn under_load<F, Fut>(target: &Target, during: F) -> (Samples, Duration, Duration)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let started = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (target, stop) = (target.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Samples::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && started.elapsed() < LOAD_CAP
                {
                    let r = target.get("/").await;
                    seen.push((started.elapsed(), r.status, r.body));
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a = started.elapsed();
    during().await;
    let b = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut samples = Samples::new();
    for w in workers {
        samples.extend(w.await.expect("load worker"));
    }
    let failed: Vec<_> = samples
        .iter()
        .filter(|(_, status, body)| *status != 200 || body != "back")
        .take(5)
        .collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    (samples, a, b)
}

/// Waits until `front`'s stream of token `tid` is gone and Envoy's xDS connection is down,
/// then until Envoy has been refused again (its log says so) while it stays disconnected.
async fn closed_and_refused(admin_shell: &Shell, admin: &Admin, envoy: &Proc, tid: &str) {
    wait_for("the revoked stream to leave proxy-status", STEP, || async {
        let proxies = admin_shell.proxies().await;
        // The impostor of round c (running meanwhile) never has a stream.
        assert!(proxies.iter().all(|p| p["node"] != OTHER), "{proxies:?}");
        match proxies.iter().find(|p| p["tokenId"] == tid) {
            None => Ok(()),
            Some(p) => Err(p.to_string()),
        }
    })
    .await;
    wait_for("control_plane.connected_state 0", STEP, || async {
        match admin.stat("control_plane.connected_state").await {
            Some(0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // The close, then at least one refused reconnect, each an UNAUTHENTICATED (16) close of
    // the ADS stream in Envoy's log.
    let refusals = |log: &str| {
        log.lines()
            .filter(|l| l.contains("gRPC config stream") && l.contains(": 16,"))
            .count()
    };
    wait_for("a refused reconnect in envoy's log", STEP, || async {
        let n = refusals(&envoy.log());
        if n >= 2 {
            Ok(())
        } else {
            Err(format!("{n} UNAUTHENTICATED closes"))
        }
    })
    .await;
    assert_eq!(
        admin.stat("control_plane.connected_state").await,
        Some(0),
        "a refused reconnect leaves envoy disconnected"
    );
    assert!(
        admin_shell
            .proxies()
            .await
            .iter()
            .all(|p| p["node"] != FRONT),
        "no stream of front while its token is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn securing_a_mesh_end_to_end() {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("meshplane-e2e-security-")
        .tempdir()
        .expect("temp dir");
    let dir = dir.path();
    let user = Shell::new(dir);

    let cp = ControlPlane::start_secure(&["--tls", "on"]).await;
    assert!(cp.tls(), "serve --tls on announces https");
    let ca = cp.ca_pem().expect("serve wrote <data-dir>/ca.pem");
    let admin_shell = user.profile(&cp.credentials_file(), &cp.config_file(), "meshplane");

    // ---- a. the AWS CLI with only the generated files
    let config = std::fs::read_to_string(cp.config_file()).expect("config");
    assert!(
        config.contains(&format!("endpoint_url = {}", cp.api_url()))
            && config.contains(&format!("ca_bundle = {}", ca.display())),
        "{config}"
    );
    let aws = aws_cli();
    let listed: Value =
        serde_json::from_str(&admin_shell.ok(&aws, &["appmesh", "list-meshes"]).await).unwrap();
    assert_eq!(listed["meshes"], serde_json::json!([]));
    let created: Value = serde_json::from_str(
        &admin_shell
            .ok(
                &aws,
                &[
                    "appmesh",
                    "create-mesh",
                    "--mesh-name",
                    MESH,
                    "--spec",
                    r#"{"egressFilter": {"type": "DROP_ALL"}}"#,
                ],
            )
            .await,
    )
    .unwrap();
    assert_eq!(created["mesh"]["status"]["status"], "ACTIVE", "{created}");
    // The same files without the profile's CA would not trust the port: the CA is what
    // made the AWS CLI work.
    let out = user
        .profile(&cp.credentials_file(), &cp.config_file(), "meshplane")
        .with("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
        .with("AWS_MAX_ATTEMPTS", "1")
        .run(&aws, &["appmesh", "list-meshes"])
        .await;
    assert!(
        !out.status.success(),
        "the system roots do not trust meshplane's CA"
    );
    assert!(text(&out.stderr).contains("SSL"), "{}", text(&out.stderr));

    // ---- the mesh: back (a real backend), front calling it, other with a listener
    let backend = HttpBackend::start("back").await;
    let (front_ip, other_ip) = (loopback_ip(), loopback_ip());
    let other_port = free_port();
    let mesh_file = dir.join("mesh.yaml");
    std::fs::write(
        &mesh_file,
        mesh_yaml(backend.port(), front_ip, other_ip, other_port),
    )
    .unwrap();
    admin_shell
        .meshplane(&["apply", "-f", &mesh_file.display().to_string()])
        .await;

    // ---- b. a key that may stream front's configuration and nothing else
    let policy = dir.join("front-policy.json");
    std::fs::write(&policy, FRONT_POLICY).unwrap();
    let created = admin_shell
        .meshplane(&[
            "access-keys",
            "create",
            "--name",
            "front",
            "--policy",
            &policy.display().to_string(),
        ])
        .await;
    // The printed blocks go into the AWS files unchanged.
    let (front_credentials, front_config) =
        (dir.join("front-credentials"), dir.join("front-config"));
    std::fs::write(
        &front_credentials,
        block(&created, "# ~/.aws/credentials\n"),
    )
    .unwrap();
    std::fs::write(&front_config, block(&created, "# ~/.aws/config\n")).unwrap();
    let front_shell = user.profile(&front_credentials, &front_config, "front");
    let denied = front_shell
        .run(&meshplane_binary(), &["get", "meshes"])
        .await;
    assert!(
        !denied.status.success() && text(&denied.stderr).contains("AccessDeniedException"),
        "the front key may not list meshes: {}",
        text(&denied.stderr)
    );

    // Another node with the same key, started now: it gives up after its bounded retries
    // (about 30 s), checked at the end.
    let mut other_run = envoy_run(
        "envoy-run-other",
        &front_shell,
        &cp,
        OTHER,
        free_port(),
        dir,
        &[],
    );

    let front_admin = Admin::new(free_port());
    let mut front_run = envoy_run(
        "envoy-run-front",
        &front_shell,
        &cp,
        FRONT,
        front_admin.port,
        dir,
        &[],
    );
    front_admin.wait_live(&front_run).await;
    let stream = wait_for("front's stream ACKed in proxy-status", STEP, || async {
        let proxies = admin_shell.proxies().await;
        synced_stream(&proxies, FRONT)
            .cloned()
            .ok_or_else(|| serde_json::to_string(&proxies).unwrap())
    })
    .await;
    let tid = stream["tokenId"].as_str().expect("a token id").to_owned();
    assert!(
        front_run
            .log()
            .contains(&format!("node token obtained token_id={tid}")),
        "{}",
        front_run.log()
    );
    let table = admin_shell.meshplane(&["proxy-status"]).await;
    let row = table
        .lines()
        .find(|l| l.starts_with(FRONT))
        .unwrap_or_else(|| panic!("no front row:\n{table}"));
    assert!(table.lines().next().unwrap().contains("TOKEN"), "{table}");
    assert!(row.split_whitespace().any(|c| c == tid), "{table}");
    let target = Target::new("back.m", addr(front_ip, backend.port()));
    let warm = target.load("/").requests(20).concurrency(2).run().await;
    assert_eq!(warm.count("back"), 20, "{:?}", warm.failure_samples(3));
    // The backend listens on 127.0.0.1 only: what reached it came through front's Envoy,
    // bound on front's own loopback address (explicit mode).
    assert!(backend.requests() >= 20);

    // ---- c. front's token in an Envoy that says it is other
    let token_file = dir.join("front-token.yaml");
    admin_shell
        .meshplane(&[
            "envoy",
            "token",
            "--mesh",
            MESH,
            "--virtual-node",
            "front",
            "--out",
            &token_file.display().to_string(),
        ])
        .await;
    let impostor_admin = Admin::new(free_port());
    let bootstrap = user
        .with(
            "ENVOY_ADMIN_ACCESS_LOG_FILE",
            &dir.join("impostor-admin.log").display().to_string(),
        )
        .ok(
            &meshplane_binary(),
            &[
                "envoy",
                "bootstrap",
                "--node-id",
                OTHER,
                "--xds-address",
                &cp.xds_addr().to_string(),
                "--admin-port",
                &impostor_admin.port.to_string(),
                "--token-file",
                &token_file.display().to_string(),
                "--ca-bundle",
                &ca.display().to_string(),
            ],
        )
        .await;
    let bootstrap_file = dir.join("impostor.yaml");
    std::fs::write(&bootstrap_file, bootstrap).unwrap();
    let mut impostor_cmd = Command::new(envoy_binary());
    impostor_cmd
        .arg("-c")
        .arg(&bootstrap_file)
        .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info"])
        .stdin(Stdio::null());
    let impostor = Proc::spawn("impostor envoy", impostor_cmd, dir.join("impostor.log"));
    // Checked after round d, so it has been refused for many seconds by then.
    wait_for("the impostor's admin", STEP, || async {
        impostor_admin.get("/ready").await.map(drop)
    })
    .await;

    // ---- d1. revoke front's token under load
    let (samples, a, b) = under_load(&target, || async {
        admin_shell
            .meshplane(&["node-tokens", "revoke", &tid])
            .await;
        closed_and_refused(&admin_shell, &front_admin, &front_run, &tid).await;
    })
    .await;
    let n = windows(&samples, a, b);
    assert!(
        n.iter().all(|n| *n > 0),
        "requests before/during/after revocation: {n:?}"
    );
    let log = cp.log();
    assert!(
        log.contains("refusing unauthenticated ads stream"),
        "the server refused the reconnect"
    );
    eprintln!("revocation under load: {n:?} requests before/during/after, 0 failed ({a:?}..{b:?})");

    // ---- c (checked). The impostor never got a stream or a listener.
    assert_eq!(
        impostor_admin.stat("control_plane.connected_state").await,
        Some(0)
    );
    assert!(
        admin_shell
            .proxies()
            .await
            .iter()
            .all(|p| p["node"] != OTHER)
    );
    assert_eq!(
        impostor_admin.dynamic_listeners().await,
        Vec::<String>::new()
    );
    // Envoy logs the gRPC status and its percent-encoded message.
    let impostor_log = impostor.log().replace("%20", " ");
    assert!(
        impostor_log.contains(
            "gRPC config stream to meshplane_xds closed: 7, \
             the stream's token is not valid for the requested node"
        ),
        "the impostor was refused for its node: {}",
        tail(&impostor.log, 20)
    );
    drop(impostor);

    // ---- b (end). envoy run for other: every attempt refused with AccessDenied, then it
    // stops without ever starting Envoy (before the key is deleted below, so that no answer
    // can be about a missing key).
    let status = other_run.exited(Duration::from_secs(45)).await;
    let other_log = other_run.log();
    assert!(!status.success(), "{other_log}");
    let denied = "AccessDeniedException: User: front is not authorized to perform: \
                  appmesh:StreamAggregatedResources on resource: \
                  arn:aws:appmesh:us-east-1:000000000000:mesh/m/virtualNode/other";
    let attempts: Vec<&str> = other_log
        .lines()
        .filter(|l| l.contains("node token request failed"))
        .collect();
    assert_eq!(attempts.len(), 5, "{other_log}");
    assert!(attempts.iter().all(|l| l.ends_with(denied)), "{other_log}");
    let last = other_log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot obtain a node token") && last.ends_with(denied),
        "{other_log}"
    );
    assert!(!other_log.contains("envoy started"), "{other_log}");
    eprintln!(
        "envoy run for other: {status}, {}",
        other_log.lines().last().unwrap_or_default()
    );

    // ---- d2. a new envoy run for front, then delete the key under load
    front_run.stop();
    let front_admin = Admin::new(free_port());
    let front_run = envoy_run(
        "envoy-run-front-2",
        &front_shell,
        &cp,
        FRONT,
        front_admin.port,
        dir,
        &["--token-ttl", SHORT_TTL],
    );
    front_admin.wait_live(&front_run).await;
    let stream = wait_for("front's second stream ACKed", STEP, || async {
        let proxies = admin_shell.proxies().await;
        synced_stream(&proxies, FRONT)
            .cloned()
            .ok_or_else(|| serde_json::to_string(&proxies).unwrap())
    })
    .await;
    let tid2 = stream["tokenId"].as_str().expect("a token id").to_owned();
    assert_ne!(tid2, tid);
    // Where envoy run's log stood when the key was deleted: a renewal before that (on a
    // slow machine) is fine, none may succeed after it.
    let mark = std::cell::Cell::new(0);
    let (samples, a, b) = under_load(&target, || async {
        mark.set(front_run.log().len());
        admin_shell
            .meshplane(&["access-keys", "delete", "front"])
            .await;
        closed_and_refused(&admin_shell, &front_admin, &front_run, &tid2).await;
    })
    .await;
    let n = windows(&samples, a, b);
    assert!(
        n.iter().all(|n| *n > 0),
        "requests before/during/after deletion: {n:?}"
    );
    eprintln!(
        "key deletion under load: {n:?} requests before/during/after, 0 failed ({a:?}..{b:?})"
    );
    // The key is gone, so the server no longer knows the signature's key id.
    let refused_renewal = wait_for("envoy run's renewal refused", STEP, || async {
        let log = front_run.log();
        log[mark.get()..]
            .lines()
            .find(|l| {
                l.contains("node token request failed") && l.contains("UnrecognizedClientException")
            })
            .map(str::to_owned)
            .ok_or_else(|| "no refused renewal yet".to_owned())
    })
    .await;
    let after = front_run.log()[mark.get()..].to_owned();
    assert!(!after.contains("node token renewed"), "{after}");
    eprintln!("envoy run for front after the key was deleted: {refused_renewal}");

    // ---- e. the audit log
    let log = cp.log();
    let audit = audit_lines(&log);
    let find = |action: &str, resource_suffix: &str| {
        audit
            .iter()
            .find(|f| {
                f.get("action").map(String::as_str) == Some(action)
                    && f.get("resource")
                        .is_some_and(|r| r.ends_with(resource_suffix))
            })
            .unwrap_or_else(|| panic!("no audit line for {action} on …{resource_suffix}"))
            .clone()
    };
    let revoked = find("meshplane:RevokeNodeToken", &format!(":node-token/{tid}"));
    assert_eq!(revoked["key_name"], "admin");
    assert_eq!(revoked["outcome"], "allowed");
    assert_eq!(revoked["status"], "200");
    assert!(revoked["key_id"].starts_with("MPAK"));
    let deleted = find("meshplane:DeleteAccessKey", ":access-key/front");
    assert_eq!(deleted["key_name"], "admin");
    assert_eq!(deleted["outcome"], "allowed");
    let refused = find("appmesh:StreamAggregatedResources", OTHER_ARN_SUFFIX);
    assert_eq!(refused["key_name"], "front");
    assert_eq!(refused["outcome"], "denied");

    eprintln!("securing a mesh end to end: {:?}", started.elapsed());
}

const OTHER_ARN_SUFFIX: &str = ":mesh/m/virtualNode/other";

/// The text between `marker` and the next blank line of `access-keys create`'s output.
fn block(output: &str, marker: &str) -> String {
    let start = output
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in:\n{output}"))
        + marker.len();
    let rest = &output[start..];
    let end = rest.find("\n\n").map_or(rest.len(), |i| i + 1);
    rest[..end].to_owned()
}

/// The mesh's resources as `meshplane apply` documents.
fn mesh_yaml(back_port: u16, front_ip: Ipv4Addr, other_ip: Ipv4Addr, other_port: u16) -> String {
    format!(
        "kind: VirtualNode
mesh: {MESH}
name: back
spec:
  listeners: [{{portMapping: {{port: {back_port}, protocol: http}}}}]
  serviceDiscovery: {{dns: {{hostname: 127.0.0.1}}}}
---
kind: VirtualService
mesh: {MESH}
name: back.m
spec:
  provider: {{virtualNode: {{virtualNodeName: back}}}}
---
kind: VirtualNode
mesh: {MESH}
name: front
spec:
  backends: [{{virtualService: {{virtualServiceName: back.m}}}}]
tags: {{meshplane.io/listen-address: '{front_ip}'}}
---
kind: VirtualNode
mesh: {MESH}
name: other
spec:
  listeners: [{{portMapping: {{port: {other_port}, protocol: http}}}}]
  serviceDiscovery: {{dns: {{hostname: '{other_ip}'}}}}
tags: {{meshplane.io/listen-address: '{other_ip}'}}
"
    )
}
