//! Incremental ADS (`DeltaAggregatedResources`): one task per stream.
//!
//! # Algorithm
//!
//! Per type the task keeps the proxy's subscription (wildcard and/or names)
//! and two views of the proxy's resources, name → version:
//!
//! - `acked`: what the proxy is known to hold. Seeded from
//!   `initial_resource_versions` on (re)connect; changed only when a response
//!   is ACKed ("client has version V" is committed on ACK, never at send time).
//! - `sent`: `acked` plus every response still in flight; what the next diff is
//!   computed against, so nothing is sent twice while an ACK is pending.
//!
//! A flush sends, per type, the subscribed resources whose version differs from
//! `sent`, in the order CDS (additions and changes) → EDS → LDS → RDS → SDS →
//! CDS removals. Wildcard types (CDS, LDS) get `removed_resources` for names the
//! proxy holds that left the snapshot; named types are never sent removals
//! (Envoy ignores them for SDS and treats RDS differently; it unsubscribes
//! itself). EDS names the snapshot lacks get an empty assignment; RDS/SDS names
//! are remembered and sent when they appear. After CDS sends a new or changed
//! EDS cluster, its assignment is re-sent even if unchanged (cluster warming).
//!
//! On a NACK, `sent` falls back to `acked` for that response's resources and
//! each rejected `(name, version)` is remembered: it is not offered again until
//! the snapshot's version of that type changes, then everything still differing
//! from `acked` is retried together with the change. No resend loop, and no
//! silent divergence either.
//!
//! Subscription changes are honoured whatever the nonce; ACK/NACK processing
//! needs a nonce of an in-flight response. The first request of a type is
//! always answered (an empty response if nothing differs), so Envoy's initial
//! fetch completes.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as WireResource,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::{debug, warn};

use crate::limits::{MAX_NACK_MESSAGE_LEN, MAX_VERSION_LEN, Untrusted, check_names, truncate};
use crate::resource::{Resource, ResourceType};
use crate::snapshot::Snapshot;
use crate::status::{Nack, StreamStatus, XdsFlavor};
use crate::stream::{
    Closed, NodeWatch, StreamCtx, control_plane, empty_cla, first_request, interrupt, interrupted,
    nonce, request_error,
};

type Tx = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

struct DeltaStream {
    status: StreamStatus,
    types: [TypeState; 5],
    nonce: u64,
}

#[derive(Default)]
struct TypeState {
    subscribed: bool,
    /// Answer the next flush even if nothing differs (first request).
    must_answer: bool,
    wildcard: bool,
    names: BTreeSet<Arc<str>>,
    acked: HashMap<Arc<str>, Arc<str>>,
    sent: HashMap<Arc<str>, Arc<str>>,
    pending: VecDeque<Pending>,
    /// `(name, Some(version))` updates and `(name, None)` removals the proxy rejected.
    rejected: HashSet<(Arc<str>, Option<Arc<str>>)>,
    /// Snapshot type version at the time of the last NACK; `rejected` is
    /// cleared when it changes.
    rejected_at: Option<Arc<str>>,
    /// Names to re-send even if unchanged (EDS after CDS).
    force: HashSet<Arc<str>>,
    /// The snapshot the last diff ran against; `None` after anything that can
    /// change the next diff (subscription change, NACK). Keeps ACKs O(1).
    synced: Option<Arc<Snapshot>>,
}

struct Pending {
    nonce: String,
    version: String,
    at: Instant,
    snapshot_created_at: Instant,
    /// `Some(version)` for an update, `None` for a removal.
    changes: Vec<(Arc<str>, Option<Arc<str>>)>,
}

/// One computed response.
struct Diff {
    updates: Vec<Arc<Resource>>,
    removals: Vec<Arc<str>>,
}

/// Runs one delta stream until the proxy disconnects, the response channel
/// closes or the server shuts down.
pub(crate) async fn run(
    mut ctx: StreamCtx,
    mut requests: Streaming<DeltaDiscoveryRequest>,
    tx: Tx,
) {
    let Some(first) = first_request(&mut ctx, &mut requests, &tx).await else {
        return;
    };
    let Some((mut watch, status)) = ctx
        .handshake(first.node.as_ref(), XdsFlavor::Delta, &tx)
        .await
    else {
        return;
    };
    let node = status.info().node_id.clone();
    debug!(stream = ctx.id, node = %Untrusted(&node), known = watch.current.is_some(), "delta stream opened");

    let mut s = DeltaStream {
        status,
        types: Default::default(),
        nonce: 0,
    };
    if let Err(status) = s.on_request(first) {
        let _ = tx.try_send(Err(status));
        return;
    }
    if s.flush(&watch, &tx).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            why = interrupted(&mut ctx.shutdown, ctx.auth.as_ref()) => {
                interrupt(&ctx, why, &tx);
                break;
            }
            msg = requests.message() => match msg {
                Ok(Some(req)) => if let Err(status) = ctx
                    .check_later_node(req.node.as_ref())
                    .and_then(|()| s.on_request(req))
                {
                    debug!(stream = ctx.id, node = %Untrusted(&node), %status, "request refused");
                    let _ = tx.try_send(Err(status));
                    break;
                },
                Ok(None) => {
                    debug!(stream = ctx.id, node = %Untrusted(&node), "proxy closed the stream");
                    break;
                }
                Err(error) => {
                    debug!(stream = ctx.id, node = %Untrusted(&node), %error, "stream failed");
                    // Tell the proxy why (a malformed request, one over the size limit).
                    let _ = tx.try_send(Err(request_error(error)));
                    break;
                }
            },
            changed = watch.changed() => if !changed { continue },
        }
        if s.flush(&watch, &tx).await.is_err() {
            break;
        }
    }
}

// === impl DeltaStream ===

impl DeltaStream {
    fn node(&self) -> &str {
        &self.status.info().node_id
    }

    fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Result<(), Status> {
        let Some(ty) = ResourceType::from_type_url(&req.type_url) else {
            debug!(node = %Untrusted(self.node()), type_url = %Untrusted(&req.type_url), "ignoring request for unserved type");
            return Ok(());
        };
        // Subscriptions accumulate over requests: bound what the stream keeps.
        {
            let t = &self.types[ty as usize];
            let initial = if t.subscribed {
                0
            } else {
                req.initial_resource_versions.len()
            };
            let total = t.names.len() + req.resource_names_subscribe.len() + initial;
            check_names(
                ty,
                req.resource_names_subscribe
                    .iter()
                    .chain(req.initial_resource_versions.keys())
                    .map(String::as_str),
                total,
            )?;
            if let Some(v) = req
                .initial_resource_versions
                .values()
                .find(|v| v.len() > MAX_VERSION_LEN)
            {
                return Err(Status::invalid_argument(format!(
                    "{ty} initial resource version is {} bytes, the limit is {MAX_VERSION_LEN} bytes",
                    v.len()
                )));
            }
        }
        if !req.response_nonce.is_empty() {
            self.on_ack_or_nack(ty, &req);
        }

        // Subscription changes apply whatever the nonce.
        let t = &mut self.types[ty as usize];
        let first = !t.subscribed;
        if first {
            t.subscribed = true;
            t.must_answer = true;
            for (name, version) in req.initial_resource_versions {
                let (name, version): (Arc<str>, Arc<str>) = (name.into(), version.into());
                t.acked.insert(name.clone(), version.clone());
                t.sent.insert(name, version);
            }
            t.wildcard = req.resource_names_subscribe.is_empty();
            self.status.subscribed(ty, None);
        }
        let t = &mut self.types[ty as usize];
        if first
            || !req.resource_names_subscribe.is_empty()
            || !req.resource_names_unsubscribe.is_empty()
        {
            t.synced = None;
        }
        for name in req.resource_names_subscribe {
            if name == "*" {
                t.wildcard = true;
            } else {
                t.names.insert(name.into());
            }
        }
        for name in req.resource_names_unsubscribe {
            if name == "*" {
                t.wildcard = false;
            } else {
                t.names.remove(name.as_str());
                // The proxy drops what it unsubscribed from; forget our view of it.
                t.acked.remove(name.as_str());
                t.sent.remove(name.as_str());
                t.force.remove(name.as_str());
            }
        }
        Ok(())
    }

    fn on_ack_or_nack(&mut self, ty: ResourceType, req: &DeltaDiscoveryRequest) {
        let node: Arc<str> = self.status.info().node_id.clone();
        let t = &mut self.types[ty as usize];
        let Some(pos) = t.pending.iter().position(|p| p.nonce == req.response_nonce) else {
            debug!(node = %Untrusted(&node), %ty, nonce = %Untrusted(&req.response_nonce), "ignoring ack/nack of unknown nonce");
            return;
        };
        // Responses are ACKed in order; older unanswered ones are superseded.
        let mut p = None;
        for _ in 0..=pos {
            p = t.pending.pop_front();
        }
        let Some(p) = p else { return };
        match &req.error_detail {
            None => {
                for (name, version) in &p.changes {
                    match version {
                        Some(v) => t.acked.insert(name.clone(), v.clone()),
                        None => t.acked.remove(name),
                    };
                }
                debug!(node = %Untrusted(&node), %ty, version = %p.version, "ack");
                self.status
                    .acked(ty, &p.version, &p.nonce, p.at, p.snapshot_created_at);
            }
            Some(err) => {
                for (name, version) in &p.changes {
                    // Fall back to the last good version, unless a later
                    // in-flight response already changed this name again.
                    if t.sent.get(name) == version.as_ref() {
                        match t.acked.get(name) {
                            Some(v) => t.sent.insert(name.clone(), v.clone()),
                            None => t.sent.remove(name),
                        };
                    }
                    t.rejected.insert((name.clone(), version.clone()));
                }
                t.rejected_at = Some(p.version.as_str().into());
                t.synced = None;
                if let Some(skipped) = self.status.nack_log_permit() {
                    warn!(
                        node = %Untrusted(&node), type_url = %ty.type_url(), version = %p.version,
                        reason = %Untrusted(&err.message), nacks_not_logged = skipped, "nack"
                    );
                }
                let nack = Nack {
                    version: p.version.clone(),
                    nonce: p.nonce.clone(),
                    code: err.code,
                    message: truncate(&err.message, MAX_NACK_MESSAGE_LEN),
                    at: SystemTime::now(),
                };
                let names = p.changes.iter().map(|(n, _)| n.to_string()).collect();
                self.status.nacked(ty, nack, names);
            }
        }
    }

    fn diff(&mut self, ty: ResourceType, snap: &Arc<Snapshot>) -> Diff {
        let t = &mut self.types[ty as usize];
        if t.force.is_empty() && t.synced.as_ref().is_some_and(|s| s.same_content(snap, ty)) {
            // Same content under the same subscription: nothing to send. Follow the new
            // snapshot so the old one can be freed.
            t.synced = Some(snap.clone());
            return Diff {
                updates: Vec::new(),
                removals: Vec::new(),
            };
        }
        t.synced = Some(snap.clone());
        let all = snap.resources(ty);
        if t.rejected_at.as_deref().is_some_and(|v| v != all.version()) {
            t.rejected.clear();
            t.rejected_at = None;
        }
        let mut updates = Vec::new();
        let mut removals = Vec::new();
        let mut consider = |name: &Arc<str>, res: Option<Arc<Resource>>| match res {
            Some(r) => {
                let forced = t.force.contains(name);
                let differs = t.sent.get(name).map(|v| &**v) != Some(r.version());
                let rejected = t
                    .rejected
                    .contains(&(name.clone(), Some(r.version_arc().clone())));
                if forced || (differs && !rejected) {
                    updates.push(r);
                }
            }
            None => {
                if t.wildcard
                    && ty.is_wildcard_type()
                    && t.sent.contains_key(name)
                    && !t.rejected.contains(&(name.clone(), None))
                {
                    removals.push(name.clone());
                }
            }
        };
        if t.wildcard {
            for r in all.iter() {
                consider(r.name_arc(), Some(r.clone()));
            }
        }
        for name in &t.names {
            if t.wildcard && all.contains(name) {
                continue;
            }
            let res = match all.get(name) {
                Some(r) => Some(r.clone()),
                None if ty == ResourceType::Endpoint => Some(empty_cla(name)),
                None => None,
            };
            consider(name, res);
        }
        if t.wildcard && ty.is_wildcard_type() {
            let gone: Vec<Arc<str>> = t
                .sent
                .keys()
                .filter(|n| !all.contains(n) && !t.names.contains(*n))
                .cloned()
                .collect();
            for name in gone {
                consider(&name, None);
            }
        }
        t.force.clear();
        removals.sort();
        Diff { updates, removals }
    }

    async fn flush(&mut self, watch: &NodeWatch, tx: &Tx) -> Result<(), Closed> {
        let Some(snap) = watch.current.clone() else {
            return Ok(());
        };
        let cds = ResourceType::Cluster;
        let mut cds_removals = Vec::new();
        for ty in ResourceType::ALL {
            if !self.types[ty as usize].subscribed {
                continue;
            }
            let mut diff = self.diff(ty, &snap);
            if ty == cds {
                // Removals go last, after routes stopped referencing them.
                cds_removals = std::mem::take(&mut diff.removals);
                let eds: Vec<Arc<str>> = diff
                    .updates
                    .iter()
                    .filter_map(|r| r.eds_service_name().cloned())
                    .collect();
                let eds_state = &mut self.types[ResourceType::Endpoint as usize];
                for name in eds {
                    if eds_state.names.contains(&name) || eds_state.wildcard {
                        eds_state.force.insert(name);
                    }
                }
            }
            let t = &mut self.types[ty as usize];
            let must = std::mem::take(&mut t.must_answer);
            if diff.updates.is_empty() && diff.removals.is_empty() && !must {
                continue;
            }
            self.send(ty, diff, &snap, tx).await?;
        }
        if !cds_removals.is_empty() {
            let diff = Diff {
                updates: Vec::new(),
                removals: cds_removals,
            };
            self.send(cds, diff, &snap, tx).await?;
        }
        Ok(())
    }

    async fn send(
        &mut self,
        ty: ResourceType,
        diff: Diff,
        snap: &Snapshot,
        tx: &Tx,
    ) -> Result<(), Closed> {
        let version = snap.version(ty).to_owned();
        let nonce = nonce(&mut self.nonce);
        let bytes: usize = diff.updates.iter().map(|r| r.encoded_len()).sum();
        let response = DeltaDiscoveryResponse {
            system_version_info: version.clone(),
            resources: diff
                .updates
                .iter()
                .map(|r| WireResource {
                    name: r.name().to_owned(),
                    version: r.version().to_owned(),
                    resource: Some(r.any().clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: ty.type_url().to_owned(),
            removed_resources: diff.removals.iter().map(|n| n.to_string()).collect(),
            nonce: nonce.clone(),
            control_plane: control_plane(),
            ..Default::default()
        };
        tx.send(Ok(response)).await.map_err(|_| Closed)?;
        debug!(
            node = %Untrusted(self.node()), %ty, %version, %nonce, resources = diff.updates.len(),
            removed = diff.removals.len(), bytes, "sent"
        );
        self.status.sent(
            ty,
            &version,
            &nonce,
            diff.updates.len(),
            diff.removals.len(),
            bytes,
        );
        let t = &mut self.types[ty as usize];
        let mut changes = Vec::with_capacity(diff.updates.len() + diff.removals.len());
        for r in &diff.updates {
            t.sent.insert(r.name_arc().clone(), r.version_arc().clone());
            changes.push((r.name_arc().clone(), Some(r.version_arc().clone())));
        }
        for name in diff.removals {
            t.sent.remove(&name);
            changes.push((name, None));
        }
        t.pending.push_back(Pending {
            nonce,
            version,
            at: Instant::now(),
            snapshot_created_at: snap.created_at(),
            changes,
        });
        Ok(())
    }
}
