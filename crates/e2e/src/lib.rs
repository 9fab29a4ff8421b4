//! The end-to-end proof suite lives in `tests/`; this library is intentionally empty.
//!
//! Every test starts its own control plane (the `meshplane` binary), backends and real
//! Envoys through `meshplane-testkit`, on loopback only. Run with
//! `cargo test -p meshplane-e2e` (the harness builds the binary into the same target
//! directory first) or `cargo xtask test` (which also installs Envoy and sets
//! `MESHPLANE_ENVOY`).
#![forbid(unsafe_code)]
