//! The transport-independent HTTP API: routing, errors, framing, limits, sessions, shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::agent::Agent;
use agent_core::error::ModelError;
use agent_core::event::{Event, EventKind};
use agent_core::model::{
    Message, Model, ModelContext, ModelDelta, ModelRequest, ModelStream, ScriptedModel, Turn,
};
use agent_core::runtime::{TestRuntime, block_on};
use agent_core::server::{AgentService, ApiBody, ApiResponse, ResponseBody, ServerConfig};
use agent_core::sse::{SseDecoder, SseItem};
use futures_util::{FutureExt, StreamExt};
use serde_json::{Value, json};

fn service_with(model: impl Model, config: ServerConfig) -> AgentService {
    let agent = Agent::builder()
        .model(model)
        .runtime(Arc::new(TestRuntime::new()))
        .build()
        .unwrap();
    AgentService::new(agent, config)
}

fn hello_service() -> AgentService {
    service_with(
        ScriptedModel::from_fn(|_, _| Turn::new().text("Hello").text(" there").usage(3, 2)),
        ServerConfig::default(),
    )
}

fn call(
    service: &AgentService,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> ApiResponse {
    // Every POST of these tests is JSON, as a real client's; `raw_call` sends exactly what
    // it is given.
    let mut headers = headers.to_vec();
    if method == "POST"
        && !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("content-type", "application/json"));
    }
    raw_call(service, method, path, &headers, body)
}

fn raw_call(
    service: &AgentService,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> ApiResponse {
    block_on(service.handle(method, path, headers, body))
}

fn header_of<'a>(response: &'a ApiResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_run_starts_only_from_a_json_request() {
    let service = hello_service();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .map(|t| ("content-type", t))
            .into_iter()
            .collect();
        for path in ["/v1/runs", "/v1/chat/completions"] {
            let response = raw_call(&service, "POST", path, &headers, br#"{"input":"hi"}"#);
            assert_eq!(
                response.status, 415,
                "{path} with content-type {content_type:?} must be refused before a run starts"
            );
        }
    }
    assert_eq!(service.running_streams(), 0, "no run started");
}

#[test]
fn cross_origin_requests_are_refused_unless_allowed_and_allowed_ones_get_cors_headers() {
    let model = || ScriptedModel::new([Turn::new().text("Hi")]);
    let closed = service_with(model(), ServerConfig::default());
    let evil = [
        ("origin", "https://evil.example"),
        ("content-type", "application/json"),
    ];
    let refused = raw_call(&closed, "POST", "/v1/runs", &evil, br#"{"input":"hi"}"#);
    assert_eq!(
        refused.status, 403,
        "an origin that is not allowed is refused"
    );
    assert_eq!(
        closed.running_streams(),
        0,
        "no run started for a refused origin"
    );
    let preflight = raw_call(
        &closed,
        "OPTIONS",
        "/v1/runs",
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ],
        b"",
    );
    assert_eq!(
        preflight.status, 403,
        "a refused origin's preflight is refused too"
    );

    let open = service_with(
        model(),
        ServerConfig::default().with_allowed_origins(["https://app.example"]),
    );
    let preflight = raw_call(
        &open,
        "OPTIONS",
        "/v1/runs",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type, authorization",
            ),
        ],
        b"",
    );
    assert_eq!(preflight.status, 204, "a preflight from an allowed origin");
    assert_eq!(
        header_of(&preflight, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        header_of(&preflight, "access-control-allow-methods").is_some_and(|m| m.contains("POST")),
        "{:?}",
        preflight.headers
    );
    assert!(
        header_of(&preflight, "access-control-allow-headers")
            .is_some_and(|h| h.contains("content-type") && h.contains("authorization")),
        "{:?}",
        preflight.headers
    );
    let allowed = [
        ("origin", "https://app.example"),
        ("content-type", "application/json"),
    ];
    let run = raw_call(&open, "POST", "/v1/runs", &allowed, br#"{"input":"hi"}"#);
    assert_eq!(run.status, 200, "an allowed origin starts a run");
    assert_eq!(
        header_of(&run, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(header_of(&run, "vary"), Some("Origin"));
    assert!(
        header_of(&run, "access-control-expose-headers").is_some_and(|h| h.contains("x-run-id")),
        "{:?}",
        run.headers
    );
    assert!(header_of(&run, "x-run-id").is_some_and(|id| !id.is_empty()));

    let any = service_with(model(), ServerConfig::default().with_allowed_origins(["*"]));
    let health = raw_call(
        &any,
        "GET",
        "/healthz",
        &[("origin", "https://x.example")],
        b"",
    );
    assert_eq!(header_of(&health, "access-control-allow-origin"), Some("*"));
}

fn json_body(response: &ApiResponse) -> Value {
    match &response.body {
        ApiBody::Full(bytes) => serde_json::from_slice(bytes).expect("a JSON body"),
        ApiBody::Stream(_) => panic!("expected a complete body"),
    }
}

fn stream_body(response: ApiResponse) -> ResponseBody {
    match response.body {
        ApiBody::Stream(body) => body,
        ApiBody::Full(bytes) => {
            panic!("expected a stream, got {}", String::from_utf8_lossy(&bytes))
        }
    }
}

fn header<'a>(response: &'a ApiResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Decode a whole SSE body into its items.
fn decode_all(body: ResponseBody) -> Vec<SseItem> {
    let chunks: Vec<_> = block_on(body.collect());
    let mut decoder = SseDecoder::new();
    let mut items = Vec::new();
    for chunk in chunks {
        decoder.push(&chunk);
        while let Some(item) = decoder.next_item() {
            items.push(item.unwrap());
        }
    }
    items
}

fn assert_error(response: &ApiResponse, status: u16, code: &str) {
    assert_eq!(response.status, status);
    assert_eq!(header(response, "content-type"), Some("application/json"));
    let body = json_body(response);
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

/// How long a test may run before it fails instead of holding CI.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

mod support;
use support::Steps;

/// [`support::within`] with this file's [`DEADLINE`].
fn within_deadline(name: &str, body: impl FnOnce(&Steps) + Send + 'static) {
    support::within(name, DEADLINE, body)
}

#[test]
fn healthz_answers_ok() {
    within_deadline("healthz_answers_ok", |_steps| {
        let response = call(&hello_service(), "GET", "/healthz", &[], b"");
        assert_eq!(response.status, 200);
        assert_eq!(json_body(&response), json!({"status": "ok"}));
    });
}

#[test]
fn unknown_route_wrong_method_and_bad_bodies_get_json_errors() {
    within_deadline(
        "unknown_route_wrong_method_and_bad_bodies_get_json_errors",
        |_steps| {
            let service = hello_service();
            assert_error(&call(&service, "GET", "/nope", &[], b""), 404, "not_found");
            assert_error(
                &call(&service, "GET", "/v1/runs", &[], b""),
                405,
                "method_not_allowed",
            );
            assert_error(
                &call(&service, "POST", "/v1/runs", &[], b"{not json"),
                400,
                "invalid_json",
            );
            assert_error(
                &call(&service, "POST", "/v1/runs", &[], br#"{"session_id":"x"}"#),
                400,
                "invalid_json",
            );
            assert_error(
                &call(
                    &service,
                    "POST",
                    "/v1/chat/completions",
                    &[],
                    br#"{"messages":[]}"#,
                ),
                400,
                "invalid_messages",
            );
            assert_error(
        &call(
            &service,
            "POST",
            "/v1/chat/completions",
            &[],
            br#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}"#,
        ),
        400,
        "invalid_messages",
    );
            assert_error(
                &call(
                    &service,
                    "POST",
                    "/v1/runs",
                    &[],
                    br#"{"input":"x","session_id":""}"#,
                ),
                400,
                "invalid_session_id",
            );
        },
    );
}

#[test]
fn bearer_token_is_required_when_configured() {
    within_deadline("bearer_token_is_required_when_configured", |_steps| {
        let service = service_with(
            ScriptedModel::from_fn(|_, _| Turn::new().text("ok")),
            ServerConfig::default().with_bearer_token("t0ken"),
        );
        let body = br#"{"input":"x"}"#;
        let missing = call(&service, "POST", "/v1/runs", &[], body);
        assert_error(&missing, 401, "unauthorized");
        assert_eq!(header(&missing, "www-authenticate"), Some("Bearer"));
        assert_error(
            &call(
                &service,
                "POST",
                "/v1/runs",
                &[("Authorization", "Bearer wrong")],
                body,
            ),
            401,
            "unauthorized",
        );
        let ok = call(
            &service,
            "POST",
            "/v1/runs",
            &[("authorization", "Bearer t0ken")],
            body,
        );
        assert_eq!(ok.status, 200);
        // Health checks stay open.
        assert_eq!(call(&service, "GET", "/healthz", &[], b"").status, 200);
        assert!(
            !format!("{service:?}").contains("t0ken"),
            "the token never shows in Debug"
        );
    });
}

#[test]
fn oversized_body_is_413() {
    within_deadline("oversized_body_is_413", |_steps| {
        let service = service_with(
            ScriptedModel::from_fn(|_, _| Turn::new()),
            ServerConfig::default().with_max_body_bytes(16),
        );
        assert_error(
            &call(
                &service,
                "POST",
                "/v1/runs",
                &[],
                br#"{"input":"this is too long"}"#,
            ),
            413,
            "payload_too_large",
        );
    });
}

#[test]
fn runs_stream_one_sse_frame_per_event_with_headers() {
    within_deadline(
        "runs_stream_one_sse_frame_per_event_with_headers",
        |_steps| {
            let response = call(
                &hello_service(),
                "POST",
                "/v1/runs?x=1",
                &[],
                br#"{"input":"hi"}"#,
            );
            assert_eq!(response.status, 200);
            assert_eq!(header(&response, "content-type"), Some("text/event-stream"));
            assert_eq!(header(&response, "cache-control"), Some("no-cache"));
            assert_eq!(header(&response, "x-accel-buffering"), Some("no"));
            let items = decode_all(stream_body(response));
            let events: Vec<Event> = items
                .iter()
                .map(|item| {
                    let SseItem::Event(frame) = item else {
                        panic!("unexpected {item:?}")
                    };
                    let event: Event = serde_json::from_str(&frame.data).unwrap();
                    assert_eq!(frame.event, event.name());
                    assert_eq!(frame.id.as_deref(), Some(event.seq.to_string().as_str()));
                    event
                })
                .collect();
            assert!(matches!(
                events.first().unwrap().kind,
                EventKind::RunStarted { .. }
            ));
            let EventKind::RunCompleted { text, .. } = &events.last().unwrap().kind else {
                panic!()
            };
            assert_eq!(text, "Hello there");
        },
    );
}

fn chat_chunks(body: ResponseBody) -> (Vec<Value>, bool) {
    let mut chunks = Vec::new();
    let mut done = false;
    for item in decode_all(body) {
        let SseItem::Event(frame) = item else {
            continue;
        };
        if frame.data == "[DONE]" {
            done = true;
        } else {
            assert!(!done, "nothing after [DONE]");
            chunks.push(serde_json::from_str(&frame.data).unwrap());
        }
    }
    (chunks, done)
}

#[test]
fn chat_completions_stream_chunks_then_done() {
    within_deadline("chat_completions_stream_chunks_then_done", |_steps| {
        let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},
        "messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#;
        let response = call(&hello_service(), "POST", "/v1/chat/completions", &[], body);
        assert_eq!(response.status, 200);
        let (chunks, done) = chat_chunks(stream_body(response));
        assert!(done);
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Hello there");
        assert_eq!(chunks[0]["object"], "chat.completion.chunk");
        assert_eq!(chunks[0]["model"], "m");
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let finish: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"].get(0).map(|choice| &choice["finish_reason"]))
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finish, [&json!("stop")]);
        assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 5);
    });
}

#[test]
fn chat_completions_without_stream_answer_once() {
    within_deadline("chat_completions_without_stream_answer_once", |_steps| {
        let body =
        br#"{"messages":[{"role":"system","content":"be nice"},{"role":"user","content":"hi"}]}"#;
        let response = call(&hello_service(), "POST", "/v1/chat/completions", &[], body);
        assert_eq!(response.status, 200);
        let json = json_body(&response);
        assert_eq!(json["object"], "chat.completion");
        assert_eq!(json["choices"][0]["message"]["content"], "Hello there");
        assert_eq!(json["choices"][0]["finish_reason"], "stop");
        assert_eq!(json["usage"]["prompt_tokens"], 3);
    });
}

#[test]
fn chat_completion_of_a_failed_run_is_502_with_the_error_kind() {
    within_deadline(
        "chat_completion_of_a_failed_run_is_502_with_the_error_kind",
        |_steps| {
            let service = service_with(
                ScriptedModel::from_fn(|_, _| {
                    Turn::new().fail(ModelError::new(
                        agent_core::error::ErrorKind::UpstreamStatus,
                        "upstream answered 500",
                    ))
                }),
                ServerConfig::default(),
            );
            let response = call(
                &service,
                "POST",
                "/v1/chat/completions",
                &[],
                br#"{"messages":[{"role":"user","content":"hi"}]}"#,
            );
            assert_eq!(response.status, 502);
            assert_eq!(json_body(&response)["error"]["code"], "upstream_status");
        },
    );
}

#[test]
fn a_rate_limited_run_is_answered_429_with_the_upstreams_retry_after() {
    within_deadline(
        "a_rate_limited_run_is_answered_429_with_the_upstreams_retry_after",
        |_steps| {
            let service = service_with(
                ScriptedModel::from_fn(|_, _| {
                    Turn::new().fail(
                        ModelError::new(
                            agent_core::error::ErrorKind::RateLimited,
                            "upstream answered 429 Too Many Requests",
                        )
                        .with_status(429)
                        .with_retry_after(Some(std::time::Duration::from_millis(2500))),
                    )
                }),
                ServerConfig::default(),
            );
            for (path, body) in [
                (
                    "/v1/chat/completions",
                    &br#"{"messages":[{"role":"user","content":"hi"}]}"#[..],
                ),
                ("/v1/responses", &br#"{"input":"hi"}"#[..]),
            ] {
                let response = call(&service, "POST", path, &[], body);
                assert_eq!(
                    response.status, 429,
                    "{path}: a rate-limited run is a 429, not a 502"
                );
                assert_eq!(
                    header_of(&response, "retry-after"),
                    Some("3"),
                    "{path}: the upstream's Retry-After (2.5 s), in whole seconds rounded up"
                );
                assert_eq!(
                    json_body(&response)["error"]["code"],
                    "rate_limited",
                    "{path}"
                );
            }
        },
    );
}

#[test]
fn chat_history_is_passed_to_the_model() {
    within_deadline("chat_history_is_passed_to_the_model", |_steps| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let service = service_with(
            ScriptedModel::from_fn(move |request, _| {
                s.lock().unwrap().push(request.messages.clone());
                Turn::new().text("ok")
            }),
            ServerConfig::default(),
        );
        let body = br#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}]}"#;
        assert_eq!(
            call(&service, "POST", "/v1/chat/completions", &[], body).status,
            200
        );
        assert_eq!(
            seen.lock().unwrap()[0],
            vec![
                Message::user("a"),
                Message::assistant("b"),
                Message::user("c")
            ]
        );
    });
}

#[test]
fn chat_history_with_tool_calls_and_tool_results_reaches_the_model() {
    within_deadline(
        "chat_history_with_tool_calls_and_tool_results_reaches_the_model",
        |_steps| {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let s = seen.clone();
            let service = service_with(
                ScriptedModel::from_fn(move |request, _| {
                    s.lock().unwrap().push(request.messages.clone());
                    Turn::new().text("ok")
                }),
                ServerConfig::default(),
            );
            let body = br#"{"messages":[
            {"role":"user","content":"what time is it?"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"clock","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"call_1","content":"12:00"},
            {"role":"user","content":"thanks"}]}"#;
            let response = call(&service, "POST", "/v1/chat/completions", &[], body);
            assert_eq!(response.status, 200, "{:?}", json_body(&response));
            let messages = seen.lock().unwrap()[0].clone();
            assert_eq!(
                messages[1..3],
                [
                    Message::Assistant {
                        content: String::new(),
                        tool_calls: vec![agent_core::model::ToolCall {
                            id: "call_1".into(),
                            name: "clock".into(),
                            arguments: "{}".into(),
                        }],
                    },
                    Message::Tool {
                        call_id: "call_1".into(),
                        content: "12:00".into(),
                    },
                ]
            );
            let orphan =
                br#"{"messages":[{"role":"tool","content":"x"},{"role":"user","content":"y"}]}"#;
            assert_error(
                &call(&service, "POST", "/v1/chat/completions", &[], orphan),
                400,
                "invalid_messages",
            );
        },
    );
}

#[test]
fn models_lists_the_agent_as_the_one_model() {
    within_deadline("models_lists_the_agent_as_the_one_model", |_steps| {
        let service = hello_service();
        let response = call(&service, "GET", "/v1/models", &[], b"");
        assert_eq!(response.status, 200);
        let body = json_body(&response);
        assert_eq!(body["object"], "list");
        assert_eq!(body["data"].as_array().map(Vec::len), Some(1), "{body}");
        assert_eq!(body["data"][0]["object"], "model");
        assert!(
            body["data"][0]["id"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "{body}"
        );
        assert_eq!(call(&service, "HEAD", "/v1/models", &[], b"").status, 200);
        assert_error(
            &call(&service, "POST", "/v1/models", &[], b"{}"),
            405,
            "method_not_allowed",
        );
    });
}

#[test]
fn session_id_keeps_history_between_runs() {
    within_deadline("session_id_keeps_history_between_runs", |_steps| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let service = service_with(
            ScriptedModel::from_fn(move |request, n| {
                s.lock().unwrap().push(request.messages.len());
                Turn::new().text(format!("answer {n}"))
            }),
            ServerConfig::default(),
        );
        for input in ["one", "two"] {
            let body = format!(r#"{{"input":"{input}","session_id":"s1"}}"#);
            decode_all(stream_body(call(
                &service,
                "POST",
                "/v1/runs",
                &[],
                body.as_bytes(),
            )));
        }
        let body = br#"{"input":"three"}"#;
        decode_all(stream_body(call(&service, "POST", "/v1/runs", &[], body)));
        assert_eq!(*seen.lock().unwrap(), [1, 3, 1]);
    });
}

/// A model whose stream yields one text delta, then stays pending forever; it counts drops.
#[derive(Debug, Clone, Default)]
struct HangingModel {
    drops: Arc<AtomicUsize>,
}

struct CountDrop(Arc<AtomicUsize>);
impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Model for HangingModel {
    fn name(&self) -> &str {
        "hanging"
    }

    fn stream(&self, _: ModelRequest, _: ModelContext) -> ModelStream {
        let guard = CountDrop(self.drops.clone());
        let first =
            futures_util::stream::iter([Ok::<_, ModelError>(ModelDelta::Text("first".into()))]);
        Box::pin(
            first
                .chain(futures_util::stream::pending())
                .map(move |item| {
                    let _ = &guard;
                    item
                }),
        )
    }
}

fn next_frame(body: &mut ResponseBody, decoder: &mut SseDecoder) -> SseItem {
    for _ in 0..1000 {
        if let Some(item) = decoder.next_item() {
            return item.unwrap();
        }
        let chunk = block_on(body.next()).expect("body ended early");
        decoder.push(&chunk);
    }
    panic!("no frame after 1000 chunks")
}

fn next_event(body: &mut ResponseBody, decoder: &mut SseDecoder) -> Event {
    loop {
        if let SseItem::Event(frame) = next_frame(body, decoder) {
            return serde_json::from_str(&frame.data).unwrap();
        }
    }
}

#[test]
fn dropping_the_body_cancels_the_run_and_frees_its_slot() {
    within_deadline(
        "dropping_the_body_cancels_the_run_and_frees_its_slot",
        |_steps| {
            let model = HangingModel::default();
            let drops = model.drops.clone();
            // No detach grace: a client leaving cancels its run at once (with a grace, the run
            // would wait for the client to resume it first).
            let config = ServerConfig::default()
                .with_max_concurrent_runs(1)
                .with_run_detach_grace(Duration::ZERO);
            let service = service_with(model, config);
            let mut body =
                stream_body(call(&service, "POST", "/v1/runs", &[], br#"{"input":"x"}"#));
            let mut decoder = SseDecoder::new();
            while !matches!(
                next_event(&mut body, &mut decoder).kind,
                EventKind::TextDelta { .. }
            ) {}
            assert!(body.next().now_or_never().is_none(), "the model hangs");
            assert_eq!(service.running_streams(), 1);
            // The limit is reached: a second run is refused.
            assert_error(
                &call(&service, "POST", "/v1/runs", &[], br#"{"input":"y"}"#),
                503,
                "too_many_runs",
            );
            drop(body);
            assert!(
                support::eventually(Duration::from_secs(5), || drops.load(Ordering::SeqCst) == 1
                    && service.running_streams() == 0),
                "the run was cancelled (its model stream dropped, its slot freed) once its \
                 body was dropped: {} drops, {} running",
                drops.load(Ordering::SeqCst),
                service.running_streams()
            );
            assert_eq!(
                call(&service, "POST", "/v1/runs", &[], br#"{"input":"z"}"#).status,
                200
            );
        },
    );
}

#[test]
fn shutdown_ends_open_streams_with_run_cancelled_and_refuses_new_runs() {
    within_deadline(
        "shutdown_ends_open_streams_with_run_cancelled_and_refuses_new_runs",
        |_steps| {
            let service = service_with(HangingModel::default(), ServerConfig::default());
            let mut body =
                stream_body(call(&service, "POST", "/v1/runs", &[], br#"{"input":"x"}"#));
            let mut decoder = SseDecoder::new();
            while !matches!(
                next_event(&mut body, &mut decoder).kind,
                EventKind::TextDelta { .. }
            ) {}
            service.shutdown();
            let last = next_event(&mut body, &mut decoder);
            assert_eq!(
                last.kind,
                EventKind::RunCancelled {
                    partial_text: "first".into()
                }
            );
            assert!(
                block_on(body.next()).is_none(),
                "the body ends after the terminal frame"
            );
            assert_error(
                &call(&service, "POST", "/v1/runs", &[], br#"{"input":"y"}"#),
                503,
                "shutting_down",
            );
        },
    );
}

#[test]
fn idle_streams_get_keep_alive_comments() {
    within_deadline("idle_streams_get_keep_alive_comments", |_steps| {
        let service = service_with(
            HangingModel::default(),
            ServerConfig::default().with_keep_alive(Duration::from_millis(20)),
        );
        let mut body = stream_body(call(&service, "POST", "/v1/runs", &[], br#"{"input":"x"}"#));
        let mut decoder = SseDecoder::new();
        while !matches!(
            next_event(&mut body, &mut decoder).kind,
            EventKind::TextDelta { .. }
        ) {}
        for _ in 0..2 {
            assert_eq!(
                next_frame(&mut body, &mut decoder),
                SseItem::Comment("keep-alive".into())
            );
        }
    });
}

#[test]
fn sessions_are_bounded_in_bytes_per_session_and_in_total() {
    within_deadline(
        "sessions_are_bounded_in_bytes_per_session_and_in_total",
        |steps| {
            let calls = Arc::new(AtomicUsize::new(0));
            let largest_request = Arc::new(AtomicUsize::new(0));
            let (c, l) = (calls.clone(), largest_request.clone());
            let service = service_with(
                ScriptedModel::from_fn(move |request, _| {
                    c.fetch_add(1, Ordering::SeqCst);
                    let bytes: usize = request
                        .messages
                        .iter()
                        .map(agent_core::agent::message_bytes)
                        .sum();
                    l.fetch_max(bytes, Ordering::SeqCst);
                    Turn::new().text("ok")
                }),
                ServerConfig::default()
                    .with_max_body_bytes(1024 * 1024)
                    .with_max_session_bytes(64 * 1024)
                    .with_max_total_session_bytes(200 * 1024),
            );
            let input = "x".repeat(20 * 1024);
            let run = |session: &str, input: &str| {
                let body = json!({"input": input, "session_id": session}).to_string();
                call(&service, "POST", "/v1/runs", &[], body.as_bytes())
            };
            steps.step("20 runs of 20 KiB in one session");
            for _ in 0..20 {
                let items = decode_all(stream_body(run("s1", &input)));
                assert!(!items.is_empty());
                assert!(
                    service.session_bytes() <= 64 * 1024,
                    "one session holds {} bytes, over its 64 KiB bound",
                    service.session_bytes()
                );
            }
            // The history plus the new input, never more: old exchanges were dropped.
            assert!(largest_request.load(Ordering::SeqCst) <= 64 * 1024 + 21 * 1024);
            assert_eq!(calls.load(Ordering::SeqCst), 20);

            steps.step("an input larger than a session's bound is refused before a run");
            let response = run("s1", &"y".repeat(70 * 1024));
            assert_error(&response, 413, "session_turn_too_large");
            assert_eq!(calls.load(Ordering::SeqCst), 20, "no run started");
            assert_eq!(service.running_streams(), 0);
            // Without a session the same input is fine (only the body limit applies).
            let body = json!({"input": "y".repeat(70 * 1024)}).to_string();
            decode_all(stream_body(call(
                &service,
                "POST",
                "/v1/runs",
                &[],
                body.as_bytes(),
            )));
            assert_eq!(calls.load(Ordering::SeqCst), 21);

            steps.step("20 sessions of 40 KiB: the least recently used are forgotten");
            for i in 0..20 {
                let session = format!("t{i}");
                decode_all(stream_body(run(&session, &input)));
                decode_all(stream_body(run(&session, &input)));
                assert!(
                    service.session_bytes() <= 200 * 1024,
                    "all sessions hold {} bytes, over their 200 KiB bound",
                    service.session_bytes()
                );
            }
            assert!(service.session_count() < 20, "{}", service.session_count());
            // The newest session kept its history: its next run sees both exchanges.
            largest_request.store(0, Ordering::SeqCst);
            decode_all(stream_body(run("t19", "again")));
            assert!(largest_request.load(Ordering::SeqCst) >= 40 * 1024);
        },
    );
}
