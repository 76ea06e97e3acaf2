//! The agent loop, driven by scripted models on the thread test runtime.

use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use agent_core::agent::{Agent, BuildError, COOPERATIVE_BUDGET, RunStream};
use agent_core::error::{ErrorKind, ModelError};
use agent_core::event::{Event, EventKind};
use agent_core::model::{FinishReason, Message, ScriptedModel, Step, ToolCallDelta, Turn};
use agent_core::runtime::{SharedRuntime, TestRuntime, block_on};
use agent_core::tool::{
    ToolError, ToolErrorKind, ToolResult, async_tool, blocking_tool, typed_blocking_tool,
    typed_tool,
};
use futures_channel::oneshot;
use futures_util::{FutureExt, StreamExt};
use serde_json::{Value, json};

fn runtime() -> SharedRuntime {
    Arc::new(TestRuntime::new())
}

fn agent_with(model: ScriptedModel) -> agent_core::agent::AgentBuilder {
    Agent::builder().model(model).runtime(runtime())
}

fn collect(stream: RunStream) -> Vec<Event> {
    block_on(stream.collect())
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::name).collect()
}

/// The contract every run keeps: seq 0.. without gaps, exactly one terminal event, last.
fn assert_contract(events: &[Event]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.seq, i as u64,
            "seq must count from 0 without gaps: {events:#?}"
        );
    }
    let terminals = events.iter().filter(|e| e.is_terminal()).count();
    assert_eq!(terminals, 1, "exactly one terminal event: {events:#?}");
    assert!(
        events.last().unwrap().is_terminal(),
        "the terminal event is last"
    );
    assert!(matches!(events[0].kind, EventKind::RunStarted { .. }));
}

fn completed_text(events: &[Event]) -> &str {
    match &events.last().unwrap().kind {
        EventKind::RunCompleted { text, .. } => text,
        other => panic!("expected run_completed, got {other:?}"),
    }
}

fn failure(events: &[Event]) -> (ErrorKind, &str, &str) {
    match &events.last().unwrap().kind {
        EventKind::RunFailed {
            error,
            partial_text,
        } => (error.kind, error.message.as_str(), partial_text.as_str()),
        other => panic!("expected run_failed, got {other:?}"),
    }
}

fn tool_results(events: &[Event]) -> Vec<(String, ToolResult)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCallCompleted {
                call_id, result, ..
            } => Some((call_id.clone(), result.clone())),
            _ => None,
        })
        .collect()
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Numbers {
    a: i64,
    b: i64,
}

/// How long a test may run before it fails instead of holding CI.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

mod support;
use support::Steps;

/// [`support::within`] with this file's [`DEADLINE`].
fn within_deadline(name: &str, body: impl FnOnce(&Steps) + Send + 'static) {
    support::within(name, DEADLINE, body)
}

#[test]
fn plain_answer_streams_text_and_completes() {
    within_deadline("plain_answer_streams_text_and_completes", |_steps| {
        let model = ScriptedModel::new([Turn::new()
            .text("Hello")
            .text(", ")
            .text("world")
            .usage(5, 3)]);
        let events = collect(agent_with(model).build().unwrap().run("hi"));
        assert_contract(&events);
        assert_eq!(
            kinds(&events),
            [
                "run_started",
                "model_request_started",
                "text_delta",
                "text_delta",
                "text_delta",
                "model_request_completed",
                "run_completed"
            ]
        );
        assert_eq!(completed_text(&events), "Hello, world");
        let EventKind::RunCompleted { usage, metrics, .. } = &events.last().unwrap().kind else {
            unreachable!()
        };
        assert_eq!(usage.total_tokens, 8);
        assert_eq!(metrics.rounds.len(), 1);
        assert!(metrics.time_to_first_token_ms.is_some());
    });
}

#[test]
fn multi_round_tools_feed_results_back_to_the_model() {
    within_deadline(
        "multi_round_tools_feed_results_back_to_the_model",
        |_steps| {
            let seen_by_model = Arc::new(Mutex::new(Vec::new()));
            let seen = seen_by_model.clone();
            let model = ScriptedModel::from_fn(move |request, n| {
                seen.lock().unwrap().push(request.messages.clone());
                match n {
                    0 => Turn::new().tool_call("c1", "add", r#"{"a":2,"b":3}"#),
                    1 => Turn::new().tool_call("c2", "add", r#"{"a":5,"b":10}"#),
                    _ => Turn::new().text("15"),
                }
            });
            let agent = agent_with(model)
                .instructions("be exact")
                .tool(typed_tool("add", "add", |n: Numbers| async move {
                    Ok::<_, ToolError>(n.a + n.b)
                }))
                .build()
                .unwrap();
            let events = collect(agent.run("2+3+10?"));
            assert_contract(&events);
            assert_eq!(completed_text(&events), "15");
            assert_eq!(
                tool_results(&events),
                [
                    ("c1".to_string(), ToolResult::Ok { output: json!(5) }),
                    ("c2".to_string(), ToolResult::Ok { output: json!(15) })
                ]
            );
            let seen = seen_by_model.lock().unwrap();
            assert_eq!(seen.len(), 3);
            assert_eq!(seen[0][0], Message::system("be exact"));
            assert_eq!(
                seen[2].last().unwrap(),
                &Message::Tool {
                    call_id: "c2".into(),
                    content: "15".into()
                }
            );
            let started: Vec<&Value> = events
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::ToolCallStarted { arguments, .. } => Some(arguments),
                    _ => None,
                })
                .collect();
            assert_eq!(started, [&json!({"a":2,"b":3}), &json!({"a":5,"b":10})]);
        },
    );
}

/// Three tools, each waiting for its own gate. The test opens the gates in the order 3, 1, 2
/// and checks, one step at a time, that each completion is emitted as soon as its gate opens.
#[test]
fn parallel_tool_completions_are_emitted_in_finish_order() {
    within_deadline(
        "parallel_tool_completions_are_emitted_in_finish_order",
        |steps| {
            let gates: Arc<Mutex<Vec<Option<oneshot::Receiver<()>>>>> =
                Arc::new(Mutex::new(Vec::new()));
            let mut senders = Vec::new();
            for _ in 0..3 {
                let (tx, rx) = oneshot::channel::<()>();
                senders.push(Some(tx));
                gates.lock().unwrap().push(Some(rx));
            }
            let gates_in_tool = gates.clone();
            let gated = async_tool(
                "gated",
                "waits for a gate",
                json!({"type":"object"}),
                move |args| {
                    let i = args["i"].as_u64().unwrap() as usize;
                    let gate = gates_in_tool.lock().unwrap()[i].take().unwrap();
                    async move {
                        gate.await.map_err(|_| ToolError::failed("gate dropped"))?;
                        Ok(json!(i + 1))
                    }
                },
            );
            let model = ScriptedModel::new([
                Turn::new()
                    .tool_call("call_1", "gated", r#"{"i":0}"#)
                    .tool_call("call_2", "gated", r#"{"i":1}"#)
                    .tool_call("call_3", "gated", r#"{"i":2}"#),
                Turn::new().text("done"),
            ]);
            let agent = agent_with(model).tool(gated).build().unwrap();
            let mut stream = agent.run("go");
            let next = |s: &mut RunStream| block_on(s.next()).expect("stream ended early");

            // Read until all three calls have started.
            let mut started = 0;
            while started < 3 {
                steps.step(format!(
                    "waiting for tool_call_started {} of 3",
                    started + 1
                ));
                if let EventKind::ToolCallStarted { .. } = next(&mut stream).kind {
                    started += 1;
                }
            }
            // Nothing can complete while every gate is closed: the stream is pending.
            assert!(stream.next().now_or_never().is_none());
            for (gate, expected) in [(2usize, "call_3"), (0, "call_1"), (1, "call_2")] {
                senders[gate].take().unwrap().send(()).unwrap();
                steps.step(format!(
            "gate {gate} opened: waiting for the completion of {expected} on its own (batched \
             completions never arrive one by one)"
        ));
                let event = next(&mut stream);
                match event.kind {
                    EventKind::ToolCallCompleted { call_id, .. } => assert_eq!(call_id, expected),
                    other => panic!("expected the completion of {expected}, got {other:?}"),
                }
            }
            steps.step("waiting for the rest of the run");
            let rest: Vec<Event> = block_on(stream.collect());
            assert_eq!(completed_text(&rest), "done");
        },
    );
}

#[test]
fn max_concurrent_tools_limits_running_calls() {
    within_deadline("max_concurrent_tools_limits_running_calls", |_steps| {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (r, p) = (running.clone(), peak.clone());
        let tool = blocking_tool("slow", "sleeps", json!({"type":"object"}), move |_| {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            r.fetch_sub(1, Ordering::SeqCst);
            Ok(json!("ok"))
        });
        let mut turn = Turn::new();
        for i in 0..6 {
            turn = turn.tool_call(format!("c{i}"), "slow", "{}");
        }
        let model = ScriptedModel::new([turn, Turn::new().text("done")]);
        let agent = agent_with(model)
            .tool(tool)
            .max_concurrent_tools(2)
            .build()
            .unwrap();
        let events = collect(agent.run("go"));
        assert_contract(&events);
        assert_eq!(tool_results(&events).len(), 6);
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    });
}

#[test]
fn unknown_tool_becomes_an_error_result_and_the_run_goes_on() {
    within_deadline(
        "unknown_tool_becomes_an_error_result_and_the_run_goes_on",
        |_steps| {
            let model = ScriptedModel::new([
                Turn::new().tool_call("c1", "does_not_exist", "{}"),
                Turn::new().text("sorry"),
            ]);
            let events = collect(agent_with(model).build().unwrap().run("x"));
            assert_contract(&events);
            let results = tool_results(&events);
            let ToolResult::Error { kind, message } = &results[0].1 else {
                panic!("expected an error result")
            };
            assert_eq!(*kind, ToolErrorKind::UnknownTool);
            assert!(message.contains("does_not_exist"), "{message}");
            assert_eq!(completed_text(&events), "sorry");
        },
    );
}

#[test]
fn bad_arguments_invalid_json_and_wrong_type_become_error_results() {
    within_deadline(
        "bad_arguments_invalid_json_and_wrong_type_become_error_results",
        |_steps| {
            let model = ScriptedModel::new([
                Turn::new()
                    .tool_call("c1", "add", r#"{"a": 1, "b": "#)
                    .tool_call("c2", "add", r#"{"a": "one", "b": 2}"#),
                Turn::new().text("ok"),
            ]);
            let agent = agent_with(model)
                .tool(typed_blocking_tool("add", "add", |n: Numbers| {
                    Ok::<_, ToolError>(n.a + n.b)
                }))
                .build()
                .unwrap();
            let events = collect(agent.run("x"));
            assert_contract(&events);
            let started_args: Vec<Value> = events
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::ToolCallStarted { arguments, .. } => Some(arguments.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(
                started_args[0],
                json!(r#"{"a": 1, "b": "#),
                "raw text kept when not JSON"
            );
            for (_, result) in tool_results(&events) {
                assert!(
                    matches!(
                        result,
                        ToolResult::Error {
                            kind: ToolErrorKind::InvalidArguments,
                            ..
                        }
                    ),
                    "{result:?}"
                );
            }
        },
    );
}

#[test]
fn tool_error_and_tool_panic_are_reported_and_the_run_goes_on() {
    within_deadline(
        "tool_error_and_tool_panic_are_reported_and_the_run_goes_on",
        |_steps| {
            let model = ScriptedModel::new([
                Turn::new()
                    .tool_call("c1", "fails", "{}")
                    .tool_call("c2", "panics_async", "{}")
                    .tool_call("c3", "panics_blocking", "{}")
                    .tool_call("c4", "panics_on_call", "{}"),
                Turn::new().text("recovered"),
            ]);
            struct PanicsOnCall(agent_core::tool::ToolDefinition);
            impl agent_core::tool::Tool for PanicsOnCall {
                fn definition(&self) -> &agent_core::tool::ToolDefinition {
                    &self.0
                }
                fn call(
                    &self,
                    _: Value,
                    _: agent_core::tool::ToolContext,
                ) -> agent_core::tool::ToolFuture {
                    panic!("panicked before returning a future")
                }
            }
            let agent = agent_with(model)
                .tool(async_tool("fails", "", json!({}), |_| async {
                    Err(ToolError::failed("disk full"))
                }))
                .tool(async_tool("panics_async", "", json!({}), |_| async {
                    panic!("boom async")
                }))
                .tool(blocking_tool("panics_blocking", "", json!({}), |_| {
                    panic!("boom blocking")
                }))
                .tool(PanicsOnCall(agent_core::tool::ToolDefinition {
                    name: "panics_on_call".into(),
                    description: String::new(),
                    parameters: json!({}),
                }))
                .build()
                .unwrap();
            let events = collect(agent.run("x"));
            assert_contract(&events);
            assert_eq!(completed_text(&events), "recovered");
            let results = tool_results(&events);
            assert_eq!(results.len(), 4);
            let by_id = |id: &str| results.iter().find(|(c, _)| c == id).unwrap().1.clone();
            assert_eq!(
                by_id("c1"),
                ToolResult::Error {
                    kind: ToolErrorKind::Failed,
                    message: "disk full".into()
                }
            );
            for (id, text) in [
                ("c2", "boom async"),
                ("c3", "boom blocking"),
                ("c4", "panicked before returning a future"),
            ] {
                let ToolResult::Error { kind, message } = by_id(id) else {
                    panic!()
                };
                assert_eq!(kind, ToolErrorKind::Panicked);
                assert!(message.contains(text), "{message}");
            }
        },
    );
}

#[test]
fn exceeding_max_rounds_fails_the_run_with_max_rounds() {
    within_deadline(
        "exceeding_max_rounds_fails_the_run_with_max_rounds",
        |_steps| {
            let model = ScriptedModel::from_fn(|_, n| {
                Turn::new()
                    .text(format!("r{n} "))
                    .tool_call(format!("c{n}"), "noop", "{}")
            });
            let agent = agent_with(model)
                .tool(async_tool("noop", "", json!({}), |_| async {
                    Ok(Value::Null)
                }))
                .max_rounds(3)
                .build()
                .unwrap();
            let events = collect(agent.run("loop forever"));
            assert_contract(&events);
            let (kind, _, partial) = failure(&events);
            assert_eq!(kind, ErrorKind::MaxRounds);
            assert_eq!(partial, "r0 r1 r2 ");
            let requests = events
                .iter()
                .filter(|e| matches!(e.kind, EventKind::ModelRequestStarted { .. }))
                .count();
            assert_eq!(requests, 3);
        },
    );
}

#[test]
fn model_error_fails_the_run_and_keeps_partial_text() {
    within_deadline(
        "model_error_fails_the_run_and_keeps_partial_text",
        |_steps| {
            let model = ScriptedModel::new([Turn::new().text("partial ").text("answer").fail(
                ModelError::new(ErrorKind::UpstreamReset, "connection reset"),
            )]);
            let events = collect(agent_with(model).build().unwrap().run("x"));
            assert_contract(&events);
            let (kind, message, partial) = failure(&events);
            assert_eq!(kind, ErrorKind::UpstreamReset);
            assert_eq!(message, "connection reset");
            assert_eq!(partial, "partial answer");
        },
    );
}

#[test]
fn a_panicking_model_fails_the_run_with_internal() {
    within_deadline("a_panicking_model_fails_the_run_with_internal", |_steps| {
        let model = ScriptedModel::from_fn(|_, _| panic!("model exploded"));
        let events = collect(agent_with(model).build().unwrap().run("x"));
        assert_contract(&events);
        let (kind, message, _) = failure(&events);
        assert_eq!(kind, ErrorKind::Internal);
        assert!(message.contains("model exploded"), "{message}");
    });
}

#[test]
fn interleaved_tool_call_deltas_are_assembled_by_index() {
    within_deadline(
        "interleaved_tool_call_deltas_are_assembled_by_index",
        |_steps| {
            let delta = |index, id: Option<&str>, name: Option<&str>, args: &str| {
                Step::ToolCallDelta(ToolCallDelta {
                    index,
                    id: id.map(Into::into),
                    name: name.map(Into::into),
                    arguments: args.into(),
                })
            };
            let model = ScriptedModel::new([
                Turn::new()
                    .step(delta(0, Some("a"), Some("add"), r#"{"a":1,"#))
                    .step(delta(1, Some("b"), Some("add"), r#"{"a":10,"#))
                    .step(delta(0, None, None, r#""b":2}"#))
                    .step(delta(1, None, None, r#""b":20}"#))
                    .step(Step::Finish(FinishReason::ToolCalls)),
                Turn::new().text("ok"),
            ]);
            let agent = agent_with(model)
                .tool(typed_tool("add", "add", |n: Numbers| async move {
                    Ok::<_, ToolError>(n.a + n.b)
                }))
                .build()
                .unwrap();
            let events = collect(agent.run("x"));
            let mut results = tool_results(&events);
            results.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(
                results,
                [
                    ("a".to_string(), ToolResult::Ok { output: json!(3) }),
                    ("b".to_string(), ToolResult::Ok { output: json!(30) })
                ]
            );
        },
    );
}

/// A value that counts its drops.
struct DropCounter(Arc<AtomicUsize>);
impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn dropping_the_stream_mid_run_drops_the_in_flight_tool_future() {
    within_deadline(
        "dropping_the_stream_mid_run_drops_the_in_flight_tool_future",
        |_steps| {
            let drops = Arc::new(AtomicUsize::new(0));
            let polled = Arc::new(AtomicUsize::new(0));
            let (d, p) = (drops.clone(), polled.clone());
            let forever = async_tool("forever", "", json!({}), move |_| {
                let guard = DropCounter(d.clone());
                let polled = p.clone();
                async move {
                    let _guard = guard;
                    polled.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<()>().await;
                    Ok(Value::Null)
                }
            });
            let model = ScriptedModel::new([Turn::new().tool_call("c1", "forever", "{}")]);
            let agent = agent_with(model).tool(forever).build().unwrap();
            let mut stream = agent.run("x");
            loop {
                let event = block_on(stream.next()).unwrap();
                if matches!(event.kind, EventKind::ToolCallStarted { .. }) {
                    break;
                }
            }
            // One more poll starts the tool future; it stays pending.
            assert!(stream.next().now_or_never().is_none());
            assert_eq!(polled.load(Ordering::SeqCst), 1);
            assert_eq!(drops.load(Ordering::SeqCst), 0);
            drop(stream);
            assert_eq!(
                drops.load(Ordering::SeqCst),
                1,
                "the tool future must be dropped with the stream"
            );
        },
    );
}

#[test]
fn dropping_the_stream_discards_a_blocking_tools_late_result() {
    within_deadline(
        "dropping_the_stream_discards_a_blocking_tools_late_result",
        |_steps| {
            let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
            let release_rx = Mutex::new(release_rx);
            let (finished_tx, finished_rx) = std::sync::mpsc::channel::<()>();
            let finished_tx = Mutex::new(finished_tx);
            let tool = blocking_tool("wait", "", json!({}), move |_| {
                release_rx.lock().unwrap().recv().unwrap();
                finished_tx.lock().unwrap().send(()).unwrap();
                Ok(json!("late"))
            });
            let model = ScriptedModel::new([Turn::new().tool_call("c1", "wait", "{}")]);
            let agent = agent_with(model).tool(tool).build().unwrap();
            let mut stream = agent.run("x");
            while !matches!(
                block_on(stream.next()).unwrap().kind,
                EventKind::ToolCallStarted { .. }
            ) {}
            assert!(stream.next().now_or_never().is_none());
            drop(stream);
            release_tx.send(()).unwrap();
            // The blocking closure ran to its end on its thread; its result went nowhere, no panic.
            finished_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("the blocking tool finished");
        },
    );
}

#[test]
fn the_stream_is_returned_before_anything_runs() {
    within_deadline("the_stream_is_returned_before_anything_runs", |_steps| {
        let model = ScriptedModel::from_fn(|_, _| Turn::new().text("x"));
        let counter = model.clone();
        let agent = agent_with(model).build().unwrap();
        let stream = agent.run("x");
        assert_eq!(
            counter.requests(),
            0,
            "no model request before the first poll"
        );
        drop(stream);
        assert_eq!(counter.requests(), 0);
    });
}

#[test]
fn cancel_handle_ends_the_run_with_run_cancelled() {
    within_deadline("cancel_handle_ends_the_run_with_run_cancelled", |_steps| {
        let model = ScriptedModel::new([Turn::new()
            .text("before ")
            .pause(Duration::from_secs(30))
            .text("after")]);
        let agent = agent_with(model).build().unwrap();
        let mut stream = agent.run("x");
        let handle = stream.cancel_handle();
        let mut events = Vec::new();
        loop {
            let event = block_on(stream.next()).unwrap();
            let is_text = matches!(event.kind, EventKind::TextDelta { .. });
            events.push(event);
            if is_text {
                break;
            }
        }
        std::thread::spawn(move || handle.cancel());
        events.extend(block_on((&mut stream).collect::<Vec<_>>()));
        assert_contract(&events);
        assert_eq!(
            events.last().unwrap().kind,
            EventKind::RunCancelled {
                partial_text: "before ".into()
            }
        );
        assert!(
            block_on(stream.next()).is_none(),
            "nothing after the terminal event"
        );
    });
}

#[test]
fn run_timeout_fails_the_run() {
    within_deadline("run_timeout_fails_the_run", |_steps| {
        let model = ScriptedModel::new([Turn::new()
            .text("slow ")
            .pause(Duration::from_secs(30))
            .text("never")]);
        let agent = agent_with(model)
            .run_timeout(Duration::from_millis(30))
            .build()
            .unwrap();
        let events = collect(agent.run("x"));
        assert_contract(&events);
        let (kind, _, partial) = failure(&events);
        assert_eq!(kind, ErrorKind::RunTimeout);
        assert_eq!(partial, "slow ");
    });
}

#[test]
fn sessions_keep_history_across_runs() {
    within_deadline("sessions_keep_history_across_runs", |_steps| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let model = ScriptedModel::from_fn(move |request, n| {
            s.lock().unwrap().push(request.messages.clone());
            Turn::new().text(format!("answer {n}"))
        });
        let agent = agent_with(model).build().unwrap();
        let session = agent.session();
        collect(session.run("first"));
        collect(session.run("second"));
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[1],
            vec![
                Message::user("first"),
                Message::assistant("answer 0"),
                Message::user("second")
            ]
        );
        assert_eq!(session.history().len(), 4);
        session.clear();
        assert!(session.history().is_empty());
    });
}

#[test]
fn a_failed_run_leaves_session_history_unchanged() {
    within_deadline("a_failed_run_leaves_session_history_unchanged", |_steps| {
        let model = ScriptedModel::new([
            Turn::new().text("ok"),
            Turn::new().fail(ModelError::new(ErrorKind::Model, "nope")),
        ]);
        let session = agent_with(model).build().unwrap().session();
        collect(session.run("one"));
        let events = collect(session.run("two"));
        assert_eq!(failure(&events).0, ErrorKind::Model);
        assert_eq!(session.history().len(), 2);
    });
}

#[test]
fn builder_reports_missing_parts_and_duplicate_tools() {
    within_deadline(
        "builder_reports_missing_parts_and_duplicate_tools",
        |_steps| {
            assert_eq!(
                Agent::builder().runtime(runtime()).build().unwrap_err(),
                BuildError::MissingModel
            );
            assert_eq!(
                Agent::builder()
                    .model(ScriptedModel::new([]))
                    .build()
                    .unwrap_err(),
                BuildError::MissingRuntime
            );
            let noop = || async_tool("t", "", json!({}), |_| async { Ok(Value::Null) });
            let err = agent_with(ScriptedModel::new([]))
                .tool(noop())
                .tool(noop())
                .build()
                .unwrap_err();
            assert_eq!(err, BuildError::DuplicateTool("t".into()));
            assert!(err.to_string().contains("\"t\""));
            let err = agent_with(ScriptedModel::new([]))
                .max_rounds(0)
                .build()
                .unwrap_err();
            assert_eq!(err, BuildError::InvalidLimit("max_rounds"));
        },
    );
}

#[test]
fn events_round_trip_through_json() {
    within_deadline("events_round_trip_through_json", |_steps| {
        let model = ScriptedModel::new([
            Turn::new()
                .reasoning("think")
                .tool_call("c1", "add", r#"{"a":1,"b":2}"#),
            Turn::new().text("3").usage(1, 1),
        ]);
        let agent = agent_with(model)
            .tool(typed_tool("add", "add", |n: Numbers| async move {
                Ok::<_, ToolError>(n.a + n.b)
            }))
            .build()
            .unwrap();
        for event in collect(agent.run("x")) {
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["type"], event.name());
            assert_eq!(json["seq"], event.seq);
            let back: Event = serde_json::from_value(json).unwrap();
            assert_eq!(back, event);
        }
    });
}

/// Replace timings and run ids so a transcript is deterministic.
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key.ends_with("_ms") && !v.is_null() {
                    *v = json!("[ms]");
                } else if key == "run_id" {
                    *v = json!("[run_id]");
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[test]
fn transcript_of_a_tool_round_is_stable() {
    within_deadline("transcript_of_a_tool_round_is_stable", |_steps| {
        let model = ScriptedModel::new([
            Turn::new()
                .reasoning("Need the sum.")
                .tool_call("call_1", "add", r#"{"a":2,"b":2}"#)
                .usage(10, 4),
            Turn::new().text("2 + 2 = ").text("4").usage(20, 3),
        ]);
        let agent = agent_with(model)
            .tool(typed_tool("add", "add", |n: Numbers| async move {
                Ok::<_, ToolError>(n.a + n.b)
            }))
            .build()
            .unwrap();
        let mut transcript = serde_json::to_value(collect(agent.run("What is 2+2?"))).unwrap();
        redact(&mut transcript);
        insta::assert_json_snapshot!("tool_round_transcript", transcript);
    });
}

/// A heartbeat task on the same single-threaded executor keeps running while 100,000 ready
/// deltas stream: the run stream yields at least every COOPERATIVE_BUDGET events.
#[test]
fn cooperative_budget_lets_a_second_task_run_during_a_burst() {
    within_deadline(
        "cooperative_budget_lets_a_second_task_run_during_a_burst",
        |_steps| {
            use futures_executor::LocalPool;
            use futures_util::task::LocalSpawnExt;
            use std::cell::Cell;
            use std::rc::Rc;

            const DELTAS: usize = 100_000;
            let mut turn = Turn::new();
            for _ in 0..DELTAS {
                turn = turn.text("x");
            }
            let agent = agent_with(ScriptedModel::new([turn])).build().unwrap();

            let mut pool = LocalPool::new();
            let spawner = pool.spawner();
            let beats = Rc::new(Cell::new(0u64));
            let done = Rc::new(Cell::new(false));
            let (b, d) = (beats.clone(), done.clone());
            spawner
                .spawn_local(async move {
                    while !d.get() {
                        b.set(b.get() + 1);
                        // Yield to the executor once per beat.
                        let mut yielded = false;
                        std::future::poll_fn(|cx| {
                            if yielded {
                                Poll::Ready(())
                            } else {
                                yielded = true;
                                cx.waker().wake_by_ref();
                                Poll::Pending
                            }
                        })
                        .await;
                    }
                })
                .unwrap();
            let (b, d) = (beats.clone(), done.clone());
            let longest_gap = Rc::new(Cell::new(0usize));
            let gap = longest_gap.clone();
            spawner
                .spawn_local(async move {
                    let mut stream = pin!(agent.run("burst"));
                    let (mut texts, mut last_beat, mut since_beat) = (0usize, b.get(), 0usize);
                    while let Some(event) = stream.next().await {
                        if matches!(event.kind, EventKind::TextDelta { .. }) {
                            texts += 1;
                        }
                        if b.get() != last_beat {
                            last_beat = b.get();
                            since_beat = 0;
                        } else {
                            since_beat += 1;
                            gap.set(gap.get().max(since_beat));
                        }
                    }
                    assert_eq!(texts, DELTAS);
                    d.set(true);
                })
                .unwrap();
            pool.run();
            assert!(done.get());
            assert!(
                longest_gap.get() <= COOPERATIVE_BUDGET as usize,
                "the heartbeat starved for {} consecutive events",
                longest_gap.get()
            );
            assert!(beats.get() >= (DELTAS / COOPERATIVE_BUDGET as usize) as u64);
        },
    );
}

/// A tool call's arguments stream as `tool_call_delta` events, piece by piece and under the
/// call's id, before its `tool_call_started`; interleaved calls keep their own ids.
#[test]
fn tool_call_arguments_stream_as_deltas_before_the_call_starts() {
    within_deadline(
        "tool_call_arguments_stream_as_deltas_before_the_call_starts",
        |_steps| {
            let piece = |index, id: Option<&str>, name: Option<&str>, arguments: &str| {
                Step::ToolCallDelta(ToolCallDelta {
                    index,
                    id: id.map(Into::into),
                    name: name.map(Into::into),
                    arguments: arguments.into(),
                })
            };
            let model = ScriptedModel::from_fn(move |_, n| {
                if n > 0 {
                    return Turn::new().text("done");
                }
                Turn::new()
                    .step(piece(0, Some("call_a"), Some("echo"), ""))
                    .step(piece(1, Some("call_b"), Some("echo"), "{\"v\":"))
                    .step(piece(0, None, None, "{\"v\":"))
                    .step(piece(0, None, None, "1}"))
                    .step(piece(1, None, None, "2}"))
                    .step(Step::Finish(FinishReason::ToolCalls))
            });
            let agent = agent_with(model)
                .tool(agent_core::tool::async_tool(
                    "echo",
                    "echo",
                    json!({"type": "object"}),
                    |args: Value| async move { Ok(args) },
                ))
                .build()
                .unwrap();
            let events = collect(agent.run("go"));
            assert_contract(&events);
            let deltas: Vec<(String, Option<String>, String)> = events
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::ToolCallDelta {
                        call_id,
                        name,
                        arguments_delta,
                    } => Some((call_id.clone(), name.clone(), arguments_delta.clone())),
                    _ => None,
                })
                .collect();
            let d = |id: &str, name: Option<&str>, args: &str| {
                (id.to_string(), name.map(String::from), args.to_string())
            };
            assert_eq!(
                deltas,
                vec![
                    d("call_a", Some("echo"), ""),
                    d("call_b", Some("echo"), "{\"v\":"),
                    d("call_a", None, "{\"v\":"),
                    d("call_a", None, "1}"),
                    d("call_b", None, "2}"),
                ],
                "every piece, in order, under its call's id"
            );
            let last_delta = events
                .iter()
                .rposition(|e| e.name() == "tool_call_delta")
                .unwrap();
            let first_start = events
                .iter()
                .position(|e| e.name() == "tool_call_started")
                .expect("the calls start");
            assert!(
                last_delta < first_start,
                "deltas come before the calls start: {:?}",
                kinds(&events)
            );
            assert_eq!(completed_text(&events), "done");
        },
    );
}

#[test]
fn max_output_bytes_fails_the_run_and_keeps_the_text_up_to_the_bound() {
    let model = || {
        ScriptedModel::new([
            Turn::new().text("abc").tool_call("c1", "none", "{}"),
            Turn::new().text("déf").text("ghi"),
        ])
    };
    // On the agent: 3 bytes in round 1, then "dé" fits in 6 bytes ("é" is 2 bytes), "f" would not.
    let agent = agent_with(model()).max_output_bytes(6).build().unwrap();
    let events = collect(agent.run("hi"));
    assert_contract(&events);
    let (kind, message, partial) = failure(&events);
    assert_eq!(kind, ErrorKind::OutputTooLarge, "{message}");
    assert!(message.contains("6 bytes"), "{message}");
    assert_eq!(partial, "abcdé");
    let streamed: String = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(streamed, "abcdé", "the deltas stop at the bound too");
    assert_eq!(ErrorKind::OutputTooLarge.as_str(), "output_too_large");

    // A character is never cut: a bound inside "é" keeps "abcd".
    let agent = agent_with(model()).build().unwrap();
    let events = collect(agent.run_with(
        "hi",
        agent_core::agent::RunOptions::default().max_output_bytes(5),
    ));
    assert_eq!(failure(&events).2, "abcd");

    // At the bound exactly, the run completes.
    let agent = agent_with(model()).build().unwrap();
    let events = collect(agent.run_with(
        "hi",
        agent_core::agent::RunOptions::default().max_output_bytes(10),
    ));
    assert_eq!(completed_text(&events), "abcdéfghi");
}

#[test]
fn discard_text_streams_the_answer_without_keeping_it() {
    let model = ScriptedModel::new([
        Turn::new().text("abc").tool_call("c1", "none", "{}"),
        Turn::new().text("def"),
    ]);
    let agent = agent_with(model).build().unwrap();
    let session = agent.session();
    let events = collect(session.run_with(
        "hi",
        agent_core::agent::RunOptions::default().discard_text(),
    ));
    assert_contract(&events);
    assert_eq!(completed_text(&events), "");
    let streamed: String = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(streamed, "abcdef");
    // Each round's text still goes back to the model (and into the session).
    let assistant: Vec<String> = session
        .history()
        .iter()
        .filter_map(|m| match m {
            Message::Assistant { content, .. } => Some(content.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(assistant, ["abc", "def"]);
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Nothing {}

/// Typed tools may take the call's context as a second argument: its call id is the
/// model's, and a blocking tool sees `is_cancelled` once the run gave the call up.
#[test]
fn typed_tools_take_the_context_and_see_their_call_cancelled() {
    support::within("typed tool context", Duration::from_secs(20), |steps| {
        let model = ScriptedModel::from_fn(|_, n| match n {
            0 => Turn::new().tool_call("call_7", "whoami", "{}"),
            _ => Turn::new().text("done"),
        });
        let agent = agent_with(model)
            .tool(typed_tool(
                "whoami",
                "the call id",
                |_: Nothing, cx: agent_core::tool::ToolContext| async move {
                    Ok::<_, ToolError>(cx.call_id)
                },
            ))
            .build()
            .unwrap();
        let events = collect(agent.run("who?"));
        assert_eq!(
            tool_results(&events),
            [(
                "call_7".to_string(),
                ToolResult::Ok {
                    output: json!("call_7")
                }
            )]
        );

        steps.step("a blocking tool loops until its call is cancelled");
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
        let started_tx = Mutex::new(started_tx);
        let stopped_tx = Mutex::new(stopped_tx);
        let model = ScriptedModel::from_fn(|_, _| Turn::new().tool_call("c1", "spin", "{}"));
        let agent = agent_with(model)
            .tool(typed_blocking_tool(
                "spin",
                "spins until cancelled",
                move |_: Nothing, cx: agent_core::tool::ToolContext| {
                    let _ = started_tx.lock().unwrap().send(());
                    let deadline = std::time::Instant::now() + Duration::from_secs(10);
                    while !cx.is_cancelled() && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    let _ = stopped_tx.lock().unwrap().send(cx.is_cancelled());
                    Ok::<_, ToolError>("stopped")
                },
            ))
            .build()
            .unwrap();
        let run = agent.run("spin");
        let cancel = run.cancel_handle();
        let runner = std::thread::spawn(move || collect(run));
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the tool started");
        cancel.cancel();
        let events = runner.join().unwrap();
        assert!(matches!(
            events.last().map(|e| &e.kind),
            Some(EventKind::RunCancelled { .. })
        ));
        let saw = stopped_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the tool stopped within 10 s of the run being dropped");
        assert!(
            saw,
            "the tool saw its call cancelled (not its own 10 s deadline)"
        );
    });
}

/// `runtime` takes a runtime by value, and a `SharedRuntime` as it is (not wrapped again);
/// `shared_runtime` says so explicitly.
#[test]
fn the_builder_takes_a_runtime_by_value_or_shared() {
    let model = || ScriptedModel::new([Turn::new().text("hi")]);
    let by_value = Agent::builder()
        .model(model())
        .runtime(agent_core::runtime::TestRuntime::new())
        .build()
        .unwrap();
    assert_eq!(by_value.runtime().name(), "test-threads");
    let shared = runtime();
    let given = Agent::builder()
        .model(model())
        .runtime(shared.clone())
        .build()
        .unwrap();
    assert!(
        Arc::ptr_eq(given.runtime(), &shared),
        "not wrapped in a second Arc"
    );
    let explicit = Agent::builder()
        .model(model())
        .shared_runtime(shared.clone())
        .build()
        .unwrap();
    assert!(Arc::ptr_eq(explicit.runtime(), &shared));
}
