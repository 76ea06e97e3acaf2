//! TLS: certificates are verified by default; `danger_accept_invalid_certs` is the opt-out
//! for local servers. Against a local server with a self-signed certificate.

mod common;

use agent_core::http::{HttpClient, HttpErrorKind, HttpRequest, Method};
use backend_smol::SmolClient;
use common::WATCHDOG;
use futures_lite::StreamExt;
use test_support::reliability::TlsServer;

const CHUNKS: &[&str] = &["first;", "second;", "third;"];

fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    smol::block_on(futures_lite::future::or(
        async { Some(future.await) },
        async {
            async_io::Timer::after(WATCHDOG).await;
            None
        },
    ))
    .expect("watchdog")
}

#[test]
fn the_default_client_refuses_a_self_signed_certificate() {
    let server = TlsServer::start(1, CHUNKS);
    let url = format!("https://127.0.0.1:{}/", server.addr.port());
    let err = within(SmolClient::new().send(HttpRequest::new(Method::Get, url)))
        .expect_err("a self-signed certificate must not be accepted");
    assert_eq!(err.kind, HttpErrorKind::Connect, "{err}");
    assert!(err.message.contains("certificate"), "{err}");
    eprintln!("TLS refusal: {err}");
    let outcomes = server.outcomes();
    assert!(outcomes[0].starts_with("failed"), "{outcomes:?}");
}

#[test]
fn the_opt_out_accepts_it_and_streams_the_body() {
    let server = TlsServer::start(1, CHUNKS);
    let client = SmolClient::danger_accept_invalid_certs();
    assert!(format!("{client:?}").contains("danger_accept_invalid_certs: true"));
    assert!(format!("{:?}", SmolClient::new()).contains("danger_accept_invalid_certs: false"));
    // The host name does not matter either (the certificate names localhost and 127.0.0.1).
    let url = format!("https://127.0.0.1:{}/", server.addr.port());
    let text = within(async {
        let response = client
            .send(HttpRequest::new(Method::Get, url))
            .await
            .expect("the opt-out client accepts the certificate");
        assert_eq!(response.status, 200);
        let mut body = response.body;
        let mut text = String::new();
        while let Some(chunk) = body.next().await {
            text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
        text
    });
    assert_eq!(text, CHUNKS.concat());
    assert_eq!(server.outcomes(), ["served"]);
}
