//! [`GatedUpstream`]: a scripted OpenAI-compatible upstream on `127.0.0.1:0`, built on std
//! threads so it is independent of every runtime, that can stream in lockstep with the
//! consumer and inject faults.
//!
//! Each request gets the next scripted [`Response`]: a status, headers and a body plan of
//! [`Action`]s (send bytes, wait for the gate, pause, trickle, reset, truncate, stall, send
//! keep-alive comments or any frame forever). The upstream records every request, how each
//! exchange ended, in particular whether the client closed the connection while the
//! response was still streaming ([`ExchangeEnd::ClientClosed`]): that is how cancellation
//! cases check that dropping a run closes its HTTP request, and how many body bytes it
//! managed to write ([`GatedUpstream::bytes_sent`]): that is how the fault cases show that a
//! client stopped reading an oversized response early. It also counts its open connections
//! ([`GatedUpstream::open_connections`]), so a test can check that none was leaked.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//! use conformance::kit::upstream::{openai, GatedUpstream, Response};
//!
//! let upstream = GatedUpstream::start([Response::sse()
//!     .send(openai::text_chunk("Hi"))
//!     .send(openai::DONE)])
//! .unwrap();
//! let mut socket = TcpStream::connect(upstream.addr()).unwrap();
//! socket
//!     .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
//!     .unwrap();
//! let mut response = String::new();
//! socket.read_to_string(&mut response).unwrap();
//! assert!(response.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(response.contains(r#""content":"Hi""#));
//! assert_eq!(upstream.requests()[0].path, "/v1/chat/completions");
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agent_http1::{BodyFraming, ChunkedDecoder, HeadLimits, HeadParser, HeadWriter, chunked};
use serde_json::Value;

use super::gate::Gate;

/// How long a response waits at a gate before giving up (it then records a failure and
/// resets the connection).
pub const DEFAULT_GATE_DEADLINE: Duration = Duration::from_secs(10);

/// The longest a stalled or keep-alive-only response is held open.
const HOLD_LIMIT: Duration = Duration::from_secs(30);

/// How the body of a [`Response`] is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Transfer-Encoding: chunked`; every send is one HTTP chunk. The connection stays
    /// open for the next request.
    Chunked,
    /// `Content-Length` (the sum of the bytes the plan sends).
    ContentLength,
    /// No length: the body ends when the upstream closes the connection.
    CloseDelimited,
}

/// One step of a response's body plan.
#[derive(Debug, Clone)]
pub enum Action {
    /// Write these bytes (one write, flushed; one HTTP chunk when chunked).
    Send(Vec<u8>),
    /// Write these bytes one at a time, each write flushed.
    Trickle(Vec<u8>),
    /// Sleep (pacing, e.g. to split a frame across TCP segments).
    Pause(Duration),
    /// Wait until the upstream's gate has been opened `step` times.
    WaitGate {
        /// The gate count to wait for.
        step: u64,
        /// What the test must have observed to open it, for the failure message.
        waiting_for: String,
    },
    /// Abort the connection with a TCP reset (linger 0), mid-body.
    Reset,
    /// Close the connection cleanly (FIN) without finishing the body.
    Truncate,
    /// Send nothing more; hold the connection open until the client closes it.
    Stall,
    /// Send a `: keep-alive` comment every interval until the client closes the connection.
    KeepAliveForever(Duration),
    /// Send these bytes (e.g. a text frame) every interval until the client closes the
    /// connection: a stream that never ends.
    RepeatForever {
        /// What to send each time.
        bytes: Vec<u8>,
        /// The pace.
        interval: Duration,
    },
}

/// A scripted response: status, headers and body plan.
///
/// ```
/// use std::time::Duration;
/// use conformance::kit::upstream::{openai, Response};
///
/// // A 429 asking to retry after 50 ms.
/// let busy = Response::json(429, &serde_json::json!({"error": {"message": "slow down"}}))
///     .header("retry-after", "0.05");
/// // An answer whose second chunk waits until the consumer saw the first.
/// let answer = Response::sse()
///     .send(openai::text_chunk("Hel"))
///     .wait_gate(1, "text delta 0 to reach the consumer")
///     .send(openai::text_chunk("lo"))
///     .send(openai::DONE);
/// assert_eq!(busy.status(), 429);
/// assert_eq!(answer.status(), 200);
/// ```
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    framing: Framing,
    actions: Vec<Action>,
    send_buffer: Option<usize>,
}

impl Response {
    /// A response with `status`, no headers, `Content-Length` framing and an empty body.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            framing: Framing::ContentLength,
            actions: Vec::new(),
            send_buffer: None,
        }
    }

    /// A `200` `text/event-stream` response, chunked, with an empty plan (add sends).
    pub fn sse() -> Self {
        Response::new(200)
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .framing(Framing::Chunked)
    }

    /// A complete JSON response.
    pub fn json(status: u16, body: &Value) -> Self {
        Response::new(status)
            .header("content-type", "application/json")
            .send(body.to_string())
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Add a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Set the framing.
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// Fix the upstream socket's send buffer (`SO_SNDBUF`, which also turns off the
    /// kernel's autotuning) for this response, so that a client that stops reading stops
    /// the upstream's writes sooner (see [`GatedUpstream::bytes_sent`]).
    pub fn send_buffer(mut self, bytes: usize) -> Self {
        self.send_buffer = Some(bytes);
        self
    }

    /// Append an action.
    pub fn then(mut self, action: Action) -> Self {
        self.actions.push(action);
        self
    }

    /// Append [`Action::Send`].
    pub fn send(self, bytes: impl AsRef<[u8]>) -> Self {
        self.then(Action::Send(bytes.as_ref().to_vec()))
    }

    /// Send `bytes` in pieces cut at the byte offsets `at` (ascending), with a short pause
    /// between pieces so that they travel in separate TCP segments.
    pub fn send_split(mut self, bytes: impl AsRef<[u8]>, at: &[usize]) -> Self {
        let bytes = bytes.as_ref();
        let mut start = 0;
        for &cut in at.iter().filter(|&&c| c > 0 && c < bytes.len()) {
            if cut <= start {
                continue;
            }
            self = self
                .send(&bytes[start..cut])
                .pause(Duration::from_millis(3));
            start = cut;
        }
        self.send(&bytes[start..])
    }

    /// Append [`Action::Trickle`].
    pub fn trickle(self, bytes: impl AsRef<[u8]>) -> Self {
        self.then(Action::Trickle(bytes.as_ref().to_vec()))
    }

    /// Append [`Action::Pause`].
    pub fn pause(self, duration: Duration) -> Self {
        self.then(Action::Pause(duration))
    }

    /// Append [`Action::WaitGate`].
    pub fn wait_gate(self, step: u64, waiting_for: impl Into<String>) -> Self {
        self.then(Action::WaitGate {
            step,
            waiting_for: waiting_for.into(),
        })
    }

    /// Append [`Action::Reset`].
    pub fn reset(self) -> Self {
        self.then(Action::Reset)
    }

    /// Append [`Action::Truncate`].
    pub fn truncate(self) -> Self {
        self.then(Action::Truncate)
    }

    /// Append [`Action::Stall`].
    pub fn stall(self) -> Self {
        self.then(Action::Stall)
    }

    /// Append [`Action::KeepAliveForever`].
    pub fn keep_alive_forever(self, interval: Duration) -> Self {
        self.then(Action::KeepAliveForever(interval))
    }

    /// Append [`Action::RepeatForever`].
    pub fn repeat_forever(self, bytes: impl AsRef<[u8]>, interval: Duration) -> Self {
        self.then(Action::RepeatForever {
            bytes: bytes.as_ref().to_vec(),
            interval,
        })
    }

    fn body_len(&self) -> usize {
        self.actions
            .iter()
            .map(|a| match a {
                Action::Send(b) | Action::Trickle(b) => b.len(),
                _ => 0,
            })
            .sum()
    }
}

/// OpenAI Chat Completions stream frames, as an upstream sends them.
pub mod openai {
    use serde_json::{Value, json};

    use super::Response;

    /// The frame that ends a stream.
    pub const DONE: &str = "data: [DONE]\n\n";

    fn frame(value: &Value) -> String {
        format!("data: {value}\n\n")
    }

    fn chunk(delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": "chatcmpl-upstream",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "upstream-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        })
    }

    /// A frame carrying one piece of answer text.
    pub fn text_chunk(text: &str) -> String {
        frame(&chunk(json!({"content": text}), None))
    }

    /// A frame carrying one whole tool call (call `index` of the turn).
    pub fn tool_call_chunk(index: u32, id: &str, name: &str, arguments: &str) -> String {
        frame(&chunk(
            json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                "function": {"name": name, "arguments": arguments}}]}),
            None,
        ))
    }

    /// A frame with an empty delta and a finish reason (`"stop"`, `"tool_calls"`, …).
    pub fn finish_chunk(reason: &str) -> String {
        frame(&chunk(json!({}), Some(reason)))
    }

    /// The final usage frame (no choices).
    pub fn usage_chunk(prompt_tokens: u64, completion_tokens: u64) -> String {
        frame(&json!({
            "id": "chatcmpl-upstream",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "upstream-model",
            "choices": [],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens},
        }))
    }

    /// A complete answer: one frame per delta, then `stop`, usage and `[DONE]`.
    pub fn answer<S: AsRef<str>>(deltas: &[S]) -> Response {
        let mut response = Response::sse();
        for d in deltas {
            response = response.send(text_chunk(d.as_ref()));
        }
        finish(response)
    }

    /// An answer in lockstep: the frame of delta `k` is sent only after the upstream's gate
    /// was opened `k` times (the test opens it once per text delta it observes).
    pub fn lockstep_answer<S: AsRef<str>>(deltas: &[S]) -> Response {
        let mut response = Response::sse();
        for (k, d) in deltas.iter().enumerate() {
            if k > 0 {
                response = response.wait_gate(
                    k as u64,
                    format!("text delta {} to reach the consumer", k - 1),
                );
            }
            response = response.send(text_chunk(d.as_ref()));
        }
        finish(response)
    }

    /// Append `stop`, a usage frame (3 prompt + 5 completion tokens) and `[DONE]`.
    pub fn finish(response: Response) -> Response {
        response
            .send(finish_chunk("stop"))
            .send(usage_chunk(3, 5))
            .send(DONE)
    }
}

/// A request the upstream received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Method, e.g. `POST`.
    pub method: String,
    /// Path with query, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Headers in order (names as sent).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// When the request was complete.
    pub received_at: Instant,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// How one exchange (request + response) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeEnd {
    /// The whole response was sent.
    Completed,
    /// The client closed the connection before the response was complete.
    ClientClosed,
    /// The plan reset the connection ([`Action::Reset`]).
    Reset,
    /// The plan closed the connection early ([`Action::Truncate`]).
    Truncated,
    /// A gate stayed shut past its deadline, or a stall outlived its hold limit; the
    /// connection was reset. See [`GatedUpstream::failures`].
    GaveUp,
}

#[derive(Default)]
struct State {
    requests: Vec<RecordedRequest>,
    ends: Vec<Option<(ExchangeEnd, Instant)>>,
    /// Body bytes written so far, per exchange.
    sent: Vec<Arc<AtomicU64>>,
    failures: Vec<String>,
}

struct Shared {
    script: Mutex<VecDeque<Response>>,
    gate: Arc<Gate>,
    gate_deadline: Duration,
    state: Mutex<State>,
    changed: Condvar,
    shutdown: AtomicBool,
    /// Clones of the open connections, to close them when the upstream is dropped.
    connections: Mutex<HashMap<u64, TcpStream>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A scripted upstream server; see the [module docs](self). Dropping it stops the server
/// and closes its connections.
pub struct GatedUpstream {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl fmt::Debug for GatedUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatedUpstream")
            .field("addr", &self.addr)
            .field("requests", &self.request_count())
            .finish_non_exhaustive()
    }
}

impl GatedUpstream {
    /// Start an upstream serving `responses` in order, one per request (requests past the
    /// end get a 500 and a recorded failure).
    pub fn start(responses: impl IntoIterator<Item = Response>) -> io::Result<Self> {
        Self::start_with_deadline(responses, DEFAULT_GATE_DEADLINE)
    }

    /// [`start`](Self::start) with another gate deadline.
    pub fn start_with_deadline(
        responses: impl IntoIterator<Item = Response>,
        gate_deadline: Duration,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            script: Mutex::new(responses.into_iter().collect()),
            gate: Gate::new("upstream"),
            gate_deadline,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            shutdown: AtomicBool::new(false),
            connections: Mutex::new(HashMap::new()),
        });
        let accept_shared = shared.clone();
        std::thread::Builder::new()
            .name("gated-upstream".into())
            .spawn(move || accept_loop(listener, accept_shared))?;
        Ok(GatedUpstream { shared, addr })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>/v1`: the base URL for an `OpenAiConfig`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The gate the [`Action::WaitGate`] steps wait for.
    pub fn gate(&self) -> Arc<Gate> {
        self.shared.gate.clone()
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.state).requests.clone()
    }

    /// How many requests were received.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.state).requests.len()
    }

    /// How exchange `i` (from 0) ended, if it has.
    pub fn exchange_end(&self, i: usize) -> Option<ExchangeEnd> {
        lock(&self.shared.state)
            .ends
            .get(i)
            .copied()
            .flatten()
            .map(|(end, _)| end)
    }

    /// Block until exchange `i` has ended or `timeout` passes; returns how it ended.
    pub fn wait_for_end(&self, i: usize, timeout: Duration) -> Option<ExchangeEnd> {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.shared.state);
        loop {
            if let Some(Some((end, _))) = state.ends.get(i) {
                return Some(*end);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Body bytes (after chunked framing is removed) the upstream managed to write for
    /// exchange `i` so far: what the kernel accepted, so at most what the client read plus
    /// the socket buffers in between. Large sends are written in 64 KiB pieces, so the count
    /// follows the progress of a send that the client stops reading.
    pub fn bytes_sent(&self, i: usize) -> u64 {
        lock(&self.shared.state)
            .sent
            .get(i)
            .map_or(0, |n| n.load(Ordering::Acquire))
    }

    /// Connections currently open on the upstream's side (accepted and not yet closed).
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.connections).len()
    }

    /// Poll (every millisecond) until no connection is open or `timeout` passes; `true` when
    /// none is. `between` runs before each poll (e.g. to let a current-thread runtime run the
    /// task that closes a dropped connection).
    pub fn wait_for_no_connections(&self, timeout: Duration, mut between: impl FnMut()) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.open_connections() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            between();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Block until `n` requests have arrived or `timeout` passes; `true` when they did.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.shared.state);
        while state.requests.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// What went wrong on the upstream side (gates that stayed shut, unscripted requests,
    /// bad requests), for failure messages.
    pub fn failures(&self) -> Vec<String> {
        lock(&self.shared.state).failures.clone()
    }
}

impl Drop for GatedUpstream {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        for (_, conn) in lock(&self.shared.connections).drain() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for (id, conn) in (0u64..).zip(listener.incoming()) {
        if shared.shutdown.load(Ordering::Acquire) {
            break;
        }
        let Ok(conn) = conn else { continue };
        if let Ok(clone) = conn.try_clone() {
            lock(&shared.connections).insert(id, clone);
        }
        let conn_shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("gated-upstream-conn".into())
            .spawn(move || {
                serve_connection(conn, &conn_shared);
                // Drop the clone first, so that closing the stream really closes the
                // socket (and a reset is sent as a reset).
                lock(&conn_shared.connections).remove(&id);
            });
    }
}

fn serve_connection(stream: TcpStream, shared: &Shared) {
    let mut stream = stream;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(HOLD_LIMIT));
    let mut buf = Vec::new();
    loop {
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        let request = match read_request(&mut stream, &mut buf) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(err) => {
                if err.kind() != io::ErrorKind::UnexpectedEof
                    && err.kind() != io::ErrorKind::ConnectionReset
                    && err.kind() != io::ErrorKind::WouldBlock
                    && err.kind() != io::ErrorKind::TimedOut
                {
                    record_failure(shared, format!("upstream: bad request: {err}"));
                }
                return;
            }
        };
        let client_closes = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let sent = Arc::new(AtomicU64::new(0));
        let index = {
            let mut state = lock(&shared.state);
            state.requests.push(request);
            state.ends.push(None);
            state.sent.push(sent.clone());
            shared.changed.notify_all();
            state.requests.len() - 1
        };
        let response = lock(&shared.script).pop_front().unwrap_or_else(|| {
            record_failure(
                shared,
                format!("upstream: no response scripted for request #{}", index + 1),
            );
            Response::json(
                500,
                &serde_json::json!({"error": {"message": "the gated upstream has no response scripted for this request"}}),
            )
        });
        let mut exchange = Exchange {
            stream: &mut stream,
            framing: response.framing,
            shared,
            sent: &sent,
        };
        let (end, keep_open) = serve_response(&mut exchange, &response);
        {
            let mut state = lock(&shared.state);
            state.ends[index] = Some((end, Instant::now()));
            shared.changed.notify_all();
        }
        if !keep_open {
            return;
        }
        if client_closes {
            let _ = stream.shutdown(Shutdown::Write);
            return;
        }
    }
}

fn record_failure(shared: &Shared, message: String) {
    let mut state = lock(&shared.state);
    state.failures.push(message);
    shared.changed.notify_all();
}

fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn invalid_data(error: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// Read one request (head and body) from `stream`; `None` at a clean end of connection.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<RecordedRequest>> {
    let mut parser = HeadParser::new(HeadLimits::default());
    let (head, used) = loop {
        if let Some(parsed) = parser.parse_request(buf).map_err(invalid_data)? {
            break parsed;
        }
        if fill(stream, buf)? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    };
    buf.drain(..used);
    let body = match head.body_framing().map_err(invalid_data)? {
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut body = Vec::new();
            loop {
                let used = decoder.decode(buf, &mut body).map_err(invalid_data)?;
                buf.drain(..used);
                if decoder.is_done() {
                    break body;
                }
                if fill(stream, buf)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        BodyFraming::Length(length) => {
            let length = usize::try_from(length).map_err(invalid_data)?;
            while buf.len() < length {
                if fill(stream, buf)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            buf.drain(..length).collect()
        }
        // Never for a request: no framing header means no body.
        BodyFraming::CloseDelimited => Vec::new(),
    };
    Ok(Some(RecordedRequest {
        method: head.method,
        path: head.path,
        headers: head.headers,
        body,
        received_at: Instant::now(),
    }))
}

/// Whether the peer has closed (FIN or RST) its side of `stream`.
fn peer_closed(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let closed = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    let _ = stream.set_nonblocking(false);
    closed
}

fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

enum Step {
    Continue,
    End(ExchangeEnd),
}

/// One response being written: the connection, the body framing and the counters.
struct Exchange<'a> {
    stream: &'a mut TcpStream,
    framing: Framing,
    shared: &'a Shared,
    sent: &'a AtomicU64,
}

/// Large sends are written in pieces this big, so that [`GatedUpstream::bytes_sent`] follows
/// their progress.
const WRITE_PIECE: usize = 64 * 1024;

impl Exchange<'_> {
    /// Write body bytes (one HTTP chunk when chunked), flushed; counts them.
    fn write_body(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if bytes.len() <= WRITE_PIECE {
            // One write (one TCP segment with TCP_NODELAY), as a real server sends a frame.
            let out = if self.framing == Framing::Chunked {
                let mut out = Vec::with_capacity(bytes.len() + 16);
                chunked::encode_chunk(bytes, &mut out);
                out
            } else {
                bytes.to_vec()
            };
            self.stream.write_all(&out)?;
            self.sent.fetch_add(bytes.len() as u64, Ordering::AcqRel);
            return self.stream.flush();
        }
        if self.framing == Framing::Chunked {
            let mut size_line = Vec::new();
            chunked::encode_chunk_size(bytes.len(), &mut size_line);
            self.stream.write_all(&size_line)?;
        }
        for piece in bytes.chunks(WRITE_PIECE) {
            self.stream.write_all(piece)?;
            self.sent.fetch_add(piece.len() as u64, Ordering::AcqRel);
        }
        if self.framing == Framing::Chunked {
            self.stream.write_all(chunked::CHUNK_END)?;
        }
        self.stream.flush()
    }
}

/// Write `response`; returns how the exchange ended and whether the connection may serve
/// another request.
fn serve_response(exchange: &mut Exchange<'_>, response: &Response) -> (ExchangeEnd, bool) {
    if let Some(size) = response.send_buffer {
        let _ = socket2::SockRef::from(&*exchange.stream).set_send_buffer_size(size);
    }
    let head =
        HeadWriter::response(response.status).headers(response.headers.iter().map(|(n, v)| (n, v)));
    let head = match response.framing {
        Framing::Chunked => head.header("transfer-encoding", "chunked"),
        Framing::ContentLength => head.header("content-length", &response.body_len().to_string()),
        Framing::CloseDelimited => head.header("connection", "close"),
    };
    if exchange.stream.write_all(&head.finish()).is_err() {
        return (ExchangeEnd::ClientClosed, false);
    }
    for action in &response.actions {
        match run_action(exchange, action) {
            Step::Continue => {}
            Step::End(end) => return (end, false),
        }
    }
    if response.framing == Framing::Chunked
        && exchange.stream.write_all(chunked::LAST_CHUNK).is_err()
    {
        return (ExchangeEnd::ClientClosed, false);
    }
    let _ = exchange.stream.flush();
    if response.framing == Framing::CloseDelimited {
        let _ = exchange.stream.shutdown(Shutdown::Write);
        return (ExchangeEnd::Completed, false);
    }
    (ExchangeEnd::Completed, true)
}

fn run_action(exchange: &mut Exchange<'_>, action: &Action) -> Step {
    let closed = Step::End(ExchangeEnd::ClientClosed);
    let shared = exchange.shared;
    match action {
        Action::Send(bytes) => {
            if exchange.write_body(bytes).is_err() {
                return closed;
            }
        }
        Action::Trickle(bytes) => {
            for byte in bytes {
                if exchange.write_body(std::slice::from_ref(byte)).is_err() {
                    return closed;
                }
            }
        }
        Action::Pause(duration) => std::thread::sleep(*duration),
        Action::WaitGate { step, waiting_for } => {
            let started = Instant::now();
            while !shared.gate.wait_blocking(*step, Duration::from_millis(5)) {
                if peer_closed(exchange.stream) {
                    return closed;
                }
                if shared.shutdown.load(Ordering::Acquire) {
                    reset(exchange.stream);
                    return Step::End(ExchangeEnd::GaveUp);
                }
                if started.elapsed() >= shared.gate_deadline {
                    record_failure(
                        shared,
                        format!(
                            "upstream: gate {step} stayed shut for {:?}: waited for {waiting_for}",
                            shared.gate_deadline
                        ),
                    );
                    reset(exchange.stream);
                    return Step::End(ExchangeEnd::GaveUp);
                }
            }
        }
        Action::Reset => {
            let _ = exchange.stream.flush();
            reset(exchange.stream);
            return Step::End(ExchangeEnd::Reset);
        }
        Action::Truncate => {
            let _ = exchange.stream.flush();
            let _ = exchange.stream.shutdown(Shutdown::Write);
            return Step::End(ExchangeEnd::Truncated);
        }
        Action::Stall => return hold(exchange, None),
        Action::KeepAliveForever(interval) => {
            return hold(exchange, Some((b": keep-alive\n\n", *interval)));
        }
        Action::RepeatForever { bytes, interval } => {
            return hold(exchange, Some((bytes, *interval)));
        }
    }
    Step::Continue
}

/// Hold the connection (sending `repeat`'s bytes every interval when given) until the client
/// closes it, the upstream shuts down or [`HOLD_LIMIT`] passes.
fn hold(exchange: &mut Exchange<'_>, repeat: Option<(&[u8], Duration)>) -> Step {
    let started = Instant::now();
    let mut last_sent = Instant::now();
    loop {
        if peer_closed(exchange.stream) {
            return Step::End(ExchangeEnd::ClientClosed);
        }
        if exchange.shared.shutdown.load(Ordering::Acquire) || started.elapsed() >= HOLD_LIMIT {
            reset(exchange.stream);
            return Step::End(ExchangeEnd::GaveUp);
        }
        if let Some((bytes, interval)) = repeat
            && last_sent.elapsed() >= interval
        {
            if exchange.write_body(bytes).is_err() {
                return Step::End(ExchangeEnd::ClientClosed);
            }
            last_sent = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
