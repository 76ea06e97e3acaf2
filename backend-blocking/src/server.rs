//! [`ThreadServer`]: the agent HTTP API on `std::net`, one thread per connection.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agent_core::agent::Agent;
use agent_core::server::{AgentService, ServerConfig};

use crate::options::ThreadServerOptions;
use crate::shared::{Shared, refuse};
use crate::waiting::wait_for_heads;

/// An HTTP server serving one agent over the HTTP API on `std::net`, one thread per
/// connection.
///
/// A small HTTP/1.1 server on the workspace's one sans-IO HTTP/1.1 layer ([`agent_http1`]),
/// because the usual threaded servers buffer streamed bodies: tiny_http 0.12, for one, writes
/// chunked bodies through an encoder that holds 8 KiB before it sends anything, so SSE events would
/// sit in its buffer. Here every frame of a streamed response is written with one `write`
/// and flushed on a socket with `TCP_NODELAY`, the moment the run produces it.
///
/// Behaviour, identical to the other backends (the [`AgentService`] does the API work):
///
/// * a connection thread per connection being served, from a complete request head to the
///   end of its response, at most [`ThreadServerOptions::max_connections`] at once; beyond,
///   a connection gets a `503` JSON error and is closed. Connections waiting for a head (new,
///   kept alive, slow) are held by one thread on non-blocking sockets, up to
///   [`ThreadServerOptions::max_waiting_connections`], so they take no connection thread;
/// * HTTP/1.1 keep-alive; `Content-Length` and `Transfer-Encoding: chunked` request bodies,
///   limited to [`ServerConfig::max_body_bytes`] while reading (`413`, never buffering more);
///   `Expect: 100-continue` is answered;
/// * what the request framing does not allow is answered as hyper answers it on the other
///   backends: a malformed head (request line, header field, `Content-Length: +14`, both
///   `Transfer-Encoding` and `Content-Length`) gets `400` with an empty body, a head with
///   more than [`ServerConfig::max_headers`] fields or over
///   [`ServerConfig::effective_max_head_bytes`] gets `431` with an empty body; a transfer
///   coding other than exactly `chunked` gets the `501` JSON error, broken chunked framing
///   the `400` `invalid_body` JSON error; each closes the connection;
/// * a request head must be complete within [`ServerConfig::head_read_timeout`] of the moment
///   the server starts waiting for it (a new connection, or the end of the previous response:
///   it is also the keep-alive idle timeout), or the connection is closed without an answer;
///   a body must arrive within [`ServerConfig::body_read_timeout`] of the end of its head, or
///   it gets the `408` JSON error;
/// * streamed responses use chunked encoding (HTTP/1.0 clients get the raw stream and a
///   connection close);
/// * a client that disconnects cancels its run: a failed write notices it at once, and while
///   the run is idle the socket is checked for end-of-stream every
///   [`ThreadServerOptions::disconnect_poll`] (default 250 ms), so the run is cancelled
///   within about that bound;
/// * a client that stops reading blocks its connection thread in `write` once the socket
///   buffers are full, so the run is not pulled any further (nothing is buffered beyond the
///   socket buffers and the frame being written); after [`ServerConfig::write_timeout`]
///   without the client accepting a byte (default 30 s, zero turns it off) the connection is
///   closed and the run cancelled: each `write` blocks at most 100 ms and the deadline moves
///   only on progress, so a partial write of a big frame does not restart it;
/// * graceful [`shutdown`](ThreadServer::shutdown): stop accepting, cancel every running
///   stream (each ends with its terminal `run_cancelled` frame), close idle connections, and
///   wait up to [`ThreadServerOptions::shutdown_timeout`] for open connections to finish.
///
/// ```
/// use std::io::{Read, Write};
/// use agent_core::model::{ScriptedModel, Turn};
/// use agent_core::server::ServerConfig;
/// use backend_blocking::ThreadServer;
///
/// let agent = backend_blocking::agent_builder()
///     .model(ScriptedModel::new([Turn::new().text("Hi!")]))
///     .build()
///     .unwrap();
/// let config = ServerConfig::default().with_addr("127.0.0.1:0".parse().unwrap());
/// let server = ThreadServer::bind(agent, config).unwrap();
///
/// let mut client = std::net::TcpStream::connect(server.local_addr()).unwrap();
/// client.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
/// let mut response = String::new();
/// client.read_to_string(&mut response).unwrap();
/// assert!(response.starts_with("HTTP/1.1 200 OK\r\n"));
/// assert!(response.ends_with(r#"{"status":"ok"}"#));
///
/// server.shutdown();
/// ```
pub struct ThreadServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl fmt::Debug for ThreadServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadServer")
            .field("local_addr", &self.local_addr)
            .field("connections", &self.open_connections())
            .field("options", &self.shared.options)
            .finish()
    }
}

impl ThreadServer {
    /// Bind `config.addr` and serve `agent` with the default [`ThreadServerOptions`]. Returns
    /// once the socket is listening; connections are served on background threads.
    pub fn bind(agent: Agent, config: ServerConfig) -> io::Result<Self> {
        ThreadServer::bind_with(agent, config, ThreadServerOptions::default())
    }

    /// Bind `config.addr` and serve `agent` with `options`.
    pub fn bind_with(
        agent: Agent,
        config: ServerConfig,
        options: ThreadServerOptions,
    ) -> io::Result<Self> {
        ThreadServer::bind_service_with(AgentService::new(agent, config), options)
    }

    /// Serve an existing `service`, binding `service.config().addr`, with the default
    /// [`ThreadServerOptions`].
    pub fn bind_service(service: AgentService) -> io::Result<Self> {
        ThreadServer::bind_service_with(service, ThreadServerOptions::default())
    }

    /// Serve an existing `service`, binding `service.config().addr`, with `options`.
    pub fn bind_service_with(
        service: AgentService,
        options: ThreadServerOptions,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(service.config().addr)?;
        let local_addr = listener.local_addr()?;
        let (wake_waiting, woken) = UnixStream::pair()?;
        wake_waiting.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            service,
            options,
            shutting_down: AtomicBool::new(false),
            connections: Mutex::new(0),
            connections_changed: Condvar::new(),
            waiting: AtomicUsize::new(0),
            to_waiting: Mutex::new(None),
            wake_waiting,
            stop_requested: Mutex::new(false),
            stop_changed: Condvar::new(),
        });
        let (sender, arrivals) = std::sync::mpsc::channel();
        *shared.to_waiting.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
        let waiting_shared = shared.clone();
        std::thread::Builder::new()
            .name("agent-server-heads".into())
            .spawn(move || wait_for_heads(&waiting_shared, &arrivals, &woken))?;
        let acceptor_shared = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("agent-server-accept".into())
            .spawn(move || accept_loop(&listener, &acceptor_shared))?;
        tracing::info!(addr = %local_addr, "agent server listening (threads)");
        Ok(ThreadServer {
            local_addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The address the server listens on (with the real port when `config.addr` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The service answering the requests.
    pub fn service(&self) -> &AgentService {
        &self.shared.service
    }

    /// Connections being served right now (a connection thread each; see
    /// [`ThreadServerOptions::max_connections`]).
    pub fn open_connections(&self) -> usize {
        *self.shared.connections()
    }

    /// Connections waiting for a request head right now, new or kept alive (see
    /// [`ThreadServerOptions::max_waiting_connections`]); about, as of the waiting thread's
    /// last pass.
    pub fn waiting_connections(&self) -> usize {
        self.shared.waiting.load(Ordering::Acquire)
    }

    /// A handle that asks the server to shut down from another thread (a signal handler, an
    /// admin endpoint); [`wait`](Self::wait) then returns.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            shared: self.shared.clone(),
        }
    }

    /// Serve until [`ShutdownSignal::trigger`] is called, then shut down gracefully (as
    /// [`shutdown`](Self::shutdown)). Without a signal, serves for as long as the process
    /// runs.
    ///
    /// ```
    /// use agent_core::model::{ScriptedModel, Turn};
    /// use agent_core::server::ServerConfig;
    /// use backend_blocking::ThreadServer;
    ///
    /// let agent = backend_blocking::agent_builder()
    ///     .model(ScriptedModel::new([Turn::new().text("Hi!")]))
    ///     .build()
    ///     .unwrap();
    /// let config = ServerConfig::default().with_addr("127.0.0.1:0".parse().unwrap());
    /// let server = ThreadServer::bind(agent, config).unwrap();
    /// let signal = server.shutdown_signal();
    /// std::thread::spawn(move || signal.trigger());
    /// server.wait();
    /// ```
    pub fn wait(self) {
        {
            let mut requested = self
                .shared
                .stop_requested
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            while !*requested {
                requested = self
                    .shared
                    .stop_changed
                    .wait(requested)
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
        self.shutdown();
    }

    /// Graceful shutdown: stop accepting, cancel every running stream so it ends with its
    /// terminal frame, and wait up to [`ThreadServerOptions::shutdown_timeout`] for the open
    /// connections to close. Connections still open after that are left to finish on their
    /// own (their runs are already cancelled).
    pub fn shutdown(self) {
        let timeout = self.shared.options.shutdown_timeout;
        self.shutdown_within(timeout);
    }

    /// [`shutdown`](Self::shutdown), waiting at most `timeout` for open connections; `true`
    /// if every connection closed in time.
    pub fn shutdown_within(mut self, timeout: Duration) -> bool {
        let remaining = self.stop(timeout);
        if remaining > 0 {
            tracing::warn!(
                connections = remaining,
                "agent server shut down with connections still closing"
            );
        }
        remaining == 0
    }

    /// Stop accepting, cancel streams, wait; returns the connections still open.
    fn stop(&mut self, timeout: Duration) -> usize {
        self.begin_stop();
        let deadline = Instant::now() + timeout;
        let mut open = self.shared.connections();
        while *open > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            open = self
                .shared
                .connections_changed
                .wait_timeout(open, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *open
    }

    /// Stop accepting and cancel the running streams, without waiting for connections.
    fn begin_stop(&mut self) {
        self.shared.shutting_down.store(true, Ordering::Release);
        self.shared.wake_waiting_thread();
        // The waiting thread closes its idle connections and ends.
        self.shared
            .to_waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.shared.service.shutdown();
        if let Some(acceptor) = self.acceptor.take() {
            // Unblock `accept` with a connection of our own; the acceptor sees the flag.
            let woke =
                TcpStream::connect_timeout(&wake_addr(self.local_addr), Duration::from_secs(1))
                    .is_ok();
            if woke {
                let _ = acceptor.join();
            } else {
                tracing::warn!(
                    "could not wake the acceptor thread; it ends with the next connection"
                );
            }
        }
    }
}

impl Drop for ThreadServer {
    /// Dropping the server without [`shutdown`](ThreadServer::shutdown) stops accepting and
    /// cancels running streams, without waiting for the connections.
    fn drop(&mut self) {
        if self.acceptor.is_some() {
            self.begin_stop();
        }
    }
}

/// Asks a [`ThreadServer`] to shut down; see [`ThreadServer::wait`]. Cheap to clone.
#[derive(Clone)]
pub struct ShutdownSignal {
    shared: Arc<Shared>,
}

impl fmt::Debug for ShutdownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownSignal").finish_non_exhaustive()
    }
}

impl ShutdownSignal {
    /// Ask the server to shut down: [`ThreadServer::wait`] returns after the graceful
    /// shutdown. Calling it more than once does nothing more.
    pub fn trigger(&self) {
        *self
            .shared
            .stop_requested
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.stop_changed.notify_all();
    }
}

/// Where to connect to wake the acceptor: the bound address, loopback if it is unspecified.
fn wake_addr(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.is_shutting_down() {
            return;
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: back off briefly instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let deadline = Instant::now() + shared.service.config().head_read_timeout;
        if let Err(stream) = shared.to_waiting(stream, Vec::new(), deadline) {
            refuse(stream);
        }
    }
}
