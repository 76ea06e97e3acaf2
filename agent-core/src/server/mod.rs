//! The HTTP API every backend serves, minus the sockets: routing, authentication, request
//! parsing, error bodies, SSE framing, keep-alives, OpenAI-compatible chunks, session storage,
//! the concurrent-run limit and graceful shutdown.
//!
//! A backend's server reads a request, hands method, path, headers and body to
//! [`AgentService::handle`], and writes the [`ApiResponse`] it gets back: a complete JSON body,
//! or a [`ResponseBody`] stream of byte chunks that it must write **and flush** one by one as
//! they come. That keeps the behaviour identical on tokio, smol and plain threads.
//!
//! ```
//! use std::sync::Arc;
//! use futures_util::StreamExt;
//! use agent_core::agent::Agent;
//! use agent_core::model::{ScriptedModel, Turn};
//! use agent_core::runtime::{block_on, TestRuntime};
//! use agent_core::server::{AgentService, ApiBody, ServerConfig};
//!
//! let agent = Agent::builder()
//!     .model(ScriptedModel::new([Turn::new().text("Hi!")]))
//!     .runtime(TestRuntime::new())
//!     .build()
//!     .unwrap();
//! let service = AgentService::new(agent, ServerConfig::default());
//! let json = [("content-type", "application/json")];
//! let response = block_on(service.handle("POST", "/v1/runs", &json, br#"{"input":"hello"}"#));
//! assert_eq!(response.status, 200);
//! assert!(response.headers.iter().any(|(n, v)| *n == "x-accel-buffering" && v == "no"));
//! let ApiBody::Stream(body) = response.body else { panic!("expected a stream") };
//! let frames: Vec<_> = block_on(body.collect());
//! let text = String::from_utf8(frames.concat()).unwrap();
//! assert!(text.starts_with("id: 0\nevent: run_started\ndata: {"));
//! assert!(text.contains("event: run_completed"));
//! ```

mod ag_ui;
mod ai_sdk;
mod approvals;
mod body;
mod chat;
mod config;
mod cors;
mod json_text;
mod protocol;
mod response;
mod responses;
mod runs;
mod service;

pub use body::ResponseBody;
pub use chat::{ChatCompletionRequest, ChatFunctionCall, ChatMessage, ChatToolCall};
pub use config::{MIN_HEAD_BYTES, ServerConfig};
pub use response::{ApiBody, ApiError, ApiResponse};
pub use service::{AgentService, RunRequest, encode_event_frame, sse_response};

/// The comment frame a server sends on an idle SSE stream.
pub const KEEP_ALIVE_FRAME: &str = ": keep-alive\n\n";
