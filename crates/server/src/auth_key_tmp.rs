//! TEMPORARY (helper C, issue 12): a stand-in for helper A's `auth::key_file::load_or_create`
//! so that `serve` can seal the CA key before the branches merge. It reads or creates
//! `<data-dir>/auth.key` (32 random bytes, mode 0600) but does NOT record or check the key's
//! fingerprint in the store. The lead replaces every call with A's loader at merge and
//! deletes this file.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::{Context, bail};
use meshplane_auth::seal::SealKey;

/// Reads `<data_dir>/auth.key`, creating it on first start. TEMPORARY, see the module docs.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<SealKey> {
    let path = data_dir.join("auth.key");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let Ok(bytes) = <[u8; 32]>::try_from(bytes.as_slice()) else {
                bail!("{} must hold exactly 32 bytes", path.display());
            };
            Ok(SealKey::from_bytes(&bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (bytes, key) = SealKey::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
