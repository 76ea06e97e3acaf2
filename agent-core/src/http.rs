//! The HTTP transport the core's model providers speak through.
//!
//! A backend implements [`HttpClient`] with its own client (reqwest, surf, ureq, …). The core
//! only sends one request and reads the response body as a [`Stream`]
//! of byte chunks, delivered as they arrive.
//!
//! ```
//! use agent_core::http::{HttpRequest, Method};
//!
//! let request = HttpRequest::new(Method::Post, "http://127.0.0.1:8080/v1/chat/completions")
//!     .header("content-type", "application/json")
//!     .body(br#"{"stream":true}"#.to_vec());
//! assert_eq!(request.header_value("Content-Type"), Some("application/json"));
//! ```

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;

use crate::runtime::BoxFuture;

pub mod proxy;
mod request_log;

pub use request_log::{REQUEST_LOG_TARGET, log_request};

/// HTTP method of an [`HttpRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
}

impl Method {
    /// The method as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// A request for an [`HttpClient`].
///
/// Header values may hold secrets (an `Authorization` header), so `Debug` prints header names
/// only, never values.
#[derive(Clone)]
pub struct HttpRequest {
    /// The method.
    pub method: Method,
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The request body (empty for none).
    pub body: Vec<u8>,
    /// Maximum time to establish the connection (TCP and TLS); `None` for the client default.
    pub connect_timeout: Option<Duration>,
}

impl HttpRequest {
    /// A request with no headers and an empty body.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        HttpRequest {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            connect_timeout: None,
        }
    }

    /// Add a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Set the body.
    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// Set the connect timeout.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("header_names", &names)
            .field("body_len", &self.body.len())
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The body of an [`HttpResponse`]: byte chunks in the order they arrived.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, HttpError>> + Send + 'static>>;

/// A response whose status and headers have arrived; its body is still streaming.
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// The body, chunk by chunk.
    pub body: BodyStream,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

impl fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// What went wrong in an [`HttpClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpErrorKind {
    /// Could not connect: refused, unreachable, DNS, TLS handshake.
    Connect,
    /// Connecting took longer than [`HttpRequest::connect_timeout`].
    ConnectTimeout,
    /// The request could not be built (bad URL, bad header).
    InvalidRequest,
    /// The connection failed after the response started (reset, truncated body, bad framing).
    Io,
    /// The response's status line and headers are larger than the client accepts (too many
    /// bytes or too many header fields). Every client reports it with the same message,
    /// [`HttpError::response_head_too_large`].
    ResponseHeadTooLarge,
}

/// The largest response head (status line and headers, in bytes) the backends' own clients
/// accept: `SmolClient`, `TokioClient` and `UreqClient`. 16 KiB, as Node.js's HTTP parser
/// (`--max-http-header-size`); nginx's proxy accepts 4 or 8 KiB by default. A larger head
/// fails with [`HttpErrorKind::ResponseHeadTooLarge`] ([`HttpError::response_head_too_large`]).
/// `ReqwestClient` keeps reqwest's own limit.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 16 * 1024;

/// An error from an [`HttpClient`]. Its message never contains header values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The category.
    pub kind: HttpErrorKind,
    /// A human-readable message.
    pub message: String,
}

impl HttpError {
    /// An error of `kind` with `message`.
    pub fn new(kind: HttpErrorKind, message: impl Into<String>) -> Self {
        HttpError {
            kind,
            message: message.into(),
        }
    }

    /// The error every client returns for an oversized response head, in the same words.
    ///
    /// ```
    /// use agent_core::http::{HttpError, HttpErrorKind};
    /// let err = HttpError::response_head_too_large();
    /// assert_eq!(err.kind, HttpErrorKind::ResponseHeadTooLarge);
    /// assert_eq!(err.to_string(), "response head too large: the response head is larger than the client accepts (too many header bytes or fields)");
    /// ```
    pub fn response_head_too_large() -> Self {
        HttpError::new(
            HttpErrorKind::ResponseHeadTooLarge,
            "the response head is larger than the client accepts (too many header bytes or fields)",
        )
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            HttpErrorKind::Connect => "connection failed",
            HttpErrorKind::ConnectTimeout => "connect timed out",
            HttpErrorKind::InvalidRequest => "invalid request",
            HttpErrorKind::Io => "connection error",
            HttpErrorKind::ResponseHeadTooLarge => "response head too large",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for HttpError {}

/// Sends HTTP requests and streams their response bodies.
///
/// The contract every implementation keeps (the conformance suite checks it):
///
/// * `send` returns its future at once and does no I/O until polled. The future resolves as
///   soon as the status line and headers have arrived, before any body byte is awaited.
///   Any status is a success at this level: 3xx, 4xx and 5xx come back as an
///   [`HttpResponse`]. Redirects are never followed (the request may carry credentials and
///   a whole conversation; the caller decides).
/// * A response head over the client's limits fails with
///   [`HttpErrorKind::ResponseHeadTooLarge`] ([`HttpError::response_head_too_large`]).
/// * The [`BodyStream`] yields each chunk as soon as it is read from the socket: no
///   coalescing to fill a buffer, no waiting for the end. Chunk boundaries are arbitrary.
///   It ends with `None` after the last byte, or with an [`HttpErrorKind::Io`] error if the
///   connection breaks or the body is truncated.
/// * Dropping the `send` future or the body stream aborts the exchange and closes the
///   connection promptly (it must not be returned to a pool with an unread body). The peer
///   sees the close within about a second.
/// * [`HttpRequest::connect_timeout`] is honoured when set ([`HttpErrorKind::ConnectTimeout`]).
///   Other timeouts (first byte, inactivity) are applied by the caller.
/// * Nothing is retried here; retries belong to the caller's policy.
/// * Errors never contain header values (which may be secrets).
pub trait HttpClient: Send + Sync + fmt::Debug + 'static {
    /// Send `request`; resolve when the response head has arrived.
    fn send(&self, request: HttpRequest) -> BoxFuture<Result<HttpResponse, HttpError>>;
}
