//! [`ReqwestClient`]: the core's [`HttpClient`] on reqwest, with rustls.
//!
//! ```
//! use std::sync::Arc;
//! use agent_core::model::{OpenAiConfig, OpenAiModel};
//! use backend_tokio::ReqwestClient;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let client = Arc::new(ReqwestClient::new());
//! let model = OpenAiModel::new(OpenAiConfig::new("http://127.0.0.1:11434/v1", "llama3.2"), client);
//! # let _ = model;
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use agent_core::http::proxy::ProxyConfig;
use agent_core::http::{
    BodyStream, HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpResponse, Method,
};
use agent_core::runtime::BoxFuture;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::runtime::Handle;

/// How many clients with distinct connect timeouts are kept (each has its own pool).
const MAX_CACHED_CLIENTS: usize = 8;

type BuilderFactory = dyn Fn() -> reqwest::ClientBuilder + Send + Sync;

/// The core's [`HttpClient`] on [reqwest](https://docs.rs/reqwest), over HTTP/1.1 with rustls
/// (ring and the bundled webpki root certificates: no OpenSSL).
///
/// * **TLS.** Certificates are verified against the Mozilla roots; a server whose certificate
///   does not verify fails with [`HttpErrorKind::Connect`] and a message naming the
///   certificate problem. The only opt-out, for a local development server with a
///   self-signed certificate, is [`ReqwestClient::danger_accept_invalid_certs`].
///
/// * **Streaming.** The response resolves on the status line and headers; the body is
///   reqwest's `bytes_stream()`, each chunk forwarded the moment hyper reads it.
/// * **Cancellation.** Dropping the `send` future or the [`BodyStream`] drops reqwest's
///   response, and hyper closes a connection whose body was not read to the end instead of
///   returning it to the pool: the server sees the connection close at once.
/// * **Connect timeout.** reqwest sets connect timeouts per client, not per request, so a
///   `ReqwestClient` keeps one reqwest client per distinct
///   [`HttpRequest::connect_timeout`] (a handful at most; each has its own connection pool),
///   built from the same [`reqwest::ClientBuilder`]. A timed-out connect is reported as
///   [`HttpErrorKind::ConnectTimeout`]. A client given to [`ReqwestClient::with_client`] is
///   used for every request as is: its own connect timeout applies and the request's is
///   ignored.
/// * **Errors** are mapped to [`HttpErrorKind::Connect`] (refused, DNS, TLS),
///   [`HttpErrorKind::ConnectTimeout`], [`HttpErrorKind::InvalidRequest`] (bad URL, header
///   name or value: the message names the header, never its value) and
///   [`HttpErrorKind::Io`] (the connection broke after the response started). Messages are
///   reqwest's error chain without the URL, and never contain header values.
/// * **Runtime.** reqwest runs its connections as tasks on a tokio runtime. The client uses
///   the runtime it was created in (or the one given to [`ReqwestClient::runtime_handle`]),
///   so it can also be polled from outside tokio, e.g. by an agent on another runtime.
///   On a current-thread runtime the connection only progresses while that runtime is driven.
///   A client created outside any runtime and never given a handle uses whichever runtime
///   it is polled in, and fails with [`HttpErrorKind::Connect`] outside one.
/// * Nothing is retried here, redirects are not followed (a 3xx comes back as a response,
///   as on every backend's client; a builder's redirect policy is replaced, a client given to
///   [`ReqwestClient::with_client`] keeps its own), and no response body is decompressed.
/// * A response head over hyper's limits (about 400 KiB, 100 header fields) fails with
///   [`HttpErrorKind::ResponseHeadTooLarge`], in the words of every backend.
#[derive(Clone)]
pub struct ReqwestClient {
    inner: Arc<Inner>,
    handle: Option<Handle>,
    /// Made by [`ReqwestClient::danger_accept_invalid_certs`] (shown in `Debug`).
    danger_accept_invalid_certs: bool,
}

struct Inner {
    source: Source,
    /// The proxies of clients built from a builder (a given client keeps its own).
    proxy: Arc<ProxyConfig>,
    clients: Mutex<HashMap<Option<Duration>, reqwest::Client>>,
}

enum Source {
    Builder(Arc<BuilderFactory>),
    Client(reqwest::Client),
}

impl fmt::Debug for ReqwestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.inner.source {
            Source::Builder(_) => "builder",
            Source::Client(_) => "client",
        };
        f.debug_struct("ReqwestClient")
            .field("source", &source)
            .field("proxy", &self.inner.proxy)
            .field("has_runtime_handle", &self.handle.is_some())
            .field(
                "danger_accept_invalid_certs",
                &self.danger_accept_invalid_certs,
            )
            .finish_non_exhaustive()
    }
}

impl Default for ReqwestClient {
    fn default() -> Self {
        ReqwestClient::new()
    }
}

impl ReqwestClient {
    /// A client with reqwest's defaults (rustls, HTTP/1.1), the proxies of the environment
    /// ([`ProxyConfig::from_env`]: `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, read
    /// the same way by every backend's client), on the tokio runtime this is called in, if
    /// any.
    ///
    /// Cheap: the underlying reqwest clients are built on first use.
    pub fn new() -> Self {
        ReqwestClient::with_builder(reqwest::Client::builder)
    }

    /// A client whose reqwest clients come from `builder` (custom root certificates, user
    /// agent, …); a request's connect timeout is set on top of it. Proxies are the client's
    /// [`ProxyConfig`] (the environment's; see [`with_proxy`](Self::with_proxy)): a proxy set
    /// on `builder` is replaced.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let client = backend_tokio::ReqwestClient::with_builder(|| {
    ///     reqwest::Client::builder().user_agent("my-agent/1.0")
    /// });
    /// # let _ = client;
    /// # }
    /// ```
    pub fn with_builder(
        builder: impl Fn() -> reqwest::ClientBuilder + Send + Sync + 'static,
    ) -> Self {
        ReqwestClient::from_source(Source::Builder(Arc::new(builder)))
    }

    /// A client like [`new`](Self::new) that accepts **any** TLS certificate: self-signed,
    /// expired, issued for another host. For local development servers only (a model server
    /// on your machine with a self-signed certificate); never for a remote API, where it
    /// would hand your API key and your data to whoever intercepts the connection.
    ///
    /// Every other client of this crate verifies certificates (rustls with the bundled
    /// Mozilla roots). To trust one private certificate authority instead, keep verification
    /// on and add its root with [`with_builder`](Self::with_builder) and
    /// `reqwest::ClientBuilder::add_root_certificate`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // https://127.0.0.1:8443 serves a self-signed certificate.
    /// let client = backend_tokio::ReqwestClient::danger_accept_invalid_certs();
    /// # let _ = client;
    /// # }
    /// ```
    pub fn danger_accept_invalid_certs() -> Self {
        tracing::warn!(
            "ReqwestClient::danger_accept_invalid_certs: TLS certificates are NOT verified \
             (for local development servers only)"
        );
        let mut client = ReqwestClient::with_builder(|| {
            reqwest::Client::builder().danger_accept_invalid_certs(true)
        });
        client.danger_accept_invalid_certs = true;
        client
    }

    /// A client that sends every request through `client`, as configured: its connect
    /// timeout and its proxies apply (reqwest's own; [`with_proxy`](Self::with_proxy) has no
    /// effect on it), a request's [`HttpRequest::connect_timeout`] is ignored.
    pub fn with_client(client: reqwest::Client) -> Self {
        ReqwestClient::from_source(Source::Client(client))
    }

    fn from_source(source: Source) -> Self {
        ReqwestClient {
            inner: Arc::new(Inner {
                source,
                proxy: Arc::new(ProxyConfig::from_env()),
                clients: Mutex::new(HashMap::new()),
            }),
            handle: Handle::try_current().ok(),
            danger_accept_invalid_certs: false,
        }
    }

    /// The same client with the proxies of `config` instead of the environment's
    /// ([`ProxyConfig::none`] for none): an `http://` URL is sent to its proxy as an
    /// absolute-form request, an `https://` URL through a `CONNECT` tunnel.
    ///
    /// ```
    /// use agent_core::http::proxy::{ProxyConfig, ProxyRoute};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let proxy = ProxyConfig::none().with_https(Some(ProxyRoute::new("127.0.0.1", 3128)));
    /// let client = backend_tokio::ReqwestClient::new().with_proxy(proxy);
    /// # let _ = client;
    /// # }
    /// ```
    pub fn with_proxy(mut self, config: ProxyConfig) -> Self {
        let source = match &self.inner.source {
            Source::Builder(factory) => Source::Builder(factory.clone()),
            Source::Client(client) => Source::Client(client.clone()),
        };
        self.inner = Arc::new(Inner {
            source,
            proxy: Arc::new(config),
            clients: Mutex::new(HashMap::new()),
        });
        self
    }

    /// The proxies of clients built from a builder.
    pub fn proxy_config(&self) -> &ProxyConfig {
        &self.inner.proxy
    }

    /// Run reqwest's connections on the runtime of `handle` (see the type docs).
    ///
    /// ```
    /// let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    /// // Built outside the runtime, usable from any thread or executor.
    /// let client = backend_tokio::ReqwestClient::new().runtime_handle(rt.handle().clone());
    /// # let _ = client;
    /// ```
    pub fn runtime_handle(mut self, handle: Handle) -> Self {
        self.handle = Some(handle);
        self
    }
}

impl Inner {
    fn client_for(&self, connect_timeout: Option<Duration>) -> Result<reqwest::Client, HttpError> {
        let factory = match &self.source {
            Source::Client(client) => return Ok(client.clone()),
            Source::Builder(factory) => factory,
        };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&connect_timeout) {
            return Ok(client.clone());
        }
        // reqwest's own reading of the environment is off: the one ProxyConfig decides.
        // Redirects are not followed, as on every backend: a 3xx is a response.
        let mut builder = factory()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none());
        if !self.proxy.is_none() {
            let config = self.proxy.clone();
            builder = builder.proxy(reqwest::Proxy::custom(move |url| {
                config
                    .proxy_for(url.as_str())
                    .map(|route| route.url_with_credentials().expose().to_string())
            }));
        }
        if let Some(timeout) = connect_timeout {
            builder = builder.connect_timeout(timeout);
        }
        let client = builder.build().map_err(|e| {
            HttpError::new(
                HttpErrorKind::InvalidRequest,
                format!("could not build the HTTP client: {}", describe(&e)),
            )
        })?;
        if clients.len() >= MAX_CACHED_CLIENTS {
            clients.clear();
        }
        clients.insert(connect_timeout, client.clone());
        Ok(client)
    }
}

impl HttpClient for ReqwestClient {
    fn send(&self, request: HttpRequest) -> BoxFuture<Result<HttpResponse, HttpError>> {
        let inner = self.inner.clone();
        let handle = self.handle.clone();
        let body_handle = handle.clone();
        let send = async move {
            let client = inner.client_for(request.connect_timeout)?;
            let response = build(&client, request)?
                .send()
                .await
                .map_err(map_send_error)?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_string(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = response
                .bytes_stream()
                .map(|chunk| chunk.map_err(map_body_error));
            let body: BodyStream = Box::pin(InRuntime::new(body_handle, body));
            Ok(HttpResponse {
                status,
                headers,
                body,
            })
        };
        Box::pin(InRuntime::new(handle, send))
    }
}

fn build(
    client: &reqwest::Client,
    request: HttpRequest,
) -> Result<reqwest::RequestBuilder, HttpError> {
    let method = match request.method {
        Method::Get => reqwest::Method::GET,
        Method::Post => reqwest::Method::POST,
    };
    let url = reqwest::Url::parse(&request.url)
        .map_err(|e| HttpError::new(HttpErrorKind::InvalidRequest, format!("invalid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(HttpError::new(
            HttpErrorKind::InvalidRequest,
            format!("unsupported URL scheme {:?} (http or https)", url.scheme()),
        ));
    }
    let mut headers = reqwest::header::HeaderMap::with_capacity(request.headers.len());
    for (name, value) in &request.headers {
        let header_name =
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                HttpError::new(
                    HttpErrorKind::InvalidRequest,
                    format!("invalid header name {name:?}"),
                )
            })?;
        // Never quote the value: it may be a credential.
        let mut header_value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
            HttpError::new(
                HttpErrorKind::InvalidRequest,
                format!("invalid value for header {name:?}"),
            )
        })?;
        if name.eq_ignore_ascii_case("authorization") || name.to_ascii_lowercase().contains("key") {
            header_value.set_sensitive(true);
        }
        headers.append(header_name, header_value);
    }
    Ok(client
        .request(method, url)
        .headers(headers)
        .body(request.body))
}

/// reqwest's error and its sources, without the URL (which some providers use for keys).
fn describe(err: &reqwest::Error) -> String {
    let mut message = String::new();
    let mut current: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !text.is_empty() && !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
        current = e.source();
    }
    message
}

/// Whether hyper, somewhere in `err`'s source chain, refused an oversized response head.
fn is_head_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && hyper.is_parse_too_large()
        {
            return true;
        }
        current = e.source();
    }
    false
}

fn map_send_error(err: reqwest::Error) -> HttpError {
    let err = err.without_url();
    if is_head_too_large(&err) {
        tracing::debug!(err = %describe(&err), "upstream response head too large");
        return HttpError::response_head_too_large();
    }
    let kind = if err.is_builder() {
        HttpErrorKind::InvalidRequest
    } else if err.is_connect() && err.is_timeout() {
        HttpErrorKind::ConnectTimeout
    } else if err.is_connect() {
        HttpErrorKind::Connect
    } else {
        HttpErrorKind::Io
    };
    HttpError::new(kind, describe(&err))
}

fn map_body_error(err: reqwest::Error) -> HttpError {
    let err = err.without_url();
    HttpError::new(HttpErrorKind::Io, describe(&err))
}

/// Polls `inner` inside the tokio runtime of `handle` (when there is one), and turns a panic
/// into an error (reqwest panics when polled outside any tokio runtime).
struct InRuntime<T> {
    handle: Option<Handle>,
    inner: Pin<Box<T>>,
    failed: bool,
}

impl<T> InRuntime<T> {
    fn new(handle: Option<Handle>, inner: T) -> Self {
        InRuntime {
            handle,
            inner: Box::pin(inner),
            failed: false,
        }
    }

    fn enter<R>(&mut self, f: impl FnOnce(Pin<&mut T>) -> R) -> Result<R, HttpError> {
        let _enter = match &self.handle {
            Some(handle) => Some(handle.enter()),
            None if Handle::try_current().is_err() => {
                return Err(HttpError::new(
                    HttpErrorKind::Connect,
                    "no tokio runtime: create the ReqwestClient inside one or give it a handle \
                     with ReqwestClient::runtime_handle",
                ));
            }
            None => None,
        };
        let inner = self.inner.as_mut();
        std::panic::catch_unwind(AssertUnwindSafe(|| f(inner))).map_err(|payload| {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            HttpError::new(
                HttpErrorKind::Io,
                format!("the HTTP client panicked: {message}"),
            )
        })
    }
}

impl<T, R> Future for InRuntime<T>
where
    T: Future<Output = Result<R, HttpError>>,
{
    type Output = Result<R, HttpError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.enter(|inner| inner.poll(cx)) {
            Ok(poll) => poll,
            Err(err) => Poll::Ready(Err(err)),
        }
    }
}

impl<T> Stream for InRuntime<T>
where
    T: Stream<Item = Result<Bytes, HttpError>>,
{
    type Item = Result<Bytes, HttpError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match self.enter(|inner| inner.poll_next(cx)) {
            Ok(poll) => poll,
            Err(err) => {
                self.failed = true;
                Poll::Ready(Some(Err(err)))
            }
        }
    }
}

// `InRuntime` boxes its inner value, so it is `Unpin` whatever `T` is.
impl<T> Unpin for InRuntime<T> {}
