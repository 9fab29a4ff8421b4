//! Node tokens for authenticated xDS: minting one through the API (`POST
//! /meshplane/v1/node-tokens`, SigV4-signed with the AWS credential chain), writing it as the
//! SDS file the bootstrap's credential injector reads, and renewing it while Envoy runs.
//!
//! ```text
//!   credentials ──SigV4──▶ POST /meshplane/v1/node-tokens ──▶ {"token": "mpt1…", "expiresAt"}
//!        token file (SDS YAML, replaced by rename) ──▶ Envoy ──authorization: Bearer mpt1…──▶ xDS
//! ```
//!
//! Envoy watches the file and uses the new value on its next xDS (re)connect, so renewal
//! never restarts Envoy; a live stream keeps the token it was opened with until the server
//! ends it (expiry or revocation), and Envoy reconnects with the current file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use meshplane_client::{Client, Overrides, Settings, TokenNode};
use meshplane_model::{NodeId, ProxyKind};

use super::bootstrap::TOKEN_SECRET_NAME;
use super::env::Strings;

/// First retry delay after a failed mint; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Cap on the retry delay: a control plane back from an outage is tried at least each minute.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// How many attempts the first mint of `envoy run` gets (about 30 s) before giving up:
/// without a token Envoy would only be refused.
pub(crate) const FIRST_MINT_ATTEMPTS: u32 = 6;

/// Where the API is and whose credentials sign for it (the AWS chain, as the CLI reads it).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ApiArgs {
    /// The meshplane API [env: MESHPLANE_ENDPOINT; else AWS_ENDPOINT_URL, the profile's
    /// endpoint_url, http://127.0.0.1:7080].
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The AWS profile to sign with (else AWS_PROFILE, the environment's keys, `default`).
    #[arg(long)]
    pub profile: Option<String>,
    /// The region to sign for (must equal `serve --region`).
    #[arg(long)]
    pub region: Option<String>,
}

/// `meshplane envoy token`.
#[derive(Clone, Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("proxy").required(true).args(["virtual_node", "virtual_gateway"])))]
pub struct TokenArgs {
    /// The mesh.
    #[arg(long)]
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
    /// Token lifetime (e.g. 30m, 24h); at most the server's --node-token-ttl, which is also
    /// the default.
    #[arg(long, value_parser = meshplane_client::config::parse_duration)]
    pub ttl: Option<Duration>,
    /// Where to write the SDS token file (replaced atomically).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// PEM CA bundle trusted for an https API. [env: MESHPLANE_CA_BUNDLE, AWS_CA_BUNDLE]
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// A minted token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Minted {
    /// `mpt1.…`, without `Bearer `.
    pub token: String,
    pub token_id: String,
    pub expires_at: SystemTime,
}

/// Mints tokens for one proxy.
#[derive(Clone, Debug)]
pub struct Minter {
    client: Client,
    mesh: String,
    node: TokenNode,
    mesh_owner: Option<String>,
    ttl: Option<Duration>,
}

// === impl ApiArgs ===

impl ApiArgs {
    /// The client settings: flags, then `env` (MESHPLANE_ENDPOINT, MESHPLANE_CA_BUNDLE and
    /// the AWS variables), then the AWS files.
    pub fn settings(
        &self,
        ca_bundle: Option<&Path>,
        env: &dyn Strings,
    ) -> anyhow::Result<Settings> {
        let overrides = Overrides {
            endpoint: self
                .endpoint
                .clone()
                .or_else(|| env.get("MESHPLANE_ENDPOINT")),
            profile: self.profile.clone(),
            region: self.region.clone(),
            ca_bundle: ca_bundle
                .map(Path::to_path_buf)
                .or_else(|| env.get("MESHPLANE_CA_BUNDLE").map(PathBuf::from)),
        };
        Ok(Settings::resolve(&overrides, &|name| env.get(name))?)
    }
}

// === impl Minter ===

impl Minter {
    /// A minter for `node` through the API described by `settings`.
    pub fn new(settings: &Settings, node: &NodeId, ttl: Option<Duration>) -> anyhow::Result<Self> {
        let client = Client::from_settings(settings)?;
        let proxy = match node.kind {
            ProxyKind::VirtualNode => TokenNode::VirtualNode(node.name.clone()),
            ProxyKind::VirtualGateway => TokenNode::VirtualGateway(node.name.clone()),
        };
        Ok(Minter {
            client,
            mesh: node.mesh.clone(),
            node: proxy,
            mesh_owner: node.owner.clone(),
            ttl,
        })
    }

    /// Whether requests are signed (no credentials found means they are not, and a server
    /// with auth on refuses them).
    pub fn is_signed(&self) -> bool {
        self.client.is_signed()
    }

    /// Mints one token.
    pub async fn mint(&self) -> anyhow::Result<Minted> {
        let answer = self
            .client
            .mint_node_token(
                &self.mesh,
                &self.node,
                self.mesh_owner.as_deref(),
                self.ttl.map(|t| t.as_secs()),
            )
            .await
            .with_context(|| format!("minting a node token at {}", self.client.endpoint()))?;
        let token = answer["token"]
            .as_str()
            .context("the node-token answer has no token")?;
        let expires = answer["expiresAt"]
            .as_f64()
            .filter(|e| *e > 0.0)
            .context("the node-token answer has no expiresAt")?;
        Ok(Minted {
            token: token.strip_prefix("Bearer ").unwrap_or(token).to_owned(),
            token_id: answer["tokenId"].as_str().unwrap_or_default().to_owned(),
            expires_at: UNIX_EPOCH + Duration::from_secs(expires as u64),
        })
    }

    /// Mints until it works, waiting [`FIRST_RETRY`] doubling to [`MAX_RETRY`] between
    /// attempts; gives up after `attempts` (`None`: never).
    pub async fn mint_with_retry(&self, attempts: Option<u32>) -> anyhow::Result<Minted> {
        let mut delay = FIRST_RETRY;
        let mut tried = 0u32;
        loop {
            match self.mint().await {
                Ok(m) => return Ok(m),
                Err(e) => {
                    tried += 1;
                    if attempts.is_some_and(|n| tried >= n) {
                        return Err(e);
                    }
                    eprintln!(
                        "meshplane: node token request failed (attempt {tried}), retrying in {delay:?}: {e:#}"
                    );
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY);
        }
    }
}

/// The SDS file for `token`: one `generic_secret` named [`TOKEN_SECRET_NAME`] whose value is
/// the whole `authorization` header value.
pub fn sds_yaml(token: &str) -> String {
    // A token is base64url and dots; quoting as JSON keeps the YAML valid for any input.
    let value = serde_json::Value::String(format!("Bearer {token}")).to_string();
    format!(
        "resources:\n\
         - \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  \
           name: {TOKEN_SECRET_NAME}\n  \
           generic_secret:\n    \
             secret:\n      \
               inline_string: {value}\n"
    )
}

/// Writes the token file atomically (a private temp file in the same directory, then
/// `rename`), mode 0600, owned by `owner` (uid, gid) when given, so Envoy never reads half
/// a file and sees the change as one move.
pub fn write_token_file(
    path: &Path,
    token: &str,
    owner: Option<(u32, Option<u32>)>,
) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(sds_yaml(token).as_bytes())?;
        f.sync_all()?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&tmp, Some(uid), gid)?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing the token file {}", path.display()))
}

/// When to renew a token minted at `minted_at`: at 2/3 of its lifetime.
pub fn renew_at(minted_at: SystemTime, expires_at: SystemTime) -> SystemTime {
    let life = expires_at
        .duration_since(minted_at)
        .unwrap_or(Duration::ZERO);
    minted_at + life * 2 / 3
}

/// Renews the token in `path` forever: at 2/3 of each token's lifetime, retrying with
/// backoff on failure; logs every renewal.
pub async fn renew_forever(
    minter: Minter,
    path: PathBuf,
    mut current: Minted,
    mut minted_at: SystemTime,
    owner: Option<(u32, Option<u32>)>,
) {
    loop {
        let at = renew_at(minted_at, current.expires_at);
        let wait = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        let Ok(next) = minter.mint_with_retry(None).await else {
            continue;
        };
        minted_at = SystemTime::now();
        match write_token_file(&path, &next.token, owner) {
            Ok(()) => {
                eprintln!(
                    "meshplane: node token renewed token_id={} expires_at={}",
                    next.token_id,
                    epoch(next.expires_at)
                );
                current = next;
            }
            Err(e) => {
                eprintln!("meshplane: cannot write the renewed node token: {e:#}");
                // Try again soon rather than at 2/3 of the next lifetime.
                current.expires_at = minted_at + FIRST_RETRY * 3;
            }
        }
    }
}

fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Runs `meshplane envoy token`.
pub fn token_command(args: TokenArgs, env: &dyn Strings) -> anyhow::Result<ExitCode> {
    let node_text = match (&args.virtual_node, &args.virtual_gateway) {
        (Some(n), _) => format!("mesh/{}/virtualNode/{n}", mesh_part(&args)),
        (None, Some(g)) => format!("mesh/{}/virtualGateway/{g}", mesh_part(&args)),
        (None, None) => anyhow::bail!("pass --virtual-node or --virtual-gateway"),
    };
    let node = NodeId::parse(&node_text)?;
    let ca = args
        .ca_bundle
        .clone()
        .or_else(|| env.get("MESHPLANE_CA_BUNDLE").map(PathBuf::from));
    let settings = args.api.settings(ca.as_deref(), env)?;
    let minter = Minter::new(&settings, &node, args.ttl)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let minted = rt.block_on(minter.mint())?;
    write_token_file(&args.out, &minted.token, None)?;
    eprintln!(
        "meshplane: wrote the node token for {node_text} to {} (token_id={}, expires_at={})",
        args.out.display(),
        minted.token_id,
        epoch(minted.expires_at)
    );
    Ok(ExitCode::SUCCESS)
}

fn mesh_part(args: &TokenArgs) -> String {
    match &args.mesh_owner {
        Some(o) => format!("{}@{o}", args.mesh),
        None => args.mesh.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sds_yaml_is_the_secret_envoy_reads() {
        let y = sds_yaml("mpt1.eyJ0aWQiOiJ4In0.c2ln");
        let v: serde_json::Value = yaml_serde::from_str(&y).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"resources": [{
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": "meshplane-xds-token",
                "generic_secret": {"secret": {"inline_string": "Bearer mpt1.eyJ0aWQiOiJ4In0.c2ln"}},
            }]})
        );
    }

    #[test]
    fn the_token_file_is_replaced_whole_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.yaml");
        write_token_file(&path, "one", None).unwrap();
        write_token_file(&path, "two", None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"Bearer two\"") && !text.contains("one"),
            "{text}"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file is left behind");
        let err = write_token_file(&dir.path().join("missing/token.yaml"), "x", None).unwrap_err();
        assert!(format!("{err:#}").contains("missing/token.yaml"), "{err:#}");
    }

    #[test]
    fn renewal_is_at_two_thirds_of_the_lifetime() {
        let t = UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(
            renew_at(t, t + Duration::from_secs(3600)),
            t + Duration::from_secs(2400)
        );
        assert_eq!(renew_at(t, t - Duration::from_secs(5)), t);
    }
}
