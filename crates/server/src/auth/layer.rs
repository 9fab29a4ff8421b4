//! The axum middleware that authenticates and authorises every API request.
//!
//! The body is buffered first (the API's own size limit applies), because SigV4 signs its
//! hash and Cloud Map names its resource inside it; the handler then gets it back
//! unchanged. Only `/healthz`, `/readyz` and `/metrics` pass without a signature (probes
//! and scrapers carry no AWS credentials; they reveal no mesh state).

use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use meshplane_auth::sigv4::{InvalidReason, Payload, RequestView, SigV4Error, Verified};
use meshplane_policy::Decision;

use super::classify::{Classified, Protocol, classify};
use super::keys::now_secs;
use super::{AuthState, Caller};

/// Paths served without authentication.
pub const UNAUTHENTICATED_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Audit outcomes.
const ALLOWED: &str = "allowed";
const DENIED: &str = "denied";
const UNAUTHENTICATED: &str = "unauthenticated";
const ERROR: &str = "error";

/// An AWS-shaped error in the request's protocol.
pub fn error_response(
    protocol: Protocol,
    status: StatusCode,
    name: &str,
    message: &str,
) -> Response {
    let (body, content_type) = match protocol {
        Protocol::RestJson => (
            serde_json::json!({ "message": message }).to_string(),
            "application/json",
        ),
        Protocol::Json11 => (
            serde_json::json!({ "__type": name, "message": message }).to_string(),
            "application/x-amz-json-1.1",
        ),
    };
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(name) {
        h.insert("x-amzn-errortype", v);
    }
    r
}

fn audit(c: &Classified, key_id: &str, key_name: &str, outcome: &str, status: StatusCode) {
    tracing::info!(
        target: "meshplane::audit",
        key_id,
        key_name,
        action = %c.action,
        resource = %c.resources.join(","),
        outcome,
        status = status.as_u16(),
        "api call"
    );
}

/// Verifies the signature with the current secrets, then (on a signature mismatch only)
/// with a previous secret still inside its rotation grace period.
fn verify(
    st: &AuthState,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<Verified, SigV4Error> {
    let view = RequestView::from_parts(parts);
    let now = SystemTime::now();
    let keys = st.keys();
    let first = st
        .inner
        .verifier
        .verify(&view, Payload::Bytes(body), now, &keys.current_secrets());
    match first {
        Err(SigV4Error::InvalidSignature(InvalidReason::SignatureMismatch)) => st
            .inner
            .verifier
            .verify(
                &view,
                Payload::Bytes(body),
                now,
                &keys.grace_secrets(now_secs()),
            )
            .map_err(|e| match e {
                // The key has no grace secret: report the original mismatch.
                SigV4Error::UnrecognizedClient => {
                    SigV4Error::InvalidSignature(InvalidReason::SignatureMismatch)
                }
                e => e,
            }),
        other => other,
    }
}

/// The middleware: `axum::middleware::from_fn_with_state(state, require_sigv4)`.
pub async fn require_sigv4(State(st): State<AuthState>, req: Request, next: Next) -> Response {
    if UNAUTHENTICATED_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let max = st.inner.max_body;
    let classified = |body: &[u8]| {
        classify(
            st.scope(),
            &parts.method,
            parts.uri.path(),
            parts.uri.query().unwrap_or(""),
            &parts.headers,
            body,
        )
    };
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => {
            let protocol = classified(&[]).protocol;
            let name = match protocol {
                Protocol::RestJson => "BadRequestException",
                Protocol::Json11 => "InvalidInput",
            };
            return error_response(
                protocol,
                StatusCode::BAD_REQUEST,
                name,
                &format!("request body is larger than {max} bytes"),
            );
        }
    };
    let c = classified(&bytes);
    let verified = match verify(&st, &parts, &bytes) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(reason = %e, "api request refused");
            audit(&c, "", "", UNAUTHENTICATED, e.status());
            return error_response(
                c.protocol,
                e.status(),
                e.exception_name(),
                &e.client_message(),
            );
        }
    };
    // The credential scope must name this API and this control plane's region (AWS's own
    // answers to a request signed for another service or region).
    let scope_error = if verified.service != c.service {
        Some(format!(
            "Credential should be scoped to correct service: '{}'. ",
            c.service
        ))
    } else if verified.region != st.scope().region {
        Some("Credential should be scoped to a valid region. ".to_owned())
    } else {
        None
    };
    if let Some(message) = scope_error {
        audit(
            &c,
            &verified.access_key_id,
            "",
            UNAUTHENTICATED,
            StatusCode::FORBIDDEN,
        );
        return error_response(
            c.protocol,
            StatusCode::FORBIDDEN,
            "InvalidSignatureException",
            message.trim_end(),
        );
    }
    let Some(key) = st.keys().get(&verified.access_key_id) else {
        let e = SigV4Error::UnrecognizedClient;
        audit(&c, &verified.access_key_id, "", UNAUTHENTICATED, e.status());
        return error_response(
            c.protocol,
            e.status(),
            e.exception_name(),
            &e.client_message(),
        );
    };
    let policies = std::slice::from_ref(key.policy.as_ref());
    let denied = c
        .resources
        .iter()
        .find(|r| meshplane_policy::evaluate(policies, &c.action, r) != Decision::Allow);
    if let Some(resource) = denied {
        audit(&c, &key.id, &key.name, DENIED, StatusCode::FORBIDDEN);
        return error_response(
            c.protocol,
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            &format!(
                "User: {} is not authorized to perform: {} on resource: {resource}",
                key.name, c.action
            ),
        );
    }
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(Caller {
        key_id: key.id.clone(),
        key_name: key.name.clone(),
    });
    let response = next.run(req).await;
    let status = response.status();
    if c.mutating || status.is_server_error() {
        let outcome = if status.is_client_error() || status.is_server_error() {
            ERROR
        } else {
            ALLOWED
        };
        audit(&c, &key.id, &key.name, outcome, status);
    }
    response
}
