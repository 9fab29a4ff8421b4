//! The App Mesh REST API (2019-01-25): an axum router with thin handlers over
//! [`MeshService`], which enforces App Mesh's rules on the store.
//!
//! ```text
//!  HTTP ─▶ http::router (raw-path routing, parse) ─▶ MeshService ─▶ Store (txn + preconditions)
//!                      ▲ error table (meshplane-api) ◀── ApiError
//! ```
//!
//! Not here: authentication (SigV4 headers are accepted and ignored for now), metrics
//! exposition and `/healthz` (runtime), and anything about Envoy.
#![forbid(unsafe_code)]

pub mod config;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod service;

pub use config::{ApiConfig, Quotas};
pub use http::router;
pub use metrics::ApiMetrics;
pub use service::{MeshService, StatusExtension};
