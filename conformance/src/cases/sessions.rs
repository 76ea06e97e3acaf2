//! Reliability 10 on every backend: sessions are bounded in bytes, one by one and all
//! together, over the HTTP API.
//!
//! | what the client does | what it sees |
//! |---|---|
//! | many runs of a big input in one session | every run streams; the model is given only the newest exchanges that fit `max_session_bytes` |
//! | a session run whose input alone exceeds `max_session_bytes` | `413` JSON error `session_turn_too_large`, no run started |
//! | many sessions over `max_total_session_bytes` | the least recently used are forgotten (their id starts afresh); the newest keep their history |

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agent_core::agent::message_bytes;
use agent_core::model::{ScriptedModel, Turn};
use serde_json::json;

use super::Outcome;
use super::support::{Server, agent_builder, server_config};
use crate::backend::Backend;
use crate::kit::client::http_request;
use crate::kit::watchdog::step;

const SESSION_BYTES: usize = 64 * 1024;
const TOTAL_BYTES: usize = 200 * 1024;
const INPUT_BYTES: usize = 20 * 1024;

/// Reliability 10: `max_session_bytes` and `max_total_session_bytes` hold over HTTP.
pub fn session_bounds(backend: &dyn Backend) -> Outcome {
    let calls = Arc::new(AtomicUsize::new(0));
    let last_request = Arc::new(AtomicUsize::new(0));
    let last_messages = Arc::new(AtomicUsize::new(0));
    let (c, l, m) = (calls.clone(), last_request.clone(), last_messages.clone());
    let model = ScriptedModel::from_fn(move |request, _| {
        c.fetch_add(1, Ordering::SeqCst);
        l.store(
            request.messages.iter().map(message_bytes).sum(),
            Ordering::SeqCst,
        );
        m.store(request.messages.len(), Ordering::SeqCst);
        Turn::new().text("ok")
    });
    let agent = agent_builder(backend).model(model).build().expect("agent");
    let config = server_config()
        .with_max_session_bytes(SESSION_BYTES)
        .with_max_total_session_bytes(TOTAL_BYTES);
    let server = Server::start_with(backend, agent, config);
    let addr = server.addr();
    let timeout = Duration::from_secs(10);
    let run = |session: &str, input: &str| {
        let body = json!({"input": input, "session_id": session}).to_string();
        http_request(
            addr,
            "POST",
            "/v1/runs",
            &[("content-type", "application/json")],
            body.as_bytes(),
            timeout,
        )
        .unwrap_or_else(|e| panic!("session bounds: POST /v1/runs failed: {e}"))
    };
    let completed = |what: &str, response: &crate::kit::RawResponse| {
        assert_eq!(
            response.status, 200,
            "session bounds: {what} must stream (200)"
        );
        assert!(
            String::from_utf8_lossy(&response.body).contains("event: run_completed"),
            "session bounds: {what} must end with run_completed"
        );
    };

    step("30 runs of 20 KiB in one session");
    let input = "x".repeat(INPUT_BYTES);
    let mut largest = 0;
    for i in 0..30 {
        completed(&format!("session run {i}"), &run("s1", &input));
        largest = largest.max(last_request.load(Ordering::SeqCst));
    }
    assert!(
        largest <= SESSION_BYTES + INPUT_BYTES + 1024,
        "session bounds: a session's history must stay within max_session_bytes \
         ({SESSION_BYTES}); the model was given {largest} bytes"
    );
    assert!(
        last_messages.load(Ordering::SeqCst) > 1,
        "session bounds: the newest exchanges that fit must be kept"
    );

    step("a session input larger than max_session_bytes");
    let before = calls.load(Ordering::SeqCst);
    let refused = run("s1", &"y".repeat(SESSION_BYTES + 1));
    assert_eq!(
        refused.status, 413,
        "session bounds: an input that cannot fit a session must be refused with 413"
    );
    let body = refused.json().unwrap_or_default();
    assert_eq!(
        body["error"]["code"], "session_turn_too_large",
        "session bounds: the 413 must be the JSON error session_turn_too_large, got {body}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "session bounds: no run may start for a refused session input"
    );

    step("20 sessions of 40 KiB (over the 200 KiB total)");
    for i in 0..20 {
        let session = format!("t{i}");
        completed("a session's first run", &run(&session, &input));
        completed("a session's second run", &run(&session, &input));
    }
    completed("the newest session again", &run("t19", "again"));
    assert_eq!(
        last_messages.load(Ordering::SeqCst),
        5,
        "session bounds: the most recently used session must keep its history"
    );
    completed("the oldest session again", &run("t0", "again"));
    assert_eq!(
        last_messages.load(Ordering::SeqCst),
        1,
        "session bounds: beyond max_total_session_bytes the least recently used session \
         must be forgotten"
    );
    Outcome::passed()
        .note(format!(
            "largest session request {largest} bytes (bound {SESSION_BYTES})"
        ))
        .measure("largest_session_request_bytes", largest as f64)
}
