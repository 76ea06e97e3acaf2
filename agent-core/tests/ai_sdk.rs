//! `POST /v1/ai-sdk/chat`: the Vercel AI SDK UI message stream, through `AgentService::handle`.

use std::time::Duration;

use agent_core::error::{ErrorKind, ModelError};
use agent_core::model::{Message, ScriptedModel, ToolCall, Turn};
use agent_core::runtime::block_on;
use agent_core::server::{AgentService, ApiBody, ApiResponse};
use futures_util::StreamExt;
use serde_json::{Value, json};

const PATH: &str = "/v1/ai-sdk/chat";
const DEADLINE: Duration = Duration::from_secs(20);

mod support;
use support::{header, service_of, tool_round_service};

fn bounded<T: Send + 'static>(name: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    support::bounded(name, DEADLINE, body)
}

fn post(service: &AgentService, body: &[u8]) -> ApiResponse {
    block_on(service.handle("POST", PATH, &[("content-type", "application/json")], body))
}

fn user(text: &str) -> Value {
    json!({"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]})
}

fn chat_body(messages: Vec<Value>) -> Vec<u8> {
    json!({"id": "chat_1", "messages": messages, "trigger": "submit-message"})
        .to_string()
        .into_bytes()
}

/// The `data:` payloads of the streamed body, checked to be SSE `data:` frames only (no
/// `event:`/`id:` lines), keep-alive comments skipped.
fn data_frames(response: ApiResponse) -> Vec<String> {
    let ApiBody::Stream(body) = response.body else {
        panic!("expected a streamed body")
    };
    let chunks: Vec<_> = block_on(body.collect());
    let text = String::from_utf8(chunks.concat()).expect("UTF-8 body");
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

/// The fields each chunk type allows (the `ai` package's strict `uiMessageChunkSchema`) and
/// the ones it requires.
fn shape(kind: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        "start" => (&["messageId", "messageMetadata"], &[]),
        "start-step" | "finish-step" => (&[], &[]),
        "finish" => (&["finishReason", "messageMetadata"], &[]),
        "abort" => (&["reason"], &[]),
        "error" => (&["errorText"], &["errorText"]),
        "text-start" | "text-end" | "reasoning-start" | "reasoning-end" => {
            (&["id", "providerMetadata"], &["id"])
        }
        "text-delta" | "reasoning-delta" => {
            (&["id", "delta", "providerMetadata"], &["id", "delta"])
        }
        "tool-input-start" => (
            &[
                "toolCallId",
                "toolName",
                "providerExecuted",
                "providerMetadata",
                "dynamic",
                "title",
            ],
            &["toolCallId", "toolName"],
        ),
        "tool-input-delta" => (
            &["toolCallId", "inputTextDelta"],
            &["toolCallId", "inputTextDelta"],
        ),
        "tool-input-available" => (
            &[
                "toolCallId",
                "toolName",
                "input",
                "providerExecuted",
                "providerMetadata",
                "dynamic",
                "title",
            ],
            &["toolCallId", "toolName", "input"],
        ),
        "tool-output-available" => (
            &[
                "toolCallId",
                "output",
                "providerExecuted",
                "dynamic",
                "preliminary",
            ],
            &["toolCallId", "output"],
        ),
        "tool-output-error" => (
            &["toolCallId", "errorText", "providerExecuted", "dynamic"],
            &["toolCallId", "errorText"],
        ),
        other => panic!("not a UI message chunk type: {other:?}"),
    }
}

/// Parse and validate every chunk: JSON object, known type, only allowed fields, required
/// fields present, `[DONE]` last and only there; parts and tool calls paired.
fn chunks(frames: &[String]) -> Vec<Value> {
    let (done, frames) = frames.split_last().expect("at least one frame");
    assert_eq!(done, "[DONE]", "the stream ends with data: [DONE]");
    let mut open_part: Option<(String, String)> = None;
    let mut tool_state = std::collections::HashMap::<String, &'static str>::new();
    let mut out = Vec::new();
    for frame in frames {
        let chunk: Value =
            serde_json::from_str(frame).unwrap_or_else(|e| panic!("not JSON ({e}): {frame}"));
        let object = chunk.as_object().expect("every chunk is an object");
        let kind = object["type"].as_str().expect("a string type");
        let (allowed, required) = shape(kind);
        for key in object.keys().filter(|k| *k != "type") {
            assert!(
                allowed.contains(&key.as_str()),
                "{kind} may not carry {key:?}: {frame}"
            );
        }
        for key in required {
            assert!(object.contains_key(*key), "{kind} needs {key:?}: {frame}");
        }
        let id = object.get("id").and_then(Value::as_str).map(String::from);
        match kind {
            "text-start" | "reasoning-start" => {
                assert!(
                    open_part.is_none(),
                    "a part starts while another is open: {frame}"
                );
                open_part = Some((kind.replace("-start", ""), id.unwrap()));
            }
            "text-delta" | "reasoning-delta" => assert_eq!(
                open_part,
                Some((kind.replace("-delta", ""), id.unwrap())),
                "a delta belongs to the open part: {frame}"
            ),
            "text-end" | "reasoning-end" => {
                assert_eq!(
                    open_part.take(),
                    Some((kind.replace("-end", ""), id.unwrap())),
                    "an end closes the open part: {frame}"
                );
            }
            _ => {}
        }
        if let Some(call) = object.get("toolCallId").and_then(Value::as_str) {
            assert!(
                open_part.is_none(),
                "tool chunks come between parts: {frame}"
            );
            let before = tool_state.get(call).copied();
            let ok = match kind {
                "tool-input-start" => before.is_none(),
                "tool-input-delta" => before == Some("tool-input-start"),
                "tool-input-available" => {
                    matches!(before, Some("tool-input-start" | "tool-input-delta"))
                }
                _ => before == Some("tool-input-available"),
            };
            let ok = ok && {
                // A tool call has one output.
                before != Some("output")
            };
            assert!(ok, "{kind} after {before:?} for {call}: {frame}");
            let after = match kind {
                "tool-input-start" | "tool-input-delta" => "tool-input-start",
                "tool-input-available" => "tool-input-available",
                _ => "output",
            };
            tool_state.insert(call.to_string(), after);
        }
        out.push(chunk);
    }
    assert!(open_part.is_none(), "every part is closed: {open_part:?}");
    out
}

#[test]
fn a_tool_round_streams_the_exact_ui_message_chunks() {
    let (frames, run_id, headers) = bounded("tool round", || {
        let (service, _) = tool_round_service();
        let response = post(&service, &chat_body(vec![user("What is 2+2?")]));
        assert_eq!(response.status, 200);
        let headers: Vec<(String, String)> = response
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect();
        let run_id = header(&response, "x-run-id").expect("x-run-id").to_string();
        (data_frames(response), run_id, headers)
    });
    let has = |name: &str, value: &str| headers.iter().any(|(n, v)| n == name && v == value);
    assert!(has("x-vercel-ai-ui-message-stream", "v1"), "{headers:?}");
    assert!(has("content-type", "text/event-stream"), "{headers:?}");
    assert!(has("x-accel-buffering", "no"), "{headers:?}");
    let chunks = chunks(&frames);
    let expected = vec![
        json!({"type": "start", "messageId": format!("msg_{run_id}")}),
        json!({"type": "start-step"}),
        json!({"type": "reasoning-start", "id": "reasoning-1"}),
        json!({"type": "reasoning-delta", "id": "reasoning-1", "delta": "Need a tool."}),
        json!({"type": "reasoning-end", "id": "reasoning-1"}),
        json!({"type": "text-start", "id": "text-2"}),
        json!({"type": "text-delta", "id": "text-2", "delta": "Let me compute."}),
        json!({"type": "text-end", "id": "text-2"}),
        json!({"type": "tool-input-start", "toolCallId": "call_1", "toolName": "calculator"}),
        json!({"type": "tool-input-delta", "toolCallId": "call_1", "inputTextDelta": "{\"expression\":"}),
        json!({"type": "tool-input-delta", "toolCallId": "call_1", "inputTextDelta": "\"2+2\"}"}),
        json!({"type": "tool-input-available", "toolCallId": "call_1", "toolName": "calculator", "input": {"expression": "2+2"}}),
        json!({"type": "tool-output-available", "toolCallId": "call_1", "output": 4}),
        json!({"type": "finish-step"}),
        json!({"type": "start-step"}),
        json!({"type": "tool-input-start", "toolCallId": "call_2", "toolName": "broken"}),
        json!({"type": "tool-input-delta", "toolCallId": "call_2", "inputTextDelta": "{}"}),
        json!({"type": "tool-input-available", "toolCallId": "call_2", "toolName": "broken", "input": {}}),
        json!({"type": "tool-output-error", "toolCallId": "call_2", "errorText": "division by zero"}),
        json!({"type": "finish-step"}),
        json!({"type": "start-step"}),
        json!({"type": "text-start", "id": "text-3"}),
        json!({"type": "text-delta", "id": "text-3", "delta": "4"}),
        json!({"type": "text-end", "id": "text-3"}),
        json!({"type": "finish-step"}),
        json!({"type": "finish"}),
    ];
    assert_eq!(chunks, expected, "frames:\n{}", frames.join("\n"));
}

#[test]
fn a_failed_run_closes_its_text_then_sends_error_and_done() {
    let frames = bounded("failed run", || {
        let service = service_of(ScriptedModel::new([Turn::new()
            .text("Part")
            .fail(ModelError::new(ErrorKind::Model, "the model broke"))]));
        data_frames(post(&service, &chat_body(vec![user("hi")])))
    });
    let chunks = chunks(&frames);
    let kinds: Vec<&str> = chunks.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "start",
            "start-step",
            "text-start",
            "text-delta",
            "text-end",
            "error"
        ],
        "frames:\n{}",
        frames.join("\n")
    );
    let error = chunks.last().unwrap()["errorText"].as_str().unwrap();
    assert!(error.contains("the model broke"), "errorText: {error:?}");
}

#[test]
fn a_cancelled_run_ends_with_abort_and_done() {
    let frames = bounded("cancelled run", || {
        let service = service_of(ScriptedModel::new([Turn::new()
            .text("Part")
            .pause(Duration::from_secs(30))
            .text("never")]));
        let response = post(&service, &chat_body(vec![user("hi")]));
        let ApiBody::Stream(mut body) = response.body else {
            panic!("expected a stream")
        };
        let mut text = String::new();
        while !text.contains("\"text-delta\"") {
            let chunk = block_on(body.next()).expect("more frames before the pause");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        service.shutdown();
        let rest: Vec<_> = block_on(body.collect());
        text.push_str(&String::from_utf8(rest.concat()).unwrap());
        text.split("\n\n")
            .filter(|f| !f.is_empty() && !f.starts_with(':'))
            .map(|f| f.strip_prefix("data: ").unwrap().to_string())
            .collect::<Vec<_>>()
    });
    let chunks = chunks(&frames);
    let kinds: Vec<&str> = chunks.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "start",
            "start-step",
            "text-start",
            "text-delta",
            "text-end",
            "abort"
        ]
    );
}

#[test]
fn earlier_ui_messages_become_the_conversation_history() {
    let requests = bounded("history", || {
        let (service, requests) = tool_round_service();
        let body = chat_body(vec![
            json!({"id": "s", "role": "system", "parts": [{"type": "text", "text": "Be brief."}]}),
            user("What is 2+2?"),
            json!({"id": "a1", "role": "assistant", "parts": [
                {"type": "step-start"},
                {"type": "reasoning", "text": "hidden", "state": "done"},
                {"type": "text", "text": "Let me compute.", "state": "done"},
                {"type": "tool-calculator", "toolCallId": "c1", "state": "output-available",
                 "input": {"expression": "2+2"}, "output": 4},
                {"type": "step-start"},
                {"type": "text", "text": "4"},
            ]}),
            user("And the weather?"),
            json!({"id": "a2", "role": "assistant", "parts": [
                {"type": "dynamic-tool", "toolName": "search", "toolCallId": "c2",
                 "state": "output-error", "input": {"q": "weather"}, "errorText": "offline"},
                {"type": "tool-pending", "toolCallId": "c3", "state": "input-available", "input": {}},
                {"type": "text", "text": "Sorry."},
                {"type": "data-progress", "data": {"done": true}},
            ]}),
            user("Thanks"),
        ]);
        let response = post(&service, &body);
        assert_eq!(response.status, 200);
        let _ = data_frames(response);
        requests.lock().unwrap().clone()
    });
    let call = |id: &str, name: &str, arguments: &str| ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: arguments.into(),
    };
    assert_eq!(
        requests[0].messages,
        vec![
            Message::system("Be brief."),
            Message::user("What is 2+2?"),
            Message::Assistant {
                content: "Let me compute.".into(),
                tool_calls: vec![call("c1", "calculator", r#"{"expression":"2+2"}"#)],
            },
            Message::Tool {
                call_id: "c1".into(),
                content: "4".into()
            },
            Message::Assistant {
                content: "4".into(),
                tool_calls: vec![]
            },
            Message::user("And the weather?"),
            Message::Assistant {
                content: String::new(),
                tool_calls: vec![call("c2", "search", r#"{"q":"weather"}"#)],
            },
            Message::Tool {
                call_id: "c2".into(),
                content: "error: offline".into()
            },
            Message::Assistant {
                content: "Sorry.".into(),
                tool_calls: vec![]
            },
            Message::user("Thanks"),
        ]
    );
}

#[test]
fn bad_bodies_get_400_json_errors_and_start_no_run() {
    let service = service_of(ScriptedModel::new([Turn::new().text("Hi")]));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "invalid_json"),
        (b"{}".to_vec(), "invalid_json"),
        (br#"{"messages": "hi"}"#.to_vec(), "invalid_json"),
        (chat_body(vec![]), "invalid_messages"),
        (
            chat_body(vec![
                user("hi"),
                json!({"id": "a", "role": "assistant", "parts": []}),
            ]),
            "invalid_messages",
        ),
        (
            chat_body(vec![
                json!({"id": "u", "role": "user", "parts": [{"text": "no type"}]}),
            ]),
            "invalid_messages",
        ),
        (
            chat_body(vec![
                json!({"id": "u", "role": "user", "parts": [{"type": "text"}]}),
            ]),
            "invalid_messages",
        ),
        (
            chat_body(vec![
                json!({"id": "t", "role": "tool", "parts": []}),
                user("hi"),
            ]),
            "invalid_messages",
        ),
        (
            chat_body(vec![
                json!({"id": "a", "role": "assistant", "parts": [
                    {"type": "tool-x", "state": "output-available", "output": 1}
                ]}),
                user("hi"),
            ]),
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
        assert!(error["error"]["message"].is_string());
    }
    assert_eq!(service.running_streams(), 0, "no run started");
}
