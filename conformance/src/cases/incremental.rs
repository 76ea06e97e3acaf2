//! Cases 1–3: events are delivered one by one, from the model, over HTTP from an upstream,
//! and from the backend's server, proven by lockstep (never by timing).

use std::ops::ControlFlow;
use std::time::Instant;

use agent_core::event::EventKind;
use serde_json::{Value, json};

use super::support::{
    Server, WAIT, agent_builder, consume, consume_lockstep, median_ms, ms_between, openai_config,
    openai_model, post_run, read_run,
};
use super::{Outcome, TEXT_DELTAS};
use crate::backend::Backend;
use crate::kit::upstream::{GatedUpstream, Response, openai};
use crate::kit::watchdog::step;
use crate::kit::{GatedModel, SseClient, numbered_delta};

/// Case 1: ≥ 50 text deltas from a lockstep model reach `consume` one by one.
pub fn model(backend: &dyn Backend) -> Outcome {
    let model = GatedModel::numbered_lockstep(TEXT_DELTAS);
    let gate = model.gate();
    let agent = agent_builder(backend)
        .model(model.clone())
        .build()
        .expect("agent");
    let started = Instant::now();
    let mut first_event = None;
    let mut latencies = Vec::new();
    let mut seen = 0u64;
    let transcript = consume(backend, &agent, "count", |event| {
        first_event.get_or_insert_with(Instant::now);
        if let EventKind::TextDelta { .. } = event.kind {
            if let Some(produced) = model.produced_at(seen) {
                latencies.push(produced.elapsed());
            }
            seen += 1;
            step(format!(
                "waiting for text delta {seen} (delta {} was observed)",
                seen - 1
            ));
            gate.open_next();
        }
        ControlFlow::Continue(())
    });
    transcript.assert_contract();
    let expected: Vec<String> = (0..TEXT_DELTAS).map(numbered_delta).collect();
    assert_eq!(
        transcript.text_deltas(),
        expected,
        "incremental delivery through consume: every model delta must arrive, in order, one \
         by one; {}\n{}",
        progress(&transcript, TEXT_DELTAS),
        transcript.summary()
    );
    assert_eq!(
        transcript.completed_text(),
        model.full_text(),
        "incremental delivery through consume: run_completed must carry the whole text of \
         the deltas\n{}",
        transcript.summary()
    );
    Outcome::passed()
        .measure(
            "time_to_first_event_ms",
            ms_between(started, first_event.unwrap_or(started)),
        )
        .measure("median_event_latency_ms", median_ms(&mut latencies))
        .note(format!(
            "{TEXT_DELTAS} text deltas in lockstep through consume"
        ))
}

/// How far a lockstep run got, and why it stopped, for the first line of a failure:
/// "12 of 60 text deltas arrived; the run ended with run_failed model: lockstep: …".
fn progress(transcript: &crate::kit::Transcript, expected: impl std::fmt::Display) -> String {
    let ended = match transcript.terminal().map(|e| &e.kind) {
        Some(EventKind::RunFailed { error, .. }) => {
            format!("run_failed {}: {}", error.kind, error.message)
        }
        Some(other) => other.name().to_string(),
        None => "no terminal event".to_string(),
    };
    format!(
        "{} of {expected} text deltas arrived; the run ended with {ended}",
        transcript.count("text_delta")
    )
}

/// The deltas of case 2: ASCII, 2-byte and 4-byte characters.
fn http_deltas() -> Vec<String> {
    (0..TEXT_DELTAS)
        .map(|k| match k % 10 {
            3 => format!("é{k} "),
            7 => format!("🦀{k} "),
            _ => numbered_delta(k),
        })
        .collect()
}

/// The lockstep upstream answer of case 2, with frames cut at awkward places.
fn split_answer(deltas: &[String]) -> Response {
    let mut response = Response::sse();
    for (k, delta) in deltas.iter().enumerate() {
        if k > 0 {
            response = response.wait_gate(
                k as u64,
                format!("text delta {} to reach the consumer", k - 1),
            );
        }
        let frame = openai::text_chunk(delta);
        response = match k {
            // Mid-line: in the middle of the JSON.
            5 => {
                let cut = frame.len() / 2;
                response.send_split(&frame, &[cut])
            }
            // CRLF line ends, cut between the CR and the LF of the first line end.
            6 | 16 => {
                let crlf = frame.replace('\n', "\r\n");
                let cut = crlf.find("\r\n").map_or(0, |i| i + 1);
                response.send_split(&crlf, &[cut])
            }
            // Inside the 4-byte crab (twice), and inside the 2-byte é.
            7 | 13 | 17 => {
                let ch = if k == 13 { "é" } else { "🦀" };
                let at = frame.find(ch).map_or(0, |i| i + 1);
                let at2 = frame.find(ch).map_or(0, |i| i + ch.len() - 1);
                response.send_split(&frame, &[at, at2])
            }
            // One byte at a time.
            9 => response.trickle(&frame),
            // "data:" cut after "da", and the blank line sent alone.
            11 => {
                let body = frame.len() - 1;
                response.send_split(&frame, &[2, body])
            }
            _ => response.send(frame),
        };
    }
    openai::finish(response)
}

/// Case 2: an upstream streaming in lockstep through the backend's HTTP client, with frames
/// split mid-line, mid-CRLF and inside multibyte characters.
pub fn http(backend: &dyn Backend) -> Outcome {
    let deltas = http_deltas();
    let upstream = GatedUpstream::start([split_answer(&deltas)]).expect("upstream");
    let model = openai_model(backend, openai_config(&upstream));
    let agent = agent_builder(backend).model(model).build().expect("agent");
    let transcript = consume_lockstep(backend, &agent, "count", &upstream.gate());
    transcript.assert_contract();
    assert_eq!(
        transcript.text_deltas(),
        deltas,
        "incremental delivery over the backend's HTTP client: every upstream chunk must \
         arrive, in order, one by one; {}; upstream: {:?}\n{}",
        progress(&transcript, deltas.len()),
        upstream.failures(),
        transcript.summary()
    );
    assert_eq!(
        transcript.completed_text(),
        deltas.concat(),
        "incremental delivery over the backend's HTTP client: run_completed must carry the \
         whole text of the split chunks\n{}",
        transcript.summary()
    );
    let requests = upstream.requests();
    assert_eq!(
        requests.len(),
        1,
        "incremental delivery over the backend's HTTP client: exactly one upstream request"
    );
    assert_eq!(
        requests[0].method, "POST",
        "incremental delivery over the backend's HTTP client: the model request must be a POST"
    );
    assert_eq!(
        requests[0].path, "/v1/chat/completions",
        "incremental delivery over the backend's HTTP client: the model request must go to \
         /v1/chat/completions"
    );
    let body = requests[0].json().expect("the request body is JSON");
    assert_eq!(
        body["stream"],
        json!(true),
        "incremental delivery over the backend's HTTP client: the request must ask for a \
         stream"
    );
    Outcome::passed().note(format!(
        "{TEXT_DELTAS} chunks in lockstep over the backend's HTTP client"
    ))
}

/// Case 3a: the backend's server delivers each `/v1/runs` frame before the next event
/// exists.
pub fn server_runs(backend: &dyn Backend) -> Outcome {
    let model = GatedModel::numbered_lockstep(TEXT_DELTAS);
    let gate = model.gate();
    let agent = agent_builder(backend)
        .model(model.clone())
        .build()
        .expect("agent");
    let server = Server::start(backend, agent);
    let mut client = post_run(server.addr(), "count");
    assert_eq!(
        client.header("x-accel-buffering"),
        Some("no"),
        "incremental delivery over /v1/runs: SSE responses must carry X-Accel-Buffering: no"
    );
    let mut first_frame = None;
    let mut latencies = Vec::new();
    let mut seen = 0u64;
    let transcript = read_run(&mut client, |event| {
        first_frame.get_or_insert_with(Instant::now);
        if let EventKind::TextDelta { .. } = event.kind {
            if let Some(produced) = model.produced_at(seen) {
                latencies.push(produced.elapsed());
            }
            seen += 1;
            gate.open_next();
        }
        ControlFlow::Continue(())
    });
    transcript.assert_contract();
    let expected: Vec<String> = (0..TEXT_DELTAS).map(numbered_delta).collect();
    assert_eq!(
        transcript.text_deltas(),
        expected,
        "incremental delivery over /v1/runs: every model delta must arrive as its own frame, \
         in order; {}\n{}",
        progress(&transcript, TEXT_DELTAS),
        transcript.summary()
    );
    Outcome::passed()
        .measure(
            "server_time_to_first_event_ms",
            ms_between(client.sent_at(), first_frame.unwrap_or(client.sent_at())),
        )
        .measure("server_median_event_latency_ms", median_ms(&mut latencies))
        .note(format!(
            "{TEXT_DELTAS} frames in lockstep through the server (raw TCP client)"
        ))
}

/// Case 3b: the same on `/v1/chat/completions` with `stream: true`.
pub fn server_chat(backend: &dyn Backend) -> Outcome {
    let model = GatedModel::numbered_lockstep(TEXT_DELTAS);
    let gate = model.gate();
    let agent = agent_builder(backend)
        .model(model.clone())
        .build()
        .expect("agent");
    let server = Server::start(backend, agent);
    step("POST /v1/chat/completions: waiting for the response head");
    let request = json!({
        "model": "conformance",
        "stream": true,
        "messages": [{"role": "user", "content": "count"}],
    });
    let mut client = SseClient::post_json(server.addr(), "/v1/chat/completions", &request, &[])
        .unwrap_or_else(|e| panic!("POST /v1/chat/completions failed: {e}"));
    assert_eq!(
        client.status(),
        200,
        "incremental delivery over /v1/chat/completions: a streamed request must be answered \
         200"
    );
    let mut texts: Vec<String> = Vec::new();
    let mut done = false;
    loop {
        step(format!(
            "waiting for chat chunk {} from the server",
            texts.len()
        ));
        let frame = match client.next_event(WAIT) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => panic!(
                "incremental delivery over /v1/chat/completions: chat chunk {} did not arrive \
                 within {WAIT:?} (the server buffers or stalls): {e}",
                texts.len()
            ),
        };
        assert!(
            !done,
            "incremental delivery over /v1/chat/completions: nothing may follow data: [DONE]; \
             got {:?}",
            frame.data
        );
        if frame.data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(&frame.data)
            .unwrap_or_else(|e| panic!("chat chunk is not JSON ({e}): {:?}", frame.data));
        assert!(
            chunk.get("error").is_none(),
            "incremental delivery over /v1/chat/completions: the run failed: {}",
            frame.data
        );
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
            texts.push(text.to_string());
            gate.open_next();
        }
    }
    assert!(
        done,
        "incremental delivery over /v1/chat/completions: the stream must end with data: \
         [DONE] (after {} text chunks)",
        texts.len()
    );
    let expected: Vec<String> = (0..TEXT_DELTAS).map(numbered_delta).collect();
    assert_eq!(
        texts, expected,
        "incremental delivery over /v1/chat/completions: every model delta must arrive as \
         its own chunk, in order"
    );
    Outcome::passed().note(format!(
        "{TEXT_DELTAS} chat chunks in lockstep through the server"
    ))
}
