//! `<data-dir>/auth.key`: the 32 bytes every sealed secret (access key secrets, the CA key)
//! and every node token depend on, kept out of the store so a copied database leaks nothing.
//!
//! The store records the key's fingerprint under `auth/seal-key`. A start with the file
//! missing, or with another file, while the store records a fingerprint is refused before
//! anything is written: the sealed secrets could not be opened, and silently minting a new
//! key would strand them.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use meshplane_auth::seal::{KEY_LEN, SealKey};
use meshplane_store::{Op, Precondition, Store, Txn, TxnOutcome};

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "auth.key";
/// Store key recording the fingerprint of the key that sealed the store's secrets.
pub const FINGERPRINT_KEY: &str = "auth/seal-key";

/// Loads `<data_dir>/auth.key`, or creates it (and records its fingerprint) on the first
/// start. Refuses (naming the file) when the store records a fingerprint and the file is
/// missing, unreadable, malformed or a different key.
pub async fn load_or_create(data_dir: &Path, store: &dyn Store) -> anyhow::Result<SealKey> {
    let path = data_dir.join(KEY_FILE);
    let recorded = recorded_fingerprint(store).await?;
    let existing = read_key(&path)?;
    match (existing, recorded) {
        (Some(key), Some(fp)) if key.fingerprint() == fp => Ok(key),
        (Some(key), Some(fp)) => bail!(
            "{} is not the key this data directory's secrets were sealed with (file fingerprint {}, \
             store records {fp}): sealed secrets (access keys, the CA key) cannot be opened without \
             the original file; restore it from a backup",
            path.display(),
            key.fingerprint()
        ),
        (None, Some(fp)) => bail!(
            "{} is missing but the store records a key (fingerprint {fp}): sealed secrets (access \
             keys, the CA key) cannot be opened without the original file; restore it from a backup",
            path.display()
        ),
        (Some(key), None) => {
            record_fingerprint(store, &key).await?;
            Ok(key)
        }
        (None, None) => {
            let (bytes, key) = SealKey::generate().context("generating the data directory key")?;
            write_new(&path, &bytes)?;
            record_fingerprint(store, &key).await?;
            tracing::info!(path = %path.display(), fingerprint = key.fingerprint(), "created the data directory key");
            Ok(key)
        }
    }
}

async fn recorded_fingerprint(store: &dyn Store) -> anyhow::Result<Option<String>> {
    let Some(kv) = store
        .get(FINGERPRINT_KEY)
        .await
        .context("reading the recorded key fingerprint")?
    else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_slice(&kv.value)
        .with_context(|| format!("store record {FINGERPRINT_KEY} is not JSON"))?;
    match v.get("fingerprint").and_then(|f| f.as_str()) {
        Some(f) => Ok(Some(f.to_owned())),
        None => bail!("store record {FINGERPRINT_KEY} has no fingerprint"),
    }
}

/// Records the fingerprint unless one is already there; if another start recorded a
/// different one in the meantime (two replicas each creating a key), this one loses.
async fn record_fingerprint(store: &dyn Store, key: &SealKey) -> anyhow::Result<()> {
    let value = serde_json::json!({"fingerprint": key.fingerprint()}).to_string();
    let outcome = store
        .txn(Txn {
            preconditions: vec![Precondition::Absent(FINGERPRINT_KEY.to_owned())],
            ops: vec![Op::Put {
                key: FINGERPRINT_KEY.to_owned(),
                value: value.into_bytes(),
            }],
        })
        .await
        .context("recording the key fingerprint")?;
    if let TxnOutcome::Failed { .. } = outcome {
        match recorded_fingerprint(store).await? {
            Some(fp) if fp == key.fingerprint() => {}
            other => bail!(
                "another process recorded a different data directory key ({other:?}) while this one \
                 started; copy its auth.key here"
            ),
        }
    }
    Ok(())
}

fn read_key(path: &Path) -> anyhow::Result<Option<SealKey>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let bytes: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "{} must hold exactly {KEY_LEN} bytes, it holds {}: sealed secrets (access keys, the CA \
             key) cannot be opened without the original file",
            path.display(),
            bytes.len()
        )
    })?;
    Ok(Some(SealKey::from_bytes(&bytes)))
}

/// Writes the key with mode 0600 through a temporary file and a rename, so a crash never
/// leaves a short key file behind.
fn write_new(path: &Path, bytes: &[u8; KEY_LEN]) -> anyhow::Result<()> {
    let tmp: PathBuf = path.with_extension("key.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("creating {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshplane_store::MemoryStore;

    #[tokio::test]
    async fn creates_once_then_loads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::new();
        let a = load_or_create(dir.path(), &store).await.unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create(dir.path(), &store).await.unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let sealed = a.seal("x", b"y").unwrap();
        assert_eq!(b.open("x", &sealed).unwrap(), b"y");
    }

    #[tokio::test]
    async fn refuses_a_missing_or_other_key_file_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::new();
        load_or_create(dir.path(), &store).await.unwrap();
        let path = dir.path().join(KEY_FILE);
        let revision = store.revision().await.unwrap();

        std::fs::write(&path, [9u8; 32]).unwrap();
        let e = load_or_create(dir.path(), &store)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.key is not the key"), "{e}");
        assert!(
            e.contains("cannot be opened without the original file"),
            "{e}"
        );

        std::fs::write(&path, [9u8; 7]).unwrap();
        let e = load_or_create(dir.path(), &store)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("must hold exactly 32 bytes"), "{e}");

        std::fs::remove_file(&path).unwrap();
        let e = load_or_create(dir.path(), &store)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.key is missing"), "{e}");
        // Nothing was written: no new key file, no store change.
        assert!(!path.exists());
        assert_eq!(store.revision().await.unwrap(), revision);
    }
}
