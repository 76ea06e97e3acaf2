//! MCP tools as agent tools: [`McpToolInfo`] (what `tools/list` says), [`ToolCallResult`]
//! (what `tools/call` answers) and [`McpTool`] (the [`Tool`] the agent calls).

use serde_json::{Value, json};

use agent_core::tool::{Tool, ToolContext, ToolDefinition, ToolError, ToolFuture};

use crate::client::McpClient;
use crate::error::{McpError, McpErrorKind};

/// One tool as listed by the server.
#[derive(Debug, Clone, PartialEq)]
pub struct McpToolInfo {
    /// `name`.
    pub name: String,
    /// `title`, if any.
    pub title: Option<String>,
    /// `description` (empty if none).
    pub description: String,
    /// `inputSchema` (a JSON Schema object).
    pub input_schema: Value,
    /// `outputSchema`, if any.
    pub output_schema: Option<Value>,
}

impl McpToolInfo {
    /// Read one entry of `tools/list`'s `tools` array.
    pub fn from_json(item: &Value) -> Result<Self, McpError> {
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| McpError::protocol(format!("a tool without a name: {item}")))?;
        let text = |key: &str| item.get(key).and_then(Value::as_str).map(str::to_owned);
        let input_schema = match item.get("inputSchema") {
            Some(schema @ Value::Object(_)) => schema.clone(),
            _ => json!({"type": "object"}),
        };
        Ok(McpToolInfo {
            name: name.to_owned(),
            title: text("title"),
            description: text("description").unwrap_or_default(),
            input_schema,
            output_schema: item.get("outputSchema").cloned(),
        })
    }
}

/// The answer of `tools/call`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallResult {
    /// The `content` blocks (`{"type":"text","text":…}`, images, resources, …).
    pub content: Vec<Value>,
    /// `structuredContent`, if the tool returned any.
    pub structured_content: Option<Value>,
    /// `isError`: the tool ran and failed.
    pub is_error: bool,
}

impl ToolCallResult {
    /// Read a `tools/call` result.
    pub fn from_json(result: Value) -> Result<Self, McpError> {
        let content = match result.get("content") {
            Some(Value::Array(items)) => items.clone(),
            None | Some(Value::Null) => Vec::new(),
            Some(other) => {
                return Err(McpError::protocol(format!(
                    "tools/call answered with content that is not an array: {other}"
                )));
            }
        };
        Ok(ToolCallResult {
            content,
            structured_content: result.get("structuredContent").cloned(),
            is_error: result
                .get("isError")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    /// The text blocks joined with newlines.
    pub fn text(&self) -> String {
        let texts: Vec<&str> = self
            .content
            .iter()
            .filter(|c| c.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|c| c.get("text").and_then(Value::as_str))
            .collect();
        texts.join("\n")
    }

    /// The tool output for the agent: `structuredContent` when present, else the text (a
    /// JSON string) when every block is text, else the content blocks as JSON. A result
    /// with `isError` becomes a [`ToolError`] carrying its text.
    pub fn into_output(self) -> Result<Value, ToolError> {
        if self.is_error {
            let text = self.text();
            return Err(McpError::new(
                McpErrorKind::ToolFailed,
                if text.is_empty() {
                    "the MCP tool reported an error".to_owned()
                } else {
                    text
                },
            )
            .into());
        }
        if let Some(structured) = self.structured_content {
            return Ok(structured);
        }
        let all_text = self
            .content
            .iter()
            .all(|c| c.get("type").and_then(Value::as_str) == Some("text"));
        if all_text {
            Ok(Value::String(self.text()))
        } else {
            Ok(Value::Array(self.content))
        }
    }
}

/// An MCP server's tool as an agent [`Tool`]: its definition comes from `tools/list`, a call
/// is a `tools/call` on the client (with its timeout; a cancelled run cancels the call on
/// the server). Every failure — timeout, server gone, protocol error, `isError` — is a tool
/// error given back to the model; nothing panics or hangs.
#[derive(Debug)]
pub struct McpTool {
    client: McpClient,
    info: McpToolInfo,
    definition: ToolDefinition,
}

/// The name an MCP tool gets in the agent: `prefix` + its name, with every character
/// outside `[A-Za-z0-9_-]` replaced by `_` and cut to 64 characters, the form model APIs
/// accept for function names (MCP allows dots and slashes, OpenAI does not). The server is
/// still called with the tool's own name.
///
/// ```
/// assert_eq!(agent_mcp::agent_tool_name("gh_", "repos/search.v2"), "gh_repos_search_v2");
/// assert_eq!(agent_mcp::agent_tool_name("", &"x".repeat(100)).len(), 64);
/// ```
pub fn agent_tool_name(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

impl McpTool {
    /// The tool `info` of `client`, named [`agent_tool_name`]`(prefix, info.name)`.
    pub fn new(client: McpClient, info: McpToolInfo, prefix: &str) -> Self {
        let description = if info.description.is_empty() {
            info.title.clone().unwrap_or_default()
        } else {
            info.description.clone()
        };
        let definition = ToolDefinition {
            name: agent_tool_name(prefix, &info.name),
            description,
            parameters: info.input_schema.clone(),
        };
        McpTool {
            client,
            info,
            definition,
        }
    }

    /// What the server listed.
    pub fn info(&self) -> &McpToolInfo {
        &self.info
    }
}

impl Tool for McpTool {
    fn definition(&self) -> &ToolDefinition {
        &self.definition
    }

    fn call(&self, arguments: Value, _cx: ToolContext) -> ToolFuture {
        let client = self.client.clone();
        let name = self.info.name.clone();
        Box::pin(async move {
            let result = client.call_tool(&name, arguments).await?;
            result.into_output()
        })
    }
}
