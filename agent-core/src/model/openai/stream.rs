//! The request state machine: connect (with retries and the first-byte timeout), then
//! decode the SSE body into deltas (with the inactivity timeout).

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;
use serde_json::Value;

use super::chunk::{EXCERPT_CHARS, error_message, excerpt, parse_chunk};
use super::{OpenAiConfig, request};
use crate::error::{ErrorKind, ModelError};
use crate::http::{BodyStream, HttpClient, HttpErrorKind, HttpRequest};
use crate::model::{ModelDelta, ModelRequest};
use crate::policy::{RetryPolicy, Timeouts, parse_retry_after};
use crate::runtime::{BoxFuture, Runtime, SharedRuntime};
use crate::secret::Secret;
use crate::sse::{SseDecoder, SseItem};

/// At most this much of an error response body is read (64 KiB).
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Body chunks consumed in one `poll_next` without producing a delta before the stream
/// yields to the executor (a flood of comments or empty chunks must not starve it).
const CHUNK_BUDGET: usize = 32;

/// What every stream of one model shares: the configuration and the derived URL.
pub(super) struct Shared {
    pub(super) config: OpenAiConfig,
    url: String,
    host: String,
}

impl Shared {
    pub(super) fn new(config: OpenAiConfig) -> Self {
        let url = request::endpoint(&config.base_url);
        let host = request::host_of(&url).to_owned();
        Shared { config, url, host }
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// The same configuration with other timeouts (a per-agent or per-run override).
    pub(super) fn with_timeouts(&self, timeouts: Timeouts) -> Self {
        let mut config = self.config.clone();
        config.timeouts = timeouts;
        Shared {
            config,
            url: self.url.clone(),
            host: self.host.clone(),
        }
    }

    fn key(&self) -> Option<&Secret> {
        self.config.api_key.as_ref()
    }
}

/// The [`ModelStream`](crate::model::ModelStream) of an [`OpenAiModel`](super::OpenAiModel).
pub(super) struct OpenAiStream {
    state: State,
    /// Deltas parsed but not yet yielded (one chunk may hold several).
    pending: VecDeque<ModelDelta>,
}

enum State {
    /// Sending the request, retrying, waiting for the first body byte.
    Connecting(BoxFuture<Result<Connected, ModelError>>),
    /// Reading the event stream.
    Streaming(Box<Streaming>),
    /// Ended (normally or with an error); the response body has been dropped.
    Done,
}

impl OpenAiStream {
    pub(super) fn new(
        shared: Arc<Shared>,
        client: Arc<dyn HttpClient>,
        request: ModelRequest,
        runtime: SharedRuntime,
    ) -> Self {
        // An `async fn` does nothing until polled: no I/O happens before the first poll.
        OpenAiStream {
            state: State::Connecting(Box::pin(connect(shared, client, request, runtime))),
            pending: VecDeque::new(),
        }
    }
}

impl Stream for OpenAiStream {
    type Item = Result<ModelDelta, ModelError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(delta) = this.pending.pop_front() {
            return Poll::Ready(Some(Ok(delta)));
        }
        loop {
            match &mut this.state {
                State::Connecting(connecting) => match connecting.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(connected)) => {
                        this.state = State::Streaming(Box::new(Streaming::new(connected)));
                    }
                    Poll::Ready(Err(error)) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(error)));
                    }
                },
                State::Streaming(streaming) => {
                    let outcome = match streaming.poll_deltas(cx, &mut this.pending) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(outcome) => outcome,
                    };
                    match outcome {
                        Outcome::Deltas => {
                            if let Some(delta) = this.pending.pop_front() {
                                return Poll::Ready(Some(Ok(delta)));
                            }
                        }
                        Outcome::End => {
                            this.state = State::Done;
                            return Poll::Ready(None);
                        }
                        Outcome::Failed(error) => {
                            this.state = State::Done;
                            return Poll::Ready(Some(Err(error)));
                        }
                    }
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

/// A response whose body has started (or ended empty) within the first-byte timeout.
struct Connected {
    shared: Arc<Shared>,
    runtime: SharedRuntime,
    /// The rest of the body; `None` if it ended before any byte.
    body: Option<BodyStream>,
    /// The first non-empty chunk.
    first_chunk: Option<Bytes>,
    /// When the first chunk arrived: the inactivity clock starts there.
    first_byte_at: Instant,
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
async fn connect(
    shared: Arc<Shared>,
    client: Arc<dyn HttpClient>,
    request: ModelRequest,
    runtime: SharedRuntime,
) -> Result<Connected, ModelError> {
    let http = request::http_request(&shared.config, &shared.url, &request);
    drop(request);
    let policy = shared.config.retry;
    // Waiting between attempts counts against the first-byte timeout: a `Retry-After` (or a
    // backoff) longer than what is left of it fails now instead of waiting silently.
    let started = Instant::now();
    let budget = shared.config.timeouts.first_byte;
    let mut attempt = 0;
    loop {
        let can_retry = attempt < policy.max_retries;
        match attempt_once(&shared, &*client, http.clone(), &runtime, can_retry).await {
            Attempt::Connected(connected) => return Ok(connected),
            Attempt::Failed(error) => return Err(redact(error, shared.key())),
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
                        return Err(redact(error, shared.key()));
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
    shared: &Arc<Shared>,
    client: &dyn HttpClient,
    http: HttpRequest,
    runtime: &SharedRuntime,
    can_retry: bool,
) -> Attempt {
    let timeouts = shared.config.timeouts;
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
                        shared: shared.clone(),
                        runtime: runtime.clone(),
                        body: Some(body),
                        first_chunk: Some(chunk),
                        first_byte_at: Instant::now(),
                    });
                }
                Some(None) => {
                    return Attempt::Connected(Connected {
                        shared: shared.clone(),
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
                request::redact_location(&location)
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

fn first_byte_timeout(shared: &Shared) -> ModelError {
    let limit = shared.config.timeouts.first_byte.unwrap_or_default();
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

fn millis(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

/// Replace every occurrence of the API key in an error message (a provider may quote the
/// key it rejected).
fn redact(mut error: ModelError, key: Option<&Secret>) -> ModelError {
    if let Some(key) = key.map(Secret::expose).filter(|k| !k.is_empty())
        && error.message.contains(key)
    {
        error.message = error.message.replace(key, "<redacted>");
    }
    error
}

/// What [`Streaming::poll_deltas`] produced.
enum Outcome {
    /// New deltas are in the queue.
    Deltas,
    /// The answer is complete.
    End,
    /// The stream failed.
    Failed(ModelError),
}

/// Reading the SSE body of a 2xx response.
struct Streaming {
    shared: Arc<Shared>,
    runtime: SharedRuntime,
    /// `None` once the body has ended.
    body: Option<BodyStream>,
    decoder: SseDecoder,
    inactivity: Option<Inactivity>,
    /// Events seen (including `[DONE]`).
    events: u64,
    /// A finish reason was seen.
    finished: bool,
    /// The first bytes of the body, kept while no event has been seen, for the error of a
    /// body that is not an event stream.
    head: Vec<u8>,
}

impl Streaming {
    fn new(connected: Connected) -> Self {
        let Connected {
            shared,
            runtime,
            body,
            first_chunk,
            first_byte_at,
        } = connected;
        let inactivity = shared.config.timeouts.inactivity.map(|limit| Inactivity {
            limit,
            last_event: first_byte_at,
            timer: None,
        });
        let mut streaming = Streaming {
            decoder: SseDecoder::with_limits(shared.config.sse_limits),
            shared,
            runtime,
            body,
            inactivity,
            events: 0,
            finished: false,
            head: Vec::new(),
        };
        match first_chunk {
            Some(chunk) => {
                streaming.keep_head(&chunk);
                streaming.decoder.push(&chunk);
            }
            None => streaming.decoder.finish(),
        }
        streaming
    }

    fn keep_head(&mut self, chunk: &[u8]) {
        if self.events == 0 && self.head.len() < EXCERPT_CHARS {
            let take = chunk.len().min(EXCERPT_CHARS - self.head.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
    }

    /// Decode until at least one delta is queued, the stream ends or fails, or the body has
    /// nothing more for now.
    fn poll_deltas(
        &mut self,
        cx: &mut Context<'_>,
        pending: &mut VecDeque<ModelDelta>,
    ) -> Poll<Outcome> {
        let mut chunks = 0;
        loop {
            // Drain what the decoder already holds before reading more.
            while let Some(item) = self.decoder.next_item() {
                let event = match item {
                    Ok(SseItem::Event(event)) => event,
                    // Comments (`: keep-alive`) and `retry` fields: not events, no reset.
                    Ok(SseItem::Comment(_) | SseItem::Retry(_)) => continue,
                    Err(error) => {
                        return Poll::Ready(Outcome::Failed(ModelError::new(
                            ErrorKind::ResponseTooLarge,
                            format!(
                                "the response stream from {} is too large: {error}",
                                self.shared.host
                            ),
                        )));
                    }
                };
                self.events += 1;
                if let Some(inactivity) = &mut self.inactivity {
                    // One clock read per event; the timer itself is only re-armed when it fires.
                    inactivity.last_event = Instant::now();
                }
                let data = event.data.trim();
                if data == "[DONE]" {
                    return Poll::Ready(Outcome::End);
                }
                if event.event == "error" {
                    return Poll::Ready(Outcome::Failed(self.error_event(data)));
                }
                if data.is_empty() {
                    continue;
                }
                match parse_chunk(data) {
                    Ok(deltas) => {
                        for delta in deltas {
                            self.finished |= matches!(delta, ModelDelta::Finish(_));
                            pending.push_back(delta);
                        }
                        if !pending.is_empty() {
                            return Poll::Ready(Outcome::Deltas);
                        }
                    }
                    Err(error) => {
                        return Poll::Ready(Outcome::Failed(redact(error, self.shared.key())));
                    }
                }
            }

            let Some(body) = &mut self.body else {
                // The body ended and the decoder is drained.
                return Poll::Ready(self.end_of_body());
            };
            if chunks == CHUNK_BUDGET {
                // Many chunks without a delta: let other tasks run, then continue.
                if let Some(error) = self.poll_inactivity(cx) {
                    return Poll::Ready(Outcome::Failed(error));
                }
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match body.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    chunks += 1;
                    self.keep_head(&chunk);
                    self.decoder.push(&chunk);
                }
                Poll::Ready(Some(Err(error))) => {
                    self.body = None;
                    return Poll::Ready(Outcome::Failed(ModelError::new(
                        ErrorKind::UpstreamReset,
                        format!(
                            "the connection to {} broke mid-stream: {}",
                            self.shared.host, error.message
                        ),
                    )));
                }
                Poll::Ready(None) => {
                    self.body = None;
                    self.decoder.finish();
                }
                Poll::Pending => {
                    if let Some(error) = self.poll_inactivity(cx) {
                        return Poll::Ready(Outcome::Failed(error));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// `Some(error)` when the inactivity timeout has passed; otherwise its timer is armed
    /// with `cx`'s waker.
    fn poll_inactivity(&mut self, cx: &mut Context<'_>) -> Option<ModelError> {
        let inactivity = self.inactivity.as_mut()?;
        match inactivity.poll_expired(cx, &*self.runtime) {
            Poll::Pending => None,
            Poll::Ready(()) => Some(ModelError::new(
                ErrorKind::InactivityTimeout,
                format!(
                    "{} sent no event within the inactivity timeout of {}",
                    self.shared.host,
                    millis(inactivity.limit)
                ),
            )),
        }
    }

    /// An `event: error` frame: the provider's message.
    fn error_event(&self, data: &str) -> ModelError {
        let message = serde_json::from_str::<Value>(data)
            .ok()
            .and_then(|json| error_message(json.get("error").unwrap_or(&json)))
            .unwrap_or_else(|| excerpt(data));
        redact(
            ModelError::new(
                ErrorKind::Model,
                format!(
                    "{} reported an error mid-stream: {message}",
                    self.shared.host
                ),
            ),
            self.shared.key(),
        )
    }

    /// The body ended without `[DONE]`.
    fn end_of_body(&self) -> Outcome {
        if self.events == 0 {
            let began = excerpt(&String::from_utf8_lossy(&self.head));
            let message = if began.is_empty() {
                format!(
                    "{} answered with an empty body instead of an event stream",
                    self.shared.host
                )
            } else {
                format!(
                    "{} answered without a single SSE event (is this an OpenAI-compatible streaming endpoint?); the body began with: {began}",
                    self.shared.host
                )
            };
            return Outcome::Failed(redact(
                ModelError::new(ErrorKind::MalformedResponse, message),
                self.shared.key(),
            ));
        }
        if self.decoder.has_pending_data() {
            tracing::debug!(host = %self.shared.host, "the response ended in the middle of an event; it was discarded");
        }
        if !self.finished {
            tracing::debug!(host = %self.shared.host, "the response ended without [DONE] or a finish reason");
        }
        Outcome::End
    }
}

/// The inactivity timeout with a single timer: events only record the time; when the timer
/// fires it compares with the last event and re-arms for the remainder.
struct Inactivity {
    limit: Duration,
    last_event: Instant,
    timer: Option<BoxFuture<()>>,
}

impl Inactivity {
    /// `Ready` once `limit` has passed since the last event.
    fn poll_expired(&mut self, cx: &mut Context<'_>, runtime: &dyn Runtime) -> Poll<()> {
        loop {
            let timer = match &mut self.timer {
                Some(timer) => timer,
                None => {
                    let idle = self.last_event.elapsed();
                    if idle >= self.limit {
                        return Poll::Ready(());
                    }
                    self.timer.insert(runtime.sleep(self.limit - idle))
                }
            };
            match timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => self.timer = None,
            }
        }
    }
}
