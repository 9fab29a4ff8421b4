//! The control plane under test: a `meshplane serve` child process (fresh data directory,
//! quotas raised, high file-descriptor limit inherited), restartable on the same data
//! directory and ports, and its resource usage read from `/proc`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long the child may take to print its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The region the bench's servers run in (`--region`), which signed requests are scoped to.
pub const REGION: &str = "us-east-1";

/// A `meshplane serve` child.
pub struct ServerProcess {
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub api: SocketAddr,
    pub xds: SocketAddr,
    log: String,
    security: Security,
    /// Whether the child announced `listening api https://…`.
    pub tls: bool,
}

/// How the child authenticates and encrypts: the xDS benchmarks run `--auth none` with TLS
/// off (the default), `api --auth-compare` runs one child per combination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Security {
    /// `--auth sigv4` (the administrator key is then in `<data-dir>/credentials`).
    pub auth: bool,
    /// `--tls on` with meshplane's own CA (`<data-dir>/ca.pem`).
    pub tls: bool,
}

/// Resource usage of a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Resident set size, bytes (`VmRSS`).
    pub rss: u64,
    /// Peak resident set size, bytes (`VmHWM`).
    pub hwm: u64,
    /// User + system CPU seconds.
    pub cpu_s: f64,
}

// === impl ServerProcess ===

impl ServerProcess {
    /// Starts `bin serve` on `127.0.0.1:0` with a fresh data directory.
    pub fn start(bin: &Path, log: &str) -> anyhow::Result<ServerProcess> {
        ServerProcess::start_with(bin, log, Security::default())
    }

    /// Starts `bin serve` on `127.0.0.1:0` with a fresh data directory and `security`.
    pub fn start_with(bin: &Path, log: &str, security: Security) -> anyhow::Result<ServerProcess> {
        let dir = tempfile::Builder::new()
            .prefix("meshplane-bench-")
            .tempdir()?;
        let mut s = ServerProcess {
            bin: bin.to_owned(),
            dir,
            child: None,
            api: ([127, 0, 0, 1], 0).into(),
            xds: ([127, 0, 0, 1], 0).into(),
            log: log.to_owned(),
            security,
            tls: false,
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("meshplane.log"))?;
        let big = "1000000";
        let mut child = Command::new(&self.bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--api-listen", &self.api.to_string()])
            .args(["--xds-listen", &self.xds.to_string()])
            .args(["--log", &self.log])
            .args(["--auth", if self.security.auth { "sigv4" } else { "none" }])
            .args(["--tls", if self.security.tls { "on" } else { "off" }])
            .args(["--region", REGION])
            .args(["--quota-virtual-nodes", big])
            .args(["--quota-virtual-services", big])
            .args(["--quota-virtual-routers", big])
            .args(["--quota-routes", big])
            .args(["--quota-backends", big])
            .args(["--quota-virtual-gateways", big])
            .args(["--quota-gateway-routes", big])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut api, mut xds) = (None, None);
        while api.is_none() || xds.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening api http://") {
                        api = a.trim().parse().ok();
                        self.tls = false;
                    } else if let Some(a) = line.strip_prefix("listening api https://") {
                        api = a.trim().parse().ok();
                        self.tls = true;
                    } else if let Some(a) = line.strip_prefix("listening xds ") {
                        xds = a.trim().parse().ok();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "meshplane serve did not print its addresses; log:\n{}",
                        self.log_tail(30)
                    );
                }
            }
        }
        self.api = api.context("api address")?;
        self.xds = xds.context("xds address")?;
        self.child = Some(child);
        Ok(())
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS on).
    pub fn api_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.api)
    }

    /// The child's data directory (`credentials`, `ca.pem`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The child's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the child (SIGKILL: a crash, streams end with a reset).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the child again on the same data directory and ports.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Resource usage now.
    pub fn usage(&self) -> Usage {
        self.pid().map(usage).unwrap_or_default()
    }

    /// The last `n` log lines.
    pub fn log_tail(&self, n: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("meshplane.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Usage of process `pid` from `/proc`.
pub fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            * 1024
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command: state is field 3; utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> f64 { f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    // USER_HZ is 100 on every Linux architecture that matters.
    let cpu_s = (ticks(11) + ticks(12)) / 100.0;
    Usage {
        rss: kb("VmRSS:"),
        hwm: kb("VmHWM:"),
        cpu_s,
    }
}

/// Raises this process's RLIMIT_NOFILE soft limit to the hard limit (children inherit it).
pub fn raise_nofile() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let Some(hard) = lim.maximum {
        lim.current = Some(hard);
        let _ = setrlimit(Resource::Nofile, lim);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}
