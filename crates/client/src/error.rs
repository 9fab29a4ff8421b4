//! [`ClientError`]: what can go wrong talking to the API, and decoding of error responses.

use meshplane_api::{ApiError, ErrorCode};
use meshplane_model::ResourceKind;
use reqwest::StatusCode;
use serde_json::Value;

/// An error from a [`crate::Client`] call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an App Mesh error: the code comes from the
    /// `x-amzn-ErrorType` header (else body `__type`/`code`, else the HTTP status), the
    /// message from the body's `message` (or the raw body when it is not JSON).
    /// `Display` is `BadRequestException: <message>`.
    #[error("{error}")]
    Api {
        /// The HTTP status of the response.
        status: u16,
        /// Code and message as the server sent them.
        error: ApiError,
    },
    /// Connecting, sending or receiving failed (server down, timeout, reset...).
    /// `Display` is only `cannot reach the API`; the cause is the error's `source()`
    /// chain (print it with `{:#}` in anyhow, or walk `source()`).
    #[error("cannot reach the API")]
    Transport(#[source] reqwest::Error),
    /// A 2xx response whose body is not the expected shape.
    #[error("unexpected {what} in the response: {message}")]
    Decode {
        /// Which part of the response (`virtualNode`, `routes`, `response body`...).
        what: &'static str,
        /// What was wrong with it.
        message: String,
    },
    /// The endpoint given to [`crate::Client::new`] is not a usable URL.
    #[error("invalid endpoint `{endpoint}`: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The CA bundle given for TLS cannot be read or holds no PEM certificate.
    #[error("cannot use the CA bundle {path}: {message}")]
    CaBundle {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        message: String,
    },
    /// The request could not be signed (a URL without a host, a header that is not UTF-8).
    #[error("cannot sign the request: {0}")]
    Sign(String),
    /// A spec of one kind was passed for a resource of another; nothing was sent.
    #[error("a {got} spec cannot be used for a {expected}")]
    KindMismatch {
        /// The kind of the resource id.
        expected: ResourceKind,
        /// The kind of the spec.
        got: ResourceKind,
    },
}

// === impl ClientError ===

impl ClientError {
    /// The API error, if the server answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The App Mesh error code, if the server answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        self.api().map(|e| e.code)
    }

    /// True for `NotFoundException` (the resource or one of its parents is missing).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::NotFound)
    }
}

/// Builds the error for a non-2xx response, the way the AWS SDKs read it: header
/// `x-amzn-ErrorType`, then body `__type` / `code`, then the status; message from
/// `message` / `Message`, or the body text itself.
pub(crate) fn api_error(status: StatusCode, error_type: Option<&str>, body: &[u8]) -> ClientError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let body_str = |k: &str| json.as_ref().and_then(|j| j.get(k)).and_then(Value::as_str);
    let code = error_type
        .and_then(ErrorCode::from_exception_name)
        .or_else(|| body_str("__type").and_then(ErrorCode::from_exception_name))
        .or_else(|| body_str("code").and_then(ErrorCode::from_exception_name))
        .unwrap_or_else(|| crate::code_for_status(status));
    let message = match body_str("message").or_else(|| body_str("Message")) {
        Some(m) => m.to_owned(),
        None if json.is_none() && !body.is_empty() => {
            String::from_utf8_lossy(body).trim().to_owned()
        }
        None => format!("HTTP {status}"),
    };
    ClientError::Api {
        status: status.as_u16(),
        error: ApiError::new(code, message),
    }
}
