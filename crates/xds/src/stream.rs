//! What every ADS stream task shares: its context, nonces, the first-request
//! handshake, and the synthesized empty `ClusterLoadAssignment`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::config::core::v3::{ControlPlane, Node};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::util::pack_any;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

use crate::auth::{Interrupt, StreamAuth};
use crate::cache::{NodeKey, SnapshotSource, SnapshotWatch};
use crate::conn::StreamGuard;
use crate::limits::Untrusted;
use crate::resource::Resource;
use crate::snapshot::Snapshot;
use crate::status::{StatusRegistry, StreamInfo, StreamStatus, XdsFlavor};

/// Everything a stream task needs from the server.
pub(crate) struct StreamCtx {
    pub(crate) source: Arc<dyn SnapshotSource>,
    pub(crate) registry: Arc<StatusRegistry>,
    pub(crate) id: u64,
    /// The stream's identity when the server authenticates streams.
    pub(crate) auth: Option<StreamAuth>,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// How long the stream may take to send its first request.
    pub(crate) first_request_timeout: Duration,
    /// Counts the stream in its connection's activity (idle timeout) while it lives.
    pub(crate) _conn: Option<StreamGuard>,
    /// The stream's place under [`XdsServerConfig::max_streams`](crate::XdsServerConfig::max_streams).
    pub(crate) _permit: tokio::sync::OwnedSemaphorePermit,
}

/// The response channel closed (the proxy went away); the task ends.
#[derive(Debug)]
pub(crate) struct Closed;

/// The node's snapshot as a stream follows it.
pub(crate) struct NodeWatch {
    rx: SnapshotWatch,
    open: bool,
    /// The snapshot responses are computed from. A node removed from the source
    /// (`None`) keeps its last snapshot here: its proxies stay on their config
    /// and subscription changes are still answered from it.
    pub(crate) current: Option<Arc<Snapshot>>,
}

// === impl StreamCtx ===

impl StreamCtx {
    /// Validates the first request's node, subscribes to its snapshot and
    /// registers the stream's status. On error, sends a gRPC status to the
    /// proxy and returns `None`.
    pub(crate) async fn handshake<T>(
        &self,
        node: Option<&Node>,
        flavor: XdsFlavor,
        tx: &mpsc::Sender<Result<T, Status>>,
    ) -> Option<(NodeWatch, StreamStatus)> {
        let id = node.map_or("", |n| n.id.as_str());
        if let Some(auth) = &self.auth
            && let Err(status) = auth.check_node(id)
        {
            self.refuse(id, status, tx).await;
            return None;
        }
        if let Some(reason) = crate::limits::check_node_id(id) {
            self.reject(id, &reason, tx).await;
            return None;
        }
        let rx = match self.source.watch(id) {
            Ok(rx) => rx,
            Err(error) => {
                self.reject(id, &error.to_string(), tx).await;
                return None;
            }
        };
        let node_id = id;
        let info = StreamInfo {
            id: self.id,
            node_id: node_id.into(),
            node_key: NodeKey::parse(node_id).ok(),
            flavor,
            peer: self.peer,
            connected_at: SystemTime::now(),
            token_id: self.auth.as_ref().map(|a| a.token_id.clone()),
        };
        let status = self.registry.register(info);
        let mut watch = NodeWatch {
            rx,
            open: true,
            current: None,
        };
        watch.current = watch.rx.borrow_and_update().clone();
        Some((watch, status))
    }

    /// Ends the stream with `INVALID_ARGUMENT` and `reason`; nothing was registered for
    /// it. Logged at WARN at most once per interval for all streams (a client can open
    /// refused streams as fast as it likes).
    async fn reject<T>(&self, node_id: &str, reason: &str, tx: &mpsc::Sender<Result<T, Status>>) {
        self.refuse(node_id, Status::invalid_argument(reason), tx)
            .await;
    }

    /// Ends the stream with `status`; nothing was registered for it. Rate-limited WARN.
    async fn refuse<T>(&self, node_id: &str, status: Status, tx: &mpsc::Sender<Result<T, Status>>) {
        if let Some(skipped) = self.registry.reject_log.permit() {
            tracing::warn!(
                stream = self.id, node = %Untrusted(node_id), code = ?status.code(),
                reason = %Untrusted(status.message()), token_id = ?self.auth.as_ref().map(|a| &*a.token_id),
                refused_since_last_log = skipped, "refusing ads stream"
            );
        }
        let _ = tx.send(Err(status)).await;
    }

    /// `Err(PERMISSION_DENIED)` when an authenticated stream's later request names another
    /// node. Envoy sends the node on every request unless `set_node_on_first_message_only`;
    /// a request without a node is the first request's node.
    pub(crate) fn check_later_node(&self, node: Option<&Node>) -> Result<(), Status> {
        match (&self.auth, node) {
            (Some(auth), Some(node)) => auth.check_node(&node.id),
            _ => Ok(()),
        }
    }
}

/// Resolves when the stream must stop: the server shuts down, or (authenticated streams)
/// the token is revoked or expires. Takes the fields, not the context, so that a
/// `select!` can borrow the context's other fields in its branches.
pub(crate) async fn interrupted(
    shutdown: &mut watch::Receiver<bool>,
    auth: Option<&StreamAuth>,
) -> Interrupt {
    let ended = async {
        match auth {
            Some(a) => a.ended().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown.changed() => Interrupt::Shutdown,
        i = ended => i,
    }
}

/// Ends the stream for `why`: tells the proxy when the token was revoked or expired.
pub(crate) fn interrupt<T>(ctx: &StreamCtx, why: Interrupt, tx: &mpsc::Sender<Result<T, Status>>) {
    if let Some(status) = why.status() {
        tracing::info!(stream = ctx.id, token_id = ?ctx.auth.as_ref().map(|a| &*a.token_id), reason = status.message(), "ending ads stream");
        let _ = tx.try_send(Err(status));
    }
}

/// Reads a stream's first request, bounded by [`StreamCtx::first_request_timeout`].
/// `None` if the stream ended or failed first (the proxy was told why) or the server is
/// shutting down.
pub(crate) async fn first_request<Req, T>(
    ctx: &mut StreamCtx,
    requests: &mut Streaming<Req>,
    tx: &mpsc::Sender<Result<T, Status>>,
) -> Option<Req> {
    let timeout = ctx.first_request_timeout;
    tokio::select! {
        why = interrupted(&mut ctx.shutdown, ctx.auth.as_ref()) => {
            if let Some(status) = why.status() {
                let _ = tx.try_send(Err(status));
            }
            None
        }
        msg = tokio::time::timeout(timeout, requests.message()) => match msg {
            Ok(Ok(Some(req))) => Some(req),
            Ok(Ok(None)) => None,
            Ok(Err(error)) => {
                tracing::debug!(stream = ctx.id, %error, "stream failed before first request");
                // A request that does not decode ends the stream with INVALID_ARGUMENT.
                let _ = tx.try_send(Err(request_error(error)));
                None
            }
            Err(_) => {
                tracing::debug!(stream = ctx.id, "no first request in time");
                let _ = tx.try_send(Err(Status::deadline_exceeded(format!(
                    "no request within {timeout:?} of opening the stream"
                ))));
                None
            }
        },
    }
}

/// The status a stream ends with when reading a request failed. tonic reports a body that
/// does not decode as the request message (and a bad gRPC frame header) as `INTERNAL`;
/// that is the client's fault, so it becomes `INVALID_ARGUMENT`. Other codes (a message
/// over the size limit: `OUT_OF_RANGE`) are kept.
pub(crate) fn request_error(error: Status) -> Status {
    if error.code() == tonic::Code::Internal {
        Status::invalid_argument(format!("malformed request: {}", error.message()))
    } else {
        error
    }
}

// === impl NodeWatch ===

impl NodeWatch {
    /// Waits for the next snapshot change. Returns `true` if `current`
    /// changed; pends forever once the source dropped the channel.
    pub(crate) async fn changed(&mut self) -> bool {
        if !self.open {
            return std::future::pending().await;
        }
        if self.rx.changed().await.is_err() {
            self.open = false;
            return false;
        }
        match self.rx.borrow_and_update().clone() {
            Some(s) => {
                let same = self.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &s));
                self.current = Some(s);
                !same
            }
            None => false,
        }
    }
}

/// The `control_plane` field of every response, shown in Envoy's config dump.
pub(crate) fn control_plane() -> Option<ControlPlane> {
    Some(ControlPlane {
        identifier: concat!("meshplane-xds/", env!("CARGO_PKG_VERSION")).into(),
    })
}

/// An empty assignment for an EDS name the snapshot does not have: it lets a
/// cluster finish warming (with no endpoints) instead of waiting for Envoy's
/// initial-fetch timeout, e.g. after failing over from another control plane.
/// When the real assignment appears, its version differs, so it is sent.
pub(crate) fn empty_cla(name: &str) -> Arc<Resource> {
    let cla = ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        ..Default::default()
    };
    Arc::new(Resource::new(name, pack_any(cla)))
}

/// Formats a nonce; nonces are per-stream counters, unique within the stream.
pub(crate) fn nonce(counter: &mut u64) -> String {
    *counter += 1;
    counter.to_string()
}
