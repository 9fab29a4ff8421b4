//! AWS Signature Version 4 verification for the App Mesh and Cloud Map APIs.
//!
//! [`Verifier::verify`] takes a [`RequestView`] (method, raw path, raw query, headers), the
//! [`Payload`], the current time and a [`SecretLookup`], and answers [`Verified`] or a
//! [`SigV4Error`] whose [`SigV4Error::exception_name`] and [`SigV4Error::status`] are what
//! AWS answers. Both forms are accepted: the `Authorization: AWS4-HMAC-SHA256 …` header and
//! presigned query strings (`X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`,
//! `X-Amz-Expires`, `X-Amz-SignedHeaders`, `X-Amz-Signature`).
//!
//! Choices, each matching what AWS clients and services do:
//! - the canonical request is the non-S3 one (see [`canonical`]): path normalised and encoded
//!   twice, query pairs decoded then RFC 3986-encoded and sorted, header values trimmed;
//! - `host` must be signed; the payload hash is always checked (an `x-amz-content-sha256`
//!   header must equal the body's hash; `UNSIGNED-PAYLOAD` is refused, since a mesh write
//!   whose body is not signed could be rewritten in flight);
//! - a request signed more than 15 minutes before or after "now" is refused with
//!   `InvalidSignatureException` and AWS's own words ("Signature expired: 20261206T110000Z is
//!   now earlier than 20261206T110500Z (20261206T112000Z - 15 min.)", "Signature not yet
//!   current: … is still later than …"), the 403 App Mesh and the other JSON-protocol AWS
//!   services answer (S3 alone says `RequestTimeTooSkewed`); a presigned URL is refused after
//!   `X-Amz-Date + X-Amz-Expires` (at most 7 days, as AWS allows) with
//!   `InvalidSignatureException` "Signature expired: <expiry> is now earlier than <now>";
//! - a malformed `Authorization` header or presigned query is `InvalidSignatureException`
//!   too (AWS sometimes says `IncompleteSignatureException` with the missing part named; one
//!   answer gives a guesser nothing);
//! - the signature is compared in constant time, and no error or message carries anything
//!   derived from the secret.
//!
//! The caller checks [`Verified::service`] against the API it serves and then authorises.

pub(crate) mod canonical;
pub(crate) mod crypto;
pub(crate) mod time;

/// Lower-case hex of `bytes` (for fingerprints and ids built on this crate).
pub fn hex_lower(bytes: &[u8]) -> String {
    crypto::hex(bytes)
}

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, StatusCode};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const TERMINATOR: &str = "aws4_request";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The parts of an HTTP request the verifier reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The method, as sent (`GET`, `PUT`, …).
    pub method: &'a str,
    /// The path exactly as on the wire, still percent-encoded (`http::Uri::path`).
    pub path: &'a str,
    /// The raw query string without `?`, empty when there is none.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    /// The URI's authority, used as `host` when there is no `Host` header (HTTP/2).
    pub authority: Option<&'a str>,
}

impl<'a> RequestView<'a> {
    pub fn from_parts(parts: &'a http::request::Parts) -> Self {
        Self::new(&parts.method, &parts.uri, &parts.headers)
    }

    pub fn from_request<B>(req: &'a http::Request<B>) -> Self {
        Self::new(req.method(), req.uri(), req.headers())
    }

    fn new(method: &'a http::Method, uri: &'a http::Uri, headers: &'a HeaderMap) -> Self {
        Self {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query().unwrap_or(""),
            headers,
            authority: uri.authority().map(|a| a.as_str()),
        }
    }
}

/// The request body, or its SHA-256 when the caller has already hashed it while reading.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    Bytes(&'a [u8]),
    /// Lower-case hex SHA-256 of the body.
    Sha256Hex(&'a str),
}

/// Access key id → secret access key, or `None` for an unknown (or deleted) key.
pub trait SecretLookup {
    fn secret_access_key(&self, access_key_id: &str) -> Option<String>;
}

impl SecretLookup for HashMap<String, String> {
    fn secret_access_key(&self, access_key_id: &str) -> Option<String> {
        self.get(access_key_id).cloned()
    }
}

impl SecretLookup for BTreeMap<String, String> {
    fn secret_access_key(&self, access_key_id: &str) -> Option<String> {
        self.get(access_key_id).cloned()
    }
}

/// A request whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
    /// The credential scope's region (`us-west-2`).
    pub region: String,
    /// The credential scope's service (`appmesh`, `servicediscovery`); the caller checks it.
    pub service: String,
    pub signed_at: SystemTime,
    /// `X-Amz-Security-Token` when the client sent one; recorded, not checked (meshplane
    /// issues long-term keys only).
    pub session_token: Option<String>,
    /// Whether the signature came in the query string rather than the `Authorization` header.
    pub presigned: bool,
}

/// Why a request was refused. Each variant maps to AWS's exception name and status; the
/// [`InvalidReason`] is for logs only, the client always gets the same message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// Neither an `Authorization` header nor a presigned query string.
    #[error("missing authentication token")]
    MissingAuthenticationToken,
    /// The access key id is not known.
    #[error("unrecognized access key id")]
    UnrecognizedClient,
    /// The signature, its form or the signed payload is wrong.
    #[error("invalid signature: {0}")]
    InvalidSignature(InvalidReason),
    /// Signed more than the allowed skew before "now": `signed_at < earliest = now - skew`.
    #[error("signature expired: signed at {signed_at}, earliest {earliest}, now {now}")]
    SignatureExpired {
        signed_at: String,
        earliest: String,
        now: String,
        skew_minutes: u64,
    },
    /// Signed more than the allowed skew after "now": `signed_at > latest = now + skew`.
    #[error("signature not yet current: signed at {signed_at}, latest {latest}, now {now}")]
    SignatureNotYetCurrent {
        signed_at: String,
        latest: String,
        now: String,
        skew_minutes: u64,
    },
    /// A presigned URL used after `X-Amz-Date + X-Amz-Expires`.
    #[error("presigned url expired at {expired_at}, now {now}")]
    PresignedUrlExpired { expired_at: String, now: String },
}

/// The detail behind [`SigV4Error::InvalidSignature`], for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReason {
    /// The `Authorization` header or presigned query does not parse; the text names the part.
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("both an authorization header and a presigned query string")]
    TwoAuthForms,
    #[error("host is not among the signed headers")]
    HostNotSigned,
    #[error("a signed header is absent from the request")]
    SignedHeaderAbsent,
    #[error("credential scope date differs from the request date")]
    ScopeDateMismatch,
    #[error("x-amz-content-sha256 does not match the body")]
    PayloadHashMismatch,
    #[error("unsigned payload refused")]
    UnsignedPayload,
    #[error("signature mismatch")]
    SignatureMismatch,
}

impl SigV4Error {
    /// The HTTP status AWS answers with: 403 for all of them.
    pub fn status(&self) -> StatusCode {
        StatusCode::FORBIDDEN
    }

    /// The `x-amzn-ErrorType` / `__type` AWS answers with.
    pub fn exception_name(&self) -> &'static str {
        match self {
            Self::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            Self::UnrecognizedClient => "UnrecognizedClientException",
            Self::InvalidSignature(_)
            | Self::SignatureExpired { .. }
            | Self::SignatureNotYetCurrent { .. }
            | Self::PresignedUrlExpired { .. } => "InvalidSignatureException",
        }
    }

    /// The message for the client, in AWS's words; never says more than AWS does.
    pub fn client_message(&self) -> String {
        match self {
            Self::MissingAuthenticationToken => "Missing Authentication Token".to_owned(),
            Self::UnrecognizedClient => {
                "The security token included in the request is invalid.".to_owned()
            }
            Self::InvalidSignature(_) => "The request signature we calculated does not match \
                the signature you provided. Check your AWS Secret Access Key and signing \
                method. Consult the service documentation for details."
                .to_owned(),
            Self::SignatureExpired {
                signed_at,
                earliest,
                now,
                skew_minutes,
            } => format!(
                "Signature expired: {signed_at} is now earlier than {earliest} \
                 ({now} - {skew_minutes} min.)"
            ),
            Self::SignatureNotYetCurrent {
                signed_at,
                latest,
                now,
                skew_minutes,
            } => format!(
                "Signature not yet current: {signed_at} is still later than {latest} \
                 ({now} + {skew_minutes} min.)"
            ),
            Self::PresignedUrlExpired { expired_at, now } => {
                format!("Signature expired: {expired_at} is now earlier than {now}")
            }
        }
    }
}

/// The verifier's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verifier {
    /// How far the signing time may be from "now" either way (AWS: 15 minutes).
    pub max_skew: Duration,
    /// The largest `X-Amz-Expires` accepted (AWS: 7 days).
    pub max_presign_expiry: Duration,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            max_skew: Duration::from_secs(15 * 60),
            max_presign_expiry: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Verifies with the default limits; see [`Verifier::verify`].
pub fn verify(
    req: &RequestView<'_>,
    payload: Payload<'_>,
    now: SystemTime,
    keys: &impl SecretLookup,
) -> Result<Verified, SigV4Error> {
    Verifier::default().verify(req, payload, now, keys)
}

/// The signature's parameters, from either form.
struct Parsed<'a> {
    access_key_id: &'a str,
    scope_date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
    /// `X-Amz-Expires` for the presigned form.
    expires: Option<u64>,
}

fn malformed(what: &'static str) -> SigV4Error {
    SigV4Error::InvalidSignature(InvalidReason::Malformed(what))
}

fn invalid(reason: InvalidReason) -> SigV4Error {
    SigV4Error::InvalidSignature(reason)
}

impl Verifier {
    /// Verifies the request's SigV4 signature at time `now`.
    pub fn verify(
        &self,
        req: &RequestView<'_>,
        payload: Payload<'_>,
        now: SystemTime,
        keys: &impl SecretLookup,
    ) -> Result<Verified, SigV4Error> {
        let pairs = canonical::query_pairs(req.query);
        let query_value = |name: &str| -> Result<Option<String>, SigV4Error> {
            let mut found = pairs.iter().filter(|(k, _)| k == name.as_bytes());
            let first = found.next();
            if found.next().is_some() {
                return Err(malformed("presigned query: repeated parameter"));
            }
            first
                .map(|(_, v)| {
                    String::from_utf8(v.clone())
                        .map_err(|_| malformed("presigned query: not utf-8"))
                })
                .transpose()
        };
        let presigned = ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"]
            .iter()
            .any(|p| pairs.iter().any(|(k, _)| k == p.as_bytes()));
        let mut authz = req.headers.get_all(http::header::AUTHORIZATION).iter();
        let header = authz.next();
        if authz.next().is_some() {
            return Err(malformed("authorization: repeated header"));
        }

        // The presigned parameters live here so `Parsed` can borrow them.
        let q_credential;
        let q_signed_headers;
        let q_signature;
        let q_date;
        let (parsed, date_text, session_token) = match (header, presigned) {
            (None, false) => return Err(SigV4Error::MissingAuthenticationToken),
            (Some(_), true) => return Err(invalid(InvalidReason::TwoAuthForms)),
            (Some(value), false) => {
                let value = value
                    .to_str()
                    .map_err(|_| malformed("authorization: not ascii"))?;
                let parsed = parse_authorization(value)?;
                let date = match req.headers.get("x-amz-date") {
                    Some(d) => d.to_str().ok().and_then(time::parse_amz_date),
                    None => req
                        .headers
                        .get(http::header::DATE)
                        .and_then(|d| d.to_str().ok())
                        .and_then(time::parse_http_date),
                };
                let date = date.ok_or(malformed("x-amz-date"))?;
                let token = req
                    .headers
                    .get("x-amz-security-token")
                    .and_then(|t| t.to_str().ok())
                    .map(str::to_owned);
                (parsed, date, token)
            }
            (None, true) => {
                let algorithm = query_value("X-Amz-Algorithm")?;
                if algorithm.as_deref() != Some(ALGORITHM) {
                    return Err(malformed("X-Amz-Algorithm"));
                }
                q_credential =
                    query_value("X-Amz-Credential")?.ok_or(malformed("X-Amz-Credential"))?;
                q_signed_headers =
                    query_value("X-Amz-SignedHeaders")?.ok_or(malformed("X-Amz-SignedHeaders"))?;
                q_signature =
                    query_value("X-Amz-Signature")?.ok_or(malformed("X-Amz-Signature"))?;
                q_date = query_value("X-Amz-Date")?.ok_or(malformed("X-Amz-Date"))?;
                let expires = query_value("X-Amz-Expires")?
                    .filter(|e| {
                        !e.is_empty() && e.len() <= 7 && e.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|e| e.parse::<u64>().ok())
                    .filter(|e| *e >= 1 && *e <= self.max_presign_expiry.as_secs())
                    .ok_or(malformed("X-Amz-Expires"))?;
                let (access_key_id, scope_date, region, service) = parse_credential(&q_credential)?;
                check_signed_headers(&q_signed_headers)?;
                check_signature_form(&q_signature)?;
                let date = time::parse_amz_date(&q_date).ok_or(malformed("X-Amz-Date"))?;
                let token = query_value("X-Amz-Security-Token")?;
                let parsed = Parsed {
                    access_key_id,
                    scope_date,
                    region,
                    service,
                    signed_headers: &q_signed_headers,
                    signature: &q_signature,
                    expires: Some(expires),
                };
                (parsed, date, token)
            }
        };
        if date_text < 0 {
            return Err(malformed("date"));
        }
        let amz_date = time::format_amz_date(date_text);
        if parsed.scope_date != &amz_date[..8] {
            return Err(invalid(InvalidReason::ScopeDateMismatch));
        }
        if !parsed.signed_headers.split(';').any(|h| h == "host") {
            return Err(invalid(InvalidReason::HostNotSigned));
        }

        // Time.
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let skew = i64::try_from(self.max_skew.as_secs()).unwrap_or(i64::MAX);
        let skew_minutes = self.max_skew.as_secs() / 60;
        if date_text.saturating_sub(now_secs) > skew {
            return Err(SigV4Error::SignatureNotYetCurrent {
                signed_at: amz_date,
                latest: time::format_amz_date(now_secs.saturating_add(skew)),
                now: time::format_amz_date(now_secs),
                skew_minutes,
            });
        }
        match parsed.expires {
            None if now_secs.saturating_sub(date_text) > skew => {
                return Err(SigV4Error::SignatureExpired {
                    signed_at: amz_date,
                    earliest: time::format_amz_date(now_secs.saturating_sub(skew)),
                    now: time::format_amz_date(now_secs),
                    skew_minutes,
                });
            }
            Some(expires) if now_secs > date_text.saturating_add(expires as i64) => {
                return Err(SigV4Error::PresignedUrlExpired {
                    expired_at: time::format_amz_date(date_text.saturating_add(expires as i64)),
                    now: time::format_amz_date(now_secs),
                });
            }
            _ => {}
        }

        let secret = keys
            .secret_access_key(parsed.access_key_id)
            .ok_or(SigV4Error::UnrecognizedClient)?;

        // Payload.
        let owned_hash;
        let body_hash = match payload {
            Payload::Bytes(body) => {
                owned_hash = crypto::sha256_hex(body);
                owned_hash.as_str()
            }
            Payload::Sha256Hex(hash) => hash,
        };
        if let Some(claimed) = req.headers.get("x-amz-content-sha256") {
            let claimed = claimed.as_bytes();
            if claimed == UNSIGNED_PAYLOAD.as_bytes() {
                return Err(invalid(InvalidReason::UnsignedPayload));
            }
            if !claimed.eq_ignore_ascii_case(body_hash.as_bytes()) {
                return Err(invalid(InvalidReason::PayloadHashMismatch));
            }
        }

        // Canonical request.
        let mut header_lines: Vec<(&str, String)> = Vec::new();
        for name in parsed.signed_headers.split(';') {
            let values: Vec<String> = if name == "host" && !req.headers.contains_key("host") {
                req.authority.map(str::to_owned).into_iter().collect()
            } else {
                req.headers
                    .get_all(name)
                    .iter()
                    .map(|v| canonical::canonical_header_value(v.as_bytes()))
                    .collect::<Option<_>>()
                    .ok_or(malformed("header value: not utf-8"))?
            };
            if values.is_empty() {
                return Err(invalid(InvalidReason::SignedHeaderAbsent));
            }
            header_lines.push((name, values.join(",")));
        }
        let skip = parsed.expires.map(|_| b"X-Amz-Signature".as_slice());
        let creq = canonical_request(
            req.method,
            req.path,
            &canonical::canonical_query(&pairs, skip),
            &header_lines,
            &body_hash.to_ascii_lowercase(),
        );
        let expected = signature_hex(
            &secret,
            &Scope {
                date: parsed.scope_date,
                region: parsed.region,
                service: parsed.service,
            },
            &amz_date,
            &creq,
        );
        if !crypto::constant_time_eq(expected.as_bytes(), parsed.signature.as_bytes()) {
            return Err(invalid(InvalidReason::SignatureMismatch));
        }

        Ok(Verified {
            access_key_id: parsed.access_key_id.to_owned(),
            region: parsed.region.to_owned(),
            service: parsed.service.to_owned(),
            signed_at: UNIX_EPOCH + Duration::from_secs(date_text as u64),
            session_token,
            presigned: parsed.expires.is_some(),
        })
    }
}

/// A credential scope: `<date>/<region>/<service>/aws4_request`.
pub(crate) struct Scope<'a> {
    /// `YYYYMMDD`, the first 8 characters of the request's `X-Amz-Date`.
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// The canonical request, shared by the verifier and the signer ([`crate::sign`]) so the two
/// cannot disagree: method, canonical URI, canonical query, one `name:value` line per signed
/// header (names lower case and sorted, values already canonical), the signed header list
/// and the payload hash.
pub(crate) fn canonical_request(
    method: &str,
    raw_path: &str,
    canonical_query: &str,
    header_lines: &[(&str, String)],
    body_hash: &str,
) -> String {
    let mut creq = String::with_capacity(512);
    creq.push_str(method);
    creq.push('\n');
    creq.push_str(&canonical::canonical_uri(raw_path));
    creq.push('\n');
    creq.push_str(canonical_query);
    creq.push('\n');
    for (name, value) in header_lines {
        creq.push_str(name);
        creq.push(':');
        creq.push_str(value);
        creq.push('\n');
    }
    creq.push('\n');
    for (i, (name, _)) in header_lines.iter().enumerate() {
        if i > 0 {
            creq.push(';');
        }
        creq.push_str(name);
    }
    creq.push('\n');
    creq.push_str(body_hash);
    creq
}

/// The hex signature of a canonical request: string to sign, derived key, HMAC.
pub(crate) fn signature_hex(
    secret: &str,
    scope: &Scope<'_>,
    amz_date: &str,
    canonical_request: &str,
) -> String {
    let scope_text = format!(
        "{}/{}/{}/{TERMINATOR}",
        scope.date, scope.region, scope.service
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope_text}\n{}",
        crypto::sha256_hex(canonical_request.as_bytes())
    );
    let mut key = crypto::hmac_sha256(format!("AWS4{secret}").as_bytes(), scope.date.as_bytes());
    for part in [scope.region, scope.service, TERMINATOR] {
        key = crypto::hmac_sha256(&key, part.as_bytes());
    }
    crypto::hex(&crypto::hmac_sha256(&key, string_to_sign.as_bytes()))
}

/// Parses `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
fn parse_authorization(value: &str) -> Result<Parsed<'_>, SigV4Error> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or(malformed("authorization: algorithm"))?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (name, value) = part
            .trim_matches(' ')
            .split_once('=')
            .ok_or(malformed("authorization: component"))?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(malformed("authorization: component")),
        };
        if slot.replace(value).is_some() {
            return Err(malformed("authorization: repeated component"));
        }
    }
    let credential = credential.ok_or(malformed("authorization: Credential"))?;
    let signed_headers = signed_headers.ok_or(malformed("authorization: SignedHeaders"))?;
    let signature = signature.ok_or(malformed("authorization: Signature"))?;
    let (access_key_id, scope_date, region, service) = parse_credential(credential)?;
    check_signed_headers(signed_headers)?;
    check_signature_form(signature)?;
    Ok(Parsed {
        access_key_id,
        scope_date,
        region,
        service,
        signed_headers,
        signature,
        expires: None,
    })
}

/// `AKID/20261206/us-west-2/appmesh/aws4_request` → (key id, date, region, service).
fn parse_credential(credential: &str) -> Result<(&str, &str, &str, &str), SigV4Error> {
    let parts: Vec<&str> = credential.split('/').collect();
    let [akid, date, region, service, terminator] = parts[..] else {
        return Err(malformed("credential"));
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !token(akid)
        || date.len() != 8
        || !date.bytes().all(|b| b.is_ascii_digit())
        || !token(region)
        || !token(service)
        || terminator != TERMINATOR
    {
        return Err(malformed("credential"));
    }
    Ok((akid, date, region, service))
}

/// Signed header names: lower case, sorted, unique, `;`-separated.
fn check_signed_headers(list: &str) -> Result<(), SigV4Error> {
    let mut previous: Option<&str> = None;
    for name in list.split(';') {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok || previous.is_some_and(|p| p >= name) {
            return Err(malformed("signed headers"));
        }
        previous = Some(name);
    }
    Ok(())
}

fn check_signature_form(signature: &str) -> Result<(), SigV4Error> {
    if signature.len() == 64
        && signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(malformed("signature"))
    }
}
