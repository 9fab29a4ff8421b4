//! Access keys in the store, and the in-memory view the request path reads.
//!
//! ```text
//!   auth/access-key/<id>        {"id","name","policy","sealedSecret","createdAt","previous"?}
//!   auth/access-key-name/<name> <id>                      (uniqueness: created with Absent)
//!   auth/node-token/<tid>       {"kid","node","expiresAt"} (which tokens a key minted)
//!   auth/revoked-token/<tid>    {"expiresAt"}
//! ```
//!
//! Every write is one transaction with preconditions on what it read, so two replicas
//! creating one name cannot both win, and deleting a key revokes exactly the tokens it
//! minted (a token minted concurrently makes the delete retry). The view ([`AccessKeys`])
//! is rebuilt from a store watch, so another replica's writes show up here within the
//! watch latency; a local write waits until the view has caught up with its revision
//! before answering, so a client can use a key it has just created.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshplane_auth::seal::{SealKey, base64url_encode, random_bytes};
use meshplane_auth::sigv4::SecretLookup;
use meshplane_policy::{Decision, Policy};
use meshplane_store::{
    Event, EventKind, Op, Precondition, Revision, Store, StoreError, Txn, TxnOutcome,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

/// Everything of authentication in the store lives under this prefix.
pub const AUTH_PREFIX: &str = "auth/";
/// Access key records by id.
pub const ACCESS_KEY_PREFIX: &str = "auth/access-key/";
/// The name index.
pub const NAME_PREFIX: &str = "auth/access-key-name/";
/// Node tokens minted, by token id.
pub const NODE_TOKEN_PREFIX: &str = "auth/node-token/";
/// Revoked node tokens, by token id.
pub const REVOKED_PREFIX: &str = "auth/revoked-token/";
/// The longest rotation grace period (one day).
pub const MAX_GRACE: Duration = Duration::from_secs(86_400);
/// How long a local write waits for the watch to show it before answering anyway.
const CATCH_UP: Duration = Duration::from_secs(5);
/// Page size of the initial listing.
const LIST_PAGE: usize = 1000;
/// Compare-and-set attempts of one write before giving up with 503.
const MAX_ATTEMPTS: usize = 20;

/// The stored record of an access key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessKeyRecord {
    id: String,
    name: String,
    policy: String,
    sealed_secret: String,
    created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<PreviousSecret>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PreviousSecret {
    sealed_secret: String,
    expires_at: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeTokenRecord {
    kid: String,
    node: String,
    expires_at: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RevokedRecord {
    expires_at: u64,
}

/// An access key as the request path sees it (secret opened, policy parsed).
#[derive(Clone)]
pub struct AccessKey {
    pub id: String,
    pub name: String,
    /// The policy document as given at creation.
    pub policy_text: String,
    pub policy: Arc<Policy>,
    pub created_at: u64,
    secret: String,
    /// The previous secret and when it stops verifying (rotation grace).
    previous: Option<(String, u64)>,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A newly issued secret (shown once).
#[derive(Debug, Clone)]
pub struct Issued {
    pub id: String,
    pub name: String,
    pub secret: String,
    pub created_at: u64,
}

/// Why an access-key or token operation failed; each maps to an App Mesh exception.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
}

#[derive(Default)]
struct View {
    keys: HashMap<String, AccessKey>,
    by_name: HashMap<String, String>,
    /// Revoked token id -> expiry.
    revoked: HashMap<String, u64>,
    revision: Revision,
}

/// The shared view of access keys and revoked tokens, plus the writes on them.
#[derive(Clone)]
pub struct AccessKeys {
    store: Arc<dyn Store>,
    seal: Arc<SealKey>,
    view: Arc<RwLock<View>>,
    revision_tx: Arc<watch::Sender<Revision>>,
    revoked_tx: broadcast::Sender<String>,
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn random_id() -> Result<String, KeyError> {
    // RFC 4648 base32 of 10 random bytes: 16 characters.
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut raw = [0u8; 10];
    random_bytes(&mut raw).map_err(|e| KeyError::Internal(e.to_string()))?;
    let mut bits: u128 = 0;
    for b in raw {
        bits = (bits << 8) | u128::from(b);
    }
    let id: String = (0..16)
        .rev()
        .map(|i| char::from(ALPHABET[((bits >> (5 * i)) & 31) as usize]))
        .collect();
    Ok(format!("MPAK{id}"))
}

fn random_secret() -> Result<String, KeyError> {
    let mut raw = [0u8; 30];
    random_bytes(&mut raw).map_err(|e| KeyError::Internal(e.to_string()))?;
    Ok(base64url_encode(&raw))
}

fn context(id: &str) -> String {
    format!("access-key/{id}")
}

/// Whether a key name is acceptable: 1..=64 characters of `[A-Za-z0-9_.@-]`, so it fits a
/// path segment and an ARN without encoding.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'))
}

// === impl AccessKeys ===

impl AccessKeys {
    /// Reads every access key and revoked token; call [`AccessKeys::run_watch`] to follow
    /// later changes.
    pub async fn load(store: Arc<dyn Store>, seal: Arc<SealKey>) -> Result<AccessKeys, StoreError> {
        let (revision_tx, _) = watch::channel(0);
        let (revoked_tx, _) = broadcast::channel(1024);
        let keys = AccessKeys {
            store,
            seal,
            view: Arc::new(RwLock::new(View::default())),
            revision_tx: Arc::new(revision_tx),
            revoked_tx,
        };
        keys.relist().await?;
        Ok(keys)
    }

    /// Follows the store watch under `auth/` forever (re-listing after a lost watch).
    pub async fn run_watch(self) {
        loop {
            let from = self.read().revision;
            match self.follow(from).await {
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "access key watch lost; re-listing"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Err(e) = self.relist().await {
                tracing::warn!(error = %e, "re-listing access keys failed");
            }
        }
    }

    async fn follow(&self, from: Revision) -> Result<(), StoreError> {
        let mut events = self.store.watch(AUTH_PREFIX, from).await?;
        while let Some(event) = events.recv().await {
            let event = event?;
            self.apply(&event);
        }
        Err(StoreError::Unavailable("watch closed".into()))
    }

    async fn relist(&self) -> Result<(), StoreError> {
        let mut items = Vec::new();
        let mut start: Option<String> = None;
        let mut revision = None;
        loop {
            let page = self
                .store
                .list(AUTH_PREFIX, start.as_deref(), LIST_PAGE)
                .await?;
            revision.get_or_insert(page.revision);
            start = page.items.last().map(|kv| kv.key.clone());
            let more = page.more;
            items.extend(page.items);
            if !more {
                break;
            }
        }
        let revision = revision.unwrap_or(0);
        let mut fresh = View {
            revision,
            ..View::default()
        };
        for kv in &items {
            self.apply_put(&mut fresh, &kv.key, &kv.value);
        }
        let newly_revoked: Vec<String> = {
            let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
            let newly = fresh
                .revoked
                .keys()
                .filter(|t| !view.revoked.contains_key(*t))
                .cloned()
                .collect();
            *view = fresh;
            newly
        };
        for t in newly_revoked {
            let _ = self.revoked_tx.send(t);
        }
        self.revision_tx.send_replace(revision);
        Ok(())
    }

    fn apply(&self, event: &Event) {
        let revoked = {
            let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
            let key = &event.kv.key;
            let mut revoked = None;
            match event.kind {
                EventKind::Put => {
                    if let Some(tid) = key.strip_prefix(REVOKED_PREFIX)
                        && !view.revoked.contains_key(tid)
                    {
                        revoked = Some(tid.to_owned());
                    }
                    self.apply_put(&mut view, key, &event.kv.value);
                }
                EventKind::Delete => {
                    if let Some(id) = key.strip_prefix(ACCESS_KEY_PREFIX) {
                        if let Some(k) = view.keys.remove(id) {
                            view.by_name.remove(&k.name);
                        }
                    } else if let Some(tid) = key.strip_prefix(REVOKED_PREFIX) {
                        view.revoked.remove(tid);
                    }
                }
            }
            view.revision = view.revision.max(event.revision());
            revoked
        };
        if let Some(tid) = revoked {
            let _ = self.revoked_tx.send(tid);
        }
        self.revision_tx.send_replace(event.revision());
    }

    fn apply_put(&self, view: &mut View, key: &str, value: &[u8]) {
        if let Some(id) = key.strip_prefix(ACCESS_KEY_PREFIX) {
            match self.decode(value) {
                Ok(k) => {
                    if let Some(old) = view.keys.get(id)
                        && old.name != k.name
                    {
                        let old_name = old.name.clone();
                        view.by_name.remove(&old_name);
                    }
                    view.by_name.insert(k.name.clone(), k.id.clone());
                    view.keys.insert(id.to_owned(), k);
                }
                Err(e) => {
                    // Fail closed: an unreadable new version must not leave the old secret
                    // or policy in force.
                    if let Some(old) = view.keys.remove(id) {
                        view.by_name.remove(&old.name);
                    }
                    tracing::error!(key, error = %e, "access key record unusable; the key is ignored");
                }
            }
        } else if let Some(tid) = key.strip_prefix(REVOKED_PREFIX) {
            let exp =
                serde_json::from_slice::<RevokedRecord>(value).map_or(u64::MAX, |r| r.expires_at);
            view.revoked.insert(tid.to_owned(), exp);
        }
    }

    fn decode(&self, value: &[u8]) -> Result<AccessKey, String> {
        let r: AccessKeyRecord = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        let open = |sealed: &str| -> Result<String, String> {
            let bytes = self
                .seal
                .open(&context(&r.id), sealed)
                .map_err(|e| e.to_string())?;
            String::from_utf8(bytes).map_err(|e| e.to_string())
        };
        let secret = open(&r.sealed_secret)?;
        let previous = match &r.previous {
            Some(p) => Some((open(&p.sealed_secret)?, p.expires_at)),
            None => None,
        };
        let policy = Policy::parse(&r.policy).map_err(|e| e.to_string())?;
        Ok(AccessKey {
            id: r.id,
            name: r.name,
            policy_text: r.policy,
            policy: Arc::new(policy),
            created_at: r.created_at,
            secret,
            previous,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits (bounded) until the view shows a local write: `revision` alone is not enough,
    /// since the events of one transaction arrive one by one with the same revision.
    async fn caught_up(&self, revision: Revision, shows: impl Fn(&View) -> bool) {
        let mut rx = self.revision_tx.subscribe();
        let wait = rx.wait_for(|r| *r >= revision && shows(&self.read()));
        let _ = tokio::time::timeout(CATCH_UP, wait).await;
    }

    /// The key with this id.
    pub fn get(&self, id: &str) -> Option<AccessKey> {
        self.read().keys.get(id).cloned()
    }

    /// The key with this name.
    pub fn by_name(&self, name: &str) -> Option<AccessKey> {
        let view = self.read();
        view.by_name
            .get(name)
            .and_then(|id| view.keys.get(id))
            .cloned()
    }

    /// Every key, by name.
    pub fn list(&self) -> Vec<AccessKey> {
        let mut v: Vec<AccessKey> = self.read().keys.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Whether there is no access key at all.
    pub fn is_empty(&self) -> bool {
        self.read().keys.is_empty()
    }

    /// Whether token `tid` was revoked.
    pub fn is_revoked(&self, tid: &str) -> bool {
        self.read().revoked.contains_key(tid)
    }

    /// Every revoked token id not yet pruned.
    pub fn revoked_ids(&self) -> Vec<String> {
        self.read().revoked.keys().cloned().collect()
    }

    /// Token ids as they are revoked (explicitly, or because their access key was deleted),
    /// as seen through the store watch: the feed that closes live xDS streams.
    pub fn revocations(&self) -> broadcast::Receiver<String> {
        self.revoked_tx.subscribe()
    }

    /// The secrets that currently verify: the key's own, and during a rotation grace the
    /// previous one.
    pub fn current_secrets(&self) -> CurrentSecrets<'_> {
        CurrentSecrets(self)
    }

    /// The previous secrets still inside their rotation grace period at `now`.
    pub fn grace_secrets(&self, now: u64) -> GraceSecrets<'_> {
        GraceSecrets(self, now)
    }

    /// Creates key `name` with `policy_text` (already validated by the caller).
    pub async fn create(&self, name: &str, policy_text: &str) -> Result<Issued, KeyError> {
        if !valid_name(name) {
            return Err(KeyError::BadRequest(format!(
                "name: must be 1 to 64 characters of A-Z a-z 0-9 _ . @ -, got {name:?}"
            )));
        }
        let id = random_id()?;
        let secret = random_secret()?;
        let created_at = now_secs();
        let record = AccessKeyRecord {
            id: id.clone(),
            name: name.to_owned(),
            policy: policy_text.to_owned(),
            sealed_secret: self
                .seal
                .seal(&context(&id), secret.as_bytes())
                .map_err(|e| KeyError::Internal(e.to_string()))?,
            created_at,
            previous: None,
        };
        let name_key = format!("{NAME_PREFIX}{name}");
        let outcome = self
            .store
            .txn(Txn {
                preconditions: vec![
                    Precondition::Absent(name_key.clone()),
                    Precondition::Absent(format!("{ACCESS_KEY_PREFIX}{id}")),
                ],
                ops: vec![
                    Op::Put {
                        key: name_key,
                        value: id.clone().into_bytes(),
                    },
                    Op::Put {
                        key: format!("{ACCESS_KEY_PREFIX}{id}"),
                        value: encode(&record)?,
                    },
                ],
            })
            .await?;
        match outcome {
            TxnOutcome::Committed { revision } => {
                self.caught_up(revision, |v| v.keys.contains_key(&id)).await;
                Ok(Issued {
                    id,
                    name: name.to_owned(),
                    secret,
                    created_at,
                })
            }
            TxnOutcome::Failed { .. } => Err(KeyError::Conflict(format!(
                "an access key named {name} already exists"
            ))),
        }
    }

    /// Deletes key `name` and revokes every node token it minted, in one transaction.
    /// Refuses to delete the last key that may create access keys (no lock-out).
    pub async fn delete(&self, name: &str) -> Result<(String, String), KeyError> {
        for _ in 0..MAX_ATTEMPTS {
            let name_key = format!("{NAME_PREFIX}{name}");
            let Some(index) = self.store.get(&name_key).await? else {
                return Err(KeyError::NotFound(format!("no access key named {name}")));
            };
            let id = String::from_utf8_lossy(&index.value).into_owned();
            let record_key = format!("{ACCESS_KEY_PREFIX}{id}");
            let Some(record) = self.store.get(&record_key).await? else {
                return Err(KeyError::NotFound(format!("no access key named {name}")));
            };
            // Lock-out check over the stored keys (not the view, which may lag).
            let all = self.store.list(ACCESS_KEY_PREFIX, None, 0).await?;
            let admins_left: Vec<Precondition> = all
                .items
                .iter()
                .filter(|kv| kv.key != record_key)
                .filter(|kv| {
                    serde_json::from_slice::<AccessKeyRecord>(&kv.value)
                        .is_ok_and(|r| may_create_keys(&r.policy))
                })
                .map(|kv| Precondition::ModRevision(kv.key.clone(), kv.mod_revision))
                .collect();
            let this_policy = serde_json::from_slice::<AccessKeyRecord>(&record.value)
                .map(|r| r.policy)
                .unwrap_or_default();
            let this_is_admin = may_create_keys(&this_policy);
            if this_is_admin && admins_left.is_empty() {
                return Err(KeyError::Conflict(format!(
                    "{name} is the last access key allowed to perform meshplane:CreateAccessKey on *; \
                     create another one before deleting it"
                )));
            }
            let tokens = self.store.list(NODE_TOKEN_PREFIX, None, 0).await?;
            let mut ops = vec![
                Op::Delete {
                    key: name_key.clone(),
                },
                Op::Delete {
                    key: record_key.clone(),
                },
            ];
            let now = now_secs();
            for kv in &tokens.items {
                let Ok(t) = serde_json::from_slice::<NodeTokenRecord>(&kv.value) else {
                    continue;
                };
                if t.kid != id || t.expires_at <= now {
                    continue;
                }
                let tid = kv.key.trim_start_matches(NODE_TOKEN_PREFIX);
                ops.push(Op::Put {
                    key: format!("{REVOKED_PREFIX}{tid}"),
                    value: encode(&RevokedRecord {
                        expires_at: t.expires_at,
                    })?,
                });
            }
            let outcome = self
                .store
                .txn(Txn {
                    preconditions: vec![
                        Precondition::ModRevision(name_key, index.mod_revision),
                        Precondition::ModRevision(record_key, record.mod_revision),
                        // A token minted since the listing would escape revocation.
                        Precondition::PrefixUnchangedSince(
                            NODE_TOKEN_PREFIX.to_owned(),
                            tokens.revision,
                        ),
                    ]
                    .into_iter()
                    // The keys that justify deleting an administrator must still be there:
                    // two concurrent deletes of the last two cannot both commit
                    // (`PrefixUnchangedSince` does not see deletions).
                    .chain(admins_left.into_iter().filter(|_| this_is_admin))
                    .collect(),
                    ops,
                })
                .await?;
            if let TxnOutcome::Committed { revision } = outcome {
                self.caught_up(revision, |v| !v.keys.contains_key(&id))
                    .await;
                return Ok((id, name.to_owned()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(KeyError::Store(StoreError::Unavailable(
            "too many concurrent changes to access keys, try again".into(),
        )))
    }

    /// Gives key `name` a new secret; the old one keeps verifying for `grace`.
    pub async fn rotate(&self, name: &str, grace: Duration) -> Result<Issued, KeyError> {
        if grace > MAX_GRACE {
            return Err(KeyError::BadRequest(
                "graceSeconds: must be between 0 and 86400".into(),
            ));
        }
        for _ in 0..MAX_ATTEMPTS {
            let Some(index) = self.store.get(&format!("{NAME_PREFIX}{name}")).await? else {
                return Err(KeyError::NotFound(format!("no access key named {name}")));
            };
            let id = String::from_utf8_lossy(&index.value).into_owned();
            let record_key = format!("{ACCESS_KEY_PREFIX}{id}");
            let Some(kv) = self.store.get(&record_key).await? else {
                return Err(KeyError::NotFound(format!("no access key named {name}")));
            };
            let mut record: AccessKeyRecord = serde_json::from_slice(&kv.value)
                .map_err(|e| KeyError::Internal(format!("access key record: {e}")))?;
            let secret = random_secret()?;
            record.previous = (!grace.is_zero()).then(|| PreviousSecret {
                sealed_secret: record.sealed_secret.clone(),
                expires_at: now_secs() + grace.as_secs(),
            });
            record.sealed_secret = self
                .seal
                .seal(&context(&id), secret.as_bytes())
                .map_err(|e| KeyError::Internal(e.to_string()))?;
            let outcome = self
                .store
                .txn(Txn {
                    preconditions: vec![Precondition::ModRevision(
                        record_key.clone(),
                        kv.mod_revision,
                    )],
                    ops: vec![Op::Put {
                        key: record_key,
                        value: encode(&record)?,
                    }],
                })
                .await?;
            if let TxnOutcome::Committed { revision } = outcome {
                self.caught_up(revision, |v| {
                    v.keys.get(&id).is_some_and(|k| k.secret == secret)
                })
                .await;
                return Ok(Issued {
                    id,
                    name: name.to_owned(),
                    secret,
                    created_at: record.created_at,
                });
            }
        }
        Err(KeyError::Store(StoreError::Unavailable(
            "too many concurrent changes to this access key, try again".into(),
        )))
    }

    /// Records a node token minted by key `kid`; fails if the key was deleted meanwhile.
    pub async fn record_token(
        &self,
        tid: &str,
        kid: &str,
        node: &str,
        expires_at: u64,
    ) -> Result<(), KeyError> {
        let record_key = format!("{ACCESS_KEY_PREFIX}{kid}");
        let Some(kv) = self.store.get(&record_key).await? else {
            return Err(KeyError::NotFound(
                "the calling access key no longer exists".into(),
            ));
        };
        let outcome = self
            .store
            .txn(Txn {
                preconditions: vec![
                    Precondition::ModRevision(record_key, kv.mod_revision),
                    Precondition::Absent(format!("{NODE_TOKEN_PREFIX}{tid}")),
                ],
                ops: vec![Op::Put {
                    key: format!("{NODE_TOKEN_PREFIX}{tid}"),
                    value: encode(&NodeTokenRecord {
                        kid: kid.to_owned(),
                        node: node.to_owned(),
                        expires_at,
                    })?,
                }],
            })
            .await?;
        match outcome {
            TxnOutcome::Committed { .. } => Ok(()),
            TxnOutcome::Failed { .. } => Err(KeyError::Conflict(
                "the calling access key changed while minting; try again".into(),
            )),
        }
    }

    /// Revokes token `tid`. Tokens meshplane never minted (or already pruned) are NotFound.
    pub async fn revoke_token(&self, tid: &str) -> Result<u64, KeyError> {
        let Some(kv) = self.store.get(&format!("{NODE_TOKEN_PREFIX}{tid}")).await? else {
            return Err(KeyError::NotFound(format!("no node token {tid}")));
        };
        let t: NodeTokenRecord = serde_json::from_slice(&kv.value)
            .map_err(|e| KeyError::Internal(format!("node token record: {e}")))?;
        let outcome = self
            .store
            .txn(Txn {
                preconditions: vec![],
                ops: vec![Op::Put {
                    key: format!("{REVOKED_PREFIX}{tid}"),
                    value: encode(&RevokedRecord {
                        expires_at: t.expires_at,
                    })?,
                }],
            })
            .await?;
        if let TxnOutcome::Committed { revision } = outcome {
            self.caught_up(revision, |v| v.revoked.contains_key(tid))
                .await;
        }
        Ok(t.expires_at)
    }

    /// Deletes token and revocation records whose token expired (they can never verify
    /// again), so their number stays bounded by the tokens alive at once.
    pub async fn prune_expired(&self) -> Result<usize, StoreError> {
        let now = now_secs();
        let mut ops = Vec::new();
        for prefix in [NODE_TOKEN_PREFIX, REVOKED_PREFIX] {
            let page = self.store.list(prefix, None, 0).await?;
            for kv in page.items {
                let exp = serde_json::from_slice::<serde_json::Value>(&kv.value)
                    .ok()
                    .and_then(|v| v.get("expiresAt").and_then(serde_json::Value::as_u64));
                if exp.is_some_and(|e| e <= now) {
                    ops.push(Op::Delete { key: kv.key });
                }
            }
        }
        let n = ops.len();
        if n > 0 {
            self.store
                .txn(Txn {
                    preconditions: vec![],
                    ops,
                })
                .await?;
        }
        Ok(n)
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, KeyError> {
    serde_json::to_vec(v).map_err(|e| KeyError::Internal(e.to_string()))
}

/// Whether a policy lets its key create access keys on any name (the lock-out check).
fn may_create_keys(policy_text: &str) -> bool {
    Policy::parse(policy_text).is_ok_and(|p| {
        meshplane_policy::evaluate(std::slice::from_ref(&p), "meshplane:CreateAccessKey", "*")
            == Decision::Allow
    })
}

/// [`SecretLookup`] over the keys' current secrets.
pub struct CurrentSecrets<'a>(&'a AccessKeys);

impl SecretLookup for CurrentSecrets<'_> {
    fn secret_access_key(&self, access_key_id: &str) -> Option<String> {
        self.0
            .read()
            .keys
            .get(access_key_id)
            .map(|k| k.secret.clone())
    }
}

/// [`SecretLookup`] over the previous secrets still in their grace period.
pub struct GraceSecrets<'a>(&'a AccessKeys, u64);

impl SecretLookup for GraceSecrets<'_> {
    fn secret_access_key(&self, access_key_id: &str) -> Option<String> {
        let view = self.0.read();
        let (secret, until) = view.keys.get(access_key_id)?.previous.as_ref()?;
        (self.1 < *until).then(|| secret.clone())
    }
}
