//! The API port's HTTP server: our own accept loop with a connection cap, header, body and idle timeouts, and graceful shutdown; plus the file-descriptor limit raised at start-up.
//!
//! `axum::serve` has no timeouts and no connection cap, so a client that never finishes its
//! headers, a chunked body that stops short, or a thousand idle sockets would hold file
//! descriptors forever, and at the descriptor limit the API and new xDS streams become
//! unreachable. Here every connection is served by hyper-util's `auto` builder (HTTP/1.1
//! and h2c) and watched by its own task:
//!
//! ```text
//!  accept ──cap reached?──▶ close at once (one rate-limited WARN naming the flag)
//!    │
//!    ▼  per connection: Activity (in-flight requests, idle since, reading since)
//!  no request in flight, bytes of a request arriving ──▶ closed after the header timeout
//!  no request in flight, nothing arriving           ──▶ closed after the idle timeout
//!  request in flight, body not complete             ──▶ 408 and close after the body timeout
//! ```
//!
//! A new connection counts as "reading a request" from its accept, so a socket that sends
//! nothing is closed after the header timeout too. "In flight" ends when the handler returns,
//! so the idle timeout also bounds how long a client may take to read a response; and an
//! HTTP/2 connection that sends only control frames after its last stream is timed as
//! reading headers. Accept errors never end the loop: at the
//! descriptor limit (`EMFILE`) it backs off briefly instead of spinning.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::{Body as _, Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use meshplane_xds::LogLimiter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

/// The API listener's accept queue; the kernel caps it at `net.core.somaxconn` (4,096 by
/// default on Linux since 5.4).
const LISTEN_BACKLOG: u32 = 4096;
/// How long the accept loop pauses after an accept error such as `EMFILE` (no descriptor
/// left): long enough not to spin a core, short enough that service resumes as soon as a
/// descriptor is free.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one WARN line per this interval for refused connections and accept errors, with
/// the count of what happened since the last line.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight requests before closing their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Descriptors kept for everything but API connections (store, xDS streams, logs) when the
/// connection cap has to be lowered to fit the descriptor limit: half of the limit.
const FD_SHARE_DIVISOR: u64 = 2;

/// Flags of the API port's HTTP server (flattened into `meshplane serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct ApiLimitArgs {
    /// Time a client has to send a request's headers, counted from the connection's accept or
    /// from the first byte after the previous response (`500ms`, `10s`, `2m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub api_header_timeout: Duration,
    /// Time a client has to send a request's whole body, counted from its headers; then the
    /// server answers 408 and closes the connection.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub api_body_timeout: Duration,
    /// Time an idle keep-alive connection (no request in flight, nothing arriving) stays open.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub api_idle_timeout: Duration,
    /// Concurrent connections to the API port; further connections are accepted and closed
    /// at once. Lowered to half the file-descriptor limit if that is smaller.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub api_max_connections: u32,
}

/// The file-descriptor limit after [`raise_fd_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// Soft limit (`None` = unlimited).
    pub soft: Option<u64>,
    /// Hard limit (`None` = unlimited).
    pub hard: Option<u64>,
}

/// TLS on the API port: the acceptor (ALPN `h2`, `http/1.1`) and how long a client may take
/// to complete the handshake.
#[derive(Clone)]
pub struct ApiTls {
    /// Server config wrapped for tokio.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Counted from the accept; past it the connection is closed.
    pub handshake_timeout: Duration,
}

/// Per-connection state shared by the IO wrapper, the service and the watchdog.
struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

struct ActivityState {
    in_flight: usize,
    idle_since: Instant,
    /// When the first byte of a not yet dispatched request arrived (or the connection was
    /// accepted); `None` while idle or while a request is in flight.
    reading_since: Option<Instant>,
}

/// The connection's stream (TCP or TLS), noting when bytes of a new request start to arrive.
struct TrackedIo<S> {
    inner: S,
    activity: Arc<Activity>,
}

/// The request body, noting when it is complete (so a slow handler is not mistaken for a
/// slow client).
struct WatchedBody {
    inner: Incoming,
    complete: Arc<AtomicBool>,
}

/// Decrements the in-flight count when a request's handling ends or is cancelled.
struct InFlight(Arc<Activity>);

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the soft default of 1,024 is reached by
/// a thousand idle clients) and logs both. Never fails: the limits are only logged.
pub fn raise_fd_limit() -> FdLimit {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    if before.current != before.maximum {
        let raised = rustix::process::Rlimit {
            current: before.maximum,
            maximum: before.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, soft = ?before.current, hard = ?before.maximum, "raising the file descriptor limit failed");
        }
    }
    let now = getrlimit(Resource::Nofile);
    let limit = FdLimit {
        soft: now.current,
        hard: now.maximum,
    };
    tracing::info!(
        soft = limit
            .soft
            .map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        hard = limit
            .hard
            .map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        was = before
            .current
            .map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        "file descriptor limit"
    );
    limit
}

/// Binds a listener with a backlog of [`LISTEN_BACKLOG`] (tokio's `bind` uses 1,024), so a
/// burst of connects waits in the kernel instead of having its SYNs dropped and retried a
/// second later.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Parses `250ms`, `10s`, `2m` (a positive whole number and a unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit: write e.g. 500ms, 10s or 2m"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} does not start with a whole number"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("{s:?} has unit {unit:?}: use ms, s or m")),
    };
    if d.is_zero() {
        return Err(format!("{s:?} must be greater than zero"));
    }
    Ok(d)
}

/// Serves `app` on `listener` with the limits of `args` until `stop` resolves, then lets
/// in-flight requests finish (at most [`SHUTDOWN_GRACE`]) and returns.
pub async fn serve_api(
    listener: TcpListener,
    app: Router,
    args: ApiLimitArgs,
    fd_limit: FdLimit,
    tls: Option<ApiTls>,
    stop: impl Future<Output = ()>,
) {
    let max = effective_max_connections(args.api_max_connections, fd_limit);
    let permits = Arc::new(Semaphore::new(max as usize));
    let (closing_tx, closing_rx) = watch::channel(false);
    let args = Arc::new(args);
    let refused = LogLimiter::new(WARN_INTERVAL);
    let accept_errors = LogLimiter::new(WARN_INTERVAL);
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS/ENOMEM persist until something closes: pause instead
                // of spinning. Per-connection errors (ECONNABORTED, ...) need no pause.
                let exhausted = is_resource_exhaustion(&e);
                if let Some(skipped) = accept_errors.permit() {
                    tracing::warn!(error = %e, errors = skipped + 1, "api accept failed");
                }
                if exhausted {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Accepting and closing keeps the kernel backlog from filling, so the client gets
            // a prompt close rather than a hanging connect.
            drop(stream);
            if let Some(skipped) = refused.permit() {
                tracing::warn!(
                    max_connections = max,
                    refused = skipped + 1,
                    "api connection limit reached, closing new connections (raise --api-max-connections)"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, args, closing) = (app.clone(), args.clone(), closing_rx.clone());
        match tls.clone() {
            None => {
                tokio::spawn(serve_connection(stream, permit, app, args, closing));
            }
            // The handshake runs on the connection's task, holding its permit, bounded by
            // its own timeout: a client that stalls mid-handshake never reaches hyper.
            Some(tls) => {
                tokio::spawn(async move {
                    let peer = stream.peer_addr().ok();
                    let accepted =
                        tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(stream))
                            .await;
                    match accepted {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, permit, app, args, closing).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(?peer, error = %e, "api tls handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(?peer, timeout = ?tls.handshake_timeout, "api tls handshake timed out");
                        }
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = closing_tx.send(true);
    // Every connection task holds a permit: all permits back means all connections closed.
    if tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(max))
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "api connections still open at shutdown");
    }
}

/// The cap, lowered to half the soft descriptor limit when that is smaller (a cap above the
/// limit would let API clients take the descriptors xDS streams and the store need).
fn effective_max_connections(flag: u32, fd: FdLimit) -> u32 {
    let Some(soft) = fd.soft else { return flag };
    let share = u32::try_from(soft / FD_SHARE_DIVISOR)
        .unwrap_or(u32::MAX)
        .max(1);
    if flag > share {
        tracing::warn!(
            requested = flag,
            effective = share,
            fd_limit = soft,
            "--api-max-connections lowered to half the file descriptor limit"
        );
        share
    } else {
        flag
    }
}

fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(e),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
    )
}

async fn serve_connection<S>(
    stream: S,
    _permit: OwnedSemaphorePermit,
    app: Router,
    args: Arc<ApiLimitArgs>,
    mut closing: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        let body_timeout = args.api_body_timeout;
        hyper::service::service_fn(move |req| {
            handle(app.clone(), req, activity.clone(), body_timeout)
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The watchdog below times headers for HTTP/1 and HTTP/2 alike (and before the version
    // is known), so hyper's own HTTP/1 header timer stays off.
    builder.http1().header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    loop {
        let deadline = activity.deadline(&args);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "api connection ended with an error");
                }
                return;
            }
            () = activity.changed.notified() => {}
            () = sleep_until(deadline) => {
                if activity.deadline(&args).is_some_and(|d| d <= Instant::now()) {
                    // No request is in flight: nothing is lost by closing the socket now.
                    tracing::debug!("api connection closed after its header or idle timeout");
                    return;
                }
            }
            _ = async { closing.wait_for(|c| *c).await.is_ok() } => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
                return;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Runs `app` on one request; answers 408 and closes the connection when the body is not
/// complete within `body_timeout` of the headers.
async fn handle(
    app: Router,
    req: Request<Incoming>,
    activity: Arc<Activity>,
    body_timeout: Duration,
) -> Result<Response<axum::body::Body>, Infallible> {
    let _in_flight = InFlight::start(activity);
    let complete = Arc::new(AtomicBool::new(req.body().is_end_stream()));
    let req = req.map(|inner| {
        axum::body::Body::new(WatchedBody {
            inner,
            complete: complete.clone(),
        })
    });
    let call = app.oneshot(req);
    tokio::pin!(call);
    tokio::select! {
        r = &mut call => return r,
        () = tokio::time::sleep(body_timeout) => {}
    }
    if complete.load(Ordering::Acquire) {
        // The client sent everything; the handler is just slow.
        return call.await;
    }
    tracing::debug!(timeout = ?body_timeout, "api request body not complete in time, closing");
    let mut resp = Response::new(axum::body::Body::from(format!(
        "{{\"message\":\"request body not received within {body_timeout:?}\"}}"
    )));
    *resp.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    Ok(resp)
}

// === impl Activity ===

impl Activity {
    fn new() -> Activity {
        let now = Instant::now();
        Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                idle_since: now,
                // A new connection must send its first request's headers in time.
                reading_since: Some(now),
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the connection is to be closed if nothing changes; `None` while a request is
    /// in flight.
    fn deadline(&self, args: &ApiLimitArgs) -> Option<Instant> {
        let s = self.lock();
        if s.in_flight > 0 {
            None
        } else if let Some(t) = s.reading_since {
            Some(t + args.api_header_timeout)
        } else {
            Some(s.idle_since + args.api_idle_timeout)
        }
    }

    fn bytes_read(&self) {
        let mut s = self.lock();
        if s.in_flight == 0 && s.reading_since.is_none() {
            s.reading_since = Some(Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }
}

// === impl InFlight ===

impl InFlight {
    fn start(activity: Arc<Activity>) -> InFlight {
        {
            let mut s = activity.lock();
            s.in_flight += 1;
            s.reading_since = None;
        }
        activity.changed.notify_one();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut s = self.0.lock();
            s.in_flight -= 1;
            if s.in_flight == 0 {
                s.idle_since = Instant::now();
            }
        }
        self.0.changed.notify_one();
    }
}

// === impl TrackedIo ===

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// === impl WatchedBody ===

impl hyper::body::Body for WatchedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        let done = match &r {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            Poll::Pending => false,
        };
        if done {
            self.complete.store(true, Ordering::Release);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn rejects_durations_without_unit_or_zero() {
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(
            parse_duration("10h")
                .unwrap_err()
                .contains("use ms, s or m")
        );
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("greater than zero")
        );
        assert!(parse_duration("s").unwrap_err().contains("whole number"));
    }

    #[test]
    fn cap_is_lowered_to_half_the_fd_limit() {
        let fd = |soft| FdLimit {
            soft,
            hard: Some(100_000),
        };
        assert_eq!(effective_max_connections(4096, fd(Some(1024))), 512);
        assert_eq!(effective_max_connections(4096, fd(Some(20_000))), 4096);
        assert_eq!(effective_max_connections(4096, fd(None)), 4096);
    }
}
