//! Case 6: dropping a run cancels everything it started; a client leaving the server
//! cancels its run; a graceful shutdown ends open streams with a terminal event.

use std::ops::ControlFlow;
use std::sync::mpsc;
use std::time::Duration;

use agent_core::event::EventKind;
use agent_core::model::{ScriptedModel, Turn};

use super::Outcome;
use super::support::{
    OpenOnDrop, Server, WAIT, agent_builder, consume, openai_config, openai_model, post_run,
    read_deltas_lockstep, read_run_into, wait_until,
};
use crate::backend::Backend;
use crate::kit::GatedModel;
use crate::kit::tools::GatedTool;
use crate::kit::upstream::{ExchangeEnd, GatedUpstream, Response, openai};
use crate::kit::watchdog::step;

/// How long the peer may take to see a close after the run was dropped.
pub const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Case 6a: dropping the run mid-stream closes the upstream HTTP connection.
pub fn drop_closes_upstream(backend: &dyn Backend) -> Outcome {
    let upstream = GatedUpstream::start([Response::sse()
        .send(openai::text_chunk("one "))
        .send(openai::text_chunk("two "))
        .send(openai::text_chunk("three "))
        .stall()])
    .expect("upstream");
    let model = openai_model(backend, openai_config(&upstream));
    let agent = agent_builder(backend).model(model).build().expect("agent");
    let mut deltas = 0;
    let transcript = consume(backend, &agent, "go", |event| {
        if let EventKind::TextDelta { .. } = event.kind {
            deltas += 1;
            if deltas == 3 {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    transcript.assert_contract_prefix();
    assert_eq!(
        transcript.text(),
        "one two three ",
        "cancellation: the three deltas sent before the upstream stalls must arrive before \
         the run is dropped\n{}",
        transcript.summary()
    );
    step("waiting for the upstream to see its connection close after the run was dropped");
    let end = upstream.wait_for_end(0, CLOSE_WITHIN);
    assert_eq!(
        end,
        Some(ExchangeEnd::ClientClosed),
        "cancellation: dropping the run must close the upstream request within \
         {CLOSE_WITHIN:?}; the upstream saw {end:?}"
    );
    Outcome::passed()
}

/// Two gated calls; call 2 is let through, and the run is dropped when its completion
/// arrives while call 1 still waits.
fn drop_during_tools(backend: &dyn Backend, tool: &std::sync::Arc<GatedTool>) {
    let agent = agent_builder(backend)
        .model(ScriptedModel::new([
            Turn::new()
                .tool_call("call_1", "wait", r#"{"id": 1}"#)
                .tool_call("call_2", "wait", r#"{"id": 2}"#),
            Turn::new().text("unreachable"),
        ]))
        .shared_tool(tool.clone())
        .build()
        .expect("agent");
    let transcript = consume(backend, &agent, "go", |event| match &event.kind {
        EventKind::ToolCallStarted { call_id, .. } if call_id == "call_2" => {
            step("waiting for tool_call_completed of call_2 (its gate is open)");
            tool.gate(2).open_next();
            ControlFlow::Continue(())
        }
        EventKind::ToolCallCompleted { call_id, .. } if call_id == "call_2" => {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    });
    transcript.assert_contract_prefix();
    assert_eq!(
        transcript.count("tool_call_completed"),
        1,
        "cancellation: only call 2 (gate open) may complete before the run is dropped\n{}",
        transcript.summary()
    );
}

/// Case 6b: dropping the run drops the futures of its running async tools.
pub fn drop_drops_async_tool(backend: &dyn Backend) -> Outcome {
    let tool = GatedTool::asynchronous("wait", 2);
    let _cleanup = OpenOnDrop(vec![tool.gate(1), tool.gate(2)]);
    drop_during_tools(backend, &tool);
    step("waiting for the future of call 1 to be dropped");
    assert!(
        tool.probe().drops().wait_for(2, CLOSE_WITHIN),
        "cancellation: dropping the run must drop the future of the still-running async \
         tool call \
         ({} of 2 tool futures dropped)",
        tool.probe().drops().dropped()
    );
    assert_eq!(
        tool.probe().delivered(),
        1,
        "cancellation: only call 2 may deliver a result; the dropped call 1 must not"
    );
    assert_eq!(
        tool.probe().finished(),
        1,
        "cancellation: the dropped async call 1 must never finish (only call 2 did)"
    );
    Outcome::passed()
}

/// Case 6c: dropping the run does not wait for a blocking tool, whose result is discarded
/// when it finishes.
pub fn drop_discards_blocking_result(backend: &dyn Backend) -> Outcome {
    let tool = GatedTool::blocking("wait", 2);
    let _cleanup = OpenOnDrop(vec![tool.gate(1), tool.gate(2)]);
    drop_during_tools(backend, &tool);
    assert_eq!(
        tool.probe().finished(),
        1,
        "cancellation: consume must return while blocking call 1 still blocks its thread \
         (dropping the run must not wait for it)"
    );
    step("letting the blocking call 1 finish after the run was dropped");
    tool.gate(1).open_next();
    assert!(
        tool.probe().drops().wait_for(2, CLOSE_WITHIN),
        "cancellation: the blocking call's result must be dropped once it finishes ({} of 2 \
         results dropped)",
        tool.probe().drops().dropped()
    );
    assert_eq!(
        tool.probe().delivered(),
        1,
        "cancellation: the result of the cancelled blocking call must be discarded, not \
         delivered"
    );
    Outcome::passed()
}

/// Case 6d: a client disconnecting from `/v1/runs` cancels its run (the model stream is
/// dropped).
pub fn server_disconnect_cancels_run(backend: &dyn Backend) -> Outcome {
    let model = GatedModel::numbered_lockstep(50);
    let gate = model.gate();
    let agent = agent_builder(backend)
        .model(model.clone())
        .build()
        .expect("agent");
    let server = Server::start(backend, agent);
    let mut client = post_run(server.addr(), "go");
    let transcript = read_deltas_lockstep(&mut client, &gate, 3);
    assert_eq!(
        transcript.count("text_delta"),
        3,
        "cancellation: the client must read 3 text deltas over /v1/runs before leaving\n{}",
        transcript.summary()
    );
    client.close();
    step("waiting for the run to be cancelled (its model stream dropped) after the client left");
    assert!(
        wait_until(CLOSE_WITHIN, || model.streams_dropped() == 1),
        "cancellation: a client disconnecting from /v1/runs must cancel its run within \
         {CLOSE_WITHIN:?} (the model stream \
         was not dropped; {} deltas were produced)",
        model.produced()
    );
    Outcome::passed()
}

/// Case 6e: client disconnect → the server drops the run → the upstream sees its
/// connection close (the whole chain).
pub fn server_disconnect_closes_upstream(backend: &dyn Backend) -> Outcome {
    let deltas: Vec<String> = (0..50).map(crate::kit::numbered_delta).collect();
    let upstream = GatedUpstream::start([openai::lockstep_answer(&deltas)]).expect("upstream");
    let gate = upstream.gate();
    let model = openai_model(backend, openai_config(&upstream));
    let agent = agent_builder(backend).model(model).build().expect("agent");
    let server = Server::start(backend, agent);
    let mut client = post_run(server.addr(), "go");
    read_deltas_lockstep(&mut client, &gate, 3);
    client.close();
    step("waiting for the upstream to see its connection close after the client left the server");
    assert_eq!(
        upstream.wait_for_end(0, CLOSE_WITHIN),
        Some(ExchangeEnd::ClientClosed),
        "cancellation: a client leaving /v1/runs must cancel the run and close its upstream \
         request within {CLOSE_WITHIN:?}"
    );
    Outcome::passed()
}

/// Case 6f: a graceful shutdown ends an open stream with `run_cancelled` and returns.
pub fn server_graceful_shutdown(backend: &dyn Backend) -> Outcome {
    let model = GatedModel::numbered_lockstep(50);
    let gate = model.gate();
    let agent = agent_builder(backend)
        .model(model.clone())
        .build()
        .expect("agent");
    let mut server = Server::start(backend, agent);
    let mut client = post_run(server.addr(), "go");
    let mut transcript = read_deltas_lockstep(&mut client, &gate, 2);
    let running = server.take();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        running.shutdown();
        let _ = done_tx.send(());
    });
    step("waiting for the open stream to end with a terminal event after shutdown");
    read_run_into(&mut client, &mut transcript, |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    assert!(
        matches!(
            transcript.terminal().map(|e| &e.kind),
            Some(EventKind::RunCancelled { .. })
        ),
        "cancellation: a graceful shutdown must end open streams with run_cancelled\n{}",
        transcript.summary()
    );
    step("waiting for RunningServer::shutdown to return");
    assert!(
        done_rx.recv_timeout(WAIT).is_ok(),
        "cancellation: RunningServer::shutdown did not return within {WAIT:?}"
    );
    Outcome::passed()
}
