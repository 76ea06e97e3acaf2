//! [`Signal`] and [`TaskCount`]: the two synchronisation pieces of a server's shutdown,
//! runtime-agnostic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use event_listener::Event;

/// A one-way flag that tasks can wait for: set once, seen by every waiter.
#[derive(Debug, Clone, Default)]
pub(crate) struct Signal {
    inner: Arc<SignalInner>,
}

#[derive(Debug, Default)]
struct SignalInner {
    set: AtomicBool,
    event: Event,
}

impl Signal {
    /// Set the flag and wake every waiter.
    pub(crate) fn fire(&self) {
        self.inner.set.store(true, Ordering::SeqCst);
        self.inner.event.notify(usize::MAX);
    }

    pub(crate) fn is_fired(&self) -> bool {
        self.inner.set.load(Ordering::SeqCst)
    }

    /// Resolves once [`fire`](Self::fire) was called.
    pub(crate) async fn fired(&self) {
        loop {
            if self.is_fired() {
                return;
            }
            let listener = self.inner.event.listen();
            if self.is_fired() {
                return;
            }
            listener.await;
        }
    }
}

/// Counts live tasks; [`zero`](Self::zero) resolves when none is left.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskCount {
    inner: Arc<CountInner>,
}

#[derive(Debug, Default)]
struct CountInner {
    live: AtomicUsize,
    event: Event,
}

/// Held by a live task; dropping it counts the task out.
#[derive(Debug)]
pub(crate) struct TaskToken {
    inner: Arc<CountInner>,
}

impl TaskCount {
    pub(crate) fn enter(&self) -> TaskToken {
        self.inner.live.fetch_add(1, Ordering::SeqCst);
        TaskToken {
            inner: self.inner.clone(),
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.inner.live.load(Ordering::SeqCst)
    }

    pub(crate) async fn zero(&self) {
        loop {
            if self.live() == 0 {
                return;
            }
            let listener = self.inner.event.listen();
            if self.live() == 0 {
                return;
            }
            listener.await;
        }
    }
}

impl Drop for TaskToken {
    fn drop(&mut self) {
        if self.inner.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.event.notify(usize::MAX);
        }
    }
}
