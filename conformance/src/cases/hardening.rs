//! Reliability, server hardening: limits that keep a server up under load and against
//! clients that misbehave. The request basics (404, 405, 400 on malformed JSON, 401 without
//! the bearer token and 200 with it, 413 on a body over the limit — declared or chunked —
//! answered before the body was read whole) are in
//! [`contract::server_requests`](super::contract::server_requests); graceful shutdown is
//! [`cancellation::server_graceful_shutdown`](super::cancellation::server_graceful_shutdown);
//! bounded buffering for a client that stops reading is
//! [`backpressure::server_bound`](super::backpressure::server_bound).
//!
//! | case | what |
//! |---|---|
//! | `server_concurrency_limit` | with `max_concurrent_runs = 2`, a third run (on either endpoint) gets 503 with a JSON error; once a run ends, a new one is admitted |
//! | `server_write_timeout` | with `write_timeout = 300 ms`, a client that stops reading a fast stream of large frames is disconnected once its socket buffers are full, and its run is cancelled (the model stream dropped) |

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use agent_core::event::EventKind;
use agent_core::model::{Message, ScriptedModel, Turn};
use serde_json::json;

use super::Outcome;
use super::backpressure::SERVER_MAX_IN_FLIGHT;
use super::support::{
    OpenOnDrop, Server, WAIT, agent_builder, post_run, read_run, read_run_into, server_config,
    wait_until,
};
use crate::backend::Backend;
use crate::kit::client::{ClientError, http_request};
use crate::kit::tools::GatedTool;
use crate::kit::watchdog::step;
use crate::kit::{GatedModel, RawResponse, SseClient};

/// The write timeout of [`write_timeout`].
pub const WRITE_TIMEOUT: Duration = Duration::from_millis(300);

/// How long after the client stops reading its run must be cancelled: the time to fill the
/// socket buffers, plus the write timeout, plus slack for a loaded machine.
pub const DISCONNECT_WITHIN: Duration = Duration::from_secs(8);

/// Size of each delta in [`write_timeout`].
const BIG_DELTA: usize = 16 * 1024;

/// Deltas offered by [`write_timeout`]: 48 MiB, far more than any socket buffer.
const BIG_DELTAS: u64 = 3 * 1024;

fn assert_json_error(what: &str, response: &RawResponse, status: u16) {
    assert_eq!(
        response.status, status,
        "server hardening: {what} must be answered {status}"
    );
    let body = response.json().unwrap_or_else(|| {
        panic!(
            "server hardening: the answer to {what} must be a JSON error, the body is not \
             JSON: {:?}",
            String::from_utf8_lossy(&response.body)
        )
    });
    assert!(
        body["error"]["message"].is_string(),
        "server hardening: the answer to {what} must be {{\"error\": {{\"message\": ...}}}}; \
         got {body}"
    );
}

/// Hardening: `max_concurrent_runs`. Two runs hold the two slots (each waits in a gated
/// tool); a third run gets 503 on `/v1/runs` and on `/v1/chat/completions`, with a JSON
/// error; once run 1 ends, a new run is admitted and completes.
pub fn concurrency_limit(backend: &dyn Backend) -> Outcome {
    let tool = GatedTool::asynchronous("wait", 3);
    let _cleanup = OpenOnDrop(vec![tool.gate(1), tool.gate(2), tool.gate(3)]);
    // Input "n" calls the tool with id n; once the tool answered, the model says "done".
    let model = ScriptedModel::from_fn(|request, _| {
        let answered = request
            .messages
            .iter()
            .any(|m| matches!(m, Message::Tool { .. }));
        if answered {
            Turn::new().text("done")
        } else {
            let id = request.last_user_text().unwrap_or("0").to_string();
            Turn::new().tool_call("call_1", "wait", format!(r#"{{"id": {id}}}"#))
        }
    });
    let agent = agent_builder(backend)
        .model(model)
        .shared_tool(tool.clone())
        .build()
        .expect("agent");
    let server = Server::start_with(backend, agent, server_config().with_max_concurrent_runs(2));
    let addr = server.addr();
    let until_tool_started = |event: &agent_core::event::Event| match event.kind {
        EventKind::ToolCallStarted { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    };

    step("two runs take the two slots (each waits in its tool call)");
    let mut first = post_run(addr, "1");
    let mut first_transcript = read_run(&mut first, until_tool_started);
    let mut second = post_run(addr, "2");
    let mut second_transcript = read_run(&mut second, until_tool_started);

    step("a third run over the limit");
    let over = http_request(
        addr,
        "POST",
        "/v1/runs",
        &[("content-type", "application/json")],
        br#"{"input":"3"}"#,
        WAIT,
    )
    .expect("POST /v1/runs over the limit");
    assert_json_error("POST /v1/runs over max_concurrent_runs", &over, 503);
    let chat = http_request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        json!({"stream": true, "messages": [{"role": "user", "content": "3"}]})
            .to_string()
            .as_bytes(),
        WAIT,
    )
    .expect("POST /v1/chat/completions over the limit");
    assert_json_error(
        "POST /v1/chat/completions over max_concurrent_runs",
        &chat,
        503,
    );
    // `tool_call_started` is emitted before the tool's future first runs: give the two
    // admitted calls a moment to start, then no third may ever have.
    wait_until(WAIT, || tool.probe().started() >= 2);
    assert_eq!(
        tool.probe().started(),
        2,
        "server hardening (max_concurrent_runs): the two admitted runs' tools start and a refused run never does"
    );

    step("run 1 ends");
    tool.gate(1).open_next();
    read_run_into(&mut first, &mut first_transcript, |_| {
        ControlFlow::Continue(())
    });
    first_transcript.assert_contract();
    assert_eq!(
        first_transcript.completed_text(),
        "done",
        "server hardening (max_concurrent_runs): run 1, admitted, must complete"
    );
    first.close();

    step("a new run is admitted once run 1 has ended");
    tool.gate(3).open_next();
    let mut refused = 0;
    let mut third = None;
    let admitted = wait_until(WAIT, || {
        let client = SseClient::post_json(addr, "/v1/runs", &json!({"input": "3"}), &[])
            .expect("POST /v1/runs");
        if client.status() == 200 {
            third = Some(client);
            true
        } else {
            assert_eq!(
                client.status(),
                503,
                "server hardening (max_concurrent_runs): a run that is not admitted must get \
                 503"
            );
            refused += 1;
            false
        }
    });
    assert!(
        admitted,
        "server hardening (max_concurrent_runs): a run was still refused {WAIT:?} after run 1 \
         ended: its slot was not released"
    );
    let mut third = third.expect("admitted");
    let transcript = read_run(&mut third, |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    assert_eq!(
        transcript.completed_text(),
        "done",
        "server hardening (max_concurrent_runs): the run admitted after run 1 ended must \
         complete"
    );

    step("run 2 ends");
    tool.gate(2).open_next();
    read_run_into(&mut second, &mut second_transcript, |_| {
        ControlFlow::Continue(())
    });
    assert_eq!(
        second_transcript.completed_text(),
        "done",
        "server hardening (max_concurrent_runs): run 2, admitted, must complete"
    );
    let mut outcome = Outcome::passed();
    if refused > 0 {
        outcome = outcome.note(format!(
            "{refused} request(s) still refused right after run 1's last frame (the slot is \
             released when the server drops the stream)"
        ));
    }
    match server.wait_for_no_running_streams(WAIT) {
        Ok(_) => {}
        Err(n) => panic!("{n} streams still running after every run ended"),
    }
    outcome
}

/// Hardening: a client that stops reading. With `write_timeout` at [`WRITE_TIMEOUT`], a
/// model producing 16 KiB frames as fast as it is polled, and a client (64 KiB receive
/// buffer) that reads five deltas and then nothing while keeping the connection open: the
/// server must stop, time the write out, disconnect the client and cancel the run (the
/// model stream is dropped) within [`DISCONNECT_WITHIN`]; what it produced meanwhile stays
/// bounded; the client then finds the connection closed, with no terminal frame.
pub fn write_timeout(backend: &dyn Backend) -> Outcome {
    let model = GatedModel::ready(BIG_DELTAS, |k| {
        let mut text = format!("{k}:");
        text.extend(std::iter::repeat_n('x', BIG_DELTA - text.len()));
        text
    });
    let agent = agent_builder(backend)
        .model(model.clone())
        .build()
        .expect("agent");
    let server = Server::start_with(
        backend,
        agent,
        server_config().with_write_timeout(WRITE_TIMEOUT),
    );
    step("POST /v1/runs with a 64 KiB receive buffer");
    let mut client = SseClient::request(
        server.addr(),
        "POST",
        "/v1/runs",
        &[("content-type", "application/json")],
        br#"{"input":"flood"}"#,
        Some(64 * 1024),
    )
    .unwrap_or_else(|e| panic!("server hardening (write timeout): POST /v1/runs failed: {e}"));
    assert_eq!(
        client.status(),
        200,
        "server hardening (write timeout): POST /v1/runs must be answered 200"
    );
    let mut read_deltas = 0u64;
    let mut transcript = read_run(&mut client, |event| {
        if let EventKind::TextDelta { .. } = event.kind {
            read_deltas += 1;
            if read_deltas == 5 {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    let stopped_reading = Instant::now();
    step(format!(
        "the client stopped reading (connection kept open): waiting for the server to time \
         the write out ({WRITE_TIMEOUT:?}) and cancel the run"
    ));
    let cancelled = wait_until(DISCONNECT_WITHIN, || model.streams_dropped() == 1);
    let after = stopped_reading.elapsed();
    let produced = model.produced();
    assert!(
        cancelled,
        "server hardening (write timeout): a client that stopped reading was not \
         disconnected (its run not cancelled) within \
         {DISCONNECT_WITHIN:?}, with write_timeout = {WRITE_TIMEOUT:?}; {produced} of \
         {BIG_DELTAS} deltas produced"
    );
    let in_flight = produced.saturating_sub(read_deltas) * BIG_DELTA as u64;
    assert!(
        produced < BIG_DELTAS && in_flight <= SERVER_MAX_IN_FLIGHT,
        "server hardening (write timeout): {produced} of {BIG_DELTAS} deltas ({} KiB unread) \
         were produced for a client that \
         stopped reading (allowed: {} KiB)",
        in_flight / 1024,
        SERVER_MAX_IN_FLIGHT / 1024
    );

    step("the client reads what was buffered: the connection must end without a terminal frame");
    let ended = loop {
        match client.next_event(WAIT) {
            Ok(Some(frame)) => {
                let event = super::support::parse_run_frame(&frame);
                assert!(
                    !event.is_terminal(),
                    "server hardening (write timeout): the run of a client that stopped \
                     reading ended with {} instead of \
                     a disconnect",
                    event.name()
                );
                let _ = transcript.push(event);
            }
            Ok(None) => break "the body ended (no terminal frame)".to_string(),
            Err(ClientError::TimedOut(_)) => panic!(
                "the server kept the connection of a client that stopped reading open (nothing \
                 for {WAIT:?} after its buffered frames)"
            ),
            Err(e) => break format!("the connection ended: {e}"),
        }
    };
    assert!(
        transcript.terminal().is_none(),
        "server hardening (write timeout): no terminal frame may reach a disconnected \
         client; got {:?}",
        transcript.terminal().map(|e| e.name())
    );
    if let Err(n) = server.wait_for_no_running_streams(WAIT) {
        panic!("{n} streams still running after the slow client was disconnected");
    }
    Outcome::passed()
        .measure("write_timeout_disconnect_ms", after.as_secs_f64() * 1000.0)
        .note(format!(
            "run cancelled {} ms after the client stopped reading (write_timeout {} ms), {} KiB \
             produced but unread; {ended}",
            after.as_millis(),
            WRITE_TIMEOUT.as_millis(),
            in_flight / 1024
        ))
}
