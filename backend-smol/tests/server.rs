//! `SmolServer` over raw sockets: routing, SSE framing and headers, per-event flush
//! (lockstep), errors, disconnects, keep-alives and graceful shutdown — on smol's global
//! executor and on an executor driven by a single thread.

mod common;

use std::time::Duration;

use agent_core::agent::Agent;
use agent_core::model::{Model, ScriptedModel, Turn};
use agent_core::server::ServerConfig;
use backend_smol::{SmolRuntime, SmolServer};
use common::{GatedModel, RawClient, SingleThread, exchange, split_response, wait_until};

/// Where the server's tasks run.
enum Setup {
    Global,
    Single(SingleThread),
}

impl Setup {
    fn runtime(&self) -> SmolRuntime {
        match self {
            Setup::Global => SmolRuntime::global(),
            Setup::Single(single) => single.runtime.clone(),
        }
    }
}

fn setups() -> Vec<(&'static str, Setup)> {
    vec![
        ("global", Setup::Global),
        ("single thread", Setup::Single(SingleThread::start())),
    ]
}

/// No detach grace: a client leaving cancels its run at once (what these tests check).
fn config() -> ServerConfig {
    ServerConfig::default()
        .with_addr("127.0.0.1:0".parse().unwrap())
        .with_run_detach_grace(std::time::Duration::ZERO)
}

fn serve(setup: &Setup, model: impl Model, config: ServerConfig) -> SmolServer {
    let agent = Agent::builder()
        .model(model)
        .runtime(setup.runtime().shared())
        .build()
        .unwrap();
    SmolServer::bind(agent, config).unwrap()
}

fn shutdown(server: SmolServer) {
    assert!(
        agent_core::runtime::block_on(server.shutdown_within(common::WATCHDOG)),
        "the server did not stop in time"
    );
}

fn hello() -> ScriptedModel {
    ScriptedModel::new([Turn::new().text("Hello, ").text("world!")])
}

#[test]
fn healthz_answers_json() {
    for (name, setup) in setups() {
        let server = serve(&setup, hello(), config());
        let answer = exchange(
            server.local_addr(),
            "GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
        );
        let (status, head, body) = split_response(&answer);
        assert_eq!(status, 200, "{name}: {answer}");
        assert!(
            head.contains("content-type: application/json"),
            "{name}: {head}"
        );
        assert_eq!(body, r#"{"status":"ok"}"#, "{name}");
        shutdown(server);
    }
}

#[test]
fn runs_stream_as_server_sent_events() {
    for (name, setup) in setups() {
        let server = serve(&setup, hello(), config());
        let mut client = RawClient::connect(server.local_addr());
        client.post("/v1/runs", "connection: close\r\n", r#"{"input":"hi"}"#);
        client.read_to_end();
        let (status, head, body) = split_response(&client.text());
        assert_eq!(status, 200, "{name}");
        for header in [
            "content-type: text/event-stream",
            "cache-control: no-cache",
            "x-accel-buffering: no",
            "transfer-encoding: chunked",
        ] {
            assert!(head.contains(header), "{name}: missing {header} in {head}");
        }
        assert!(
            body.contains("id: 0\nevent: run_started\ndata: {"),
            "{name}: {body}"
        );
        assert!(body.contains("event: text_delta"), "{name}: {body}");
        assert!(body.contains("event: run_completed"), "{name}: {body}");
        assert!(
            body.ends_with("\r\n0\r\n\r\n"),
            "{name}: the chunked body must end properly: {body:?}"
        );
        shutdown(server);
    }
}

/// Event k reaches the client before the model is allowed to produce event k+1: any
/// buffering between the run and the socket would deadlock here and trip the watchdog.
#[test]
fn every_event_is_flushed_before_the_next_is_produced() {
    for (name, setup) in setups() {
        let model = GatedModel::new(5);
        let gate = model.gate.clone();
        let server = serve(&setup, model, config());
        let mut client = RawClient::connect(server.local_addr());
        client.post("/v1/runs", "", r#"{"input":"go"}"#);
        client.read_until("event: run_started", &format!("{name}: run_started"));
        for k in 0..5 {
            gate.release(k + 1);
            client.read_until(
                &format!("tok{k} "),
                &format!("{name}: the text delta of token {k}"),
            );
            assert_eq!(
                gate.produced(),
                k + 1,
                "{name}: token {k} arrived, and nothing after it was produced"
            );
        }
        client.read_until("event: run_completed", &format!("{name}: run_completed"));
        client.read_until(
            "\r\n0\r\n\r\n",
            &format!("{name}: the end of the chunked body"),
        );
        drop(client);
        shutdown(server);
    }
}

#[test]
fn chat_completions_stream_and_complete() {
    for (name, setup) in setups() {
        let server = serve(
            &setup,
            ScriptedModel::from_fn(|_, _| Turn::new().text("Hi ").text("there")),
            config(),
        );
        let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hello"}]}"#;
        let mut client = RawClient::connect(server.local_addr());
        client.post("/v1/chat/completions", "connection: close\r\n", body);
        client.read_to_end();
        let (status, head, text) = split_response(&client.text());
        assert_eq!(status, 200, "{name}: {text}");
        assert!(head.contains("content-type: text/event-stream"), "{name}");
        assert!(text.contains("chat.completion.chunk"), "{name}: {text}");
        assert!(text.contains("data: [DONE]"), "{name}: {text}");

        let body = r#"{"model":"m","stream":false,"messages":[{"role":"user","content":"hello"}]}"#;
        let mut client = RawClient::connect(server.local_addr());
        client.post("/v1/chat/completions", "connection: close\r\n", body);
        client.read_to_end();
        let (status, head, text) = split_response(&client.text());
        assert_eq!(status, 200, "{name}: {text}");
        assert!(head.contains("content-type: application/json"), "{name}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["object"], "chat.completion", "{name}");
        assert_eq!(
            json["choices"][0]["message"]["content"], "Hi there",
            "{name}"
        );
        shutdown(server);
    }
}

fn assert_json_error(answer: &str, status: u16, code: &str) {
    let (got, head, body) = split_response(answer);
    assert_eq!(got, status, "{answer}");
    assert!(head.contains("content-type: application/json"), "{answer}");
    let json: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(json["error"]["code"], code, "{answer}");
}

#[test]
fn bad_requests_get_json_errors() {
    for (name, setup) in setups() {
        let server = serve(&setup, hello(), config().with_max_body_bytes(64));
        let addr = server.local_addr();
        assert_json_error(
            &exchange(
                addr,
                "GET /nowhere HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
            ),
            404,
            "not_found",
        );
        assert_json_error(
            &exchange(
                addr,
                "GET /v1/runs HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
            ),
            405,
            "method_not_allowed",
        );
        assert_json_error(
            &exchange(
                addr,
                "POST /v1/runs HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 5\r\nconnection: close\r\n\r\n{oops",
            ),
            400,
            "invalid_json",
        );
        // Over the limit by Content-Length: refused before the body is read.
        let big = "x".repeat(200);
        assert_json_error(
            &exchange(
                addr,
                &format!(
                    "POST /v1/runs HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{big}",
                    big.len()
                ),
            ),
            413,
            "payload_too_large",
        );
        // Over the limit while reading a chunked body.
        assert_json_error(
            &exchange(
                addr,
                &format!(
                    "POST /v1/runs HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
                    big.len()
                ),
            ),
            413,
            "payload_too_large",
        );
        // Not HTTP at all.
        let (status, _, _) = split_response(&exchange(addr, "HELLO\r\n\r\n"));
        assert_eq!(status, 400, "{name}");
        shutdown(server);
    }
}

#[test]
fn bearer_token_is_required_when_configured() {
    let setup = Setup::Global;
    let server = serve(&setup, hello(), config().with_bearer_token("s3cret"));
    let addr = server.local_addr();
    let run = r#"{"input":"hi"}"#;
    let request = |auth: &str| {
        format!(
            "POST /v1/runs HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\nconnection: close\r\n\r\n{run}",
            run.len()
        )
    };
    let answer = exchange(addr, &request(""));
    assert_json_error(&answer, 401, "unauthorized");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer")
    );
    assert_json_error(
        &exchange(addr, &request("authorization: Bearer nope\r\n")),
        401,
        "unauthorized",
    );
    let (status, _, body) = split_response(&exchange(
        addr,
        &request("authorization: Bearer s3cret\r\n"),
    ));
    assert_eq!(status, 200);
    assert!(body.contains("run_completed"));
    // Health stays open.
    let (status, _, _) = split_response(&exchange(
        addr,
        "GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    ));
    assert_eq!(status, 200);
    shutdown(server);
}

#[test]
fn a_connection_serves_several_requests() {
    for (name, setup) in setups() {
        let server = serve(&setup, hello(), config());
        let mut client = RawClient::connect(server.local_addr());
        client.send(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n");
        client.read_until(r#"{"status":"ok"}"#, &format!("{name}: the first answer"));
        client.post("/v1/runs", "", r#"{"input":"again"}"#);
        client.read_until("\r\n0\r\n\r\n", &format!("{name}: the second answer"));
        client.send(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
        client.read_to_end();
        assert_eq!(
            client.text().matches("HTTP/1.1 200 OK").count(),
            3,
            "{name}: {}",
            client.text()
        );
        shutdown(server);
    }
}

#[test]
fn expect_100_continue_is_answered() {
    let setup = Setup::Global;
    let server = serve(&setup, hello(), config());
    let mut client = RawClient::connect(server.local_addr());
    let body = r#"{"input":"hi"}"#;
    client.send(
        format!(
            "POST /v1/runs HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    client.read_until("HTTP/1.1 100 Continue\r\n\r\n", "the interim 100 response");
    client.send(body.as_bytes());
    client.read_to_end();
    assert!(client.text().contains("run_completed"), "{}", client.text());
    shutdown(server);
}

#[test]
fn client_disconnect_cancels_the_run() {
    for (name, setup) in setups() {
        let model = GatedModel::new(100);
        let gate = model.gate.clone();
        let server = serve(&setup, model, config());
        let mut client = RawClient::connect(server.local_addr());
        client.post("/v1/runs", "", r#"{"input":"go"}"#);
        gate.release(1);
        client.read_until("tok0 ", &format!("{name}: the first token"));
        assert_eq!(server.service().running_streams(), 1);
        drop(client);
        wait_until(&format!("{name}: the model stream being dropped"), || {
            gate.streams_dropped() == 1
        });
        wait_until(&format!("{name}: the run slot being released"), || {
            server.service().running_streams() == 0
        });
        assert_eq!(
            gate.produced(),
            1,
            "{name}: nothing was produced after the client left"
        );
        shutdown(server);
    }
}

#[test]
fn non_streamed_chat_is_cancelled_when_the_client_leaves() {
    let setup = Setup::Global;
    let model = GatedModel::new(100);
    let gate = model.gate.clone();
    let server = serve(&setup, model, config());
    let mut client = RawClient::connect(server.local_addr());
    client.post(
        "/v1/chat/completions",
        "",
        r#"{"stream":false,"messages":[{"role":"user","content":"hello"}]}"#,
    );
    wait_until("the run starting", || {
        server.service().running_streams() == 1
    });
    drop(client);
    wait_until("the model stream being dropped", || {
        gate.streams_dropped() == 1
    });
    wait_until("the run slot being released", || {
        server.service().running_streams() == 0
    });
    shutdown(server);
}

#[test]
fn shutdown_ends_open_streams_with_run_cancelled() {
    for (name, setup) in setups() {
        let model = GatedModel::new(100);
        let gate = model.gate.clone();
        let server = serve(&setup, model, config());
        let mut client = RawClient::connect(server.local_addr());
        client.post("/v1/runs", "", r#"{"input":"go"}"#);
        gate.release(1);
        client.read_until("tok0 ", &format!("{name}: the first token"));
        let addr = server.local_addr();
        let stopper = std::thread::spawn(move || shutdown(server));
        client.read_until("event: run_cancelled", &format!("{name}: run_cancelled"));
        client.read_to_end();
        assert!(
            client.text().ends_with("\r\n0\r\n\r\n"),
            "{name}: {:?}",
            client.text()
        );
        stopper.join().unwrap();
        // No longer accepting.
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "{name}: still accepting after shutdown"
        );
    }
}

#[test]
fn shutdown_closes_idle_connections() {
    let setup = Setup::Single(SingleThread::start());
    let server = serve(&setup, hello(), config());
    let mut idle = RawClient::connect(server.local_addr());
    idle.send(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n");
    idle.read_until(r#"{"status":"ok"}"#, "the health answer");
    shutdown(server);
    idle.read_to_end();
}

#[test]
fn idle_streams_get_keep_alive_comments() {
    for (name, setup) in setups() {
        let model = GatedModel::new(3);
        let gate = model.gate.clone();
        let server = serve(
            &setup,
            model,
            config().with_keep_alive(Duration::from_millis(20)),
        );
        let mut client = RawClient::connect(server.local_addr());
        client.post("/v1/runs", "", r#"{"input":"go"}"#);
        client.read_until(": keep-alive\n\n", &format!("{name}: a keep-alive comment"));
        gate.release(3);
        client.read_until("event: run_completed", &format!("{name}: run_completed"));
        drop(client);
        shutdown(server);
    }
}

#[test]
fn http_1_0_clients_get_the_stream_until_close() {
    let setup = Setup::Global;
    let server = serve(&setup, hello(), config());
    let body = r#"{"input":"hi"}"#;
    let answer = exchange(
        server.local_addr(),
        &format!(
            "POST /v1/runs HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    let (status, head, text) = split_response(&answer);
    assert_eq!(status, 200);
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(text.starts_with("id: 0\nevent: run_started"), "{text}");
    assert!(
        text.ends_with("\n\n") && text.contains("run_completed"),
        "{text}"
    );
    shutdown(server);
}

#[test]
fn binds_the_configured_address() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let setup = Setup::Global;
    let server = serve(&setup, hello(), config().with_addr(addr));
    assert_eq!(server.local_addr(), addr);
    let (status, _, _) = split_response(&exchange(
        addr,
        "GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    ));
    assert_eq!(status, 200);
    shutdown(server);
}
