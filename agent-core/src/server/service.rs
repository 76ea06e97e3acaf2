//! [`AgentService`]: the transport-independent request handler.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::chat::{ChatCompletionRequest, ChunkEncoder};
use super::protocol::{self, FrameEncoder};
use super::{ServerConfig, cors};
use crate::agent::{Agent, CancelHandle, RunStream, Session};
use crate::event::{Event, EventKind};
use crate::runtime::BoxFuture;

/// The body of `POST /v1/runs`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RunRequest {
    /// The user input.
    pub input: String,
    /// Continue this session (created on first use); omit for a one-off run.
    #[serde(default)]
    pub session_id: Option<String>,
}

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
    /// [`ServerConfig::max_session_bytes`], so the session could not keep it.
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
    /// [`ServerConfig::body_read_timeout`] (it stopped midway or trickled). Every backend
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
            413 | 400 | 408 | 415 | 501 => "invalid_request_error",
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
    fn json(status: u16, value: &Value) -> Self {
        ApiResponse {
            status,
            headers: vec![("content-type", "application/json".to_string())],
            body: ApiBody::Full(value.to_string().into_bytes()),
        }
    }

    fn sse(body: ResponseBody) -> Self {
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

/// Append the SSE frame of `event` to `out`: `id: <seq>`, `event: <type>`, `data: <json>`.
///
/// ```
/// use agent_core::event::{Event, EventKind};
/// let mut out = String::new();
/// agent_core::server::encode_event_frame(&Event { seq: 2, kind: EventKind::TextDelta { text: "hi".into() } }, &mut out);
/// assert_eq!(out, "id: 2\nevent: text_delta\ndata: {\"seq\":2,\"type\":\"text_delta\",\"text\":\"hi\"}\n\n");
/// ```
pub fn encode_event_frame(event: &Event, out: &mut String) {
    use std::fmt::Write;
    let _ = write!(out, "id: {}\nevent: {}\ndata: ", event.seq, event.name());
    // serde_json never writes raw newlines, so one data line is enough.
    out.push_str(&serde_json::to_string(event).unwrap_or_else(|_| "{}".into()));
    out.push_str("\n\n");
}

/// Serves one agent over the HTTP API; cheap to clone and share between connections.
#[derive(Clone)]
pub struct AgentService {
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    agent: Agent,
    config: ServerConfig,
    sessions: Mutex<HashMap<String, (Session, u64)>>,
    session_clock: AtomicU64,
    /// The bytes of every remembered session's history (see `max_total_session_bytes`).
    session_bytes: Arc<AtomicUsize>,
    running: AtomicUsize,
    active: Mutex<HashMap<u64, CancelHandle>>,
    next_stream: AtomicU64,
    shutting_down: AtomicBool,
}

impl fmt::Debug for AgentService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentService")
            .field("agent", &self.inner.agent)
            .field("config", &self.inner.config)
            .field("running", &self.running_streams())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AgentService {
    /// A service for `agent` with `config`.
    pub fn new(agent: Agent, config: ServerConfig) -> Self {
        AgentService {
            inner: Arc::new(ServiceInner {
                agent,
                config,
                sessions: Mutex::new(HashMap::new()),
                session_clock: AtomicU64::new(0),
                session_bytes: Arc::new(AtomicUsize::new(0)),
                running: AtomicUsize::new(0),
                active: Mutex::new(HashMap::new()),
                next_stream: AtomicU64::new(0),
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The agent served.
    pub fn agent(&self) -> &Agent {
        &self.inner.agent
    }

    /// How many runs are streaming right now.
    pub fn running_streams(&self) -> usize {
        self.inner.running.load(Ordering::Acquire)
    }

    /// Start a graceful shutdown: new runs get 503, and every running stream is cancelled so
    /// that it ends with a `run_cancelled` event (or the chat equivalent) and closes.
    pub fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        for handle in lock(&self.inner.active).values() {
            handle.cancel();
        }
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Handle one request. `path` may include a query string; `headers` are name/value
    /// pairs (any case); `body` is the complete request body, which the backend has already
    /// limited to [`ServerConfig::max_body_bytes`] (answering 413 itself beyond).
    ///
    /// Streaming responses are returned at once; a non-streamed chat completion resolves
    /// when its run ends (dropping the future cancels the run).
    pub fn handle(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> BoxFuture<ApiResponse> {
        let origin = cors::origin(&self.inner.config, headers);
        if let cors::Origin::Refused(refused) = &origin {
            return Box::pin(std::future::ready(cors::refused(refused)));
        }
        let routed = match self.route(method, path, headers, body, &origin) {
            Ok(routed) => routed,
            Err(err) => Routed::Ready(err.into_response()),
        };
        match routed {
            Routed::Ready(mut response) => {
                cors::decorate(&mut response, &origin);
                Box::pin(std::future::ready(response))
            }
            Routed::Later(future) => Box::pin(async move {
                let mut response = future.await;
                cors::decorate(&mut response, &origin);
                response
            }),
        }
    }

    fn route(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        origin: &cors::Origin,
    ) -> Result<Routed, ApiError> {
        let path = path.split('?').next().unwrap_or(path);
        let known = matches!(
            path,
            "/healthz" | "/v1/models" | "/v1/runs" | "/v1/chat/completions"
        ) || protocol::find(path).is_some();
        if !known {
            return Err(ApiError {
                status: 404,
                code: "not_found",
                message: format!(
                    "no route for {method} {path}; see GET /healthz, GET /v1/models, POST /v1/runs, POST /v1/chat/completions, POST /v1/responses, POST /v1/ai-sdk/chat, POST /v1/ag-ui"
                ),
            });
        }
        // RFC 9110: HEAD is allowed wherever GET is (the transport sends no body for it),
        // and every 405 names the allowed methods in `Allow`.
        let readable = matches!(path, "/healthz" | "/v1/models");
        let allowed = if readable {
            "GET, HEAD, OPTIONS"
        } else {
            "POST, OPTIONS"
        };
        if method.eq_ignore_ascii_case("OPTIONS") {
            return Ok(Routed::Ready(cors::options(origin, headers, allowed)));
        }
        let accepted = if readable {
            method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD")
        } else {
            method.eq_ignore_ascii_case("POST")
        };
        if !accepted {
            let mut response = ApiError {
                status: 405,
                code: "method_not_allowed",
                message: format!("{path} only accepts {allowed}"),
            }
            .into_response();
            response.headers.push(("allow", allowed.to_string()));
            return Ok(Routed::Ready(response));
        }
        if path == "/healthz" {
            return Ok(Routed::Ready(ApiResponse::json(
                200,
                &json!({"status": "ok"}),
            )));
        }
        self.check_auth(headers)?;
        if path == "/v1/models" {
            // The agent is the one model this server offers (OpenAI's list shape).
            let id = self.inner.agent.model().name().to_string();
            return Ok(Routed::Ready(ApiResponse::json(
                200,
                &json!({"object": "list", "data": [
                    {"id": id, "object": "model", "created": 0, "owned_by": "agent"}
                ]}),
            )));
        }
        // A run starts only from a JSON request: a cross-site form post (text/plain,
        // form-urlencoded: no preflight) cannot start one.
        if !cors::is_json(headers) {
            return Err(ApiError {
                status: 415,
                code: "unsupported_media_type",
                message: format!("{path} takes a JSON body: send Content-Type: application/json"),
            });
        }
        if body.len() > self.inner.config.max_body_bytes {
            return Err(ApiError::payload_too_large(
                self.inner.config.max_body_bytes,
            ));
        }
        if let Some(start) = protocol::find(path) {
            return self.start_protocol(start(&self.inner.agent, body)?);
        }
        match path {
            "/v1/runs" => {
                let request: RunRequest =
                    serde_json::from_slice(body).map_err(|e| ApiError::invalid_json(&e))?;
                let run = match &request.session_id {
                    Some(id) => {
                        let limit = self.inner.config.max_session_bytes;
                        let input_bytes = crate::agent::message_bytes(
                            &crate::model::Message::user(request.input.as_str()),
                        );
                        if input_bytes > limit {
                            return Err(ApiError::session_turn_too_large(input_bytes, limit));
                        }
                        self.session(id)?.run(request.input)
                    }
                    None => self.inner.agent.run(request.input),
                };
                let permit = self.admit(&run)?;
                let run_id = run.run_id().to_string();
                let mut response = ApiResponse::sse(ResponseBody::new(
                    run,
                    Box::new(EventFrames),
                    permit,
                    &self.inner,
                ));
                response.headers.push(("x-run-id", run_id));
                Ok(Routed::Ready(response))
            }
            _ => {
                let request = ChatCompletionRequest::parse(body)?;
                let (input, history) = request.input_and_history()?;
                let run = self.inner.agent.run_with_history(input, history);
                let model = request
                    .model
                    .clone()
                    .unwrap_or_else(|| self.inner.agent.model().name().to_string());
                let encoder = ChunkEncoder::new(run.run_id(), model, request.include_usage());
                let permit = self.admit(&run)?;
                if request.stream {
                    Ok(Routed::Ready(ApiResponse::sse(ResponseBody::new(
                        run,
                        Box::new(encoder),
                        permit,
                        &self.inner,
                    ))))
                } else {
                    Ok(Routed::Later(Box::pin(complete_chat(run, encoder, permit))))
                }
            }
        }
    }

    /// Admit and answer a front-end protocol's run (see [`protocol`]).
    fn start_protocol(&self, start: protocol::Start) -> Result<Routed, ApiError> {
        match start {
            protocol::Start::Stream {
                run,
                encoder,
                headers,
            } => {
                let permit = self.admit(&run)?;
                let run_id = run.run_id().to_string();
                let mut response =
                    ApiResponse::sse(ResponseBody::new(run, encoder, permit, &self.inner));
                response.headers.extend(headers);
                response.headers.push(("x-run-id", run_id));
                Ok(Routed::Ready(response))
            }
            protocol::Start::Complete { run, finish } => {
                let permit = self.admit(&run)?;
                Ok(Routed::Later(Box::pin(async move {
                    let _permit = permit;
                    finish(run).await
                })))
            }
        }
    }

    fn check_auth(&self, headers: &[(&str, &str)]) -> Result<(), ApiError> {
        let Some(token) = &self.inner.config.bearer_token else {
            return Ok(());
        };
        let given = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| *v)
            .and_then(|v| {
                // RFC 9110 §11.1: the auth scheme is case-insensitive.
                let (scheme, token) = v.trim_start().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            });
        match given {
            Some(given) if constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()) => {
                Ok(())
            }
            _ => Err(ApiError {
                status: 401,
                code: "unauthorized",
                message: "missing or wrong bearer token".into(),
            }),
        }
    }

    fn session(&self, id: &str) -> Result<Session, ApiError> {
        if id.is_empty() || id.len() > 256 {
            return Err(ApiError::bad_request(
                "invalid_session_id",
                "session_id must be 1 to 256 characters",
            ));
        }
        let tick = self.inner.session_clock.fetch_add(1, Ordering::Relaxed);
        let mut sessions = lock(&self.inner.sessions);
        if let Some((session, last_used)) = sessions.get_mut(id) {
            *last_used = tick;
            return Ok(session.clone());
        }
        if sessions.len() >= self.inner.config.max_sessions.max(1) {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest
                && let Some((forgotten, _)) = sessions.remove(&oldest)
            {
                forgotten.detach();
            }
        }
        let session = self.inner.agent.session_in(
            Some(self.inner.config.max_session_bytes),
            Some(self.inner.session_bytes.clone()),
        );
        sessions.insert(id.to_string(), (session.clone(), tick));
        Ok(session)
    }

    /// The bytes of all remembered sessions' histories together.
    pub fn session_bytes(&self) -> usize {
        self.inner.session_bytes.load(Ordering::Acquire)
    }

    /// How many sessions are remembered.
    pub fn session_count(&self) -> usize {
        lock(&self.inner.sessions).len()
    }

    /// Count the run against the concurrent-run limit and register it for shutdown.
    fn admit(&self, run: &RunStream) -> Result<RunPermit, ApiError> {
        let inner = &self.inner;
        if self.is_shutting_down() {
            return Err(ApiError {
                status: 503,
                code: "shutting_down",
                message: "the server is shutting down".into(),
            });
        }
        let limit = inner.config.max_concurrent_runs;
        let admitted = inner
            .running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            return Err(ApiError {
                status: 503,
                code: "too_many_runs",
                message: format!("{limit} runs are already streaming; try again shortly"),
            });
        }
        let id = inner.next_stream.fetch_add(1, Ordering::Relaxed);
        lock(&inner.active).insert(id, run.cancel_handle());
        if self.is_shutting_down() {
            run.cancel_handle().cancel();
        }
        Ok(RunPermit {
            id,
            inner: self.inner.clone(),
        })
    }
}

enum Routed {
    Ready(ApiResponse),
    Later(BoxFuture<ApiResponse>),
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Releases a run's slot in the concurrent-run limit when dropped.
struct RunPermit {
    id: u64,
    inner: Arc<ServiceInner>,
}

impl Drop for RunPermit {
    fn drop(&mut self) {
        lock(&self.inner.active).remove(&self.id);
        self.inner.running.fetch_sub(1, Ordering::AcqRel);
        // A session run has just appended its exchange: keep all sessions within bounds.
        self.inner.forget_sessions_beyond_total();
    }
}

impl ServiceInner {
    /// Forget the least recently used sessions while all sessions together exceed
    /// `max_total_session_bytes`.
    fn forget_sessions_beyond_total(&self) {
        let limit = self.config.max_total_session_bytes;
        if self.session_bytes.load(Ordering::Acquire) <= limit {
            return;
        }
        let mut sessions = lock(&self.sessions);
        let mut by_age: Vec<(u64, String)> = sessions
            .iter()
            .map(|(id, (_, used))| (*used, id.clone()))
            .collect();
        by_age.sort_unstable();
        let mut forgotten = 0usize;
        for (_, id) in by_age {
            if self.session_bytes.load(Ordering::Acquire) <= limit {
                break;
            }
            if let Some((session, _)) = sessions.remove(&id) {
                session.detach();
                forgotten += 1;
            }
        }
        tracing::info!(
            forgotten,
            bytes = self.session_bytes.load(Ordering::Acquire),
            limit,
            "sessions over max_total_session_bytes; least recently used forgotten"
        );
    }
}

async fn complete_chat(
    mut run: RunStream,
    encoder: ChunkEncoder,
    permit: RunPermit,
) -> ApiResponse {
    let _permit = permit;
    while let Some(event) = run.next().await {
        match event.kind {
            EventKind::RunCompleted { text, usage, .. } => {
                return ApiResponse::json(200, &encoder.completion(&text, &usage));
            }
            EventKind::RunFailed { error, .. } => return failed_run_response(&error),
            EventKind::RunCancelled { .. } => return cancelled_run_response(),
            _ => {}
        }
    }
    missing_terminal_response()
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

/// `/v1/runs`: one SSE frame per event.
struct EventFrames;

impl FrameEncoder for EventFrames {
    fn encode(&mut self, event: &Event, out: &mut String) {
        encode_event_frame(event, out);
    }
}

impl FrameEncoder for ChunkEncoder {
    fn encode(&mut self, event: &Event, out: &mut String) {
        ChunkEncoder::encode(self, event, out);
    }
}

/// A streamed response body: one chunk of bytes per event (SSE frames), plus `: keep-alive`
/// comments while the run is idle.
///
/// Each chunk must be written and flushed as soon as it is yielded. The body ends after the
/// frame of the run's terminal event. Dropping it cancels the run (a client disconnect).
pub struct ResponseBody {
    // Boxed so that responses stay small to move around; one allocation per stream.
    state: Box<BodyState>,
}

struct BodyState {
    run: RunStream,
    encoding: Box<dyn FrameEncoder>,
    keep_alive: std::time::Duration,
    timer: Option<BoxFuture<()>>,
    last_sent: Instant,
    runtime: crate::runtime::SharedRuntime,
    _permit: RunPermit,
    done: bool,
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("run", &self.state.run)
            .field("done", &self.state.done)
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    fn new(
        run: RunStream,
        encoding: Box<dyn FrameEncoder>,
        permit: RunPermit,
        inner: &ServiceInner,
    ) -> Self {
        let state = BodyState {
            run,
            encoding,
            keep_alive: inner.config.keep_alive,
            timer: None,
            last_sent: Instant::now(),
            runtime: inner.agent.runtime().clone(),
            _permit: permit,
            done: false,
        };
        ResponseBody {
            state: Box::new(state),
        }
    }
}

impl BodyState {
    fn encode(&mut self, event: &Event) -> Bytes {
        let mut out = String::with_capacity(128);
        self.encoding.encode(event, &mut out);
        Bytes::from(out)
    }

    /// Poll the keep-alive timer; `true` when a keep-alive comment is due now. One timer is
    /// armed at a time and re-armed for the remainder when events were sent meanwhile.
    fn poll_keep_alive(&mut self, cx: &mut Context<'_>) -> bool {
        if self.keep_alive.is_zero() {
            return false;
        }
        loop {
            let timer = match &mut self.timer {
                Some(timer) => timer,
                None => {
                    let due = self.last_sent + self.keep_alive;
                    let wait = due.saturating_duration_since(Instant::now());
                    self.timer.insert(self.runtime.sleep(wait))
                }
            };
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            self.timer = None;
            if self.last_sent.elapsed() >= self.keep_alive {
                return true;
            }
        }
    }
}

impl Stream for ResponseBody {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = &mut *self.state;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.run.poll_next_unpin(cx) {
                Poll::Ready(Some(event)) => {
                    this.done = event.is_terminal();
                    let frame = this.encode(&event);
                    if frame.is_empty() {
                        continue;
                    }
                    this.last_sent = Instant::now();
                    return Poll::Ready(Some(frame));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if this.poll_keep_alive(cx) {
                        this.last_sent = Instant::now();
                        return Poll::Ready(Some(Bytes::from_static(
                            super::KEEP_ALIVE_FRAME.as_bytes(),
                        )));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}
