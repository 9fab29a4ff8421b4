//! `meshplane demo`: the colorapp mesh from `examples/`, running for real. It starts a control
//! plane (this binary's `serve`, embedded store in a temp dir), applies `colorapp.yaml`, puts
//! each workload (front, red, blue, green) in its own network namespace with transparent
//! interception (`sidecar init`) and a real Envoy (`envoy run`, uid 1337), starts tiny color
//! backends, drives traffic from front to `http://color.colorapp.local:8080/` and shows where
//! requests go, refreshed every second. Weight changes made from another terminal show up
//! within a second. Ctrl-C stops everything it started.
//!
//! ```text
//!   root ns: meshplane serve (API 127.0.0.1, xDS on the bridge) ── bridge mp<id>br
//!      ├─ ns front: driver ─iptables─▶ envoy :15001 ──▶ red|blue|green.colorapp.local:8080
//!      ├─ ns red:   iptables :8080 ─▶ envoy :15000 ─▶ backend 127.0.0.1:8080 ("red")
//!      ├─ ns blue:  ...
//!      └─ ns green: ...
//! ```
//!
//! Namespaces need root. Without root (or with `--mode loopback`) the demo runs in explicit
//! mode on private loopback addresses: one front Envoy (virtual node tag
//! `meshplane.io/listen-address`) and the color backends without sidecars.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use meshplane_agent::sidecar::netns::{self, Network};

/// The mesh the demo applies (the same file as `examples/colorapp.yaml`).
pub const COLORAPP_YAML: &str = include_str!("../../../examples/colorapp.yaml");
/// The colors, in display order.
pub const COLORS: [&str; 3] = ["red", "blue", "green"];
/// The port every colorapp workload listens on.
const APP_PORT: u16 = 8080;

/// Flags of `meshplane demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop after this many seconds of traffic and print a summary (default: until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Requests per second the front workload sends.
    #[arg(long, default_value_t = 40)]
    pub rps: u32,
    /// Where workloads run: `netns` (one network namespace each, iptables interception; needs
    /// root), `loopback` (explicit mode on private 127.x addresses; no root), or `auto`
    /// (netns when possible).
    #[arg(long, default_value = "auto")]
    pub mode: String,
    /// Envoy binary (else MESHPLANE_ENVOY, ENVOY_BINARY, PATH, the project's .venv).
    #[arg(long)]
    pub envoy_binary: Option<PathBuf>,
    /// Internal: run as a demo component (`backend` or `driver`).
    #[arg(long, hide = true)]
    pub role: Option<String>,
    /// Internal: the backend's color.
    #[arg(long, hide = true)]
    pub color: Option<String>,
    /// Internal: the backend's listen address or the driver's target host:port.
    #[arg(long, hide = true)]
    pub addr: Option<String>,
    /// Internal: the driver's Host header (default: the target's host).
    #[arg(long, hide = true)]
    pub host_header: Option<String>,
}

/// Request counts per color.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub by_color: BTreeMap<String, u64>,
    pub errors: u64,
}

// === impl Counts ===

impl Counts {
    /// Parses a driver line: `counts red=1 blue=2 green=0 errors=0`.
    pub fn parse(line: &str) -> Option<Counts> {
        let rest = line.strip_prefix("counts ")?;
        let mut c = Counts::default();
        for kv in rest.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            let v: u64 = v.parse().ok()?;
            if k == "errors" {
                c.errors = v;
            } else {
                c.by_color.insert(k.to_owned(), v);
            }
        }
        Some(c)
    }

    /// The counts since `earlier`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut by_color = BTreeMap::new();
        for (k, v) in &self.by_color {
            let before = earlier.by_color.get(k).copied().unwrap_or(0);
            by_color.insert(k.clone(), v.saturating_sub(before));
        }
        Counts {
            by_color,
            errors: self.errors.saturating_sub(earlier.errors),
        }
    }

    fn total(&self) -> u64 {
        self.by_color.values().sum::<u64>()
    }

    /// `red=1 blue=2 green=0 errors=0`, colors in demo order.
    pub fn line(&self) -> String {
        let mut s = String::new();
        for c in COLORS {
            s.push_str(&format!(
                "{c}={} ",
                self.by_color.get(c).copied().unwrap_or(0)
            ));
        }
        for (k, v) in &self.by_color {
            if !COLORS.contains(&k.as_str()) {
                s.push_str(&format!("{k}={v} "));
            }
        }
        s.push_str(&format!("errors={}", self.errors));
        s
    }
}

/// Runs the demo (or one of its internal roles).
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    match args.role.as_deref() {
        Some("backend") => backend(
            args.addr.as_deref().unwrap_or("0.0.0.0:8080"),
            args.color.as_deref().unwrap_or("unknown"),
        ),
        Some("driver") => driver(
            args.addr.as_deref().unwrap_or("color.colorapp.local:8080"),
            args.host_header.as_deref(),
            args.rps,
        ),
        Some(other) => anyhow::bail!("unknown demo role `{other}`"),
        None => orchestrate(args),
    }
}

/// Children in their own process groups (so a terminal Ctrl-C reaches only the demo), stopped
/// in reverse order on drop.
#[derive(Default)]
struct Children(Vec<(String, Child)>);

impl Children {
    fn spawn(&mut self, name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<u32> {
        let log_file = std::fs::File::create(log)?;
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0);
        let child = cmd.spawn().with_context(|| format!("start {name}"))?;
        let pid = child.id();
        self.0.push((name.to_owned(), child));
        Ok(pid)
    }

    fn push(&mut self, name: &str, child: Child) {
        self.0.push((name.to_owned(), child));
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in self.0.iter_mut().rev() {
            let _ = Command::new("kill")
                .args(["-s", "TERM", &c.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, c) in self.0.iter_mut().rev() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A private temp dir (mode 0755 so the proxy uid can reach its files), removed on drop.
struct DemoDir(PathBuf);

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn orchestrate(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let use_netns = match args.mode.as_str() {
        "netns" => {
            anyhow::ensure!(
                netns::available(),
                "--mode netns runs each workload in its own network namespace and needs root \
                 (and iproute2): run it with sudo, or use --mode loopback"
            );
            true
        }
        "loopback" => false,
        "auto" => netns::available(),
        other => anyhow::bail!("--mode: expected auto, netns or loopback, got `{other}`"),
    };
    let exe = std::env::current_exe().context("find the meshplane binary")?;
    let envoy = meshplane_agent::envoy::run::find_envoy(
        args.envoy_binary.as_deref(),
        &meshplane_agent::envoy::env::ProcessEnv,
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone());

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = DemoDir(
        std::env::temp_dir().join(format!("meshplane-demo-{}-{nanos}", std::process::id())),
    );
    std::fs::create_dir_all(&dir.0)?;
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let d = dir.0.clone();

    // Declared before `children` so children are stopped before the namespaces go.
    let mut net = if use_netns {
        Some(Network::new()?)
    } else {
        None
    };
    let mut children = Children::default();

    // Control plane: API on loopback (for the user's terminal), xDS on the bridge (netns) or
    // loopback.
    let xds_listen = match &net {
        Some(n) => format!("{}:0", n.gateway()),
        None => "127.0.0.1:0".to_owned(),
    };
    let mut serve = Command::new(&exe);
    serve
        .args(["serve", "--data-dir"])
        .arg(d.join("data"))
        .args(["--api-listen", "127.0.0.1:0", "--xds-listen", &xds_listen])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(d.join("serve.log"))?)
        .process_group(0);
    let mut serve = serve.spawn().context("start meshplane serve")?;
    let stdout = serve.stdout.take().context("serve stdout")?;
    children.push("serve", serve);
    let (api, xds) = read_listen_lines(stdout)?;
    // Authentication is on, as in production: the CLI signs with the administrator key
    // `serve` wrote, and each Envoy presents a node token minted with it.
    let access = Access {
        data: d.join("data"),
    };
    let shift_file = d.join("shift-weights.yaml");
    std::fs::write(
        &shift_file,
        route_yaml(&[("red", 0), ("blue", 50), ("green", 50)]),
    )?;
    let mesh_file = d.join("colorapp.yaml");

    let (driver_cmd, where_) = match &mut net {
        Some(net) => {
            let hosts = start_netns(
                net,
                &exe,
                &envoy,
                &xds,
                &api,
                &mesh_file,
                &d,
                &access,
                &mut children,
            )?;
            let mut drv = hosts["front"].command(&exe);
            drv.arg("demo")
                .args(["--addr", &format!("color.colorapp.local:{APP_PORT}")]);
            (drv, format!("in network namespaces mp-{}-*", net.id()))
        }
        None => {
            let front = start_loopback(
                &exe,
                &envoy,
                &xds,
                &api,
                &mesh_file,
                &d,
                &access,
                &mut children,
            )?;
            let mut drv = Command::new(&exe);
            drv.arg("demo")
                .args(["--addr", &format!("{front}:{APP_PORT}")])
                .args(["--host-header", "color.colorapp.local"]);
            (
                drv,
                format!(
                    "on loopback, explicit mode (front Envoy on {front}; colors without sidecars)"
                ),
            )
        }
    };

    // Traffic from front, as an ordinary process that knows nothing of Envoy.
    let mut drv = driver_cmd;
    drv.args(["--role", "driver", "--rps", &args.rps.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(d.join("driver.log"))?)
        .process_group(0);
    let mut drv = drv.spawn().context("start the traffic driver")?;
    let drv_out = drv.stdout.take().context("driver stdout")?;
    children.push("driver", drv);
    let latest = Arc::new(Mutex::new(Counts::default()));
    {
        let latest = latest.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(drv_out).lines().map_while(Result::ok) {
                if let Some(c) = Counts::parse(&line)
                    && let Ok(mut l) = latest.lock()
                {
                    *l = c;
                }
            }
        });
    }

    println!("meshplane demo: colorapp mesh with real Envoys {where_}");
    println!("  control plane API: {api}   (xDS {xds})");
    println!("  logs: {}", d.display());
    println!("  credentials: {}", access.shell_env());
    println!("shift weights from another terminal with either of:");
    println!(
        "  {} {} apply -f {}",
        access.shell_env(),
        exe.display(),
        shift_file.display()
    );
    println!(
        "  {} aws appmesh update-route \
         --mesh-name colorapp --virtual-router-name color-router --route-name color-route --spec '{}'",
        access.shell_env(),
        route_spec_json(&[("red", 0), ("blue", 50), ("green", 50)])
    );
    let _ = std::io::stdout().flush();
    view(
        &args,
        &latest,
        &stop,
        &d,
        &format!(
            "{} {} apply -f {}",
            access.shell_env(),
            exe.display(),
            shift_file.display()
        ),
    )?;
    drop(children);
    drop(net);
    Ok(ExitCode::SUCCESS)
}

/// Namespaces front, red, blue, green: backend, `sidecar init`, `envoy run` as uid 1337 in
/// each; `<name>.colorapp.local` resolves to each namespace, `color.colorapp.local` to an
/// unassigned address (reachable only through interception).
#[allow(clippy::too_many_arguments)]
fn start_netns(
    net: &mut Network,
    exe: &Path,
    envoy: &Path,
    xds: &str,
    api: &str,
    mesh_file: &Path,
    d: &Path,
    access: &Access,
    children: &mut Children,
) -> anyhow::Result<BTreeMap<&'static str, netns::Host>> {
    let mut hosts = BTreeMap::new();
    for name in ["front", "red", "blue", "green"] {
        let h = net.add_host(name)?;
        net.add_name(&format!("{name}.colorapp.local"), h.ip)?;
        hosts.insert(name, h);
    }
    net.add_name("color.colorapp.local", net.unassigned(254))?;
    std::fs::write(mesh_file, COLORAPP_YAML)?;
    apply(exe, api, mesh_file, access)?;
    for (name, host) in &hosts {
        if *name != "front" {
            let mut b = host.command(exe);
            b.args(["demo", "--role", "backend", "--color", name, "--addr"])
                .arg(format!("0.0.0.0:{APP_PORT}"));
            children.spawn(
                &format!("{name}-backend"),
                b,
                &d.join(format!("{name}-backend.log")),
            )?;
        }
        let mut init = host.command(exe);
        init.args(["sidecar", "init"]);
        if *name != "front" {
            init.args(["--app-ports", &APP_PORT.to_string()]);
        }
        let out = init.output().context("sidecar init")?;
        anyhow::ensure!(
            out.status.success(),
            "sidecar init in {}: {}",
            host.netns,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut e = host.command(exe);
        e.args(["envoy", "run", "--node-id"])
            .arg(format!("mesh/colorapp/virtualNode/{name}"));
        // Minted on the host: the API listens on the host's loopback only.
        access.envoy_auth(exe, &mut e, name, d, Some(1337))?;
        e.args(["--xds-address", xds, "--admin-port", "9901"])
            .args(["--proxy-uid", "1337", "--restart-count", "3"])
            .args(["--drain-time-s", "0", "--envoy-binary"])
            .arg(envoy)
            .env(
                "ENVOY_ADMIN_ACCESS_LOG_FILE",
                d.join(format!("{name}-admin.log")),
            )
            .env("ENVOY_LOG_LEVEL", "warning");
        children.spawn(
            &format!("{name}-envoy"),
            e,
            &d.join(format!("{name}-envoy.log")),
        )?;
    }
    Ok(hosts)
}

/// Loopback, explicit mode (no root needed): the front Envoy's listeners bind a private
/// `127.x.y.10` (virtual node tag `meshplane.io/listen-address`), the color backends listen
/// on `127.x.y.11-13:8080` and the colors' DNS hostnames are those addresses. Returns the
/// front address. The colors run without sidecars: the translator binds every ingress
/// listener to port 15000 and every local app cluster to `127.0.0.1:<port>`, so only one
/// workload per host can have an ingress sidecar.
#[allow(clippy::too_many_arguments)]
fn start_loopback(
    exe: &Path,
    envoy: &Path,
    xds: &str,
    api: &str,
    mesh_file: &Path,
    d: &Path,
    access: &Access,
    children: &mut Children,
) -> anyhow::Result<std::net::Ipv4Addr> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id());
    let (a, b) = (100 + (seed % 150) as u8, (seed >> 8) as u8);
    let ip = |last: u8| std::net::Ipv4Addr::new(127, a, b, last);
    let front = ip(10);
    let mut yaml = COLORAPP_YAML.replace(
        "name: front\n",
        &format!("name: front\ntags:\n  meshplane.io/listen-address: \"{front}\"\n"),
    );
    for (i, color) in COLORS.iter().enumerate() {
        let addr = ip(11 + i as u8);
        yaml = yaml.replace(
            &format!("hostname: {color}.colorapp.local"),
            &format!("hostname: \"{addr}\""),
        );
        let mut cmd = Command::new(exe);
        cmd.args(["demo", "--role", "backend", "--color", color, "--addr"])
            .arg(format!("{addr}:{APP_PORT}"));
        children.spawn(
            &format!("{color}-backend"),
            cmd,
            &d.join(format!("{color}-backend.log")),
        )?;
    }
    std::fs::write(mesh_file, yaml)?;
    apply(exe, api, mesh_file, access)?;
    let admin = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut e = Command::new(exe);
    e.args([
        "envoy",
        "run",
        "--node-id",
        "mesh/colorapp/virtualNode/front",
    ]);
    access.envoy_auth(exe, &mut e, "front", d, None)?;
    e.args(["--xds-address", xds, "--admin-port", &admin.to_string()])
        .args([
            "--restart-count",
            "3",
            "--drain-time-s",
            "0",
            "--envoy-binary",
        ])
        .arg(envoy)
        .env("ENVOY_ADMIN_ACCESS_LOG_FILE", d.join("front-admin.log"))
        .env("ENVOY_LOG_LEVEL", "warning");
    children.spawn("front-envoy", e, &d.join("front-envoy.log"))?;
    Ok(front)
}

/// The live view (a terminal) or one line per second (a pipe), then the summary.
fn view(
    args: &DemoArgs,
    latest: &Mutex<Counts>,
    stop: &AtomicBool,
    d: &Path,
    shift_cmd: &str,
) -> anyhow::Result<()> {
    // Wait for the first answer before the clock starts (Envoys fetch their config first).
    let warmup = Instant::now();
    loop {
        anyhow::ensure!(!stop.load(Ordering::SeqCst), "interrupted");
        let c = latest.lock().map(|c| c.clone()).unwrap_or_default();
        if c.total() > 0 {
            break;
        }
        anyhow::ensure!(
            warmup.elapsed() < Duration::from_secs(60),
            "no request reached a color backend within 60s (logs in {})",
            d.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let tty = std::io::stdout().is_terminal();
    let start_counts = latest.lock().map(|c| c.clone()).unwrap_or_default();
    let started = Instant::now();
    let mut prev = start_counts.clone();
    let mut next_tick = Instant::now() + Duration::from_secs(1);
    loop {
        let done = args
            .duration
            .is_some_and(|s| started.elapsed() >= Duration::from_secs(s));
        if done || stop.load(Ordering::SeqCst) {
            break;
        }
        let now = Instant::now();
        if now < next_tick {
            std::thread::sleep((next_tick - now).min(Duration::from_millis(100)));
            continue;
        }
        next_tick += Duration::from_secs(1);
        let cur = latest.lock().map(|c| c.clone()).unwrap_or_default();
        let window = cur.since(&prev);
        let total = cur.since(&start_counts);
        prev = cur;
        if tty {
            print!("\x1b[2J\x1b[H");
            println!("meshplane demo — front → color.colorapp.local   (Ctrl-C to stop)\n");
            println!("last second:");
            print!("{}", bars(&window));
            println!("\nsince start ({}s):", started.elapsed().as_secs());
            print!("{}", bars(&total));
            println!("\nshift weights:\n  {shift_cmd}");
        } else {
            println!("window {} | total {}", window.line(), total.line());
        }
        let _ = std::io::stdout().flush();
    }
    let fin = latest
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default()
        .since(&start_counts);
    println!("summary {}", fin.line());
    let _ = std::io::stdout().flush();
    Ok(())
}

/// One line per color: count, share and a bar.
fn bars(c: &Counts) -> String {
    let total = c.total().max(1);
    let mut s = String::new();
    for color in COLORS {
        let n = c.by_color.get(color).copied().unwrap_or(0);
        let pct = n * 100 / total;
        s.push_str(&format!(
            "  {color:<6} {n:>6} {pct:>3}% {}\n",
            "█".repeat((pct / 2) as usize)
        ));
    }
    s.push_str(&format!("  errors {:>6}\n", c.errors));
    s
}

/// The route document for `meshplane apply` with the given weights.
pub fn route_yaml(weights: &[(&str, u32)]) -> String {
    let mut s = String::from(
        "kind: Route\nmesh: colorapp\nvirtualRouter: color-router\nname: color-route\nspec:\n  \
         httpRoute:\n    match:\n      prefix: /\n    action:\n      weightedTargets:\n",
    );
    for (node, w) in weights {
        s.push_str(&format!(
            "        - virtualNode: {node}\n          weight: {w}\n"
        ));
    }
    s
}

/// The same route as App Mesh API JSON (for `aws appmesh update-route --spec`).
pub fn route_spec_json(weights: &[(&str, u32)]) -> String {
    let targets: Vec<serde_json::Value> = weights
        .iter()
        .map(|(n, w)| serde_json::json!({ "virtualNode": n, "weight": w }))
        .collect();
    serde_json::json!({ "httpRoute": {
        "match": { "prefix": "/" },
        "action": { "weightedTargets": targets },
    }})
    .to_string()
}

/// The demo control plane's generated credentials (`<data>/credentials`, `<data>/config`,
/// profile `meshplane`) and, when its ports speak TLS, its CA (`<data>/ca.pem`).
struct Access {
    data: PathBuf,
}

impl Access {
    /// Points `cmd` (the CLI, `envoy token`) at the generated profile.
    fn env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("AWS_SHARED_CREDENTIALS_FILE", self.data.join("credentials"))
            .env("AWS_CONFIG_FILE", self.data.join("config"))
            .env("AWS_PROFILE", "meshplane");
        // An ambient AWS_CA_BUNDLE would win over the profile's ca_bundle (as in the AWS
        // CLI); meshplane's own variable wins over both.
        if let Some(ca) = self.ca() {
            cmd.env("MESHPLANE_CA_BUNDLE", ca);
        }
        cmd
    }

    /// `<data>/ca.pem` when meshplane's CA issued the ports' certificate (TLS on).
    fn ca(&self) -> Option<PathBuf> {
        let ca = self.data.join("ca.pem");
        ca.exists().then_some(ca)
    }

    /// The shell prefix that does the same for a user's terminal (`AWS_CA_BUNDLE` for the
    /// AWS CLI, which reads no MESHPLANE_ variable).
    fn shell_env(&self) -> String {
        let mut env = format!(
            "AWS_SHARED_CREDENTIALS_FILE={0}/credentials AWS_CONFIG_FILE={0}/config AWS_PROFILE=meshplane",
            self.data.display()
        );
        if let Some(ca) = self.ca() {
            env.push_str(&format!(" AWS_CA_BUNDLE={}", ca.display()));
        }
        env
    }

    /// Mints `node`'s token into `<d>/<node>-token.yaml` (`meshplane envoy token`) and gives
    /// `envoy run` the file, plus the CA bundle when xDS speaks TLS.
    fn envoy_auth(
        &self,
        exe: &Path,
        e: &mut Command,
        node: &str,
        d: &Path,
        proxy_uid: Option<u32>,
    ) -> anyhow::Result<()> {
        let file = d.join(format!("{node}-token.yaml"));
        let mut mint = Command::new(exe);
        self.env(&mut mint)
            .args([
                "envoy",
                "token",
                "--mesh",
                "colorapp",
                "--virtual-node",
                node,
            ])
            .arg("--out")
            .arg(&file);
        let out = mint.output().context("run meshplane envoy token")?;
        anyhow::ensure!(
            out.status.success(),
            "meshplane envoy token for {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Envoy runs as the proxy user in the namespaces; the file stays 0600.
        if let Some(uid) = proxy_uid {
            std::os::unix::fs::chown(&file, Some(uid), None)
                .with_context(|| format!("chown {} to uid {uid}", file.display()))?;
        }
        e.arg("--token-file").arg(&file);
        if let Some(ca) = self.ca() {
            e.arg("--ca-bundle").arg(ca);
        }
        Ok(())
    }
}

fn apply(exe: &Path, api: &str, file: &Path, access: &Access) -> anyhow::Result<()> {
    let mut last = String::new();
    for _ in 0..20 {
        let mut cmd = Command::new(exe);
        let out = access
            .env(&mut cmd)
            .args(["apply", "-f"])
            .arg(file)
            .args(["--endpoint", api])
            .output()
            .context("run meshplane apply")?;
        if out.status.success() {
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        std::thread::sleep(Duration::from_millis(250));
    }
    anyhow::bail!("meshplane apply -f {} failed: {last}", file.display())
}

fn read_listen_lines(stdout: std::process::ChildStdout) -> anyhow::Result<(String, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            let _ = tx.send(line.trim().to_owned());
            line.clear();
        }
    });
    let (mut api, mut xds) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.is_none() || xds.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .context("meshplane serve did not print its listening addresses")?;
        if let Some(a) = line.strip_prefix("listening api ") {
            api = Some(a.to_owned());
        } else if let Some(x) = line.strip_prefix("listening xds ") {
            xds = Some(x.to_owned());
        }
    }
    Ok((api.unwrap_or_default(), xds.unwrap_or_default()))
}

fn watch_signals(stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        stop.store(true, Ordering::SeqCst);
    });
}

/// The color backend: answers every request with its color (HTTP/1.1, keep-alive).
fn backend(addr: &str, color: &str) -> anyhow::Result<ExitCode> {
    let listener = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
    eprintln!("backend {color} listening on {addr}");
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let color = color.to_owned();
        std::thread::spawn(move || serve_conn(stream, &color));
    }
    Ok(ExitCode::SUCCESS)
}

/// Requests to `/flaky` fail every other time with 503 (retry scenarios).
static FLAKY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn serve_conn(stream: TcpStream, color: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(mut w) = stream.try_clone() else {
        return;
    };
    let mut r = BufReader::new(stream);
    loop {
        let mut content_length = 0usize;
        let mut first = true;
        let mut path = String::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end();
            if l.is_empty() {
                if first {
                    continue;
                }
                break;
            }
            if first {
                path = l.split_whitespace().nth(1).unwrap_or("/").to_owned();
            }
            first = false;
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        if content_length > 0 {
            let mut body = vec![0u8; content_length.min(1 << 20)];
            if r.read_exact(&mut body).is_err() {
                return;
            }
        }
        let fail =
            path.starts_with("/flaky") && FLAKY.fetch_add(1, Ordering::SeqCst).is_multiple_of(2);
        let (status, body) = if fail {
            ("503 Service Unavailable", format!("{color} flaked\n"))
        } else {
            ("200 OK", format!("{color}\n"))
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// The traffic driver: plain HTTP/1.1 GETs to `target`, one connection per request, printing
/// cumulative counts per answer body every 200 ms.
fn driver(target: &str, host_header: Option<&str>, rps: u32) -> anyhow::Result<ExitCode> {
    let mut counts = Counts::default();
    let interval = Duration::from_secs(1) / rps.max(1);
    let mut next = Instant::now();
    let mut last_print = Instant::now();
    let host = host_header
        .map(str::to_owned)
        .unwrap_or_else(|| target.split(':').next().unwrap_or(target).to_owned());
    loop {
        match get(target, &host) {
            Ok((200, body)) => *counts.by_color.entry(body.trim().to_owned()).or_default() += 1,
            Ok(_) | Err(_) => counts.errors += 1,
        }
        if last_print.elapsed() >= Duration::from_millis(200) {
            println!("counts {}", counts.line());
            let _ = std::io::stdout().flush();
            last_print = Instant::now();
        }
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

/// One `GET /` with `Connection: close`; returns the status and body.
pub fn get(target: &str, host: &str) -> anyhow::Result<(u16, String)> {
    let addr = target
        .to_socket_addrs()?
        .next()
        .context("name did not resolve")?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("bad response")?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_and_subtract() {
        let a = Counts::parse("counts red=3 blue=1 green=0 errors=1").unwrap();
        let b = Counts::parse("counts red=10 blue=2 green=4 errors=1").unwrap();
        assert_eq!(b.since(&a).line(), "red=7 blue=1 green=4 errors=0");
        assert!(Counts::parse("nonsense").is_none());
    }

    #[test]
    fn route_documents_agree() {
        let w = [("red", 0), ("blue", 50), ("green", 50)];
        assert!(route_yaml(&w).contains("virtualNode: green\n          weight: 50"));
        let j: serde_json::Value = serde_json::from_str(&route_spec_json(&w)).unwrap();
        assert_eq!(j["httpRoute"]["action"]["weightedTargets"][2]["weight"], 50);
    }
}
