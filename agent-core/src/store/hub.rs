//! [`StoreHub`]: the in-process half of a store's notifications: who watches which run,
//! and who handles signals. Every store keeps one; a database store's listener (PostgreSQL's
//! `LISTEN`) feeds it what other processes wrote.

use std::collections::HashMap;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::{Signal, SignalHandler};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct Watched {
    version: u64,
    watchers: usize,
    wakers: Vec<Waker>,
}

/// Watchers of runs and handlers of signals within one process; cheap to clone (shared).
///
/// ```
/// use std::task::{Context, Poll};
/// use agent_core::store::StoreHub;
///
/// let hub = StoreHub::new();
/// let mut watch = hub.watch("run_1");
/// let waker = std::task::Waker::noop();
/// let mut cx = Context::from_waker(&waker);
/// assert!(watch.poll_changed(&mut cx).is_pending());
/// hub.notify("run_1");
/// assert!(watch.poll_changed(&mut cx).is_ready());
/// assert!(watch.poll_changed(&mut cx).is_pending());
/// ```
#[derive(Clone, Default)]
pub struct StoreHub {
    inner: Arc<HubInner>,
}

#[derive(Default)]
struct HubInner {
    runs: Mutex<HashMap<String, Watched>>,
    handlers: Mutex<Vec<Arc<SignalHandler>>>,
}

impl fmt::Debug for StoreHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreHub")
            .field("watched_runs", &lock(&self.inner.runs).len())
            .field("signal_handlers", &lock(&self.inner.handlers).len())
            .finish()
    }
}

impl StoreHub {
    /// An empty hub.
    pub fn new() -> Self {
        StoreHub::default()
    }

    /// A watch of `run_id`: [`RunWatch::poll_changed`] is `Ready` once after each
    /// [`notify`](Self::notify) of the run that happened after the watch was made.
    pub fn watch(&self, run_id: &str) -> RunWatch {
        let mut runs = lock(&self.inner.runs);
        let watched = runs.entry(run_id.to_string()).or_default();
        watched.watchers += 1;
        RunWatch {
            hub: self.clone(),
            run_id: run_id.to_string(),
            seen: watched.version,
        }
    }

    /// Wake every watcher of `run_id` (its events or status changed).
    pub fn notify(&self, run_id: &str) {
        let wakers = {
            let mut runs = lock(&self.inner.runs);
            let Some(watched) = runs.get_mut(run_id) else {
                return;
            };
            watched.version += 1;
            std::mem::take(&mut watched.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Wake every watcher of every run (after a lost connection, when notifications may
    /// have been missed: each watcher looks again).
    pub fn notify_all(&self) {
        let wakers: Vec<Waker> = {
            let mut runs = lock(&self.inner.runs);
            runs.values_mut()
                .flat_map(|w| {
                    w.version += 1;
                    std::mem::take(&mut w.wakers)
                })
                .collect()
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Register a signal handler.
    pub fn on_signal(&self, handler: SignalHandler) {
        lock(&self.inner.handlers).push(Arc::new(handler));
    }

    /// Hand `signal` to every handler (dropping those that answer `Break`).
    pub fn deliver(&self, signal: &Signal) {
        let handlers: Vec<Arc<SignalHandler>> = lock(&self.inner.handlers).clone();
        let mut gone = Vec::new();
        for handler in &handlers {
            // A panicking handler is a bug of its own; it must not take the caller down.
            let flow = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(signal)))
                .unwrap_or(ControlFlow::Break(()));
            if flow.is_break() {
                gone.push(handler.clone());
            }
        }
        if !gone.is_empty() {
            lock(&self.inner.handlers).retain(|h| !gone.iter().any(|g| Arc::ptr_eq(g, h)));
        }
    }

    /// How many runs are watched (for tests and leak checks).
    pub fn watched_runs(&self) -> usize {
        lock(&self.inner.runs).len()
    }
}

/// A watch of one run from [`Store::watch`](super::Store::watch); dropping it unregisters.
pub struct RunWatch {
    hub: StoreHub,
    run_id: String,
    seen: u64,
}

impl fmt::Debug for RunWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunWatch")
            .field("run_id", &self.run_id)
            .finish()
    }
}

impl RunWatch {
    /// `Ready` when the run changed since the last `Ready` (or since the watch was made);
    /// otherwise `Pending`, with `cx`'s waker registered.
    pub fn poll_changed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut runs = lock(&self.hub.inner.runs);
        let watched = runs.entry(self.run_id.clone()).or_default();
        if watched.version != self.seen {
            self.seen = watched.version;
            return Poll::Ready(());
        }
        if !watched.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            watched.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Wait for the next change (see [`poll_changed`](Self::poll_changed)).
    pub async fn changed(&mut self) {
        std::future::poll_fn(|cx| self.poll_changed(cx)).await
    }
}

impl Drop for RunWatch {
    fn drop(&mut self) {
        let mut runs = lock(&self.hub.inner.runs);
        if let Some(watched) = runs.get_mut(&self.run_id) {
            watched.watchers = watched.watchers.saturating_sub(1);
            if watched.watchers == 0 {
                runs.remove(&self.run_id);
            }
        }
    }
}
