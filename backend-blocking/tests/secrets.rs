//! Secrets never show: bearer tokens and API keys stay out of `Debug`, `Display`, error
//! messages, events and `tracing` output of this crate's public types.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use agent_core::event::EventKind;
use agent_core::http::{HttpClient, HttpRequest, Method};
use agent_core::model::{OpenAiConfig, ScriptedModel, Turn};
use agent_core::runtime::block_on;
use agent_core::server::ServerConfig;
use backend_blocking::{ThreadServer, ThreadServerOptions, UreqClient};
use common::WATCHDOG;
use futures_util::StreamExt;
use test_support::reliability::{TlsServer, capture_tracing};

const TOKEN: &str = "tok-SERVER-5ecret-1";
const WRONG: &str = "tok-WRONG-5ecret-2";
const KEY: &str = "sk-CLIENT-5ecret-3";

fn assert_clean(what: &str, text: &str) {
    for secret in [TOKEN, WRONG, KEY, "5ecret"] {
        assert!(!text.contains(secret), "{what} shows a secret: {text}");
    }
}

fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WATCHDOG)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// `Debug` of the server, its options and service; the server's tracing output while it
/// serves authorised, unauthorised and malformed requests.
#[test]
fn server_types_and_logs_never_show_the_bearer_token() {
    let capture = capture_tracing();
    let config = ServerConfig::default()
        .with_addr("127.0.0.1:0".parse().unwrap())
        .with_bearer_token(TOKEN);
    let agent = backend_blocking::agent_builder()
        .model(ScriptedModel::new([Turn::new().text("hi")]))
        .build()
        .unwrap();
    let server = ThreadServer::bind_with(agent, config, ThreadServerOptions::default()).unwrap();
    assert_clean("ThreadServer", &format!("{server:?}"));
    assert_clean("AgentService", &format!("{:?}", server.service()));
    assert_clean("ShutdownSignal", &format!("{:?}", server.shutdown_signal()));

    let body = r#"{"input":"hi"}"#;
    for (auth, expected) in [(TOKEN, "HTTP/1.1 200"), (WRONG, "HTTP/1.1 401")] {
        let answer = exchange(
            server.local_addr(),
            format!(
                "POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nAuthorization: Bearer {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        assert!(answer.starts_with(expected), "{answer}");
        assert_clean("a response", &answer);
    }
    let answer = exchange(
        server.local_addr(),
        format!(
            "POST /v1/runs HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: x\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_clean("a 400 answer", &answer);
    assert!(server.shutdown_within(WATCHDOG));
    let logs = capture.text();
    assert!(
        logs.contains("agent server listening"),
        "the capture works: {logs}"
    );
    assert_clean("the tracing output", &logs);
}

/// Errors of requests that carry an `Authorization` header and an API key header (and a
/// key in the URL's query): refused connection, a connection reset mid-body, an invalid
/// header value, an invalid URL, a TLS failure; the model's failure event; `Debug` of the
/// client and the model.
#[test]
fn client_errors_and_logs_never_show_the_api_key() {
    let capture = capture_tracing();
    let client = UreqClient::new();
    assert_clean("UreqClient", &format!("{client:?}"));
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
    let err =
        block_on(client.send(with_secrets(format!("http://{refused}/v1?key={KEY}")))).unwrap_err();
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
    let response =
        block_on(client.send(with_secrets(format!("http://{addr}/v1?key={KEY}")))).unwrap();
    let mut body = response.body;
    let mut body_error = None;
    while let Some(chunk) = block_on(body.next()) {
        if let Err(err) = chunk {
            body_error = Some(err);
        }
    }
    server.join().unwrap();
    let body_error = body_error.expect("a truncated body is an error");
    assert_clean("a body error", &format!("{body_error} {body_error:?}"));

    let invalid = HttpRequest::new(Method::Get, format!("http://{refused}/"))
        .header("Authorization", format!("Bearer {KEY}\n"));
    let err = block_on(client.send(invalid)).unwrap_err();
    assert_clean("an invalid-header error", &format!("{err} {err:?}"));
    for url in [
        format!("http://{refused}/ {KEY}"),
        format!("/relative?key={KEY}"),
    ] {
        let err = block_on(client.send(HttpRequest::new(Method::Get, url))).unwrap_err();
        assert_clean("an invalid-URL error", &format!("{err} {err:?}"));
    }

    let tls = TlsServer::start(1, &[]);
    let err = block_on(client.send(with_secrets(format!(
        "https://127.0.0.1:{}/?key={KEY}",
        tls.addr.port()
    ))))
    .unwrap_err();
    assert_clean("a TLS error", &format!("{err} {err:?}"));
    drop(tls.outcomes());

    let config = OpenAiConfig::new(format!("http://{refused}/v1"), "m").with_api_key(KEY);
    let model = backend_blocking::openai_model(config);
    assert_clean("OpenAiModel", &format!("{model:?}"));
    let agent = backend_blocking::agent_builder()
        .model(model)
        .build()
        .unwrap();
    let failed = backend_blocking::run(&agent, "hi")
        .find(|e| matches!(e.kind, EventKind::RunFailed { .. }))
        .expect("the run fails");
    assert_clean(
        "the run_failed event",
        &serde_json::to_string(&failed).unwrap(),
    );

    assert_clean("the tracing output", &capture.text());
}
