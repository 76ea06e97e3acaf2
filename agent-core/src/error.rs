//! Error kinds shared by models, transports and the agent loop.
//!
//! A failed run reports a [`RunError`] whose `kind` is an
//! [`ErrorKind`]; its JSON form is the snake_case name of the variant:
//!
//! ```
//! use agent_core::error::ErrorKind;
//! assert_eq!(serde_json::to_string(&ErrorKind::FirstByteTimeout).unwrap(), r#""first_byte_timeout""#);
//! assert_eq!(ErrorKind::MaxRounds.as_str(), "max_rounds");
//! ```

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a run (or a model request) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The upstream could not be reached (DNS, refused, TLS handshake, …).
    Connect,
    /// Connecting took longer than the connect timeout.
    ConnectTimeout,
    /// No response (status and first body byte) within the first-byte timeout.
    FirstByteTimeout,
    /// No event within the inactivity timeout; keep-alive comments do not count.
    InactivityTimeout,
    /// The whole run took longer than its run timeout.
    RunTimeout,
    /// The upstream answered with a non-success HTTP status.
    UpstreamStatus,
    /// The upstream answered 429 and retries were exhausted.
    RateLimited,
    /// The connection broke while the response was streaming.
    UpstreamReset,
    /// The upstream sent something that is not the expected protocol (invalid JSON, …).
    MalformedResponse,
    /// The upstream sent a line or event larger than the configured limit.
    ResponseTooLarge,
    /// The run's answer grew past its bound
    /// ([`AgentBuilder::max_output_bytes`](crate::agent::AgentBuilder::max_output_bytes) or
    /// [`RunOptions::max_output_bytes`](crate::agent::RunOptions::max_output_bytes)); the
    /// partial text is kept up to the bound.
    OutputTooLarge,
    /// The model asked for more rounds than the agent allows.
    MaxRounds,
    /// A model reported an error of its own (scripted failures, provider errors).
    Model,
    /// The request was invalid before it was sent (bad URL, bad configuration).
    InvalidRequest,
    /// The answer did not parse as the run's output type
    /// ([`OutputType`](crate::agent::OutputType)); the raw answer is kept as the failure's
    /// `partial_text`.
    InvalidOutput,
    /// A bug: a panic inside a model or the agent loop, caught and reported.
    Internal,
    /// The run's store (see [`store`](crate::store)) could not record its events, so the
    /// run was stopped: nothing is sent that was not recorded.
    Store,
    /// The instance serving the run stopped before the run ended (it crashed, or lost its
    /// lease in a shared store); the run was marked failed by another instance or on restart.
    InstanceLost,
}

impl ErrorKind {
    /// The snake_case name used in JSON, e.g. `"upstream_status"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::FirstByteTimeout => "first_byte_timeout",
            ErrorKind::InactivityTimeout => "inactivity_timeout",
            ErrorKind::RunTimeout => "run_timeout",
            ErrorKind::UpstreamStatus => "upstream_status",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::UpstreamReset => "upstream_reset",
            ErrorKind::MalformedResponse => "malformed_response",
            ErrorKind::ResponseTooLarge => "response_too_large",
            ErrorKind::OutputTooLarge => "output_too_large",
            ErrorKind::MaxRounds => "max_rounds",
            ErrorKind::Model => "model",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::InvalidOutput => "invalid_output",
            ErrorKind::Internal => "internal",
            ErrorKind::Store => "store",
            ErrorKind::InstanceLost => "instance_lost",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a model stream.
///
/// Carries what the agent needs to report it ([`ErrorKind`], message, HTTP status) and what a
/// retry policy needs (`retry_after`).
///
/// ```
/// use agent_core::error::{ErrorKind, ModelError};
/// let err = ModelError::new(ErrorKind::UpstreamStatus, "upstream answered 503").with_status(503);
/// assert_eq!(err.to_string(), "upstream_status: upstream answered 503");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    /// Category of the failure.
    pub kind: ErrorKind,
    /// Human-readable message, free of secrets.
    pub message: String,
    /// HTTP status, when the upstream answered with one.
    pub status: Option<u16>,
    /// How long the upstream asked us to wait (from `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl ModelError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ModelError {
            kind,
            message: message.into(),
            status: None,
            retry_after: None,
        }
    }

    /// Attach the upstream HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// Attach the delay asked for by `Retry-After`.
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Convert into the error reported by [`EventKind::RunFailed`](crate::event::EventKind::RunFailed).
    pub fn into_run_error(self) -> RunError {
        RunError {
            kind: self.kind,
            message: self.message,
            status: self.status,
            retry_after_ms: self
                .retry_after
                .map(|wait| u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ModelError {}

/// Why a run failed: a machine-readable kind, a human message and, for upstream HTTP
/// errors, the status code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunError {
    /// The category of the failure.
    pub kind: ErrorKind,
    /// A human-readable explanation. Never contains secrets.
    pub message: String,
    /// The upstream HTTP status, for [`ErrorKind::UpstreamStatus`] and
    /// [`ErrorKind::RateLimited`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How long the upstream asked to wait before trying again (its `Retry-After`), in
    /// milliseconds, for [`ErrorKind::RateLimited`] and overloaded upstreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl RunError {
    /// An error of `kind` with `message` (no status, no retry hint).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RunError {
            kind,
            message: message.into(),
            status: None,
            retry_after_ms: None,
        }
    }
}
