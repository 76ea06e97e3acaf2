//! Stores: where a server keeps sessions (multi-turn histories) and runs (their events and
//! status), so that they outlive a process and can be shared by several instances.
//!
//! [`Store`] is the runtime-agnostic trait; this crate has no database in it. Three
//! implementations behave alike:
//!
//! * [`MemoryStore`]: in this process's memory, synchronous (no blocking job, no future on
//!   the write path). Several [`AgentService`](crate::server::AgentService)s of one process
//!   can share one, as if they were instances behind a load balancer.
//! * `agent-store-sqlite`: one file, WAL, the default of `agent serve`.
//! * `agent-store-postgres`: shared by several instances; live events and cancel requests
//!   travel through `LISTEN`/`NOTIFY`.
//!
//! Without a store ([`ServerConfig::store`](crate::server::ServerConfig::store) `None`, the
//! library default) a server keeps everything in its own memory exactly as a private
//! `MemoryStore` would, without copying its events anywhere.
//!
//! ```
//! use std::sync::Arc;
//! use agent_core::event::{Event, EventKind};
//! use agent_core::model::Message;
//! use agent_core::runtime::block_on;
//! use agent_core::store::{MemoryStore, RunStart, RunStatus, RunWrite, Store};
//!
//! let store = MemoryStore::new();
//! block_on(store.append_session("s1", vec![Message::user("hi"), Message::assistant("hello")], None)).unwrap();
//! assert_eq!(block_on(store.load_session("s1")).unwrap().len(), 2);
//!
//! let started = Event { seq: 0, kind: EventKind::RunStarted { run_id: "run_1".into(), input: "hi".into() } };
//! let write = RunWrite::new("run_1", vec![Arc::new(started)])
//!     .starting(RunStart::new("instance-a", None));
//! store.write_run(write).wait_ready().unwrap();
//! let run = block_on(store.run("run_1")).unwrap().unwrap();
//! assert_eq!((run.status, run.next_seq), (RunStatus::Running, 1));
//! assert_eq!(block_on(store.read_events("run_1", 0, 100)).unwrap().len(), 1);
//! ```
//!
//! # The write path
//!
//! A server writes a run's events **before** any client sees them. It hands the store a
//! [`RunWrite`] holding every event that is ready (a burst of deltas is one write: one
//! transaction, one blocking job), and keeps polling the run for the next batch while the
//! write is in flight. [`Store::write_run`] answers [`StoreWrite::Done`] when it finished
//! synchronously (the memory store) and [`StoreWrite::Pending`] with a future otherwise
//! (databases, on the runtime's blocking pool through [`blocking`](crate::runtime::blocking)).
//!
//! # Several instances
//!
//! A run belongs to the instance that runs it ([`RunRecord::owner`]); it holds a lease that
//! it renews ([`Store::renew_leases`]). Any instance marks runs whose lease ran out failed
//! ([`Store::fail_expired`], with a `run_failed` event of kind
//! [`InstanceLost`](crate::error::ErrorKind::InstanceLost)). Another instance follows a run
//! with [`Store::watch`] (woken when the run's events or status change: in-process for memory
//! and SQLite, `NOTIFY` for PostgreSQL) and asks for its cancellation with
//! [`Store::request_cancel`], which reaches the owner through [`Store::on_signal`].

mod hub;
mod memory;

use std::fmt;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::ErrorKind;
use crate::event::{Event, EventKind, RunError};
use crate::model::Message;
use crate::runtime::BoxFuture;

pub use hub::{RunWatch, StoreHub};
pub use memory::MemoryStore;

/// Decode a value a database store kept as JSON text (a message, an event, a record). One
/// that does not decode is a [`StoreErrorKind::Schema`] error naming the store (`"sqlite"`,
/// `"postgres"`).
///
/// ```
/// use agent_core::store::{StoreErrorKind, decode_stored, encode_stored};
/// let text = encode_stored(&vec![1, 2]);
/// assert_eq!(decode_stored::<Vec<u8>>("sqlite", &text).unwrap(), vec![1, 2]);
/// let err = decode_stored::<Vec<u8>>("sqlite", "{nope").unwrap_err();
/// assert_eq!(err.kind, StoreErrorKind::Schema);
/// assert!(err.to_string().contains("sqlite: a stored value does not decode"));
/// ```
pub fn decode_stored<T: serde::de::DeserializeOwned>(
    store: &str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::new(
            StoreErrorKind::Schema,
            format!("{store}: a stored value does not decode: {e}"),
        )
    })
}

/// The JSON text a database store keeps for `value` (the agent's own types always encode;
/// one that could not would be kept as `null`).
pub fn encode_stored<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// A store shared by a server's connections (and by several servers).
pub type SharedStore = Arc<dyn Store>;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Not ended yet.
    Running,
    /// Ended with `run_completed`.
    Completed,
    /// Ended with `run_failed` (a crashed instance's runs too).
    Failed,
    /// Ended with `run_cancelled`.
    Cancelled,
}

impl RunStatus {
    /// The snake_case name (`"running"`, …), as stored and as `GET /v1/runs/{id}` reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// The status named `name` (the inverse of [`as_str`](Self::as_str)).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "running" => RunStatus::Running,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }

    /// The status a terminal event ends its run with; `None` for other events.
    pub fn of_terminal(kind: &EventKind) -> Option<Self> {
        match kind {
            EventKind::RunCompleted { .. } => Some(RunStatus::Completed),
            EventKind::RunFailed { .. } => Some(RunStatus::Failed),
            EventKind::RunCancelled { .. } => Some(RunStatus::Cancelled),
            _ => None,
        }
    }
}

/// What a store knows of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// The run's id.
    pub run_id: String,
    /// Where it stands.
    pub status: RunStatus,
    /// The instance that runs (or ran) it.
    pub owner: String,
    /// The session it is a turn of, if any.
    pub session_id: Option<String>,
    /// The `seq` its next event will have (the number of events stored).
    pub next_seq: u64,
    /// Its terminal event, once it ended.
    pub terminal: Option<Event>,
    /// Whether a cancellation was requested.
    pub cancel_requested: bool,
    /// Until when the owner's lease runs (milliseconds since the Unix epoch).
    pub lease_until_ms: u64,
    /// When the run was created (milliseconds since the Unix epoch).
    pub created_ms: u64,
}

/// The first write of a run creates its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    /// The instance that runs it.
    pub owner: String,
    /// The session it is a turn of.
    pub session_id: Option<String>,
    /// How long its lease runs from now (renewed with [`Store::renew_leases`]).
    pub lease: Duration,
}

impl RunStart {
    /// A run of `owner`, a turn of `session_id`, with the default lease
    /// ([`DEFAULT_LEASE`]).
    pub fn new(owner: impl Into<String>, session_id: Option<String>) -> Self {
        RunStart {
            owner: owner.into(),
            session_id,
            lease: DEFAULT_LEASE,
        }
    }
}

/// The lease of a run when none is configured: 30 s.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The messages a completed session run adds, written with its terminal event.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionAppend {
    /// The session.
    pub session_id: String,
    /// One exchange: the user input and everything the run added after it.
    pub messages: Vec<Message>,
    /// Keep at most this many bytes of the session (as
    /// [`message_bytes`](crate::agent::message_bytes) counts them): older whole exchanges
    /// are deleted.
    pub max_bytes: Option<usize>,
}

/// One write of a run: consecutive events, and with the first write the run's record, with
/// the terminal event the session's new exchange. A store applies it atomically (one
/// transaction) and sets the run's status from a terminal event.
#[derive(Debug, Clone, PartialEq)]
pub struct RunWrite {
    /// The run.
    pub run_id: String,
    /// Create the run's record first (the first write of a run).
    pub start: Option<RunStart>,
    /// Events with consecutive `seq`s, continuing the stored ones.
    pub events: Vec<Arc<Event>>,
    /// Append to a session (with the terminal `run_completed`).
    pub session: Option<SessionAppend>,
}

impl RunWrite {
    /// A write of `events` to `run_id`.
    pub fn new(run_id: impl Into<String>, events: Vec<Arc<Event>>) -> Self {
        RunWrite {
            run_id: run_id.into(),
            start: None,
            events,
            session: None,
        }
    }

    /// Create the run's record with this write.
    pub fn starting(mut self, start: RunStart) -> Self {
        self.start = Some(start);
        self
    }

    /// Append `append` to its session with this write.
    pub fn appending(mut self, append: SessionAppend) -> Self {
        self.session = Some(append);
        self
    }

    /// The status the run has after this write, when it has a terminal event.
    pub fn terminal_status(&self) -> Option<RunStatus> {
        self.events
            .iter()
            .rev()
            .find_map(|e| RunStatus::of_terminal(&e.kind))
    }
}

/// The answer of [`Store::write_run`]: finished already, or a future to poll.
#[must_use = "a pending write does nothing until polled"]
pub enum StoreWrite {
    /// The write is done (the memory store; or it failed before starting).
    Done(Result<(), StoreError>),
    /// The write runs (on the blocking pool); poll to learn how it ended.
    Pending(BoxFuture<Result<(), StoreError>>),
}

impl fmt::Debug for StoreWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreWrite::Done(result) => f.debug_tuple("Done").field(result).finish(),
            StoreWrite::Pending(_) => f.write_str("Pending"),
        }
    }
}

impl StoreWrite {
    /// Block the current thread until the write ends (for synchronous callers and tests;
    /// never call it on an executor thread).
    pub fn wait_ready(self) -> Result<(), StoreError> {
        match self {
            StoreWrite::Done(result) => result,
            StoreWrite::Pending(future) => crate::runtime::block_on(future),
        }
    }

    /// Poll the write: `Ready` once it ended (a `Done` write is ready at once).
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StoreError>> {
        match self {
            StoreWrite::Done(result) => Poll::Ready(std::mem::replace(result, Ok(()))),
            StoreWrite::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl std::future::Future for StoreWrite {
    type Output = Result<(), StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        StoreWrite::poll(self.get_mut(), cx)
    }
}

/// A message from one instance to the owner of a run, through the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Cancel the run (see [`Store::request_cancel`]).
    Cancel(String),
    /// A client reads the run through another instance: do not cancel it for want of
    /// readers (the detach grace starts again).
    Reading(String),
}

impl Signal {
    /// The run it is about.
    pub fn run_id(&self) -> &str {
        match self {
            Signal::Cancel(id) | Signal::Reading(id) => id,
        }
    }
}

/// Handles [`Signal`]s on the instance that owns runs; returning `Break` unregisters it.
pub type SignalHandler = Box<dyn Fn(&Signal) -> ControlFlow<()> + Send + Sync>;

/// Why a store operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The database is locked by another process or connection for too long.
    Locked,
    /// The database file is not a database, or is damaged.
    Corrupt,
    /// The database cannot be written (read-only file, directory or connection).
    ReadOnly,
    /// The database cannot be reached (connection refused or dropped, pool exhausted).
    Unavailable,
    /// The write contradicts what is stored (a `seq` that does not follow, an unknown run).
    Conflict,
    /// The schema is newer than this program, or the data cannot be decoded.
    Schema,
    /// Anything else the database reported.
    Other,
}

impl StoreErrorKind {
    /// A snake_case name, e.g. `"locked"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Locked => "locked",
            StoreErrorKind::Corrupt => "corrupt",
            StoreErrorKind::ReadOnly => "read_only",
            StoreErrorKind::Unavailable => "unavailable",
            StoreErrorKind::Conflict => "conflict",
            StoreErrorKind::Schema => "schema",
            StoreErrorKind::Other => "other",
        }
    }
}

/// A store operation's failure: a kind and a message for people. Messages never contain
/// credentials (a DSN's password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    /// What went wrong.
    pub kind: StoreErrorKind,
    /// Details.
    pub message: String,
}

impl StoreError {
    /// An error of `kind`.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
        }
    }

    /// The `run_failed` error of a run stopped because its events could not be stored.
    pub fn to_run_error(&self) -> RunError {
        RunError {
            kind: ErrorKind::Store,
            message: format!("the run's events could not be stored: {self}"),
            status: None,
            retry_after_ms: None,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind.as_str())
    }
}

impl std::error::Error for StoreError {}

impl From<crate::runtime::TaskError> for StoreError {
    fn from(err: crate::runtime::TaskError) -> Self {
        StoreError::new(
            StoreErrorKind::Other,
            format!("the store's blocking job: {err}"),
        )
    }
}

/// Sessions and runs, kept by a memory, a file or a database. See the [module docs](self).
///
/// Every method returns at once; the work happens when the returned future is polled (or,
/// for a database, on the runtime's blocking pool). No method panics: failures are
/// [`StoreError`]s. Dropping a future stops waiting for it (a database statement already
/// sent finishes, atomically).
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs: `"memory"`, `"sqlite"`, `"postgres"`.
    fn name(&self) -> &'static str;

    /// A session's messages, oldest first (empty for an unknown session).
    fn load_session(&self, session_id: &str) -> BoxFuture<Result<Vec<Message>, StoreError>>;

    /// Append one exchange to a session atomically (created on first use): concurrent
    /// appends to one session never interleave and none is lost. With `max_bytes`, the
    /// oldest whole exchanges are deleted beyond it.
    fn append_session(
        &self,
        session_id: &str,
        messages: Vec<Message>,
        max_bytes: Option<usize>,
    ) -> BoxFuture<Result<(), StoreError>>;

    /// Forget a session; `true` if it existed.
    fn delete_session(&self, session_id: &str) -> BoxFuture<Result<bool, StoreError>>;

    /// Write a batch of a run atomically (see [`RunWrite`]); watchers of the run are woken.
    /// A write whose events do not continue the stored ones (a gap, a repeated `seq`) or to
    /// an unknown run without [`RunWrite::start`] fails with [`StoreErrorKind::Conflict`]
    /// and changes nothing.
    fn write_run(&self, write: RunWrite) -> StoreWrite;

    /// The record of run `run_id`, if stored.
    fn run(&self, run_id: &str) -> BoxFuture<Result<Option<RunRecord>, StoreError>>;

    /// Up to `limit` events of `run_id` from `seq == from` on, in order.
    fn read_events(
        &self,
        run_id: &str,
        from: u64,
        limit: usize,
    ) -> BoxFuture<Result<Vec<Event>, StoreError>>;

    /// Extend the leases of `owner`'s running runs in `run_ids` to `lease` from now; the
    /// ids among them whose cancellation was requested (so that an owner that missed a
    /// [`Signal::Cancel`] still cancels them).
    fn renew_leases(
        &self,
        owner: &str,
        run_ids: Vec<String>,
        lease: Duration,
    ) -> BoxFuture<Result<Vec<String>, StoreError>>;

    /// Mark every running run whose lease ran out failed, appending a `run_failed` event
    /// (kind [`InstanceLost`](ErrorKind::InstanceLost)); the ids of those runs.
    fn fail_expired(&self) -> BoxFuture<Result<Vec<String>, StoreError>>;

    /// Record that `run_id` should be cancelled and tell its owner
    /// ([`Signal::Cancel`]); `false` when the run is not stored or has already ended.
    fn request_cancel(&self, run_id: &str) -> BoxFuture<Result<bool, StoreError>>;

    /// Send `signal` to every instance (the owner of the run acts on it).
    fn signal(&self, signal: Signal) -> BoxFuture<Result<(), StoreError>>;

    /// Register `handler` for the signals this store delivers to this process.
    fn on_signal(&self, handler: SignalHandler);

    /// A watch woken whenever `run_id`'s events or status change, by this process or
    /// another sharing the store.
    fn watch(&self, run_id: &str) -> RunWatch;

    /// Delete ended runs (records and events) created before `before`; how many.
    fn delete_runs_before(&self, before: SystemTime) -> BoxFuture<Result<u64, StoreError>>;
}

/// Milliseconds since the Unix epoch of `time` (0 before it).
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// The terminal event a store appends to a run whose instance was lost.
pub fn instance_lost_event(seq: u64) -> Event {
    Event {
        seq,
        kind: EventKind::RunFailed {
            error: RunError {
                kind: ErrorKind::InstanceLost,
                message: "the instance serving this run stopped before the run ended".into(),
                status: None,
                retry_after_ms: None,
            },
            partial_text: String::new(),
        },
    }
}

/// Keep the newest whole exchanges of `exchanges` (each `(bytes, …)`) that fit `max_bytes`:
/// the index of the first one kept.
pub fn first_exchange_kept(bytes_per_exchange: &[usize], max_bytes: usize) -> usize {
    let mut total = 0usize;
    for (i, bytes) in bytes_per_exchange.iter().enumerate().rev() {
        total = total.saturating_add(*bytes);
        if total > max_bytes {
            return i + 1;
        }
    }
    0
}
