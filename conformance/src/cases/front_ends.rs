//! Front-end protocols through the backend's real server: the Vercel AI SDK UI message
//! stream (`POST /v1/ai-sdk/chat`) and AG-UI (`POST /v1/ag-ui`). For each endpoint:
//!
//! | case | proves |
//! |---|---|
//! | `front_end_ai_sdk_lockstep`, `front_end_ag_ui_lockstep` | each text delta is written as its own frame before the next one exists (a lockstep model: a buffering server deadlocks and the watchdog names the frame) |
//! | `front_end_ai_sdk_free_running`, `front_end_ag_ui_free_running` | deltas produced 15 ms apart, never waiting, arrive in many separate socket reads (a server that coalesces on idle or by size fails) |
//! | `front_end_ai_sdk_disconnect`, `front_end_ag_ui_disconnect` | a client leaving mid-stream cancels the run (its model stream is dropped) |

use std::time::Duration;

use agent_core::model::{ScriptedModel, Turn};
use serde_json::{Value, json};

use super::free_running::{FREE_DELTAS, MIN_ARRIVALS, PACE, read_counting};
use super::support::{Server, WAIT, agent_builder, wait_until};
use super::{Outcome, TEXT_DELTAS};
use crate::backend::Backend;
use crate::kit::watchdog::step;
use crate::kit::{GatedModel, SseClient, numbered_delta};

/// How long a disconnect may take to cancel the run.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// One front-end endpoint: where it is, what to send, how to read its frames.
struct FrontEnd {
    name: &'static str,
    path: &'static str,
    body: fn(&str) -> Value,
    /// The text of a frame's delta, if it is a text delta frame.
    text_delta: fn(&Value) -> Option<String>,
    /// The frame that ends a completed stream (compared on the whole `data`).
    is_last: fn(&str) -> bool,
    /// Response headers the protocol requires.
    headers: &'static [(&'static str, &'static str)],
}

const AI_SDK: FrontEnd = FrontEnd {
    name: "the AI SDK UI message stream",
    path: "/v1/ai-sdk/chat",
    body: |input| {
        json!({"id": "chat", "trigger": "submit-message", "messages": [
            {"id": "u1", "role": "user", "parts": [{"type": "text", "text": input}]}
        ]})
    },
    text_delta: |frame| {
        (frame["type"] == "text-delta")
            .then(|| frame["delta"].as_str().map(String::from))
            .flatten()
    },
    is_last: |data| data == "[DONE]",
    headers: &[("x-vercel-ai-ui-message-stream", "v1")],
};

const AG_UI: FrontEnd = FrontEnd {
    name: "AG-UI",
    path: "/v1/ag-ui",
    body: |input| {
        json!({"threadId": "t", "runId": "r", "state": {}, "tools": [], "context": [],
               "forwardedProps": {}, "messages": [{"id": "u1", "role": "user", "content": input}]})
    },
    text_delta: |frame| {
        (frame["type"] == "TEXT_MESSAGE_CONTENT")
            .then(|| frame["delta"].as_str().map(String::from))
            .flatten()
    },
    is_last: |data| data.contains("\"RUN_FINISHED\""),
    headers: &[],
};

fn post(server: &Server, front_end: &FrontEnd, input: &str) -> SseClient {
    step(format!(
        "POST {}: waiting for the response head",
        front_end.path
    ));
    let client = SseClient::post_json(server.addr(), front_end.path, &(front_end.body)(input), &[])
        .unwrap_or_else(|e| panic!("POST {} failed: {e}", front_end.path));
    assert_eq!(
        client.status(),
        200,
        "front-end protocols: {} (POST {}): a run request must be answered 200",
        front_end.name,
        front_end.path
    );
    assert_eq!(
        client.header("content-type"),
        Some("text/event-stream"),
        "front-end protocols: {}: the answer is an SSE stream",
        front_end.name
    );
    assert_eq!(
        client.header("x-accel-buffering"),
        Some("no"),
        "front-end protocols: {}: SSE responses must carry X-Accel-Buffering: no",
        front_end.name
    );
    for (name, value) in front_end.headers {
        assert_eq!(
            client.header(name),
            Some(*value),
            "front-end protocols: {}: the response must carry {name}: {value}",
            front_end.name
        );
    }
    client
}

/// Read frames, calling `on_delta` with each text delta (`false` stops reading); returns
/// whether the stream's last frame was seen.
fn read_frames(
    client: &mut SseClient,
    front_end: &FrontEnd,
    mut on_delta: impl FnMut(String) -> bool,
) -> bool {
    let mut deltas = 0;
    loop {
        step(format!(
            "front-end protocols: {}: waiting for the frame after text delta {deltas}",
            front_end.name
        ));
        let frame = match client.next_event(WAIT) {
            Ok(Some(frame)) => frame,
            Ok(None) => return false,
            Err(e) => panic!(
                "front-end protocols: {} (POST {}): the frame after text delta {deltas} did not arrive within \
                 {WAIT:?} (the server buffers or stalls): {e}",
                front_end.name, front_end.path
            ),
        };
        if (front_end.is_last)(&frame.data) {
            return true;
        }
        if frame.data == "[DONE]" {
            continue;
        }
        let value: Value = serde_json::from_str(&frame.data).unwrap_or_else(|e| {
            panic!(
                "front-end protocols: {}: a frame is not JSON ({e}): {:?}",
                front_end.name, frame.data
            )
        });
        assert!(
            !matches!(value["type"].as_str(), Some("error" | "RUN_ERROR")),
            "front-end protocols: {}: the run failed: {}",
            front_end.name,
            frame.data
        );
        if let Some(text) = (front_end.text_delta)(&value) {
            deltas += 1;
            if !on_delta(text) {
                return false;
            }
        }
    }
}

fn lockstep(backend: &dyn Backend, front_end: &FrontEnd) -> Outcome {
    let model = GatedModel::numbered_lockstep(TEXT_DELTAS);
    let gate = model.gate();
    let agent = agent_builder(backend)
        .model(model.clone())
        .build()
        .expect("agent");
    let server = Server::start(backend, agent);
    let mut client = post(&server, front_end, "count");
    let mut texts = Vec::new();
    let ended = read_frames(&mut client, front_end, |text| {
        texts.push(text);
        gate.open_next();
        true
    });
    let expected: Vec<String> = (0..TEXT_DELTAS).map(numbered_delta).collect();
    assert_eq!(
        texts, expected,
        "incremental delivery: over {} (POST {}), every model delta must arrive as its own \
         frame, in order",
        front_end.name, front_end.path
    );
    assert!(
        ended,
        "front-end protocols: {}: the stream must end with its closing frame after {} deltas",
        front_end.name,
        texts.len()
    );
    Outcome::passed().note(format!(
        "{TEXT_DELTAS} frames in lockstep through POST {}",
        front_end.path
    ))
}

/// `front_end_ai_sdk_lockstep`: see the [module docs](self).
pub fn ai_sdk_lockstep(backend: &dyn Backend) -> Outcome {
    lockstep(backend, &AI_SDK)
}

/// `front_end_ag_ui_lockstep`: see the [module docs](self).
pub fn ag_ui_lockstep(backend: &dyn Backend) -> Outcome {
    lockstep(backend, &AG_UI)
}

fn free_delta(k: usize) -> String {
    format!("w{k:02} ")
}

fn free_running(backend: &dyn Backend, front_end: &FrontEnd, end: &str) -> Outcome {
    let mut turn = Turn::new();
    for k in 0..FREE_DELTAS {
        if k > 0 {
            turn = turn.pause(PACE);
        }
        turn = turn.text(free_delta(k));
    }
    let agent = agent_builder(backend)
        .model(ScriptedModel::new([turn]))
        .build()
        .expect("free-running: the agent builds");
    let server = Server::start(backend, agent);
    let body = (front_end.body)("go").to_string();
    let request = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        front_end.path,
        server.addr(),
        body.len()
    );
    let what = format!("{} (POST {})", front_end.name, front_end.path);
    step(format!("reading the free-running stream of {what}"));
    let (text, reads) = read_counting(server.addr(), &what, request.as_bytes(), end);
    for k in 0..FREE_DELTAS {
        assert!(
            text.contains(free_delta(k).trim_end()),
            "free-running delivery: through {what}, delta {k} is missing from the stream:\n{text}"
        );
    }
    assert!(
        reads >= MIN_ARRIVALS,
        "free-running delivery: through {what}, {FREE_DELTAS} deltas produced {} ms apart \
         arrived in {reads} socket read(s), at least {MIN_ARRIVALS} required: the server \
         holds frames back (a coalescing buffer)",
        PACE.as_millis()
    );
    drop(server);
    Outcome::passed()
        .note(format!(
            "{FREE_DELTAS} deltas, {} ms apart, arrived in {reads} reads",
            PACE.as_millis()
        ))
        .measure("arrivals", reads as f64)
}

/// `front_end_ai_sdk_free_running`: see the [module docs](self).
pub fn ai_sdk_free_running(backend: &dyn Backend) -> Outcome {
    free_running(backend, &AI_SDK, "data: [DONE]")
}

/// `front_end_ag_ui_free_running`: see the [module docs](self).
pub fn ag_ui_free_running(backend: &dyn Backend) -> Outcome {
    free_running(backend, &AG_UI, "RUN_FINISHED")
}

fn disconnect(backend: &dyn Backend, front_end: &FrontEnd) -> Outcome {
    let model = GatedModel::numbered_lockstep(50);
    let gate = model.gate();
    let agent = agent_builder(backend)
        .model(model.clone())
        .build()
        .expect("agent");
    let server = Server::start(backend, agent);
    let mut client = post(&server, front_end, "go");
    let mut seen = 0;
    read_frames(&mut client, front_end, |_| {
        seen += 1;
        if seen == 3 {
            return false;
        }
        gate.open_next();
        true
    });
    assert_eq!(
        seen, 3,
        "cancellation: the client must read 3 text deltas over {} before leaving",
        front_end.name
    );
    client.close();
    step(format!(
        "waiting for the run to be cancelled after the client left {}",
        front_end.path
    ));
    assert!(
        wait_until(CLOSE_WITHIN, || model.streams_dropped() == 1),
        "cancellation: a client disconnecting from {} (POST {}) must cancel its run within \
         {CLOSE_WITHIN:?} (the model stream was not dropped; {} deltas were produced)",
        front_end.name,
        front_end.path,
        model.produced()
    );
    Outcome::passed()
}

/// `front_end_ai_sdk_disconnect`: see the [module docs](self).
pub fn ai_sdk_disconnect(backend: &dyn Backend) -> Outcome {
    disconnect(backend, &AI_SDK)
}

/// `front_end_ag_ui_disconnect`: see the [module docs](self).
pub fn ag_ui_disconnect(backend: &dyn Backend) -> Outcome {
    disconnect(backend, &AG_UI)
}
