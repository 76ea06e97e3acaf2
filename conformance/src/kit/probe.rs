//! Probes: a [`Heartbeat`] task that shows whether an executor still runs other tasks, and
//! [`DropCounter`]s that show whether a future (or a value) was dropped.
//!
//! ```
//! use std::time::Duration;
//! use conformance::kit::DropCounter;
//!
//! let counter = DropCounter::new();
//! let guard = counter.guard();
//! assert_eq!(counter.dropped(), 0);
//! drop(guard);
//! assert!(counter.wait_for(1, Duration::from_secs(1)));
//! ```

use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use agent_core::runtime::{Runtime, SharedRuntime};

#[derive(Debug, Default)]
struct HeartbeatState {
    beats: AtomicU64,
    stop: AtomicBool,
}

/// A task spawned through [`Runtime::spawn`] that counts its beats until it is dropped.
///
/// * [`Heartbeat::yielding`] beats every time it is polled and yields right away (it wakes
///   itself), so on a single-threaded executor its count shows how often the executor got to
///   run another task;
/// * [`Heartbeat::timed`] beats once per timer tick, so it shows whether the executor (and
///   its timer) runs at all while something else blocks.
///
/// Dropping the `Heartbeat` (or [`stop`](Heartbeat::stop)) ends the task at its next beat.
pub struct Heartbeat {
    state: Arc<HeartbeatState>,
}

impl fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heartbeat")
            .field("beats", &self.beats())
            .finish()
    }
}

impl Heartbeat {
    /// Spawn a heartbeat that beats (and yields) each time it is polled.
    pub fn yielding(runtime: &dyn Runtime) -> Heartbeat {
        let state = Arc::new(HeartbeatState::default());
        let task = state.clone();
        runtime.spawn(Box::pin(poll_fn(move |cx| {
            if task.stop.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            task.beats.fetch_add(1, Ordering::AcqRel);
            cx.waker().wake_by_ref();
            Poll::Pending
        })));
        Heartbeat { state }
    }

    /// Spawn a heartbeat that beats once every `interval` on the runtime's timer.
    pub fn timed(runtime: &SharedRuntime, interval: Duration) -> Heartbeat {
        let state = Arc::new(HeartbeatState::default());
        let task = state.clone();
        let rt = runtime.clone();
        runtime.spawn(Box::pin(async move {
            while !task.stop.load(Ordering::Acquire) {
                rt.sleep(interval).await;
                task.beats.fetch_add(1, Ordering::AcqRel);
            }
        }));
        Heartbeat { state }
    }

    /// Beats so far.
    pub fn beats(&self) -> u64 {
        self.state.beats.load(Ordering::Acquire)
    }

    /// Block until the heartbeat has beaten `n` times in total or `timeout` passes; `true`
    /// when it did. Polls every millisecond (the heartbeat lives on another executor).
    pub fn wait_for_beats(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.beats() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Stop the task (at its next beat).
    pub fn stop(&self) {
        self.state.stop.store(true, Ordering::Release);
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Default)]
struct CounterState {
    dropped: Mutex<usize>,
    changed: Condvar,
}

/// Counts how many of its [`DropGuard`]s were dropped. Cheap to clone; clones share the
/// count.
#[derive(Debug, Clone, Default)]
pub struct DropCounter {
    state: Arc<CounterState>,
}

impl DropCounter {
    /// A counter at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// A guard that increments the counter when dropped. Move it into the future (or value)
    /// whose drop you want to observe.
    pub fn guard(&self) -> DropGuard {
        DropGuard {
            counter: self.clone(),
        }
    }

    /// Guards dropped so far.
    pub fn dropped(&self) -> usize {
        *self.state.dropped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Block until `n` guards were dropped or `timeout` passes; `true` when they were.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut dropped = self.state.dropped.lock().unwrap_or_else(|p| p.into_inner());
        while *dropped < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            dropped = self
                .state
                .changed
                .wait_timeout(dropped, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// Increments its [`DropCounter`] when dropped.
#[derive(Debug)]
pub struct DropGuard {
    counter: DropCounter,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        let mut dropped = self
            .counter
            .state
            .dropped
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *dropped += 1;
        self.counter.state.changed.notify_all();
    }
}

/// A model wrapper that counts the streams its inner model started and how many of them
/// were dropped (ended or cancelled): after the runs, `started == dropped` means no model
/// stream (and nothing it owns: a connection, a timer) was leaked. Clones share the counts.
///
/// Keep the [`StreamCounts`] ([`CountedModel::counts`]) rather than a clone of the model
/// to check the counts: a clone keeps the inner model (and, say, its HTTP client and pooled
/// connections) alive.
///
/// ```
/// use std::sync::Arc;
/// use futures_util::StreamExt;
/// use agent_core::agent::Agent;
/// use agent_core::model::{ScriptedModel, Turn};
/// use agent_core::runtime::{block_on, TestRuntime};
/// use conformance::kit::CountedModel;
///
/// let model = CountedModel::new(ScriptedModel::new([Turn::new().text("hi")]));
/// let counts = model.counts();
/// let agent = Agent::builder()
///     .model(model)
///     .runtime(TestRuntime::new())
///     .build()
///     .unwrap();
/// let events: Vec<_> = block_on(agent.run("hello").collect());
/// assert!(events.last().unwrap().is_terminal());
/// assert_eq!((counts.started(), counts.dropped().dropped()), (1, 1));
/// ```
#[derive(Clone)]
pub struct CountedModel {
    inner: Arc<dyn agent_core::model::Model>,
    counts: StreamCounts,
}

/// The counts of a [`CountedModel`], without the model.
#[derive(Debug, Clone, Default)]
pub struct StreamCounts {
    started: Arc<AtomicU64>,
    dropped: DropCounter,
}

impl StreamCounts {
    /// Streams started so far.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Acquire)
    }

    /// The counter of dropped streams (wait on it with [`DropCounter::wait_for`]).
    pub fn dropped(&self) -> &DropCounter {
        &self.dropped
    }
}

impl fmt::Debug for CountedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountedModel")
            .field("inner", &self.inner)
            .field("started", &self.counts.started())
            .field("dropped", &self.counts.dropped.dropped())
            .finish()
    }
}

impl CountedModel {
    /// Count the streams of `inner`.
    pub fn new(inner: impl agent_core::model::Model) -> Self {
        CountedModel {
            inner: Arc::new(inner),
            counts: StreamCounts::default(),
        }
    }

    /// The counts (shared with every clone), without keeping the model alive.
    pub fn counts(&self) -> StreamCounts {
        self.counts.clone()
    }
}

impl agent_core::model::Model for CountedModel {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn stream(
        &self,
        request: agent_core::model::ModelRequest,
        cx: agent_core::model::ModelContext,
    ) -> agent_core::model::ModelStream {
        self.counts.started.fetch_add(1, Ordering::AcqRel);
        Box::pin(CountedStream {
            inner: self.inner.stream(request, cx),
            _guard: self.counts.dropped.guard(),
        })
    }
}

struct CountedStream {
    inner: agent_core::model::ModelStream,
    _guard: DropGuard,
}

impl futures_core::Stream for CountedStream {
    type Item = Result<agent_core::model::ModelDelta, agent_core::error::ModelError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}
