//! `--mcp` and `--mcp-url`: the agent binary gives an MCP server's tools to the model, on
//! every runtime, and explains the servers it cannot use.

use std::io::Write;
use std::process::{Command, Stdio};

use conformance::kit::mcp::fake_server_command;
use conformance::kit::upstream::{GatedUpstream, Response, openai};
use serde_json::{Value, json};

mod support;

use support::{RUNTIMES, agent, run, text};

/// `--mcp`'s value for the kit's fake stdio server, or `None` (loudly) without Python
/// outside CI.
fn fake_server_line() -> Option<String> {
    match fake_server_command() {
        Ok(command) => {
            let quoted: Vec<String> = std::iter::once(&command.program)
                .chain(&command.args)
                .map(|w| format!("'{w}'"))
                .collect();
            Some(quoted.join(" "))
        }
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the --mcp tests must run in CI: {why}")
        }
        Err(why) => {
            // Straight to the process's stderr: it shows without --nocapture.
            let _ = writeln!(std::io::stderr(), "!!! SKIPPED: --mcp test: {why}");
            None
        }
    }
}

/// A model that calls `add(2, 3)`, then answers with what the tool said.
fn model_calling_add() -> GatedUpstream {
    GatedUpstream::start([
        openai::finish(Response::sse().send(openai::tool_call_chunk(
            0,
            "call_1",
            "add",
            r#"{"a": 2, "b": 3}"#,
        ))),
        openai::answer(&["the sum ", "is 5"]),
    ])
    .unwrap()
}

/// The model saw the MCP tool's schema and got its result back.
fn assert_model_used_the_tool(model: &GatedUpstream, runtime: &str) {
    let requests = model.requests();
    assert_eq!(requests.len(), 2, "{runtime}: a tool round and an answer");
    let first = requests[0].json().unwrap();
    let add = first["tools"]
        .as_array()
        .and_then(|tools| tools.iter().find(|t| t["function"]["name"] == "add"))
        .unwrap_or_else(|| panic!("{runtime}: the model was offered add: {first}"));
    assert_eq!(
        add["function"]["parameters"]["required"],
        json!(["a", "b"]),
        "{runtime}"
    );
    let second = requests[1].json().unwrap();
    let tool_message = second["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "tool"))
        .unwrap_or_else(|| panic!("{runtime}: the tool result went back to the model: {second}"));
    assert_eq!(
        tool_message["content"], "5",
        "{runtime}: the MCP tool's answer"
    );
}

#[test]
fn mcp_stdio_tools_reach_the_model_on_every_runtime() {
    let Some(server) = fake_server_line() else {
        return;
    };
    for runtime in RUNTIMES {
        let model = model_calling_add();
        let output = run(agent().args([
            "--runtime",
            runtime,
            "--base-url",
            &model.base_url(),
            "--model",
            "m",
            "--mcp",
            &server,
            "add 2 and 3",
        ]));
        let stderr = text(&output.stderr);
        assert!(output.status.success(), "{runtime}: {stderr}");
        assert_eq!(
            text(&output.stdout).trim(),
            "the sum is 5",
            "{runtime}: {stderr}"
        );
        let lines: Vec<&str> = stderr.lines().collect();
        assert!(
            lines[0].starts_with("agent: using model m at"),
            "{runtime}: the model line comes first: {stderr}"
        );
        assert!(
            lines[1].starts_with("agent: MCP server fake-mcp 1.0 (stdio: ")
                && lines[1].ends_with(
                    "9 tools: add, structured, fail, exit, malformed, huge, hang, received, pid"
                ),
            "{runtime}: one line per MCP server: {stderr}"
        );
        assert_model_used_the_tool(&model, runtime);
    }
}

fn sse_message(message: &Value) -> String {
    format!("event: message\ndata: {message}\n\n")
}

/// A scripted Streamable HTTP MCP server with one tool, `add`.
fn http_mcp_server() -> GatedUpstream {
    GatedUpstream::start([
        Response::json(
            200,
            &json!({"jsonrpc": "2.0", "id": 0, "result": {"protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}}, "serverInfo": {"name": "scripted", "version": "2"}}}),
        )
        .header("Mcp-Session-Id", "s-1"),
        Response::new(202),
        Response::sse().send(sse_message(&json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
            {"name": "add", "description": "Add", "inputSchema": {"type": "object",
             "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}
        ]}}))),
        Response::json(
            200,
            &json!({"jsonrpc": "2.0", "id": 2, "result": {"content": [{"type": "text", "text": "5"}]}}),
        ),
    ])
    .unwrap()
}

#[test]
fn mcp_url_tools_reach_the_model_on_every_runtime() {
    for runtime in RUNTIMES {
        let model = model_calling_add();
        let mcp = http_mcp_server();
        let url = format!("http://{}/mcp", mcp.addr());
        let output = run(agent().args([
            "--runtime",
            runtime,
            "--base-url",
            &model.base_url(),
            "--model",
            "m",
            "--mcp-url",
            &url,
            "add 2 and 3",
        ]));
        let stderr = text(&output.stderr);
        assert!(output.status.success(), "{runtime}: {stderr}");
        assert_eq!(
            text(&output.stdout).trim(),
            "the sum is 5",
            "{runtime}: {stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "agent: MCP server scripted 2 ({url}): 1 tool: add"
            )),
            "{runtime}: {stderr}"
        );
        assert_model_used_the_tool(&model, runtime);
        let calls = mcp.requests();
        assert_eq!(
            calls.len(),
            4,
            "{runtime}: initialize, initialized, tools/list, tools/call"
        );
        assert_eq!(calls[3].header("mcp-session-id"), Some("s-1"), "{runtime}");
        assert_eq!(
            calls[3].json().unwrap()["params"],
            json!({"name": "add", "arguments": {"a": 2, "b": 3}}),
            "{runtime}"
        );
    }
}

#[test]
fn unusable_mcp_servers_are_explained() {
    for runtime in RUNTIMES {
        let output = run(agent().args([
            "--runtime",
            runtime,
            "--mcp",
            "definitely-missing-mcp-xyz",
            "hi",
        ]));
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{runtime}: {stderr}");
        assert!(
            stderr.contains("could not start the MCP server `definitely-missing-mcp-xyz`"),
            "{runtime}: {stderr}"
        );

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/mcp", closed.local_addr().unwrap());
        drop(closed);
        let output = run(agent().args(["--runtime", runtime, "--mcp-url", &url, "hi"]));
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{runtime}: {stderr}");
        assert!(
            stderr.contains(&format!("--mcp-url {url}: MCP http")),
            "{runtime}: {stderr}"
        );
    }
    let output = run(agent().args(["--mcp", "python3 'unterminated", "hi"]));
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("unterminated"),
        "{}",
        text(&output.stderr)
    );
    let output = run(agent().args(["--mcp-url", "localhost:8000/mcp", "hi"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("--mcp-url must start with http://"));
    let output = run(agent().args(["--mcp-timeout", "soon", "hi"]));
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn a_silent_mcp_server_times_out_with_a_message() {
    let mcp = GatedUpstream::start([Response::sse().stall()]).unwrap();
    let url = format!("http://{}/mcp", mcp.addr());
    let output = run(agent().args(["--mcp-url", &url, "--mcp-timeout", "300ms", "hi"]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("did not answer initialize within 300ms"),
        "{stderr}"
    );
}

/// The official Python SDK's server (e2e/mcp, installed by e2e/mcp/setup.sh), or `None`
/// (loudly) when it is absent outside CI.
fn real_server_line() -> Option<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/mcp");
    let python = dir.join(".venv/bin/python");
    let works = Command::new(&python)
        .args(["-c", "import mcp.server.fastmcp"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Some(format!(
            "'{}' '{}' stdio",
            python.display(),
            dir.join("server.py").display()
        ));
    }
    let why = format!(
        "the official MCP Python SDK is not installed at {}",
        python.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the real MCP server CLI test must run in CI: {why}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "!!! SKIPPED: --mcp with the real server: {why}"
    );
    None
}

#[test]
fn mcp_with_the_official_python_sdk_server() {
    let Some(server) = real_server_line() else {
        return;
    };
    let model = model_calling_add();
    let output = run(agent().args([
        "--base-url",
        &model.base_url(),
        "--model",
        "m",
        "--mcp",
        &server,
        "add 2 and 3",
    ]));
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("agent: MCP server real-mcp-e2e") && stderr.contains("2 tools: add, shout"),
        "{stderr}"
    );
    let second = model.requests()[1].json().unwrap();
    let tool_message = second["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "tool"))
        .unwrap_or_else(|| panic!("the tool result went back to the model: {second}"));
    assert_eq!(
        tool_message["content"], r#"{"result":5}"#,
        "FastMCP's structured result"
    );
}
