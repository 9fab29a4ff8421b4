//! The endpoint registry: an AWS Cloud Map-compatible API (`servicediscovery` 2017-03-14,
//! AWS JSON 1.1) over the shared [`Store`](meshplane_store::Store), and the endpoint
//! snapshot the reconciler hands to the translator for EDS.
//!
//! ```text
//!  aws servicediscovery / boto3 ─▶ http::router (POST /, X-Amz-Target) ─▶ Registry ─▶ Store
//!                                                                            │ cloudmap/…
//!   namespace (HTTP) 1──* service 1──* instance {attributes, health, lease}  │
//!                                                                            ▼ watch
//!                       runtime reconciler ─▶ EndpointIndex ─▶ Endpoints ─▶ translate (EDS)
//!   Registry::run_sweeper: deregisters instances whose MESHPLANE_INSTANCE_TTL lease ran out
//! ```
//!
//! Operations are synchronous underneath: the ones Cloud Map makes asynchronous return an
//! `OperationId` whose GetOperation is already `SUCCESS`.
//! `InstancesRevision` is the store revision of the service's last membership change
//! (register with new attributes, deregister, lease expiry), never of a health change.
//!
//! Not here: DNS namespaces and Route 53 health checks, tags operations, UpdateService,
//! service attributes, ListOperations, RPCv2-CBOR, SigV4 verification, and anything about
//! Envoy.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod endpoints;
pub mod error;
pub mod http;
pub mod keys;
pub mod registry;

pub use endpoints::EndpointIndex;
pub use error::{CloudMapError, ErrorCode};
pub use registry::{OPERATIONS, Registry, RegistryConfig, TTL_ATTRIBUTE};
