//! [`ThreadPoolRuntime`]: the core's [`Runtime`] on plain OS threads.

use std::collections::VecDeque;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use agent_core::runtime::{BlockingJob, BoxFuture, Runtime, SharedRuntime, TimerSleep, block_on};

/// Default for [`ThreadPoolBuilder::max_threads`].
pub const DEFAULT_MAX_THREADS: usize = 16;

/// Default for [`ThreadPoolBuilder::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`Runtime`] made of a bounded pool of OS threads and the core's timer thread.
///
/// Cheap to clone: clones share the same pool; [`ThreadPoolRuntime::shared`] is a
/// process-wide default.
///
/// * **Blocking work** ([`Runtime::spawn_blocking`]) runs on a bounded pool of worker threads.
///   Threads start lazily, when a job arrives and no idle worker is free, up to
///   [`ThreadPoolBuilder::max_threads`] (default [`DEFAULT_MAX_THREADS`]); a worker that has
///   had nothing to do for [`ThreadPoolBuilder::idle_timeout`] (default
///   [`DEFAULT_IDLE_TIMEOUT`]) exits. Jobs beyond the pool wait in an **unbounded** FIFO
///   queue: `spawn_blocking` must never block its caller, and dropping a job would turn a
///   busy pool into spurious [`TaskError::Cancelled`](agent_core::runtime::TaskError) errors.
///   The queue length is bounded in practice by what submits jobs: the agent runs at most
///   `max_concurrent_tools` calls per run.
/// * **Timers** ([`Runtime::sleep`]) are served by the core's process-wide timer thread
///   ([`TimerSleep`]): no async reactor, one thread for all timers of the process.
/// * **Tasks** ([`Runtime::spawn`]) run on a thread of their own, driven by
///   [`block_on`]. They do not use the bounded pool on purpose: a task usually waits for
///   other work (a blocking job, a timer), and a task holding one of a few pool threads while
///   it waits for a job queued behind it would deadlock the pool.
///
/// ```
/// use std::time::Duration;
/// use agent_core::runtime::{self, block_on, Runtime};
/// use backend_blocking::ThreadPoolRuntime;
///
/// let rt = ThreadPoolRuntime::builder().max_threads(2).build();
/// let sum = block_on(async {
///     rt.sleep(Duration::from_millis(1)).await;
///     runtime::blocking(&rt, || (1..=10).sum::<u32>()).await
/// });
/// assert_eq!(sum, Ok(55));
/// ```
#[derive(Clone)]
pub struct ThreadPoolRuntime {
    pool: Arc<Pool>,
}

impl fmt::Debug for ThreadPoolRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.pool.lock();
        f.debug_struct("ThreadPoolRuntime")
            .field("max_threads", &self.pool.max_threads)
            .field("idle_timeout", &self.pool.idle_timeout)
            .field("threads", &state.threads)
            .field("idle", &state.idle)
            .field("queued", &state.queue.len())
            .finish()
    }
}

impl Default for ThreadPoolRuntime {
    fn default() -> Self {
        ThreadPoolRuntime::new()
    }
}

impl ThreadPoolRuntime {
    /// A pool with the default settings ([`DEFAULT_MAX_THREADS`], [`DEFAULT_IDLE_TIMEOUT`]).
    /// No thread starts until work arrives.
    pub fn new() -> Self {
        ThreadPoolRuntime::builder().build()
    }

    /// Configure a pool.
    ///
    /// ```
    /// use std::time::Duration;
    /// use backend_blocking::ThreadPoolRuntime;
    ///
    /// let rt = ThreadPoolRuntime::builder()
    ///     .max_threads(4)
    ///     .idle_timeout(Duration::from_secs(1))
    ///     .thread_name("my-blocking")
    ///     .build();
    /// assert_eq!(rt.max_threads(), 4);
    /// ```
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::default()
    }

    /// The process-wide default runtime (one pool with the default settings, created on first
    /// use): every call returns a handle to the same pool. Named like
    /// `SmolRuntime::global()`; hand it to
    /// [`AgentBuilder::runtime`](agent_core::agent::AgentBuilder::runtime) as it is, or as a
    /// [`SharedRuntime`] with [`shared`](Self::shared).
    ///
    /// ```
    /// use backend_blocking::ThreadPoolRuntime;
    /// use agent_core::runtime::Runtime;
    ///
    /// let rt = ThreadPoolRuntime::global();
    /// assert_eq!(rt.name(), "threads");
    /// assert!(rt.same_pool(&ThreadPoolRuntime::global()));
    /// ```
    pub fn global() -> Self {
        static GLOBAL: OnceLock<ThreadPoolRuntime> = OnceLock::new();
        GLOBAL.get_or_init(ThreadPoolRuntime::new).clone()
    }

    /// Whether `self` and `other` are handles to the same pool.
    pub fn same_pool(&self, other: &ThreadPoolRuntime) -> bool {
        Arc::ptr_eq(&self.pool, &other.pool)
    }

    /// This runtime as the core's type-erased [`SharedRuntime`] (as on every backend).
    pub fn shared(&self) -> SharedRuntime {
        Arc::new(self.clone())
    }

    /// The most worker threads this pool runs at once.
    pub fn max_threads(&self) -> usize {
        self.pool.max_threads
    }

    /// Worker threads alive right now (busy or idle).
    pub fn threads(&self) -> usize {
        self.pool.lock().threads
    }

    /// Jobs waiting for a free worker right now.
    pub fn queued_jobs(&self) -> usize {
        self.pool.lock().queue.len()
    }
}

impl Runtime for ThreadPoolRuntime {
    fn name(&self) -> &'static str {
        "threads"
    }

    fn spawn_blocking(&self, job: BlockingJob) {
        Pool::submit(&self.pool, job);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        // `checked_add` guards against `Duration::MAX` ("never"): such a timer never fires.
        match Instant::now().checked_add(duration) {
            Some(deadline) => Box::pin(TimerSleep::new(deadline)),
            None => Box::pin(std::future::pending()),
        }
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        Box::pin(TimerSleep::new(deadline))
    }

    fn spawn(&self, future: BoxFuture<()>) {
        let spawned = std::thread::Builder::new()
            .name(format!("{}-task", self.pool.thread_name))
            .spawn(move || block_on(future));
        // If the OS refuses a thread the future is dropped unrun, which a `JoinHandle`
        // reports as `TaskError::Cancelled`.
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "could not start a thread for a spawned task");
        }
    }
}

/// Settings of a [`ThreadPoolRuntime`], from [`ThreadPoolRuntime::builder`].
#[derive(Debug, Clone)]
pub struct ThreadPoolBuilder {
    max_threads: usize,
    idle_timeout: Duration,
    thread_name: String,
}

impl Default for ThreadPoolBuilder {
    fn default() -> Self {
        ThreadPoolBuilder {
            max_threads: DEFAULT_MAX_THREADS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            thread_name: "agent-pool".into(),
        }
    }
}

impl ThreadPoolBuilder {
    /// The most blocking jobs running at once (at least 1; 0 is taken as 1). Further jobs
    /// wait in the queue.
    pub fn max_threads(mut self, max_threads: usize) -> Self {
        self.max_threads = max_threads.max(1);
        self
    }

    /// How long an idle worker waits for a job before it exits.
    pub fn idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// The name of the worker threads (spawned tasks get `<name>-task`).
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    /// Build the runtime. No thread starts until work arrives.
    pub fn build(self) -> ThreadPoolRuntime {
        ThreadPoolRuntime {
            pool: Arc::new(Pool {
                state: Mutex::new(PoolState::default()),
                work: Condvar::new(),
                max_threads: self.max_threads,
                idle_timeout: self.idle_timeout,
                thread_name: self.thread_name,
            }),
        }
    }
}

struct Pool {
    state: Mutex<PoolState>,
    work: Condvar,
    max_threads: usize,
    idle_timeout: Duration,
    thread_name: String,
}

#[derive(Default)]
struct PoolState {
    queue: VecDeque<BlockingJob>,
    /// Live workers.
    threads: usize,
    /// Workers waiting for a job.
    idle: usize,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Jobs run outside the lock, so a poisoned lock only means a panic in this file's
        // bookkeeping, which holds no invariant that a panic could break halfway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn submit(pool: &Arc<Pool>, job: BlockingJob) {
        let mut state = pool.lock();
        state.queue.push_back(job);
        if state.idle >= state.queue.len() {
            // Enough idle workers for every queued job: wake one.
            pool.work.notify_one();
            return;
        }
        if state.idle > 0 {
            pool.work.notify_one();
        }
        if state.threads >= pool.max_threads {
            // Every worker is busy: the job waits in the queue.
            return;
        }
        state.threads += 1;
        drop(state);
        let worker = pool.clone();
        let spawned = std::thread::Builder::new()
            .name(pool.thread_name.clone())
            .spawn(move || worker.work());
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "could not start a blocking-pool thread");
            let mut state = pool.lock();
            state.threads -= 1;
            if state.threads == 0 {
                // Nobody will ever run the queued jobs: drop them, so that their waiters
                // get `TaskError::Cancelled` instead of waiting forever.
                let dropped = std::mem::take(&mut state.queue);
                drop(state);
                drop(dropped);
            }
        }
    }

    fn work(&self) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                drop(state);
                // The core's `blocking` helper already catches panics; a raw job that
                // panics must not kill the worker (and strand the queue) either.
                if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                    tracing::warn!("a blocking job panicked");
                }
                state = self.lock();
                continue;
            }
            state.idle += 1;
            let (next, timeout) = self
                .work
                .wait_timeout(state, self.idle_timeout)
                .unwrap_or_else(|p| p.into_inner());
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.queue.is_empty() {
                state.threads -= 1;
                return;
            }
        }
    }
}
