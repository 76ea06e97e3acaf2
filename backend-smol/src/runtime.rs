//! [`SmolRuntime`]: the core's [`Runtime`] on smol's executors, `blocking` pool and async-io timers.
//!
//! ```
//! use std::time::Duration;
//! use agent_core::runtime::{self, Runtime};
//! use backend_smol::SmolRuntime;
//!
//! let rt = SmolRuntime::global();
//! let answer = smol::block_on(async {
//!     rt.sleep(Duration::from_millis(1)).await;
//!     runtime::blocking(&rt, || 6 * 7).await
//! });
//! assert_eq!(answer, Ok(42));
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agent_core::runtime::{BlockingJob, BoxFuture, Runtime, SharedRuntime};
use async_executor::Executor;

/// The [`Runtime`] of the smol family.
///
/// * **tasks** ([`Runtime::spawn`]) go to smol's global executor ([`SmolRuntime::global`]) or
///   to an [`async_executor::Executor`] you drive yourself ([`SmolRuntime::with_executor`]);
/// * **blocking work** ([`Runtime::spawn_blocking`]) goes to the [`blocking`] crate's thread
///   pool ([`blocking::unblock`]), never to a thread that drives the executor;
/// * **timers** ([`Runtime::sleep`]) are [`async_io::Timer`]s, served by async-io's reactor
///   (driven by whichever thread is blocked in `async_io::block_on`, or by async-io's own
///   fallback thread), so they fire whether or not an executor is running.
///
/// smol has no cooperative budget: a future that is always ready would starve its executor
/// thread. The core's run stream bounds that itself (it yields after
/// [`COOPERATIVE_BUDGET`](agent_core::agent::COOPERATIVE_BUDGET) ready events), so
/// [`Runtime::poll_cooperate`] keeps its default.
///
/// # One thread for everything
///
/// The [`Runtime`] trait is `Send + Sync`, so a `!Send` [`LocalExecutor`](async_executor::LocalExecutor)
/// cannot be stored in it. A single-threaded setup uses a plain [`Executor`] that only one
/// thread ever runs: tasks spawned through this runtime then run on that thread, interleaved
/// with the future passed to [`Executor::run`], exactly as on a `LocalExecutor` (and a task
/// that never yields starves the others the same way).
///
/// ```
/// use std::sync::Arc;
/// use agent_core::runtime::{self};
/// use async_executor::Executor;
/// use backend_smol::SmolRuntime;
///
/// let executor = Arc::new(Executor::new());
/// let rt = SmolRuntime::with_executor(executor.clone());
/// // This thread is the only one that runs `executor`: the spawned task runs here too.
/// let here = std::thread::current().id();
/// let ran_on = futures_lite::future::block_on(executor.run(async {
///     runtime::spawn(&rt, async { std::thread::current().id() }).await
/// }));
/// assert_eq!(ran_on, Ok(here));
/// ```
#[derive(Clone)]
pub struct SmolRuntime {
    executor: Option<Arc<Executor<'static>>>,
    /// For [`SmolRuntime::with_threads`]: stops the threads when the last clone is dropped.
    _threads: Option<Arc<ExecutorThreads>>,
}

/// Closes the stop channel of the threads started by [`SmolRuntime::with_threads`] on drop.
struct ExecutorThreads {
    stop: async_channel::Sender<()>,
}

impl Drop for ExecutorThreads {
    fn drop(&mut self) {
        self.stop.close();
    }
}

impl SmolRuntime {
    /// Tasks go to smol's global executor ([`smol::spawn`]), whose threads smol starts on
    /// first use (`SMOL_THREADS` of them, default one).
    pub fn global() -> Self {
        SmolRuntime {
            executor: None,
            _threads: None,
        }
    }

    /// Tasks go to `executor`. They make progress only while some thread runs it
    /// ([`Executor::run`]); one thread gives a single-threaded setup, N threads a pool.
    pub fn with_executor(executor: Arc<Executor<'static>>) -> Self {
        SmolRuntime {
            executor: Some(executor),
            _threads: None,
        }
    }

    /// Tasks go to a new executor run by `threads` dedicated threads (at least one), which
    /// stop once this runtime and all its clones (held by agents, for instance) are dropped.
    ///
    /// ```
    /// use agent_core::runtime;
    /// use backend_smol::SmolRuntime;
    ///
    /// let rt = SmolRuntime::with_threads(2).unwrap();
    /// let task = runtime::spawn(&rt, async { std::thread::current().name().map(String::from) });
    /// // Waiting without joining the pool: the task runs on one of its threads.
    /// let name = agent_core::runtime::block_on(task).unwrap();
    /// assert!(name.unwrap().starts_with("smol-agent-"));
    /// ```
    pub fn with_threads(threads: usize) -> std::io::Result<Self> {
        let executor = Arc::new(Executor::new());
        let (stop, stopped) = async_channel::bounded::<()>(1);
        for i in 0..threads.max(1) {
            let executor = executor.clone();
            let stopped = stopped.clone();
            std::thread::Builder::new()
                .name(format!("smol-agent-{i}"))
                .spawn(move || {
                    async_io::block_on(executor.run(async {
                        let _ = stopped.recv().await;
                    }))
                })?;
        }
        Ok(SmolRuntime {
            executor: Some(executor),
            _threads: Some(Arc::new(ExecutorThreads { stop })),
        })
    }

    /// Run `future` to completion on the calling thread, blocking it meanwhile.
    ///
    /// With an executor of this runtime's own ([`with_executor`](Self::with_executor),
    /// [`with_threads`](Self::with_threads)) the calling thread also runs that executor's
    /// tasks while it waits (`async_io::block_on(executor.run(future))`): this is how the
    /// one thread of a single-threaded setup drives everything. With the global executor it
    /// is `smol::block_on(future)`, and tasks run on smol's threads.
    ///
    /// Call it from outside async code: like any blocking call it would freeze an executor
    /// thread.
    pub fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        match &self.executor {
            Some(executor) => async_io::block_on(executor.run(future)),
            None => smol::block_on(future),
        }
    }

    /// The executor given to [`with_executor`](Self::with_executor); `None` for the global one.
    pub fn executor(&self) -> Option<&Arc<Executor<'static>>> {
        self.executor.as_ref()
    }

    /// This runtime as the core's type-erased [`SharedRuntime`].
    pub fn shared(&self) -> SharedRuntime {
        Arc::new(self.clone())
    }
}

impl Default for SmolRuntime {
    /// [`SmolRuntime::global`].
    fn default() -> Self {
        SmolRuntime::global()
    }
}

impl fmt::Debug for SmolRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let executor = match (&self.executor, &self._threads) {
            (None, _) => "global",
            (Some(_), None) => "own",
            (Some(_), Some(_)) => "own threads",
        };
        f.debug_struct("SmolRuntime")
            .field("executor", &executor)
            .finish()
    }
}

impl Runtime for SmolRuntime {
    fn name(&self) -> &'static str {
        "smol"
    }

    fn spawn_blocking(&self, job: BlockingJob) {
        // The pool runs the job on one of its threads; detaching keeps it running with no
        // one awaiting it (the core's `blocking` helper reports through its own channel).
        blocking::unblock(job).detach();
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        let timer = async_io::Timer::after(duration);
        Box::pin(async move {
            timer.await;
        })
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> BoxFuture<()> {
        let timer = async_io::Timer::at(deadline);
        Box::pin(async move {
            timer.await;
        })
    }

    fn spawn(&self, future: BoxFuture<()>) {
        match &self.executor {
            Some(executor) => executor.spawn(future).detach(),
            None => smol::spawn(future).detach(),
        }
    }
}
