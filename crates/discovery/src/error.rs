//! Cloud Map errors: one code table (HTTP status, `__type` name) and the JSON 1.1 error body.

use serde_json::json;

/// The Cloud Map error shapes meshplane emits (names and statuses from the botocore model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: a parameter is missing, malformed or out of range.
    InvalidInput,
    /// 404
    NamespaceNotFound,
    /// 404
    ServiceNotFound,
    /// 404
    InstanceNotFound,
    /// 404
    OperationNotFound,
    /// 404: UpdateInstanceCustomHealthStatus on a service without `HealthCheckCustomConfig`.
    CustomHealthNotFound,
    /// 400
    NamespaceAlreadyExists,
    /// 400
    ServiceAlreadyExists,
    /// 409: deleting a namespace with services or a service with instances.
    ResourceInUse,
    /// 409: a `CreatorRequestId` reused with different parameters.
    DuplicateRequest,
    /// 400
    TooManyTagsException,
    /// 400: unparsable JSON body (the name AWS JSON services use).
    SerializationException,
    /// 400: unknown `X-Amz-Target`.
    UnknownOperationException,
    /// 500: the store failed; the message never carries internal detail.
    InternalFailure,
    /// 503: the store is unavailable or contended; retry.
    ServiceUnavailable,
}

impl ErrorCode {
    /// HTTP status of the error.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidInput
            | NamespaceAlreadyExists
            | ServiceAlreadyExists
            | TooManyTagsException
            | SerializationException
            | UnknownOperationException => 400,
            NamespaceNotFound | ServiceNotFound | InstanceNotFound | OperationNotFound
            | CustomHealthNotFound => 404,
            ResourceInUse | DuplicateRequest => 409,
            InternalFailure => 500,
            ServiceUnavailable => 503,
        }
    }

    /// The `__type` value clients map to an exception class.
    pub fn name(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidInput => "InvalidInput",
            NamespaceNotFound => "NamespaceNotFound",
            ServiceNotFound => "ServiceNotFound",
            InstanceNotFound => "InstanceNotFound",
            OperationNotFound => "OperationNotFound",
            CustomHealthNotFound => "CustomHealthNotFound",
            NamespaceAlreadyExists => "NamespaceAlreadyExists",
            ServiceAlreadyExists => "ServiceAlreadyExists",
            ResourceInUse => "ResourceInUse",
            DuplicateRequest => "DuplicateRequest",
            TooManyTagsException => "TooManyTagsException",
            SerializationException => "SerializationException",
            UnknownOperationException => "UnknownOperationException",
            InternalFailure => "InternalFailure",
            ServiceUnavailable => "ServiceUnavailable",
        }
    }
}

/// An error returned to a Cloud Map client.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}: {message}", code.name())]
pub struct CloudMapError {
    /// The error shape.
    pub code: ErrorCode,
    /// Human-readable message (`Message`).
    pub message: String,
    /// Extra members of the error shape (e.g. `NamespaceId` of NamespaceAlreadyExists).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl CloudMapError {
    /// An error without extra members.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CloudMapError {
            code,
            message: message.into(),
            extra: serde_json::Map::new(),
        }
    }

    /// InvalidInput.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message)
    }

    /// Adds an extra member to the error body.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The JSON 1.1 error body: `{"__type": ..., "Message": ..., extra...}`.
    pub fn body(&self) -> String {
        let mut m = self.extra.clone();
        m.insert("__type".into(), json!(self.code.name()));
        m.insert("Message".into(), json!(self.message));
        serde_json::Value::Object(m).to_string()
    }
}
