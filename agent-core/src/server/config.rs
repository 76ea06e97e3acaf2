//! Server settings shared by every backend.

use std::net::SocketAddr;
use std::time::Duration;

use crate::secret::Secret;

/// Settings of an agent HTTP server, the same on every backend.
///
/// ```
/// use std::time::Duration;
/// use agent_core::server::ServerConfig;
///
/// let config = ServerConfig::default()
///     .with_addr("127.0.0.1:0".parse().unwrap())
///     .with_bearer_token("s3cret")
///     .with_keep_alive(Duration::from_secs(5));
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind. Default `127.0.0.1:8080` (loopback only).
    pub addr: SocketAddr,
    /// When set, every request except `GET /healthz` needs `Authorization: Bearer <token>`.
    pub bearer_token: Option<Secret>,
    /// Send a `: keep-alive` comment on an SSE stream idle for this long. Default 15 s.
    pub keep_alive: Duration,
    /// Largest request body accepted (413 beyond). Default 1 MiB.
    pub max_body_bytes: usize,
    /// Most runs streaming at once (503 beyond). Default 1024.
    pub max_concurrent_runs: usize,
    /// Most sessions remembered; the least recently used is forgotten beyond. Default 10,000.
    pub max_sessions: usize,
    /// Largest history one session keeps, in bytes (as
    /// [`message_bytes`](crate::agent::message_bytes) counts them: the text of every
    /// message plus a small fixed overhead each). When a completed run makes a session
    /// larger, its oldest exchanges (a user input and everything its run added, tool rounds
    /// included: never half of one) are forgotten until the rest fits. A `POST /v1/runs`
    /// whose input alone would not fit is refused with `413 session_turn_too_large` before
    /// any run starts. Default 8 MiB.
    pub max_session_bytes: usize,
    /// Largest history all sessions keep together, in bytes. When a run ends with the
    /// sessions over this bound, the least recently used sessions are forgotten (a later
    /// request with their id starts an empty one) until they fit again. Default 256 MiB.
    pub max_total_session_bytes: usize,
    /// A client that has not accepted any bytes of a response for this long (it stopped
    /// reading) is disconnected, which cancels its run. Buffering per slow client is thus
    /// bounded by the socket buffers plus one frame. Default 30 s; `Duration::ZERO` turns the
    /// bound off (a stalled client then keeps its run paused until it reads or leaves).
    pub write_timeout: Duration,
    /// How long a connection may take to deliver a complete request head, counted from the
    /// moment the server starts waiting for one: on a new connection, or after the previous
    /// response on a kept-alive one. It thus bounds an idle kept-alive connection and a head
    /// that trickles in alike. When it expires the connection is closed without an answer
    /// (there is no request to answer yet). Default 30 s.
    pub head_read_timeout: Duration,
    /// Most header fields in a request head; beyond, `431` with an empty body (the head was
    /// not understood, so no JSON error can be matched to a request). Default 100.
    pub max_headers: usize,
    /// Largest request head (request line and header fields) in bytes; beyond, `431` with an
    /// empty body. Default 64 KiB; values under 8 KiB are raised to 8 KiB (the smallest head
    /// buffer hyper accepts).
    pub max_head_bytes: usize,
    /// How long a request body may take to arrive, counted from the end of its head. A body
    /// that stops midway or trickles is answered `408` with a JSON error, and the connection
    /// closes. Default 30 s.
    pub body_read_timeout: Duration,
    /// Browser origins (`https://app.example`, scheme and host and port as the browser
    /// sends them in `Origin`) allowed to call the API, with CORS headers on their answers
    /// and preflights answered; `"*"` allows any origin. A request whose `Origin` is not
    /// allowed gets `403` before anything else. Default: none (only requests without
    /// `Origin`, i.e. not from a browser page on another origin).
    pub allowed_origins: Vec<String>,
    /// How long a `/v1/runs` run goes on after its last reader disconnected, waiting for a
    /// client to resume it (`GET /v1/runs/{id}/events` with `Last-Event-ID`); cancelled
    /// when nobody came back by then. The other endpoints' protocols cannot resume, so
    /// their runs are cancelled at once. Default 10 s; `Duration::ZERO` cancels at once.
    pub run_detach_grace: Duration,
    /// How long a finished run stays addressable (status, events) after it ended.
    /// Default 5 minutes.
    pub run_retention: Duration,
    /// Most finished runs kept addressable; the oldest are forgotten beyond. Default 256.
    pub max_retained_runs: usize,
    /// Most bytes of events one run's log holds for resuming readers (text plus a fixed
    /// per-event overhead). Beyond, the oldest events every connected reader has already
    /// taken are dropped (resuming before them answers `410`), and a reader that still
    /// needs the oldest holds the run back. Default 512 KiB.
    pub max_run_log_bytes: usize,
    /// Where sessions and runs are kept beyond this process's memory (see
    /// [`store`](crate::store)): every event is written there before a client sees it, a
    /// session's turns are appended with its run's `run_completed`, and runs are
    /// addressable (status, events, cancel) from any instance sharing the store. Default
    /// `None`: everything stays in this server's memory, bounded by the limits above.
    pub store: Option<crate::store::SharedStore>,
    /// How long this instance's lease on a run lasts in the store; renewed every third of
    /// it while the run goes on. A run whose instance died is marked failed once its lease
    /// ran out. Default 30 s.
    pub run_lease: Duration,
    /// This instance's name in the store (the owner of its runs). Default: a random one
    /// per server.
    pub instance_id: Option<String>,
}

/// The smallest [`ServerConfig::max_head_bytes`] a server applies.
pub const MIN_HEAD_BYTES: usize = 8 * 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            bearer_token: None,
            keep_alive: Duration::from_secs(15),
            max_body_bytes: 1024 * 1024,
            max_concurrent_runs: 1024,
            max_sessions: 10_000,
            max_session_bytes: 8 * 1024 * 1024,
            max_total_session_bytes: 256 * 1024 * 1024,
            write_timeout: Duration::from_secs(30),
            head_read_timeout: Duration::from_secs(30),
            max_headers: 100,
            max_head_bytes: 64 * 1024,
            body_read_timeout: Duration::from_secs(30),
            allowed_origins: Vec::new(),
            run_detach_grace: Duration::from_secs(10),
            run_retention: Duration::from_secs(300),
            max_retained_runs: 256,
            max_run_log_bytes: 512 * 1024,
            store: None,
            run_lease: crate::store::DEFAULT_LEASE,
            instance_id: None,
        }
    }
}

impl ServerConfig {
    /// Keep sessions and runs in `store` (see [`ServerConfig::store`]).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use agent_core::server::ServerConfig;
    /// use agent_core::store::MemoryStore;
    ///
    /// let config = ServerConfig::default().with_store(Arc::new(MemoryStore::new()));
    /// assert_eq!(config.store.unwrap().name(), "memory");
    /// ```
    pub fn with_store(mut self, store: crate::store::SharedStore) -> Self {
        self.store = Some(store);
        self
    }

    /// Set the lease of this instance's runs in the store (at least 1 s is sensible).
    pub fn with_run_lease(mut self, lease: Duration) -> Self {
        self.run_lease = lease;
        self
    }

    /// Name this instance in the store.
    pub fn with_instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Set the bind address.
    pub fn with_addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Require `Authorization: Bearer <token>`.
    pub fn with_bearer_token(mut self, token: impl Into<Secret>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Set the keep-alive interval.
    pub fn with_keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval;
        self
    }

    /// Set the request body limit.
    pub fn with_max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// Set the write timeout for clients that stop reading (see
    /// [`write_timeout`](Self::write_timeout)).
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Set the request head timeout (see [`head_read_timeout`](Self::head_read_timeout)).
    pub fn with_head_read_timeout(mut self, timeout: Duration) -> Self {
        self.head_read_timeout = timeout;
        self
    }

    /// Set the request body timeout (see [`body_read_timeout`](Self::body_read_timeout)).
    pub fn with_body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// Set the most header fields a request may have.
    pub fn with_max_headers(mut self, limit: usize) -> Self {
        self.max_headers = limit;
        self
    }

    /// Set the largest request head in bytes (at least [`MIN_HEAD_BYTES`] is applied).
    pub fn with_max_head_bytes(mut self, limit: usize) -> Self {
        self.max_head_bytes = limit;
        self
    }

    /// [`max_head_bytes`](Self::max_head_bytes) as servers apply it: never under
    /// [`MIN_HEAD_BYTES`].
    pub fn effective_max_head_bytes(&self) -> usize {
        self.max_head_bytes.max(MIN_HEAD_BYTES)
    }

    /// Allow browser `origins` (see [`allowed_origins`](Self::allowed_origins)); `"*"`
    /// allows any.
    ///
    /// ```
    /// use agent_core::server::ServerConfig;
    /// let config = ServerConfig::default().with_allowed_origins(["http://localhost:5173"]);
    /// assert_eq!(config.allowed_origins, ["http://localhost:5173"]);
    /// ```
    pub fn with_allowed_origins<S: Into<String>>(
        mut self,
        origins: impl IntoIterator<Item = S>,
    ) -> Self {
        self.allowed_origins
            .extend(origins.into_iter().map(Into::into));
        self
    }

    /// Set the most sessions remembered (see [`max_sessions`](Self::max_sessions)).
    pub fn with_max_sessions(mut self, limit: usize) -> Self {
        self.max_sessions = limit;
        self
    }

    /// Set the largest history of one session (see
    /// [`max_session_bytes`](Self::max_session_bytes)).
    ///
    /// ```
    /// use agent_core::server::ServerConfig;
    /// let config = ServerConfig::default()
    ///     .with_max_session_bytes(1 << 20)
    ///     .with_max_total_session_bytes(64 << 20);
    /// assert_eq!(config.max_session_bytes, 1 << 20);
    /// assert_eq!(config.max_total_session_bytes, 64 << 20);
    /// ```
    pub fn with_max_session_bytes(mut self, limit: usize) -> Self {
        self.max_session_bytes = limit;
        self
    }

    /// Set the largest history of all sessions together (see
    /// [`max_total_session_bytes`](Self::max_total_session_bytes)).
    pub fn with_max_total_session_bytes(mut self, limit: usize) -> Self {
        self.max_total_session_bytes = limit;
        self
    }

    /// Set the concurrent-run limit.
    pub fn with_max_concurrent_runs(mut self, limit: usize) -> Self {
        self.max_concurrent_runs = limit;
        self
    }

    /// Set how long a disconnected `/v1/runs` run waits for a client to resume it (see
    /// [`run_detach_grace`](Self::run_detach_grace)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_core::server::ServerConfig;
    /// let config = ServerConfig::default()
    ///     .with_run_detach_grace(Duration::from_secs(5))
    ///     .with_run_retention(Duration::from_secs(60))
    ///     .with_max_retained_runs(10)
    ///     .with_max_run_log_bytes(64 * 1024);
    /// assert_eq!(config.run_detach_grace, Duration::from_secs(5));
    /// assert_eq!(config.max_run_log_bytes, 64 * 1024);
    /// ```
    pub fn with_run_detach_grace(mut self, grace: Duration) -> Self {
        self.run_detach_grace = grace;
        self
    }

    /// Set how long finished runs stay addressable (see
    /// [`run_retention`](Self::run_retention)).
    pub fn with_run_retention(mut self, retention: Duration) -> Self {
        self.run_retention = retention;
        self
    }

    /// Set the most finished runs kept (see [`max_retained_runs`](Self::max_retained_runs)).
    pub fn with_max_retained_runs(mut self, limit: usize) -> Self {
        self.max_retained_runs = limit;
        self
    }

    /// Set the byte bound of one run's event log (see
    /// [`max_run_log_bytes`](Self::max_run_log_bytes)).
    pub fn with_max_run_log_bytes(mut self, limit: usize) -> Self {
        self.max_run_log_bytes = limit;
        self
    }
}
