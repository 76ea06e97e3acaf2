//! The OpenAI Responses API (`POST /v1/responses`, `stream: true`) through the backend's
//! real server: lockstep delivery, free-running delivery counted in socket reads, and
//! cancellation when the client leaves.
//!
//! | case | proves |
//! |---|---|
//! | `responses_lockstep` | each `response.output_text.delta` is written before the next model delta exists (a [`GatedModel`]); `sequence_number` 0, 1, 2, …; `response.completed` last |
//! | `responses_free_running` | deltas paced [`PACE`] apart that never wait for the client arrive in many separate reads |
//! | `responses_cancel_disconnect` | a client leaving mid-stream cancels the run (its model stream is dropped) |

use std::time::Instant;

use agent_core::model::{ScriptedModel, Turn};
use serde_json::{Value, json};

use super::cancellation::CLOSE_WITHIN;
use super::free_running::{FREE_DELTAS, MIN_ARRIVALS, PACE, read_counting};
use super::support::{Server, WAIT, agent_builder, wait_until};
use super::{Outcome, TEXT_DELTAS};
use crate::backend::Backend;
use crate::kit::watchdog::step;
use crate::kit::{GatedModel, SseClient, numbered_delta};

const PATH: &str = "/v1/responses";

fn request() -> Value {
    json!({"model": "conformance", "input": "count", "stream": true})
}

fn open(server: &Server) -> SseClient {
    step("POST /v1/responses: waiting for the response head");
    let client = SseClient::post_json(server.addr(), PATH, &request(), &[])
        .unwrap_or_else(|e| panic!("POST /v1/responses failed: {e}"));
    assert_eq!(
        client.status(),
        200,
        "responses API: a streamed request must be answered 200"
    );
    assert_eq!(
        client.header("x-accel-buffering"),
        Some("no"),
        "responses API: SSE responses must carry X-Accel-Buffering: no"
    );
    client
}

/// The next Responses event (`event:` name, data JSON), checking the frame's shape and that
/// its `sequence_number` is `expected_seq`.
fn next(client: &mut SseClient, expected_seq: u64) -> Option<(String, Value)> {
    step(format!(
        "waiting for Responses event {expected_seq} from the server"
    ));
    let frame = match client.next_event(WAIT) {
        Ok(Some(frame)) => frame,
        Ok(None) => return None,
        Err(e) => panic!(
            "responses API: event {expected_seq} did not arrive within {WAIT:?} (the server \
             buffers or stalls): {e}"
        ),
    };
    let data: Value = serde_json::from_str(&frame.data)
        .unwrap_or_else(|e| panic!("responses API: data is not JSON ({e}): {:?}", frame.data));
    assert_eq!(
        data["type"], frame.event,
        "responses API: the SSE event name must be the event's type: {}",
        frame.data
    );
    assert_eq!(
        data["sequence_number"],
        json!(expected_seq),
        "responses API: sequence_number must count 0, 1, 2, … without gaps: {}",
        frame.data
    );
    Some((frame.event, data))
}

/// `responses_lockstep`: see the [module docs](self).
pub fn lockstep(backend: &dyn Backend) -> Outcome {
    let model = GatedModel::numbered_lockstep(TEXT_DELTAS);
    let gate = model.gate();
    let agent = agent_builder(backend)
        .model(model.clone())
        .build()
        .expect("agent");
    let server = Server::start(backend, agent);
    let sent = Instant::now();
    let mut client = open(&server);
    let mut seq = 0;
    let mut texts: Vec<String> = Vec::new();
    let mut item_id: Option<String> = None;
    let mut first_delta = None;
    let mut completed = None;
    while let Some((kind, data)) = next(&mut client, seq) {
        seq += 1;
        assert!(
            completed.is_none(),
            "responses API: nothing may follow response.completed; got {kind}"
        );
        match kind.as_str() {
            "response.output_text.delta" => {
                first_delta.get_or_insert_with(Instant::now);
                let id = data["item_id"].as_str().unwrap_or_default().to_string();
                assert_eq!(
                    item_id.get_or_insert_with(|| id.clone()),
                    &id,
                    "responses API: the deltas of one message item share its item_id"
                );
                texts.push(data["delta"].as_str().unwrap_or_default().to_string());
                gate.open_next();
            }
            "response.completed" => completed = Some(data),
            "response.failed" => panic!("responses API: the run failed: {data}"),
            _ => {}
        }
    }
    let completed = completed.unwrap_or_else(|| {
        panic!(
            "responses API: the stream must end with response.completed (after {} text deltas)",
            texts.len()
        )
    });
    let expected: Vec<String> = (0..TEXT_DELTAS).map(numbered_delta).collect();
    assert_eq!(
        texts, expected,
        "responses API: every model delta must arrive as its own response.output_text.delta, \
         in order"
    );
    assert_eq!(
        completed["response"]["output"][0]["content"][0]["text"],
        json!(expected.concat()),
        "responses API: the completed response holds the whole text"
    );
    Outcome::passed()
        .measure(
            "server_time_to_first_delta_ms",
            first_delta
                .unwrap_or(sent)
                .duration_since(sent)
                .as_secs_f64()
                * 1000.0,
        )
        .note(format!(
            "{TEXT_DELTAS} output_text deltas in lockstep through POST /v1/responses"
        ))
}

fn paced_delta(k: usize) -> String {
    format!("w{k:02} ")
}

/// `responses_free_running`: see the [module docs](self).
pub fn free_running(backend: &dyn Backend) -> Outcome {
    let mut turn = Turn::new();
    for k in 0..FREE_DELTAS {
        if k > 0 {
            turn = turn.pause(PACE);
        }
        turn = turn.text(paced_delta(k));
    }
    let agent = agent_builder(backend)
        .model(ScriptedModel::new([turn]))
        .build()
        .expect("agent");
    let server = Server::start(backend, agent);
    let body = request().to_string();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        server.addr(),
        body.len()
    );
    step("reading the free-running stream of POST /v1/responses");
    let end = "event: response.completed";
    let (text, reads) = read_counting(server.addr(), "POST /v1/responses", head.as_bytes(), end);
    assert!(
        text.contains(end),
        "responses API free-running: the stream ended without response.completed:\n{text}"
    );
    for k in 0..FREE_DELTAS {
        assert!(
            text.contains(&format!("\"delta\":\"{}\"", paced_delta(k))),
            "responses API free-running: delta {k} is missing from the stream:\n{text}"
        );
    }
    assert!(
        reads >= MIN_ARRIVALS,
        "responses API free-running: {FREE_DELTAS} deltas produced {} ms apart arrived in \
         {reads} read(s), at least {MIN_ARRIVALS} required: the server holds frames back (a \
         coalescing buffer)",
        PACE.as_millis()
    );
    Outcome::passed()
        .note(format!(
            "{FREE_DELTAS} deltas, {} ms apart, arrived in {reads} reads",
            PACE.as_millis()
        ))
        .measure("arrivals", reads as f64)
}

/// `responses_cancel_disconnect`: see the [module docs](self).
pub fn cancel_disconnect(backend: &dyn Backend) -> Outcome {
    let model = GatedModel::numbered_lockstep(50);
    let gate = model.gate();
    let agent = agent_builder(backend)
        .model(model.clone())
        .build()
        .expect("agent");
    let server = Server::start(backend, agent);
    let mut client = open(&server);
    let mut seq = 0;
    let mut deltas = 0;
    while deltas < 3 {
        let Some((kind, data)) = next(&mut client, seq) else {
            panic!("responses API: the stream ended after {deltas} text deltas, before 3");
        };
        seq += 1;
        assert_ne!(
            kind, "response.failed",
            "responses API: the run failed: {data}"
        );
        if kind == "response.output_text.delta" {
            deltas += 1;
            if deltas < 3 {
                gate.open_next();
            }
        }
    }
    client.close();
    step(
        "waiting for the run to be cancelled (its model stream dropped) after the client left /v1/responses",
    );
    assert!(
        wait_until(CLOSE_WITHIN, || model.streams_dropped() == 1),
        "cancellation: a client disconnecting from /v1/responses must cancel its run within \
         {CLOSE_WITHIN:?} (the model stream was not dropped; {} deltas were produced)",
        model.produced()
    );
    Outcome::passed()
}
