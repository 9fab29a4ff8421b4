//! The `meshplane` binary's command line: one clap tree over the three roles, each in its own
//! crate with its own arguments, plus the demo that runs them together.
//!
//! ```text
//!   main() ─▶ Args::parse() ─┬─ serve                      ─▶ meshplane-server
//!                            ├─ envoy bootstrap|run, sidecar ─▶ meshplane-agent
//!                            ├─ apply/get/.../proxy-status  ─▶ meshplane-cli ─▶ REST API
//!                            └─ demo (serve + agents + cli, as child processes)
//! ```
#![forbid(unsafe_code)]

pub mod args;
pub mod demo;

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
