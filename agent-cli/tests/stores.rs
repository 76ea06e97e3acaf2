//! `agent serve` with its stores, as processes, on every runtime: a SQLite file continues a
//! session across restarts (blocking, then tokio, then smol) and fails the run a killed
//! process left running; processes on one PostgreSQL (tokio, smol, blocking) continue each
//! other's sessions, resume and cancel each other's runs, and fail the runs of a killed
//! instance once its lease ran out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agent_core::event::{Event, EventKind};
use conformance::kit::client::{SseClient, http_request};
use conformance::kit::upstream::{GatedUpstream, Response, openai};
use serde_json::{Value, json};

mod support;

use support::{Served, agent};

const WAIT: Duration = Duration::from_secs(15);

/// `agent serve` on `upstream` with the store its flags or `env` name (not memory).
fn start_serve(upstream: &GatedUpstream, extra: &[&str], env: &[(&str, &str)]) -> Served {
    let mut command = agent();
    command
        .env_remove("AGENT_STORE")
        .args(["serve", "--addr", "127.0.0.1:0", "--base-url"])
        .arg(upstream.base_url())
        .args(["--model", "m", "--log", "warn"])
        .args(extra);
    for (k, v) in env {
        command.env(k, v);
    }
    Served::start(&mut command, WAIT)
}

fn session_turn(addr: SocketAddr, session: &str, input: &str) -> Vec<Event> {
    let body = json!({"input": input, "session_id": session});
    let mut client = SseClient::post_json(addr, "/v1/runs", &body, &[])
        .unwrap_or_else(|e| panic!("POST /v1/runs: {e}"));
    assert_eq!(client.status(), 200, "a session turn streams");
    read_to_end(&mut client)
}

fn read_to_end(client: &mut SseClient) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(frame) = client
        .next_event(WAIT)
        .unwrap_or_else(|e| panic!("a frame within {WAIT:?}: {e}"))
    {
        events.push(serde_json::from_str::<Event>(&frame.data).expect("an event"));
    }
    events
}

fn read_until_deltas(client: &mut SseClient, n: usize, mut on_delta: impl FnMut()) -> Vec<Event> {
    let mut events = Vec::new();
    let mut deltas = 0;
    while deltas < n {
        let frame = client
            .next_event(WAIT)
            .unwrap_or_else(|e| panic!("a frame within {WAIT:?}: {e}"))
            .expect("the run goes on");
        let event: Event = serde_json::from_str(&frame.data).expect("an event");
        if let EventKind::TextDelta { .. } = event.kind {
            deltas += 1;
            if deltas < n {
                on_delta();
            }
        }
        events.push(event);
    }
    events
}

fn status(addr: SocketAddr, id: &str) -> Value {
    let response = http_request(addr, "GET", &format!("/v1/runs/{id}"), &[], b"", WAIT)
        .unwrap_or_else(|e| panic!("GET /v1/runs/{id}: {e}"));
    assert_eq!(response.status, 200, "GET /v1/runs/{id}");
    response.json().expect("JSON")
}

fn wait_for_status(addr: SocketAddr, id: &str, want: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let now = status(addr, id);
        if now["status"] == want {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "run {id} did not become {want} within {within:?}: {now}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn user_messages(request: &Value) -> Vec<String> {
    request["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| m["role"] != "system")
                .map(|m| {
                    format!(
                        "{}: {}",
                        m["role"].as_str().unwrap_or(""),
                        m["content"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn run_id(events: &[Event]) -> String {
    match &events.first().map(|e| &e.kind) {
        Some(EventKind::RunStarted { run_id, .. }) => run_id.clone(),
        other => panic!("the first event is run_started: {other:?}"),
    }
}

fn stall() -> Response {
    Response::sse()
        .send(openai::text_chunk("partial "))
        .wait_gate(1_000_000, "the test to kill the server")
}

#[test]
fn sqlite_continues_a_session_across_a_restart_and_fails_the_run_a_killed_process_left() {
    let data = std::env::temp_dir().join(format!("agent-cli-sqlite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let env = [("XDG_DATA_HOME", data.to_str().expect("utf-8 path"))];
    let upstream = GatedUpstream::start([
        openai::answer(&["Hi Ada."]),
        stall(),
        openai::answer(&["You are Ada."]),
        openai::answer(&["Still Ada."]),
    ])
    .expect("the upstream starts");
    let serve = start_serve(&upstream, &["--runtime", "blocking"], &env);
    let first = session_turn(serve.addr, "s1", "I am Ada.");
    assert!(
        matches!(
            first.last().map(|e| &e.kind),
            Some(EventKind::RunCompleted { .. })
        ),
        "the first turn completes: {first:?}"
    );
    let mut running = SseClient::post_json(serve.addr, "/v1/runs", &json!({"input": "stall"}), &[])
        .expect("POST /v1/runs");
    let events = read_until_deltas(&mut running, 1, || {});
    let stalled = run_id(&events);
    assert!(
        data.join("agent/agent.db").exists(),
        "the default store is $XDG_DATA_HOME/agent/agent.db"
    );
    serve.kill();

    let serve = start_serve(&upstream, &["--runtime", "tokio"], &env);
    let failed = status(serve.addr, &stalled);
    assert_eq!(
        failed["status"], "failed",
        "a run left running by a killed process is failed on restart: {failed}"
    );
    assert_eq!(
        failed["result"]["error"]["kind"], "instance_lost",
        "its result names the lost instance: {failed}"
    );
    let replay = http_request(
        serve.addr,
        "GET",
        &format!("/v1/runs/{stalled}/events"),
        &[],
        b"",
        WAIT,
    )
    .expect("GET events");
    let body = String::from_utf8_lossy(&replay.body);
    assert!(
        body.contains("event: text_delta") && body.contains("event: run_failed"),
        "the stored events of the killed run end with run_failed: {body}"
    );
    let second = session_turn(serve.addr, "s1", "Who am I?");
    assert!(
        matches!(
            second.last().map(|e| &e.kind),
            Some(EventKind::RunCompleted { .. })
        ),
        "the second turn completes: {second:?}"
    );
    let requests = upstream.requests();
    let last = requests
        .last()
        .and_then(|r| r.json())
        .expect("a JSON request");
    assert_eq!(
        user_messages(&last),
        vec!["user: I am Ada.", "assistant: Hi Ada.", "user: Who am I?"],
        "after the restart the session continues where it stopped"
    );
    serve.kill();

    // Every runtime reads the same file: a third process, on smol, continues the session.
    let serve = start_serve(&upstream, &["--runtime", "smol"], &env);
    let third = session_turn(serve.addr, "s1", "And now?");
    assert!(
        matches!(
            third.last().map(|e| &e.kind),
            Some(EventKind::RunCompleted { .. })
        ),
        "the third turn completes: {third:?}"
    );
    let last = upstream
        .requests()
        .last()
        .and_then(|r| r.json())
        .expect("a JSON request");
    assert_eq!(
        user_messages(&last),
        vec![
            "user: I am Ada.",
            "assistant: Hi Ada.",
            "user: Who am I?",
            "assistant: You are Ada.",
            "user: And now?"
        ],
        "a smol process continues the session the blocking and tokio ones wrote"
    );
    drop(serve);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn two_instances_on_postgres_share_sessions_resume_and_cancel_runs_and_fail_a_killed_instances_run()
{
    let Some(url) = test_support::stores::postgres_url() else {
        return;
    };
    let database = test_support::stores::PostgresDatabase::create(&url);
    let deltas: Vec<String> = (0..30).map(|k| format!("d{k:02} ")).collect();
    let upstream = GatedUpstream::start([
        openai::answer(&["Hi Ada."]),
        openai::answer(&["You are Ada."]),
        openai::answer(&["Still Ada."]),
        openai::lockstep_answer(&deltas),
        stall(),
    ])
    .expect("the upstream starts");
    let gate = upstream.gate();
    let store = format!("--store={}", database.url());
    let a = start_serve(
        &upstream,
        &[
            &store,
            "--runtime",
            "tokio",
            "--run-lease",
            "2s",
            "--run-detach-grace",
            "60s",
        ],
        &[],
    );
    let b = start_serve(
        &upstream,
        &[
            &store,
            "--runtime",
            "smol",
            "--run-lease",
            "2s",
            "--run-detach-grace",
            "60s",
        ],
        &[],
    );

    // A session continued across instances.
    session_turn(a.addr, "s1", "I am Ada.");
    session_turn(b.addr, "s1", "Who am I?");
    let second = upstream.requests()[1].json().expect("a JSON request");
    assert_eq!(
        user_messages(&second),
        vec!["user: I am Ada.", "assistant: Hi Ada.", "user: Who am I?"],
        "B continues the session A started"
    );
    // A third instance, on the blocking runtime, continues it too.
    let c = start_serve(
        &upstream,
        &[&store, "--runtime", "blocking", "--run-lease", "2s"],
        &[],
    );
    session_turn(c.addr, "s1", "And now?");
    let third = upstream.requests()[2].json().expect("a JSON request");
    assert_eq!(
        user_messages(&third),
        vec![
            "user: I am Ada.",
            "assistant: Hi Ada.",
            "user: Who am I?",
            "assistant: You are Ada.",
            "user: And now?"
        ],
        "C (blocking) continues the session A (tokio) and B (smol) wrote"
    );
    drop(c);

    // A run on A, resumed and cancelled through B while it runs on A.
    let mut on_a = SseClient::post_json(a.addr, "/v1/runs", &json!({"input": "go"}), &[])
        .expect("POST /v1/runs on A");
    let id = on_a.header("x-run-id").expect("x-run-id").to_string();
    let mut transcript = read_until_deltas(&mut on_a, 3, || {
        gate.open_next();
    });
    on_a.close();
    let last = transcript.last().expect("events").seq.to_string();
    let mut on_b = SseClient::request(
        b.addr,
        "GET",
        &format!("/v1/runs/{id}/events"),
        &[("last-event-id", &last)],
        b"",
        None,
    )
    .expect("GET /v1/runs/{id}/events on B");
    assert_eq!(on_b.status(), 200, "B streams A's run");
    gate.open_next();
    transcript.extend(read_until_deltas(&mut on_b, 3, || {
        gate.open_next();
    }));
    let cancelled = http_request(
        b.addr,
        "POST",
        &format!("/v1/runs/{id}/cancel"),
        &[],
        b"",
        WAIT,
    )
    .expect("POST cancel on B");
    let answer = cancelled.json().unwrap_or_default();
    assert!(
        cancelled.status == 200 && answer["status"] == "cancelled",
        "cancelling through B: {} {answer}",
        cancelled.status
    );
    transcript.extend(read_to_end(&mut on_b));
    let seqs: Vec<u64> = transcript.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "no event lost or repeated across the instances"
    );
    assert!(
        matches!(
            transcript.last().map(|e| &e.kind),
            Some(EventKind::RunCancelled { .. })
        ),
        "the run ends cancelled: {transcript:?}"
    );
    let text: String = transcript
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, deltas[..6].concat(), "each delta once, in order");
    assert_eq!(status(a.addr, &id)["status"], "cancelled", "A agrees");

    // A killed instance's run is failed by the other once its lease ran out.
    let mut stalled = SseClient::post_json(a.addr, "/v1/runs", &json!({"input": "stall"}), &[])
        .expect("POST /v1/runs on A");
    let stalled_id = stalled.header("x-run-id").expect("x-run-id").to_string();
    read_until_deltas(&mut stalled, 1, || {});
    assert_eq!(
        status(b.addr, &stalled_id)["status"],
        "running",
        "B sees it running"
    );
    a.kill();
    let failed = wait_for_status(b.addr, &stalled_id, "failed", Duration::from_secs(20));
    assert_eq!(
        failed["result"]["error"]["kind"], "instance_lost",
        "the lost instance's run is failed with kind instance_lost: {failed}"
    );
    let lines = b.lines();
    assert!(
        !lines
            .iter()
            .any(|l| database.url().contains('@') && l.contains(database.url())),
        "the DSN is not logged: {lines:?}"
    );
}
