//! MCP tools (issue 15, item 3): tools of an MCP server become agent tools on every backend,
//! over stdio (a child process started through the backend's
//! [`ProcessSpawner`](agent_core::process::ProcessSpawner)) and Streamable HTTP (the
//! backend's `HttpClient`), and every fault becomes a tool error, never a hang.
//!
//! The stdio cases talk to the kit's fake server ([`kit::mcp`](crate::kit::mcp), Python
//! standard library); without Python they are not applicable, except under `CI=true`, where
//! they fail. The HTTP cases script a [`GatedUpstream`] as the server.

use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use agent_core::event::EventKind;
use agent_core::model::{ScriptedModel, Turn};
use agent_core::process::ProcessCommand;
use agent_core::tool::{Tool, ToolErrorKind, ToolResult};
use agent_mcp::{McpClient, McpError, McpErrorKind, McpOptions};
use serde_json::{Value, json};

use super::Outcome;
use super::support::{WAIT, agent_builder, consume, wait_until};
use crate::backend::Backend;
use crate::kit::mcp::{self, block_on};
use crate::kit::upstream::Response;
use crate::kit::watchdog::step;
use crate::kit::{GatedUpstream, Transcript};

/// Request timeout of the fault cases: long enough for a healthy answer from a Python
/// process on a loaded CI machine, short enough for a case.
const FAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Run `wait` on this thread while another one drives the backend
/// ([`Backend::block_on`] of a future that idles on the runtime's timer until `wait`
/// returns, at most [`WAIT`] plus a margin).
fn while_driven<T>(backend: &dyn Backend, wait: impl FnOnce() -> T) -> T {
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|scope| {
        let flag = done.clone();
        let runtime = backend.runtime();
        scope.spawn(move || {
            backend.block_on(Box::pin(async move {
                let deadline = std::time::Instant::now() + WAIT + WAIT;
                while !flag.load(std::sync::atomic::Ordering::Acquire)
                    && std::time::Instant::now() < deadline
                {
                    runtime.sleep(Duration::from_millis(2)).await;
                }
            }))
        });
        let value = wait();
        done.store(true, std::sync::atomic::Ordering::Release);
        value
    })
}

/// The fake server's command, or the outcome when it cannot run (n/a locally, a failure in
/// CI).
fn fake_server(backend: &dyn Backend) -> Result<ProcessCommand, Outcome> {
    if backend.process_spawner().is_none() {
        return Err(Outcome::not_applicable(
            "the backend offers no process spawner (Backend::process_spawner)",
        ));
    }
    match mcp::fake_server_command() {
        Ok(command) => Ok(command),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("mcp: the stdio cases must run in CI: {why}")
        }
        Err(why) => {
            // Straight to the process's stderr: it shows without --nocapture.
            let _ = writeln!(std::io::stderr(), "!!! MCP stdio case skipped: {why}");
            Err(Outcome::not_applicable(why))
        }
    }
}

fn connect_stdio(
    backend: &dyn Backend,
    command: ProcessCommand,
    options: McpOptions,
) -> Result<McpClient, McpError> {
    let spawner = backend
        .process_spawner()
        .expect("mcp: fake_server checked the spawner");
    let runtime = backend.runtime();
    step(format!(
        "connecting to the MCP server `{command}` over stdio"
    ));
    block_on(backend, async move {
        McpClient::stdio(
            &*spawner,
            command,
            runtime,
            options.initialize_timeout(WAIT),
        )
        .await
    })
}

fn tool_results(transcript: &Transcript) -> Vec<(String, ToolResult)> {
    transcript
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCallCompleted {
                call_id, result, ..
            } => Some((call_id.clone(), result.clone())),
            _ => None,
        })
        .collect()
}

fn result_of(transcript: &Transcript, call_id: &str) -> ToolResult {
    tool_results(transcript)
        .into_iter()
        .find(|(id, _)| id == call_id)
        .map(|(_, r)| r)
        .unwrap_or_else(|| {
            panic!(
                "mcp: no tool_call_completed for {call_id}\n{}",
                transcript.summary()
            )
        })
}

fn assert_tool_failed(transcript: &Transcript, call_id: &str, needle: &str) {
    match result_of(transcript, call_id) {
        ToolResult::Error { kind, message } => {
            assert_eq!(
                kind,
                ToolErrorKind::Failed,
                "mcp: a fault of {call_id} must be a failed tool call\n{}",
                transcript.summary()
            );
            assert!(
                message.contains(needle),
                "mcp: the error of {call_id} must say `{needle}`, got: {message}"
            );
        }
        ToolResult::Ok { output } => {
            panic!("mcp: {call_id} must fail with `{needle}`, it returned {output}")
        }
    }
}

/// What the fake server received, from its `received` tool.
fn received(backend: &dyn Backend, client: &McpClient) -> Vec<Value> {
    let client = client.clone();
    step("asking the fake MCP server what it received");
    let result = block_on(backend, async move {
        client.call_tool("received", json!({})).await
    })
    .expect("mcp: the received tool must answer");
    serde_json::from_str(&result.text()).expect("mcp: received answers a JSON list")
}

fn agent_with(
    backend: &dyn Backend,
    turns: Vec<Turn>,
    tools: Vec<Arc<dyn Tool>>,
) -> agent_core::agent::Agent {
    let mut builder = agent_builder(backend).model(ScriptedModel::new(turns));
    for tool in tools {
        builder = builder.shared_tool(tool);
    }
    builder.build().expect("agent")
}

fn tools_of(backend: &dyn Backend, client: &McpClient) -> Vec<Arc<dyn Tool>> {
    let client = client.clone();
    step("listing the MCP server's tools");
    block_on(backend, async move { client.tools().await }).expect("mcp: tools/list must answer")
}

/// A tool round over stdio: both pages of `tools/list`, text, structured and `isError`
/// results from concurrent calls, a server request answered, the lifecycle in order.
pub fn stdio_tool_round(backend: &dyn Backend) -> Outcome {
    let command = match fake_server(backend) {
        Ok(command) => command,
        Err(outcome) => return outcome,
    };
    let client = connect_stdio(backend, command, McpOptions::new().request_timeout(WAIT))
        .expect("mcp: the fake server must initialize");
    assert_eq!(
        client.server_info().name,
        "fake-mcp",
        "mcp: initialize must report the server's name"
    );
    let tools = tools_of(backend, &client);
    let names: Vec<String> = tools.iter().map(|t| t.definition().name.clone()).collect();
    assert_eq!(
        names,
        [
            "add",
            "structured",
            "fail",
            "exit",
            "malformed",
            "huge",
            "hang",
            "received",
            "pid"
        ],
        "mcp: tools/list must follow nextCursor through every page"
    );
    assert_eq!(
        tools[0].definition().parameters["required"],
        json!(["a", "b"]),
        "mcp: a tool's inputSchema must be its parameters"
    );
    assert_eq!(
        tools[1].definition().description,
        "Structured sum",
        "mcp: a tool without a description is described by its title"
    );
    let agent = agent_with(
        backend,
        vec![
            Turn::new()
                .tool_call("call_add", "add", r#"{"a": 2, "b": 3}"#)
                .tool_call("call_structured", "structured", r#"{"a": 4, "b": 5}"#)
                .tool_call("call_fail", "fail", "{}"),
            Turn::new().text("done"),
        ],
        tools,
    );
    let transcript = consume(backend, &agent, "go", |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    assert_eq!(
        result_of(&transcript, "call_add"),
        ToolResult::Ok { output: json!("5") },
        "mcp: a text result is the tool's output\n{}",
        transcript.summary()
    );
    assert_eq!(
        result_of(&transcript, "call_structured"),
        ToolResult::Ok {
            output: json!({"sum": 9})
        },
        "mcp: structuredContent is the tool's output\n{}",
        transcript.summary()
    );
    assert_tool_failed(&transcript, "call_fail", "the tool failed on purpose");
    assert_eq!(
        transcript.completed_text(),
        "done",
        "mcp: the run goes on after MCP tool results\n{}",
        transcript.summary()
    );
    let got = received(backend, &client);
    let methods: Vec<&str> = got.iter().filter_map(|m| m["method"].as_str()).collect();
    assert_eq!(
        &methods[..4],
        [
            "initialize",
            "notifications/initialized",
            "tools/list",
            "tools/list"
        ],
        "mcp: initialize, then notifications/initialized, then the requests"
    );
    assert_eq!(
        got[3]["params"]["cursor"], "page-2",
        "mcp: the second tools/list page is asked for with the cursor"
    );
    assert!(
        got.iter()
            .any(|m| m["id"] == "srv-ping-1" && m["result"] == json!({})),
        "mcp: a ping from the server must be answered with an empty result: {got:?}"
    );
    Outcome::passed()
}

/// Faults over stdio, in one run of four concurrent calls on four servers: a server that
/// exits mid-call, one that writes a line that is not JSON, one whose answer is over the
/// line bound, one that never answers (timeout, then `notifications/cancelled`). Each is a
/// tool error; the run completes. Also: a missing program and an unsupported protocol
/// version fail the connect with an error, not a panic.
pub fn stdio_faults(backend: &dyn Backend) -> Outcome {
    let command = match fake_server(backend) {
        Ok(command) => command,
        Err(outcome) => return outcome,
    };
    let options = |prefix: &str| {
        McpOptions::new()
            .request_timeout(FAULT_TIMEOUT)
            .max_message_bytes(64 * 1024)
            .tool_prefix(prefix)
    };
    let mut tools = Vec::new();
    let mut clients = Vec::new();
    for prefix in ["a_", "b_", "c_", "d_"] {
        let client = connect_stdio(backend, command.clone(), options(prefix))
            .expect("mcp: the fake server must initialize");
        tools.extend(tools_of(backend, &client));
        clients.push(client);
    }
    let agent = agent_with(
        backend,
        vec![
            Turn::new()
                .tool_call("call_exit", "a_exit", "{}")
                .tool_call("call_malformed", "b_malformed", "{}")
                .tool_call("call_huge", "c_huge", r#"{"bytes": 200000}"#)
                .tool_call("call_hang", "d_hang", "{}"),
            Turn::new().text("survived"),
        ],
        tools,
    );
    let transcript = consume(backend, &agent, "go", |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    assert_tool_failed(&transcript, "call_exit", "closed its stdout");
    assert_tool_failed(&transcript, "call_exit", "exiting mid-call on purpose");
    assert_tool_failed(&transcript, "call_malformed", "malformed JSON-RPC");
    assert_tool_failed(&transcript, "call_huge", "longer than 65536 bytes");
    assert_tool_failed(&transcript, "call_hang", "did not answer tools/call");
    assert_eq!(
        transcript.completed_text(),
        "survived",
        "mcp: the run goes on after MCP faults\n{}",
        transcript.summary()
    );
    // The server that never answered got a cancellation for that request.
    let hang = &clients[3];
    let got = received(backend, hang);
    let call = got
        .iter()
        .find(|m| m["method"] == "tools/call" && m["params"]["name"] == "hang")
        .expect("mcp: the hanging server received the call");
    assert!(
        got.iter()
            .any(|m| m["method"] == "notifications/cancelled"
                && m["params"]["requestId"] == call["id"]),
        "mcp: a timed-out request must be cancelled with notifications/cancelled: {got:?}"
    );
    // A connection that broke stays broken, with the same clear error.
    let exited = clients[0].clone();
    let again = block_on(backend, async move {
        exited.call_tool("add", json!({"a": 1, "b": 1})).await
    });
    assert_eq!(
        again.map_err(|e| e.kind),
        Err(McpErrorKind::Closed),
        "mcp: after the server exited, later calls fail at once"
    );

    let missing = connect_stdio(
        backend,
        ProcessCommand::new("definitely-not-an-mcp-server-xyz"),
        McpOptions::new(),
    );
    assert_eq!(
        missing.map(|_| ()).map_err(|e| e.kind),
        Err(McpErrorKind::Spawn),
        "mcp: a missing program is a spawn error"
    );
    let future = connect_stdio(
        backend,
        command.clone().env("FAKE_MCP_VERSION", "1999-01-01"),
        McpOptions::new(),
    );
    assert_eq!(
        future.map(|_| ()).map_err(|e| e.kind),
        Err(McpErrorKind::UnsupportedVersion),
        "mcp: a protocol version the client does not speak is refused"
    );
    let older = connect_stdio(
        backend,
        command.env("FAKE_MCP_VERSION", "2025-03-26"),
        McpOptions::new(),
    )
    .expect("mcp: an older supported protocol version is accepted");
    assert_eq!(
        older.server_info().protocol_version,
        "2025-03-26",
        "mcp: the negotiated version is the server's"
    );
    Outcome::passed()
}

/// A run cancelled while an MCP call is in flight (here by the run's own timeout, which
/// drops the tool future) cancels the request on the server with `notifications/cancelled`.
pub fn stdio_cancel_on_drop(backend: &dyn Backend) -> Outcome {
    let command = match fake_server(backend) {
        Ok(command) => command,
        Err(outcome) => return outcome,
    };
    let client = connect_stdio(backend, command, McpOptions::new().request_timeout(WAIT))
        .expect("mcp: the fake server must initialize");
    let tools = tools_of(backend, &client);
    let mut builder = agent_builder(backend)
        .model(ScriptedModel::new([
            Turn::new().tool_call("call_hang", "hang", "{}"),
            Turn::new().text("unreachable"),
        ]))
        .run_timeout(FAULT_TIMEOUT);
    for tool in tools {
        builder = builder.shared_tool(tool);
    }
    let agent = builder.build().expect("agent");
    let transcript = consume(backend, &agent, "go", |_| ControlFlow::Continue(()));
    assert!(
        transcript
            .terminal()
            .is_some_and(|e| e.name() == "run_failed"),
        "mcp: the run ends by its timeout while the call hangs\n{}",
        transcript.summary()
    );
    let mut got = Vec::new();
    let cancelled = wait_until(WAIT, || {
        got = received(backend, &client);
        got.iter().any(|m| m["method"] == "notifications/cancelled")
    });
    let call = got
        .iter()
        .find(|m| m["method"] == "tools/call" && m["params"]["name"] == "hang")
        .expect("mcp: the server received the call before the run was cancelled");
    assert!(
        cancelled
            && got.iter().any(|m| m["method"] == "notifications/cancelled"
                && m["params"]["requestId"] == call["id"]),
        "mcp: dropping an in-flight call must send notifications/cancelled for it: {got:?}"
    );
    Outcome::passed()
}

fn json_answer(id: u64, result: Value) -> Response {
    Response::json(200, &json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

fn sse_message(message: &Value) -> String {
    format!("event: message\ndata: {message}\n\n")
}

fn init_responses() -> Vec<Response> {
    vec![
        json_answer(
            0,
            json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                   "serverInfo": {"name": "scripted-http", "version": "1"}}),
        )
        .header("Mcp-Session-Id", "session-1"),
        Response::new(202),
    ]
}

fn connect_http(backend: &dyn Backend, upstream: &GatedUpstream, options: McpOptions) -> McpClient {
    let http = backend.http_client();
    let runtime = backend.runtime();
    let url = format!("http://{}/mcp", upstream.addr());
    step(format!("connecting to the MCP server at {url}"));
    block_on(backend, async move {
        McpClient::http(http, url, runtime, options.initialize_timeout(WAIT)).await
    })
    .expect("mcp: the scripted HTTP server must initialize")
}

/// A tool round over Streamable HTTP: JSON and SSE answers (with a notification before the
/// response), both `tools/list` pages, the session id and protocol version headers on
/// every request after `initialize`.
pub fn http_tool_round(backend: &dyn Backend) -> Outcome {
    let add = json!({"name": "add", "description": "Add", "inputSchema": {"type": "object"}});
    let structured =
        json!({"name": "structured", "description": "Sum", "inputSchema": {"type": "object"}});
    let mut responses = init_responses();
    responses.push(json_answer(1, json!({"tools": [add], "nextCursor": "p2"})));
    responses.push(
        Response::sse()
            .send(sse_message(&json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "listing"}})))
            .send(sse_message(&json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": [structured]}}))),
    );
    responses.push(
        Response::sse()
            .send(sse_message(&json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}})))
            .send(sse_message(&json!({"jsonrpc": "2.0", "id": 3, "result": {"content": [{"type": "text", "text": "5"}]}}))),
    );
    responses.push(json_answer(
        4,
        json!({"content": [{"type": "text", "text": "{\"sum\":9}"}], "structuredContent": {"sum": 9}}),
    ));
    let upstream = GatedUpstream::start(responses).expect("upstream");
    let client = connect_http(backend, &upstream, McpOptions::new().request_timeout(WAIT));
    let tools = tools_of(backend, &client);
    let names: Vec<String> = tools.iter().map(|t| t.definition().name.clone()).collect();
    assert_eq!(
        names,
        ["add", "structured"],
        "mcp: tools/list pages over HTTP (JSON, then SSE)"
    );
    let agent = agent_with(
        backend,
        vec![
            Turn::new().tool_call("call_add", "add", r#"{"a": 2, "b": 3}"#),
            Turn::new().tool_call("call_structured", "structured", r#"{"a": 4, "b": 5}"#),
            Turn::new().text("done"),
        ],
        tools,
    );
    let transcript = consume(backend, &agent, "go", |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    assert_eq!(
        result_of(&transcript, "call_add"),
        ToolResult::Ok { output: json!("5") },
        "mcp: an SSE answer after a notification is the tool's output\n{}",
        transcript.summary()
    );
    assert_eq!(
        result_of(&transcript, "call_structured"),
        ToolResult::Ok {
            output: json!({"sum": 9})
        },
        "mcp: a JSON answer's structuredContent is the tool's output\n{}",
        transcript.summary()
    );
    let requests = upstream.requests();
    assert_eq!(
        requests.len(),
        6,
        "mcp: six POSTs (initialize, initialized, 2 lists, 2 calls)"
    );
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(request.method, "POST", "mcp: every message is a POST");
        let accept = request.header("accept").unwrap_or("");
        assert!(
            accept.contains("application/json") && accept.contains("text/event-stream"),
            "mcp: request {i} must accept JSON and SSE, got `{accept}`"
        );
        let (session, version) = (
            request.header("mcp-session-id"),
            request.header("mcp-protocol-version"),
        );
        if i == 0 {
            assert_eq!(
                (session, version),
                (None, None),
                "mcp: initialize carries no session yet"
            );
        } else {
            assert_eq!(
                (session, version),
                (Some("session-1"), Some("2025-06-18")),
                "mcp: request {i} must carry the session id and the negotiated version"
            );
        }
    }
    let bodies: Vec<Value> = requests
        .iter()
        .map(|r| r.json().unwrap_or(Value::Null))
        .collect();
    assert_eq!(
        bodies[1]["method"], "notifications/initialized",
        "mcp: initialized follows initialize"
    );
    assert_eq!(
        bodies[3]["params"]["cursor"], "p2",
        "mcp: the second page is asked for with the cursor"
    );
    assert_eq!(
        bodies[4]["params"],
        json!({"name": "add", "arguments": {"a": 2, "b": 3}}),
        "mcp: tools/call carries the name and the model's arguments"
    );
    Outcome::passed()
}

/// Faults over Streamable HTTP: a 500, an SSE stream that ends before the response, a body
/// that is not JSON, and a response that never comes (timeout, then
/// `notifications/cancelled` POSTed): each a tool error; the run completes.
pub fn http_faults(backend: &dyn Backend) -> Outcome {
    let tools: Vec<Value> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
        .collect();
    let mut responses = init_responses();
    responses.push(json_answer(1, json!({"tools": tools})));
    responses.push(Response::json(500, &json!({"error": "boom"})));
    responses.push(Response::sse().send(sse_message(
        &json!({"jsonrpc": "2.0", "method": "notifications/progress"}),
    )));
    responses.push(
        Response::new(200)
            .header("content-type", "application/json")
            .send("this is not json"),
    );
    responses.push(Response::sse().stall());
    responses.push(Response::new(202));
    let upstream = GatedUpstream::start(responses).expect("upstream");
    let client = connect_http(
        backend,
        &upstream,
        McpOptions::new().request_timeout(FAULT_TIMEOUT),
    );
    let tools = tools_of(backend, &client);
    let agent = agent_with(
        backend,
        vec![
            Turn::new().tool_call("call_500", "a", "{}"),
            Turn::new().tool_call("call_ended", "b", "{}"),
            Turn::new().tool_call("call_malformed", "c", "{}"),
            Turn::new().tool_call("call_hang", "d", "{}"),
            Turn::new().text("survived"),
        ],
        tools,
    );
    let transcript = consume(backend, &agent, "go", |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    assert_tool_failed(&transcript, "call_500", "HTTP 500");
    assert_tool_failed(
        &transcript,
        "call_ended",
        "ended its event stream before answering",
    );
    assert_tool_failed(&transcript, "call_malformed", "malformed JSON-RPC");
    assert_tool_failed(&transcript, "call_hang", "did not answer tools/call");
    assert_eq!(
        transcript.completed_text(),
        "survived",
        "mcp: the run goes on after MCP faults\n{}",
        transcript.summary()
    );
    step("waiting for notifications/cancelled to be POSTed");
    // The notification goes out on a task of the runtime: keep the backend driven (a
    // single-threaded executor only runs while a thread runs it) while waiting for it.
    let posted = while_driven(backend, || upstream.wait_for_requests(8, WAIT));
    assert!(
        posted,
        "mcp: a timed-out request must be followed by a notifications/cancelled POST"
    );
    let requests = upstream.requests();
    let hang = requests[6].json().unwrap_or(Value::Null);
    let cancel = requests[7].json().unwrap_or(Value::Null);
    assert_eq!(
        (cancel["method"].as_str(), &cancel["params"]["requestId"]),
        (Some("notifications/cancelled"), &hang["id"]),
        "mcp: the cancellation names the timed-out request"
    );
    Outcome::passed()
}
