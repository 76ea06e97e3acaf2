//! [`UreqClient`]: the core's [`HttpClient`] on ureq 3 (rustls), read on a thread.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read};
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
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, NextTimeout, RustlsConnector,
    ShutdownHandle, TcpConnector, Transport,
};

/// How many body chunks may wait between the exchange thread and the consumer.
pub const BODY_CHANNEL_CAPACITY: usize = 4;

/// Size of the buffer the exchange thread reads the body into (a chunk is at most this big).
pub const READ_BUFFER_SIZE: usize = 16 * 1024;

/// An [`HttpClient`] on [ureq](https://docs.rs/ureq) 3 with rustls (certificate verification on,
/// Mozilla's root certificates), reading each response on a thread of its own.
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
/// # How it works
///
/// Each request runs on a thread of its own (an *exchange thread*), which sends the request
/// with ureq, hands the response head over through a oneshot channel, then reads the body
/// with `Read::read` into a buffer and forwards every chunk the moment `read` returns it,
/// through a bounded channel of [`BODY_CHANNEL_CAPACITY`] chunks. When the channel is full
/// the thread stops reading (so the socket's flow control pushes back on the server).
///
/// Dropping the `send` future or the body stream aborts the exchange: the socket is shut down
/// at once from the dropping thread (even while the exchange thread is blocked in `read` on an
/// idle connection), the exchange thread wakes up, drops the response and ends, and the peer
/// sees the connection close. Completed exchanges return their connection to ureq's pool.
///
/// The exchange thread is not taken from the [`ThreadPoolRuntime`](crate::ThreadPoolRuntime)
/// pool: a streamed response can last minutes, and a few of them must not starve blocking
/// tools (nor be starved by them).
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

/// ureq's input buffer per connection (its default is 128 KiB). It must be larger than the
/// largest response head ureq accepts (64 KiB by default): ureq only reports a head as too
/// large once it holds more than that.
const INPUT_BUFFER_BYTES: usize = 65 * 1024;
/// ureq's output buffer per connection (its default is 128 KiB).
const OUTPUT_BUFFER_BYTES: usize = 16 * 1024;

impl UreqClient {
    /// A client with ureq's defaults (rustls, pooled connections), the proxies of the
    /// environment ([`ProxyConfig::from_env`]: `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`,
    /// `NO_PROXY`, read as every backend's client reads them), statuses as responses and no
    /// redirects.
    pub fn new() -> Self {
        UreqClient::with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .max_redirects_will_error(false)
                // ureq allocates (and zeroes) both buffers per connection: 128 KiB each by
                // default, most of a stream's memory. The input buffer still holds more
                // than the largest response head ureq accepts (64 KiB); requests are written
                // through the output buffer in pieces.
                .input_buffer_size(INPUT_BUFFER_BYTES)
                .output_buffer_size(OUTPUT_BUFFER_BYTES)
                .build(),
        )
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
        UreqClient::with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .max_redirects_will_error(false)
                // ureq allocates (and zeroes) both buffers per connection: 128 KiB each by
                // default, most of a stream's memory. The input buffer still holds more
                // than the largest response head ureq accepts (64 KiB); requests are written
                // through the output buffer in pieces.
                .input_buffer_size(INPUT_BUFFER_BYTES)
                .output_buffer_size(OUTPUT_BUFFER_BYTES)
                .tls_config(tls)
                .build(),
        )
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
            .chain(Capture(TcpConnector::default()))
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

type Chunk = Result<Bytes, HttpError>;

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
    let mut config = agent
        .configure_request(request)
        .http_status_as_error(false)
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
    static LAST_SOCKET: RefCell<Option<Weak<dyn ShutdownHandle>>> = const { RefCell::new(None) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Exchange {
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

    fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// The body was read to its end: nothing to abort any more.
    fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
        lock(&self.conns).clear();
    }

    /// Shut down every connection this exchange still owns.
    fn abort(&self) {
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

/// One connection, as seen by the abort machinery.
struct Conn {
    socket: Option<Weak<dyn ShutdownHandle>>,
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

/// ureq's TCP connector, with the socket's shutdown handle captured for [`Track`].
#[derive(Debug)]
struct Capture(TcpConnector);

impl<In: Transport> Connector<In> for Capture {
    type Out = <TcpConnector as Connector<In>>::Out;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let register = details.register_shutdown.clone();
        let details = ConnectionDetails {
            uri: details.uri,
            addrs: details.addrs.clone(),
            config: details.config,
            request_level: details.request_level,
            resolver: details.resolver,
            now: details.now,
            timeout: details.timeout,
            current_time: details.current_time.clone(),
            run_connector: details.run_connector.clone(),
            register_shutdown: Arc::new(move |handle: Weak<dyn ShutdownHandle>| {
                LAST_SOCKET.with(|last| *last.borrow_mut() = Some(handle.clone()));
                register(handle)
            }),
        };
        self.0.connect(&details, chained)
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
