//! HTTP edge of the registry: AWS JSON 1.1 (`POST /`, `X-Amz-Target:
//! Route53AutoNaming_v20170314.<Operation>`), errors as status + `{"__type", "Message"}`.
//!
//! The `Host` header is ignored, so clients that inject the `data-` host prefix for
//! DiscoverInstances work as soon as they can reach the server at all (set
//! `AWS_DISABLE_HOST_PREFIX_INJECTION=true`, or boto3 `Config(inject_host_prefix=False)`).

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderValue, StatusCode, header};

use crate::error::{CloudMapError, ErrorCode};
use crate::registry::Registry;

/// `X-Amz-Target` prefix of Cloud Map (servicediscovery 2017-03-14).
pub const TARGET_PREFIX: &str = "Route53AutoNaming_v20170314.";
/// Largest accepted request body.
const MAX_BODY: usize = 1 << 20;

/// A router serving `POST /` for the registry; merge it next to the App Mesh router.
pub fn router(registry: Registry) -> Router {
    Router::new().route("/", post(handle)).with_state(registry)
}

/// Whether a request is a Cloud Map call (by its `X-Amz-Target`).
pub fn is_cloud_map(headers: &http::HeaderMap) -> bool {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with(TARGET_PREFIX))
}

async fn handle(State(registry): State<Registry>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let Some(operation) = target.strip_prefix(TARGET_PREFIX) else {
        return error(&CloudMapError::new(
            ErrorCode::UnknownOperationException,
            format!("missing or unknown X-Amz-Target {target:?}"),
        ));
    };
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return error(&CloudMapError::invalid(format!(
                "request body is larger than {MAX_BODY} bytes"
            )));
        }
    };
    let value = if bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) => {
                return error(&CloudMapError::new(
                    ErrorCode::SerializationException,
                    "the request body is not valid JSON",
                ));
            }
        }
    };
    let result = registry.call(operation, value).await;
    tracing::debug!(operation, ok = result.is_ok(), "cloud map request");
    match result {
        Ok(v) => respond(StatusCode::OK, v.to_string()),
        Err(e) => error(&e),
    }
}

fn respond(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        h.insert("x-amzn-requestid", v);
    }
    r
}

fn error(e: &CloudMapError) -> Response {
    let status =
        StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(status, e.body())
}
