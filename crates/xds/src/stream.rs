//! What every ADS stream task shares: its context, nonces, the first-request
//! handshake, and the synthesized empty `ClusterLoadAssignment`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::{ControlPlane, Node};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::util::pack_any;
use tokio::sync::{mpsc, watch};
use tonic::Status;

use crate::cache::{NodeKey, SnapshotSource, SnapshotWatch};
use crate::resource::Resource;
use crate::snapshot::Snapshot;
use crate::status::{StatusRegistry, StreamInfo, StreamStatus, XdsFlavor};

/// Everything a stream task needs from the server.
pub(crate) struct StreamCtx {
    pub(crate) source: Arc<dyn SnapshotSource>,
    pub(crate) registry: Arc<StatusRegistry>,
    pub(crate) id: u64,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) shutdown: watch::Receiver<bool>,
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
        let Some(node) = node.filter(|n| !n.id.is_empty()) else {
            tracing::warn!(stream = self.id, "first request carries no node id");
            let _ = tx
                .send(Err(Status::invalid_argument(
                    "first request must carry node.id",
                )))
                .await;
            return None;
        };
        let rx = match self.source.watch(&node.id) {
            Ok(rx) => rx,
            Err(error) => {
                tracing::warn!(stream = self.id, node = %node.id, %error, "rejecting stream");
                let _ = tx
                    .send(Err(Status::invalid_argument(error.to_string())))
                    .await;
                return None;
            }
        };
        let info = StreamInfo {
            id: self.id,
            node_id: node.id.as_str().into(),
            node_key: NodeKey::parse(&node.id).ok(),
            flavor,
            peer: self.peer,
            connected_at: SystemTime::now(),
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
