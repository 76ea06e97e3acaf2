//! Addressable runs on every backend, over real HTTP: a client that lost its connection
//! resumes with `GET /v1/runs/{id}/events` and `Last-Event-ID`, missing nothing and seeing
//! nothing twice; `POST /v1/runs/{id}/cancel` cancels a run another connection streams;
//! `GET /v1/runs/{id}` reports its status; a run nobody comes back to is cancelled after
//! the detach grace.
//!
//! | case | what the client does | what it must see |
//! |---|---|---|
//! | `runs_resume` | reads 3 deltas in lockstep, disconnects; one more delta is produced while nobody is connected; reconnects with `Last-Event-ID` | the run went on meanwhile (its status counts the event), then every remaining event once, in lockstep, ending `run_completed` with the whole text; `GET /v1/runs/{id}` says `completed` |
//! | `runs_cancel` | streams a run and, from a second connection, `POST /v1/runs/{id}/cancel` | `200` with status `cancelled`; the first stream ends with `run_cancelled`; the model stream is dropped |
//! | `runs_detach_grace` | disconnects mid-run, never comes back | after the (short) grace the run is cancelled: model stream dropped, status `cancelled` |

use std::ops::ControlFlow;
use std::time::Duration;

use agent_core::event::EventKind;
use serde_json::Value;

use super::Outcome;
use super::support::{
    Server, WAIT, agent_builder, post_run, read_deltas_lockstep, read_run, read_run_into,
    server_config, wait_until,
};
use crate::backend::Backend;
use crate::kit::GatedModel;
use crate::kit::client::{SseClient, http_request};
use crate::kit::watchdog::step;

/// The suite's config with a detach grace far longer than any case waits.
fn resumable_config() -> agent_core::server::ServerConfig {
    server_config().with_run_detach_grace(Duration::from_secs(60))
}

fn run_id_of(client: &SseClient) -> String {
    client
        .header("x-run-id")
        .expect("resumable runs: a /v1/runs answer names its run in x-run-id")
        .to_string()
}

fn status(addr: std::net::SocketAddr, id: &str) -> Value {
    let response = http_request(addr, "GET", &format!("/v1/runs/{id}"), &[], b"", WAIT)
        .unwrap_or_else(|e| panic!("resumable runs: GET /v1/runs/{id} failed: {e}"));
    assert_eq!(
        response.status, 200,
        "resumable runs: GET /v1/runs/{{id}} of a known run must answer 200"
    );
    response
        .json()
        .expect("resumable runs: GET /v1/runs/{id} answers JSON")
}

/// `runs_resume`: see the [module docs](self).
pub fn resume(backend: &dyn Backend) -> Outcome {
    let model = GatedModel::numbered_lockstep(12);
    let gate = model.gate();
    let agent = agent_builder(backend)
        .model(model.clone())
        .build()
        .expect("agent");
    let server = Server::start_with(backend, agent, resumable_config());
    let addr = server.addr();
    let mut client = post_run(addr, "go");
    let id = run_id_of(&client);
    let mut transcript = read_deltas_lockstep(&mut client, &gate, 3);
    client.close();
    let seen = transcript.len() as u64;
    step("one more delta while nobody is connected: the run must go on and log it");
    gate.open_next();
    assert!(
        wait_until(WAIT, || status(addr, &id)["next_seq"].as_u64() > Some(seen)),
        "resumable runs: a run whose client disconnected must go on within the detach grace \
         (GET /v1/runs/{{id}} still counts {seen} events after a delta was released)"
    );
    let last = (seen - 1).to_string();
    step(format!(
        "GET /v1/runs/{id}/events with Last-Event-ID: {last}"
    ));
    let mut resumed = SseClient::request(
        addr,
        "GET",
        &format!("/v1/runs/{id}/events"),
        &[("last-event-id", &last)],
        b"",
        None,
    )
    .unwrap_or_else(|e| panic!("resumable runs: GET /v1/runs/{id}/events failed: {e}"));
    assert_eq!(
        resumed.status(),
        200,
        "resumable runs: GET /v1/runs/{{id}}/events of a live run must answer 200"
    );
    // `read_run_into` checks that the seqs go on exactly where the first connection left.
    read_run_into(&mut resumed, &mut transcript, |event| {
        if let EventKind::TextDelta { .. } = event.kind {
            gate.open_next();
        }
        ControlFlow::Continue(())
    });
    transcript.assert_contract();
    assert_eq!(
        transcript.completed_text(),
        model.full_text(),
        "resumable runs: the run resumed after a disconnect must complete with the whole \
         text\n{}",
        transcript.summary()
    );
    assert_eq!(
        transcript.text(),
        model.full_text(),
        "resumable runs: the deltas read before and after the reconnect must be the whole \
         text, each delta once\n{}",
        transcript.summary()
    );
    let done = status(addr, &id);
    assert_eq!(
        done["status"], "completed",
        "resumable runs: GET /v1/runs/{{id}} of a finished run reports it completed: {done}"
    );
    assert_eq!(
        done["result"]["text"].as_str(),
        Some(model.full_text().as_str()),
        "resumable runs: the status of a completed run carries its final result: {done}"
    );
    Outcome::passed()
}

/// `runs_cancel`: see the [module docs](self).
pub fn cancel(backend: &dyn Backend) -> Outcome {
    let model = GatedModel::numbered_lockstep(50);
    let gate = model.gate();
    let agent = agent_builder(backend)
        .model(model.clone())
        .build()
        .expect("agent");
    let server = Server::start(backend, agent);
    let addr = server.addr();
    let mut client = post_run(addr, "go");
    let id = run_id_of(&client);
    let mut transcript = read_deltas_lockstep(&mut client, &gate, 2);
    step(format!(
        "POST /v1/runs/{id}/cancel from a second connection"
    ));
    let cancelled = http_request(
        addr,
        "POST",
        &format!("/v1/runs/{id}/cancel"),
        &[],
        b"",
        WAIT,
    )
    .unwrap_or_else(|e| panic!("resumable runs: POST /v1/runs/{id}/cancel failed: {e}"));
    assert_eq!(
        cancelled.status, 200,
        "resumable runs: POST /v1/runs/{{id}}/cancel of a live run must answer 200"
    );
    let body = cancelled.json().unwrap_or_default();
    assert_eq!(
        body["status"], "cancelled",
        "resumable runs: the cancel answer reports the run cancelled: {body}"
    );
    step("the first connection's stream ends with run_cancelled");
    read_run_into(&mut client, &mut transcript, |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    assert!(
        matches!(
            transcript.terminal().map(|e| &e.kind),
            Some(EventKind::RunCancelled { .. })
        ),
        "resumable runs: a run cancelled through POST /v1/runs/{{id}}/cancel must end its \
         open stream with run_cancelled\n{}",
        transcript.summary()
    );
    assert!(
        wait_until(WAIT, || model.streams_dropped() == 1),
        "resumable runs: a cancelled run must drop its model stream"
    );
    Outcome::passed()
}

/// `runs_detach_grace`: see the [module docs](self).
pub fn detach_grace(backend: &dyn Backend) -> Outcome {
    let model = GatedModel::numbered_lockstep(50);
    let agent = agent_builder(backend)
        .model(model.clone())
        .build()
        .expect("agent");
    let config = server_config().with_run_detach_grace(Duration::from_millis(200));
    let server = Server::start_with(backend, agent, config);
    let addr = server.addr();
    let mut client = post_run(addr, "go");
    let id = run_id_of(&client);
    read_run(&mut client, |event| match event.kind {
        EventKind::TextDelta { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    client.close();
    step("waiting for the detach grace to pass and the run to be cancelled");
    assert!(
        wait_until(WAIT, || model.streams_dropped() == 1),
        "resumable runs: a run nobody came back to must be cancelled after the detach grace \
         (its model stream is still open)"
    );
    assert!(
        wait_until(WAIT, || status(addr, &id)["status"] == "cancelled"),
        "resumable runs: a run cancelled after its grace reports status cancelled: {}",
        status(addr, &id)
    );
    Outcome::passed()
}
