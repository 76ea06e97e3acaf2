//! HTTP for backends that bring none: the agent server and an HTTP client on
//! [`agent_hyper`] (hyper's HTTP/1.1, the stack backend-tokio and backend-smol use), over
//! the sockets of a [`SocketAdapter`].
//!
//! A backend for a new executor implements the runtime and, at most, a socket adapter: a
//! way to connect and to accept that yields `futures-io` streams. [`ThreadedSockets`] is the
//! adapter for executors without a reactor (std sockets, each with threads of its own doing
//! the blocking I/O), and the one [`Backend`](crate::Backend)'s default
//! [`http_client`](crate::Backend::http_client) and
//! [`start_server`](crate::Backend::start_server) use.
//!
//! ```
//! use std::sync::Arc;
//! use agent_core::agent::Agent;
//! use agent_core::model::{ScriptedModel, Turn};
//! use agent_core::runtime::{SharedRuntime, TestRuntime};
//! use agent_core::server::ServerConfig;
//! use conformance::kit::http::{start_server, ThreadedSockets};
//!
//! let runtime: SharedRuntime = Arc::new(TestRuntime::new());
//! let agent = Agent::builder()
//!     .model(ScriptedModel::new([Turn::new().text("Hi")]))
//!     .runtime(runtime)
//!     .build()
//!     .unwrap();
//! let config = ServerConfig::default().with_addr("127.0.0.1:0".parse().unwrap());
//! let server = start_server(ThreadedSockets, agent, config).unwrap();
//! let health = conformance::kit::client::http_request(
//!     server.addr(), "GET", "/healthz", &[], b"", std::time::Duration::from_secs(5),
//! ).unwrap();
//! assert_eq!(health.status, 200);
//! server.shutdown();
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use agent_core::agent::Agent;
use agent_core::http::{HttpClient, HttpError, HttpErrorKind};
use agent_core::runtime::{SharedRuntime, block_on};
use agent_core::server::{AgentService, ServerConfig};
use agent_hyper::{Connector, FuturesIo, HyperClient, Listener, Server, Target};
use futures_io::{AsyncRead, AsyncWrite};

use super::sockets::{ThreadedListener, ThreadedStream};
use crate::RunningServer;

/// How long [`KitServer::shutdown`] waits for open connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Sockets for the kit's HTTP: connect and accept, yielding `futures-io` streams.
pub trait SocketAdapter: Send + Sync + fmt::Debug + 'static {
    /// A connected stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A bound listener.
    type Listener: Send + 'static;

    /// Bind `addr` (called from a plain thread).
    fn bind(&self, addr: SocketAddr) -> io::Result<(Self::Listener, SocketAddr)>;

    /// Accept the next connection on `listener`.
    fn accept(
        listener: &mut Self::Listener,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Connect to `host:port` (plain TCP; the kit's client speaks `http://` only).
    fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// The [`SocketAdapter`] for executors without a reactor: std sockets, each connection with
/// a reader and a writer thread ([`ThreadedStream`]), the listener with an accept thread.
/// Connecting runs on a thread of its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadedSockets;

impl SocketAdapter for ThreadedSockets {
    type Stream = ThreadedStream;
    type Listener = ThreadedListener;

    fn bind(&self, addr: SocketAddr) -> io::Result<(ThreadedListener, SocketAddr)> {
        let listener = ThreadedListener::bind(addr)?;
        let local = listener.local_addr();
        Ok((listener, local))
    }

    async fn accept(listener: &mut ThreadedListener) -> io::Result<ThreadedStream> {
        listener.accept().await
    }

    async fn connect(&self, host: &str, port: u16) -> io::Result<ThreadedStream> {
        let host = host.to_string();
        let (sender, receiver) = futures_channel::oneshot::channel();
        std::thread::Builder::new()
            .name("kit-connect".into())
            .spawn(move || {
                let connected = (host.as_str(), port)
                    .to_socket_addrs()
                    .and_then(|mut addrs| {
                        addrs.next().ok_or_else(|| {
                            io::Error::new(io::ErrorKind::NotFound, "the host has no address")
                        })
                    })
                    .and_then(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(10)))
                    .and_then(ThreadedStream::new);
                let _ = sender.send(connected);
            })?;
        receiver
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the connect thread ended")))
    }
}

struct AdapterListener<S: SocketAdapter>(S::Listener);

impl<S: SocketAdapter> Listener for AdapterListener<S> {
    type Io = FuturesIo<S::Stream>;

    async fn accept(&mut self) -> io::Result<Self::Io> {
        S::accept(&mut self.0).await.map(FuturesIo::new)
    }
}

/// The agent server of the kit: [`agent_hyper::Server`] on the sockets of a
/// [`SocketAdapter`], its tasks spawned on the agent's runtime.
#[derive(Debug)]
pub struct KitServer {
    server: Server,
}

/// Bind `config.addr` with `sockets` and serve `agent` (see [`KitServer`]).
pub fn start_server<S: SocketAdapter>(
    sockets: S,
    agent: Agent,
    config: ServerConfig,
) -> io::Result<KitServer> {
    let (listener, local_addr) = sockets.bind(config.addr)?;
    let runtime = agent.runtime().clone();
    let service = AgentService::new(agent, config);
    let server = Server::serve(AdapterListener::<S>(listener), local_addr, service, runtime);
    Ok(KitServer { server })
}

impl KitServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The service answering requests.
    pub fn service(&self) -> &AgentService {
        self.server.service()
    }

    /// Graceful shutdown within [`SHUTDOWN_GRACE`], blocking the calling thread.
    pub fn shutdown(self) {
        block_on(self.server.shutdown_within(SHUTDOWN_GRACE));
    }
}

impl RunningServer for KitServer {
    fn addr(&self) -> SocketAddr {
        KitServer::addr(self)
    }

    fn running_streams(&self) -> Option<usize> {
        Some(self.service().running_streams())
    }

    fn shutdown(self: Box<Self>) {
        KitServer::shutdown(*self);
    }
}

/// The kit's HTTP client: [`agent_hyper::HyperClient`] on the sockets of a
/// [`SocketAdapter`], timing connects on `runtime`. It speaks `http://` only (the suite's
/// upstreams are on 127.0.0.1); `https://` fails with [`HttpErrorKind::Connect`].
pub fn client<S: SocketAdapter>(sockets: S, runtime: SharedRuntime) -> Arc<dyn HttpClient> {
    Arc::new(HyperClient::new(AdapterConnector(sockets), runtime))
}

#[derive(Debug)]
struct AdapterConnector<S>(S);

impl<S: SocketAdapter> Connector for AdapterConnector<S> {
    type Io = FuturesIo<S::Stream>;

    async fn connect(&self, target: &Target) -> Result<Self::Io, HttpError> {
        if target.https {
            return Err(HttpError::new(
                HttpErrorKind::Connect,
                "the conformance kit's client speaks http:// only",
            ));
        }
        self.0
            .connect(&target.host, target.port)
            .await
            .map(FuturesIo::new)
            .map_err(|err| {
                HttpError::new(
                    HttpErrorKind::Connect,
                    format!("{}:{}: {err}", target.host, target.port),
                )
            })
    }
}
