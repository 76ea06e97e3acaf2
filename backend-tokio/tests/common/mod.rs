//! Shared test support: runtimes of both flavours, a server harness, a raw-TCP HTTP/1.1
//! client, a gated model and a drop counter. Every wait is bounded by [`WATCHDOG`].
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use agent_core::agent::Agent;
use agent_core::error::ModelError;
use agent_core::model::{Model, ModelContext, ModelDelta, ModelRequest, ModelStream};
use agent_core::runtime::SharedRuntime;
use agent_core::server::{AgentService, ServerConfig};
use agent_http1::{BodyFraming, ChunkedDecoder, HeadLimits, HeadParser};
use backend_tokio::{TokioRuntime, TokioServer};
use futures_util::Stream;
use tokio::runtime::{Builder, Runtime};
use tokio::sync::oneshot;

/// The longest any single step of a test may take before it fails.
pub const WATCHDOG: Duration = Duration::from_secs(10);

/// The two tokio runtime flavours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    CurrentThread,
    /// A multi-thread runtime with ONE worker, so that "off the worker" is observable.
    MultiThread,
}

pub fn runtime(flavour: Flavour) -> Arc<Runtime> {
    let runtime = match flavour {
        Flavour::CurrentThread => Builder::new_current_thread().enable_all().build(),
        Flavour::MultiThread => Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build(),
    };
    Arc::new(runtime.expect("build a tokio runtime"))
}

pub fn shared(rt: &Runtime) -> SharedRuntime {
    Arc::new(TokioRuntime::from_handle(rt.handle().clone()))
}

/// Generate one `#[test]` per flavour for each listed function `fn name(flavour: Flavour)`.
#[macro_export]
macro_rules! both_flavours {
    ($($name:ident),* $(,)?) => {
        mod current_thread {
            $(#[test] fn $name() { super::$name($crate::common::Flavour::CurrentThread) })*
        }
        mod multi_thread {
            $(#[test] fn $name() { super::$name($crate::common::Flavour::MultiThread) })*
        }
    };
}

/// A [`TokioServer`] driven by its own thread (`block_on`), on either flavour.
pub struct TestServer {
    pub addr: SocketAddr,
    pub service: AgentService,
    pub rt: Arc<Runtime>,
    stop: Option<oneshot::Sender<()>>,
    done: mpsc::Receiver<()>,
}

impl TestServer {
    /// Start a server for the agent made by `make_agent` (given the server's runtime).
    pub fn start(
        flavour: Flavour,
        config: ServerConfig,
        make_agent: impl FnOnce(SharedRuntime) -> Agent,
    ) -> Self {
        let rt = runtime(flavour);
        let agent = make_agent(shared(&rt));
        let config = config.with_addr("127.0.0.1:0".parse().unwrap());
        let (bound_tx, bound_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        let driver = rt.clone();
        std::thread::spawn(move || {
            driver.block_on(async move {
                let server = TokioServer::bind(agent, config).await.expect("bind");
                bound_tx
                    .send((server.local_addr(), server.service().clone()))
                    .unwrap();
                let _ = stop_rx.await;
                server.shutdown().await;
            });
            let _ = done_tx.send(());
        });
        let (addr, service) = bound_rx
            .recv_timeout(WATCHDOG)
            .expect("the server did not start");
        TestServer {
            addr,
            service,
            rt,
            stop: Some(stop_tx),
            done: done_rx,
        }
    }

    /// Ask for a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Wait for the shutdown to finish; panics after the watchdog.
    pub fn wait_stopped(&self) {
        self.done
            .recv_timeout(WATCHDOG)
            .expect("the server did not stop within the watchdog");
    }

    pub fn shutdown(mut self) {
        self.begin_shutdown();
        self.wait_stopped();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client on std::net::TcpStream.

/// A response head plus an incremental body reader (chunked or Content-Length).
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    framing: Option<BodyFraming>,
    chunked: ChunkedDecoder,
    /// Decoded body bytes not yet handed out.
    body: Vec<u8>,
    ended: bool,
}

impl RawClient {
    /// Send `method path` with `headers` and `body`, and read the response head.
    pub fn send(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Self> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(WATCHDOG))?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        // The API's POSTs are JSON (a run-starting request without it gets 415).
        if method == "POST"
            && !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            request.push_str("content-type: application/json\r\n");
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes())?;
        // A peer that answers early (413) may close before the whole body is written.
        let _ = stream.write_all(body);
        let mut client = RawClient {
            stream,
            buf: Vec::new(),
            status: 0,
            headers: Vec::new(),
            framing: None,
            chunked: ChunkedDecoder::new(),
            body: Vec::new(),
            ended: false,
        };
        client.read_head()?;
        Ok(client)
    }

    pub fn post_json(addr: SocketAddr, path: &str, json: &serde_json::Value) -> io::Result<Self> {
        RawClient::send(
            addr,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            json.to_string().as_bytes(),
        )
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn read_head(&mut self) -> io::Result<()> {
        let mut parser = HeadParser::new(HeadLimits::default());
        let (head, used) = loop {
            let parsed = parser
                .parse_response(&self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if let Some(parsed) = parsed {
                break parsed;
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "no response head",
                ));
            }
        };
        self.buf.drain(..used);
        self.status = head.status;
        self.framing = Some(
            head.body_framing("POST")
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
        );
        self.headers = head
            .headers
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        Ok(())
    }

    /// Decode whatever body bytes are buffered; `Ok(false)` when more input is needed.
    fn decode(&mut self) -> io::Result<bool> {
        let before = self.body.len();
        match &mut self.framing {
            Some(BodyFraming::Chunked) => {
                let used = self
                    .chunked
                    .decode(&self.buf, &mut self.body)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                self.buf.drain(..used);
                if self.chunked.is_done() {
                    self.ended = true;
                    return Ok(true);
                }
            }
            Some(BodyFraming::Length(remaining)) => {
                let n = self.buf.len().min(*remaining as usize);
                self.body.extend(self.buf.drain(..n));
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.ended = true;
                    return Ok(true);
                }
            }
            _ => self.body.append(&mut self.buf),
        }
        Ok(self.body.len() > before)
    }

    /// Read more body bytes; `Ok(false)` at the end of the body.
    fn read_more(&mut self) -> io::Result<bool> {
        loop {
            if self.ended {
                return Ok(false);
            }
            if self.decode()? {
                return Ok(true);
            }
            if self.fill()? == 0 {
                if matches!(self.framing, Some(BodyFraming::CloseDelimited)) {
                    self.ended = true;
                    return Ok(false);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the body was cut short",
                ));
            }
        }
    }

    /// The next SSE frame or comment block (text up to a blank line), `None` at the end.
    pub fn next_frame(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(pos) = find(&self.body, b"\n\n") {
                let frame = String::from_utf8_lossy(&self.body[..pos]).into_owned();
                self.body.drain(..pos + 2);
                return Ok(Some(frame));
            }
            if !self.read_more()? {
                return Ok(None);
            }
        }
    }

    /// The next frame that is an event (not a comment), `None` at the end.
    pub fn next_event(&mut self) -> io::Result<Option<SseFrame>> {
        while let Some(frame) = self.next_frame()? {
            if let Some(event) = SseFrame::parse(&frame) {
                return Ok(Some(event));
            }
        }
        Ok(None)
    }

    /// Read the whole remaining body.
    pub fn body(mut self) -> io::Result<Vec<u8>> {
        while self.read_more()? {}
        Ok(std::mem::take(&mut self.body))
    }

    pub fn json(self) -> serde_json::Value {
        let body = self.body().expect("read the body");
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)))
    }
}

/// One parsed SSE frame.
#[derive(Debug, Clone)]
pub struct SseFrame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl SseFrame {
    fn parse(frame: &str) -> Option<SseFrame> {
        let mut parsed = SseFrame {
            id: None,
            event: None,
            data: String::new(),
        };
        let mut any = false;
        for line in frame.lines() {
            if line.starts_with(':') {
                continue;
            }
            any = true;
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => parsed.id = Some(value.to_string()),
                "event" => parsed.event = Some(value.to_string()),
                "data" => {
                    if !parsed.data.is_empty() {
                        parsed.data.push('\n');
                    }
                    parsed.data.push_str(value);
                }
                _ => {}
            }
        }
        any.then_some(parsed)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {}", self.data))
    }

    pub fn name(&self) -> &str {
        self.event.as_deref().unwrap_or("")
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// A gated model: delta k+1 exists only after the test released it.

/// Counts drops of the values it hands out.
#[derive(Debug, Clone, Default)]
pub struct DropCounter(Arc<AtomicUsize>);

impl DropCounter {
    pub fn dropped(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Wait (bounded by the watchdog) until at least `n` drops happened.
    pub fn wait_for(&self, n: usize) -> bool {
        let start = Instant::now();
        while start.elapsed() < WATCHDOG {
            if self.dropped() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.dropped() >= n
    }
}

/// A model whose single answer streams exactly the texts the test releases through
/// [`GateHandle::release`], and ends when the handle is dropped or [`GateHandle::finish`]ed.
#[derive(Debug)]
pub struct GatedModel {
    rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
    drops: DropCounter,
}

/// The test's side of a [`GatedModel`].
#[derive(Debug)]
pub struct GateHandle {
    tx: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    pub drops: DropCounter,
}

impl GateHandle {
    pub fn release(&self, text: &str) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(text.to_string());
        }
    }

    pub fn finish(&mut self) {
        self.tx = None;
    }
}

pub fn gated_model() -> (GatedModel, GateHandle) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let drops = DropCounter::default();
    (
        GatedModel {
            rx: Mutex::new(Some(rx)),
            drops: drops.clone(),
        },
        GateHandle {
            tx: Some(tx),
            drops,
        },
    )
}

impl Model for GatedModel {
    fn name(&self) -> &str {
        "gated"
    }

    fn stream(&self, _request: ModelRequest, _cx: ModelContext) -> ModelStream {
        let rx = self.rx.lock().unwrap().take();
        Box::pin(GatedStream {
            rx,
            drops: self.drops.clone(),
        })
    }
}

struct GatedStream {
    rx: Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
    drops: DropCounter,
}

impl Stream for GatedStream {
    type Item = Result<ModelDelta, ModelError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        rx.poll_recv(cx)
            .map(|text| text.map(|t| Ok(ModelDelta::Text(t))))
    }
}

impl Drop for GatedStream {
    fn drop(&mut self) {
        self.drops.0.fetch_add(1, Ordering::AcqRel);
    }
}
