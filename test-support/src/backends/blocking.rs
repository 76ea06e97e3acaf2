//! The plain-threads backend: [`Threads`].
//!
//! [`consume`](Backend::consume) iterates `backend_blocking::run`'s `Iterator` on the calling
//! thread; blocking jobs run on the shared [`ThreadPoolRuntime`], timers on the core's timer
//! thread, and the [`ThreadServer`] serves each connection on a thread of its own. Nothing is
//! driven by an executor, so nothing can be starved: the backend is not single-threaded.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;

use agent_core::agent::{Agent, RunStream};
use agent_core::event::Event;
use agent_core::http::HttpClient;
use agent_core::process::SharedProcessSpawner;
use agent_core::runtime::SharedRuntime;
use agent_core::server::ServerConfig;
use backend_blocking::{ThreadPoolRuntime, ThreadServer, ThreadSpawner, UreqClient};

use conformance::{Backend, RunningServer};

/// Plain OS threads: an `Iterator` of events, a bounded blocking pool, the ureq client and
/// the threaded server.
#[derive(Debug, Default, Clone, Copy)]
pub struct Threads;

impl Backend for Threads {
    fn name(&self) -> String {
        "threads".into()
    }

    fn runtime(&self) -> SharedRuntime {
        ThreadPoolRuntime::global().shared()
    }

    fn http_client(&self) -> Arc<dyn HttpClient> {
        Arc::new(UreqClient::new())
    }

    fn consume(
        &self,
        agent: &Agent,
        input: &str,
        on_event: &mut dyn FnMut(Event) -> ControlFlow<()>,
    ) {
        // Breaking out of the loop drops the iterator, which cancels the run.
        for event in backend_blocking::run(agent, input) {
            if on_event(event).is_break() {
                break;
            }
        }
    }

    fn consume_stream(&self, run: RunStream, on_event: &mut dyn FnMut(Event) -> ControlFlow<()>) {
        for event in backend_blocking::RunIter::new(run) {
            if on_event(event).is_break() {
                break;
            }
        }
    }

    fn start_server(&self, agent: Agent, config: ServerConfig) -> Box<dyn RunningServer> {
        let server = ThreadServer::bind(agent, config).expect("the threaded server failed to bind");
        Box::new(RunningThreadServer { server })
    }

    fn is_single_threaded(&self) -> bool {
        false
    }

    fn process_spawner(&self) -> Option<SharedProcessSpawner> {
        Some(Arc::new(ThreadSpawner::new()))
    }
}

struct RunningThreadServer {
    server: ThreadServer,
}

impl RunningServer for RunningThreadServer {
    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    fn running_streams(&self) -> Option<usize> {
        Some(self.server.service().running_streams())
    }

    fn shutdown(self: Box<Self>) {
        self.server.shutdown();
    }
}
