//! Live traffic through a real Envoy running a translated configuration: weighted routing
//! across three backends, header matching, App Mesh's default retry on 503, and Envoy's 404
//! for hosts that are not declared backends.
//!
//! Without iptables, the egress listener is bound to the router's port itself
//! (`TranslateOptions::egress_port`), so the filter chain matched by destination port is hit
//! directly; target nodes use `127.0.0.1` as their DNS hostname. Everything stays on
//! loopback, and the Envoy child is killed by its handle when the test ends.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use meshplane_model::{NodeId, ProxyKind};
use meshplane_translate::{MeshSnapshot, TranslateOptions, translate_node};
use prost::Message;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tiny HTTP/1.1 server answering its name; with `flaky`, every odd request gets a 503;
/// the backend named `slow` waits 1.5 s before answering.
fn backend(name: &'static str, flaky: bool) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let c = c.clone();
            std::thread::spawn(move || serve(stream, name, flaky, &c));
        }
    });
    (port, count)
}

fn serve(stream: TcpStream, name: &str, flaky: bool, count: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut content_length = 0usize;
        let mut line = String::new();
        // Request line and headers.
        let mut first = true;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" && !first {
                break;
            }
            first = false;
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let n = count.fetch_add(1, Ordering::SeqCst);
        if name == "slow" {
            std::thread::sleep(Duration::from_millis(1500));
        }
        let (status, text) = if flaky && n.is_multiple_of(2) {
            ("503 Service Unavailable", "busy")
        } else {
            ("200 OK", name)
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// One request through Envoy; returns (status, body).
fn get(port: u16, host: &str, path: &str, headers: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Ok((status, body))
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Envoy on a static bootstrap equivalent to `cfg`; the guard kills it.
fn start_envoy(
    cfg: &meshplane_translate::ProxyConfig,
    tag: &str,
) -> (KillOnDrop, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "meshplane-translate-traffic-{}-{tag}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bootstrap.pb");
    std::fs::write(
        &path,
        common::bootstrap("mesh/demo/virtualNode/front", cfg).encode_to_vec(),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("envoy.log")).unwrap();
    let child = Command::new(common::envoy_binary())
        .args([
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "warn",
            "-c",
        ])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start envoy");
    (KillOnDrop(child), dir)
}

/// A TCP server that writes its name to every connection and closes it.
fn tcp_backend(name: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let _ = s.write_all(name.as_bytes());
        }
    });
    port
}

#[test]
fn weighted_tcp_route_through_real_envoy() {
    let (a, b) = (tcp_backend("db-a"), tcp_backend("db-b"));
    let egress = free_port();
    let yaml = format!(
        r#"
- {{kind: mesh, name: demo, spec: {{}}}}
- {{kind: virtualNode, name: front, spec: {{backends: [{{virtualService: {{virtualServiceName: db.local}}}}]}}}}
- {{kind: virtualNode, name: a, spec: {{listeners: [{{portMapping: {{port: {a}, protocol: tcp}}}}], serviceDiscovery: {{dns: {{hostname: 127.0.0.1}}}}}}}}
- {{kind: virtualNode, name: b, spec: {{listeners: [{{portMapping: {{port: {b}, protocol: tcp}}}}], serviceDiscovery: {{dns: {{hostname: 127.0.0.1}}}}}}}}
- {{kind: virtualRouter, name: db, spec: {{listeners: [{{portMapping: {{port: {egress}, protocol: tcp}}}}]}}}}
- {{kind: virtualService, name: db.local, spec: {{provider: {{virtualRouter: {{virtualRouterName: db}}}}}}}}
- {{kind: route, parent: db, name: split, spec: {{tcpRoute: {{action: {{weightedTargets: [{{virtualNode: a, weight: 1}}, {{virtualNode: b, weight: 1}}]}}}}}}}}
"#
    );
    let case = common::parse_case("tcp-traffic", &yaml);
    let snap = MeshSnapshot::from_resources("demo", case.resources);
    let front = NodeId {
        mesh: "demo".into(),
        owner: None,
        kind: ProxyKind::VirtualNode,
        name: "front".into(),
    };
    let opts = TranslateOptions {
        egress_port: u32::from(egress),
        ..TranslateOptions::default()
    };
    let cfg = translate_node(&snap, &case.endpoints, &front, &opts);
    assert!(cfg.diagnostics.is_empty(), "{:?}", cfg.diagnostics);
    let (mut envoy, dir) = start_envoy(&cfg, "tcp");
    let read = || -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", egress)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        (!out.is_empty()).then_some(out)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while read().is_none() {
        if let Ok(Some(status)) = envoy.0.try_wait() {
            let log = std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default();
            panic!("envoy exited with {status}: {log}");
        }
        assert!(Instant::now() < deadline, "envoy did not start proxying");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..60 {
        *seen.entry(read().expect("proxied connection")).or_default() += 1;
    }
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["db-a", "db-b"],
        "{seen:?}"
    );
    assert!(seen.values().all(|n| *n >= 10), "weights 1:1 gave {seen:?}");
    drop(envoy);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn weighted_header_retry_and_404_through_real_envoy() {
    let (red, red_n) = backend("red", false);
    let (blue, blue_n) = backend("blue", false);
    let (green, green_n) = backend("green", false);
    let (flaky, flaky_n) = backend("flaky", true);
    let (slow, _) = backend("slow", false);
    let egress = free_port();
    let yaml = format!(
        r#"
- {{kind: mesh, name: demo, spec: {{}}}}
- kind: virtualNode
  name: front
  spec:
    backends: [{{virtualService: {{virtualServiceName: color.local}}}}]
- {{kind: virtualNode, name: red, spec: {{listeners: [{{portMapping: {{port: {red}, protocol: http}}}}], serviceDiscovery: {{dns: {{hostname: 127.0.0.1}}}}}}}}
- {{kind: virtualNode, name: blue, spec: {{listeners: [{{portMapping: {{port: {blue}, protocol: http}}}}], serviceDiscovery: {{dns: {{hostname: 127.0.0.1}}}}}}}}
- {{kind: virtualNode, name: green, spec: {{listeners: [{{portMapping: {{port: {green}, protocol: http}}}}], serviceDiscovery: {{dns: {{hostname: 127.0.0.1}}}}}}}}
- {{kind: virtualNode, name: flaky, spec: {{listeners: [{{portMapping: {{port: {flaky}, protocol: http}}}}], serviceDiscovery: {{dns: {{hostname: 127.0.0.1}}}}}}}}
- {{kind: virtualNode, name: slow, spec: {{listeners: [{{portMapping: {{port: {slow}, protocol: http}}}}], serviceDiscovery: {{dns: {{hostname: 127.0.0.1}}}}}}}}
- {{kind: virtualRouter, name: color, spec: {{listeners: [{{portMapping: {{port: {egress}, protocol: http}}}}]}}}}
- {{kind: virtualService, name: color.local, spec: {{provider: {{virtualRouter: {{virtualRouterName: color}}}}}}}}
- kind: route
  parent: color
  name: weighted
  spec:
    httpRoute:
      match: {{prefix: /}}
      action:
        weightedTargets: [{{virtualNode: red, weight: 1}}, {{virtualNode: blue, weight: 1}}, {{virtualNode: green, weight: 1}}]
- kind: route
  parent: color
  name: canary
  spec:
    priority: 1
    httpRoute:
      match: {{prefix: /, headers: [{{name: x-canary, match: {{exact: "yes"}}}}]}}
      action:
        weightedTargets: [{{virtualNode: blue, weight: 1}}]
- kind: route
  parent: color
  name: flaky
  spec:
    priority: 2
    httpRoute:
      match: {{prefix: /flaky}}
      action:
        weightedTargets: [{{virtualNode: flaky, weight: 1}}]
- kind: route
  parent: color
  name: slow
  spec:
    priority: 3
    httpRoute:
      match: {{prefix: /slow}}
      action:
        weightedTargets: [{{virtualNode: slow, weight: 1}}]
      timeout:
        perRequest: {{value: 300, unit: ms}}
"#
    );
    let case = common::parse_case("traffic", &yaml);
    let snap = MeshSnapshot::from_resources("demo", case.resources);
    let front = NodeId {
        mesh: "demo".into(),
        owner: None,
        kind: ProxyKind::VirtualNode,
        name: "front".into(),
    };
    let opts = TranslateOptions {
        egress_port: u32::from(egress),
        ..TranslateOptions::default()
    };
    let cfg = translate_node(&snap, &case.endpoints, &front, &opts);
    assert!(cfg.diagnostics.is_empty(), "{:?}", cfg.diagnostics);

    let (mut envoy, dir) = start_envoy(&cfg, "http");

    // Wait until Envoy routes.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = envoy.0.try_wait() {
            panic!(
                "envoy exited with {status}: {}",
                std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default()
            );
        }
        if matches!(get(egress, "color.local", "/", ""), Ok((200, _))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "envoy did not start routing: {}",
            std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = [&red_n, &blue_n, &green_n].map(|c| c.load(Ordering::SeqCst));

    // Weighted 1:1:1 over 150 requests: every backend gets a fair share.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..150 {
        let (status, body) = get(egress, "color.local", "/", "").unwrap();
        assert_eq!(status, 200);
        *seen.entry(body).or_default() += 1;
    }
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["blue", "green", "red"],
        "{seen:?}"
    );
    assert!(
        seen.values().all(|n| *n >= 20),
        "weights 1:1:1 gave {seen:?}"
    );
    let after = [&red_n, &blue_n, &green_n].map(|c| c.load(Ordering::SeqCst));
    assert_eq!(
        after.iter().sum::<usize>() - before.iter().sum::<usize>(),
        150
    );

    // The `name:port` domain and a header match.
    for _ in 0..10 {
        let (status, body) = get(
            egress,
            &format!("color.local:{egress}"),
            "/x",
            "x-canary: yes\r\n",
        )
        .unwrap();
        assert_eq!((status, body.as_str()), (200, "blue"));
    }

    // Default retry policy: the flaky backend fails every other request, clients never see it.
    for _ in 0..10 {
        let (status, body) = get(egress, "color.local", "/flaky", "").unwrap();
        assert_eq!((status, body.as_str()), (200, "flaky"));
    }
    assert!(flaky_n.load(Ordering::SeqCst) >= 20, "503s were retried");

    // Route perRequest timeout: 300 ms against a 1.5 s backend gives a 504 well before 1.5 s.
    let t0 = Instant::now();
    let (status, _) = get(egress, "color.local", "/slow", "").unwrap();
    assert_eq!(status, 504);
    assert!(
        t0.elapsed() < Duration::from_millis(1400),
        "timed out after {:?}",
        t0.elapsed()
    );

    // Not a declared backend: Envoy's 404 (DROP_ALL, no catch-all virtual host).
    let (status, _) = get(egress, "elsewhere.local", "/", "").unwrap();
    assert_eq!(status, 404);

    drop(envoy);
    let _ = std::fs::remove_dir_all(&dir);
}
