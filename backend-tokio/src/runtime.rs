//! [`TokioRuntime`]: the core's [`Runtime`] trait on a tokio [`Handle`].
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use agent_core::runtime::{self, Runtime, SharedRuntime};
//! use backend_tokio::TokioRuntime;
//!
//! # fn main() {
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! let answer = rt.block_on(async {
//!     let runtime: SharedRuntime = Arc::new(TokioRuntime::current());
//!     runtime.sleep(Duration::from_millis(1)).await;
//!     // Runs on tokio's blocking pool, not on the thread driving this future.
//!     runtime::blocking(&*runtime, || 6 * 7).await
//! });
//! assert_eq!(answer, Ok(42));
//! # }
//! ```

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use agent_core::runtime::{BlockingJob, BoxFuture, Runtime, SharedRuntime, TimerSleep};
use tokio::runtime::{Handle, RuntimeFlavor, TryCurrentError};

/// The state of the time-driver probe (see [`TokioRuntime::sleep`](Runtime::sleep)).
const TIMERS_UNKNOWN: u8 = 0;
const TIMERS_ENABLED: u8 = 1;
const TIMERS_DISABLED: u8 = 2;

/// The core's [`Runtime`] on a tokio runtime, current-thread or multi-thread.
///
/// | core service | tokio |
/// | --- | --- |
/// | [`spawn_blocking`](Runtime::spawn_blocking) | [`Handle::spawn_blocking`]: tokio's blocking pool, never a worker thread |
/// | [`sleep`](Runtime::sleep) | [`tokio::time::sleep`] on this runtime's timer |
/// | [`spawn`](Runtime::spawn) | [`Handle::spawn`] |
/// | [`poll_cooperate`](Runtime::poll_cooperate) | [`tokio::task::coop::poll_proceed`]: one unit of the task's budget per event |
///
/// **Cooperative budget.** tokio gives every task a budget of operations per poll; its own
/// resources (sockets, channels, timers) return `Pending` once the budget is spent so that a
/// busy task cannot starve the others on its worker. The run stream asks
/// [`poll_cooperate`](Runtime::poll_cooperate) before producing each event, and this
/// implementation spends one unit of that same budget per event through the public
/// `tokio::task::coop::poll_proceed`. A run whose model is always ready (a scripted model, a
/// burst of buffered chunks) therefore yields to the scheduler exactly where tokio's own I/O
/// would. Outside a tokio task (for example a stream polled by another executor) the budget is
/// unconstrained and the hook always answers `Ready`; the run stream's own budget
/// ([`agent_core::agent::COOPERATIVE_BUDGET`]) still applies everywhere.
///
/// **Lifetime.** A `TokioRuntime` holds a [`Handle`], not the runtime: it is cheap to clone
/// and can be dropped anywhere. After the tokio runtime has shut down, blocking jobs and
/// spawned futures are dropped unrun (the awaiting side sees
/// [`TaskError::Cancelled`](agent_core::runtime::TaskError::Cancelled)) and timers never fire.
///
/// **Current-thread runtimes.** Everything works, but tasks, timers and I/O only progress
/// while some thread drives the runtime (inside `Runtime::block_on`, or
/// `#[tokio::main(flavor = "current_thread")]`). Blocking jobs run on tokio's blocking pool
/// regardless.
///
/// **Timers.** The runtime should be built with timers enabled (`enable_all()` or
/// `enable_time()`; `#[tokio::main]` does). If they are not, `sleep` falls back to the core's
/// process-wide timer thread ([`TimerSleep`]) instead of panicking, and logs a warning once.
#[derive(Debug, Clone)]
pub struct TokioRuntime {
    handle: Handle,
    timers: Arc<AtomicU8>,
}

impl TokioRuntime {
    /// The runtime this code is running in.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like [`Handle::current`]. Use [`TokioRuntime::try_current`]
    /// to get an error instead.
    #[track_caller]
    pub fn current() -> Self {
        TokioRuntime::from_handle(Handle::current())
    }

    /// This runtime as the core's type-erased [`SharedRuntime`] (as on every backend).
    pub fn shared(&self) -> SharedRuntime {
        std::sync::Arc::new(self.clone())
    }

    /// The runtime this code is running in, or an error outside one.
    ///
    /// ```
    /// assert!(backend_tokio::TokioRuntime::try_current().is_err());
    /// ```
    pub fn try_current() -> Result<Self, TryCurrentError> {
        Handle::try_current().map(TokioRuntime::from_handle)
    }

    /// A runtime on `handle`, usable from any thread (for example a runtime built with
    /// [`tokio::runtime::Builder`] and used from outside it).
    pub fn from_handle(handle: Handle) -> Self {
        TokioRuntime {
            handle,
            timers: Arc::new(AtomicU8::new(TIMERS_UNKNOWN)),
        }
    }

    /// The tokio handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Unwrap the tokio handle.
    pub fn into_handle(self) -> Handle {
        self.handle
    }

    /// `true` for a current-thread runtime, whose tasks all run on the thread driving it.
    pub fn is_current_thread(&self) -> bool {
        self.handle.runtime_flavor() == RuntimeFlavor::CurrentThread
    }

    fn tokio_sleep(&self, duration: Duration) -> Option<BoxFuture<()>> {
        let _enter = self.handle.enter();
        match self.timers.load(Ordering::Acquire) {
            TIMERS_ENABLED => Some(Box::pin(tokio::time::sleep(duration))),
            TIMERS_DISABLED => None,
            _ => {
                // tokio panics when a timer is created on a runtime without a time driver.
                // There is no public way to ask first, so probe once and remember.
                match std::panic::catch_unwind(AssertUnwindSafe(|| tokio::time::sleep(duration))) {
                    Ok(sleep) => {
                        self.timers.store(TIMERS_ENABLED, Ordering::Release);
                        Some(Box::pin(sleep))
                    }
                    Err(_) => {
                        self.timers.store(TIMERS_DISABLED, Ordering::Release);
                        tracing::warn!(
                            "the tokio runtime has timers disabled (build it with enable_all()); \
                             falling back to the agent timer thread"
                        );
                        None
                    }
                }
            }
        }
    }
}

impl Runtime for TokioRuntime {
    fn name(&self) -> &'static str {
        "tokio"
    }

    fn spawn_blocking(&self, job: BlockingJob) {
        // Detached: the core's `blocking` helper reports the result through its own channel.
        // On a runtime that has shut down tokio drops the job unrun.
        drop(self.handle.spawn_blocking(job));
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        let deadline = Instant::now() + duration;
        self.tokio_sleep(duration)
            .unwrap_or_else(|| Box::pin(TimerSleep::new(deadline)))
    }

    fn spawn(&self, future: BoxFuture<()>) {
        drop(self.handle.spawn(future));
    }

    fn poll_cooperate(&self, cx: &mut Context<'_>) -> Poll<()> {
        match tokio::task::coop::poll_proceed(cx) {
            Poll::Ready(restore) => {
                // The caller is about to produce an event: the unit is spent.
                restore.made_progress();
                Poll::Ready(())
            }
            // tokio has arranged the wake-up of this task.
            Poll::Pending => Poll::Pending,
        }
    }
}
