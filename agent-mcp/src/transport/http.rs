//! [`HttpTransport`]: the Streamable HTTP transport of the spec, over the backend's
//! [`HttpClient`].

use std::fmt;
use std::sync::{Arc, Mutex};

use agent_core::http::{HttpClient, HttpRequest, HttpResponse, Method};
use agent_core::runtime::BoxFuture;
use agent_core::sse::{SseDecoder, SseItem, SseLimits};
use futures_util::StreamExt;
use serde_json::Value;

use super::Transport;
use crate::error::{McpError, McpErrorKind, excerpt};
use crate::jsonrpc::{self, Incoming};

/// The session header of Streamable HTTP.
pub const SESSION_HEADER: &str = "Mcp-Session-Id";

/// The protocol version header sent after `initialize`.
pub const PROTOCOL_VERSION_HEADER: &str = "MCP-Protocol-Version";

/// An MCP server behind one HTTP endpoint (the Streamable HTTP transport of the spec).
///
/// Every message is a `POST` of one JSON-RPC object to the endpoint with
/// `Accept: application/json, text/event-stream`. The answer to a request is read from
/// either kind of response: a JSON body, or an SSE stream whose events carry JSON-RPC
/// messages (notifications before the response are skipped; a request from the server, such
/// as `ping`, is answered with a POST of its own). The `Mcp-Session-Id` the
/// server assigns is sent back on every later request, and `MCP-Protocol-Version` once
/// negotiated. A 404 while in a session means the session is gone
/// ([`McpErrorKind::Closed`]).
///
/// Bodies and SSE events are bounded by `max_message_bytes` ([`McpErrorKind::TooLarge`]).
pub struct HttpTransport {
    shared: Arc<Shared>,
}

struct Shared {
    client: Arc<dyn HttpClient>,
    url: String,
    headers: Vec<(String, String)>,
    max_message_bytes: usize,
    session: Arc<Mutex<Option<String>>>,
    protocol_version: Mutex<Option<String>>,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("url", &self.shared.url)
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// A transport posting to `url` through `client`, with extra `headers` on every request
    /// (an `Authorization` header, say).
    pub fn new(
        client: Arc<dyn HttpClient>,
        url: impl Into<String>,
        headers: Vec<(String, String)>,
        max_message_bytes: usize,
    ) -> Self {
        HttpTransport {
            shared: Arc::new(Shared {
                client,
                url: url.into(),
                headers,
                max_message_bytes,
                session: Arc::new(Mutex::new(None)),
                protocol_version: Mutex::new(None),
            }),
        }
    }

    /// The session id the server assigned, if any.
    pub fn session_id(&self) -> Option<String> {
        self.shared.session_id()
    }
}

impl Shared {
    fn session_id(&self) -> Option<String> {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn post(&self, message: &Value) -> Exchange {
        let mut request = HttpRequest::new(Method::Post, &self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let session = self.session_id();
        if let Some(session) = &session {
            request = request.header(SESSION_HEADER, session);
        }
        let version = self
            .protocol_version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(version) = version {
            request = request.header(PROTOCOL_VERSION_HEADER, version);
        }
        Exchange {
            client: self.client.clone(),
            request: request.body(message.to_string().into_bytes()),
            url: self.url.clone(),
            had_session: session.is_some(),
            session: self.session.clone(),
            max: self.max_message_bytes,
        }
    }
}

/// One POST, ready to send.
struct Exchange {
    client: Arc<dyn HttpClient>,
    request: HttpRequest,
    url: String,
    had_session: bool,
    session: Arc<Mutex<Option<String>>>,
    max: usize,
}

impl Exchange {
    async fn send(self) -> Result<(HttpResponse, String, usize), McpError> {
        let Exchange {
            client,
            request,
            url,
            had_session,
            session,
            max,
        } = self;
        let mut response = client.send(request).await.map_err(|err| {
            McpError::new(
                McpErrorKind::Http,
                format!("POST {url} to the MCP server failed: {err}"),
            )
        })?;
        if let Some(id) = response.header_value(SESSION_HEADER) {
            *session.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.to_owned());
        }
        if response.status == 404 && had_session {
            *session.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return Err(McpError::closed(format!(
                "the MCP server at {url} ended the session (404)"
            )));
        }
        if !(200..300).contains(&response.status) {
            let status = response.status;
            let body = read_body(&mut response, 4096).await.unwrap_or_default();
            return Err(McpError::new(
                McpErrorKind::Http,
                format!(
                    "the MCP server at {url} answered HTTP {status}: {}",
                    excerpt(String::from_utf8_lossy(&body).trim(), 200)
                ),
            ));
        }
        Ok((response, url, max))
    }
}

/// The body, up to `max` bytes (an error past it).
async fn read_body(response: &mut HttpResponse, max: usize) -> Result<Vec<u8>, McpError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.body.next().await {
        let chunk = chunk.map_err(|err| {
            McpError::new(
                McpErrorKind::Http,
                format!("reading the MCP response failed: {err}"),
            )
        })?;
        if body.len() + chunk.len() > max {
            return Err(McpError::new(
                McpErrorKind::TooLarge,
                format!("the MCP server's response is larger than {max} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The response to request `id` among `messages`, if there; requests from the server are
/// answered (`ping`; "method not found" for the rest) with a POST each.
async fn find_response(
    shared: &Shared,
    messages: Vec<Incoming>,
    id: u64,
) -> Option<Result<Value, McpError>> {
    let url = &shared.url;
    for message in messages {
        match message {
            Incoming::Response { id: got, message } if got == id => return Some(Ok(message)),
            Incoming::MalformedResponse { id: got } if got == id => {
                return Some(Err(McpError::protocol(format!(
                    "the MCP server at {url} answered request {id} with neither result nor error"
                ))));
            }
            Incoming::Request {
                id: request,
                method,
            } => {
                let answer = jsonrpc::answer_server_request(request, &method);
                if let Err(err) = shared.post(&answer).send().await {
                    tracing::warn!(method, error = %err, "could not answer the MCP server's request");
                }
            }
            Incoming::Notification { method } => tracing::debug!(method, "MCP notification"),
            other => tracing::debug!(
                ?other,
                "ignoring an MCP message that answers no waiting request"
            ),
        }
    }
    None
}

async fn await_response(shared: Arc<Shared>, message: Value, id: u64) -> Result<Value, McpError> {
    let (mut response, url, max) = shared.post(&message).send().await?;
    if response.status == 202 {
        return Err(McpError::protocol(format!(
            "the MCP server at {url} accepted request {id} (202) without answering it"
        )));
    }
    let content_type = response
        .header_value("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("text/event-stream") {
        let mut decoder = SseDecoder::with_limits(SseLimits {
            max_line_bytes: max,
            max_event_bytes: max,
        });
        let mut ended = false;
        loop {
            while let Some(item) = decoder.next_item() {
                match item {
                    Ok(SseItem::Event(event)) if !event.data.trim().is_empty() => {
                        let messages = jsonrpc::parse(event.data.as_bytes())?;
                        if let Some(found) = find_response(&shared, messages, id).await {
                            return found;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        return Err(McpError::new(
                            McpErrorKind::TooLarge,
                            format!("the MCP server's event stream broke a bound: {err}"),
                        ));
                    }
                }
            }
            if ended {
                return Err(McpError::closed(format!(
                    "the MCP server at {url} ended its event stream before answering request {id}"
                )));
            }
            match response.body.next().await {
                Some(Ok(chunk)) => decoder.push(&chunk),
                Some(Err(err)) => {
                    return Err(McpError::closed(format!(
                        "the MCP server at {url} broke the event stream before answering request {id}: {err}"
                    )));
                }
                None => {
                    decoder.finish();
                    ended = true;
                }
            }
        }
    } else if content_type.starts_with("application/json") {
        let body = read_body(&mut response, max).await?;
        let messages = jsonrpc::parse(&body)?;
        match find_response(&shared, messages, id).await {
            Some(found) => found,
            None => Err(McpError::protocol(format!(
                "the MCP server at {url} answered with JSON that holds no response to request {id}"
            ))),
        }
    } else {
        Err(McpError::protocol(format!(
            "the MCP server at {url} answered with content type `{content_type}`, neither application/json nor text/event-stream"
        )))
    }
}

impl Transport for HttpTransport {
    fn request(&self, id: u64, message: Value) -> BoxFuture<Result<Value, McpError>> {
        Box::pin(await_response(self.shared.clone(), message, id))
    }

    fn notify(&self, message: Value) -> BoxFuture<Result<(), McpError>> {
        let exchange = self.shared.post(&message);
        Box::pin(async move {
            // 202 Accepted is the answer; the body (if any) is not read.
            exchange.send().await.map(drop)
        })
    }

    fn negotiated(&self, protocol_version: &str) {
        *self
            .shared
            .protocol_version
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(protocol_version.to_owned());
    }

    fn describe(&self) -> String {
        self.shared.url.clone()
    }
}
