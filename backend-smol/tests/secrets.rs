//! Secrets never show: bearer tokens and API keys stay out of `Debug`, `Display`, error
//! messages, events and `tracing` output of this crate's public types.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;

use agent_core::agent::Agent;
use agent_core::event::EventKind;
use agent_core::http::{HttpClient, HttpRequest, Method};
use agent_core::model::{OpenAiConfig, ScriptedModel, Turn};
use agent_core::server::ServerConfig;
use backend_smol::{SmolClient, SmolServer};
use common::{WATCHDOG, exchange, split_response};
use futures_lite::StreamExt;
use test_support::reliability::capture_tracing;

const TOKEN: &str = "tok-SERVER-5ecret-1";
const WRONG: &str = "tok-WRONG-5ecret-2";
const KEY: &str = "sk-CLIENT-5ecret-3";

fn assert_clean(what: &str, text: &str) {
    for secret in [TOKEN, WRONG, KEY, "5ecret"] {
        assert!(!text.contains(secret), "{what} shows a secret: {text}");
    }
}

/// `Debug` of the server and its service; the server's tracing output while it serves
/// authorised, unauthorised and malformed requests.
#[test]
fn server_types_and_logs_never_show_the_bearer_token() {
    let capture = capture_tracing();
    let config = ServerConfig::default()
        .with_addr("127.0.0.1:0".parse().unwrap())
        .with_bearer_token(TOKEN);
    let agent = backend_smol::agent_builder()
        .model(ScriptedModel::new([Turn::new().text("hi")]))
        .build()
        .unwrap();
    let server = SmolServer::bind(agent, config).unwrap();
    assert_clean("SmolServer", &format!("{server:?}"));
    assert_clean("AgentService", &format!("{:?}", server.service()));
    assert!(format!("{server:?}").contains("bearer_token: Some"));

    let body = r#"{"input":"hi"}"#;
    for (auth, expected) in [(TOKEN, 200), (WRONG, 401)] {
        let answer = exchange(
            server.local_addr(),
            &format!(
                "POST /v1/runs HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\nauthorization: Bearer {auth}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        let (status, _, text) = split_response(&answer);
        assert_eq!(status, expected, "{answer}");
        assert_clean("a response", &text);
    }
    // Malformed: a header value that is not UTF-8 next to the token.
    let mut raw =
        format!("POST /v1/runs HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\nauthorization: Bearer {TOKEN}\r\nx-bad: ")
            .into_bytes();
    raw.extend_from_slice(b"\xff\xfe\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
    let mut client = common::RawClient::connect(server.local_addr());
    client.send(&raw);
    client.read_to_end();
    assert!(
        client.text().starts_with("HTTP/1.1 400"),
        "{}",
        client.text()
    );
    assert_clean("a 400 answer", &client.text());

    assert!(agent_core::runtime::block_on(
        server.shutdown_within(WATCHDOG)
    ));
    assert_clean("the tracing output", &capture.text());
}

/// Errors of requests that carry an `Authorization` header and an API key header: refused
/// connection, a connection reset mid-body, an invalid header value, a TLS failure; the
/// model's failure event; `Debug` of the client and the model.
#[test]
fn client_errors_and_logs_never_show_the_api_key() {
    let capture = capture_tracing();
    let client = SmolClient::new();
    assert_clean("SmolClient", &format!("{client:?}"));
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
    let err = smol::block_on(client.send(with_secrets(format!("http://{refused}/v1?key={KEY}"))))
        .unwrap_err();
    assert_clean("a connect error", &format!("{err} {err:?}"));

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
    });
    let body_error = smol::block_on(async {
        let response = client
            .send(with_secrets(format!("http://{addr}/v1?key={KEY}")))
            .await
            .unwrap();
        let mut body = response.body;
        let mut error = None;
        while let Some(chunk) = body.next().await {
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
    let err = smol::block_on(client.send(invalid)).unwrap_err();
    assert_clean("an invalid-header error", &format!("{err} {err:?}"));
    for url in [
        format!("http://{refused}/ {KEY}"),
        format!("/relative?key={KEY}"),
    ] {
        let err = smol::block_on(client.send(HttpRequest::new(Method::Get, url))).unwrap_err();
        assert_clean("an invalid-URL error", &format!("{err} {err:?}"));
    }

    let tls = test_support::reliability::TlsServer::start(1, &[]);
    let err = smol::block_on(client.send(with_secrets(format!(
        "https://127.0.0.1:{}/",
        tls.addr.port()
    ))))
    .unwrap_err();
    assert_clean("a TLS error", &format!("{err} {err:?}"));
    drop(tls.outcomes());

    let config = OpenAiConfig::new(format!("http://{refused}/v1"), "m").with_api_key(KEY);
    let model = backend_smol::openai_model(config.clone());
    assert_clean("OpenAiModel", &format!("{model:?}"));
    let agent: Agent = backend_smol::agent_builder().model(model).build().unwrap();
    let events: Vec<_> = smol::block_on(agent.run("hi").collect());
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
