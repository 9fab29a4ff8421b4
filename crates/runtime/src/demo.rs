//! `meshplane demo`: a local colorapp mesh with real Envoys (being written).

use std::process::ExitCode;

/// Flags of `meshplane demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let _ = args;
    anyhow::bail!("the demo is not built yet")
}
