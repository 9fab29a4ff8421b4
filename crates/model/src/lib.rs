//! The App Mesh resource model: the seven resource kinds, their specs, names, ARNs,
//! proxy identities and validation.
//!
//! ```text
//!  Mesh ─┬─ VirtualService ──provider──▶ VirtualRouter ─── Route ──targets──▶ VirtualNode
//!        │        ▲                       │                                      │
//!        │        └──────────────provider─┼──────────────────────────────────────┘
//!        │        ▲                                                               │
//!        │        └──────────────────── backends ─────────────────────────────────┘
//!        └─ VirtualGateway ─── GatewayRoute ──target──▶ VirtualService
//! ```
//!
//! This crate deliberately does no I/O and has no async: it is values and pure functions.
//! The spec types mirror the App Mesh 2019-01-25 JSON exactly (they derive serde) because
//! the declared spec *is* what users send and what App Mesh echoes back; envelopes,
//! metadata and errors of the wire protocol live in `meshplane-api`.
#![forbid(unsafe_code)]

#[macro_use]
mod macros;

pub mod arn;
pub mod common;
pub mod gateway_route;
pub mod mesh;
pub mod resource;
pub mod route;
pub mod validate;
pub mod virtual_gateway;
pub mod virtual_node;
pub mod virtual_router;
pub mod virtual_service;

pub use arn::{Arn, ArnError, NodeId, NodeIdError, ProxyKind};
pub use gateway_route::GatewayRouteSpec;
pub use mesh::MeshSpec;
pub use resource::{Metadata, Resource, ResourceId, ResourceKind, Spec, Status, Tag};
pub use route::RouteSpec;
pub use validate::{
    NODE_ID_NAME_FIELDS, Violation, Violations, validate_name, validate_spec, validate_tags,
};
pub use virtual_gateway::VirtualGatewaySpec;
pub use virtual_node::VirtualNodeSpec;
pub use virtual_router::VirtualRouterSpec;
pub use virtual_service::VirtualServiceSpec;
