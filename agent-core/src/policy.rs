//! Retry and timeout policies for model requests.
//!
//! A request is retried only before the first byte of its body has arrived: on a connect
//! error, a 429 (honouring `Retry-After`) or a 5xx. Once output may have been emitted, a
//! failure is final: the run fails with the partial text. The waits between attempts count
//! against the request's first-byte timeout: `Retry-After: 3600` with a 60 s first-byte
//! timeout fails the request at once instead of waiting (see
//! [`OpenAiModel`](crate::model::OpenAiModel)).
//!
//! ```
//! use std::time::Duration;
//! use agent_core::policy::RetryPolicy;
//!
//! let policy = RetryPolicy::default();
//! assert_eq!(policy.backoff(0, None), Duration::from_millis(250));
//! assert_eq!(policy.backoff(1, None), Duration::from_millis(500));
//! // `Retry-After` wins, capped by `max_retry_after`.
//! assert_eq!(policy.backoff(0, Some(Duration::from_secs(2))), Duration::from_secs(2));
//! assert_eq!(policy.backoff(0, Some(Duration::from_secs(3600))), policy.max_retry_after);
//! ```

use std::time::{Duration, SystemTime};

/// When and how long to wait before retrying a model request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 disables retrying). Default 2.
    pub max_retries: u32,
    /// Wait before the first retry. Default 250 ms.
    pub initial_backoff: Duration,
    /// Upper bound of the exponential backoff. Default 8 s.
    pub max_backoff: Duration,
    /// Upper bound of a `Retry-After` delay we agree to wait. Default 30 s.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `attempt` (0 for the first retry): the upstream's
    /// `Retry-After` when it gave one (capped by `max_retry_after`), else
    /// `initial_backoff * 2^attempt` capped by `max_backoff`.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max_retry_after);
        }
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// Whether an HTTP status is worth retrying: 429, 5xx (except 501 Not Implemented).
    pub fn is_retryable_status(status: u16) -> bool {
        status == 429 || (500..=599).contains(&status) && status != 501
    }
}

/// Parse a `Retry-After` header value: delay-seconds or an HTTP date.
///
/// ```
/// use std::time::Duration;
/// use agent_core::policy::parse_retry_after;
/// assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
/// assert_eq!(parse_retry_after("soon"), None);
/// ```
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs.min(86_400.0)));
        }
        return None;
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Timeouts of a model request and of a whole run. `None` disables one.
///
/// * `connect`: establishing the connection (applied by the HTTP client).
/// * `first_byte`: from sending the request to the first byte of the response body.
/// * `inactivity`: between two SSE events of the response; keep-alive comments do not reset
///   it, so an upstream that only sends comments still times out.
/// * `run`: the whole run, all rounds and tools included (applied by the agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connect timeout. Default 10 s.
    pub connect: Option<Duration>,
    /// First-byte timeout. Default 60 s.
    pub first_byte: Option<Duration>,
    /// Inactivity timeout between events. Default 60 s.
    pub inactivity: Option<Duration>,
    /// Whole-run timeout. Default none.
    pub run: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Some(Duration::from_secs(10)),
            first_byte: Some(Duration::from_secs(60)),
            inactivity: Some(Duration::from_secs(60)),
            run: None,
        }
    }
}

impl Timeouts {
    /// No timeouts at all.
    pub fn none() -> Self {
        Timeouts {
            connect: None,
            first_byte: None,
            inactivity: None,
            run: None,
        }
    }
}
