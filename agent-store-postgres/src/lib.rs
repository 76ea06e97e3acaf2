//! [`PostgresStore`]: agent-core's [`Store`] in PostgreSQL, shared by several instances.
//!
//! ```no_run
//! use std::sync::Arc;
//! use agent_core::runtime::TestRuntime;
//! use agent_core::server::ServerConfig;
//! use agent_store_postgres::PostgresStore;
//!
//! let store = PostgresStore::connect("postgres://agent:secret@127.0.0.1/agent", Arc::new(TestRuntime::new())).unwrap();
//! let config = ServerConfig::default().with_store(Arc::new(store));
//! ```
//!
//! * **Every call on the blocking pool.** The synchronous `postgres` client runs through
//!   the runtime's `agent_core::runtime::blocking` helper on every backend
//!   (tokio, smol, plain threads). (The `postgres` crate drives its connection with a
//!   private current-thread tokio runtime inside this crate; nothing of it reaches the
//!   caller's executor, and the backend crates do not depend on this one.)
//! * **A small pool** of connections ([`PostgresOptions::max_connections`]); a connection
//!   found closed is replaced, and a call that failed because its connection dropped is
//!   retried once on a new one.
//! * **Live events and signals through `LISTEN`/`NOTIFY`.** A write notifies channel
//!   `agent_events` with the run id in the same transaction; a cancel request or a remote
//!   reader notifies `agent_signals`. One listening connection per store, on its own
//!   thread, wakes this process's watchers; after it lost its connection it reconnects
//!   (with backoff) and wakes every watcher, so a notification missed meanwhile costs one
//!   read, never a stuck reader.
//! * **Leases** use the database's clock, so instances' clocks need not agree.
//! * **Migrations** are numbered in [`MIGRATIONS`], applied under an advisory lock (two
//!   instances starting at once migrate once), tracked in `agent_schema`.
//! * The DSN's password never appears in `Debug`, logs or errors.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use agent_core::agent::message_bytes;
use agent_core::event::Event;
use agent_core::model::Message;
use agent_core::runtime::{BoxFuture, SharedRuntime, blocking};
use agent_core::store::{
    RunRecord, RunStatus, RunWatch, RunWrite, Signal, SignalHandler, Store, StoreError,
    StoreErrorKind, StoreHub, StoreWrite, first_exchange_kept, instance_lost_event, unix_ms,
};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls, Transaction};

/// The schema, one migration per entry (version `i + 1`).
pub const MIGRATIONS: &[&str] = &[
    // 1: sessions, runs, run events.
    "CREATE TABLE agent_sessions (
        session_id TEXT PRIMARY KEY,
        next_exchange BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL
    );
    CREATE TABLE agent_session_messages (
        session_id TEXT NOT NULL,
        exchange BIGINT NOT NULL,
        pos INTEGER NOT NULL,
        message TEXT NOT NULL,
        bytes BIGINT NOT NULL,
        PRIMARY KEY (session_id, exchange, pos)
    );
    CREATE TABLE agent_runs (
        run_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        owner TEXT NOT NULL,
        session_id TEXT,
        next_seq BIGINT NOT NULL,
        terminal TEXT,
        cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
        lease_until_ms BIGINT NOT NULL,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL
    );
    CREATE INDEX agent_runs_by_status ON agent_runs (status, lease_until_ms);
    CREATE TABLE agent_run_events (
        run_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        event TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );",
];

/// The database's clock in milliseconds since the Unix epoch.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

const EVENTS_CHANNEL: &str = "agent_events";
const SIGNALS_CHANNEL: &str = "agent_signals";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Settings of a [`PostgresStore`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Most connections open for calls (the listener has one more). Default 8.
    pub max_connections: usize,
    /// How long a call waits for a free connection before failing with
    /// [`StoreErrorKind::Unavailable`]. Default 10 s.
    pub acquire_timeout: Duration,
    /// Timeout of a new connection. Default 5 s.
    pub connect_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A [`StoreError`] for a PostgreSQL error (never carrying the DSN's password: the client's
/// errors do not contain it).
pub fn store_error(err: postgres::Error) -> StoreError {
    use postgres::error::SqlState;
    let kind = if err.is_closed() {
        StoreErrorKind::Unavailable
    } else {
        match err.code() {
            Some(code) if *code == SqlState::UNIQUE_VIOLATION => StoreErrorKind::Conflict,
            Some(code) if *code == SqlState::LOCK_NOT_AVAILABLE => StoreErrorKind::Locked,
            Some(code) if *code == SqlState::READ_ONLY_SQL_TRANSACTION => StoreErrorKind::ReadOnly,
            Some(code) if *code == SqlState::UNDEFINED_TABLE => StoreErrorKind::Schema,
            Some(code) if code.code().starts_with("08") || code.code().starts_with("57") => {
                StoreErrorKind::Unavailable
            }
            Some(code) if code.code().starts_with("28") => StoreErrorKind::Unavailable,
            None => StoreErrorKind::Unavailable,
            _ => StoreErrorKind::Other,
        }
    };
    StoreError::new(kind, format!("postgres: {err}"))
}

fn decode<T: agent_core::serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    agent_core::store::decode_stored("postgres", text)
}

use agent_core::store::encode_stored as encode;

/// agent-core's [`Store`] in PostgreSQL (see the [crate docs](crate)). Cheap to clone.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    /// `user@host:port/dbname`, for messages (no password).
    target: String,
    options: PostgresOptions,
    runtime: SharedRuntime,
    pool: Mutex<PoolState>,
    freed: Condvar,
    hub: StoreHub,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Client>,
    open: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Closing a `postgres::Client` blocks on the client's private runtime, which
        // panics on a thread that drives an async runtime (the last handle of a store may
        // well be dropped on one): the connections are closed on a thread of their own.
        let idle = std::mem::take(&mut lock(&self.pool).idle);
        if !idle.is_empty() {
            let closing = std::thread::Builder::new()
                .name("agent-pg-close".into())
                .spawn(move || drop(idle));
            if let Err(err) = closing {
                // (The clients were dropped here with the closure: rare enough to log.)
                tracing::warn!(error = %err, "postgres store: could not start a thread to close its connections");
            }
        }
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.inner.target)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

fn describe(config: &Config) -> String {
    let user = config.get_user().unwrap_or("");
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    format!("{user}@{host}:{port}/{db}")
}

/// Check a DSN without connecting: the message of a bad one never repeats it.
pub fn parse_dsn(dsn: &str) -> Result<Config, StoreError> {
    Config::from_str(dsn).map_err(|e| {
        StoreError::new(
            StoreErrorKind::Other,
            format!("postgres: invalid connection string ({e})"),
        )
    })
}

/// A pooled connection, given back when dropped (unless it broke).
struct Pooled<'a> {
    inner: &'a Inner,
    client: Option<Client>,
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let mut pool = lock(&self.inner.pool);
        match self.client.take() {
            Some(client) if !client.is_closed() => pool.idle.push(client),
            _ => pool.open -= 1,
        }
        drop(pool);
        self.inner.freed.notify_one();
    }
}

impl Inner {
    fn connect(&self) -> Result<Client, StoreError> {
        let mut config = self.config.clone();
        config.connect_timeout(self.options.connect_timeout);
        config.connect(NoTls).map_err(|e| {
            let err = store_error(e);
            StoreError::new(
                StoreErrorKind::Unavailable,
                format!("could not connect to {}: {}", self.target, err.message),
            )
        })
    }

    fn acquire(&self) -> Result<Pooled<'_>, StoreError> {
        let deadline = Instant::now() + self.options.acquire_timeout;
        let mut pool = lock(&self.pool);
        loop {
            while let Some(client) = pool.idle.pop() {
                if !client.is_closed() {
                    return Ok(Pooled {
                        inner: self,
                        client: Some(client),
                    });
                }
                pool.open -= 1;
            }
            if pool.open < self.options.max_connections.max(1) {
                pool.open += 1;
                drop(pool);
                return match self.connect() {
                    Ok(client) => Ok(Pooled {
                        inner: self,
                        client: Some(client),
                    }),
                    Err(err) => {
                        lock(&self.pool).open -= 1;
                        self.freed.notify_one();
                        Err(err)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!(
                        "postgres: all {} connections to {} stayed busy for {:?}",
                        self.options.max_connections, self.target, self.options.acquire_timeout
                    ),
                ));
            }
            pool = self
                .freed
                .wait_timeout(pool, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Run `f` on a pooled connection; once more on a new connection when the first one
    /// turned out to be closed (`retry` tells `f` that it is the second attempt).
    fn call<T>(
        &self,
        mut f: impl FnMut(&mut Client, bool) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut retry = false;
        loop {
            let mut conn = self.acquire()?;
            let client = conn
                .client
                .as_mut()
                .expect("a pooled connection has a client");
            match f(client, retry) {
                Ok(value) => return Ok(value),
                Err(err) if err.is_closed() && !retry => {
                    tracing::warn!(target = %self.target, "postgres connection lost; retrying on a new one");
                    conn.client = None;
                    retry = true;
                }
                Err(err) => {
                    if err.is_closed() {
                        conn.client = None;
                    }
                    return Err(store_error(err));
                }
            }
        }
    }
}

/// A write that `f` refused (a conflict), carried through `postgres::Error`'s type.
enum WriteOutcome {
    Done,
    Conflict(String),
}

impl PostgresStore {
    /// Connect to `dsn` (`postgres://user:password@host:port/dbname` or the key=value
    /// form), apply the migrations, and start the listener. Blocks the calling thread (call
    /// it at startup); later calls run on `runtime`'s blocking pool.
    pub fn connect(dsn: &str, runtime: SharedRuntime) -> Result<Self, StoreError> {
        Self::connect_with(dsn, runtime, PostgresOptions::default())
    }

    /// [`connect`](Self::connect) with `options`.
    pub fn connect_with(
        dsn: &str,
        runtime: SharedRuntime,
        options: PostgresOptions,
    ) -> Result<Self, StoreError> {
        let config = parse_dsn(dsn)?;
        let inner = Arc::new(Inner {
            target: describe(&config),
            config,
            options,
            runtime,
            pool: Mutex::new(PoolState::default()),
            freed: Condvar::new(),
            hub: StoreHub::new(),
            stop: Arc::new(AtomicBool::new(false)),
        });
        inner.call(|client, _| migrate(client))?;
        let listener = inner.connect()?;
        start_listener(Arc::downgrade(&inner), listener);
        Ok(PostgresStore { inner })
    }

    fn with<T, F>(&self, f: F) -> BoxFuture<Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let job = blocking(&*self.inner.runtime, move || f(&inner));
        Box::pin(async move { job.await? })
    }
}

fn migrate(client: &mut Client) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    // One instance migrates at a time.
    tx.execute("SELECT pg_advisory_xact_lock(7253019188)", &[])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS agent_schema (version INTEGER PRIMARY KEY)")?;
    let version: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM agent_schema", &[])?
        .get(0);
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(migration)?;
        tx.execute(
            "INSERT INTO agent_schema (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )?;
        tracing::info!(version = i + 1, "postgres store: migration applied");
    }
    tx.commit()?;
    if version as usize > MIGRATIONS.len() {
        tracing::warn!(
            version,
            known = MIGRATIONS.len(),
            "postgres store: the schema is newer than this program"
        );
    }
    Ok(())
}

/// The listener thread: `LISTEN` on both channels and feed the hub; reconnect with backoff.
fn start_listener(inner: Weak<Inner>, first: Client) {
    let Some(strong) = inner.upgrade() else {
        return;
    };
    let stop = strong.stop.clone();
    let hub = strong.hub.clone();
    drop(strong);
    let spawned = std::thread::Builder::new()
        .name("agent-pg-listen".into())
        .spawn(move || {
            let mut client = Some(first);
            let mut backoff = Duration::from_millis(100);
            while !stop.load(Ordering::Acquire) {
                let mut current = match client.take() {
                    Some(c) => c,
                    None => {
                        let Some(inner) = inner.upgrade() else {
                            return;
                        };
                        match inner.connect() {
                            Ok(c) => c,
                            Err(err) => {
                                drop(inner);
                                tracing::warn!(error = %err, "postgres listener: reconnect failed");
                                std::thread::sleep(backoff);
                                backoff = (backoff * 2).min(Duration::from_secs(5));
                                continue;
                            }
                        }
                    }
                };
                if let Err(err) = current.batch_execute(&format!(
                    "LISTEN {EVENTS_CHANNEL}; LISTEN {SIGNALS_CHANNEL};"
                )) {
                    tracing::warn!(error = %store_error(err), "postgres listener: LISTEN failed");
                    std::thread::sleep(backoff);
                    continue;
                }
                backoff = Duration::from_millis(100);
                // Whatever was notified while nobody listened: every watcher looks again.
                hub.notify_all();
                let lost = listen(&mut current, &hub, &stop);
                if lost {
                    tracing::warn!("postgres listener: connection lost; reconnecting");
                    hub.notify_all();
                }
            }
        });
    if let Err(err) = spawned {
        tracing::error!(error = %err, "postgres listener: could not start its thread");
    }
}

/// Deliver notifications until the connection is lost (`true`) or the store is dropped.
fn listen(client: &mut Client, hub: &StoreHub, stop: &AtomicBool) -> bool {
    while !stop.load(Ordering::Acquire) {
        {
            let mut notifications = client.notifications();
            // The timeout only bounds how long a dropped store keeps this thread.
            let mut iter = notifications.timeout_iter(Duration::from_millis(500));
            loop {
                match iter.next() {
                    Ok(Some(n)) => match n.channel() {
                        EVENTS_CHANNEL => hub.notify(n.payload()),
                        SIGNALS_CHANNEL => {
                            if let Some(id) = n.payload().strip_prefix("cancel:") {
                                hub.deliver(&Signal::Cancel(id.to_string()));
                            } else if let Some(id) = n.payload().strip_prefix("reading:") {
                                hub.deliver(&Signal::Reading(id.to_string()));
                            }
                        }
                        _ => {}
                    },
                    Ok(None) => break,
                    Err(_) => return true,
                }
            }
        }
        if client.is_closed() {
            return true;
        }
    }
    false
}

fn append_exchange(
    tx: &mut Transaction<'_>,
    session_id: &str,
    messages: &[Message],
    max_bytes: Option<usize>,
) -> Result<(), postgres::Error> {
    tx.execute(
        &format!("INSERT INTO agent_sessions (session_id, next_exchange, updated_ms) VALUES ($1, 0, {NOW_MS}) ON CONFLICT (session_id) DO NOTHING"),
        &[&session_id],
    )?;
    // The row lock taken here serializes appenders of one session until commit.
    let exchange: i64 = tx
        .query_one(
            &format!("UPDATE agent_sessions SET next_exchange = next_exchange + 1, updated_ms = {NOW_MS} WHERE session_id = $1 RETURNING next_exchange - 1"),
            &[&session_id],
        )?
        .get(0);
    let positions: Vec<i32> = (0..messages.len() as i32).collect();
    let texts: Vec<String> = messages.iter().map(encode).collect();
    let bytes: Vec<i64> = messages.iter().map(|m| message_bytes(m) as i64).collect();
    tx.execute(
        "INSERT INTO agent_session_messages (session_id, exchange, pos, message, bytes)
         SELECT $1, $2, p, m, b FROM unnest($3::int[], $4::text[], $5::bigint[]) AS t(p, m, b)",
        &[&session_id, &exchange, &positions, &texts, &bytes],
    )?;
    if let Some(max) = max_bytes {
        let rows = tx.query(
            "SELECT exchange, SUM(bytes)::bigint FROM agent_session_messages WHERE session_id = $1 GROUP BY exchange ORDER BY exchange",
            &[&session_id],
        )?;
        let sizes: Vec<(i64, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let per: Vec<usize> = sizes.iter().map(|(_, b)| *b as usize).collect();
        let first = first_exchange_kept(&per, max);
        if first > 0 {
            let keep_from = sizes.get(first).map_or(exchange + 1, |(e, _)| *e);
            tx.execute(
                "DELETE FROM agent_session_messages WHERE session_id = $1 AND exchange < $2",
                &[&session_id, &keep_from],
            )?;
        }
    }
    Ok(())
}

fn write_run(
    client: &mut Client,
    write: &RunWrite,
    retry: bool,
) -> Result<WriteOutcome, postgres::Error> {
    let mut tx = client.transaction()?;
    if let Some(start) = &write.start {
        let lease = start.lease.as_millis() as i64;
        let inserted = tx.execute(
            &format!("INSERT INTO agent_runs (run_id, status, owner, session_id, next_seq, lease_until_ms, created_ms, updated_ms)
             VALUES ($1, 'running', $2, $3, 0, {NOW_MS} + $4, {NOW_MS}, {NOW_MS}) ON CONFLICT (run_id) DO NOTHING"),
            &[&write.run_id, &start.owner, &start.session_id, &lease],
        )?;
        if inserted == 0 && !retry {
            return Ok(WriteOutcome::Conflict(format!(
                "run {} is already stored",
                write.run_id
            )));
        }
    }
    let row = tx.query_opt(
        "SELECT status, next_seq FROM agent_runs WHERE run_id = $1 FOR UPDATE",
        &[&write.run_id],
    )?;
    let Some(row) = row else {
        return Ok(WriteOutcome::Conflict(format!(
            "run {} is not stored",
            write.run_id
        )));
    };
    let status: String = row.get(0);
    let next = row.get::<_, i64>(1) as u64;
    let first = write.events.first().map_or(next, |e| e.seq);
    let end = first + write.events.len() as u64;
    if retry && first < next && end == next {
        // The first attempt committed before its connection dropped.
        return Ok(WriteOutcome::Done);
    }
    if status != "running" {
        return Ok(WriteOutcome::Conflict(format!(
            "run {} has already ended",
            write.run_id
        )));
    }
    for (i, event) in write.events.iter().enumerate() {
        if event.seq != next + i as u64 {
            return Ok(WriteOutcome::Conflict(format!(
                "run {}: event seq {} does not follow the stored {}",
                write.run_id,
                event.seq,
                next + i as u64
            )));
        }
    }
    if !write.events.is_empty() {
        let seqs: Vec<i64> = write.events.iter().map(|e| e.seq as i64).collect();
        let texts: Vec<String> = write.events.iter().map(|e| encode(&**e)).collect();
        tx.execute(
            "INSERT INTO agent_run_events (run_id, seq, event) SELECT $1, s, e FROM unnest($2::bigint[], $3::text[]) AS t(s, e)",
            &[&write.run_id, &seqs, &texts],
        )?;
    }
    if let Some(append) = &write.session {
        append_exchange(
            &mut tx,
            &append.session_id,
            &append.messages,
            append.max_bytes,
        )?;
    }
    let new_next = end as i64;
    match write.terminal_status() {
        Some(status) => {
            let terminal = write.events.last().map(|e| encode(&**e));
            tx.execute(
                &format!("UPDATE agent_runs SET next_seq = $2, status = $3, terminal = $4, updated_ms = {NOW_MS} WHERE run_id = $1"),
                &[&write.run_id, &new_next, &status.as_str(), &terminal],
            )?;
        }
        None => {
            tx.execute(
                &format!(
                    "UPDATE agent_runs SET next_seq = $2, updated_ms = {NOW_MS} WHERE run_id = $1"
                ),
                &[&write.run_id, &new_next],
            )?;
        }
    }
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&EVENTS_CHANNEL, &write.run_id],
    )?;
    tx.commit()?;
    Ok(WriteOutcome::Done)
}

impl Store for PostgresStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn load_session(&self, session_id: &str) -> BoxFuture<Result<Vec<Message>, StoreError>> {
        let id = session_id.to_string();
        self.with(move |inner| {
            let rows = inner.call(|client, _| {
                client.query(
                    "SELECT message FROM agent_session_messages WHERE session_id = $1 ORDER BY exchange, pos",
                    &[&id],
                )
            })?;
            rows.iter().map(|r| decode(r.get::<_, &str>(0))).collect()
        })
    }

    fn append_session(
        &self,
        session_id: &str,
        messages: Vec<Message>,
        max_bytes: Option<usize>,
    ) -> BoxFuture<Result<(), StoreError>> {
        let id = session_id.to_string();
        self.with(move |inner| {
            inner.call(|client, _| {
                let mut tx = client.transaction()?;
                append_exchange(&mut tx, &id, &messages, max_bytes)?;
                tx.commit()
            })
        })
    }

    fn delete_session(&self, session_id: &str) -> BoxFuture<Result<bool, StoreError>> {
        let id = session_id.to_string();
        self.with(move |inner| {
            inner.call(|client, _| {
                let mut tx = client.transaction()?;
                tx.execute(
                    "DELETE FROM agent_session_messages WHERE session_id = $1",
                    &[&id],
                )?;
                let n = tx.execute("DELETE FROM agent_sessions WHERE session_id = $1", &[&id])?;
                tx.commit()?;
                Ok(n > 0)
            })
        })
    }

    fn write_run(&self, write: RunWrite) -> StoreWrite {
        let job = self.with(move |inner| {
            match inner.call(|client, retry| write_run(client, &write, retry))? {
                WriteOutcome::Done => {
                    inner.hub.notify(&write.run_id);
                    Ok(())
                }
                WriteOutcome::Conflict(message) => {
                    Err(StoreError::new(StoreErrorKind::Conflict, message))
                }
            }
        });
        StoreWrite::Pending(job)
    }

    fn run(&self, run_id: &str) -> BoxFuture<Result<Option<RunRecord>, StoreError>> {
        let id = run_id.to_string();
        self.with(move |inner| {
            let row = inner.call(|client, _| {
                client.query_opt(
                    "SELECT status, owner, session_id, next_seq, terminal, cancel_requested, lease_until_ms, created_ms FROM agent_runs WHERE run_id = $1",
                    &[&id],
                )
            })?;
            let Some(row) = row else {
                return Ok(None);
            };
            let status: String = row.get(0);
            let terminal: Option<String> = row.get(4);
            Ok(Some(RunRecord {
                run_id: id,
                status: RunStatus::parse(&status).ok_or_else(|| {
                    StoreError::new(
                        StoreErrorKind::Schema,
                        format!("postgres: unknown run status {status:?}"),
                    )
                })?,
                owner: row.get(1),
                session_id: row.get(2),
                next_seq: row.get::<_, i64>(3) as u64,
                terminal: terminal.as_deref().map(decode::<Event>).transpose()?,
                cancel_requested: row.get(5),
                lease_until_ms: row.get::<_, i64>(6) as u64,
                created_ms: row.get::<_, i64>(7) as u64,
            }))
        })
    }

    fn read_events(
        &self,
        run_id: &str,
        from: u64,
        limit: usize,
    ) -> BoxFuture<Result<Vec<Event>, StoreError>> {
        let id = run_id.to_string();
        let from = from.min(i64::MAX as u64) as i64;
        let limit = limit.min(i64::MAX as usize) as i64;
        self.with(move |inner| {
            let rows = inner.call(|client, _| {
                client.query(
                    "SELECT event FROM agent_run_events WHERE run_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
                    &[&id, &from, &limit],
                )
            })?;
            rows.iter().map(|r| decode(r.get::<_, &str>(0))).collect()
        })
    }

    fn renew_leases(
        &self,
        owner: &str,
        run_ids: Vec<String>,
        lease: Duration,
    ) -> BoxFuture<Result<Vec<String>, StoreError>> {
        let owner = owner.to_string();
        let lease = lease.as_millis() as i64;
        self.with(move |inner| {
            let rows = inner.call(|client, _| {
                client.query(
                    &format!("UPDATE agent_runs SET lease_until_ms = {NOW_MS} + $3 WHERE run_id = ANY($1) AND owner = $2 AND status = 'running' RETURNING run_id, cancel_requested"),
                    &[&run_ids, &owner, &lease],
                )
            })?;
            Ok(rows
                .iter()
                .filter(|r| r.get::<_, bool>(1))
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn fail_expired(&self) -> BoxFuture<Result<Vec<String>, StoreError>> {
        self.with(move |inner| {
            let failed = inner.call(|client, _| {
                let mut tx = client.transaction()?;
                let rows = tx.query(
                    &format!("SELECT run_id, next_seq FROM agent_runs WHERE status = 'running' AND lease_until_ms < {NOW_MS} FOR UPDATE SKIP LOCKED"),
                    &[],
                )?;
                let mut failed = Vec::new();
                for row in rows {
                    let id: String = row.get(0);
                    let next: i64 = row.get(1);
                    let text = encode(&instance_lost_event(next as u64));
                    tx.execute(
                        "INSERT INTO agent_run_events (run_id, seq, event) VALUES ($1, $2, $3)",
                        &[&id, &next, &text],
                    )?;
                    tx.execute(
                        &format!("UPDATE agent_runs SET status = 'failed', next_seq = $2, terminal = $3, updated_ms = {NOW_MS} WHERE run_id = $1"),
                        &[&id, &(next + 1), &text],
                    )?;
                    tx.execute("SELECT pg_notify($1, $2)", &[&EVENTS_CHANNEL, &id])?;
                    failed.push(id);
                }
                tx.commit()?;
                Ok(failed)
            })?;
            for id in &failed {
                inner.hub.notify(id);
            }
            Ok(failed)
        })
    }

    fn request_cancel(&self, run_id: &str) -> BoxFuture<Result<bool, StoreError>> {
        let id = run_id.to_string();
        self.with(move |inner| {
            let requested = inner.call(|client, _| {
                let mut tx = client.transaction()?;
                let n = tx.execute(
                    "UPDATE agent_runs SET cancel_requested = TRUE WHERE run_id = $1 AND status = 'running'",
                    &[&id],
                )?;
                if n > 0 {
                    tx.execute(
                        "SELECT pg_notify($1, $2)",
                        &[&SIGNALS_CHANNEL, &format!("cancel:{id}")],
                    )?;
                }
                tx.commit()?;
                Ok(n > 0)
            })?;
            if requested {
                inner.hub.deliver(&Signal::Cancel(id));
            }
            Ok(requested)
        })
    }

    fn signal(&self, signal: Signal) -> BoxFuture<Result<(), StoreError>> {
        self.with(move |inner| {
            let payload = match &signal {
                Signal::Cancel(id) => format!("cancel:{id}"),
                Signal::Reading(id) => format!("reading:{id}"),
            };
            inner.call(|client, _| {
                client.execute("SELECT pg_notify($1, $2)", &[&SIGNALS_CHANNEL, &payload])
            })?;
            Ok(())
        })
    }

    fn on_signal(&self, handler: SignalHandler) {
        self.inner.hub.on_signal(handler);
    }

    fn watch(&self, run_id: &str) -> RunWatch {
        self.inner.hub.watch(run_id)
    }

    fn delete_runs_before(&self, before: SystemTime) -> BoxFuture<Result<u64, StoreError>> {
        let before = unix_ms(before) as i64;
        self.with(move |inner| {
            inner.call(|client, _| {
                let mut tx = client.transaction()?;
                tx.execute(
                    "DELETE FROM agent_run_events WHERE run_id IN (SELECT run_id FROM agent_runs WHERE status <> 'running' AND created_ms < $1)",
                    &[&before],
                )?;
                let n = tx.execute(
                    "DELETE FROM agent_runs WHERE status <> 'running' AND created_ms < $1",
                    &[&before],
                )?;
                tx.commit()?;
                Ok(n)
            })
        })
    }
}
