//! Connect to an MCP server, list its tools, and run an agent whose (scripted) model calls
//! one of them — on plain threads, the simplest backend.
//!
//! ```sh
//! bash e2e/mcp/setup.sh   # the official Python SDK, for its FastMCP server
//! cargo run -p agent-mcp --example mcp_tools -- \
//!     'e2e/mcp/.venv/bin/python e2e/mcp/server.py stdio' add '{"a": 2, "b": 3}'
//! # or over Streamable HTTP:
//! cargo run -p agent-mcp --example mcp_tools -- --url http://127.0.0.1:8000/mcp add '{"a": 2, "b": 3}'
//! ```

use std::sync::Arc;
use std::time::Duration;

use agent_core::event::EventKind;
use agent_core::model::{ScriptedModel, Turn};
use agent_core::runtime::block_on;
use agent_mcp::{McpClient, McpOptions, parse_command_line};
use backend_blocking::{ThreadPoolRuntime, ThreadSpawner, UreqClient};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (target, tool, arguments) = match args.as_slice() {
        [flag, url, tool, arguments] if flag == "--url" => (Err(url.clone()), tool, arguments),
        [command, tool, arguments] => (Ok(command.clone()), tool, arguments),
        _ => {
            eprintln!("usage: mcp_tools 'CMD ARGS…' TOOL 'JSON' | mcp_tools --url URL TOOL 'JSON'");
            std::process::exit(2);
        }
    };
    let runtime = ThreadPoolRuntime::global().shared();
    let options = McpOptions::new().request_timeout(Duration::from_secs(30));
    let connected = block_on(async {
        match target {
            Ok(line) => {
                let command = parse_command_line(&line).map_err(|e| e.to_string())?;
                McpClient::stdio(&ThreadSpawner::new(), command, runtime.clone(), options)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(url) => McpClient::http(Arc::new(UreqClient::new()), url, runtime.clone(), options)
                .await
                .map_err(|e| e.to_string()),
        }
    });
    let client = connected.unwrap_or_else(|err| {
        eprintln!("mcp_tools: {err}");
        std::process::exit(1);
    });
    let info = client.server_info();
    println!(
        "connected to {} {} (MCP {})",
        info.name, info.version, info.protocol_version
    );
    let tools = block_on(client.tools()).unwrap_or_else(|err| {
        eprintln!("mcp_tools: {err}");
        std::process::exit(1);
    });
    for tool in &tools {
        let definition = tool.definition();
        println!("  {}: {}", definition.name, definition.description);
    }

    let mut builder = backend_blocking::agent_builder().model(ScriptedModel::new([
        Turn::new().tool_call("call_1", tool, arguments),
        Turn::new().text("done"),
    ]));
    for tool in tools {
        builder = builder.shared_tool(tool);
    }
    let agent = builder.build().expect("agent");
    for event in backend_blocking::run(&agent, "call the tool") {
        if let EventKind::ToolCallCompleted { name, result, .. } = &event.kind {
            println!("{name} → {}", result.to_model_text());
        }
    }
}
