//! TLS: certificates are verified by default; `danger_accept_invalid_certs` is the opt-out
//! for local servers. Against a local server with a self-signed certificate.

mod common;

use agent_core::http::{HttpClient, HttpErrorKind, HttpRequest, Method};
use backend_tokio::ReqwestClient;
use common::{Flavour, WATCHDOG};
use futures_util::StreamExt;
use test_support::reliability::TlsServer;

const CHUNKS: &[&str] = &["first;", "second;", "third;"];

fn default_client_refuses_a_self_signed_certificate(flavour: Flavour) {
    let server = TlsServer::start(1, CHUNKS);
    let rt = common::runtime(flavour);
    let client = ReqwestClient::new().runtime_handle(rt.handle().clone());
    let url = format!("https://127.0.0.1:{}/", server.addr.port());
    let err = rt
        .block_on(async {
            tokio::time::timeout(WATCHDOG, client.send(HttpRequest::new(Method::Get, url))).await
        })
        .expect("watchdog")
        .expect_err("a self-signed certificate must not be accepted");
    assert_eq!(err.kind, HttpErrorKind::Connect, "{err}");
    assert!(err.message.contains("certificate"), "{err}");
    eprintln!("TLS refusal: {err}");
    let outcomes = server.outcomes();
    assert!(outcomes[0].starts_with("failed"), "{outcomes:?}");
}

fn opt_out_accepts_it_and_streams_the_body(flavour: Flavour) {
    let server = TlsServer::start(1, CHUNKS);
    let rt = common::runtime(flavour);
    let client = ReqwestClient::danger_accept_invalid_certs().runtime_handle(rt.handle().clone());
    assert!(format!("{client:?}").contains("danger_accept_invalid_certs: true"));
    let url = format!("https://127.0.0.1:{}/", server.addr.port());
    let body = rt.block_on(async {
        let response =
            tokio::time::timeout(WATCHDOG, client.send(HttpRequest::new(Method::Get, url)))
                .await
                .expect("watchdog")
                .expect("the opt-out client accepts the certificate");
        assert_eq!(response.status, 200);
        let mut body = response.body;
        let mut text = String::new();
        while let Some(chunk) = tokio::time::timeout(WATCHDOG, body.next())
            .await
            .expect("watchdog")
        {
            text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
        text
    });
    assert_eq!(body, CHUNKS.concat());
    assert_eq!(server.outcomes(), ["served"]);
}

both_flavours!(
    default_client_refuses_a_self_signed_certificate,
    opt_out_accepts_it_and_streams_the_body,
);
