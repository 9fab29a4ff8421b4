//! The xDS port's accept loop: a cap on open connections, a deadline for the TLS handshake
//! (when TLS is on) and the HTTP/2 preface, an idle timeout for connections without a
//! stream, and a pause instead of a spin when `accept` fails (out of file descriptors).
//!
//! TLS is terminated inside [`XdsConn`]: the accept loop hands tonic the connection at
//! once and the handshake runs on the connection's own task, the first time tonic reads or
//! writes. So a slow handshake never delays other accepts, holds its connection permit,
//! and is cut by the same deadline as a silent plaintext client.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::limits::LogLimiter;
use crate::server::XdsServerConfig;

/// Length of the HTTP/2 client connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
const PREFACE_LEN: usize = 24;
/// Pause after a failed `accept` (EMFILE, ENFILE, ENOBUFS) before trying again: the error
/// repeats until a descriptor is freed, and retrying at once would spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// At most one WARN line per this interval about refused connections or accept errors.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Accepted connections, each holding one of `max_connections` permits until it closes;
/// connections past the cap are closed at once.
pub(crate) struct LimitedIncoming {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    max: usize,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    backoff: Option<Pin<Box<Sleep>>>,
    full_log: LogLimiter,
    error_log: LogLimiter,
    tls: Option<TlsAcceptor>,
}

/// The connection's byte stream: plaintext, or TLS before and after its handshake.
enum ConnIo {
    Plain(TcpStream),
    Handshaking(Box<tokio_rustls::Accept<TcpStream>>),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The handshake failed; every read and write fails.
    Failed,
}

/// One accepted connection: closed with an error if it has not sent the HTTP/2 preface
/// within the handshake timeout; gives its permit back when dropped.
pub(crate) struct XdsConn {
    io: ConnIo,
    tcp: TcpConnectInfo,
    _permit: OwnedSemaphorePermit,
    /// Bytes read so far, until the preface is complete.
    read: usize,
    /// Running until the preface is complete.
    deadline: Option<Pin<Box<Sleep>>>,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    /// Running while the connection has no stream, with the `opened` count it started at.
    idle: Option<(Pin<Box<Sleep>>, u64)>,
}

/// What the ADS service sees of the connection a stream arrived on (tonic puts it in
/// every request's extensions).
#[derive(Clone)]
pub(crate) struct XdsConnInfo {
    pub(crate) tcp: TcpConnectInfo,
    pub(crate) activity: Arc<Activity>,
}

/// Streams of one connection, counted by the streams themselves.
#[derive(Default)]
pub(crate) struct Activity {
    open: AtomicUsize,
    opened: AtomicU64,
}

/// A stream's place in its connection's [`Activity`]; leaves it on drop.
pub(crate) struct StreamGuard(Arc<Activity>);

// === impl LimitedIncoming ===

impl LimitedIncoming {
    pub(crate) fn new(
        listener: TcpListener,
        permits: Arc<Semaphore>,
        config: &XdsServerConfig,
    ) -> LimitedIncoming {
        LimitedIncoming {
            listener,
            permits,
            max: config.max_connections,
            handshake_timeout: config.handshake_timeout,
            idle_timeout: config.idle_timeout,
            backoff: None,
            full_log: LogLimiter::new(LOG_INTERVAL),
            error_log: LogLimiter::new(LOG_INTERVAL),
            tls: config.tls.clone().map(TlsAcceptor::from),
        }
    }
}

impl Stream for LimitedIncoming {
    type Item = io::Result<XdsConn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(pause) = &mut this.backoff {
                ready!(pause.as_mut().poll(cx));
                this.backoff = None;
            }
            match ready!(this.listener.poll_accept(cx)) {
                Ok((io, peer)) => {
                    let Ok(permit) = this.permits.clone().try_acquire_owned() else {
                        if let Some(skipped) = this.full_log.permit() {
                            tracing::warn!(
                                limit = this.max, %peer, refused_since_last_log = skipped,
                                "xds connection limit reached, closing new connections \
                                 (raise it with --xds-max-connections)"
                            );
                        }
                        drop(io);
                        continue;
                    };
                    // Small xDS requests (ACKs) must not wait for Nagle.
                    let _ = io.set_nodelay(true);
                    let deadline = Box::pin(tokio::time::sleep(this.handshake_timeout));
                    let tcp = io.connect_info();
                    let io = match &this.tls {
                        Some(tls) => ConnIo::Handshaking(Box::new(tls.accept(io))),
                        None => ConnIo::Plain(io),
                    };
                    return Poll::Ready(Some(Ok(XdsConn {
                        io,
                        tcp,
                        _permit: permit,
                        read: 0,
                        deadline: Some(deadline),
                        activity: Arc::default(),
                        idle_timeout: this.idle_timeout,
                        idle: None,
                    })));
                }
                Err(error) => {
                    if let Some(skipped) = this.error_log.permit() {
                        tracing::warn!(%error, errors_since_last_log = skipped, "xds accept failed");
                    }
                    this.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_BACKOFF)));
                }
            }
        }
    }
}

// === impl XdsConn ===

impl AsyncRead for XdsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_handshake(cx))?;
        let before = buf.filled().len();
        match this.io.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.deadline.is_some() {
                    this.read += buf.filled().len() - before;
                    if this.read >= PREFACE_LEN {
                        this.deadline = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if let Some(e) = this.deadline_expired(cx) {
                    return Poll::Ready(Err(e));
                }
                if this.idle_expired(cx) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no ads stream within the idle timeout",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl XdsConn {
    /// Drives the TLS handshake (a no-op for plaintext and once it is done); fails when it
    /// fails or when the handshake deadline passes first.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let ConnIo::Handshaking(accept) = &mut self.io else {
            return match self.io {
                ConnIo::Failed => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "tls handshake failed",
                ))),
                _ => Poll::Ready(Ok(())),
            };
        };
        match Pin::new(&mut **accept).poll(cx) {
            Poll::Ready(Ok(tls)) => {
                self.io = ConnIo::Tls(Box::new(tls));
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                tracing::debug!(peer = ?self.tcp.remote_addr(), error = %e, "xds tls handshake failed");
                self.io = ConnIo::Failed;
                Poll::Ready(Err(e))
            }
            Poll::Pending => match self.deadline_expired(cx) {
                Some(e) => {
                    self.io = ConnIo::Failed;
                    Poll::Ready(Err(e))
                }
                None => Poll::Pending,
            },
        }
    }

    /// The handshake deadline (TLS and HTTP/2 preface) passed.
    fn deadline_expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let expired = self
            .deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready());
        expired.then(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "no tls handshake and http/2 preface within the handshake timeout",
            )
        })
    }

    /// Whether the connection has had no stream for the idle timeout. Polled whenever a
    /// read pends: hyper keeps a read pending on every connection, and a stream ending
    /// wakes the connection task (it writes the stream's end), so the timer starts then.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let opened = self.activity.opened.load(Ordering::Acquire);
        if self.activity.open.load(Ordering::Acquire) > 0 {
            self.idle = None;
            return false;
        }
        // (Re)start the timer if a stream came and went since it started.
        if self.idle.as_ref().is_none_or(|(_, at)| *at != opened) {
            self.idle = Some((Box::pin(tokio::time::sleep(self.idle_timeout)), opened));
        }
        self.idle
            .as_mut()
            .is_some_and(|(t, _)| t.as_mut().poll(cx).is_ready())
    }
}

impl AsyncWrite for XdsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_handshake(cx))?;
        this.io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_handshake(cx))?;
        this.io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            ConnIo::Plain(io) => io.is_write_vectored(),
            ConnIo::Tls(io) => io.is_write_vectored(),
            _ => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_handshake(cx))?;
        this.io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(io) => Pin::new(io).poll_shutdown(cx),
            ConnIo::Tls(io) => Pin::new(&mut **io).poll_shutdown(cx),
            // Dropping the connection closes the socket.
            ConnIo::Handshaking(_) | ConnIo::Failed => Poll::Ready(Ok(())),
        }
    }
}

// === impl ConnIo ===

impl ConnIo {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self {
            ConnIo::Plain(io) => Pin::new(io).poll_read(cx, buf),
            ConnIo::Tls(io) => Pin::new(&mut **io).poll_read(cx, buf),
            ConnIo::Handshaking(_) | ConnIo::Failed => Poll::Ready(Err(not_ready())),
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            ConnIo::Plain(io) => Pin::new(io).poll_write(cx, buf),
            ConnIo::Tls(io) => Pin::new(&mut **io).poll_write(cx, buf),
            ConnIo::Handshaking(_) | ConnIo::Failed => Poll::Ready(Err(not_ready())),
        }
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self {
            ConnIo::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            ConnIo::Tls(io) => Pin::new(&mut **io).poll_write_vectored(cx, bufs),
            ConnIo::Handshaking(_) | ConnIo::Failed => Poll::Ready(Err(not_ready())),
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            ConnIo::Plain(io) => Pin::new(io).poll_flush(cx),
            ConnIo::Tls(io) => Pin::new(&mut **io).poll_flush(cx),
            ConnIo::Handshaking(_) | ConnIo::Failed => Poll::Ready(Err(not_ready())),
        }
    }
}

/// Reading or writing before the handshake completed (unreachable: `poll_handshake` runs first).
fn not_ready() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "tls handshake not complete")
}

impl Connected for XdsConn {
    type ConnectInfo = XdsConnInfo;

    fn connect_info(&self) -> XdsConnInfo {
        XdsConnInfo {
            tcp: self.tcp.clone(),
            activity: self.activity.clone(),
        }
    }
}

// === impl Activity ===

impl Activity {
    /// Counts a new stream until the guard drops.
    pub(crate) fn enter(self: &Arc<Self>) -> StreamGuard {
        self.opened.fetch_add(1, Ordering::AcqRel);
        self.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard(self.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}
