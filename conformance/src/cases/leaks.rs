//! Reliability, leaks: whatever a run ends with — completion, cancellation mid-stream,
//! cancellation while tools run, a client leaving the server — its resources are released,
//! counted after the run.
//!
//! Per run, through the kit's probes: every model stream started is dropped
//! ([`CountedModel`], [`StreamCounts`]); every async tool future is dropped and every blocking tool's result
//! too, delivered or discarded ([`DropCounter`]); every upstream
//! connection is closed ([`GatedUpstream::open_connections`]); the server's running streams
//! come back to 0 ([`RunningServer::running_streams`](crate::RunningServer::running_streams),
//! when the backend reports it). Process-wide, the cases are exclusive and accounted (see
//! [`accounting`](super::accounting)): after a warm-up round and a baseline,
//! [`LEAK_ROUNDS`] rounds run, and threads and fds must come back to the baseline (one warm
//! pool thread allowed; a thread or a socket per run exceeds that over the rounds).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use agent_core::agent::Agent;
use agent_core::event::EventKind;
use agent_core::model::{Model, ScriptedModel, Turn};
use agent_core::tool::{Tool, async_tool, blocking_tool};
use serde_json::{Value, json};

use super::Outcome;
use super::accounting::{Accounting, LEAK_TOLERANCE, assert_upstream_closed};
use super::support::{
    OpenOnDrop, Server, WAIT, agent_builder, consume, openai_config, openai_model, post_run,
    read_run,
};
use crate::backend::Backend;
use crate::kit::client::http_request;
use crate::kit::tools::GatedTool;
use crate::kit::upstream::{ExchangeEnd, GatedUpstream, Response, openai};
use crate::kit::watchdog::step;
use crate::kit::{CountedModel, DropCounter, GatedModel, SseClient, StreamCounts};

/// Measured rounds after the warm-up round.
pub const LEAK_ROUNDS: usize = 3;

/// How long a dropped thing may take to be counted as dropped.
const DROP_WITHIN: Duration = Duration::from_secs(5);

/// An agent on `model` (counted) with `tools`.
fn counted_agent(
    backend: &dyn Backend,
    model: impl Model,
    tools: Vec<Arc<dyn Tool>>,
) -> (Agent, StreamCounts) {
    let counted = CountedModel::new(model);
    let counts = counted.counts();
    let mut builder = agent_builder(backend).model(counted);
    for tool in tools {
        builder = builder.shared_tool(tool);
    }
    (builder.build().expect("agent"), counts)
}

/// Panic unless every model stream `model` started was dropped within [`DROP_WITHIN`].
fn assert_streams_dropped(model: &StreamCounts, what: &str) {
    let started = model.started() as usize;
    assert!(
        model.dropped().wait_for(started, DROP_WITHIN),
        "leaks: after {what}, {} of {started} model streams were dropped {DROP_WITHIN:?} \
         after the run",
        model.dropped().dropped()
    );
}

/// Leak accounting through `consume`: per round, a tool round over the backend's HTTP client
/// (async and blocking tools), a run cancelled mid-stream, a run cancelled while an async
/// and a blocking tool run, and a flood cancelled after five deltas.
pub fn consume_runs(backend: &dyn Backend) -> Outcome {
    step("warm-up round");
    consume_round(backend);
    let accounting = Accounting::start();
    for round in 1..=LEAK_ROUNDS {
        step(format!("round {round} of {LEAK_ROUNDS}"));
        consume_round(backend);
    }
    let note = accounting.finish(
        backend,
        &format!("{LEAK_ROUNDS} rounds of consume runs"),
        LEAK_TOLERANCE,
    );
    Outcome::passed().note(note)
}

fn consume_round(backend: &dyn Backend) {
    tools_over_http(backend);
    cancel_mid_stream(backend);
    cancel_during_tools(backend);
    cancel_flood(backend);
}

/// An upstream asks for an async and a blocking tool, then answers: completed, every tool
/// future and result dropped, the model streams dropped, the connections closed.
fn tools_over_http(backend: &dyn Backend) {
    step("a tool round over the backend's HTTP client");
    let calls = DropCounter::new();
    let tick = {
        let calls = calls.clone();
        async_tool(
            "tick",
            "An async tool",
            json!({"type": "object"}),
            move |_args: Value| {
                let guard = calls.guard();
                async move {
                    let _guard = guard;
                    Ok(json!("tick"))
                }
            },
        )
    };
    let tock = {
        let calls = calls.clone();
        blocking_tool(
            "tock",
            "A blocking tool",
            json!({"type": "object"}),
            move |_args| {
                let _guard = calls.guard();
                Ok(json!("tock"))
            },
        )
    };
    let upstream = GatedUpstream::start([
        Response::sse()
            .send(openai::tool_call_chunk(0, "call_1", "tick", "{}"))
            .send(openai::tool_call_chunk(1, "call_2", "tock", "{}"))
            .send(openai::finish_chunk("tool_calls"))
            .send(openai::DONE),
        openai::answer(&["done"]),
    ])
    .expect("upstream");
    let (agent, model) = counted_agent(
        backend,
        openai_model(backend, openai_config(&upstream)),
        vec![Arc::new(tick), Arc::new(tock)],
    );
    let transcript = consume(backend, &agent, "tools", |_| ControlFlow::Continue(()));
    drop(agent);
    transcript.assert_contract();
    assert_eq!(
        transcript.completed_text(),
        "done",
        "leaks (a tool round): the run must complete\n{}",
        transcript.summary()
    );
    assert!(
        calls.wait_for(2, DROP_WITHIN),
        "leaks (a tool round): {} of 2 tool calls dropped their future or result within \
         {DROP_WITHIN:?}",
        calls.dropped()
    );
    assert_streams_dropped(&model, "a tool round");
    assert_upstream_closed(backend, &upstream);
}

/// A run dropped after three of ten deltas: its upstream request is closed.
fn cancel_mid_stream(backend: &dyn Backend) {
    step("a run cancelled mid-stream");
    let deltas: Vec<String> = (0..10).map(crate::kit::numbered_delta).collect();
    let upstream = GatedUpstream::start([openai::lockstep_answer(&deltas)]).expect("upstream");
    let gate = upstream.gate();
    let (agent, model) = counted_agent(
        backend,
        openai_model(backend, openai_config(&upstream)),
        Vec::new(),
    );
    let mut seen = 0;
    let transcript = consume(backend, &agent, "go", |event| {
        if let EventKind::TextDelta { .. } = event.kind {
            seen += 1;
            if seen == 3 {
                return ControlFlow::Break(());
            }
            gate.open_next();
        }
        ControlFlow::Continue(())
    });
    drop(agent);
    transcript.assert_contract_prefix();
    assert_eq!(
        upstream.wait_for_end(0, DROP_WITHIN),
        Some(ExchangeEnd::ClientClosed),
        "leaks (a run cancelled mid-stream): the cancelled run's upstream request must be \
         closed within {DROP_WITHIN:?}"
    );
    assert_streams_dropped(&model, "a run cancelled mid-stream");
    assert_upstream_closed(backend, &upstream);
}

/// Three tool calls (two async, one blocking); the run is dropped when async call 2
/// completes, while async call 1 and the blocking call still wait: the async future is
/// dropped, the blocking result discarded once it finishes.
fn cancel_during_tools(backend: &dyn Backend) {
    step("a run cancelled while an async and a blocking tool run");
    let waiting = GatedTool::asynchronous("wait_async", 2);
    let blocking = GatedTool::blocking("wait_blocking", 1);
    let _cleanup = OpenOnDrop(vec![waiting.gate(1), waiting.gate(2), blocking.gate(1)]);
    let (agent, model) = counted_agent(
        backend,
        ScriptedModel::new([
            Turn::new()
                .tool_call("call_1", "wait_async", r#"{"id": 1}"#)
                .tool_call("call_2", "wait_blocking", r#"{"id": 1}"#)
                .tool_call("call_3", "wait_async", r#"{"id": 2}"#),
            Turn::new().text("unreachable"),
        ]),
        vec![waiting.clone(), blocking.clone()],
    );
    let transcript = consume(backend, &agent, "go", |event| match &event.kind {
        EventKind::ToolCallStarted { call_id, .. } if call_id == "call_3" => {
            waiting.gate(2).open_next();
            ControlFlow::Continue(())
        }
        EventKind::ToolCallCompleted { call_id, .. } if call_id == "call_3" => {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    });
    drop(agent);
    transcript.assert_contract_prefix();
    step("letting the blocking call finish after the run was dropped");
    blocking.gate(1).open_next();
    assert!(
        waiting.probe().drops().wait_for(2, DROP_WITHIN),
        "leaks (a run cancelled during tools): the cancelled async tool future must be \
         dropped ({} of 2)",
        waiting.probe().drops().dropped()
    );
    assert!(
        blocking.probe().drops().wait_for(1, DROP_WITHIN),
        "leaks (a run cancelled during tools): the cancelled blocking call's result must be \
         dropped once it finishes"
    );
    assert_eq!(
        blocking.probe().delivered(),
        0,
        "leaks (a run cancelled during tools): a discarded result must not be delivered"
    );
    assert_streams_dropped(&model, "a run cancelled during tools");
}

/// A flood of ready deltas, dropped after five.
fn cancel_flood(backend: &dyn Backend) {
    step("a flood of deltas cancelled after five");
    let flood = GatedModel::ready(10_000, crate::kit::numbered_delta);
    let (agent, model) = counted_agent(backend, flood.clone(), Vec::new());
    let mut seen = 0;
    consume(backend, &agent, "flood", |event| {
        if let EventKind::TextDelta { .. } = event.kind {
            seen += 1;
            if seen == 5 {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    drop(agent);
    assert_streams_dropped(&model, "a cancelled flood");
    assert_eq!(
        flood.streams_dropped(),
        flood.streams_started(),
        "leaks (a cancelled flood): every started flood stream must be dropped"
    );
}

/// A model for the server rounds: `hold` streams one delta and then waits 30 s (until
/// cancelled); anything else answers "Hello there" at once.
fn server_model() -> ScriptedModel {
    ScriptedModel::from_fn(
        |request, _| match request.last_user_text().unwrap_or_default() {
            "hold" => Turn::new()
                .text("held ")
                .pause(Duration::from_secs(30))
                .text("never"),
            _ => Turn::new().text("Hello").text(" there"),
        },
    )
}

/// Leak accounting through the server: a server started, given [`LEAK_ROUNDS`] rounds of
/// runs (completed, non-streamed chat, a client leaving mid-run, streamed chat) and shut
/// down must leave the process as it found it.
pub fn server_runs(backend: &dyn Backend) -> Outcome {
    step("warm-up: a server's whole life");
    {
        let (agent, model) = counted_agent(backend, server_model(), Vec::new());
        let server = Server::start(backend, agent);
        server_round(&server, &model);
    }
    let accounting = Accounting::start();
    let (agent, model) = counted_agent(backend, server_model(), Vec::new());
    let server = Server::start(backend, agent);
    for round in 1..=LEAK_ROUNDS {
        step(format!("round {round} of {LEAK_ROUNDS}"));
        server_round(&server, &model);
    }
    let mut outcome = Outcome::passed();
    match server.wait_for_no_running_streams(DROP_WITHIN) {
        Ok(true) => {}
        Ok(false) => outcome = outcome.note("running_streams not reported by this backend"),
        Err(n) => panic!("{n} streams still running on the server after every client left"),
    }
    drop(server);
    let note = accounting.finish(
        backend,
        &format!("a server's life with {LEAK_ROUNDS} rounds of runs"),
        LEAK_TOLERANCE,
    );
    outcome.note(note)
}

fn server_round(server: &Server, model: &StreamCounts) {
    let addr = server.addr();
    let started = model.started();

    step("a completed run");
    let mut client = post_run(addr, "hello");
    let transcript = read_run(&mut client, |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    assert_eq!(
        transcript.completed_text(),
        "Hello there",
        "leaks (a server round): a /v1/runs run must complete"
    );
    client.close();

    step("a non-streamed chat completion");
    let chat = http_request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        json!({"stream": false, "messages": [{"role": "user", "content": "hello"}]})
            .to_string()
            .as_bytes(),
        WAIT,
    )
    .expect("chat completion");
    assert_eq!(
        chat.status, 200,
        "leaks (a server round): a non-streamed chat completion must be answered 200"
    );

    step("a client leaving mid-run");
    let mut client = post_run(addr, "hold");
    read_run(&mut client, |event| match event.kind {
        EventKind::TextDelta { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    client.close();

    step("a streamed chat completion");
    let mut chat = SseClient::post_json(
        addr,
        "/v1/chat/completions",
        &json!({"stream": true, "messages": [{"role": "user", "content": "hello"}]}),
        &[],
    )
    .expect("streamed chat completion");
    assert_eq!(
        chat.status(),
        200,
        "leaks (a server round): a streamed chat completion must be answered 200"
    );
    let mut last = String::new();
    while let Some(event) = chat.next_event(WAIT).expect("chat frame") {
        last = event.data;
    }
    assert_eq!(
        last, "[DONE]",
        "leaks (a server round): a streamed chat completion must end with [DONE]"
    );
    chat.close();

    assert_eq!(
        model.started(),
        started + 4,
        "leaks (a server round): all four requests must reach the model"
    );
    assert_streams_dropped(model, "a server round");
}
