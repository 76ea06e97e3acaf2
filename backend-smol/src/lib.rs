//! The smol backend of `agent-core`: run agents on smol's executors, talk to model servers
//! over HTTP, and serve agents over the HTTP API — with no tokio runtime anywhere (hyper
//! brings only tokio's `sync` channels).
//!
//! ```
//! use futures_lite::StreamExt;
//! use agent_core::event::EventKind;
//! use agent_core::model::{ScriptedModel, Turn};
//!
//! let agent = backend_smol::agent_builder()
//!     .model(ScriptedModel::new([Turn::new().text("Hello, ").text("world!")]))
//!     .build()
//!     .unwrap();
//!
//! smol::block_on(async {
//!     let mut run = agent.run("Say hello");
//!     while let Some(event) = run.next().await {
//!         // Each event arrives the moment the run produces it.
//!         if let EventKind::TextDelta { text } = &event.kind {
//!             print!("{text}");
//!         }
//!     }
//! });
//! ```
//!
//! What is here:
//!
//! * [`SmolRuntime`]: the core's [`Runtime`](agent_core::runtime::Runtime) on smol's global
//!   executor or on an [`async_executor::Executor`] of your own (including one driven by a
//!   single thread), with blocking work on the [`blocking`] pool and [`async_io`] timers.
//! * [`SmolClient`]: the core's [`HttpClient`](agent_core::http::HttpClient), hyper's HTTP/1.1
//!   (through [`agent_hyper`]) over [`async_net`] with TLS by [`futures_rustls`]; bodies
//!   stream as they arrive, connections are kept alive.
//! * [`SmolServer`]: the agent HTTP API (SSE runs, OpenAI-compatible chat completions,
//!   health) on hyper through [`agent_hyper`], flushing every event the moment it is
//!   produced.
//! * [`SmolSpawner`]: the core's [`ProcessSpawner`](agent_core::process::ProcessSpawner) on
//!   [`smol::process`] (child processes with piped stdio, e.g. MCP servers).
//! * [`agent_builder`] and [`openai_model`]: the two lines most programs start with.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod process;
mod runtime;
mod server;
mod tls;

use std::sync::Arc;

use agent_core::agent::{Agent, AgentBuilder};
use agent_core::model::{OpenAiConfig, OpenAiModel};

/// The executor crate [`SmolRuntime::with_executor`] takes, re-exported so that its version
/// always matches.
pub use async_executor;
pub use client::SmolClient;
pub use process::SmolSpawner;
pub use runtime::SmolRuntime;
pub use server::{SHUTDOWN_GRACE, SmolServer};

// The book's "Using smol" page: its Rust samples are compiled (and run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/src/using-smol.md")]
struct UsingSmolBookPage;

/// An [`AgentBuilder`] whose runtime is [`SmolRuntime::global`].
///
/// To run on an executor of your own, set
/// `.runtime(SmolRuntime::with_executor(executor).shared())` instead.
pub fn agent_builder() -> AgentBuilder {
    Agent::builder().runtime(SmolRuntime::global().shared())
}

/// An OpenAI-compatible model (OpenAI, Ollama, vLLM, llama.cpp, …) speaking through a
/// [`SmolClient`].
///
/// ```
/// use agent_core::model::OpenAiConfig;
///
/// let model = backend_smol::openai_model(OpenAiConfig::new("http://127.0.0.1:11434/v1", "llama3.2"));
/// let agent = backend_smol::agent_builder().model(model).build().unwrap();
/// # drop(agent);
/// ```
pub fn openai_model(config: OpenAiConfig) -> OpenAiModel {
    OpenAiModel::new(config, Arc::new(SmolClient::new()))
}
