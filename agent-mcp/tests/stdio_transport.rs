//! The stdio transport over in-memory pipes, the test playing the server line by line: the
//! I/O hand-off between concurrent requests (no task is spawned), answers out of order, a
//! request dropped while another waits, server requests answered, a closed stdout.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use agent_core::process::{AsyncRead, AsyncWrite, ProcessControl};
use agent_mcp::{McpErrorKind, StdioTransport, Transport, jsonrpc};
use futures_util::FutureExt;
use serde_json::{Value, json};

/// One direction of an in-memory pipe.
#[derive(Default)]
struct Pipe {
    bytes: VecDeque<u8>,
    closed: bool,
    reader: Option<Waker>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Pipe>>);

impl Shared {
    fn push(&self, text: &str) {
        let mut pipe = self.0.lock().unwrap();
        pipe.bytes.extend(text.as_bytes());
        if let Some(w) = pipe.reader.take() {
            w.wake();
        }
    }

    fn close(&self) {
        let mut pipe = self.0.lock().unwrap();
        pipe.closed = true;
        if let Some(w) = pipe.reader.take() {
            w.wake();
        }
    }

    /// Complete lines written so far, parsed.
    fn take_lines(&self) -> Vec<Value> {
        let mut pipe = self.0.lock().unwrap();
        let mut out = Vec::new();
        while let Some(pos) = pipe.bytes.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pipe.bytes.drain(..=pos).collect();
            out.push(serde_json::from_slice(&line).expect("the client writes JSON lines"));
        }
        out
    }
}

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut pipe = self.0.lock().unwrap();
        if pipe.bytes.is_empty() {
            if pipe.closed {
                return Poll::Ready(Ok(0));
            }
            pipe.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(pipe.bytes.len());
        for (slot, byte) in buf.iter_mut().zip(pipe.bytes.drain(..n)) {
            *slot = byte;
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.lock().unwrap().bytes.extend(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

struct NoProcess;
impl ProcessControl for NoProcess {
    fn id(&self) -> Option<u32> {
        None
    }
    fn kill(&self) -> io::Result<()> {
        Ok(())
    }
}

struct Fixture {
    transport: StdioTransport,
    /// What the client wrote (the server's stdin).
    stdin: Shared,
    /// What the server says (the client's stdout).
    stdout: Shared,
    stderr: Shared,
}

fn fixture(max_line: usize) -> Fixture {
    let (stdin, stdout, stderr) = (Shared::default(), Shared::default(), Shared::default());
    let transport = StdioTransport::from_pipes(
        Box::pin(stdin.clone()),
        Box::pin(stdout.clone()),
        Box::pin(stderr.clone()),
        Box::new(NoProcess),
        "in-memory".into(),
        max_line,
    );
    Fixture {
        transport,
        stdin,
        stdout,
        stderr,
    }
}

fn answer(id: u64, value: Value) -> String {
    format!("{}\n", json!({"jsonrpc": "2.0", "id": id, "result": value}))
}

#[test]
fn concurrent_requests_answered_out_of_order_each_get_their_own_answer() {
    let f = fixture(1 << 20);
    let mut one = f
        .transport
        .request(1, jsonrpc::request(1, "tools/call", json!({"n": 1})));
    let mut two = f
        .transport
        .request(2, jsonrpc::request(2, "tools/call", json!({"n": 2})));
    assert!(one.as_mut().now_or_never().is_none(), "no answer yet");
    assert!(two.as_mut().now_or_never().is_none(), "no answer yet");
    let sent = f.stdin.take_lines();
    assert_eq!(
        sent.iter().map(|m| m["id"].clone()).collect::<Vec<_>>(),
        [json!(1), json!(2)]
    );

    // The answer to 2 first; only `one` is polled, and it hands 2's answer over.
    f.stdout.push(&answer(2, json!("second")));
    assert!(one.as_mut().now_or_never().is_none(), "one still waits");
    let got = two
        .now_or_never()
        .expect("two was answered during one's poll")
        .unwrap();
    assert_eq!(got["result"], "second");
    f.stdout.push(&answer(1, json!("first")));
    assert_eq!(one.now_or_never().unwrap().unwrap()["result"], "first");
}

#[test]
fn a_request_dropped_while_another_waits_leaves_the_other_working() {
    let f = fixture(1 << 20);
    let mut one = f.transport.request(1, jsonrpc::request(1, "a", json!({})));
    let mut two = f.transport.request(2, jsonrpc::request(2, "b", json!({})));
    assert!(one.as_mut().now_or_never().is_none());
    assert!(two.as_mut().now_or_never().is_none());
    drop(one);
    // A late answer to the dropped request is discarded; two still gets its own.
    f.stdout.push(&answer(1, json!("late")));
    f.stdout.push(&answer(2, json!("mine")));
    assert_eq!(two.now_or_never().unwrap().unwrap()["result"], "mine");
}

#[test]
fn server_requests_are_answered_and_stderr_is_drained() {
    let f = fixture(1 << 20);
    let mut one = f.transport.request(1, jsonrpc::request(1, "a", json!({})));
    f.stderr.push("booting\n");
    f.stdout
        .push("{\"jsonrpc\":\"2.0\",\"id\":\"p1\",\"method\":\"ping\"}\n");
    f.stdout
        .push("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"sampling/createMessage\"}\n");
    f.stdout
        .push("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n");
    assert!(one.as_mut().now_or_never().is_none());
    // The answers go out with the next write pass.
    f.stdout.push(&answer(1, json!({})));
    assert!(one.now_or_never().unwrap().is_ok());
    let _ = f
        .transport
        .request(3, jsonrpc::request(3, "c", json!({})))
        .now_or_never();
    let sent = f.stdin.take_lines();
    assert!(
        sent.iter()
            .any(|m| m["id"] == "p1" && m["result"] == json!({})),
        "{sent:?}"
    );
    assert!(
        sent.iter()
            .any(|m| m["id"] == 7 && m["error"]["code"] == -32601),
        "{sent:?}"
    );
    assert!(
        f.stderr.0.lock().unwrap().bytes.is_empty(),
        "stderr was read"
    );
}

#[test]
fn a_closed_stdout_fails_every_waiting_request_and_later_ones_at_once() {
    let f = fixture(1 << 20);
    let mut one = f.transport.request(1, jsonrpc::request(1, "a", json!({})));
    let mut two = f.transport.request(2, jsonrpc::request(2, "b", json!({})));
    assert!(one.as_mut().now_or_never().is_none());
    f.stderr.push("panic: out of cheese\n");
    f.stderr.close();
    f.stdout.close();
    let err = one.now_or_never().unwrap().unwrap_err();
    assert_eq!(err.kind, McpErrorKind::Closed);
    assert!(
        err.message.contains("out of cheese"),
        "the stderr tail explains: {err}"
    );
    assert_eq!(
        two.as_mut().now_or_never().unwrap().unwrap_err().kind,
        McpErrorKind::Closed
    );
    let later = f
        .transport
        .request(3, jsonrpc::request(3, "c", json!({})))
        .now_or_never();
    assert_eq!(later.unwrap().unwrap_err().kind, McpErrorKind::Closed);
    let notify = f
        .transport
        .notify(jsonrpc::notification("x", None))
        .now_or_never();
    assert!(
        notify.unwrap().is_err(),
        "a notification on a closed connection fails"
    );
}

#[test]
fn an_oversized_line_and_a_line_that_is_not_json_close_the_connection() {
    let f = fixture(1024);
    let mut one = f.transport.request(1, jsonrpc::request(1, "a", json!({})));
    f.stdout.push(&"x".repeat(5000));
    let err = one.as_mut().now_or_never().unwrap().unwrap_err();
    assert_eq!(err.kind, McpErrorKind::TooLarge, "{err}");

    let f = fixture(1024);
    let mut one = f.transport.request(1, jsonrpc::request(1, "a", json!({})));
    f.stdout.push("Traceback (most recent call last):\n");
    let err = one.as_mut().now_or_never().unwrap().unwrap_err();
    assert_eq!(err.kind, McpErrorKind::Protocol, "{err}");
    assert!(err.message.contains("Traceback"), "{err}");
}

struct CountingWaker(std::sync::atomic::AtomicUsize);
impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn the_request_that_drove_the_pipes_wakes_the_others_when_it_finishes() {
    let f = fixture(1 << 20);
    let mut one = f.transport.request(1, jsonrpc::request(1, "a", json!({})));
    let mut two = f.transport.request(2, jsonrpc::request(2, "b", json!({})));
    let w2 = Arc::new(CountingWaker(Default::default()));
    let waker2 = Waker::from(w2.clone());
    // two polls first, then one: one's waker is the last the pipe saw.
    assert!(
        two.as_mut()
            .poll(&mut Context::from_waker(&waker2))
            .is_pending()
    );
    assert!(one.as_mut().now_or_never().is_none());
    let before = w2.0.load(std::sync::atomic::Ordering::SeqCst);
    f.stdout.push(&answer(1, json!("first")));
    assert!(one.now_or_never().unwrap().is_ok());
    assert!(
        w2.0.load(std::sync::atomic::Ordering::SeqCst) > before,
        "the finished reader must wake the waiting request so that it reads on"
    );
    f.stdout.push(&answer(2, json!("second")));
    assert!(
        two.as_mut()
            .poll(&mut Context::from_waker(&waker2))
            .is_ready()
    );
}
