//! Run streaming LLM agents on [tokio](https://tokio.rs): the core's runtime, HTTP client and
//! HTTP server, bound to tokio, reqwest and axum.
//!
//! ```
//! use futures_util::StreamExt;
//! use agent_core::event::EventKind;
//! use agent_core::model::{ScriptedModel, Turn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A scripted model needs no API key; use `backend_tokio::openai_model(...)` for a real one.
//! let agent = backend_tokio::agent_builder()
//!     .instructions("Answer briefly.")
//!     .model(ScriptedModel::new([Turn::new().text("Hello").text(", world!")]))
//!     .build()
//!     .unwrap();
//!
//! let mut run = agent.run("Say hello");
//! while let Some(event) = run.next().await {
//!     match &event.kind {
//!         EventKind::TextDelta { text } => print!("{text}"),
//!         EventKind::RunCompleted { text, .. } => assert_eq!(text, "Hello, world!"),
//!         _ => {}
//!     }
//! }
//! # }
//! ```
//!
//! What is here:
//!
//! * [`TokioRuntime`]: the core's [`Runtime`](agent_core::runtime::Runtime) on a tokio
//!   handle (blocking pool, timers, spawning, tokio's cooperative budget). Works on the
//!   current-thread and the multi-thread runtime.
//! * [`ReqwestClient`]: the core's [`HttpClient`](agent_core::http::HttpClient) on reqwest
//!   with rustls (no OpenSSL), streaming body chunks as they arrive.
//! * [`TokioClient`]: the same contract on hyper's client over tokio's sockets, driven by
//!   whoever polls the body (no connection task): the cheaper client per chunk, used by
//!   `agent serve` on tokio (see its docs for why).
//! * [`TokioServer`] and [`router`]: the agent HTTP API (`POST /v1/runs` as SSE,
//!   `POST /v1/chat/completions`, `GET /healthz`) on axum, standalone or nested in your app.
//! * [`TokioSpawner`]: the core's [`ProcessSpawner`](agent_core::process::ProcessSpawner)
//!   on [`tokio::process`] (child processes with piped stdio, e.g. MCP servers).
//! * [`agent_builder`], [`openai_model`], [`spawn_run`]: short ways to the above.
//!
//! The run stream itself ([`RunStream`](agent_core::agent::RunStream)) is a
//! `futures_core::Stream`: poll it with `StreamExt::next` in any tokio task.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod hyper_client;
mod process;
mod run;
mod runtime;
mod server;

pub use client::ReqwestClient;
pub use hyper_client::TokioClient;
pub use process::TokioSpawner;
/// The reqwest crate behind [`ReqwestClient`] (for [`ReqwestClient::with_client`]).
pub use reqwest;
pub use run::{agent_builder, openai_model, spawn_run};
pub use runtime::TokioRuntime;
pub use server::{DEFAULT_SHUTDOWN_TIMEOUT, TokioServer, router, sse_response};
/// The book page "Using tokio": every Rust sample in it is compiled (and most are run) as a
/// doctest of this crate, so the page cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../docs/src/using-tokio.md")]
struct UsingTokioBookPage;

/// The tokio crate this backend is built on (to build runtimes of the same version).
pub use tokio;
