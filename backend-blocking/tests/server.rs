//! ThreadServer, exercised with a raw TcpStream client on 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agent_core::agent::Agent;
use agent_core::model::{ScriptedModel, Turn};
use agent_core::server::ServerConfig;
use agent_http1::{ChunkedDecoder, HeadLimits, HeadParser};
use backend_blocking::{ThreadServer, ThreadServerOptions};
use common::{WATCHDOG, gated_model};
use serde_json::Value;

/// No detach grace: a client leaving cancels its run at once (what these tests check).
fn config() -> ServerConfig {
    ServerConfig::default()
        .with_addr("127.0.0.1:0".parse().unwrap())
        .with_run_detach_grace(std::time::Duration::ZERO)
}

fn scripted_agent(text: &str) -> Agent {
    backend_blocking::agent_builder()
        .model(ScriptedModel::new([Turn::new().text(text.to_string())]).with_name("scripted"))
        .build()
        .unwrap()
}

fn repeating_agent() -> Agent {
    let model = ScriptedModel::from_fn(|_, _| Turn::new().text("Hello").text(", world"));
    backend_blocking::agent_builder()
        .model(model)
        .build()
        .unwrap()
}

/// A raw HTTP/1.1 client: writes bytes, reads heads, Content-Length and chunked bodies
/// (framing through agent-http1, the same layer as the server, tested on its own).
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    decoder: ChunkedDecoder,
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WATCHDOG)).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            decoder: ChunkedDecoder::new(),
        }
    }

    fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).unwrap();
    }

    fn post(&mut self, path: &str, body: &str) {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send(request.as_bytes());
    }

    /// Read more bytes; `false` at end of stream. A timeout fails the test (watchdog).
    fn fill(&mut self, what: &str) -> bool {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(err) => panic!("watchdog: {what}: {err}"),
        }
    }

    fn read_head(&mut self) -> Head {
        let mut parser = HeadParser::new(HeadLimits::default());
        loop {
            let parsed = parser
                .parse_response(&self.buf)
                .unwrap_or_else(|e| panic!("bad response head: {e}: {:?}", self.buf));
            if let Some((head, used)) = parsed {
                self.buf.drain(..used);
                self.decoder = ChunkedDecoder::new();
                assert_eq!(head.version, agent_http1::Version::Http11);
                let headers = head
                    .headers
                    .into_iter()
                    .map(|(n, v)| (n.to_ascii_lowercase(), v))
                    .collect();
                return Head {
                    status: head.status,
                    headers,
                };
            }
            assert!(
                self.fill("the response head"),
                "connection closed while reading the response head"
            );
        }
    }

    fn read_exact(&mut self, len: usize, what: &str) -> Vec<u8> {
        while self.buf.len() < len {
            assert!(self.fill(what), "connection closed while reading {what}");
        }
        self.buf.drain(..len).collect()
    }

    /// A complete response with a Content-Length body.
    fn read_response(&mut self) -> (Head, Value) {
        let head = self.read_head();
        let len: usize = head
            .header("content-length")
            .expect("content-length")
            .parse()
            .unwrap();
        let body = self.read_exact(len, "the body");
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (head, json)
    }

    /// The next piece of a chunked body; `None` after its end.
    fn read_chunk(&mut self) -> Option<Vec<u8>> {
        loop {
            let mut data = Vec::new();
            let used = self
                .decoder
                .decode(&self.buf, &mut data)
                .unwrap_or_else(|e| panic!("bad chunked body: {e}"));
            self.buf.drain(..used);
            if !data.is_empty() {
                return Some(data);
            }
            if self.decoder.is_done() {
                return None;
            }
            assert!(
                self.fill("a chunk"),
                "connection closed inside a chunked body"
            );
        }
    }

    /// Read chunks until the body text contains `needle`; returns the text read so far.
    fn read_until(&mut self, text: &mut String, needle: &str) {
        while !text.contains(needle) {
            let chunk = self
                .read_chunk()
                .unwrap_or_else(|| panic!("the stream ended before {needle:?}; got {text:?}"));
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Read the rest of a chunked body.
    fn read_to_end_of_body(&mut self) -> String {
        let mut text = String::new();
        while let Some(chunk) = self.read_chunk() {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        text
    }

    /// Whether the server closed the connection (bounded by the read timeout).
    fn closed_by_server(&mut self) -> bool {
        !self.fill("waiting for the server to close")
    }
}

/// The SSE frames of a body, as (event name, data JSON) pairs.
fn frames(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|f| !f.is_empty() && !f.starts_with(':'))
        .map(|frame| {
            let mut name = String::new();
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = v.to_string();
                }
            }
            (
                name,
                serde_json::from_str(&data).unwrap_or(Value::String(data)),
            )
        })
        .collect()
}

#[test]
fn healthz_answers_ok_and_keeps_the_connection() {
    let service = agent_core::server::AgentService::new(scripted_agent("x"), config());
    let server = ThreadServer::bind_service(service).unwrap();
    assert_eq!(server.service().config().max_body_bytes, 1024 * 1024);
    let mut client = Client::connect(server.local_addr());
    for _ in 0..2 {
        client.send(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
        let (head, body) = client.read_response();
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-type"), Some("application/json"));
        assert_eq!(body, serde_json::json!({"status": "ok"}));
    }
    server.shutdown();
}

#[test]
fn runs_stream_sse_with_the_right_headers() {
    let server = ThreadServer::bind(repeating_agent(), config()).unwrap();
    let mut client = Client::connect(server.local_addr());
    // Twice on one keep-alive connection: a finished stream leaves the connection usable.
    for _ in 0..2 {
        client.post("/v1/runs", r#"{"input":"hi"}"#);
        let head = client.read_head();
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-type"), Some("text/event-stream"));
        assert_eq!(head.header("cache-control"), Some("no-cache"));
        assert_eq!(head.header("x-accel-buffering"), Some("no"));
        assert_eq!(head.header("transfer-encoding"), Some("chunked"));
        assert_eq!(head.header("content-length"), None);
        let text = client.read_to_end_of_body();
        assert!(
            text.starts_with("id: 0\nevent: run_started\ndata: {"),
            "{text}"
        );
        let frames = frames(&text);
        let names: Vec<&str> = frames.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"run_started"));
        assert_eq!(names.last(), Some(&"run_completed"));
        assert_eq!(frames.last().unwrap().1["text"], "Hello, world");
        for (i, (_, data)) in frames.iter().enumerate() {
            assert_eq!(data["seq"], i as u64);
        }
    }
    server.shutdown();
}

#[test]
fn each_event_reaches_the_socket_before_the_next_is_produced() {
    let (model, gate) = gated_model();
    let agent = backend_blocking::agent_builder()
        .model(model)
        .build()
        .unwrap();
    let server = ThreadServer::bind(agent, config()).unwrap();
    let mut client = Client::connect(server.local_addr());
    client.post("/v1/runs", r#"{"input":"go"}"#);
    assert_eq!(client.read_head().status, 200);
    let mut text = String::new();
    for k in 0..20 {
        gate.send(&format!("chunk {k};"));
        // The read timeout is the watchdog: a buffering server never sends the frame.
        client.read_until(&mut text, &format!("chunk {k};"));
    }
    gate.finish();
    text.push_str(&client.read_to_end_of_body());
    assert_eq!(frames(&text).last().unwrap().0, "run_completed");
    server.shutdown();
}

#[test]
fn chat_completions_stream_and_non_stream() {
    let server = ThreadServer::bind(repeating_agent(), config()).unwrap();
    let mut client = Client::connect(server.local_addr());
    client.post(
        "/v1/chat/completions",
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    let head = client.read_head();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    let text = client.read_to_end_of_body();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let content: String = frames(&text)
        .iter()
        .filter_map(|(_, data)| {
            data["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(content, "Hello, world");

    client.post(
        "/v1/chat/completions",
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
    );
    let (head, body) = client.read_response();
    assert_eq!(head.status, 200);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello, world");
    server.shutdown();
}

/// A head-level refusal: `status`, an empty body, `connection: close`, then the server
/// closes without sending anything more.
fn expect_empty(client: &mut Client, status: u16) {
    let head = client.read_head();
    assert_eq!(head.status, status);
    assert_eq!(head.header("content-length"), Some("0"));
    assert_eq!(head.header("connection"), Some("close"));
    assert!(client.closed_by_server(), "the connection should close");
    assert!(
        client.buf.is_empty(),
        "nothing may follow the refusal: {:?}",
        String::from_utf8_lossy(&client.buf)
    );
}

fn expect_error(client: &mut Client, status: u16, code: &str) {
    let (head, body) = client.read_response();
    assert_eq!(head.status, status, "{body}");
    assert_eq!(head.header("content-type"), Some("application/json"));
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string());
}

#[test]
fn bad_requests_get_json_errors() {
    let server = ThreadServer::bind(
        scripted_agent("x"),
        config().with_bearer_token("s3cret").with_max_body_bytes(64),
    )
    .unwrap();
    let addr = server.local_addr();
    let auth = "Authorization: Bearer s3cret\r\n";

    let mut client = Client::connect(addr);
    client.send(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_error(&mut client, 404, "not_found");
    client.send(b"GET /v1/runs HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_error(&mut client, 405, "method_not_allowed");
    client.send(b"POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    let (head, _) = client.read_response();
    assert_eq!(head.status, 401);
    assert_eq!(head.header("www-authenticate"), Some("Bearer"));
    client.send(
        format!("POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{auth}Content-Length: 5\r\n\r\n{{nope")
            .as_bytes(),
    );
    expect_error(&mut client, 400, "invalid_json");

    // Over the limit by Content-Length: refused before the body is read, then closed.
    let mut client = Client::connect(addr);
    client.send(
        format!("POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{auth}Content-Length: 1000000\r\n\r\n")
            .as_bytes(),
    );
    expect_error(&mut client, 413, "payload_too_large");
    assert!(client.closed_by_server());

    // Over the limit in a chunked body: refused while reading.
    let mut client = Client::connect(addr);
    let chunk = "a".repeat(40);
    client.send(
        format!("POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{auth}Transfer-Encoding: chunked\r\n\r\n28\r\n{chunk}\r\n28\r\n{chunk}\r\n")
            .as_bytes(),
    );
    expect_error(&mut client, 413, "payload_too_large");

    // Not HTTP at all: 400 with an empty body, as hyper answers, then closed.
    let mut client = Client::connect(addr);
    client.send(b"\x00\x01garbage\r\n\r\n");
    expect_empty(&mut client, 400);
    server.shutdown();
}

#[test]
fn chunked_request_bodies_and_expect_continue_are_supported() {
    let server = ThreadServer::bind(repeating_agent(), config()).unwrap();
    let mut client = Client::connect(server.local_addr());
    let body = r#"{"input":"hi"}"#;
    let (a, b) = body.split_at(5);
    client.send(
        format!(
            "POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
        .as_bytes(),
    );
    assert_eq!(client.read_head().status, 200);
    assert!(
        client
            .read_to_end_of_body()
            .contains("event: run_completed")
    );

    client.send(
        format!(
            "POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let interim = client.read_head();
    assert_eq!(interim.status, 100);
    client.send(body.as_bytes());
    assert_eq!(client.read_head().status, 200);
    assert!(
        client
            .read_to_end_of_body()
            .contains("event: run_completed")
    );
    server.shutdown();
}

#[test]
fn a_client_disconnect_cancels_the_run() {
    let (model, gate) = gated_model();
    let agent = backend_blocking::agent_builder()
        .model(model)
        .build()
        .unwrap();
    let server = ThreadServer::bind(agent, config()).unwrap();
    let mut client = Client::connect(server.local_addr());
    client.post("/v1/runs", r#"{"input":"go"}"#);
    assert_eq!(client.read_head().status, 200);
    gate.send("first");
    let mut text = String::new();
    client.read_until(&mut text, "first");
    assert_eq!(server.service().running_streams(), 1);
    // The run is idle (the model waits for the gate): only the disconnect check can notice.
    drop(client);
    gate.wait_dropped("after the client disconnected");
    let deadline = std::time::Instant::now() + WATCHDOG;
    while server.service().running_streams() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream was not released"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    server.shutdown();
}

#[test]
fn a_client_disconnect_cancels_a_non_streamed_chat_completion() {
    let (model, gate) = gated_model();
    let agent = backend_blocking::agent_builder()
        .model(model)
        .build()
        .unwrap();
    let server = ThreadServer::bind(agent, config()).unwrap();
    let mut client = Client::connect(server.local_addr());
    client.post(
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hi"}]}"#,
    );
    gate.send("thinking");
    let deadline = std::time::Instant::now() + WATCHDOG;
    while server.service().running_streams() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(client);
    gate.wait_dropped("after the client of a non-streamed completion disconnected");
    server.shutdown();
}

#[test]
fn shutdown_ends_open_streams_with_run_cancelled() {
    let (model, gate) = gated_model();
    let agent = backend_blocking::agent_builder()
        .model(model)
        .build()
        .unwrap();
    let server = ThreadServer::bind(agent, config()).unwrap();
    let addr = server.local_addr();
    let mut streaming = Client::connect(addr);
    streaming.post("/v1/runs", r#"{"input":"go"}"#);
    assert_eq!(streaming.read_head().status, 200);
    gate.send("partial");
    let mut text = String::new();
    streaming.read_until(&mut text, "partial");
    // An idle keep-alive connection is closed by the shutdown too.
    let mut idle = Client::connect(addr);
    idle.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(idle.read_response().0.status, 200);

    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let all_closed = server.shutdown_within(WATCHDOG);
        done_tx.send(all_closed).unwrap();
    });
    text.push_str(&streaming.read_to_end_of_body());
    let frames = frames(&text);
    let (name, data) = frames.last().unwrap();
    assert_eq!(name, "run_cancelled");
    assert_eq!(data["partial_text"], "partial");
    assert!(streaming.closed_by_server());
    assert!(idle.closed_by_server());
    let all_closed = done_rx
        .recv_timeout(WATCHDOG)
        .expect("watchdog: shutdown did not return");
    assert!(
        all_closed,
        "every connection should close within the shutdown timeout"
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listener should be closed"
    );
}

#[test]
fn idle_streams_get_keep_alive_comments() {
    let (model, gate) = gated_model();
    let agent = backend_blocking::agent_builder()
        .model(model)
        .build()
        .unwrap();
    let server =
        ThreadServer::bind(agent, config().with_keep_alive(Duration::from_millis(20))).unwrap();
    let mut client = Client::connect(server.local_addr());
    client.post("/v1/runs", r#"{"input":"go"}"#);
    assert_eq!(client.read_head().status, 200);
    let mut text = String::new();
    client.read_until(&mut text, ": keep-alive\n\n");
    gate.finish();
    text.push_str(&client.read_to_end_of_body());
    assert_eq!(frames(&text).last().unwrap().0, "run_completed");
    server.shutdown();
}

#[test]
fn connections_beyond_the_limit_get_503() {
    let options = ThreadServerOptions::default().with_max_connections(1);
    let server = ThreadServer::bind_with(scripted_agent("x"), config(), options).unwrap();
    let mut first = Client::connect(server.local_addr());
    first.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(first.read_response().0.status, 200);
    // An idle kept-alive connection holds no connection thread: another is served.
    let mut idle = Client::connect(server.local_addr());
    idle.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(idle.read_response().0.status, 200);
    // Both are back with the head-waiting thread (their connection threads have ended), so
    // the one thread counted below is the first request's.
    let start = std::time::Instant::now();
    while server.open_connections() != 0 {
        assert!(
            start.elapsed() < WATCHDOG,
            "an idle connection kept its thread"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // A request being served (its body still arriving) does.
    first.send(b"POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{");
    let start = std::time::Instant::now();
    while server.open_connections() != 1 {
        assert!(
            start.elapsed() < WATCHDOG,
            "the first request never got a thread"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut second = Client::connect(server.local_addr());
    second.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_error(&mut second, 503, "too_many_connections");
    server.shutdown();
}

#[test]
fn http_1_0_clients_get_a_close_delimited_stream() {
    let server = ThreadServer::bind(repeating_agent(), config()).unwrap();
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    stream.set_read_timeout(Some(WATCHDOG)).unwrap();
    let body = r#"{"input":"hi"}"#;
    write!(
        stream,
        "POST /v1/runs HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"));
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding"));
    assert_eq!(frames(body).last().unwrap().0, "run_completed");
    server.shutdown();
}

#[test]
fn wait_returns_after_the_shutdown_signal() {
    let server = ThreadServer::bind(scripted_agent("x"), config()).unwrap();
    let addr = server.local_addr();
    let signal = server.shutdown_signal();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        server.wait();
        done_tx.send(()).unwrap();
    });
    let mut client = Client::connect(addr);
    client.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let (head, _) = client.read_response();
    assert_eq!(head.header("connection"), Some("close"));
    signal.trigger();
    done_rx
        .recv_timeout(WATCHDOG)
        .expect("watchdog: wait did not return");
}

#[test]
fn a_body_that_stops_midway_gets_408_and_an_idle_connection_is_closed() {
    let config = config()
        .with_body_read_timeout(Duration::from_millis(300))
        .with_head_read_timeout(Duration::from_millis(300));
    let server = ThreadServer::bind(scripted_agent("x"), config).unwrap();
    let mut stalled = Client::connect(server.local_addr());
    let sent = Instant::now();
    stalled.send(b"POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"in");
    expect_error(&mut stalled, 408, "request_timeout");
    assert!(
        sent.elapsed() >= Duration::from_millis(300),
        "answered before body_read_timeout"
    );
    assert!(stalled.closed_by_server());

    let mut idle = Client::connect(server.local_addr());
    idle.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(idle.read_response().0.status, 200);
    assert!(
        idle.closed_by_server(),
        "an idle keep-alive connection should be closed after head_read_timeout"
    );
    assert!(idle.buf.is_empty(), "closed without an answer");
    server.shutdown();
}

/// Write `prefix`, then one byte of `filler` every 20 ms from another thread, until the
/// server closes the connection (a write fails) or the watchdog passes.
fn trickle(client: &Client, prefix: &[u8], filler: u8) -> std::thread::JoinHandle<()> {
    let mut writer = client.stream.try_clone().unwrap();
    writer.write_all(prefix).unwrap();
    std::thread::spawn(move || {
        let started = Instant::now();
        while started.elapsed() < WATCHDOG {
            if writer.write_all(&[filler]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

#[test]
fn a_trickling_body_gets_408_at_the_body_deadline() {
    // Progress does not extend the deadline: it counts from the end of the head.
    let config = config().with_body_read_timeout(Duration::from_millis(300));
    let server = ThreadServer::bind(scripted_agent("x"), config).unwrap();
    let mut client = Client::connect(server.local_addr());
    let started = Instant::now();
    let writer = trickle(
        &client,
        b"POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
        b' ',
    );
    expect_error(&mut client, 408, "request_timeout");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(client.closed_by_server());
    writer.join().unwrap();
    server.shutdown();
}

#[test]
fn a_trickling_head_is_closed_without_an_answer_after_head_read_timeout() {
    let config = config().with_head_read_timeout(Duration::from_millis(300));
    let server = ThreadServer::bind(scripted_agent("x"), config).unwrap();
    let mut client = Client::connect(server.local_addr());
    let started = Instant::now();
    // A valid head that never ends: one more byte of a header value every 20 ms.
    let writer = trickle(
        &client,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ",
        b'a',
    );
    assert!(
        client.closed_by_server(),
        "the server should close a head that trickles past head_read_timeout"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "closed after {waited:?}"
    );
    assert!(
        client.buf.is_empty(),
        "no answer is sent for an incomplete head: {:?}",
        String::from_utf8_lossy(&client.buf)
    );
    writer.join().unwrap();
    server.shutdown();
}

#[test]
fn content_length_with_a_sign_is_400_and_its_bytes_are_not_served() {
    let server = ThreadServer::bind(repeating_agent(), config()).unwrap();
    let mut client = Client::connect(server.local_addr());
    // `+14` is not `1*DIGIT`: a server that reads it as 14 serves the run and then the
    // smuggled `GET /healthz` as a second request.
    let body = r#"{"input":"hi"}"#;
    assert_eq!(body.len(), 14);
    client.send(
        format!(
            "POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: +14\r\n\r\n{body}GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        .as_bytes(),
    );
    expect_empty(&mut client, 400);
    server.shutdown();
}

#[test]
fn malformed_chunk_sizes_are_400() {
    let server = ThreadServer::bind(repeating_agent(), config()).unwrap();
    let body = r#"{"input":"hi"}"#;
    for size in ["+e", " e", "0xe"] {
        let mut client = Client::connect(server.local_addr());
        client.send(
            format!(
                "POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\n{body}\r\n0\r\n\r\n"
            )
            .as_bytes(),
        );
        let (head, json) = client.read_response();
        assert_eq!(head.status, 400, "chunk size {size:?}: {json}");
        assert_eq!(json["error"]["code"], "invalid_body", "{size:?}");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains("chunk size"),
            "parser wording leaked: {message}"
        );
        assert!(client.closed_by_server());
    }
    server.shutdown();
}

#[test]
fn transfer_codings_other_than_chunked_are_501() {
    let server = ThreadServer::bind(repeating_agent(), config()).unwrap();
    for coding in ["gzip, chunked", "chunked, gzip", "identity"] {
        let mut client = Client::connect(server.local_addr());
        client.send(
            format!(
                "POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: {coding}\r\n\r\ne\r\n{{\"input\":\"hi\"}}\r\n0\r\n\r\n"
            )
            .as_bytes(),
        );
        expect_error(&mut client, 501, "unsupported_transfer_encoding");
        assert!(client.closed_by_server(), "{coding}");
    }
    // Both Transfer-Encoding and Content-Length: a head-level 400.
    let mut client = Client::connect(server.local_addr());
    client.send(b"POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n");
    expect_empty(&mut client, 400);
    server.shutdown();
}

#[test]
fn absolute_form_targets_are_served_by_their_path() {
    let server = ThreadServer::bind(scripted_agent("x"), config()).unwrap();
    let mut client = Client::connect(server.local_addr());
    client.send(b"GET http://x/healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = client.read_response();
    assert_eq!(head.status, 200);
    assert_eq!(body, serde_json::json!({"status": "ok"}));
    server.shutdown();
}

#[test]
fn heads_over_the_configured_limits_are_431() {
    let config = config().with_max_headers(4).with_max_head_bytes(8 * 1024);
    let server = ThreadServer::bind(scripted_agent("x"), config).unwrap();
    let mut client = Client::connect(server.local_addr());
    client.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
    assert_eq!(client.read_response().0.status, 200, "four fields fit");
    let mut client = Client::connect(server.local_addr());
    client.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n");
    expect_empty(&mut client, 431);
    let mut client = Client::connect(server.local_addr());
    let long = "a".repeat(9 * 1024);
    client.send(format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Long: {long}\r\n\r\n").as_bytes());
    expect_empty(&mut client, 431);
    server.shutdown();
}
