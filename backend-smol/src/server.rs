//! [`SmolServer`]: the agent HTTP API over hyper's HTTP/1.1 on async-net.
//!
//! The server is a thin transport: it binds an async-net listener and hands each accepted
//! connection (with `TCP_NODELAY`) to [`agent_hyper::Server`], the implementation every
//! async backend shares: hyper parses requests and frames responses, every limit and
//! timeout of [`ServerConfig`] applies, a streamed answer goes out with chunked encoding,
//! one chunk per event, each written and flushed the moment the run produces it; a client
//! that goes away cancels its run, and one that stops reading is disconnected after
//! [`ServerConfig::write_timeout`].
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
use std::net::SocketAddr;
use std::time::Duration;

use agent_core::agent::Agent;
use agent_core::server::{AgentService, ServerConfig};
use agent_hyper::{FuturesIo, Listener, Server};
use async_net::{TcpListener, TcpStream};

/// How long [`SmolServer::shutdown`] waits for open connections to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// An HTTP server serving one agent over the API of [`agent_core::server`].
///
/// Its tasks (the accept loop and one task per connection) are spawned with the agent's
/// runtime, so an agent built on a [`SmolRuntime`](crate::SmolRuntime) serves from that
/// runtime's executor; with an executor of your own, a thread must be running it
/// ([`async_executor::Executor::run`]) for the server to make progress.
///
/// Every event is written and flushed as it is produced; a client that stops reading pauses
/// its run (nothing is buffered beyond the socket buffers and hyper's bounded write buffer)
/// and is disconnected, its run cancelled, once it has accepted no byte for
/// [`ServerConfig::write_timeout`].
///
/// Dropping the server begins a graceful shutdown in the background (stop accepting,
/// cancel running streams). Use [`shutdown`](Self::shutdown) to wait for it.
pub struct SmolServer {
    server: Server,
}

impl fmt::Debug for SmolServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolServer")
            .field("server", &self.server)
            .finish()
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
        let server = Server::serve(SmolListener(listener), local_addr, service, runtime);
        Ok(SmolServer { server })
    }

    /// The address the server listens on (with the real port when `addr` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The service answering requests (its configuration, running streams, …).
    pub fn service(&self) -> &AgentService {
        self.server.service()
    }

    /// Graceful shutdown: stop accepting, close idle connections, cancel running streams
    /// (each ends with its terminal event), and wait up to [`SHUTDOWN_GRACE`] for open
    /// connections to finish; those still open then are closed.
    pub async fn shutdown(self) {
        self.shutdown_within(SHUTDOWN_GRACE).await;
    }

    /// [`shutdown`](Self::shutdown) with a chosen grace period; `true` when every
    /// connection finished within it.
    pub async fn shutdown_within(self, grace: Duration) -> bool {
        self.server.shutdown_within(grace).await
    }
}

/// The accepting half of a [`SmolServer`].
struct SmolListener(TcpListener);

impl Listener for SmolListener {
    type Io = FuturesIo<TcpStream>;

    async fn accept(&mut self) -> io::Result<Self::Io> {
        let (stream, _peer) = self.0.accept().await?;
        // Every event must leave at once: no Nagle delay on small frames.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "could not set TCP_NODELAY");
        }
        Ok(FuturesIo::new(stream))
    }
}
