//! Tests of the kit itself, on plain threads and `agent_core::runtime::TestRuntime`.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use agent_core::agent::Agent;
use agent_core::event::{Event, EventKind};
use agent_core::runtime::{SharedRuntime, TestRuntime, block_on};
use agent_core::sse::SseItem;
use conformance::kit::client::ClientError;
use conformance::kit::upstream::{ExchangeEnd, Framing, GatedUpstream, Response, openai};
use conformance::kit::watchdog::{self, WatchdogError};
use conformance::kit::{DropCounter, Gate, GatedModel, Heartbeat, SseClient, Transcript};
use futures_util::StreamExt;

const WAIT: Duration = Duration::from_secs(5);

fn runtime() -> SharedRuntime {
    Arc::new(TestRuntime::new())
}

fn post(upstream: &GatedUpstream) -> SseClient {
    SseClient::request(
        upstream.addr(),
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        b"{}",
        None,
    )
    .expect("request")
}

fn data(item: SseItem) -> String {
    match item {
        SseItem::Event(event) => event.data,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[test]
fn upstream_serves_split_frames_in_lockstep() {
    let frame = openai::text_chunk("é🦀");
    let crab = frame.find('🦀').unwrap();
    let upstream = GatedUpstream::start([Response::sse()
        .send_split(&frame, &[3, crab + 2])
        .wait_gate(1, "frame 0 observed")
        .trickle(openai::text_chunk("b"))
        .send(openai::DONE)])
    .unwrap();
    let mut client = post(&upstream);
    assert_eq!(client.status(), 200);
    assert!(data(client.next_item(WAIT).unwrap().unwrap()).contains("é🦀"));
    // The next frame waits for the gate.
    assert!(matches!(
        client.next_item(Duration::from_millis(50)),
        Err(ClientError::TimedOut(_))
    ));
    upstream.gate().open_next();
    assert!(data(client.next_item(WAIT).unwrap().unwrap()).contains("\"b\""));
    assert_eq!(data(client.next_item(WAIT).unwrap().unwrap()), "[DONE]");
    assert!(
        client.next_item(WAIT).unwrap().is_none(),
        "chunked body ends"
    );
    assert_eq!(upstream.wait_for_end(0, WAIT), Some(ExchangeEnd::Completed));
    assert_eq!(upstream.requests()[0].body, b"{}");
}

#[test]
fn upstream_reset_and_truncate_are_errors_for_the_client() {
    for (response, end) in [
        (
            Response::sse().send(openai::text_chunk("a")).reset(),
            ExchangeEnd::Reset,
        ),
        (
            Response::sse().send(openai::text_chunk("a")).truncate(),
            ExchangeEnd::Truncated,
        ),
    ] {
        let upstream = GatedUpstream::start([response]).unwrap();
        let mut client = post(&upstream);
        assert!(data(client.next_item(WAIT).unwrap().unwrap()).contains("\"a\""));
        assert!(matches!(client.next_item(WAIT), Err(ClientError::Io(_))));
        assert_eq!(upstream.wait_for_end(0, WAIT), Some(end));
    }
}

#[test]
fn upstream_close_delimited_body_ends_at_close() {
    let upstream = GatedUpstream::start([Response::sse()
        .framing(Framing::CloseDelimited)
        .send(openai::text_chunk("a"))])
    .unwrap();
    let mut client = post(&upstream);
    assert!(data(client.next_item(WAIT).unwrap().unwrap()).contains("\"a\""));
    assert!(client.next_item(WAIT).unwrap().is_none());
}

#[test]
fn upstream_sees_the_client_close_while_stalled() {
    let upstream =
        GatedUpstream::start([Response::sse().send(openai::text_chunk("a")).stall()]).unwrap();
    let mut client = post(&upstream);
    client.next_item(WAIT).unwrap();
    client.close();
    assert_eq!(
        upstream.wait_for_end(0, WAIT),
        Some(ExchangeEnd::ClientClosed)
    );
}

#[test]
fn upstream_repeats_forever_counts_bytes_and_connections() {
    let tick = openai::text_chunk("tick");
    let big = vec![b'x'; 200 * 1024];
    let upstream = GatedUpstream::start([
        Response::sse().repeat_forever(&tick, Duration::from_millis(2)),
        Response::sse().send_buffer(16 * 1024).send(&big),
    ])
    .unwrap();
    let mut client = post(&upstream);
    for _ in 0..5 {
        assert!(data(client.next_item(WAIT).unwrap().unwrap()).contains("tick"));
    }
    assert_eq!(upstream.open_connections(), 1);
    // The upstream counts a frame right after writing it, which may be just after the
    // client has read it: wait (bounded) for the count instead of racing it.
    let deadline = std::time::Instant::now() + WAIT;
    while upstream.bytes_sent(0) < 5 * tick.len() as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "bytes_sent stayed at {}",
            upstream.bytes_sent(0)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    client.close();
    assert_eq!(
        upstream.wait_for_end(0, WAIT),
        Some(ExchangeEnd::ClientClosed)
    );
    assert!(upstream.wait_for_no_connections(WAIT, || {}));

    // A large send is counted as it goes: all of it once the client read it.
    let client = post(&upstream);
    let body = client.read_body(WAIT).unwrap();
    assert_eq!(body.len(), big.len());
    assert_eq!(upstream.wait_for_end(1, WAIT), Some(ExchangeEnd::Completed));
    assert_eq!(upstream.bytes_sent(1), big.len() as u64);
}

#[test]
fn upstream_records_unscripted_requests() {
    let upstream = GatedUpstream::start([]).unwrap();
    let client = post(&upstream);
    assert_eq!(client.status(), 500);
    assert_eq!(upstream.failures().len(), 1);
}

#[test]
fn upstream_gives_up_on_a_gate_after_its_deadline() {
    let upstream = GatedUpstream::start_with_deadline(
        [Response::sse()
            .send(openai::text_chunk("a"))
            .wait_gate(1, "text delta 0 to reach the consumer")],
        Duration::from_millis(50),
    )
    .unwrap();
    let mut client = post(&upstream);
    client.next_item(WAIT).unwrap();
    assert_eq!(upstream.wait_for_end(0, WAIT), Some(ExchangeEnd::GaveUp));
    assert!(upstream.failures()[0].contains("text delta 0 to reach the consumer"));
}

#[test]
fn full_response_reads_with_content_length() {
    let upstream =
        GatedUpstream::start([
            Response::json(429, &serde_json::json!({"error": "busy"})).header("retry-after", "1")
        ])
        .unwrap();
    let response =
        conformance::kit::client::http_request(upstream.addr(), "GET", "/x", &[], b"", WAIT)
            .unwrap();
    assert_eq!(response.status, 429);
    assert_eq!(response.header("Retry-After"), Some("1"));
    assert_eq!(response.json().unwrap()["error"], "busy");
}

#[test]
fn gate_wakes_async_and_blocking_waiters() {
    let gate = Gate::new("test");
    let waiter = gate.clone();
    let thread = std::thread::spawn(move || block_on(waiter.wait(2)));
    assert!(!gate.wait_blocking(1, Duration::from_millis(10)));
    gate.open_next();
    assert!(gate.wait_blocking(1, WAIT));
    gate.open_next();
    thread.join().unwrap();
    gate.open_all();
    assert!(gate.is_open(u64::MAX));
}

#[test]
fn watchdog_names_the_last_step_and_keeps_panic_messages() {
    let stuck = watchdog::run_with_watchdog("stuck", Duration::from_millis(50), || {
        watchdog::step("waiting for chunk 3");
        std::thread::sleep(Duration::from_secs(2));
    });
    match stuck {
        Err(WatchdogError::TimedOut { step, .. }) => assert_eq!(step, "waiting for chunk 3"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let failed = watchdog::run_with_watchdog("fails", WAIT, || panic!("boom {}", 7));
    assert_eq!(failed, Err(WatchdogError::Panicked("boom 7".into())));
}

fn event(seq: u64, kind: EventKind) -> Event {
    Event { seq, kind }
}

#[test]
fn transcript_catches_every_contract_violation() {
    let started = || EventKind::RunStarted {
        run_id: "run_1".into(),
        input: String::new(),
    };
    let done = || EventKind::RunCancelled {
        partial_text: String::new(),
    };
    let mut gap = Transcript::new();
    gap.push(event(0, started())).unwrap();
    assert!(gap.push(event(2, done())).is_err());

    let mut not_started = Transcript::new();
    assert!(not_started.push(event(0, done())).is_err());

    let mut after = Transcript::new();
    after.push(event(0, started())).unwrap();
    after.push(event(1, done())).unwrap();
    assert!(
        after
            .push(event(2, done()))
            .unwrap_err()
            .contains("after the terminal")
    );

    let mut unfinished = Transcript::new();
    unfinished.push(event(0, started())).unwrap();
    unfinished.assert_contract_prefix();
    let result = std::panic::catch_unwind(|| unfinished.assert_contract());
    assert!(
        result.is_err(),
        "a run without a terminal event breaks the contract"
    );
}

#[test]
fn gated_model_fails_naming_the_delta_that_never_arrived() {
    let model = GatedModel::numbered_lockstep(3).with_gate_deadline(Duration::from_millis(30));
    let agent = Agent::builder()
        .model(model.clone())
        .runtime(runtime())
        .build()
        .unwrap();
    // A consumer that never opens the gate, like a backend that buffers.
    let events: Vec<Event> = block_on(agent.run("x").collect());
    let EventKind::RunFailed { error, .. } = &events.last().unwrap().kind else {
        panic!("expected run_failed: {events:?}")
    };
    assert!(
        error
            .message
            .contains("text delta 1 was not released within 30ms"),
        "{}",
        error.message
    );
    assert_eq!(model.produced(), 1);
    assert_eq!(model.streams_dropped(), 1);
}

#[test]
fn heartbeats_beat_on_a_thread_runtime() {
    let rt = runtime();
    let yielding = Heartbeat::yielding(&*rt);
    let timed = Heartbeat::timed(&rt, Duration::from_millis(1));
    assert!(yielding.wait_for_beats(100, WAIT));
    assert!(timed.wait_for_beats(3, WAIT));
}

#[test]
fn drop_counter_counts_guards() {
    let counter = DropCounter::new();
    let guards: Vec<_> = (0..3).map(|_| counter.guard()).collect();
    assert!(!counter.wait_for(1, Duration::from_millis(5)));
    std::thread::spawn(move || drop(guards));
    assert!(counter.wait_for(3, WAIT));
}

#[test]
fn consume_through_a_plain_loop_passes_the_lockstep() {
    // The shape of `Backend::consume` on plain threads, with the lockstep model.
    let model = GatedModel::numbered_lockstep(50);
    let agent = Agent::builder()
        .model(model.clone())
        .runtime(runtime())
        .build()
        .unwrap();
    let mut transcript = Transcript::new();
    let mut run = agent.run("count");
    while let Some(event) = block_on(run.next()) {
        if let EventKind::TextDelta { .. } = event.kind {
            model.gate().open_next();
        }
        if transcript.record(event) == ControlFlow::Break(()) {
            break;
        }
    }
    transcript.assert_contract();
    assert_eq!(transcript.completed_text(), model.full_text());
}

/// A transcript that differs from the shared snapshot fails with both printed, and writes
/// nothing: no `.snap.new` appears in the conformance crate's folder (where a third party's
/// copy of the crate lives in their cargo registry).
#[test]
fn a_differing_transcript_fails_without_writing_a_snapshot_file() {
    use conformance::cases::transcripts::{SNAPSHOT_DIR, assert_transcript_snapshot};
    let mut transcript = Transcript::new();
    let _ = transcript.record(Event {
        seq: 0,
        kind: EventKind::TextDelta {
            text: "not the plain answer".into(),
        },
    });
    let failure = std::panic::catch_unwind(|| {
        assert_transcript_snapshot("transcript_plain_answer", &transcript)
    })
    .expect_err("a different transcript must fail");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("differs from the shared snapshot")
            && message.contains("not the plain answer"),
        "the failure shows both transcripts: {message}"
    );
    let written: Vec<_> = std::fs::read_dir(SNAPSHOT_DIR)
        .expect("the snapshot folder")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".snap.new") || name.ends_with(".pending-snap"))
        .collect();
    assert!(written.is_empty(), "nothing may be written: {written:?}");
}
