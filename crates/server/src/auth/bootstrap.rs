//! First-start files: `<data-dir>/credentials` (the administrator key, AWS shared-credentials
//! format, profile `meshplane`) and `<data-dir>/config` (region, endpoint, CA bundle), so
//! `AWS_SHARED_CREDENTIALS_FILE=… AWS_CONFIG_FILE=… AWS_PROFILE=meshplane aws appmesh …`
//! works unchanged.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::ADMIN_POLICY;
use super::keys::{AccessKeys, KeyError};

/// The profile name in both files.
pub const PROFILE: &str = "meshplane";

/// Writes `path` with mode 0600 through a temporary file and a rename.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// When the store holds no access key: creates `admin` (allowed everything) and writes its
/// secret to `<data_dir>/credentials`. Returns the file's path when it wrote one. Another
/// replica creating `admin` at the same moment wins the name; this one then writes nothing.
pub async fn ensure_admin(data_dir: &Path, keys: &AccessKeys) -> anyhow::Result<Option<PathBuf>> {
    if !keys.is_empty() {
        return Ok(None);
    }
    let issued = match keys.create("admin", ADMIN_POLICY).await {
        Ok(i) => i,
        Err(KeyError::Conflict(_)) => return Ok(None),
        Err(e) => {
            return Err(anyhow::anyhow!(
                "creating the administrator access key: {e}"
            ));
        }
    };
    let path = data_dir.join("credentials");
    write_private(
        &path,
        &format!(
            "[{PROFILE}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            issued.id, issued.secret
        ),
    )?;
    tracing::info!(path = %path.display(), access_key_id = %issued.id, "created the administrator access key");
    Ok(Some(path))
}

/// Writes `<data_dir>/config` (every start): the profile's region, the API endpoint as
/// reachable (127.0.0.1 for an unspecified listen address) and, when given, the CA bundle.
pub fn write_config(
    data_dir: &Path,
    region: &str,
    scheme: &str,
    api: SocketAddr,
    ca_bundle: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let mut reachable = api;
    if api.ip().is_unspecified() {
        reachable.set_ip(if api.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let mut text =
        format!("[profile {PROFILE}]\nregion = {region}\nendpoint_url = {scheme}://{reachable}\n");
    if let Some(ca) = ca_bundle {
        // Tools resolve a relative `ca_bundle` against their own working directory, so a
        // `--data-dir ./data` would only work from where `serve` was started.
        let ca = std::path::absolute(ca).unwrap_or_else(|_| ca.to_path_buf());
        text.push_str(&format!("ca_bundle = {}\n", ca.display()));
    }
    let path = data_dir.join("config");
    write_private(&path, &text)?;
    Ok(path)
}

/// The line `serve` logs so users know how to call the API.
pub fn usage_line(data_dir: &Path) -> String {
    let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    format!(
        "AWS_SHARED_CREDENTIALS_FILE={0}/credentials AWS_CONFIG_FILE={0}/config AWS_PROFILE={PROFILE} aws appmesh list-meshes",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_names_the_ca_bundle_by_absolute_path() {
        let dir = tempfile::tempdir().unwrap();
        let api: SocketAddr = "0.0.0.0:7080".parse().unwrap();
        let path = write_config(
            dir.path(),
            "eu-west-1",
            "https",
            api,
            Some(Path::new("data/ca.pem")),
        )
        .unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            text,
            format!(
                "[profile meshplane]\nregion = eu-west-1\nendpoint_url = https://127.0.0.1:7080\n\
                 ca_bundle = {}\n",
                cwd.join("data/ca.pem").display()
            )
        );
    }
}
