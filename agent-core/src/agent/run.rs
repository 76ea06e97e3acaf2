//! [`RunStream`]: the pull-based stream of one run's events.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_core::stream::FusedStream;
use futures_util::task::AtomicWaker;

use super::approval::{ApprovalHandle, ApprovalState};
use super::drive::Finished;
use super::emit::Emitter;
use super::history::History;
use crate::error::ErrorKind;
use crate::event::{Event, EventKind, RunError};
use crate::runtime::panic_message;
use crate::runtime::{BoxFuture, SharedRuntime};

/// How many events a [`RunStream`] yields back to back before it returns `Pending` once (after
/// waking itself), so that other tasks on the same executor thread get to run.
pub const COOPERATIVE_BUDGET: u32 = 64;

/// The events of one run, produced as the stream is polled.
///
/// * Returned at once by [`Agent::run`](super::Agent::run): nothing happens before the first
///   poll, and no task is spawned: the run advances only while the stream is polled.
/// * At most one event is produced ahead of the consumer: the run waits for each event to be
///   taken before it continues (backpressure with a bound of one event).
/// * Every run ends with exactly one terminal event (`run_completed`, `run_failed`,
///   `run_cancelled`), then `None`. `seq` counts from 0 without gaps.
/// * Dropping the stream cancels the run at once: the model stream (and its HTTP request) and
///   the running tool futures are dropped; a blocking tool finishes on its thread and its
///   result is discarded. No terminal event is produced, as there is nobody to read it.
/// * [`RunStream::cancel_handle`] cancels a run from elsewhere; the stream then ends with
///   `run_cancelled`.
/// * [`RunStream::approvals`] approves or denies the tool calls that wait for approval
///   (`tool_approval_requested`). While calls wait, the stream is simply `Pending` (no
///   thread is held, nothing spins): a decision, a cancel, the run timeout or an approval
///   timeout wakes it.
/// * After [`COOPERATIVE_BUDGET`] consecutive ready events it returns `Pending` once (having
///   woken itself), so a model that is always ready cannot starve its executor.
/// * A panic inside a model or the loop is caught and ends the run with `run_failed`
///   ([`ErrorKind::Internal`]); it never unwinds into the caller.
#[must_use = "a run does nothing until its stream is polled (dropping it cancels the run)"]
pub struct RunStream {
    run_id: String,
    driver: Option<BoxFuture<Finished>>,
    emitter: Emitter,
    runtime: SharedRuntime,
    cancel: Arc<CancelState>,
    deadline: Option<BoxFuture<()>>,
    session: Option<Arc<Mutex<History>>>,
    next_seq: u64,
    ready_streak: u32,
    partial_text: String,
    /// `RunOptions::discard_text`: keep no `partial_text` either.
    discard_text: bool,
    approvals: Arc<ApprovalState>,
    done: bool,
}

impl fmt::Debug for RunStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunStream")
            .field("run_id", &self.run_id)
            .field("next_seq", &self.next_seq)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// What a [`RunStream`] holds besides its loop: the run timeout, the session to append to,
/// whether to keep the text, and the run's approvals.
pub(crate) struct StreamParts {
    pub(crate) deadline: Option<BoxFuture<()>>,
    pub(crate) session: Option<Arc<Mutex<History>>>,
    pub(crate) discard_text: bool,
    pub(crate) approvals: Arc<ApprovalState>,
}

impl RunStream {
    pub(crate) fn new(
        run_id: String,
        driver: BoxFuture<Finished>,
        emitter: Emitter,
        runtime: SharedRuntime,
        parts: StreamParts,
    ) -> Self {
        let StreamParts {
            deadline,
            session,
            discard_text,
            approvals,
        } = parts;
        RunStream {
            run_id,
            driver: Some(driver),
            emitter,
            runtime,
            cancel: Arc::new(CancelState::default()),
            deadline,
            session,
            next_seq: 0,
            ready_streak: 0,
            partial_text: String::new(),
            discard_text,
            approvals,
            done: false,
        }
    }

    /// The runtime the run's timers and tasks use.
    pub(crate) fn runtime(&self) -> &SharedRuntime {
        &self.runtime
    }

    /// A handle that approves or denies this run's tool calls waiting for approval, from any
    /// task or thread (see [`ApprovalHandle`]). Once the run has ended (or its stream was
    /// dropped), every decision is refused with
    /// [`ApprovalError::RunEnded`](super::ApprovalError::RunEnded).
    pub fn approvals(&self) -> ApprovalHandle {
        ApprovalHandle::new(self.approvals.clone())
    }

    /// The id of this run (also in its `run_started` event).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// A handle that cancels this run from another task or thread.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle {
            state: self.cancel.clone(),
        }
    }

    fn event(&mut self, kind: EventKind) -> Event {
        if let EventKind::TextDelta { text } = &kind
            && !self.discard_text
        {
            self.partial_text.push_str(text);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        Event { seq, kind }
    }

    /// Whether the run timeout has fired (registering the waker with its timer if not).
    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline
            .as_mut()
            .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready())
    }

    /// Return `Pending`, making sure a later `cancel()` wakes this task.
    fn pending(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.cancel.waker.register(cx.waker());
        // Cancelled between the first check and the registration: nobody would wake us.
        if self.cancel.cancelled.load(Ordering::Acquire) {
            return self.finish_cancelled();
        }
        Poll::Pending
    }

    fn finish_cancelled(&mut self) -> Poll<Option<Event>> {
        let partial_text = std::mem::take(&mut self.partial_text);
        self.finish(EventKind::RunCancelled { partial_text })
    }

    fn finish_timed_out(&mut self) -> Poll<Option<Event>> {
        let partial_text = std::mem::take(&mut self.partial_text);
        self.finish(EventKind::RunFailed {
            error: RunError {
                kind: ErrorKind::RunTimeout,
                message: "the run took longer than its run timeout".into(),
                status: None,
                retry_after_ms: None,
            },
            partial_text,
        })
    }

    /// End the run with `kind`, dropping the loop (and everything it owns) first.
    fn finish(&mut self, kind: EventKind) -> Poll<Option<Event>> {
        self.approvals.end();
        self.driver = None;
        self.deadline = None;
        self.done = true;
        Poll::Ready(Some(self.event(kind)))
    }
}

impl Stream for RunStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.cancel.cancelled.load(Ordering::Acquire) {
            return this.finish_cancelled();
        }
        // The deadline and the cancel waker are only looked at when the stream is about to
        // return `Pending`: a burst of ready events pays for neither (and a burst still
        // yields every COOPERATIVE_BUDGET events, where the deadline is checked).
        if this.ready_streak >= COOPERATIVE_BUDGET {
            this.ready_streak = 0;
            if this.deadline_passed(cx) {
                return this.finish_timed_out();
            }
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if this.runtime.poll_cooperate(cx).is_pending() {
            this.ready_streak = 0;
            return this.pending(cx);
        }

        let driver = this.driver.as_mut().expect("driver present until done");
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| driver.as_mut().poll(cx)));
        match polled {
            Ok(Poll::Pending) => match this.emitter.take() {
                Some(kind) => {
                    this.ready_streak += 1;
                    Poll::Ready(Some(this.event(kind)))
                }
                None => {
                    this.ready_streak = 0;
                    if this.deadline_passed(cx) {
                        return this.finish_timed_out();
                    }
                    this.pending(cx)
                }
            },
            Ok(Poll::Ready(finished)) => {
                if let (EventKind::RunCompleted { .. }, Some(session)) =
                    (&finished.terminal, &this.session)
                {
                    session
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .append(finished.new_messages);
                }
                this.finish(finished.terminal)
            }
            Err(payload) => {
                let message = format!("the run panicked: {}", panic_message(&*payload));
                tracing::error!(run_id = %this.run_id, %message, "agent run panicked");
                let partial_text = std::mem::take(&mut this.partial_text);
                this.finish(EventKind::RunFailed {
                    error: RunError {
                        kind: ErrorKind::Internal,
                        message,
                        status: None,
                        retry_after_ms: None,
                    },
                    partial_text,
                })
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done { (0, Some(0)) } else { (1, None) }
    }
}

impl Drop for RunStream {
    fn drop(&mut self) {
        self.approvals.end();
    }
}

impl FusedStream for RunStream {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

#[derive(Debug, Default)]
struct CancelState {
    cancelled: AtomicBool,
    waker: AtomicWaker,
}

/// Cancels a run from anywhere: the run's stream then ends with `run_cancelled`.
///
/// Cheap to clone; cancelling a finished run does nothing.
#[derive(Debug, Clone)]
pub struct CancelHandle {
    state: Arc<CancelState>,
}

impl CancelHandle {
    /// Ask the run to stop. Its stream yields `run_cancelled` on its next poll.
    pub fn cancel(&self) {
        self.state.cancelled.store(true, Ordering::Release);
        self.state.waker.wake();
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.state.cancelled.load(Ordering::Acquire)
    }
}
