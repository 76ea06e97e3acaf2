//! Case 9: the event sequence of five scenarios, as insta snapshots shared by every backend.
//!
//! The snapshots live in `conformance/snapshots/` (one `.snap` per scenario, no backend
//! suffix): every backend compares its transcript to the same file, so any divergence
//! between backends fails. Timings, run ids and ports are redacted
//! ([`crate::kit::redact`]). The snapshots are compiled into the crate and compared as JSON,
//! so the suite never writes a file (a third party's failing transcript leaves the
//! conformance crate's folder untouched). In this repository, run with
//! `CONFORMANCE_SNAPSHOTS=review` to go through insta and `cargo insta review` a change.

use std::ops::ControlFlow;

use agent_core::model::{ScriptedModel, Turn};
use agent_core::tool::{ToolError, typed_blocking_tool};
use serde_json::json;

use super::Outcome;
use super::parallel::run_in_order_312;
use super::support::{agent_builder, consume, consume_lockstep, openai_config, openai_model};
use crate::backend::Backend;
use crate::kit::Transcript;
use crate::kit::tools::GatedTool;
use crate::kit::upstream::{GatedUpstream, Response, openai};

/// Where the shared snapshots live (inside the conformance crate, whoever runs the suite).
pub const SNAPSHOT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots");

/// The shared snapshots, compiled into the crate: the suite compares with these and never
/// writes a file, so a third party's failing run leaves the crate's folder untouched.
const SNAPSHOTS: &[(&str, &str)] = &[
    (
        "transcript_plain_answer",
        include_str!("../../snapshots/transcript_plain_answer.snap"),
    ),
    (
        "transcript_one_tool_round",
        include_str!("../../snapshots/transcript_one_tool_round.snap"),
    ),
    (
        "transcript_parallel_tools",
        include_str!("../../snapshots/transcript_parallel_tools.snap"),
    ),
    (
        "transcript_tool_error",
        include_str!("../../snapshots/transcript_tool_error.snap"),
    ),
    (
        "transcript_upstream_failure",
        include_str!("../../snapshots/transcript_upstream_failure.snap"),
    ),
    (
        "transcript_structured_output",
        include_str!("../../snapshots/transcript_structured_output.snap"),
    ),
    (
        "transcript_tool_approval",
        include_str!("../../snapshots/transcript_tool_approval.snap"),
    ),
];

/// Set to `review` (`CONFORMANCE_SNAPSHOTS=review cargo test …`, in this repository only)
/// to compare through insta instead, which writes `.snap.new` files for
/// `cargo insta review` when a transcript changed.
pub const REVIEW_VARIABLE: &str = "CONFORMANCE_SNAPSHOTS";

/// Compare `transcript` (redacted) with the shared snapshot `name`.
///
/// The comparison is of JSON values, against the snapshot compiled into this crate; a
/// difference fails with both transcripts printed. Nothing is written anywhere, unless
/// [`REVIEW_VARIABLE`] is `review`.
pub fn assert_transcript_snapshot(name: &str, transcript: &Transcript) {
    let value = transcript.to_redacted_json();
    if std::env::var(REVIEW_VARIABLE).is_ok_and(|v| v == "review") {
        insta::with_settings!({
            snapshot_path => SNAPSHOT_DIR,
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => format!("conformance transcript `{name}` (shared by every backend)"),
        }, {
            insta::assert_json_snapshot!(name, value);
        });
        return;
    }
    let stored = SNAPSHOTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .unwrap_or_else(|| panic!("transcripts: no shared snapshot named {name:?}"));
    // An insta snapshot: a `---` header, then the JSON body.
    let body = stored
        .splitn(3, "---\n")
        .nth(2)
        .unwrap_or_else(|| panic!("transcripts: the snapshot {name:?} has no body"));
    let expected: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|err| panic!("transcripts: the snapshot {name:?} is not JSON: {err}"));
    if expected != value {
        let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
        panic!(
            "transcripts: `{name}` differs from the shared snapshot (every backend must produce \
             this exact event sequence; timings, ids and ports are redacted)\n--- expected \
             (conformance/snapshots/{name}.snap)\n{}\n--- this backend\n{}",
            pretty(&expected),
            pretty(&value)
        );
    }
}

/// Scenario 1: a plain answer streamed by an upstream through the backend's HTTP client.
pub fn plain_answer(backend: &dyn Backend) -> Outcome {
    let upstream = GatedUpstream::start([openai::lockstep_answer(&["Hello", ", ", "world."])])
        .expect("upstream");
    let model = openai_model(backend, openai_config(&upstream));
    let agent = agent_builder(backend).model(model).build().expect("agent");
    let transcript = consume_lockstep(backend, &agent, "Say hello", &upstream.gate());
    transcript.assert_contract();
    assert_transcript_snapshot("transcript_plain_answer", &transcript);
    Outcome::passed()
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Divide {
    a: f64,
    b: f64,
}

fn divide_tool() -> agent_core::tool::FnTool {
    typed_blocking_tool("divide", "Divides a by b", |args: Divide| {
        if args.b == 0.0 {
            return Err(ToolError::failed("division by zero"));
        }
        Ok(args.a / args.b)
    })
}

/// Scenario 2: one tool round (a blocking typed tool), then the answer.
pub fn one_tool_round(backend: &dyn Backend) -> Outcome {
    let agent = agent_builder(backend)
        .model(ScriptedModel::new([
            Turn::new()
                .reasoning("Need a division.")
                .text("Let me compute. ")
                .tool_call("call_1", "divide", r#"{"a": 84, "b": 2}"#)
                .usage(12, 6),
            Turn::new().text("84 / 2 = ").text("42").usage(30, 4),
        ]))
        .tool(divide_tool())
        .build()
        .expect("agent");
    let transcript = consume(backend, &agent, "What is 84 / 2?", |_| {
        ControlFlow::Continue(())
    });
    transcript.assert_contract();
    assert_transcript_snapshot("transcript_one_tool_round", &transcript);
    Outcome::passed()
}

/// Scenario 3: three parallel calls finishing 3, 1, 2 (gated, so the order is
/// deterministic).
pub fn parallel_tools(backend: &dyn Backend) -> Outcome {
    let (transcript, _) = run_in_order_312(backend, GatedTool::asynchronous("wait", 3));
    transcript.assert_contract();
    assert_transcript_snapshot("transcript_parallel_tools", &transcript);
    Outcome::passed()
}

/// Scenario 4: a tool that fails, whose error goes back to the model.
pub fn tool_error(backend: &dyn Backend) -> Outcome {
    let agent = agent_builder(backend)
        .model(ScriptedModel::new([
            Turn::new().tool_call("call_1", "divide", r#"{"a": 1, "b": 0}"#),
            Turn::new().text("Dividing by zero is undefined."),
        ]))
        .tool(divide_tool())
        .build()
        .expect("agent");
    let transcript = consume(backend, &agent, "What is 1 / 0?", |_| {
        ControlFlow::Continue(())
    });
    transcript.assert_contract();
    assert_transcript_snapshot("transcript_tool_error", &transcript);
    Outcome::passed()
}

/// Scenario 5: the upstream answers 500 (no retries): the run fails.
pub fn upstream_failure(backend: &dyn Backend) -> Outcome {
    let upstream = GatedUpstream::start([Response::json(
        500,
        &json!({"error": {"message": "the model is overloaded", "type": "server_error"}}),
    )])
    .expect("upstream");
    let model = openai_model(backend, openai_config(&upstream));
    let agent = agent_builder(backend).model(model).build().expect("agent");
    let transcript = consume(backend, &agent, "Say hello", |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    assert_transcript_snapshot("transcript_upstream_failure", &transcript);
    Outcome::passed()
}
