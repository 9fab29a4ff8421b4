//! App Mesh 2019-01-25 wire shapes (rest-json): resource envelopes (`XData`, `XRef`),
//! request bodies, list outputs, and the one table that maps error codes to HTTP status
//! and exception names.
//!
//! ```text
//!   JSON body ──parse_*──▶ typed input (model::Spec, tags, clientToken) ──▶ rest service
//!   model::Resource ──ResourceData::to_json──▶ unwrapped response body (`MeshData`...)
//! ```
//!
//! Pure: no I/O, no async. The server (`meshplane-rest`) and the client
//! (`meshplane-client`) both use these shapes, so they cannot drift apart.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod wire;

pub use error::{ApiError, ErrorCode};
pub use wire::{
    CreateInput, ListOutput, ResourceData, ResourceMetadata, ResourceRef, UpdateInput, list_key,
    name_fields, parse_create, parse_spec, parse_tags, parse_update, spec_to_json,
};
