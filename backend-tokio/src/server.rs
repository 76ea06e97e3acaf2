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

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agent_core::agent::Agent;
use agent_core::server::{AgentService, ServerConfig};
use agent_hyper::{AgentBody, Listener, Server};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::any;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::TokioRuntime;

/// How long [`TokioServer::shutdown`] waits for open connections by default.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent API as an axum [`Router`], to serve with [`TokioServer`] or to embed in an
/// existing axum application.
///
/// Every request goes through [`agent_hyper::handle_request`] to [`AgentService::handle`],
/// the path every async backend shares, so routing, authentication, the body limit and
/// deadline, the JSON errors (404, 405, 400, 401, 408, 413, 501, 503) and the streamed bodies
/// are exactly those of every other backend. A streamed response (`text/event-stream`) is
/// sent with chunked encoding, one chunk per event, each written and flushed as it is
/// produced; when the client goes away hyper drops the body, which cancels the run.
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

/// A run as the SSE answer of `POST /v1/runs`, for an axum route of your own: the same
/// frames (`id: <seq>`, `event: <type>`), headers (`x-accel-buffering: no`,
/// `cache-control: no-cache`, `x-run-id`) and `: keep-alive` comments (every 15 s of
/// silence) as the agent API, where `Sse::new(...)` would silently lose the anti-buffering
/// header and the keep-alives. Dropping the response (the client left) cancels the run.
///
/// This crate builds axum without its default features and does not re-export it: depend
/// on `axum = "0.8"` with the features you use; the types are the same.
///
/// ```
/// use axum::{Router, extract::Query, routing::get};
/// use agent_core::model::{ScriptedModel, Turn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let agent = backend_tokio::agent_builder()
///     .model(ScriptedModel::from_fn(|_, _| Turn::new().text("Hi")))
///     .build()
///     .unwrap();
/// #[derive(serde::Deserialize)]
/// struct Ask { q: String }
/// let app: Router = Router::new().route(
///     "/ask",
///     get(move |Query(ask): Query<Ask>| async move { backend_tokio::sse_response(agent.run(ask.q)) }),
/// );
/// # let _ = app;
/// # }
/// ```
pub fn sse_response(run: agent_core::agent::RunStream) -> Response {
    let keep_alive = agent_core::server::ServerConfig::default().keep_alive;
    agent_hyper::into_hyper(agent_core::server::sse_response(run, keep_alive))
        .map(Body::new::<AgentBody>)
}

async fn handle(State(service): State<AgentService>, request: Request) -> Response {
    agent_hyper::handle_request(&service, request)
        .await
        .map(Body::new::<AgentBody>)
}

/// The agent HTTP API served on tokio: a tokio listener (TCP_NODELAY on every connection)
/// feeding [`agent_hyper::Server`], the accept loop, hyper connections and limits every
/// async backend shares.
///
/// * `GET /healthz`, `POST /v1/runs` (SSE), `POST /v1/chat/completions` (OpenAI-compatible,
///   streamed or not), with the optional bearer token, body limit and run limit of
///   [`ServerConfig`], and its head and body read timeouts and header limits. See [`router`]
///   for how requests are handled.
/// * **Slow readers.** A client that stops reading fills its socket buffers; hyper then stops
///   pulling the response body, so the run pauses and at most 64 KiB (hyper's write buffer)
///   plus one frame wait beyond the socket buffers. A connection whose writes make no
///   progress for [`ServerConfig::write_timeout`] (default 30 s; zero turns it off) is
///   closed, which drops the body and cancels the run.
/// * Its tasks are spawned on the tokio runtime that called [`bind`](Self::bind).
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
    server: Option<Server>,
    local_addr: SocketAddr,
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
        let runtime = TokioRuntime::try_current().map_err(io::Error::other)?;
        let listener = TcpListener::bind(service.config().addr).await?;
        let local_addr = listener.local_addr()?;
        let server = Server::serve(
            TokioListener(listener),
            local_addr,
            service,
            Arc::new(runtime),
        );
        Ok(TokioServer {
            server: Some(server),
            local_addr,
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
        self.server
            .as_ref()
            .expect("the server is only taken by shutdown, which consumes it")
            .service()
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
        if let Some(server) = self.server.take() {
            server.shutdown_within(self.shutdown_timeout).await;
        }
    }
}

/// The accepting half of a [`TokioServer`].
struct TokioListener(TcpListener);

impl Listener for TokioListener {
    type Io = TokioIo<TcpStream>;

    async fn accept(&mut self) -> io::Result<Self::Io> {
        let (stream, _peer) = self.0.accept().await?;
        // Every event is its own small write: never hold it back for Nagle's algorithm.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "could not set TCP_NODELAY");
        }
        Ok(TokioIo::new(stream))
    }
}
