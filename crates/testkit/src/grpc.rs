//! A codegen-free gRPC backend and client: hand-written prost messages, tonic's
//! `server::Grpc` / `client::Grpc` with the prost codec, served over h2c by axum.
//!
//! Services and methods (all unary, `Ping` in, `Pong` out):
//! - `demo.Greeter/Hello`, `demo.Greeter/Bye`
//! - `demo.Echo/Echo`
//!
//! Every reply names the backend and the method it served (`Pong { backend, method }`);
//! any other path gets gRPC `UNIMPLEMENTED`. Failure injection:
//! [`fail_next`](GrpcBackend::fail_next) makes the next N calls fail with `UNAVAILABLE`;
//! request metadata `x-delay-ms: N` makes a call wait N ms before answering.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::uri::PathAndQuery;
use tonic::codegen::Service;
use tonic::server::UnaryService;
use tonic_prost::ProstCodec;

/// Every method the backend serves.
pub const METHODS: [&str; 3] = [
    "/demo.Greeter/Hello",
    "/demo.Greeter/Bye",
    "/demo.Echo/Echo",
];

/// The request message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    /// Free text, echoed back.
    #[prost(string, tag = "1")]
    pub text: String,
}

/// The reply message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Pong {
    /// The backend's name.
    #[prost(string, tag = "1")]
    pub backend: String,
    /// The gRPC path it served, e.g. `/demo.Greeter/Hello`.
    #[prost(string, tag = "2")]
    pub method: String,
    /// The request's text.
    #[prost(string, tag = "3")]
    pub text: String,
}

/// A running gRPC backend; stops when dropped.
pub struct GrpcBackend {
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    fail_remaining: AtomicU64,
}

#[derive(Clone)]
struct Method {
    backend: String,
    path: &'static str,
    counters: Arc<Counters>,
}

// === impl GrpcBackend ===

impl GrpcBackend {
    /// Serves [`METHODS`] as `name` on `127.0.0.1:<free port>` (h2c).
    pub async fn start(name: &str) -> GrpcBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind grpc backend");
        let addr = listener.local_addr().expect("local addr");
        let counters = Arc::new(Counters::default());
        let mut app = Router::new();
        for path in METHODS {
            let m = Method {
                backend: name.to_owned(),
                path,
                counters: counters.clone(),
            };
            app = app.route_service(path, GrpcRoute(m));
        }
        let app = app.fallback(|| async {
            // gRPC status 12 UNIMPLEMENTED, trailers-only.
            let mut r = http::Response::new(Body::empty());
            r.headers_mut()
                .insert("content-type", "application/grpc".parse().expect("header"));
            r.headers_mut()
                .insert("grpc-status", "12".parse().expect("header"));
            r
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GrpcBackend {
            addr,
            counters,
            task,
        }
    }

    /// Calls of a served method received so far (failed ones included).
    pub fn calls(&self) -> u64 {
        self.counters.calls.load(Ordering::SeqCst)
    }

    /// The next `n` calls fail with `UNAVAILABLE`.
    pub fn fail_next(&self, n: u64) {
        self.counters.fail_remaining.store(n, Ordering::SeqCst);
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl UnaryService<Ping> for Method {
    type Response = Pong;
    type Future = Pin<
        Box<dyn Future<Output = Result<tonic::Response<Pong>, tonic::Status>> + Send + 'static>,
    >;

    fn call(&mut self, request: tonic::Request<Ping>) -> Self::Future {
        let m = self.clone();
        let delay = request
            .metadata()
            .get("x-delay-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        Box::pin(async move {
            m.counters.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(ms) = delay {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            let fail = m
                .counters
                .fail_remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if fail {
                return Err(tonic::Status::unavailable("injected failure"));
            }
            Ok(tonic::Response::new(Pong {
                backend: m.backend,
                method: m.path.to_owned(),
                text: request.into_inner().text,
            }))
        })
    }
}

/// One method as an axum route service.
#[derive(Clone)]
struct GrpcRoute(Method);

impl Service<Request> for GrpcRoute {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let method = self.0.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Pong, Ping>::default());
            let resp = grpc.unary(method, req).await;
            Ok(resp.into_response())
        })
    }
}

/// One unary call of `path` through `via` (the Envoy egress address) with `authority` as
/// `:authority` (the virtual service, e.g. `greeter.local:50051`).
pub async fn call(
    via: SocketAddr,
    authority: &str,
    path: &str,
    text: &str,
) -> Result<Pong, tonic::Status> {
    call_with(via, authority, path, text, &[]).await
}

/// [`call`] with request metadata (ASCII `(name, value)` pairs).
pub async fn call_with(
    via: SocketAddr,
    authority: &str,
    path: &str,
    text: &str,
    metadata: &[(&'static str, &str)],
) -> Result<Pong, tonic::Status> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{via}"))
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .origin(
            format!("http://{authority}")
                .parse()
                .map_err(|e: http::uri::InvalidUri| tonic::Status::internal(e.to_string()))?,
        )
        .connect_timeout(std::time::Duration::from_secs(2))
        .timeout(std::time::Duration::from_secs(5));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect {via}: {e}")))?;
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path: PathAndQuery = path
        .parse()
        .map_err(|e: http::uri::InvalidUri| tonic::Status::internal(e.to_string()))?;
    let mut request = tonic::Request::new(Ping {
        text: text.to_owned(),
    });
    for (k, v) in metadata {
        let v = v
            .parse()
            .map_err(|_| tonic::Status::internal(format!("bad metadata value {v:?}")))?;
        request.metadata_mut().insert(*k, v);
    }
    client
        .unary(request, path, ProstCodec::<Ping, Pong>::default())
        .await
        .map(tonic::Response::into_inner)
}
