//! Integration tests for the OpenAI-compatible Chat Completions provider, driven through a
//! scripted in-memory `HttpClient` (`support::http`) on the thread runtime.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use agent_core::error::{ErrorKind, ModelError};
use agent_core::http::{HttpErrorKind, Method};
use agent_core::model::{
    FinishReason, Message, Model, ModelContext, ModelDelta, ModelRequest, OpenAiConfig,
    OpenAiModel, OutputSchema, ToolCall, ToolCallDelta, Usage,
};
use agent_core::policy::{RetryPolicy, Timeouts};
use agent_core::runtime::{BoxFuture, SharedRuntime, TestRuntime, block_on, timeout};
use agent_core::sse::SseLimits;
use agent_core::tool::ToolDefinition;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt, stream};
use proptest::prelude::*;
use serde_json::{Value, json};

/// How long any test waits for a stream before failing instead of hanging.
const WATCHDOG: Duration = Duration::from_secs(10);

fn runtime() -> SharedRuntime {
    Arc::new(TestRuntime::new())
}

fn fast_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(1),
    }
}

fn config() -> OpenAiConfig {
    OpenAiConfig::new("http://llm.test/v1/", "test-model").with_retry(fast_retries(2))
}

fn short_timeouts() -> Timeouts {
    Timeouts {
        connect: Some(Duration::from_secs(1)),
        first_byte: Some(Duration::from_millis(50)),
        inactivity: Some(Duration::from_millis(50)),
        run: None,
    }
}

fn hello() -> ModelRequest {
    ModelRequest::new(vec![Message::user("hi")])
}

/// `data: <json>\n\n`
fn event(json: Value) -> String {
    format!("data: {json}\n\n")
}

const DONE: &str = "data: [DONE]\n\n";

fn text_chunk(text: &str) -> String {
    event(
        json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]}),
    )
}

fn finish_chunk(reason: &str) -> String {
    event(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}))
}

fn usage_chunk(prompt: u64, completion: u64) -> String {
    event(
        json!({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}}),
    )
}

fn tool_chunk(index: u32, id: Option<&str>, name: Option<&str>, arguments: &str) -> String {
    let mut call = json!({"index": index, "function": {"arguments": arguments}});
    if let Some(id) = id {
        call["id"] = json!(id);
        call["type"] = json!("function");
    }
    if let Some(name) = name {
        call["function"]["name"] = json!(name);
    }
    event(
        json!({"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null}]}),
    )
}

fn tool_delta(index: u32, id: Option<&str>, name: Option<&str>, arguments: &str) -> ModelDelta {
    ModelDelta::ToolCall(ToolCallDelta {
        index,
        id: id.map(Into::into),
        name: name.map(Into::into),
        arguments: arguments.into(),
    })
}

fn text(s: &str) -> ModelDelta {
    ModelDelta::Text(s.into())
}

/// Run one request to its end: the deltas, and the error that ended it, if any.
fn run_with(
    config: OpenAiConfig,
    client: Arc<FakeClient>,
    request: ModelRequest,
) -> (Vec<ModelDelta>, Option<ModelError>) {
    let model = OpenAiModel::new(config, client);
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

fn run(config: OpenAiConfig, client: Arc<FakeClient>) -> (Vec<ModelDelta>, Option<ModelError>) {
    run_with(config, client, hello())
}

// ---------------------------------------------------------------------------------------------
// Happy paths
// ---------------------------------------------------------------------------------------------

/// How long a test may run before it fails instead of holding CI.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

mod support;
use support::Steps;
use support::http::*;

/// [`support::within`] with this file's [`DEADLINE`].
fn within_deadline(name: &str, body: impl FnOnce(&Steps) + Send + 'static) {
    support::within(name, DEADLINE, body)
}

#[test]
fn text_stream_yields_each_delta_in_order() {
    within_deadline("text_stream_yields_each_delta_in_order", |_steps| {
        let body = [
            event(
                json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}),
            ),
            text_chunk("Hel"),
            text_chunk("lo"),
            text_chunk(""),
            finish_chunk("stop"),
            usage_chunk(5, 2),
            DONE.to_owned(),
        ];
        let client = FakeClient::new([ok(chunks(body))]);
        let (deltas, error) = run(config(), client.clone());
        assert_eq!(error, None);
        assert_eq!(
            deltas,
            vec![
                text("Hel"),
                text("lo"),
                ModelDelta::Finish(FinishReason::Stop),
                ModelDelta::Usage(Usage {
                    prompt_tokens: 5,
                    completion_tokens: 2,
                    total_tokens: 7
                }),
            ]
        );
        let requests = client.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].method, Method::Post);
        assert_eq!(requests[0].url, "http://llm.test/v1/chat/completions");
        assert_eq!(
            requests[0].header_value("content-type"),
            Some("application/json")
        );
        assert_eq!(
            requests[0].header_value("accept"),
            Some("text/event-stream")
        );
        assert_eq!(requests[0].connect_timeout, Timeouts::default().connect);
    });
}

#[test]
fn interleaved_tool_calls_are_yielded_by_index_in_order() {
    within_deadline(
        "interleaved_tool_calls_are_yielded_by_index_in_order",
        |_steps| {
            let body = [
                tool_chunk(0, Some("call_a"), Some("weather"), ""),
                tool_chunk(1, Some("call_b"), Some("clock"), ""),
                tool_chunk(0, None, None, "{\"city\":"),
                tool_chunk(1, None, None, "{}"),
                tool_chunk(0, None, None, "\"Paris\"}"),
                finish_chunk("tool_calls"),
                DONE.to_owned(),
            ];
            let (deltas, error) = run(config(), FakeClient::new([ok(chunks(body))]));
            assert_eq!(error, None);
            assert_eq!(
                deltas,
                vec![
                    tool_delta(0, Some("call_a"), Some("weather"), ""),
                    tool_delta(1, Some("call_b"), Some("clock"), ""),
                    tool_delta(0, None, None, "{\"city\":"),
                    tool_delta(1, None, None, "{}"),
                    tool_delta(0, None, None, "\"Paris\"}"),
                    ModelDelta::Finish(FinishReason::ToolCalls),
                ]
            );
            // Assembled by index, the calls are complete.
            let mut args = [String::new(), String::new()];
            for delta in &deltas {
                if let ModelDelta::ToolCall(call) = delta {
                    args[call.index as usize].push_str(&call.arguments);
                }
            }
            assert_eq!(args, ["{\"city\":\"Paris\"}".to_owned(), "{}".to_owned()]);
        },
    );
}

#[test]
fn usage_chunk_with_empty_choices_and_several_deltas_in_one_chunk() {
    within_deadline(
        "usage_chunk_with_empty_choices_and_several_deltas_in_one_chunk",
        |_steps| {
            // One chunk carrying text, a finish reason and usage yields three deltas.
            let combined = event(json!({
                "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}
            }));
            let body = [
                combined,
                usage_chunk(3, 4),
                event(json!({"choices": [], "usage": null})),
                DONE.to_owned(),
            ];
            let (deltas, error) = run(config(), FakeClient::new([ok(chunks(body))]));
            assert_eq!(error, None);
            assert_eq!(
                deltas,
                vec![
                    text("ok"),
                    ModelDelta::Finish(FinishReason::Length),
                    ModelDelta::Usage(Usage {
                        prompt_tokens: 10,
                        completion_tokens: 1,
                        total_tokens: 11
                    }),
                    ModelDelta::Usage(Usage {
                        prompt_tokens: 3,
                        completion_tokens: 4,
                        total_tokens: 7
                    }),
                ]
            );
        },
    );
}

#[test]
fn reasoning_content_and_reasoning_become_reasoning_deltas() {
    within_deadline(
        "reasoning_content_and_reasoning_become_reasoning_deltas",
        |_steps| {
            let body = [
                event(
                    json!({"choices": [{"index": 0, "delta": {"reasoning_content": "Let me think"}}]}),
                ),
                event(json!({"choices": [{"index": 0, "delta": {"reasoning": ", done."}}]})),
                event(
                    json!({"choices": [{"index": 0, "delta": {"reasoning_content": null, "content": "42"}}]}),
                ),
                DONE.to_owned(),
            ];
            let (deltas, error) = run(config(), FakeClient::new([ok(chunks(body))]));
            assert_eq!(error, None);
            assert_eq!(
                deltas,
                vec![
                    ModelDelta::Reasoning("Let me think".into()),
                    ModelDelta::Reasoning(", done.".into()),
                    text("42")
                ]
            );
        },
    );
}

#[test]
fn stream_is_lazy_yields_without_waiting_and_drop_closes_the_body() {
    within_deadline(
        "stream_is_lazy_yields_without_waiting_and_drop_closes_the_body",
        |_steps| {
            let dropped = Arc::new(AtomicBool::new(false));
            let body = DropFlag {
                inner: chunks_then_pending(vec![format!("{}{}", text_chunk("a"), text_chunk("b"))]),
                dropped: dropped.clone(),
            };
            let client = FakeClient::new([ok(Box::pin(body))]);
            let model = OpenAiModel::new(config(), client.clone());
            let mut stream = model.stream(hello(), ModelContext::new(runtime()));
            assert!(
                client.requests().is_empty(),
                "no request before the first poll"
            );
            // Both deltas come out although the body has not ended.
            assert_eq!(block_on(stream.next()).unwrap().unwrap(), text("a"));
            assert_eq!(client.requests().len(), 1);
            assert_eq!(block_on(stream.next()).unwrap().unwrap(), text("b"));
            assert!(
                stream.next().now_or_never().is_none(),
                "waiting for more body"
            );
            assert!(!dropped.load(Ordering::SeqCst));
            drop(stream);
            assert!(
                dropped.load(Ordering::SeqCst),
                "dropping the stream drops the response body"
            );
        },
    );
}

#[test]
fn a_flood_of_comments_yields_to_the_executor() {
    within_deadline("a_flood_of_comments_yields_to_the_executor", |_steps| {
        // 200 comment chunks, all ready at once, then an event: the stream must return `Pending`
        // (having woken itself) now and then instead of spinning through all of them in one poll.
        let mut parts: Vec<String> = vec![": processing\n\n".to_owned(); 200];
        parts.push(text_chunk("finally"));
        let client = FakeClient::new([ok(chunks(parts))]);
        let model = OpenAiModel::new(config(), client);
        let mut stream = model.stream(hello(), ModelContext::new(runtime()));
        let mut pending_polls = 0;
        let first = loop {
            match stream.next().now_or_never() {
                Some(item) => break item,
                None => pending_polls += 1,
            }
            assert!(pending_polls < 100, "the stream never produced its event");
        };
        assert_eq!(first.unwrap().unwrap(), text("finally"));
        assert!(
            pending_polls >= 2,
            "only {pending_polls} pending polls for 200 ready chunks"
        );
    });
}

#[test]
fn stream_without_done_ends_normally() {
    within_deadline("stream_without_done_ends_normally", |_steps| {
        // The body ends after a finish reason, with no [DONE].
        let body = [text_chunk("bye"), finish_chunk("stop")];
        let (deltas, error) = run(config(), FakeClient::new([ok(chunks(body))]));
        assert_eq!(error, None);
        assert_eq!(
            deltas,
            vec![text("bye"), ModelDelta::Finish(FinishReason::Stop)]
        );

        // The body ends in the middle of an event and without a finish reason: the complete
        // events are kept, the cut-off one is discarded, and the stream still ends normally.
        let cut = text_chunk("cut");
        let body = [text_chunk("kept"), cut[..cut.len() - 1].to_owned()];
        let (deltas, error) = run(config(), FakeClient::new([ok(chunks(body))]));
        assert_eq!(error, None);
        assert_eq!(deltas, vec![text("kept")]);
    });
}

#[test]
fn body_without_any_event_is_malformed() {
    within_deadline("body_without_any_event_is_malformed", |_steps| {
        let (_, error) = run(
            config(),
            FakeClient::new([ok(chunks([r#"{"id":"x","choices":[]}"#]))]),
        );
        let error = error.expect("an error");
        assert_eq!(error.kind, ErrorKind::MalformedResponse);
        assert!(error.message.contains(r#"{"id":"x""#), "{}", error.message);

        let (_, error) = run(
            config(),
            FakeClient::new([ok(chunks(Vec::<String>::new()))]),
        );
        assert_eq!(error.expect("an error").kind, ErrorKind::MalformedResponse);
    });
}

// ---------------------------------------------------------------------------------------------
// Status errors and retries
// ---------------------------------------------------------------------------------------------

#[test]
fn error_401_reports_the_provider_message_without_the_key() {
    within_deadline(
        "error_401_reports_the_provider_message_without_the_key",
        |_steps| {
            let body = r#"{"error":{"message":"Incorrect API key provided: sk-test-key","type":"invalid_request_error","code":"invalid_api_key"}}"#;
            let client = FakeClient::new([status(401, &[], body)]);
            let (deltas, error) = run(config().with_api_key("sk-test-key"), client.clone());
            let error = error.expect("an error");
            assert!(deltas.is_empty());
            assert_eq!(error.kind, ErrorKind::UpstreamStatus);
            assert_eq!(error.status, Some(401));
            assert!(
                error
                    .message
                    .starts_with("upstream answered 401 Unauthorized: Incorrect API key provided"),
                "{}",
                error.message
            );
            assert!(
                error.message.contains("invalid_api_key"),
                "{}",
                error.message
            );
            assert!(
                !error.message.contains("sk-test-key"),
                "the key leaked: {}",
                error.message
            );
            assert!(!error.to_string().contains("sk-test-key"));
            assert_eq!(client.requests().len(), 1, "a 401 is not retried");
        },
    );
}

#[test]
fn error_body_that_is_not_json_is_quoted_briefly() {
    within_deadline("error_body_that_is_not_json_is_quoted_briefly", |_steps| {
        let html = format!("<html><body>{}</body></html>", "Bad gateway ".repeat(100));
        let client = FakeClient::new([status(502, &[], &html)]);
        let (_, error) = run(config().with_retry(RetryPolicy::none()), client);
        let error = error.expect("an error");
        assert_eq!(error.kind, ErrorKind::UpstreamStatus);
        assert_eq!(error.status, Some(502));
        assert!(
            error
                .message
                .starts_with("upstream answered 502 Bad Gateway: <html>"),
            "{}",
            error.message
        );
        assert!(error.message.chars().count() < 300, "{}", error.message);
    });
}

#[test]
fn rate_limited_429_with_retry_after_is_retried() {
    within_deadline("rate_limited_429_with_retry_after_is_retried", |_steps| {
        let client = FakeClient::new([
            status(
                429,
                &[("retry-after", "0")],
                r#"{"error":{"message":"slow down"}}"#,
            ),
            ok(chunks([text_chunk("after retry"), DONE.to_owned()])),
        ]);
        let (deltas, error) = run(config(), client.clone());
        assert_eq!(error, None);
        assert_eq!(deltas, vec![text("after retry")]);
        assert_eq!(client.requests().len(), 2);
    });
}

#[test]
fn rate_limited_429_exhausted_is_rate_limited_with_retry_after() {
    within_deadline(
        "rate_limited_429_exhausted_is_rate_limited_with_retry_after",
        |_steps| {
            let reply = || {
                status(
                    429,
                    &[("retry-after", "0")],
                    r#"{"error":{"message":"Rate limit reached"}}"#,
                )
            };
            let client = FakeClient::new([reply(), reply()]);
            let (_, error) = run(config().with_retry(fast_retries(1)), client.clone());
            let error = error.expect("an error");
            assert_eq!(error.kind, ErrorKind::RateLimited);
            assert_eq!(error.status, Some(429));
            assert_eq!(error.retry_after, Some(Duration::ZERO));
            assert!(
                error
                    .message
                    .contains("429 Too Many Requests: Rate limit reached"),
                "{}",
                error.message
            );
            assert_eq!(client.requests().len(), 2);
        },
    );
}

#[test]
fn server_error_500_is_retried_then_succeeds() {
    within_deadline("server_error_500_is_retried_then_succeeds", |_steps| {
        let client = FakeClient::new([
            status(500, &[], r#"{"error":{"message":"boom"}}"#),
            status(503, &[], ""),
            ok(chunks([text_chunk("third time lucky"), DONE.to_owned()])),
        ]);
        let (deltas, error) = run(config(), client.clone());
        assert_eq!(error, None);
        assert_eq!(deltas, vec![text("third time lucky")]);
        assert_eq!(client.requests().len(), 3);
    });
}

#[test]
fn server_error_500_with_retries_exhausted_is_upstream_status() {
    within_deadline(
        "server_error_500_with_retries_exhausted_is_upstream_status",
        |_steps| {
            let reply = || {
                status(
                    500,
                    &[],
                    r#"{"error":{"message":"The server had an error","type":"server_error"}}"#,
                )
            };
            let client = FakeClient::new([reply(), reply(), reply(), reply()]);
            let (_, error) = run(config(), client.clone());
            let error = error.expect("an error");
            assert_eq!(error.kind, ErrorKind::UpstreamStatus);
            assert_eq!(error.status, Some(500));
            assert!(
                error
                    .message
                    .contains("500 Internal Server Error: The server had an error"),
                "{}",
                error.message
            );
            assert_eq!(client.requests().len(), 3, "1 attempt + max_retries (2)");
        },
    );
}

#[test]
fn connect_errors_are_retried_and_name_the_host_not_the_key() {
    within_deadline(
        "connect_errors_are_retried_and_name_the_host_not_the_key",
        |_steps| {
            let client = FakeClient::new([
                Reply::Fail(HttpErrorKind::Connect),
                ok(chunks([text_chunk("connected"), DONE.to_owned()])),
            ]);
            let (deltas, error) = run(config(), client.clone());
            assert_eq!(error, None);
            assert_eq!(deltas, vec![text("connected")]);
            assert_eq!(client.requests().len(), 2);

            for (kind, expected) in [
                (HttpErrorKind::Connect, ErrorKind::Connect),
                (HttpErrorKind::ConnectTimeout, ErrorKind::ConnectTimeout),
            ] {
                let client =
                    FakeClient::new([Reply::Fail(kind), Reply::Fail(kind), Reply::Fail(kind)]);
                let config = OpenAiConfig::new("https://user:pw@llm.example.com:8443/v1", "m")
                    .with_api_key("sk-never-shown")
                    .with_retry(fast_retries(2));
                let (_, error) = run(config, client.clone());
                let error = error.expect("an error");
                assert_eq!(error.kind, expected);
                assert!(
                    error.message.contains("llm.example.com:8443"),
                    "{}",
                    error.message
                );
                assert!(
                    !error.message.contains("sk-never-shown") && !error.message.contains("pw@"),
                    "{}",
                    error.message
                );
                assert_eq!(client.requests().len(), 3);
            }
        },
    );
}

#[test]
fn error_after_the_first_body_chunk_is_upstream_reset_and_not_retried() {
    within_deadline(
        "error_after_the_first_body_chunk_is_upstream_reset_and_not_retried",
        |_steps| {
            let client = FakeClient::new([
                ok(chunks_then_error(vec![text_chunk("partial")])),
                ok(chunks([text_chunk("must not be used"), DONE.to_owned()])),
            ]);
            let (deltas, error) = run(config(), client.clone());
            let error = error.expect("an error");
            assert_eq!(deltas, vec![text("partial")]);
            assert_eq!(error.kind, ErrorKind::UpstreamReset);
            assert!(
                error.message.contains("broke mid-stream"),
                "{}",
                error.message
            );
            assert_eq!(
                client.requests().len(),
                1,
                "never retried once the body started"
            );
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Protocol errors
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_json_is_malformed_response_with_a_short_excerpt() {
    within_deadline(
        "malformed_json_is_malformed_response_with_a_short_excerpt",
        |_steps| {
            let garbage = format!("{{\"choices\": [{}", "x".repeat(5000));
            let client = FakeClient::new([ok(chunks([
                text_chunk("fine"),
                format!("data: {garbage}\n\n"),
            ]))]);
            let (deltas, error) = run(config(), client);
            let error = error.expect("an error");
            assert_eq!(deltas, vec![text("fine")]);
            assert_eq!(error.kind, ErrorKind::MalformedResponse);
            assert!(
                error.message.contains("{\"choices\": [xxx"),
                "{}",
                error.message
            );
            assert!(
                error.message.chars().count() < 400,
                "excerpt too long: {} chars",
                error.message.len()
            );
        },
    );
}

#[test]
fn error_chunk_mid_stream_is_a_model_error() {
    within_deadline("error_chunk_mid_stream_is_a_model_error", |_steps| {
        let body = [
            text_chunk("so far"),
            event(
                json!({"error": {"message": "The model is overloaded", "type": "overloaded_error"}}),
            ),
            text_chunk("never"),
        ];
        let (deltas, error) = run(config(), FakeClient::new([ok(chunks(body))]));
        let error = error.expect("an error");
        assert_eq!(deltas, vec![text("so far")]);
        assert_eq!(error.kind, ErrorKind::Model);
        assert!(
            error.message.contains("The model is overloaded"),
            "{}",
            error.message
        );
    });
}

#[test]
fn oversized_line_is_response_too_large() {
    within_deadline("oversized_line_is_response_too_large", |_steps| {
        let limits = SseLimits {
            max_line_bytes: 1024,
            max_event_bytes: 4096,
        };
        let huge = text_chunk(&"y".repeat(2000));
        let client = FakeClient::new([ok(chunks([text_chunk("small"), huge, DONE.to_owned()]))]);
        let (deltas, error) = run(config().with_sse_limits(limits), client);
        let error = error.expect("an error");
        assert_eq!(deltas, vec![text("small")]);
        assert_eq!(error.kind, ErrorKind::ResponseTooLarge);
        assert!(error.message.contains("1024"), "{}", error.message);
    });
}

#[test]
fn frames_split_at_every_byte_position_yield_identical_deltas() {
    within_deadline(
        "frames_split_at_every_byte_position_yield_identical_deltas",
        |_steps| {
            let body: String = [
                event(json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})),
                event(
                    json!({"choices": [{"index": 0, "delta": {"reasoning_content": "hmm… 🤔"}}]}),
                ),
                text_chunk("héllo 🌍"),
                tool_chunk(0, Some("call_1"), Some("lookup"), "{\"q\":"),
                ": keep-alive\r\n\r\n".to_owned(),
                tool_chunk(0, None, None, "\"ß\"}"),
                finish_chunk("tool_calls"),
                usage_chunk(9, 8),
                DONE.to_owned(),
            ]
            .concat()
            // Mix line endings: CRLF for the first four frames, LF for the rest.
            .replacen("\n\n", "\r\n\r\n", 4);
            let bytes = body.as_bytes();

            let (reference, error) = run(config(), FakeClient::new([ok(chunks([body.clone()]))]));
            assert_eq!(error, None);
            assert_eq!(reference.len(), 6, "{reference:?}");

            for split in 1..bytes.len() {
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

// ---------------------------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------------------------

#[test]
fn inactivity_timeout_fires_despite_keep_alive_comments() {
    within_deadline(
        "inactivity_timeout_fires_despite_keep_alive_comments",
        |_steps| {
            let rt = runtime();
            let body = keep_alive_forever(rt.clone(), text_chunk("one"), Duration::from_millis(5));
            let client = FakeClient::new([ok(body)]);
            let model = OpenAiModel::new(config().with_timeouts(short_timeouts()), client);
            let mut stream = model.stream(hello(), ModelContext::new(rt.clone()));
            let started = Instant::now();
            let (deltas, error) = block_on(timeout(&*rt, WATCHDOG, async {
                let mut deltas = Vec::new();
                loop {
                    match stream.next().await {
                        Some(Ok(delta)) => deltas.push(delta),
                        Some(Err(error)) => return (deltas, Some(error)),
                        None => return (deltas, None),
                    }
                }
            }))
            .expect("the inactivity timeout never fired");
            let elapsed = started.elapsed();
            let error = error.expect("an inactivity timeout");
            assert_eq!(deltas, vec![text("one")]);
            assert_eq!(error.kind, ErrorKind::InactivityTimeout);
            assert!(error.message.contains("50 ms"), "{}", error.message);
            assert!(
                elapsed >= Duration::from_millis(50),
                "fired too early: {elapsed:?}"
            );
            assert!(
                elapsed < Duration::from_secs(5),
                "fired far too late: {elapsed:?}"
            );
        },
    );
}

#[test]
fn events_keep_resetting_the_inactivity_timeout() {
    within_deadline("events_keep_resetting_the_inactivity_timeout", |_steps| {
        // 20 events 10 ms apart: the stream lasts about 200 ms, four times the 50 ms limit, and
        // must not time out because each event resets it.
        let rt = runtime();
        let mut events: Vec<String> = (0..20).map(|i| text_chunk(&i.to_string())).collect();
        events.push(DONE.to_owned());
        let body = paced_events(rt.clone(), events, Duration::from_millis(10));
        let timeouts = Timeouts {
            inactivity: Some(Duration::from_millis(50)),
            ..Timeouts::default()
        };
        let model = OpenAiModel::new(
            config().with_timeouts(timeouts),
            FakeClient::new([ok(body)]),
        );
        let mut stream = model.stream(hello(), ModelContext::new(rt.clone()));
        let deltas = block_on(timeout(&*rt, WATCHDOG, async {
            let mut deltas = Vec::new();
            while let Some(item) = stream.next().await {
                deltas.push(item.expect("no timeout"));
            }
            deltas
        }))
        .expect("the stream never ended");
        assert_eq!(deltas.len(), 20);
    });
}

#[test]
fn first_byte_timeout_covers_the_head_and_the_first_body_byte() {
    within_deadline(
        "first_byte_timeout_covers_the_head_and_the_first_body_byte",
        |_steps| {
            let timeouts = short_timeouts();
            // The response head never comes.
            let client = FakeClient::new([Reply::Hang]);
            let started = Instant::now();
            let (_, error) = run(config().with_timeouts(timeouts), client.clone());
            let error = error.expect("a first-byte timeout");
            assert_eq!(error.kind, ErrorKind::FirstByteTimeout);
            assert!(started.elapsed() >= Duration::from_millis(50));
            assert_eq!(client.requests().len(), 1, "a timeout is not retried");

            // The head comes, the body never starts.
            let client = FakeClient::new([ok(chunks_then_pending(vec![]))]);
            let (_, error) = run(config().with_timeouts(timeouts), client);
            assert_eq!(
                error.expect("a first-byte timeout").kind,
                ErrorKind::FirstByteTimeout
            );
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The request
// ---------------------------------------------------------------------------------------------

#[test]
fn authorization_header_only_with_a_key() {
    within_deadline("authorization_header_only_with_a_key", |_steps| {
        let body = || ok(chunks([DONE]));
        let client = FakeClient::new([body()]);
        run(config(), client.clone());
        let request = &client.requests()[0];
        assert_eq!(request.header_value("authorization"), None);

        let client = FakeClient::new([body()]);
        run(
            config().with_api_key("k").with_header("x-title", "tests"),
            client.clone(),
        );
        let request = &client.requests()[0];
        assert_eq!(request.header_value("authorization"), Some("Bearer k"));
        assert_eq!(request.header_value("x-title"), Some("tests"));
        assert!(!format!("{request:?}").contains("Bearer k"));
    });
}

#[test]
fn request_body_maps_messages_tools_and_options() {
    within_deadline("request_body_maps_messages_tools_and_options", |_steps| {
        let request = ModelRequest {
            messages: vec![
                Message::system("Be brief."),
                Message::user("Weather in Paris?"),
                Message::Assistant {
                    content: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "call_1".into(),
                        name: "weather".into(),
                        arguments: "{\"city\":\"Paris\"}".into(),
                    }],
                },
                Message::Tool {
                    call_id: "call_1".into(),
                    content: "sunny".into(),
                },
                Message::Assistant {
                    content: "Sunny.".into(),
                    tool_calls: vec![],
                },
                Message::Assistant {
                    content: "Checking again.".into(),
                    tool_calls: vec![ToolCall {
                        id: "call_2".into(),
                        name: "weather".into(),
                        arguments: "{}".into(),
                    }],
                },
            ],
            tools: vec![ToolDefinition {
                name: "weather".into(),
                description: "Current weather".into(),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            }],
            output: None,
        };
        let client = FakeClient::new([ok(chunks([DONE]))]);
        let config = config()
            .with_temperature(0.5)
            .with_max_tokens(100)
            .with_body_field("seed", 7);
        run_with(config, client.clone(), request);
        let body: Value = serde_json::from_slice(&client.requests()[0].body).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "test-model",
                "stream": true,
                "stream_options": {"include_usage": true},
                "temperature": 0.5,
                "max_tokens": 100,
                "seed": 7,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                    {"role": "assistant", "content": "Sunny."},
                    {"role": "assistant", "content": "Checking again.", "tool_calls": [
                        {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
                    ]}
                ],
                "tools": [{"type": "function", "function": {
                    "name": "weather",
                    "description": "Current weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
                }}]
            })
        );

        // Without tools, usage or options, those fields are absent.
        let client = FakeClient::new([ok(chunks([DONE]))]);
        run(config_without_usage(), client.clone());
        let body: Value = serde_json::from_slice(&client.requests()[0].body).unwrap();
        assert_eq!(
            body,
            json!({"model": "test-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
        );
    });
}

#[test]
fn output_schema_becomes_a_strict_json_schema_response_format() {
    within_deadline(
        "output_schema_becomes_a_strict_json_schema_response_format",
        |_steps| {
            #[derive(serde::Deserialize, schemars::JsonSchema)]
            #[allow(dead_code)]
            struct Verdict {
                ok: bool,
            }
            let client = FakeClient::new([ok(chunks([DONE]))]);
            run_with(
                config_without_usage(),
                client.clone(),
                hello().with_output(OutputSchema::for_type::<Verdict>()),
            );
            let body: Value = serde_json::from_slice(&client.requests()[0].body).unwrap();
            assert_eq!(
                body["response_format"],
                json!({"type": "json_schema", "json_schema": {
                    "name": "Verdict",
                    "strict": true,
                    "schema": {
                        "type": "object",
                        "properties": {"ok": {"type": "boolean"}},
                        "required": ["ok"],
                        "additionalProperties": false
                    }
                }}),
                "the request body was {body}"
            );
        },
    );
}

fn config_without_usage() -> OpenAiConfig {
    config().with_include_usage(false)
}

#[test]
fn config_constructors_and_debug_never_show_secrets() {
    within_deadline(
        "config_constructors_and_debug_never_show_secrets",
        |_steps| {
            let config = OpenAiConfig::openai("gpt-4o-mini", "sk-super-secret")
                .with_header("api-key", "azure-secret");
            assert_eq!(config.base_url, "https://api.openai.com/v1");
            assert_eq!(config.base_url, OpenAiConfig::OPENAI_BASE_URL);
            assert_eq!(config.model, "gpt-4o-mini");
            assert_eq!(
                config.api_key.as_ref().map(|k| k.expose()),
                Some("sk-super-secret")
            );
            assert!(config.include_usage);
            assert_eq!(config.retry, RetryPolicy::default());
            assert_eq!(config.timeouts, Timeouts::default());

            let debug = format!("{config:?}");
            assert!(
                debug.contains("gpt-4o-mini") && debug.contains("api-key"),
                "{debug}"
            );
            assert!(!debug.contains("sk-super-secret"), "{debug}");
            assert!(!debug.contains("azure-secret"), "{debug}");

            let with_credentials = OpenAiConfig::new("https://bob:hunter2@llm.test/v1", "m");
            assert!(!format!("{with_credentials:?}").contains("hunter2"));

            let model = OpenAiModel::new(config, FakeClient::new([]));
            assert_eq!(model.name(), "gpt-4o-mini");
            let debug = format!("{model:?}");
            assert!(
                debug.contains("https://api.openai.com/v1/chat/completions"),
                "{debug}"
            );
            assert!(
                !debug.contains("sk-super-secret") && !debug.contains("azure-secret"),
                "{debug}"
            );
        },
    );
}

proptest! {
    #[test]
    fn parse_chunk_never_panics(data in ".{0,200}") {
        let _ = OpenAiModel::parse_chunk(&data);
    }

    #[test]
    fn parse_chunk_never_panics_on_chunk_like_json(
        content in proptest::option::of(".{0,20}"),
        index in proptest::option::of(any::<u32>()),
        arguments in proptest::option::of(".{0,20}"),
        reason in proptest::option::of("[a-z_]{0,12}"),
    ) {
        let data = json!({"choices": [{"index": 0, "delta": {
            "content": content,
            "tool_calls": [{"index": index, "function": {"arguments": arguments}}]
        }, "finish_reason": reason}]})
        .to_string();
        let deltas = OpenAiModel::parse_chunk(&data).unwrap();
        prop_assert!(deltas.iter().any(|d| matches!(d, ModelDelta::ToolCall(_))));
    }
}

/// A runtime that counts the timers it hands out.
#[derive(Debug, Default)]
struct CountingRuntime {
    inner: TestRuntime,
    sleeps: std::sync::atomic::AtomicUsize,
}

impl agent_core::runtime::Runtime for CountingRuntime {
    fn name(&self) -> &'static str {
        "counting"
    }

    fn spawn_blocking(&self, job: agent_core::runtime::BlockingJob) {
        self.inner.spawn_blocking(job);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        self.sleeps.fetch_add(1, Ordering::SeqCst);
        self.inner.sleep(duration)
    }

    fn spawn(&self, future: BoxFuture<()>) {
        self.inner.spawn(future);
    }
}

#[test]
fn inactivity_timeout_does_not_allocate_a_timer_per_event() {
    within_deadline(
        "inactivity_timeout_does_not_allocate_a_timer_per_event",
        |_steps| {
            // 2,000 events in 2,000 chunks, each one pending once before it arrives: a timer per
            // event (or per chunk) would show up as thousands of `sleep` calls.
            let parts: Vec<String> = (0..2000)
                .map(|i| text_chunk(&i.to_string()))
                .chain([DONE.to_owned()])
                .collect();
            let mut yielded_once = false;
            let mut parts: VecDeque<String> = parts.into();
            let body = stream::poll_fn(move |cx| {
                if !yielded_once {
                    yielded_once = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                yielded_once = false;
                Poll::Ready(parts.pop_front().map(|p| Ok(Bytes::from(p))))
            });
            let rt = Arc::new(CountingRuntime::default());
            let model = OpenAiModel::new(config(), FakeClient::new([ok(Box::pin(body))]));
            let mut stream = model.stream(hello(), ModelContext::new(rt.clone()));
            let count = block_on(async {
                let mut count = 0;
                while let Some(item) = stream.next().await {
                    item.unwrap();
                    count += 1;
                }
                count
            });
            assert_eq!(count, 2000);
            let sleeps = rt.sleeps.load(Ordering::SeqCst);
            assert!(sleeps <= 3, "{sleeps} timers for one request");
        },
    );
}

/// Timeouts set on the agent replace the model's own; a run can replace them again.
#[test]
fn agent_and_run_timeouts_override_the_models() {
    within_deadline("agent_and_run_timeouts_override_the_models", |_steps| {
        use agent_core::agent::{Agent, RunOptions};
        use agent_core::event::EventKind;
        use futures_util::StreamExt;

        let failure = |events: Vec<agent_core::event::Event>| match &events.last().unwrap().kind {
            EventKind::RunFailed { error, .. } => error.clone(),
            other => panic!("expected run_failed, got {other:?}"),
        };
        // The model itself would wait a minute for the first byte.
        let patient = config().with_timeouts(Timeouts::default());

        let client = FakeClient::new([Reply::Hang]);
        let agent = Agent::builder()
            .model(OpenAiModel::new(patient.clone(), client))
            .runtime(runtime())
            .timeouts(short_timeouts())
            .build()
            .unwrap();
        let error = failure(block_on(agent.run("hi").collect()));
        assert_eq!(
            error.kind,
            ErrorKind::FirstByteTimeout,
            "the agent's 50 ms applies"
        );

        // The agent is patient; one run is not.
        let client = FakeClient::new([Reply::Hang]);
        let agent = Agent::builder()
            .model(OpenAiModel::new(patient, client.clone()))
            .runtime(runtime())
            .build()
            .unwrap();
        let options = RunOptions::default().timeouts(short_timeouts());
        let error = failure(block_on(agent.run_with("hi", options).collect()));
        assert_eq!(
            error.kind,
            ErrorKind::FirstByteTimeout,
            "the run's 50 ms applies"
        );
        assert_eq!(
            client.requests()[0].connect_timeout,
            Some(Duration::from_secs(1))
        );
    });
}

#[test]
fn a_retry_after_longer_than_the_first_byte_budget_fails_at_once() {
    within_deadline(
        "a_retry_after_longer_than_the_first_byte_budget_fails_at_once",
        |_steps| {
            let client = FakeClient::new([
                status(429, &[("retry-after", "3600")], "{}"),
                ok(chunks([text_chunk("too late"), DONE.to_owned()])),
            ]);
            let config = config()
                .with_retry(RetryPolicy::default())
                .with_timeouts(Timeouts {
                    first_byte: Some(Duration::from_secs(2)),
                    ..short_timeouts()
                });
            let started = std::time::Instant::now();
            let (_, error) = run(config, client.clone());
            let error = error.expect("an error");
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "it waited {:?} for a retry it could not afford",
                started.elapsed()
            );
            assert_eq!(error.kind, ErrorKind::RateLimited, "{}", error.message);
            assert_eq!(error.status, Some(429));
            assert_eq!(error.retry_after, Some(Duration::from_secs(3600)));
            assert!(
                error.message.contains("3600 s") && error.message.contains("first-byte timeout"),
                "{}",
                error.message
            );
            assert_eq!(client.requests().len(), 1, "no retry was sent");
        },
    );
}

#[test]
fn a_retry_after_within_the_budget_is_still_honoured() {
    within_deadline(
        "a_retry_after_within_the_budget_is_still_honoured",
        |_steps| {
            let client = FakeClient::new([
                status(503, &[("retry-after", "0.2")], "{}"),
                ok(chunks([text_chunk("after retry"), DONE.to_owned()])),
            ]);
            let config = config().with_timeouts(Timeouts {
                first_byte: Some(Duration::from_secs(2)),
                ..short_timeouts()
            });
            let started = std::time::Instant::now();
            let (deltas, error) = run(config, client.clone());
            assert_eq!(error, None);
            assert_eq!(deltas, vec![text("after retry")]);
            assert!(started.elapsed() >= Duration::from_millis(200));
            assert_eq!(client.requests().len(), 2);
        },
    );
}
