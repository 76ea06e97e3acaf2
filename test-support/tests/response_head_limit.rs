//! The backends' own HTTP clients apply one response-head limit,
//! `agent_core::http::MAX_RESPONSE_HEAD_BYTES`: a head of exactly that many bytes is
//! accepted, one byte more fails with `ResponseHeadTooLarge`, in the same words on each.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use agent_core::http::{
    HttpClient, HttpError, HttpErrorKind, HttpRequest, MAX_RESPONSE_HEAD_BYTES, Method,
};

/// A response head of exactly `bytes` bytes (`connection: close`, no body).
fn head_of(bytes: usize) -> String {
    let start = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\nx-pad: ";
    let pad = bytes - start.len() - "\r\n\r\n".len();
    format!("{start}{}\r\n\r\n", "p".repeat(pad))
}

/// A server answering its first connection with a head of `limit` bytes and its second with
/// one of `limit + 1`, then ending.
fn serve_two_heads() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        for extra in 0..2 {
            let (stream, _) = listener.accept().expect("accept");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut stream = stream;
            // The client may close as soon as it has seen too much.
            let _ = stream.write_all(head_of(MAX_RESPONSE_HEAD_BYTES + extra).as_bytes());
            let _ = stream.flush();
            let _ = reader.read_to_end(&mut Vec::new());
        }
    });
    (addr, server)
}

/// Send the two requests with `send` (which drives the client's future on its executor).
fn check(name: &str, send: impl Fn(HttpRequest) -> Result<u16, HttpError>) {
    let (addr, server) = serve_two_heads();
    let get = || HttpRequest::new(Method::Get, format!("http://{addr}/head"));
    let fits = send(get()).unwrap_or_else(|e| panic!("{name}: a head of exactly the limit: {e}"));
    assert_eq!(
        fits, 200,
        "{name}: a head of exactly the limit is a response"
    );
    let err = send(get()).expect_err("a head one byte over the limit");
    assert_eq!(
        err.kind,
        HttpErrorKind::ResponseHeadTooLarge,
        "{name}: one byte over the limit: {err}"
    );
    assert_eq!(
        err.to_string(),
        HttpError::response_head_too_large().to_string(),
        "{name}: the same words on every backend"
    );
    server.join().expect("server thread");
}

fn status_of(
    client: &dyn HttpClient,
    request: HttpRequest,
) -> impl Future<Output = Result<u16, HttpError>> + '_ {
    let sent = client.send(request);
    async move { sent.await.map(|response| response.status) }
}

#[test]
fn every_backend_client_accepts_a_head_at_the_limit_and_refuses_one_byte_more() {
    let ureq = backend_blocking::UreqClient::new();
    check("UreqClient", |request| {
        agent_core::runtime::block_on(status_of(&ureq, request))
    });

    let smol = backend_smol::SmolClient::new();
    check("SmolClient", |request| {
        agent_core::runtime::block_on(status_of(&smol, request))
    });

    let runtime = backend_tokio::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let tokio_client: Arc<dyn HttpClient> = Arc::new(backend_tokio::TokioClient::with_handle(
        runtime.handle().clone(),
    ));
    check("TokioClient", |request| {
        runtime.block_on(status_of(tokio_client.as_ref(), request))
    });
}
