//! `meshplane node-tokens create | revoke`: the node-bound tokens an Envoy presents on its
//! ADS stream.
//!
//! `envoy run` mints and renews its own token, so these verbs are for the operator: `revoke`
//! is the answer to a leaked token or a decommissioned proxy (the server closes the token's
//! live streams at once and refuses it from then on), `create` mints one by hand to inspect
//! or to hand to an Envoy started some other way (`envoy token --out` writes it as the SDS
//! file the bootstrap reads). The token id to revoke is the TOKEN column of `proxy-status`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use meshplane_client::TokenNode;
use serde_json::Value;

use crate::ConnectArgs;
use crate::access_keys::utc;

/// `node-tokens`.
#[derive(Debug, Args)]
pub struct NodeTokensArgs {
    #[command(subcommand)]
    pub command: NodeTokensCommand,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The node-token verbs.
#[derive(Debug, Subcommand)]
pub enum NodeTokensCommand {
    /// Mint a token for one virtual node's or gateway's Envoy (needs
    /// appmesh:StreamAggregatedResources on its ARN); prints its id, expiry and the token.
    Create(CreateArgs),
    /// Revoke a token: its live xDS streams end now (Envoy keeps its last configuration) and
    /// every reconnect with it is refused. The id is proxy-status's TOKEN column.
    Revoke {
        /// The token id (`tokenId`).
        token_id: String,
    },
}

/// `node-tokens create`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("proxy").required(true).args(["virtual_node", "virtual_gateway"])))]
pub struct CreateArgs {
    /// The mesh.
    #[arg(long, short = 'm')]
    pub mesh: String,
    /// The virtual node whose Envoy the token is for.
    #[arg(long)]
    pub virtual_node: Option<String>,
    /// The virtual gateway whose Envoy the token is for.
    #[arg(long)]
    pub virtual_gateway: Option<String>,
    /// The mesh owner's account, for a mesh shared from another account.
    #[arg(long)]
    pub mesh_owner: Option<String>,
    /// Lifetime (e.g. 30m, 24h); at most, and by default, the server's --node-token-ttl.
    #[arg(long, value_parser = meshplane_client::config::parse_duration)]
    pub ttl: Option<Duration>,
    /// Output: labelled lines, or the server's JSON answer.
    #[arg(short = 'o', long, value_enum, default_value_t = TokenOutput::Text)]
    pub output: TokenOutput,
}

/// Output of `create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenOutput {
    /// `token_id:`, `node:`, `expires_at:` and `token:` lines.
    Text,
    /// The JSON answer.
    Json,
}

/// Runs a node-token verb.
pub async fn run(args: NodeTokensArgs) -> anyhow::Result<ExitCode> {
    let client = args.connect.client()?;
    match args.command {
        NodeTokensCommand::Create(c) => {
            let node = match (c.virtual_node, c.virtual_gateway) {
                (Some(n), None) => TokenNode::VirtualNode(n),
                (None, Some(g)) => TokenNode::VirtualGateway(g),
                _ => bail!("pass exactly one of --virtual-node and --virtual-gateway"),
            };
            if c.ttl.is_some_and(|t| t.as_secs() == 0) {
                bail!("--ttl must be at least 1s");
            }
            let answer = client
                .mint_node_token(
                    &c.mesh,
                    &node,
                    c.mesh_owner.as_deref(),
                    c.ttl.map(|t| t.as_secs()),
                )
                .await?;
            match c.output {
                TokenOutput::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
                TokenOutput::Text => print!("{}", token_text(&answer)),
            }
        }
        NodeTokensCommand::Revoke { token_id } => {
            client.revoke_node_token(&token_id).await?;
            println!("revoked node token {token_id}; its xDS streams are closed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `create` prints: one `label: value` line each, the token last (it is long, and a
/// script takes it with `awk '/^token:/ {print $2}'`).
pub fn token_text(answer: &Value) -> String {
    let s = |k: &str| answer[k].as_str().unwrap_or("?").to_owned();
    let expires = answer["expiresAt"]
        .as_f64()
        .map(|e| format!("{} ({})", utc(e as i64), e as i64))
        .unwrap_or_else(|| "?".to_owned());
    format!(
        "token_id:   {}\nnode:       {}\nexpires_at: {expires}\ntoken:      {}\n",
        s("tokenId"),
        s("node"),
        s("token")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_id_node_expiry_and_token() {
        let answer = serde_json::json!({
            "token": "mpt1.a.b", "tokenId": "T1", "node": "mesh/m/virtualNode/n",
            "expiresAt": 1_796_554_800,
        });
        assert_eq!(
            token_text(&answer),
            "token_id:   T1\nnode:       mesh/m/virtualNode/n\n\
             expires_at: 2026-12-06T11:00:00Z (1796554800)\ntoken:      mpt1.a.b\n"
        );
    }
}
