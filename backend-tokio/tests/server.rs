//! `TokioServer` through a raw `std::net::TcpStream` client, on both runtime flavours.

mod common;

use std::time::Duration;

use agent_core::agent::Agent;
use agent_core::model::{ScriptedModel, Turn};
use agent_core::server::ServerConfig;
use common::{Flavour, RawClient, TestServer, WATCHDOG, gated_model};
use serde_json::json;

fn scripted(texts: &[&str]) -> impl FnOnce(agent_core::runtime::SharedRuntime) -> Agent {
    let mut turn = Turn::new();
    for text in texts {
        turn = turn.text(*text);
    }
    move |rt| {
        Agent::builder()
            .model(ScriptedModel::new([turn]).with_name("scripted"))
            .runtime(rt)
            .build()
            .unwrap()
    }
}

fn healthz(flavour: Flavour) {
    let server = TestServer::start(flavour, ServerConfig::default(), scripted(&["hi"]));
    let response = RawClient::send(server.addr, "GET", "/healthz", &[], b"").unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.json(), json!({"status": "ok"}));
    server.shutdown();
}

/// Each event reaches the client before the next one exists: the model produces delta k+1
/// only after the client has read the frame of delta k. A buffering server deadlocks here
/// and the client's read times out (the watchdog), naming the delta.
fn sse_headers_and_lockstep(flavour: Flavour) {
    let (model, mut gate) = gated_model();
    let server = TestServer::start(flavour, ServerConfig::default(), |rt| {
        Agent::builder().model(model).runtime(rt).build().unwrap()
    });
    let mut client =
        RawClient::post_json(server.addr, "/v1/runs", &json!({"input": "hi"})).unwrap();
    assert_eq!(client.status, 200);
    assert_eq!(client.header("content-type"), Some("text/event-stream"));
    assert_eq!(client.header("cache-control"), Some("no-cache"));
    assert_eq!(client.header("x-accel-buffering"), Some("no"));

    // Produced before any delta is released: they must arrive on their own.
    let started = client.next_event().unwrap().expect("run_started");
    assert_eq!(started.name(), "run_started");
    assert_eq!(started.id.as_deref(), Some("0"));
    assert_eq!(started.json()["type"], "run_started");
    let request = client.next_event().unwrap().expect("model_request_started");
    assert_eq!(request.name(), "model_request_started");

    for k in 0..5 {
        let text = format!("delta {k};");
        gate.release(&text);
        let frame = client
            .next_event()
            .unwrap_or_else(|e| panic!("delta {k} was produced but its frame never arrived: {e}"))
            .expect("the stream ended early");
        assert_eq!(frame.name(), "text_delta", "{frame:?}");
        assert_eq!(frame.json()["text"], text);
        assert_eq!(frame.id.as_deref(), Some((k + 2).to_string().as_str()));
    }
    gate.finish();
    let mut names = Vec::new();
    while let Some(frame) = client.next_event().unwrap() {
        names.push(frame.name().to_string());
    }
    assert_eq!(names, ["model_request_completed", "run_completed"]);
    server.shutdown();
}

fn chat_completions_streamed(flavour: Flavour) {
    let server = TestServer::start(
        flavour,
        ServerConfig::default(),
        scripted(&["Hello", ", world"]),
    );
    let mut client = RawClient::post_json(
        server.addr,
        "/v1/chat/completions",
        &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .unwrap();
    assert_eq!(client.status, 200);
    assert_eq!(client.header("content-type"), Some("text/event-stream"));
    let mut content = String::new();
    let mut done = false;
    while let Some(frame) = client.next_event().unwrap() {
        assert!(!done, "nothing may follow [DONE]");
        if frame.data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk = frame.json();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
            content.push_str(text);
        }
    }
    assert!(done, "the stream ends with data: [DONE]");
    assert_eq!(content, "Hello, world");
    server.shutdown();
}

fn chat_completions_not_streamed(flavour: Flavour) {
    let server = TestServer::start(
        flavour,
        ServerConfig::default(),
        scripted(&["Hello", ", world"]),
    );
    let response = RawClient::post_json(
        server.addr,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello, world");
    server.shutdown();
}

fn error_status(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, serde_json::Value) {
    let response = RawClient::send(server.addr, method, path, headers, body).unwrap();
    let status = response.status;
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{method} {path}"
    );
    (status, response.json())
}

fn errors_are_json(flavour: Flavour) {
    let config = ServerConfig::default()
        .with_bearer_token("s3cret-token")
        .with_max_body_bytes(64);
    let server = TestServer::start(flavour, config, scripted(&["hi"]));
    let auth = [("Authorization", "Bearer s3cret-token")];

    let (status, body) = error_status(&server, "GET", "/nope", &auth, b"");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    let (status, body) = error_status(&server, "GET", "/v1/runs", &auth, b"");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );

    let (status, body) = error_status(&server, "POST", "/v1/runs", &auth, b"{not json");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );

    let (status, body) = error_status(&server, "POST", "/v1/runs", &[], br#"{"input":"hi"}"#);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let wrong = [("Authorization", "Bearer wrong")];
    let (status, _) = error_status(&server, "POST", "/v1/runs", &wrong, br#"{"input":"hi"}"#);
    assert_eq!(status, 401);

    let big = format!(r#"{{"input":"{}"}}"#, "x".repeat(1000));
    let (status, body) = error_status(&server, "POST", "/v1/runs", &auth, big.as_bytes());
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    // /healthz needs no token.
    let response = RawClient::send(server.addr, "GET", "/healthz", &[], b"").unwrap();
    assert_eq!(response.status, 200);
    server.shutdown();
}

/// A body over the limit sent without Content-Length (chunked) is refused while reading.
fn payload_too_large_chunked(flavour: Flavour) {
    use std::io::{Read, Write};
    let server = TestServer::start(
        flavour,
        ServerConfig::default().with_max_body_bytes(64),
        scripted(&["hi"]),
    );
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(WATCHDOG)).unwrap();
    let mut request = String::from(
        "POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..4 {
        request.push_str(&format!("20\r\n{}\r\n", "y".repeat(32)));
    }
    request.push_str("0\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
    server.shutdown();
}

/// Closing the connection mid-stream drops the response body, which cancels the run: the
/// model stream is dropped (the upstream request would be closed).
fn disconnect_cancels_run(flavour: Flavour) {
    let (model, gate) = gated_model();
    let config = ServerConfig::default().with_run_detach_grace(Duration::ZERO);
    let server = TestServer::start(flavour, config, |rt| {
        Agent::builder().model(model).runtime(rt).build().unwrap()
    });
    let mut client =
        RawClient::post_json(server.addr, "/v1/runs", &json!({"input": "hi"})).unwrap();
    assert_eq!(client.next_event().unwrap().unwrap().name(), "run_started");
    assert_eq!(
        client.next_event().unwrap().unwrap().name(),
        "model_request_started"
    );
    gate.release("first");
    assert_eq!(client.next_event().unwrap().unwrap().name(), "text_delta");
    assert_eq!(server.service.running_streams(), 1);
    assert_eq!(
        gate.drops.dropped(),
        0,
        "the model stream is alive while the client reads"
    );

    drop(client);
    assert!(
        gate.drops.wait_for(1),
        "the model stream was not dropped after the client disconnected"
    );
    let start = std::time::Instant::now();
    while server.service.running_streams() != 0 && start.elapsed() < WATCHDOG {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.service.running_streams(), 0);
    server.shutdown();
}

/// Graceful shutdown ends an open stream with `run_cancelled`, then the body ends.
fn shutdown_cancels_open_streams(flavour: Flavour) {
    let (model, gate) = gated_model();
    let mut server = TestServer::start(flavour, ServerConfig::default(), |rt| {
        Agent::builder().model(model).runtime(rt).build().unwrap()
    });
    let mut client =
        RawClient::post_json(server.addr, "/v1/runs", &json!({"input": "hi"})).unwrap();
    assert_eq!(client.next_event().unwrap().unwrap().name(), "run_started");
    assert_eq!(
        client.next_event().unwrap().unwrap().name(),
        "model_request_started"
    );
    gate.release("partial");
    assert_eq!(client.next_event().unwrap().unwrap().name(), "text_delta");

    server.begin_shutdown();
    let last = client.next_event().unwrap().expect("a terminal event");
    assert_eq!(last.name(), "run_cancelled");
    assert_eq!(last.json()["partial_text"], "partial");
    assert!(
        client.next_event().unwrap().is_none(),
        "nothing follows run_cancelled"
    );
    server.wait_stopped();
    assert!(
        std::net::TcpStream::connect(server.addr).is_err(),
        "the listener is closed after shutdown"
    );
    drop(gate);
}

/// An idle stream gets `: keep-alive` comments.
fn keep_alive_when_idle(flavour: Flavour) {
    let (model, gate) = gated_model();
    let config = ServerConfig::default().with_keep_alive(Duration::from_millis(20));
    let server = TestServer::start(flavour, config, |rt| {
        Agent::builder().model(model).runtime(rt).build().unwrap()
    });
    let mut client =
        RawClient::post_json(server.addr, "/v1/runs", &json!({"input": "hi"})).unwrap();
    let mut comments = 0;
    for _ in 0..100 {
        let frame = client.next_frame().unwrap().expect("the stream ended");
        if frame == ": keep-alive" {
            comments += 1;
            if comments == 2 {
                break;
            }
        }
    }
    assert_eq!(comments, 2, "no keep-alive comments on an idle stream");
    drop(gate);
    server.shutdown();
}

/// Sessions work across requests (`session_id`).
fn sessions_continue(flavour: Flavour) {
    let server = TestServer::start(flavour, ServerConfig::default(), |rt| {
        let model = ScriptedModel::from_fn(|request, _| {
            Turn::new().text(format!("{} messages", request.messages.len()))
        });
        Agent::builder().model(model).runtime(rt).build().unwrap()
    });
    let mut answers = Vec::new();
    for _ in 0..2 {
        let mut client = RawClient::post_json(
            server.addr,
            "/v1/runs",
            &json!({"input": "hi", "session_id": "s1"}),
        )
        .unwrap();
        let mut last = None;
        while let Some(frame) = client.next_event().unwrap() {
            last = Some(frame);
        }
        answers.push(last.unwrap().json()["text"].as_str().unwrap().to_string());
    }
    assert_eq!(answers, ["1 messages", "3 messages"]);
    server.shutdown();
}

both_flavours!(
    healthz,
    sse_headers_and_lockstep,
    chat_completions_streamed,
    chat_completions_not_streamed,
    errors_are_json,
    payload_too_large_chunked,
    disconnect_cancels_run,
    disconnect_cancels_non_streamed_chat,
    shutdown_cancels_open_streams,
    keep_alive_when_idle,
    sessions_continue,
);

/// The router nested in an existing axum app: the app's routes and the agent's, with the
/// agent's JSON 404 for unknown paths under the prefix.
#[test]
fn router_nests_in_an_axum_app() {
    let rt = common::runtime(Flavour::MultiThread);
    let agent = scripted(&["nested"])(common::shared(&rt));
    let service = agent_core::server::AgentService::new(agent, ServerConfig::default());
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "home" }))
        .nest("/agent", backend_tokio::router(service));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = rt.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });

    let home = RawClient::send(addr, "GET", "/", &[], b"").unwrap();
    assert_eq!(home.status, 200);
    assert_eq!(home.body().unwrap(), b"home");
    let health = RawClient::send(addr, "GET", "/agent/healthz", &[], b"").unwrap();
    assert_eq!(health.json(), json!({"status": "ok"}));
    let (status, body) = {
        let r = RawClient::send(addr, "GET", "/agent/nope", &[], b"").unwrap();
        (r.status, r.json())
    };
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let mut run = RawClient::post_json(addr, "/agent/v1/runs", &json!({"input": "hi"})).unwrap();
    let mut last = None;
    while let Some(frame) = run.next_event().unwrap() {
        last = Some(frame);
    }
    assert_eq!(last.unwrap().json()["text"], "nested");

    let _ = stop_tx.send(());
    rt.block_on(async { tokio::time::timeout(WATCHDOG, serving).await })
        .expect("axum stopped")
        .unwrap()
        .unwrap();
}

/// A client that leaves while waiting for a non-streamed chat completion cancels its run.
fn disconnect_cancels_non_streamed_chat(flavour: Flavour) {
    let (model, gate) = gated_model();
    let server = TestServer::start(flavour, ServerConfig::default(), |rt| {
        Agent::builder().model(model).runtime(rt).build().unwrap()
    });
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    let body = json!({"messages": [{"role": "user", "content": "hi"}]}).to_string();
    std::io::Write::write_all(
        &mut stream,
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let start = std::time::Instant::now();
    while server.service.running_streams() != 1 && start.elapsed() < WATCHDOG {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.service.running_streams(), 1, "the run started");
    gate.release("partial");
    drop(stream);
    assert!(
        gate.drops.wait_for(1),
        "the model stream was not dropped after the client disconnected"
    );
    server.shutdown();
}

/// `sse_response` in an axum route of one's own: the frames, headers and lockstep delivery
/// of `POST /v1/runs`, and dropping the response (the client left) cancels the run.
#[test]
fn sse_response_in_a_route_of_ones_own_streams_like_v1_runs() {
    let rt = common::runtime(Flavour::MultiThread);
    let (model, gate) = gated_model();
    let agent = Agent::builder()
        .model(model)
        .runtime(common::shared(&rt))
        .build()
        .unwrap();
    #[derive(serde::Deserialize)]
    struct Ask {
        q: String,
    }
    let app = axum::Router::new().route(
        "/ask",
        axum::routing::get(
            move |axum::extract::Query(ask): axum::extract::Query<Ask>| {
                let run = agent.run(ask.q);
                async move { backend_tokio::sse_response(run) }
            },
        ),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });

    let mut client = RawClient::send(addr, "GET", "/ask?q=hi", &[], b"").unwrap();
    assert_eq!(client.status, 200);
    assert_eq!(client.header("content-type"), Some("text/event-stream"));
    assert_eq!(client.header("x-accel-buffering"), Some("no"));
    assert_eq!(client.header("cache-control"), Some("no-cache"));
    assert!(
        client
            .header("x-run-id")
            .is_some_and(|id| id.starts_with("run_"))
    );
    let first = client.next_event().unwrap().unwrap();
    assert_eq!(
        (first.name(), first.json()["input"].as_str()),
        ("run_started", Some("hi"))
    );
    assert_eq!(
        client.next_event().unwrap().unwrap().name(),
        "model_request_started"
    );
    // Lockstep: each delta is read before the next exists.
    for word in ["one", "two", "three"] {
        gate.release(word);
        let frame = client.next_event().unwrap().unwrap();
        assert_eq!(
            (frame.name(), frame.json()["text"].as_str()),
            ("text_delta", Some(word))
        );
    }
    drop(client);
    assert!(
        gate.drops.wait_for(1),
        "dropping the response cancels the run (its model stream is dropped)"
    );
}
