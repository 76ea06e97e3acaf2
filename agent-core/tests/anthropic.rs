//! Integration tests for the Anthropic Messages provider, driven through the scripted
//! in-memory `HttpClient` (`support::http`) on the thread runtime, with fixtures in the
//! shape the Messages API streams.

use std::sync::Arc;
use std::time::Duration;

use agent_core::agent::{Agent, OnInvalidOutput, OutputType};
use agent_core::error::{ErrorKind, ModelError};
use agent_core::event::EventKind;
use agent_core::http::{HttpErrorKind, Method};
use agent_core::model::{
    AnthropicConfig, AnthropicModel, FinishReason, Message, Model, ModelContext, ModelDelta,
    ModelRequest, OutputSchema, ToolCall, ToolCallDelta, Usage,
};
use agent_core::policy::RetryPolicy;
use agent_core::runtime::{SharedRuntime, TestRuntime, block_on, timeout};
use agent_core::tool::{ToolDefinition, ToolError, typed_tool};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};

mod support;
use support::Steps;
use support::http::*;

/// How long any stream may take before the test fails instead of hanging.
const WATCHDOG: Duration = Duration::from_secs(10);
/// How long a test may run before it fails instead of holding CI.
const DEADLINE: Duration = Duration::from_secs(30);

fn within_deadline(name: &str, body: impl FnOnce(&Steps) + Send + 'static) {
    support::within(name, DEADLINE, body)
}

fn runtime() -> SharedRuntime {
    Arc::new(TestRuntime::new())
}

const KEY: &str = "sk-ant-test-key-123";

fn config() -> AnthropicConfig {
    AnthropicConfig::new("http://claude.test/v1/", "claude-test")
        .with_api_key(KEY)
        .with_retry(RetryPolicy {
            max_retries: 2,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            max_retry_after: Duration::from_secs(1),
        })
}

/// `event: <type>\ndata: <json>\n\n`, as the Messages API frames every event.
fn frame(json: Value) -> String {
    let kind = json["type"].as_str().unwrap_or("message").to_owned();
    format!("event: {kind}\ndata: {json}\n\n")
}

fn message_start(input_tokens: u64) -> String {
    frame(json!({"type": "message_start", "message": {
        "id": "msg_01", "type": "message", "role": "assistant", "content": [],
        "model": "claude-test", "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1}
    }}))
}

fn block_start(index: u64, block: Value) -> String {
    frame(json!({"type": "content_block_start", "index": index, "content_block": block}))
}

fn block_delta(index: u64, delta: Value) -> String {
    frame(json!({"type": "content_block_delta", "index": index, "delta": delta}))
}

fn text_delta(index: u64, text: &str) -> String {
    block_delta(index, json!({"type": "text_delta", "text": text}))
}

fn block_stop(index: u64) -> String {
    frame(json!({"type": "content_block_stop", "index": index}))
}

fn message_delta(stop_reason: &str, output_tokens: u64) -> String {
    frame(json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": output_tokens}}))
}

fn message_stop() -> String {
    frame(json!({"type": "message_stop"}))
}

fn ping() -> String {
    frame(json!({"type": "ping"}))
}

/// A recorded-shape stream: thinking, text, two tool calls whose arguments stream in
/// pieces, the stop reason and usage.
fn tool_round_fixture() -> String {
    [
        message_start(25),
        block_start(0, json!({"type": "thinking", "thinking": ""})),
        block_delta(
            0,
            json!({"type": "thinking_delta", "thinking": "Two lookups… 🤔"}),
        ),
        block_delta(
            0,
            json!({"type": "signature_delta", "signature": "EqQBCgIYAhIM"}),
        ),
        block_stop(0),
        ping(),
        block_start(1, json!({"type": "text", "text": ""})),
        text_delta(1, "Checking "),
        text_delta(1, "héllo 🌍"),
        block_stop(1),
        block_start(
            2,
            json!({"type": "tool_use", "id": "toolu_01", "name": "weather", "input": {}}),
        ),
        block_delta(2, json!({"type": "input_json_delta", "partial_json": ""})),
        block_delta(
            2,
            json!({"type": "input_json_delta", "partial_json": "{\"city\": \"Pa"}),
        ),
        block_delta(
            2,
            json!({"type": "input_json_delta", "partial_json": "ris\"}"}),
        ),
        block_stop(2),
        block_start(
            3,
            json!({"type": "tool_use", "id": "toolu_02", "name": "clock", "input": {}}),
        ),
        block_delta(
            3,
            json!({"type": "input_json_delta", "partial_json": "{\"tz\":\"ß\"}"}),
        ),
        block_stop(3),
        message_delta("tool_use", 42),
        message_stop(),
    ]
    .concat()
}

fn tool_piece(index: u32, id: Option<&str>, name: Option<&str>, arguments: &str) -> ModelDelta {
    ModelDelta::ToolCall(ToolCallDelta {
        index,
        id: id.map(Into::into),
        name: name.map(Into::into),
        arguments: arguments.into(),
    })
}

fn tool_round_deltas() -> Vec<ModelDelta> {
    vec![
        ModelDelta::Reasoning("Two lookups… 🤔".into()),
        ModelDelta::Text("Checking ".into()),
        ModelDelta::Text("héllo 🌍".into()),
        tool_piece(0, Some("toolu_01"), Some("weather"), ""),
        tool_piece(0, None, None, "{\"city\": \"Pa"),
        tool_piece(0, None, None, "ris\"}"),
        tool_piece(1, Some("toolu_02"), Some("clock"), ""),
        tool_piece(1, None, None, "{\"tz\":\"ß\"}"),
        ModelDelta::Finish(FinishReason::ToolCalls),
        ModelDelta::Usage(Usage {
            prompt_tokens: 25,
            completion_tokens: 42,
            total_tokens: 67,
        }),
    ]
}

/// Run one request to its end: the deltas, and the error that ended it, if any.
fn run_with(
    config: AnthropicConfig,
    client: Arc<FakeClient>,
    request: ModelRequest,
) -> (Vec<ModelDelta>, Option<ModelError>) {
    let model = AnthropicModel::new(config, client);
    let rt = runtime();
    let mut stream = model.stream(request, ModelContext::new(rt.clone()));
    let outcome = block_on(timeout(&*rt, WATCHDOG, async {
        let mut deltas = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(delta) => deltas.push(delta),
                Err(error) => {
                    assert!(stream.next().await.is_none(), "nothing may follow an error");
                    return (deltas, Some(error));
                }
            }
        }
        (deltas, None)
    }));
    outcome.expect("the stream neither ended nor failed within the watchdog")
}

fn run(config: AnthropicConfig, client: Arc<FakeClient>) -> (Vec<ModelDelta>, Option<ModelError>) {
    run_with(config, client, ModelRequest::new(vec![Message::user("hi")]))
}

#[test]
fn a_recorded_tool_round_maps_to_deltas() {
    within_deadline("a_recorded_tool_round_maps_to_deltas", |_steps| {
        let client = FakeClient::new([ok(chunks([tool_round_fixture()]))]);
        let (deltas, error) = run(config(), client);
        assert_eq!(error, None);
        assert_eq!(deltas, tool_round_deltas());
    });
}

#[test]
fn frames_split_at_every_byte_position_yield_identical_deltas() {
    within_deadline(
        "frames_split_at_every_byte_position_yield_identical_deltas",
        |steps| {
            // Mix line endings: CRLF for the first five frames, LF for the rest.
            let body = tool_round_fixture().replacen("\n\n", "\r\n\r\n", 5);
            let bytes = body.as_bytes();
            let reference = tool_round_deltas();
            for split in 1..bytes.len() {
                steps.step(format!("split at {split}"));
                let parts = [
                    Bytes::copy_from_slice(&bytes[..split]),
                    Bytes::copy_from_slice(&bytes[split..]),
                ];
                let (deltas, error) = run(config(), FakeClient::new([ok(chunks(parts))]));
                assert_eq!(error, None, "split at {split}");
                assert_eq!(deltas, reference, "split at {split}");
            }
            let single_bytes: Vec<Bytes> = bytes
                .iter()
                .map(|b| Bytes::copy_from_slice(&[*b]))
                .collect();
            let (deltas, error) = run(config(), FakeClient::new([ok(chunks(single_bytes))]));
            assert_eq!(error, None);
            assert_eq!(deltas, reference, "one byte per chunk");
        },
    );
}

#[test]
fn each_delta_is_yielded_before_the_next_event_arrives() {
    within_deadline(
        "each_delta_is_yielded_before_the_next_event_arrives",
        |_steps| {
            // The body has the start and one text delta, then nothing more for now: the
            // delta must come out without waiting for the rest.
            let body = chunks_then_pending(vec![
                message_start(3),
                block_start(0, json!({"type": "text", "text": ""})),
                text_delta(0, "first"),
            ]);
            let model = AnthropicModel::new(config(), FakeClient::new([ok(body)]));
            let rt = runtime();
            let mut stream = model.stream(
                ModelRequest::new(vec![Message::user("hi")]),
                ModelContext::new(rt.clone()),
            );
            let first = block_on(timeout(&*rt, WATCHDOG, stream.next()))
                .expect("the first delta waited for more of the body");
            assert_eq!(first.unwrap().unwrap(), ModelDelta::Text("first".into()));
        },
    );
}

#[test]
fn request_has_headers_system_tools_history_and_max_tokens() {
    within_deadline(
        "request_has_headers_system_tools_history_and_max_tokens",
        |_steps| {
            let request = ModelRequest::new(vec![
                Message::system("Be brief."),
                Message::user("Weather in Paris and the time?"),
                Message::Assistant {
                    content: "Looking.".into(),
                    tool_calls: vec![
                        ToolCall {
                            id: "toolu_1".into(),
                            name: "weather".into(),
                            arguments: "{\"city\":\"Paris\"}".into(),
                        },
                        ToolCall {
                            id: "toolu_2".into(),
                            name: "clock".into(),
                            arguments: "not json".into(),
                        },
                    ],
                },
                Message::Tool {
                    call_id: "toolu_1".into(),
                    content: "sunny".into(),
                },
                Message::Tool {
                    call_id: "toolu_2".into(),
                    content: "12:00".into(),
                },
                Message::Assistant {
                    content: String::new(),
                    tool_calls: vec![],
                },
                Message::user("Thanks"),
            ])
            .with_tools(vec![ToolDefinition {
                name: "weather".into(),
                description: "Current weather".into(),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            }]);
            let client = FakeClient::new([ok(chunks([message_stop()]))]);
            let config = config()
                .with_temperature(0.5)
                .with_header("anthropic-beta", "x-beta")
                .with_body_field("top_k", 5);
            run_with(config, client.clone(), request);
            let sent = &client.requests()[0];
            assert_eq!(sent.method, Method::Post);
            assert_eq!(sent.url, "http://claude.test/v1/messages");
            assert_eq!(sent.header_value("x-api-key"), Some(KEY));
            assert_eq!(sent.header_value("anthropic-version"), Some("2023-06-01"));
            assert_eq!(sent.header_value("anthropic-beta"), Some("x-beta"));
            assert_eq!(sent.header_value("authorization"), None);
            let body: Value = serde_json::from_slice(&sent.body).unwrap();
            assert_eq!(
                body,
                json!({
                    "model": "claude-test",
                    "max_tokens": 4096,
                    "stream": true,
                    "temperature": 0.5,
                    "top_k": 5,
                    "system": "Be brief.",
                    "messages": [
                        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and the time?"}]},
                        {"role": "assistant", "content": [
                            {"type": "text", "text": "Looking."},
                            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                            {"type": "tool_use", "id": "toolu_2", "name": "clock", "input": {}}
                        ]},
                        {"role": "user", "content": [
                            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "12:00"},
                            {"type": "text", "text": "Thanks"}
                        ]}
                    ],
                    "tools": [{"name": "weather", "description": "Current weather",
                               "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
                }),
                "the request body was {body}"
            );
        },
    );
}

#[test]
fn output_schema_is_sent_as_output_config_format() {
    within_deadline("output_schema_is_sent_as_output_config_format", |_steps| {
        let client = FakeClient::new([ok(chunks([message_stop()]))]);
        let schema = OutputSchema::new(
            "pick",
            json!({"type": "object", "properties": {"n": {"type": "integer"}}}),
        );
        run_with(
            config().with_body_field("output_config", json!({"effort": "low"})),
            client.clone(),
            ModelRequest::new(vec![Message::user("hi")]).with_output(schema),
        );
        let body: Value = serde_json::from_slice(&client.requests()[0].body).unwrap();
        assert_eq!(
            body["output_config"],
            json!({"effort": "low", "format": {"type": "json_schema", "schema": {
                "type": "object", "properties": {"n": {"type": "integer"}},
                "required": ["n"], "additionalProperties": false
            }}}),
            "the request body was {body}"
        );
    });
}

#[test]
fn error_401_quotes_the_provider_message_without_the_key() {
    within_deadline(
        "error_401_quotes_the_provider_message_without_the_key",
        |_steps| {
            let body = format!(
                r#"{{"type":"error","error":{{"type":"authentication_error","message":"invalid x-api-key {KEY}"}},"request_id":"req_1"}}"#
            );
            let client = FakeClient::new([status(401, &[], &body)]);
            let (deltas, error) = run(config(), client.clone());
            assert!(deltas.is_empty());
            let error = error.expect("a 401 fails");
            assert_eq!(error.kind, ErrorKind::UpstreamStatus);
            assert_eq!(error.status, Some(401));
            assert!(
                error.message.contains("401 Unauthorized")
                    && error.message.contains("authentication_error"),
                "{}",
                error.message
            );
            assert!(!error.message.contains(KEY), "{}", error.message);
            assert_eq!(client.requests().len(), 1, "a 401 is not retried");
        },
    );
}

#[test]
fn overloaded_529_and_429_are_retried_before_the_first_byte() {
    within_deadline(
        "overloaded_529_and_429_are_retried_before_the_first_byte",
        |_steps| {
            let overloaded =
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
            let client = FakeClient::new([
                status(529, &[], overloaded),
                status(429, &[("retry-after", "0")], "{}"),
                ok(chunks([
                    message_start(1),
                    block_start(0, json!({"type": "text", "text": ""})),
                    text_delta(0, "ok"),
                    message_stop(),
                ])),
            ]);
            let (deltas, error) = run(config(), client.clone());
            assert_eq!(error, None);
            assert_eq!(deltas, vec![ModelDelta::Text("ok".into())]);
            assert_eq!(client.requests().len(), 3);

            // Exhausted: the last status is reported, with its kind.
            let client = FakeClient::new([
                status(529, &[], overloaded),
                status(529, &[], overloaded),
                status(529, &[], overloaded),
            ]);
            let error = run(config(), client).1.expect("529 three times fails");
            assert_eq!(error.kind, ErrorKind::UpstreamStatus);
            assert_eq!(error.status, Some(529));
            assert!(
                error.message.contains("529 Overloaded"),
                "{}",
                error.message
            );

            let client = FakeClient::new([status(429, &[("retry-after", "1")], "{}")]);
            let error = run(config().with_retry(RetryPolicy::none()), client)
                .1
                .expect("a 429 without retries fails");
            assert_eq!(error.kind, ErrorKind::RateLimited);
            assert_eq!(error.retry_after, Some(Duration::from_secs(1)));
        },
    );
}

#[test]
fn a_break_after_the_first_byte_is_not_retried() {
    within_deadline("a_break_after_the_first_byte_is_not_retried", |_steps| {
        let client = FakeClient::new([
            ok(chunks_then_error(vec![
                message_start(1),
                block_start(0, json!({"type": "text", "text": ""})),
                text_delta(0, "par"),
            ])),
            ok(chunks([message_stop()])),
        ]);
        let (deltas, error) = run(config(), client.clone());
        assert_eq!(deltas, vec![ModelDelta::Text("par".into())]);
        assert_eq!(error.unwrap().kind, ErrorKind::UpstreamReset);
        assert_eq!(client.requests().len(), 1);

        let client = FakeClient::new([
            Reply::Fail(HttpErrorKind::Connect),
            ok(chunks([message_stop()])),
        ]);
        let (_, error) = run(config(), client.clone());
        assert_eq!(error, None, "a connect error is retried");
        assert_eq!(client.requests().len(), 2);
    });
}

#[test]
fn error_event_mid_stream_is_a_model_error() {
    within_deadline("error_event_mid_stream_is_a_model_error", |_steps| {
        let client = FakeClient::new([ok(chunks([
            message_start(1),
            block_start(0, json!({"type": "text", "text": ""})),
            text_delta(0, "Hel"),
            frame(
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
            text_delta(0, "never"),
        ]))]);
        let (deltas, error) = run(config(), client);
        assert_eq!(deltas, vec![ModelDelta::Text("Hel".into())]);
        let error = error.unwrap();
        assert_eq!(error.kind, ErrorKind::Model);
        assert!(
            error.message.contains("claude.test")
                && error
                    .message
                    .contains("Overloaded (type: overloaded_error)"),
            "{}",
            error.message
        );
    });
}

#[test]
fn a_body_that_is_not_an_event_stream_is_malformed() {
    within_deadline(
        "a_body_that_is_not_an_event_stream_is_malformed",
        |_steps| {
            let client = FakeClient::new([ok(chunks(["<html>proxy error</html>"]))]);
            let error = run(config(), client).1.unwrap();
            assert_eq!(error.kind, ErrorKind::MalformedResponse);
            assert!(
                error.message.contains("Anthropic Messages"),
                "{}",
                error.message
            );

            let client =
                FakeClient::new([ok(chunks(["event: content_block_delta\ndata: {oops\n\n"]))]);
            let error = run(config(), client).1.unwrap();
            assert_eq!(error.kind, ErrorKind::MalformedResponse);
        },
    );
}

#[test]
fn config_debug_never_shows_the_key() {
    let model = AnthropicModel::new(
        AnthropicConfig::anthropic("claude-x", KEY).with_header("x-other", "hidden-value"),
        FakeClient::new([]),
    );
    let debug = format!("{model:?}");
    assert!(debug.contains("api.anthropic.com/v1/messages"), "{debug}");
    assert!(
        !debug.contains(KEY) && !debug.contains("hidden-value"),
        "{debug}"
    );
    assert_eq!(model.name(), "claude-x");
}

#[derive(Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
struct Forecast {
    city: String,
    celsius: i32,
}

fn agent_with(client: Arc<FakeClient>, output: OutputType) -> Agent {
    Agent::builder()
        .instructions("Forecast.")
        .model(AnthropicModel::new(config(), client))
        .tool(typed_tool(
            "weather",
            "Current weather",
            |args: serde_json::Map<String, Value>| async move {
                Ok::<_, ToolError>(json!({"args": args, "celsius": 21}))
            },
        ))
        .output(output)
        .runtime(runtime())
        .build()
        .unwrap()
}

fn text_answer(parts: &[&str]) -> Reply {
    let mut frames = vec![
        message_start(10),
        block_start(0, json!({"type": "text", "text": ""})),
    ];
    frames.extend(parts.iter().map(|p| text_delta(0, p)));
    frames.extend([block_stop(0), message_delta("end_turn", 5), message_stop()]);
    ok(chunks(frames))
}

#[test]
fn an_agent_runs_a_tool_round_then_returns_structured_output() {
    within_deadline(
        "an_agent_runs_a_tool_round_then_returns_structured_output",
        |_steps| {
            let client = FakeClient::new([
                ok(chunks([
                    message_start(10),
                    block_start(
                        0,
                        json!({"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {}}),
                    ),
                    block_delta(
                        0,
                        json!({"type": "input_json_delta", "partial_json": "{\"city\":\"Oslo\"}"}),
                    ),
                    block_stop(0),
                    message_delta("tool_use", 3),
                    message_stop(),
                ])),
                text_answer(&["{\"city\": \"Os", "lo\", \"celsius\": 21}"]),
            ]);
            let agent = agent_with(
                client.clone(),
                OutputType::of::<Forecast>().partial_output(true),
            );
            let events: Vec<_> = block_on(agent.run("Oslo?").collect());
            let kinds: Vec<&str> = events.iter().map(|e| e.name()).collect();
            assert_eq!(
                kinds,
                [
                    "run_started",
                    "model_request_started",
                    "tool_call_delta",
                    "tool_call_delta",
                    "model_request_completed",
                    "tool_call_started",
                    "tool_call_completed",
                    "model_request_started",
                    "text_delta",
                    "partial_output",
                    "text_delta",
                    "partial_output",
                    "model_request_completed",
                    "run_completed"
                ],
                "{events:#?}"
            );
            assert_eq!(
                events[9].kind,
                EventKind::PartialOutput {
                    output: json!({"city": "Os"})
                }
            );
            let forecast: Forecast = events
                .last()
                .unwrap()
                .kind
                .parsed_output()
                .unwrap()
                .unwrap();
            assert_eq!(
                forecast,
                Forecast {
                    city: "Oslo".into(),
                    celsius: 21
                }
            );

            // The second request gave the tool result back as a user tool_result block.
            let second: Value = serde_json::from_slice(&client.requests()[1].body).unwrap();
            assert_eq!(second["messages"][2]["content"][0]["type"], "tool_result");
            assert_eq!(
                second["messages"][2]["content"][0]["tool_use_id"],
                "toolu_9"
            );
            assert_eq!(second["output_config"]["format"]["type"], "json_schema");
        },
    );
}

#[test]
fn invalid_output_fails_or_is_retried_once_with_the_error() {
    within_deadline(
        "invalid_output_fails_or_is_retried_once_with_the_error",
        |_steps| {
            // Fail: the kind says so, and the raw answer is kept.
            let client = FakeClient::new([text_answer(&["{\"city\": 3}"])]);
            let agent = agent_with(client, OutputType::of::<Forecast>());
            let events: Vec<_> = block_on(agent.run("?").collect());
            let EventKind::RunFailed {
                error,
                partial_text,
            } = &events.last().unwrap().kind
            else {
                panic!("expected run_failed, got {events:#?}")
            };
            assert_eq!(error.kind, ErrorKind::InvalidOutput);
            assert!(error.message.contains("Forecast"), "{}", error.message);
            assert_eq!(partial_text, "{\"city\": 3}");

            // Retry once: the validation error goes back to the model, whose second answer
            // is valid.
            let client = FakeClient::new([
                text_answer(&["Sure! Oslo is 21."]),
                text_answer(&["{\"city\": \"Oslo\", \"celsius\": 21}"]),
            ]);
            let agent = agent_with(
                client.clone(),
                OutputType::of::<Forecast>().on_invalid(OnInvalidOutput::RetryOnce),
            );
            let events: Vec<_> = block_on(agent.run("?").collect());
            let done = &events.last().unwrap().kind;
            assert_eq!(
                done.parsed_output::<Forecast>()
                    .expect("run_completed with output")
                    .unwrap(),
                Forecast {
                    city: "Oslo".into(),
                    celsius: 21
                }
            );
            let second: Value = serde_json::from_slice(&client.requests()[1].body).unwrap();
            let feedback = second["messages"][2]["content"][0]["text"]
                .as_str()
                .unwrap();
            assert!(feedback.contains("not valid JSON"), "{feedback}");

            // Twice invalid with one retry: fails.
            let client = FakeClient::new([text_answer(&["no"]), text_answer(&["still no"])]);
            let agent = agent_with(
                client.clone(),
                OutputType::of::<Forecast>().on_invalid(OnInvalidOutput::RetryOnce),
            );
            let events: Vec<_> = block_on(agent.run("?").collect());
            let EventKind::RunFailed { error, .. } = &events.last().unwrap().kind else {
                panic!("expected run_failed, got {events:#?}")
            };
            assert_eq!(error.kind, ErrorKind::InvalidOutput);
            assert_eq!(client.requests().len(), 2, "exactly one retry");
        },
    );
}
