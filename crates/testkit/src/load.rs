//! HTTP requests through an Envoy egress listener in explicit mode, and a bounded load
//! generator counting responses per body and status.
//!
//! A [`Target`] is a virtual service name plus the address it resolves to (the Envoy's
//! loopback IP and the service's port): requests go to `http://<service>:<port><path>`, so
//! `Host` is `<service>:<port>` exactly as an application would send it, and the
//! connection lands on the Envoy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// Per-request timeout of the client (longer than every route timeout the tests use).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// Hard cap on a load run, whatever was asked.
const MAX_RUN: Duration = Duration::from_secs(60);

/// Where requests go.
#[derive(Clone)]
pub struct Target {
    client: reqwest::Client,
    base: String,
    via: SocketAddr,
}

/// One response (`status` 0: transport error, the message is in `body`).
#[derive(Clone, Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Time to the full response.
    pub elapsed: Duration,
}

/// A bounded load run.
#[derive(Clone)]
pub struct LoadGen {
    target: Target,
    path: String,
    headers: Vec<(String, String)>,
    requests: Option<usize>,
    duration: Option<Duration>,
    concurrency: usize,
}

/// What a load run saw.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Requests completed (including errors).
    pub total: u64,
    /// Count per body of 2xx responses.
    pub by_body: BTreeMap<String, u64>,
    /// Count per status (0 = transport error).
    pub by_status: BTreeMap<u16, u64>,
    /// Every request in completion order: (time since start, status, body).
    pub samples: Vec<(Duration, u16, String)>,
    /// Wall time.
    pub elapsed: Duration,
}

// === impl Target ===

impl Target {
    /// Requests to `http://<service>:<via.port()>/...`, connected to `via`.
    pub fn new(service: &str, via: SocketAddr) -> Target {
        Target::with_pool(service, via, 64)
    }

    /// Like [`new`](Self::new), but every request opens a new connection (to spread
    /// requests over several Envoys sharing a `SO_REUSEPORT` address).
    pub fn fresh_connections(service: &str, via: SocketAddr) -> Target {
        Target::with_pool(service, via, 0)
    }

    fn with_pool(service: &str, via: SocketAddr, idle: usize) -> Target {
        let client = crate::http_client_builder()
            .no_proxy()
            .resolve(service, via)
            .timeout(CLIENT_TIMEOUT)
            .pool_max_idle_per_host(idle)
            .build()
            .expect("http client");
        Target {
            client,
            base: format!("http://{service}:{}", via.port()),
            via,
        }
    }

    /// The address connections go to.
    pub fn via(&self) -> SocketAddr {
        self.via
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Response {
        self.send("GET", path, &[]).await
    }

    /// Any method with extra headers.
    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let start = Instant::now();
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let headers = r.headers().clone();
                let body = r.text().await.unwrap_or_else(|e| format!("(body: {e})"));
                Response {
                    status,
                    body,
                    headers,
                    elapsed: start.elapsed(),
                }
            }
            Err(e) => Response {
                status: 0,
                body: format!("{e:?}"),
                headers: Default::default(),
                elapsed: start.elapsed(),
            },
        }
    }

    /// A load run against `path` (configure, then [`LoadGen::run`]).
    pub fn load(&self, path: &str) -> LoadGen {
        LoadGen {
            target: self.clone(),
            path: path.to_owned(),
            headers: Vec::new(),
            requests: None,
            duration: None,
            concurrency: 4,
        }
    }
}

// === impl LoadGen ===

impl LoadGen {
    /// Stop after `n` requests.
    pub fn requests(mut self, n: usize) -> Self {
        self.requests = Some(n);
        self
    }

    /// Stop after `d`.
    pub fn duration(mut self, d: Duration) -> Self {
        self.duration = Some(d);
        self
    }

    /// Requests in flight at once (default 4).
    pub fn concurrency(mut self, c: usize) -> Self {
        self.concurrency = c.max(1);
        self
    }

    /// An extra request header.
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }

    /// Runs until the request count or the duration is reached (at most 60 s).
    pub async fn run(self) -> LoadReport {
        let start = Instant::now();
        let deadline = start + self.duration.unwrap_or(MAX_RUN).min(MAX_RUN);
        let limit = self.requests.unwrap_or(usize::MAX);
        let issued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let this = Arc::new(self);
        let mut workers = Vec::new();
        for _ in 0..this.concurrency {
            let (this, issued, report) = (this.clone(), issued.clone(), report.clone());
            workers.push(tokio::spawn(async move {
                let headers: Vec<(&str, &str)> = this
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                while Instant::now() < deadline
                    && issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < limit
                {
                    let r = this.target.send("GET", &this.path, &headers).await;
                    let mut rep = report.lock().await;
                    rep.total += 1;
                    *rep.by_status.entry(r.status).or_default() += 1;
                    if (200..300).contains(&r.status) {
                        *rep.by_body.entry(r.body.clone()).or_default() += 1;
                    }
                    rep.samples.push((start.elapsed(), r.status, r.body));
                }
            }));
        }
        for w in workers {
            w.await.expect("load worker");
        }
        let mut rep = Arc::try_unwrap(report)
            .map(Mutex::into_inner)
            .unwrap_or_default();
        rep.elapsed = start.elapsed();
        rep
    }
}

// === impl LoadReport ===

impl LoadReport {
    /// Count of 2xx responses whose body is `body`.
    pub fn count(&self, body: &str) -> u64 {
        self.by_body.get(body).copied().unwrap_or(0)
    }

    /// Responses that were not 2xx (transport errors included).
    pub fn failures(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum()
    }

    /// A few non-2xx samples, for failure messages.
    pub fn failure_samples(&self, n: usize) -> Vec<String> {
        self.samples
            .iter()
            .filter(|(_, s, _)| !(200..300).contains(s))
            .take(n)
            .map(|(t, s, b)| format!("{t:?} {s} {}", b.chars().take(200).collect::<String>()))
            .collect()
    }
}
