//! The command line: one clap tree for every verb of the `meshplane` binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use meshplane_agent::{envoy, sidecar};
use meshplane_cli::{self as cli, proxy};
use meshplane_server::serve;

use crate::demo;

/// meshplane: a self-hosted service-mesh control plane that speaks the AWS App Mesh API
/// (2019-01-25) and drives Envoy proxies over xDS.
///
/// One binary for every role: the control plane (`serve`), the agent beside each Envoy
/// (`envoy bootstrap`, `envoy run`, `sidecar init`), the kubectl-style client (`apply`, `get`,
/// `proxy-status`, ...) and a local demo mesh (`demo`). The App Mesh API also works with
/// `aws appmesh --endpoint-url http://127.0.0.1:7080`.
#[derive(Debug, Parser)]
#[command(name = "meshplane", version, propagate_version = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

/// Every verb.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane: App Mesh REST API, xDS server and the embedded store.
    Serve(serve::ServeArgs),
    /// Generate an Envoy bootstrap for a virtual node or gateway, or run Envoy with it.
    #[command(subcommand)]
    Envoy(envoy::EnvoyCommand),
    /// Set up or remove transparent traffic interception (iptables) for a sidecar.
    #[command(subcommand)]
    Sidecar(sidecar::SidecarCommand),
    /// Show every connected Envoy and, per xDS type, whether it accepted what was sent.
    ProxyStatus(proxy::ProxyStatusArgs),
    /// Print the Envoy resources meshplane serves to a node (YAML or JSON).
    ProxyConfig(proxy::ProxyConfigArgs),
    /// Run a local demo mesh (colorapp) with real Envoys and a live traffic view.
    Demo(demo::DemoArgs),
    #[command(flatten)]
    Cli(cli::CliCommand),
}

impl Args {
    /// Runs the chosen command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Serve(a) => serve::run(a),
            Command::Envoy(c) => c.run(),
            Command::Sidecar(c) => c.run(),
            Command::Demo(a) => demo::run(a),
            Command::ProxyStatus(a) => proxy::status(a),
            Command::ProxyConfig(a) => proxy::config(a),
            Command::Cli(c) => c.run(),
        }
    }
}
