//! `--mcp` and `--mcp-url`: connect to MCP servers on the chosen runtime and collect their
//! tools for the agent.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use agent_core::tool::Tool;
use agent_mcp::{McpClient, McpError, McpOptions, parse_command_line};

use crate::cli::McpArgs;
use crate::drivers::Driver;

/// The names of the built-in demo tools, which MCP tools must not shadow.
pub const BUILT_IN_TOOLS: [&str; 2] = ["calculator", "clock"];

/// Where the tools of one MCP server came from, and what they are, for the stderr line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedServer {
    /// `stdio: cmd args` or the URL.
    pub source: String,
    /// `serverInfo.name` and `version`.
    pub server: String,
    /// The tool names.
    pub tools: Vec<String>,
}

impl ConnectedServer {
    /// `agent: MCP server NAME (SOURCE): N tools: a, b`.
    pub fn announcement(&self) -> String {
        format!(
            "agent: MCP server {} ({}): {} tool{}: {}",
            self.server,
            self.source,
            self.tools.len(),
            if self.tools.len() == 1 { "" } else { "s" },
            self.tools.join(", ")
        )
    }
}

/// The tools of every server of the flags, and what to announce about each server.
pub struct McpTools {
    /// The tools, for the agent.
    pub tools: Vec<Arc<dyn Tool>>,
    /// One entry per server, in the order of the flags.
    pub servers: Vec<ConnectedServer>,
}

/// Check the flags without starting anything: every `--mcp` parses into a command, every
/// `--mcp-url` is an http(s) URL.
///
/// ```
/// use agent_cli::cli::McpArgs;
/// use agent_cli::mcp::check;
/// let ok = McpArgs { servers: vec!["python3 server.py".into()], urls: vec!["http://127.0.0.1:8000/mcp".into()], mcp_timeout: None };
/// assert!(check(&ok).is_ok());
/// let empty = McpArgs { servers: vec!["  ".into()], ..McpArgs::default() };
/// assert!(check(&empty).unwrap_err().contains("--mcp"));
/// let url = McpArgs { urls: vec!["localhost:8000".into()], ..McpArgs::default() };
/// assert!(check(&url).unwrap_err().contains("http://"));
/// ```
pub fn check(args: &McpArgs) -> Result<(), String> {
    for line in &args.servers {
        parse_command_line(line).map_err(|err| format!("--mcp {line:?}: {err}"))?;
    }
    for url in &args.urls {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "--mcp-url must start with http:// or https:// (got {url:?})"
            ));
        }
    }
    Ok(())
}

/// Connect to every server of `args` on `driver`'s runtime and return their tools (and what
/// to announce). A server that cannot be reached, or two tools with one name, is an error
/// naming the server.
pub fn connect(driver: &dyn Driver, args: &McpArgs) -> Result<McpTools, String> {
    check(args)?;
    let mut options = McpOptions::new().client_info("agent-cli", env!("CARGO_PKG_VERSION"));
    if let Some(timeout) = args.mcp_timeout {
        options = options.request_timeout(timeout).initialize_timeout(timeout);
    }
    let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
    let mut servers = Vec::new();
    let mut names: HashSet<String> = BUILT_IN_TOOLS.iter().map(|s| s.to_string()).collect();
    let mut add = |client: McpClient| -> Result<(), String> {
        let source = client.describe();
        let listed = run(driver, {
            let client = client.clone();
            async move { client.tools().await }
        })
        .map_err(|err| format!("the MCP server {source} could not list its tools: {err}"))?;
        let mut tool_names = Vec::new();
        for tool in listed {
            let name = tool.definition().name.clone();
            if !names.insert(name.clone()) {
                return Err(format!(
                    "the MCP server {source} offers a tool named {name:?}, a name another tool already has"
                ));
            }
            tool_names.push(name);
            tools.push(tool);
        }
        let info = client.server_info();
        servers.push(ConnectedServer {
            source,
            server: format!("{} {}", info.name, info.version).trim().to_owned(),
            tools: tool_names,
        });
        Ok(())
    };
    for line in &args.servers {
        let command = parse_command_line(line).map_err(|err| format!("--mcp {line:?}: {err}"))?;
        let spawner = driver.process_spawner();
        let runtime = driver.runtime();
        let options = options.clone();
        let client = run(driver, async move {
            McpClient::stdio(&*spawner, command, runtime, options).await
        })
        .map_err(|err| format!("--mcp {line:?}: {err}"))?;
        add(client)?;
    }
    for url in &args.urls {
        let http = driver.http_client();
        let runtime = driver.runtime();
        let options = options.clone();
        let target = url.clone();
        let client = run(driver, async move {
            McpClient::http(http, target, runtime, options).await
        })
        .map_err(|err| format!("--mcp-url {url}: {err}"))?;
        add(client)?;
    }
    Ok(McpTools { tools, servers })
}

/// Run `future` on the driver and return its output.
fn run<T: Send + 'static>(
    driver: &dyn Driver,
    future: impl Future<Output = Result<T, McpError>> + Send + 'static,
) -> Result<T, McpError> {
    let slot = Arc::new(Mutex::new(None));
    let out = slot.clone();
    driver.block_on(Box::pin(async move {
        let value = future.await;
        *out.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
    }));
    let value = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    value.unwrap_or_else(|| {
        Err(McpError::new(
            agent_mcp::McpErrorKind::Closed,
            "the runtime stopped before the MCP server answered",
        ))
    })
}
