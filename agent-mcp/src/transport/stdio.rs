//! [`StdioTransport`]: an MCP server as a child process, newline-delimited JSON-RPC over its
//! stdin and stdout, its stderr drained into the log.
//!
//! No task is spawned: whichever request future is polled does the I/O for all of them
//! (writes what is queued, reads responses and hands each to the request it answers, drains
//! stderr), so the transport works the same under any executor, or under a plain
//! `block_on`. When that future finishes or is dropped it wakes the others, one of which
//! takes over.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use agent_core::process::{
    ProcessCommand, ProcessControl, ProcessReader, ProcessSpawner, ProcessWriter,
};
use agent_core::runtime::BoxFuture;
use futures_io::AsyncWrite;
use serde_json::Value;

use super::Transport;
use super::lines::{LineError, LineReader};
use crate::error::{McpError, McpErrorKind, excerpt};
use crate::jsonrpc::{self, Incoming};

/// Log target of the server's stderr lines.
pub const STDERR_TARGET: &str = "agent_mcp::stderr";

/// Lines of stderr kept to explain a server that exits.
const STDERR_TAIL_LINES: usize = 5;

/// Messages handled per poll before yielding to the executor (a cooperative budget).
const LINES_PER_POLL: usize = 64;

/// Bytes written to stdin per write call.
const WRITE_CHUNK: usize = 16 * 1024;

/// An MCP server started as a child process (the stdio transport of the spec).
///
/// Messages are single lines of JSON on the child's stdin and stdout. The child's stderr is
/// read as it comes and logged line by line under the tracing target `agent_mcp::stderr` (at `info`); the last
/// lines are quoted in the error when the server exits. Dropping the transport (the last
/// [`McpClient`](crate::McpClient) clone) kills the child.
///
/// Faults end in an [`McpError`] for every waiting request, never a hang: the child exiting
/// or closing stdout ([`McpErrorKind::Closed`]), a line that is not JSON
/// ([`McpErrorKind::Protocol`]), a line over the size bound ([`McpErrorKind::TooLarge`]).
/// After such a fault the connection is closed for good; later requests fail at once.
pub struct StdioTransport {
    shared: Arc<Shared>,
    describe: String,
    _control: Box<dyn ProcessControl>,
}

impl fmt::Debug for StdioTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdioTransport")
            .field("command", &self.describe)
            .finish_non_exhaustive()
    }
}

impl StdioTransport {
    /// Start `command` through `spawner` (the backend's: `TokioSpawner`, `SmolSpawner`,
    /// `ThreadSpawner`); lines longer than `max_line_bytes` close the connection.
    pub fn spawn(
        spawner: &dyn ProcessSpawner,
        command: &ProcessCommand,
        max_line_bytes: usize,
    ) -> Result<Self, McpError> {
        let child = spawner.spawn(command).map_err(|err| {
            McpError::new(
                McpErrorKind::Spawn,
                format!("could not start the MCP server `{command}`: {err}"),
            )
        })?;
        Ok(StdioTransport::from_pipes(
            child.stdin,
            child.stdout,
            child.stderr,
            child.control,
            format!("stdio: {command}"),
            max_line_bytes,
        ))
    }

    /// A transport over pipes already open (a child started elsewhere, or an in-memory
    /// server in tests); `control` is dropped with the transport.
    pub fn from_pipes(
        stdin: ProcessWriter,
        stdout: ProcessReader,
        stderr: ProcessReader,
        control: Box<dyn ProcessControl>,
        describe: String,
        max_line_bytes: usize,
    ) -> Self {
        StdioTransport {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                io: Mutex::new(Io {
                    stdin,
                    stdout: LineReader::new(stdout, max_line_bytes),
                    stderr: Some(LineReader::new(stderr, max_line_bytes)),
                }),
                describe: describe.clone(),
            }),
            describe,
            _control: control,
        }
    }
}

impl Transport for StdioTransport {
    fn request(&self, id: u64, message: Value) -> BoxFuture<Result<Value, McpError>> {
        let shared = self.shared.clone();
        {
            let mut state = shared.lock_state();
            if state.closed.is_none() {
                state.enqueue(&message);
                state.pending.insert(id, Slot::default());
            }
        }
        Box::pin(StdioRequest { shared, id })
    }

    fn notify(&self, message: Value) -> BoxFuture<Result<(), McpError>> {
        let shared = self.shared.clone();
        let closed = {
            let mut state = shared.lock_state();
            if state.closed.is_none() {
                state.enqueue(&message);
            }
            state.closed.clone()
        };
        Box::pin(async move {
            if let Some(err) = closed {
                return Err(err);
            }
            // Hand the bytes to the pipe now (a notification has no response to wait for).
            std::future::poll_fn(|cx| shared.poll_flush_outgoing(cx)).await
        })
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

struct Shared {
    state: Mutex<State>,
    /// Held only for one synchronous I/O pass inside a poll (never across an await).
    io: Mutex<Io>,
    describe: String,
}

struct Io {
    stdin: ProcessWriter,
    stdout: LineReader<ProcessReader>,
    /// `None` once stderr has ended.
    stderr: Option<LineReader<ProcessReader>>,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Slot>,
    /// Bytes waiting to be written to stdin.
    outgoing: VecDeque<u8>,
    /// Set once the connection is broken; every later request gets this error.
    closed: Option<McpError>,
    stderr_tail: VecDeque<String>,
}

#[derive(Default)]
struct Slot {
    waker: Option<Waker>,
    response: Option<Result<Value, McpError>>,
}

impl State {
    fn enqueue(&mut self, message: &Value) {
        // serde_json never writes a raw newline inside a compact value.
        self.outgoing.extend(message.to_string().as_bytes());
        self.outgoing.push_back(b'\n');
    }

    fn wake_all(&mut self) {
        for slot in self.pending.values_mut() {
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
        }
    }

    fn fail_all(&mut self, err: McpError) {
        if self.closed.is_some() {
            return;
        }
        tracing::debug!(error = %err, "MCP stdio connection closed");
        for slot in self.pending.values_mut() {
            slot.response.get_or_insert_with(|| Err(err.clone()));
        }
        self.closed = Some(err);
        self.outgoing.clear();
        self.wake_all();
    }

    fn stderr_context(&self) -> String {
        if self.stderr_tail.is_empty() {
            String::new()
        } else {
            let lines: Vec<&str> = self.stderr_tail.iter().map(String::as_str).collect();
            format!("; its last stderr lines: {}", lines.join(" | "))
        }
    }
}

impl Shared {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One I/O pass, if no other poll is doing one: write, drain stderr, read stdout.
    fn drive(&self, cx: &mut Context<'_>) {
        let Ok(mut io) = self.io.try_lock() else {
            // Another thread is in its pass; it hands our response over and wakes us.
            return;
        };
        let io = &mut *io;
        self.write_pass(io, cx);
        self.stderr_pass(io, cx);
        self.read_pass(io, cx);
    }

    fn poll_flush_outgoing(&self, cx: &mut Context<'_>) -> Poll<Result<(), McpError>> {
        let Ok(mut io) = self.io.try_lock() else {
            // The pass in progress writes our bytes; they are queued in order.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        };
        self.write_pass(&mut io, cx);
        let state = self.lock_state();
        match (&state.closed, state.outgoing.is_empty()) {
            (Some(err), _) => Poll::Ready(Err(err.clone())),
            (None, true) => Poll::Ready(Ok(())),
            (None, false) => Poll::Pending,
        }
    }

    fn write_pass(&self, io: &mut Io, cx: &mut Context<'_>) {
        loop {
            let chunk: Vec<u8> = {
                let state = self.lock_state();
                if state.closed.is_some() || state.outgoing.is_empty() {
                    break;
                }
                state.outgoing.iter().take(WRITE_CHUNK).copied().collect()
            };
            match Pin::new(&mut io.stdin).poll_write(cx, &chunk) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    let mut state = self.lock_state();
                    let context = state.stderr_context();
                    state.fail_all(McpError::closed(format!(
                        "the MCP server `{}` no longer reads its stdin (it exited?){context}",
                        self.describe
                    )));
                    return;
                }
                Poll::Ready(Ok(n)) => {
                    self.lock_state().outgoing.drain(..n);
                }
                Poll::Pending => return,
            }
        }
        let _ = Pin::new(&mut io.stdin).poll_flush(cx);
    }

    fn stderr_pass(&self, io: &mut Io, cx: &mut Context<'_>) {
        let Some(stderr) = &mut io.stderr else {
            return;
        };
        for _ in 0..LINES_PER_POLL {
            match stderr.poll_line(cx) {
                Poll::Ready(Ok(Some(line))) => {
                    let line = String::from_utf8_lossy(&line).into_owned();
                    tracing::info!(target: STDERR_TARGET, server = %self.describe, "{line}");
                    let mut state = self.lock_state();
                    if state.stderr_tail.len() == STDERR_TAIL_LINES {
                        state.stderr_tail.pop_front();
                    }
                    state.stderr_tail.push_back(excerpt(&line, 200));
                }
                Poll::Ready(Ok(None)) | Poll::Ready(Err(_)) => {
                    io.stderr = None;
                    return;
                }
                Poll::Pending => return,
            }
        }
        cx.waker().wake_by_ref();
    }

    fn read_pass(&self, io: &mut Io, cx: &mut Context<'_>) {
        for _ in 0..LINES_PER_POLL {
            if self.lock_state().closed.is_some() {
                return;
            }
            match io.stdout.poll_line(cx) {
                Poll::Ready(Ok(Some(line))) => {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    self.dispatch(&line);
                }
                Poll::Ready(Ok(None)) => {
                    // Read what the server said on its way out before quoting it.
                    self.stderr_pass(io, cx);
                    let mut state = self.lock_state();
                    let context = state.stderr_context();
                    state.fail_all(McpError::closed(format!(
                        "the MCP server `{}` closed its stdout (it exited?){context}",
                        self.describe
                    )));
                    return;
                }
                Poll::Ready(Err(LineError::TooLong(max))) => {
                    self.lock_state().fail_all(McpError::new(
                        McpErrorKind::TooLarge,
                        format!(
                            "the MCP server `{}` sent a line longer than {max} bytes",
                            self.describe
                        ),
                    ));
                    return;
                }
                Poll::Ready(Err(LineError::Io(err))) => {
                    self.lock_state().fail_all(McpError::closed(format!(
                        "reading from the MCP server `{}` failed: {err}",
                        self.describe
                    )));
                    return;
                }
                Poll::Pending => return,
            }
        }
        // Budget spent with more to read: come back after the executor had its turn.
        cx.waker().wake_by_ref();
    }

    fn dispatch(&self, line: &[u8]) {
        let messages = match jsonrpc::parse(line) {
            Ok(messages) => messages,
            Err(err) => {
                // Not JSON: the stream is out of step; nothing it says can be trusted.
                self.lock_state().fail_all(McpError::protocol(format!(
                    "{} (from `{}`)",
                    err.message, self.describe
                )));
                return;
            }
        };
        let mut state = self.lock_state();
        for message in messages {
            match message {
                Incoming::Response { id, message } => match state.pending.get_mut(&id) {
                    Some(slot) => {
                        slot.response = Some(Ok(message));
                        if let Some(waker) = slot.waker.take() {
                            waker.wake();
                        }
                    }
                    None => tracing::debug!(id, "MCP response to no waiting request (late?)"),
                },
                Incoming::MalformedResponse { id } => {
                    if let Some(slot) = state.pending.get_mut(&id) {
                        slot.response = Some(Err(McpError::protocol(format!(
                            "the MCP server `{}` answered request {id} with neither result nor error",
                            self.describe
                        ))));
                        if let Some(waker) = slot.waker.take() {
                            waker.wake();
                        }
                    }
                }
                Incoming::Request { id, method } => {
                    let answer = jsonrpc::answer_server_request(id, &method);
                    state.enqueue(&answer);
                }
                Incoming::Notification { method } => {
                    tracing::debug!(method, server = %self.describe, "MCP notification");
                }
                Incoming::Unrecognized(value) => {
                    tracing::warn!(
                        server = %self.describe,
                        message = %excerpt(&value.to_string(), 200),
                        "ignoring a message that is no JSON-RPC response to a waiting request"
                    );
                }
            }
        }
    }
}

/// The future of one request: polls do the shared I/O until its response arrives.
struct StdioRequest {
    shared: Arc<Shared>,
    id: u64,
}

impl StdioRequest {
    fn take_response(&self, cx: &mut Context<'_>) -> Option<Result<Value, McpError>> {
        let mut state = self.shared.lock_state();
        if let Some(slot) = state.pending.get_mut(&self.id) {
            if let Some(response) = slot.response.take() {
                state.pending.remove(&self.id);
                // Whoever was driving the I/O for us may have been us: let another take over.
                state.wake_all();
                return Some(response);
            }
            slot.waker = Some(cx.waker().clone());
            return None;
        }
        // Not registered: the connection was already closed when the request was made.
        Some(Err(state.closed.clone().unwrap_or_else(|| {
            McpError::closed("the connection is closed")
        })))
    }
}

impl std::future::Future for StdioRequest {
    type Output = Result<Value, McpError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(response) = self.take_response(cx) {
            return Poll::Ready(response);
        }
        self.shared.drive(cx);
        match self.take_response(cx) {
            Some(response) => Poll::Ready(response),
            None => Poll::Pending,
        }
    }
}

impl Drop for StdioRequest {
    fn drop(&mut self) {
        let mut state = self.shared.lock_state();
        if state.pending.remove(&self.id).is_some() {
            state.wake_all();
        }
    }
}
