//! Case 8: every failure ends the run with its documented terminal event, and nothing
//! panics.
//!
//! The upstream cases (the first seven) are *exclusive* and accounted (see
//! [`accounting`](super::accounting)): each runs alone, after a warm-up, and checks that no
//! thread of the process panicked, that every upstream connection is closed once the agent
//! is dropped, and that threads and fds are back to the baseline. The upstream faults of the
//! reliability issue that are not here are in [`faults`](super::faults).
//!
//! | case | terminal event |
//! |---|---|
//! | upstream 500 (after its retry) | `run_failed` `upstream_status` (status 500) |
//! | 429 with `Retry-After`, then 200 | `run_completed` (retried before the first byte) |
//! | reset mid-stream | `run_failed` `upstream_reset` with the partial text, no retry |
//! | malformed chunk JSON | `run_failed` `malformed_response` |
//! | oversized SSE line | `run_failed` `response_too_large` |
//! | no first byte within 100 ms | `run_failed` `first_byte_timeout` |
//! | keep-alive comments only | `run_failed` `inactivity_timeout` |
//! | unknown tool, bad arguments, tool panic | `tool_call_completed` with an error result, then `run_completed` |
//! | max rounds | `run_failed` `max_rounds` |

use std::ops::ControlFlow;
use std::time::Duration;

use agent_core::error::ErrorKind;
use agent_core::event::EventKind;
use agent_core::model::{OpenAiConfig, ScriptedModel, Turn};
use agent_core::policy::Timeouts;
use agent_core::sse::SseLimits;
use agent_core::tool::{ToolError, ToolErrorKind, ToolResult, async_tool, blocking_tool};
use serde_json::{Value, json};

use super::Outcome;
use super::accounting::{accounted, assert_upstream_closed};
use super::support::{
    agent_builder, consume, consume_lockstep, openai_config, openai_model, quick_retries,
};
use crate::backend::Backend;
use crate::kit::Transcript;
use crate::kit::upstream::{ExchangeEnd, GatedUpstream, Response, openai};
use crate::kit::watchdog::step;

/// Run an agent on an OpenAI model speaking to a [`GatedUpstream`] playing `responses`
/// (configured by `configure`), in lockstep with its gate; the agent is dropped on return.
pub(crate) fn run_upstream(
    backend: &dyn Backend,
    responses: Vec<Response>,
    configure: impl FnOnce(OpenAiConfig) -> OpenAiConfig,
) -> (Transcript, GatedUpstream) {
    let upstream = GatedUpstream::start(responses).expect("upstream");
    let model = openai_model(backend, configure(openai_config(&upstream)));
    let agent = agent_builder(backend).model(model).build().expect("agent");
    let transcript = consume_lockstep(backend, &agent, "hello", &upstream.gate());
    transcript.assert_contract();
    (transcript, upstream)
}

pub(crate) fn timeouts(first_byte: Duration, inactivity: Duration) -> Timeouts {
    Timeouts {
        connect: Some(Duration::from_secs(5)),
        first_byte: Some(first_byte),
        inactivity: Some(inactivity),
        run: None,
    }
}

/// Case 8a: a 500, retried once, then failing with `upstream_status`.
pub fn upstream_500(backend: &dyn Backend) -> Outcome {
    accounted(backend, || upstream_500_run(backend))
}

fn upstream_500_run(backend: &dyn Backend) -> Outcome {
    let error = json!({"error": {"message": "the model crashed", "type": "server_error"}});
    let (transcript, upstream) = run_upstream(
        backend,
        vec![Response::json(500, &error), Response::json(500, &error)],
        |c| c.with_retry(quick_retries(1)),
    );
    let (failure, partial) = transcript.assert_failed(ErrorKind::UpstreamStatus);
    assert_eq!(
        failure.status,
        Some(500),
        "errors: an upstream 500 must end the run with run_failed/upstream_status carrying \
         status 500; got {failure:?}"
    );
    assert!(
        failure.message.contains("the model crashed"),
        "errors: the upstream_status failure must quote the provider's message \
         (\"the model crashed\"); got {:?}",
        failure.message
    );
    assert_eq!(
        partial, "",
        "errors: a 500 before any output must fail with no partial text"
    );
    assert_eq!(
        upstream.request_count(),
        2,
        "errors: a 500 must be retried exactly once (retries: 1) before run_failed"
    );
    assert_eq!(
        transcript.count("model_request_started"),
        1,
        "errors: a retry before the first byte must be invisible in the events (one \
         model_request_started)\n{}",
        transcript.summary()
    );
    assert_upstream_closed(backend, &upstream);
    Outcome::passed()
}

/// Case 8b: a 429 with `Retry-After: 0.05`, then an answer: retried before the first byte,
/// after waiting at least the asked delay.
pub fn rate_limited_then_success(backend: &dyn Backend) -> Outcome {
    accounted(backend, || rate_limited_run(backend))
}

fn rate_limited_run(backend: &dyn Backend) -> Outcome {
    let busy = Response::json(429, &json!({"error": {"message": "slow down"}}))
        .header("retry-after", "0.05");
    let (transcript, upstream) = run_upstream(
        backend,
        vec![busy, openai::answer(&["Hello", " again"])],
        |c| c.with_retry(quick_retries(2)),
    );
    assert_eq!(
        transcript.completed_text(),
        "Hello again",
        "errors: a 429 then a 200 must end with run_completed and the 200's text\n{}",
        transcript.summary()
    );
    let requests = upstream.requests();
    assert_eq!(
        requests.len(),
        2,
        "errors: a 429 with Retry-After must be retried exactly once"
    );
    let waited = requests[1]
        .received_at
        .saturating_duration_since(requests[0].received_at);
    assert!(
        waited >= Duration::from_millis(50),
        "errors: a 429 retry must wait at least Retry-After (50 ms); it waited {waited:?}"
    );
    assert_eq!(
        transcript.count("model_request_started"),
        1,
        "errors: a retry before the first byte must be invisible in the events (one \
         model_request_started)"
    );
    assert_upstream_closed(backend, &upstream);
    Outcome::passed().note(format!("retried after {} ms", waited.as_millis()))
}

/// Case 8c: a reset after two deltas fails the run with the partial text, and is not
/// retried.
pub fn reset_mid_stream(backend: &dyn Backend) -> Outcome {
    accounted(backend, || reset_run(backend))
}

fn reset_run(backend: &dyn Backend) -> Outcome {
    let reset = Response::sse()
        .send(openai::text_chunk("one "))
        .wait_gate(1, "text delta 0 to reach the consumer")
        .send(openai::text_chunk("two "))
        .wait_gate(2, "text delta 1 to reach the consumer")
        .reset();
    let (transcript, upstream) =
        run_upstream(backend, vec![reset], |c| c.with_retry(quick_retries(2)));
    let (_, partial) = transcript.assert_failed(ErrorKind::UpstreamReset);
    assert_eq!(
        partial, "one two ",
        "errors: a reset mid-stream must fail with upstream_reset keeping the partial text"
    );
    assert_eq!(
        upstream.request_count(),
        1,
        "errors: a reset after output was emitted must not be retried"
    );
    assert_eq!(
        upstream.exchange_end(0),
        Some(ExchangeEnd::Reset),
        "errors: the upstream exchange must have ended by the scripted reset (test setup)"
    );
    assert_upstream_closed(backend, &upstream);
    Outcome::passed()
}

/// Case 8d: a chunk that is not JSON fails the run with `malformed_response`.
pub fn malformed_chunk(backend: &dyn Backend) -> Outcome {
    accounted(backend, || malformed_run(backend))
}

fn malformed_run(backend: &dyn Backend) -> Outcome {
    let bad = Response::sse()
        .send(openai::text_chunk("ok "))
        .wait_gate(1, "text delta 0 to reach the consumer")
        .send("data: {this is not json\n\n")
        .send(openai::DONE);
    let (transcript, upstream) = run_upstream(backend, vec![bad], |c| c);
    let (_, partial) = transcript.assert_failed(ErrorKind::MalformedResponse);
    assert_eq!(
        partial, "ok ",
        "errors: a malformed chunk must fail with malformed_response keeping the text before it"
    );
    assert_eq!(
        upstream.request_count(),
        1,
        "errors: a malformed stream must not be retried"
    );
    assert_upstream_closed(backend, &upstream);
    Outcome::passed()
}

/// Case 8e: an SSE line over the configured limit fails the run with
/// `response_too_large`.
pub fn oversized_line(backend: &dyn Backend) -> Outcome {
    accounted(backend, || oversized_run(backend))
}

fn oversized_run(backend: &dyn Backend) -> Outcome {
    let huge = format!("data: {}\n\n", "x".repeat(8 * 1024));
    let bad = Response::sse()
        .send(openai::text_chunk("ok "))
        .wait_gate(1, "text delta 0 to reach the consumer")
        .send(huge)
        .send(openai::DONE);
    let (transcript, upstream) = run_upstream(backend, vec![bad], |c| {
        c.with_sse_limits(SseLimits {
            max_line_bytes: 1024,
            max_event_bytes: 4096,
        })
    });
    let (_, partial) = transcript.assert_failed(ErrorKind::ResponseTooLarge);
    assert_eq!(
        partial, "ok ",
        "errors: an oversized SSE line must fail with response_too_large keeping the text \
         before it"
    );
    assert_upstream_closed(backend, &upstream);
    Outcome::passed()
}

/// Case 8f: an upstream that sends its head and then nothing fails the run with
/// `first_byte_timeout` (100 ms), is not retried (retries allowed), and sees the connection
/// close.
pub fn first_byte_timeout(backend: &dyn Backend) -> Outcome {
    accounted(backend, || first_byte_run(backend))
}

fn first_byte_run(backend: &dyn Backend) -> Outcome {
    let (transcript, upstream) = run_upstream(backend, vec![Response::sse().stall()], |c| {
        c.with_retry(quick_retries(2)).with_timeouts(timeouts(
            Duration::from_millis(100),
            Duration::from_secs(10),
        ))
    });
    transcript.assert_failed(ErrorKind::FirstByteTimeout);
    assert_eq!(
        upstream.request_count(),
        1,
        "errors: a first-byte timeout is final: only connect errors, 429 and 5xx are retried"
    );
    step("waiting for the upstream to see the timed-out request close");
    assert_eq!(
        upstream.wait_for_end(0, Duration::from_secs(5)),
        Some(ExchangeEnd::ClientClosed),
        "errors: a request that hit first_byte_timeout must be closed within 5 s"
    );
    assert_upstream_closed(backend, &upstream);
    Outcome::passed()
}

/// Case 8g: an upstream that only sends keep-alive comments fails the run with
/// `inactivity_timeout` (150 ms): comments do not count as activity. Twice: after a first
/// delta with the timeouts of the model's configuration (the partial text is kept), and from
/// the very first byte with the timeouts set per agent (`AgentBuilder::timeouts`).
pub fn inactivity_timeout(backend: &dyn Backend) -> Outcome {
    accounted(backend, || inactivity_run(backend))
}

fn inactivity_run(backend: &dyn Backend) -> Outcome {
    let idle = Response::sse()
        .send(openai::text_chunk("ok "))
        .keep_alive_forever(Duration::from_millis(20));
    let (transcript, upstream) = run_upstream(backend, vec![idle], |c| {
        c.with_timeouts(timeouts(
            Duration::from_secs(10),
            Duration::from_millis(150),
        ))
    });
    let (_, partial) = transcript.assert_failed(ErrorKind::InactivityTimeout);
    assert_eq!(
        partial, "ok ",
        "errors: an inactivity_timeout after a delta must keep the partial text"
    );
    assert_eq!(
        upstream.wait_for_end(0, Duration::from_secs(5)),
        Some(ExchangeEnd::ClientClosed),
        "errors: a request that hit inactivity_timeout (model timeouts) must be closed within 5 s"
    );
    assert_upstream_closed(backend, &upstream);
    drop(upstream);

    step("comments only, from the first byte, with per-agent timeouts");
    let upstream =
        GatedUpstream::start([Response::sse().keep_alive_forever(Duration::from_millis(20))])
            .expect("upstream");
    let model = openai_model(backend, openai_config(&upstream));
    let agent = agent_builder(backend)
        .model(model)
        .timeouts(timeouts(
            Duration::from_secs(10),
            Duration::from_millis(150),
        ))
        .build()
        .expect("agent");
    let transcript = consume(backend, &agent, "hello", |_| ControlFlow::Continue(()));
    drop(agent);
    transcript.assert_contract();
    let (_, partial) = transcript.assert_failed(ErrorKind::InactivityTimeout);
    assert_eq!(
        partial, "",
        "errors: comments only must fail with inactivity_timeout and no partial text \
         (keep-alive comments are not text)"
    );
    assert_eq!(
        upstream.wait_for_end(0, Duration::from_secs(5)),
        Some(ExchangeEnd::ClientClosed),
        "errors: a request that hit inactivity_timeout (per-agent timeouts) must be closed \
         within 5 s"
    );
    assert_upstream_closed(backend, &upstream);
    Outcome::passed()
}

/// The results of the `tool_call_completed` events, by call id.
pub(crate) fn tool_results(transcript: &Transcript) -> Vec<(String, ToolResult)> {
    transcript
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCallCompleted {
                call_id, result, ..
            } => Some((call_id.clone(), result.clone())),
            _ => None,
        })
        .collect()
}

fn assert_tool_error(transcript: &Transcript, call_id: &str, kind: ToolErrorKind) {
    let results = tool_results(transcript);
    let result = results
        .iter()
        .find(|(id, _)| id == call_id)
        .map(|(_, r)| r)
        .unwrap_or_else(|| {
            panic!(
                "no tool_call_completed for {call_id}\n{}",
                transcript.summary()
            )
        });
    match result {
        ToolResult::Error { kind: got, .. } => assert_eq!(
            *got,
            kind,
            "errors: tool call {call_id} must complete with a {kind:?} error result\n{}",
            transcript.summary()
        ),
        ToolResult::Ok { output } => panic!("{call_id} succeeded with {output}, expected {kind:?}"),
    }
}

fn echo() -> agent_core::tool::FnTool {
    async_tool(
        "echo",
        "Echoes its arguments",
        json!({"type": "object"}),
        |args: Value| async move { Ok(args) },
    )
}

/// Case 8h: a call to a tool the agent does not have completes with `unknown_tool`, and
/// the run goes on.
pub fn unknown_tool(backend: &dyn Backend) -> Outcome {
    let agent = agent_builder(backend)
        .model(ScriptedModel::new([
            Turn::new().tool_call("call_1", "no_such_tool", "{}"),
            Turn::new().text("recovered"),
        ]))
        .tool(echo())
        .build()
        .expect("agent");
    let transcript = consume(backend, &agent, "go", |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    assert_tool_error(&transcript, "call_1", ToolErrorKind::UnknownTool);
    assert_eq!(
        transcript.completed_text(),
        "recovered",
        "errors: after an unknown_tool result the run must go on to run_completed\n{}",
        transcript.summary()
    );
    Outcome::passed()
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct AddArgs {
    a: f64,
    b: f64,
}

/// Case 8i: arguments that are not JSON, or do not fit the tool's type, complete with
/// `invalid_arguments`, and the run goes on.
pub fn bad_tool_arguments(backend: &dyn Backend) -> Outcome {
    let add = agent_core::tool::typed_tool("add", "Adds", |args: AddArgs| async move {
        Ok::<_, ToolError>(args.a + args.b)
    });
    let agent = agent_builder(backend)
        .model(ScriptedModel::new([
            Turn::new()
                .tool_call("call_1", "add", "{not json")
                .tool_call("call_2", "add", r#"{"a": "two", "b": 2}"#),
            Turn::new().text("recovered"),
        ]))
        .tool(add)
        .build()
        .expect("agent");
    let transcript = consume(backend, &agent, "go", |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    assert_tool_error(&transcript, "call_1", ToolErrorKind::InvalidArguments);
    assert_tool_error(&transcript, "call_2", ToolErrorKind::InvalidArguments);
    assert_eq!(
        transcript.completed_text(),
        "recovered",
        "errors: after invalid_arguments results the run must go on to run_completed\n{}",
        transcript.summary()
    );
    Outcome::passed()
}

/// Case 8j: an async tool and a blocking tool that panic complete with `panicked`, and the
/// run goes on.
pub fn tool_panic(backend: &dyn Backend) -> Outcome {
    let async_boom = async_tool(
        "async_boom",
        "Panics",
        json!({"type": "object"}),
        |_args: Value| async move {
            if true {
                panic!("async tool exploded (expected by the conformance suite)");
            }
            Ok(Value::Null)
        },
    );
    let blocking_boom = blocking_tool(
        "blocking_boom",
        "Panics on its thread",
        json!({"type": "object"}),
        |_args| panic!("blocking tool exploded (expected by the conformance suite)"),
    );
    let agent = agent_builder(backend)
        .model(ScriptedModel::new([
            Turn::new()
                .tool_call("call_1", "async_boom", "{}")
                .tool_call("call_2", "blocking_boom", "{}"),
            Turn::new().text("recovered"),
        ]))
        .tool(async_boom)
        .tool(blocking_boom)
        .build()
        .expect("agent");
    let transcript = consume(backend, &agent, "go", |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    assert_tool_error(&transcript, "call_1", ToolErrorKind::Panicked);
    assert_tool_error(&transcript, "call_2", ToolErrorKind::Panicked);
    assert_eq!(
        transcript.completed_text(),
        "recovered",
        "errors: after panicked tool results the run must go on to run_completed\n{}",
        transcript.summary()
    );
    Outcome::passed()
}

/// Case 8k: a model that calls tools forever is stopped at `max_rounds`.
pub fn max_rounds(backend: &dyn Backend) -> Outcome {
    let agent = agent_builder(backend)
        .model(ScriptedModel::from_fn(|_, n| {
            Turn::new().tool_call(format!("call_{n}"), "echo", "{}")
        }))
        .tool(echo())
        .max_rounds(2)
        .build()
        .expect("agent");
    let transcript = consume(backend, &agent, "loop", |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    transcript.assert_failed(ErrorKind::MaxRounds);
    assert_eq!(
        transcript.count("model_request_started"),
        2,
        "errors: max_rounds(2) must stop the run after exactly 2 model rounds\n{}",
        transcript.summary()
    );
    Outcome::passed()
}
