//! The SigV4 signer meshplane's own clients (the CLI, `envoy run`) sign requests with.
//!
//! It builds the canonical request with the verifier's code ([`crate::sigv4`]), so what the
//! client signs is by construction what the server checks; the tests also prove it
//! byte-equal to `aws-sigv4`, the signer inside the AWS SDK for Rust. Pure: the caller
//! passes "now", the body and the credentials, and gets the headers to add back.
//!
//! Signed headers: `host` (from the URI's authority, default port dropped as HTTP clients
//! send it), `x-amz-date`, `x-amz-content-sha256` (always, so the body is covered),
//! `x-amz-security-token` when the credentials carry one, and every header the caller
//! passes except the ones proxies and HTTP stacks rewrite (`authorization`, `user-agent`,
//! `content-length`, `transfer-encoding`, `expect`, `connection`, `x-amzn-trace-id`).

use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::sigv4::{Scope, canonical, canonical_request, crypto, signature_hex, time};

/// Long-term or temporary AWS-style credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN` / `aws_session_token`, sent as `x-amz-security-token`.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    // The secret and the token never reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where and when a request is signed.
#[derive(Debug, Clone, Copy)]
pub struct SigningParams<'a> {
    /// `us-west-2`; must equal the server's `--region`.
    pub region: &'a str,
    /// `appmesh` for App Mesh and `/meshplane/v1/*`, `servicediscovery` for Cloud Map.
    pub service: &'a str,
    pub now: SystemTime,
}

/// Why a request cannot be signed (never a credential problem: any key signs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the request uri has no host")]
    NoHost,
    #[error("header {0} is not valid utf-8")]
    HeaderNotUtf8(String),
    #[error("a signing value is not a valid header value")]
    InvalidHeaderValue,
}

/// Headers never signed: they are set or rewritten below the signer (HTTP stack, proxies).
const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "user-agent",
    "content-length",
    "transfer-encoding",
    "expect",
    "connection",
    "x-amzn-trace-id",
];

/// Signs `method uri` with `headers` and `body`; returns the headers to add to the request
/// (`authorization`, `x-amz-date`, `x-amz-content-sha256`, and `x-amz-security-token` with a
/// session token). `uri` must be what goes on the wire: its path still percent-encoded.
pub fn sign(
    method: &str,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: &[u8],
    credentials: &Credentials,
    params: &SigningParams<'_>,
) -> Result<Vec<(HeaderName, HeaderValue)>, SignError> {
    let authority = uri.authority().ok_or(SignError::NoHost)?;
    let default_port = match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    let host = match authority.port_u16() {
        Some(p) if Some(p) != default_port => format!("{}:{p}", authority.host()),
        _ => authority.host().to_owned(),
    };
    let now = params
        .now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let amz_date = time::format_amz_date(now);
    let body_hash = crypto::sha256_hex(body);

    let mut lines: Vec<(String, String)> = vec![
        ("host".to_owned(), host),
        ("x-amz-content-sha256".to_owned(), body_hash.clone()),
        ("x-amz-date".to_owned(), amz_date.clone()),
    ];
    if let Some(token) = &credentials.session_token {
        lines.push(("x-amz-security-token".to_owned(), token.clone()));
    }
    for name in headers.keys() {
        let n = name.as_str();
        if UNSIGNED_HEADERS.contains(&n) || lines.iter().any(|(l, _)| l == n) {
            continue;
        }
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| canonical::canonical_header_value(v.as_bytes()))
            .collect::<Option<_>>()
            .ok_or_else(|| SignError::HeaderNotUtf8(n.to_owned()))?;
        lines.push((n.to_owned(), values.join(",")));
    }
    lines.sort();
    let header_lines: Vec<(&str, String)> =
        lines.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    let signed_headers = lines
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");

    let query =
        canonical::canonical_query(&canonical::query_pairs(uri.query().unwrap_or("")), None);
    let creq = canonical_request(method, uri.path(), &query, &header_lines, &body_hash);
    let scope = Scope {
        date: &amz_date[..8],
        region: params.region,
        service: params.service,
    };
    let signature = signature_hex(&credentials.secret_access_key, &scope, &amz_date, &creq);
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/{}/{}/{}/aws4_request, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id, scope.date, scope.region, scope.service
    );

    let value = |s: &str| HeaderValue::from_str(s).map_err(|_| SignError::InvalidHeaderValue);
    let mut out = vec![
        (http::header::AUTHORIZATION, value(&authorization)?),
        (HeaderName::from_static("x-amz-date"), value(&amz_date)?),
        (
            HeaderName::from_static("x-amz-content-sha256"),
            value(&body_hash)?,
        ),
    ];
    if let Some(token) = &credentials.session_token {
        out.push((
            HeaderName::from_static("x-amz-security-token"),
            value(token)?,
        ));
    }
    Ok(out)
}
