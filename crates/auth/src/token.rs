//! Node tokens: what an Envoy presents in its ADS stream's `authorization` metadata.
//!
//! Text form: `mpt1.<base64url(payload JSON)>.<base64url(HMAC-SHA256(k_tok, "mpt1." + payload part))>`
//! with payload `{"tid","node","kid","exp","iat"}` (token id, `NodeId` string, access key id,
//! expiry and issue time in epoch seconds). `k_tok` is HMAC-SHA256 of the data directory's
//! key bytes with the label [`KEY_LABEL`] ([`crate::seal::SealKey::token_key`]), so every
//! replica sharing the key file verifies every replica's tokens without a store read.
//!
//! This module checks only what the token itself proves (MAC, expiry, form). Whether the
//! token was revoked and whether its access key still exists is the server's question.

use serde::{Deserialize, Serialize};

use crate::seal::{base64url_decode, base64url_encode};
use crate::sigv4::crypto::{constant_time_eq, hmac_sha256};

/// The label `k_tok` is derived with.
pub const KEY_LABEL: &[u8] = b"meshplane node token v1";
const PREFIX: &str = "mpt1.";
/// Longest token text accepted before any decoding (a real one is about 250 bytes), so a
/// hostile header costs a bounded amount of work.
const MAX_TOKEN_LEN: usize = 4096;

/// The key node tokens are signed with. Never printed.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Token id (random, base64url), the handle for revocation.
    pub tid: String,
    /// The node the token is bound to, in `NodeId` string form (`mesh/m/virtualNode/n`).
    pub node: String,
    /// The access key that minted the token.
    pub kid: String,
    /// Expiry, epoch seconds.
    pub exp: u64,
    /// Issue time, epoch seconds.
    pub iat: u64,
}

/// Why a token was refused. The client is told only that the token is invalid or expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token has expired")]
    Expired,
}

impl TokenKey {
    /// The key with these bytes (already derived; see [`crate::seal::SealKey::token_key`]).
    pub fn from_bytes(bytes: [u8; 32]) -> TokenKey {
        TokenKey(bytes)
    }

    /// The token text for `claims`.
    pub fn mint(&self, claims: &TokenClaims) -> String {
        let payload = serde_json::to_vec(claims)
            .unwrap_or_else(|_| unreachable!("claims of strings and integers serialise"));
        let signed = format!("{PREFIX}{}", base64url_encode(&payload));
        let mac = hmac_sha256(&self.0, signed.as_bytes());
        format!("{signed}.{}", base64url_encode(&mac))
    }

    /// The claims of `token` if its MAC verifies and it has not expired at `now` (epoch
    /// seconds; a token is valid while `now < exp`).
    pub fn verify(&self, token: &str, now: u64) -> Result<TokenClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (signed, mac) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let payload = signed.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
        if payload.contains('.') {
            return Err(TokenError::Malformed);
        }
        let mac = base64url_decode(mac).ok_or(TokenError::Malformed)?;
        // The MAC is checked before the payload is parsed: nothing of an unauthenticated
        // payload is interpreted.
        let expected = hmac_sha256(&self.0, signed.as_bytes());
        if !constant_time_eq(&mac, &expected) {
            return Err(TokenError::BadSignature);
        }
        let payload = base64url_decode(payload).ok_or(TokenError::Malformed)?;
        let claims: TokenClaims =
            serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// A fresh random token id (16 bytes, base64url: 22 characters).
pub fn new_token_id() -> Result<String, crate::seal::SealError> {
    let mut raw = [0u8; 16];
    crate::seal::random_bytes(&mut raw)?;
    Ok(base64url_encode(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::SealKey;

    fn claims() -> TokenClaims {
        TokenClaims {
            tid: "t1".into(),
            node: "mesh/dev/virtualNode/web".into(),
            kid: "MPAKAAAAAAAAAAAAAAAA".into(),
            exp: 2_000,
            iat: 1_000,
        }
    }

    fn key() -> TokenKey {
        SealKey::from_bytes(&[7; 32]).token_key()
    }

    /// Replaces the payload part by `payload` keeping the original MAC.
    fn with_payload(token: &str, payload: &[u8]) -> String {
        let mac = token.rsplit_once('.').unwrap().1;
        format!("mpt1.{}.{mac}", base64url_encode(payload))
    }

    #[test]
    fn round_trips_and_has_the_contract_shape() {
        let k = key();
        let t = k.mint(&claims());
        assert!(t.starts_with("mpt1."));
        assert_eq!(t.split('.').count(), 3);
        let payload = base64url_decode(t.split('.').nth(1).unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["node"], "mesh/dev/virtualNode/web");
        assert_eq!(v["kid"], "MPAKAAAAAAAAAAAAAAAA");
        assert_eq!(v["exp"], 2000);
        // The MAC is HMAC-SHA256(k_tok, "mpt1." + payload part) with
        // k_tok = HMAC-SHA256(key bytes, label).
        let k_tok = hmac_sha256(&[7; 32], KEY_LABEL);
        let (signed, mac) = t.rsplit_once('.').unwrap();
        assert_eq!(
            base64url_decode(mac).unwrap(),
            hmac_sha256(&k_tok, signed.as_bytes())
        );
        assert_eq!(k.verify(&t, 1_500), Ok(claims()));
    }

    #[test]
    fn refuses_tampering_expiry_and_other_keys() {
        let k = key();
        let t = k.mint(&claims());
        let other = SealKey::from_bytes(&[8; 32]).token_key();
        let mut forged = claims();
        forged.node = "mesh/dev/virtualNode/db".into();
        let forged_payload = serde_json::to_vec(&forged).unwrap();
        let mut flipped_mac = t.clone();
        let last = flipped_mac.pop().unwrap();
        flipped_mac.push(if last == 'A' { 'B' } else { 'A' });
        let cases: Vec<(&str, String, u64, TokenError)> = vec![
            (
                "other node, same mac",
                with_payload(&t, &forged_payload),
                1_500,
                TokenError::BadSignature,
            ),
            ("wrong key", t.clone(), 1_500, TokenError::BadSignature),
            (
                "expired exactly at exp",
                t.clone(),
                2_000,
                TokenError::Expired,
            ),
            ("expired later", t.clone(), 9_999, TokenError::Expired),
            ("flipped mac", flipped_mac, 1_500, TokenError::BadSignature),
            (
                "no prefix",
                t.trim_start_matches("mpt1.").to_owned(),
                1_500,
                TokenError::Malformed,
            ),
            ("empty", String::new(), 1_500, TokenError::Malformed),
            (
                "extra part",
                format!("mpt1.a.{}", &t[5..]),
                1_500,
                TokenError::Malformed,
            ),
            (
                "bad base64 mac",
                format!("{}.!!", &t[..t.rfind('.').unwrap()]),
                1_500,
                TokenError::Malformed,
            ),
            (
                "huge",
                "mpt1.".to_owned() + &"A".repeat(5000) + ".A",
                1_500,
                TokenError::Malformed,
            ),
        ];
        for (name, token, now, want) in cases {
            let key = if name == "wrong key" { &other } else { &k };
            assert_eq!(key.verify(&token, now), Err(want), "{name}");
        }
    }

    #[test]
    fn a_well_signed_payload_that_is_not_claims_is_malformed() {
        let k = key();
        let signed = format!("mpt1.{}", base64url_encode(b"{\"tid\":1}"));
        let mac = hmac_sha256(&k.0, signed.as_bytes());
        let t = format!("{signed}.{}", base64url_encode(&mac));
        assert_eq!(k.verify(&t, 0), Err(TokenError::Malformed));
    }

    #[test]
    fn token_ids_are_random_and_url_safe() {
        let a = new_token_id().unwrap();
        let b = new_token_id().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }
}
