//! MCP tools against a real MCP server nobody here wrote: the official Python SDK's FastMCP
//! (`mcp`, pinned in e2e/mcp/requirements.txt, installed into e2e/mcp/.venv by
//! `e2e/mcp/setup.sh`, which `.ci/run` calls), over stdio and over Streamable HTTP (SSE and
//! JSON responses), in an agent run on every backend.
//!
//! Without the venv the tests pass with a loud message on stderr; under `CI=true` they fail.

use std::io::{BufRead, BufReader, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agent_core::agent::Agent;
use agent_core::event::{Event, EventKind};
use agent_core::model::{ScriptedModel, Turn};
use agent_core::process::ProcessCommand;
use agent_core::tool::ToolResult;
use agent_mcp::{McpClient, McpOptions};
use conformance::Backend;
use conformance::kit::mcp::block_on;
use serde_json::json;
use test_support::backends::{blocking, smol, tokio};

/// Deadline of every MCP request and of the server start (the SDK imports slowly).
const DEADLINE: Duration = Duration::from_secs(30);

fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../e2e/mcp")
}

/// The venv's Python with the SDK, or `None` (after a loud message) when it is absent
/// outside CI. In CI its absence fails the test.
fn real_python() -> Option<String> {
    let python = std::env::var("AGENT_MCP_REAL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| e2e_dir().join(".venv/bin/python"));
    let works = Command::new(&python)
        .args(["-c", "import mcp.server.fastmcp, uvicorn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Some(python.to_string_lossy().into_owned());
    }
    let why = format!(
        "the official MCP Python SDK is not installed at {} (run `bash e2e/mcp/setup.sh`)",
        python.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("real MCP server tests must run in CI: {why}");
    }
    // Straight to the process's stderr: it shows without --nocapture.
    let _ = writeln!(
        std::io::stderr(),
        "!!! SKIPPED: real MCP server test: {why}"
    );
    None
}

fn server_script() -> String {
    e2e_dir().join("server.py").to_string_lossy().into_owned()
}

/// The SDK's server in an HTTP mode, killed on drop.
struct HttpServer {
    child: Child,
    url: String,
}

impl HttpServer {
    fn start(python: &str, mode: &str) -> HttpServer {
        let mut child = Command::new(python)
            .arg(server_script())
            .arg(mode)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the SDK's HTTP server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut server = HttpServer {
            child,
            url: String::new(),
        };
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("the SDK's HTTP server must print LISTENING <port> within the deadline");
        let port: u16 = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the SDK's server: {line:?}"));
        server.url = format!("http://127.0.0.1:{port}/mcp");
        server
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn options() -> McpOptions {
    McpOptions::new()
        .request_timeout(DEADLINE)
        .initialize_timeout(DEADLINE)
}

/// One agent run calling both of the server's tools.
fn tool_round(backend: &dyn Backend, client: &McpClient, transport: &str) {
    let lister = client.clone();
    let tools = block_on(backend, async move { lister.tools().await })
        .unwrap_or_else(|e| panic!("{transport}: tools/list failed: {e}"));
    let names: Vec<&str> = tools.iter().map(|t| t.definition().name.as_str()).collect();
    assert!(
        names.contains(&"add") && names.contains(&"shout"),
        "{transport}: the SDK server lists add and shout, got {names:?}"
    );
    let add = tools.iter().find(|t| t.definition().name == "add").unwrap();
    assert_eq!(
        add.definition().parameters["properties"]["a"]["type"],
        "integer",
        "{transport}: the inputSchema derived by the SDK is the tool's parameters"
    );
    let mut builder = Agent::builder()
        .runtime(backend.runtime())
        .model(ScriptedModel::new([
            Turn::new()
                .tool_call("call_add", "add", r#"{"a": 2, "b": 3}"#)
                .tool_call("call_shout", "shout", r#"{"text": "hi"}"#),
            Turn::new().text("done"),
        ]));
    for tool in tools {
        builder = builder.shared_tool(tool);
    }
    let agent = builder.build().expect("agent");
    let mut events: Vec<Event> = Vec::new();
    backend.consume(&agent, "go", &mut |event| {
        events.push(event);
        ControlFlow::Continue(())
    });
    let result = |id: &str| {
        events
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::ToolCallCompleted {
                    call_id, result, ..
                } if call_id == id => Some(result.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{transport}: no result for {id}: {events:#?}"))
    };
    let output = |id: &str| match result(id) {
        ToolResult::Ok { output } => output,
        other => panic!("{transport}: {id} failed: {other:?}"),
    };
    // FastMCP returns primitives as structuredContent {"result": …} (and the text "5").
    assert_eq!(
        output("call_add"),
        json!({"result": 5}),
        "{transport}: add(2, 3)"
    );
    assert_eq!(
        output("call_shout"),
        json!({"result": "HI"}),
        "{transport}: shout(hi)"
    );
    assert!(
        matches!(events.last().map(|e| &e.kind), Some(EventKind::RunCompleted { text, .. }) if text == "done"),
        "{transport}: the run completes after the MCP tools: {:?}",
        events.last()
    );
}

fn real_server_rounds(backend: &dyn Backend) {
    let Some(python) = real_python() else {
        return;
    };
    let spawner = backend
        .process_spawner()
        .expect("the backend spawns processes");
    let runtime = backend.runtime();
    let command = ProcessCommand::new(python.clone()).args([server_script(), "stdio".into()]);
    let client = block_on(backend, async move {
        McpClient::stdio(&*spawner, command, runtime, options()).await
    })
    .expect("stdio: the SDK server must initialize");
    assert_eq!(
        client.server_info().name,
        "real-mcp-e2e",
        "stdio: initialize reports the server"
    );
    tool_round(backend, &client, "stdio");
    drop(client);

    for mode in ["http", "http-json"] {
        let server = HttpServer::start(&python, mode);
        let http = backend.http_client();
        let runtime = backend.runtime();
        let url = server.url.clone();
        let client = block_on(backend, async move {
            McpClient::http(http, url, runtime, options()).await
        })
        .unwrap_or_else(|e| panic!("{mode}: the SDK server must initialize: {e}"));
        tool_round(backend, &client, mode);
    }
}

#[test]
fn real_mcp_server_tokio_current_thread() {
    real_server_rounds(&tokio::TokioCurrentThread::new());
}

#[test]
fn real_mcp_server_tokio_multi_thread() {
    real_server_rounds(&tokio::TokioMultiThread::new());
}

#[test]
fn real_mcp_server_smol_single_thread() {
    real_server_rounds(&smol::SmolSingleThread::default());
}

#[test]
fn real_mcp_server_smol_multi_thread() {
    real_server_rounds(&smol::SmolMultiThread::default());
}

#[test]
fn real_mcp_server_threads() {
    real_server_rounds(&blocking::Threads);
}
