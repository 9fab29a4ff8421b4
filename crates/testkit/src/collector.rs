//! Local trace collectors that record what Envoy's tracers send: [`HttpCollector`] (Zipkin
//! `/api/v2/spans`, Datadog `/v0.4/traces`, OTLP/gRPC `Export` over h2c: every request is
//! kept whatever its path) and [`UdpCollector`] (X-Ray segments, one datagram each).
//!
//! They answer every request `200` with an empty JSON object (a gRPC exporter sees a
//! malformed reply and may log it; what it sent is what the tests assert).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};

/// One request a collector received.
#[derive(Clone, Debug)]
pub struct Received {
    /// `POST`, `PUT`, ...
    pub method: String,
    /// Path (without the query).
    pub path: String,
    /// The raw body.
    pub body: Vec<u8>,
}

/// An HTTP/1.1 + h2c collector on `127.0.0.1:<free port>`; stops when dropped.
pub struct HttpCollector {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A UDP collector on `127.0.0.1:<free port>`; stops when dropped.
pub struct UdpCollector {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

// === impl HttpCollector ===

impl HttpCollector {
    /// Starts the collector.
    pub async fn start() -> HttpCollector {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind http collector");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback(record).with_state(seen.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpCollector { addr, seen, task }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.seen.lock().expect("collector lock").clone()
    }
}

impl Drop for HttpCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(State(seen): State<Arc<Mutex<Vec<Received>>>>, req: Request) -> &'static str {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    // Collectors take bounded payloads; 16 MiB is far above one test's spans.
    let body = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap_or_else(|_| Bytes::new());
    seen.lock().expect("collector lock").push(Received {
        method,
        path,
        body: body.to_vec(),
    });
    "{}"
}

// === impl UdpCollector ===

impl UdpCollector {
    /// Starts the collector.
    pub async fn start() -> UdpCollector {
        let sock = tokio::net::UdpSocket::bind(("127.0.0.1", 0))
            .await
            .expect("bind udp collector");
        let addr = sock.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = sock.recv(&mut buf).await {
                sink.lock().expect("collector lock").push(buf[..n].to_vec());
            }
        });
        UdpCollector { addr, seen, task }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every datagram received so far.
    pub fn datagrams(&self) -> Vec<Vec<u8>> {
        self.seen.lock().expect("collector lock").clone()
    }
}

impl Drop for UdpCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
