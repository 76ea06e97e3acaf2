//! The hand-off between the agent loop (an `async fn`) and the [`RunStream`](super::RunStream)
//! that polls it: one event at a time, in the same task.
//!
//! [`Emitter::emit`] puts an event in a one-slot mailbox and suspends the loop once; the run
//! stream finds the event after that poll and returns it. The loop resumes only when the
//! consumer asks for the next event, so at most one event is ever in flight inside the core.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use crate::event::EventKind;

/// The loop's side of the mailbox.
#[derive(Debug, Clone, Default)]
pub(crate) struct Emitter {
    slot: Arc<Mutex<Option<EventKind>>>,
}

impl Emitter {
    /// Hand `kind` to the consumer and suspend until the consumer polls again.
    pub(crate) async fn emit(&self, kind: EventKind) {
        let previous = lock(&self.slot).replace(kind);
        debug_assert!(
            previous.is_none(),
            "an event was emitted before the last one was taken"
        );
        SuspendOnce { suspended: false }.await
    }

    /// The stream's side: take the event the loop emitted during the last poll, if any.
    pub(crate) fn take(&self) -> Option<EventKind> {
        lock(&self.slot).take()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Pending exactly once, without arranging a wake-up: the run stream returns the emitted event
/// and is polled again by its consumer, which resumes the loop.
struct SuspendOnce {
    suspended: bool,
}

impl Future for SuspendOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.suspended {
            Poll::Ready(())
        } else {
            self.suspended = true;
            Poll::Pending
        }
    }
}
