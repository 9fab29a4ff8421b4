//! meshplane's xDS edge: an ADS gRPC server (state-of-the-world and delta on
//! one port) that streams per-node [`Snapshot`]s to Envoy.
//!
//! It does NOT know App Mesh's REST API, the store or the translator: it is
//! generic over [`SnapshotSource`], and the runtime's reconciler feeds it by
//! calling [`SnapshotCache::set`] with the translator's output.
//!
//! ```text
//!  reconciler ──set(NodeKey, Arc<Snapshot>)──▶ SnapshotCache (SnapshotSource)
//!                                                  │ watch::Receiver per stream
//!                                                  ▼
//!  Envoy ◀──ADS (SotW | delta)──▶ XdsServer ── one task per stream
//!                                                  │
//!                 status() / subscribe_events() ◀──┘ ProxyStatus, XdsEvent (ACK/NACK)
//! ```
//!
//! Wiring:
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use meshplane_xds::{NodeKey, Snapshot, SnapshotCache, XdsEvent, XdsServer};
//!
//! let cache = SnapshotCache::new();
//! let server = XdsServer::new(Arc::new(cache.clone()));
//! let mut events = server.subscribe_events();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! tokio::spawn({ let s = server.clone(); async move { s.serve(listener, std::future::pending()).await } });
//!
//! // The reconciler, after translating virtual node `front` of mesh `demo`:
//! let snap = Snapshot::builder() /* .add_cluster(..).add_listener(..) */ .build().map_err(|e| format!("{e:?}"))?;
//! cache.set(NodeKey::parse("mesh/demo/virtualNode/front")?, Arc::new(snap));
//!
//! // The runtime, for metrics and resource status:
//! while let Ok(ev) = events.recv().await {
//!     if let XdsEvent::Nacked { stream, ty, nack, .. } = ev {
//!         eprintln!("{} rejected {ty}: {}", stream.node_id, nack.message);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Protocol behaviour (details in the `sotw` and `delta` module docs):
//! - **Ordering**: per stream, CDS → EDS → LDS → RDS → SDS; in SotW a CDS that
//!   adds and removes clusters is sent first as the union (new plus
//!   about-to-be-removed, with its own version), and the exact set after RDS;
//!   in delta, cluster removals are a separate CDS response after RDS.
//! - **Warming**: after a CDS response with new or changed EDS clusters their
//!   assignments are re-sent even if unchanged. EDS names the snapshot lacks
//!   are answered with an empty assignment; RDS/SDS names are remembered and
//!   sent when they appear.
//! - **ACK/NACK**: detected by nonce and `error_detail`. A NACK is recorded
//!   ([`TypeStatus::last_nack`], [`XdsEvent::Nacked`]), the acked version
//!   stays at the last good one, and the rejected content is not re-sent until
//!   the snapshot of that type (or, for named types, the subscription)
//!   changes. Delta commits "proxy holds version V" only on ACK.
//! - **Versions**: SotW `version_info` and delta `system_version_info` are
//!   [`Snapshot::version`] of the type; delta per-resource versions are
//!   [`Resource::version`]. All are content hashes.
//! - **Stale nonces**: SotW ignores them; delta still applies their
//!   subscription changes. The node is read from the first request only.
//! - **Unknown nodes** wait with an open stream; a removed node's proxies keep
//!   their last config.
//! - **Limits** ([`MAX_NODE_ID_LEN`], [`MAX_NAMES_PER_TYPE`], ...): past one, the
//!   stream ends with `INVALID_ARGUMENT` naming it; so does a request that does not
//!   decode. NACK text is kept bounded and logged once per node per
//!   [`NACK_LOG_INTERVAL`]; client strings are logged through [`Untrusted`].
//!   [`XdsServerConfig::max_connections`] caps the connections of [`XdsServer::serve`].
//!
//! Architecture invariants:
//! - One task per stream and one writer per stream: responses leave in the
//!   order CDS → EDS → LDS → RDS → SDS, cluster removals last.
//! - A NACKed version is never re-sent until the snapshot (or, for named types,
//!   the subscription) changes; the proxy's status keeps its last good version.
//! - Resources are encoded once, when the snapshot is built, and shared by
//!   every stream of the node; versions are content hashes.

#![forbid(unsafe_code)]

mod auth;
mod cache;
mod conn;
mod delta;
mod limits;
mod resource;
mod server;
mod snapshot;
mod sotw;
mod status;
mod stream;
#[cfg(feature = "test-util")]
pub mod testing;

pub use auth::{StreamAuthenticator, StreamIdentity};
pub use cache::{NodeKey, SnapshotCache, SnapshotSource, SnapshotWatch, WatchError};
pub use limits::{
    LogLimiter, MAX_LOGGED_LEN, MAX_NACK_MESSAGE_LEN, MAX_NAMES_PER_TYPE, MAX_NODE_ID_LEN,
    MAX_RESOURCE_NAME_LEN, MAX_VERSION_LEN, NACK_LOG_INTERVAL, TRUNCATED_MARKER, Untrusted,
    truncate,
};
pub use resource::{
    CLUSTER_TYPE_URL, ENDPOINT_TYPE_URL, LISTENER_TYPE_URL, ROUTE_TYPE_URL, Resource, ResourceType,
    SECRET_TYPE_URL,
};
pub use server::{AdsService, XdsServer, XdsServerConfig};
pub use snapshot::{Snapshot, SnapshotBuilder, SnapshotError, TypeResources};
pub use status::{
    Nack, ProxyStatus, StatusRegistry, StreamInfo, TypeStatus, XdsEvent, XdsEventObserver,
    XdsFlavor,
};

/// Re-export of the Envoy protobuf crate this API is expressed in.
pub use envoy_types;
