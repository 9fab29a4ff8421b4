//! An HTTP backend (HTTP/1.1 and h2c) that answers its name, with programmable failures.
//!
//! Every response carries the body `<name>` and headers `x-backend: <name>`,
//! `x-echo-method`, `x-echo-path` (path and query). A request with `x-echo-headers: 1` gets
//! its request headers back as a JSON object instead of the name. Failure injection:
//! - [`fail_next`](HttpBackend::fail_next): the next N requests get `503` (body `busy`);
//! - [`fail_path`](HttpBackend::fail_path): every request for one path gets `503`;
//! - request header `x-delay-ms: N`: wait N ms before answering.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Default)]
struct Shared {
    name: String,
    requests: AtomicU64,
    fail_remaining: AtomicU64,
    fail_path: std::sync::Mutex<Option<String>>,
    failed: AtomicU64,
}

/// A running backend; stops when dropped.
pub struct HttpBackend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

// === impl HttpBackend ===

impl HttpBackend {
    /// Serves `name` on `127.0.0.1:<free port>`.
    pub async fn start(name: &str) -> HttpBackend {
        HttpBackend::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Serves `name` on `addr` (port 0 picks one).
    pub async fn start_on(name: &str, addr: SocketAddr) -> HttpBackend {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind http backend {name} on {addr}: {e}"));
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            ..Default::default()
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HttpBackend { addr, shared, task }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests received so far (including failed ones).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests answered with an injected 503 so far.
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// The next `n` requests get `503 busy`.
    pub fn fail_next(&self, n: u64) {
        self.shared.fail_remaining.store(n, Ordering::SeqCst);
    }

    /// Every request whose path is `path` gets `503 busy` (`None`: none).
    pub fn fail_path(&self, path: Option<&str>) {
        *self.shared.fail_path.lock().expect("fail_path lock") = path.map(str::to_owned);
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(st): State<Arc<Shared>>, req: Request) -> Response {
    st.requests.fetch_add(1, Ordering::SeqCst);
    let delay = req
        .headers()
        .get("x-delay-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let path_fails = st
        .fail_path
        .lock()
        .expect("fail_path lock")
        .as_deref()
        .is_some_and(|p| p == req.uri().path());
    let fail = path_fails
        || st
            .fail_remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let (status, body) = if fail {
        st.failed.fetch_add(1, Ordering::SeqCst);
        (StatusCode::SERVICE_UNAVAILABLE, "busy".to_owned())
    } else if req.headers().get("x-echo-headers").is_some() {
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
                )
            })
            .collect();
        (
            StatusCode::OK,
            serde_json::Value::Object(headers).to_string(),
        )
    } else {
        (StatusCode::OK, st.name.clone())
    };
    let mut resp = (status, Body::from(body)).into_response();
    let h = resp.headers_mut();
    let val = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("?"));
    h.insert("x-backend", val(&st.name));
    h.insert("x-echo-method", val(req.method().as_str()));
    h.insert(
        "x-echo-path",
        val(req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")),
    );
    resp
}
