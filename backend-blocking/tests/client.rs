//! UreqClient against a std-thread TCP server on 127.0.0.1: incremental delivery (lockstep),
//! statuses as responses, errors, and connection close on drop.

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use agent_core::http::{HttpClient, HttpErrorKind, HttpRequest, HttpResponse, Method};
use agent_core::runtime::block_on;
use agent_http1::{BodyFraming, HeadLimits, HeadParser, chunked};
use backend_blocking::UreqClient;
use common::WATCHDOG;
use futures_util::{FutureExt, StreamExt};

/// A one-shot test server: accepts `connections` connections in turn and hands each to
/// `handle` on its own thread (the accept loop is bounded by `connections`).
fn serve<F>(connections: usize, handle: F) -> (SocketAddr, JoinHandle<()>)
where
    F: Fn(TcpStream, usize) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::sync::Arc::new(handle);
    let server = std::thread::spawn(move || {
        let mut workers = Vec::new();
        for i in 0..connections {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(WATCHDOG)).unwrap();
            let handle = handle.clone();
            workers.push(std::thread::spawn(move || handle(stream, i)));
        }
        for worker in workers {
            worker.join().unwrap();
        }
    });
    (addr, server)
}

/// Read one request (head and Content-Length body); returns the head text, or `None` on EOF.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut parser = HeadParser::new(HeadLimits::default());
    let mut buf = Vec::new();
    let (head, used) = loop {
        let mut byte = [0u8; 1];
        if reader.read(&mut byte).unwrap() == 0 {
            return None;
        }
        buf.push(byte[0]);
        if let Some(parsed) = parser.parse_request(&buf).unwrap() {
            break parsed;
        }
    };
    let length = match head.body_framing().unwrap() {
        BodyFraming::Length(length) => length as usize,
        other => panic!("unexpected request framing {other:?}"),
    };
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    Some(String::from_utf8_lossy(&buf[..used]).into_owned())
}

fn write_chunk(stream: &mut TcpStream, data: &str) {
    let mut out = Vec::new();
    chunked::encode_chunk(data.as_bytes(), &mut out);
    stream.write_all(&out).unwrap();
    stream.flush().unwrap();
}

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

fn post(addr: SocketAddr) -> HttpRequest {
    HttpRequest::new(Method::Post, format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-test-secret")
        .body(br#"{"stream":true}"#.to_vec())
}

/// Read body chunks until the text received so far contains `needle`.
fn read_until(response: &mut HttpResponse, received: &mut String, needle: &str) {
    while !received.contains(needle) {
        let chunk = block_on(response.body.next())
            .unwrap_or_else(|| panic!("the body ended before {needle:?}"))
            .unwrap();
        received.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

/// Wait (bounded) until the peer closes: a read returns 0 or fails with a reset.
fn expect_eof(reader: &mut BufReader<TcpStream>, what: &str) {
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(err) => panic!("{what}: the client did not close the connection ({err})"),
    }
}

#[test]
fn body_chunks_arrive_in_lockstep() {
    // The server writes chunk k+1 only after the client has seen chunk k: a client that
    // buffered would deadlock and the watchdog (the server's read timeout) would fail.
    let (seen_tx, seen_rx) = mpsc::channel::<usize>();
    let seen_rx = std::sync::Mutex::new(seen_rx);
    let (addr, server) = serve(1, move |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let head = read_request(&mut reader).unwrap();
        assert!(head.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"));
        let mut stream = stream;
        stream.write_all(SSE_HEAD.as_bytes()).unwrap();
        for k in 0..20 {
            write_chunk(&mut stream, &format!("data: chunk {k}\n\n"));
            let seen = seen_rx.lock().unwrap().recv_timeout(WATCHDOG);
            assert_eq!(seen, Ok(k), "watchdog: the client never saw chunk {k}");
        }
        stream.write_all(b"0\r\n\r\n").unwrap();
    });
    let client = UreqClient::new();
    let mut response = block_on(client.send(post(addr))).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header_value("Content-Type"),
        Some("text/event-stream")
    );
    let mut received = String::new();
    for k in 0..20 {
        read_until(
            &mut response,
            &mut received,
            &format!("data: chunk {k}\n\n"),
        );
        seen_tx.send(k).unwrap();
    }
    assert!(
        block_on(response.body.next()).is_none(),
        "the body should end after the last chunk"
    );
    server.join().unwrap();
}

#[test]
fn send_resolves_on_the_response_head() {
    let (head_seen_tx, head_seen_rx) = mpsc::channel::<()>();
    let head_seen_rx = std::sync::Mutex::new(head_seen_rx);
    let (addr, server) = serve(1, move |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        read_request(&mut reader).unwrap();
        let mut stream = stream;
        stream.write_all(SSE_HEAD.as_bytes()).unwrap();
        stream.flush().unwrap();
        // No body byte until the client has the head.
        head_seen_rx
            .lock()
            .unwrap()
            .recv_timeout(WATCHDOG)
            .expect("watchdog: send never resolved");
        write_chunk(&mut stream, "data: late\n\n");
        stream.write_all(b"0\r\n\r\n").unwrap();
    });
    let client = UreqClient::new();
    let mut response = block_on(client.send(post(addr))).unwrap();
    head_seen_tx.send(()).unwrap();
    let mut received = String::new();
    read_until(&mut response, &mut received, "data: late\n\n");
    server.join().unwrap();
}

#[test]
fn error_statuses_are_responses_with_their_body() {
    let (addr, server) = serve(1, |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        read_request(&mut reader).unwrap();
        let body = r#"{"error":{"message":"overloaded"}}"#;
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 2\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    let client = UreqClient::new();
    let response = block_on(client.send(post(addr))).unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(response.header_value("retry-after"), Some("2"));
    let body: Vec<u8> = block_on(response.body.map(|c| c.unwrap().to_vec()).concat());
    assert_eq!(body, br#"{"error":{"message":"overloaded"}}"#);
    server.join().unwrap();
}

#[test]
fn connection_refused_is_a_connect_error() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let client = UreqClient::new();
    let request = post(addr).connect_timeout(Some(Duration::from_secs(5)));
    let err = block_on(client.send(request)).unwrap_err();
    assert_eq!(err.kind, HttpErrorKind::Connect, "{err}");
    assert!(!err.message.contains("sk-test-secret"));
}

#[test]
fn invalid_header_is_an_invalid_request_without_the_value() {
    let client = UreqClient::new();
    let request = HttpRequest::new(Method::Post, "http://127.0.0.1:9/x")
        .header("authorization", "Bearer sk-secret\n");
    let err = block_on(client.send(request)).unwrap_err();
    assert_eq!(err.kind, HttpErrorKind::InvalidRequest);
    assert!(err.message.contains("authorization"), "{err}");
    assert!(!err.to_string().contains("sk-secret"), "{err}");
    let err = block_on(client.send(HttpRequest::new(Method::Get, "not a url"))).unwrap_err();
    assert_eq!(err.kind, HttpErrorKind::InvalidRequest, "{err}");
}

#[test]
fn dropping_the_body_closes_the_connection_while_the_server_is_idle() {
    let (closed_tx, closed_rx) = mpsc::channel::<()>();
    let (addr, server) = serve(1, move |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        read_request(&mut reader).unwrap();
        let mut stream = stream;
        stream.write_all(SSE_HEAD.as_bytes()).unwrap();
        write_chunk(&mut stream, "data: one\n\n");
        // Send nothing more: the client's reader thread is blocked in `read`. The client
        // dropping its body must still close the connection.
        expect_eof(&mut reader, "after the body was dropped");
        closed_tx.send(()).unwrap();
    });
    let client = UreqClient::new();
    let mut response = block_on(client.send(post(addr))).unwrap();
    let mut received = String::new();
    read_until(&mut response, &mut received, "data: one\n\n");
    drop(response);
    closed_rx
        .recv_timeout(WATCHDOG)
        .expect("watchdog: the server never saw the connection close");
    server.join().unwrap();
}

#[test]
fn dropping_the_send_future_before_the_head_closes_the_connection() {
    let (request_seen_tx, request_seen_rx) = mpsc::channel::<()>();
    let (closed_tx, closed_rx) = mpsc::channel::<()>();
    let (addr, server) = serve(1, move |stream, _| {
        let mut reader = BufReader::new(stream);
        read_request(&mut reader).unwrap();
        request_seen_tx.send(()).unwrap();
        // Never answer: the client gives up by dropping the future.
        expect_eof(&mut reader, "after the send future was dropped");
        closed_tx.send(()).unwrap();
    });
    let client = UreqClient::new();
    let mut sending = client.send(post(addr));
    assert!((&mut sending).now_or_never().is_none(), "no response yet");
    request_seen_rx
        .recv_timeout(WATCHDOG)
        .expect("watchdog: the request never arrived");
    drop(sending);
    closed_rx
        .recv_timeout(WATCHDOG)
        .expect("watchdog: the server never saw the connection close");
    server.join().unwrap();
}

#[test]
fn a_completed_exchange_returns_its_connection_to_the_pool() {
    // Two requests in a row over one connection: the abort machinery must not close a
    // connection whose body was read to the end.
    let (addr, server) = serve(1, |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        for i in 0..2 {
            read_request(&mut reader).expect("the second request should reuse the connection");
            stream.write_all(SSE_HEAD.as_bytes()).unwrap();
            write_chunk(&mut stream, &format!("data: {i}\n\n"));
            stream.write_all(b"0\r\n\r\n").unwrap();
        }
    });
    let client = UreqClient::new();
    for i in 0..2 {
        let mut response = block_on(client.send(post(addr))).unwrap();
        let mut received = String::new();
        read_until(&mut response, &mut received, &format!("data: {i}\n\n"));
        assert!(block_on(response.body.next()).is_none());
        drop(response);
    }
    server.join().unwrap();
}

#[test]
fn after_an_aborted_exchange_the_next_request_gets_a_fresh_connection() {
    let (addr, server) = serve(2, |stream, i| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        read_request(&mut reader).unwrap();
        stream.write_all(SSE_HEAD.as_bytes()).unwrap();
        write_chunk(&mut stream, &format!("data: conn {i}\n\n"));
        if i == 0 {
            expect_eof(&mut reader, "first connection");
        } else {
            stream.write_all(b"0\r\n\r\n").unwrap();
        }
    });
    let client = UreqClient::new();
    let mut first = block_on(client.send(post(addr))).unwrap();
    let mut received = String::new();
    read_until(&mut first, &mut received, "data: conn 0\n\n");
    drop(first);
    let mut second = block_on(client.send(post(addr))).unwrap();
    let mut received = String::new();
    read_until(&mut second, &mut received, "data: conn 1\n\n");
    assert!(block_on(second.body.next()).is_none());
    server.join().unwrap();
}

#[test]
fn a_large_body_arrives_complete_through_the_bounded_hand_off() {
    const TOTAL: usize = 2 * 1024 * 1024;
    let (addr, server) = serve(1, |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        read_request(&mut reader).unwrap();
        let mut stream = stream;
        write!(stream, "HTTP/1.1 200 OK\r\ncontent-length: {TOTAL}\r\n\r\n").unwrap();
        let block = vec![b'x'; 64 * 1024];
        for _ in 0..TOTAL / block.len() {
            stream.write_all(&block).unwrap();
        }
    });
    let client = UreqClient::new();
    let response =
        block_on(client.send(HttpRequest::new(Method::Get, format!("http://{addr}/big")))).unwrap();
    let total: usize = block_on(
        response
            .body
            .map(|c| c.unwrap().len())
            .fold(0, |a, n| async move { a + n }),
    );
    assert_eq!(total, TOTAL);
    server.join().unwrap();
}

#[test]
fn a_truncated_body_is_an_io_error() {
    let (addr, server) = serve(1, |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        read_request(&mut reader).unwrap();
        let mut stream = stream;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly a few bytes")
            .unwrap();
    });
    let client = UreqClient::new();
    let response = block_on(client.send(post(addr))).unwrap();
    let items: Vec<_> = block_on(response.body.collect());
    let last = items.last().unwrap();
    assert_eq!(last.as_ref().unwrap_err().kind, HttpErrorKind::Io);
    server.join().unwrap();
}

#[test]
fn https_goes_through_rustls_and_a_failed_handshake_is_a_connect_error() {
    // A plain-text server on an https:// URL: the TLS handshake fails.
    let (addr, server) = serve(1, |mut stream, _| {
        let mut hello = [0u8; 5];
        // A TLS ClientHello starts with a handshake record (0x16, version 3.x).
        stream.read_exact(&mut hello).unwrap();
        assert_eq!(hello[0], 0x16, "expected a TLS ClientHello");
        assert_eq!(hello[1], 3);
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
    });
    let client = UreqClient::new();
    let request = HttpRequest::new(Method::Get, format!("https://{addr}/"))
        .connect_timeout(Some(Duration::from_secs(5)));
    let err = block_on(client.send(request)).unwrap_err();
    assert_eq!(err.kind, HttpErrorKind::Connect, "{err}");
    server.join().unwrap();
}

#[test]
fn dropping_the_client_closes_its_pooled_connections() {
    // A completed exchange leaves its connection in ureq's pool; once the last clone of the
    // client is gone, the pool goes and so does the connection (no socket outlives it).
    let (eof_tx, eof_rx) = std::sync::mpsc::channel();
    let (addr, server) = serve(1, move |stream, _| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut stream = stream;
        read_request(&mut reader).unwrap();
        stream.write_all(SSE_HEAD.as_bytes()).unwrap();
        write_chunk(&mut stream, "data: 0\n\n");
        stream.write_all(b"0\r\n\r\n").unwrap();
        expect_eof(&mut reader, "after the client was dropped");
        eof_tx.send(()).unwrap();
    });
    let client = UreqClient::new();
    let mut response = block_on(client.send(post(addr))).unwrap();
    let mut received = String::new();
    read_until(&mut response, &mut received, "data: 0\n\n");
    assert!(block_on(response.body.next()).is_none());
    drop(response);
    drop(client);
    eof_rx
        .recv_timeout(WATCHDOG)
        .expect("the pooled connection was not closed after the client was dropped");
    server.join().unwrap();
}

// ---------------------------------------------------------------------------------------
// Proxies: the one `ProxyConfig` of agent-core, against the kit's `TestProxy`.

mod proxies {
    use super::*;
    use agent_core::http::HttpError;
    use agent_core::http::proxy::ProxyConfig;
    use conformance::kit::proxy::TestProxy;
    use conformance::kit::upstream::{GatedUpstream, openai};
    use test_support::reliability::TlsServer;

    fn vars(pairs: &[(&str, &str)]) -> ProxyConfig {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        ProxyConfig::from_vars(move |name| {
            pairs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        })
    }

    /// Send `request` and read the whole body, on a thread bounded by the watchdog.
    fn exchange(client: &UreqClient, request: HttpRequest) -> Result<(u16, String), HttpError> {
        let client = client.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let result = block_on(async {
                let response = client.send(request).await?;
                let status = response.status;
                let mut body = Vec::new();
                let mut stream = response.body;
                while let Some(chunk) = stream.next().await {
                    body.extend_from_slice(&chunk?);
                }
                Ok((status, String::from_utf8_lossy(&body).into_owned()))
            });
            let _ = tx.send(result);
        });
        rx.recv_timeout(WATCHDOG)
            .expect("watchdog: the exchange did not finish")
    }

    fn chat(upstream: &GatedUpstream) -> HttpRequest {
        HttpRequest::new(
            Method::Post,
            format!("{}/chat/completions", upstream.base_url()),
        )
        .header("content-type", "application/json")
        .body(br#"{"stream":true}"#.to_vec())
    }

    #[test]
    fn http_goes_to_the_proxy_in_absolute_form() {
        let upstream = GatedUpstream::start([
            openai::answer(&["Hello", " there"]),
            openai::answer(&["again"]),
        ])
        .unwrap();
        let proxy = TestProxy::start().unwrap();
        let client = UreqClient::new().with_proxy(vars(&[("HTTP_PROXY", &proxy.url())]));
        let (status, body) = exchange(&client, chat(&upstream)).unwrap();
        assert_eq!(status, 200);
        assert!(body.contains(r#""content":" there""#), "{body}");
        // A second request opens a new connection, in absolute-form again.
        let (status, body) = exchange(&client, chat(&upstream)).unwrap();
        assert_eq!((status, body.contains("again")), (200, true), "{body}");
        let line = format!(
            "POST http://{}/v1/chat/completions HTTP/1.1",
            upstream.addr()
        );
        assert_eq!(proxy.request_lines(), [line.clone(), line]);
        let received = upstream.requests();
        assert_eq!(received[0].path, "/v1/chat/completions");
        assert_eq!(
            received[0].header("host"),
            Some(upstream.addr().to_string().as_str())
        );
        assert_eq!(received[0].body, br#"{"stream":true}"#);
    }

    #[test]
    fn no_proxy_bypasses_the_proxy() {
        let upstream = GatedUpstream::start([openai::answer(&["direct"])]).unwrap();
        let proxy = TestProxy::start().unwrap();
        let config = vars(&[
            ("http_proxy", &proxy.url()),
            ("NO_PROXY", " example.com, 127.0.0.1 "),
        ]);
        let (status, body) =
            exchange(&UreqClient::new().with_proxy(config), chat(&upstream)).unwrap();
        assert_eq!((status, body.contains("direct")), (200, true), "{body}");
        assert_eq!(upstream.request_count(), 1);
        assert_eq!(proxy.request_count(), 0, "{:?}", proxy.request_lines());
    }

    #[test]
    fn all_proxy_serves_a_scheme_without_its_variable() {
        let upstream = GatedUpstream::start([openai::answer(&["via all"])]).unwrap();
        let proxy = TestProxy::start().unwrap();
        let config = vars(&[
            ("ALL_PROXY", &proxy.url()),
            ("HTTPS_PROXY", "http://127.0.0.1:1"),
        ]);
        let (status, _) = exchange(&UreqClient::new().with_proxy(config), chat(&upstream)).unwrap();
        assert_eq!(status, 200);
        assert!(proxy.wait_for_requests(1, WATCHDOG));
        assert!(proxy.request_lines()[0].starts_with("POST http://127.0.0.1:"));
    }

    #[test]
    fn credentials_reach_the_proxy_and_never_show() {
        let upstream = GatedUpstream::start([openai::answer(&["authed"])]).unwrap();
        let proxy = TestProxy::with_credentials("alice", "s3cret-pw").unwrap();
        let config = vars(&[(
            "HTTP_PROXY",
            &proxy.url_with_credentials("alice", "s3cret-pw"),
        )]);
        let client = UreqClient::new().with_proxy(config);
        let (status, _) = exchange(&client, chat(&upstream)).unwrap();
        assert_eq!(status, 200);
        let seen = proxy.requests();
        assert!(
            seen[0]
                .header("proxy-authorization")
                .is_some_and(|v| v.starts_with("Basic ")),
            "{seen:?}"
        );
        assert!(
            upstream.requests()[0]
                .header("proxy-authorization")
                .is_none()
        );
        let shown = format!("{client:?}");
        assert!(
            !shown.contains("s3cret-pw") && !shown.contains("alice"),
            "{shown}"
        );
    }

    #[test]
    fn https_goes_through_connect_with_tls_inside() {
        let server = TlsServer::start(1, &["tunnelled"]);
        let proxy = TestProxy::start().unwrap();
        let client = UreqClient::danger_accept_invalid_certs()
            .with_proxy(vars(&[("HTTPS_PROXY", &proxy.url())]));
        let url = format!("https://127.0.0.1:{}/", server.addr.port());
        let (status, body) = exchange(&client, HttpRequest::new(Method::Get, url)).unwrap();
        assert_eq!((status, body.as_str()), (200, "tunnelled"));
        assert_eq!(
            proxy.request_lines(),
            [format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.addr.port())]
        );
        assert_eq!(server.outcomes(), ["served"]);
    }

    #[test]
    fn a_refused_connect_is_a_connect_error_without_credentials() {
        let proxy = TestProxy::with_credentials("alice", "right").unwrap();
        let config = vars(&[(
            "HTTPS_PROXY",
            &proxy.url_with_credentials("alice", "wrong-pw"),
        )]);
        let client = UreqClient::new().with_proxy(config);
        let err = exchange(
            &client,
            HttpRequest::new(Method::Get, "https://127.0.0.1:9/"),
        )
        .unwrap_err();
        assert_eq!(err.kind, HttpErrorKind::Connect, "{err}");
        assert!(err.message.contains("407"), "{err}");
        assert_eq!(
            proxy.request_lines(),
            ["CONNECT 127.0.0.1:9 HTTP/1.1".to_string()]
        );
        let shown = format!("{err} {err:?}");
        assert!(
            !shown.contains("wrong-pw") && !shown.contains("alice"),
            "{shown}"
        );
        assert!(!shown.contains("YWxpY2U6d3Jvbmct"), "{shown}");
    }
}

/// A head of `head_bytes` (padded with one header), then an empty body.
fn head_of(head_bytes: usize) -> String {
    // `connection: close`: the second request must get a connection of its own, not reuse
    // the first one from the pool (whose test server answers once).
    let start = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\nx-pad: ";
    let pad = head_bytes - start.len() - "\r\n\r\n".len();
    format!("{start}{}\r\n\r\n", "p".repeat(pad))
}

#[test]
fn a_head_at_the_limit_is_accepted_and_one_byte_more_is_too_large() {
    use backend_blocking::MAX_RESPONSE_HEAD_BYTES;
    let (addr, server) = serve(2, |stream, i| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        read_request(&mut reader).unwrap();
        let mut stream = stream;
        let size = MAX_RESPONSE_HEAD_BYTES + i;
        // The client may close as soon as it has seen too much.
        let _ = stream.write_all(head_of(size).as_bytes());
        let _ = stream.flush();
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
    });
    let client = UreqClient::new();
    let get = || HttpRequest::new(Method::Get, format!("http://{addr}/head"));
    let fits = block_on(client.send(get())).expect("a head of exactly the limit");
    assert_eq!(fits.status, 200);
    drop(fits);
    let err = block_on(client.send(get())).expect_err("a head one byte over the limit");
    assert_eq!(err.kind, HttpErrorKind::ResponseHeadTooLarge, "{err}");
    server.join().unwrap();
}

/// Threads of this process (Linux).
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

#[test]
#[cfg(any(target_os = "linux", target_os = "android"))]
fn open_bodies_take_no_thread_each() {
    const STREAMS: usize = 40;
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = std::sync::Arc::new(std::sync::Mutex::new(release_rx));
    let (addr, server) = serve(STREAMS, move |stream, i| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        read_request(&mut reader).unwrap();
        let mut stream = stream;
        stream.write_all(SSE_HEAD.as_bytes()).unwrap();
        write_chunk(&mut stream, &format!("data: first {i}\n\n"));
        // Hold the body open until the test has counted.
        let _ = release_rx.lock().unwrap().recv_timeout(WATCHDOG);
        write_chunk(&mut stream, &format!("data: last {i}\n\n"));
        stream.write_all(b"0\r\n\r\n").unwrap();
    });
    let client = UreqClient::new();
    let before = threads();
    let mut responses: Vec<HttpResponse> = (0..STREAMS)
        .map(|_| block_on(client.send(post(addr))).unwrap())
        .collect();
    let mut texts = vec![String::new(); STREAMS];
    for (response, text) in responses.iter_mut().zip(&mut texts) {
        read_until(response, text, "data: first");
    }
    // The exchange threads end once their head has arrived; the test server holds a thread
    // per connection (STREAMS of them) and the client at most one body reader.
    let deadline = std::time::Instant::now() + WATCHDOG;
    let mut now = threads();
    while now > before + STREAMS + 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{now} threads for {STREAMS} open bodies (from {before}): a thread per body?"
        );
        std::thread::sleep(Duration::from_millis(5));
        now = threads();
    }
    for _ in 0..STREAMS {
        release_tx.send(()).unwrap();
    }
    for (response, text) in responses.iter_mut().zip(&mut texts) {
        read_until(response, text, "data: last");
        let end = block_on(response.body.next());
        assert!(end.is_none(), "after the last chunk: {end:?}");
    }
    server.join().unwrap();
}
