//! The smol backend in two flavours: [`SmolSingleThread`], where one thread drives
//! everything (the setup where starvation shows), and [`SmolMultiThread`], an executor run
//! by a pool of threads.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::thread::JoinHandle;

use agent_core::agent::{Agent, RunStream};
use agent_core::event::Event;
use agent_core::http::HttpClient;
use agent_core::process::SharedProcessSpawner;
use agent_core::runtime::{BoxFuture, SharedRuntime};
use agent_core::server::ServerConfig;
use backend_smol::async_executor::Executor;
use backend_smol::{SmolClient, SmolRuntime, SmolServer, SmolSpawner};
use futures_util::StreamExt;

use conformance::{Backend, RunningServer};

/// Threads of [`SmolMultiThread`]'s executor.
const POOL_THREADS: usize = 2;

/// smol on an [`Executor`] that only one thread runs at a time.
///
/// [`consume`](Backend::consume) runs the consumer inside `executor.run(..)` on the calling
/// thread, and tasks spawned through the runtime go to the same executor, so they only make
/// progress when the consumer yields. A server started by
/// [`start_server`](Backend::start_server) gets one dedicated thread that runs the executor
/// until the server stops.
pub struct SmolSingleThread {
    runtime: SmolRuntime,
    executor: Arc<Executor<'static>>,
}

impl Default for SmolSingleThread {
    fn default() -> Self {
        let executor = Arc::new(Executor::new());
        SmolSingleThread {
            runtime: SmolRuntime::with_executor(executor.clone()),
            executor,
        }
    }
}

impl Backend for SmolSingleThread {
    fn name(&self) -> String {
        "smol (single thread)".into()
    }

    fn runtime(&self) -> SharedRuntime {
        self.runtime.shared()
    }

    fn http_client(&self) -> Arc<dyn HttpClient> {
        Arc::new(SmolClient::new())
    }

    fn consume(
        &self,
        agent: &Agent,
        input: &str,
        on_event: &mut dyn FnMut(Event) -> ControlFlow<()>,
    ) {
        // `block_on(executor.run(consumer))`: this thread is the executor.
        self.consume_stream(agent.run(input), on_event);
    }

    fn consume_stream(&self, run: RunStream, on_event: &mut dyn FnMut(Event) -> ControlFlow<()>) {
        self.runtime.block_on(consume(run, on_event));
    }

    fn start_server(&self, agent: Agent, config: ServerConfig) -> Box<dyn RunningServer> {
        let server = SmolServer::bind(agent, config).expect("the smol server failed to bind");
        let stop = StopSignal::default();
        let stopped = stop.clone();
        let executor = self.executor.clone();
        let driver = std::thread::Builder::new()
            .name("smol-single-thread".into())
            .spawn(move || SmolRuntime::with_executor(executor).block_on(stopped.stopped()))
            .expect("failed to start the executor thread");
        Box::new(RunningSmolServer {
            server,
            driver: Some((stop, driver)),
        })
    }

    fn is_single_threaded(&self) -> bool {
        true
    }

    fn process_spawner(&self) -> Option<SharedProcessSpawner> {
        Some(Arc::new(SmolSpawner::new()))
    }

    fn block_on(&self, future: BoxFuture<()>) {
        // `block_on(executor.run(future))`: this thread is the executor meanwhile.
        self.runtime.block_on(future)
    }
}

/// smol on an [`Executor`] run by a pool of dedicated threads
/// ([`SmolRuntime::with_threads`]); the consumer runs on the calling thread.
pub struct SmolMultiThread {
    runtime: SmolRuntime,
}

impl Default for SmolMultiThread {
    fn default() -> Self {
        SmolMultiThread {
            runtime: SmolRuntime::with_threads(POOL_THREADS)
                .expect("failed to start the executor threads"),
        }
    }
}

impl Backend for SmolMultiThread {
    fn name(&self) -> String {
        format!("smol ({POOL_THREADS} threads)")
    }

    fn runtime(&self) -> SharedRuntime {
        self.runtime.shared()
    }

    fn http_client(&self) -> Arc<dyn HttpClient> {
        Arc::new(SmolClient::new())
    }

    fn consume(
        &self,
        agent: &Agent,
        input: &str,
        on_event: &mut dyn FnMut(Event) -> ControlFlow<()>,
    ) {
        self.consume_stream(agent.run(input), on_event);
    }

    fn consume_stream(&self, run: RunStream, on_event: &mut dyn FnMut(Event) -> ControlFlow<()>) {
        agent_core::runtime::block_on(consume(run, on_event));
    }

    fn start_server(&self, agent: Agent, config: ServerConfig) -> Box<dyn RunningServer> {
        let server = SmolServer::bind(agent, config).expect("the smol server failed to bind");
        Box::new(RunningSmolServer {
            server,
            driver: None,
        })
    }

    fn is_single_threaded(&self) -> bool {
        false
    }

    fn process_spawner(&self) -> Option<SharedProcessSpawner> {
        Some(Arc::new(SmolSpawner::new()))
    }
}

async fn consume(mut run: RunStream, on_event: &mut dyn FnMut(Event) -> ControlFlow<()>) {
    while let Some(event) = run.next().await {
        if on_event(event).is_break() {
            break;
        }
    }
    // Dropping the run cancels it if it had not ended.
    drop(run);
}

/// A one-shot stop signal for the executor thread of [`SmolSingleThread`]'s server.
#[derive(Clone, Default)]
struct StopSignal(Arc<(AtomicBool, Mutex<Option<Waker>>)>);

impl StopSignal {
    fn stop(&self) {
        self.0.0.store(true, Ordering::Release);
        let waker = self.0.1.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    async fn stopped(&self) {
        std::future::poll_fn(|cx| {
            if self.0.0.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            *self.0.1.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
            if self.0.0.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await
    }
}

struct RunningSmolServer {
    server: SmolServer,
    /// For the single-threaded flavour: the thread running the executor, and its stop signal.
    driver: Option<(StopSignal, JoinHandle<()>)>,
}

impl RunningServer for RunningSmolServer {
    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    fn running_streams(&self) -> Option<usize> {
        Some(self.server.service().running_streams())
    }

    fn shutdown(self: Box<Self>) {
        let RunningSmolServer { server, driver } = *self;
        // The server's tasks run on the executor thread(s); this thread only waits.
        agent_core::runtime::block_on(server.shutdown());
        if let Some((stop, thread)) = driver {
            stop.stop();
            let _ = thread.join();
        }
    }
}
