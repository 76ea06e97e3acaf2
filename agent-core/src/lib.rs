//! Runtime-agnostic core of a streaming LLM agent: events, an incremental SSE codec, models,
//! tools, the agent loop and the HTTP API logic — over the `futures` traits, with no async
//! runtime and no HTTP library.
//!
//! ```
//! use std::sync::Arc;
//! use futures_util::StreamExt;
//! use agent_core::agent::Agent;
//! use agent_core::event::EventKind;
//! use agent_core::model::{ScriptedModel, Turn};
//! use agent_core::runtime::{block_on, TestRuntime};
//! use agent_core::tool::{typed_tool, ToolError};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Add { a: i64, b: i64 }
//!
//! // A scripted model: first it calls a tool, then it answers in two deltas.
//! let model = ScriptedModel::new([
//!     Turn::new().tool_call("call_1", "add", r#"{"a": 2, "b": 2}"#),
//!     Turn::new().text("2 + 2 = ").text("4"),
//! ]);
//! let agent = Agent::builder()
//!     .model(model)
//!     .tool(typed_tool("add", "Add two integers", |args: Add| async move {
//!         Ok::<_, ToolError>(args.a + args.b)
//!     }))
//!     // A backend crate provides the runtime: TokioRuntime, SmolRuntime, ThreadPoolRuntime.
//!     .runtime(TestRuntime::new())
//!     .build()
//!     .unwrap();
//!
//! // `run` returns the event stream at once; each event is produced as it is polled.
//! let mut answer = String::new();
//! block_on(agent.run("What is 2 + 2?").for_each(|event| {
//!     if let EventKind::TextDelta { text } = &event.kind {
//!         answer.push_str(text);
//!     }
//!     std::future::ready(())
//! }));
//! assert_eq!(answer, "2 + 2 = 4");
//! ```
//!
//! # Modules
//!
//! * [`event`]: the events of a run and their stable JSON form.
//! * [`agent`]: [`Agent`](agent::Agent), its builder, [`RunStream`](agent::RunStream) and
//!   sessions.
//! * [`model`]: the [`Model`](model::Model) trait, the OpenAI-compatible provider and the
//!   scripted model.
//! * [`tool`]: tools — async, blocking and typed.
//! * [`runtime`] and [`http`]: the two traits a backend implements; [`process`]: the
//!   optional third, child processes with piped stdio (for MCP servers over stdio).
//! * [`sse`]: the sans-IO Server-Sent Events decoder and encoder.
//! * [`server`]: the HTTP API, independent of any HTTP library.
//! * [`store`]: where a server keeps sessions and runs (memory, SQLite, PostgreSQL).
//! * [`policy`], [`error`], [`secret`]: retries and timeouts, error kinds, redacted secrets.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod error;
pub mod event;
pub mod http;
pub mod model;
pub mod policy;
pub mod process;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod sse;
pub mod store;
pub mod tool;

/// The serde, serde_json and schemars this crate is built with, re-exported so that typed
/// tools' argument types need not match their versions.
pub use schemars;
pub use serde;
pub use serde_json;
