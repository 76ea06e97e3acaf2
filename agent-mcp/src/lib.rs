//! Model Context Protocol tools for agent-core: the tools an MCP server offers become agent
//! tools, over stdio (a child process started through the backend) or Streamable HTTP (the
//! backend's `HttpClient`), on every runtime.
//!
//! ```
//! use std::sync::Arc;
//! use agent_core::runtime::{block_on, BoxFuture, SharedRuntime, TestRuntime};
//! use agent_core::tool::{Tool, ToolContext};
//! use agent_mcp::{McpClient, McpError, McpOptions, Transport};
//! use serde_json::{json, Value};
//!
//! // A server in this process, so the example runs anywhere. Real programs use
//! // `McpClient::stdio(&backend_tokio::TokioSpawner::current(), command, rt, options)` or
//! // `McpClient::http(Arc::new(backend_tokio::ReqwestClient::new()), url, rt, options)`.
//! struct EchoServer;
//! impl Transport for EchoServer {
//!     fn request(&self, id: u64, message: Value) -> BoxFuture<Result<Value, McpError>> {
//!         let result = match message["method"].as_str() {
//!             Some("initialize") => json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
//!                                          "serverInfo": {"name": "echo", "version": "1"}}),
//!             Some("tools/list") => json!({"tools": [{"name": "echo", "description": "Echo the text",
//!                 "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}]}),
//!             _ => json!({"content": [{"type": "text", "text": message["params"]["arguments"]["text"]}]}),
//!         };
//!         Box::pin(async move { Ok(json!({"jsonrpc": "2.0", "id": id, "result": result})) })
//!     }
//!     fn notify(&self, _message: Value) -> BoxFuture<Result<(), McpError>> {
//!         Box::pin(async { Ok(()) })
//!     }
//!     fn describe(&self) -> String { "echo (in process)".into() }
//! }
//!
//! let rt: SharedRuntime = Arc::new(TestRuntime::new());
//! block_on(async {
//!     let client = McpClient::connect(EchoServer, rt.clone(), McpOptions::new()).await?;
//!     assert_eq!(client.server_info().name, "echo");
//!     // Hand these to `AgentBuilder::shared_tool`.
//!     let tools = client.tools().await?;
//!     assert_eq!(tools[0].definition().name, "echo");
//!     let cx = ToolContext::new(rt.clone(), "call_1");
//!     let output = tools[0].call(json!({"text": "hi"}), cx).await.unwrap();
//!     assert_eq!(output, json!("hi"));
//!     Ok::<(), McpError>(())
//! })
//! .unwrap();
//! ```
//!
//! # What is here
//!
//! * [`McpClient`]: `initialize` with protocol version negotiation
//!   ([`SUPPORTED_PROTOCOL_VERSIONS`]), `tools/list` with pagination, `tools/call`; every
//!   request has a timeout, and a request dropped or timed out is cancelled on the server
//!   with `notifications/cancelled`.
//! * [`McpTool`]: one server tool as an agent [`Tool`](agent_core::tool::Tool): text results
//!   as text, `structuredContent` as JSON, `isError` and every transport fault as a tool
//!   error the model sees.
//! * [`StdioTransport`] and [`HttpTransport`], or any [`Transport`] of your own.
//! * [`parse_command_line`]: `'cmd args…'` as the CLI's `--mcp` takes it.
//!
//! The crate depends on no runtime and no HTTP library (like agent-core): processes come from
//! the backend's [`ProcessSpawner`](agent_core::process::ProcessSpawner), HTTP from its
//! [`HttpClient`](agent_core::http::HttpClient), timers from its
//! [`Runtime`](agent_core::runtime::Runtime).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod command_line;
mod error;
pub mod jsonrpc;
mod tool;
pub mod transport;

pub use client::{
    DEFAULT_INITIALIZE_TIMEOUT, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_REQUEST_TIMEOUT,
    LATEST_PROTOCOL_VERSION, McpClient, McpOptions, SUPPORTED_PROTOCOL_VERSIONS, ServerInfo,
};
pub use command_line::parse_command_line;
pub use error::{McpError, McpErrorKind};
pub use tool::{McpTool, McpToolInfo, ToolCallResult, agent_tool_name};
pub use transport::{HttpTransport, StdioTransport, Transport};

// The book's "MCP tools" page: its Rust samples are compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/src/mcp.md")]
struct McpBookPage;
