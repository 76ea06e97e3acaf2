//! Helpers shared by the integration tests: executors, a gated model, a raw HTTP client.
#![allow(dead_code)]

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agent_core::model::{FinishReason, Model, ModelContext, ModelDelta, ModelRequest, ModelStream};
use backend_smol::SmolRuntime;
use backend_smol::async_executor::Executor;
use futures_core::Stream;

/// How long any single wait in these tests may take before the test fails.
pub const WATCHDOG: Duration = Duration::from_secs(10);

/// An executor run by exactly one dedicated thread, until dropped.
pub struct SingleThread {
    pub runtime: SmolRuntime,
    pub thread_id: std::thread::ThreadId,
    stop: Arc<AtomicBool>,
    waker: Arc<Mutex<Option<Waker>>>,
    thread: Option<JoinHandle<()>>,
}

impl SingleThread {
    pub fn start() -> Self {
        let executor = Arc::new(Executor::new());
        let runtime = SmolRuntime::with_executor(executor.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let waker: Arc<Mutex<Option<Waker>>> = Arc::new(Mutex::new(None));
        let (id_tx, id_rx) = std::sync::mpsc::channel();
        let thread = {
            let (stop, waker, runtime) = (stop.clone(), waker.clone(), runtime.clone());
            std::thread::spawn(move || {
                id_tx.send(std::thread::current().id()).unwrap();
                runtime.block_on(std::future::poll_fn(|cx| {
                    if stop.load(Ordering::Acquire) {
                        return Poll::Ready(());
                    }
                    *waker.lock().unwrap() = Some(cx.waker().clone());
                    if stop.load(Ordering::Acquire) {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                }))
            })
        };
        let thread_id = id_rx.recv().unwrap();
        SingleThread {
            runtime,
            thread_id,
            stop,
            waker,
            thread: Some(thread),
        }
    }
}

impl Drop for SingleThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Releases tokens of a [`GatedModel`] one by one and counts what it produced.
#[derive(Default)]
pub struct Gate {
    released: AtomicUsize,
    produced: AtomicUsize,
    streams_dropped: AtomicUsize,
    waker: Mutex<Option<Waker>>,
}

impl Gate {
    /// Allow the model to produce tokens up to index `n - 1`.
    pub fn release(&self, n: usize) {
        self.released.store(n, Ordering::Release);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }

    /// Tokens produced so far.
    pub fn produced(&self) -> usize {
        self.produced.load(Ordering::Acquire)
    }

    /// Model streams dropped so far (each run that ended or was cancelled drops one).
    pub fn streams_dropped(&self) -> usize {
        self.streams_dropped.load(Ordering::Acquire)
    }
}

/// A model that yields `tok0`, `tok1`, … `tok{len-1}`, each only once the [`Gate`] allows it.
#[derive(Clone)]
pub struct GatedModel {
    pub gate: Arc<Gate>,
    pub len: usize,
}

impl GatedModel {
    pub fn new(len: usize) -> Self {
        GatedModel {
            gate: Arc::new(Gate::default()),
            len,
        }
    }
}

impl fmt::Debug for GatedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GatedModel")
    }
}

impl Model for GatedModel {
    fn name(&self) -> &str {
        "gated"
    }

    fn stream(&self, _request: ModelRequest, _cx: ModelContext) -> ModelStream {
        Box::pin(GatedStream {
            gate: self.gate.clone(),
            next: 0,
            len: self.len,
            finished: false,
        })
    }
}

struct GatedStream {
    gate: Arc<Gate>,
    next: usize,
    len: usize,
    finished: bool,
}

impl Stream for GatedStream {
    type Item = Result<ModelDelta, agent_core::error::ModelError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.next == self.len {
            if self.finished {
                return Poll::Ready(None);
            }
            self.finished = true;
            return Poll::Ready(Some(Ok(ModelDelta::Finish(FinishReason::Stop))));
        }
        *self.gate.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.gate.released.load(Ordering::Acquire) <= self.next {
            return Poll::Pending;
        }
        let k = self.next;
        self.next += 1;
        self.gate.produced.fetch_add(1, Ordering::AcqRel);
        Poll::Ready(Some(Ok(ModelDelta::Text(format!("tok{k} ")))))
    }
}

impl Drop for GatedStream {
    fn drop(&mut self) {
        self.gate.streams_dropped.fetch_add(1, Ordering::AcqRel);
    }
}

/// Poll `check` every few milliseconds until it holds, failing after [`WATCHDOG`].
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < WATCHDOG,
            "watchdog: {what} did not happen within {WATCHDOG:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A raw HTTP/1.1 connection to a server under test.
pub struct RawClient {
    pub stream: TcpStream,
    /// Everything read so far.
    pub received: Vec<u8>,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WATCHDOG)).unwrap();
        RawClient {
            stream,
            received: Vec::new(),
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).unwrap();
    }

    /// Send a request with a JSON body (and extra header lines, each ending in CRLF).
    pub fn post(&mut self, path: &str, extra_headers: &str, body: &str) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra_headers}\r\n",
            body.len()
        );
        self.send(head.as_bytes());
        self.send(body.as_bytes());
    }

    /// Read until `needle` appears in what was received; fails naming `what` after the watchdog.
    pub fn read_until(&mut self, needle: &str, what: &str) {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while !contains(&self.received, needle.as_bytes()) {
            assert!(start.elapsed() < WATCHDOG, "watchdog: {what} never arrived");
            match self.stream.read(&mut buf) {
                Ok(0) => panic!(
                    "the server closed the connection before {what} arrived; got {:?}",
                    self.text()
                ),
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "watchdog: {what} never arrived ({e}); got {:?}",
                    self.text()
                ),
            }
        }
    }

    /// Read until the server closes the connection.
    pub fn read_to_end(&mut self) {
        let mut rest = Vec::new();
        self.stream
            .read_to_end(&mut rest)
            .expect("the server did not close the connection in time");
        self.received.extend_from_slice(&rest);
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len().max(1)).any(|w| w == needle)
}

/// One request on a fresh connection with `connection: close`; returns the whole answer.
pub fn exchange(addr: SocketAddr, raw: &str) -> String {
    let mut client = RawClient::connect(addr);
    client.send(raw.as_bytes());
    client.read_to_end();
    client.text()
}

/// Split an answer into (status, lowercase head, body).
pub fn split_response(answer: &str) -> (u16, String, String) {
    let (head, body) = answer.split_once("\r\n\r\n").expect("no end of head");
    let status = head[9..12].parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}
