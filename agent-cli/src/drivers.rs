//! One driver per runtime: build the agent on it, consume a run, serve HTTP.
//!
//! The three drivers are shaped alike on purpose: the rest of the CLI does not know which
//! runtime it runs on.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use agent_core::agent::{Agent, RunStream};
use agent_core::event::Event;
use agent_core::http::HttpClient;
use agent_core::process::SharedProcessSpawner;
use agent_core::runtime::{BoxFuture, SharedRuntime};
use agent_core::server::ServerConfig;
use futures_util::StreamExt;

use crate::cli::RuntimeChoice;

/// A runtime the CLI can run on.
pub trait Driver {
    /// The runtime agents are built on.
    fn runtime(&self) -> SharedRuntime;
    /// The HTTP client of this runtime.
    fn http_client(&self) -> Arc<dyn HttpClient>;
    /// How this runtime starts child processes (MCP servers over stdio).
    fn process_spawner(&self) -> SharedProcessSpawner;
    /// Run `future` to completion on this thread, the runtime's I/O driven meanwhile
    /// (connecting to MCP servers before a run).
    fn block_on(&self, future: BoxFuture<()>);
    /// Drive `run` to its end, calling `on_event` as each event arrives; stop early (and
    /// cancel the run) if `on_event` fails.
    fn consume(
        &self,
        run: RunStream,
        on_event: &mut dyn FnMut(Event) -> io::Result<()>,
    ) -> io::Result<()>;
    /// Serve `agent` with `config` until `stop` returns, then shut down gracefully.
    /// `on_listening` is told the bound address.
    fn serve(
        &self,
        agent: Agent,
        config: ServerConfig,
        on_listening: &mut dyn FnMut(SocketAddr),
        stop: &mut dyn FnMut(),
    ) -> io::Result<()>;
}

/// Hand each event of `run` to `on_event` as it arrives (the async backends' consumer).
async fn drain(
    mut run: RunStream,
    on_event: &mut dyn FnMut(Event) -> io::Result<()>,
) -> io::Result<()> {
    while let Some(event) = run.next().await {
        on_event(event)?;
    }
    Ok(())
}

/// The driver for `choice`.
pub fn driver(choice: RuntimeChoice) -> io::Result<Box<dyn Driver>> {
    Ok(match choice {
        RuntimeChoice::Tokio => Box::new(TokioDriver::new()?),
        RuntimeChoice::Smol => Box::new(SmolDriver::new()),
        RuntimeChoice::Blocking => Box::new(BlockingDriver::new()),
    })
}

/// tokio: a multi-thread runtime, `TokioClient` (hyper over tokio's sockets), axum.
pub struct TokioDriver {
    runtime: backend_tokio::tokio::runtime::Runtime,
}

impl TokioDriver {
    /// Start a multi-thread tokio runtime.
    pub fn new() -> io::Result<Self> {
        let runtime = backend_tokio::tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        Ok(TokioDriver { runtime })
    }
}

impl Driver for TokioDriver {
    fn runtime(&self) -> SharedRuntime {
        Arc::new(backend_tokio::TokioRuntime::from_handle(
            self.runtime.handle().clone(),
        ))
    }

    fn http_client(&self) -> Arc<dyn HttpClient> {
        // TokioClient, not ReqwestClient: it decodes everything one socket read brought in
        // the task that polls the body (no connection task, no hand-over per chunk), which
        // makes a relaying server about 3x cheaper per event (docs/performance.md, 2b).
        Arc::new(backend_tokio::TokioClient::with_handle(
            self.runtime.handle().clone(),
        ))
    }

    fn process_spawner(&self) -> SharedProcessSpawner {
        Arc::new(backend_tokio::TokioSpawner::from_handle(
            self.runtime.handle().clone(),
        ))
    }

    fn block_on(&self, future: BoxFuture<()>) {
        self.runtime.block_on(future)
    }

    fn consume(
        &self,
        run: RunStream,
        on_event: &mut dyn FnMut(Event) -> io::Result<()>,
    ) -> io::Result<()> {
        self.runtime.block_on(drain(run, on_event))
    }

    fn serve(
        &self,
        agent: Agent,
        config: ServerConfig,
        on_listening: &mut dyn FnMut(SocketAddr),
        stop: &mut dyn FnMut(),
    ) -> io::Result<()> {
        let server = self
            .runtime
            .block_on(backend_tokio::TokioServer::bind(agent, config))?;
        on_listening(server.local_addr());
        stop();
        self.runtime.block_on(server.shutdown());
        Ok(())
    }
}

/// smol: the global executor, hyper.
pub struct SmolDriver {
    runtime: backend_smol::SmolRuntime,
}

impl SmolDriver {
    /// Use smol's global executor.
    pub fn new() -> Self {
        SmolDriver {
            runtime: backend_smol::SmolRuntime::global(),
        }
    }
}

impl Default for SmolDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl Driver for SmolDriver {
    fn runtime(&self) -> SharedRuntime {
        Arc::new(self.runtime.clone())
    }

    fn http_client(&self) -> Arc<dyn HttpClient> {
        Arc::new(backend_smol::SmolClient::new())
    }

    fn process_spawner(&self) -> SharedProcessSpawner {
        Arc::new(backend_smol::SmolSpawner::new())
    }

    fn block_on(&self, future: BoxFuture<()>) {
        self.runtime.block_on(future)
    }

    fn consume(
        &self,
        run: RunStream,
        on_event: &mut dyn FnMut(Event) -> io::Result<()>,
    ) -> io::Result<()> {
        self.runtime.block_on(drain(run, on_event))
    }

    fn serve(
        &self,
        agent: Agent,
        config: ServerConfig,
        on_listening: &mut dyn FnMut(SocketAddr),
        stop: &mut dyn FnMut(),
    ) -> io::Result<()> {
        let server = backend_smol::SmolServer::bind(agent, config)?;
        on_listening(server.local_addr());
        stop();
        self.runtime.block_on(server.shutdown());
        Ok(())
    }
}

/// Plain threads: a thread pool, ureq, the threaded server.
pub struct BlockingDriver {
    runtime: SharedRuntime,
}

impl BlockingDriver {
    /// Use the process-wide thread pool.
    pub fn new() -> Self {
        BlockingDriver {
            runtime: backend_blocking::ThreadPoolRuntime::global().shared(),
        }
    }
}

impl Default for BlockingDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl Driver for BlockingDriver {
    fn runtime(&self) -> SharedRuntime {
        self.runtime.clone()
    }

    fn http_client(&self) -> Arc<dyn HttpClient> {
        Arc::new(backend_blocking::UreqClient::new())
    }

    fn process_spawner(&self) -> SharedProcessSpawner {
        Arc::new(backend_blocking::ThreadSpawner::new())
    }

    fn block_on(&self, future: BoxFuture<()>) {
        agent_core::runtime::block_on(future)
    }

    fn consume(
        &self,
        run: RunStream,
        on_event: &mut dyn FnMut(Event) -> io::Result<()>,
    ) -> io::Result<()> {
        for event in backend_blocking::RunIter::new(run) {
            on_event(event)?;
        }
        Ok(())
    }

    fn serve(
        &self,
        agent: Agent,
        config: ServerConfig,
        on_listening: &mut dyn FnMut(SocketAddr),
        stop: &mut dyn FnMut(),
    ) -> io::Result<()> {
        let server = backend_blocking::ThreadServer::bind(agent, config)?;
        on_listening(server.local_addr());
        stop();
        server.shutdown();
        Ok(())
    }
}
