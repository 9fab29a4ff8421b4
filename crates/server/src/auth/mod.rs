//! API authentication: SigV4 on every API request, meshplane-issued access keys with
//! IAM-style policies, node tokens for xDS, and the audit log.
//!
//! ```text
//!   request ─▶ layer::require_sigv4 ─ body buffered (API max) ─▶ classify (action, ARNs)
//!                 │ SigV4 (keys::AccessKeys as SecretLookup; grace secret on mismatch)
//!                 │ policy (meshplane_policy::evaluate_all)  ──▶ AWS-shaped 403 + audit
//!                 ▼
//!            handler (body re-attached, `Caller` in the extensions) ──▶ audit if mutating
//!
//!   store watch auth/ ─▶ AccessKeys (view: keys, revoked tokens) ─▶ revocation feed
//!   xDS stream start ─▶ NodeTokenVerifier::verify (MAC, expiry, revoked?, key exists?)
//! ```
//!
//! `key_file` loads the data directory's key (`auth.key`), which seals secrets at rest and
//! derives the node-token key. `bootstrap` writes `<data-dir>/credentials` and `config`.

pub mod bootstrap;
pub mod classify;
pub mod endpoints;
pub mod key_file;
pub mod keys;
pub mod layer;
pub mod node_token;

use std::sync::Arc;
use std::time::Duration;

use meshplane_auth::token::TokenKey;
use meshplane_policy::operation::Scope;

pub use keys::AccessKeys;
pub use layer::require_sigv4;
pub use node_token::{NodeTokenVerifier, TokenRejection, VerifiedToken, run_revocation_feed};

/// `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every API request must be SigV4-signed with a meshplane access key.
    Sigv4,
    /// No authentication (logs a warning at every start).
    None,
}

/// The policy of the first-start administrator key.
pub const ADMIN_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;

/// Who made a request (in the request extensions once the layer let it through).
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub key_name: String,
}

/// Everything the layer and the endpoints share.
#[derive(Clone)]
pub struct AuthState {
    inner: Arc<Inner>,
}

struct Inner {
    keys: AccessKeys,
    token_key: TokenKey,
    scope: Scope,
    mode: AuthMode,
    node_token_ttl: Duration,
    max_body: usize,
    verifier: meshplane_auth::sigv4::Verifier,
}

impl AuthState {
    /// `scope.region` is also the only region requests may be signed for.
    pub fn new(
        keys: AccessKeys,
        token_key: TokenKey,
        scope: Scope,
        mode: AuthMode,
        node_token_ttl: Duration,
        max_body: usize,
    ) -> AuthState {
        AuthState {
            inner: Arc::new(Inner {
                keys,
                token_key,
                scope,
                mode,
                node_token_ttl,
                max_body,
                verifier: meshplane_auth::sigv4::Verifier::default(),
            }),
        }
    }

    pub fn keys(&self) -> &AccessKeys {
        &self.inner.keys
    }

    pub fn scope(&self) -> &Scope {
        &self.inner.scope
    }

    pub fn mode(&self) -> AuthMode {
        self.inner.mode
    }

    /// The verifier for the xDS server's stream authenticator.
    pub fn node_token_verifier(&self) -> NodeTokenVerifier {
        NodeTokenVerifier::new(self.inner.token_key.clone(), self.inner.keys.clone())
    }
}

/// Parses `30m`, `24h`, `7d`, `90s` (a positive whole number and one unit).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit: write e.g. 30m, 24h or 7d"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} does not start with a whole number"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => return Err(format!("{s:?} has unit {unit:?}: use s, m, h or d")),
    }
    .ok_or_else(|| format!("{s:?} is too long"))?;
    if secs == 0 {
        return Err(format!("{s:?} must be greater than zero"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_parses_units_and_refuses_the_rest() {
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        for bad in [
            "",
            "10",
            "h",
            "0h",
            "1w",
            "-1h",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
