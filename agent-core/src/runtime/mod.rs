//! The few services the core needs from an executor: blocking work, timers, spawning.
//!
//! [`Runtime`] is object safe so that an [`Agent`](crate::agent::Agent) can hold any runtime
//! as a [`SharedRuntime`] chosen at construction (the shape of quinn's `Runtime`). The typed,
//! allocation-light helpers ([`blocking`], [`spawn`]) sit on top of it and turn panics into
//! [`TaskError`] values.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use agent_core::runtime::{self, block_on, SharedRuntime, TestRuntime};
//!
//! let rt: SharedRuntime = Arc::new(TestRuntime::new());
//! let answer = block_on(async {
//!     rt.sleep(Duration::from_millis(1)).await;
//!     runtime::blocking(&*rt, || 6 * 7).await
//! });
//! assert_eq!(answer, Ok(42));
//! ```

mod deadline;
mod test_runtime;

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::FutureExt;

pub use deadline::Deadline;
pub use test_runtime::{TestRuntime, TimerSleep, block_on};

/// A boxed, `Send` future: the type-erased edge of the runtime trait.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A job for [`Runtime::spawn_blocking`].
pub type BlockingJob = Box<dyn FnOnce() + Send + 'static>;

/// A runtime shared by an agent, its models and its tools.
pub type SharedRuntime = Arc<dyn Runtime>;

/// The services of an async executor (or of plain threads) that the core relies on.
///
/// Implementations exist for tokio, smol/async-executor and plain threads in the backend
/// crates; [`TestRuntime`] is a minimal one for tests. The contract each method must keep:
///
/// * **`spawn_blocking`** runs `job` to completion on a thread where blocking is allowed, never
///   on a thread that drives async tasks. It must not block the caller. The core's
///   [`blocking`] helper catches panics inside `job`, so an implementation never sees one.
///   If the runtime is shutting down it may drop `job` unrun; the awaiting side then gets
///   [`TaskError::Cancelled`].
/// * **`sleep`** returns a timer that completes no earlier than `duration` after the call
///   (and as soon after as the runtime's timer resolution allows). Dropping it cancels it.
///   It must work from any thread while the runtime is alive.
/// * **`now`** is the runtime's clock, the one its timers follow (default: `Instant::now()`;
///   a runtime with a virtual clock for tests overrides it), and **`sleep_until`** a timer
///   for an instant on that clock (default: `sleep` for the time left). Timeouts that move
///   with activity use [`Deadline`], a resettable timer built on these two.
/// * **`spawn`** runs `future` concurrently with the caller until it completes. The task is
///   detached: nothing awaits it. Use [`spawn`] to get a [`JoinHandle`] with panics turned
///   into [`TaskError::Panicked`]; an implementation is only handed futures that do not
///   unwind.
/// * **`poll_cooperate`** lets a runtime with a cooperative budget (tokio) ask a busy stream to
///   yield. The core's run stream calls it before producing each ready event; `Pending`
///   means "yield now" and the runtime must have arranged a wake-up. The default always
///   answers `Ready`: the run stream's own budget ([`crate::agent::COOPERATIVE_BUDGET`])
///   already bounds bursts on every runtime.
pub trait Runtime: Send + Sync + fmt::Debug + 'static {
    /// A short name for reports, e.g. `"tokio"`.
    fn name(&self) -> &'static str;

    /// Run `job` on a thread where blocking is allowed (see the trait docs).
    fn spawn_blocking(&self, job: BlockingJob);

    /// A timer firing after `duration` (see the trait docs).
    fn sleep(&self, duration: Duration) -> BoxFuture<()>;

    /// The runtime's clock (see the trait docs).
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// A timer firing at `deadline` on [`now`](Self::now)'s clock (see the trait docs).
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        self.sleep(deadline.saturating_duration_since(self.now()))
    }

    /// Run `future` as a detached task (see the trait docs).
    fn spawn(&self, future: BoxFuture<()>);

    /// Cooperative-budget hook (see the trait docs). Defaults to always `Ready`.
    fn poll_cooperate(&self, cx: &mut Context<'_>) -> Poll<()> {
        let _ = cx;
        Poll::Ready(())
    }
}

/// A shared runtime is a runtime: every method goes to the one inside.
impl<R: Runtime + ?Sized> Runtime for Arc<R> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn spawn_blocking(&self, job: BlockingJob) {
        (**self).spawn_blocking(job)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        (**self).sleep(duration)
    }

    fn now(&self) -> Instant {
        (**self).now()
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        (**self).sleep_until(deadline)
    }

    fn spawn(&self, future: BoxFuture<()>) {
        (**self).spawn(future)
    }

    fn poll_cooperate(&self, cx: &mut Context<'_>) -> Poll<()> {
        (**self).poll_cooperate(cx)
    }
}

/// Why a spawned or blocking task produced no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskError {
    /// The task panicked; the message is the panic payload when it was a string.
    Panicked(String),
    /// The runtime dropped the task before it finished (for example while shutting down).
    Cancelled,
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Panicked(msg) => write!(f, "task panicked: {msg}"),
            TaskError::Cancelled => f.write_str("task was cancelled before it finished"),
        }
    }
}

impl std::error::Error for TaskError {}

/// Run the closure `f` through `runtime`'s blocking pool and await its value.
///
/// A panic in `f` becomes [`TaskError::Panicked`]. Dropping the returned future does not stop
/// `f` (blocking code cannot be interrupted); its value is discarded when it finishes.
pub fn blocking<T, F>(runtime: &dyn Runtime, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    runtime.spawn_blocking(Box::new(move || {
        let result = std::panic::catch_unwind(AssertUnwindSafe(f))
            .map_err(|payload| TaskError::Panicked(panic_message(&*payload)));
        // The receiver may be gone (the caller stopped waiting): the value is discarded.
        let _ = tx.send(result);
    }));
    JoinHandle { rx }
}

/// Spawn `future` on `runtime` and get a handle to its output.
///
/// A panic in `future` becomes [`TaskError::Panicked`]. Dropping the handle detaches the task:
/// it keeps running and its output is discarded.
pub fn spawn<T, F>(runtime: &dyn Runtime, future: F) -> JoinHandle<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    runtime.spawn(Box::pin(async move {
        let result = AssertUnwindSafe(future)
            .catch_unwind()
            .await
            .map_err(|payload| TaskError::Panicked(panic_message(&*payload)));
        let _ = tx.send(result);
    }));
    JoinHandle { rx }
}

/// The output of a task started by [`blocking`] or [`spawn`].
///
/// Resolves to the task's value, or to a [`TaskError`] if it panicked or was dropped unrun.
/// Dropping the handle never stops the task; it only discards its value.
#[derive(Debug)]
#[must_use = "a JoinHandle does nothing unless awaited; drop it to detach the task"]
pub struct JoinHandle<T> {
    rx: oneshot::Receiver<Result<T, TaskError>>,
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(oneshot::Canceled)) => Poll::Ready(Err(TaskError::Cancelled)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Race `future` against a timer of `duration` on `runtime`; `None` when the timer won.
pub async fn timeout<F: Future>(
    runtime: &dyn Runtime,
    duration: Duration,
    future: F,
) -> Option<F::Output> {
    let sleep = runtime.sleep(duration);
    let mut future = std::pin::pin!(future);
    let mut sleep = std::pin::pin!(sleep);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(value) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(value));
        }
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Render a caught panic payload as a message.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
