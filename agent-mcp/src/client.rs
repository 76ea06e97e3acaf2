//! [`McpClient`]: the MCP lifecycle (`initialize`), `tools/list` and `tools/call`, with
//! timeouts and cancellation.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agent_core::http::HttpClient;
use agent_core::process::{ProcessCommand, ProcessSpawner};
use agent_core::runtime::{self, SharedRuntime};
use agent_core::tool::Tool;
use serde_json::{Value, json};

use crate::error::{McpError, McpErrorKind};
use crate::jsonrpc;
use crate::tool::{McpTool, McpToolInfo, ToolCallResult};
use crate::transport::{HttpTransport, StdioTransport, Transport};

/// The protocol version this client asks for first.
pub const LATEST_PROTOCOL_VERSION: &str = "2025-06-18";

/// Every protocol version this client speaks; a server answering `initialize` with another
/// one is refused ([`McpErrorKind::UnsupportedVersion`]).
pub const SUPPORTED_PROTOCOL_VERSIONS: &[&str] = &["2025-06-18", "2025-03-26", "2024-11-05"];

/// Default of [`McpOptions::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Default of [`McpOptions::initialize_timeout`].
pub const DEFAULT_INITIALIZE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default of [`McpOptions::max_message_bytes`]: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// How long a `notifications/cancelled` may take to go out before it is given up (it must
/// not keep a connection, or a thread, alive forever).
const CANCEL_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Most `tools/list` pages followed before giving up on a server that never stops paging.
const MAX_LIST_PAGES: usize = 1000;

/// How an [`McpClient`] behaves.
///
/// ```
/// use std::time::Duration;
/// use agent_mcp::McpOptions;
///
/// let options = McpOptions::new()
///     .request_timeout(Duration::from_secs(5))
///     .tool_prefix("files_")
///     .header("authorization", "Bearer t0ken");
/// assert_eq!(options.get_request_timeout(), Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct McpOptions {
    request_timeout: Duration,
    initialize_timeout: Duration,
    max_message_bytes: usize,
    tool_prefix: String,
    client_name: String,
    client_version: String,
    headers: Vec<(String, String)>,
}

impl fmt::Debug for McpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("McpOptions")
            .field("request_timeout", &self.request_timeout)
            .field("initialize_timeout", &self.initialize_timeout)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("tool_prefix", &self.tool_prefix)
            .field("client_name", &self.client_name)
            .field("header_names", &header_names)
            .finish()
    }
}

impl Default for McpOptions {
    fn default() -> Self {
        McpOptions {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            initialize_timeout: DEFAULT_INITIALIZE_TIMEOUT,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            tool_prefix: String::new(),
            client_name: "agent-mcp".into(),
            client_version: env!("CARGO_PKG_VERSION").into(),
            headers: Vec::new(),
        }
    }
}

impl McpOptions {
    /// The defaults.
    pub fn new() -> Self {
        McpOptions::default()
    }

    /// How long a request (`tools/list`, `tools/call`) may wait for its answer before it
    /// fails with [`McpErrorKind::Timeout`] and is cancelled on the server (default
    /// [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The request timeout.
    pub fn get_request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// How long `initialize` may take (default [`DEFAULT_INITIALIZE_TIMEOUT`]).
    pub fn initialize_timeout(mut self, timeout: Duration) -> Self {
        self.initialize_timeout = timeout;
        self
    }

    /// The largest message accepted from the server: a stdio line, an HTTP body, an SSE
    /// event (default [`DEFAULT_MAX_MESSAGE_BYTES`]).
    pub fn max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// Prepended to every tool name given to the agent (to keep two servers' tools apart);
    /// the server is still called with its own names (see
    /// [`agent_tool_name`](crate::agent_tool_name)).
    pub fn tool_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.tool_prefix = prefix.into();
        self
    }

    /// The `clientInfo` sent in `initialize` (default `agent-mcp` and this crate's version).
    pub fn client_info(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.client_name = name.into();
        self.client_version = version.into();
        self
    }

    /// An extra header on every HTTP request (Streamable HTTP only), e.g. `Authorization`.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What the server said about itself in `initialize`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerInfo {
    /// The protocol version both sides use.
    pub protocol_version: String,
    /// `serverInfo.name`.
    pub name: String,
    /// `serverInfo.version`.
    pub version: String,
    /// The server's `capabilities` object.
    pub capabilities: Value,
    /// `instructions`, if the server gave any.
    pub instructions: Option<String>,
}

/// A connection to one MCP server. Cheap to clone; the connection (and, over stdio, the
/// child process) ends when the last clone and the last tool made from it are dropped.
///
/// Each request has a timeout ([`McpOptions::request_timeout`]). A request whose future is
/// dropped before its answer (the run was cancelled, the timeout fired) is cancelled on the
/// server with `notifications/cancelled`.
#[derive(Clone)]
pub struct McpClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Box<dyn Transport>,
    runtime: SharedRuntime,
    options: McpOptions,
    next_id: AtomicU64,
    server: ServerInfo,
}

impl fmt::Debug for McpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpClient")
            .field("transport", &self.inner.transport.describe())
            .field("server", &self.inner.server)
            .finish_non_exhaustive()
    }
}

impl McpClient {
    /// Start `command` through `spawner` (the backend's) and initialize it.
    pub async fn stdio(
        spawner: &dyn ProcessSpawner,
        command: ProcessCommand,
        runtime: SharedRuntime,
        options: McpOptions,
    ) -> Result<McpClient, McpError> {
        let transport = StdioTransport::spawn(spawner, &command, options.max_message_bytes)?;
        McpClient::connect(transport, runtime, options).await
    }

    /// Connect to the Streamable HTTP endpoint `url` through `client` (the backend's
    /// `HttpClient`) and initialize.
    pub async fn http(
        client: Arc<dyn HttpClient>,
        url: impl Into<String>,
        runtime: SharedRuntime,
        options: McpOptions,
    ) -> Result<McpClient, McpError> {
        let transport = HttpTransport::new(
            client,
            url,
            options.headers.clone(),
            options.max_message_bytes,
        );
        McpClient::connect(transport, runtime, options).await
    }

    /// Initialize a server over any [`Transport`]: `initialize` (protocol version
    /// negotiation), then `notifications/initialized`.
    pub async fn connect(
        transport: impl Transport,
        runtime: SharedRuntime,
        options: McpOptions,
    ) -> Result<McpClient, McpError> {
        let params = json!({
            "protocolVersion": LATEST_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": options.client_name, "version": options.client_version},
        });
        let transport: Box<dyn Transport> = Box::new(transport);
        let message = jsonrpc::request(0, "initialize", params);
        let answer = runtime::timeout(
            &*runtime,
            options.initialize_timeout,
            transport.request(0, message),
        )
        .await
        .ok_or_else(|| {
            McpError::new(
                McpErrorKind::Timeout,
                format!(
                    "{} did not answer initialize within {:?}",
                    transport.describe(),
                    options.initialize_timeout
                ),
            )
        })??;
        let result = jsonrpc::into_result(answer)?;
        let server = parse_server_info(&result)?;
        if !SUPPORTED_PROTOCOL_VERSIONS.contains(&server.protocol_version.as_str()) {
            return Err(McpError::new(
                McpErrorKind::UnsupportedVersion,
                format!(
                    "{} speaks MCP {}, this client {}",
                    transport.describe(),
                    server.protocol_version,
                    SUPPORTED_PROTOCOL_VERSIONS.join(", ")
                ),
            ));
        }
        transport.negotiated(&server.protocol_version);
        transport
            .notify(jsonrpc::notification("notifications/initialized", None))
            .await?;
        Ok(McpClient {
            inner: Arc::new(Inner {
                transport,
                runtime,
                options,
                next_id: AtomicU64::new(1),
                server,
            }),
        })
    }

    /// What the server said about itself.
    pub fn server_info(&self) -> &ServerInfo {
        &self.inner.server
    }

    /// Send request `method` and await its `result`, within the request timeout.
    ///
    /// Dropping the future before the answer, or the timeout firing, sends
    /// `notifications/cancelled` for it.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, McpError> {
        let inner = &self.inner;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let message = jsonrpc::request(id, method, params);
        let mut guard = CancelOnDrop {
            client: Some(self.clone()),
            id,
        };
        let answer = runtime::timeout(
            &*inner.runtime,
            inner.options.request_timeout,
            inner.transport.request(id, message),
        )
        .await;
        let answer = match answer {
            None => {
                return Err(McpError::new(
                    McpErrorKind::Timeout,
                    format!(
                        "{} did not answer {method} within {:?}",
                        inner.transport.describe(),
                        inner.options.request_timeout
                    ),
                ));
                // `guard` sends notifications/cancelled.
            }
            Some(answer) => answer,
        };
        // Answered (or the connection is gone): nothing to cancel.
        guard.client = None;
        jsonrpc::into_result(answer?)
    }

    /// Every tool the server offers (`tools/list`, following `nextCursor` to the end).
    pub async fn list_tools(&self) -> Result<Vec<McpToolInfo>, McpError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let params = match &cursor {
                Some(cursor) => json!({"cursor": cursor}),
                None => json!({}),
            };
            let page = self.request("tools/list", params).await?;
            let Some(items) = page.get("tools").and_then(Value::as_array) else {
                return Err(McpError::protocol(
                    "tools/list answered without a tools array",
                ));
            };
            for item in items {
                tools.push(McpToolInfo::from_json(item)?);
            }
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(next) if !next.is_empty() && cursor.as_deref() != Some(next) => {
                    cursor = Some(next.to_owned());
                }
                _ => return Ok(tools),
            }
        }
        Err(McpError::protocol(format!(
            "tools/list did not end after {MAX_LIST_PAGES} pages"
        )))
    }

    /// Call tool `name` with `arguments` (`tools/call`).
    ///
    /// A result with `isError: true` is returned as a [`ToolCallResult`] whose
    /// [`is_error`](ToolCallResult::is_error) is set; [`McpTool`] turns it into a tool error.
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: Value,
    ) -> Result<ToolCallResult, McpError> {
        let arguments = match arguments {
            Value::Null => json!({}),
            other => other,
        };
        let result = self
            .request("tools/call", json!({"name": name, "arguments": arguments}))
            .await?;
        ToolCallResult::from_json(result)
    }

    /// The server's tools as agent tools, named with [`McpOptions::tool_prefix`] (and made
    /// acceptable to model APIs by [`agent_tool_name`](crate::agent_tool_name)).
    ///
    /// ```no_run
    /// # async fn demo(client: agent_mcp::McpClient, builder: agent_core::agent::AgentBuilder) -> Result<(), agent_mcp::McpError> {
    /// let mut builder = builder;
    /// for tool in client.tools().await? {
    ///     builder = builder.shared_tool(tool);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn tools(&self) -> Result<Vec<Arc<dyn Tool>>, McpError> {
        let prefix = &self.inner.options.tool_prefix;
        Ok(self
            .list_tools()
            .await?
            .into_iter()
            .map(|info| Arc::new(McpTool::new(self.clone(), info, prefix)) as Arc<dyn Tool>)
            .collect())
    }

    /// What the transport talks to, for messages.
    pub fn describe(&self) -> String {
        self.inner.transport.describe()
    }
}

fn parse_server_info(result: &Value) -> Result<ServerInfo, McpError> {
    let protocol_version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| McpError::protocol("initialize answered without protocolVersion"))?
        .to_owned();
    let info = result.get("serverInfo");
    let text = |key: &str| {
        info.and_then(|i| i.get(key))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    Ok(ServerInfo {
        protocol_version,
        name: text("name"),
        version: text("version"),
        capabilities: result.get("capabilities").cloned().unwrap_or(json!({})),
        instructions: result
            .get("instructions")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// Sends `notifications/cancelled` for request `id` when dropped while armed.
struct CancelOnDrop {
    client: Option<McpClient>,
    id: u64,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let message = jsonrpc::notification(
            "notifications/cancelled",
            Some(json!({"requestId": self.id, "reason": "the caller stopped waiting"})),
        );
        tracing::debug!(id = self.id, server = %client.describe(), "cancelling an MCP request");
        let send = client.inner.transport.notify(message);
        // Drop cannot await: the notification goes out on a short task of the runtime.
        let runtime = client.inner.runtime.clone();
        let timer = runtime.clone();
        runtime.spawn(Box::pin(async move {
            let _ = runtime::timeout(&*timer, CANCEL_SEND_TIMEOUT, send).await;
            drop(client);
        }));
    }
}
