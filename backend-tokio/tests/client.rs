//! `ReqwestClient` against std-thread TCP servers, on both runtime flavours.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use agent_core::http::{HttpClient, HttpErrorKind, HttpRequest, HttpResponse, Method};
use backend_tokio::ReqwestClient;
use common::{Flavour, WATCHDOG};
use futures_util::StreamExt;

/// Read a request head and its Content-Length body.
fn read_request(stream: &mut TcpStream) -> io::Result<String> {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        data.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&data).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(head)
}

/// A one-connection server running `serve` on a std thread; returns its address and a
/// channel with the result of `serve`.
fn one_shot_server<T: Send + 'static>(
    serve: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (SocketAddr, mpsc::Receiver<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(WATCHDOG)).unwrap();
        read_request(&mut stream).unwrap();
        let _ = tx.send(serve(stream));
    });
    (addr, rx)
}

fn chunk(stream: &mut TcpStream, data: &str) -> io::Result<()> {
    write!(stream, "{:x}\r\n{data}\r\n", data.len())?;
    stream.flush()
}

fn client_for(rt: &tokio::runtime::Runtime) -> ReqwestClient {
    ReqwestClient::new().runtime_handle(rt.handle().clone())
}

/// Each chunk reaches the body stream before the server writes the next one: the server
/// writes chunk k+1 only after the test acknowledged chunk k.
fn chunks_arrive_in_lockstep(flavour: Flavour) {
    const CHUNKS: usize = 5;
    let (ack_tx, ack_rx) = mpsc::channel::<usize>();
    let (addr, served) = one_shot_server(move |mut stream| -> Result<(), String> {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
            .map_err(|e| e.to_string())?;
        for k in 0..CHUNKS {
            chunk(&mut stream, &format!("chunk-{k};")).map_err(|e| e.to_string())?;
            match ack_rx.recv_timeout(WATCHDOG) {
                Ok(seen) if seen == k => {}
                other => {
                    return Err(format!(
                        "chunk {k} was written but never seen by the client ({other:?})"
                    ));
                }
            }
        }
        stream.write_all(b"0\r\n\r\n").map_err(|e| e.to_string())
    });
    let rt = common::runtime(flavour);
    let client = client_for(&rt);
    rt.block_on(async move {
        let request =
            HttpRequest::new(Method::Post, format!("http://{addr}/stream")).body(b"{}".to_vec());
        let response = client.send(request).await.expect("response head");
        assert_eq!(response.status, 200);
        assert_eq!(response.header_value("content-type"), Some("text/plain"));
        let mut body = response.body;
        let mut received = String::new();
        for k in 0..CHUNKS {
            let expected = format!("chunk-{k};");
            while !received.ends_with(&expected) {
                let next = tokio::time::timeout(WATCHDOG, body.next())
                    .await
                    .unwrap_or_else(|_| panic!("chunk {k} was written but never delivered"));
                let bytes = next.expect("the body ended early").expect("body error");
                received.push_str(std::str::from_utf8(&bytes).unwrap());
            }
            ack_tx.send(k).unwrap();
        }
        let end = tokio::time::timeout(WATCHDOG, body.next())
            .await
            .expect("end of body");
        assert!(end.is_none(), "{end:?}");
    });
    served.recv_timeout(WATCHDOG).unwrap().unwrap();
}

fn connect_refused(flavour: Flavour) {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let rt = common::runtime(flavour);
    let client = client_for(&rt);
    let err = rt
        .block_on(
            client.send(
                HttpRequest::new(Method::Get, format!("http://{addr}/"))
                    .header("Authorization", "Bearer sk-very-secret"),
            ),
        )
        .expect_err("nothing listens there");
    assert_eq!(err.kind, HttpErrorKind::Connect, "{err}");
    assert!(!err.to_string().contains("sk-very-secret"), "{err}");
}

/// A listener whose accept queue is full drops new SYNs (Linux), so connecting hangs until
/// the request's connect timeout.
#[cfg(target_os = "linux")]
fn connect_timeout(flavour: Flavour) {
    let rt = common::runtime(flavour);
    let listener = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        socket.listen(0).unwrap()
    });
    let addr = listener.local_addr().unwrap();
    // Fill the accept queue (never accepted).
    let _filler = TcpStream::connect_timeout(&addr, WATCHDOG).unwrap();
    let client = client_for(&rt);
    let request = HttpRequest::new(Method::Get, format!("http://{addr}/"))
        .connect_timeout(Some(Duration::from_millis(200)));
    let err = rt
        .block_on(async { tokio::time::timeout(WATCHDOG, client.send(request)).await })
        .expect("the connect timeout fired")
        .expect_err("the connect cannot succeed");
    assert_eq!(err.kind, HttpErrorKind::ConnectTimeout, "{err}");
    drop(listener);
}

/// Dropping the body mid-stream closes the connection: the server reads EOF.
fn dropping_the_body_closes_the_connection(flavour: Flavour) {
    let (addr, served) = one_shot_server(|mut stream| -> Result<(), String> {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .map_err(|e| e.to_string())?;
        chunk(&mut stream, "first").map_err(|e| e.to_string())?;
        // The rest of the body never comes; the client must hang up.
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
            Ok(n) => Err(format!("unexpected {n} bytes from the client")),
            Err(e) => Err(format!("no EOF within the watchdog: {e}")),
        }
    });
    let rt = common::runtime(flavour);
    let client = client_for(&rt);
    let response: HttpResponse = rt
        .block_on(client.send(HttpRequest::new(Method::Get, format!("http://{addr}/"))))
        .unwrap();
    let mut body = response.body;
    let first = rt
        .block_on(async { tokio::time::timeout(WATCHDOG, body.next()).await })
        .expect("first chunk")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"first");
    drop(body);
    // On a current-thread runtime the connection task runs only while the runtime is driven.
    let result = rt.block_on(async {
        loop {
            if let Ok(result) = served.try_recv() {
                break result;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    result.unwrap();
}

/// A body read to its end returns the connection to reqwest's pool; dropping the client
/// (its last clone) closes it: no socket outlives the client.
fn dropping_the_client_closes_its_pooled_connections(flavour: Flavour) {
    let (addr, served) = one_shot_server(|mut stream| -> Result<(), String> {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .map_err(|e| e.to_string())?;
        stream.flush().map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
            Ok(n) => Err(format!("unexpected {n} bytes from the client")),
            Err(e) => Err(format!("the pooled connection stayed open: {e}")),
        }
    });
    let rt = common::runtime(flavour);
    let client = client_for(&rt);
    let body = rt.block_on(async {
        let response = client
            .send(HttpRequest::new(Method::Get, format!("http://{addr}/")))
            .await
            .unwrap();
        let mut body = response.body;
        let mut all = Vec::new();
        while let Some(chunk) = tokio::time::timeout(WATCHDOG, body.next()).await.unwrap() {
            all.extend_from_slice(&chunk.unwrap());
        }
        all
    });
    assert_eq!(body, b"hello");
    drop(client);
    // On a current-thread runtime the connection task runs only while the runtime is driven.
    let result = rt.block_on(async {
        tokio::time::timeout(WATCHDOG, async {
            loop {
                if let Ok(result) = served.try_recv() {
                    break result;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("watchdog: the server saw no EOF")
    });
    result.unwrap();
}

fn truncated_body_is_an_io_error(flavour: Flavour) {
    let (addr, _served) = one_shot_server(|mut stream| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this");
        // Closing here cuts the body short.
    });
    let rt = common::runtime(flavour);
    let client = client_for(&rt);
    let items = rt.block_on(async {
        let response = client
            .send(HttpRequest::new(Method::Get, format!("http://{addr}/")))
            .await
            .unwrap();
        tokio::time::timeout(WATCHDOG, response.body.collect::<Vec<_>>())
            .await
            .unwrap()
    });
    let last = items.last().expect("at least one item");
    let err = last
        .as_ref()
        .expect_err("a truncated body ends with an error");
    assert_eq!(err.kind, HttpErrorKind::Io, "{err}");
}

fn error_statuses_are_responses(flavour: Flavour) {
    let (addr, _served) = one_shot_server(|mut stream| {
        let _ = stream.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 4\r\n\r\nbusy",
        );
    });
    let rt = common::runtime(flavour);
    let client = client_for(&rt);
    let (status, retry, body) = rt.block_on(async {
        let response = client
            .send(HttpRequest::new(Method::Post, format!("http://{addr}/")))
            .await
            .unwrap();
        let retry = response.header_value("retry-after").map(str::to_string);
        let body: Vec<_> = response.body.map(|c| c.unwrap()).collect().await;
        (response.status, retry, body.concat())
    });
    assert_eq!(
        (status, retry.as_deref(), &body[..]),
        (503, Some("2"), &b"busy"[..])
    );
}

fn invalid_requests_name_no_values(flavour: Flavour) {
    let rt = common::runtime(flavour);
    let client = client_for(&rt);
    let err = rt
        .block_on(
            client.send(
                HttpRequest::new(Method::Get, "http://127.0.0.1:1/")
                    .header("x-api-key", "sk-secret\nvalue"),
            ),
        )
        .unwrap_err();
    assert_eq!(err.kind, HttpErrorKind::InvalidRequest);
    assert!(err.message.contains("x-api-key"), "{err}");
    assert!(!err.message.contains("sk-secret"), "{err}");

    let err = rt
        .block_on(client.send(HttpRequest::new(Method::Get, "not a url")))
        .unwrap_err();
    assert_eq!(err.kind, HttpErrorKind::InvalidRequest, "{err}");
}

both_flavours!(
    chunks_arrive_in_lockstep,
    connect_refused,
    dropping_the_body_closes_the_connection,
    dropping_the_client_closes_its_pooled_connections,
    truncated_body_is_an_io_error,
    error_statuses_are_responses,
    invalid_requests_name_no_values,
);

#[cfg(target_os = "linux")]
mod linux {
    #[test]
    fn connect_timeout_current_thread() {
        super::connect_timeout(super::Flavour::CurrentThread);
    }

    #[test]
    fn connect_timeout_multi_thread() {
        super::connect_timeout(super::Flavour::MultiThread);
    }
}

/// A client given a handle works from a plain thread, polled by a non-tokio executor.
#[test]
fn usable_outside_the_runtime() {
    let (addr, _served) = one_shot_server(|mut stream| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    });
    let rt = common::runtime(Flavour::MultiThread);
    let client = client_for(&rt);
    let body = agent_core::runtime::block_on(async {
        let response = client
            .send(HttpRequest::new(Method::Get, format!("http://{addr}/")))
            .await
            .unwrap();
        let chunks: Vec<_> = response.body.map(|c| c.unwrap()).collect().await;
        chunks.concat()
    });
    assert_eq!(body, b"ok");
}

/// Without any tokio runtime the client answers with an error instead of panicking.
#[test]
fn no_runtime_is_an_error_not_a_panic() {
    let client = ReqwestClient::new();
    let err = agent_core::runtime::block_on(
        client.send(HttpRequest::new(Method::Get, "http://127.0.0.1:1/")),
    )
    .unwrap_err();
    assert_eq!(err.kind, HttpErrorKind::Connect);
    assert!(err.message.contains("no tokio runtime"), "{err}");
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

    fn send(
        client: &ReqwestClient,
        rt: &tokio::runtime::Runtime,
        request: HttpRequest,
    ) -> Result<(u16, String), agent_core::http::HttpError> {
        rt.block_on(async {
            tokio::time::timeout(WATCHDOG, async {
                let response = client.send(request).await?;
                let status = response.status;
                let mut body = Vec::new();
                let mut stream = response.body;
                while let Some(chunk) = stream.next().await {
                    body.extend_from_slice(&chunk?);
                }
                Ok((status, String::from_utf8_lossy(&body).into_owned()))
            })
            .await
            .expect("the exchange outlived the watchdog")
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

    fn proxied_client(rt: &tokio::runtime::Runtime, config: ProxyConfig) -> ReqwestClient {
        client_for(rt).with_proxy(config)
    }

    #[test]
    fn http_goes_to_the_proxy_in_absolute_form() {
        let rt = common::runtime(Flavour::MultiThread);
        let upstream = GatedUpstream::start([openai::answer(&["Hello", " there"])]).unwrap();
        let proxy = TestProxy::start().unwrap();
        let client = proxied_client(&rt, vars(&[("HTTP_PROXY", &proxy.url())]));
        let (status, body) = send(&client, &rt, chat(&upstream)).unwrap();
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
        let rt = common::runtime(Flavour::MultiThread);
        let upstream = GatedUpstream::start([openai::answer(&["direct"])]).unwrap();
        let proxy = TestProxy::start().unwrap();
        let config = vars(&[
            ("http_proxy", &proxy.url()),
            ("NO_PROXY", " example.com, 127.0.0.1 "),
        ]);
        let (status, body) = send(&proxied_client(&rt, config), &rt, chat(&upstream)).unwrap();
        assert_eq!((status, body.contains("direct")), (200, true), "{body}");
        assert_eq!(upstream.request_count(), 1);
        assert_eq!(proxy.request_count(), 0, "{:?}", proxy.request_lines());
    }

    #[test]
    fn all_proxy_serves_a_scheme_without_its_variable() {
        let rt = common::runtime(Flavour::MultiThread);
        let upstream = GatedUpstream::start([openai::answer(&["via all"])]).unwrap();
        let proxy = TestProxy::start().unwrap();
        // HTTPS_PROXY (unusable here) is for https:// only; ALL_PROXY serves http://.
        let config = vars(&[
            ("ALL_PROXY", &proxy.url()),
            ("HTTPS_PROXY", "http://127.0.0.1:1"),
        ]);
        let (status, _) = send(&proxied_client(&rt, config), &rt, chat(&upstream)).unwrap();
        assert_eq!(status, 200);
        assert!(proxy.wait_for_requests(1, WATCHDOG));
        assert!(proxy.request_lines()[0].starts_with("POST http://127.0.0.1:"));
    }

    #[test]
    fn credentials_reach_the_proxy_and_never_show() {
        let rt = common::runtime(Flavour::MultiThread);
        let upstream = GatedUpstream::start([openai::answer(&["authed"])]).unwrap();
        let proxy = TestProxy::with_credentials("alice", "s3cret-pw").unwrap();
        let config = vars(&[(
            "HTTP_PROXY",
            &proxy.url_with_credentials("alice", "s3cret-pw"),
        )]);
        let client = proxied_client(&rt, config);
        let (status, _) = send(&client, &rt, chat(&upstream)).unwrap();
        assert_eq!(status, 200);
        let seen = proxy.requests();
        assert!(
            seen[0]
                .header("proxy-authorization")
                .is_some_and(|v| v.starts_with("Basic ")),
            "{seen:?}"
        );
        // The upstream never sees the proxy's credentials.
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
    fn https_goes_through_connect() {
        let rt = common::runtime(Flavour::MultiThread);
        let server = TlsServer::start(1, &["tunnelled"]);
        let proxy = TestProxy::start().unwrap();
        let client = ReqwestClient::danger_accept_invalid_certs()
            .runtime_handle(rt.handle().clone())
            .with_proxy(vars(&[("HTTPS_PROXY", &proxy.url())]));
        let url = format!("https://127.0.0.1:{}/", server.addr.port());
        let (status, body) = send(&client, &rt, HttpRequest::new(Method::Get, url)).unwrap();
        assert_eq!((status, body.as_str()), (200, "tunnelled"));
        assert_eq!(
            proxy.request_lines(),
            [format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.addr.port())]
        );
        assert_eq!(server.outcomes(), ["served"]);
    }

    #[test]
    fn a_refused_connect_is_a_connect_error_without_credentials() {
        let rt = common::runtime(Flavour::MultiThread);
        let proxy = TestProxy::with_credentials("alice", "right").unwrap();
        let config = vars(&[(
            "HTTPS_PROXY",
            &proxy.url_with_credentials("alice", "wrong-pw"),
        )]);
        let client = proxied_client(&rt, config);
        let err = send(
            &client,
            &rt,
            HttpRequest::new(Method::Get, "https://127.0.0.1:9/"),
        )
        .unwrap_err();
        assert_eq!(err.kind, HttpErrorKind::Connect, "{err}");
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
        // reqwest (hyper-util) names a 407 this way; other statuses are "unsuccessful".
        assert!(
            err.message.contains("proxy authorization required"),
            "{err}"
        );
    }
}
