//! The kubectl-style CLI verbs (`apply`, `get`, `describe`, `delete`, `export`,
//! `proxy-status` / `proxy-config`, `access-keys` and `node-tokens`): they read documents (see
//! `docs/cli.md`), talk to a running control plane through `meshplane-client`, and print one
//! line per resource.
//!
//! ```text
//!   apply -f ─▶ document::parse ─▶ plan::apply_order ─▶ describe ─▶ create | update | (unchanged)
//!   delete -f ─▶ document::parse ─▶ plan::delete_order ─▶ delete
//!   get / describe / export ─▶ list + describe ─▶ table | json | yaml | documents
//! ```
//!
//! **Architecture invariant:** the CLI never links the store or the server; it reaches the
//! control plane only over HTTP (`crates/meshplane/tests/layering.rs` checks it).
#![forbid(unsafe_code)]

pub mod access_keys;
mod apply;
pub mod document;
mod get;
pub mod node_tokens;
pub mod plan;
pub mod proxy;

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use meshplane_client::{Client, ClientError};
use meshplane_model::{ResourceId, ResourceKind};

/// The endpoint used when neither `--endpoint`, `MESHPLANE_ENDPOINT`, `AWS_ENDPOINT_URL`
/// nor the profile's `endpoint_url` is set (the default `serve --api-listen`).
pub const DEFAULT_ENDPOINT: &str = meshplane_client::config::DEFAULT_ENDPOINT;

/// CLI verbs that talk to a running control plane.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Create or update resources from documents (YAML or JSON), in dependency order.
    Apply(ApplyArgs),
    /// Show what `apply` would change, without changing anything (same as `apply --dry-run`).
    Diff(DiffArgs),
    /// List resources of a kind, or show one.
    Get(GetArgs),
    /// Print one resource in full (spec, metadata, status, tags) as YAML.
    Describe(DescribeArgs),
    /// Delete one resource, or every resource declared in documents (children first).
    Delete(DeleteArgs),
    /// Print every resource of a mesh as documents that `apply -f` accepts.
    Export(ExportArgs),
    /// Create, list, delete or rotate meshplane-issued access keys (SigV4 credentials with
    /// an IAM-style policy).
    AccessKeys(access_keys::AccessKeysArgs),
    /// Mint or revoke the node-bound tokens Envoys present on their xDS streams.
    NodeTokens(node_tokens::NodeTokensArgs),
}

/// Where the control plane's API is and how to sign for it: the AWS credential chain
/// (`AWS_ACCESS_KEY_ID`…, `AWS_PROFILE`, `~/.aws/credentials` and `~/.aws/config`), as the
/// AWS CLI reads it.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnectArgs {
    /// Base URL of the meshplane (App Mesh) API [default: AWS_ENDPOINT_URL, the profile's
    /// endpoint_url, else http://127.0.0.1:7080].
    #[arg(long, env = "MESHPLANE_ENDPOINT", global = true)]
    pub endpoint: Option<String>,
    /// The AWS profile whose credentials, region, endpoint_url and ca_bundle are used
    /// (overrides AWS_PROFILE and ignores AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY).
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// The region requests are signed for (must equal `serve --region`) [default:
    /// AWS_REGION, AWS_DEFAULT_REGION, the profile's region, else us-east-1].
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// PEM file of the CA trusted for an https endpoint (meshplane's own CA is
    /// `<data-dir>/ca.pem`) [default: AWS_CA_BUNDLE, the profile's ca_bundle].
    #[arg(long, env = "MESHPLANE_CA_BUNDLE", global = true)]
    pub ca_bundle: Option<std::path::PathBuf>,
}

// === impl ConnectArgs ===

impl ConnectArgs {
    /// The client settings: these flags over the environment and the AWS files.
    pub fn settings(&self) -> anyhow::Result<meshplane_client::Settings> {
        let overrides = meshplane_client::Overrides {
            endpoint: self.endpoint.clone(),
            profile: self.profile.clone(),
            region: self.region.clone(),
            ca_bundle: self.ca_bundle.clone(),
        };
        Ok(meshplane_client::Settings::from_env(&overrides)?)
    }

    /// A client signing with the resolved credentials (unsigned when there are none).
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::from_settings(&self.settings()?)?)
    }
}

/// `apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A file, a directory (every *.yaml, *.yml and *.json in it, by name), or `-` for stdin.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR|-"
    )]
    pub files: Vec<String>,
    /// Print what would change (with a diff of each changed spec), change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// A file, a directory, or `-` for stdin.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR|-"
    )]
    pub files: Vec<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GetFormat {
    /// Aligned columns.
    Table,
    /// The resources as the API returns them (a JSON array when listing).
    Json,
    /// The same as YAML.
    Yaml,
}

/// Output formats of `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DocFormat {
    /// A YAML stream, `---` between documents.
    Yaml,
    /// A JSON array of documents.
    Json,
}

/// Which resource(s) a verb addresses.
#[derive(Debug, Args)]
pub struct Selector {
    /// The mesh (not needed for meshes themselves).
    #[arg(long, short = 'm')]
    pub mesh: Option<String>,
    /// The virtual router of a route (`get routes` without it lists the routes of every router).
    #[arg(long, short = 'r')]
    pub router: Option<String>,
    /// The virtual gateway of a gateway route (`get gatewayroutes` without it lists all).
    #[arg(long, short = 'g')]
    pub gateway: Option<String>,
}

/// `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Kind: mesh, virtualnode (vn), virtualservice (vs), virtualrouter (vr), route,
    /// virtualgateway (vg), gatewayroute (gr); singular or plural.
    pub kind: String,
    /// One resource; all of the kind when absent.
    pub name: Option<String>,
    #[command(flatten)]
    pub selector: Selector,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = GetFormat::Table)]
    pub output: GetFormat,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Kind (as for `get`).
    pub kind: String,
    /// Name of the resource.
    pub name: String,
    #[command(flatten)]
    pub selector: Selector,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kind (as for `get`); not with `-f`.
    #[arg(required_unless_present = "files", conflicts_with = "files")]
    pub kind: Option<String>,
    /// Name of the resource.
    #[arg(required_unless_present = "files")]
    pub name: Option<String>,
    /// Delete what these documents declare, in reverse dependency order.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub files: Vec<String>,
    /// Treat resources that do not exist as deleted instead of failing.
    #[arg(long)]
    pub ignore_not_found: bool,
    #[command(flatten)]
    pub selector: Selector,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The mesh to export.
    #[arg(long, short = 'm')]
    pub mesh: String,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = DocFormat::Yaml)]
    pub output: DocFormat,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

// === impl CliCommand ===

impl CliCommand {
    /// Runs the verb on a single-threaded tokio runtime (one request at a time is plenty
    /// for a CLI and keeps output in document order).
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        rt.block_on(self.run_async())
    }

    async fn run_async(self) -> anyhow::Result<ExitCode> {
        match self {
            CliCommand::Apply(a) => apply::apply(&client(&a.connect)?, &a.files, a.dry_run).await,
            CliCommand::Diff(a) => apply::apply(&client(&a.connect)?, &a.files, true).await,
            CliCommand::Get(a) => get::get(&client(&a.connect)?, &a).await,
            CliCommand::Describe(a) => get::describe(&client(&a.connect)?, &a).await,
            CliCommand::Delete(a) => apply::delete(&client(&a.connect)?, &a).await,
            CliCommand::Export(a) => get::export(&client(&a.connect)?, &a.mesh, a.output).await,
            CliCommand::AccessKeys(a) => access_keys::run(a).await,
            CliCommand::NodeTokens(a) => node_tokens::run(a).await,
        }
    }
}

fn client(c: &ConnectArgs) -> anyhow::Result<Client> {
    c.client()
}

/// Parses a kind as typed on the command line.
pub fn parse_kind(s: &str) -> anyhow::Result<ResourceKind> {
    document::kind_from_str(s).with_context(|| {
        format!(
            "unknown kind `{s}`; expected one of mesh, virtualnode (vn), virtualservice (vs), \
             virtualrouter (vr), route, virtualgateway (vg), gatewayroute (gr)"
        )
    })
}

/// The id named by `kind name` and the `--mesh/--router/--gateway` flags.
pub fn resolve_id(kind: ResourceKind, name: &str, sel: &Selector) -> anyhow::Result<ResourceId> {
    if kind == ResourceKind::Mesh {
        return Ok(ResourceId::mesh(name));
    }
    let mesh = sel
        .mesh
        .as_deref()
        .context("--mesh is required for this kind")?;
    Ok(match kind {
        ResourceKind::Route => {
            let r = sel
                .router
                .as_deref()
                .context("--router is required for routes")?;
            ResourceId::grandchild(kind, mesh, r, name)
        }
        ResourceKind::GatewayRoute => {
            let g = sel
                .gateway
                .as_deref()
                .context("--gateway is required for gateway routes")?;
            ResourceId::grandchild(kind, mesh, g, name)
        }
        _ => {
            if sel.router.is_some() || sel.gateway.is_some() {
                bail!("--router and --gateway only apply to routes and gateway routes");
            }
            ResourceId::child(kind, mesh, name)
        }
    })
}

/// Formats a failed operation on `subject` the way a user wants to read it:
///
/// ```text
/// error: virtualnode/red: BadRequestException: spec.listeners[0].portMapping.port: must be between 1 and 65535, got 0
/// error: virtualnode/red: BadRequestException:
///   spec.listeners[0].portMapping.port: must be between 1 and 65535, got 0
///   spec.serviceDiscovery.dns.hostname: required member is missing
/// ```
pub fn format_error(subject: &str, e: &ClientError) -> String {
    match e.api() {
        Some(api) => {
            let exc = api.code.exception_name();
            let items = violation_items(&api.message);
            if items.len() > 1 {
                let mut s = format!("error: {subject}: {exc}:");
                for item in items {
                    s.push_str("\n  ");
                    s.push_str(item);
                }
                s
            } else {
                format!("error: {subject}: {exc}: {}", api.message)
            }
        }
        None => format!("error: {subject}: {}", error_chain(e)),
    }
}

/// Splits `path: reason; path: reason` into its items; a message that is not such a list
/// comes back as one item.
fn violation_items(message: &str) -> Vec<&str> {
    let parts: Vec<&str> = message.split("; ").collect();
    let looks_like_item = |p: &&str| {
        p.split_once(": ")
            .is_some_and(|(path, _)| !path.is_empty() && !path.contains(char::is_whitespace))
    };
    if parts.len() > 1 && parts.iter().all(looks_like_item) {
        parts
    } else {
        vec![message]
    }
}

/// `error: cause: cause...`, like anyhow's `{:#}`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use meshplane_api::ApiError;

    use super::*;

    fn api(code: meshplane_api::ErrorCode, m: &str) -> ClientError {
        ClientError::Api {
            status: code.http_status(),
            error: ApiError::new(code, m),
        }
    }

    #[test]
    fn server_errors_print_one_violation_per_line() {
        use meshplane_api::ErrorCode::*;
        let one = api(
            BadRequest,
            "spec.listeners[0].portMapping.port: must be between 1 and 65535, got 0",
        );
        assert_eq!(
            format_error("virtualnode/red", &one),
            "error: virtualnode/red: BadRequestException: spec.listeners[0].portMapping.port: must be between 1 and 65535, got 0"
        );
        let two = api(BadRequest, "spec.a: bad; spec.b[1]: worse; too");
        assert_eq!(
            format_error("x", &two),
            "error: x: BadRequestException: spec.a: bad; spec.b[1]: worse; too",
            "not every part is `path: reason`, so one line"
        );
        let two = api(BadRequest, "spec.a: bad; spec.b[1]: worse, really");
        assert_eq!(
            format_error("x", &two),
            "error: x: BadRequestException:\n  spec.a: bad\n  spec.b[1]: worse, really"
        );
        let prose = api(
            ResourceInUse,
            "Virtual router r has routes; delete them first: r1",
        );
        assert_eq!(format_error("x", &prose).lines().count(), 1);
    }

    #[tokio::test]
    async fn transport_errors_print_their_cause() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = client.describe(&ResourceId::mesh("m")).await.unwrap_err();
        let s = format_error("mesh/m", &e);
        assert!(
            s.starts_with("error: mesh/m: cannot reach the API: "),
            "{s}"
        );
        assert!(s.to_lowercase().contains("refused"), "{s}");
    }

    #[test]
    fn ids_need_the_right_flags() {
        let sel = |m: Option<&str>, r: Option<&str>| Selector {
            mesh: m.map(str::to_owned),
            router: r.map(str::to_owned),
            gateway: None,
        };
        assert_eq!(
            resolve_id(ResourceKind::Mesh, "m", &sel(None, None)).unwrap(),
            ResourceId::mesh("m")
        );
        assert!(resolve_id(ResourceKind::VirtualNode, "n", &sel(None, None)).is_err());
        assert!(resolve_id(ResourceKind::Route, "rt", &sel(Some("m"), None)).is_err());
        assert_eq!(
            resolve_id(ResourceKind::Route, "rt", &sel(Some("m"), Some("r"))).unwrap(),
            ResourceId::grandchild(ResourceKind::Route, "m", "r", "rt")
        );
        assert!(resolve_id(ResourceKind::VirtualNode, "n", &sel(Some("m"), Some("r"))).is_err());
        assert!(parse_kind("bogus").is_err());
        let kinds: Vec<ResourceKind> = [
            "meshes",
            "virtualnodes",
            "vs",
            "VR",
            "routes",
            "virtual-gateway",
            "gr",
        ]
        .iter()
        .map(|k| parse_kind(k).unwrap())
        .collect();
        use ResourceKind::*;
        assert_eq!(
            kinds,
            [
                Mesh,
                VirtualNode,
                VirtualService,
                VirtualRouter,
                Route,
                VirtualGateway,
                GatewayRoute
            ]
        );
    }
}
