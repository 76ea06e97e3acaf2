//! `SmolClient` against std-thread TCP servers: incremental chunks (lockstep), framing,
//! connect errors and timeouts, closing on drop, and errors without header values.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use agent_core::http::{HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpResponse, Method};
use backend_smol::SmolClient;
use bytes::Bytes;
use common::WATCHDOG;
use futures_lite::StreamExt;

/// A one-connection server on a std thread: reads the request head, then runs `script`.
fn one_shot_server(
    script: impl FnOnce(TcpStream, String) + Send + 'static,
) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WATCHDOG)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !common::contains(&request, b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the client closed before sending a request");
            request.extend_from_slice(&buf[..n]);
        }
        script(stream, String::from_utf8_lossy(&request).into_owned());
    });
    (addr, handle)
}

fn send(request: HttpRequest) -> Result<HttpResponse, HttpError> {
    smol::block_on(SmolClient::new().send(request))
}

/// The next body chunk, or a failure naming `what` if it does not come within the watchdog.
async fn next_chunk(response: &mut HttpResponse, what: &str) -> Option<Result<Bytes, HttpError>> {
    futures_lite::future::or(response.body.next(), async {
        async_io::Timer::after(WATCHDOG).await;
        panic!("watchdog: {what} never arrived");
    })
    .await
}

async fn read_body(response: &mut HttpResponse) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    while let Some(chunk) = next_chunk(response, "the rest of the body").await {
        body.extend_from_slice(&chunk?);
    }
    Ok(body)
}

/// The server sends chunk k+1 only after the test has seen chunk k: a client that waits to
/// fill a buffer (or for the end) deadlocks here and the watchdog names the missing chunk.
#[test]
fn body_chunks_arrive_as_they_are_sent() {
    let (seen_tx, seen_rx) = mpsc::channel::<usize>();
    let (addr, server) = one_shot_server(move |mut stream, request| {
        assert!(
            request.starts_with("POST /v1/chat HTTP/1.1\r\n"),
            "{request}"
        );
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            .unwrap();
        for k in 0..5 {
            let data = format!("data: {k}\n\n");
            stream
                .write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
                .unwrap();
            let seen = seen_rx
                .recv_timeout(WATCHDOG)
                .unwrap_or_else(|_| panic!("the client never saw chunk {k}"));
            assert_eq!(seen, k);
        }
        stream.write_all(b"0\r\n\r\n").unwrap();
    });
    smol::block_on(async {
        let request =
            HttpRequest::new(Method::Post, format!("http://{addr}/v1/chat")).body(b"{}".to_vec());
        let mut response = SmolClient::new().send(request).await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header_value("Content-Type"),
            Some("text/event-stream")
        );
        for k in 0..5 {
            let mut got = Vec::new();
            let expected = format!("data: {k}\n\n");
            while got.len() < expected.len() {
                let chunk = next_chunk(&mut response, &format!("chunk {k}")).await;
                got.extend_from_slice(&chunk.expect("the body ended early").unwrap());
            }
            assert_eq!(String::from_utf8(got).unwrap(), expected);
            seen_tx.send(k).unwrap();
        }
        assert!(
            next_chunk(&mut response, "the end of the body")
                .await
                .is_none()
        );
    });
    server.join().unwrap();
}

#[test]
fn the_response_resolves_on_its_head() {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (addr, server) = one_shot_server(move |mut stream, _| {
        stream
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\n")
            .unwrap();
        release_rx.recv_timeout(WATCHDOG).unwrap();
        stream.write_all(b"busy").unwrap();
    });
    smol::block_on(async {
        let mut response = SmolClient::new()
            .send(HttpRequest::new(Method::Get, format!("http://{addr}/")))
            .await
            .unwrap();
        // The head arrived while the body is still held back; 5xx is not an error here.
        assert_eq!(response.status, 503);
        release_tx.send(()).unwrap();
        assert_eq!(read_body(&mut response).await.unwrap(), b"busy");
    });
    server.join().unwrap();
}

#[test]
fn bodies_delimited_by_close_and_interim_responses() {
    let (addr, server) = one_shot_server(|mut stream, _| {
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nuntil ")
            .unwrap();
        stream.write_all(b"close").unwrap();
    });
    let mut response = send(HttpRequest::new(Method::Get, format!("http://{addr}/"))).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        smol::block_on(read_body(&mut response)).unwrap(),
        b"until close"
    );
    server.join().unwrap();
}

#[test]
fn a_truncated_body_is_an_io_error() {
    let (addr, server) = one_shot_server(|mut stream, _| {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
            .unwrap();
    });
    let mut response = send(HttpRequest::new(Method::Get, format!("http://{addr}/"))).unwrap();
    let err = smol::block_on(read_body(&mut response)).unwrap_err();
    assert_eq!(err.kind, HttpErrorKind::Io, "{err}");
    server.join().unwrap();

    let (addr, server) = one_shot_server(|mut stream, _| {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel")
            .unwrap();
    });
    let mut response = send(HttpRequest::new(Method::Get, format!("http://{addr}/"))).unwrap();
    let err = smol::block_on(read_body(&mut response)).unwrap_err();
    assert_eq!(err.kind, HttpErrorKind::Io, "{err}");
    server.join().unwrap();
}

#[test]
fn the_request_is_written_as_given() {
    let (request_tx, request_rx) = mpsc::channel::<String>();
    let (addr, server) = one_shot_server(move |mut stream, head| {
        let mut body = [0u8; 7];
        let after_head = head.split_once("\r\n\r\n").unwrap().1.len();
        stream.read_exact(&mut body[after_head..]).unwrap();
        request_tx.send(head).unwrap();
        stream
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap();
    });
    let request = HttpRequest::new(Method::Post, format!("http://{addr}/v1/x?y=1"))
        .header("authorization", "Bearer sk-test")
        .header("content-type", "application/json")
        .body(b"{\"a\":1}".to_vec());
    let mut response = send(request).unwrap();
    assert_eq!(response.status, 204);
    assert!(smol::block_on(read_body(&mut response)).unwrap().is_empty());
    let head = request_rx.recv().unwrap();
    assert!(head.starts_with("POST /v1/x?y=1 HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("authorization: Bearer sk-test\r\n"), "{head}");
    assert!(head.contains(&format!("host: {addr}\r\n")), "{head}");
    assert!(head.contains("content-length: 7\r\n"), "{head}");
    assert!(
        head.ends_with("{\"a\":1}") || head.ends_with("\r\n\r\n"),
        "{head}"
    );
    server.join().unwrap();
}

#[test]
fn a_refused_connection_is_a_connect_error_without_header_values() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let request = HttpRequest::new(Method::Post, format!("http://{addr}/v1/chat/completions"))
        .header("authorization", "Bearer sk-very-secret");
    let err = send(request).unwrap_err();
    assert_eq!(err.kind, HttpErrorKind::Connect, "{err}");
    assert!(!err.to_string().contains("sk-very-secret"));
    assert!(!format!("{err:?}").contains("sk-very-secret"));
}

#[test]
fn bad_urls_are_invalid_requests() {
    for url in [
        "ftp://127.0.0.1/",
        "not a url",
        "http://127.0.0.1:0x/",
        "http://h:/",
    ] {
        let err = send(HttpRequest::new(Method::Get, url)).unwrap_err();
        assert_eq!(err.kind, HttpErrorKind::InvalidRequest, "{url}: {err}");
    }
}

/// The TLS handshake is part of connecting: a server that accepts TCP but never answers
/// the ClientHello trips the connect timeout.
#[test]
fn a_stalled_tls_handshake_trips_the_connect_timeout() {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (_stream, _) = listener.accept().unwrap();
        let _ = done_rx.recv_timeout(WATCHDOG);
    });
    let request = HttpRequest::new(Method::Get, format!("https://localhost:{}/", addr.port()))
        .connect_timeout(Some(Duration::from_millis(100)));
    let err = send(request).unwrap_err();
    assert_eq!(err.kind, HttpErrorKind::ConnectTimeout, "{err}");
    done_tx.send(()).unwrap();
    server.join().unwrap();
}

/// A listener whose accept queue is full drops new SYNs, so TCP connect itself hangs.
#[test]
fn a_hanging_tcp_connect_trips_the_connect_timeout() {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    // Fill the queue (never accepted); connects past its capacity hang.
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            fillers.push(s);
        } else {
            break;
        }
    }
    let request = HttpRequest::new(Method::Get, format!("http://{addr}/"))
        .connect_timeout(Some(Duration::from_millis(100)));
    let err = send(request).unwrap_err();
    assert_eq!(err.kind, HttpErrorKind::ConnectTimeout, "{err}");
    drop(fillers);
}

#[test]
fn tls_against_a_plain_http_server_fails_to_connect() {
    let (addr, server) = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        });
        (addr, handle)
    };
    let request = HttpRequest::new(Method::Get, format!("https://localhost:{}/", addr.port()))
        .connect_timeout(Some(WATCHDOG));
    let err = send(request).unwrap_err();
    assert_eq!(err.kind, HttpErrorKind::Connect, "{err}");
    server.join().unwrap();
}

/// Dropping the body mid-stream closes the connection: the server reads EOF.
#[test]
fn dropping_the_body_closes_the_connection() {
    let (eof_tx, eof_rx) = mpsc::channel::<Result<usize, String>>();
    let (addr, server) = one_shot_server(move |mut stream, _| {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            .unwrap();
        let mut buf = [0u8; 64];
        let _ = eof_tx.send(stream.read(&mut buf).map_err(|e| e.to_string()));
    });
    smol::block_on(async {
        let mut response = SmolClient::new()
            .send(HttpRequest::new(Method::Get, format!("http://{addr}/")))
            .await
            .unwrap();
        let first = next_chunk(&mut response, "the first chunk")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&first[..], b"first");
        drop(response);
    });
    let read = eof_rx
        .recv_timeout(WATCHDOG + Duration::from_secs(1))
        .unwrap();
    assert_eq!(
        read,
        Ok(0),
        "the server should see EOF once the body is dropped"
    );
    server.join().unwrap();
}

/// Dropping the `send` future before the head arrives also closes the connection.
#[test]
fn dropping_the_send_future_closes_the_connection() {
    let (eof_tx, eof_rx) = mpsc::channel::<Result<usize, String>>();
    let (head_seen_tx, head_seen_rx) = mpsc::channel::<()>();
    let (addr, server) = one_shot_server(move |mut stream, _| {
        head_seen_tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        let _ = eof_tx.send(stream.read(&mut buf).map_err(|e| e.to_string()));
    });
    smol::block_on(async {
        let send = SmolClient::new().send(HttpRequest::new(Method::Get, format!("http://{addr}/")));
        let gave_up = futures_lite::future::or(async { send.await.map(|_| false) }, async {
            // Give up once the server has the request (checked without blocking the thread).
            while head_seen_rx.try_recv().is_err() {
                async_io::Timer::after(Duration::from_millis(2)).await;
            }
            Ok(true)
        })
        .await
        .unwrap();
        assert!(gave_up);
    });
    let read = eof_rx
        .recv_timeout(WATCHDOG + Duration::from_secs(1))
        .unwrap();
    assert_eq!(read, Ok(0));
    server.join().unwrap();
}

/// A connection reset (linger 0) mid-body ends the body with an `Io` error, promptly.
#[test]
fn a_reset_mid_body_is_an_io_error() {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (addr, server) = one_shot_server(move |mut stream, _| {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            .unwrap();
        go_rx.recv_timeout(WATCHDOG).unwrap();
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(stream);
    });
    smol::block_on(async {
        let mut response = SmolClient::new()
            .send(HttpRequest::new(Method::Get, format!("http://{addr}/")))
            .await
            .unwrap();
        let first = next_chunk(&mut response, "the first chunk")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&first[..], b"first");
        go_tx.send(()).unwrap();
        let err = next_chunk(&mut response, "the reset")
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind, HttpErrorKind::Io, "{err}");
    });
    server.join().unwrap();
}

// ---------------------------------------------------------------------------------------
// Proxies: the one `ProxyConfig` of agent-core, against the kit's `TestProxy`.

mod proxies {
    use super::*;
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

    fn exchange(client: &SmolClient, request: HttpRequest) -> Result<(u16, String), HttpError> {
        smol::block_on(async {
            let mut response = futures_lite::future::or(client.send(request), async {
                async_io::Timer::after(WATCHDOG).await;
                panic!("watchdog: the response head never arrived");
            })
            .await?;
            let body = read_body(&mut response).await?;
            Ok((response.status, String::from_utf8_lossy(&body).into_owned()))
        })
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
        let upstream = GatedUpstream::start([openai::answer(&["Hello", " there"])]).unwrap();
        let proxy = TestProxy::start().unwrap();
        let client = SmolClient::new().with_proxy(vars(&[("HTTP_PROXY", &proxy.url())]));
        let (status, body) = exchange(&client, chat(&upstream)).unwrap();
        assert_eq!(status, 200);
        assert!(body.contains(r#""content":" there""#), "{body}");
        assert_eq!(
            proxy.request_lines(),
            [format!(
                "POST http://{}/v1/chat/completions HTTP/1.1",
                upstream.addr()
            )]
        );
        let received = upstream.requests();
        assert_eq!(received[0].path, "/v1/chat/completions");
        assert_eq!(
            received[0].header("host"),
            Some(upstream.addr().to_string().as_str())
        );
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
            exchange(&SmolClient::new().with_proxy(config), chat(&upstream)).unwrap();
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
        let (status, _) = exchange(&SmolClient::new().with_proxy(config), chat(&upstream)).unwrap();
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
        let client = SmolClient::new().with_proxy(config);
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
        let client = SmolClient::danger_accept_invalid_certs()
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
    fn the_upstream_certificate_is_verified_inside_the_tunnel() {
        let server = TlsServer::start(1, &["never"]);
        let proxy = TestProxy::start().unwrap();
        let client = SmolClient::new().with_proxy(vars(&[("HTTPS_PROXY", &proxy.url())]));
        let url = format!("https://127.0.0.1:{}/", server.addr.port());
        let err = exchange(&client, HttpRequest::new(Method::Get, url)).unwrap_err();
        assert_eq!(err.kind, HttpErrorKind::Connect, "{err}");
        assert!(err.message.contains("TLS handshake"), "{err}");
        assert_eq!(proxy.request_count(), 1);
    }

    #[test]
    fn a_refused_connect_is_a_connect_error_without_credentials() {
        let proxy = TestProxy::with_credentials("alice", "right").unwrap();
        let config = vars(&[(
            "HTTPS_PROXY",
            &proxy.url_with_credentials("alice", "wrong-pw"),
        )]);
        let client = SmolClient::new().with_proxy(config);
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

    /// A proxy that accepts and never answers the CONNECT: the connect timeout covers it.
    #[test]
    fn the_connect_timeout_covers_the_connect_exchange() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let silent = std::thread::spawn(move || {
            let (_stream, _) = listener.accept().unwrap();
            let _ = done_rx.recv_timeout(WATCHDOG);
        });
        let client =
            SmolClient::new().with_proxy(vars(&[("HTTPS_PROXY", &format!("http://{addr}"))]));
        let request = HttpRequest::new(Method::Get, "https://127.0.0.1:9/")
            .connect_timeout(Some(Duration::from_millis(200)));
        let err = exchange(&client, request).unwrap_err();
        assert_eq!(err.kind, HttpErrorKind::ConnectTimeout, "{err}");
        done_tx.send(()).unwrap();
        silent.join().unwrap();
    }
}
