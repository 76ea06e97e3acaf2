//! A complete backend for another executor, certified by the conformance suite: the worked
//! example of the book chapter "Adding a backend".
//!
//! * runtime: `futures-executor`'s `ThreadPool` for `spawn`, a small growable thread pool of
//!   its own for `spawn_blocking`, and the core's timer thread (`TimerSleep`) for `sleep`;
//! * HTTP client: one std thread per request, reading the socket and handing each body
//!   chunk over a channel the moment it is read;
//! * HTTP server: one std thread per connection, writing and flushing each frame of the
//!   agent service's stream as it is yielded, and a watcher thread per stream that notices
//!   the client leaving (which cancels the run); request bodies (with a length or chunked)
//!   are limited while they are read, and a write blocked for `write_timeout` (a client
//!   that stopped reading) ends the connection.
//!
//! Run the suite on it with `cargo test -p conformance --example futures_executor_backend`
//! (`cargo test -p conformance` includes it), or print its report with
//! `cargo run -p conformance --example futures_executor_backend`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agent_core::agent::Agent;
use agent_core::event::Event;
use agent_core::http::{
    BodyStream, HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
};
use agent_core::runtime::{BlockingJob, BoxFuture, Runtime, SharedRuntime, TimerSleep};
use agent_core::server::{AgentService, ApiBody, ApiError, ServerConfig};
use agent_http1::{
    BodyFraming, ChunkedDecoder, FramingError, HeadLimits, HeadParser, HeadWriter, chunked,
};
use bytes::Bytes;
use conformance::{Backend, RunningServer};
use futures_channel::{mpsc, oneshot};
use futures_executor::{ThreadPool, block_on};
use futures_util::StreamExt;
use futures_util::future::{Either, select};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------
// Runtime
// ---------------------------------------------------------------------------------------

/// The runtime binding: futures-executor's thread pool, a blocking pool, the core's timer.
#[derive(Debug, Clone)]
pub struct FuturesRuntime {
    pool: ThreadPool,
    blocking: BlockingPool,
}

impl FuturesRuntime {
    /// A runtime with a fresh thread pool (one thread per core).
    pub fn new() -> io::Result<Self> {
        Ok(FuturesRuntime {
            pool: ThreadPool::builder()
                .name_prefix("futures-pool-")
                .create()?,
            blocking: BlockingPool::new(64),
        })
    }
}

impl Runtime for FuturesRuntime {
    fn name(&self) -> &'static str {
        "futures-executor"
    }

    fn spawn_blocking(&self, job: BlockingJob) {
        self.blocking.execute(job);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        Box::pin(TimerSleep::new(Instant::now() + duration))
    }

    fn spawn(&self, future: BoxFuture<()>) {
        self.pool.spawn_ok(future);
    }
}

/// A pool of threads for blocking jobs: grows up to `max` threads, idle threads exit after
/// ten seconds.
#[derive(Debug, Clone)]
struct BlockingPool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    state: Mutex<PoolState>,
    work: Condvar,
    max: usize,
}

#[derive(Default)]
struct PoolState {
    jobs: VecDeque<BlockingJob>,
    threads: usize,
    idle: usize,
}

impl std::fmt::Debug for PoolState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolState")
            .field("queued", &self.jobs.len())
            .field("threads", &self.threads)
            .field("idle", &self.idle)
            .finish()
    }
}

impl BlockingPool {
    fn new(max: usize) -> Self {
        BlockingPool {
            inner: Arc::new(PoolInner {
                state: Mutex::new(PoolState::default()),
                work: Condvar::new(),
                max,
            }),
        }
    }

    fn execute(&self, job: BlockingJob) {
        let mut state = lock(&self.inner.state);
        state.jobs.push_back(job);
        if state.idle == 0 && state.threads < self.inner.max {
            state.threads += 1;
            let inner = self.inner.clone();
            let spawned = std::thread::Builder::new()
                .name("futures-blocking".into())
                .spawn(move || worker(inner));
            if spawned.is_err() {
                state.threads -= 1;
            }
        } else {
            self.inner.work.notify_one();
        }
    }
}

fn worker(inner: Arc<PoolInner>) {
    let mut state = lock(&inner.state);
    loop {
        if let Some(job) = state.jobs.pop_front() {
            drop(state);
            job();
            state = lock(&inner.state);
            continue;
        }
        state.idle += 1;
        let (next, timeout) = inner
            .work
            .wait_timeout(state, Duration::from_secs(10))
            .unwrap_or_else(|p| p.into_inner());
        state = next;
        state.idle -= 1;
        if timeout.timed_out() && state.jobs.is_empty() {
            state.threads -= 1;
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------

/// An HTTP/1.1 client (plain `http://` only) with one std thread per request.
#[derive(Debug, Clone, Default)]
pub struct ThreadClient {
    _private: (),
}

/// Closes the request's socket when the caller gives up (drops the future or the body).
#[derive(Debug, Default)]
struct Abort {
    socket: Mutex<Option<TcpStream>>,
    aborted: AtomicBool,
}

impl Abort {
    fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        if let Some(socket) = lock(&self.socket).take() {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

struct AbortOnDrop(Arc<Abort>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Head = (
    u16,
    Vec<(String, String)>,
    mpsc::Receiver<Result<Bytes, HttpError>>,
);

impl HttpClient for ThreadClient {
    fn send(&self, request: HttpRequest) -> BoxFuture<Result<HttpResponse, HttpError>> {
        Box::pin(async move {
            let abort = Arc::new(Abort::default());
            let guard = AbortOnDrop(abort.clone());
            let (head_tx, head_rx) = oneshot::channel::<Result<Head, HttpError>>();
            std::thread::Builder::new()
                .name("http-client".into())
                .spawn(move || exchange(request, abort, head_tx))
                .map_err(|e| HttpError::new(HttpErrorKind::Connect, e.to_string()))?;
            let (status, headers, body) = head_rx
                .await
                .map_err(|_| HttpError::new(HttpErrorKind::Io, "the client thread died"))??;
            // The guard moves into the body: dropping the body closes the socket.
            let body: BodyStream = Box::pin(body.map(move |chunk| {
                let _keep = &guard;
                chunk
            }));
            Ok(HttpResponse {
                status,
                headers,
                body,
            })
        })
    }
}

fn io_error(e: impl std::fmt::Display) -> HttpError {
    HttpError::new(HttpErrorKind::Io, e.to_string())
}

/// The thread of one request: connect, write, read the head, then stream the body.
fn exchange(
    request: HttpRequest,
    abort: Arc<Abort>,
    head_tx: oneshot::Sender<Result<Head, HttpError>>,
) {
    let mut socket = match connect(&request) {
        Ok(socket) => socket,
        Err(e) => {
            let _ = head_tx.send(Err(e));
            return;
        }
    };
    if let Ok(clone) = socket.try_clone() {
        *lock(&abort.socket) = Some(clone);
    }
    if abort.aborted.load(Ordering::Acquire) {
        let _ = socket.shutdown(Shutdown::Both);
        return;
    }
    let mut buf = Vec::new();
    let head = write_request(&mut socket, &request)
        .and_then(|()| read_head(&mut socket, &mut buf, request.method.as_str()));
    let head = match head {
        Ok(head) => head,
        Err(e) => {
            let _ = head_tx.send(Err(e));
            return;
        }
    };
    let (status, headers, framing) = head;
    let (mut tx, rx) = mpsc::channel(0);
    if head_tx.send(Ok((status, headers, rx))).is_err() {
        return;
    }
    let mut body = BodyReader { framing, buf };
    loop {
        let item = match body.next(&mut socket) {
            Ok(Some(chunk)) => Ok(chunk),
            Ok(None) => break,
            Err(e) => Err(e),
        };
        let failed = item.is_err();
        // Wait until the consumer took the previous chunk, then hand this one over.
        let sent = block_on(std::future::poll_fn(|cx| tx.poll_ready(cx)))
            .and_then(|()| tx.start_send(item));
        if sent.is_err() || failed {
            break; // the body was dropped, or the connection failed
        }
    }
    let _ = socket.shutdown(Shutdown::Both);
}

fn connect(request: &HttpRequest) -> Result<TcpStream, HttpError> {
    let invalid = |m: &str| HttpError::new(HttpErrorKind::InvalidRequest, m);
    let rest = request
        .url
        .strip_prefix("http://")
        .ok_or_else(|| invalid("only http:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .map_err(|e| HttpError::new(HttpErrorKind::Connect, e.to_string()))?
        .next()
        .ok_or_else(|| HttpError::new(HttpErrorKind::Connect, "no address"))?;
    let timeout = request.connect_timeout.unwrap_or(Duration::from_secs(30));
    let socket = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
        let kind = if e.kind() == io::ErrorKind::TimedOut {
            HttpErrorKind::ConnectTimeout
        } else {
            HttpErrorKind::Connect
        };
        HttpError::new(kind, e.to_string())
    })?;
    let _ = socket.set_nodelay(true);
    Ok(socket)
}

fn write_request(socket: &mut TcpStream, request: &HttpRequest) -> Result<(), HttpError> {
    let rest = request.url.trim_start_matches("http://");
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if let Some((name, _)) = request
        .headers
        .iter()
        .find(|(name, value)| !agent_http1::is_valid_field(name, value))
    {
        return Err(HttpError::new(
            HttpErrorKind::InvalidRequest,
            format!("bad header {name}"),
        ));
    }
    let invalid =
        |e: agent_http1::HeadError| HttpError::new(HttpErrorKind::InvalidRequest, e.to_string());
    let mut bytes = HeadWriter::request(request.method.as_str(), path)
        .map_err(invalid)?
        .header("host", authority)
        .header("connection", "close")
        .header("content-length", &request.body.len().to_string())
        .headers(request.headers.iter().map(|(n, v)| (n, v)))
        .finish();
    bytes.extend_from_slice(&request.body);
    socket.write_all(&bytes).map_err(io_error)
}

/// A response's status, headers (names lowercase) and body framing.
type ResponseStart = (u16, Vec<(String, String)>, Framing);

/// Read the response head: status, headers (names lowercase) and how the body is framed.
fn read_head(
    socket: &mut TcpStream,
    buf: &mut Vec<u8>,
    method: &str,
) -> Result<ResponseStart, HttpError> {
    let mut parser = HeadParser::new(HeadLimits::default());
    loop {
        if let Some((head, used)) = parser.parse_response(buf).map_err(io_error)? {
            buf.drain(..used);
            let framing = match head.body_framing(method).map_err(io_error)? {
                BodyFraming::Chunked => Framing::Chunked(ChunkedDecoder::new()),
                BodyFraming::Length(len) => Framing::Length(len),
                BodyFraming::CloseDelimited => Framing::Close,
            };
            let headers = head
                .headers
                .into_iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value))
                .collect();
            return Ok((head.status, headers, framing));
        }
        let mut chunk = [0u8; 8192];
        let n = socket.read(&mut chunk).map_err(io_error)?;
        if n == 0 {
            return Err(io_error("the connection closed before the response head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Decodes a response body (chunked, with a length, or until close) from the socket,
/// returning whatever each read produced.
struct BodyReader {
    framing: Framing,
    buf: Vec<u8>,
}

enum Framing {
    /// Until the connection closes.
    Close,
    /// This many bytes left.
    Length(u64),
    /// Chunked.
    Chunked(ChunkedDecoder),
    Done,
}

impl BodyReader {
    /// Read more bytes into the buffer; `false` at the end of the connection.
    fn fill(&mut self, socket: &mut TcpStream) -> Result<bool, HttpError> {
        let mut chunk = [0u8; 16 * 1024];
        let n = socket.read(&mut chunk).map_err(io_error)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    fn take(&mut self, max: u64) -> Bytes {
        let take = (max.min(self.buf.len() as u64)) as usize;
        Bytes::from(self.buf.drain(..take).collect::<Vec<u8>>())
    }

    /// The next piece of the body: `None` at its end.
    fn next(&mut self, socket: &mut TcpStream) -> Result<Option<Bytes>, HttpError> {
        loop {
            match &mut self.framing {
                Framing::Done | Framing::Length(0) => return Ok(None),
                Framing::Close => {
                    if self.buf.is_empty() && !self.fill(socket)? {
                        return Ok(None);
                    }
                    return Ok(Some(self.take(u64::MAX)));
                }
                Framing::Length(left) => {
                    let left = *left;
                    if self.buf.is_empty() && !self.fill(socket)? {
                        return Err(io_error("the body was cut short"));
                    }
                    let data = self.take(left);
                    self.framing = Framing::Length(left - data.len() as u64);
                    return Ok(Some(data));
                }
                Framing::Chunked(decoder) => {
                    let mut data = Vec::new();
                    let used = decoder.decode(&self.buf, &mut data).map_err(io_error)?;
                    let done = decoder.is_done();
                    self.buf.drain(..used);
                    if done {
                        self.framing = Framing::Done;
                    }
                    if !data.is_empty() {
                        return Ok(Some(Bytes::from(data)));
                    }
                    if !done && !self.fill(socket)? {
                        return Err(io_error("the chunked body was cut short"));
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP server
// ---------------------------------------------------------------------------------------

/// A thread-per-connection HTTP/1.1 server for an [`AgentService`].
#[derive(Debug)]
pub struct ThreadServer {
    addr: SocketAddr,
    service: AgentService,
    stopping: Arc<AtomicBool>,
    open: Arc<(Mutex<usize>, Condvar)>,
}

impl ThreadServer {
    /// Bind `config.addr` and serve `agent`.
    pub fn bind(agent: Agent, config: ServerConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(config.addr)?;
        let addr = listener.local_addr()?;
        let service = AgentService::new(agent, config);
        let stopping = Arc::new(AtomicBool::new(false));
        let open = Arc::new((Mutex::new(0usize), Condvar::new()));
        let (svc, stop, count) = (service.clone(), stopping.clone(), open.clone());
        std::thread::Builder::new()
            .name("server-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (svc, conn_count) = (svc.clone(), count.clone());
                    *lock(&count.0) += 1;
                    let spawned = std::thread::Builder::new()
                        .name("server-conn".into())
                        .spawn(move || {
                            let _ = serve(conn, &svc);
                            *lock(&conn_count.0) -= 1;
                            conn_count.1.notify_all();
                        });
                    if spawned.is_err() {
                        *lock(&count.0) -= 1;
                    }
                }
            })?;
        Ok(ThreadServer {
            addr,
            service,
            stopping,
            open,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The agent service (its running streams, its configuration).
    pub fn service(&self) -> &AgentService {
        &self.service
    }

    /// Graceful shutdown: stop accepting, cancel running streams, wait (5 s at most) for
    /// open connections to finish.
    pub fn shutdown(self) {
        self.stopping.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500));
        self.service.shutdown();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut open = lock(&self.open.0);
        while *open > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            open = self
                .open
                .1
                .wait_timeout(open, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

fn serve(mut socket: TcpStream, service: &AgentService) -> io::Result<()> {
    socket.set_nodelay(true)?;
    socket.set_read_timeout(Some(Duration::from_secs(30)))?;
    // A write that makes no progress for this long (a client that stopped reading) fails,
    // which ends the connection and cancels its run.
    let write_timeout = service.config().write_timeout;
    socket.set_write_timeout((!write_timeout.is_zero()).then_some(write_timeout))?;
    let config = service.config();
    let mut parser = HeadParser::new(HeadLimits {
        max_headers: config.max_headers,
        max_head_bytes: config.effective_max_head_bytes(),
    });
    let mut buf = Vec::new();
    let (head, used) = loop {
        match parser.parse_request(&buf) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            // A head that is not understood: an empty answer, as hyper gives.
            Err(error) => return write_full(&mut socket, error.status(), &[], b""),
        }
        let mut chunk = [0u8; 8192];
        let n = socket.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let framing = match head.body_framing() {
        Ok(framing) => framing,
        Err(FramingError::UnsupportedTransferCoding) => {
            return write_api_error(&mut socket, ApiError::unsupported_transfer_encoding());
        }
        Err(error) => return write_full(&mut socket, error.status(), &[], b""),
    };
    let limit = config.max_body_bytes;
    let mut body = buf.split_off(used);
    // Enforce the limit while reading: never buffer more than the limit and a read.
    let body = match framing {
        BodyFraming::Chunked => match read_chunked_body(&mut socket, body, limit)? {
            Ok(body) => body,
            Err(error) => return write_api_error(&mut socket, error),
        },
        BodyFraming::Length(length) => {
            if length > limit as u64 {
                return write_api_error(&mut socket, ApiError::payload_too_large(limit));
            }
            let length = length as usize;
            while body.len() < length {
                let mut chunk = [0u8; 8192];
                let n = socket.read(&mut chunk)?;
                if n == 0 {
                    return Ok(());
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(length);
            body
        }
        BodyFraming::CloseDelimited => Vec::new(),
    };
    let (method, path, headers) = (head.method, head.path, head.headers);
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let response = block_on(service.handle(&method, &path, &pairs, &body));
    match response.body {
        ApiBody::Full(bytes) => write_full(&mut socket, response.status, &response.headers, &bytes),
        ApiBody::Stream(mut stream) => {
            let head = HeadWriter::response(response.status)
                .headers(response.headers.iter().map(|(n, v)| (*n, v.as_str())))
                .header("transfer-encoding", "chunked")
                .header("connection", "close")
                .finish();
            socket.write_all(&head)?;
            // A watcher notices the client leaving even while no frame is being written.
            let (gone_tx, mut gone) = oneshot::channel::<()>();
            let mut watcher = socket.try_clone()?;
            std::thread::spawn(move || {
                let _ = watcher.set_read_timeout(None);
                let mut byte = [0u8; 1];
                while matches!(watcher.read(&mut byte), Ok(n) if n > 0) {}
                let _ = gone_tx.send(());
            });
            loop {
                match block_on(select(stream.next(), &mut gone)) {
                    Either::Left((Some(frame), _)) => {
                        let mut chunk = Vec::with_capacity(frame.len() + 16);
                        chunked::encode_chunk(&frame, &mut chunk);
                        if socket
                            .write_all(&chunk)
                            .and_then(|()| socket.flush())
                            .is_err()
                        {
                            break; // dropping `stream` cancels the run
                        }
                    }
                    Either::Left((None, _)) => {
                        let _ = socket.write_all(chunked::LAST_CHUNK);
                        break;
                    }
                    Either::Right(_) => break,
                }
            }
            drop(stream);
            socket.shutdown(Shutdown::Both)
        }
    }
}

/// Decode a chunked request body whose first bytes are `raw`; the API error to answer as
/// soon as it is over `limit` (without reading the rest) or its framing is broken.
fn read_chunked_body(
    socket: &mut TcpStream,
    mut raw: Vec<u8>,
    limit: usize,
) -> io::Result<Result<Vec<u8>, ApiError>> {
    let mut decoder = ChunkedDecoder::new();
    let mut body = Vec::new();
    loop {
        let Ok(used) = decoder.decode(&raw, &mut body) else {
            return Ok(Err(ApiError::invalid_body()));
        };
        raw.drain(..used);
        if body.len() > limit {
            return Ok(Err(ApiError::payload_too_large(limit)));
        }
        if decoder.is_done() {
            return Ok(Ok(body));
        }
        let mut chunk = [0u8; 8192];
        let n = socket.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        raw.extend_from_slice(&chunk[..n]);
    }
}

fn write_api_error(socket: &mut TcpStream, error: ApiError) -> io::Result<()> {
    let response = error.into_response();
    let ApiBody::Full(body) = response.body else {
        return Ok(());
    };
    write_full(socket, response.status, &response.headers, &body)
}

fn write_full(
    socket: &mut TcpStream,
    status: u16,
    headers: &[(&'static str, String)],
    body: &[u8],
) -> io::Result<()> {
    let head = HeadWriter::response(status)
        .headers(headers.iter().map(|(n, v)| (*n, v.as_str())))
        .header("content-length", &body.len().to_string())
        .header("connection", "close");
    let mut bytes = head.finish();
    bytes.extend_from_slice(body);
    socket.write_all(&bytes)?;
    socket.flush()?;
    socket.shutdown(Shutdown::Write)
}

// ---------------------------------------------------------------------------------------
// The conformance backend
// ---------------------------------------------------------------------------------------

/// The backend under test: the runtime, the client and the server above.
#[derive(Debug, Clone)]
pub struct FuturesExecutorBackend {
    runtime: Arc<FuturesRuntime>,
    client: Arc<ThreadClient>,
}

impl FuturesExecutorBackend {
    /// A backend with a fresh thread pool.
    pub fn new() -> Self {
        FuturesExecutorBackend {
            runtime: Arc::new(FuturesRuntime::new().expect("a futures-executor thread pool")),
            client: Arc::new(ThreadClient::default()),
        }
    }
}

impl Default for FuturesExecutorBackend {
    fn default() -> Self {
        Self::new()
    }
}

struct Running(ThreadServer);

impl RunningServer for Running {
    fn addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    fn running_streams(&self) -> Option<usize> {
        Some(self.0.service().running_streams())
    }

    fn shutdown(self: Box<Self>) {
        self.0.shutdown();
    }
}

impl Backend for FuturesExecutorBackend {
    fn name(&self) -> String {
        "futures-executor (thread pool)".to_string()
    }

    fn runtime(&self) -> SharedRuntime {
        self.runtime.clone()
    }

    fn http_client(&self) -> Arc<dyn HttpClient> {
        self.client.clone()
    }

    fn consume(
        &self,
        agent: &Agent,
        input: &str,
        on_event: &mut dyn FnMut(Event) -> ControlFlow<()>,
    ) {
        // The run stream is pull-based: polling it on this thread drives the whole run.
        let mut run = agent.run(input);
        while let Some(event) = block_on(run.next()) {
            if on_event(event).is_break() {
                return; // dropping `run` cancels it
            }
        }
    }

    fn start_server(&self, agent: Agent, config: ServerConfig) -> Box<dyn RunningServer> {
        Box::new(Running(
            ThreadServer::bind(agent, config).expect("bind the server"),
        ))
    }

    fn is_single_threaded(&self) -> bool {
        false
    }
}

// The suite: one #[test] per case (`cargo test -p conformance --example futures_executor_backend`).
conformance::suite!(futures_thread_pool => FuturesExecutorBackend::new());

fn main() {
    conformance::report::silence_expected_panics();
    let report = conformance::report::run_backend(
        || Box::new(FuturesExecutorBackend::new()),
        None,
        conformance::kit::watchdog::CASE_LIMIT,
        |run| eprintln!("{}", conformance::report::progress_line(run)),
    );
    println!(
        "{}",
        conformance::report::render_markdown(std::slice::from_ref(&report))
    );
    if report.failed() > 0 {
        std::process::exit(1);
    }
}
