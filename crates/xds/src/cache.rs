//! Where streams get their snapshots: the `SnapshotSource` trait and `SnapshotCache`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use meshplane_model::{NodeId, NodeIdError, ProxyKind};
use tokio::sync::watch;

use crate::snapshot::Snapshot;

/// What a stream watches: `None` while the node is unknown, then the node's
/// current snapshot. Every receiver of one node shares the same `Arc<Snapshot>`.
pub type SnapshotWatch = watch::Receiver<Option<Arc<Snapshot>>>;

/// Supplies per-node snapshots to the xDS server.
///
/// The server calls [`watch`](Self::watch) once per stream, with Envoy's
/// `node.id` from the first request, and then follows the receiver: every new
/// value is diffed against what the stream already sent. Implementations must
/// be cheap to call (a map lookup) and must not block.
pub trait SnapshotSource: Send + Sync + 'static {
    /// Subscribes to the snapshot of the node with this `node.id`.
    ///
    /// Returns a receiver holding `None` if the node is not known yet; the
    /// stream stays open and gets config the moment a snapshot is set. Returns
    /// [`WatchError`] if the id can never name a node (the stream is then closed
    /// with `INVALID_ARGUMENT`, which Envoy logs).
    fn watch(&self, node_id: &str) -> Result<SnapshotWatch, WatchError>;
}

/// Why a stream cannot watch a node.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// `node.id` is not an App Mesh node id.
    #[error(transparent)]
    InvalidNodeId(#[from] NodeIdError),
}

/// The cache key of a node: a [`NodeId`] with the owner dropped.
///
/// All accepted `node.id` forms of one proxy map to the same key:
/// `mesh/m/virtualNode/n`, `mesh/m@111122223333/virtualNode/n` and
/// `arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualNode/n`.
///
/// The owner is **not** part of the key. App Mesh uses the owner only to say
/// whose mesh a shared mesh is; lookup inside a mesh is by mesh name, and
/// mesh names are unique within one meshplane control plane. (The ARN form's
/// account fills `NodeId::owner` too, so keeping it would split one node in two.)
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey(NodeId);

/// The in-memory [`SnapshotSource`]: a concurrent map from [`NodeKey`] to a
/// `watch` channel, fed by the reconciler through [`set`](Self::set).
///
/// Cloning is cheap and clones share the map. A connected proxy costs one
/// `watch::Receiver`; all proxies of a node share one `Arc<Snapshot>`.
#[derive(Clone, Default)]
pub struct SnapshotCache {
    nodes: Arc<RwLock<NodeMap>>,
}

/// Entries left by streams of unknown nodes are dropped when a new entry would take the
/// map past `prune_at`, which is then set to twice what remains (at least
/// [`PRUNE_MIN`]): amortised O(1), and the map never holds more than about twice the
/// nodes that have a snapshot or a watcher, however many made-up node ids connected.
#[derive(Default)]
struct NodeMap {
    map: HashMap<NodeKey, watch::Sender<Option<Arc<Snapshot>>>>,
    prune_at: usize,
}

/// Smallest size at which [`NodeMap`] prunes itself.
const PRUNE_MIN: usize = 1024;

// === impl NodeKey ===

impl NodeKey {
    /// Parses any accepted `node.id` form and normalises it.
    pub fn parse(node_id: &str) -> Result<NodeKey, NodeIdError> {
        NodeId::parse(node_id).map(NodeKey::from)
    }

    /// The normalised node id (owner always `None`).
    pub fn node_id(&self) -> &NodeId {
        &self.0
    }

    /// Mesh name.
    pub fn mesh(&self) -> &str {
        &self.0.mesh
    }

    /// Virtual node or virtual gateway name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Virtual node or virtual gateway.
    pub fn kind(&self) -> ProxyKind {
        self.0.kind
    }
}

impl From<NodeId> for NodeKey {
    fn from(mut id: NodeId) -> NodeKey {
        id.owner = None;
        NodeKey(id)
    }
}

impl fmt::Display for NodeKey {
    /// `mesh/<mesh>/virtualNode/<name>` (or `virtualGateway`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({})", self.0)
    }
}

// === impl SnapshotCache ===

impl SnapshotCache {
    /// An empty cache.
    pub fn new() -> SnapshotCache {
        SnapshotCache::default()
    }

    /// Publishes the node's snapshot to every stream of the node (and to streams
    /// that connect later). Setting the same `Arc` again is a no-op for streams;
    /// setting equal content in a new `Arc` wakes streams but sends nothing,
    /// because versions are content hashes.
    pub fn set(&self, node: impl Into<NodeKey>, snapshot: Arc<Snapshot>) {
        let node = node.into();
        if let Some(tx) = self.read().map.get(&node) {
            tx.send_if_modified(|cur| replace_if_new(cur, &snapshot));
            return;
        }
        let mut map = self.write();
        let tx = map.entry(node);
        tx.send_if_modified(|cur| replace_if_new(cur, &snapshot));
    }

    /// Forgets the node. Connected streams see `None` and keep their proxies on
    /// the last config they received (nothing is sent); to clear a proxy's
    /// config, [`set`](Self::set) an empty snapshot instead. The entry is kept
    /// while streams still watch it, so a later `set` reaches them.
    pub fn remove(&self, node: &NodeKey) {
        let mut map = self.write();
        if let Some(tx) = map.map.get(node) {
            tx.send_replace(None);
            if tx.receiver_count() == 0 {
                map.map.remove(node);
            }
        }
    }

    /// The node's current snapshot, if any.
    pub fn get(&self, node: &NodeKey) -> Option<Arc<Snapshot>> {
        self.read().map.get(node).and_then(|tx| tx.borrow().clone())
    }

    /// Number of nodes with a snapshot.
    pub fn len(&self) -> usize {
        self.read()
            .map
            .values()
            .filter(|tx| tx.borrow().is_some())
            .count()
    }

    /// Whether no node has a snapshot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of streams currently watching the node.
    pub fn watchers(&self, node: &NodeKey) -> usize {
        self.read()
            .map
            .get(node)
            .map_or(0, |tx| tx.receiver_count())
    }

    /// Drops entries that have no snapshot and no watcher (left behind by
    /// proxies of unknown nodes that disconnected). Cheap; the runtime may call
    /// it on its resync timer.
    pub fn prune(&self) {
        self.write().prune();
    }

    /// Number of entries, with or without a snapshot or watcher (for tests of the bound).
    pub fn entries(&self) -> usize {
        self.read().map.len()
    }

    /// Subscribes by key (what [`SnapshotSource::watch`] does after parsing).
    pub fn watch_key(&self, node: NodeKey) -> SnapshotWatch {
        if let Some(tx) = self.read().map.get(&node) {
            return tx.subscribe();
        }
        self.write().entry(node).subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, NodeMap> {
        // A poisoned lock only means a panic elsewhere mid-insert; the map is still usable.
        self.nodes.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, NodeMap> {
        self.nodes.write().unwrap_or_else(|e| e.into_inner())
    }
}

// === impl NodeMap ===

impl NodeMap {
    /// The node's sender, created (after pruning if the map is at its bound) if missing.
    fn entry(&mut self, node: NodeKey) -> &watch::Sender<Option<Arc<Snapshot>>> {
        if !self.map.contains_key(&node) && self.map.len() >= self.prune_at.max(PRUNE_MIN) {
            self.prune();
        }
        self.map
            .entry(node)
            .or_insert_with(|| watch::Sender::new(None))
    }

    fn prune(&mut self) {
        self.map
            .retain(|_, tx| tx.borrow().is_some() || tx.receiver_count() > 0);
        self.prune_at = (2 * self.map.len()).max(PRUNE_MIN);
    }
}

fn replace_if_new(cur: &mut Option<Arc<Snapshot>>, new: &Arc<Snapshot>) -> bool {
    if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, new)) {
        return false;
    }
    *cur = Some(new.clone());
    true
}

impl SnapshotSource for SnapshotCache {
    fn watch(&self, node_id: &str) -> Result<SnapshotWatch, WatchError> {
        Ok(self.watch_key(NodeKey::parse(node_id)?))
    }
}

impl fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("nodes", &self.read().map.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_id_form_maps_to_one_key() {
        let forms = [
            "mesh/demo/virtualNode/front",
            "mesh/demo@111122223333/virtualNode/front",
            "arn:aws:appmesh:us-east-1:111122223333:mesh/demo/virtualNode/front",
            "arn:aws:appmesh:us-east-1:444455556666:mesh/demo@111122223333/virtualNode/front",
        ];
        let keys: Vec<NodeKey> = forms.iter().map(|f| NodeKey::parse(f).unwrap()).collect();
        assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
        assert_eq!(keys[0].to_string(), "mesh/demo/virtualNode/front");
        assert!(NodeKey::parse("front").is_err());
    }

    #[test]
    fn watchers_of_one_node_share_the_snapshot() {
        let cache = SnapshotCache::new();
        let mut a = cache.watch("mesh/m/virtualNode/n").unwrap();
        let b = cache
            .watch("arn:aws:appmesh:r:1:mesh/m/virtualNode/n")
            .unwrap();
        assert!(a.borrow().is_none());
        let snap = Arc::new(Snapshot::empty());
        cache.set(
            NodeKey::parse("mesh/m/virtualNode/n").unwrap(),
            snap.clone(),
        );
        assert!(a.has_changed().unwrap());
        let (x, y) = (
            a.borrow_and_update().clone().unwrap(),
            b.borrow().clone().unwrap(),
        );
        assert!(Arc::ptr_eq(&x, &y) && Arc::ptr_eq(&x, &snap));
        // Same Arc again: no wake-up.
        cache.set(NodeKey::parse("mesh/m/virtualNode/n").unwrap(), snap);
        assert!(!a.has_changed().unwrap());
        assert!(cache.watch("nonsense").is_err());
    }

    #[test]
    fn remove_keeps_watched_entries_and_prune_drops_the_rest() {
        let cache = SnapshotCache::new();
        let key = NodeKey::parse("mesh/m/virtualNode/n").unwrap();
        let rx = cache.watch_key(key.clone());
        cache.set(key.clone(), Arc::new(Snapshot::empty()));
        cache.remove(&key);
        assert!(rx.borrow().is_none());
        assert_eq!(cache.watchers(&key), 1);
        drop(rx);
        cache.prune();
        assert_eq!(cache.watchers(&key), 0);
        assert!(cache.is_empty());
    }

    /// Streams of made-up node ids that came and went leave a bounded number of entries.
    #[test]
    fn entries_of_unknown_nodes_do_not_accumulate() {
        let cache = SnapshotCache::new();
        let known = NodeKey::parse("mesh/m/virtualNode/known").unwrap();
        cache.set(known.clone(), Arc::new(Snapshot::empty()));
        let live = cache.watch("mesh/m/virtualNode/live").unwrap();
        for i in 0..10_000 {
            drop(
                cache
                    .watch(&format!("mesh/m/virtualNode/made-up-{i}"))
                    .unwrap(),
            );
        }
        assert!(cache.entries() <= PRUNE_MIN, "{} entries", cache.entries());
        assert!(
            cache.get(&known).is_some(),
            "a node with a snapshot is kept"
        );
        assert_eq!(
            cache.watchers(&NodeKey::parse("mesh/m/virtualNode/live").unwrap()),
            1,
            "a watched node is kept"
        );
        drop(live);
    }
}
