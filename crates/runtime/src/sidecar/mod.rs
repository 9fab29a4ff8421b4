//! `meshplane sidecar init` / `sidecar clean`: transparent interception (being written).

use std::process::ExitCode;

use clap::Subcommand;

/// Traffic interception verbs.
#[derive(Debug, Subcommand)]
pub enum SidecarCommand {}

impl SidecarCommand {
    /// Runs the verb.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {}
    }
}
