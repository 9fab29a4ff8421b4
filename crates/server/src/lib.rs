//! The control plane: `meshplane serve` and everything only it runs.
//!
//! ```text
//!   serve ─▶ store::SqliteStore ─▶ rest::router + discovery::router ─▶ listener (API port)
//!                    │ watch
//!                    └────────▶ reconcile::Reconciler ─▶ translate ─▶ xds::SnapshotCache ─▶ ADS (xDS port)
//!   xds events ─▶ observe (metrics, proxy status, DescribeVirtualNode status)
//! ```
//!
//! It does not contain the sidecar agent (`meshplane-agent`) or the CLI verbs
//! (`meshplane-cli`); those talk to it only over the wire.
#![forbid(unsafe_code)]

pub mod auth;
pub mod ca;
pub mod data_dir;
pub mod envoy_json;
pub mod listener;
pub mod observe;
pub mod reconcile;
pub mod serve;
pub mod tls;
