//! [`SmolClient`]: the core's [`HttpClient`] as a small HTTP/1.1 client on async-net and
//! futures-rustls.
//!
//! Each request opens its own connection (TCP, then TLS for `https://`), writes the request
//! with `Connection: close`, and resolves once the response head has arrived. The body is
//! then read straight from the socket: every read becomes one chunk, handed on at once.
//! Dropping the body (or the `send` future) drops the socket, which closes the connection;
//! nothing is pooled, so an unread body can never be reused.
//!
//! ```no_run
//! use agent_core::http::{HttpClient, HttpRequest, Method};
//! use backend_smol::SmolClient;
//! use futures_lite::StreamExt;
//!
//! let client = SmolClient::new();
//! smol::block_on(async {
//!     let request = HttpRequest::new(Method::Get, "http://127.0.0.1:8080/healthz");
//!     let mut response = client.send(request).await?;
//!     println!("status {}", response.status);
//!     while let Some(chunk) = response.body.next().await {
//!         print!("{}", String::from_utf8_lossy(&chunk?));
//!     }
//!     Ok::<_, agent_core::http::HttpError>(())
//! })?;
//! # Ok::<_, agent_core::http::HttpError>(())
//! ```

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use agent_core::http::{
    BodyStream, HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
};
use agent_core::runtime::BoxFuture;
use async_net::TcpStream;
use bytes::Bytes;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use futures_rustls::pki_types::ServerName;
use futures_rustls::rustls::{self, ClientConfig};

use crate::http1::{self, ChunkedDecoder, MAX_HEAD_BYTES, MAX_HEADERS};

/// Bytes asked of the socket per read while streaming a body.
const READ_BUF_BYTES: usize = 16 * 1024;

/// An [`HttpClient`] for the smol family: HTTP/1.1 over [`async_net`], TLS through
/// [`futures_rustls`] with the Mozilla roots of [`webpki_roots`].
///
/// Certificates are verified: a server whose certificate does not verify fails with
/// [`HttpErrorKind::Connect`] and a message naming the certificate problem. The only
/// opt-out, for a local development server with a self-signed certificate, is
/// [`SmolClient::danger_accept_invalid_certs`].
///
/// It keeps every promise of the [`HttpClient`] contract: `send` resolves on the response
/// head; body chunks are delivered as they are read; dropping the body closes the
/// connection; [`HttpRequest::connect_timeout`] bounds DNS, TCP and TLS together (an
/// [`async_io::Timer`] raced against them); errors carry no header values.
///
/// It needs no executor of its own: its futures can be polled by any executor, or by
/// `smol::block_on`, since socket readiness and timers come from async-io's reactor.
///
/// Why not surf: see the crate's README (surf 2.3 pulls tokio and async-std, keeps a dropped
/// body's connection in its pool, and has no connect timeout).
#[derive(Clone)]
pub struct SmolClient {
    /// The TLS connector, or why none could be built (then `https://` requests fail).
    tls: Result<TlsConnector, Arc<str>>,
    /// Made by [`SmolClient::danger_accept_invalid_certs`] (shown in `Debug`).
    danger_accept_invalid_certs: bool,
}

impl SmolClient {
    /// A client that trusts the Mozilla root certificates of [`webpki_roots`].
    pub fn new() -> Self {
        SmolClient::from_config(crate::tls::verified_config())
    }

    /// A client using your rustls configuration for `https://` (own roots, client
    /// certificates; ALPN should stay empty or offer `http/1.1`: this client speaks HTTP/1.1).
    pub fn with_tls_config(config: Arc<ClientConfig>) -> Self {
        SmolClient {
            tls: Ok(TlsConnector::from(config)),
            danger_accept_invalid_certs: false,
        }
    }

    /// A client like [`new`](Self::new) that accepts **any** TLS certificate: self-signed,
    /// expired, issued for another host. For local development servers only (a model server
    /// on your machine with a self-signed certificate); never for a remote API, where it
    /// would hand your API key and your data to whoever intercepts the connection.
    ///
    /// Every other client of this crate verifies certificates. To trust one private
    /// certificate authority instead, keep verification on: build a rustls [`ClientConfig`]
    /// with its root and use [`with_tls_config`](Self::with_tls_config).
    ///
    /// ```
    /// // https://127.0.0.1:8443 serves a self-signed certificate.
    /// let client = backend_smol::SmolClient::danger_accept_invalid_certs();
    /// # let _ = client;
    /// ```
    pub fn danger_accept_invalid_certs() -> Self {
        tracing::warn!(
            "SmolClient::danger_accept_invalid_certs: TLS certificates are NOT verified \
             (for local development servers only)"
        );
        SmolClient {
            danger_accept_invalid_certs: true,
            ..SmolClient::from_config(crate::tls::accept_any_config())
        }
    }

    fn from_config(config: Result<ClientConfig, rustls::Error>) -> Self {
        match config {
            Ok(config) => SmolClient::with_tls_config(Arc::new(config)),
            Err(err) => SmolClient {
                tls: Err(format!("no TLS configuration: {err}").into()),
                danger_accept_invalid_certs: false,
            },
        }
    }
}

impl Default for SmolClient {
    fn default() -> Self {
        SmolClient::new()
    }
}

impl fmt::Debug for SmolClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolClient")
            .field(
                "danger_accept_invalid_certs",
                &self.danger_accept_invalid_certs,
            )
            .finish_non_exhaustive()
    }
}

impl HttpClient for SmolClient {
    fn send(&self, request: HttpRequest) -> BoxFuture<Result<HttpResponse, HttpError>> {
        let tls = self.tls.clone();
        Box::pin(async move { send(tls, request).await })
    }
}

/// The parts of an `http://` or `https://` URL a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) tls: bool,
    /// Host name or IP literal, without brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The `Host` header value (`host[:port]`, brackets kept for IPv6).
    pub(crate) authority: String,
    /// Path and query, starting with `/`.
    pub(crate) path: String,
}

fn invalid(message: impl Into<String>) -> HttpError {
    HttpError::new(HttpErrorKind::InvalidRequest, message)
}

pub(crate) fn parse_url(url: &str) -> Result<Target, HttpError> {
    let (tls, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
        (false, rest)
    } else if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
        (true, rest)
    } else {
        return Err(invalid("the URL must start with http:// or https://"));
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.contains('@') {
        return Err(invalid(
            "credentials in the URL are not supported; use a header",
        ));
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| invalid("unclosed IPv6 literal in the URL"))?;
        let port = match after {
            "" => default_port,
            _ => parse_port(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| invalid("bad port in the URL"))?,
            )?,
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, parse_port(port)?),
            None => (authority, default_port),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b))
    {
        return Err(invalid("bad host in the URL"));
    }
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(invalid(
            "the URL path contains spaces or control characters",
        ));
    }
    Ok(Target {
        tls,
        host: host.to_string(),
        port,
        authority: authority.to_string(),
        path,
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn parse_port(port: &str) -> Result<u16, HttpError> {
    if port.is_empty() {
        return Err(invalid("empty port in the URL"));
    }
    port.parse().map_err(|_| invalid("bad port in the URL"))
}

/// A client connection, plain or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_close(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_close(cx),
        }
    }
}

async fn send(
    tls: Result<TlsConnector, Arc<str>>,
    request: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    let target = parse_url(&request.url)?;
    let head = request_head(&request, &target)?;
    let connect = connect(&tls, &target);
    let mut conn = match request.connect_timeout {
        Some(limit) => {
            let timer = async {
                async_io::Timer::after(limit).await;
                Err(HttpError::new(
                    HttpErrorKind::ConnectTimeout,
                    format!(
                        "no connection to {}:{} within {limit:?}",
                        target.host, target.port
                    ),
                ))
            };
            futures_lite::future::or(connect, timer).await?
        }
        None => connect.await?,
    };

    let io_error =
        |what: &str, err: io::Error| HttpError::new(HttpErrorKind::Io, format!("{what}: {err}"));
    conn.write_all(&head)
        .await
        .map_err(|e| io_error("sending the request", e))?;
    if !request.body.is_empty() {
        conn.write_all(&request.body)
            .await
            .map_err(|e| io_error("sending the request body", e))?;
    }
    conn.flush()
        .await
        .map_err(|e| io_error("sending the request", e))?;

    let mut buf = Vec::with_capacity(READ_BUF_BYTES);
    loop {
        let (status, headers, head_len) = read_response_head(&mut conn, &mut buf).await?;
        buf.drain(..head_len);
        // Interim responses (100 Continue, 103 Early Hints) precede the real one.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let framing = body_framing(status, &headers)?;
        let body = ResponseBodyStream {
            conn: Some(conn),
            framing,
            pending: buf,
            read_buf: vec![0; READ_BUF_BYTES],
        };
        return Ok(HttpResponse {
            status,
            headers,
            body: Box::pin(body) as BodyStream,
        });
    }
}

fn request_head(request: &HttpRequest, target: &Target) -> Result<Vec<u8>, HttpError> {
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method.as_str(), target.path);
    let mut has_host = false;
    for (name, value) in &request.headers {
        if !http1::is_token(name) {
            return Err(invalid(format!("invalid header name {name:?}")));
        }
        if !http1::is_valid_value(value) {
            // Never echo the value: it may be a secret.
            return Err(invalid(format!(
                "the value of header {name:?} contains CR, LF or NUL"
            )));
        }
        // The client owns the framing of the message.
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("connection")
        {
            continue;
        }
        has_host |= name.eq_ignore_ascii_case("host");
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    if !has_host {
        head.push_str("host: ");
        head.push_str(&target.authority);
        head.push_str("\r\n");
    }
    if !request.body.is_empty() || request.method == agent_core::http::Method::Post {
        head.push_str(&format!("content-length: {}\r\n", request.body.len()));
    }
    head.push_str("connection: close\r\n\r\n");
    Ok(head.into_bytes())
}

async fn connect(tls: &Result<TlsConnector, Arc<str>>, target: &Target) -> Result<Conn, HttpError> {
    let where_ = format!("{}:{}", target.host, target.port);
    let connect_error =
        |err: io::Error| HttpError::new(HttpErrorKind::Connect, format!("{where_}: {err}"));
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(connect_error)?;
    // Requests are small and written at once; do not let Nagle hold them back.
    let _ = tcp.set_nodelay(true);
    if !target.tls {
        return Ok(Conn::Plain(tcp));
    }
    let name = ServerName::try_from(target.host.clone()).map_err(|_| {
        HttpError::new(
            HttpErrorKind::InvalidRequest,
            format!("{} is not a valid TLS server name", target.host),
        )
    })?;
    let tls = tls
        .as_ref()
        .map_err(|why| HttpError::new(HttpErrorKind::Connect, why.to_string()))?;
    let stream = tls.connect(name, tcp).await.map_err(|err| {
        HttpError::new(
            HttpErrorKind::Connect,
            format!("TLS handshake with {where_}: {err}"),
        )
    })?;
    Ok(Conn::Tls(Box::new(stream)))
}

/// Read until a complete response head is in `buf`; return status, headers and head length.
async fn read_response_head(
    conn: &mut Conn,
    buf: &mut Vec<u8>,
) -> Result<(u16, Vec<(String, String)>, usize), HttpError> {
    let mut chunk = vec![0u8; READ_BUF_BYTES];
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = response.code.unwrap_or_default();
                    let headers = response
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    return Ok((status, headers, len));
                }
                Ok(httparse::Status::Partial) => {}
                Err(err) => {
                    return Err(HttpError::new(
                        HttpErrorKind::Io,
                        format!("malformed response head: {err}"),
                    ));
                }
            }
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HttpError::new(
                HttpErrorKind::Io,
                format!("the response head exceeds {MAX_HEAD_BYTES} bytes"),
            ));
        }
        let n = conn.read(&mut chunk).await.map_err(|e| {
            HttpError::new(HttpErrorKind::Io, format!("reading the response head: {e}"))
        })?;
        if n == 0 {
            return Err(HttpError::new(
                HttpErrorKind::Io,
                "the server closed the connection before sending a response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// How the end of a response body is found.
#[derive(Debug)]
enum Framing {
    /// No body (204, 304).
    Empty,
    /// `Content-Length`: this many bytes remain.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(ChunkedDecoder),
    /// Neither: the body ends when the server closes the connection.
    UntilClose,
}

fn body_framing(status: u16, headers: &[(String, String)]) -> Result<Framing, HttpError> {
    if status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    fn header<'a>(headers: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> {
        headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    if let Some(te) = header(headers, "transfer-encoding").last() {
        let last = te.rsplit(',').next().unwrap_or_default().trim();
        return Ok(if last.eq_ignore_ascii_case("chunked") {
            Framing::Chunked(ChunkedDecoder::default())
        } else {
            Framing::UntilClose
        });
    }
    let mut lengths = header(headers, "content-length").map(|v| v.trim().parse::<u64>());
    match lengths.next() {
        None => Ok(Framing::UntilClose),
        Some(Ok(first)) if lengths.all(|other| other == Ok(first)) => Ok(Framing::Length(first)),
        Some(_) => Err(HttpError::new(
            HttpErrorKind::Io,
            "the response has an invalid Content-Length",
        )),
    }
}

/// The body of a response, read from the connection as it arrives.
struct ResponseBodyStream {
    /// `None` once the body ended or failed (the connection is then closed).
    conn: Option<Conn>,
    framing: Framing,
    /// Bytes read with the head that belong to the body.
    pending: Vec<u8>,
    read_buf: Vec<u8>,
}

impl ResponseBodyStream {
    /// Turn raw bytes into body data per the framing; `Ok(None)` means the body is complete.
    fn take(&mut self, raw: &[u8]) -> Result<(Bytes, bool), HttpError> {
        match &mut self.framing {
            Framing::Empty => Ok((Bytes::new(), true)),
            Framing::UntilClose => Ok((Bytes::copy_from_slice(raw), false)),
            Framing::Length(remaining) => {
                let take = (*remaining).min(raw.len() as u64) as usize;
                *remaining -= take as u64;
                Ok((Bytes::copy_from_slice(&raw[..take]), *remaining == 0))
            }
            Framing::Chunked(decoder) => {
                let mut out = Vec::new();
                decoder
                    .decode(raw, &mut out)
                    .map_err(|e| HttpError::new(HttpErrorKind::Io, e.to_string()))?;
                Ok((Bytes::from(out), decoder.is_done()))
            }
        }
    }

    fn finish(&mut self) {
        // Dropping the socket closes the connection.
        self.conn = None;
    }
}

impl futures_core::Stream for ResponseBodyStream {
    type Item = Result<Bytes, HttpError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if matches!(this.framing, Framing::Empty | Framing::Length(0)) {
            this.finish();
        }
        if !this.pending.is_empty() && this.conn.is_some() {
            let pending = std::mem::take(&mut this.pending);
            match this.take(&pending) {
                Ok((data, done)) => {
                    if done {
                        this.finish();
                    }
                    if !data.is_empty() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Err(err) => {
                    this.finish();
                    return Poll::Ready(Some(Err(err)));
                }
            }
        }
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let n = match Pin::new(conn).poll_read(cx, &mut this.read_buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(err)) => {
                    this.finish();
                    return Poll::Ready(Some(Err(HttpError::new(
                        HttpErrorKind::Io,
                        format!("reading the response body: {err}"),
                    ))));
                }
            };
            if n == 0 {
                let complete = matches!(this.framing, Framing::UntilClose);
                this.finish();
                if complete {
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(HttpError::new(
                    HttpErrorKind::Io,
                    "the connection closed before the end of the response body",
                ))));
            }
            let raw = std::mem::take(&mut this.read_buf);
            let taken = this.take(&raw[..n]);
            this.read_buf = raw;
            match taken {
                Ok((data, done)) => {
                    if done {
                        this.finish();
                    }
                    if !data.is_empty() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Err(err) => {
                    this.finish();
                    return Poll::Ready(Some(Err(err)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = parse_url("http://127.0.0.1:8080/v1/chat/completions?x=1#frag").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (false, "127.0.0.1", 8080, "/v1/chat/completions?x=1")
        );
        assert_eq!(t.authority, "127.0.0.1:8080");
        let t = parse_url("HTTPS://api.example.com").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (true, "api.example.com", 443, "/")
        );
        let t = parse_url("http://[::1]:9000?q").unwrap();
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.path.as_str(),
                t.authority.as_str()
            ),
            ("::1", 9000, "/?q", "[::1]:9000")
        );
        for bad in [
            "ftp://x",
            "http://",
            "http://h:99999/",
            "http://u:p@h/",
            "http://h:/",
            "http://[::1/",
            "http://h/a b",
        ] {
            let err = parse_url(bad).unwrap_err();
            assert_eq!(err.kind, HttpErrorKind::InvalidRequest, "{bad}");
        }
    }

    #[test]
    fn header_errors_never_contain_values() {
        let request = HttpRequest::new(agent_core::http::Method::Get, "http://h/")
            .header("authorization", "Bearer sk-secret\r\nx: y");
        let err = request_head(&request, &parse_url(&request.url).unwrap()).unwrap_err();
        assert_eq!(err.kind, HttpErrorKind::InvalidRequest);
        assert!(!err.to_string().contains("sk-secret"));
    }

    #[test]
    fn writes_the_request_head() {
        let request = HttpRequest::new(agent_core::http::Method::Post, "http://h:81/p")
            .header("Content-Type", "application/json")
            .header("Content-Length", "999")
            .body(b"{}".to_vec());
        let head =
            String::from_utf8(request_head(&request, &parse_url(&request.url).unwrap()).unwrap())
                .unwrap();
        assert_eq!(
            head,
            "POST /p HTTP/1.1\r\nContent-Type: application/json\r\nhost: h:81\r\ncontent-length: 2\r\nconnection: close\r\n\r\n"
        );
    }
}
