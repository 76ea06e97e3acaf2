//! [`McpError`]: what can go wrong talking to an MCP server.

use std::fmt;

use agent_core::tool::ToolError;

/// The category of an [`McpError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum McpErrorKind {
    /// The server could not be started (stdio: the program is missing or not executable).
    Spawn,
    /// The connection is gone: the server exited, closed its output, or ended the session.
    Closed,
    /// The server did not answer within the configured timeout.
    Timeout,
    /// The server broke the protocol: malformed JSON-RPC, an unexpected content type, a
    /// response without result or error.
    Protocol,
    /// The server answered with a JSON-RPC error object.
    Server,
    /// The HTTP exchange failed (connect error, unexpected status).
    Http,
    /// A message was larger than [`McpOptions::max_message_bytes`](crate::McpOptions::max_message_bytes).
    TooLarge,
    /// The server speaks no protocol version this client supports.
    UnsupportedVersion,
    /// The tool ran and reported an error (`isError: true`).
    ToolFailed,
}

impl McpErrorKind {
    /// A snake_case name for logs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            McpErrorKind::Spawn => "spawn",
            McpErrorKind::Closed => "closed",
            McpErrorKind::Timeout => "timeout",
            McpErrorKind::Protocol => "protocol",
            McpErrorKind::Server => "server_error",
            McpErrorKind::Http => "http",
            McpErrorKind::TooLarge => "too_large",
            McpErrorKind::UnsupportedVersion => "unsupported_version",
            McpErrorKind::ToolFailed => "tool_failed",
        }
    }
}

/// An error from the MCP client.
///
/// ```
/// use agent_mcp::{McpError, McpErrorKind};
/// let err = McpError::new(McpErrorKind::Timeout, "no answer to tools/call within 2s");
/// assert_eq!(err.to_string(), "MCP timeout: no answer to tools/call within 2s");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpError {
    /// The category.
    pub kind: McpErrorKind,
    /// A human-readable explanation.
    pub message: String,
    /// The JSON-RPC error code, for [`McpErrorKind::Server`].
    pub code: Option<i64>,
}

impl McpError {
    /// An error of `kind` with `message`.
    pub fn new(kind: McpErrorKind, message: impl Into<String>) -> Self {
        McpError {
            kind,
            message: message.into(),
            code: None,
        }
    }

    /// A JSON-RPC error answered by the server.
    pub fn server(code: i64, message: impl Into<String>) -> Self {
        McpError {
            kind: McpErrorKind::Server,
            message: message.into(),
            code: Some(code),
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        McpError::new(McpErrorKind::Protocol, message)
    }

    pub(crate) fn closed(message: impl Into<String>) -> Self {
        McpError::new(McpErrorKind::Closed, message)
    }
}

impl fmt::Display for McpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, self.code) {
            (McpErrorKind::Server, Some(code)) => {
                write!(f, "MCP server error {code}: {}", self.message)
            }
            (McpErrorKind::ToolFailed, _) => f.write_str(&self.message),
            (kind, _) => write!(
                f,
                "MCP {}: {}",
                kind.as_str().replace('_', " "),
                self.message
            ),
        }
    }
}

impl std::error::Error for McpError {}

impl From<McpError> for ToolError {
    /// Every MCP failure is a failed tool call, given back to the model with its message.
    fn from(err: McpError) -> Self {
        ToolError::failed(err.to_string())
    }
}

/// At most `max` characters of `text`, with `…` when cut (for error messages).
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}
