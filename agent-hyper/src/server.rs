//! [`serve_connection`] and [`Server`]: the agent HTTP API over hyper's HTTP/1.1, on any
//! runtime.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use agent_core::runtime::SharedRuntime;
use agent_core::server::AgentService;
use futures_util::FutureExt;
use hyper::rt::{Read, Write};

use crate::signal::{Signal, TaskCount};
use crate::{RuntimeTimer, WriteTimeout, handle_request};

/// After the grace period of a shutdown, how long connections that were told to close get
/// to drop their sockets.
const FORCE_CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long the accept loop backs off after a failed accept (out of file descriptors and
/// the like), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serve one connection: hyper's HTTP/1.1 with every request answered by
/// [`handle_request`], until the client closes it or `shutdown` resolves (then the response
/// in flight finishes and the connection closes).
///
/// Every limit of the service's [`ServerConfig`](agent_core::server::ServerConfig) applies:
/// `head_read_timeout` (hyper's header read timeout, which also bounds an idle kept-alive
/// connection; the connection then closes without an answer), `max_headers` and
/// `max_head_bytes` (`431` with an empty body beyond, hyper's answer; a malformed head gets
/// hyper's `400`), `body_read_timeout` and `max_body_bytes` (see [`handle_request`]), and
/// `write_timeout` (a client that accepts no byte for that long is disconnected, which
/// cancels its run; see [`WriteTimeout`]). Timers come from the service's runtime.
///
/// `io` should have `TCP_NODELAY` set: every event is its own small write.
pub async fn serve_connection<I>(io: I, service: AgentService, shutdown: impl Future<Output = ()>)
where
    I: Read + Write + Unpin + Send + 'static,
{
    let config = service.config();
    let timer = RuntimeTimer::new(service.agent().runtime().clone());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(timer.clone())
        .header_read_timeout(
            (!config.head_read_timeout.is_zero()).then_some(config.head_read_timeout),
        )
        .max_headers(config.max_headers)
        .max_buf_size(config.effective_max_head_bytes());
    let io = WriteTimeout::new(io, timer, config.write_timeout);
    let handler = service.clone();
    let connection = builder.serve_connection(
        io,
        hyper::service::service_fn(move |request| {
            let service = handler.clone();
            async move { Ok::<_, Infallible>(handle_request(&service, request).await) }
        }),
    );
    let mut connection = pin!(connection);
    let mut shutdown = pin!(shutdown.fuse());
    let result = futures_util::select_biased! {
        result = connection.as_mut().fuse() => result,
        () = shutdown => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%err, "connection ended with an error");
    }
}

/// Where a [`Server`] gets its connections: a bound listening socket of some runtime.
///
/// ```
/// use std::io;
/// use agent_hyper::{FuturesIo, Listener};
///
/// /// A listener of the smol family (`async-net`), for example.
/// struct MyListener(/* async_net::TcpListener */);
///
/// impl Listener for MyListener {
///     type Io = FuturesIo<futures_util::io::Cursor<Vec<u8>>>; // the accepted socket
///     async fn accept(&mut self) -> io::Result<Self::Io> {
///         // let (stream, _peer) = self.0.accept().await?;
///         // stream.set_nodelay(true)?;
///         Ok(FuturesIo::new(futures_util::io::Cursor::new(Vec::new())))
///     }
/// }
/// ```
pub trait Listener: Send + 'static {
    /// An accepted connection.
    type Io: Read + Write + Unpin + Send + 'static;

    /// Wait for the next connection; set `TCP_NODELAY` on it. An error (out of file
    /// descriptors, a connection reset while queued) makes the server log it and back off
    /// for a moment before accepting again: it never ends the accept loop.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

/// The agent HTTP API served from a [`Listener`]: an accept loop and one task per
/// connection ([`serve_connection`]), spawned on a runtime, with graceful shutdown.
///
/// Backends wrap it in their own server type (`TokioServer`, `SmolServer`), which binds the
/// socket; a backend for another executor can use it directly.
///
/// Dropping it begins a graceful shutdown ([`begin_shutdown`](Self::begin_shutdown)) in the
/// background.
pub struct Server {
    local_addr: SocketAddr,
    service: AgentService,
    runtime: SharedRuntime,
    /// Stop accepting; connections finish their response and close.
    stop: Signal,
    /// Connections still open after the grace period drop their sockets.
    force: Signal,
    tasks: TaskCount,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("service", &self.service)
            .field("open_tasks", &self.tasks.live())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Serve `service` on the connections of `listener` (bound to `local_addr`), with the
    /// accept loop and connection tasks spawned on `runtime`.
    pub fn serve<L: Listener>(
        listener: L,
        local_addr: SocketAddr,
        service: AgentService,
        runtime: SharedRuntime,
    ) -> Server {
        let server = Server {
            local_addr,
            service,
            runtime,
            stop: Signal::default(),
            force: Signal::default(),
            tasks: TaskCount::default(),
        };
        let accept = accept_loop(
            listener,
            server.service.clone(),
            server.runtime.clone(),
            server.stop.clone(),
            server.force.clone(),
            server.tasks.clone(),
        );
        server.runtime.spawn(Box::pin(accept));
        tracing::info!(%local_addr, "agent server listening");
        server
    }

    /// The address the server listens on (with the real port when it was bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The service answering requests (its configuration, running streams, …).
    pub fn service(&self) -> &AgentService {
        &self.service
    }

    /// Stop accepting, let idle connections close, and cancel every running stream (each
    /// ends with its terminal event); returns at once.
    pub fn begin_shutdown(&self) {
        self.service.shutdown();
        self.stop.fire();
    }

    /// Graceful shutdown: [`begin_shutdown`](Self::begin_shutdown), then wait up to `grace`
    /// for every connection to finish its response; connections still open then are closed.
    /// `true` when all finished within `grace`.
    pub async fn shutdown_within(&self, grace: Duration) -> bool {
        self.begin_shutdown();
        let finished = race(self.tasks.zero(), self.runtime.sleep(grace)).await;
        if !finished {
            tracing::warn!(
                open = self.tasks.live(),
                "connections still open after the shutdown grace period; closing them"
            );
            self.force.fire();
            race(self.tasks.zero(), self.runtime.sleep(FORCE_CLOSE_WAIT)).await;
        }
        tracing::info!(local_addr = %self.local_addr, "agent server stopped");
        finished
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// `true` when `first` finished before `second`.
async fn race(first: impl Future<Output = ()>, second: impl Future<Output = ()>) -> bool {
    futures_util::select_biased! {
        () = first.fuse() => true,
        () = second.fuse() => false,
    }
}

async fn accept_loop<L: Listener>(
    mut listener: L,
    service: AgentService,
    runtime: SharedRuntime,
    stop: Signal,
    force: Signal,
    tasks: TaskCount,
) {
    let token = tasks.enter();
    loop {
        let accepted = futures_util::select_biased! {
            () = stop.fired().fuse() => break,
            accepted = listener.accept().fuse() => accepted,
        };
        match accepted {
            Ok(io) => {
                let token = tasks.enter();
                let service = service.clone();
                let (stop, force) = (stop.clone(), force.clone());
                runtime.spawn(Box::pin(async move {
                    let _token = token;
                    let connection =
                        serve_connection(io, service, async move { stop.fired().await });
                    futures_util::select_biased! {
                        () = connection.fuse() => {},
                        () = force.fired().fuse() => {},
                    }
                }));
                // Some executors (smol) have no cooperative budget: with a backlog of
                // connections `accept` is always ready, so give the executor back between
                // them.
                YieldNow(false).await;
            }
            Err(err) => {
                tracing::warn!(%err, "accept failed; backing off");
                runtime.sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    // Close the listening socket before counting this task out: once shutdown returns, the
    // port refuses connections.
    drop(listener);
    drop(token);
}

/// Pending once, then ready: lets the executor run other tasks.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
