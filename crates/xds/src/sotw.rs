//! State-of-the-world ADS (`StreamAggregatedResources`): one task per stream.
//!
//! # Algorithm
//!
//! The task owns all per-stream state and is the stream's only writer, so
//! responses leave in exactly the order below. After every event (a request or
//! a snapshot change) it runs one *flush*:
//!
//! 1. **CDS, make phase.** If clusters were added or changed and others removed,
//!    send the new clusters *plus* the ones about to be removed (their old
//!    versions), so nothing a current route references disappears yet. This
//!    response's version is its own content hash. If clusters were only added
//!    or changed, this is simply the new CDS. A CDS that only removes clusters
//!    is deferred to step 4.
//! 2. **EDS.** Sent when its content (the subscribed assignments) changed, and
//!    also *always* after step 1 sent clusters, because Envoy finishes warming a
//!    new or changed cluster only on a fresh EDS response.
//! 3. **LDS, RDS, SDS**, each when its content changed.
//! 4. **CDS, break phase.** The exact new cluster set, if it differs from what
//!    was sent (removes stale clusters last).
//!
//! "Content" is a hash of the `(name, version)` list the response would carry
//! (all resources for wildcard subscriptions, the subscribed names otherwise).
//! A type is sent when that hash differs from the last *sent* one, so:
//!
//! - a NACK changes nothing we compare against: the rejected content is not
//!   re-sent until the snapshot or the subscription changes (no resend loop);
//!   the proxy's acked version stays at its last good one;
//! - the first request of a type on a stream is always answered (also on a
//!   reconnect that reports an old `version_info`: current state is sent);
//! - EDS names the snapshot lacks are answered with an empty assignment, RDS and
//!   SDS names are remembered; both get the resource when it appears.
//!
//! Requests whose `response_nonce` is not the last nonce sent for their type
//! are stale and ignored (the proxy will ACK or NACK the newer response with
//! its full subscription). The node is read from the first request only.
//! `version_info` is the snapshot's type version ([`Snapshot::version`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::{debug, warn};

use crate::limits::{MAX_NACK_MESSAGE_LEN, MAX_VERSION_LEN, Untrusted, check_names, truncate};
use crate::resource::{Resource, ResourceType};
use crate::snapshot::{Snapshot, list_version};
use crate::status::{Nack, StreamStatus, XdsFlavor};
use crate::stream::{
    Closed, NodeWatch, StreamCtx, control_plane, empty_cla, first_request, interrupt, interrupted,
    nonce, request_error,
};

type Tx = mpsc::Sender<Result<DiscoveryResponse, Status>>;

struct SotwStream {
    status: StreamStatus,
    types: [TypeState; 5],
    nonce: u64,
    /// The snapshot whose exact cluster set was last sent (base of the CDS diff).
    cds_base: Option<Arc<Snapshot>>,
}

#[derive(Default)]
struct TypeState {
    /// The proxy sent at least one request for this type.
    subscribed: bool,
    /// Wildcard subscription (legacy empty first request, or `*`).
    wildcard: bool,
    /// Explicitly requested names (remembered even if they do not exist).
    names: BTreeSet<String>,
    /// The last response of this type.
    last: Option<Sent>,
    /// Send even if the content is unchanged (EDS after CDS).
    force: bool,
    /// The snapshot this type was last evaluated against with the current
    /// subscription; `None` after a subscription change.
    synced: Option<Arc<Snapshot>>,
}

struct Sent {
    nonce: String,
    version: String,
    /// Content hash of what was sent; drives "send again?".
    content: String,
    at: Instant,
    /// The snapshot the response was computed from (names for NACK events,
    /// `created_at` for latency).
    from: Arc<Snapshot>,
}

/// Runs one SotW stream until the proxy disconnects, the response channel
/// closes or the server shuts down.
pub(crate) async fn run(mut ctx: StreamCtx, mut requests: Streaming<DiscoveryRequest>, tx: Tx) {
    let Some(first) = first_request(&mut ctx, &mut requests, &tx).await else {
        return;
    };
    let Some((mut watch, status)) = ctx
        .handshake(first.node.as_ref(), XdsFlavor::Sotw, &tx)
        .await
    else {
        return;
    };
    let node = status.info().node_id.clone();
    debug!(stream = ctx.id, node = %Untrusted(&node), known = watch.current.is_some(), "sotw stream opened");

    let mut s = SotwStream {
        status,
        types: Default::default(),
        nonce: 0,
        cds_base: None,
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

// === impl SotwStream ===

impl SotwStream {
    fn node(&self) -> &str {
        &self.status.info().node_id
    }

    fn on_request(&mut self, req: DiscoveryRequest) -> Result<(), Status> {
        let Some(ty) = ResourceType::from_type_url(&req.type_url) else {
            debug!(node = %Untrusted(self.node()), type_url = %Untrusted(&req.type_url), "ignoring request for unserved type");
            return Ok(());
        };
        check_names(
            ty,
            req.resource_names.iter().map(String::as_str),
            req.resource_names.len(),
        )?;
        let first = !self.types[ty as usize].subscribed;
        if let Some(last) = &self.types[ty as usize].last {
            if req.response_nonce != last.nonce {
                debug!(node = %Untrusted(self.node()), %ty, nonce = %Untrusted(&req.response_nonce), "ignoring stale nonce");
                return Ok(());
            }
            match &req.error_detail {
                Some(err) => {
                    let nack = Nack {
                        version: last.version.clone(),
                        nonce: last.nonce.clone(),
                        code: err.code,
                        message: truncate(&err.message, MAX_NACK_MESSAGE_LEN),
                        at: SystemTime::now(),
                    };
                    if let Some(skipped) = self.status.nack_log_permit() {
                        warn!(
                            node = %Untrusted(self.node()), type_url = %ty.type_url(), version = %last.version,
                            kept = %Untrusted(&req.version_info), reason = %Untrusted(&err.message),
                            nacks_not_logged = skipped, "nack"
                        );
                    }
                    let names: Vec<String> = self
                        .desired(ty, &last.from)
                        .iter()
                        .map(|r| r.name().to_owned())
                        .collect();
                    self.status.nacked(ty, nack, names);
                }
                None => {
                    debug!(node = %Untrusted(self.node()), %ty, version = %Untrusted(&req.version_info), "ack");
                    self.status.acked(
                        ty,
                        &truncate(&req.version_info, MAX_VERSION_LEN),
                        &last.nonce,
                        last.at,
                        last.from.created_at(),
                    );
                }
            }
        } else {
            // First request of this type on this stream; a nonce from an
            // earlier stream means nothing here. A reconnecting proxy reports
            // the version it still runs.
            self.status
                .subscribed(ty, Some(&truncate(&req.version_info, MAX_VERSION_LEN)));
        }

        let t = &mut self.types[ty as usize];
        let mut names: BTreeSet<String> = req.resource_names.into_iter().collect();
        let star = names.remove("*");
        let wildcard = star || (names.is_empty() && (first || t.wildcard));
        if first || wildcard != t.wildcard || names != t.names {
            t.synced = None;
        }
        t.wildcard = wildcard;
        t.names = names;
        t.subscribed = true;
        Ok(())
    }

    /// What a response of `ty` would carry now from `snap`, sorted by name.
    fn desired(&self, ty: ResourceType, snap: &Snapshot) -> Vec<Arc<Resource>> {
        let t = &self.types[ty as usize];
        let all = snap.resources(ty);
        if t.wildcard {
            return all.iter().cloned().collect();
        }
        t.names
            .iter()
            .filter_map(|n| match all.get(n) {
                Some(r) => Some(r.clone()),
                None if ty == ResourceType::Endpoint => Some(empty_cla(n)),
                None => None,
            })
            .collect()
    }

    /// Content hash of [`desired`](Self::desired) without building it for
    /// wildcard subscriptions (it is then the snapshot's type version).
    fn desired_content(&self, ty: ResourceType, snap: &Snapshot) -> String {
        if self.types[ty as usize].wildcard {
            return snap.version(ty).to_owned();
        }
        list_version(ty, self.desired(ty, snap).iter().map(|r| &**r))
    }

    /// Whether `ty` was already evaluated against `snap` with the current
    /// subscription (most requests are ACKs: this keeps them O(1)).
    fn synced(&self, ty: ResourceType, snap: &Arc<Snapshot>) -> bool {
        let t = &self.types[ty as usize];
        !t.force && t.synced.as_ref().is_some_and(|s| s.same_content(snap, ty))
    }

    async fn flush(&mut self, watch: &NodeWatch, tx: &Tx) -> Result<(), Closed> {
        let Some(snap) = watch.current.clone() else {
            return Ok(());
        };
        let cds = ResourceType::Cluster;
        let cds_pending = self.types[cds as usize].subscribed && !self.synced(cds, &snap);

        // 1. CDS, make phase.
        if cds_pending {
            let base = self
                .cds_base
                .clone()
                .filter(|_| self.types[cds as usize].wildcard);
            let base = base.filter(|b| b.version(cds) != snap.version(cds));
            let removed: Vec<Arc<Resource>> = match &base {
                Some(base) => base
                    .resources(cds)
                    .iter()
                    .filter(|r| !snap.resources(cds).contains(r.name()))
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };
            let sent = if removed.is_empty() {
                self.maybe_send(cds, &snap, None, tx).await?
            } else {
                let clusters = self.desired(cds, &snap);
                let added_or_changed = clusters.iter().any(|r| {
                    base.as_ref()
                        .and_then(|b| b.get(cds, r.name()))
                        .is_none_or(|old| old.version() != r.version())
                });
                if added_or_changed {
                    let mut union = clusters;
                    union.extend(removed);
                    union.sort_by(|a, b| a.name().cmp(b.name()));
                    self.maybe_send(cds, &snap, Some(union), tx).await?
                } else {
                    false // Only removals: deferred to the break phase.
                }
            };
            if sent {
                self.types[ResourceType::Endpoint as usize].force = true;
            }
        }

        // 2. and 3. EDS, LDS, RDS, SDS.
        for ty in ResourceType::ALL[1..].iter().copied() {
            if self.types[ty as usize].subscribed {
                if !self.synced(ty, &snap) {
                    self.maybe_send(ty, &snap, None, tx).await?;
                }
                // Evaluated against `snap` (or equal content): follow it, so the old
                // snapshot can be freed.
                self.types[ty as usize].synced = Some(snap.clone());
            }
            self.types[ty as usize].force = false;
        }

        // 4. CDS, break phase.
        if cds_pending {
            self.maybe_send(cds, &snap, None, tx).await?;
            self.types[cds as usize].synced = Some(snap.clone());
            self.cds_base = Some(snap);
        } else if self.types[cds as usize].synced.is_some() {
            // Same clusters as the snapshot CDS was last evaluated against (which is
            // `cds_base` too): follow the new one so the old one can be freed.
            self.types[cds as usize].synced = Some(snap.clone());
            if self.cds_base.is_some() {
                self.cds_base = Some(snap);
            }
        }
        Ok(())
    }

    /// Sends the `ty` response if the type is subscribed and its content
    /// differs from the last response (or nothing was sent yet, or a resend is
    /// forced). `union` replaces the desired content (make-before-break CDS),
    /// and then carries its own content hash as version; otherwise the version
    /// is the snapshot's type version.
    async fn maybe_send(
        &mut self,
        ty: ResourceType,
        snap: &Arc<Snapshot>,
        union: Option<Vec<Arc<Resource>>>,
        tx: &Tx,
    ) -> Result<bool, Closed> {
        let t = &self.types[ty as usize];
        if !t.subscribed {
            return Ok(false);
        }
        let union = union.map(|u| {
            let content = list_version(ty, u.iter().map(|r| &**r));
            (u, content)
        });
        let content = match &union {
            Some((_, content)) => content.clone(),
            None => self.desired_content(ty, snap),
        };
        if !t.force && t.last.as_ref().is_some_and(|l| l.content == content) {
            return Ok(false);
        }
        let (resources, version) = match union {
            Some((u, content)) => (u, content),
            None => (self.desired(ty, snap), snap.version(ty).to_owned()),
        };
        let nonce = nonce(&mut self.nonce);
        let bytes: usize = resources.iter().map(|r| r.encoded_len()).sum();
        let response = DiscoveryResponse {
            version_info: version.clone(),
            resources: resources.iter().map(|r| r.any().clone()).collect(),
            type_url: ty.type_url().to_owned(),
            nonce: nonce.clone(),
            control_plane: control_plane(),
            ..Default::default()
        };
        tx.send(Ok(response)).await.map_err(|_| Closed)?;
        debug!(node = %Untrusted(self.node()), %ty, %version, %nonce, resources = resources.len(), bytes, "sent");
        self.status
            .sent(ty, &version, &nonce, resources.len(), 0, bytes);
        self.types[ty as usize].last = Some(Sent {
            nonce,
            version,
            content,
            at: Instant::now(),
            from: snap.clone(),
        });
        Ok(true)
    }
}
