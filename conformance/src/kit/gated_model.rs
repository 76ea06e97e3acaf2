//! [`GatedModel`]: a model whose text delta `k + 1` exists only after the consumer saw delta
//! `k`, and which counts what it produced.
//!
//! ```
//! use std::ops::ControlFlow;
//! use std::sync::Arc;
//! use futures_util::StreamExt;
//! use agent_core::agent::Agent;
//! use agent_core::event::EventKind;
//! use agent_core::runtime::{block_on, TestRuntime};
//! use conformance::kit::GatedModel;
//!
//! let model = GatedModel::lockstep(["Hel", "lo"]);
//! let agent = Agent::builder()
//!     .model(model.clone())
//!     .runtime(TestRuntime::new())
//!     .build()
//!     .unwrap();
//! let mut run = agent.run("hi");
//! let mut text = String::new();
//! block_on(async {
//!     while let Some(event) = run.next().await {
//!         if let EventKind::TextDelta { text: t } = &event.kind {
//!             text.push_str(t);
//!             model.gate().open_next(); // "I saw this delta: produce the next one"
//!         }
//!     }
//! });
//! assert_eq!(text, "Hello");
//! assert_eq!(model.produced(), 2);
//! ```

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use agent_core::error::{ErrorKind, ModelError};
use agent_core::model::{FinishReason, Model, ModelContext, ModelDelta, ModelRequest, ModelStream};
use agent_core::runtime::{BoxFuture, SharedRuntime};
use futures_core::Stream;

use super::gate::Gate;

/// How long a gated model waits for its gate before failing the stream.
pub const DEFAULT_GATE_DEADLINE: Duration = Duration::from_secs(10);

/// At most this many production instants are kept (for latency measurements).
const MAX_RECORDED_INSTANTS: usize = 100_000;

type MakeText = dyn Fn(u64) -> String + Send + Sync;

struct Inner {
    name: String,
    count: u64,
    make: Box<MakeText>,
    gate: Option<Arc<Gate>>,
    deadline: Duration,
    produced: AtomicU64,
    streams_started: AtomicU64,
    streams_dropped: AtomicU64,
    produced_at: Mutex<Vec<Instant>>,
}

/// A model that streams `count` text deltas, optionally in lockstep with the consumer.
///
/// * [`GatedModel::lockstep`]: delta `k` (from 0) is produced only once its
///   [`gate`](GatedModel::gate) has been opened `k` times, so the consumer opens the gate
///   once per delta it observes. If the gate stays shut longer than the deadline
///   ([`DEFAULT_GATE_DEADLINE`]), the stream ends with a [`ModelError`] of kind
///   [`ErrorKind::Model`] whose message names the delta that never reached the consumer:
///   a buffering backend fails with that message instead of hanging.
/// * [`GatedModel::ready`]: every delta is ready at once (a flood), for starvation and
///   backpressure cases.
///
/// After the last delta it yields a `stop` finish reason. Every request to the model plays
/// the same deltas; the counters cover all requests. Clones share everything.
#[derive(Clone)]
pub struct GatedModel {
    inner: Arc<Inner>,
}

impl fmt::Debug for GatedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatedModel")
            .field("name", &self.inner.name)
            .field("count", &self.inner.count)
            .field("gate", &self.inner.gate)
            .field("produced", &self.produced())
            .finish()
    }
}

impl GatedModel {
    fn build(count: u64, make: Box<MakeText>, gated: bool) -> Self {
        GatedModel {
            inner: Arc::new(Inner {
                name: "gated".into(),
                count,
                make,
                gate: gated.then(|| Gate::new("text deltas")),
                deadline: DEFAULT_GATE_DEADLINE,
                produced: AtomicU64::new(0),
                streams_started: AtomicU64::new(0),
                streams_dropped: AtomicU64::new(0),
                produced_at: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Stream `deltas` in lockstep: delta `k` waits until the gate was opened `k` times.
    pub fn lockstep<I>(deltas: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let deltas: Vec<String> = deltas.into_iter().map(Into::into).collect();
        let count = deltas.len() as u64;
        Self::build(count, Box::new(move |k| deltas[k as usize].clone()), true)
    }

    /// `count` deltas in lockstep, delta `k` being [`numbered_delta(k)`](numbered_delta).
    pub fn numbered_lockstep(count: u64) -> Self {
        Self::build(count, Box::new(numbered_delta), true)
    }

    /// `count` deltas, all ready at once, delta `k` being `make(k)`.
    pub fn ready(count: u64, make: impl Fn(u64) -> String + Send + Sync + 'static) -> Self {
        Self::build(count, Box::new(make), false)
    }

    /// Change how long a lockstep delta waits for its gate before the stream fails.
    ///
    /// # Panics
    ///
    /// When called after the model was cloned (configure it first).
    pub fn with_gate_deadline(mut self, deadline: Duration) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("configure a GatedModel before cloning it")
            .deadline = deadline;
        self
    }

    /// The gate of a lockstep model (a lockstep model always has one; a ready model gets an
    /// always-open gate so callers may open it unconditionally).
    pub fn gate(&self) -> Arc<Gate> {
        match &self.inner.gate {
            Some(gate) => gate.clone(),
            None => {
                let gate = Gate::new("ungated model");
                gate.open_all();
                gate
            }
        }
    }

    /// How many text deltas each request streams.
    pub fn delta_count(&self) -> u64 {
        self.inner.count
    }

    /// The text of delta `k`.
    pub fn delta_text(&self, k: u64) -> String {
        (self.inner.make)(k)
    }

    /// The whole answer of one request: every delta, concatenated.
    pub fn full_text(&self) -> String {
        (0..self.inner.count).map(|k| self.delta_text(k)).collect()
    }

    /// Text deltas produced so far (yielded to the agent), over all requests.
    pub fn produced(&self) -> u64 {
        self.inner.produced.load(Ordering::Acquire)
    }

    /// When the `n`-th delta overall (from 0) was produced, for the first 100,000.
    pub fn produced_at(&self, n: u64) -> Option<Instant> {
        let at = self
            .inner
            .produced_at
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        at.get(usize::try_from(n).ok()?).copied()
    }

    /// How many streams (requests) were started.
    pub fn streams_started(&self) -> u64 {
        self.inner.streams_started.load(Ordering::Acquire)
    }

    /// How many streams were dropped (finished or cancelled).
    pub fn streams_dropped(&self) -> u64 {
        self.inner.streams_dropped.load(Ordering::Acquire)
    }
}

/// The text of delta `k` of [`GatedModel::numbered_lockstep`]: `"d<k> "`.
pub fn numbered_delta(k: u64) -> String {
    format!("d{k} ")
}

impl Model for GatedModel {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn stream(&self, _request: ModelRequest, cx: ModelContext) -> ModelStream {
        self.inner.streams_started.fetch_add(1, Ordering::AcqRel);
        Box::pin(GatedStream {
            inner: self.inner.clone(),
            runtime: cx.runtime,
            next: 0,
            timer: None,
            finished: false,
        })
    }
}

struct GatedStream {
    inner: Arc<Inner>,
    runtime: SharedRuntime,
    next: u64,
    timer: Option<BoxFuture<()>>,
    finished: bool,
}

impl Drop for GatedStream {
    fn drop(&mut self) {
        self.inner.streams_dropped.fetch_add(1, Ordering::AcqRel);
    }
}

impl Stream for GatedStream {
    type Item = Result<ModelDelta, ModelError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        let k = this.next;
        if k == this.inner.count {
            this.finished = true;
            return Poll::Ready(Some(Ok(ModelDelta::Finish(FinishReason::Stop))));
        }
        if let Some(gate) = &this.inner.gate
            && gate.poll_open(k, cx).is_pending()
        {
            let deadline = this.inner.deadline;
            let timer = this
                .timer
                .get_or_insert_with(|| this.runtime.sleep(deadline));
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.finished = true;
            let message = format!(
                "lockstep: text delta {k} was not released within {deadline:?}: the consumer never observed text delta {} (the backend buffers or stalls)",
                k.saturating_sub(1)
            );
            return Poll::Ready(Some(Err(ModelError::new(ErrorKind::Model, message))));
        }
        this.timer = None;
        this.next += 1;
        let text = (this.inner.make)(k);
        {
            let mut at = this
                .inner
                .produced_at
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if at.len() < MAX_RECORDED_INSTANTS {
                at.push(Instant::now());
            }
        }
        this.inner.produced.fetch_add(1, Ordering::AcqRel);
        Poll::Ready(Some(Ok(ModelDelta::Text(text))))
    }
}
