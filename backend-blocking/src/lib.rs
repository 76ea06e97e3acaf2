//! Run streaming agents on plain OS threads: no async runtime, an [`Iterator`] of events.
//!
//! ```
//! use agent_core::event::EventKind;
//! use agent_core::model::{ScriptedModel, Turn};
//!
//! let agent = backend_blocking::agent_builder()
//!     .instructions("Answer briefly.")
//!     .model(ScriptedModel::new([Turn::new().text("Hello").text(", world!")]))
//!     .build()
//!     .unwrap();
//!
//! // Each event arrives the moment the run produces it.
//! for event in backend_blocking::run(&agent, "Say hello") {
//!     match event.kind {
//!         EventKind::TextDelta { text } => print!("{text}"),
//!         EventKind::RunCompleted { text, .. } => assert_eq!(text, "Hello, world!"),
//!         _ => {}
//!     }
//! }
//! ```
//!
//! The crate binds the runtime-agnostic `agent-core` to threads, for synchronous programs,
//! CLIs and code that must not depend on an async runtime:
//!
//! * [`run`] / [`RunIter`]: a run as an `Iterator<Item = Event>` polled on the calling
//!   thread; dropping it cancels the run;
//! * [`ThreadPoolRuntime`]: the core's runtime on a bounded pool of blocking threads plus the
//!   core's timer thread;
//! * [`UreqClient`]: the HTTP client (ureq 3, rustls), each response read on a thread of its
//!   own and handed over chunk by chunk;
//! * [`ThreadServer`]: the agent HTTP API on `std::net`, flushing every event as it is
//!   produced;
//! * [`ThreadSpawner`]: the core's [`ProcessSpawner`](agent_core::process::ProcessSpawner)
//!   on [`std::process`], a thread per pipe (child processes, e.g. MCP servers);
//! * [`agent_builder`] and [`openai_model`]: the usual wiring in one call.
//!
//! No tokio, async-std, smol or async executor is involved: futures are driven by the core's
//! thread-parking [`block_on`](agent_core::runtime::block_on), which runs exactly one future.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body_reader;
mod client;
mod connection;
mod iter;
mod options;
mod process;
mod runtime;
mod server;
mod shared;
mod waiting;

use std::sync::Arc;

use agent_core::agent::{Agent, AgentBuilder};
use agent_core::model::{OpenAiConfig, OpenAiModel};

pub use client::{BODY_CHANNEL_CAPACITY, MAX_RESPONSE_HEAD_BYTES, READ_BUFFER_SIZE, UreqClient};
pub use iter::{RunIter, run, run_session};
pub use options::ThreadServerOptions;
pub use process::ThreadSpawner;
pub use runtime::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_THREADS, ThreadPoolBuilder, ThreadPoolRuntime,
};
pub use server::{ShutdownSignal, ThreadServer};

// The book's "Using plain threads" page: its Rust samples are compiled (and run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/src/using-threads.md")]
struct UsingThreadsBookPage;

// The README's sample, compiled and run as a doctest too.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct Readme;

/// An [`AgentBuilder`] with the runtime already set to [`ThreadPoolRuntime::shared`].
///
/// ```
/// use agent_core::model::{ScriptedModel, Turn};
///
/// let agent = backend_blocking::agent_builder()
///     .model(ScriptedModel::new([Turn::new().text("ok")]))
///     .build()
///     .unwrap();
/// assert_eq!(agent.runtime().name(), "threads");
/// ```
pub fn agent_builder() -> AgentBuilder {
    Agent::builder().runtime(ThreadPoolRuntime::global().shared())
}

/// An [`OpenAiModel`] (any OpenAI-compatible Chat Completions server) speaking through a new
/// [`UreqClient`].
///
/// ```no_run
/// use agent_core::model::OpenAiConfig;
///
/// let model = backend_blocking::openai_model(OpenAiConfig::new("http://127.0.0.1:11434/v1", "llama3.2"));
/// let agent = backend_blocking::agent_builder().model(model).build().unwrap();
/// for event in backend_blocking::run(&agent, "Why is the sky blue?") {
///     println!("{}", serde_json::to_string(&event).unwrap());
/// }
/// ```
pub fn openai_model(config: OpenAiConfig) -> OpenAiModel {
    OpenAiModel::new(config, Arc::new(UreqClient::new()))
}
