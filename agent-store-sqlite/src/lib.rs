//! [`SqliteStore`]: agent-core's [`Store`] in one SQLite file.
//!
//! ```
//! use std::sync::Arc;
//! use agent_core::model::Message;
//! use agent_core::runtime::{block_on, TestRuntime};
//! use agent_core::store::Store;
//! use agent_store_sqlite::SqliteStore;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = SqliteStore::open(dir.path().join("agent.db"), Arc::new(TestRuntime::new())).unwrap();
//! block_on(store.append_session("s1", vec![Message::user("hi"), Message::assistant("hello")], None)).unwrap();
//! assert_eq!(block_on(store.load_session("s1")).unwrap().len(), 2);
//! ```
//!
//! * **WAL** journal, `synchronous = NORMAL`, a busy timeout of 5 s: readers never wait
//!   for the writer, and a write waits for another at most that long before it fails with
//!   [`StoreErrorKind::Locked`].
//! * **Migrations** are numbered in [`MIGRATIONS`] and applied in one transaction each,
//!   tracked by `PRAGMA user_version`; a file written by a newer version is refused
//!   ([`StoreErrorKind::Schema`]).
//! * **Errors, not panics**: a locked, corrupt, read-only or missing database is a
//!   [`StoreError`] with a kind saying which.
//! * **One process per file**: [`SqliteStore::open`] holds an exclusive lock on
//!   `PATH.lock` for as long as the store lives; runs a previous process left `running`
//!   are marked failed when the file is opened (that process is gone, or it would hold the
//!   lock). Several services of one process can share one store.
//! * Every call runs on the runtime's blocking pool through
//!   `agent_core::runtime::blocking`, so no executor thread ever waits for the
//!   disk.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use agent_core::agent::message_bytes;
use agent_core::event::Event;
use agent_core::model::Message;
use agent_core::runtime::{BoxFuture, SharedRuntime, blocking};
use agent_core::store::{
    RunRecord, RunStatus, RunWatch, RunWrite, Signal, SignalHandler, Store, StoreError,
    StoreErrorKind, StoreHub, StoreWrite, first_exchange_kept, instance_lost_event, now_ms,
    unix_ms,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

/// The schema, one migration per entry: entry `i` brings `user_version` from `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: sessions, runs, run events.
    "CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        next_exchange INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE session_messages (
        session_id TEXT NOT NULL,
        exchange INTEGER NOT NULL,
        pos INTEGER NOT NULL,
        message TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        PRIMARY KEY (session_id, exchange, pos)
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        owner TEXT NOT NULL,
        session_id TEXT,
        next_seq INTEGER NOT NULL,
        terminal TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        lease_until_ms INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE INDEX runs_by_status ON runs (status, lease_until_ms);
    CREATE TABLE run_events (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        event TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;",
];

/// Most connections kept open (one writes at a time; readers run alongside in WAL mode).
const MAX_IDLE_CONNECTIONS: usize = 16;

// The book's "Deploying" page: its Rust samples are compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/src/deploying.md")]
struct DeployingBookPage;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A [`StoreError`] for a SQLite error, with its kind.
pub fn store_error(err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    let kind = match &err {
        rusqlite::Error::SqliteFailure(e, _) => match e.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreErrorKind::Locked,
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreErrorKind::Corrupt,
            ErrorCode::ReadOnly => StoreErrorKind::ReadOnly,
            ErrorCode::CannotOpen | ErrorCode::PermissionDenied => StoreErrorKind::Unavailable,
            ErrorCode::ConstraintViolation => StoreErrorKind::Conflict,
            _ => StoreErrorKind::Other,
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => StoreErrorKind::Schema,
        _ => StoreErrorKind::Other,
    };
    let hint = match kind {
        StoreErrorKind::Locked => "; another connection holds the database's write lock",
        StoreErrorKind::Corrupt => "; the file is not an intact SQLite database",
        StoreErrorKind::ReadOnly => "; the file or its directory cannot be written",
        _ => "",
    };
    StoreError::new(kind, format!("sqlite: {err}{hint}"))
}

fn decode<T: agent_core::serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    agent_core::store::decode_stored("sqlite", text)
}

use agent_core::store::encode_stored as encode;

/// agent-core's [`Store`] in one SQLite file (see the [crate docs](crate)). Cheap to clone
/// (clones share connections and notifications).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    runtime: SharedRuntime,
    idle: Mutex<Vec<Connection>>,
    hub: StoreHub,
    /// Held for the store's life: one process per file.
    _lock: File,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(store_error)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(store_error)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(store_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::new(
            StoreErrorKind::ReadOnly,
            format!(
                "sqlite: could not switch {} to WAL mode (it stays {mode}); is it read-only?",
                path.display()
            ),
        ));
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
        .map_err(store_error)?;
    Ok(conn)
}

/// Apply the migrations `conn` lacks.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(store_error)?;
    if version as usize > MIGRATIONS.len() {
        return Err(StoreError::new(
            StoreErrorKind::Schema,
            format!(
                "sqlite: the database has schema version {version}, newer than this program's {}; use a newer agent",
                MIGRATIONS.len()
            ),
        ));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_error)?;
        tx.execute_batch(migration).map_err(store_error)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(store_error)?;
        tx.commit().map_err(store_error)?;
        tracing::info!(version = i + 1, "sqlite store: migration applied");
    }
    Ok(())
}

/// Mark every run left `running` failed (its process is gone): their ids.
fn fail_running(conn: &mut Connection, only_expired: bool) -> Result<Vec<String>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(store_error)?;
    let now = now_ms() as i64;
    let stale: Vec<(String, i64)> = {
        let mut stmt = tx
            .prepare("SELECT run_id, next_seq FROM runs WHERE status = 'running' AND (?1 = 0 OR lease_until_ms < ?2)")
            .map_err(store_error)?;
        stmt.query_map(params![only_expired as i64, now], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .map_err(store_error)?
        .collect::<Result<_, _>>()
        .map_err(store_error)?
    };
    for (id, next) in &stale {
        let event = instance_lost_event(*next as u64);
        let text = encode(&event);
        tx.execute(
            "INSERT INTO run_events (run_id, seq, event) VALUES (?1, ?2, ?3)",
            params![id, next, text],
        )
        .map_err(store_error)?;
        tx.execute(
            "UPDATE runs SET status = 'failed', next_seq = ?2, terminal = ?3, updated_ms = ?4 WHERE run_id = ?1",
            params![id, next + 1, text, now],
        )
        .map_err(store_error)?;
    }
    tx.commit().map_err(store_error)?;
    Ok(stale.into_iter().map(|(id, _)| id).collect())
}

impl SqliteStore {
    /// Open (creating it and its directory if needed) the database at `path`, migrate it,
    /// and mark the runs a previous process left running failed. Blocks the calling thread
    /// (call it at startup, not from async code); later calls run on `runtime`'s blocking
    /// pool.
    ///
    /// Fails with [`StoreErrorKind::Locked`] when another process has the file open,
    /// [`StoreErrorKind::Corrupt`] for a file that is not a database,
    /// [`StoreErrorKind::ReadOnly`] when it cannot be written.
    pub fn open(path: impl AsRef<Path>, runtime: SharedRuntime) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::new(
                    if e.kind() == std::io::ErrorKind::PermissionDenied {
                        StoreErrorKind::ReadOnly
                    } else {
                        StoreErrorKind::Unavailable
                    },
                    format!(
                        "sqlite: could not create the directory {}: {e}",
                        dir.display()
                    ),
                )
            })?;
        }
        let lock_path = {
            let mut name = path.clone().into_os_string();
            name.push(".lock");
            PathBuf::from(name)
        };
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                StoreError::new(
                    if e.kind() == std::io::ErrorKind::PermissionDenied {
                        StoreErrorKind::ReadOnly
                    } else {
                        StoreErrorKind::Unavailable
                    },
                    format!(
                        "sqlite: could not open the lock file {}: {e}",
                        lock_path.display()
                    ),
                )
            })?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::new(
                    StoreErrorKind::Locked,
                    format!(
                        "sqlite: {} is in use by another process (one process per database file; use PostgreSQL for several instances)",
                        path.display()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!("sqlite: could not lock {}: {e}", lock_path.display()),
                ));
            }
        }
        let mut conn = connect(&path)?;
        migrate(&mut conn)?;
        let failed = fail_running(&mut conn, false)?;
        if !failed.is_empty() {
            tracing::warn!(runs = ?failed, "sqlite store: runs left running by a previous process were marked failed");
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                runtime,
                idle: Mutex::new(vec![conn]),
                hub: StoreHub::new(),
                _lock: lock_file,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Run `f` with a connection on the blocking pool.
    fn with<T, F>(&self, f: F) -> BoxFuture<Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let job = blocking(&*self.inner.runtime, move || {
            let conn = lock(&inner.idle).pop();
            let mut conn = match conn {
                Some(conn) => conn,
                None => connect(&inner.path)?,
            };
            let result = f(&mut conn);
            let mut idle = lock(&inner.idle);
            if idle.len() < MAX_IDLE_CONNECTIONS {
                idle.push(conn);
            }
            result
        });
        Box::pin(async move { job.await? })
    }
}

fn append_exchange(
    tx: &rusqlite::Transaction<'_>,
    session_id: &str,
    messages: &[Message],
    max_bytes: Option<usize>,
) -> Result<(), StoreError> {
    let now = now_ms() as i64;
    tx.execute(
        "INSERT INTO sessions (session_id, next_exchange, updated_ms) VALUES (?1, 0, ?2) ON CONFLICT (session_id) DO NOTHING",
        params![session_id, now],
    )
    .map_err(store_error)?;
    let exchange: i64 = tx
        .query_row(
            "UPDATE sessions SET next_exchange = next_exchange + 1, updated_ms = ?2 WHERE session_id = ?1 RETURNING next_exchange - 1",
            params![session_id, now],
            |row| row.get(0),
        )
        .map_err(store_error)?;
    {
        let mut insert = tx
            .prepare_cached("INSERT INTO session_messages (session_id, exchange, pos, message, bytes) VALUES (?1, ?2, ?3, ?4, ?5)")
            .map_err(store_error)?;
        for (pos, message) in messages.iter().enumerate() {
            insert
                .execute(params![
                    session_id,
                    exchange,
                    pos as i64,
                    encode(message),
                    message_bytes(message) as i64
                ])
                .map_err(store_error)?;
        }
    }
    if let Some(max) = max_bytes {
        let sizes: Vec<(i64, i64)> = {
            let mut stmt = tx
                .prepare_cached("SELECT exchange, SUM(bytes) FROM session_messages WHERE session_id = ?1 GROUP BY exchange ORDER BY exchange")
                .map_err(store_error)?;
            stmt.query_map(params![session_id], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(store_error)?
                .collect::<Result<_, _>>()
                .map_err(store_error)?
        };
        let bytes: Vec<usize> = sizes.iter().map(|(_, b)| *b as usize).collect();
        let first = first_exchange_kept(&bytes, max);
        if first > 0 {
            let keep_from = sizes.get(first).map_or(exchange + 1, |(e, _)| *e);
            tx.execute(
                "DELETE FROM session_messages WHERE session_id = ?1 AND exchange < ?2",
                params![session_id, keep_from],
            )
            .map_err(store_error)?;
        }
    }
    Ok(())
}

fn conflict(message: String) -> StoreError {
    StoreError::new(StoreErrorKind::Conflict, message)
}

fn write_run(conn: &mut Connection, write: &RunWrite) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(store_error)?;
    let now = now_ms() as i64;
    if let Some(start) = &write.start {
        let inserted = tx
            .execute(
                "INSERT INTO runs (run_id, status, owner, session_id, next_seq, lease_until_ms, created_ms, updated_ms)
                 VALUES (?1, 'running', ?2, ?3, 0, ?4, ?5, ?5) ON CONFLICT (run_id) DO NOTHING",
                params![
                    write.run_id,
                    start.owner,
                    start.session_id,
                    now + start.lease.as_millis() as i64,
                    now
                ],
            )
            .map_err(store_error)?;
        if inserted == 0 {
            return Err(conflict(format!("run {} is already stored", write.run_id)));
        }
    }
    let row: Option<(String, i64)> = tx
        .query_row(
            "SELECT status, next_seq FROM runs WHERE run_id = ?1",
            params![write.run_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(store_error)?;
    let Some((status, next)) = row else {
        return Err(conflict(format!("run {} is not stored", write.run_id)));
    };
    if status != "running" {
        return Err(conflict(format!("run {} has already ended", write.run_id)));
    }
    let next = next as u64;
    {
        let mut insert = tx
            .prepare_cached("INSERT INTO run_events (run_id, seq, event) VALUES (?1, ?2, ?3)")
            .map_err(store_error)?;
        for (i, event) in write.events.iter().enumerate() {
            if event.seq != next + i as u64 {
                return Err(conflict(format!(
                    "run {}: event seq {} does not follow the stored {}",
                    write.run_id,
                    event.seq,
                    next + i as u64
                )));
            }
            insert
                .execute(params![write.run_id, event.seq as i64, encode(&**event)])
                .map_err(store_error)?;
        }
    }
    if let Some(append) = &write.session {
        append_exchange(&tx, &append.session_id, &append.messages, append.max_bytes)?;
    }
    let new_next = next + write.events.len() as u64;
    match write.terminal_status() {
        Some(status) => {
            let terminal = write.events.last().map(|e| encode(&**e));
            tx.execute(
                "UPDATE runs SET next_seq = ?2, status = ?3, terminal = ?4, updated_ms = ?5 WHERE run_id = ?1",
                params![write.run_id, new_next as i64, status.as_str(), terminal, now],
            )
            .map_err(store_error)?;
        }
        None => {
            tx.execute(
                "UPDATE runs SET next_seq = ?2, updated_ms = ?3 WHERE run_id = ?1",
                params![write.run_id, new_next as i64, now],
            )
            .map_err(store_error)?;
        }
    }
    tx.commit().map_err(store_error)
}

impl Store for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn load_session(&self, session_id: &str) -> BoxFuture<Result<Vec<Message>, StoreError>> {
        let id = session_id.to_string();
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT message FROM session_messages WHERE session_id = ?1 ORDER BY exchange, pos")
                .map_err(store_error)?;
            let texts: Vec<String> = stmt
                .query_map(params![id], |row| row.get(0))
                .map_err(store_error)?
                .collect::<Result<_, _>>()
                .map_err(store_error)?;
            texts.iter().map(|t| decode(t)).collect()
        })
    }

    fn append_session(
        &self,
        session_id: &str,
        messages: Vec<Message>,
        max_bytes: Option<usize>,
    ) -> BoxFuture<Result<(), StoreError>> {
        let id = session_id.to_string();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(store_error)?;
            append_exchange(&tx, &id, &messages, max_bytes)?;
            tx.commit().map_err(store_error)
        })
    }

    fn delete_session(&self, session_id: &str) -> BoxFuture<Result<bool, StoreError>> {
        let id = session_id.to_string();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(store_error)?;
            tx.execute(
                "DELETE FROM session_messages WHERE session_id = ?1",
                params![id],
            )
            .map_err(store_error)?;
            let n = tx
                .execute("DELETE FROM sessions WHERE session_id = ?1", params![id])
                .map_err(store_error)?;
            tx.commit().map_err(store_error)?;
            Ok(n > 0)
        })
    }

    fn write_run(&self, write: RunWrite) -> StoreWrite {
        let hub = self.inner.hub.clone();
        let job = self.with(move |conn| {
            write_run(conn, &write)?;
            hub.notify(&write.run_id);
            Ok(())
        });
        StoreWrite::Pending(job)
    }

    fn run(&self, run_id: &str) -> BoxFuture<Result<Option<RunRecord>, StoreError>> {
        let id = run_id.to_string();
        self.with(move |conn| {
            let row = conn
                .query_row(
                    "SELECT status, owner, session_id, next_seq, terminal, cancel_requested, lease_until_ms, created_ms FROM runs WHERE run_id = ?1",
                    params![id],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, Option<String>>(2)?,
                            row.get::<_, i64>(3)?,
                            row.get::<_, Option<String>>(4)?,
                            row.get::<_, bool>(5)?,
                            row.get::<_, i64>(6)?,
                            row.get::<_, i64>(7)?,
                        ))
                    },
                )
                .optional()
                .map_err(store_error)?;
            let Some((status, owner, session_id, next, terminal, cancel, lease, created)) = row else {
                return Ok(None);
            };
            Ok(Some(RunRecord {
                run_id: id,
                status: RunStatus::parse(&status).ok_or_else(|| {
                    StoreError::new(StoreErrorKind::Schema, format!("sqlite: unknown run status {status:?}"))
                })?,
                owner,
                session_id,
                next_seq: next as u64,
                terminal: terminal.as_deref().map(decode::<Event>).transpose()?,
                cancel_requested: cancel,
                lease_until_ms: lease as u64,
                created_ms: created as u64,
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
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT event FROM run_events WHERE run_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3")
                .map_err(store_error)?;
            let texts: Vec<String> = stmt
                .query_map(
                    params![id, from.min(i64::MAX as u64) as i64, limit.min(i64::MAX as usize) as i64],
                    |row| row.get(0),
                )
                .map_err(store_error)?
                .collect::<Result<_, _>>()
                .map_err(store_error)?;
            texts.iter().map(|t| decode(t)).collect()
        })
    }

    fn renew_leases(
        &self,
        owner: &str,
        run_ids: Vec<String>,
        lease: Duration,
    ) -> BoxFuture<Result<Vec<String>, StoreError>> {
        let owner = owner.to_string();
        self.with(move |conn| {
            let until = (now_ms() + lease.as_millis() as u64) as i64;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(store_error)?;
            let mut cancel = Vec::new();
            {
                let mut stmt = tx
                    .prepare_cached("UPDATE runs SET lease_until_ms = ?3 WHERE run_id = ?1 AND owner = ?2 AND status = 'running' RETURNING cancel_requested")
                    .map_err(store_error)?;
                for id in run_ids {
                    let requested: Option<bool> = stmt
                        .query_row(params![id, owner, until], |row| row.get(0))
                        .optional()
                        .map_err(store_error)?;
                    if requested == Some(true) {
                        cancel.push(id);
                    }
                }
            }
            tx.commit().map_err(store_error)?;
            Ok(cancel)
        })
    }

    fn fail_expired(&self) -> BoxFuture<Result<Vec<String>, StoreError>> {
        let hub = self.inner.hub.clone();
        self.with(move |conn| {
            let failed = fail_running(conn, true)?;
            for id in &failed {
                hub.notify(id);
            }
            Ok(failed)
        })
    }

    fn request_cancel(&self, run_id: &str) -> BoxFuture<Result<bool, StoreError>> {
        let id = run_id.to_string();
        let hub = self.inner.hub.clone();
        self.with(move |conn| {
            let n = conn
                .execute(
                    "UPDATE runs SET cancel_requested = 1 WHERE run_id = ?1 AND status = 'running'",
                    params![id],
                )
                .map_err(store_error)?;
            if n > 0 {
                hub.deliver(&Signal::Cancel(id));
            }
            Ok(n > 0)
        })
    }

    fn signal(&self, signal: Signal) -> BoxFuture<Result<(), StoreError>> {
        // One process per file: signals stay in this process.
        self.inner.hub.deliver(&signal);
        Box::pin(std::future::ready(Ok(())))
    }

    fn on_signal(&self, handler: SignalHandler) {
        self.inner.hub.on_signal(handler);
    }

    fn watch(&self, run_id: &str) -> RunWatch {
        self.inner.hub.watch(run_id)
    }

    fn delete_runs_before(&self, before: SystemTime) -> BoxFuture<Result<u64, StoreError>> {
        let before = unix_ms(before) as i64;
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(store_error)?;
            tx.execute(
                "DELETE FROM run_events WHERE run_id IN (SELECT run_id FROM runs WHERE status <> 'running' AND created_ms < ?1)",
                params![before],
            )
            .map_err(store_error)?;
            let n = tx
                .execute(
                    "DELETE FROM runs WHERE status <> 'running' AND created_ms < ?1",
                    params![before],
                )
                .map_err(store_error)?;
            tx.commit().map_err(store_error)?;
            Ok(n as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_core::runtime::{TestRuntime, block_on};

    fn runtime() -> SharedRuntime {
        Arc::new(TestRuntime::new())
    }

    #[test]
    fn a_second_process_on_the_same_file_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let first = SqliteStore::open(&path, runtime()).unwrap();
        // A second open in this process stands for another process: the lock is per file
        // description.
        let second = SqliteStore::open(&path, runtime()).unwrap_err();
        assert_eq!(second.kind, StoreErrorKind::Locked, "{second}");
        drop(first);
        SqliteStore::open(&path, runtime()).expect("the lock is released with the store");
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.db");
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let err = SqliteStore::open(&path, runtime()).unwrap_err();
        assert_eq!(err.kind, StoreErrorKind::Corrupt, "{err}");
    }

    #[test]
    fn a_read_only_database_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.db");
        drop(SqliteStore::open(&path, runtime()).unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(&path, 0o444);
        mode(dir.path(), 0o555);
        let result = SqliteStore::open(&path, runtime());
        mode(dir.path(), 0o755);
        mode(&path, 0o644);
        if let Ok(store) = &result {
            // root ignores permission bits: the write must still work then.
            block_on(store.append_session("s", vec![Message::user("x")], None)).unwrap();
            return;
        }
        let err = result.unwrap_err();
        assert!(
            matches!(
                err.kind,
                StoreErrorKind::ReadOnly | StoreErrorKind::Unavailable
            ),
            "{err}"
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("PRAGMA user_version = 99").unwrap();
        }
        let err = SqliteStore::open(&path, runtime()).unwrap_err();
        assert_eq!(err.kind, StoreErrorKind::Schema, "{err}");
    }

    #[test]
    fn runs_left_running_are_failed_on_reopen() {
        use agent_core::event::EventKind;
        use agent_core::store::RunStart;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let store = SqliteStore::open(&path, runtime()).unwrap();
        let started = Event {
            seq: 0,
            kind: EventKind::RunStarted {
                run_id: "run_x".into(),
                input: "hi".into(),
            },
        };
        store
            .write_run(
                RunWrite::new("run_x", vec![Arc::new(started)]).starting(RunStart::new("a", None)),
            )
            .wait_ready()
            .unwrap();
        drop(store);
        let store = SqliteStore::open(&path, runtime()).unwrap();
        let run = block_on(store.run("run_x")).unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Failed);
        assert_eq!(run.next_seq, 2);
        let events = block_on(store.read_events("run_x", 0, 10)).unwrap();
        assert!(events[1].is_terminal());
    }
}
