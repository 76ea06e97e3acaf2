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
//! [`ServerConfig::max_run_log_bytes`]: super::ServerConfig::max_run_log_bytes
//! [`ServerConfig::run_detach_grace`]: super::ServerConfig::run_detach_grace
//! [`ServerConfig::run_retention`]: super::ServerConfig::run_retention
//! [`ServerConfig::max_retained_runs`]: super::ServerConfig::max_retained_runs

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_core::Stream;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::agent::{CancelHandle, RunStream};
use crate::event::{Event, EventKind};
use crate::runtime::SharedRuntime;

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

/// Every addressable run: live ones, and finished ones within their retention.
pub(crate) struct RunRegistry {
    limits: RunLimits,
    state: Mutex<RegistryState>,
}

#[derive(Default)]
struct RegistryState {
    runs: HashMap<String, Arc<RunLog>>,
    /// Finished runs in the order they ended, with when.
    finished: VecDeque<(Instant, String)>,
}

impl RunRegistry {
    pub(crate) fn new(limits: RunLimits) -> Arc<Self> {
        Arc::new(RunRegistry {
            limits,
            state: Mutex::new(RegistryState::default()),
        })
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
    ) -> RunEvents {
        let log = Arc::new(RunLog {
            id: run.run_id().to_string(),
            cancel: run.cancel_handle(),
            runtime,
            detach_grace,
            max_bytes: self.limits.max_log_bytes,
            registry: Arc::downgrade(self),
            waiters: Arc::new(Waiters::default()),
            state: Mutex::new(LogState {
                run: Some(run),
                permit: Some(permit),
                ..LogState::default()
            }),
        });
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

/// Where a run stands, as `GET /v1/runs/{id}` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    fn name(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
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
    runtime: SharedRuntime,
    detach_grace: Duration,
    max_bytes: usize,
    registry: Weak<RunRegistry>,
    waiters: Arc<Waiters>,
    state: Mutex<LogState>,
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
}

impl LogState {
    fn next_seq(&self) -> u64 {
        self.front + self.events.len() as u64
    }

    fn slowest(&self) -> Option<u64> {
        self.attached.iter().map(|(_, cursor)| *cursor).min()
    }

    /// Drop front events beyond the byte bound that no attached reader still needs.
    fn trim(&mut self, max_bytes: usize) {
        let keep_from = self.slowest().unwrap_or(u64::MAX);
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
        let next = state.next_seq();
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
        this.waiters.wake_all_except(u64::MAX);
        Ok(RunEvents {
            log: this.clone(),
            id,
            cursor: from,
        })
    }

    /// Whether the run has ended and every event from `from` on has been recorded before:
    /// a reader attached there would get nothing.
    pub(crate) fn exhausted_at(&self, from: u64) -> bool {
        let state = lock(&self.state);
        state.ended && from == state.next_seq()
    }

    /// Ask the run to stop (its stream then ends with `run_cancelled`).
    pub(crate) fn cancel(&self) {
        lock(&self.state).cancelled = true;
        self.cancel.cancel();
        // A run held back by a slow reader is polled again: cancellation is not held back.
        self.waiters.wake_all_except(u64::MAX);
    }

    /// The run's status document: `{id, object, status, next_seq, result}`, `result` being
    /// the terminal event once there is one.
    pub(crate) fn status_json(&self) -> Value {
        let state = lock(&self.state);
        json!({
            "id": self.id,
            "object": "run",
            "status": state.status().name(),
            "next_seq": state.next_seq(),
            "result": state.terminal.as_deref(),
        })
    }

    /// Drive the run until it ends, without reading its events (the keeper and a cancel
    /// request do this). `Ready` once the run has ended.
    pub(crate) fn poll_drive(&self, cx: &mut Context<'_>, waiter: u64) -> Poll<()> {
        let mut state = lock(&self.state);
        loop {
            if state.ended {
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

    /// Poll the run once for its next event and record it. `waiter`'s waker is registered
    /// whenever the answer is `Pending`.
    fn advance(&self, state: &mut LogState, cx: &mut Context<'_>, waiter: u64) -> Advanced {
        self.waiters.register(waiter, cx.waker());
        if state.held_back(self.max_bytes) {
            return Advanced::Pending;
        }
        let Some(run) = state.run.as_mut() else {
            state.ended = true;
            return Advanced::Yes;
        };
        let waker = Waker::from(self.waiters.clone());
        let polled = run.poll_next_unpin(&mut Context::from_waker(&waker));
        match polled {
            Poll::Pending => Advanced::Pending,
            Poll::Ready(Some(event)) => {
                let terminal = event.is_terminal();
                state.bytes += event_bytes(&event);
                let event = Arc::new(event);
                if terminal {
                    state.terminal = Some(event.clone());
                }
                state.events.push_back(event);
                if terminal {
                    self.end(state);
                }
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

    fn end(&self, state: &mut LogState) {
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
        if state.ended || state.keeper || !state.attached.is_empty() {
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
                    if !state.attached.is_empty() && !state.ended {
                        // A reader is back: it drives the run from here.
                        state.keeper = false;
                        return Poll::Ready(());
                    }
                }
                if let Some(timer) = grace.as_mut()
                    && timer.as_mut().poll(cx).is_ready()
                {
                    grace = None;
                    tracing::info!(run_id = %log.id, "no client came back within the detach grace; cancelling the run");
                    log.cancel();
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
#[derive(Default)]
struct Waiters {
    wakers: Mutex<Vec<(u64, Waker)>>,
}

impl Waiters {
    fn register(&self, id: u64, waker: &Waker) {
        let mut wakers = lock(&self.wakers);
        match wakers.iter_mut().find(|(i, _)| *i == id) {
            Some((_, known)) => {
                if !known.will_wake(waker) {
                    known.clone_from(waker);
                }
            }
            None => wakers.push((id, waker.clone())),
        }
    }

    fn remove(&self, id: u64) {
        lock(&self.wakers).retain(|(i, _)| *i != id);
    }

    fn wake_all_except(&self, id: u64) {
        let woken: Vec<Waker> = {
            let mut wakers = lock(&self.wakers);
            if wakers.iter().all(|(i, _)| *i == id) {
                return;
            }
            let (keep, wake): (Vec<_>, Vec<_>) = wakers.drain(..).partition(|(i, _)| *i == id);
            *wakers = keep;
            wake.into_iter().map(|(_, w)| w).collect()
        };
        woken.into_iter().for_each(Waker::wake);
    }
}

impl Wake for Waiters {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all_except(u64::MAX);
    }
}

/// One attached reader of a run's events, from some `seq` on: the stream a connection
/// sends. Ends after the terminal event. Dropping it detaches (see the module docs).
pub(crate) struct RunEvents {
    log: Arc<RunLog>,
    id: u64,
    cursor: u64,
}

impl fmt::Debug for RunEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunEvents")
            .field("run_id", &self.log.id)
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl RunEvents {
    /// The run's id.
    pub(crate) fn run_id(&self) -> &str {
        &self.log.id
    }

    /// The log's byte bound ([`event_bytes`] per event): a body coalescing ready events
    /// takes fewer than that per chunk, so what it took is still held for a late reader.
    pub(crate) fn max_log_bytes(&self) -> usize {
        self.log.max_bytes
    }
}

impl Stream for RunEvents {
    type Item = Arc<Event>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Arc<Event>>> {
        let this = self.get_mut();
        let log = &*this.log;
        let mut state = lock(&log.state);
        loop {
            // Attached readers hold the front, so this only guards the arithmetic.
            let cursor = this.cursor.max(state.front);
            if let Some(event) = state.events.get((cursor - state.front) as usize).cloned() {
                this.cursor = cursor + 1;
                let full = state.bytes > log.max_bytes;
                if let Some(entry) = state.attached.iter_mut().find(|(i, _)| *i == this.id) {
                    entry.1 = this.cursor;
                }
                if full {
                    // This reader may have been the one holding the run back.
                    state.trim(log.max_bytes);
                    log.waiters.wake_all_except(this.id);
                }
                return Poll::Ready(Some(event));
            }
            if state.ended {
                return Poll::Ready(None);
            }
            match log.advance(&mut state, cx, this.id) {
                Advanced::Yes => continue,
                Advanced::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for RunEvents {
    fn drop(&mut self) {
        let log = &self.log;
        log.waiters.remove(self.id);
        let mut state = lock(&log.state);
        state.attached.retain(|(i, _)| *i != self.id);
        if state.attached.is_empty() {
            RunLog::detached(log, &mut state);
        } else {
            // Another reader may have been held back by this one.
            state.trim(log.max_bytes);
            drop(state);
            log.waiters.wake_all_except(u64::MAX);
        }
    }
}
