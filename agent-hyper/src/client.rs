//! [`HyperClient`]: the core's [`HttpClient`] on hyper's HTTP/1.1 client, over any
//! [`Connector`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use agent_core::http::proxy::{ProxyConfig, ProxyRoute};
use agent_core::http::{
    BodyStream, HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpResponse, Method,
};
use agent_core::runtime::{BoxFuture, SharedRuntime};
use bytes::Bytes;
use futures_core::Stream;
use futures_util::FutureExt;
use http_body::Body;
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::rt::{Read, Write};
use hyper::{Request, Uri};

use crate::pool::{Pool, PooledConnection};
use crate::{AgentBody, Tunnel};

/// Most header fields accepted in a response head.
const MAX_RESPONSE_HEADERS: usize = 100;
/// Largest response head accepted, as on every backend (and hyper's read buffer bound).
use agent_core::http::MAX_RESPONSE_HEAD_BYTES;

/// Where a request goes: scheme, host and port of its URL (the pool's key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// `true` for `https://`: the connector must speak TLS.
    pub https: bool,
    /// Host name or IP literal, without brackets.
    pub host: String,
    /// The port (the scheme's default when the URL has none).
    pub port: u16,
}

/// The errors every backend's [`Connector`] reports in the same words.
impl Target {
    /// TCP connect to this target failed.
    pub fn connect_error(&self, err: impl fmt::Display) -> HttpError {
        HttpError::new(
            HttpErrorKind::Connect,
            format!("{}:{}: {err}", self.host, self.port),
        )
    }

    /// The TLS handshake with this target failed (a certificate that does not verify, say).
    pub fn tls_error(&self, err: impl fmt::Display) -> HttpError {
        HttpError::new(
            HttpErrorKind::Connect,
            format!("TLS handshake with {}:{}: {err}", self.host, self.port),
        )
    }

    /// The host cannot be a TLS server name.
    pub fn invalid_server_name(&self) -> HttpError {
        HttpError::new(
            HttpErrorKind::InvalidRequest,
            format!("{} is not a valid TLS server name", self.host),
        )
    }
}

/// Opens connections for a [`HyperClient`]: TCP, then TLS for `https://` targets. This is
/// the only part of the client a backend writes.
///
/// Two steps, so that proxies work with every connector: [`connect`](Self::connect) opens
/// a connection to a target (TCP, plus TLS when `target.https`); through a proxy it is
/// called with the proxy's plain target. [`handshake_tls`](Self::handshake_tls) is the TLS
/// step on its own, run inside the `CONNECT` tunnel the client opened through a proxy for
/// an `https://` upstream; a connector without TLS keeps its default (an error).
///
/// ```
/// use agent_core::http::HttpError;
/// use agent_hyper::{Connector, FuturesIo, Target};
///
/// #[derive(Debug)]
/// struct MyConnector;
///
/// impl Connector for MyConnector {
///     type Io = FuturesIo<futures_util::io::Cursor<Vec<u8>>>;
///     async fn connect(&self, _target: &Target) -> Result<Self::Io, HttpError> {
///         // TcpStream::connect((target.host.as_str(), target.port)).await, TLS if
///         // target.https, set_nodelay(true)...
///         Ok(FuturesIo::new(futures_util::io::Cursor::new(Vec::new())))
///     }
/// }
/// ```
pub trait Connector: Send + Sync + fmt::Debug + 'static {
    /// A connected stream.
    type Io: Read + Write + Unpin + Send + 'static;

    /// Connect to `target`. Errors are [`HttpErrorKind::Connect`] (refused, DNS, TLS) or
    /// [`HttpErrorKind::InvalidRequest`] (a host that cannot be a TLS name); the connect
    /// timeout is applied by the client around this future.
    fn connect(&self, target: &Target) -> impl Future<Output = Result<Self::Io, HttpError>> + Send;

    /// TLS with `target` (an `https://` upstream) inside `tunnel`, a `CONNECT` tunnel through
    /// a proxy: the certificate must be verified for `target.host`. Errors as for
    /// [`connect`](Self::connect); the connect timeout covers this step too.
    ///
    /// The default fails with [`HttpErrorKind::Connect`] (for connectors without TLS).
    fn handshake_tls(
        &self,
        tunnel: Tunnel,
        target: &Target,
    ) -> impl Future<Output = Result<Self::Io, HttpError>> + Send {
        let _ = tunnel;
        let message = format!(
            "no TLS for {}:{} through the proxy: this connector does not speak TLS",
            target.host, target.port
        );
        async move { Err(HttpError::new(HttpErrorKind::Connect, message)) }
    }
}

/// The core's [`HttpClient`] on hyper's HTTP/1.1 client: a backend supplies the
/// [`Connector`] and a runtime (for the connect timeout).
///
/// * `send` resolves on the response head; each body chunk is handed on the moment hyper
///   reads it.
/// * Connections are kept alive and reused per origin (scheme, host, port) once a response
///   was read to the end; a body dropped early, or a failed exchange, closes its connection
///   at once, so an unread body is never reused.
/// * No task is spawned: the connection is driven by whoever polls the request and the body.
/// * [`HttpRequest::connect_timeout`] bounds the connector (DNS, TCP and TLS together, and
///   the `CONNECT` exchange with a proxy).
/// * Proxies come from a [`ProxyConfig`] ([`ProxyConfig::from_env`] unless
///   [`with_proxy`](Self::with_proxy) says otherwise): an `http://` URL is sent to its
///   proxy as an absolute-form request (`POST http://host:port/path HTTP/1.1`, with
///   `Proxy-Authorization` when the proxy has credentials); an `https://` URL goes through a
///   `CONNECT host:port` tunnel, inside which [`Connector::handshake_tls`] speaks TLS with
///   the upstream. A proxy that refuses the tunnel is an [`HttpErrorKind::Connect`] error
///   naming its status. Connections are pooled per origin *and* route.
/// * Errors have the same wording whatever the connector, and never carry header values
///   or proxy credentials.
pub struct HyperClient<C: Connector> {
    inner: Arc<Inner<C>>,
    proxy: Arc<ProxyConfig>,
}

struct Inner<C: Connector> {
    connector: C,
    runtime: SharedRuntime,
    pool: Pool<C::Io>,
}

impl<C: Connector> Clone for HyperClient<C> {
    fn clone(&self) -> Self {
        HyperClient {
            inner: self.inner.clone(),
            proxy: self.proxy.clone(),
        }
    }
}

impl<C: Connector> fmt::Debug for HyperClient<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HyperClient")
            .field("connector", &self.inner.connector)
            .field("runtime", &self.inner.runtime.name())
            .field("proxy", &self.proxy)
            .field("idle_connections", &self.inner.pool.idle_count())
            .finish()
    }
}

impl<C: Connector> HyperClient<C> {
    /// A client opening connections with `connector`, timing connects on `runtime`, with
    /// the proxies of the environment ([`ProxyConfig::from_env`]).
    pub fn new(connector: C, runtime: SharedRuntime) -> Self {
        HyperClient {
            inner: Arc::new(Inner {
                connector,
                runtime,
                pool: Pool::default(),
            }),
            proxy: Arc::new(ProxyConfig::from_env()),
        }
    }

    /// The same client (sharing its pool) with the proxies of `config` instead
    /// ([`ProxyConfig::none`] for none).
    pub fn with_proxy(mut self, config: ProxyConfig) -> Self {
        self.proxy = Arc::new(config);
        self
    }

    /// The proxies it uses.
    pub fn proxy_config(&self) -> &ProxyConfig {
        &self.proxy
    }

    /// The connector.
    pub fn connector(&self) -> &C {
        &self.inner.connector
    }

    /// How many idle keep-alive connections the client holds.
    pub fn idle_connections(&self) -> usize {
        self.inner.pool.idle_count()
    }
}

impl<C: Connector> HttpClient for HyperClient<C> {
    fn send(&self, request: HttpRequest) -> BoxFuture<Result<HttpResponse, HttpError>> {
        let inner = self.inner.clone();
        let route = self.proxy.proxy_for(&request.url).cloned();
        Box::pin(async move { send(inner, request, route).await })
    }
}

fn invalid(message: impl Into<String>) -> HttpError {
    HttpError::new(HttpErrorKind::InvalidRequest, message)
}

/// Where a pooled connection goes: the origin, and the proxy it goes through (with the
/// `Proxy-Authorization` value of a tunnel, which was sent once, when it was opened).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    target: Target,
    proxy: Option<(String, u16, Option<String>)>,
}

impl PoolKey {
    fn new(target: &Target, route: Option<&ProxyRoute>) -> Self {
        PoolKey {
            target: target.clone(),
            proxy: route.map(|r| {
                let auth = r.basic_authorization().map(|a| a.expose().to_string());
                (r.host().to_string(), r.port(), auth)
            }),
        }
    }
}

/// The target of `url` and the hyper request for it: origin-form, or absolute-form with
/// `Proxy-Authorization` for an `http://` URL sent through `route`.
fn build(
    request: &HttpRequest,
    route: Option<&ProxyRoute>,
) -> Result<(Target, Request<AgentBody>), HttpError> {
    let uri: Uri = request
        .url
        .parse()
        .map_err(|_| invalid("the URL is not a valid absolute http:// or https:// URL"))?;
    let https = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        _ => return Err(invalid("the URL must start with http:// or https://")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| invalid("the URL has no host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid(
            "credentials in the URL are not supported; use a header",
        ));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid("the URL has no host"));
    }
    // `http::Uri` keeps an unparsable port as text: refuse it rather than use the default.
    let after_host = match authority.as_str().rsplit_once(']') {
        Some((_, after)) => after,
        None => authority.as_str(),
    };
    let port = match after_host.rsplit_once(':') {
        None => {
            if https {
                443
            } else {
                80
            }
        }
        Some((_, port)) => port
            .parse::<u16>()
            .ok()
            .filter(|_| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| invalid("bad port in the URL"))?,
    };
    let target = Target {
        https,
        host: host.to_string(),
        port,
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let method = match request.method {
        Method::Get => hyper::Method::GET,
        Method::Post => hyper::Method::POST,
    };
    let forward = route.filter(|_| !https);
    // hyper writes the request target as given: absolute-form for a forward proxy
    // (RFC 9112 §3.2.2), origin-form otherwise.
    let request_target = match forward {
        Some(_) => format!("http://{}{path}", authority.as_str()),
        None => path.to_string(),
    };
    let mut built = Request::builder()
        .method(method)
        .uri(request_target)
        .body(AgentBody::full(request.body.clone()))
        .map_err(|_| invalid("the request could not be built"))?;
    let headers = built.headers_mut();
    for (name, value) in &request.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("invalid header name {name:?}")))?;
        // Never echo the value: it may be a secret.
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            invalid(format!(
                "the value of header {name:?} contains CR, LF, NUL or non-visible bytes"
            ))
        })?;
        // The client owns the framing of the message (and the proxy's credentials).
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || name == header::PROXY_AUTHORIZATION
        {
            continue;
        }
        if name == header::AUTHORIZATION || name.as_str().contains("key") {
            value.set_sensitive(true);
        }
        headers.append(name, value);
    }
    if !headers.contains_key(header::HOST) {
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| invalid("the URL's host is not a valid Host header"))?;
        headers.insert(header::HOST, host);
    }
    if let Some(auth) = forward.and_then(ProxyRoute::basic_authorization) {
        let mut value = HeaderValue::from_str(auth.expose())
            .map_err(|_| invalid("the proxy credentials are not a valid header value"))?;
        value.set_sensitive(true);
        headers.insert(header::PROXY_AUTHORIZATION, value);
    }
    if !request.body.is_empty() || request.method == Method::Post {
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(request.body.len()),
        );
    }
    Ok((target, built))
}

async fn send<C: Connector>(
    inner: Arc<Inner<C>>,
    request: HttpRequest,
    route: Option<ProxyRoute>,
) -> Result<HttpResponse, HttpError> {
    let (target, mut hyper_request) = build(&request, route.as_ref())?;
    let key = PoolKey::new(&target, route.as_ref());
    // One retry, only for a request that a stale kept-alive connection never sent.
    for _ in 0..2 {
        let reused = std::future::poll_fn(|cx| Poll::Ready(inner.pool.checkout(&key, cx))).await;
        let mut connection = match reused {
            Some(connection) => connection,
            None => connect(&inner, &target, route.as_ref(), request.connect_timeout).await?,
        };
        let response = connection.sender.try_send_request(hyper_request);
        let mut response = std::pin::pin!(response);
        let head = std::future::poll_fn(|cx| {
            let open = connection.poll_driver(cx);
            match response.as_mut().poll(cx) {
                Poll::Ready(result) => Poll::Ready(result),
                Poll::Pending if open => Poll::Pending,
                // The driver ended: the response future resolves with its error now.
                Poll::Pending => response.as_mut().poll(cx),
            }
        })
        .await;
        match head {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                let headers = parts
                    .headers
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.as_str().to_string(),
                            String::from_utf8_lossy(value.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let body = ResponseBody {
                    body,
                    connection: Some(connection),
                    key: key.clone(),
                    pool: Arc::downgrade(&inner),
                };
                return Ok(HttpResponse {
                    status: parts.status.as_u16(),
                    headers,
                    body: Box::pin(body) as BodyStream,
                });
            }
            Err(mut err) => {
                let unsent = err.take_message();
                let error = err.into_error();
                match unsent {
                    Some(unsent) if connection.reused => {
                        tracing::debug!(%error, "a kept-alive connection was stale; retrying on a new one");
                        hyper_request = unsent;
                    }
                    _ => return Err(head_error(&error)),
                }
            }
        }
    }
    Err(HttpError::new(
        HttpErrorKind::Io,
        "the connection closed before the response head arrived",
    ))
}

async fn connect<C: Connector>(
    inner: &Inner<C>,
    target: &Target,
    route: Option<&ProxyRoute>,
    timeout: Option<Duration>,
) -> Result<PooledConnection<C::Io>, HttpError> {
    let connect = open(&inner.connector, target, route);
    let io = match timeout {
        None => connect.await?,
        Some(limit) => {
            let deadline = inner.runtime.sleep(limit);
            futures_util::select_biased! {
                io = connect.fuse() => io?,
                () = deadline.fuse() => {
                    return Err(HttpError::new(
                        HttpErrorKind::ConnectTimeout,
                        format!("no connection to {}:{} within {limit:?}", target.host, target.port),
                    ));
                }
            }
        }
    };
    let (sender, driver) = hyper::client::conn::http1::Builder::new()
        .max_headers(MAX_RESPONSE_HEADERS)
        .max_buf_size(MAX_RESPONSE_HEAD_BYTES)
        .handshake(io)
        .await
        .map_err(|err| {
            tracing::debug!(%err, "HTTP handshake failed");
            HttpError::new(
                HttpErrorKind::Connect,
                "the HTTP connection could not be set up",
            )
        })?;
    Ok(PooledConnection {
        sender,
        driver: Some(Box::pin(driver)),
        reused: false,
    })
}

/// Open the connection a request to `target` runs over: directly, to the proxy (for
/// `http://`), or TLS inside a `CONNECT` tunnel through the proxy (for `https://`).
async fn open<C: Connector>(
    connector: &C,
    target: &Target,
    route: Option<&ProxyRoute>,
) -> Result<C::Io, HttpError> {
    let Some(route) = route else {
        return connector.connect(target).await;
    };
    let proxy = Target {
        https: false,
        host: route.host().to_string(),
        port: route.port(),
    };
    let io = connector.connect(&proxy).await?;
    if !target.https {
        return Ok(io);
    }
    let tunnel = open_tunnel(io, target, route).await?;
    connector.handshake_tls(tunnel, target).await
}

/// `CONNECT host:port` on `io` (a connection to the proxy of `route`), with hyper: the
/// tunnel once the proxy answered 2xx.
async fn open_tunnel<I: crate::pool::Io>(
    io: I,
    target: &Target,
    route: &ProxyRoute,
) -> Result<Tunnel, HttpError> {
    let proxy = route.authority();
    let failed = |what: &str| {
        HttpError::new(
            HttpErrorKind::Connect,
            format!(
                "the proxy {proxy} {what} (CONNECT to {}:{})",
                target.host, target.port
            ),
        )
    };
    let authority = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let mut request = Request::builder()
        .method(hyper::Method::CONNECT)
        .uri(authority.as_str())
        .header(header::HOST, authority.as_str())
        .body(AgentBody::empty())
        .map_err(|_| invalid("the CONNECT request could not be built"))?;
    if let Some(auth) = route.basic_authorization() {
        let mut value = HeaderValue::from_str(auth.expose())
            .map_err(|_| invalid("the proxy credentials are not a valid header value"))?;
        value.set_sensitive(true);
        request
            .headers_mut()
            .insert(header::PROXY_AUTHORIZATION, value);
    }
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_headers(MAX_RESPONSE_HEADERS)
        .max_buf_size(MAX_RESPONSE_HEAD_BYTES)
        .handshake::<_, AgentBody>(io)
        .await
        .map_err(|err| {
            tracing::debug!(%err, "HTTP handshake with the proxy failed");
            failed("could not be spoken to")
        })?;
    let mut connection = std::pin::pin!(connection.with_upgrades());
    let mut driver_done = false;
    let response = sender.send_request(request);
    let mut response = std::pin::pin!(response);
    let response = std::future::poll_fn(|cx| {
        if !driver_done && let Poll::Ready(result) = connection.as_mut().poll(cx) {
            driver_done = true;
            if let Err(err) = result {
                tracing::debug!(%err, "the proxy connection failed");
            }
        }
        response.as_mut().poll(cx)
    })
    .await
    .map_err(|err| {
        tracing::debug!(%err, "CONNECT failed before the proxy's answer");
        failed("closed the connection before answering")
    })?;
    let status = response.status();
    if !status.is_success() {
        let reason = status.canonical_reason().unwrap_or("");
        return Err(failed(&format!(
            "refused the tunnel: {} {reason}",
            status.as_u16()
        )));
    }
    // The connection hands its socket over to the upgrade once it has seen the 2xx.
    if !driver_done && let Err(err) = connection.as_mut().await {
        tracing::debug!(%err, "the proxy connection failed");
        return Err(failed("closed the tunnel"));
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(|err| {
        tracing::debug!(%err, "the CONNECT tunnel could not be taken over");
        failed("closed the tunnel")
    })?;
    Ok(Tunnel::new(upgraded))
}

/// The error for a failure before the response head, in the same words on every backend.
fn head_error(err: &hyper::Error) -> HttpError {
    tracing::debug!(%err, "upstream request failed before the response head");
    if err.is_parse_too_large() {
        return HttpError::response_head_too_large();
    }
    let message = if err.is_parse() || err.is_parse_status() {
        "the server sent a malformed response head"
    } else if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
        "the connection closed before the response head arrived"
    } else {
        "the connection broke before the response head arrived"
    };
    HttpError::new(HttpErrorKind::Io, message)
}

/// The error for a failure while reading the body, in the same words on every backend.
fn body_error(err: &hyper::Error) -> HttpError {
    tracing::debug!(%err, "upstream response body failed");
    let message = if err.is_parse() {
        "the response body is malformed (bad chunked framing)"
    } else if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
        "the connection closed before the end of the response body"
    } else {
        "the connection broke while reading the response body"
    };
    HttpError::new(HttpErrorKind::Io, message)
}

/// The body of a response: hyper's body, with the connection driven by the same polls.
struct ResponseBody<C: Connector> {
    body: Incoming,
    /// `None` once the body ended (the connection then went back to the pool or closed).
    connection: Option<PooledConnection<C::Io>>,
    key: PoolKey,
    pool: Weak<Inner<C>>,
}

impl<C: Connector> Stream for ResponseBody<C> {
    type Item = Result<Bytes, HttpError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(connection) = &mut this.connection {
                connection.poll_driver(cx);
            }
            return match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => Poll::Ready(Some(Ok(data))),
                    Err(_trailers) => continue,
                },
                Poll::Ready(Some(Err(err))) => {
                    this.connection = None; // closes it
                    Poll::Ready(Some(Err(body_error(&err))))
                }
                Poll::Ready(None) => {
                    if let (Some(connection), Some(inner)) =
                        (this.connection.take(), this.pool.upgrade())
                    {
                        inner.pool.checkin(this.key.clone(), connection);
                    }
                    Poll::Ready(None)
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Result<(Target, String), HttpError> {
        let request = HttpRequest::new(Method::Get, url);
        build(&request, None).map(|(target, request)| (target, request.uri().to_string()))
    }

    #[test]
    fn urls_become_a_target_and_an_origin_form_request() {
        let (t, path) = target("http://127.0.0.1:8080/v1/chat/completions?x=1").unwrap();
        assert_eq!(
            (t.https, t.host.as_str(), t.port, path.as_str()),
            (false, "127.0.0.1", 8080, "/v1/chat/completions?x=1")
        );
        let (t, path) = target("HTTPS://api.example.com").unwrap();
        assert_eq!(
            (t.https, t.host.as_str(), t.port, path.as_str()),
            (true, "api.example.com", 443, "/")
        );
        let (t, _) = target("http://[::1]:9000/?q").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
    }

    #[test]
    fn bad_urls_are_invalid_requests() {
        for bad in [
            "ftp://x",
            "http://",
            "not a url",
            "http://h:99999/",
            "http://h:0x/",
            "http://u:p@h/",
            "http://h:/",
            "http://[::1/",
            "http://h/a b",
        ] {
            let err = target(bad).expect_err(bad);
            assert_eq!(err.kind, HttpErrorKind::InvalidRequest, "{bad}: {err}");
        }
    }

    #[test]
    fn header_errors_never_contain_values() {
        let request = HttpRequest::new(Method::Get, "http://h/")
            .header("authorization", "Bearer sk-secret\r\nx: y");
        let err = build(&request, None).expect_err("a header value with CR LF is refused");
        assert_eq!(err.kind, HttpErrorKind::InvalidRequest);
        assert!(!err.to_string().contains("sk-secret"), "{err}");
    }

    #[test]
    fn the_client_owns_the_framing_headers() {
        let request = HttpRequest::new(Method::Post, "http://h:81/p")
            .header("Content-Type", "application/json")
            .header("Content-Length", "999")
            .header("Connection", "close")
            .body(b"{}".to_vec());
        let (_, built) = build(&request, None).unwrap();
        let headers = built.headers();
        assert_eq!(headers["content-length"], "2");
        assert_eq!(headers["host"], "h:81");
        assert_eq!(headers["content-type"], "application/json");
        assert!(headers.get("connection").is_none(), "{headers:?}");
    }

    #[test]
    fn through_a_forward_proxy_the_request_is_absolute_form() {
        let route = ProxyRoute::parse("http://u:pw@127.0.0.1:3128").unwrap();
        let request = HttpRequest::new(Method::Post, "http://h:81/v1/x?y=1")
            .header("proxy-authorization", "Basic forged");
        let (target, built) = build(&request, Some(&route)).unwrap();
        assert_eq!((target.host.as_str(), target.port), ("h", 81));
        assert_eq!(built.uri().to_string(), "http://h:81/v1/x?y=1");
        assert_eq!(built.headers()["host"], "h:81");
        let auth = &built.headers()["proxy-authorization"];
        assert_eq!(auth, "Basic dTpwdw==");
        assert!(auth.is_sensitive());
        // https:// goes through a tunnel: the request itself is origin-form, no credentials.
        let request = HttpRequest::new(Method::Get, "https://h/v1");
        let (_, built) = build(&request, Some(&route)).unwrap();
        assert_eq!(built.uri().to_string(), "/v1");
        assert!(built.headers().get("proxy-authorization").is_none());
    }
}
