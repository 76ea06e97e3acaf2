//! The tokio backend in two flavours: [`TokioCurrentThread`], a current-thread runtime where
//! one thread drives everything (the setup where starvation shows), and [`TokioMultiThread`],
//! a multi-thread runtime with a pool of workers.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::thread::JoinHandle;

use agent_core::agent::{Agent, RunStream};
use agent_core::event::Event;
use agent_core::http::HttpClient;
use agent_core::process::SharedProcessSpawner;
use agent_core::runtime::{BoxFuture, SharedRuntime};
use agent_core::server::{AgentService, ServerConfig};
use backend_tokio::tokio::runtime::{Builder, Runtime};
use backend_tokio::tokio::sync::oneshot;
use backend_tokio::{ReqwestClient, TokioClient, TokioRuntime, TokioServer, TokioSpawner};
use futures_util::StreamExt;

use conformance::{Backend, RunningServer};

/// Worker threads of [`TokioMultiThread`]'s runtime.
const WORKER_THREADS: usize = 2;

/// tokio on a current-thread runtime.
///
/// [`consume`](Backend::consume) runs the consumer inside `Runtime::block_on` on the calling
/// thread, and tasks spawned through the runtime land on the same runtime, so they only make
/// progress when the consumer yields (tokio's cooperative budget and the run stream's own
/// make sure it does). A server started by [`start_server`](Backend::start_server) gets one
/// dedicated thread that drives the runtime (`block_on`) until the server stops.
pub struct TokioCurrentThread {
    runtime: Arc<Runtime>,
    /// Speak HTTP through [`TokioClient`] instead of [`ReqwestClient`].
    tokio_client: bool,
}

impl TokioCurrentThread {
    /// A backend on a new current-thread runtime (timers and I/O enabled).
    pub fn new() -> Self {
        let runtime = Builder::new_current_thread()
            .enable_all()
            .thread_name("tokio-current-thread")
            .build()
            .expect("failed to build a current-thread tokio runtime");
        TokioCurrentThread {
            runtime: Arc::new(runtime),
            tokio_client: false,
        }
    }

    /// The same backend with [`TokioClient`] (hyper driven by the polling task) as its HTTP
    /// client instead of [`ReqwestClient`].
    pub fn with_tokio_client() -> Self {
        TokioCurrentThread {
            tokio_client: true,
            ..TokioCurrentThread::new()
        }
    }
}

impl Default for TokioCurrentThread {
    fn default() -> Self {
        TokioCurrentThread::new()
    }
}

impl Backend for TokioCurrentThread {
    fn name(&self) -> String {
        if self.tokio_client {
            return "tokio (current_thread, TokioClient)".into();
        }
        "tokio (current_thread)".into()
    }

    fn runtime(&self) -> SharedRuntime {
        Arc::new(TokioRuntime::from_handle(self.runtime.handle().clone()))
    }

    fn http_client(&self) -> Arc<dyn HttpClient> {
        if self.tokio_client {
            return Arc::new(TokioClient::with_handle(self.runtime.handle().clone()));
        }
        Arc::new(ReqwestClient::new().runtime_handle(self.runtime.handle().clone()))
    }

    fn consume(
        &self,
        agent: &Agent,
        input: &str,
        on_event: &mut dyn FnMut(Event) -> ControlFlow<()>,
    ) {
        // This thread is the runtime: the consumer and every spawned task share it.
        self.consume_stream(agent.run(input), on_event);
    }

    fn consume_stream(&self, run: RunStream, on_event: &mut dyn FnMut(Event) -> ControlFlow<()>) {
        self.runtime.block_on(async {
            consume(run, on_event).await;
            // Cancelling a run drops its HTTP response, which wakes the connection task that
            // owns the socket (hyper's design); on a current-thread runtime that task only
            // runs while the runtime is driven. A program on this runtime keeps driving it;
            // `block_on` would return at once, so let the tasks woken by the cancellation run
            // (a bounded number of scheduler rounds) before handing the thread back.
            settle().await;
        });
    }

    fn start_server(&self, agent: Agent, config: ServerConfig) -> Box<dyn RunningServer> {
        let runtime = self.runtime.clone();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let driver = std::thread::Builder::new()
            .name("tokio-current-thread-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let server = match TokioServer::bind(agent, config).await {
                        Ok(server) => server,
                        Err(err) => {
                            let _ = bound_tx.send(Err(err));
                            return;
                        }
                    };
                    let _ = bound_tx.send(Ok((server.local_addr(), server.service().clone())));
                    // Serve (this thread drives the runtime) until told to stop.
                    let _ = stop_rx.await;
                    server.shutdown().await;
                });
            })
            .expect("failed to start the runtime thread");
        let (addr, service) = bound_rx
            .recv()
            .expect("the runtime thread ended before binding")
            .expect("the tokio server failed to bind");
        Box::new(RunningCurrentThreadServer {
            addr,
            service,
            stop: Some(stop_tx),
            driver: Some(driver),
        })
    }

    fn is_single_threaded(&self) -> bool {
        true
    }

    fn process_spawner(&self) -> Option<SharedProcessSpawner> {
        Some(Arc::new(TokioSpawner::from_handle(
            self.runtime.handle().clone(),
        )))
    }

    fn block_on(&self, future: BoxFuture<()>) {
        // This thread drives the runtime (and its reactor) while the future runs.
        self.runtime.block_on(future)
    }
}

/// tokio on a multi-thread runtime with two workers; the consumer runs
/// inside `Runtime::block_on` on the calling thread, spawned tasks and the server on the
/// workers.
pub struct TokioMultiThread {
    runtime: Arc<Runtime>,
    /// Speak HTTP through [`TokioClient`] instead of [`ReqwestClient`].
    tokio_client: bool,
}

impl TokioMultiThread {
    /// A backend on a new multi-thread runtime (timers and I/O enabled).
    pub fn new() -> Self {
        let runtime = Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .enable_all()
            .thread_name("tokio-worker")
            .build()
            .expect("failed to build a multi-thread tokio runtime");
        TokioMultiThread {
            runtime: Arc::new(runtime),
            tokio_client: false,
        }
    }

    /// The same backend with [`TokioClient`] (hyper driven by the polling task) as its HTTP
    /// client instead of [`ReqwestClient`].
    pub fn with_tokio_client() -> Self {
        TokioMultiThread {
            tokio_client: true,
            ..TokioMultiThread::new()
        }
    }
}

impl Default for TokioMultiThread {
    fn default() -> Self {
        TokioMultiThread::new()
    }
}

impl Backend for TokioMultiThread {
    fn name(&self) -> String {
        let client = if self.tokio_client {
            ", TokioClient"
        } else {
            ""
        };
        format!("tokio (multi_thread, {WORKER_THREADS} workers{client})")
    }

    fn runtime(&self) -> SharedRuntime {
        Arc::new(TokioRuntime::from_handle(self.runtime.handle().clone()))
    }

    fn http_client(&self) -> Arc<dyn HttpClient> {
        if self.tokio_client {
            return Arc::new(TokioClient::with_handle(self.runtime.handle().clone()));
        }
        Arc::new(ReqwestClient::new().runtime_handle(self.runtime.handle().clone()))
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
        self.runtime.block_on(consume(run, on_event));
    }

    fn start_server(&self, agent: Agent, config: ServerConfig) -> Box<dyn RunningServer> {
        let server = self
            .runtime
            .block_on(TokioServer::bind(agent, config))
            .expect("the tokio server failed to bind");
        Box::new(RunningMultiThreadServer {
            server: Some(server),
            runtime: self.runtime.clone(),
        })
    }

    fn is_single_threaded(&self) -> bool {
        false
    }

    fn process_spawner(&self) -> Option<SharedProcessSpawner> {
        Some(Arc::new(TokioSpawner::from_handle(
            self.runtime.handle().clone(),
        )))
    }

    fn block_on(&self, future: BoxFuture<()>) {
        // This thread drives the runtime (and its reactor) while the future runs.
        self.runtime.block_on(future)
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

/// Yield to the scheduler a few times, so that tasks woken by a cancellation (a connection
/// task closing its socket) run before `block_on` returns.
async fn settle() {
    for _ in 0..SETTLE_ROUNDS {
        backend_tokio::tokio::task::yield_now().await;
    }
}

/// Scheduler rounds [`settle`] gives woken tasks; closing a dropped connection takes one.
const SETTLE_ROUNDS: usize = 4;

struct RunningCurrentThreadServer {
    addr: SocketAddr,
    /// The server's service (the server itself lives on the runtime thread).
    service: AgentService,
    stop: Option<oneshot::Sender<()>>,
    driver: Option<JoinHandle<()>>,
}

impl RunningCurrentThreadServer {
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(driver) = self.driver.take() {
            let _ = driver.join();
        }
    }
}

impl RunningServer for RunningCurrentThreadServer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn running_streams(&self) -> Option<usize> {
        Some(self.service.running_streams())
    }

    fn shutdown(mut self: Box<Self>) {
        // The runtime thread runs the graceful shutdown and returns when it is done.
        self.stop();
    }
}

impl Drop for RunningCurrentThreadServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct RunningMultiThreadServer {
    server: Option<TokioServer>,
    runtime: Arc<Runtime>,
}

impl RunningServer for RunningMultiThreadServer {
    fn addr(&self) -> SocketAddr {
        self.server
            .as_ref()
            .map_or_else(|| ([0, 0, 0, 0], 0).into(), TokioServer::local_addr)
    }

    fn running_streams(&self) -> Option<usize> {
        self.server
            .as_ref()
            .map(|server| server.service().running_streams())
    }

    fn shutdown(mut self: Box<Self>) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}
