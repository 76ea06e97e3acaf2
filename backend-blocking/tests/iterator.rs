//! The Iterator entry point: order, incrementality, cancellation, and use from inside async
//! runtimes.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use agent_core::event::{Event, EventKind};
use agent_core::model::{ScriptedModel, Turn};
use agent_core::tool::{ToolResult, blocking_tool};
use common::{WATCHDOG, gated_model};

fn agent_with_tool_and_pause() -> agent_core::agent::Agent {
    let model = ScriptedModel::new([
        Turn::new().tool_call("call_1", "slow_double", r#"{"n": 21}"#),
        Turn::new()
            .text("The answer")
            .pause(Duration::from_millis(5))
            .text(" is 42."),
    ]);
    let tool = blocking_tool(
        "slow_double",
        "Double a number, slowly",
        serde_json::json!({"type": "object"}),
        |args| {
            std::thread::sleep(Duration::from_millis(5));
            Ok(serde_json::json!(args["n"].as_i64().unwrap_or(0) * 2))
        },
    );
    backend_blocking::agent_builder()
        .model(model)
        .tool(tool)
        .build()
        .unwrap()
}

fn check_transcript(events: &[Event]) {
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as u64, "seq must count from 0 without gaps");
    }
    assert!(matches!(events[0].kind, EventKind::RunStarted { .. }));
    assert_eq!(events.iter().filter(|e| e.is_terminal()).count(), 1);
    let EventKind::RunCompleted { text, .. } = &events.last().unwrap().kind else {
        panic!("the run did not complete: {:?}", events.last());
    };
    assert_eq!(text, "The answer is 42.");
    let tool_output = events.iter().find_map(|e| match &e.kind {
        EventKind::ToolCallCompleted { result, .. } => Some(result.clone()),
        _ => None,
    });
    assert_eq!(
        tool_output,
        Some(ToolResult::Ok {
            output: serde_json::json!(42)
        })
    );
    let names: Vec<&str> = events.iter().map(Event::name).collect();
    let started = names
        .iter()
        .position(|n| *n == "tool_call_started")
        .unwrap();
    let completed = names
        .iter()
        .position(|n| *n == "tool_call_completed")
        .unwrap();
    assert!(started < completed);
}

/// Run `f` on a fresh thread and fail (instead of hanging) if it does not finish in time.
fn with_watchdog<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(WATCHDOG)
        .unwrap_or_else(|_| panic!("watchdog: {what} did not finish"))
}

#[test]
fn events_arrive_in_order_with_blocking_tools_and_timers() {
    let events = with_watchdog("the run", || {
        backend_blocking::run(&agent_with_tool_and_pause(), "What is 21 doubled?")
            .collect::<Vec<_>>()
    });
    check_transcript(&events);
}

#[test]
fn the_iterator_is_fused_after_the_terminal_event() {
    let agent = backend_blocking::agent_builder()
        .model(ScriptedModel::new([Turn::new().text("x")]))
        .build()
        .unwrap();
    let mut events = backend_blocking::run(&agent, "hi");
    assert!(events.run_id().starts_with("run_"));
    for event in events.by_ref() {
        if event.is_terminal() {
            break;
        }
    }
    assert!(events.next().is_none());
    assert!(events.next().is_none());
}

#[test]
fn each_event_is_returned_as_soon_as_it_exists() {
    // Lockstep: delta k+1 is only produced after the consumer has seen delta k, so an
    // iterator that waited for more (or for the end) would deadlock; the watchdog fails it.
    let (model, gate) = gated_model();
    let agent = backend_blocking::agent_builder()
        .model(model)
        .build()
        .unwrap();
    let (seen_tx, seen_rx) = mpsc::channel::<String>();
    let consumer = std::thread::spawn(move || {
        for event in backend_blocking::run(&agent, "go") {
            if let EventKind::TextDelta { text } = &event.kind {
                seen_tx.send(text.clone()).unwrap();
            }
            if event.is_terminal() {
                return event;
            }
        }
        panic!("no terminal event");
    });
    for k in 0..20 {
        let chunk = format!("chunk {k};");
        gate.send(&chunk);
        let seen = seen_rx
            .recv_timeout(WATCHDOG)
            .unwrap_or_else(|_| panic!("watchdog: chunk {k} never reached the iterator"));
        assert_eq!(seen, chunk);
    }
    gate.finish();
    let last = consumer.join().unwrap();
    assert!(matches!(last.kind, EventKind::RunCompleted { .. }));
}

#[test]
fn dropping_the_iterator_cancels_the_run() {
    let (model, gate) = gated_model();
    let agent = backend_blocking::agent_builder()
        .model(model)
        .build()
        .unwrap();
    let mut events = backend_blocking::run(&agent, "go");
    gate.send("first");
    let first_text = events
        .by_ref()
        .find(|e| matches!(e.kind, EventKind::TextDelta { .. }))
        .unwrap();
    assert_eq!(
        first_text.kind,
        EventKind::TextDelta {
            text: "first".into()
        }
    );
    assert_eq!(
        gate.drops(),
        0,
        "the model stream is alive while the run is"
    );
    drop(events);
    // Dropping the iterator drops the run, and with it the model stream, synchronously.
    assert_eq!(gate.drops(), 1);
}

#[test]
fn cancel_handle_stops_a_blocked_next_from_another_thread() {
    let (model, gate) = gated_model();
    let agent = backend_blocking::agent_builder()
        .model(model)
        .build()
        .unwrap();
    let mut events = backend_blocking::run(&agent, "go");
    let cancel = events.cancel_handle();
    gate.send("partial");
    let consumer = std::thread::spawn(move || events.by_ref().collect::<Vec<_>>());
    // The consumer is now (or soon) blocked in `next` on the idle model.
    std::thread::sleep(Duration::from_millis(20));
    cancel.cancel();
    let events = with_watchdog("the cancelled run", move || consumer.join().unwrap());
    let last = events.last().unwrap();
    assert_eq!(
        last.kind,
        EventKind::RunCancelled {
            partial_text: "partial".into()
        }
    );
    gate.wait_dropped("after cancel");
}

#[test]
fn works_from_inside_a_tokio_current_thread_runtime() {
    let events = with_watchdog("run inside tokio", || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            backend_blocking::run(&agent_with_tool_and_pause(), "What is 21 doubled?")
                .collect::<Vec<_>>()
        })
    });
    check_transcript(&events);
}

#[test]
fn works_from_inside_smol_block_on() {
    let events = with_watchdog("run inside smol", || {
        smol::block_on(async {
            backend_blocking::run(&agent_with_tool_and_pause(), "What is 21 doubled?")
                .collect::<Vec<_>>()
        })
    });
    check_transcript(&events);
}

#[test]
fn session_runs_remember_the_conversation() {
    let agent = backend_blocking::agent_builder()
        .model(ScriptedModel::new([
            Turn::new().text("Hi Ada."),
            Turn::new().text("You are Ada."),
        ]))
        .build()
        .unwrap();
    let session = agent.session();
    let first: Vec<_> = backend_blocking::run_session(&session, "I am Ada.").collect();
    assert!(matches!(
        first.last().unwrap().kind,
        EventKind::RunCompleted { .. }
    ));
    let second: Vec<_> = backend_blocking::run_session(&session, "Who am I?").collect();
    let EventKind::RunCompleted { text, .. } = &second.last().unwrap().kind else {
        panic!()
    };
    assert_eq!(text, "You are Ada.");
    assert_eq!(session.history().len(), 4);
}
