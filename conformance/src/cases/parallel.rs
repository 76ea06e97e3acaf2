//! Case 5: tool calls of one turn run concurrently and each completion is reported the
//! moment it happens.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_core::event::EventKind;
use agent_core::model::{ScriptedModel, Turn};
use agent_core::tool::{ToolError, async_tool};
use serde_json::{Value, json};

use super::Outcome;
use super::support::{OpenOnDrop, agent_builder, consume, ms_between};
use crate::backend::Backend;
use crate::kit::Transcript;
use crate::kit::tools::GatedTool;
use crate::kit::watchdog::step;

/// The model of the parallel cases: one turn calling `tool` three times, then an answer.
pub(crate) fn three_calls(tool: &str) -> ScriptedModel {
    ScriptedModel::new([
        Turn::new()
            .tool_call("call_1", tool, r#"{"id": 1}"#)
            .tool_call("call_2", tool, r#"{"id": 2}"#)
            .tool_call("call_3", tool, r#"{"id": 3}"#),
        Turn::new().text("all done"),
    ])
}

/// Run three gated calls, letting them finish in the order 3, 1, 2, each only after the
/// previous completion was observed. Returns the transcript and the completion order.
pub(crate) fn run_in_order_312(
    backend: &dyn Backend,
    tool: Arc<GatedTool>,
) -> (Transcript, Vec<String>) {
    let _cleanup = OpenOnDrop((1..=3).map(|i| tool.gate(i)).collect());
    let agent = agent_builder(backend)
        .model(three_calls("wait"))
        .shared_tool(tool.clone())
        .build()
        .expect("agent");
    let mut started = 0;
    let mut completed = Vec::new();
    let transcript = consume(backend, &agent, "three at once", |event| {
        match &event.kind {
            EventKind::ToolCallStarted { .. } => {
                started += 1;
                if started < 3 {
                    step(format!(
                        "waiting for tool_call_started {} while earlier calls are still running \
                         (tool calls must run concurrently)",
                        started + 1
                    ));
                } else {
                    step(
                        "waiting for tool_call_completed of call_3 (its gate is open; calls 1 and 2 still run)",
                    );
                    tool.gate(3).open_next();
                }
            }
            EventKind::ToolCallCompleted { call_id, .. } => {
                completed.push(call_id.clone());
                match call_id.as_str() {
                    "call_3" => {
                        step("waiting for tool_call_completed of call_1 (call 2 still runs)");
                        tool.gate(1).open_next();
                    }
                    "call_1" => {
                        step("waiting for tool_call_completed of call_2");
                        tool.gate(2).open_next();
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    });
    (transcript, completed)
}

fn check_order(transcript: &Transcript, completed: &[String], what: &str) {
    transcript.assert_contract();
    assert_eq!(
        completed,
        ["call_3", "call_1", "call_2"],
        "parallel tools: {what} must complete in the order they finish (3, 1, 2), each \
         reported at once\n{}",
        transcript.summary()
    );
    for event in transcript.events() {
        if let EventKind::ToolCallCompleted {
            call_id, result, ..
        } = &event.kind
        {
            assert!(
                !result.is_error(),
                "parallel tools: {call_id} failed: {result:?} (if its gate stayed shut, the \
                 calls did not run concurrently)\n{}",
                transcript.summary()
            );
        }
    }
    assert_eq!(
        transcript.completed_text(),
        "all done",
        "parallel tools: after {what} the run must complete\n{}",
        transcript.summary()
    );
}

/// Case 5a: three async tool calls finish in the order 3, 1, 2 (gated) and are reported in
/// that order.
pub fn async_tools_order(backend: &dyn Backend) -> Outcome {
    let tool = GatedTool::asynchronous("wait", 3);
    let (transcript, completed) = run_in_order_312(backend, tool);
    check_order(&transcript, &completed, "async tool calls");
    Outcome::passed()
}

/// Case 5b: the same with blocking tools: the blocking pool must run three jobs at once.
pub fn blocking_tools_order(backend: &dyn Backend) -> Outcome {
    let tool = GatedTool::blocking("wait", 3);
    let (transcript, completed) = run_in_order_312(backend, tool);
    check_order(
        &transcript,
        &completed,
        "blocking tool calls (the blocking pool must run 3 jobs at once)",
    );
    Outcome::passed()
}

/// Case 5c: three async tools sleeping 60, 90 and 30 ms on the runtime's timer; the wall
/// time of the tool phase is reported next to the sum of the sleeps (not asserted).
pub fn wall_time(backend: &dyn Backend) -> Outcome {
    let runtime = backend.runtime();
    let sleeps = [60u64, 90, 30];
    let nap = async_tool(
        "nap",
        "Sleeps on the runtime's timer",
        json!({"type": "object"}),
        move |args: Value| {
            let runtime = runtime.clone();
            async move {
                let id = args["id"].as_u64().unwrap_or(0) as usize;
                let Some(&ms) = id.checked_sub(1).and_then(|i| sleeps.get(i)) else {
                    return Err(ToolError::invalid_arguments("id must be 1, 2 or 3"));
                };
                runtime.sleep(Duration::from_millis(ms)).await;
                Ok(json!({"slept_ms": ms}))
            }
        },
    );
    let agent = agent_builder(backend)
        .model(three_calls("nap"))
        .tool(nap)
        .build()
        .expect("agent");
    let mut first_start = None;
    let mut last_completion = None;
    let transcript = consume(backend, &agent, "nap", |event| {
        match event.kind {
            EventKind::ToolCallStarted { .. } => {
                first_start.get_or_insert_with(Instant::now);
            }
            EventKind::ToolCallCompleted { .. } => last_completion = Some(Instant::now()),
            _ => {}
        }
        ControlFlow::Continue(())
    });
    transcript.assert_contract();
    assert_eq!(
        transcript.completed_text(),
        "all done",
        "parallel tools (wall time): the run must complete\n{}",
        transcript.summary()
    );
    assert_eq!(
        transcript.count("tool_call_completed"),
        3,
        "parallel tools (wall time): every one of the 3 calls must complete\n{}",
        transcript.summary()
    );
    let wall = match (first_start, last_completion) {
        (Some(a), Some(b)) => ms_between(a, b),
        _ => 0.0,
    };
    let sum: u64 = sleeps.iter().sum();
    Outcome::passed()
        .measure("parallel_tools_wall_ms", wall)
        .note(format!(
            "three tools sleeping 60/90/30 ms took {wall:.0} ms together (slowest 90 ms, sum {sum} ms)"
        ))
}
