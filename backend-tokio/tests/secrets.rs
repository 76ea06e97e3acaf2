//! Secrets never show: bearer tokens and API keys stay out of `Debug`, `Display`, error
//! messages, events and `tracing` output of this crate's public types.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use agent_core::event::EventKind;
use agent_core::http::{HttpClient, HttpRequest, Method};
use agent_core::model::{OpenAiConfig, ScriptedModel, Turn};
use agent_core::server::{AgentService, ServerConfig};
use backend_tokio::{ReqwestClient, TokioRuntime, TokioServer};
use common::{Flavour, RawClient, TestServer, WATCHDOG};
use futures_util::StreamExt;
use serde_json::json;
use test_support::reliability::capture_tracing;

const TOKEN: &str = "tok-SERVER-5ecret-1";
const WRONG: &str = "tok-WRONG-5ecret-2";
const KEY: &str = "sk-CLIENT-5ecret-3";

fn assert_clean(what: &str, text: &str) {
    for secret in [TOKEN, WRONG, KEY, "5ecret"] {
        assert!(!text.contains(secret), "{what} shows a secret: {text}");
    }
}

/// `Debug` of the server, its service and config; the server's tracing output while it
/// serves authorised, unauthorised and failing requests.
#[test]
fn server_types_and_logs_never_show_the_bearer_token() {
    let capture = capture_tracing();
    let config = ServerConfig::default()
        .with_addr("127.0.0.1:0".parse().unwrap())
        .with_bearer_token(TOKEN);
    assert_clean("ServerConfig", &format!("{config:?}"));

    let rt = common::runtime(Flavour::MultiThread);
    let agent = agent_core::agent::Agent::builder()
        .model(ScriptedModel::new([Turn::new().text("hi")]))
        .runtime(Arc::new(TokioRuntime::from_handle(rt.handle().clone())))
        .build()
        .unwrap();
    let server = rt
        .block_on(TokioServer::bind(agent.clone(), config.clone()))
        .unwrap();
    assert_clean("TokioServer", &format!("{server:?}"));
    assert_clean("AgentService", &format!("{:?}", server.service()));
    assert_clean(
        "AgentService::new",
        &format!("{:?}", AgentService::new(agent, config.clone())),
    );
    rt.block_on(server.shutdown());

    let server = TestServer::start(Flavour::MultiThread, config, |rt| {
        agent_core::agent::Agent::builder()
            .model(ScriptedModel::new([Turn::new().text("hi")]))
            .runtime(rt)
            .build()
            .unwrap()
    });
    let good = format!("Bearer {TOKEN}");
    let bad = format!("Bearer {WRONG}");
    let body = json!({"input": "hi"}).to_string();
    let ok = RawClient::send(
        server.addr,
        "POST",
        "/v1/runs",
        &[("Authorization", &good)],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(ok.status, 200);
    let text = String::from_utf8(ok.body().unwrap()).unwrap();
    assert!(text.contains("run_completed"), "{text}");
    assert_clean("the SSE body", &text);
    for auth in [&bad, &good] {
        let refused = RawClient::send(
            server.addr,
            "POST",
            "/v1/runs",
            &[("Authorization", auth)],
            b"{not json",
        )
        .unwrap();
        assert!(matches!(refused.status, 400 | 401));
        assert_clean(
            "an error body",
            &String::from_utf8(refused.body().unwrap()).unwrap(),
        );
    }
    server.shutdown();
    let logs = capture.text();
    assert!(
        logs.contains("agent server listening"),
        "the capture works: {logs}"
    );
    assert_clean("the tracing output", &logs);
}

/// Errors of requests that carry an `Authorization` header and an API key header: refused
/// connection, a connection reset mid-body, an invalid header value; the model's failure
/// event; `Debug` of the client and the model.
#[test]
fn client_errors_and_logs_never_show_the_api_key() {
    let capture = capture_tracing();
    let rt = common::runtime(Flavour::MultiThread);
    let client = ReqwestClient::new().runtime_handle(rt.handle().clone());
    assert_clean("ReqwestClient", &format!("{client:?}"));
    let with_secrets = |url: String| {
        HttpRequest::new(Method::Post, url)
            .header("Authorization", format!("Bearer {KEY}"))
            .header("x-api-key", KEY)
            .body(b"{}".to_vec())
    };
    let refused = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let err = rt
        .block_on(client.send(with_secrets(format!(
            "http://{refused}/v1/chat/completions?key={KEY}"
        ))))
        .unwrap_err();
    assert_clean("a connect error", &format!("{err} {err:?}"));

    // A server that answers a head, then resets in the middle of the body.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WATCHDOG)).unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 1000\r\n\r\ndata: {",
        );
        let _ = stream.flush();
        drop(stream);
    });
    let body_error = rt.block_on(async {
        let response = client
            .send(with_secrets(format!(
                "http://{addr}/v1/chat/completions?key={KEY}"
            )))
            .await
            .unwrap();
        let mut body = response.body;
        let mut error = None;
        while let Some(chunk) = tokio::time::timeout(WATCHDOG, body.next()).await.unwrap() {
            if let Err(err) = chunk {
                error = Some(err);
            }
        }
        error.expect("a truncated body is an error")
    });
    server.join().unwrap();
    assert_clean("a body error", &format!("{body_error} {body_error:?}"));

    let invalid = HttpRequest::new(Method::Get, format!("http://{refused}/"))
        .header("Authorization", format!("Bearer {KEY}\n"));
    let err = rt.block_on(client.send(invalid)).unwrap_err();
    assert_clean("an invalid-header error", &format!("{err} {err:?}"));
    for url in [
        format!("http://{refused}/ {KEY}"),
        format!("/relative?key={KEY}"),
    ] {
        let err = rt
            .block_on(client.send(HttpRequest::new(Method::Get, url)))
            .unwrap_err();
        assert_clean("an invalid-URL error", &format!("{err} {err:?}"));
    }

    // The whole path: an OpenAI-compatible model with an API key, failing to connect.
    let config = OpenAiConfig::new(format!("http://{refused}/v1"), "m").with_api_key(KEY);
    let model = backend_tokio::openai_model(config.clone());
    assert_clean("OpenAiConfig", &format!("{config:?}"));
    assert_clean("OpenAiModel", &format!("{model:?}"));
    let events: Vec<_> = rt.block_on(async {
        let agent = backend_tokio::agent_builder().model(model).build().unwrap();
        agent.run("hi").collect().await
    });
    let failed = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::RunFailed { .. }))
        .expect("the run fails");
    assert_clean(
        "the run_failed event",
        &serde_json::to_string(failed).unwrap(),
    );

    assert_clean("the tracing output", &capture.text());
}
