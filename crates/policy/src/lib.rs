//! IAM-style policies for meshplane's access keys: the JSON App Mesh users already write.
//!
//! ```text
//!   policy JSON --Policy::parse--> Policy { Statement[] }      (every problem, with its path)
//!   API call ----operation::*----> (action, resource ARN)     (appmesh:CreateRoute, arn:…:route/…)
//!   evaluate(&[Policy], action, resource) -> Allow | ExplicitDeny { statement } | ImplicitDeny
//! ```
//!
//! Actions match case-insensitively with `*` and `?`; resources are ARNs matched
//! case-sensitively, wildcards spanning `/` and `:` in the resource part. An explicit Deny
//! in any policy wins, then any Allow, else the request is implicitly denied.
//!
//! This crate does NOT authenticate anyone (SigV4 is elsewhere), store keys, or log: it
//! is pure (no I/O, no async, no clocks). `Condition`, `Principal` and policy variables
//! are refused at parse time rather than ignored, since ignoring them could widen access.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod document;
mod evaluate;
pub mod operation;
mod pattern;

pub use document::{Effect, Patterns, Policy, PolicyError, Problem, SERVICES, Statement, Version};
pub use evaluate::{
    Decision, StatementRef, action_matches, evaluate, evaluate_all, resource_matches,
};
pub use pattern::{glob, glob_ignore_case};
