//! `meshplane envoy bootstrap` (print an Envoy bootstrap for a virtual node or gateway) and
//! `meshplane envoy run` (supervise Envoy with it).

pub mod bootstrap;
pub mod env;
pub mod register;
pub mod run;
pub mod token;

use std::process::ExitCode;

use clap::Subcommand;

use bootstrap::{BootstrapArgs, BootstrapConfig};

/// Envoy sidecar verbs.
#[derive(Debug, Subcommand)]
pub enum EnvoyCommand {
    /// Print an Envoy bootstrap (YAML) for a virtual node or virtual gateway.
    ///
    /// Flags override the App Mesh image variables (APPMESH_RESOURCE_ARN,
    /// APPMESH_XDS_ENDPOINT, ENVOY_ADMIN_ACCESS_PORT, ENABLE_ENVOY_STATS_TAGS, ...).
    Bootstrap(BootstrapArgs),
    /// Run Envoy with that bootstrap: restart it with backoff if it crashes, forward signals,
    /// drain listeners on SIGTERM.
    Run(Box<run::RunArgs>),
    /// Mint a node token through the API (SigV4, AWS credential chain) and write it as the
    /// SDS token file that `envoy bootstrap --token-file` points Envoy at (run it from cron
    /// to renew; Envoy picks up the new file without a restart).
    Token(Box<token::TokenArgs>),
}

impl EnvoyCommand {
    /// Runs the verb.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            EnvoyCommand::Bootstrap(args) => {
                let cfg = BootstrapConfig::resolve(&args, &env::ProcessEnv)?;
                print!("{}", bootstrap::render(&cfg));
                Ok(ExitCode::SUCCESS)
            }
            EnvoyCommand::Run(args) => run::run(*args, &env::ProcessEnv),
            EnvoyCommand::Token(args) => token::token_command(*args, &env::ProcessEnv),
        }
    }
}
