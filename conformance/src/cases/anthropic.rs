//! The Anthropic Messages provider on the backend: an upstream that streams Messages SSE in
//! lockstep (frames cut mid-line, mid-CRLF, inside multibyte characters and byte by byte)
//! reaches the consumer one delta at a time through the backend's HTTP client, and a tool
//! round streams its `input_json_delta`s and sends the result back as a `tool_result`.

use std::time::Duration;

use agent_core::event::EventKind;
use agent_core::model::{AnthropicConfig, AnthropicModel};
use agent_core::policy::{RetryPolicy, Timeouts};
use agent_core::tool::{ToolError, typed_tool};
use serde_json::{Value, json};

use super::support::{WAIT, agent_builder, consume_lockstep};
use super::{Outcome, TEXT_DELTAS};
use crate::backend::Backend;
use crate::kit::numbered_delta;
use crate::kit::upstream::{GatedUpstream, Response};

/// The key the cases send; the upstream checks it arrives as `x-api-key`.
const KEY: &str = "sk-ant-conformance";

/// Frames in the shape the Messages API streams them.
pub mod messages {
    use serde_json::{Value, json};

    /// `event: <type>` and `data: <json>`, as the API frames every event.
    pub fn frame(data: Value) -> String {
        let kind = data["type"].as_str().unwrap_or("message").to_owned();
        format!("event: {kind}\ndata: {data}\n\n")
    }

    /// `message_start` with `input_tokens`.
    pub fn message_start(input_tokens: u64) -> String {
        frame(json!({"type": "message_start", "message": {
            "id": "msg_conformance", "type": "message", "role": "assistant", "content": [],
            "model": "conformance-model", "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}))
    }

    /// `content_block_start` of a text block.
    pub fn text_start(index: u64) -> String {
        frame(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}}))
    }

    /// `content_block_delta` with a `text_delta`.
    pub fn text_delta(index: u64, text: &str) -> String {
        frame(json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "text_delta", "text": text}}))
    }

    /// `content_block_start` of a `tool_use` block.
    pub fn tool_use_start(index: u64, id: &str, name: &str) -> String {
        frame(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}))
    }

    /// `content_block_delta` with an `input_json_delta`.
    pub fn input_json_delta(index: u64, partial_json: &str) -> String {
        frame(json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "input_json_delta", "partial_json": partial_json}}))
    }

    /// `content_block_stop`.
    pub fn block_stop(index: u64) -> String {
        frame(json!({"type": "content_block_stop", "index": index}))
    }

    /// `message_delta` with the stop reason and output tokens, then `message_stop`.
    pub fn end(stop_reason: &str, output_tokens: u64) -> String {
        frame(json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": output_tokens}}))
            + &frame(json!({"type": "message_stop"}))
    }

    /// `ping`.
    pub fn ping() -> String {
        frame(json!({"type": "ping"}))
    }
}

fn config(upstream: &GatedUpstream) -> AnthropicConfig {
    AnthropicConfig::new(upstream.base_url(), "conformance-model")
        .with_api_key(KEY)
        .with_retry(RetryPolicy::none())
        .with_timeouts(Timeouts {
            connect: Some(Duration::from_secs(5)),
            first_byte: Some(WAIT),
            inactivity: Some(WAIT),
            run: None,
        })
}

fn model(backend: &dyn Backend, upstream: &GatedUpstream) -> AnthropicModel {
    AnthropicModel::new(config(upstream), backend.http_client())
}

/// The deltas of the lockstep case: ASCII, 2-byte and 4-byte characters.
fn deltas() -> Vec<String> {
    (0..TEXT_DELTAS)
        .map(|k| match k % 10 {
            3 => format!("é{k} "),
            7 => format!("🦀{k} "),
            _ => numbered_delta(k),
        })
        .collect()
}

/// A lockstep Messages answer: delta k is sent once the consumer saw delta k − 1.
fn lockstep_answer(deltas: &[String]) -> Response {
    let mut response = Response::sse()
        .send(messages::message_start(7))
        .send(messages::text_start(0));
    for (k, delta) in deltas.iter().enumerate() {
        if k > 0 {
            response = response.wait_gate(
                k as u64,
                format!("text delta {} to reach the consumer", k - 1),
            );
        }
        let frame = messages::text_delta(0, delta);
        response = match k {
            // Between the `event:` line and the `data:` line, and in the middle of the JSON.
            5 => {
                let line = frame.find('\n').map_or(0, |i| i + 1);
                response.send_split(&frame, &[line, frame.len() / 2])
            }
            // CRLF line ends, cut between a CR and its LF.
            6 | 16 => {
                let crlf = frame.replace('\n', "\r\n");
                let cut = crlf.find("\r\n").map_or(0, |i| i + 1);
                response.send_split(&crlf, &[cut])
            }
            // Inside the 4-byte crab and the 2-byte é.
            7 | 13 | 17 => {
                let ch = if k == 13 { "é" } else { "🦀" };
                let at = frame.find(ch).map_or(0, |i| i + 1);
                let at2 = frame.find(ch).map_or(0, |i| i + ch.len() - 1);
                response.send_split(&frame, &[at, at2])
            }
            // One byte at a time, with a ping before it.
            9 => response.send(messages::ping()).trickle(&frame),
            _ => response.send(frame),
        };
    }
    response
        .send(messages::block_stop(0))
        .send(messages::end("end_turn", TEXT_DELTAS))
}

/// Messages SSE from a lockstep upstream reaches the consumer delta by delta, with the
/// request in Anthropic's shape.
pub fn incremental(backend: &dyn Backend) -> Outcome {
    let deltas = deltas();
    let upstream = GatedUpstream::start([lockstep_answer(&deltas)]).expect("upstream");
    let agent = agent_builder(backend)
        .instructions("Count.")
        .model(model(backend, &upstream))
        .build()
        .expect("agent");
    let transcript = consume_lockstep(backend, &agent, "count", &upstream.gate());
    transcript.assert_contract();
    assert_eq!(
        transcript.text_deltas(),
        deltas,
        "anthropic: every Messages text_delta must reach the consumer, in order, one by one \
         (a backend that buffers the upstream body deadlocks the lockstep upstream); {} text \
         deltas arrived; upstream: {:?}\n{}",
        transcript.count("text_delta"),
        upstream.failures(),
        transcript.summary()
    );
    let Some(EventKind::RunCompleted { text, usage, .. }) = transcript.terminal().map(|e| &e.kind)
    else {
        panic!(
            "anthropic: the run must complete after message_stop\n{}",
            transcript.summary()
        );
    };
    assert_eq!(
        text,
        &deltas.concat(),
        "anthropic: run_completed must carry the whole text\n{}",
        transcript.summary()
    );
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (7, TEXT_DELTAS),
        "anthropic: usage must come from message_start (input) and message_delta (output)"
    );
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1, "anthropic: exactly one upstream request");
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v1/messages"),
        "anthropic: the request must be POST /v1/messages"
    );
    assert_eq!(
        request.header("x-api-key"),
        Some(KEY),
        "anthropic: the key must be sent as x-api-key"
    );
    assert_eq!(
        request.header("anthropic-version"),
        Some("2023-06-01"),
        "anthropic: the anthropic-version header must be sent"
    );
    let body = request.json().expect("the request body is JSON");
    assert_eq!(
        (&body["stream"], &body["system"], &body["max_tokens"]),
        (&json!(true), &json!("Count."), &json!(4096)),
        "anthropic: the body must ask for a stream, carry the system prompt at the top level \
         and a max_tokens: {body}"
    );
    Outcome::passed().note(format!(
        "{TEXT_DELTAS} Messages text deltas in lockstep over the backend's HTTP client"
    ))
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Lookup {
    city: String,
}

/// A tool round: `tool_use` arguments streamed as `input_json_delta`s become
/// `tool_call_delta`s and one `tool_call_started`; the result goes back as a `tool_result`
/// block; the answer follows.
pub fn tool_round(backend: &dyn Backend) -> Outcome {
    let tool_answer = Response::sse()
        .send(messages::message_start(5))
        .send(messages::tool_use_start(0, "toolu_c1", "lookup"))
        .send(messages::input_json_delta(0, "{\"city\": "))
        .send(messages::input_json_delta(0, "\"Kyōto\"}"))
        .send(messages::block_stop(0))
        .send(messages::end("tool_use", 9));
    let text_answer = Response::sse()
        .send(messages::message_start(20))
        .send(messages::text_start(0))
        .send(messages::text_delta(0, "Sunny in Kyōto."))
        .send(messages::block_stop(0))
        .send(messages::end("end_turn", 4));
    let upstream = GatedUpstream::start([tool_answer, text_answer]).expect("upstream");
    let agent = agent_builder(backend)
        .model(model(backend, &upstream))
        .tool(typed_tool(
            "lookup",
            "Weather of a city",
            |args: Lookup| async move { Ok::<_, ToolError>(format!("sunny in {}", args.city)) },
        ))
        .build()
        .expect("agent");
    let transcript = super::support::consume(backend, &agent, "weather?", |_| {
        std::ops::ControlFlow::Continue(())
    });
    transcript.assert_contract();
    let pieces: Vec<&str> = transcript
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCallDelta {
                arguments_delta, ..
            } => Some(arguments_delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        pieces,
        ["", "{\"city\": ", "\"Kyōto\"}"],
        "anthropic: the tool_use block and each input_json_delta must become a tool_call_delta\n{}",
        transcript.summary()
    );
    let started = transcript.events().iter().find_map(|e| match &e.kind {
        EventKind::ToolCallStarted {
            call_id, arguments, ..
        } => Some((call_id.clone(), arguments.clone())),
        _ => None,
    });
    assert_eq!(
        started,
        Some(("toolu_c1".to_string(), json!({"city": "Kyōto"}))),
        "anthropic: the tool call must start with the block's id and the joined arguments\n{}",
        transcript.summary()
    );
    assert_eq!(
        transcript.completed_text(),
        "Sunny in Kyōto.",
        "anthropic: the run must complete with the second answer\n{}",
        transcript.summary()
    );
    let requests = upstream.requests();
    assert_eq!(
        requests.len(),
        2,
        "anthropic: two model requests for a tool round"
    );
    let second = requests[1].json().expect("the second request body is JSON");
    let expected: Value = json!([
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_c1", "name": "lookup", "input": {"city": "Kyōto"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_c1", "content": "sunny in Kyōto"}]}
    ]);
    assert_eq!(
        second["messages"], expected,
        "anthropic: the tool call and its result must go back as tool_use and tool_result blocks"
    );
    assert_eq!(
        second["tools"][0]["input_schema"]["properties"]["city"]["type"], "string",
        "anthropic: tools must be sent with their input_schema"
    );
    Outcome::passed().note("a Messages tool round: input_json_delta pieces, tool_result back")
}
