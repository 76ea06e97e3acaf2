//! Case 4: the run never starves its executor: a heartbeat task keeps beating while a flood
//! of ready deltas streams, and while a blocking tool sleeps.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_core::event::EventKind;
use agent_core::model::{ScriptedModel, Turn};
use agent_core::tool::blocking_tool;
use serde_json::json;

use super::Outcome;
use super::support::{agent_builder, consume};
use crate::backend::Backend;
use crate::kit::watchdog::step;
use crate::kit::{GatedModel, Heartbeat};

/// Ready deltas streamed by [`ready_deltas`].
pub const READY_DELTAS: u64 = 100_000;

/// The most consecutive events the consumer may see without the heartbeat beating once.
/// The core yields every [`COOPERATIVE_BUDGET`](agent_core::agent::COOPERATIVE_BUDGET) (64)
/// ready events; executors add their own scheduling slack.
pub const MAX_EVENTS_WITHOUT_BEAT: u64 = 1024;

/// How long the blocking tool of [`blocking_tool_sleep`] sleeps.
pub const BLOCKING_SLEEP: Duration = Duration::from_millis(300);

/// Case 4a: 100,000 ready deltas on a single-threaded executor; a yielding heartbeat task on
/// the same executor must keep beating throughout.
pub fn ready_deltas(backend: &dyn Backend) -> Outcome {
    if !backend.is_single_threaded() {
        return Outcome::not_applicable(
            "the backend is multi-threaded: a heartbeat on another worker thread cannot show \
             starvation; this case runs on the backend's single-threaded flavour",
        );
    }
    let model = GatedModel::ready(READY_DELTAS, |_| "x".to_string());
    let agent = agent_builder(backend)
        .model(model.clone())
        .build()
        .expect("agent");
    let heartbeat = Heartbeat::yielding(&*backend.runtime());
    let mut last_beats = heartbeat.beats();
    let mut since_beat = 0u64;
    let mut longest = 0u64;
    let mut deltas = 0u64;
    let mut beats_at_first_delta = None;
    let transcript = consume(backend, &agent, "flood", |event| {
        let beats = heartbeat.beats();
        if beats != last_beats {
            last_beats = beats;
            since_beat = 0;
        } else {
            since_beat += 1;
            longest = longest.max(since_beat);
        }
        if let EventKind::TextDelta { .. } = event.kind {
            beats_at_first_delta.get_or_insert(beats);
            deltas += 1;
            if deltas.is_multiple_of(10_000) {
                step(format!(
                    "streaming ready deltas: {deltas} of {READY_DELTAS} seen"
                ));
            }
        }
        ControlFlow::Continue(())
    });
    let beats_during = heartbeat.beats() - beats_at_first_delta.unwrap_or(0);
    heartbeat.stop();
    transcript.assert_contract();
    assert_eq!(
        deltas,
        READY_DELTAS,
        "starvation: every one of the {READY_DELTAS} ready deltas must arrive\n{}",
        transcript.summary()
    );
    assert!(
        longest <= MAX_EVENTS_WITHOUT_BEAT,
        "starvation: the heartbeat task did not run during {longest} consecutive events \
         (allowed: {MAX_EVENTS_WITHOUT_BEAT}); the run must yield to its executor"
    );
    Outcome::passed().note(format!(
        "{READY_DELTAS} ready deltas; heartbeat beat {beats_during} times meanwhile; \
         longest stretch without a beat: {longest} events"
    ))
}

/// Case 4b: a blocking tool sleeps 300 ms on the blocking pool while a timed heartbeat keeps
/// beating on the executor (on every backend).
pub fn blocking_tool_sleep(backend: &dyn Backend) -> Outcome {
    let runtime = backend.runtime();
    let heartbeat = Arc::new(Heartbeat::timed(&runtime, Duration::from_millis(5)));
    let probe = heartbeat.clone();
    let sleeper = blocking_tool(
        "sleep",
        "Sleeps on its thread",
        json!({"type": "object"}),
        move |_| {
            let start = probe.beats();
            let began = Instant::now();
            std::thread::sleep(BLOCKING_SLEEP);
            let during_sleep = probe.beats() - start;
            // Give a slow machine more time before concluding the executor is blocked.
            let ticked = probe.wait_for_beats(start + 3, Duration::from_secs(5));
            Ok(json!({
                "beats_during_sleep": during_sleep,
                "ticked": ticked,
                "slept_ms": began.elapsed().as_millis() as u64,
            }))
        },
    );
    let agent = agent_builder(backend)
        .model(ScriptedModel::new([
            Turn::new().tool_call("call_1", "sleep", "{}"),
            Turn::new().text("rested"),
        ]))
        .tool(sleeper)
        .build()
        .expect("agent");
    let transcript = consume(backend, &agent, "sleep", |_| ControlFlow::Continue(()));
    heartbeat.stop();
    transcript.assert_contract();
    assert_eq!(
        transcript.completed_text(),
        "rested",
        "starvation: the run with a blocking tool must complete\n{}",
        transcript.summary()
    );
    let result = transcript
        .events()
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ToolCallCompleted { result, .. } => Some(result.clone()),
            _ => None,
        })
        .expect("a tool_call_completed event");
    let value = serde_json::to_value(&result).expect("json");
    assert_eq!(
        value["status"],
        "ok",
        "starvation: the blocking tool failed: {value}\n{}",
        transcript.summary()
    );
    let beats = value["output"]["beats_during_sleep"].as_u64().unwrap_or(0);
    assert!(
        value["output"]["ticked"] == json!(true),
        "starvation: the heartbeat did not beat 3 times while the blocking tool ran \
         ({beats} beats during its {BLOCKING_SLEEP:?} sleep): blocking work must run off the executor"
    );
    Outcome::passed().note(format!(
        "heartbeat beat {beats} times (every 5 ms) during the tool's {} ms sleep",
        BLOCKING_SLEEP.as_millis()
    ))
}
