//! How JSON-RPC messages reach an MCP server: [`Transport`], with [`StdioTransport`] (a child
//! process) and [`HttpTransport`] (Streamable HTTP) built in.

mod http;
mod lines;
mod stdio;

use serde_json::Value;

use agent_core::runtime::BoxFuture;

use crate::error::McpError;

pub use http::HttpTransport;
pub use stdio::StdioTransport;

/// Carries JSON-RPC messages to one MCP server and brings its responses back.
///
/// The [`McpClient`](crate::McpClient) builds the messages, applies timeouts and sends
/// cancellations; a transport only moves messages. The contract:
///
/// * `request` sends `message` (a request object whose `id` is `id`) and resolves with the
///   server's response object to it (`result` or `error` inside, not yet interpreted). A
///   broken connection resolves every waiting request with an error; nothing waits forever
///   on a closed connection.
/// * Dropping a `request` future stops waiting for its response (a late response is then
///   discarded). It does not cancel the request on the server: the client sends
///   `notifications/cancelled` for that.
/// * `notify` sends a notification; it resolves once the message is handed over.
/// * A transport may hand the message over when `request` or `notify` is called (stdio
///   queues it at once, keeping the order of calls) or when the future is first polled
///   (HTTP). Futures may be polled from any executor or thread.
pub trait Transport: Send + Sync + 'static {
    /// Send request `id` and await its response object.
    fn request(&self, id: u64, message: Value) -> BoxFuture<Result<Value, McpError>>;

    /// Send a notification.
    fn notify(&self, message: Value) -> BoxFuture<Result<(), McpError>>;

    /// The protocol version agreed in `initialize` (Streamable HTTP sends it as the
    /// `MCP-Protocol-Version` header of every later request). Does nothing by default.
    fn negotiated(&self, protocol_version: &str) {
        let _ = protocol_version;
    }

    /// What the transport talks to, for messages: `stdio: python3 server.py`, `http://…`.
    fn describe(&self) -> String;
}
