//! Per-stream proxy status (what was sent, acked, rejected) and the ACK/NACK event feed.
//!
//! Each stream owns one slot and is its only writer, so the slot's mutex is
//! uncontended; readers ([`StatusRegistry::status`]) take it briefly to copy.
//! Events go to [`XdsEventObserver`]s, called inline by the stream (for counters that
//! must not miss an event, such as metrics), and out on a `tokio::sync::broadcast`
//! channel: slow subscribers of the channel lag (and see `RecvError::Lagged`), they never
//! slow a stream down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::broadcast;

use crate::cache::NodeKey;
use crate::limits::{LogLimiter, NACK_LOG_INTERVAL};
use crate::resource::ResourceType;

/// Capacity of the event channel; a subscriber more than this many events behind lags.
const EVENT_CAPACITY: usize = 4096;

/// How often a refused stream (no, oversized or invalid node id) is logged at WARN.
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Which ADS variant a stream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XdsFlavor {
    /// State of the world: `StreamAggregatedResources`.
    Sotw,
    /// Incremental: `DeltaAggregatedResources`.
    Delta,
}

/// Identity of one connected stream, shared by its status and its events.
#[derive(Clone, Debug)]
pub struct StreamInfo {
    /// Unique per server process, increasing.
    pub id: u64,
    /// Envoy's `node.id` as sent.
    pub node_id: Arc<str>,
    /// The normalised node key, if `node_id` parsed as an App Mesh node id
    /// (always set for streams served from [`SnapshotCache`](crate::SnapshotCache)).
    pub node_key: Option<NodeKey>,
    /// SotW or delta.
    pub flavor: XdsFlavor,
    /// The proxy's address as seen by the server.
    pub peer: Option<SocketAddr>,
    /// When the stream sent its first request.
    pub connected_at: SystemTime,
    /// The id of the node token the stream authenticated with (`None` without auth).
    pub token_id: Option<Arc<str>>,
}

/// Status of one connected proxy stream; see [`XdsServer::status`](crate::XdsServer::status).
#[derive(Clone, Debug)]
pub struct ProxyStatus {
    /// Who is connected and how.
    pub stream: Arc<StreamInfo>,
    /// One entry per type the proxy subscribed to, in wire order.
    pub types: Vec<TypeStatus>,
}

/// Per-type state of one stream.
///
/// `version` strings are what the server put in `version_info` (SotW) or
/// `system_version_info` (delta): the snapshot's [`Snapshot::version`](crate::Snapshot::version)
/// for that type, except the state-of-the-world make-before-break CDS, which
/// carries its own content hash. So `acked_version == snapshot.version(ty)`
/// means the proxy accepted that snapshot's resources of that type (for named
/// types: the ones it subscribes to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeStatus {
    /// The resource type.
    pub ty: ResourceType,
    /// Version of the last response sent.
    pub sent_version: Option<String>,
    /// Nonce of the last response sent.
    pub sent_nonce: Option<String>,
    /// When the last response was sent.
    pub sent_at: Option<SystemTime>,
    /// Last version the proxy accepted (for SotW also the version a
    /// reconnecting proxy reported in its first request).
    pub acked_version: Option<String>,
    /// When the last ACK arrived.
    pub acked_at: Option<SystemTime>,
    /// The last rejection; kept after later ACKs so it can be shown, compare
    /// `last_nack.version` with `acked_version`/`sent_version` to tell if it is current.
    pub last_nack: Option<Nack>,
    /// Responses sent.
    pub pushes: u64,
    /// Encoded resource bytes sent.
    pub bytes_sent: u64,
    /// ACKs received.
    pub acks: u64,
    /// NACKs received.
    pub nacks: u64,
}

/// A rejected response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    /// Version of the rejected response.
    pub version: String,
    /// Nonce of the rejected response.
    pub nonce: String,
    /// `error_detail.code` (Envoy uses 13, INTERNAL).
    pub code: i32,
    /// `error_detail.message`: Envoy's reason, e.g. a validation error; at most
    /// [`MAX_NACK_MESSAGE_LEN`](crate::MAX_NACK_MESSAGE_LEN) bytes are kept, a longer one
    /// is cut and ends with [`TRUNCATED_MARKER`](crate::TRUNCATED_MARKER).
    pub message: String,
    /// When the NACK arrived.
    pub at: SystemTime,
}

/// What happened on a stream; subscribe with
/// [`XdsServer::subscribe_events`](crate::XdsServer::subscribe_events).
///
/// Enough to feed metrics: pushes and bytes by type ([`XdsEvent::Sent`]),
/// NACKs by type, send→ACK and snapshot→ACK latency ([`XdsEvent::Acked`]).
#[derive(Clone, Debug)]
pub enum XdsEvent {
    /// A stream sent its first request (and named its node).
    Connected(Arc<StreamInfo>),
    /// A stream ended.
    Disconnected(Arc<StreamInfo>),
    /// A response was written to the stream.
    Sent {
        /// The stream.
        stream: Arc<StreamInfo>,
        /// Resource type.
        ty: ResourceType,
        /// `version_info` / `system_version_info`.
        version: String,
        /// Response nonce.
        nonce: String,
        /// Resources in the response.
        resources: usize,
        /// Names in `removed_resources` (delta only).
        removed: usize,
        /// Encoded resource bytes.
        bytes: usize,
    },
    /// The proxy accepted a response.
    Acked {
        /// The stream.
        stream: Arc<StreamInfo>,
        /// Resource type.
        ty: ResourceType,
        /// Accepted version.
        version: String,
        /// Nonce of the accepted response.
        nonce: String,
        /// Time from writing the response to receiving the ACK.
        latency: Duration,
        /// Time from [`Snapshot::created_at`](crate::Snapshot::created_at) of the
        /// snapshot the response came from to the ACK (write→ACK when the
        /// reconciler sets `created_at` to the store write time).
        since_snapshot: Duration,
    },
    /// The proxy rejected a response; it keeps its last accepted config.
    Nacked {
        /// The stream.
        stream: Arc<StreamInfo>,
        /// Resource type.
        ty: ResourceType,
        /// The rejection.
        nack: Nack,
        /// Resource names in the rejected response (delta; SotW: all sent names).
        resources: Vec<String>,
    },
}

/// Sees every [`XdsEvent`], synchronously, on the stream task that caused it: it must
/// be quick and must not block (count, record, hand off). Unlike the broadcast channel
/// it never misses an event, so gauges such as connected proxies cannot drift.
pub trait XdsEventObserver: Send + Sync {
    /// Called once per event.
    fn observe(&self, event: &XdsEvent);
}

/// The shared table of connected streams plus the event channel. Cheap to
/// clone via `Arc`; the server holds one and hands it to every stream.
pub struct StatusRegistry {
    streams: RwLock<HashMap<u64, Arc<Slot>>>,
    /// Per node id with at least one stream: stream count and the NACK log limiter, so a
    /// node's NACKs are logged once per [`NACK_LOG_INTERVAL`] whatever its stream count.
    /// The entry goes with the node's last stream.
    nodes: Mutex<HashMap<Arc<str>, NodeEntry>>,
    /// Streams refused at the handshake are logged at most once per [`REJECT_LOG_INTERVAL`].
    pub(crate) reject_log: LogLimiter,
    events: broadcast::Sender<XdsEvent>,
    observers: RwLock<Vec<Arc<dyn XdsEventObserver>>>,
}

struct NodeEntry {
    streams: usize,
    nack_log: Arc<LogLimiter>,
}

impl std::fmt::Debug for StatusRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusRegistry")
            .field("streams", &self.connected())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Slot {
    info: Arc<StreamInfo>,
    types: Mutex<[Option<TypeStatus>; 5]>,
}

/// A stream's handle on its slot; removes the slot and emits `Disconnected` on drop.
#[derive(Debug)]
pub(crate) struct StreamStatus {
    registry: Arc<StatusRegistry>,
    slot: Arc<Slot>,
    nack_log: Arc<LogLimiter>,
}

// === impl StatusRegistry ===

impl Default for StatusRegistry {
    fn default() -> Self {
        StatusRegistry {
            streams: RwLock::new(HashMap::new()),
            nodes: Mutex::new(HashMap::new()),
            reject_log: LogLimiter::new(REJECT_LOG_INTERVAL),
            events: broadcast::Sender::new(EVENT_CAPACITY),
            observers: RwLock::new(Vec::new()),
        }
    }
}

impl StatusRegistry {
    /// Copies the status of every connected stream, ordered by stream id.
    pub fn status(&self) -> Vec<ProxyStatus> {
        let slots: Vec<Arc<Slot>> = self
            .streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut out: Vec<ProxyStatus> = slots
            .iter()
            .map(|s| ProxyStatus {
                stream: s.info.clone(),
                types: s.lock().iter().flatten().cloned().collect(),
            })
            .collect();
        out.sort_by_key(|p| p.stream.id);
        out
    }

    /// Status of the streams of one node.
    pub fn node_status(&self, node: &NodeKey) -> Vec<ProxyStatus> {
        let mut all = self.status();
        all.retain(|p| p.stream.node_key.as_ref() == Some(node));
        all
    }

    /// Number of connected streams.
    pub fn connected(&self) -> usize {
        self.streams.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A new receiver of [`XdsEvent`]s from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<XdsEvent> {
        self.events.subscribe()
    }

    /// Adds an observer of every event from now on.
    pub fn add_observer(&self, observer: Arc<dyn XdsEventObserver>) {
        self.observers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(observer);
    }

    /// Hands an event to the observers, then sends it if anyone listens.
    fn emit(&self, event: XdsEvent) {
        for o in self
            .observers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            o.observe(&event);
        }
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(event);
        }
    }

    pub(crate) fn register(self: &Arc<Self>, info: StreamInfo) -> StreamStatus {
        let info = Arc::new(info);
        let nack_log = {
            let mut nodes = self.lock_nodes();
            let e = nodes
                .entry(info.node_id.clone())
                .or_insert_with(|| NodeEntry {
                    streams: 0,
                    nack_log: Arc::new(LogLimiter::new(NACK_LOG_INTERVAL)),
                });
            e.streams += 1;
            e.nack_log.clone()
        };
        let slot = Arc::new(Slot {
            info: info.clone(),
            types: Mutex::new(Default::default()),
        });
        self.streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(info.id, slot.clone());
        self.emit(XdsEvent::Connected(info));
        StreamStatus {
            registry: self.clone(),
            slot,
            nack_log,
        }
    }

    /// Number of distinct node ids with a connected stream.
    pub fn connected_nodes(&self) -> usize {
        self.lock_nodes().len()
    }

    fn lock_nodes(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, NodeEntry>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// === impl Slot ===

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, [Option<TypeStatus>; 5]> {
        self.types.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// === impl StreamStatus ===

impl StreamStatus {
    pub(crate) fn info(&self) -> &Arc<StreamInfo> {
        &self.slot.info
    }

    /// Whether a NACK of this stream's node may be logged now (`Some(skipped)`), see
    /// [`LogLimiter::permit`].
    pub(crate) fn nack_log_permit(&self) -> Option<u64> {
        self.nack_log.permit()
    }

    fn with<R>(&self, ty: ResourceType, f: impl FnOnce(&mut TypeStatus) -> R) -> R {
        let mut types = self.slot.lock();
        let t = types[ty as usize].get_or_insert_with(|| TypeStatus::new(ty));
        f(t)
    }

    /// The proxy subscribed to `ty`; `version` is what a reconnecting SotW proxy reports.
    pub(crate) fn subscribed(&self, ty: ResourceType, version: Option<&str>) {
        self.with(ty, |t| {
            if let Some(v) = version.filter(|v| !v.is_empty()) {
                t.acked_version = Some(v.to_owned());
            }
        });
    }

    pub(crate) fn sent(
        &self,
        ty: ResourceType,
        version: &str,
        nonce: &str,
        resources: usize,
        removed: usize,
        bytes: usize,
    ) {
        self.with(ty, |t| {
            t.sent_version = Some(version.to_owned());
            t.sent_nonce = Some(nonce.to_owned());
            t.sent_at = Some(SystemTime::now());
            t.pushes += 1;
            t.bytes_sent += bytes as u64;
        });
        self.registry.emit(XdsEvent::Sent {
            stream: self.slot.info.clone(),
            ty,
            version: version.to_owned(),
            nonce: nonce.to_owned(),
            resources,
            removed,
            bytes,
        });
    }

    pub(crate) fn acked(
        &self,
        ty: ResourceType,
        version: &str,
        nonce: &str,
        sent_at: Instant,
        snapshot_created_at: Instant,
    ) {
        self.with(ty, |t| {
            t.acked_version = Some(version.to_owned());
            t.acked_at = Some(SystemTime::now());
            t.acks += 1;
        });
        let now = Instant::now();
        self.registry.emit(XdsEvent::Acked {
            stream: self.slot.info.clone(),
            ty,
            version: version.to_owned(),
            nonce: nonce.to_owned(),
            latency: now.saturating_duration_since(sent_at),
            since_snapshot: now.saturating_duration_since(snapshot_created_at),
        });
    }

    pub(crate) fn nacked(&self, ty: ResourceType, nack: Nack, resources: Vec<String>) {
        self.with(ty, |t| {
            t.last_nack = Some(nack.clone());
            t.nacks += 1;
        });
        self.registry.emit(XdsEvent::Nacked {
            stream: self.slot.info.clone(),
            ty,
            nack,
            resources,
        });
    }
}

impl Drop for StreamStatus {
    fn drop(&mut self) {
        let id = self.slot.info.id;
        self.registry
            .streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        {
            let mut nodes = self.registry.lock_nodes();
            if let Some(e) = nodes.get_mut(&self.slot.info.node_id) {
                e.streams -= 1;
                if e.streams == 0 {
                    nodes.remove(&self.slot.info.node_id);
                }
            }
        }
        self.registry
            .emit(XdsEvent::Disconnected(self.slot.info.clone()));
    }
}

// === impl TypeStatus ===

impl TypeStatus {
    fn new(ty: ResourceType) -> TypeStatus {
        TypeStatus {
            ty,
            sent_version: None,
            sent_nonce: None,
            sent_at: None,
            acked_version: None,
            acked_at: None,
            last_nack: None,
            pushes: 0,
            bytes_sent: 0,
            acks: 0,
            nacks: 0,
        }
    }
}

// === impl ProxyStatus ===

impl ProxyStatus {
    /// The status of one type, if the proxy subscribed to it.
    pub fn type_status(&self, ty: ResourceType) -> Option<&TypeStatus> {
        self.types.iter().find(|t| t.ty == ty)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Default)]
    struct Count {
        connected: AtomicUsize,
        sent: AtomicUsize,
        disconnected: AtomicUsize,
    }

    impl XdsEventObserver for Count {
        fn observe(&self, event: &XdsEvent) {
            let c = match event {
                XdsEvent::Connected(_) => &self.connected,
                XdsEvent::Sent { .. } => &self.sent,
                XdsEvent::Disconnected(_) => &self.disconnected,
                _ => return,
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Observers see every event even when a broadcast subscriber that never reads has
    /// lagged far behind (the metrics once undercounted pushes at 10,000 proxies).
    #[test]
    fn observers_miss_nothing_when_the_channel_lags() {
        let registry = Arc::new(StatusRegistry::default());
        let count = Arc::new(Count::default());
        registry.add_observer(count.clone());
        let mut idle = registry.subscribe();
        let streams = 50;
        let sends_per_stream = 2 * EVENT_CAPACITY / streams;
        for id in 0..streams as u64 {
            let status = registry.register(StreamInfo {
                id,
                node_id: "mesh/m/virtualNode/n".into(),
                node_key: None,
                flavor: XdsFlavor::Delta,
                peer: None,
                connected_at: SystemTime::now(),
                token_id: None,
            });
            for i in 0..sends_per_stream {
                status.sent(ResourceType::Route, &i.to_string(), "1", 1, 0, 10);
            }
        }
        assert_eq!(count.connected.load(Ordering::Relaxed), streams);
        assert_eq!(count.disconnected.load(Ordering::Relaxed), streams);
        assert_eq!(
            count.sent.load(Ordering::Relaxed),
            streams * sends_per_stream
        );
        // The idle channel subscriber did lag: the observer's counts are not luck.
        assert!(matches!(
            idle.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
