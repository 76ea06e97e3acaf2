//! [`AgentService`]: the transport-independent request handler.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::body::ResponseBody;
use super::chat::{ChatCompletionRequest, ChunkEncoder};
use super::protocol::{self, FrameEncoder};
use super::response::{
    ApiError, ApiResponse, cancelled_run_response, failed_run_response, missing_terminal_response,
};
use super::runs::{
    AttachError, RunEvents, RunLimits, RunLog, RunRegistry, SessionTurn, StoreContext, record_json,
};
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

/// Append the SSE frame of `event` to `out`: `id: <seq>`, `event: <type>`, `data: <json>`.
///
/// ```
/// use agent_core::event::{Event, EventKind};
/// let mut out = String::new();
/// agent_core::server::encode_event_frame(&Event { seq: 2, kind: EventKind::TextDelta { text: "hi".into() } }, &mut out);
/// assert_eq!(out, "id: 2\nevent: text_delta\ndata: {\"seq\":2,\"type\":\"text_delta\",\"text\":\"hi\"}\n\n");
/// ```
pub fn encode_event_frame(event: &Event, out: &mut String) {
    // Text and reasoning deltas are most of a stream: a template, no serializer.
    let delta = match &event.kind {
        EventKind::TextDelta { text } => Some(("text_delta", text)),
        EventKind::ReasoningDelta { text } => Some(("reasoning_delta", text)),
        _ => None,
    };
    if let Some((name, text)) = delta {
        out.push_str("id: ");
        push_u64(out, event.seq);
        out.push_str("\nevent: ");
        out.push_str(name);
        out.push_str("\ndata: {\"seq\":");
        push_u64(out, event.seq);
        out.push_str(",\"type\":\"");
        out.push_str(name);
        out.push_str("\",\"text\":");
        super::json_text::push_json_str(out, text);
        out.push_str("}\n\n");
        return;
    }
    use std::fmt::Write;
    let _ = write!(out, "id: {}\nevent: {}\ndata: ", event.seq, event.name());
    // serde_json never writes raw newlines, so one data line is enough.
    out.push_str(&serde_json::to_string(event).unwrap_or_else(|_| "{}".into()));
    out.push_str("\n\n");
}

/// Append the decimal digits of `n` (what `Display` writes, without the formatter).
pub(crate) fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(d as char);
    }
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
    /// Every addressable run (live, and finished within the retention).
    runs: Arc<RunRegistry>,
    /// Where sessions and runs are kept, with this instance's name and lease.
    store: Option<StoreContext>,
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
        let store = config.store.clone().map(|store| StoreContext {
            store,
            owner: config
                .instance_id
                .clone()
                .unwrap_or_else(crate::agent::new_instance_id),
            lease: config.run_lease.max(Duration::from_millis(100)),
        });
        let service = AgentService {
            inner: Arc::new(ServiceInner {
                agent,
                sessions: Mutex::new(HashMap::new()),
                session_clock: AtomicU64::new(0),
                session_bytes: Arc::new(AtomicUsize::new(0)),
                running: AtomicUsize::new(0),
                active: Mutex::new(HashMap::new()),
                next_stream: AtomicU64::new(0),
                shutting_down: AtomicBool::new(false),
                runs: RunRegistry::new(
                    RunLimits {
                        max_log_bytes: config.max_run_log_bytes,
                        retention: config.run_retention,
                        max_retained: config.max_retained_runs,
                    },
                    store.clone(),
                ),
                store: store.clone(),
                config,
            }),
        };
        if let Some(ctx) = store {
            service.watch_store(ctx);
        }
        service
    }

    /// With a store: act on signals for this instance's runs (cancel requests, readers on
    /// other instances), and keep a task that renews this instance's leases and marks runs
    /// whose instance was lost failed, every third of the lease.
    fn watch_store(&self, ctx: StoreContext) {
        let weak = Arc::downgrade(&self.inner);
        ctx.store.on_signal(Box::new(move |signal| {
            let Some(inner) = weak.upgrade() else {
                return std::ops::ControlFlow::Break(());
            };
            if let Some(log) = inner.runs.get(signal.run_id()) {
                match signal {
                    crate::store::Signal::Cancel(_) => log.cancel(),
                    crate::store::Signal::Reading(_) => log.note_remote_reader(),
                }
            }
            std::ops::ControlFlow::Continue(())
        }));
        let weak = Arc::downgrade(&self.inner);
        let runtime = self.inner.agent.runtime().clone();
        let period = ctx.lease / 3;
        self.inner.agent.runtime().spawn(Box::pin(async move {
            loop {
                {
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    let ids = inner.runs.live_ids();
                    drop(inner);
                    if !ids.is_empty() {
                        match ctx.store.renew_leases(&ctx.owner, ids, ctx.lease).await {
                            Ok(cancel) => {
                                if let Some(inner) = weak.upgrade() {
                                    for id in cancel {
                                        if let Some(log) = inner.runs.get(&id) {
                                            log.cancel();
                                        }
                                    }
                                }
                            }
                            Err(err) => {
                                tracing::warn!(error = %err, "could not renew this instance's run leases")
                            }
                        }
                    }
                    match ctx.store.fail_expired().await {
                        Ok(failed) if !failed.is_empty() => {
                            tracing::warn!(runs = ?failed, "runs whose instance was lost were marked failed")
                        }
                        Ok(_) => {}
                        Err(err) => {
                            tracing::warn!(error = %err, "could not look for runs of lost instances")
                        }
                    }
                }
                runtime.sleep(period).await;
            }
        }));
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
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let Some(resource) = Resource::find(path) else {
            return Err(ApiError {
                status: 404,
                code: "not_found",
                message: format!(
                    "no route for {method} {path}; see GET /healthz, GET /v1/models, POST /v1/runs, GET /v1/runs/{{id}}, GET /v1/runs/{{id}}/events, POST /v1/runs/{{id}}/cancel, POST /v1/runs/{{id}}/approvals, POST /v1/chat/completions, POST /v1/responses, POST /v1/ai-sdk/chat, POST /v1/ag-ui"
                ),
            });
        };
        // RFC 9110: HEAD is allowed wherever GET is (the transport sends no body for it),
        // and every 405 names the allowed methods in `Allow`.
        let readable = resource.is_readable();
        let allowed = if readable {
            "GET, HEAD, OPTIONS"
        } else {
            "POST, OPTIONS"
        };
        if method.eq_ignore_ascii_case("OPTIONS") {
            return Ok(Routed::Ready(cors::options(origin, headers, allowed)));
        }
        let head = method.eq_ignore_ascii_case("HEAD");
        let accepted = if readable {
            method.eq_ignore_ascii_case("GET") || head
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
        if let Resource::Healthz = resource {
            return Ok(Routed::Ready(ApiResponse::json(
                200,
                &json!({"status": "ok"}),
            )));
        }
        self.check_auth(headers)?;
        match resource {
            Resource::Models => {
                // The agent is the one model this server offers (OpenAI's list shape).
                let id = self.inner.agent.model().name().to_string();
                return Ok(Routed::Ready(ApiResponse::json(
                    200,
                    &json!({"object": "list", "data": [
                        {"id": id, "object": "model", "created": 0, "owned_by": "agent"}
                    ]}),
                )));
            }
            Resource::Run(id) => {
                if let Some(log) = self.inner.runs.get(id) {
                    return Ok(Routed::Ready(ApiResponse::json(200, &log.status_json())));
                }
                let store = self.stored(id)?;
                let id = id.to_string();
                return Ok(Routed::Later(Box::pin(async move {
                    match store.run(&id).await {
                        Ok(Some(record)) => ApiResponse::json(200, &record_json(&record)),
                        Ok(None) => run_not_found(&id).into_response(),
                        Err(err) => store_unavailable(&err).into_response(),
                    }
                })));
            }
            Resource::RunEvents(id) => return self.run_events(id, headers, query, head),
            Resource::RunCancel(id) => return self.cancel_run(id),
            _ => {}
        }
        // A run starts (or is approved) only from a JSON request: a cross-site form post
        // (text/plain, form-urlencoded: no preflight) cannot start one.
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
        match resource {
            Resource::RunApprovals(id) => {
                // Approvals reach a run held by this instance (a run on another instance of a
                // shared store is not decided through this one).
                let log = self.inner.runs.get(id).ok_or_else(|| run_not_found(id))?;
                Ok(Routed::Ready(super::approvals::decide(&log, body)?))
            }
            Resource::Protocol(start) => self.start_protocol(start(&self.inner.agent, body)?),
            Resource::Runs => {
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
                        if let Some(ctx) = &self.inner.store {
                            check_session_id(id)?;
                            return Ok(self.stored_session_run(ctx, id.clone(), request.input));
                        }
                        self.session(id)?.run(request.input)
                    }
                    None => self.inner.agent.run(request.input),
                };
                // The one resumable stream: its frames carry `id: <seq>`, so a client that
                // lost its connection reads on from GET /v1/runs/{id}/events.
                let grace = self.inner.config.run_detach_grace;
                self.stream(run, Box::new(EventFrames), grace, Vec::new())
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
                if request.stream {
                    self.stream(run, Box::new(encoder), Duration::ZERO, Vec::new())
                } else {
                    let events = self.register(run, Duration::ZERO)?;
                    Ok(later_with_run_id(
                        events.run_id().to_string(),
                        Box::pin(complete_chat(events, encoder)),
                    ))
                }
            }
        }
    }

    /// Admit `run`, register it, and answer with its frames as SSE (`x-run-id` names it).
    fn stream(
        &self,
        run: RunStream,
        encoder: Box<dyn FrameEncoder>,
        detach_grace: Duration,
        headers: Vec<(&'static str, String)>,
    ) -> Result<Routed, ApiError> {
        let events = self.register(run, detach_grace)?;
        let run_id = events.run_id().to_string();
        let mut response = ApiResponse::sse(self.body(events, encoder));
        response.headers.extend(headers);
        response.headers.push(("x-run-id", run_id));
        Ok(Routed::Ready(response))
    }

    fn body(&self, events: RunEvents, encoder: Box<dyn FrameEncoder>) -> ResponseBody {
        ResponseBody::new(
            events,
            encoder,
            self.inner.config.keep_alive,
            self.inner.agent.runtime().clone(),
        )
    }

    /// Admit `run` against the concurrent-run limit and make it addressable; its first
    /// reader is returned.
    fn register(&self, run: RunStream, detach_grace: Duration) -> Result<RunEvents, ApiError> {
        self.register_turn(run, detach_grace, None)
    }

    fn register_turn(
        &self,
        run: RunStream,
        detach_grace: Duration,
        session: Option<SessionTurn>,
    ) -> Result<RunEvents, ApiError> {
        let permit = self.admit(&run)?;
        Ok(self.inner.runs.start(
            run,
            Box::new(permit),
            detach_grace,
            self.inner.agent.runtime().clone(),
            session,
        ))
    }

    /// A `/v1/runs` turn of a session kept in the store: load the session, run on it, and
    /// append the turn with the run's `run_completed` (see the runs module).
    fn stored_session_run(&self, ctx: &StoreContext, session_id: String, input: String) -> Routed {
        let store = ctx.store.clone();
        let service = self.clone();
        Routed::Later(Box::pin(async move {
            let history = match store.load_session(&session_id).await {
                Ok(history) => history,
                Err(err) => {
                    tracing::error!(error = %err, "could not load a session from the store");
                    return store_unavailable(&err).into_response();
                }
            };
            let max_bytes = service.inner.config.max_session_bytes;
            let history = crate::agent::bounded_history(history, max_bytes);
            let (run, capture) = service.inner.agent.run_capturing(input, history);
            let turn = SessionTurn {
                session_id,
                capture,
                max_bytes,
            };
            let grace = service.inner.config.run_detach_grace;
            let events = match service.register_turn(run, grace, Some(turn)) {
                Ok(events) => events,
                Err(err) => return err.into_response(),
            };
            let run_id = events.run_id().to_string();
            let mut response = ApiResponse::sse(service.body(events, Box::new(EventFrames)));
            response.headers.push(("x-run-id", run_id));
            response
        }))
    }

    /// The store, to look up run `id` that this instance does not hold (404 without one).
    fn stored(&self, id: &str) -> Result<crate::store::SharedStore, ApiError> {
        match &self.inner.store {
            Some(ctx) => Ok(ctx.store.clone()),
            None => Err(run_not_found(id)),
        }
    }

    /// Admit and answer a front-end protocol's run (see [`protocol`]).
    fn start_protocol(&self, start: protocol::Start) -> Result<Routed, ApiError> {
        match start {
            protocol::Start::Stream {
                run,
                encoder,
                headers,
            } => self.stream(run, encoder, Duration::ZERO, headers),
            protocol::Start::Complete { run, finish } => {
                let events = self.register(run, Duration::ZERO)?;
                Ok(later_with_run_id(
                    events.run_id().to_string(),
                    finish(events),
                ))
            }
        }
    }

    /// `GET /v1/runs/{id}/events`: the run's events as SSE from the start, or from after
    /// `Last-Event-ID` (the header, or the `last_event_id` query parameter for a first
    /// `EventSource` connection, which cannot set headers; the header wins, as a browser's
    /// reconnect sends it).
    fn run_events(
        &self,
        id: &str,
        headers: &[(&str, &str)],
        query: &str,
        head: bool,
    ) -> Result<Routed, ApiError> {
        let header = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("last-event-id"))
            .map(|(_, v)| *v);
        let param = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("last_event_id="));
        let from = match header.or(param).map(str::trim) {
            None | Some("") => 0,
            Some(seq) => seq.parse::<u64>().map(|seq| seq + 1).map_err(|_| {
                ApiError::bad_request(
                    "invalid_last_event_id",
                    "Last-Event-ID must be the seq of an event of this run (a decimal number)",
                )
            })?,
        };
        let Some(log) = self.inner.runs.get(id) else {
            let store = self.stored(id)?;
            let service = self.clone();
            let id = id.to_string();
            return Ok(Routed::Later(Box::pin(async move {
                let record = match store.run(&id).await {
                    Ok(Some(record)) => record,
                    Ok(None) => return run_not_found(&id).into_response(),
                    Err(err) => return store_unavailable(&err).into_response(),
                };
                if record.status != crate::store::RunStatus::Running && from >= record.next_seq {
                    return no_more_events();
                }
                if from > record.next_seq && record.status != crate::store::RunStatus::Running {
                    return ahead(record.next_seq).into_response();
                }
                if head {
                    return head_of_events();
                }
                let runtime = service.inner.agent.runtime().clone();
                let events = RunEvents::from_store(store, &id, from, runtime);
                service.events_response(events, &id)
            })));
        };
        if log.exhausted_at(from) {
            // Nothing more will come: 204 tells an EventSource to stop reconnecting.
            return Ok(Routed::Ready(no_more_events()));
        }
        if head {
            return Ok(Routed::Ready(head_of_events()));
        }
        let attached = match (RunLog::attach(&log, from), log.store()) {
            // Stored events the window no longer holds are read from the store.
            (Err(AttachError::Expired { .. }), Some(store)) => Ok(RunEvents::from_store(
                store,
                log.id(),
                from,
                self.inner.agent.runtime().clone(),
            )),
            (attached, _) => attached,
        };
        let events = attached.map_err(|err| match err {
            AttachError::Expired { first } => ApiError {
                status: 410,
                code: "events_expired",
                message: format!(
                    "the events before seq {first} of this run are no longer held (the run's log is bounded by max_run_log_bytes)"
                ),
            },
            AttachError::Ahead { next } => ahead(next),
        })?;
        Ok(Routed::Ready(self.events_response(events, log.id())))
    }

    fn events_response(&self, events: RunEvents, id: &str) -> ApiResponse {
        let body = self
            .body(events, Box::new(EventFrames))
            .with_preamble(SSE_RETRY);
        let mut response = ApiResponse::sse(body);
        response.headers.push(("x-run-id", id.to_string()));
        response
    }

    /// `POST /v1/runs/{id}/cancel`: cancel the run, wait (bounded) for it to end, and answer
    /// its status (a finished run's status as it is: cancelling twice is harmless).
    fn cancel_run(&self, id: &str) -> Result<Routed, ApiError> {
        let Some(log) = self.inner.runs.get(id) else {
            let store = self.stored(id)?;
            let runtime = self.inner.agent.runtime().clone();
            let id = id.to_string();
            return Ok(Routed::Later(Box::pin(async move {
                cancel_stored(store, runtime, id).await
            })));
        };
        log.cancel();
        let runtime = self.inner.agent.runtime().clone();
        Ok(Routed::Later(Box::pin(async move {
            let waiter = log.waiter_id();
            let ended = crate::runtime::timeout(
                &*runtime,
                CANCEL_WAIT,
                std::future::poll_fn(|cx| log.poll_drive(cx, waiter)),
            )
            .await;
            if ended.is_none() {
                tracing::warn!(run_id = %log.id(), "a cancelled run did not end within {CANCEL_WAIT:?}");
            }
            ApiResponse::json(200, &log.status_json())
        })))
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
        check_session_id(id)?;
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

    /// How many runs are addressable over `/v1/runs/{id}`: the live ones and the finished
    /// ones within [`ServerConfig::run_retention`] and
    /// [`ServerConfig::max_retained_runs`].
    pub fn addressable_runs(&self) -> usize {
        self.inner.runs.len()
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

fn check_session_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 256 {
        return Err(ApiError::bad_request(
            "invalid_session_id",
            "session_id must be 1 to 256 characters",
        ));
    }
    Ok(())
}

fn run_not_found(id: &str) -> ApiError {
    ApiError {
        status: 404,
        code: "run_not_found",
        message: format!(
            "no run {id:?}: it never existed here, or it ended longer ago than the retention period"
        ),
    }
}

/// The store failed: 503 with its kind (the message went to the log).
fn store_unavailable(err: &crate::store::StoreError) -> ApiError {
    ApiError {
        status: 503,
        code: "store_unavailable",
        message: format!(
            "the session and run store is unavailable ({}); try again shortly",
            err.kind.as_str()
        ),
    }
}

fn ahead(next: u64) -> ApiError {
    ApiError::bad_request(
        "invalid_last_event_id",
        format!("Last-Event-ID is beyond this run's events (the next seq is {next})"),
    )
}

/// Nothing more will come: 204 tells an EventSource to stop reconnecting.
fn no_more_events() -> ApiResponse {
    ApiResponse {
        status: 204,
        headers: Vec::new(),
        body: super::ApiBody::Full(Vec::new()),
    }
}

fn head_of_events() -> ApiResponse {
    let mut response = ApiResponse::json(200, &json!({}));
    response.headers = vec![("content-type", "text/event-stream".to_string())];
    response.body = super::ApiBody::Full(Vec::new());
    response
}

/// `POST /v1/runs/{id}/cancel` of a run another instance runs: record the request (the
/// owner is told through the store), wait (bounded) for the run to end, answer its status.
async fn cancel_stored(
    store: crate::store::SharedStore,
    runtime: crate::runtime::SharedRuntime,
    id: String,
) -> ApiResponse {
    let mut watch = store.watch(&id);
    match store.request_cancel(&id).await {
        Ok(_) => {}
        Err(err) => return store_unavailable(&err).into_response(),
    }
    let ended = crate::runtime::timeout(&*runtime, CANCEL_WAIT, async {
        loop {
            match store.run(&id).await {
                Ok(Some(record)) if record.status != crate::store::RunStatus::Running => {
                    return Ok(Some(record));
                }
                Ok(Some(_)) => watch.changed().await,
                Ok(None) => return Ok(None),
                Err(err) => return Err(err),
            }
        }
    })
    .await;
    match ended {
        Some(Ok(Some(record))) => ApiResponse::json(200, &record_json(&record)),
        Some(Ok(None)) => run_not_found(&id).into_response(),
        Some(Err(err)) => store_unavailable(&err).into_response(),
        None => {
            tracing::warn!(run_id = %id, "a cancelled run did not end within {CANCEL_WAIT:?}");
            match store.run(&id).await {
                Ok(Some(record)) => ApiResponse::json(200, &record_json(&record)),
                Ok(None) => run_not_found(&id).into_response(),
                Err(err) => store_unavailable(&err).into_response(),
            }
        }
    }
}

enum Routed {
    Ready(ApiResponse),
    Later(BoxFuture<ApiResponse>),
}

/// A non-streamed answer for a registered run, with its `x-run-id` (so that it can be
/// cancelled or looked up while the client waits).
fn later_with_run_id(run_id: String, answer: BoxFuture<ApiResponse>) -> Routed {
    Routed::Later(Box::pin(async move {
        let mut response = answer.await;
        response.headers.push(("x-run-id", run_id));
        response
    }))
}

/// How long `POST /v1/runs/{id}/cancel` waits for the run to end before answering.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// Sent first on `GET /v1/runs/{id}/events`: a browser's `EventSource` reconnects after one
/// second (instead of its default three) when the connection drops.
const SSE_RETRY: &str = "retry: 1000\n\n";

/// What a request path names.
#[derive(Clone, Copy)]
enum Resource<'a> {
    Healthz,
    Models,
    Runs,
    Run(&'a str),
    RunEvents(&'a str),
    RunCancel(&'a str),
    RunApprovals(&'a str),
    ChatCompletions,
    Protocol(protocol::StartFn),
}

impl<'a> Resource<'a> {
    fn find(path: &'a str) -> Option<Self> {
        match path {
            "/healthz" => return Some(Resource::Healthz),
            "/v1/models" => return Some(Resource::Models),
            "/v1/runs" => return Some(Resource::Runs),
            "/v1/chat/completions" => return Some(Resource::ChatCompletions),
            _ => {}
        }
        if let Some(start) = protocol::find(path) {
            return Some(Resource::Protocol(start));
        }
        let rest = path.strip_prefix("/v1/runs/")?;
        let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if id.is_empty() {
            return None;
        }
        match tail {
            "" => Some(Resource::Run(id)),
            "events" => Some(Resource::RunEvents(id)),
            "cancel" => Some(Resource::RunCancel(id)),
            "approvals" => Some(Resource::RunApprovals(id)),
            _ => None,
        }
    }

    /// Read with GET (and HEAD); everything else takes POST.
    fn is_readable(self) -> bool {
        matches!(
            self,
            Resource::Healthz | Resource::Models | Resource::Run(_) | Resource::RunEvents(_)
        )
    }
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

async fn complete_chat(mut events: RunEvents, encoder: ChunkEncoder) -> ApiResponse {
    while let Some(event) = events.next().await {
        match &event.kind {
            EventKind::RunCompleted { text, usage, .. } => {
                return ApiResponse::json(200, &encoder.completion(text, usage));
            }
            EventKind::RunFailed { error, .. } => return failed_run_response(error),
            EventKind::RunCancelled { .. } => return cancelled_run_response(),
            _ => {}
        }
    }
    missing_terminal_response()
}

/// The answer `POST /v1/runs` gives for `run`, for a route of your own: status 200, the SSE
/// headers (`content-type: text/event-stream`, `cache-control: no-cache`,
/// `x-accel-buffering: no`), `x-run-id`, one frame per event (`id: <seq>`) and a
/// `: keep-alive` comment after `keep_alive` of silence (zero: none). Dropping the body
/// cancels the run. A backend turns it into its own response type (`backend_tokio::sse_response`
/// for axum); a server of your own writes and flushes each chunk as it comes.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use futures_util::StreamExt;
/// use agent_core::agent::Agent;
/// use agent_core::model::{ScriptedModel, Turn};
/// use agent_core::runtime::{block_on, TestRuntime};
/// use agent_core::server::{sse_response, ApiBody};
///
/// let agent = Agent::builder()
///     .model(ScriptedModel::new([Turn::new().text("Hi!")]))
///     .runtime(TestRuntime::new())
///     .build()
///     .unwrap();
/// let response = sse_response(agent.run("hello"), Duration::from_secs(15));
/// assert!(response.headers.iter().any(|(n, v)| *n == "x-accel-buffering" && v == "no"));
/// let ApiBody::Stream(body) = response.body else { unreachable!() };
/// let text = String::from_utf8(block_on(body.collect::<Vec<_>>()).concat()).unwrap();
/// assert!(text.starts_with("id: 0\nevent: run_started\n"));
/// ```
pub fn sse_response(run: RunStream, keep_alive: Duration) -> ApiResponse {
    let runtime = run.runtime().clone();
    let events = super::runs::standalone(run);
    let run_id = events.run_id().to_string();
    let mut response = ApiResponse::sse(ResponseBody::new(
        events,
        Box::new(EventFrames),
        keep_alive,
        runtime,
    ));
    response.headers.push(("x-run-id", run_id));
    response
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

#[cfg(test)]
mod frame_tests {
    use super::*;

    /// The serializer's frame, which the text-delta template must match byte for byte.
    fn serialized(event: &Event) -> String {
        format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            event.seq,
            event.name(),
            serde_json::to_string(event).unwrap()
        )
    }

    #[test]
    fn delta_template_matches_the_serializer() {
        for (seq, text) in [
            (0, ""),
            (7, "hi"),
            (10, "a \"quoted\"\nline\\ with\ttabs \u{1} é 🎉"),
            (u64::MAX, "</script>"),
        ] {
            for kind in [
                EventKind::TextDelta { text: text.into() },
                EventKind::ReasoningDelta { text: text.into() },
            ] {
                let event = Event { seq, kind };
                let mut out = String::new();
                encode_event_frame(&event, &mut out);
                assert_eq!(out, serialized(&event));
            }
        }
    }

    #[test]
    fn push_u64_writes_display() {
        for n in [0, 1, 9, 10, 99, 100, 12345, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string());
        }
    }
}
