//! The executors the backends are measured on, and one way to drive a run on each.

use std::sync::Arc;

use agent_core::agent::{Agent, AgentBuilder};
use agent_core::event::Event;
use agent_core::http::HttpClient;
use agent_core::runtime::SharedRuntime;
use backend_blocking::{ThreadPoolRuntime, UreqClient};
use backend_smol::async_executor::Executor;
use backend_smol::{SmolClient, SmolRuntime};
use backend_tokio::{ReqwestClient, TokioRuntime};
use futures_util::StreamExt;

/// A backend on a given executor setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// backend-tokio on a current-thread runtime, driven by the measuring thread.
    TokioCurrent,
    /// backend-tokio on a multi-thread runtime (2 workers); the consumer is a spawned task.
    TokioMulti,
    /// backend-tokio on a multi-thread runtime (2 workers), the run polled on `block_on`'s
    /// thread: what `#[tokio::main]` code looks like.
    TokioMultiBlockOn,
    /// backend-smol on one executor driven by the measuring thread (`SmolRuntime::block_on`).
    SmolSingle,
    /// backend-blocking: the `RunIter` iterator on the measuring thread.
    Blocking,
}

impl Flavor {
    /// Every flavor, in report order.
    pub const ALL: [Flavor; 5] = [
        Flavor::TokioCurrent,
        Flavor::TokioMulti,
        Flavor::TokioMultiBlockOn,
        Flavor::SmolSingle,
        Flavor::Blocking,
    ];

    /// The row label in the report.
    pub fn label(self) -> &'static str {
        match self {
            Flavor::TokioCurrent => "tokio (current_thread)",
            Flavor::TokioMulti => "tokio (multi_thread, 2 workers, spawned task)",
            Flavor::TokioMultiBlockOn => "tokio (multi_thread, 2 workers, in block_on)",
            Flavor::SmolSingle => "smol (1 thread)",
            Flavor::Blocking => "blocking (iterator)",
        }
    }
}

/// A flavor with its runtime built, ready to drive runs.
pub struct Exec {
    flavor: Flavor,
    client: std::sync::OnceLock<Arc<dyn HttpClient>>,
    tokio: Option<tokio::runtime::Runtime>,
    smol: Option<SmolRuntime>,
}

impl Exec {
    /// Build the executor of `flavor`.
    pub fn new(flavor: Flavor) -> Exec {
        let tokio = match flavor {
            Flavor::TokioCurrent => Some(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio current-thread runtime"),
            ),
            Flavor::TokioMulti | Flavor::TokioMultiBlockOn => Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio multi-thread runtime"),
            ),
            _ => None,
        };
        let smol = (flavor == Flavor::SmolSingle)
            .then(|| SmolRuntime::with_executor(Arc::new(Executor::new())));
        Exec {
            flavor,
            client: std::sync::OnceLock::new(),
            tokio,
            smol,
        }
    }

    /// The tokio runtime's handle, for the tokio flavors.
    pub fn tokio_handle(&self) -> Option<tokio::runtime::Handle> {
        self.tokio.as_ref().map(|rt| rt.handle().clone())
    }

    /// The flavor.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The core runtime an agent of this flavor uses.
    pub fn runtime(&self) -> SharedRuntime {
        match self.flavor {
            Flavor::TokioCurrent | Flavor::TokioMulti | Flavor::TokioMultiBlockOn => Arc::new(
                TokioRuntime::from_handle(self.tokio.as_ref().expect("tokio").handle().clone()),
            ),
            Flavor::SmolSingle => self.smol.as_ref().expect("smol").shared(),
            Flavor::Blocking => ThreadPoolRuntime::global().shared(),
        }
    }

    /// An agent builder with this flavor's runtime.
    pub fn agent_builder(&self) -> AgentBuilder {
        Agent::builder().runtime(self.runtime())
    }

    /// The backend's own HTTP client.
    pub fn http_client(&self) -> Arc<dyn HttpClient> {
        match self.flavor {
            Flavor::TokioCurrent | Flavor::TokioMulti | Flavor::TokioMultiBlockOn => Arc::new(
                ReqwestClient::new()
                    .runtime_handle(self.tokio.as_ref().expect("tokio").handle().clone()),
            ),
            Flavor::SmolSingle => Arc::new(SmolClient::new()),
            Flavor::Blocking => Arc::new(UreqClient::new()),
        }
    }

    /// One HTTP client of this flavor, built on first use and kept.
    pub fn http_client_cached(&self) -> Arc<dyn HttpClient> {
        self.client.get_or_init(|| self.http_client()).clone()
    }

    /// Run `agent` on `input` and fold its events into `state` with `f` until the run ends
    /// or `f` returns `false` (which drops, i.e. cancels, the run). Returns the state.
    pub fn fold<S, F>(&self, agent: &Agent, input: &str, state: S, f: F) -> S
    where
        S: Send + 'static,
        F: FnMut(&mut S, &Event) -> bool + Send + 'static,
    {
        let (mut state, mut f) = (state, f);
        if self.flavor == Flavor::Blocking {
            for event in backend_blocking::run(agent, input) {
                if !f(&mut state, &event) {
                    break;
                }
            }
            return state;
        }
        let mut run = agent.run(input);
        let consume = async move {
            while let Some(event) = run.next().await {
                if !f(&mut state, &event) {
                    break;
                }
            }
            state
        };
        match self.flavor {
            Flavor::TokioMulti => {
                let rt = self.tokio.as_ref().expect("tokio");
                rt.block_on(async { tokio::spawn(consume).await.expect("consumer task") })
            }
            Flavor::SmolSingle => self.smol.as_ref().expect("smol").block_on(consume),
            _ => self.tokio.as_ref().expect("tokio").block_on(consume),
        }
    }

    /// Drive an arbitrary future on this executor (the blocking flavor uses the core's
    /// thread-parking `block_on`).
    pub fn block_on<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        match self.flavor {
            Flavor::TokioCurrent | Flavor::TokioMultiBlockOn => {
                self.tokio.as_ref().expect("tokio").block_on(future)
            }
            Flavor::TokioMulti => {
                let rt = self.tokio.as_ref().expect("tokio");
                rt.block_on(async { tokio::spawn(future).await.expect("task") })
            }
            Flavor::SmolSingle => self.smol.as_ref().expect("smol").block_on(future),
            Flavor::Blocking => agent_core::runtime::block_on(future),
        }
    }
}
