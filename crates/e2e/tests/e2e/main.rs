//! End-to-end proof of the xDS issue (#3) through the whole stack: App Mesh REST API →
//! store → reconciler → translator → ADS → real Envoy 1.40 → real backends.
//!
//! Every test starts its own `meshplane serve`, backends and Envoys on loopback. Clients
//! use explicit mode: the client virtual node is tagged `meshplane.io/listen-address` with
//! a loopback IP of its own, its Envoy's egress listener binds that IP on every backend
//! port, and requests go to `http://<virtual service>:<port>/` resolved to that IP.
//! Backend virtual nodes use DNS discovery `127.0.0.1` with the backend's port as their
//! listener port, so the client Envoy's clusters reach the backends directly.
//!
//! One test binary (tests share the process; loopback IPs and ports never collide). The
//! harness builds the `meshplane` binary into the same target directory before the first
//! control plane starts.

mod common;
mod flavors;
mod grpc_tcp;
mod late_node;
mod live_update;
mod matching;
mod nack;
mod port_match;
mod retry_timeout;
mod weighted;
