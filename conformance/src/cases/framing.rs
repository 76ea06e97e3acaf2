//! Server framing and limits: the same malformed and over-limit requests get the same
//! answers from every backend — the same status, the same body (empty where the head could
//! not be understood, the same JSON error otherwise), or the same silent close.
//!
//! | request | answer |
//! |---|---|
//! | a malformed request line | `400`, empty body |
//! | `Content-Length: +14` (not `1*DIGIT`) | `400`, empty body; the bytes after it are never served as a request |
//! | more header fields than `max_headers` | `431`, empty body |
//! | a head over `max_head_bytes` | `431`, empty body |
//! | `Transfer-Encoding: gzip, chunked` | `501` `unsupported_transfer_encoding` |
//! | a body over `max_body_bytes`, by `Content-Length` and by chunked coding | `413` `payload_too_large` |
//! | a chunk size of `+e` | `400` `invalid_body` |
//! | a body that stops midway | `408` `request_timeout` after `body_read_timeout` |
//! | a head that trickles in one byte at a time | closed without an answer after `head_read_timeout` |
//! | an absolute-form target (`GET http://host/healthz`) | `200`, as for `/healthz` (the body is not compared) |
//!
//! The limits are set small in the case's [`ServerConfig`](agent_core::server::ServerConfig)
//! (`max_headers = 20`, `max_head_bytes = 8 KiB`, both timeouts 400 ms), so a backend that
//! applies a limit of its own instead of the configured one answers differently and fails.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Outcome;
use super::support::{Server, agent_builder, server_config};
use crate::backend::Backend;
use crate::kit::SseClient;
use crate::kit::watchdog::step;
use agent_core::model::{ScriptedModel, Turn};

/// The request head and body timeouts of the case's server.
pub const READ_TIMEOUT: Duration = Duration::from_millis(400);
/// The header field limit of the case's server.
pub const MAX_HEADERS: usize = 20;
/// The head size limit of the case's server.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// The body limit of the case's server.
pub const MAX_BODY_BYTES: usize = 1024;

/// How long any answer (or close) may take, timeouts included, on a loaded machine.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// What a server answered to one request.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// A response: its status and its body's error `code` (`None` for an empty body).
    Response { status: u16, code: Option<String> },
    /// The connection closed without a response.
    Closed,
}

fn answer(status: u16, code: Option<&str>) -> Answer {
    Answer::Response {
        status,
        code: code.map(str::to_string),
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|err| panic!("could not connect to the server at {addr}: {err}"));
    let _ = stream.set_nodelay(true);
    stream
}

/// Send `bytes` on a new connection, keep it open, and read the answer.
fn exchange(addr: SocketAddr, what: &str, bytes: &[u8]) -> Answer {
    let stream = connect(addr);
    read_answer(what, SseClient::send_raw(stream, bytes))
}

fn read_answer(what: &str, sent: std::io::Result<SseClient>) -> Answer {
    let client = match sent {
        Ok(client) => client,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) =>
        {
            return Answer::Closed;
        }
        Err(err) => panic!("{what}: no answer and no close: {err}"),
    };
    let status = client.status();
    let body = client.read_body(ANSWER_WITHIN).unwrap_or_else(|err| {
        panic!("{what}: the {status} answer's body could not be read: {err}")
    });
    let code = if body.is_empty() || status < 400 {
        None
    } else {
        let json: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
            panic!(
                "{what}: the {status} answer's body is neither empty nor a JSON error: {:?}",
                String::from_utf8_lossy(&body)
            )
        });
        Some(
            json["error"]["code"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: the JSON error has no code: {json}"))
                .to_string(),
        )
    };
    Answer::Response { status, code }
}

fn expect(what: &str, got: Answer, expected: Answer) {
    assert_eq!(
        got, expected,
        "identical errors: {what} must be answered {expected:?} on every backend, this one answered {got:?}"
    );
}

/// Framing and limits: see the [module docs](self).
pub fn malformed_requests(backend: &dyn Backend) -> Outcome {
    let agent = agent_builder(backend)
        .model(ScriptedModel::new([Turn::new().text("unused")]))
        .build()
        .expect("the agent builds");
    let config = server_config()
        .with_head_read_timeout(READ_TIMEOUT)
        .with_body_read_timeout(READ_TIMEOUT)
        .with_max_headers(MAX_HEADERS)
        .with_max_head_bytes(MAX_HEAD_BYTES)
        .with_max_body_bytes(MAX_BODY_BYTES);
    let server = Server::start_with(backend, agent, config);
    let addr = server.addr();

    step("a malformed request line");
    expect(
        "a malformed request line",
        exchange(addr, "bad request line", b"GARBAGE\r\n\r\n"),
        answer(400, None),
    );

    step("Content-Length: +14");
    let smuggled = "POST /v1/runs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: +14\r\n\r\n{\"input\":\"a\"}GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n".to_string();
    let mut stream = connect(addr);
    stream
        .write_all(smuggled.as_bytes())
        .expect("send the request");
    let sent = SseClient::send_raw(stream.try_clone().expect("clone the socket"), b"");
    expect(
        "Content-Length: +14",
        read_answer("Content-Length: +14", sent),
        answer(400, None),
    );
    // Nothing more may come: the bytes after the refused head are not a second request.
    let _ = stream.set_read_timeout(Some(ANSWER_WITHIN));
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).contains("HTTP/1.1 200"),
        "identical errors: after refusing `Content-Length: +14` the server must close, not serve the \
         bytes after it as a second request; it sent {:?}",
        String::from_utf8_lossy(&rest)
    );

    step("too many header fields");
    let mut many = String::from("GET /healthz HTTP/1.1\r\nhost: x\r\n");
    for i in 0..MAX_HEADERS + 10 {
        many.push_str(&format!("x-field-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    expect(
        &format!(
            "{} header fields (max_headers = {MAX_HEADERS})",
            MAX_HEADERS + 11
        ),
        exchange(addr, "too many headers", many.as_bytes()),
        answer(431, None),
    );

    step("a head over max_head_bytes");
    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(2 * MAX_HEAD_BYTES)
    );
    expect(
        &format!(
            "a {}-byte head (max_head_bytes = {MAX_HEAD_BYTES})",
            big.len()
        ),
        exchange(addr, "oversized head", big.as_bytes()),
        answer(431, None),
    );

    step("Transfer-Encoding: gzip, chunked");
    expect(
        "Transfer-Encoding: gzip, chunked",
        exchange(
            addr,
            "gzip, chunked",
            b"POST /v1/runs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        ),
        answer(501, Some("unsupported_transfer_encoding")),
    );

    step("a body over the limit by Content-Length");
    let declared = format!(
        "POST /v1/runs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        MAX_BODY_BYTES * 4
    );
    expect(
        "a body over max_body_bytes by Content-Length",
        exchange(addr, "declared too large", declared.as_bytes()),
        answer(413, Some("payload_too_large")),
    );

    step("a body over the limit by chunked coding");
    let mut chunked = b"POST /v1/runs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        chunked.extend_from_slice(format!("{:x}\r\n", MAX_BODY_BYTES).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', MAX_BODY_BYTES));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    expect(
        "a chunked body over max_body_bytes",
        exchange(addr, "chunked too large", &chunked),
        answer(413, Some("payload_too_large")),
    );

    step("a chunk size of +e");
    expect(
        "a chunk size of `+e`",
        exchange(
            addr,
            "chunk size +e",
            b"POST /v1/runs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n+e\r\n{\"input\":\"a\"}\r\n0\r\n\r\n",
        ),
        answer(400, Some("invalid_body")),
    );

    step("a body that stops midway");
    let started = Instant::now();
    let stopped = exchange(
        addr,
        "body stops midway",
        b"POST /v1/runs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"input\":",
    );
    let body_wait = started.elapsed();
    expect(
        "a body that stops midway",
        stopped,
        answer(408, Some("request_timeout")),
    );
    assert!(
        body_wait >= READ_TIMEOUT,
        "identical errors: a stopped body was answered after {body_wait:?}, before body_read_timeout ({READ_TIMEOUT:?})"
    );

    step("a head that trickles");
    let (trickled, head_wait) = trickle_head(addr);
    expect(
        "a head that trickles one byte at a time",
        trickled,
        Answer::Closed,
    );
    assert!(
        head_wait >= READ_TIMEOUT,
        "identical errors: a trickling head was cut after {head_wait:?}, before head_read_timeout ({READ_TIMEOUT:?})"
    );

    step("an absolute-form request target");
    expect(
        "GET http://x/healthz (absolute form, RFC 9112 §3.2.2)",
        exchange(
            addr,
            "absolute form",
            b"GET http://x/healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        ),
        answer(200, None),
    );

    drop(server);
    Outcome::passed()
        .note(format!(
            "same answers to 11 malformed or over-limit requests; a stopped body answered 408 after {} ms, a trickling head closed after {} ms (both timeouts {} ms)",
            body_wait.as_millis(),
            head_wait.as_millis(),
            READ_TIMEOUT.as_millis()
        ))
        .measure("body_timeout_ms", body_wait.as_secs_f64() * 1000.0)
        .measure("head_timeout_ms", head_wait.as_secs_f64() * 1000.0)
}

/// Send a request head one byte every 50 ms, never finishing it; return what the server did
/// and how long after the first byte.
fn trickle_head(addr: SocketAddr) -> (Answer, Duration) {
    let mut stream = connect(addr);
    let started = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ";
    let mut reader = stream.try_clone().expect("clone the socket");
    let _ = reader.set_read_timeout(Some(Duration::from_millis(50)));
    let mut sent = 0usize;
    let mut received = Vec::new();
    while started.elapsed() < ANSWER_WITHIN {
        let byte = head.get(sent).copied().unwrap_or(b'a');
        if stream.write_all(&[byte]).is_err() {
            return (Answer::Closed, started.elapsed());
        }
        sent += 1;
        let mut chunk = [0u8; 1024];
        match reader.read(&mut chunk) {
            Ok(0) => {
                if received.is_empty() {
                    return (Answer::Closed, started.elapsed());
                }
                break;
            }
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (Answer::Closed, started.elapsed()),
        }
    }
    panic!(
        "identical errors: a head trickling for {:?} was neither cut off nor refused (head_read_timeout = {READ_TIMEOUT:?}); the server sent {:?}",
        started.elapsed(),
        String::from_utf8_lossy(&received)
    );
}
