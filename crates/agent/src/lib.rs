//! What runs beside each Envoy: the bootstrap from App Mesh's image variables, the Envoy
//! supervisor (`envoy run`), Cloud Map registration of the local instance (`--register`),
//! iptables interception (`sidecar init/clean`) and the network-namespace hosts the demo and
//! tests run workloads in.
//!
//! ```text
//!   APPMESH_* vars / flags ─▶ envoy::bootstrap ─▶ envoy::run (Envoy child, restarts, drain)
//!                                                    └─ envoy::register ─HTTP─▶ control plane
//!   sidecar::rules ─▶ iptables (nat APPMESH_INGRESS / APPMESH_EGRESS)
//! ```
//!
//! **Architecture invariant:** the agent talks to the control plane only over the wire (REST,
//! ADS through Envoy). It never links the store, the REST server, the xDS server or the
//! translator, so the binary on every host stays small; `crates/meshplane/tests/layering.rs`
//! fails the build's tests if it does.
#![forbid(unsafe_code)]

pub mod envoy;
pub mod sidecar;
