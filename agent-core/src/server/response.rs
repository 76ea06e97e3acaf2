//! The answers the service gives: [`ApiResponse`] (status, headers, a complete or streamed
//! body), [`ApiError`] in the OpenAI error shape, and the answers every endpoint shares for
//! a run that failed, was cancelled or broke its contract. Every other server module builds
//! on these; this one depends on none of them.

use std::fmt;

use serde_json::{Value, json};

use super::body::ResponseBody;

/// An HTTP error with a JSON body in the OpenAI error shape:
/// `{"error":{"message":…,"type":…,"code":…}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status (4xx or 5xx).
    pub status: u16,
    /// Machine-readable code, e.g. `invalid_json`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// A 400 with `code` and `message`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            code,
            message: message.into(),
        }
    }

    /// A 400 for a body that is not the expected JSON.
    pub fn invalid_json(err: &serde_json::Error) -> Self {
        ApiError::bad_request(
            "invalid_json",
            format!("the request body is not valid: {err}"),
        )
    }

    /// A 413 for a body larger than `limit` bytes (backends use it while reading the body).
    pub fn payload_too_large(limit: usize) -> Self {
        ApiError {
            status: 413,
            code: "payload_too_large",
            message: format!("the request body exceeds the {limit}-byte limit"),
        }
    }

    /// A 413 for a session run whose input alone is larger than
    /// [`ServerConfig::max_session_bytes`](super::ServerConfig::max_session_bytes), so the session could not keep it.
    pub fn session_turn_too_large(input_bytes: usize, limit: usize) -> Self {
        ApiError {
            status: 413,
            code: "session_turn_too_large",
            message: format!(
                "the input ({input_bytes} bytes in the session history) exceeds the session's {limit}-byte history limit"
            ),
        }
    }

    /// A 408 for a request body that did not arrive within
    /// [`ServerConfig::body_read_timeout`](super::ServerConfig::body_read_timeout) (it stopped midway or trickled). Every backend
    /// answers a slow body with exactly this.
    pub fn body_timeout(timeout: std::time::Duration) -> Self {
        ApiError {
            status: 408,
            code: "request_timeout",
            message: format!("the request body did not arrive within {timeout:?}"),
        }
    }

    /// A 400 for a request body whose framing is broken (bad chunked coding, a connection
    /// that ended midway). The message is the same on every backend; the transport's own
    /// wording of the cause belongs in its log, not in the answer.
    pub fn invalid_body() -> Self {
        ApiError::bad_request(
            "invalid_body",
            "the request body could not be read: its framing is invalid or it ended early",
        )
    }

    /// A 501 for a request body sent with a transfer coding other than exactly `chunked`
    /// (`gzip, chunked`, …): decoding it as plain chunked would misread it, so no backend
    /// does. The connection is closed after this answer.
    pub fn unsupported_transfer_encoding() -> Self {
        ApiError {
            status: 501,
            code: "unsupported_transfer_encoding",
            message: "only the chunked transfer coding is supported for request bodies".into(),
        }
    }

    fn error_type(&self) -> &'static str {
        match self.status {
            401 => "authentication_error",
            404 | 405 => "not_found_error",
            400 | 408 | 409 | 410 | 413 | 415 | 501 => "invalid_request_error",
            429 => "rate_limit_error",
            403 => "permission_error",
            503 => "overloaded_error",
            _ => "server_error",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        json!({"error": {"message": self.message, "type": self.error_type(), "code": self.code}})
            .to_string()
            .into_bytes()
    }

    /// As a complete response.
    pub fn into_response(self) -> ApiResponse {
        let mut headers = vec![("content-type", "application/json".to_string())];
        if self.status == 401 {
            headers.push(("www-authenticate", "Bearer".to_string()));
        }
        ApiResponse {
            status: self.status,
            headers,
            body: ApiBody::Full(self.body()),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// A response for a backend to write.
#[derive(Debug)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: u16,
    /// Header names (lowercase) and values.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: ApiBody,
}

/// The body of an [`ApiResponse`].
#[derive(Debug)]
pub enum ApiBody {
    /// A complete body.
    Full(Vec<u8>),
    /// A streamed body: write and flush each chunk as soon as it is yielded.
    Stream(ResponseBody),
}

impl ApiResponse {
    /// A complete JSON answer.
    pub(crate) fn json(status: u16, value: &Value) -> Self {
        ApiResponse {
            status,
            headers: vec![("content-type", "application/json".to_string())],
            body: ApiBody::Full(value.to_string().into_bytes()),
        }
    }

    /// A streamed SSE answer, with the headers that keep proxies from buffering it.
    pub(crate) fn sse(body: ResponseBody) -> Self {
        ApiResponse {
            status: 200,
            headers: vec![
                ("content-type", "text/event-stream".to_string()),
                ("cache-control", "no-cache".to_string()),
                ("x-accel-buffering", "no".to_string()),
            ],
            body: ApiBody::Stream(body),
        }
    }
}

/// The answer to a non-streamed request whose run failed, the same on every endpoint:
/// `429` with the upstream's `Retry-After` when the upstream rate-limited the run, `504`
/// for a run timeout, `502` otherwise; the body names the error kind.
pub(crate) fn failed_run_response(error: &crate::event::RunError) -> ApiResponse {
    let status = match error.kind {
        crate::error::ErrorKind::RunTimeout => 504,
        crate::error::ErrorKind::RateLimited => 429,
        _ => 502,
    };
    let body =
        json!({"error": {"message": error.message, "type": "run_failed", "code": error.kind}});
    let mut response = ApiResponse::json(status, &body);
    if let (429, Some(wait_ms)) = (status, error.retry_after_ms) {
        // Whole seconds, rounded up: the header has no fractions.
        response
            .headers
            .push(("retry-after", wait_ms.div_ceil(1000).to_string()));
    }
    response
}

/// The answer to a non-streamed request whose run ended without a terminal event (a
/// broken contract: every run ends with exactly one).
pub(crate) fn missing_terminal_response() -> ApiResponse {
    ApiError {
        status: 500,
        code: "internal",
        message: "the run ended without a terminal event".into(),
    }
    .into_response()
}

/// The answer to a non-streamed request whose run was cancelled (the server is shutting
/// down).
pub(crate) fn cancelled_run_response() -> ApiResponse {
    ApiError {
        status: 503,
        code: "cancelled",
        message: "the run was cancelled (the server is shutting down)".into(),
    }
    .into_response()
}
