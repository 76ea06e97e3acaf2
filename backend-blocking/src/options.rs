//! [`ThreadServerOptions`]: the threaded server's settings beyond the shared `ServerConfig`.

use std::time::Duration;

/// Settings of a [`ThreadServer`](crate::ThreadServer) beyond the [`ServerConfig`](agent_core::server::ServerConfig) every backend shares.
///
/// Every request limit and timeout (head, body, header count and size, writes to a client
/// that stopped reading) is in [`ServerConfig`](agent_core::server::ServerConfig), so the three backends' servers apply the
/// same ones.
///
/// ```
/// use std::time::Duration;
/// use backend_blocking::ThreadServerOptions;
///
/// let options = ThreadServerOptions::default()
///     .with_max_connections(64)
///     .with_shutdown_timeout(Duration::from_secs(2));
/// assert_eq!(options.max_connections, 64);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ThreadServerOptions {
    /// Most connections served at once: a connection thread each, from the moment its
    /// request head is complete until its response is written. A connection whose head is
    /// complete beyond this gets `503` (`too_many_connections`) and is closed. Connections
    /// waiting for a head (new or kept alive between requests, slow heads included) do not
    /// count: one thread holds them (see
    /// [`max_waiting_connections`](Self::max_waiting_connections)). Default 1024.
    pub max_connections: usize,
    /// Most connections waiting for a request head at once (new ones, kept-alive idle ones,
    /// slow heads), all held by one thread on non-blocking sockets, each for at most
    /// [`ServerConfig::head_read_timeout`](agent_core::server::ServerConfig::head_read_timeout). A new connection beyond gets `503` and is closed;
    /// a kept-alive one beyond is closed. Default 10,000 (mind the process's file
    /// descriptor limit).
    pub max_waiting_connections: usize,
    /// How often an idle stream checks whether its client closed the connection, which
    /// bounds how long a run outlives its client. Default 250 ms.
    pub disconnect_poll: Duration,
    /// How long [`ThreadServer::shutdown`](crate::ThreadServer::shutdown) waits for open connections to finish. Default 5 s.
    pub shutdown_timeout: Duration,
}

impl Default for ThreadServerOptions {
    fn default() -> Self {
        ThreadServerOptions {
            max_connections: 1024,
            max_waiting_connections: 10_000,
            disconnect_poll: Duration::from_millis(250),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

impl ThreadServerOptions {
    /// Set [`max_connections`](Self::max_connections) (at least 1).
    pub fn with_max_connections(mut self, max_connections: usize) -> Self {
        self.max_connections = max_connections.max(1);
        self
    }

    /// Set [`max_waiting_connections`](Self::max_waiting_connections) (at least 1).
    pub fn with_max_waiting_connections(mut self, max: usize) -> Self {
        self.max_waiting_connections = max.max(1);
        self
    }

    /// Set [`disconnect_poll`](Self::disconnect_poll) (at least 1 ms).
    pub fn with_disconnect_poll(mut self, interval: Duration) -> Self {
        self.disconnect_poll = interval.max(Duration::from_millis(1));
        self
    }

    /// Set [`shutdown_timeout`](Self::shutdown_timeout).
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }
}
