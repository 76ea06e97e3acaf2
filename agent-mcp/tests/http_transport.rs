//! The Streamable HTTP transport against a scripted `HttpClient` (no network): JSON, SSE
//! split anywhere, batches, server requests answered with a POST, the session header, a
//! lost session, wrong content types and bounds.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use agent_core::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use agent_core::runtime::{BoxFuture, block_on};
use agent_mcp::{HttpTransport, McpErrorKind, Transport, jsonrpc};
use bytes::Bytes;
use serde_json::{Value, json};

#[derive(Debug)]
struct Canned {
    status: u16,
    headers: Vec<(String, String)>,
    chunks: Vec<Vec<u8>>,
}

fn canned(status: u16, content_type: &str, body: &str) -> Canned {
    Canned {
        status,
        headers: vec![("content-type".into(), content_type.into())],
        chunks: vec![body.as_bytes().to_vec()],
    }
}

#[derive(Debug)]
struct ScriptedHttp {
    responses: Mutex<VecDeque<Canned>>,
    requests: Mutex<Vec<HttpRequest>>,
}

impl ScriptedHttp {
    fn new(responses: Vec<Canned>) -> Arc<Self> {
        Arc::new(ScriptedHttp {
            responses: Mutex::new(responses.into()),
            requests: Mutex::default(),
        })
    }

    fn bodies(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    }
}

impl HttpClient for ScriptedHttp {
    fn send(&self, request: HttpRequest) -> BoxFuture<Result<HttpResponse, HttpError>> {
        self.requests.lock().unwrap().push(request);
        let Canned {
            status,
            headers,
            chunks,
        } = self
            .responses
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| canned(202, "text/plain", ""));
        Box::pin(async move {
            let body = futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
            Ok(HttpResponse {
                status,
                headers,
                body: Box::pin(body),
            })
        })
    }
}

fn transport(http: &Arc<ScriptedHttp>, max: usize) -> HttpTransport {
    HttpTransport::new(
        http.clone(),
        "http://127.0.0.1:1/mcp",
        vec![("authorization".into(), "Bearer t".into())],
        max,
    )
}

fn request(t: &HttpTransport, id: u64) -> Result<Value, agent_mcp::McpError> {
    block_on(t.request(id, jsonrpc::request(id, "tools/call", json!({}))))
}

#[test]
fn json_and_sse_split_anywhere_with_a_server_ping_answered() {
    let sse = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"s1\",\"method\":\"ping\"}\n\n\
               data: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"ok\":2}}\n\n";
    let mut split = canned(200, "text/event-stream", "");
    split.chunks = sse.as_bytes().chunks(7).map(<[u8]>::to_vec).collect();
    let mut first = canned(
        200,
        "application/json; charset=utf-8",
        r#"{"jsonrpc":"2.0","id":1,"result":{"ok":1}}"#,
    );
    first.headers.push(("mcp-session-id".into(), "abc".into()));
    let http = ScriptedHttp::new(vec![first, split, canned(202, "text/plain", "")]);
    let t = transport(&http, 1 << 20);
    assert_eq!(request(&t, 1).unwrap()["result"]["ok"], 1);
    t.negotiated("2025-06-18");
    assert_eq!(request(&t, 2).unwrap()["result"]["ok"], 2);
    assert_eq!(t.session_id().as_deref(), Some("abc"));
    let requests = http.requests.lock().unwrap();
    assert_eq!(
        requests.len(),
        3,
        "two requests and the answer to the server's ping"
    );
    assert_eq!(requests[0].header_value("mcp-session-id"), None);
    assert_eq!(requests[0].header_value("authorization"), Some("Bearer t"));
    for r in &requests[1..] {
        assert_eq!(r.header_value("mcp-session-id"), Some("abc"));
        assert_eq!(r.header_value("mcp-protocol-version"), Some("2025-06-18"));
    }
    drop(requests);
    assert_eq!(
        http.bodies()[2],
        json!({"jsonrpc": "2.0", "id": "s1", "result": {}})
    );
}

#[test]
fn a_batch_answer_is_searched_for_our_id() {
    let body = r#"[{"jsonrpc":"2.0","method":"notifications/progress"},{"jsonrpc":"2.0","id":9,"result":"mine"}]"#;
    let http = ScriptedHttp::new(vec![canned(200, "application/json", body)]);
    assert_eq!(
        request(&transport(&http, 1 << 20), 9).unwrap()["result"],
        "mine"
    );
}

#[test]
fn a_lost_session_wrong_content_types_and_bounds_are_clear_errors() {
    let mut init = canned(
        200,
        "application/json",
        r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
    );
    init.headers.push(("mcp-session-id".into(), "abc".into()));
    let http = ScriptedHttp::new(vec![
        init,
        canned(404, "text/plain", "no such session"),
        canned(200, "text/html", "<html>"),
        canned(
            200,
            "application/json",
            &format!("\"{}\"", "x".repeat(5000)),
        ),
        canned(
            200,
            "text/event-stream",
            &format!("data: {}\n\n", "x".repeat(5000)),
        ),
        canned(202, "text/plain", ""),
        canned(503, "text/plain", "overloaded"),
    ]);
    let t = transport(&http, 1024);
    request(&t, 1).unwrap();
    let lost = request(&t, 2).unwrap_err();
    assert_eq!(lost.kind, McpErrorKind::Closed, "{lost}");
    assert_eq!(t.session_id(), None, "the lost session is forgotten");
    let html = request(&t, 3).unwrap_err();
    assert_eq!(html.kind, McpErrorKind::Protocol, "{html}");
    assert!(html.message.contains("text/html"), "{html}");
    assert_eq!(request(&t, 4).unwrap_err().kind, McpErrorKind::TooLarge);
    assert_eq!(request(&t, 5).unwrap_err().kind, McpErrorKind::TooLarge);
    assert_eq!(
        request(&t, 6).unwrap_err().kind,
        McpErrorKind::Protocol,
        "202 is no answer"
    );
    let busy = request(&t, 7).unwrap_err();
    assert_eq!(busy.kind, McpErrorKind::Http);
    assert!(busy.message.contains("HTTP 503: overloaded"), "{busy}");
}
