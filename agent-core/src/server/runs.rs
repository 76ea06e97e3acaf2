//! Addressable, resumable runs: every run the server starts is kept in a [`RunLog`] that
//! records its events, so that a client can read them again from any point
//! (`GET /v1/runs/{id}/events` with `Last-Event-ID`), ask for the run's status
//! (`GET /v1/runs/{id}`) and cancel it (`POST /v1/runs/{id}/cancel`) from another connection.
//!
//! # How a run advances
//!
//! No task is spawned to drive a run while a client reads it: the readers themselves
//! ([`RunEvents`], one per connection) poll the run's [`RunStream`] under the log's lock,
//! append each event to the log and take it from there, so the first connection's stream
//! costs what it did before the log existed (one poll, one lock). Other readers are woken
//! through one shared waker that wakes every waiting reader.
//!
//! * **Backpressure by the slowest reader.** The log holds at most
//!   [`ServerConfig::max_run_log_bytes`] of events. Events every attached reader has taken
//!   are dropped from its front beyond that; while the slowest attached reader still needs
//!   the front event, the run is not polled (it waits, as a run with one slow client
//!   always did).
//! * **Detaching.** When the last attached reader leaves before the run ended, a keeper
//!   task drives the run on, so a client that reconnects finds everything it missed; once
//!   the log is full, the run waits for a reader (nothing a returning client needs is
//!   dropped, and a client that is gone for good costs at most one log of output). If
//!   nobody attaches within the run's detach grace ([`ServerConfig::run_detach_grace`] for
//!   `/v1/runs`, zero for the protocols without resumption), the keeper cancels the run and
//!   drives it to its `run_cancelled`.
//! * **Retention.** A finished run stays addressable for
//!   [`ServerConfig::run_retention`], and at most [`ServerConfig::max_retained_runs`]
//!   finished runs are kept (the oldest are forgotten first), so memory stays bounded by
//!   `(max_concurrent_runs + max_retained_runs) × max_run_log_bytes`.
//!
//! # With a store
//!
//! With [`ServerConfig::store`] set, every event is written to the store **before** any
//! reader takes it: the log's `durable` mark is how far the store has confirmed, and readers
//! only read below it. While one write is in flight the run is polled on, so the next write
//! carries every event that became ready meanwhile (a burst of deltas is one transaction,
//! not one blocking job per event); the memory store's writes complete synchronously. The
//! first write creates the run's record (owner, lease), the terminal event's write sets its
//! status and appends a completed session turn in the same transaction. Events that are
//! stored may be dropped from the window even if no reader took them: a reader that needs
//! older events (or a run this instance does not hold: another instance's, or one from
//! before a restart) reads them from the store ([`StoredEvents`]). A write that fails stops
//! the run: its readers get a `run_failed` of kind `store` after the last stored event.
//!
//! [`ServerConfig::store`]: super::ServerConfig::store
//! [`ServerConfig::max_run_log_bytes`]: super::ServerConfig::max_run_log_bytes
//! [`ServerConfig::run_detach_grace`]: super::ServerConfig::run_detach_grace
//! [`ServerConfig::run_retention`]: super::ServerConfig::run_retention
//! [`ServerConfig::max_retained_runs`]: super::ServerConfig::max_retained_runs

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_core::Stream;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::agent::{ApprovalHandle, CancelHandle, RunStream, SessionCapture};
use crate::event::{Event, EventKind};
use crate::runtime::{BoxFuture, SharedRuntime};
use crate::store::{
    RunRecord, RunStart, RunWatch, RunWrite, SessionAppend, SharedStore, Signal, StoreWrite,
};

/// Most events one store write carries.
const MAX_BATCH: usize = 256;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The bounds of the run registry (from the server's config).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunLimits {
    pub(crate) max_log_bytes: usize,
    pub(crate) retention: Duration,
    pub(crate) max_retained: usize,
}

/// The store runs are written to, and this instance's name and lease in it.
#[derive(Debug, Clone)]
pub(crate) struct StoreContext {
    pub(crate) store: SharedStore,
    pub(crate) owner: String,
    pub(crate) lease: Duration,
}

/// A session turn: the session's id, the run's captured messages, the session's bound.
pub(crate) struct SessionTurn {
    pub(crate) session_id: String,
    pub(crate) capture: SessionCapture,
    pub(crate) max_bytes: usize,
}

/// Every addressable run: live ones, and finished ones within their retention.
pub(crate) struct RunRegistry {
    limits: RunLimits,
    store: Option<StoreContext>,
    state: Mutex<RegistryState>,
}

#[derive(Default)]
struct RegistryState {
    runs: HashMap<String, Arc<RunLog>>,
    /// Finished runs in the order they ended, with when.
    finished: VecDeque<(Instant, String)>,
}

impl RunRegistry {
    pub(crate) fn new(limits: RunLimits, store: Option<StoreContext>) -> Arc<Self> {
        Arc::new(RunRegistry {
            limits,
            store,
            state: Mutex::new(RegistryState::default()),
        })
    }

    /// The ids of the runs that are live here (for lease renewal).
    pub(crate) fn live_ids(&self) -> Vec<String> {
        // Lock order: a log's state before the registry (see `RunLog::end`), so the logs
        // are looked at after the registry's lock is released.
        let logs: Vec<Arc<RunLog>> = lock(&self.state).runs.values().cloned().collect();
        logs.into_iter()
            .filter(|log| !lock(&log.state).ended)
            .map(|log| log.id.clone())
            .collect()
    }

    /// Register `run` and return its first reader, attached from the start. `permit` is
    /// dropped when the run ends (or its log is forgotten); `detach_grace` is how long the
    /// run goes on without an attached reader before it is cancelled.
    pub(crate) fn start(
        self: &Arc<Self>,
        run: RunStream,
        permit: Box<dyn Send>,
        detach_grace: Duration,
        runtime: SharedRuntime,
        session: Option<SessionTurn>,
    ) -> RunEvents {
        let persist = self.store.as_ref().map(|ctx| Persist {
            store: ctx.store.clone(),
            start: Some(RunStart {
                owner: ctx.owner.clone(),
                session_id: session.as_ref().map(|s| s.session_id.clone()),
                lease: ctx.lease,
            }),
            session,
            append: None,
            write: None,
            write_end: 0,
            durable: 0,
            broken: false,
        });
        let log = RunLog::new(
            run,
            runtime,
            detach_grace,
            self.limits.max_log_bytes,
            Arc::downgrade(self),
            LogState {
                permit: Some(permit),
                persist,
                ..LogState::default()
            },
        );
        let reader = RunLog::attach(&log, 0).expect("a new run can be read from its start");
        let mut state = lock(&self.state);
        Self::forget_expired(&mut state, &self.limits);
        state.runs.insert(log.id.clone(), log);
        reader
    }

    /// The run with `id`, if it is live or still retained.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<RunLog>> {
        let mut state = lock(&self.state);
        Self::forget_expired(&mut state, &self.limits);
        state.runs.get(id).cloned()
    }

    /// How many runs are addressable (live and retained).
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).runs.len()
    }

    fn finished(&self, id: &str) {
        let mut state = lock(&self.state);
        state.finished.push_back((Instant::now(), id.to_string()));
        Self::forget_expired(&mut state, &self.limits);
    }

    fn forget_expired(state: &mut RegistryState, limits: &RunLimits) {
        let now = Instant::now();
        while let Some((ended, _)) = state.finished.front() {
            let expired = now.saturating_duration_since(*ended) >= limits.retention;
            if !expired && state.finished.len() <= limits.max_retained {
                break;
            }
            if let Some((_, id)) = state.finished.pop_front() {
                state.runs.remove(&id);
            }
        }
    }
}

/// The one reader of `run` outside any registry (a route of the user's own, see
/// [`sse_response`](super::sse_response)): dropping it cancels the run at once, as dropping
/// the run itself would.
pub(crate) fn standalone(run: RunStream) -> RunEvents {
    let runtime = run.runtime().clone();
    // One reader: what it took is dropped at once beyond `max_bytes`.
    let log = RunLog::new(
        run,
        runtime,
        Duration::ZERO,
        64 * 1024,
        Weak::new(),
        LogState::default(),
    );
    RunLog::attach(&log, 0).expect("a new run can be read from its start")
}

use crate::store::RunStatus;

/// The status document of a stored run (as [`RunLog::status_json`]).
pub(crate) fn record_json(record: &RunRecord) -> Value {
    json!({
        "id": record.run_id,
        "object": "run",
        "status": record.status.as_str(),
        "next_seq": record.next_seq,
        "result": record.terminal,
    })
}

/// Why a reader could not attach at the position asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttachError {
    /// The events from there on are no longer held (the log's byte bound dropped them);
    /// `first` is the oldest `seq` still held.
    Expired { first: u64 },
    /// The position is beyond the events the run has produced (`next` is the next `seq`).
    Ahead { next: u64 },
}

/// One run's recorded events and the run itself while it is live.
pub(crate) struct RunLog {
    id: String,
    cancel: CancelHandle,
    approvals: ApprovalHandle,
    runtime: SharedRuntime,
    detach_grace: Duration,
    max_bytes: usize,
    registry: Weak<RunRegistry>,
    waiters: Arc<Waiters>,
    /// Wakes every waiter: the waker the run is polled with (built once).
    wake_waiters: Waker,
    state: Mutex<LogState>,
}

impl RunLog {
    /// The log of `run`, which `state` (its other fields) starts with.
    fn new(
        run: RunStream,
        runtime: SharedRuntime,
        detach_grace: Duration,
        max_bytes: usize,
        registry: Weak<RunRegistry>,
        state: LogState,
    ) -> Arc<Self> {
        let waiters = Arc::new(Waiters::default());
        Arc::new(RunLog {
            id: run.run_id().to_string(),
            cancel: run.cancel_handle(),
            approvals: run.approvals(),
            runtime,
            detach_grace,
            max_bytes,
            registry,
            wake_waiters: Waker::from(waiters.clone()),
            waiters,
            state: Mutex::new(LogState {
                run: Some(run),
                ..state
            }),
        })
    }
}

impl fmt::Debug for RunLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunLog")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct LogState {
    /// The run, until its terminal event is recorded.
    run: Option<RunStream>,
    /// Released when the run ends.
    permit: Option<Box<dyn Send>>,
    /// Recorded events, `events[0]` having `seq == front`.
    events: VecDeque<Arc<Event>>,
    front: u64,
    bytes: usize,
    terminal: Option<Arc<Event>>,
    /// No event will be appended any more.
    ended: bool,
    cancelled: bool,
    /// Attached readers: id → the `seq` each needs next.
    attached: Vec<(u64, u64)>,
    /// A keeper task drives the run (no reader is attached).
    keeper: bool,
    next_waiter: u64,
    /// Writing to a store (see the module docs).
    persist: Option<Persist>,
    /// When a reader on another instance last said it reads this run.
    remote_read: Option<Instant>,
}

/// A log's writes to its store.
struct Persist {
    store: SharedStore,
    /// Sent with the first write.
    start: Option<RunStart>,
    session: Option<SessionTurn>,
    /// The session turn to append with the terminal event's write.
    append: Option<SessionAppend>,
    write: Option<StoreWrite>,
    /// The `seq` after the last event of the write in flight (or of the last one).
    write_end: u64,
    /// Events with `seq < durable` are stored.
    durable: u64,
    /// A write failed: no more are made.
    broken: bool,
}

impl LogState {
    fn next_seq(&self) -> u64 {
        self.front + self.events.len() as u64
    }

    /// Events before this `seq` may be read (the stored ones, with a store).
    fn visible(&self) -> u64 {
        match &self.persist {
            Some(persist) => persist.durable,
            None => self.next_seq(),
        }
    }

    /// The run has ended and every event of it may be read.
    fn settled(&self) -> bool {
        self.ended && self.visible() == self.next_seq()
    }

    /// Events from here on are kept in the window: attached readers still need them, and
    /// with a store, those not stored yet.
    fn keep_from(&self) -> u64 {
        let readers = self.slowest();
        match &self.persist {
            Some(persist) => readers.unwrap_or(u64::MAX).min(persist.durable),
            None => readers.unwrap_or(u64::MAX),
        }
    }

    fn slowest(&self) -> Option<u64> {
        self.attached.iter().map(|(_, cursor)| *cursor).min()
    }

    /// Drop front events beyond the byte bound that no attached reader still needs.
    fn trim(&mut self, max_bytes: usize) {
        let keep_from = self.keep_from();
        while self.bytes > max_bytes && self.front < keep_from {
            let Some(event) = self.events.pop_front() else {
                break;
            };
            self.bytes -= event_bytes(&event);
            self.front += 1;
        }
    }

    /// The log is full and its front is still needed: the run must wait for a reader. With
    /// nobody attached, everything is still needed (by the client expected back).
    fn held_back(&self, max_bytes: usize) -> bool {
        if self.persist.is_some() {
            // Stored events can go (a reader reads them from the store): only events not
            // stored yet, or needed by an attached reader, hold the run.
            return !self.cancelled && self.bytes >= max_bytes && self.keep_from() <= self.front;
        }
        !self.cancelled
            && self.bytes >= max_bytes
            && self.slowest().is_none_or(|slowest| slowest <= self.front)
    }

    fn status(&self) -> RunStatus {
        match self.terminal.as_deref().map(|e| &e.kind) {
            Some(EventKind::RunCompleted { .. }) => RunStatus::Completed,
            Some(EventKind::RunFailed { .. }) => RunStatus::Failed,
            Some(EventKind::RunCancelled { .. }) => RunStatus::Cancelled,
            // A run that ended without a terminal event broke its contract: report it failed.
            _ if self.ended => RunStatus::Failed,
            _ => RunStatus::Running,
        }
    }
}

/// What polling the run did.
enum Advanced {
    /// An event was appended (or the run ended): look again.
    Yes,
    /// The run has nothing now; the caller's waker is registered.
    Pending,
}

/// The bytes an event is counted for in the log's bound: its text plus a fixed overhead
/// for the rest of its frame (exact sizes would cost a serialization per event).
pub(crate) fn event_bytes(event: &Event) -> usize {
    const OVERHEAD: usize = 96;
    OVERHEAD
        + match &event.kind {
            EventKind::TextDelta { text } | EventKind::ReasoningDelta { text } => text.len(),
            EventKind::RunStarted { input, .. } => input.len(),
            EventKind::RunCompleted { text, .. } => text.len() + 160,
            EventKind::RunFailed {
                partial_text,
                error,
            } => partial_text.len() + error.message.len(),
            EventKind::RunCancelled { partial_text } => partial_text.len(),
            EventKind::ToolCallDelta {
                arguments_delta, ..
            } => arguments_delta.len() + 32,
            _ => 160,
        }
}

impl RunLog {
    /// The run's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// A reader attached at `from` (the `seq` it needs next: 0 for the whole run, or one
    /// past a `Last-Event-ID`). `Ok(None)` when the run has ended and nothing is left from
    /// there.
    pub(crate) fn attach(this: &Arc<Self>, from: u64) -> Result<RunEvents, AttachError> {
        let mut state = lock(&this.state);
        let next = state.visible();
        if from > next {
            return Err(AttachError::Ahead { next });
        }
        if from < state.front {
            return Err(AttachError::Expired { first: state.front });
        }
        let id = state.next_waiter;
        state.next_waiter += 1;
        state.attached.push((id, from));
        drop(state);
        // A keeper driving a detached run stops once someone attached: wake it.
        this.waiters.wake_all_except(NO_WAITER);
        Ok(RunEvents {
            reader: Reader::Local {
                log: this.clone(),
                id,
                cursor: from,
            },
        })
    }

    /// Whether this log writes to a store (so that a reader may read from there instead).
    pub(crate) fn store(&self) -> Option<SharedStore> {
        lock(&self.state).persist.as_ref().map(|p| p.store.clone())
    }

    /// A reader on another instance reads this run: the detach grace starts again.
    pub(crate) fn note_remote_reader(&self) {
        lock(&self.state).remote_read = Some(Instant::now());
    }

    /// Whether the run has ended and every event from `from` on has been recorded before:
    /// a reader attached there would get nothing.
    pub(crate) fn exhausted_at(&self, from: u64) -> bool {
        let state = lock(&self.state);
        state.settled() && from == state.next_seq()
    }

    /// Decides the run's tool calls waiting for approval (`POST /v1/runs/{id}/approvals`).
    pub(crate) fn approvals(&self) -> &ApprovalHandle {
        &self.approvals
    }

    /// Ask the run to stop (its stream then ends with `run_cancelled`).
    pub(crate) fn cancel(&self) {
        lock(&self.state).cancelled = true;
        self.cancel.cancel();
        // A run held back by a slow reader is polled again: cancellation is not held back.
        self.waiters.wake_all_except(NO_WAITER);
    }

    /// The run's status document: `{id, object, status, next_seq, result}`, `result` being
    /// the terminal event once there is one.
    pub(crate) fn status_json(&self) -> Value {
        let state = lock(&self.state);
        let settled = state.settled();
        let status = if settled {
            state.status()
        } else {
            RunStatus::Running
        };
        json!({
            "id": self.id,
            "object": "run",
            "status": status.as_str(),
            "next_seq": state.visible(),
            "result": if settled { state.terminal.as_deref() } else { None },
        })
    }

    /// Drive the run until it ends, without reading its events (the keeper and a cancel
    /// request do this). `Ready` once the run has ended.
    pub(crate) fn poll_drive(&self, cx: &mut Context<'_>, waiter: u64) -> Poll<()> {
        let mut state = lock(&self.state);
        loop {
            if state.settled() {
                return Poll::Ready(());
            }
            // Nothing is trimmed here: the events are kept for the reader expected back, and
            // a full log holds the run (see `held_back`).
            match self.advance(&mut state, cx, waiter) {
                Advanced::Yes => {}
                Advanced::Pending => return Poll::Pending,
            }
        }
    }

    /// A waiter id for [`poll_drive`](Self::poll_drive).
    pub(crate) fn waiter_id(&self) -> u64 {
        let mut state = lock(&self.state);
        let id = state.next_waiter;
        state.next_waiter += 1;
        id
    }

    /// Poll the run once for its next event and record it (with a store: every ready
    /// event, then write them). `waiter`'s waker is registered whenever the answer is
    /// `Pending`.
    fn advance(&self, state: &mut LogState, cx: &mut Context<'_>, waiter: u64) -> Advanced {
        self.waiters.register(waiter, cx.waker());
        if state.persist.is_some() {
            return self.advance_stored(state, waiter);
        }
        if state.held_back(self.max_bytes) {
            return Advanced::Pending;
        }
        let Some(run) = state.run.as_mut() else {
            state.ended = true;
            return Advanced::Yes;
        };
        match self.poll_run(run, cx, waiter) {
            Poll::Pending => Advanced::Pending,
            Poll::Ready(Some(event)) => {
                self.record(state, event);
                self.waiters.wake_all_except(waiter);
                Advanced::Yes
            }
            Poll::Ready(None) => {
                self.end(state);
                self.waiters.wake_all_except(waiter);
                Advanced::Yes
            }
        }
    }

    /// Poll the run with the waker that wakes every waiter, except that a wake during this
    /// poll, for `waiter` itself, is taken here rather than through the executor (the common
    /// case: the upstream's body channel wakes the very task that is polling it, once per
    /// upstream chunk, which would cost a reschedule and a cross-thread notification each).
    /// A run that answered `Pending` after waking is polled once more at once; a second
    /// wake goes to the executor, so a cooperative yield still yields.
    fn poll_run(
        &self,
        run: &mut RunStream,
        cx: &mut Context<'_>,
        waiter: u64,
    ) -> Poll<Option<Event>> {
        for _ in 0..2 {
            self.waiters.begin_poll(waiter);
            let polled = run.poll_next_unpin(&mut Context::from_waker(&self.wake_waiters));
            let woken = self.waiters.end_poll();
            // After `Ready` the reader polls again anyway: no wake is owed.
            if polled.is_ready() || !woken {
                return polled;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Append `event` to the window (ending the run on its terminal event).
    fn record(&self, state: &mut LogState, event: Event) {
        let terminal = event.is_terminal();
        state.bytes += event_bytes(&event);
        let event = Arc::new(event);
        if terminal {
            state.terminal = Some(event.clone());
            if let (EventKind::RunCompleted { .. }, Some(persist)) =
                (&event.kind, state.persist.as_mut())
                && let Some(turn) = persist.session.take()
            {
                persist.append = Some(SessionAppend {
                    session_id: turn.session_id,
                    messages: turn.capture.take(),
                    max_bytes: Some(turn.max_bytes),
                });
            }
        }
        state.events.push_back(event);
        if terminal {
            self.end(state);
        }
    }

    /// [`advance`](Self::advance) with a store: poll the write in flight, take every ready
    /// event of the run, and start the next write.
    fn advance_stored(&self, state: &mut LogState, waiter: u64) -> Advanced {
        let mut cx = Context::from_waker(&self.wake_waiters);
        let mut progressed = self.poll_writes(state, &mut cx);
        state.trim(self.max_bytes);
        let mut taken = 0;
        while !state.ended && taken < MAX_BATCH && !state.held_back(self.max_bytes) {
            let Some(run) = state.run.as_mut() else {
                self.end(state);
                progressed = true;
                break;
            };
            match run.poll_next_unpin(&mut cx) {
                Poll::Pending => break,
                Poll::Ready(Some(event)) => {
                    self.record(state, event);
                    taken += 1;
                }
                Poll::Ready(None) => {
                    self.end(state);
                    progressed = true;
                }
            }
        }
        if taken > 0 {
            progressed = true;
            progressed |= self.poll_writes(state, &mut cx);
        }
        if progressed {
            self.waiters.wake_all_except(waiter);
            Advanced::Yes
        } else {
            Advanced::Pending
        }
    }

    /// Finish the write in flight and start the next while events wait; `true` when
    /// events became readable.
    fn poll_writes(&self, state: &mut LogState, cx: &mut Context<'_>) -> bool {
        let next_seq = state.next_seq();
        let mut readable = false;
        loop {
            let Some(persist) = state.persist.as_mut() else {
                return readable;
            };
            if persist.broken {
                return readable;
            }
            if let Some(write) = persist.write.as_mut() {
                match write.poll(cx) {
                    Poll::Pending => return readable,
                    Poll::Ready(Ok(())) => {
                        persist.write = None;
                        persist.durable = persist.write_end;
                        readable = true;
                    }
                    Poll::Ready(Err(err)) => {
                        tracing::error!(run_id = %self.id, error = %err, "the store could not write the run's events; stopping the run");
                        self.store_failed(state, err.to_run_error());
                        return true;
                    }
                }
            }
            let Some(persist) = state.persist.as_mut() else {
                return readable;
            };
            if persist.write_end >= next_seq {
                return readable;
            }
            let from = persist.write_end;
            let events: Vec<Arc<Event>> = state
                .events
                .iter()
                .skip((from - state.front) as usize)
                .cloned()
                .collect();
            let mut write = RunWrite::new(self.id.clone(), events);
            write.start = persist.start.take();
            if state.ended {
                write.session = persist.append.take();
            }
            persist.write_end = next_seq;
            persist.write = Some(persist.store.write_run(write));
        }
    }

    /// The store failed: stop the run and end it after the last stored event with a
    /// `run_failed` (kind `store`), which only the readers of this instance see.
    fn store_failed(&self, state: &mut LogState, error: crate::event::RunError) {
        let Some(persist) = state.persist.as_mut() else {
            return;
        };
        persist.broken = true;
        persist.write = None;
        let durable = persist.durable;
        while state.next_seq() > durable.max(state.front) {
            if let Some(event) = state.events.pop_back() {
                state.bytes -= event_bytes(&event);
            }
        }
        state.run = None;
        let event = Arc::new(Event {
            seq: state.next_seq(),
            kind: EventKind::RunFailed {
                error,
                partial_text: String::new(),
            },
        });
        state.bytes += event_bytes(&event);
        state.terminal = Some(event.clone());
        state.events.push_back(event);
        if let Some(persist) = state.persist.as_mut() {
            persist.durable = state.front + state.events.len() as u64;
            persist.write_end = persist.durable;
        }
        if !state.ended {
            self.end(state);
        }
    }

    fn end(&self, state: &mut LogState) {
        if state.ended {
            return;
        }
        state.ended = true;
        // The run and its concurrent-run permit go now, not when the last reader leaves.
        // (Lock order: a log's state, then the registry; nothing takes them the other way.)
        state.run = None;
        state.permit = None;
        if let Some(registry) = self.registry.upgrade() {
            registry.finished(&self.id);
        }
    }

    /// The last attached reader left a live run: keep it going for the detach grace, then
    /// cancel it if nobody came back.
    fn detached(this: &Arc<Self>, state: &mut LogState) {
        if state.settled() || state.keeper || !state.attached.is_empty() {
            return;
        }
        state.keeper = true;
        let log = this.clone();
        let waiter = state.next_waiter;
        state.next_waiter += 1;
        let mut grace =
            (!this.detach_grace.is_zero()).then(|| this.runtime.sleep(this.detach_grace));
        if grace.is_none() {
            state.cancelled = true;
            this.cancel.cancel();
        }
        this.runtime.spawn(Box::pin(async move {
            let keeper = KeeperGuard(&log, waiter);
            std::future::poll_fn(|cx| {
                {
                    let mut state = lock(&log.state);
                    if !state.attached.is_empty() && !state.settled() {
                        // A reader is back: it drives the run from here.
                        state.keeper = false;
                        return Poll::Ready(());
                    }
                }
                if let Some(timer) = grace.as_mut()
                    && timer.as_mut().poll(cx).is_ready()
                {
                    let remote = lock(&log.state).remote_read.map(|at| at.elapsed());
                    match remote {
                        // A client reads through another instance: wait for it again.
                        Some(ago) if ago < log.detach_grace => {
                            let mut timer = log.runtime.sleep(log.detach_grace - ago);
                            let _ = timer.as_mut().poll(cx);
                            grace = Some(timer);
                        }
                        _ => {
                            grace = None;
                            tracing::info!(run_id = %log.id, "no client came back within the detach grace; cancelling the run");
                            log.cancel();
                        }
                    }
                }
                log.poll_drive(cx, waiter)
            })
            .await;
            drop(keeper);
        }));
    }
}

/// Clears a keeper's flag if its task is dropped (or finishes) so that a later detach can
/// start another.
struct KeeperGuard<'a>(&'a Arc<RunLog>, u64);

impl Drop for KeeperGuard<'_> {
    fn drop(&mut self) {
        let KeeperGuard(log, waiter) = *self;
        log.waiters.remove(waiter);
        lock(&log.state).keeper = false;
    }
}

/// The wakers of everyone waiting on a run's log; the run itself is polled with a waker
/// that wakes them all.
struct Waiters {
    inner: Mutex<WaitersInner>,
    /// Who polls the run now, as `(waiter + 1) << 1` (0: nobody), its low bit set when the
    /// run's waker fired during that poll. One word, so that a wake racing with the end of
    /// a poll is either seen by the poller or wakes it.
    polling: AtomicU64,
    /// The id of the only registered waiter, [`NO_WAITER`] when there are none or several
    /// (kept under `inner`'s lock): waking everyone but the sole reader takes no lock.
    sole: AtomicU64,
}

/// No waiter id: ids are counted up from 0 and never reach it.
const NO_WAITER: u64 = u64::MAX;

impl Default for Waiters {
    fn default() -> Self {
        Waiters {
            inner: Mutex::default(),
            polling: AtomicU64::new(0),
            sole: AtomicU64::new(NO_WAITER),
        }
    }
}

#[derive(Default)]
struct WaitersInner {
    wakers: Vec<(u64, Waker)>,
    /// An empty vector kept for the next wake, so that waking allocates nothing.
    spare: Vec<(u64, Waker)>,
}

impl Waiters {
    fn register(&self, id: u64, waker: &Waker) {
        let mut inner = lock(&self.inner);
        match inner.wakers.iter_mut().find(|(i, _)| *i == id) {
            Some((_, known)) => {
                if !known.will_wake(waker) {
                    known.clone_from(waker);
                }
            }
            None => {
                inner.wakers.push((id, waker.clone()));
                self.note_sole(&inner);
            }
        }
    }

    fn remove(&self, id: u64) {
        let mut inner = lock(&self.inner);
        inner.wakers.retain(|(i, _)| *i != id);
        self.note_sole(&inner);
    }

    /// Update `sole` after `inner.wakers` changed (under its lock).
    fn note_sole(&self, inner: &WaitersInner) {
        let sole = match inner.wakers.as_slice() {
            [(id, _)] => *id,
            _ => NO_WAITER,
        };
        self.sole.store(sole, Ordering::Release);
    }

    /// `waiter` polls the run (under the log's lock: one poller at a time).
    fn begin_poll(&self, waiter: u64) {
        self.polling
            .store(waiter.wrapping_add(1) << 1, Ordering::Release);
    }

    /// The poll ended; `true` when the run's waker fired during it.
    fn end_poll(&self) -> bool {
        self.polling.swap(0, Ordering::AcqRel) & 1 != 0
    }

    /// Wake (and unregister) every waiter but `id`, outside the lock.
    fn wake_all_except(&self, id: u64) {
        if id != NO_WAITER && self.sole.load(Ordering::Acquire) == id {
            return;
        }
        let mut woken = {
            let mut inner = lock(&self.inner);
            if inner.wakers.iter().all(|(i, _)| *i == id) {
                return;
            }
            let mut woken = std::mem::take(&mut inner.spare);
            let mut k = 0;
            while k < inner.wakers.len() {
                if inner.wakers[k].0 == id {
                    k += 1;
                } else {
                    woken.push(inner.wakers.swap_remove(k));
                }
            }
            self.note_sole(&inner);
            woken
        };
        woken.drain(..).for_each(|(_, waker)| waker.wake());
        let mut inner = lock(&self.inner);
        if inner.spare.capacity() < woken.capacity() {
            inner.spare = woken;
        }
    }
}

impl Wake for Waiters {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // While a waiter polls the run, it sees this wake when its poll ends (see
        // `RunLog::poll_run`); everyone else is woken now.
        let poller = self.polling.fetch_or(1, Ordering::AcqRel) >> 1;
        match poller {
            0 => self.wake_all_except(NO_WAITER),
            poller => self.wake_all_except(poller - 1),
        }
    }
}

/// One reader of a run's events, from some `seq` on: the stream a connection sends. Ends
/// after the terminal event. Dropping an attached reader detaches (see the module docs).
pub(crate) struct RunEvents {
    reader: Reader,
}

enum Reader {
    /// Attached to a log of this instance.
    Local {
        log: Arc<RunLog>,
        id: u64,
        cursor: u64,
    },
    /// Reading from the store.
    Stored(Box<StoredEvents>),
}

impl fmt::Debug for RunEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reader {
            Reader::Local { log, cursor, .. } => f
                .debug_struct("RunEvents")
                .field("run_id", &log.id)
                .field("cursor", cursor)
                .finish(),
            Reader::Stored(stored) => f
                .debug_struct("RunEvents")
                .field("run_id", &stored.run_id)
                .field("cursor", &stored.cursor)
                .field("from_store", &true)
                .finish(),
        }
    }
}

impl RunEvents {
    /// The run's id.
    pub(crate) fn run_id(&self) -> &str {
        match &self.reader {
            Reader::Local { log, .. } => &log.id,
            Reader::Stored(stored) => &stored.run_id,
        }
    }

    /// A reader of `run_id`'s events in `store` from `seq == from` on.
    pub(crate) fn from_store(
        store: SharedStore,
        run_id: &str,
        from: u64,
        runtime: SharedRuntime,
    ) -> Self {
        RunEvents {
            reader: Reader::Stored(Box::new(StoredEvents {
                watch: store.watch(run_id),
                store,
                run_id: run_id.to_string(),
                cursor: from,
                buffer: VecDeque::new(),
                read: None,
                dirty: true,
                done: false,
                runtime,
                reading: None,
            })),
        }
    }

    /// The log's byte bound ([`event_bytes`] per event): a body coalescing ready events
    /// takes fewer than that per chunk, so what it took is still held for a late reader.
    /// A run read from the store keeps every event there: no bound.
    pub(crate) fn max_log_bytes(&self) -> usize {
        match &self.reader {
            Reader::Local { log, .. } => log.max_bytes,
            Reader::Stored(_) => usize::MAX,
        }
    }
}

impl Stream for RunEvents {
    type Item = Arc<Event>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Arc<Event>>> {
        let this = self.get_mut();
        let (log, id, cursor) = match &mut this.reader {
            Reader::Local { log, id, cursor } => (&**log, *id, cursor),
            Reader::Stored(stored) => return stored.poll_next(cx),
        };
        let mut state = lock(&log.state);
        loop {
            // Attached readers hold the front, so this only guards the arithmetic.
            let at = (*cursor).max(state.front);
            if at < state.visible()
                && let Some(event) = state.events.get((at - state.front) as usize).cloned()
            {
                *cursor = at + 1;
                let full = state.bytes > log.max_bytes;
                if let Some(entry) = state.attached.iter_mut().find(|(i, _)| *i == id) {
                    entry.1 = *cursor;
                }
                if full {
                    // This reader may have been the one holding the run back.
                    state.trim(log.max_bytes);
                    log.waiters.wake_all_except(id);
                }
                return Poll::Ready(Some(event));
            }
            if state.settled() {
                return Poll::Ready(None);
            }
            match log.advance(&mut state, cx, id) {
                Advanced::Yes => continue,
                Advanced::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for RunEvents {
    fn drop(&mut self) {
        let Reader::Local { log, id, .. } = &self.reader else {
            return;
        };
        log.waiters.remove(*id);
        let mut state = lock(&log.state);
        state.attached.retain(|(i, _)| i != id);
        if state.attached.is_empty() {
            RunLog::detached(log, &mut state);
        } else {
            // Another reader may have been held back by this one.
            state.trim(log.max_bytes);
            drop(state);
            log.waiters.wake_all_except(NO_WAITER);
        }
    }
}

/// How often a reader of a stored run tells the run's owner that it reads
/// ([`Signal::Reading`]), so that the owner does not cancel the run for want of readers.
const READING_INTERVAL: Duration = Duration::from_secs(2);

/// Events read from the store: pages of stored events, then, once caught up, a wait on the
/// store's watch of the run (woken by a write here or, through the database, elsewhere)
/// before reading again. Ends after the terminal event.
pub(crate) struct StoredEvents {
    store: SharedStore,
    run_id: String,
    cursor: u64,
    buffer: VecDeque<Event>,
    read: Option<BoxFuture<Result<Vec<Event>, crate::store::StoreError>>>,
    watch: RunWatch,
    /// The run may have changed since the last read.
    dirty: bool,
    done: bool,
    runtime: SharedRuntime,
    reading: Option<BoxFuture<()>>,
}

impl StoredEvents {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<Event>>> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.cursor = event.seq + 1;
                if event.is_terminal() {
                    self.done = true;
                    self.buffer.clear();
                }
                return Poll::Ready(Some(Arc::new(event)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            self.poll_reading(cx);
            if let Some(read) = self.read.as_mut() {
                match read.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(events)) => {
                        self.read = None;
                        if events.len() >= READ_PAGE {
                            // More may be there already.
                            self.dirty = true;
                        }
                        // Only events that continue where this reader is.
                        let mut next = self.cursor;
                        for event in events {
                            if event.seq == next {
                                next += 1;
                                self.buffer.push_back(event);
                            }
                        }
                        continue;
                    }
                    Poll::Ready(Err(err)) => {
                        tracing::warn!(run_id = %self.run_id, error = %err, "reading a run's events from the store failed; ending the stream (the client may resume)");
                        self.done = true;
                        return Poll::Ready(None);
                    }
                }
            }
            if self.dirty {
                self.dirty = false;
                self.read = Some(self.store.read_events(&self.run_id, self.cursor, READ_PAGE));
                continue;
            }
            match self.watch.poll_changed(cx) {
                Poll::Ready(()) => self.dirty = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Tell the run's owner, now and every [`READING_INTERVAL`], that a client reads it.
    fn poll_reading(&mut self, cx: &mut Context<'_>) {
        let due = match self.reading.as_mut() {
            None => true,
            Some(timer) => timer.as_mut().poll(cx).is_ready(),
        };
        if !due {
            return;
        }
        let signal = self.store.signal(Signal::Reading(self.run_id.clone()));
        self.runtime.spawn(Box::pin(async move {
            let _ = signal.await;
        }));
        let mut timer = self.runtime.sleep(READING_INTERVAL);
        let _ = timer.as_mut().poll(cx);
        self.reading = Some(timer);
    }
}

/// Events read from the store per query.
const READ_PAGE: usize = 512;

#[cfg(test)]
mod waiters_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use super::Waiters;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn woken(count: &Arc<Count>) -> usize {
        count.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_wake_during_a_poll_is_left_to_the_poller_and_wakes_everyone_else() {
        let waiters = Arc::new(Waiters::default());
        let (poller, other) = (Arc::new(Count::default()), Arc::new(Count::default()));
        waiters.register(3, &Waker::from(poller.clone()));
        waiters.register(5, &Waker::from(other.clone()));
        let run_waker = Waker::from(waiters.clone());

        waiters.begin_poll(3);
        run_waker.wake_by_ref();
        assert_eq!(
            woken(&poller),
            0,
            "the poller is not woken during its own poll"
        );
        assert_eq!(woken(&other), 1, "another reader is woken at once");
        assert!(
            waiters.end_poll(),
            "the poller learns of the wake when its poll ends"
        );

        // No poll in progress: the wake goes to the poller's waker, which stayed registered.
        waiters.begin_poll(3);
        assert!(!waiters.end_poll(), "a poll without a wake reports none");
        run_waker.wake_by_ref();
        assert_eq!(woken(&poller), 1, "outside a poll the poller is woken");
    }

    #[test]
    fn a_sole_waiter_is_skipped_without_the_lock_and_woken_by_everyone_else() {
        let waiters = Waiters::default();
        let sole = Arc::new(Count::default());
        waiters.register(7, &Waker::from(sole.clone()));
        waiters.wake_all_except(7);
        assert_eq!(
            woken(&sole),
            0,
            "the sole waiter is not woken by its own wake"
        );
        waiters.wake_all_except(super::NO_WAITER);
        assert_eq!(woken(&sole), 1, "a wake of everyone wakes the sole waiter");
        // It was unregistered by that wake: nobody is left to wake.
        waiters.wake_all_except(super::NO_WAITER);
        assert_eq!(woken(&sole), 1, "a woken waiter is unregistered");
        let second = Arc::new(Count::default());
        waiters.register(7, &Waker::from(sole.clone()));
        waiters.register(8, &Waker::from(second.clone()));
        waiters.wake_all_except(7);
        assert_eq!(
            (woken(&sole), woken(&second)),
            (1, 1),
            "with two, the other is woken"
        );
        waiters.remove(7);
        waiters.register(8, &Waker::from(second.clone()));
        waiters.wake_all_except(7);
        assert_eq!(
            woken(&second),
            2,
            "after a removal, the remaining waiter is woken"
        );
    }

    #[test]
    fn waking_everyone_reuses_its_vector() {
        let waiters = Waiters::default();
        let counts: Vec<Arc<Count>> = (0..4).map(|_| Arc::new(Count::default())).collect();
        for round in 1..=3 {
            for (id, count) in counts.iter().enumerate() {
                waiters.register(id as u64, &Waker::from(count.clone()));
            }
            waiters.wake_all_except(0);
            assert_eq!(woken(&counts[0]), 0, "the excepted waiter is not woken");
            for count in &counts[1..] {
                assert_eq!(
                    woken(count),
                    round,
                    "every other waiter is woken once a round"
                );
            }
            let inner = super::lock(&waiters.inner);
            assert_eq!(
                inner.wakers.len(),
                1,
                "only the excepted waiter stays registered"
            );
            assert!(
                inner.spare.capacity() >= 3,
                "the woken vector is kept for next time"
            );
        }
    }
}
