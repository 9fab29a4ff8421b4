//! The error-code table: one place maps each error to its HTTP status and App Mesh
//! exception name (sent as `x-amzn-ErrorType` and read back by every AWS SDK).

use serde::{Deserialize, Serialize};

/// Every error the App Mesh API can return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// 400: invalid input.
    BadRequest,
    /// 403: not allowed.
    Forbidden,
    /// 404: the resource or one of its parents does not exist.
    NotFound,
    /// 409: a name already exists, or a client token was reused with a different request.
    Conflict,
    /// 409: the resource is still referenced or still contains resources.
    ResourceInUse,
    /// 400: a quota would be exceeded.
    LimitExceeded,
    /// 400: more than 50 tags.
    TooManyTags,
    /// 429: throttled.
    TooManyRequests,
    /// 500: a bug or an unexpected store failure (details are logged, not returned).
    InternalServerError,
    /// 503: the store is unavailable.
    ServiceUnavailable,
    /// 403: the request carries no signature (meshplane's SigV4 layer, as AWS answers).
    MissingAuthenticationToken,
    /// 403: the signing access key is unknown or deleted.
    UnrecognizedClient,
    /// 403: the signature does not verify (wrong secret, altered or expired request, wrong
    /// region or service).
    InvalidSignature,
    /// 403: the key's policy does not allow the action on the resource.
    AccessDenied,
}

impl ErrorCode {
    /// All codes.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::BadRequest,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::ResourceInUse,
        ErrorCode::LimitExceeded,
        ErrorCode::TooManyTags,
        ErrorCode::TooManyRequests,
        ErrorCode::InternalServerError,
        ErrorCode::ServiceUnavailable,
        ErrorCode::MissingAuthenticationToken,
        ErrorCode::UnrecognizedClient,
        ErrorCode::InvalidSignature,
        ErrorCode::AccessDenied,
    ];

    /// The HTTP status of the error shape.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::LimitExceeded | ErrorCode::TooManyTags => 400,
            ErrorCode::Forbidden
            | ErrorCode::MissingAuthenticationToken
            | ErrorCode::UnrecognizedClient
            | ErrorCode::InvalidSignature
            | ErrorCode::AccessDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict | ErrorCode::ResourceInUse => 409,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::InternalServerError => 500,
            ErrorCode::ServiceUnavailable => 503,
        }
    }

    /// The App Mesh exception name (`x-amzn-ErrorType`).
    pub fn exception_name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BadRequestException",
            ErrorCode::Forbidden => "ForbiddenException",
            ErrorCode::NotFound => "NotFoundException",
            ErrorCode::Conflict => "ConflictException",
            ErrorCode::ResourceInUse => "ResourceInUseException",
            ErrorCode::LimitExceeded => "LimitExceededException",
            ErrorCode::TooManyTags => "TooManyTagsException",
            ErrorCode::TooManyRequests => "TooManyRequestsException",
            ErrorCode::InternalServerError => "InternalServerErrorException",
            ErrorCode::ServiceUnavailable => "ServiceUnavailableException",
            ErrorCode::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            ErrorCode::UnrecognizedClient => "UnrecognizedClientException",
            ErrorCode::InvalidSignature => "InvalidSignatureException",
            ErrorCode::AccessDenied => "AccessDeniedException",
        }
    }

    /// Parses an exception name as sent in `x-amzn-ErrorType` (ignores a `:...` suffix
    /// and a `namespace#` prefix).
    pub fn from_exception_name(s: &str) -> Option<ErrorCode> {
        let s = s.split(':').next().unwrap_or(s);
        let s = s.rsplit('#').next().unwrap_or(s);
        ErrorCode::ALL.into_iter().find(|c| c.exception_name() == s)
    }
}

/// An API error: a code and a message safe to show to clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// What kind of error.
    pub code: ErrorCode,
    /// Human-readable; never contains internal details.
    pub message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// 400 BadRequestException.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 404 NotFoundException.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// The JSON body: `{"message": "..."}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "message": self.message }).to_string()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.exception_name(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<meshplane_model::Violations> for ApiError {
    fn from(v: meshplane_model::Violations) -> Self {
        ApiError::bad_request(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_names_round_trip_and_statuses_match_the_model() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_exception_name(c.exception_name()), Some(c));
        }
        assert_eq!(
            ErrorCode::from_exception_name("com.amazonaws.appmesh#NotFoundException:http://x"),
            Some(ErrorCode::NotFound)
        );
        let statuses: Vec<u16> = ErrorCode::ALL.iter().map(|c| c.http_status()).collect();
        assert_eq!(
            statuses,
            [
                400, 403, 404, 409, 409, 400, 400, 429, 500, 503, 403, 403, 403, 403
            ]
        );
    }
}
