//! [`UreqClient`]: the core's [`HttpClient`] on ureq 3 (rustls), read on a thread.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use agent_core::http::proxy::{ProxyConfig, ProxyRoute};
use agent_core::http::{
    BodyStream, HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpResponse, Method,
};
use agent_core::runtime::{BoxFuture, block_on};
use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_core::Stream;
use ureq::config::Config;
use ureq::http;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout,
    RustlsConnector, ShutdownHandle, Transport,
};

use crate::body_reader::{self, BodyJob};

/// How many body chunks may wait between the exchange thread and the consumer.
pub const BODY_CHANNEL_CAPACITY: usize = 4;

/// Size of the buffer the body is read into (a chunk is at most this big). One buffer serves
/// every stream (see *How it works* on [`UreqClient`]).
pub const READ_BUFFER_SIZE: usize = 16 * 1024;

/// An [`HttpClient`] on [ureq](https://docs.rs/ureq) 3 with rustls (certificate verification on,
/// Mozilla's root certificates): each request is sent on a short-lived thread of its own, and
/// every response body is read by one shared thread.
///
/// A server whose certificate does not verify fails with [`HttpErrorKind::Connect`] and a
/// message naming the certificate problem. The only opt-out, for a local development server
/// with a self-signed certificate, is [`UreqClient::danger_accept_invalid_certs`].
///
/// Cheap to clone; clones share ureq's connection pool. It keeps the whole [`HttpClient`]
/// contract:
///
/// * the `send` future resolves when the response head has arrived, whatever the status
///   (4xx and 5xx are responses, not errors);
/// * the body yields each chunk as soon as `read` returns it from the socket;
/// * dropping the future or the body closes the connection promptly (see *How it works*
///   below);
/// * [`HttpRequest::connect_timeout`] is applied to TCP connect and TLS handshake;
/// * errors never contain header values.
///
/// Redirects are not followed by [`UreqClient::new`]: a 3xx comes back as a response (an
/// API client should call the right URL rather than have a `POST` silently turned into a
/// `GET`).
///
/// The largest response head [`UreqClient::new`] accepts is [`MAX_RESPONSE_HEAD_BYTES`]
/// (16 KiB); with [`with_config`](Self::with_config), the smaller of your config's
/// `max_response_header_size` and its `input_buffer_size` less one byte.
///
/// # How it works
///
/// Each request starts on a thread of its own (an *exchange thread*), which connects, sends
/// the request with ureq and hands the response head over through a oneshot channel. Then it
/// puts the connection's socket in non-blocking mode, hands the body to the client's *body
/// reader thread* (one per process, shared by every `UreqClient`), and ends. The body reader
/// waits on all those sockets at once (`epoll(7)`) and, when one is readable, reads its body
/// with ureq's `Read::read` into a shared [`READ_BUFFER_SIZE`] buffer, forwarding every chunk
/// the moment `read` returns it through a bounded channel of [`BODY_CHANNEL_CAPACITY`]
/// chunks. When a channel is full it stops reading that socket until the consumer takes a
/// chunk (so the socket's flow control pushes back on the server). A streamed response thus
/// costs its connection's buffers and its channel, not a thread; 10,000 open streams do not
/// need 10,000 threads (nor their memory mappings, which Linux limits per process).
/// On systems without `epoll`, or if the reader thread cannot start, the exchange thread
/// reads its body itself.
///
/// Dropping the `send` future or the body stream aborts the exchange: the socket is shut down
/// at once from the dropping thread (even while the exchange thread is blocked in `read` on an
/// idle connection), whoever reads it sees the end at once and drops the response, and the
/// peer sees the connection close. Completed exchanges return their connection to ureq's
/// pool (back in blocking mode).
///
/// Neither thread is taken from the [`ThreadPoolRuntime`](crate::ThreadPoolRuntime) pool: a
/// response head can take long to come, and a few slow ones must not starve blocking tools
/// (nor be starved by them). ureq's own body timeouts (`timeout_recv_body`, `timeout_global`)
/// are checked when bytes arrive; a silent stream is ended by the caller's inactivity
/// timeout.
///
/// ```no_run
/// use agent_core::http::{HttpClient, HttpRequest, Method};
/// use agent_core::runtime::block_on;
/// use futures_util::StreamExt;
/// use backend_blocking::UreqClient;
///
/// let client = UreqClient::new();
/// let response = block_on(client.send(HttpRequest::new(Method::Get, "https://example.com/"))).unwrap();
/// println!("status {}", response.status);
/// let mut body = response.body;
/// while let Some(chunk) = block_on(body.next()) {
///     println!("{} bytes", chunk.unwrap().len());
/// }
/// ```
#[derive(Clone)]
pub struct UreqClient {
    agent: ureq::Agent,
    proxy: Arc<ProxyConfig>,
}

impl fmt::Debug for UreqClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UreqClient")
            .field(
                "danger_accept_invalid_certs",
                &self.agent.config().tls_config().disable_verification(),
            )
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

impl Default for UreqClient {
    fn default() -> Self {
        UreqClient::new()
    }
}

/// The largest response head (status line and headers) [`UreqClient::new`] accepts: the
/// limit every backend's own client applies (16 KiB). A larger head fails with
/// [`HttpError::response_head_too_large`].
pub use agent_core::http::MAX_RESPONSE_HEAD_BYTES;
/// ureq's input buffer per connection (its default is 128 KiB, allocated and zeroed for every
/// connection, most of a stream's memory). ureq reads the head into it, so it must hold one
/// byte more than the largest head it accepts: a head that fills it is reported as too large
/// (see `run`).
const INPUT_BUFFER_BYTES: usize = MAX_RESPONSE_HEAD_BYTES + 1;
/// ureq's output buffer per connection (its default is 128 KiB). Requests are written through
/// it in pieces; it must hold the longest header line.
const OUTPUT_BUFFER_BYTES: usize = 8 * 1024;

/// The ureq configuration of [`UreqClient::new`]: statuses as responses, no redirects, and
/// the buffers above.
fn default_config() -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .max_response_header_size(MAX_RESPONSE_HEAD_BYTES)
        .input_buffer_size(INPUT_BUFFER_BYTES)
        .output_buffer_size(OUTPUT_BUFFER_BYTES)
}

impl UreqClient {
    /// A client with ureq's defaults (rustls, pooled connections), the proxies of the
    /// environment ([`ProxyConfig::from_env`]: `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`,
    /// `NO_PROXY`, read as every backend's client reads them), statuses as responses and no
    /// redirects.
    pub fn new() -> Self {
        UreqClient::with_config(default_config().build())
    }

    /// A client like [`new`](Self::new) that accepts **any** TLS certificate: self-signed,
    /// expired, issued for another host. For local development servers only (a model server
    /// on your machine with a self-signed certificate); never for a remote API, where it
    /// would hand your API key and your data to whoever intercepts the connection.
    ///
    /// Every other client of this crate verifies certificates (rustls with Mozilla's roots).
    /// To trust one private certificate authority instead, keep verification on and give its
    /// root to [`with_config`](Self::with_config) through ureq's
    /// `TlsConfig::builder().root_certs(..)`.
    ///
    /// ```
    /// // https://127.0.0.1:8443 serves a self-signed certificate.
    /// let client = backend_blocking::UreqClient::danger_accept_invalid_certs();
    /// # let _ = client;
    /// ```
    pub fn danger_accept_invalid_certs() -> Self {
        tracing::warn!(
            "UreqClient::danger_accept_invalid_certs: TLS certificates are NOT verified \
             (for local development servers only)"
        );
        let tls = ureq::tls::TlsConfig::builder()
            .disable_verification(true)
            .build();
        UreqClient::with_config(default_config().tls_config(tls).build())
    }

    /// A client with your own ureq [`Config`] (TLS settings, proxy, user agent, pool sizes,
    /// redirects, …).
    ///
    /// Whatever `config` says, each request is sent with `http_status_as_error(false)` (the
    /// contract wants statuses as responses), with the request's `connect_timeout`, and
    /// with the proxy of the client's [`ProxyConfig`] (the environment's; see
    /// [`with_proxy`](Self::with_proxy)) in place of `config`'s. The
    /// client builds its ureq agent with its own connector chain (ureq's CONNECT-proxy, TCP
    /// and rustls connectors, plus a layer that lets a dropped body shut its socket down).
    ///
    /// ```
    /// use std::time::Duration;
    /// use backend_blocking::UreqClient;
    ///
    /// let config = ureq::Agent::config_builder()
    ///     .user_agent("my-agent/1.0")
    ///     .max_idle_connections_per_host(4)
    ///     .build();
    /// let client = UreqClient::with_config(config);
    /// # let _ = client;
    /// ```
    pub fn with_config(config: Config) -> Self {
        let connector = Begin
            .chain(ConnectProxyConnector::default())
            .chain(Tcp)
            .chain(RustlsConnector::default())
            .chain(Forward)
            .chain(Track);
        UreqClient {
            agent: ureq::Agent::with_parts(config, connector, ForwardResolver::default()),
            proxy: Arc::new(ProxyConfig::from_env()),
        }
    }

    /// The same client (sharing its pool) with the proxies of `config` instead of the
    /// environment's ([`ProxyConfig::none`] for none).
    ///
    /// An `https://` URL goes through a `CONNECT` tunnel (ureq's CONNECT proxy, set per
    /// request), with TLS to the upstream inside. An `http://` URL is sent to the proxy as
    /// an absolute-form request (`POST http://host:port/path HTTP/1.1`, with
    /// `Proxy-Authorization` when the proxy has credentials): ureq 3 only knows CONNECT
    /// proxies and writes origin-form targets, so this client resolves the upstream's name
    /// to the proxy's addresses and rewrites the request line on that connection, which is
    /// never pooled.
    ///
    /// ```
    /// use agent_core::http::proxy::{ProxyConfig, ProxyRoute};
    /// let proxy = ProxyConfig::none().with_https(Some(ProxyRoute::new("127.0.0.1", 3128)));
    /// let client = backend_blocking::UreqClient::new().with_proxy(proxy);
    /// # let _ = client;
    /// ```
    pub fn with_proxy(mut self, config: ProxyConfig) -> Self {
        self.proxy = Arc::new(config);
        self
    }

    /// The proxies it uses.
    pub fn proxy_config(&self) -> &ProxyConfig {
        &self.proxy
    }

    /// The underlying ureq agent (for requests outside the [`HttpClient`] trait).
    pub fn agent(&self) -> &ureq::Agent {
        &self.agent
    }
}

impl HttpClient for UreqClient {
    fn send(&self, request: HttpRequest) -> BoxFuture<Result<HttpResponse, HttpError>> {
        let agent = self.agent.clone();
        let route = self.proxy.proxy_for(&request.url).cloned();
        Box::pin(async move {
            let exchange = Arc::new(Exchange::new());
            // Aborts the exchange if this future is dropped before the head arrives.
            let guard = AbortOnDrop(exchange.clone());
            let (head_tx, head_rx) = oneshot::channel();
            let (body_tx, body_rx) = mpsc::channel(BODY_CHANNEL_CAPACITY.saturating_sub(1));
            let spawned = std::thread::Builder::new()
                .name("ureq-exchange".into())
                .spawn(move || run_exchange(&agent, request, route, &exchange, head_tx, body_tx));
            if let Err(err) = spawned {
                return Err(HttpError::new(
                    HttpErrorKind::Io,
                    format!("could not start a thread for the request: {err}"),
                ));
            }
            match head_rx.await {
                Ok(Ok(head)) => Ok(HttpResponse {
                    status: head.status,
                    headers: head.headers,
                    body: Box::pin(UreqBody {
                        chunks: body_rx,
                        _guard: guard,
                        done: false,
                    }) as BodyStream,
                }),
                Ok(Err(err)) => Err(err),
                Err(oneshot::Canceled) => Err(HttpError::new(
                    HttpErrorKind::Io,
                    "the request thread ended without a response",
                )),
            }
        })
    }
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

pub(crate) type Chunk = Result<Bytes, HttpError>;

/// The body handed to the consumer: chunks from the exchange thread.
struct UreqBody {
    chunks: mpsc::Receiver<Chunk>,
    _guard: AbortOnDrop,
    done: bool,
}

impl Stream for UreqBody {
    type Item = Chunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        if self.done {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.chunks).poll_next(cx);
        if let Poll::Ready(None | Some(Err(_))) = &polled {
            self.done = true;
        }
        if let Poll::Ready(None) = polled
            && !self._guard.0.is_finished()
        {
            // The reader went away without the end of the body (it panicked, or could not
            // report its error): never let that look like a complete body.
            return Poll::Ready(Some(Err(HttpError::new(
                HttpErrorKind::Io,
                "reading the response body failed: the body reader stopped early",
            ))));
        }
        polled
    }
}

/// Runs on the exchange thread: send, hand over the head, then forward the body.
fn run_exchange(
    agent: &ureq::Agent,
    request: HttpRequest,
    route: Option<ProxyRoute>,
    exchange: &Arc<Exchange>,
    head_tx: oneshot::Sender<Result<Head, HttpError>>,
    mut body_tx: mpsc::Sender<Chunk>,
) {
    CURRENT_EXCHANGE.with(|current| *current.borrow_mut() = Some(exchange.clone()));
    let response = match send_request(agent, request, route.as_ref()) {
        Ok(response) => response,
        Err(err) => {
            let _ = head_tx.send(Err(map_error(err, exchange)));
            return;
        }
    };
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
    let head = Head {
        status: parts.status.as_u16(),
        headers,
    };
    if head_tx.send(Ok(head)).is_err() {
        // The `send` future was dropped: dropping the body closes the connection.
        exchange.abort();
        return;
    }
    let reader = body.into_reader();
    // The body goes to the shared reader thread when the connection's socket is ours (it
    // always is: `Tcp` opens every connection); this thread then ends.
    let reader = match exchange.socket() {
        Some(socket) => {
            let job = Box::new(BodyJob {
                reader,
                socket,
                exchange: exchange.clone(),
                body_tx,
            });
            match body_reader::hand_over(job) {
                Ok(()) => return,
                Err(job) => {
                    body_tx = job.body_tx;
                    job.reader
                }
            }
        }
        None => reader,
    };
    let forwarded = std::panic::catch_unwind(AssertUnwindSafe(|| {
        forward_body(reader, exchange, &mut body_tx);
    }));
    if forwarded.is_err() {
        // A panic must not look like the end of the body: report a broken body instead.
        exchange.abort();
        let message = "reading the response body failed: the reader thread panicked";
        if block_on(std::future::poll_fn(|cx| body_tx.poll_ready(cx))).is_ok() {
            let _ = body_tx.start_send(Err(HttpError::new(HttpErrorKind::Io, message)));
        }
    }
}

/// Read the body with `read` and forward each chunk as soon as it is read.
fn forward_body(mut reader: impl Read, exchange: &Exchange, body_tx: &mut mpsc::Sender<Chunk>) {
    let mut buf = vec![0u8; READ_BUFFER_SIZE];
    loop {
        // Wait for room first: never read from the socket for a consumer that is gone.
        if block_on(std::future::poll_fn(|cx| body_tx.poll_ready(cx))).is_err() {
            exchange.abort();
            return;
        }
        match reader.read(&mut buf) {
            Ok(0) => {
                // The body is complete and ureq may have pooled the connection: a late drop
                // of the body stream must not shut it down any more.
                exchange.finish();
                return;
            }
            Ok(n) => {
                if body_tx
                    .start_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                    .is_err()
                {
                    exchange.abort();
                    return;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                if !exchange.is_aborted() {
                    let message = format!("reading the response body failed: {err}");
                    let _ = body_tx.start_send(Err(HttpError::new(HttpErrorKind::Io, message)));
                }
                return;
            }
        }
    }
}

fn send_request(
    agent: &ureq::Agent,
    request: HttpRequest,
    route: Option<&ProxyRoute>,
) -> Result<http::Response<ureq::Body>, SendError> {
    let method = match request.method {
        Method::Get => http::Method::GET,
        Method::Post => http::Method::POST,
    };
    let mut builder = http::Request::builder().method(method);
    for (name, value) in &request.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| SendError::Invalid(format!("invalid header name {name:?}")))?;
        // The proxy's credentials are the client's to send.
        if name == http::header::PROXY_AUTHORIZATION {
            continue;
        }
        // The value may be a secret: the message names the header only.
        let value = http::HeaderValue::from_str(value).map_err(|_| {
            SendError::Invalid(format!(
                "the value of header {name:?} is not a valid header value"
            ))
        })?;
        builder = builder.header(name, value);
    }
    // Never quote the URL: some providers put a key in its query string.
    let uri: http::Uri = request
        .url
        .parse()
        .map_err(|_| SendError::Invalid("invalid URL".into()))?;
    let https = uri
        .scheme()
        .is_some_and(|s| s.as_str().eq_ignore_ascii_case("https"));
    // https:// through ureq's CONNECT proxy; http:// forwarded in absolute-form (see
    // `Forward`), with the credentials on the request itself.
    let mut proxy = None;
    match route {
        Some(route) if https => proxy = Some(connect_proxy(route)?),
        Some(route) => {
            if let Some(auth) = route.basic_authorization() {
                let mut value = http::HeaderValue::from_str(auth.expose()).map_err(|_| {
                    SendError::Invalid("the proxy credentials are not a valid header value".into())
                })?;
                value.set_sensitive(true);
                builder = builder.header(http::header::PROXY_AUTHORIZATION, value);
            }
            FORWARD_PROXY.with(|f| *f.borrow_mut() = Some(route.clone()));
        }
        None => {}
    }
    let builder = builder.uri(uri);
    let connect_timeout = request.connect_timeout;
    if request.body.is_empty() && request.method == Method::Get {
        let request = builder
            .body(())
            .map_err(|_| SendError::Invalid("the request could not be built".into()))?;
        run(agent, request, connect_timeout, proxy)
    } else {
        let request = builder
            .body(request.body)
            .map_err(|_| SendError::Invalid("the request could not be built".into()))?;
        run(agent, request, connect_timeout, proxy)
    }
}

/// ureq's CONNECT proxy for `route`.
fn connect_proxy(route: &ProxyRoute) -> Result<ureq::Proxy, SendError> {
    let mut builder = ureq::Proxy::builder(ureq::ProxyProtocol::Http)
        .host(route.host())
        .port(route.port());
    if let Some(credentials) = route.credentials() {
        builder = builder
            .username(credentials.username().expose())
            .password(credentials.password().expose());
    }
    // The message never names the proxy's URL (it would carry the credentials).
    builder
        .build()
        .map_err(|_| SendError::Invalid("the proxy address is not usable".into()))
}

fn run<B: ureq::AsSendBody>(
    agent: &ureq::Agent,
    request: http::Request<B>,
    connect_timeout: Option<Duration>,
    proxy: Option<ureq::Proxy>,
) -> Result<http::Response<ureq::Body>, SendError> {
    // ureq reads the head into its input buffer and reports a head too large only once it
    // holds more than `max_response_header_size`: a smaller limit keeps a head that fills
    // the buffer a clear error (not a connection that "made no progress").
    let limits = agent.config();
    let max_head = limits
        .max_response_header_size()
        .min(limits.input_buffer_size().saturating_sub(1));
    let mut config = agent
        .configure_request(request)
        .http_status_as_error(false)
        .max_response_header_size(max_head)
        .proxy(proxy);
    if connect_timeout.is_some() {
        config = config.timeout_connect(connect_timeout);
    }
    agent.run(config.build()).map_err(SendError::Ureq)
}

enum SendError {
    /// A bad header or URL, detected before ureq saw the request.
    Invalid(String),
    Ureq(ureq::Error),
}

/// Map a ureq error to an [`HttpError`]. ureq's messages never contain header values (they
/// describe the failure, the URL at most).
fn map_error(err: SendError, exchange: &Exchange) -> HttpError {
    let err = match err {
        SendError::Invalid(message) => {
            return HttpError::new(HttpErrorKind::InvalidRequest, message);
        }
        SendError::Ureq(err) => err,
    };
    if let ureq::Error::LargeResponseHeader(..) = err {
        tracing::debug!(%err, "upstream response head too large");
        return HttpError::response_head_too_large();
    }
    let kind = match &err {
        ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
            HttpErrorKind::ConnectTimeout
        }
        ureq::Error::Timeout(_) => HttpErrorKind::Io,
        ureq::Error::BadUri(_) | ureq::Error::Http(_) | ureq::Error::InvalidProxyUrl => {
            HttpErrorKind::InvalidRequest
        }
        ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::Tls(_)
        | ureq::Error::Pem(_)
        | ureq::Error::Rustls(_)
        | ureq::Error::TlsRequired
        | ureq::Error::ConnectProxyFailed(_) => HttpErrorKind::Connect,
        ureq::Error::Io(io) if !exchange.is_connected() => match io.kind() {
            io::ErrorKind::TimedOut => HttpErrorKind::ConnectTimeout,
            _ => HttpErrorKind::Connect,
        },
        _ => HttpErrorKind::Io,
    };
    let message = match &err {
        // http::Error's message is generic ("invalid HTTP header value"); never a value.
        ureq::Error::Http(_) => {
            "the request could not be built (invalid method, URL or header)".to_string()
        }
        // These two quote the whole URL, which may carry a key in its query string.
        ureq::Error::BadUri(_) => {
            "invalid URL (it needs an http:// or https:// scheme and a host)".to_string()
        }
        ureq::Error::RequireHttpsOnly(_) => {
            "the client is configured for https:// URLs only".to_string()
        }
        other => other.to_string(),
    };
    HttpError::new(kind, message)
}

// ---------------------------------------------------------------------------------------
// Aborting an exchange: shutting its socket down from the consumer's thread.
//
// ureq blocks in `read` while the server is silent, so a dropped consumer cannot simply be
// noticed at the next chunk: the connection would stay open as long as the server is idle.
// The connector chain therefore remembers, for every connection, the socket's shutdown
// handle (captured from ureq's own `register_shutdown`) and which exchange uses it right now
// (claimed on every I/O call, on the exchange thread). Aborting an exchange shuts down the
// sockets it still owns; a connection that went back to the pool and was claimed by another
// exchange is left alone, and a killed connection reports itself closed, so the pool never
// hands it out again.
// ---------------------------------------------------------------------------------------

static NEXT_EXCHANGE_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The exchange the current thread is running (set once on each exchange thread).
    static CURRENT_EXCHANGE: RefCell<Option<Arc<Exchange>>> = const { RefCell::new(None) };
    /// The proxy this thread's `http://` request is forwarded to (absolute-form).
    static FORWARD_PROXY: RefCell<Option<ProxyRoute>> = const { RefCell::new(None) };
    /// The socket most recently opened by this thread's connector chain.
    static LAST_SOCKET: RefCell<Option<Weak<Socket>>> = const { RefCell::new(None) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) struct Exchange {
    id: u64,
    aborted: AtomicBool,
    finished: AtomicBool,
    connected: AtomicBool,
    conns: Mutex<Vec<Arc<Conn>>>,
}

impl Exchange {
    fn new() -> Self {
        Exchange {
            id: NEXT_EXCHANGE_ID.fetch_add(1, Ordering::Relaxed),
            aborted: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    fn is_finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    /// The socket of the connection this exchange uses now (the last one it claimed).
    fn socket(&self) -> Option<Arc<Socket>> {
        lock(&self.conns)
            .iter()
            .rev()
            .find_map(|conn| conn.socket.as_ref().and_then(Weak::upgrade))
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// The body was read to its end: nothing to abort any more.
    pub(crate) fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
        lock(&self.conns).clear();
    }

    /// Shut down every connection this exchange still owns.
    pub(crate) fn abort(&self) {
        if self.finished.load(Ordering::SeqCst) {
            return;
        }
        self.aborted.store(true, Ordering::SeqCst);
        let conns = lock(&self.conns).clone();
        for conn in conns {
            conn.kill_if_owned_by(self.id);
        }
    }

    /// Remember that this exchange uses `conn` (called on the exchange thread).
    fn attach(&self, conn: &Arc<Conn>) {
        self.connected.store(true, Ordering::SeqCst);
        {
            let mut conns = lock(&self.conns);
            if !conns.iter().any(|c| Arc::ptr_eq(c, conn)) {
                conns.push(conn.clone());
            }
        }
        // An abort that ran before the push did not see this connection: kill it here.
        if self.is_aborted() {
            conn.kill_if_owned_by(self.id);
        }
    }
}

/// Aborts its exchange when dropped (the `send` future or the body stream went away).
struct AbortOnDrop(Arc<Exchange>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Run `f` as `exchange` (the connections it does I/O on are claimed for it): the body
/// reader thread serves many exchanges, one at a time.
pub(crate) fn with_exchange<R>(exchange: &Arc<Exchange>, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CURRENT_EXCHANGE.with(|current| *current.borrow_mut() = None);
        }
    }
    CURRENT_EXCHANGE.with(|current| *current.borrow_mut() = Some(exchange.clone()));
    let _reset = Reset;
    f()
}

/// One connection, as seen by the abort machinery.
struct Conn {
    socket: Option<Weak<Socket>>,
    state: Mutex<ConnState>,
}

struct ConnState {
    /// Id of the exchange using the connection (0: none).
    owner: u64,
    killed: bool,
}

impl Conn {
    /// Make the current thread's exchange the owner; `false` if the connection was killed.
    fn claim(self: &Arc<Self>) -> bool {
        let exchange = CURRENT_EXCHANGE.with(|current| current.borrow().clone());
        let id = exchange.as_ref().map_or(0, |e| e.id);
        {
            let mut state = lock(&self.state);
            if state.killed {
                return false;
            }
            if state.owner == id {
                return true;
            }
            state.owner = id;
        }
        if let Some(exchange) = exchange {
            exchange.attach(self);
        }
        !lock(&self.state).killed
    }

    fn kill_if_owned_by(&self, id: u64) {
        let mut state = lock(&self.state);
        if state.owner == id && !state.killed {
            state.killed = true;
            if let Some(socket) = self.socket.as_ref().and_then(Weak::upgrade) {
                socket.shutdown();
            }
        }
    }
}

fn aborted_error() -> ureq::Error {
    ureq::Error::Io(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the request was aborted (its consumer went away)",
    ))
}

/// First connector of the chain: forget the socket of a previous connection on this thread.
#[derive(Debug)]
struct Begin;

impl Connector<()> for Begin {
    type Out = ();

    fn connect(
        &self,
        _: &ConnectionDetails,
        chained: Option<()>,
    ) -> Result<Option<()>, ureq::Error> {
        LAST_SOCKET.with(|last| *last.borrow_mut() = None);
        Ok(chained)
    }
}

/// The TCP connector (in place of ureq's `TcpConnector`, which keeps its socket to itself):
/// the same connect (each resolved address in turn, sharing the connect timeout as ureq
/// does), with the socket kept for [`Track`] (to shut it down on abort) and for the body
/// reader thread (to wait on it with the others).
#[derive(Debug)]
struct Tcp;

impl<In: Transport> Connector<In> for Tcp {
    type Out = Either<In, SocketTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if let Some(chained) = chained {
            return Ok(Some(Either::A(chained)));
        }
        let config = details.config;
        let stream = connect_any(&details.addrs, details.timeout)?;
        if config.no_delay() {
            stream.set_nodelay(true)?;
        }
        let socket = Arc::new(Socket {
            stream,
            shared: AtomicBool::new(false),
        });
        LAST_SOCKET.with(|last| *last.borrow_mut() = Some(Arc::downgrade(&socket)));
        (details.register_shutdown)(Arc::downgrade(&socket) as Weak<dyn ShutdownHandle>)?;
        // Under TLS these buffers only carry records to and from rustls (whose transport
        // has buffers of the configured sizes): small ones do.
        let (input, output) = if details.needs_tls() {
            (
                config.input_buffer_size().min(TLS_RECORD_BUFFER_BYTES),
                config.output_buffer_size().min(TLS_RECORD_BUFFER_BYTES),
            )
        } else {
            (config.input_buffer_size(), config.output_buffer_size())
        };
        Ok(Some(Either::B(SocketTransport {
            socket,
            buffers: LazyBuffers::new(input.max(1), output.max(1)),
            timeout_read: None,
            timeout_write: None,
        })))
    }
}

/// The TCP-level buffers under TLS.
const TLS_RECORD_BUFFER_BYTES: usize = 8 * 1024;

/// Connect to the first of `addrs` that answers. Like ureq's own connector, each address
/// gets a share of the timeout (halving for each next one), and only failures that concern
/// one address (refused, unreachable) move on to the next.
fn connect_any(addrs: &[SocketAddr], timeout: NextTimeout) -> Result<TcpStream, ureq::Error> {
    let total = timeout.not_zero().map(|t| *t);
    let weights = 2.0 * (1.0 - 0.5_f64.powi(addrs.len() as i32));
    let mut weight = 1.0_f64;
    let mut last_err = None;
    for addr in addrs {
        let per_addr = total.map(|t| {
            Duration::from_secs_f64(t.as_secs_f64() * weight / weights)
                .max(Duration::from_millis(10))
        });
        weight /= 2.0;
        let connected = match per_addr {
            Some(t) => TcpStream::connect_timeout(addr, t),
            None => TcpStream::connect(addr),
        };
        match connected {
            Ok(stream) => return Ok(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                last_err = Some(ureq::Error::Timeout(ureq::Timeout::Connect));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::HostUnreachable
                        | io::ErrorKind::NetworkUnreachable
                        | io::ErrorKind::NetworkDown
                        | io::ErrorKind::AddrNotAvailable
                ) =>
            {
                last_err = Some(ureq::Error::Io(e));
            }
            Err(e) => return Err(ureq::Error::Io(e)),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        ureq::Error::Io(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "Connection refused",
        ))
    }))
}

/// A connection's socket: shut down by an abort, waited on by the body reader thread.
#[derive(Debug)]
pub(crate) struct Socket {
    stream: TcpStream,
    /// In non-blocking mode for the body reader thread.
    shared: AtomicBool,
}

impl Socket {
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Non-blocking mode: reads with nothing to read fail with `WouldBlock` at once.
    pub(crate) fn enter_shared(&self) -> io::Result<()> {
        self.stream.set_nonblocking(true)?;
        self.shared.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Back to blocking mode (the connection is pooled, or writes).
    fn leave_shared(&self) -> io::Result<()> {
        if self.shared.swap(false, Ordering::SeqCst) {
            self.stream.set_nonblocking(false)?;
        }
        Ok(())
    }

    fn is_shared(&self) -> bool {
        self.shared.load(Ordering::SeqCst)
    }
}

impl ShutdownHandle for Socket {
    fn shutdown(&self) {
        // An error means the socket is already closed or shut down.
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// ureq's transport over a [`Socket`]: blocking I/O with ureq's timeouts, except that a
/// read in non-blocking mode with nothing to read fails with `WouldBlock` (which ureq's body
/// reader passes on unchanged, its state intact, so the read can be retried later).
#[derive(Debug)]
struct SocketTransport {
    socket: Arc<Socket>,
    buffers: LazyBuffers,
    timeout_read: Option<Duration>,
    timeout_write: Option<Duration>,
}

impl SocketTransport {
    fn set_timeout(
        &self,
        timeout: NextTimeout,
        previous: &mut Option<Duration>,
        set: impl Fn(&TcpStream, Option<Duration>) -> io::Result<()>,
    ) -> io::Result<()> {
        let wanted = timeout.not_zero().map(|t| *t);
        if wanted != *previous {
            set(&self.socket.stream, wanted)?;
            *previous = wanted;
        }
        Ok(())
    }
}

fn timed_out(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

impl Transport for SocketTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        if timeout.after.is_zero() {
            return Err(ureq::Error::Timeout(timeout.reason));
        }
        // Writes block (a TLS write while the body reader thread reads is rare and short).
        let shared = self.socket.is_shared();
        if shared {
            self.socket.stream.set_nonblocking(false)?;
        }
        let mut previous = self.timeout_write;
        self.set_timeout(timeout, &mut previous, TcpStream::set_write_timeout)?;
        self.timeout_write = previous;
        let written = (&self.socket.stream).write_all(&self.buffers.output()[..amount]);
        if shared {
            self.socket.stream.set_nonblocking(true)?;
        }
        match written {
            Ok(()) => Ok(()),
            Err(e) if timed_out(&e) => Err(ureq::Error::Timeout(timeout.reason)),
            Err(e) => Err(e.into()),
        }
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        if timeout.after.is_zero() {
            return Err(ureq::Error::Timeout(timeout.reason));
        }
        let shared = self.socket.is_shared();
        if !shared {
            let mut previous = self.timeout_read;
            self.set_timeout(timeout, &mut previous, TcpStream::set_read_timeout)?;
            self.timeout_read = previous;
        }
        let input = self.buffers.input_append_buf();
        let amount = loop {
            match (&self.socket.stream).read(input) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Nothing to read yet: the body reader thread waits for the socket.
                Err(e) if shared && e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(ureq::Error::Io(e));
                }
                Err(e) if timed_out(&e) => return Err(ureq::Error::Timeout(timeout.reason)),
                Err(e) => return Err(e.into()),
            }
        };
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        // Asked when the connection goes back to the pool and when it is taken out: it
        // leaves non-blocking mode, then a read that would block means nothing unexpected
        // arrived (what ureq's TCP transport checks too).
        if self.socket.leave_shared().is_err() || self.socket.stream.set_nonblocking(true).is_err()
        {
            return false;
        }
        let mut probe = [0u8; 1];
        let open = match (&self.socket.stream).read(&mut probe) {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            // Bytes nobody asked for, or the peer closed: not reusable.
            Ok(_) => false,
        };
        self.socket.stream.set_nonblocking(false).is_ok() && open
    }

    fn is_tls(&self) -> bool {
        false
    }
}

/// Last connector of the chain: wraps the finished transport (TCP or TLS) in [`Tracked`].
#[derive(Debug)]
struct Track;

impl<In: Transport> Connector<In> for Track {
    type Out = Tracked<In>;

    fn connect(
        &self,
        _: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Tracked<In>>, ureq::Error> {
        let Some(inner) = chained else {
            return Ok(None);
        };
        let socket = LAST_SOCKET.with(|last| last.borrow().clone());
        let conn = Arc::new(Conn {
            socket,
            state: Mutex::new(ConnState {
                owner: 0,
                killed: false,
            }),
        });
        if !conn.claim() {
            return Err(aborted_error());
        }
        Ok(Some(Tracked { inner, conn }))
    }
}

/// A transport whose I/O claims the connection for the current exchange.
struct Tracked<T> {
    inner: T,
    conn: Arc<Conn>,
}

impl<T: fmt::Debug> fmt::Debug for Tracked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Transport for Tracked<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        if !self.conn.claim() {
            return Err(aborted_error());
        }
        self.inner.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        if !self.conn.claim() {
            return Err(aborted_error());
        }
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        // Called when a connection goes back to the pool and when it is taken out again: the
        // taker becomes the owner, so a late abort of the previous exchange spares it.
        self.conn.claim() && self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

// ---------------------------------------------------------------------------------------
// Forwarding http:// through a proxy in absolute-form.
//
// ureq 3 has CONNECT proxies only, and writes an origin-form request target. For an
// `http://` URL with a forward proxy, the exchange thread records the route in
// `FORWARD_PROXY` (with ureq's own proxy off for that request); `ForwardResolver` then
// resolves the upstream's name to the proxy's addresses (so ureq's TCP connector opens the
// connection to the proxy, and the upstream's name never needs resolving here), and
// `Forward` wraps that connection in `AbsoluteForm`, which turns the first request line into
// absolute-form (`POST http://host:port/path HTTP/1.1`; ureq already wrote `Host` for the
// upstream) and never lets the connection go back to the pool, whose key is the upstream's.
// ---------------------------------------------------------------------------------------

/// The proxy of this thread's forwarded `http://` request, if `uri` is it.
fn forward_route(uri: &http::Uri) -> Option<ProxyRoute> {
    if !uri
        .scheme()
        .is_some_and(|s| s.as_str().eq_ignore_ascii_case("http"))
    {
        return None;
    }
    FORWARD_PROXY.with(|f| f.borrow().clone())
}

/// ureq's resolver, except that the upstream of a forwarded `http://` request resolves to
/// its proxy.
#[derive(Debug, Default)]
struct ForwardResolver(DefaultResolver);

impl Resolver for ForwardResolver {
    fn resolve(
        &self,
        uri: &http::Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let Some(route) = forward_route(uri) else {
            return self.0.resolve(uri, config, timeout);
        };
        let proxy: http::Uri = format!("{}/", route.url())
            .parse()
            .map_err(|_| ureq::Error::InvalidProxyUrl)?;
        self.0.resolve(&proxy, config, timeout)
    }
}

/// Wraps the connection of a forwarded `http://` request in [`AbsoluteForm`].
#[derive(Debug)]
struct Forward;

impl<In: Transport> Connector<In> for Forward {
    type Out = AbsoluteForm<In>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<AbsoluteForm<In>>, ureq::Error> {
        let Some(inner) = chained else {
            return Ok(None);
        };
        let prefix = forward_route(details.uri).and_then(|_| {
            let authority = details.uri.authority()?;
            Some(format!("http://{authority}"))
        });
        Ok(Some(AbsoluteForm {
            inner,
            forwarded: prefix.is_some(),
            prefix,
        }))
    }
}

/// A transport that writes the first request line in absolute-form (when `prefix` is set)
/// and is then never reused.
#[derive(Debug)]
struct AbsoluteForm<T> {
    inner: T,
    /// `http://host:port`, put before the origin-form target of the first request line.
    prefix: Option<String>,
    /// A forwarded connection: never pooled.
    forwarded: bool,
}

impl<T: Transport> Transport for AbsoluteForm<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let Some(prefix) = self.prefix.take() else {
            return self.inner.transmit_output(amount, timeout);
        };
        let written = self.inner.buffers().output()[..amount].to_vec();
        // `METHOD /target HTTP/1.1`: the prefix goes right after the first space.
        let Some(space) = written.iter().position(|&b| b == b' ') else {
            return self.inner.transmit_output(amount, timeout);
        };
        if written.get(space + 1) != Some(&b'/') {
            return self.inner.transmit_output(amount, timeout);
        }
        let mut line = Vec::with_capacity(amount + prefix.len());
        line.extend_from_slice(&written[..=space]);
        line.extend_from_slice(prefix.as_bytes());
        line.extend_from_slice(&written[space + 1..]);
        // The output buffer holds `amount` bytes at least: send the longer head in pieces.
        let room = self.inner.buffers().output().len().max(1);
        for piece in line.chunks(room) {
            self.inner.buffers().output()[..piece.len()].copy_from_slice(piece);
            self.inner.transmit_output(piece.len(), timeout)?;
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        !self.forwarded && self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}
