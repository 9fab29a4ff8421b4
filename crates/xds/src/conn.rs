//! The xDS port's accept loop: a cap on open connections, a deadline for the HTTP/2
//! preface, an idle timeout for connections without a stream, and a pause instead of a
//! spin when `accept` fails (out of file descriptors).

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
}

/// One accepted connection: closed with an error if it has not sent the HTTP/2 preface
/// within the handshake timeout; gives its permit back when dropped.
pub(crate) struct XdsConn {
    io: TcpStream,
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
                    return Poll::Ready(Some(Ok(XdsConn {
                        io,
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
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
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
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no http/2 preface within the handshake timeout",
                    )));
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
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Connected for XdsConn {
    type ConnectInfo = XdsConnInfo;

    fn connect_info(&self) -> XdsConnInfo {
        XdsConnInfo {
            tcp: self.io.connect_info(),
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
