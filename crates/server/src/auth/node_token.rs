//! Node tokens on the server: minting for the API, and the verifier the xDS server's
//! `StreamAuthenticator` calls at every ADS stream start.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshplane_auth::token::{TokenClaims, TokenError, TokenKey, new_token_id};

use super::keys::{AccessKeys, KeyError, now_secs};

/// A token that verified: the stream is pinned to `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The `NodeId` string form (`mesh/<m>/virtualNode/<n>`), what Envoy sends as `node.id`.
    pub node: String,
    pub token_id: String,
    pub expires_at: SystemTime,
}

/// Why a stream's token was refused. The message the client sees is [`TokenRejection::message`];
/// the variant is for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("no authorization metadata")]
    Missing,
    #[error("authorization is not a bearer token")]
    NotBearer,
    #[error("{0}")]
    Invalid(TokenError),
    #[error("token was revoked")]
    Revoked,
    #[error("the access key that minted the token no longer exists")]
    KeyDeleted,
}

impl TokenRejection {
    /// The short text for `UNAUTHENTICATED`: says what to do, never which check failed
    /// beyond missing vs expired vs invalid.
    pub fn message(&self) -> &'static str {
        match self {
            Self::Missing => "missing node token (authorization: Bearer mpt1...)",
            Self::Invalid(TokenError::Expired) => "node token expired",
            _ => "invalid node token",
        }
    }
}

/// Verifies `authorization: Bearer mpt1…` values: MAC, expiry, not revoked, access key
/// still present. Cheap (one HMAC and two hash lookups), no store read.
#[derive(Clone)]
pub struct NodeTokenVerifier {
    key: TokenKey,
    keys: AccessKeys,
}

impl NodeTokenVerifier {
    pub fn new(key: TokenKey, keys: AccessKeys) -> NodeTokenVerifier {
        NodeTokenVerifier { key, keys }
    }

    /// Checks the raw metadata value (`None` when the stream carried none).
    pub fn verify(&self, authorization: Option<&str>) -> Result<VerifiedToken, TokenRejection> {
        self.verify_at(authorization, now_secs())
    }

    fn verify_at(
        &self,
        authorization: Option<&str>,
        now: u64,
    ) -> Result<VerifiedToken, TokenRejection> {
        let value = authorization.ok_or(TokenRejection::Missing)?.trim();
        let (scheme, token) = value.split_once(' ').ok_or(TokenRejection::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(TokenRejection::NotBearer);
        }
        let claims = self
            .key
            .verify(token.trim(), now)
            .map_err(TokenRejection::Invalid)?;
        if self.keys.is_revoked(&claims.tid) {
            return Err(TokenRejection::Revoked);
        }
        if self.keys.get(&claims.kid).is_none() {
            return Err(TokenRejection::KeyDeleted);
        }
        Ok(VerifiedToken {
            node: claims.node,
            token_id: claims.tid,
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp),
        })
    }
}

/// A minted token.
#[derive(Debug, Clone)]
pub struct Minted {
    pub token: String,
    pub token_id: String,
    pub node: String,
    pub expires_at: u64,
}

/// Mints a token for `node` on behalf of key `kid`, recording it so deleting the key
/// revokes it.
pub async fn mint(
    key: &TokenKey,
    keys: &AccessKeys,
    kid: &str,
    node: &str,
    ttl: Duration,
) -> Result<Minted, KeyError> {
    let tid = new_token_id().map_err(|e| KeyError::Internal(e.to_string()))?;
    let iat = now_secs();
    let exp = iat + ttl.as_secs().max(1);
    keys.record_token(&tid, kid, node, exp).await?;
    let token = key.mint(&TokenClaims {
        tid: tid.clone(),
        node: node.to_owned(),
        kid: kid.to_owned(),
        exp,
        iat,
    });
    Ok(Minted {
        token,
        token_id: tid,
        node: node.to_owned(),
        expires_at: exp,
    })
}

/// The revocation feed: calls `close` with each token id revoked (explicitly, or by the
/// deletion of the access key that minted it) as the store watch delivers it, e.g.
/// `XdsServer::close_streams_for_token`. Runs until the feed ends.
pub async fn run_revocation_feed(
    keys: AccessKeys,
    close: Arc<dyn Fn(&str) -> usize + Send + Sync>,
) {
    let mut rx = keys.revocations();
    loop {
        match rx.recv().await {
            Ok(tid) => {
                let closed = close(&tid);
                tracing::info!(token_id = %tid, streams_closed = closed, "node token revoked");
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "revocation feed lagged; missed tokens are still refused at reconnect"
                );
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
