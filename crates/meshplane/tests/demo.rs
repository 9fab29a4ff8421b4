//! `meshplane demo --duration N` runs unattended: the split it reports matches the route
//! weights of examples/colorapp.yaml (75/25/0), and after the printed `meshplane apply -f`
//! command shifts the weights mid-run (0/50/50) the per-second view follows, with no failed
//! request during the change (transparent mode: the traffic driver is an ordinary process in
//! its own namespace behind `sidecar init`). The loopback (explicit, no-root) mode is
//! checked the same way.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshplane::demo::Counts;

const BIN: &str = env!("CARGO_BIN_EXE_meshplane");

/// Parses `window red=.. blue=.. green=.. errors=.. | total ...` into the window counts.
fn window(line: &str) -> Option<Counts> {
    let rest = line.strip_prefix("window ")?;
    let (w, _) = rest.split_once(" | ")?;
    Counts::parse(&format!("counts {w}"))
}

fn share(c: &[Counts], color: &str) -> f64 {
    let n: u64 = c
        .iter()
        .map(|c| c.by_color.get(color).copied().unwrap_or(0))
        .sum();
    let total: u64 = c.iter().flat_map(|c| c.by_color.values()).sum();
    n as f64 / total.max(1) as f64
}

#[test]
fn demo_in_namespaces_split_follows_route_weights_and_live_changes() {
    assert!(
        meshplane_agent::sidecar::netns::available(),
        "the namespace demo needs root and iproute2 (apt-get install -y iproute2 iptables)"
    );
    run_demo("netns");
}

#[test]
fn demo_on_loopback_split_follows_route_weights_and_live_changes() {
    run_demo("loopback");
}

fn run_demo(mode: &str) {
    let mut child = Command::new(BIN)
        .args(["demo", "--mode", mode, "--duration", "14", "--rps", "40"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut apply_cmd = None;
    let mut before = vec![];
    let mut after = vec![];
    let mut applied_at = None;
    let mut summary = None;
    while summary.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            let err = child.stderr.take().map(|mut e| {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut e, &mut s);
                s
            });
            panic!("demo stopped without a summary: {err:?}");
        };
        if line.contains(" apply -f ") && apply_cmd.is_none() {
            apply_cmd = Some(line.trim().to_owned());
        } else if let Some(w) = window(&line) {
            match applied_at {
                None if before.len() < 5 => before.push(w),
                None => {
                    let cmd = apply_cmd.clone().expect("no apply command printed");
                    // `KEY=VALUE ... meshplane apply -f FILE`: the demo's credentials first.
                    let words: Vec<&str> = cmd.split_whitespace().collect();
                    let split = words
                        .iter()
                        .position(|w| !w.contains('='))
                        .expect("a command after the variables");
                    let (env, argv) = words.split_at(split);
                    assert!(
                        env.iter()
                            .any(|e| e.starts_with("AWS_SHARED_CREDENTIALS_FILE=")),
                        "the printed command carries the demo's credentials: {cmd}"
                    );
                    let out = Command::new(argv[0])
                        .args(&argv[1..])
                        .envs(env.iter().filter_map(|e| e.split_once('=')))
                        .output()
                        .unwrap();
                    assert!(out.status.success(), "{cmd}: {out:?}");
                    applied_at = Some(Instant::now());
                }
                // The change is live from the first window without red; every later
                // window must stay that way.
                Some(_) if !after.is_empty() || w.by_color.get("red") == Some(&0) => after.push(w),
                Some(t) => assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "the weight change did not show within 5 s"
                ),
            }
        } else if let Some(s) = line.strip_prefix("summary ") {
            summary = Counts::parse(&format!("counts {s}"));
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let summary = summary.unwrap();
    assert_eq!(
        summary.errors, 0,
        "failed requests during the run: {summary:?}"
    );
    let red = share(&before, "red");
    assert!(
        (0.62..=0.88).contains(&red),
        "red share before the change: {red} ({before:?})"
    );
    assert_eq!(share(&before, "green"), 0.0, "{before:?}");
    assert!(
        after.len() >= 3,
        "too few windows after the change: {after:?}"
    );
    assert_eq!(share(&after, "red"), 0.0, "{after:?}");
    let green = share(&after, "green");
    assert!(
        (0.3..=0.7).contains(&green),
        "green share after the change: {green} ({after:?})"
    );
}

/// Ctrl-C (SIGINT) stops everything the demo started: the control plane, the Envoys, the
/// backends, and (in netns mode) the namespaces.
#[test]
fn demo_stops_everything_on_ctrl_c() {
    for mode in ["loopback", "netns"] {
        let mut child = Command::new(BIN)
            .args(["demo", "--mode", mode, "--rps", "20"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let (mut api, mut front, mut ns_id, mut logs) = (None, None, None, None);
        for line in lines.by_ref() {
            if let Some(rest) = line.split("control plane API: ").nth(1) {
                api = rest.split_whitespace().next().map(str::to_owned);
            }
            if let Some(rest) = line.split("front Envoy on ").nth(1) {
                front = rest.split(';').next().map(str::to_owned);
            }
            if let Some(rest) = line.split("namespaces mp-").nth(1) {
                ns_id = rest.split('-').next().map(str::to_owned);
            }
            if let Some(rest) = line.split("logs: ").nth(1) {
                logs = Some(rest.trim().to_owned());
            }
            if line.starts_with("window ") {
                break;
            }
        }
        let api = api.expect("no API line");
        let logs = logs.expect("no logs line");
        let st = Command::new("kill")
            .args(["-s", "INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "{mode}: demo did not stop on SIGINT"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{mode}: {status}");
        let refused = |addr: &str| {
            let a: std::net::SocketAddr = addr.parse().unwrap();
            std::net::TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_err()
        };
        assert!(
            refused(
                api.trim_start_matches("http://")
                    .trim_start_matches("https://")
            ),
            "{mode}: API still up"
        );
        assert!(
            !std::path::Path::new(&logs).exists(),
            "{mode}: {logs} left behind"
        );
        if let Some(front) = front {
            assert!(refused(&format!("{front}:8080")), "front Envoy still up");
            let ip: std::net::Ipv4Addr = front.parse().unwrap();
            let [a, b, c, _] = ip.octets();
            for last in 11..=13 {
                let backend = format!("{a}.{b}.{c}.{last}:8080");
                assert!(refused(&backend), "backend {backend} still up");
            }
        }
        if let Some(id) = ns_id {
            let left = meshplane_agent::sidecar::netns::leftovers(&id);
            assert!(left.is_empty(), "namespaces left: {left:?}");
        }
        drop(lines);
    }
}
