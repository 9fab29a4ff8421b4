//! The API port's limits against the real `meshplane serve`: slow headers and a stalled
//! chunked body are cut off at their timeouts, an idle keep-alive connection is closed, the
//! connection cap refuses (and logs) connection 101, and with the soft file-descriptor limit
//! raised 2,000 idle connections do not stop `/healthz` or a new ADS stream. Below
//! authentication (`--auth none`): the limits hold before any request is read.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshplane_testkit::ControlPlane;
use meshplane_xds::ResourceType;
use meshplane_xds::testing::SotwClient;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for every "the server closes it" wait: well above the 1 s timeouts the tests
/// configure, well below "never".
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

fn api_addr(cp: &ControlPlane) -> SocketAddr {
    cp.api_url()
        .strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .expect("api address")
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
/// Fails the test if it is still open after [`CLOSE_WITHIN`].
async fn read_until_closed(s: &mut TcpStream, what: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = CLOSE_WITHIN.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => panic!(
                "{what}: the server kept the connection open for {CLOSE_WITHIN:?}; received {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

/// `GET path` on a new connection; the response's status line and body.
async fn raw_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out)
            .await
            .map_err(|e| e.to_string())?;
        if out.is_empty() {
            return Err("connection closed without a response".to_owned());
        }
        Ok(out)
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| Err(format!("no response to GET {path} within 5s")))
}

/// Server-side ESTABLISHED TCP sockets on `port` (IPv4 loopback), from `/proc/net/tcp`.
fn established_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3
                && f[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                    == Some(port)
                && f[3] == "01"
        })
        .count()
}

/// Soft and hard `Max open files` of a process, from `/proc/<pid>/limits`.
fn nofile_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].to_owned(), f[4].to_owned())
}

#[tokio::test]
async fn slow_headers_are_closed_after_the_header_timeout() {
    let cp = ControlPlane::start_insecure(&["--api-header-timeout", "1s"]).await;
    let addr = api_addr(&cp);

    // Half a request line, then nothing.
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /heal").await.unwrap();
    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(addr).await.unwrap();

    let opened = Instant::now();

    let (got, _) = read_until_closed(&mut half, "half a request line").await;
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(800),
        "closed after {after:?}, before the 1s header timeout"
    );
    assert!(got.is_empty(), "no response expected, got {got:?}");
    read_until_closed(&mut silent, "silent connection").await;
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(800),
        "closed after {after:?}, before the 1s header timeout"
    );

    // A client that sends in time is served as before.
    let ok = raw_get(addr, "/healthz").await.expect("healthz");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[tokio::test]
async fn a_chunked_body_that_stops_short_gets_408_and_is_closed() {
    let cp = ControlPlane::start_insecure(&["--api-body-timeout", "1s"]).await;
    let addr = api_addr(&cp);

    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"PUT /v20190125/meshes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\n{\"mes\r\n",
    )
    .await
    .unwrap();
    let started = Instant::now();

    // The server stays responsive while the body is pending.
    let ok = raw_get(addr, "/healthz")
        .await
        .expect("healthz while a body stalls");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");

    let (got, _) = read_until_closed(&mut s, "stalled chunked body").await;
    let after = started.elapsed();
    assert!(
        got.starts_with("HTTP/1.1 408"),
        "expected 408 Request Timeout, got {got:?}"
    );
    assert!(got.contains("request body not received within"), "{got}");
    assert!(
        after >= Duration::from_millis(800),
        "408 after {after:?}, before the 1s body timeout"
    );
    // Nothing was created from half a body.
    let (status, _) = cp.request("GET", "/v20190125/meshes/mes", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let cp =
        ControlPlane::start_insecure(&["--api-idle-timeout", "1s", "--api-header-timeout", "30s"])
            .await;
    let addr = api_addr(&cp);

    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The response (keep-alive), then the close after 1 s of idleness.
    let (got, after) = read_until_closed(&mut s, "idle keep-alive connection").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        after >= Duration::from_millis(800),
        "closed after {after:?}, before the 1s idle timeout"
    );
}

#[tokio::test]
async fn connections_above_the_cap_are_closed_and_logged() {
    let cp = ControlPlane::start_insecure(&[
        "--api-max-connections",
        "100",
        "--api-idle-timeout",
        "1s",
        "--api-header-timeout",
        "60s",
    ])
    .await;
    let addr = api_addr(&cp);
    // The harness's pooled keep-alive connection goes after the 1 s idle timeout; wait for it
    // so the 100 connections below are exactly the ones the cap counts.
    meshplane_testkit::wait_for("no API connection left", CLOSE_WITHIN, || async {
        match established_on(addr.port()) {
            0 => Ok(()),
            n => Err(format!("{n} established")),
        }
    })
    .await;

    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // Connection 101 is accepted (after the 100 before it, in order) and closed at once.
    let mut over = TcpStream::connect(addr).await.unwrap();
    let (got, _) = read_until_closed(&mut over, "connection 101").await;
    assert!(got.is_empty(), "{got}");
    // The 100 are still open.
    for (i, s) in held.iter().enumerate() {
        let mut b = [0u8; 1];
        match s.try_read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("connection {i} under the cap was closed: {other:?}"),
        }
    }
    meshplane_testkit::wait_for("the cap's log line", CLOSE_WITHIN, || async {
        let log = cp.log();
        if log.contains("api connection limit reached")
            && log.contains("--api-max-connections")
            && log.contains("max_connections=100")
        {
            Ok(())
        } else {
            Err("not logged yet".to_owned())
        }
    })
    .await;

    // A slot freed is a slot usable again.
    drop(held.pop());
    meshplane_testkit::wait_for("healthz after a slot was freed", CLOSE_WITHIN, || async {
        raw_get(addr, "/healthz").await.and_then(|r| {
            if r.starts_with("HTTP/1.1 200") {
                Ok(())
            } else {
                Err(r)
            }
        })
    })
    .await;
}

#[tokio::test]
async fn two_thousand_idle_connections_starve_neither_healthz_nor_ads() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    // Start serve with the common soft default of 1,024 (the child inherits it), then give
    // this test process room for 2,000 client sockets. Other tests of this binary hold far
    // fewer than 1,024 descriptors, so the brief lowering cannot starve them.
    let hard = getrlimit(Resource::Nofile).maximum;
    assert!(
        hard.is_none_or(|h| h >= 4096),
        "the hard descriptor limit ({hard:?}) is too low for this test"
    );
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(1024),
            maximum: hard,
        },
    )
    .expect("lower soft limit");
    let cp = ControlPlane::start_insecure(&["--api-header-timeout", "60s"]).await;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: hard,
            maximum: hard,
        },
    )
    .expect("restore soft limit");

    // serve raised its soft limit to the hard one and logged both.
    let (soft, hard_seen) = nofile_limits(cp.pid());
    assert_eq!(
        soft, hard_seen,
        "serve's soft descriptor limit was not raised"
    );
    assert_ne!(soft, "1024");
    assert!(cp.log().contains("file descriptor limit"), "{}", cp.log());

    cp.create_mesh("m", json!({})).await;
    cp.create_virtual_node("m", "n", json!({})).await;

    let addr = api_addr(&cp);
    let started = Instant::now();
    let mut idle = Vec::with_capacity(2000);
    for i in 0..2000 {
        let s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect {i} timed out"))
            .unwrap_or_else(|e| panic!("connect {i}: {e}"));
        idle.push(s);
    }
    let connected = started.elapsed();
    // The server holds them all (not only the kernel's backlog): more than 2,000 descriptors.
    let fds_dir = format!("/proc/{}/fd", cp.pid());
    meshplane_testkit::wait_for("serve holding 2,000 connections", CLOSE_WITHIN, || async {
        let n = std::fs::read_dir(&fds_dir).map(|d| d.count()).unwrap_or(0);
        if n > 2000 {
            Ok(())
        } else {
            Err(format!("{n} descriptors"))
        }
    })
    .await;
    eprintln!(
        "2,000 idle connections: connected in {connected:?}, all held by serve after {:?}",
        started.elapsed()
    );

    let ok = raw_get(addr, "/healthz")
        .await
        .expect("healthz beside 2,000 idle connections");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");

    let mut ads = SotwClient::connect(cp.xds_addr(), "mesh/m/virtualNode/n").await;
    ads.subscribe(ResourceType::Cluster, &[], "");
    let first = ads.recv().await;
    assert_eq!(first.type_url, ResourceType::Cluster.type_url());

    // Every idle connection is still open: nothing was shed to make room.
    let open = idle
        .iter()
        .filter(|s| {
            let mut b = [0u8; 1];
            matches!(s.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    assert_eq!(open, 2000);
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the `(comm)`, which may contain spaces: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

#[tokio::test]
async fn at_the_descriptor_limit_the_accept_loop_backs_off_and_recovers() {
    use rustix::process::{Pid, Resource, Rlimit, getrlimit, prlimit};
    let cp = ControlPlane::start_insecure(&["--api-header-timeout", "60s"]).await;
    let addr = api_addr(&cp);
    // Lower serve's soft limit under the running process: the cap (computed at start) no
    // longer protects it, so accepts fail with EMFILE.
    let pid = Pid::from_raw(cp.pid() as i32).expect("pid");
    let hard = getrlimit(Resource::Nofile).maximum;
    prlimit(
        Some(pid),
        Resource::Nofile,
        Rlimit {
            current: Some(256),
            maximum: hard,
        },
    )
    .expect("prlimit serve");

    let mut held = Vec::new();
    for _ in 0..400 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    meshplane_testkit::wait_for("the EMFILE log line", CLOSE_WITHIN, || async {
        if cp.log().contains("api accept failed") {
            Ok(())
        } else {
            Err("not logged yet".to_owned())
        }
    })
    .await;

    // With connections waiting in the backlog and no descriptor free, a loop without a pause
    // would take a whole core; with it, the process stays nearly idle.
    let window = Duration::from_millis(2500);
    let before = cpu_time(cp.pid());
    tokio::time::sleep(window).await;
    let used = cpu_time(cp.pid()) - before;
    assert!(
        used < Duration::from_millis(250),
        "serve used {used:?} of CPU in {window:?} at the descriptor limit"
    );
    let lines = cp.log().matches("api accept failed").count();
    assert_eq!(lines, 1, "accept errors are logged once per interval");

    // The loop did not exit: once descriptors are free again, new clients are served.
    drop(held);
    meshplane_testkit::wait_for(
        "healthz after the descriptors came back",
        CLOSE_WITHIN,
        || async {
            raw_get(addr, "/healthz").await.and_then(|r| {
                if r.starts_with("HTTP/1.1 200") {
                    Ok(())
                } else {
                    Err(r)
                }
            })
        },
    )
    .await;
}
