//! The reconciler: store watch → dependency index → translate only the affected proxies →
//! snapshot cache (which the xDS server streams to Envoy).
//!
//! ```text
//!  Store::watch("appmesh/") ──events──▶ debounce (quiet 10 ms, at most 100 ms)
//!        │                                   │ changed ResourceIds
//!        ▼                                   ▼
//!  full list on start / on Compacted    per mesh: MeshSnapshot; per node: Dependencies
//!                                            │ nodes whose dependencies changed
//!                                            ▼
//!                            translate_node (spawn_blocking) ──▶ xds::Snapshot
//!                                            │ only when some type's version changed
//!                                            ▼
//!                                  SnapshotCache::set(node, snapshot)
//! ```
//!
//! Registry instances (`cloudmap/instances/`, the Cloud Map-compatible registry of
//! meshplane-discovery) come through a second watch merged into the same bursts; they feed
//! the `Endpoints` given to the translator, and a changed instance recomputes only the nodes
//! whose `Dependencies::cloud_map_services` name its service (the result differs in EDS only).
//!
//! Level-triggered: the loop rebuilds from current state, so a lost or merged event only
//! delays a push, never corrupts it; a compacted watch triggers a full re-list.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use meshplane_discovery::EndpointIndex;
use meshplane_discovery::keys as cloudmap_keys;
use meshplane_model::{NodeId, ProxyKind, Resource, ResourceId, ResourceKind, Status};
use meshplane_rest::keys;
use meshplane_store::{Event, EventKind, Revision, Store, StoreError, WatchStream};
use meshplane_translate::{
    CloudMapService, Dependencies, Diagnostic, Endpoints, MeshSnapshot, ProxyConfig,
    TranslateOptions, dependencies, translate_node,
};
use meshplane_xds::{NodeKey, Snapshot, SnapshotCache};

/// After the first event of a burst, wait until the store has been quiet this long...
const DEBOUNCE_QUIET: Duration = Duration::from_millis(10);
/// ...but never longer than this in total, so a steady stream of writes still converges.
const DEBOUNCE_MAX: Duration = Duration::from_millis(100);
/// Page size of the initial (and post-compaction) listing.
const LIST_PAGE: usize = 1000;
/// Virtual node tag (a meshplane extension): the application's address, where the ingress
/// clusters send inbound traffic ([`TranslateOptions::app_address`]).
pub use meshplane_translate::APP_ADDRESS_TAG;
/// Virtual node or gateway tag (a meshplane extension) that puts its proxies in explicit mode:
/// listeners bound to this IP, ingress also on each listener port, egress also on each
/// backend port ([`TranslateOptions::listen_address`]). Lets several Envoys share one host,
/// each on its own loopback address, without iptables (tests, `meshplane demo`).
pub use meshplane_translate::LISTEN_ADDRESS_TAG;

/// What the reconciler computed for one proxy identity (virtual node).
#[derive(Clone)]
pub struct NodeState {
    /// The resources this node's configuration reads.
    pub deps: Dependencies,
    /// Why the configuration differs from what the mesh declares.
    pub diagnostics: Arc<[Diagnostic]>,
    /// The encoded snapshot served over xDS (the only copy of the translated resources:
    /// the decoded `ProxyConfig` is dropped on the translation thread, it costs as much to
    /// keep and free as to build).
    pub snapshot: Arc<Snapshot>,
}

/// The reconciler's view, shared read-only with the API (status, proxy-config).
#[derive(Default)]
pub struct ReconcileState {
    meshes: BTreeMap<String, MeshState>,
    /// Store revision the state reflects.
    pub revision: Revision,
    /// True once the first full listing has been translated into the snapshot cache
    /// (stays true across later re-lists): `/readyz` waits for it.
    pub synced: bool,
    /// Registry instances (Cloud Map), watched under `cloudmap/instances/`.
    endpoint_index: EndpointIndex,
    /// The translator's view of `endpoint_index`, rebuilt when an instance changes.
    endpoints: Arc<Endpoints>,
    /// Store key → resource id, for delete events (they carry no value).
    ids_by_key: HashMap<String, ResourceId>,
}

struct MeshState {
    /// The translator's input, edited event by event (rebuilding it per change cost as
    /// much as translating a mesh-wide change).
    snapshot: Arc<MeshSnapshot>,
    /// Translate options of the virtual nodes that differ from the process-wide ones
    /// ([`LISTEN_ADDRESS_TAG`]), derived once per write of the node.
    node_options: BTreeMap<ProxyKey, TranslateOptions>,
    nodes: BTreeMap<ProxyKey, NodeState>,
}

impl MeshState {
    fn new(mesh: &str) -> Self {
        MeshState {
            snapshot: Arc::new(MeshSnapshot::new(mesh)),
            node_options: BTreeMap::new(),
            nodes: BTreeMap::new(),
        }
    }

    /// Applies one stored resource (live or `DELETED`) to the snapshot and the options.
    fn put(&mut self, base: &TranslateOptions, r: &Resource) {
        // No translation holds the snapshot between bursts, so this is an in-place edit.
        Arc::make_mut(&mut self.snapshot).apply(r);
        if let Some(key) = proxy_key(&r.id) {
            match node_options(base, r) {
                Some(o) if r.status != Status::Deleted => {
                    self.node_options.insert(key, o);
                }
                _ => {
                    self.node_options.remove(&key);
                }
            }
        }
    }

    /// Removes a deleted resource from the snapshot and the options.
    fn delete(&mut self, id: &ResourceId) {
        Arc::make_mut(&mut self.snapshot).remove(id);
        if let Some(key) = proxy_key(id) {
            self.node_options.remove(&key);
        }
    }
}

impl ReconcileState {
    /// The state of one proxy identity (virtual node or gateway), if it exists.
    pub fn node(&self, mesh: &str, kind: ProxyKind, name: &str) -> Option<&NodeState> {
        self.meshes.get(mesh)?.nodes.get(&(kind, name.to_owned()))
    }

    /// Translation diagnostics for a virtual node or gateway.
    pub fn diagnostics(&self, mesh: &str, kind: ProxyKind, name: &str) -> Vec<Diagnostic> {
        self.node(mesh, kind, name)
            .map(|n| n.diagnostics.to_vec())
            .unwrap_or_default()
    }
}

/// Handle to the shared state.
pub type SharedState = Arc<RwLock<ReconcileState>>;

/// Runs the reconcile loop until the future is dropped.
pub struct Reconciler {
    store: Arc<dyn Store>,
    cache: SnapshotCache,
    options: TranslateOptions,
    state: SharedState,
}

impl Reconciler {
    /// A reconciler feeding `cache` from `store`.
    pub fn new(store: Arc<dyn Store>, cache: SnapshotCache, options: TranslateOptions) -> Self {
        Reconciler {
            store,
            cache,
            options,
            state: SharedState::default(),
        }
    }

    /// The shared state (for status and proxy-config endpoints).
    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// Loads everything, then follows the store forever (re-listing after a compaction or
    /// a watch failure, with a short back-off).
    pub async fn run(self) {
        loop {
            match self.sync_and_follow().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "reconciler lost the store watch; re-listing");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn sync_and_follow(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let (resources, revision) = self.list_all().await?;
        let (instances, cm_revision) = self.list_instances().await?;
        let mut by_mesh: BTreeMap<String, BTreeMap<ResourceId, Resource>> = BTreeMap::new();
        for r in resources {
            by_mesh
                .entry(r.id.mesh.clone())
                .or_default()
                .insert(r.id.clone(), r);
        }
        let meshes: BTreeSet<String> = {
            let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
            let mut names: BTreeSet<String> = st.meshes.keys().cloned().collect();
            names.extend(by_mesh.keys().cloned());
            st.ids_by_key.clear();
            for name in &names {
                let resources = by_mesh.remove(name).unwrap_or_default();
                st.ids_by_key.extend(
                    resources
                        .keys()
                        .map(|id| (keys::resource_key(id), id.clone())),
                );
                let entry = st
                    .meshes
                    .entry(name.clone())
                    .or_insert_with(|| MeshState::new(name));
                entry.snapshot = Arc::new(MeshSnapshot::new(name.clone()));
                entry.node_options.clear();
                for r in resources.values() {
                    entry.put(&self.options, r);
                }
            }
            st.revision = revision;
            st.endpoint_index
                .reset(instances.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
            st.endpoints = Arc::new(st.endpoint_index.endpoints());
            names
        };
        for mesh in &meshes {
            self.recompute(mesh, None, None, started).await;
        }
        self.state.write().unwrap_or_else(|p| p.into_inner()).synced = true;
        tracing::info!(
            revision,
            meshes = meshes.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "reconciler synced"
        );

        let mut watch = self.store.watch(keys::APPMESH_PREFIX, revision).await?;
        // Registry instances come through a second watch, merged into the same bursts.
        let mut cm_watch = self
            .store
            .watch(cloudmap_keys::INSTANCES, cm_revision)
            .await?;
        loop {
            let Some(first) = next_event(&mut watch, &mut cm_watch).await else {
                return Err(StoreError::Unavailable("watch closed".into()));
            };
            let burst_start = Instant::now();
            let mut events = vec![first?];
            let deadline = burst_start + DEBOUNCE_MAX;
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let wait = DEBOUNCE_QUIET.min(deadline - now);
                match tokio::time::timeout(wait, next_event(&mut watch, &mut cm_watch)).await {
                    Ok(Some(ev)) => events.push(ev?),
                    Ok(None) => return Err(StoreError::Unavailable("watch closed".into())),
                    Err(_) => break,
                }
            }
            let mut changed: BTreeMap<String, BTreeSet<ResourceId>> = BTreeMap::new();
            let mut changed_services: BTreeSet<CloudMapService> = BTreeSet::new();
            {
                let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
                for ev in events {
                    st.revision = st.revision.max(ev.revision());
                    if EndpointIndex::is_instance_key(&ev.kv.key) {
                        let service = match ev.kind {
                            EventKind::Put => st.endpoint_index.put(&ev.kv.key, &ev.kv.value),
                            EventKind::Delete => st.endpoint_index.delete(&ev.kv.key),
                        };
                        changed_services.extend(service);
                        continue;
                    }
                    match ev.kind {
                        EventKind::Put => match keys::decode(&ev.kv.value) {
                            Ok(r) => {
                                changed
                                    .entry(r.id.mesh.clone())
                                    .or_default()
                                    .insert(r.id.clone());
                                st.ids_by_key.insert(ev.kv.key.clone(), r.id.clone());
                                st.meshes
                                    .entry(r.id.mesh.clone())
                                    .or_insert_with(|| MeshState::new(&r.id.mesh))
                                    .put(&self.options, &r);
                            }
                            Err(e) => {
                                tracing::error!(key = %ev.kv.key, error = %e, "undecodable record")
                            }
                        },
                        EventKind::Delete => {
                            // Deletes carry no value: find the resource by key.
                            let Some(id) = st.ids_by_key.remove(&ev.kv.key) else {
                                continue;
                            };
                            if let Some(ms) = st.meshes.get_mut(&id.mesh) {
                                ms.delete(&id);
                                changed.entry(id.mesh.clone()).or_default().insert(id);
                            }
                        }
                    }
                }
            }
            let meshes: Vec<String> = {
                let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
                if !changed_services.is_empty() {
                    st.endpoints = Arc::new(st.endpoint_index.endpoints());
                    st.meshes.keys().cloned().collect()
                } else {
                    changed.keys().cloned().collect()
                }
            };
            let no_ids = BTreeSet::new();
            for mesh in meshes {
                let ids = changed.get(&mesh).unwrap_or(&no_ids);
                self.recompute(&mesh, Some(ids), Some(&changed_services), burst_start)
                    .await;
            }
        }
    }

    async fn list_all(&self) -> Result<(Vec<Resource>, Revision), StoreError> {
        // Pages are consistent each; the revision of the first page is a safe watch start
        // (later pages only add newer state, and the watch replays from the first revision).
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        let mut revision = None;
        loop {
            let page = self
                .store
                .list(keys::APPMESH_PREFIX, start.as_deref(), LIST_PAGE)
                .await?;
            revision.get_or_insert(page.revision);
            for kv in &page.items {
                match keys::decode(&kv.value) {
                    Ok(r) => out.push(r),
                    Err(e) => tracing::error!(key = %kv.key, error = %e, "undecodable record"),
                }
            }
            if !page.more {
                break;
            }
            start = page.items.last().map(|kv| kv.key.clone());
        }
        Ok((out, revision.unwrap_or(0)))
    }

    /// Every registry instance record (key, value) and the revision to watch from.
    async fn list_instances(&self) -> Result<(Vec<(String, Vec<u8>)>, Revision), StoreError> {
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        let mut revision = None;
        loop {
            let page = self
                .store
                .list(cloudmap_keys::INSTANCES, start.as_deref(), LIST_PAGE)
                .await?;
            revision.get_or_insert(page.revision);
            start = page.items.last().map(|kv| kv.key.clone());
            out.extend(page.items.into_iter().map(|kv| (kv.key, kv.value)));
            if !page.more {
                break;
            }
        }
        Ok((out, revision.unwrap_or(0)))
    }

    /// Recomputes the proxies of `mesh` affected by `changed` (all of them when `None`).
    async fn recompute(
        &self,
        mesh: &str,
        changed: Option<&BTreeSet<ResourceId>>,
        changed_services: Option<&BTreeSet<CloudMapService>>,
        written_at: Instant,
    ) {
        let (snap, targets, removed, endpoints) = {
            let st = self.state.read().unwrap_or_else(|p| p.into_inner());
            let Some(ms) = st.meshes.get(mesh) else {
                return;
            };
            let snap = ms.snapshot.clone();
            let mut targets = Vec::new();
            let proxies = snap
                .virtual_nodes
                .keys()
                .map(|n| (ProxyKind::VirtualNode, n.clone()))
                .chain(
                    snap.virtual_gateways
                        .keys()
                        .map(|n| (ProxyKind::VirtualGateway, n.clone())),
                );
            for name in proxies {
                let affected = match (changed, ms.nodes.get(&name)) {
                    (None, _) | (_, None) => true,
                    (Some(ids), Some(ns)) => {
                        ids.iter().any(|id| ns.deps.affected_by(id))
                            || changed_services
                                .is_some_and(|s| !s.is_disjoint(&ns.deps.cloud_map_services))
                    }
                };
                if affected {
                    let options = ms.node_options.get(&name).unwrap_or(&self.options).clone();
                    let previous = ms.nodes.get(&name).map(|n| n.snapshot.clone());
                    targets.push((name, options, previous));
                }
            }
            let removed: Vec<ProxyKey> = ms
                .nodes
                .keys()
                .filter(|(kind, n)| match kind {
                    ProxyKind::VirtualNode => !snap.virtual_nodes.contains_key(n),
                    ProxyKind::VirtualGateway => !snap.virtual_gateways.contains_key(n),
                })
                .cloned()
                .collect();
            (snap, targets, removed, st.endpoints.clone())
        };
        if targets.is_empty() && removed.is_empty() {
            return;
        }
        let started = Instant::now();
        let translated = targets.len();
        // Results stream back node by node, and each batch is pushed as it arrives: the
        // first proxies get their configuration while the last nodes are still translated.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let tasks = translate_all(mesh, snap, endpoints, targets, written_at, tx);
        let mut pushed = 0usize;
        // Replaced states are dropped after the lock is released, on a blocking thread.
        let mut replaced = Vec::new();
        {
            let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
            let ms = st
                .meshes
                .entry(mesh.to_owned())
                .or_insert_with(|| MeshState::new(mesh));
            for key in removed {
                replaced.extend(ms.nodes.remove(&key));
                // Connected Envoys keep their last config; new ones get none.
                let id = proxy_id(mesh, &key);
                self.cache.remove(&NodeKey::from(id.clone()));
                tracing::info!(mesh, node = %id, "proxy resource removed");
            }
        }
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, 256).await > 0 {
            let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
            let ms = st
                .meshes
                .entry(mesh.to_owned())
                .or_insert_with(|| MeshState::new(mesh));
            for computed in batch.drain(..) {
                if let Some((name, state, was_pushed)) = self.apply(mesh, ms, computed) {
                    pushed += usize::from(was_pushed);
                    replaced.extend(ms.nodes.insert(name, state));
                }
            }
        }
        let translate_time = started.elapsed();
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, mesh, "translation task failed; its nodes keep their previous configuration");
            }
        }
        tracing::debug!(
            mesh,
            translated,
            pushed,
            translate_ms = translate_time.as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            since_first_event_ms = written_at.elapsed().as_secs_f64() * 1e3,
            "recomputed"
        );
        if !replaced.is_empty() {
            tokio::task::spawn_blocking(move || drop(replaced));
        }
    }

    /// Turns one translated node into its new state, pushing the snapshot to the cache
    /// when some type's version changed (then the flag is `true`). `None` when the
    /// snapshot could not be built: the previous state stays.
    fn apply(
        &self,
        mesh: &str,
        ms: &MeshState,
        computed: Computed,
    ) -> Option<(ProxyKey, NodeState, bool)> {
        let (name, node, deps, diagnostics, snapshot) = computed;
        let snapshot = match snapshot {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!(mesh, node = %node, error = %e, "snapshot rejected; keeping the previous one");
                return None;
            }
        };
        for d in &diagnostics {
            tracing::debug!(mesh, node = %node, diagnostic = %d.message, "translation diagnostic");
        }
        let previous = ms
            .nodes
            .get(&name)
            .filter(|prev| same_versions(&prev.snapshot, &snapshot))
            .map(|prev| prev.snapshot.clone());
        let state = |snapshot| NodeState {
            deps,
            diagnostics: diagnostics.into(),
            snapshot,
        };
        Some(match previous {
            Some(unchanged) => (name, state(unchanged), false),
            None => {
                self.cache.set(NodeKey::from(node), snapshot.clone());
                (name, state(snapshot), true)
            }
        })
    }
}

/// A proxy identity within a mesh: virtual node or gateway, and its name (a node and a
/// gateway may share a name).
pub type ProxyKey = (ProxyKind, String);

/// The proxy key of a virtual node or gateway id.
fn proxy_key(id: &ResourceId) -> Option<ProxyKey> {
    match id.kind {
        ResourceKind::VirtualNode => Some((ProxyKind::VirtualNode, id.name.clone())),
        ResourceKind::VirtualGateway => Some((ProxyKind::VirtualGateway, id.name.clone())),
        _ => None,
    }
}

/// The proxy identity of `key` in `mesh`.
fn proxy_id(mesh: &str, key: &ProxyKey) -> NodeId {
    NodeId {
        mesh: mesh.to_owned(),
        owner: None,
        kind: key.0,
        name: key.1.clone(),
    }
}

/// One translated proxy: key, id, dependencies, diagnostics, encoded snapshot.
type Computed = (
    ProxyKey,
    NodeId,
    Dependencies,
    Vec<Diagnostic>,
    Result<Snapshot, String>,
);

/// Fewest nodes worth a thread of their own.
const MIN_NODES_PER_TASK: usize = 8;

/// Translates `targets` off the async workers (translation is CPU work), split over as
/// many blocking tasks as there are cores when there is enough to split: a mesh-wide
/// change recomputes every node, and the nodes are independent. Each node's result is
/// sent on `out` as soon as it is ready; the channel closes when every task is done.
fn translate_all(
    mesh: &str,
    snap: Arc<MeshSnapshot>,
    endpoints: Arc<Endpoints>,
    targets: Vec<(ProxyKey, TranslateOptions, Option<Arc<Snapshot>>)>,
    written_at: Instant,
    out: tokio::sync::mpsc::UnboundedSender<Computed>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tasks = cores.min(targets.len() / MIN_NODES_PER_TASK).max(1);
    let per_task = targets.len().div_ceil(tasks).max(1);
    let mut handles = Vec::with_capacity(tasks);
    let mut targets = targets.into_iter();
    loop {
        let chunk: Vec<_> = targets.by_ref().take(per_task).collect();
        if chunk.is_empty() {
            break;
        }
        let (snap, endpoints, mesh, out) = (
            snap.clone(),
            endpoints.clone(),
            mesh.to_owned(),
            out.clone(),
        );
        handles.push(tokio::task::spawn_blocking(move || {
            for (name, options, previous) in chunk {
                let node = proxy_id(&mesh, &name);
                let config = translate_node(&snap, &endpoints, &node, &options);
                let deps = dependencies(&snap, &node);
                let snapshot = build_snapshot(&config, written_at, previous);
                if out
                    .send((name, node, deps, config.diagnostics, snapshot))
                    .is_err()
                {
                    return; // The reconciler went away.
                }
            }
        }));
    }
    handles
}

/// The next event of either watch (`None` once either is closed).
async fn next_event(a: &mut WatchStream, b: &mut WatchStream) -> Option<Result<Event, StoreError>> {
    tokio::select! {
        e = a.recv() => e,
        e = b.recv() => e,
    }
}

/// The translate options of one virtual node when they differ from `base`: its
/// [`LISTEN_ADDRESS_TAG`] and [`APP_ADDRESS_TAG`] (an unparsable value is logged, once per
/// write, and ignored).
fn node_options(base: &TranslateOptions, node: &Resource) -> Option<TranslateOptions> {
    let (options, errors) = base.with_node_tags(&node.tags);
    for e in errors {
        tracing::warn!(node = %node.id, error = %e, "bad meshplane tag");
    }
    (options != *base).then_some(options)
}

/// Encodes `config`, sharing the resources that are byte-identical in `previous`.
fn build_snapshot(
    config: &ProxyConfig,
    written_at: Instant,
    previous: Option<Arc<Snapshot>>,
) -> Result<Snapshot, String> {
    let mut b = Snapshot::builder()
        .created_at(written_at)
        .previous(previous);
    for (type_url, name, any) in config.resources() {
        b = b.add_any(type_url, name, any);
    }
    b.build().map_err(|errs| format!("{errs:?}"))
}

fn same_versions(a: &Snapshot, b: &Snapshot) -> bool {
    meshplane_xds::ResourceType::ALL
        .iter()
        .all(|t| a.version(*t) == b.version(*t))
}

/// The kinds that define proxies.
pub fn is_proxy_kind(kind: ResourceKind) -> bool {
    matches!(
        kind,
        ResourceKind::VirtualNode | ResourceKind::VirtualGateway
    )
}
