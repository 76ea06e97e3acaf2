//! `POST /v1/responses` (the OpenAI Responses API) through `AgentService::handle`: event
//! order, sequence numbers, item ids, the final `response` object, the non-streamed answer,
//! request parsing and bad bodies.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::agent::{Agent, AgentBuilder};
use agent_core::error::{ErrorKind, ModelError};
use agent_core::model::{
    FinishReason, Message, ScriptedModel, Step, ToolCall, ToolCallDelta, Turn,
};
use agent_core::runtime::{TestRuntime, block_on};
use agent_core::server::{AgentService, ApiBody, ApiResponse, ServerConfig};
use agent_core::sse::{SseDecoder, SseItem};
use agent_core::tool::{ToolError, typed_tool};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);

mod support;

/// [`support::within`] with this file's [`DEADLINE`].
fn within_deadline(name: &str, body: impl FnOnce() + Send + 'static) {
    support::within(name, DEADLINE, move |_| body())
}

fn builder(model: ScriptedModel) -> AgentBuilder {
    Agent::builder()
        .model(model.with_name("scripted-agent"))
        .runtime(Arc::new(TestRuntime::new()))
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Numbers {
    a: i64,
    b: i64,
}

fn service(model: ScriptedModel) -> AgentService {
    let agent = builder(model)
        .tool(typed_tool(
            "add",
            "add two numbers",
            |n: Numbers| async move { Ok::<_, ToolError>(n.a + n.b) },
        ))
        .build()
        .unwrap();
    AgentService::new(agent, ServerConfig::default())
}

fn post(service: &AgentService, body: &[u8]) -> ApiResponse {
    block_on(service.handle(
        "POST",
        "/v1/responses",
        &[("content-type", "application/json")],
        body,
    ))
}

fn header<'a>(response: &'a ApiResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn json_body(response: &ApiResponse) -> Value {
    match &response.body {
        ApiBody::Full(bytes) => serde_json::from_slice(bytes).expect("a JSON body"),
        ApiBody::Stream(_) => panic!("expected a complete body"),
    }
}

/// Stream a request and decode its SSE events as (event name, data JSON). Asserts the frame
/// shape on the way: `event:` equals the data's `type`, no `[DONE]`, and `sequence_number`
/// 0, 1, 2, … without gaps.
fn stream(service: &AgentService, body: &[u8]) -> Vec<(String, Value)> {
    let response = post(service, body);
    assert_eq!(response.status, 200);
    assert_eq!(header(&response, "content-type"), Some("text/event-stream"));
    assert_eq!(header(&response, "x-accel-buffering"), Some("no"));
    assert!(header(&response, "x-run-id").is_some());
    let ApiBody::Stream(body) = response.body else {
        panic!("expected a stream, got {:?}", json_body(&response));
    };
    let chunks: Vec<_> = block_on(body.collect());
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for chunk in chunks {
        decoder.push(&chunk);
        while let Some(item) = decoder.next_item() {
            if let SseItem::Event(event) = item.unwrap() {
                assert_ne!(event.data, "[DONE]", "the Responses API sends no [DONE]");
                let data: Value = serde_json::from_str(&event.data).expect("JSON data");
                assert_eq!(data["type"], event.event, "event name = type");
                events.push((event.event, data));
            }
        }
    }
    for (i, (_, data)) in events.iter().enumerate() {
        assert_eq!(
            data["sequence_number"],
            json!(i),
            "sequence_number of event {i}"
        );
    }
    events
}

fn types(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(t, _)| t.as_str()).collect()
}

/// Every event naming an item (item_id + output_index) names the item that
/// `response.output_item.added` put at that index, and every added item is done once.
fn assert_items_consistent(events: &[(String, Value)]) {
    let mut ids: Vec<String> = Vec::new();
    let mut done = Vec::new();
    for (kind, data) in events {
        match kind.as_str() {
            "response.output_item.added" => {
                assert_eq!(data["output_index"], json!(ids.len()), "{data}");
                ids.push(data["item"]["id"].as_str().unwrap().to_string());
            }
            "response.output_item.done" => {
                let index = data["output_index"].as_u64().unwrap() as usize;
                assert_eq!(data["item"]["id"], ids[index], "{data}");
                assert!(!done.contains(&index), "item {index} done twice");
                done.push(index);
            }
            _ => {
                if let Some(item_id) = data.get("item_id") {
                    let index = data["output_index"].as_u64().unwrap() as usize;
                    assert_eq!(item_id, &ids[index], "{kind}: {data}");
                    assert!(!done.contains(&index), "{kind} after its item was done");
                }
            }
        }
    }
    assert_eq!(done.len(), ids.len(), "every added item is done");
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "item ids are unique: {ids:?}");
}

fn last_response(events: &[(String, Value)]) -> &Value {
    &events.last().unwrap().1["response"]
}

#[test]
fn plain_text_streams_one_message_item() {
    within_deadline("plain_text_streams_one_message_item", || {
        let service = service(ScriptedModel::from_fn(|_, _| {
            Turn::new().text("Hel").text("lo").usage(3, 2)
        }));
        let events = stream(
            &service,
            br#"{"model":"my-model","input":"hi","stream":true}"#,
        );
        assert_eq!(
            types(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_items_consistent(&events);
        let created = &events[0].1["response"];
        assert_eq!(created["status"], "in_progress");
        assert_eq!(created["output"], json!([]));
        assert_eq!(created["object"], "response");
        let id = created["id"].as_str().unwrap();
        assert!(id.starts_with("resp_"), "{id}");
        let added = &events[2].1;
        assert_eq!(added["item"]["type"], "message");
        assert_eq!(added["item"]["role"], "assistant");
        assert_eq!(added["item"]["status"], "in_progress");
        assert_eq!(events[3].1["part"]["type"], "output_text");
        assert_eq!(events[3].1["part"]["text"], "");
        assert_eq!(events[4].1["delta"], "Hel");
        assert_eq!(events[4].1["content_index"], 0);
        assert_eq!(events[5].1["delta"], "lo");
        assert_eq!(events[6].1["text"], "Hello");
        assert_eq!(events[7].1["part"]["text"], "Hello");
        assert_eq!(events[8].1["item"]["status"], "completed");

        let response = last_response(&events);
        assert_eq!(response["id"], id);
        assert_eq!(response["object"], "response");
        assert_eq!(response["status"], "completed");
        assert_eq!(response["model"], "my-model");
        assert!(response["created_at"].as_u64().unwrap() > 0);
        assert_eq!(response["error"], Value::Null);
        assert_eq!(response["output"], json!([events[8].1["item"]]));
        assert_eq!(response["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(response["usage"]["input_tokens"], 3);
        assert_eq!(response["usage"]["output_tokens"], 2);
        assert_eq!(response["usage"]["total_tokens"], 5);
    });
}

fn delta(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> Step {
    Step::ToolCallDelta(ToolCallDelta {
        index,
        id: id.map(Into::into),
        name: name.map(Into::into),
        arguments: args.into(),
    })
}

fn tool_round_service() -> AgentService {
    service(ScriptedModel::new([
        Turn::new()
            .text("Let me add.")
            .step(delta(0, Some("call_1"), Some("add"), r#"{"a":2,"#))
            .step(delta(0, None, None, r#""b":3}"#))
            .step(Step::Finish(FinishReason::ToolCalls))
            .usage(10, 4),
        Turn::new().text("It is ").text("5.").usage(20, 3),
    ]))
}

#[test]
fn a_tool_round_streams_function_call_and_output_items_then_the_next_message() {
    within_deadline("a_tool_round_streams_function_call_items", || {
        let events = stream(&tool_round_service(), br#"{"input":"2+3?","stream":true}"#);
        assert_eq!(
            types(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_items_consistent(&events);
        let call_added = &events[8].1["item"];
        assert_eq!(call_added["type"], "function_call");
        assert_eq!(call_added["call_id"], "call_1");
        assert_eq!(call_added["name"], "add");
        assert_eq!(call_added["arguments"], "");
        assert_eq!(events[9].1["delta"], r#"{"a":2,"#);
        assert_eq!(events[10].1["delta"], r#""b":3}"#);
        assert_eq!(events[11].1["arguments"], r#"{"a":2,"b":3}"#);
        let call_done = &events[12].1["item"];
        assert_eq!(call_done["status"], "completed");
        assert_eq!(call_done["arguments"], r#"{"a":2,"b":3}"#);
        let output_done = &events[14].1["item"];
        assert_eq!(output_done["type"], "function_call_output");
        assert_eq!(output_done["call_id"], "call_1");
        assert_eq!(output_done["output"], "5");

        let response = last_response(&events);
        let output = response["output"].as_array().unwrap();
        let kinds: Vec<_> = output.iter().map(|i| i["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "message",
                "function_call",
                "function_call_output",
                "message"
            ]
        );
        assert!(output.iter().all(|i| i["status"] == "completed"));
        let text: String = output
            .iter()
            .filter(|i| i["type"] == "message")
            .map(|i| i["content"][0]["text"].as_str().unwrap())
            .collect();
        assert_eq!(text, "Let me add.It is 5.");
        assert_eq!(response["usage"]["input_tokens"], 30);
        assert_eq!(response["usage"]["output_tokens"], 7);
        assert_eq!(response["usage"]["total_tokens"], 37);
    });
}

#[test]
fn a_whole_tool_call_gets_its_arguments_done_event() {
    within_deadline("a_whole_tool_call_gets_its_arguments_done_event", || {
        let service = service(ScriptedModel::new([
            Turn::new().tool_call("call_9", "add", r#"{"a":1,"b":1}"#),
            Turn::new().text("2"),
        ]));
        let events = stream(&service, br#"{"input":"1+1","stream":true}"#);
        assert_items_consistent(&events);
        let done = events
            .iter()
            .find(|(t, _)| t == "response.function_call_arguments.done")
            .expect("arguments done");
        assert_eq!(done.1["arguments"], r#"{"a":1,"b":1}"#);
        assert_eq!(done.1["name"], "add");
        assert_eq!(last_response(&events)["status"], "completed");
    });
}

#[test]
fn reasoning_streams_as_a_reasoning_item_before_the_message() {
    within_deadline("reasoning_streams_as_a_reasoning_item", || {
        let service = service(ScriptedModel::from_fn(|_, _| {
            Turn::new()
                .reasoning("Think ")
                .reasoning("hard.")
                .text("Answer")
        }));
        let events = stream(&service, br#"{"input":"q","stream":true}"#);
        assert_eq!(
            types(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.reasoning_text.delta",
                "response.reasoning_text.delta",
                "response.reasoning_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_items_consistent(&events);
        assert_eq!(events[2].1["item"]["type"], "reasoning");
        assert_eq!(events[3].1["part"]["type"], "reasoning_text");
        assert_eq!(events[6].1["text"], "Think hard.");
        let reasoning = &last_response(&events)["output"][0];
        assert_eq!(reasoning["type"], "reasoning");
        assert_eq!(reasoning["summary"], json!([]));
        assert_eq!(
            reasoning["content"],
            json!([{"type": "reasoning_text", "text": "Think hard."}])
        );
    });
}

fn failing_service() -> AgentService {
    service(ScriptedModel::from_fn(|_, _| {
        Turn::new().text("par").fail(ModelError::new(
            ErrorKind::UpstreamStatus,
            "upstream answered 500",
        ))
    }))
}

#[test]
fn a_failed_run_ends_with_response_failed_and_its_open_item_incomplete() {
    within_deadline("a_failed_run_ends_with_response_failed", || {
        let events = stream(&failing_service(), br#"{"input":"x","stream":true}"#);
        assert_eq!(
            types(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.failed",
            ]
        );
        assert_items_consistent(&events);
        assert_eq!(events[7].1["item"]["status"], "incomplete");
        let response = last_response(&events);
        assert_eq!(response["status"], "failed");
        assert_eq!(response["error"]["code"], "server_error");
        assert!(
            response["error"]["message"]
                .as_str()
                .unwrap()
                .contains("upstream answered 500"),
            "{response}"
        );
        assert_eq!(response["output"][0]["content"][0]["text"], "par");
    });
}

#[test]
fn without_stream_the_answer_is_one_response_object() {
    within_deadline("without_stream_the_answer_is_one_response_object", || {
        let response = post(&tool_round_service(), br#"{"input":"2+3?"}"#);
        assert_eq!(response.status, 200);
        assert_eq!(header(&response, "content-type"), Some("application/json"));
        let body = json_body(&response);
        assert_eq!(body["object"], "response");
        assert_eq!(body["status"], "completed");
        assert!(body["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(body["model"], "scripted-agent");
        let output = body["output"].as_array().unwrap();
        assert_eq!(output.len(), 4);
        assert_eq!(output[1]["arguments"], r#"{"a":2,"b":3}"#);
        assert_eq!(output[2]["output"], "5");
        assert_eq!(output[3]["content"][0]["text"], "It is 5.");
        assert_eq!(body["usage"]["total_tokens"], 37);

        let explicit = post(&tool_round_service(), br#"{"input":"2+3?","stream":false}"#);
        assert_eq!(explicit.status, 200);
        assert_eq!(json_body(&explicit)["status"], "completed");
    });
}

#[test]
fn without_stream_a_failed_run_is_502_with_the_error_kind() {
    within_deadline("without_stream_a_failed_run_is_502", || {
        let response = post(&failing_service(), br#"{"input":"x"}"#);
        assert_eq!(response.status, 502);
        let body = json_body(&response);
        assert_eq!(body["error"]["code"], "upstream_status");
        assert!(body["error"]["message"].as_str().unwrap().contains("500"));
    });
}

fn recording_service() -> (AgentService, Arc<Mutex<Vec<Vec<Message>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let model = ScriptedModel::from_fn(move |request, _| {
        s.lock().unwrap().push(request.messages.clone());
        Turn::new().text("ok")
    });
    let agent = builder(model).build().unwrap();
    (AgentService::new(agent, ServerConfig::default()), seen)
}

#[test]
fn string_input_and_instructions_reach_the_model() {
    within_deadline("string_input_and_instructions_reach_the_model", || {
        let (service, seen) = recording_service();
        let response = post(&service, br#"{"input":"hello","instructions":"Be brief."}"#);
        assert_eq!(response.status, 200, "{}", json_body(&response));
        assert_eq!(
            seen.lock().unwrap()[0],
            [Message::system("Be brief."), Message::user("hello")]
        );
        assert_eq!(json_body(&response)["instructions"], "Be brief.");
    });
}

#[test]
fn input_items_with_tool_history_reach_the_model() {
    within_deadline("input_items_with_tool_history_reach_the_model", || {
        let (service, seen) = recording_service();
        let body = br#"{"input":[
            {"role":"developer","content":"Use tools."},
            {"type":"message","role":"user","content":[{"type":"input_text","text":"2+"},{"type":"input_text","text":"3?"}]},
            {"type":"reasoning","id":"rs_1","summary":[]},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Adding.","annotations":[]}]},
            {"type":"function_call","call_id":"call_1","name":"add","arguments":"{\"a\":2,\"b\":3}"},
            {"type":"function_call","call_id":"call_2","name":"add","arguments":"{}"},
            {"type":"function_call_output","call_id":"call_1","output":"5"},
            {"type":"function_call_output","call_id":"call_2","output":[{"type":"input_text","text":"err"}]},
            {"type":"function_call","call_id":"call_3","name":"add","arguments":"{}"},
            {"type":"function_call_output","call_id":"call_3","output":"0"},
            {"role":"system","content":"Answer now."},
            {"role":"user","content":"thanks"}
        ]}"#;
        let response = post(&service, body);
        assert_eq!(response.status, 200, "{}", json_body(&response));
        let call = |id: &str, args: &str| ToolCall {
            id: id.into(),
            name: "add".into(),
            arguments: args.into(),
        };
        let tool = |id: &str, content: &str| Message::Tool {
            call_id: id.into(),
            content: content.into(),
        };
        assert_eq!(
            seen.lock().unwrap()[0],
            [
                Message::system("Use tools."),
                Message::user("2+3?"),
                Message::Assistant {
                    content: "Adding.".into(),
                    tool_calls: vec![call("call_1", r#"{"a":2,"b":3}"#), call("call_2", "{}")],
                },
                tool("call_1", "5"),
                tool("call_2", "err"),
                Message::Assistant {
                    content: String::new(),
                    tool_calls: vec![call("call_3", "{}")],
                },
                tool("call_3", "0"),
                Message::system("Answer now."),
                Message::user("thanks"),
            ]
        );
    });
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

#[test]
fn bad_bodies_get_400_json_errors() {
    within_deadline("bad_bodies_get_400_json_errors", || {
        let (service, seen) = recording_service();
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "invalid_json"),
            (br#"{"model":"m"}"#, "invalid_json"),
            (br#"{"input":"x","stream":"yes"}"#, "invalid_json"),
            (br#"{"input":42}"#, "invalid_input"),
            (br#"{"input":[]}"#, "invalid_input"),
            (br#"{"input":[{"role":"assistant","content":"x"}]}"#, "invalid_input"),
            (br#"{"input":[{"role":"tool","content":"x"}]}"#, "invalid_input"),
            (br#"{"input":[{"content":"x"}]}"#, "invalid_input"),
            (br#"{"input":[{"type":"item_reference","id":"x"}]}"#, "invalid_input"),
            (br#"{"input":["hi"]}"#, "invalid_input"),
            (
                br#"{"input":[{"role":"user","content":[{"type":"input_image","image_url":"x"}]}]}"#,
                "invalid_input",
            ),
            (br#"{"input":[{"role":"user","content":7}]}"#, "invalid_input"),
            (
                br#"{"input":[{"type":"function_call","name":"add"},{"role":"user","content":"x"}]}"#,
                "invalid_input",
            ),
            (
                br#"{"input":[{"type":"function_call_output","call_id":"c"},{"role":"user","content":"x"}]}"#,
                "invalid_input",
            ),
            (
                br#"{"input":"x","previous_response_id":"resp_1"}"#,
                "unsupported_parameter",
            ),
        ];
        for (body, code) in cases {
            let response = post(&service, body);
            assert_error(&response, 400, code);
            let message = json_body(&response)["error"]["message"].to_string();
            assert!(
                !message.contains("panicked"),
                "{}: {message}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(seen.lock().unwrap().is_empty(), "no bad body starts a run");
        let get = block_on(service.handle("GET", "/v1/responses", &[], b""));
        assert_error(&get, 405, "method_not_allowed");
    });
}
