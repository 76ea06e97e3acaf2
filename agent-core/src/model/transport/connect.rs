//! Sending the request: retries before the first body byte, the first-byte timeout, and the
//! errors of responses that are not a 2xx event stream.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;

use super::{Endpoint, error_message, excerpt, redact_location};
use crate::error::{ErrorKind, ModelError};
use crate::http::{BodyStream, HttpClient, HttpErrorKind, HttpRequest};
use crate::policy::{RetryPolicy, parse_retry_after};
use crate::runtime::{BoxFuture, Runtime, SharedRuntime};
use crate::secret::Secret;

/// At most this much of an error response body is read (64 KiB).
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// A response whose body has started (or ended empty) within the first-byte timeout.
pub(crate) struct Connected {
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) runtime: SharedRuntime,
    /// The rest of the body; `None` if it ended before any byte.
    pub(super) body: Option<BodyStream>,
    /// The first non-empty chunk.
    pub(super) first_chunk: Option<Bytes>,
    /// When the first chunk arrived: the inactivity clock starts there.
    pub(super) first_byte_at: Instant,
}

/// The outcome of one attempt.
enum Attempt {
    Connected(Connected),
    /// Worth retrying (the caller checked that retries remain).
    Retry {
        reason: String,
        retry_after: Option<Duration>,
        /// What to report if the retry cannot happen (its wait would outlast the budget).
        error: ModelError,
    },
    Failed(ModelError),
}

/// Send the request, retrying per the policy, until the first body byte of a 2xx response.
pub(super) async fn connect(
    shared: Arc<Endpoint>,
    client: Arc<dyn HttpClient>,
    http: HttpRequest,
    runtime: SharedRuntime,
) -> Result<Connected, ModelError> {
    let policy = shared.retry;
    // Waiting between attempts counts against the first-byte timeout: a `Retry-After` (or a
    // backoff) longer than what is left of it fails now instead of waiting silently.
    let started = Instant::now();
    let budget = shared.timeouts.first_byte;
    let mut attempt = 0;
    loop {
        let can_retry = attempt < policy.max_retries;
        match attempt_once(&shared, &*client, http.clone(), &runtime, can_retry).await {
            Attempt::Connected(connected) => return Ok(connected),
            Attempt::Failed(error) => return Err(redact(error, shared.key.as_ref())),
            Attempt::Retry {
                reason,
                retry_after,
                mut error,
            } => {
                let wait = policy.backoff(attempt, retry_after);
                // The upstream's own figure (before the `max_retry_after` cap) decides: retrying
                // earlier than it asked is pointless.
                let asked = retry_after.unwrap_or(wait).max(wait);
                if let Some(budget) = budget {
                    let left = budget.saturating_sub(started.elapsed());
                    if asked > left {
                        error.message.push_str(&format!(
                            "; not retrying: the wait asked for ({}) is longer than the {} left of the first-byte timeout",
                            seconds(asked),
                            seconds(left)
                        ));
                        return Err(redact(error, shared.key.as_ref()));
                    }
                }
                attempt += 1;
                tracing::warn!(
                    host = %shared.host,
                    retry = attempt,
                    max_retries = policy.max_retries,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "{reason}; waiting {} before retry {attempt} of {}",
                    seconds(wait),
                    policy.max_retries
                );
                runtime.sleep(wait).await;
            }
        }
    }
}

async fn attempt_once(
    shared: &Arc<Endpoint>,
    client: &dyn HttpClient,
    http: HttpRequest,
    runtime: &SharedRuntime,
    can_retry: bool,
) -> Attempt {
    let timeouts = shared.timeouts;
    // One timer per attempt covers the response head and the first body byte.
    let mut first_byte_timer = timeouts.first_byte.map(|limit| runtime.sleep(limit));
    let response = match race(&mut first_byte_timer, client.send(http)).await {
        None => return Attempt::Failed(first_byte_timeout(shared)),
        Some(Ok(response)) => response,
        Some(Err(error)) => {
            let (kind, message) = match error.kind {
                HttpErrorKind::Connect => (
                    ErrorKind::Connect,
                    format!("could not connect to {}: {}", shared.host, error.message),
                ),
                HttpErrorKind::ConnectTimeout => (
                    ErrorKind::ConnectTimeout,
                    format!("connecting to {} timed out: {}", shared.host, error.message),
                ),
                HttpErrorKind::ResponseHeadTooLarge => {
                    return Attempt::Failed(ModelError::new(
                        ErrorKind::ResponseTooLarge,
                        format!(
                            "{} sent a response head (status line and headers) larger than the client accepts: {}",
                            shared.host, error.message
                        ),
                    ));
                }
                HttpErrorKind::InvalidRequest => {
                    return Attempt::Failed(ModelError::new(
                        ErrorKind::InvalidRequest,
                        format!("invalid request to {}: {}", shared.host, error.message),
                    ));
                }
                _ => {
                    return Attempt::Failed(ModelError::new(
                        ErrorKind::UpstreamReset,
                        format!(
                            "the connection to {} broke before the response arrived: {}",
                            shared.host, error.message
                        ),
                    ));
                }
            };
            if can_retry {
                return Attempt::Retry {
                    error: ModelError::new(kind, message.clone()),
                    reason: message,
                    retry_after: None,
                };
            }
            return Attempt::Failed(ModelError::new(kind, message));
        }
    };

    let status = response.status;
    if (200..300).contains(&status) {
        let mut body = response.body;
        loop {
            match race(&mut first_byte_timer, body.next()).await {
                None => return Attempt::Failed(first_byte_timeout(shared)),
                Some(Some(Ok(chunk))) if chunk.is_empty() => {}
                Some(Some(Ok(chunk))) => {
                    return Attempt::Connected(Connected {
                        endpoint: shared.clone(),
                        runtime: runtime.clone(),
                        body: Some(body),
                        first_chunk: Some(chunk),
                        first_byte_at: Instant::now(),
                    });
                }
                Some(None) => {
                    return Attempt::Connected(Connected {
                        endpoint: shared.clone(),
                        runtime: runtime.clone(),
                        body: None,
                        first_chunk: None,
                        first_byte_at: Instant::now(),
                    });
                }
                Some(Some(Err(error))) => {
                    return Attempt::Failed(ModelError::new(
                        ErrorKind::UpstreamReset,
                        format!(
                            "the connection to {} broke before the response body started: {}",
                            shared.host, error.message
                        ),
                    ));
                }
            }
        }
    }

    let retry_after = response
        .header_value("retry-after")
        .and_then(parse_retry_after);
    if can_retry && RetryPolicy::is_retryable_status(status) {
        // Dropping the response closes the connection; its body is not worth reading.
        return Attempt::Retry {
            reason: format!("{} answered {}", shared.host, status_line(status)),
            retry_after,
            error: status_error(status, &[], retry_after),
        };
    }
    let location = response.header_value("location").map(str::to_owned);
    let body = read_error_body(
        response.body,
        first_byte_timer,
        &**runtime,
        timeouts.inactivity,
    )
    .await;
    let mut error = status_error(status, &body, retry_after);
    if (300..400).contains(&status) {
        // Redirects are never followed (the request carries the API key and the whole
        // conversation); say where the upstream points, without credentials or query.
        match location {
            Some(location) => error.message.push_str(&format!(
                " (a redirect to {}; redirects are not followed: use the final URL as base_url)",
                redact_location(&location)
            )),
            None => error
                .message
                .push_str(" (a redirect; redirects are not followed)"),
        }
    }
    Attempt::Failed(error)
}

/// Read at most [`MAX_ERROR_BODY_BYTES`] of an error body, giving up (keeping what arrived)
/// when the first-byte or inactivity timeout passes or the connection breaks.
async fn read_error_body(
    mut body: BodyStream,
    mut first_byte_timer: Option<BoxFuture<()>>,
    runtime: &dyn Runtime,
    inactivity: Option<Duration>,
) -> Vec<u8> {
    let mut buf = Vec::new();
    while buf.len() < MAX_ERROR_BODY_BYTES {
        let next = if buf.is_empty() {
            race(&mut first_byte_timer, body.next()).await
        } else {
            let mut timer = inactivity.map(|limit| runtime.sleep(limit));
            race(&mut timer, body.next()).await
        };
        match next {
            Some(Some(Ok(chunk))) => {
                let room = MAX_ERROR_BODY_BYTES - buf.len();
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Some(None) => break,
            Some(Some(Err(error))) => {
                tracing::debug!(%error, "error response body cut short");
                break;
            }
            None => {
                tracing::debug!("timed out reading an error response body");
                break;
            }
        }
    }
    buf
}

/// Poll `future` until it completes (`Some`) or `timer` fires first (`None`).
async fn race<F: Future>(timer: &mut Option<BoxFuture<()>>, future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    poll_fn(|cx| {
        if let Poll::Ready(value) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(value));
        }
        if let Some(timer) = timer
            && timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

fn first_byte_timeout(shared: &Endpoint) -> ModelError {
    let limit = shared.timeouts.first_byte.unwrap_or_default();
    ModelError::new(
        ErrorKind::FirstByteTimeout,
        format!(
            "{} sent no response within the first-byte timeout of {}",
            shared.host,
            millis(limit)
        ),
    )
}

/// The error for a final non-2xx `status` whose body (possibly cut short) is `body`.
fn status_error(status: u16, body: &[u8], retry_after: Option<Duration>) -> ModelError {
    let kind = if status == 429 {
        ErrorKind::RateLimited
    } else {
        ErrorKind::UpstreamStatus
    };
    let mut message = format!("upstream answered {}", status_line(status));
    if let Some(detail) = body_detail(body) {
        message.push_str(": ");
        message.push_str(&detail);
    }
    ModelError::new(kind, message)
        .with_status(status)
        .with_retry_after(retry_after)
}

/// The provider's explanation in an error body: `{"error": {"message", "type", "code"}}`,
/// `{"error": "…"}`, `{"message": "…"}` or `{"detail": …}`; else an excerpt of the text.
fn body_detail(body: &[u8]) -> Option<String> {
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        if let Some(message) = json.get("error").and_then(error_message) {
            return Some(message);
        }
        for key in ["message", "detail"] {
            match json.get(key) {
                Some(Value::String(s)) if !s.trim().is_empty() => return Some(excerpt(s)),
                Some(value @ (Value::Array(_) | Value::Object(_))) => {
                    return Some(excerpt(&value.to_string()));
                }
                _ => {}
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    (!text.is_empty()).then(|| excerpt(text))
}

/// `"401 Unauthorized"` for common statuses, `"599"` for others.
fn status_line(status: u16) -> String {
    let reason = match status {
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => return status.to_string(),
    };
    format!("{status} {reason}")
}

/// `"2.5 s"`, or `"3600 s"`: a wait as a person reads it.
fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs >= 10.0 {
        format!("{secs:.0} s")
    } else {
        format!("{secs:.1} s")
    }
}

pub(super) fn millis(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

/// Replace every occurrence of the API key in an error message (a provider may quote the
/// key it rejected).
pub(super) fn redact(mut error: ModelError, key: Option<&Secret>) -> ModelError {
    if let Some(key) = key.map(Secret::expose).filter(|k| !k.is_empty())
        && error.message.contains(key)
    {
        error.message = error.message.replace(key, "<redacted>");
    }
    error
}
