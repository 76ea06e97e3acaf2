//! `POST /v1/ag-ui`: AG-UI events, through `AgentService::handle`.

use std::time::Duration;

use agent_core::error::{ErrorKind, ModelError};
use agent_core::model::{Message, ScriptedModel, ToolCall, Turn};
use agent_core::runtime::block_on;
use agent_core::server::{AgentService, ApiBody, ApiResponse};
use futures_util::StreamExt;
use serde_json::{Value, json};

const PATH: &str = "/v1/ag-ui";
const DEADLINE: Duration = Duration::from_secs(20);

mod support;
use support::{header, service_of, tool_round_service};

fn bounded<T: Send + 'static>(name: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    support::bounded(name, DEADLINE, body)
}

fn post(service: &AgentService, body: &[u8]) -> ApiResponse {
    block_on(service.handle("POST", PATH, &[("content-type", "application/json")], body))
}

fn input(messages: Vec<Value>) -> Vec<u8> {
    json!({
        "threadId": "t1", "runId": "r1", "messages": messages,
        "tools": [], "state": {}, "context": [], "forwardedProps": {},
    })
    .to_string()
    .into_bytes()
}

fn user(text: &str) -> Value {
    json!({"id": "u1", "role": "user", "content": text})
}

/// The `data:` payloads of the streamed body (no `[DONE]` in AG-UI).
fn data_frames(response: ApiResponse) -> Vec<String> {
    let ApiBody::Stream(body) = response.body else {
        panic!("expected a streamed body")
    };
    let chunks: Vec<_> = block_on(body.collect());
    split_frames(&String::from_utf8(chunks.concat()).expect("UTF-8 body"))
}

fn split_frames(text: &str) -> Vec<String> {
    assert!(text.ends_with("\n\n"), "the body ends with a whole frame");
    text.split("\n\n")
        .filter(|frame| !frame.is_empty() && !frame.starts_with(':'))
        .map(|frame| {
            let data = frame
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("every frame is one data line: {frame:?}"));
            assert!(!data.contains('\n'), "one line per frame: {frame:?}");
            data.to_string()
        })
        .collect()
}

/// Required fields of each event type (`@ag-ui/core` schemas) and whether they are strings.
fn required(kind: &str) -> &'static [&'static str] {
    match kind {
        "RUN_STARTED" | "RUN_FINISHED" => &["threadId", "runId"],
        "RUN_ERROR" => &["message"],
        "TEXT_MESSAGE_START" | "TEXT_MESSAGE_END" => &["messageId"],
        "TEXT_MESSAGE_CONTENT" => &["messageId", "delta"],
        "REASONING_START" | "REASONING_END" | "REASONING_MESSAGE_END" => &["messageId"],
        "REASONING_MESSAGE_START" => &["messageId", "role"],
        "REASONING_MESSAGE_CONTENT" => &["messageId", "delta"],
        "TOOL_CALL_START" => &["toolCallId", "toolCallName"],
        "TOOL_CALL_ARGS" => &["toolCallId", "delta"],
        "TOOL_CALL_END" => &["toolCallId"],
        "TOOL_CALL_RESULT" => &["messageId", "toolCallId", "content"],
        other => panic!("not an AG-UI event type this server sends: {other:?}"),
    }
}

/// Parse every event and check the rules `@ag-ui/client` verifies, plus the stricter one
/// that a text or reasoning message ends before anything else starts.
fn events(frames: &[String]) -> Vec<Value> {
    let mut open_message: Option<String> = None;
    let mut open_reasoning: Option<String> = None;
    let mut open_calls = std::collections::HashSet::new();
    let mut ended_calls = std::collections::HashSet::new();
    let mut finished = false;
    let mut out = Vec::new();
    for (k, frame) in frames.iter().enumerate() {
        let event: Value =
            serde_json::from_str(frame).unwrap_or_else(|e| panic!("not JSON ({e}): {frame}"));
        let kind = event["type"].as_str().expect("a string type").to_string();
        for key in required(&kind) {
            assert!(
                event[*key].is_string(),
                "{kind} needs a string {key:?}: {frame}"
            );
        }
        assert!(
            !finished,
            "nothing follows RUN_FINISHED / RUN_ERROR: {frame}"
        );
        assert_eq!(
            k == 0,
            kind == "RUN_STARTED",
            "RUN_STARTED first and once: {frame}"
        );
        let id = event
            .get("messageId")
            .and_then(Value::as_str)
            .map(String::from);
        let call = event
            .get("toolCallId")
            .and_then(Value::as_str)
            .map(String::from);
        match kind.as_str() {
            "TEXT_MESSAGE_START" => {
                assert!(
                    open_message.is_none() && open_reasoning.is_none(),
                    "{frame}"
                );
                open_message = id;
            }
            "TEXT_MESSAGE_CONTENT" => {
                assert_eq!(open_message, id, "{frame}");
                assert_ne!(event["delta"], "", "no empty delta: {frame}");
            }
            "TEXT_MESSAGE_END" => assert_eq!(open_message.take(), id, "{frame}"),
            "REASONING_START" => {
                assert!(
                    open_message.is_none() && open_reasoning.is_none(),
                    "{frame}"
                );
                open_reasoning = id;
            }
            "REASONING_MESSAGE_START" | "REASONING_MESSAGE_CONTENT" | "REASONING_MESSAGE_END" => {
                assert_eq!(open_reasoning, id, "{frame}")
            }
            "REASONING_END" => assert_eq!(open_reasoning.take(), id, "{frame}"),
            "TOOL_CALL_START" => {
                assert!(
                    open_message.is_none() && open_reasoning.is_none(),
                    "{frame}"
                );
                assert!(open_calls.insert(call.unwrap()), "{frame}");
            }
            "TOOL_CALL_ARGS" => assert!(open_calls.contains(&call.unwrap()), "{frame}"),
            "TOOL_CALL_END" => {
                let call = call.unwrap();
                assert!(open_calls.remove(&call), "{frame}");
                ended_calls.insert(call);
            }
            "TOOL_CALL_RESULT" => {
                assert!(
                    ended_calls.contains(&call.unwrap()),
                    "result after TOOL_CALL_END: {frame}"
                )
            }
            "RUN_FINISHED" => {
                assert!(
                    open_message.is_none() && open_reasoning.is_none(),
                    "{frame}"
                );
                assert!(open_calls.is_empty(), "{frame}");
                finished = true;
            }
            "RUN_ERROR" => finished = true,
            _ => {}
        }
        out.push(event);
    }
    assert!(finished, "the stream ends with RUN_FINISHED or RUN_ERROR");
    out
}

#[test]
fn a_tool_round_streams_the_exact_ag_ui_events() {
    let (frames, headers) = bounded("tool round", || {
        let (service, _) = tool_round_service();
        let response = post(&service, &input(vec![user("What is 2+2?")]));
        assert_eq!(response.status, 200);
        assert!(header(&response, "x-run-id").is_some());
        let headers: Vec<(String, String)> = response
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect();
        (data_frames(response), headers)
    });
    let has = |name: &str, value: &str| headers.iter().any(|(n, v)| n == name && v == value);
    assert!(has("content-type", "text/event-stream"), "{headers:?}");
    assert!(has("cache-control", "no-cache"), "{headers:?}");
    let events = events(&frames);
    let expected = vec![
        json!({"type": "RUN_STARTED", "threadId": "t1", "runId": "r1"}),
        json!({"type": "REASONING_START", "messageId": "r1-reasoning-1"}),
        json!({"type": "REASONING_MESSAGE_START", "messageId": "r1-reasoning-1", "role": "reasoning"}),
        json!({"type": "REASONING_MESSAGE_CONTENT", "messageId": "r1-reasoning-1", "delta": "Need a tool."}),
        json!({"type": "REASONING_MESSAGE_END", "messageId": "r1-reasoning-1"}),
        json!({"type": "REASONING_END", "messageId": "r1-reasoning-1"}),
        json!({"type": "TEXT_MESSAGE_START", "messageId": "r1-1", "role": "assistant"}),
        json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "r1-1", "delta": "Let me compute."}),
        json!({"type": "TEXT_MESSAGE_END", "messageId": "r1-1"}),
        json!({"type": "TOOL_CALL_START", "toolCallId": "call_1", "toolCallName": "calculator", "parentMessageId": "r1-1"}),
        json!({"type": "TOOL_CALL_ARGS", "toolCallId": "call_1", "delta": "{\"expression\":"}),
        json!({"type": "TOOL_CALL_ARGS", "toolCallId": "call_1", "delta": "\"2+2\"}"}),
        json!({"type": "TOOL_CALL_END", "toolCallId": "call_1"}),
        json!({"type": "TOOL_CALL_RESULT", "messageId": "r1-call_1-result", "toolCallId": "call_1", "content": "4", "role": "tool"}),
        json!({"type": "TOOL_CALL_START", "toolCallId": "call_2", "toolCallName": "broken", "parentMessageId": "r1-2"}),
        json!({"type": "TOOL_CALL_ARGS", "toolCallId": "call_2", "delta": "{}"}),
        json!({"type": "TOOL_CALL_END", "toolCallId": "call_2"}),
        json!({"type": "TOOL_CALL_RESULT", "messageId": "r1-call_2-result", "toolCallId": "call_2", "content": "error (failed): division by zero", "role": "tool"}),
        json!({"type": "TEXT_MESSAGE_START", "messageId": "r1-3", "role": "assistant"}),
        json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": "r1-3", "delta": "4"}),
        json!({"type": "TEXT_MESSAGE_END", "messageId": "r1-3"}),
        json!({"type": "RUN_FINISHED", "threadId": "t1", "runId": "r1"}),
    ];
    assert_eq!(events, expected, "frames:\n{}", frames.join("\n"));
}

#[test]
fn a_failed_run_ends_its_message_then_run_error() {
    let frames = bounded("failed run", || {
        let service = service_of(ScriptedModel::new([Turn::new()
            .text("Part")
            .fail(ModelError::new(ErrorKind::Model, "the model broke"))]));
        data_frames(post(&service, &input(vec![user("hi")])))
    });
    let events = events(&frames);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "RUN_STARTED",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
            "RUN_ERROR"
        ],
        "frames:\n{}",
        frames.join("\n")
    );
    let error = events.last().unwrap();
    assert_eq!(error["code"], "model");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("the model broke"),
        "{error}"
    );
}

#[test]
fn a_cancelled_run_ends_with_run_error_cancelled() {
    let frames = bounded("cancelled run", || {
        let service = service_of(ScriptedModel::new([Turn::new()
            .text("Part")
            .pause(Duration::from_secs(30))
            .text("never")]));
        let response = post(&service, &input(vec![user("hi")]));
        let ApiBody::Stream(mut body) = response.body else {
            panic!("expected a stream")
        };
        let mut text = String::new();
        while !text.contains("TEXT_MESSAGE_CONTENT") {
            let chunk = block_on(body.next()).expect("more frames before the pause");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        service.shutdown();
        let rest: Vec<_> = block_on(body.collect());
        text.push_str(&String::from_utf8(rest.concat()).unwrap());
        split_frames(&text)
    });
    let events = events(&frames);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "RUN_STARTED",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
            "RUN_ERROR"
        ]
    );
    assert_eq!(events[4]["code"], "cancelled");
}

#[test]
fn earlier_messages_and_context_become_the_conversation_history() {
    let requests = bounded("history", || {
        let (service, requests) = tool_round_service();
        let body = json!({
            "threadId": "t1", "runId": "r2",
            "messages": [
                {"id": "s", "role": "system", "content": "Be brief."},
                {"id": "d", "role": "developer", "content": "Use tools."},
                user("What is 2+2?"),
                {"id": "a1", "role": "assistant", "content": "Let me compute.", "toolCalls": [
                    {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": "{\"expression\":\"2+2\"}"}}
                ]},
                {"id": "t", "role": "tool", "toolCallId": "c1", "content": "4"},
                {"id": "r", "role": "reasoning", "content": "hidden"},
                {"id": "a2", "role": "assistant", "content": "4"},
                {"id": "u2", "role": "user", "content": [{"type": "text", "text": "Thanks"}, {"type": "text", "text": "!"}]},
            ],
            "tools": [{"name": "frontend", "description": "ignored", "parameters": {}}],
            "state": {"x": 1},
            "context": [{"description": "user name", "value": "Ada"}],
            "forwardedProps": {"anything": true},
        });
        let response = post(&service, body.to_string().as_bytes());
        assert_eq!(response.status, 200);
        let _ = data_frames(response);
        requests.lock().unwrap().clone()
    });
    assert_eq!(
        requests[0].messages,
        vec![
            Message::system("Context from the application:\n- user name: Ada"),
            Message::system("Be brief."),
            Message::system("Use tools."),
            Message::user("What is 2+2?"),
            Message::Assistant {
                content: "Let me compute.".into(),
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "calculator".into(),
                    arguments: r#"{"expression":"2+2"}"#.into(),
                }],
            },
            Message::Tool {
                call_id: "c1".into(),
                content: "4".into()
            },
            Message::Assistant {
                content: "4".into(),
                tool_calls: vec![]
            },
            Message::user("Thanks!"),
        ]
    );
}

#[test]
fn bad_bodies_get_400_json_errors_and_start_no_run() {
    let service = service_of(ScriptedModel::new([Turn::new().text("Hi")]));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "invalid_json"),
        (b"{}".to_vec(), "invalid_json"),
        (
            br#"{"threadId":"t","runId":"r","messages":{}}"#.to_vec(),
            "invalid_json",
        ),
        (input(vec![]), "invalid_messages"),
        (
            input(vec![
                user("hi"),
                json!({"id": "a", "role": "assistant", "content": "x"}),
            ]),
            "invalid_messages",
        ),
        (
            input(vec![
                json!({"id": "t", "role": "tool", "content": "4"}),
                user("hi"),
            ]),
            "invalid_messages",
        ),
        (
            input(vec![
                json!({"id": "x", "role": "wizard", "content": "4"}),
                user("hi"),
            ]),
            "invalid_messages",
        ),
        (
            input(vec![json!({"id": "u", "role": "user", "content": 7})]),
            "invalid_messages",
        ),
    ];
    for (body, code) in cases {
        let response = post(&service, &body);
        let shown = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(response.status, 400, "{shown}");
        assert_eq!(header(&response, "content-type"), Some("application/json"));
        let ApiBody::Full(bytes) = response.body else {
            panic!("a complete error body for {shown}")
        };
        let error: Value = serde_json::from_slice(&bytes).expect("a JSON error body");
        assert_eq!(error["error"]["code"], code, "{shown}: {error}");
    }
    assert_eq!(service.running_streams(), 0, "no run started");
}
