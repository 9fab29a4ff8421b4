//! Wiring: the command line, `serve` (REST API + store + xDS + reconciler), the CLI verbs,
//! metrics and shutdown. The only crate that sees every other crate.
//!
//! ```text
//!   main() ─▶ Args::parse() ─┬─ serve  ─▶ store::SqliteStore ─▶ rest::router ─▶ axum (API port)
//!                            │                          └────▶ reconciler ─▶ xds (xDS port)
//!                            └─ apply/get/describe/delete/export ─▶ client ─▶ REST API
//! ```
#![forbid(unsafe_code)]

pub mod args;
pub mod cli;
pub mod demo;
pub mod envoy;
pub mod envoy_json;
pub mod observe;
pub mod proxy;
pub mod reconcile;
pub mod serve;
pub mod sidecar;

use std::process::ExitCode;

use clap::Parser;

/// Parses the command line, runs the command, and maps errors to an exit code.
pub fn main() -> ExitCode {
    let args = args::Args::parse();
    match args.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
