//! [`SmolServer`]: the agent HTTP API over HTTP/1.1 on async-net.
//!
//! The server is a thin transport around [`AgentService`]: it accepts connections, parses each
//! HTTP/1.1 request, reads the body within [`ServerConfig::max_body_bytes`] (answering 413
//! beyond, without reading the rest), hands the request to [`AgentService::handle`], and
//! writes the answer. A streamed answer goes out with `Transfer-Encoding: chunked`, one
//! chunk per event, each written straight to the socket (`TCP_NODELAY` is on, nothing is
//! buffered) the moment the stream yields it. While a response streams, the server also
//! watches the socket: a client that goes away (EOF or a failed write) makes it drop the
//! stream, which cancels the run. A client that stays but stops reading pauses the run (the
//! next frame is pulled only once the previous one is written); a write that makes no
//! progress for [`ServerConfig::write_timeout`] fails, which closes the connection and
//! cancels the run.
//!
//! ```
//! use std::io::{Read, Write};
//! use agent_core::model::{ScriptedModel, Turn};
//! use agent_core::server::ServerConfig;
//! use backend_smol::SmolServer;
//!
//! let agent = backend_smol::agent_builder()
//!     .model(ScriptedModel::new([Turn::new().text("Hello!")]))
//!     .build()
//!     .unwrap();
//! let config = ServerConfig::default().with_addr("127.0.0.1:0".parse().unwrap());
//! let server = SmolServer::bind(agent, config).unwrap();
//!
//! let mut socket = std::net::TcpStream::connect(server.local_addr()).unwrap();
//! socket.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
//! let mut answer = String::new();
//! socket.read_to_string(&mut answer).unwrap();
//! assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(answer.ends_with(r#"{"status":"ok"}"#));
//!
//! smol::block_on(server.shutdown());
//! ```

use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use agent_core::agent::Agent;
use agent_core::runtime::SharedRuntime;
use agent_core::server::{AgentService, ApiBody, ApiError, ApiResponse, ServerConfig};
use async_channel::{Receiver, Sender};
use async_net::{TcpListener, TcpStream};
use futures_lite::StreamExt;
use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};

use crate::http1::{self, ChunkedDecoder, MAX_HEAD_BYTES, MAX_HEADERS};

/// How long [`SmolServer::shutdown`] waits for open connections to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a connection may take to send a whole request (head and body), counted from
/// the moment the server starts waiting for it; also the idle keep-alive timeout.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// After a refused request body, how long the server keeps reading (and discarding) before
/// closing, so that the client sees the error response instead of a reset.
const LINGER: Duration = Duration::from_secs(2);
/// How much a lingering close reads before giving up.
const LINGER_BYTES: usize = 4 * 1024 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// An HTTP server serving one agent over the API of [`agent_core::server`].
///
/// Its tasks (the accept loop and one task per connection) are spawned with the agent's
/// runtime, so an agent built on a [`SmolRuntime`](crate::SmolRuntime) serves from that
/// runtime's executor; with an executor of your own, a thread must be running it
/// ([`async_executor::Executor::run`]) for the server to make progress.
///
/// Every event is written and flushed as it is produced; a client that stops reading pauses
/// its run (nothing is buffered beyond the socket buffers and one frame) and is disconnected,
/// its run cancelled, once it has accepted no byte for [`ServerConfig::write_timeout`].
///
/// Dropping the server stops accepting connections; open ones finish on their own. Use
/// [`shutdown`](Self::shutdown) for a graceful stop that also ends running streams.
pub struct SmolServer {
    local_addr: SocketAddr,
    service: AgentService,
    /// Closed to stop the accept loop and idle connections.
    stop: Sender<()>,
    /// Every server task holds a sender of this channel: `recv` fails once they all ended.
    tasks: Receiver<()>,
}

impl fmt::Debug for SmolServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolServer")
            .field("local_addr", &self.local_addr)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl SmolServer {
    /// Bind [`ServerConfig::addr`] and start serving `agent`.
    ///
    /// Returns once the socket listens (connections are queued from then on); the accept
    /// loop runs as a task on the agent's runtime.
    pub fn bind(agent: Agent, config: ServerConfig) -> io::Result<Self> {
        let listener = TcpListener::try_from(std::net::TcpListener::bind(config.addr)?)?;
        let local_addr = listener.local_addr()?;
        let runtime = agent.runtime().clone();
        let service = AgentService::new(agent, config);
        let (stop, stopped) = async_channel::bounded(1);
        let (task_guard, tasks) = async_channel::bounded(1);
        runtime.spawn(Box::pin(accept_loop(
            listener,
            service.clone(),
            runtime.clone(),
            stopped,
            task_guard,
        )));
        Ok(SmolServer {
            local_addr,
            service,
            stop,
            tasks,
        })
    }

    /// The address the server listens on (with the real port when `addr` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The service answering requests (its configuration, running streams, …).
    pub fn service(&self) -> &AgentService {
        &self.service
    }

    /// Graceful shutdown: stop accepting, close idle connections, cancel running streams
    /// (each ends with its terminal event), and wait up to [`SHUTDOWN_GRACE`] for open
    /// connections to finish.
    pub async fn shutdown(self) {
        self.shutdown_within(SHUTDOWN_GRACE).await;
    }

    /// [`shutdown`](Self::shutdown) with a chosen grace period; `true` when every
    /// connection finished within it.
    pub async fn shutdown_within(self, grace: Duration) -> bool {
        self.stop.close();
        self.service.shutdown();
        let tasks = self.tasks;
        future::or(
            async {
                // Nothing is ever sent: this returns once every task dropped its sender.
                let _ = tasks.recv().await;
                true
            },
            async {
                async_io::Timer::after(grace).await;
                false
            },
        )
        .await
    }
}

/// Resolves when the server is stopping.
async fn stopping(stop: &Receiver<()>) {
    let _ = stop.recv().await;
}

async fn accept_loop(
    listener: TcpListener,
    service: AgentService,
    runtime: SharedRuntime,
    stop: Receiver<()>,
    task_guard: Sender<()>,
) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            stopping(&stop).await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok((stream, _peer))) => {
                // Every event must leave at once: no Nagle delay on small frames.
                let _ = stream.set_nodelay(true);
                let connection = Connection {
                    reader: stream.clone(),
                    writer: stream,
                    buf: Vec::new(),
                    write_timeout: service.config().write_timeout,
                    service: service.clone(),
                };
                runtime.spawn(Box::pin(connection.serve(stop.clone(), task_guard.clone())));
                // smol has no cooperative budget: with a backlog of connections `accept` is
                // always ready, so give the executor back between them.
                future::yield_now().await;
            }
            Some(Err(err)) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                async_io::Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A parsed request head.
struct RequestHead {
    method: String,
    path: String,
    /// `true` for HTTP/1.1, `false` for HTTP/1.0.
    http11: bool,
    headers: Vec<(String, String)>,
}

impl RequestHead {
    fn header(&self, name: &str) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn wants_keep_alive(&self) -> bool {
        let connection: Vec<&str> = self.header("connection").collect();
        if connection.iter().any(|v| http1::has_token(v, "close")) {
            return false;
        }
        self.http11 || connection.iter().any(|v| http1::has_token(v, "keep-alive"))
    }
}

/// What reading a request produced.
enum ReadOutcome {
    /// A complete request.
    Request(RequestHead, Vec<u8>),
    /// The client closed the connection (or stopped sending) between requests.
    Closed,
    /// A bad request: answer with this error, then close.
    Refuse(ApiError),
}

/// How the request body is delimited.
enum BodyFraming {
    Length(usize),
    Chunked,
}

struct Connection {
    reader: TcpStream,
    writer: TcpStream,
    /// Bytes read but not consumed yet.
    buf: Vec<u8>,
    /// [`ServerConfig::write_timeout`]: how long a write may make no progress.
    write_timeout: Duration,
    service: AgentService,
}

impl Connection {
    async fn serve(mut self, stop: Receiver<()>, _task_guard: Sender<()>) {
        loop {
            let read = future::or(
                async {
                    let outcome = future::or(self.read_request(), async {
                        async_io::Timer::after(REQUEST_READ_TIMEOUT).await;
                        ReadOutcome::Closed
                    });
                    Some(outcome.await)
                },
                async {
                    stopping(&stop).await;
                    None
                },
            )
            .await;
            let (head, body) = match read {
                None | Some(ReadOutcome::Closed) => return,
                Some(ReadOutcome::Refuse(error)) => {
                    let _ = self.write_full(error.into_response(), false, false).await;
                    self.linger_close().await;
                    return;
                }
                Some(ReadOutcome::Request(head, body)) => (head, body),
            };
            let keep_alive = head.wants_keep_alive();
            match self.respond(&head, &body, keep_alive).await {
                Ok(true) if !self.service.is_shutting_down() && !stop.is_closed() => continue,
                Ok(_) => {
                    let _ = self.writer.shutdown(Shutdown::Write);
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Read one request (head and body) from the connection.
    async fn read_request(&mut self) -> ReadOutcome {
        let head = loop {
            if !self.buf.is_empty() {
                match parse_head(&self.buf) {
                    Ok(Some((head, len))) => {
                        self.buf.drain(..len);
                        break head;
                    }
                    Ok(None) => {}
                    Err(error) => return ReadOutcome::Refuse(error),
                }
                if self.buf.len() > MAX_HEAD_BYTES {
                    return ReadOutcome::Refuse(ApiError::bad_request(
                        "headers_too_large",
                        format!("the request head exceeds {MAX_HEAD_BYTES} bytes"),
                    ));
                }
            }
            match self.fill().await {
                Ok(0) | Err(_) => return ReadOutcome::Closed,
                Ok(_) => {}
            }
        };
        let limit = self.service.config().max_body_bytes;
        let framing = match body_framing(&head) {
            Ok(framing) => framing,
            Err(error) => return ReadOutcome::Refuse(error),
        };
        if let BodyFraming::Length(len) = framing
            && len > limit
        {
            // Refuse before reading a byte of it.
            return ReadOutcome::Refuse(ApiError::payload_too_large(limit));
        }
        if head
            .header("expect")
            .any(|v| v.eq_ignore_ascii_case("100-continue"))
            && head.http11
            && self.send(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err()
        {
            return ReadOutcome::Closed;
        }
        let body = match framing {
            BodyFraming::Length(len) => {
                while self.buf.len() < len {
                    match self.fill().await {
                        Ok(0) | Err(_) => return ReadOutcome::Closed,
                        Ok(_) => {}
                    }
                }
                self.buf.drain(..len).collect()
            }
            BodyFraming::Chunked => {
                let mut decoder = ChunkedDecoder::default();
                let mut body = Vec::new();
                loop {
                    match decoder.decode(&self.buf, &mut body) {
                        Ok(used) => {
                            self.buf.drain(..used);
                        }
                        Err(err) => {
                            return ReadOutcome::Refuse(ApiError::bad_request(
                                "bad_request_body",
                                err.to_string(),
                            ));
                        }
                    }
                    if body.len() > limit {
                        return ReadOutcome::Refuse(ApiError::payload_too_large(limit));
                    }
                    if decoder.is_done() {
                        break body;
                    }
                    match self.fill().await {
                        Ok(0) | Err(_) => return ReadOutcome::Closed,
                        Ok(_) => {}
                    }
                }
            }
        };
        ReadOutcome::Request(head, body)
    }

    /// Write all of `bytes` to the socket (which has `TCP_NODELAY`: they leave at once).
    /// Fails with [`io::ErrorKind::TimedOut`] when the client accepts no byte for the write
    /// timeout (it stopped reading); any progress restarts the clock.
    async fn send(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let timeout = self.write_timeout;
        while !bytes.is_empty() {
            let written = if timeout.is_zero() {
                self.writer.write(bytes).await
            } else {
                // The timer only exists once the write is pending: a write the socket
                // buffer takes at once costs nothing more.
                future::or(self.writer.write(bytes), async {
                    async_io::Timer::after(timeout).await;
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client accepted no bytes for {timeout:?} (it stopped reading)"
                        ),
                    ))
                })
                .await
            };
            match written? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => bytes = &bytes[n..],
            }
        }
        Ok(())
    }

    /// Read more bytes into `buf`; `Ok(0)` at EOF.
    async fn fill(&mut self) -> io::Result<usize> {
        let start = self.buf.len();
        self.buf.resize(start + READ_CHUNK, 0);
        let read = self.reader.read(&mut self.buf[start..]).await;
        self.buf.truncate(start + *read.as_ref().unwrap_or(&0));
        read
    }

    /// Resolves when the client has gone away (EOF or a read error). Bytes it sends
    /// meanwhile (a pipelined request) are kept for later, up to a bound.
    async fn client_gone(reader: &mut TcpStream, buf: &mut Vec<u8>) {
        let mut chunk = [0u8; 1024];
        loop {
            if buf.len() > MAX_HEAD_BYTES {
                // Enough is queued; stop reading until the response is done.
                future::pending::<()>().await;
            }
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Answer one request. `Ok(keep_alive)` when the response was written completely.
    async fn respond(
        &mut self,
        head: &RequestHead,
        body: &[u8],
        keep_alive: bool,
    ) -> io::Result<bool> {
        let headers: Vec<(&str, &str)> = head
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let handle = self
            .service
            .handle(&head.method, &head.path, &headers, body);
        // A non-streamed answer may take the whole run: stop (and cancel it) if the client
        // leaves meanwhile.
        let response = future::or(async { Some(handle.await) }, async {
            Self::client_gone(&mut self.reader, &mut self.buf).await;
            None
        })
        .await;
        let Some(response) = response else {
            return Ok(false);
        };
        let keep_alive = keep_alive && !self.service.is_shutting_down();
        let is_head = head.method.eq_ignore_ascii_case("HEAD");
        match response.body {
            ApiBody::Full(_) => self
                .write_full(response, keep_alive, is_head)
                .await
                .map(|()| keep_alive),
            ApiBody::Stream(_) => self.write_stream(response, keep_alive, head.http11).await,
        }
    }

    async fn write_full(
        &mut self,
        response: ApiResponse,
        keep_alive: bool,
        is_head: bool,
    ) -> io::Result<()> {
        let ApiBody::Full(body) = response.body else {
            return Ok(());
        };
        let mut out = status_and_headers(response.status, &response.headers);
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        out.extend_from_slice(connection_header(keep_alive));
        out.extend_from_slice(b"\r\n");
        if !is_head {
            out.extend_from_slice(&body);
        }
        self.send(&out).await
    }

    /// Write a streamed response, one chunk per item, each as soon as it is yielded.
    /// Returns `Ok(false)` when the client went away (the stream is then dropped, which
    /// cancels the run).
    async fn write_stream(
        &mut self,
        response: ApiResponse,
        keep_alive: bool,
        http11: bool,
    ) -> io::Result<bool> {
        let ApiBody::Stream(mut stream) = response.body else {
            return Ok(keep_alive);
        };
        // HTTP/1.0 has no chunked coding: the body then ends when the connection closes.
        let keep_alive = keep_alive && http11;
        let mut head = status_and_headers(response.status, &response.headers);
        if http11 {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        head.extend_from_slice(connection_header(keep_alive));
        head.extend_from_slice(b"\r\n");
        self.send(&head).await?;

        let mut frame = Vec::with_capacity(512);
        loop {
            let next = future::or(async { Some(stream.next().await) }, async {
                Self::client_gone(&mut self.reader, &mut self.buf).await;
                None
            })
            .await;
            match next {
                // The client left: dropping `stream` cancels the run.
                None => return Ok(false),
                Some(Some(chunk)) => {
                    frame.clear();
                    if http11 {
                        http1::encode_chunk(&chunk, &mut frame);
                    } else {
                        frame.extend_from_slice(&chunk);
                    }
                    // A client that stopped reading fails this after the write timeout:
                    // the stream is then dropped (the run cancelled) and nothing more is
                    // pulled from it meanwhile.
                    self.send(&frame).await?;
                }
                Some(None) => {
                    if http11 {
                        self.send(http1::LAST_CHUNK).await?;
                    }
                    return Ok(keep_alive);
                }
            }
        }
    }

    /// Close after refusing a request: stop writing, then read and discard what the client
    /// is still sending (bounded in bytes and time) so that it reads our answer rather than
    /// a connection reset.
    async fn linger_close(mut self) {
        let _ = self.writer.flush().await;
        let _ = self.writer.shutdown(Shutdown::Write);
        let drain = async {
            let mut chunk = vec![0u8; READ_CHUNK];
            let mut total = 0;
            while total < LINGER_BYTES {
                match self.reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        future::or(drain, async {
            async_io::Timer::after(LINGER).await;
        })
        .await;
    }
}

fn connection_header(keep_alive: bool) -> &'static [u8] {
    if keep_alive {
        b"connection: keep-alive\r\n"
    } else {
        b"connection: close\r\n"
    }
}

fn status_and_headers(status: u16, headers: &[(&'static str, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", http1::reason(status)).as_bytes());
    for (name, value) in headers {
        if !http1::is_valid_value(value) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parse a request head from `buf`: `Ok(None)` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, ApiError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ApiError::bad_request(
                "headers_too_large",
                format!("the request has more than {MAX_HEADERS} headers"),
            ));
        }
        Err(err) => {
            return Err(ApiError::bad_request(
                "bad_request",
                format!("malformed HTTP request: {err}"),
            ));
        }
    };
    let mut owned = Vec::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let Ok(value) = std::str::from_utf8(header.value) else {
            return Err(ApiError::bad_request(
                "bad_request",
                format!("the value of header {:?} is not UTF-8", header.name),
            ));
        };
        owned.push((header.name.to_string(), value.to_string()));
    }
    let head = RequestHead {
        method: request.method.unwrap_or_default().to_string(),
        path: request.path.unwrap_or_default().to_string(),
        http11: request.version == Some(1),
        headers: owned,
    };
    Ok(Some((head, len)))
}

fn body_framing(head: &RequestHead) -> Result<BodyFraming, ApiError> {
    let transfer_encoding: Vec<&str> = head.header("transfer-encoding").collect();
    let lengths: Vec<&str> = head.header("content-length").collect();
    if !transfer_encoding.is_empty() {
        if !lengths.is_empty() {
            return Err(ApiError::bad_request(
                "bad_request",
                "a request may not have both Transfer-Encoding and Content-Length",
            ));
        }
        let codings: Vec<&str> = transfer_encoding
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        return match codings.as_slice() {
            [only] if only.eq_ignore_ascii_case("chunked") => Ok(BodyFraming::Chunked),
            _ => Err(ApiError::bad_request(
                "unsupported_transfer_encoding",
                "only the chunked transfer coding is supported",
            )),
        };
    }
    let mut parsed = lengths
        .iter()
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().parse::<usize>());
    match parsed.next() {
        None => Ok(BodyFraming::Length(0)),
        Some(Ok(first)) if parsed.all(|other| other == Ok(first)) => Ok(BodyFraming::Length(first)),
        Some(_) => Err(ApiError::bad_request(
            "bad_request",
            "invalid Content-Length",
        )),
    }
}
