//! TLS: certificates are verified by default; `danger_accept_invalid_certs` is the opt-out
//! for local servers. Against a local server with a self-signed certificate.

mod common;

use agent_core::http::{HttpClient, HttpErrorKind, HttpRequest, Method};
use agent_core::runtime::block_on;
use backend_blocking::UreqClient;
use futures_util::StreamExt;
use test_support::reliability::TlsServer;

const CHUNKS: &[&str] = &["first;", "second;", "third;"];

#[test]
fn the_default_client_refuses_a_self_signed_certificate() {
    let server = TlsServer::start(1, CHUNKS);
    let url = format!("https://127.0.0.1:{}/", server.addr.port());
    let err = block_on(UreqClient::new().send(HttpRequest::new(Method::Get, url)))
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
    let client = UreqClient::danger_accept_invalid_certs();
    assert!(format!("{client:?}").contains("danger_accept_invalid_certs: true"));
    assert!(format!("{:?}", UreqClient::new()).contains("danger_accept_invalid_certs: false"));
    let url = format!("https://127.0.0.1:{}/", server.addr.port());
    let response = block_on(client.send(HttpRequest::new(Method::Get, url)))
        .expect("the opt-out client accepts the certificate");
    assert_eq!(response.status, 200);
    let mut body = response.body;
    let mut text = String::new();
    while let Some(chunk) = block_on(body.next()) {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert_eq!(text, CHUNKS.concat());
    assert_eq!(server.outcomes(), ["served"]);
}
