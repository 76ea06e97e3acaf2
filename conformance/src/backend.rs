//! The one trait a backend implements to be certified by the suite.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;

use agent_core::agent::{Agent, RunStream};
use agent_core::event::Event;
use agent_core::http::HttpClient;
use agent_core::process::SharedProcessSpawner;
use agent_core::runtime::{BoxFuture, SharedRuntime};
use agent_core::server::ServerConfig;

/// A backend under test: a runtime binding, an HTTP client and an HTTP server.
///
/// Every method is called from a plain test thread (never from inside an async runtime), so a
/// backend may block in [`consume`](Backend::consume) and
/// [`start_server`](Backend::start_server) as needed.
///
/// A backend for a new executor may implement only the runtime part ([`name`](Self::name),
/// [`runtime`](Self::runtime), [`consume`](Self::consume),
/// [`is_single_threaded`](Self::is_single_threaded)): [`http_client`](Self::http_client) and
/// [`start_server`](Self::start_server) then default to the kit's HTTP stack
/// ([`kit::http`](crate::kit::http): hyper through `agent-hyper`, on
/// [`ThreadedSockets`](crate::kit::http::ThreadedSockets)), with every task and timer on
/// the backend's runtime, so the HTTP cases still exercise its executor. Override them to
/// certify the backend's own HTTP client and server, or use the kit's stack with a
/// [`SocketAdapter`](crate::kit::http::SocketAdapter) for the executor's own sockets.
pub trait Backend: Send + Sync + 'static {
    /// A name for test output and the report, e.g. `"tokio (current_thread)"`.
    fn name(&self) -> String;

    /// The runtime agents under test are built on.
    fn runtime(&self) -> SharedRuntime;

    /// The backend's HTTP client, used for the upstream cases.
    ///
    /// Called once per case: return a **fresh** client (with its own connection pool, if it
    /// pools). The accounting cases count the process's sockets before and after a case, so
    /// kept-alive connections of a client shared across cases would count as leaked.
    ///
    /// Defaults to the kit's client ([`kit::http::client`](crate::kit::http::client) on
    /// [`ThreadedSockets`](crate::kit::http::ThreadedSockets), timing on
    /// [`runtime`](Self::runtime)).
    fn http_client(&self) -> Arc<dyn HttpClient> {
        crate::kit::http::client(crate::kit::http::ThreadedSockets, self.runtime())
    }

    /// Run `agent` on `input` through the backend's own entry point (a `Stream` driven by its
    /// executor, or an `Iterator` on threads) and call `on_event` with each event the moment
    /// it is produced.
    ///
    /// Return when the run ends, or as soon as `on_event` returns `ControlFlow::Break`, after
    /// dropping the run (which cancels it). Blocks the calling thread until then.
    fn consume(
        &self,
        agent: &Agent,
        input: &str,
        on_event: &mut dyn FnMut(Event) -> ControlFlow<()>,
    );

    /// [`consume`](Backend::consume) for a run the case started itself (so that it keeps
    /// the run's handles: [`RunStream::approvals`], [`RunStream::cancel_handle`]): drive
    /// `run` through the backend's own entry point, calling `on_event` with each event the
    /// moment it is produced; return when it ends or as soon as `on_event` breaks (dropping
    /// the run). Blocks the calling thread until then.
    ///
    /// Defaults to polling `run` on the calling thread with the core's thread-parking
    /// [`block_on`](agent_core::runtime::block_on), which is right for a backend whose
    /// runtime makes progress without the calling thread. A backend whose executor *is* the
    /// calling thread (a current-thread runtime) overrides it, as it does `consume`.
    fn consume_stream(&self, run: RunStream, on_event: &mut dyn FnMut(Event) -> ControlFlow<()>) {
        use futures_util::StreamExt;
        let mut run = run;
        while let Some(event) = agent_core::runtime::block_on(run.next()) {
            if on_event(event).is_break() {
                break;
            }
        }
    }

    /// Start the backend's HTTP server serving `agent` with `config` (whose `addr` is
    /// `127.0.0.1:0`); return once it accepts connections.
    ///
    /// Defaults to the kit's server ([`kit::http::start_server`](crate::kit::http::start_server)
    /// on [`ThreadedSockets`](crate::kit::http::ThreadedSockets)), whose tasks run on the
    /// agent's runtime.
    fn start_server(&self, agent: Agent, config: ServerConfig) -> Box<dyn RunningServer> {
        let server =
            crate::kit::http::start_server(crate::kit::http::ThreadedSockets, agent, config)
                .unwrap_or_else(|err| panic!("the kit's server could not bind 127.0.0.1: {err}"));
        Box::new(server)
    }

    /// `true` when [`consume`](Backend::consume) and tasks spawned through
    /// [`runtime`](Backend::runtime) all run on one thread, so that a task that never yields
    /// would starve the others. The starvation cases only run in this mode.
    fn is_single_threaded(&self) -> bool;

    /// The backend's way to start child processes with piped stdio (the MCP stdio cases
    /// use it); `None` (the default) makes those cases not applicable.
    fn process_spawner(&self) -> Option<SharedProcessSpawner> {
        None
    }

    /// Run `future` to completion on the calling thread, with the backend's I/O driven
    /// meanwhile (the MCP cases connect to their servers with it, outside any run).
    ///
    /// Defaults to the core's thread-parking [`block_on`](agent_core::runtime::block_on),
    /// which is right when the runtime drives its I/O on threads of its own; a backend
    /// whose reactor only runs while a thread drives it (a current-thread runtime)
    /// overrides it.
    fn block_on(&self, future: BoxFuture<()>) {
        agent_core::runtime::block_on(future)
    }
}

/// A server started by [`Backend::start_server`].
pub trait RunningServer: Send {
    /// The address it listens on.
    fn addr(&self) -> SocketAddr;

    /// How many runs the server is streaming right now: its
    /// [`AgentService::running_streams`](agent_core::server::AgentService::running_streams)
    /// (`server.service().running_streams()`). The leak and soak cases check that it comes
    /// back to 0 once every client is done; `None` (the default) skips that check.
    fn running_streams(&self) -> Option<usize> {
        None
    }

    /// Graceful shutdown: stop accepting, end open streams with a terminal event, and return
    /// once the server has stopped (within a few seconds).
    fn shutdown(self: Box<Self>);
}
