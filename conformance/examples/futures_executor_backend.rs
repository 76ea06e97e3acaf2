//! A backend for another executor, certified by the conformance suite: the worked example
//! of the book chapter "Adding a backend".
//!
//! It implements the runtime and nothing else:
//!
//! * `spawn` on `futures-executor`'s `ThreadPool`;
//! * `spawn_blocking` on a thread per job (simple and correct; a production binding would
//!   keep a pool, as backend-blocking's `ThreadPoolRuntime` does);
//! * `sleep` on the core's timer thread (`TimerSleep`), since futures-executor has no timer;
//! * `consume`: poll the run stream on the calling thread.
//!
//! HTTP comes from the kit: `Backend::http_client` and `Backend::start_server` keep their
//! defaults, hyper's client and server (through `agent-hyper`) on std sockets driven by
//! threads (`conformance::kit::http::ThreadedSockets`), with every task spawned and every
//! timer armed on this runtime. An executor with a reactor of its own would pass a
//! `SocketAdapter` for its sockets instead (see `conformance::kit::http`).
//!
//! Run the suite on it with `cargo test -p conformance --example futures_executor_backend`
//! (`cargo test -p conformance` includes it), or print its report with
//! `cargo run -p conformance --example futures_executor_backend`.

use std::io;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_core::agent::Agent;
use agent_core::event::Event;
use agent_core::runtime::{BlockingJob, BoxFuture, Runtime, SharedRuntime, TimerSleep};
use conformance::Backend;
use futures_executor::{ThreadPool, block_on};
use futures_util::StreamExt;

// ---------------------------------------------------------------------------------------
// The runtime binding
// ---------------------------------------------------------------------------------------

/// futures-executor's thread pool, a thread per blocking job, the core's timer.
#[derive(Debug, Clone)]
pub struct FuturesRuntime {
    pool: ThreadPool,
}

impl FuturesRuntime {
    /// A runtime with a fresh thread pool (one thread per core).
    pub fn new() -> io::Result<Self> {
        let pool = ThreadPool::builder()
            .name_prefix("futures-pool-")
            .create()?;
        Ok(FuturesRuntime { pool })
    }
}

impl Runtime for FuturesRuntime {
    fn name(&self) -> &'static str {
        "futures-executor"
    }

    fn spawn_blocking(&self, job: BlockingJob) {
        // The contract: the job runs off the executor, and a panic in it must not unwind
        // into anything else (the core's `blocking` helper reports it as an error value).
        let spawned = std::thread::Builder::new()
            .name("futures-blocking".into())
            .spawn(move || {
                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
            });
        if let Err(err) = spawned {
            // Out of threads: dropping the job drops its result sender, so the awaiting
            // side sees the job as cancelled instead of waiting forever.
            eprintln!("could not start a blocking thread: {err}");
        }
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        Box::pin(TimerSleep::new(Instant::now() + duration))
    }

    fn spawn(&self, future: BoxFuture<()>) {
        self.pool.spawn_ok(future);
    }
}

// ---------------------------------------------------------------------------------------
// The backend under test
// ---------------------------------------------------------------------------------------

/// The runtime above; HTTP from the kit (the trait's defaults).
#[derive(Debug, Clone)]
pub struct FuturesExecutorBackend {
    runtime: Arc<FuturesRuntime>,
}

impl FuturesExecutorBackend {
    /// A backend with a fresh thread pool.
    pub fn new() -> Self {
        let runtime = FuturesRuntime::new().expect("a futures-executor thread pool");
        FuturesExecutorBackend {
            runtime: Arc::new(runtime),
        }
    }
}

impl Default for FuturesExecutorBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl Backend for FuturesExecutorBackend {
    fn name(&self) -> String {
        "futures-executor (thread pool)".to_string()
    }

    fn runtime(&self) -> SharedRuntime {
        self.runtime.clone()
    }

    fn consume(
        &self,
        agent: &Agent,
        input: &str,
        on_event: &mut dyn FnMut(Event) -> ControlFlow<()>,
    ) {
        // The run stream is pull-based: polling it on this thread drives the whole run.
        let mut run = agent.run(input);
        while let Some(event) = block_on(run.next()) {
            if on_event(event).is_break() {
                return; // dropping `run` cancels it
            }
        }
    }

    fn is_single_threaded(&self) -> bool {
        false
    }
}

// The suite: one #[test] per case (`cargo test -p conformance --example futures_executor_backend`).
conformance::suite!(futures_thread_pool => FuturesExecutorBackend::new());

fn main() {
    conformance::report::silence_expected_panics();
    let report = conformance::report::run_backend(
        || Box::new(FuturesExecutorBackend::new()),
        None,
        conformance::kit::watchdog::CASE_LIMIT,
        |run| eprintln!("{}", conformance::report::progress_line(run)),
    );
    println!(
        "{}",
        conformance::report::render_markdown(std::slice::from_ref(&report))
    );
    if report.failed() > 0 {
        std::process::exit(1);
    }
}
