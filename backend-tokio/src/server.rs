//! [`TokioServer`] and [`router`]: the agent HTTP API on axum and hyper (HTTP/1.1).
//!
//! ```
//! use agent_core::model::{ScriptedModel, Turn};
//! use agent_core::server::ServerConfig;
//! use backend_tokio::TokioServer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let agent = backend_tokio::agent_builder()
//!     .model(ScriptedModel::new([Turn::new().text("Hello!")]))
//!     .build()
//!     .unwrap();
//! let config = ServerConfig::default().with_addr("127.0.0.1:0".parse().unwrap());
//! let server = TokioServer::bind(agent, config).await?;
//! println!("listening on http://{}", server.local_addr());
//! // ... serve until it is time to stop, e.g. `server.run_until(tokio::signal::ctrl_c()).await`
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use agent_core::agent::Agent;
use agent_core::server::{AgentService, ApiBody, ApiError, ApiResponse, ServerConfig};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::any;
use futures_util::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::write_timeout::WriteTimeout;

/// How long [`TokioServer::shutdown`] waits for open connections by default.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// After answering 413, keep reading and discarding at most this much more of the request
/// body (so that the client reads the answer instead of a connection reset), for at most
/// [`DRAIN_TIME`]; then the connection closes.
const DRAIN_MAX_BYTES: usize = 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// hyper's buffer limit per connection (read and write): a request head may be this large,
/// and a streamed response holds at most this much (plus one frame) beyond the socket's own
/// buffers while the client is slow to read.
const MAX_BUF_BYTES: usize = 64 * 1024;

/// The agent API as an axum [`Router`], to serve with [`TokioServer`] or to embed in an
/// existing axum application.
///
/// Every request goes to [`AgentService::handle`], so routing, authentication, the JSON
/// errors (404, 405, 400, 401, 503) and the streamed bodies are exactly those of every other
/// backend. The body is read up to [`ServerConfig::max_body_bytes`] and refused with a 413
/// JSON error beyond, without buffering more: at once when `Content-Length` is over the limit
/// (before `100 Continue`, before reading a byte of it), as soon as a chunked body crosses it
/// otherwise; the answer carries `Connection: close`, and the rest of the body is read and
/// discarded in the background (at most 1 MiB, for at most 2 s) so that the client sees the
/// 413 rather than a reset. A streamed response (`text/event-stream`) is sent with chunked
/// encoding, one chunk per event, each written and flushed as it is produced; when the client
/// goes away hyper drops the body, which cancels the run.
///
/// Nest it under a prefix to keep your own routes (the service sees paths without the
/// prefix):
///
/// ```
/// use axum::{Router, routing::get};
/// use agent_core::model::{ScriptedModel, Turn};
/// use agent_core::server::{AgentService, ServerConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let agent = backend_tokio::agent_builder()
///     .model(ScriptedModel::new([Turn::new().text("Hi")]))
///     .build()
///     .unwrap();
/// let service = AgentService::new(agent, ServerConfig::default());
/// let app: Router = Router::new()
///     .route("/", get(|| async { "my app" }))
///     .nest("/agent", backend_tokio::router(service)); // POST /agent/v1/runs, ...
/// # let _ = app;
/// # }
/// ```
///
/// When serving the router yourself (with `axum::serve`), set TCP_NODELAY on accepted
/// sockets (`axum::serve::ListenerExt::tap_io`) and call [`AgentService::shutdown`] when
/// shutting down so that open streams end; [`TokioServer`] does both. It also enforces
/// [`ServerConfig::write_timeout`] on every connection, which `axum::serve` cannot (it gives
/// no access to the connection's I/O): there, a client that stops reading keeps its run
/// paused, not cancelled, until it reads again or disconnects.
pub fn router(service: AgentService) -> Router {
    Router::new()
        .route("/healthz", any(handle))
        .route("/v1/runs", any(handle))
        .route("/v1/chat/completions", any(handle))
        .fallback(handle)
        .with_state(service)
}

async fn handle(State(service): State<AgentService>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let limit = service.config().max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // A client waiting for `100 Continue` sends no body when refused before it: nothing to
    // drain then.
    let expects_continue = parts
        .headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
    let body = match read_body(body, limit, declared).await {
        Ok(body) => body,
        Err(BodyError::TooLarge { rest, started }) => {
            // Answer at once; the rest of the body is read and discarded in the background
            // (bounded) while the answer goes out, then the connection closes.
            if started || !expects_continue {
                drain_in_background(rest);
            }
            let mut response = into_axum(ApiError::payload_too_large(limit).into_response());
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
        Err(BodyError::Broken(message)) => {
            return into_axum(
                ApiError::bad_request(
                    "invalid_body",
                    format!("could not read the request body: {message}"),
                )
                .into_response(),
            );
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let headers: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter_map(|(name, value)| value.to_str().ok().map(|value| (name.as_str(), value)))
        .collect();
    let response = service
        .handle(parts.method.as_str(), path, &headers, &body)
        .await;
    into_axum(response)
}

type BodyStream = axum::body::BodyDataStream;

enum BodyError {
    /// Over the limit: the part of the body not read yet, and whether reading had started
    /// (hyper sends `100 Continue` on the first read).
    TooLarge {
        rest: BodyStream,
        started: bool,
    },
    Broken(String),
}

/// Read the body, keeping at most `limit` bytes. A declared length over the limit is refused
/// before reading (and before `100 Continue`); a chunked body as soon as it exceeds it.
async fn read_body(body: Body, limit: usize, declared: Option<u64>) -> Result<Vec<u8>, BodyError> {
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge {
            rest: stream,
            started: false,
        });
    }
    let mut buffer = Vec::new();
    if let Some(len) = declared {
        buffer.reserve(len as usize);
    }
    loop {
        match stream.next().await {
            None => return Ok(buffer),
            Some(Err(err)) => return Err(BodyError::Broken(err.to_string())),
            Some(Ok(chunk)) if buffer.len() + chunk.len() <= limit => {
                buffer.extend_from_slice(&chunk)
            }
            Some(Ok(_)) => {
                return Err(BodyError::TooLarge {
                    rest: stream,
                    started: true,
                });
            }
        }
    }
}

/// Read and discard what is left of a refused body, bounded by [`DRAIN_MAX_BYTES`] and
/// [`DRAIN_TIME`]. While the stream is alive hyper keeps reading the request, so it closes
/// the connection only after the drain: the client sees the 413, not a reset.
fn drain_in_background(mut rest: BodyStream) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let drain = async {
            let mut drained = 0usize;
            while let Some(Ok(chunk)) = rest.next().await {
                drained += chunk.len();
                if drained > DRAIN_MAX_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    });
}

fn into_axum(response: ApiResponse) -> Response {
    let body = match response.body {
        ApiBody::Full(bytes) => Body::from(bytes),
        ApiBody::Stream(stream) => Body::from_stream(stream.map(Ok::<_, Infallible>)),
    };
    let mut builder = Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(*name, value.as_str());
    }
    builder.body(body).unwrap_or_else(|err| {
        tracing::error!(%err, "could not build the HTTP response");
        let mut fallback = Response::new(Body::from(
            ApiError {
                status: 500,
                code: "internal",
                message: "could not build the response".into(),
            }
            .body(),
        ));
        *fallback.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        fallback.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        fallback
    })
}

/// The agent HTTP API served on tokio: an accept loop with TCP_NODELAY, hyper's HTTP/1.1
/// connections and the [`router`].
///
/// * `GET /healthz`, `POST /v1/runs` (SSE), `POST /v1/chat/completions` (OpenAI-compatible,
///   streamed or not), with the optional bearer token, body limit and run limit of
///   [`ServerConfig`]. See [`router`] for how requests are handled.
/// * **Slow readers.** A client that stops reading fills its socket buffers; hyper then stops
///   pulling the response body, so the run pauses and at most 64 KiB (hyper's write buffer)
///   plus one frame wait beyond the socket buffers. A connection whose writes make no
///   progress for [`ServerConfig::write_timeout`] (default 30 s; zero turns it off) is
///   closed, which drops the body and cancels the run.
/// * Binds [`ServerConfig::addr`] (default `127.0.0.1:8080`; port 0 picks a free port, see
///   [`local_addr`](Self::local_addr)).
/// * The server runs as tasks on the tokio runtime that called [`bind`](Self::bind), which
///   needs I/O and timers enabled (`enable_all()`, as `#[tokio::main]` does); on a
///   current-thread runtime it serves while that runtime is driven.
/// * [`shutdown`](Self::shutdown) is graceful: stop accepting, cancel every open run (its
///   stream ends with `run_cancelled`, or the chat equivalent), let connections finish their
///   response, and after [`DEFAULT_SHUTDOWN_TIMEOUT`] close whatever is left (a client that
///   stopped reading is cut off by the write timeout or by that bound, whichever is first).
///   Dropping a `TokioServer` starts the same shutdown in the background.
#[derive(Debug)]
pub struct TokioServer {
    local_addr: SocketAddr,
    service: AgentService,
    stop: watch::Sender<Option<Duration>>,
    task: Option<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl TokioServer {
    /// Bind `config.addr` and serve `agent` on the current tokio runtime.
    ///
    /// Fails with the bind error, or with [`io::ErrorKind::Other`] outside a tokio runtime.
    pub async fn bind(agent: Agent, config: ServerConfig) -> io::Result<Self> {
        TokioServer::bind_service(AgentService::new(agent, config)).await
    }

    /// Bind the address of `service`'s config and serve it on the current tokio runtime.
    pub async fn bind_service(service: AgentService) -> io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let listener = TcpListener::bind(service.config().addr).await?;
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(None);
        let write_timeout = service.config().write_timeout;
        let task = runtime.spawn(accept_loop(
            listener,
            router(service.clone()),
            write_timeout,
            stopped,
        ));
        tracing::info!(%local_addr, "agent server listening");
        Ok(TokioServer {
            local_addr,
            service,
            stop,
            task: Some(task),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        })
    }

    /// How long [`shutdown`](Self::shutdown) waits for open connections before closing them
    /// (default [`DEFAULT_SHUTDOWN_TIMEOUT`]).
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The service answering requests (to inspect running streams, or to shut it down).
    pub fn service(&self) -> &AgentService {
        &self.service
    }

    /// Serve until `signal` completes, then shut down gracefully.
    ///
    /// ```no_run
    /// # async fn example(server: backend_tokio::TokioServer) {
    /// // Needs tokio's `signal` feature in your application.
    /// server.run_until(async { tokio::signal::ctrl_c().await.ok(); }).await;
    /// # }
    /// ```
    pub async fn run_until<F: Future>(self, signal: F) {
        signal.await;
        self.shutdown().await;
    }

    /// Graceful shutdown: stop accepting, end every open stream with a terminal event, wait
    /// for connections to finish (at most the shutdown timeout), then close the rest.
    /// Returns once the server has stopped.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            // The accept loop bounds its own wait; this outer bound only guards against a
            // connection task that ignores being aborted.
            let bound = self.shutdown_timeout + Duration::from_secs(2);
            let _ = tokio::time::timeout(bound, task).await;
        }
        tracing::info!(local_addr = %self.local_addr, "agent server stopped");
    }

    fn begin_shutdown(&self) {
        self.service.shutdown();
        self.stop.send_replace(Some(self.shutdown_timeout));
    }
}

impl Drop for TokioServer {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.begin_shutdown();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    write_timeout: Duration,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let mut connections = JoinSet::new();
    let timeout = loop {
        tokio::select! {
            biased;
            timeout = stopped(&mut stop) => break timeout,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(
                        stream,
                        app.clone(),
                        write_timeout,
                        stop.clone(),
                    ));
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    };
    drop(listener);
    let drained = tokio::time::timeout(timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the shutdown timeout; closing them"
        );
        connections.shutdown().await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    write_timeout: Duration,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    // Every event is its own small write: never hold it back for Nagle's algorithm.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%err, "could not set TCP_NODELAY");
    }
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_BUF_BYTES);
    // A client that stops reading stalls hyper's writes: fail them after the write timeout,
    // which ends the connection and drops the response body (cancelling the run).
    let io = TokioIo::new(WriteTimeout::new(stream, write_timeout));
    let connection = builder.serve_connection(io, TowerToHyperService::new(app));
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(%err, "connection ended with an error");
            }
        }
        _ = stopped(&mut stop) => {
            // Finish the response in flight (its stream is being cancelled), then close.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Wait for the stop signal; the shutdown timeout it carries (the default when the sender is
/// gone).
async fn stopped(stop: &mut watch::Receiver<Option<Duration>>) -> Duration {
    match stop.wait_for(Option::is_some).await {
        Ok(timeout) => timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
        Err(_) => DEFAULT_SHUTDOWN_TIMEOUT,
    }
}
