//! The xDS port's accept loop: a cap on open connections, a deadline for the HTTP/2
//! preface, and a pause instead of a spin when `accept` fails (out of file descriptors).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
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
}

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
                Poll::Pending
            }
            other => other,
        }
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
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}
