//! Case 10 (explicitly; every other case checks it too) and the HTTP API basics every
//! backend's server must get right.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::time::Duration;

use agent_core::error::{ErrorKind, ModelError};
use agent_core::event::EventKind;
use agent_core::model::{ScriptedModel, Turn};
use agent_core::tool::async_tool;
use serde_json::{Value, json};

use super::Outcome;
use super::support::{Server, WAIT, agent_builder, consume, post_run, read_run, server_config};
use crate::backend::Backend;
use crate::kit::client::http_request;
use crate::kit::watchdog::step;
use crate::kit::{SseClient, Transcript};

fn contract_agent(backend: &dyn Backend) -> agent_core::agent::Agent {
    agent_builder(backend)
        .model(ScriptedModel::from_fn(|request, _| {
            match request.last_user_text().unwrap_or("") {
                "fail" => Turn::new()
                    .text("partial")
                    .fail(ModelError::new(ErrorKind::Model, "scripted failure")),
                "tool" => Turn::new().tool_call("call_1", "echo", r#"{"x": 1}"#),
                _ => Turn::new().text("Hello").text(" there"),
            }
        }))
        .tool(async_tool(
            "echo",
            "Echoes",
            json!({"type": "object"}),
            |args: Value| async move { Ok(args) },
        ))
        .max_rounds(2)
        .build()
        .expect("agent")
}

/// Case 10a: runs that complete, fail and run out of rounds, one after another on the same
/// agent: each numbers its events from 0 without gaps and ends with exactly one terminal
/// event; run ids differ.
pub fn consume_runs(backend: &dyn Backend) -> Outcome {
    let agent = contract_agent(backend);
    let mut run_ids = HashSet::new();
    for (input, terminal) in [
        ("hello", "run_completed"),
        ("fail", "run_failed"),
        ("tool", "run_failed"),
        ("hello", "run_completed"),
    ] {
        step(format!("running {input:?}"));
        let transcript = consume(backend, &agent, input, |_| ControlFlow::Continue(()));
        transcript.assert_contract();
        let last = transcript.terminal().expect("terminal");
        assert_eq!(
            last.name(),
            terminal,
            "event contract through consume: the run must end with {terminal}\n{}",
            transcript.summary()
        );
        if let EventKind::RunStarted { run_id, .. } = &transcript.events()[0].kind {
            assert!(
                run_ids.insert(run_id.clone()),
                "event contract: every run needs its own run id; {run_id} was reused"
            );
        }
    }
    Outcome::passed()
}

/// Case 10b: the server's `/v1/runs` frames carry `id` = seq and `event` = type, a
/// completed and a failed run each end with one terminal frame and then the body ends, and
/// the SSE headers are set.
pub fn server_frames(backend: &dyn Backend) -> Outcome {
    let server = Server::start(backend, contract_agent(backend));
    for (input, terminal) in [("hello", "run_completed"), ("fail", "run_failed")] {
        let mut client = post_run(server.addr(), input);
        assert_eq!(
            client.header("cache-control"),
            Some("no-cache"),
            "server frames: a /v1/runs event stream must carry Cache-Control: no-cache"
        );
        assert_eq!(
            client.header("x-accel-buffering"),
            Some("no"),
            "server frames: a /v1/runs event stream must carry X-Accel-Buffering: no"
        );
        let transcript: Transcript = read_run(&mut client, |_| ControlFlow::Continue(()));
        transcript.assert_contract();
        assert_eq!(
            transcript.terminal().map(|e| e.name()),
            Some(terminal),
            "server frames: the /v1/runs stream must end with {terminal}\n{}",
            transcript.summary()
        );
    }
    Outcome::passed()
}

/// The HTTP API basics: `/healthz`, 404, 405, 400 on bad JSON, 413 on a body over the limit
/// (while reading it), 401 without the bearer token, and a non-streamed chat completion.
pub fn server_requests(backend: &dyn Backend) -> Outcome {
    let config = server_config()
        .with_max_body_bytes(1024)
        .with_bearer_token("conformance-token");
    let server = Server::start_with(backend, contract_agent(backend), config);
    let addr = server.addr();
    let auth = [("authorization", "Bearer conformance-token")];
    let timeout = Duration::from_secs(5);
    let json_error = |what: &str, response: &crate::kit::RawResponse, status: u16| {
        assert_eq!(
            response.status, status,
            "server requests: {what} must be answered {status}"
        );
        let body = response.json().unwrap_or_else(|| {
            panic!(
                "server requests: the answer to {what} must be a JSON error, the body is not \
                 JSON: {:?}",
                String::from_utf8_lossy(&response.body)
            )
        });
        assert!(
            body["error"]["message"].is_string(),
            "server requests: the answer to {what} must be {{\"error\": {{\"message\": ...}}}}; \
             got {body}"
        );
    };

    step("GET /healthz");
    let health = http_request(addr, "GET", "/healthz", &[], b"", timeout).expect("GET /healthz");
    assert_eq!(
        health.status, 200,
        "server requests: GET /healthz must be answered 200"
    );
    assert_eq!(
        health.json(),
        Some(json!({"status": "ok"})),
        "server requests: GET /healthz must answer {{\"status\": \"ok\"}}"
    );

    step("GET /nope");
    let missing = http_request(addr, "GET", "/nope", &auth, b"", timeout).expect("GET /nope");
    json_error("GET /nope", &missing, 404);

    step("GET /v1/runs");
    let wrong_method =
        http_request(addr, "GET", "/v1/runs", &auth, b"", timeout).expect("GET /v1/runs");
    json_error("GET /v1/runs", &wrong_method, 405);
    assert_eq!(
        wrong_method.header("allow"),
        Some("POST, OPTIONS"),
        "server requests: a 405 must name the allowed methods in `Allow` (RFC 9110)"
    );

    step("HEAD /healthz");
    let head = http_request(addr, "HEAD", "/healthz", &[], b"", timeout).expect("HEAD /healthz");
    assert_eq!(
        (head.status, head.body.len()),
        (200, 0),
        "server requests: HEAD must work where GET does, answering without a body"
    );
    let post_health =
        http_request(addr, "POST", "/healthz", &auth, b"", timeout).expect("POST /healthz");
    json_error("POST /healthz", &post_health, 405);
    assert_eq!(
        post_health.header("allow"),
        Some("GET, HEAD, OPTIONS"),
        "server requests: a 405 must name the allowed methods in `Allow` (RFC 9110)"
    );

    step("the auth scheme in any case");
    for scheme in ["BEARER", "bEaReR"] {
        let value = format!("{scheme} conformance-token");
        let answered = http_request(
            addr,
            "POST",
            "/v1/chat/completions",
            &[
                ("content-type", "application/json"),
                ("authorization", &value),
            ],
            json!({"messages": [{"role": "user", "content": "hi"}]})
                .to_string()
                .as_bytes(),
            timeout,
        )
        .expect("POST with the scheme in another case");
        assert_eq!(
            answered.status, 200,
            "server requests: the auth scheme is case-insensitive (RFC 9110 §11.1): `{scheme} <token>` must be accepted"
        );
    }

    step("POST /v1/runs without a token");
    let anonymous = http_request(
        addr,
        "POST",
        "/v1/runs",
        &[("content-type", "application/json")],
        br#"{"input":"hi"}"#,
        timeout,
    )
    .expect("POST without token");
    json_error("POST /v1/runs without a token", &anonymous, 401);

    step("POST /v1/runs with invalid JSON");
    let bad_json = http_request(
        addr,
        "POST",
        "/v1/runs",
        &[auth[0], ("content-type", "application/json")],
        b"{nope",
        timeout,
    )
    .expect("bad JSON");
    json_error("POST /v1/runs with invalid JSON", &bad_json, 400);

    step("POST /v1/runs with a body over the limit (declared 64 KiB, 2 KiB sent)");
    let stream = std::net::TcpStream::connect(addr).expect("connect");
    let mut request = format!(
        "POST /v1/runs HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer conformance-token\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        64 * 1024
    )
    .into_bytes();
    request.extend(std::iter::repeat_n(b' ', 2048));
    let too_large = SseClient::send_raw(stream, &request).unwrap_or_else(|e| {
        panic!("a body over the limit must get a 413 before it is read whole: {e}")
    });
    let status = too_large.status();
    let body = too_large.read_body(timeout).unwrap_or_default();
    let response = crate::kit::RawResponse {
        status,
        headers: Vec::new(),
        body,
    };
    json_error("POST /v1/runs over the body limit", &response, 413);

    step("POST /v1/runs with a chunked body over the limit (2 KiB sent, the body never ends)");
    let stream = std::net::TcpStream::connect(addr).expect("connect");
    let mut request = format!(
        "POST /v1/runs HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer conformance-token\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..4 {
        request.extend_from_slice(b"200\r\n");
        request.extend(std::iter::repeat_n(b' ', 512));
        request.extend_from_slice(b"\r\n");
    }
    let too_large = SseClient::send_raw(stream, &request).unwrap_or_else(|e| {
        panic!("a chunked body over the limit must get a 413 before it ends: {e}")
    });
    let status = too_large.status();
    let body = too_large.read_body(timeout).unwrap_or_default();
    let response = crate::kit::RawResponse {
        status,
        headers: Vec::new(),
        body,
    };
    json_error(
        "POST /v1/runs with a chunked body over the limit",
        &response,
        413,
    );

    step("POST /v1/chat/completions with stream: false");
    let chat = http_request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[auth[0], ("content-type", "application/json")],
        json!({"stream": false, "messages": [{"role": "user", "content": "hello"}]})
            .to_string()
            .as_bytes(),
        WAIT,
    )
    .expect("chat completion");
    assert_eq!(
        chat.status, 200,
        "server requests: a non-streamed chat completion must be answered 200"
    );
    let body = chat.json().expect("chat completion JSON");
    assert_eq!(
        body["choices"][0]["message"]["content"], "Hello there",
        "server requests: a non-streamed chat completion must carry the whole answer in \
         choices[0].message.content; got {body}"
    );
    Outcome::passed()
}

/// Browsers: with `allowed_origins = ["https://app.example"]`, a preflight from that origin
/// is answered per the Fetch spec and its requests carry the CORS headers; a request from
/// any other origin gets `403` before a run starts; a run-starting request that is not
/// `application/json` (a cross-site form post needs no preflight) gets `415`.
pub fn server_cors(backend: &dyn Backend) -> Outcome {
    let config = server_config().with_allowed_origins(["https://app.example"]);
    let server = Server::start_with(backend, contract_agent(backend), config);
    let addr = server.addr();
    let timeout = Duration::from_secs(5);

    step("OPTIONS /v1/runs: a preflight from the allowed origin");
    let preflight = http_request(
        addr,
        "OPTIONS",
        "/v1/runs",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ],
        b"",
        timeout,
    )
    .expect("OPTIONS /v1/runs");
    assert_eq!(
        (
            preflight.status,
            preflight.header("access-control-allow-origin")
        ),
        (204, Some("https://app.example")),
        "cors: a preflight from an allowed origin must be answered 204 with Access-Control-Allow-Origin; headers {:?}",
        preflight.headers
    );
    let allow_origins = preflight
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("access-control-allow-origin"))
        .count();
    assert_eq!(
        allow_origins, 1,
        "cors: a preflight answer must carry Access-Control-Allow-Origin exactly once (a \
         browser refuses two); headers {:?}",
        preflight.headers
    );
    assert!(
        preflight
            .header("access-control-allow-headers")
            .is_some_and(|h| h.contains("content-type")),
        "cors: the preflight must allow the content-type header; headers {:?}",
        preflight.headers
    );

    step("POST /v1/runs from the allowed origin");
    let allowed = http_request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("origin", "https://app.example"),
            ("content-type", "application/json"),
        ],
        json!({"messages": [{"role": "user", "content": "hello"}]})
            .to_string()
            .as_bytes(),
        WAIT,
    )
    .expect("POST from the allowed origin");
    assert_eq!(
        (
            allowed.status,
            allowed.header("access-control-allow-origin")
        ),
        (200, Some("https://app.example")),
        "cors: an allowed origin's request must succeed with Access-Control-Allow-Origin; headers {:?}",
        allowed.headers
    );

    step("POST /v1/runs from another origin");
    let refused = http_request(
        addr,
        "POST",
        "/v1/runs",
        &[
            ("origin", "https://evil.example"),
            ("content-type", "application/json"),
        ],
        br#"{"input":"hi"}"#,
        timeout,
    )
    .expect("POST from another origin");
    assert_eq!(
        refused.status, 403,
        "cors: a request from an origin that is not allowed must get 403 before a run starts"
    );

    step("POST /v1/runs as text/plain (a form post needs no preflight)");
    let plain = http_request(
        addr,
        "POST",
        "/v1/runs",
        &[("content-type", "text/plain")],
        br#"{"input":"hi"}"#,
        timeout,
    )
    .expect("POST text/plain");
    assert_eq!(
        plain.status, 415,
        "cors: a run-starting request that is not application/json must get 415"
    );
    if let Some(running) = server.running_streams() {
        assert_eq!(
            running, 0,
            "cors: no run may have started for the refused requests"
        );
    }
    Outcome::passed()
}
