//! `meshplane envoy bootstrap` and `meshplane envoy run` (being written).

use std::process::ExitCode;

use clap::Subcommand;

/// Envoy sidecar verbs.
#[derive(Debug, Subcommand)]
pub enum EnvoyCommand {}

impl EnvoyCommand {
    /// Runs the verb.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {}
    }
}
