//! Support for the backends' reliability tests: a model that floods, a model that holds, a
//! client that stops reading, a self-signed TLS server, a panic counter and a tracing capture.
//!
//! One module for the three backends' tests (`test_support::reliability`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agent_core::error::ModelError;
use agent_core::model::{Model, ModelContext, ModelDelta, ModelRequest, ModelStream};
use agent_http1::chunked::{LAST_CHUNK, encode_chunk};
use agent_http1::{HeadLimits, HeadParser, HeadWriter};
use futures_core::Stream;

use crate::WATCHDOG;

/// Counters shared by a test model and the test: streams opened, deltas produced, streams
/// dropped.
#[derive(Debug, Clone, Default)]
pub struct Counters(Arc<[AtomicUsize; 3]>);

impl Counters {
    pub fn opened(&self) -> usize {
        self.0[0].load(Ordering::Acquire)
    }
    pub fn produced(&self) -> usize {
        self.0[1].load(Ordering::Acquire)
    }
    pub fn dropped(&self) -> usize {
        self.0[2].load(Ordering::Acquire)
    }
    /// Wait (bounded by the watchdog) until `check` holds.
    pub fn wait(&self, what: &str, check: impl Fn(&Counters) -> bool) {
        let start = Instant::now();
        while !check(self) {
            assert!(
                start.elapsed() < WATCHDOG,
                "watchdog: {what} (opened {}, produced {}, dropped {})",
                self.opened(),
                self.produced(),
                self.dropped()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A model that answers with `delta_bytes`-long text deltas, as fast as it is polled, forever.
#[derive(Debug, Clone)]
pub struct FloodModel {
    pub counters: Counters,
    delta: String,
}

impl FloodModel {
    pub fn new(delta_bytes: usize) -> Self {
        FloodModel {
            counters: Counters::default(),
            delta: "x".repeat(delta_bytes),
        }
    }
}

/// A model that answers `partial`, then waits forever (until its stream is dropped).
#[derive(Debug, Clone, Default)]
pub struct HoldModel {
    pub counters: Counters,
}

struct CountedStream {
    counters: Counters,
    /// `Some`: flood with this text; `None`: one `partial` delta, then pending.
    flood: Option<String>,
    sent: bool,
}

impl Stream for CountedStream {
    type Item = Result<ModelDelta, ModelError>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(text) = &self.flood {
            let text = text.clone();
            self.counters.0[1].fetch_add(1, Ordering::AcqRel);
            return Poll::Ready(Some(Ok(ModelDelta::Text(text))));
        }
        if self.sent {
            // Nothing ever wakes it: only cancellation (dropping the stream) ends the run.
            return Poll::Pending;
        }
        self.sent = true;
        self.counters.0[1].fetch_add(1, Ordering::AcqRel);
        Poll::Ready(Some(Ok(ModelDelta::Text("partial".into()))))
    }
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.counters.0[2].fetch_add(1, Ordering::AcqRel);
    }
}

impl Model for FloodModel {
    fn name(&self) -> &str {
        "flood"
    }
    fn stream(&self, _request: ModelRequest, _cx: ModelContext) -> ModelStream {
        self.counters.0[0].fetch_add(1, Ordering::AcqRel);
        Box::pin(CountedStream {
            counters: self.counters.clone(),
            flood: Some(self.delta.clone()),
            sent: false,
        })
    }
}

impl Model for HoldModel {
    fn name(&self) -> &str {
        "hold"
    }
    fn stream(&self, _request: ModelRequest, _cx: ModelContext) -> ModelStream {
        self.counters.0[0].fetch_add(1, Ordering::AcqRel);
        Box::pin(CountedStream {
            counters: self.counters.clone(),
            flood: None,
            sent: false,
        })
    }
}

/// Connect with a small receive buffer (so that a client that stops reading stalls the
/// server quickly), send `request`, and read up to the end of the response head.
pub fn stalling_client(addr: SocketAddr, request: &[u8]) -> (TcpStream, String) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WATCHDOG)).unwrap();
    stream.write_all(request).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the response head");
        head.push(byte[0]);
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

/// Read until the server closes the connection (EOF or reset); the bytes read. Fails after
/// the watchdog.
pub fn read_until_closed(stream: &mut TcpStream) -> usize {
    stream.set_read_timeout(Some(WATCHDOG)).unwrap();
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < WATCHDOG * 3,
            "watchdog: the server never closed"
        );
        match stream.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!("watchdog: the server did not close the connection ({total} bytes read)")
            }
            Err(_) => return total, // reset: closed too
        }
    }
}

pub fn post_run(input: &str) -> Vec<u8> {
    let body = format!(r#"{{"input":"{input}"}}"#);
    format!(
        "POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Panics on server threads.

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Count panics on threads that are not test threads (the server's), from now on.
pub fn count_server_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let on_test_thread = std::thread::current()
                .name()
                .is_some_and(|name| name.contains("::") || name == "main");
            if !on_test_thread {
                PANICS.fetch_add(1, Ordering::AcqRel);
            }
            default(info);
        }));
    });
}

pub fn server_panics() -> usize {
    PANICS.load(Ordering::Acquire)
}

// ---------------------------------------------------------------------------------------------
// A TLS server with a self-signed certificate, on std threads.

/// Serves `connections` connections over TLS with a fresh self-signed certificate (for
/// `localhost` and `127.0.0.1`): reads a request head, answers 200 with a chunked body of
/// `chunks`. Handshake failures (a client that refuses the certificate) are recorded.
pub struct TlsServer {
    pub addr: SocketAddr,
    thread: Option<JoinHandle<Vec<String>>>,
}

impl TlsServer {
    pub fn start(connections: usize, chunks: &'static [&'static str]) -> Self {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            for _ in 0..connections {
                let Ok((tcp, _)) = listener.accept() else {
                    break;
                };
                tcp.set_read_timeout(Some(WATCHDOG)).unwrap();
                let connection = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(connection, tcp);
                outcomes.push(match serve_tls(&mut tls, chunks) {
                    Ok(()) => "served".to_string(),
                    Err(err) => format!("failed: {err}"),
                });
            }
            outcomes
        });
        TlsServer {
            addr,
            thread: Some(thread),
        }
    }

    /// What happened on each connection.
    pub fn outcomes(mut self) -> Vec<String> {
        self.thread.take().unwrap().join().unwrap()
    }
}

fn serve_tls(stream: &mut impl ReadWrite, chunks: &[&str]) -> io::Result<()> {
    // Read the request head (the test clients send no body), then answer chunked.
    let mut parser = HeadParser::new(HeadLimits::default());
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let parsed = parser
            .parse_request(&received)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if parsed.is_some() {
            break;
        }
        if stream.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        received.push(byte[0]);
    }
    let head = HeadWriter::response(200)
        .header("content-type", "text/plain")
        .header("transfer-encoding", "chunked")
        .header("connection", "close")
        .finish();
    stream.write_all(&head)?;
    for chunk in chunks {
        let mut frame = Vec::new();
        encode_chunk(chunk.as_bytes(), &mut frame);
        stream.write_all(&frame)?;
        stream.flush()?;
    }
    stream.write_all(LAST_CHUNK)?;
    stream.flush()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

// ---------------------------------------------------------------------------------------------
// Every tracing event, formatted, for the secrets audit.

#[derive(Default)]
pub struct TraceCapture {
    lines: Mutex<Vec<String>>,
}

static CAPTURE: std::sync::OnceLock<Arc<TraceCapture>> = std::sync::OnceLock::new();

/// Install (once per test binary) a global subscriber that records every event and span at
/// every level; returns it.
pub fn capture_tracing() -> Arc<TraceCapture> {
    CAPTURE
        .get_or_init(|| {
            let capture = Arc::new(TraceCapture::default());
            tracing::subscriber::set_global_default(Forward(capture.clone()))
                .expect("no other global subscriber");
            capture
        })
        .clone()
}

impl TraceCapture {
    pub fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
    fn push(&self, line: String) {
        self.lines.lock().unwrap().push(line);
    }
}

struct Forward(Arc<TraceCapture>);

#[derive(Default)]
struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl tracing::Subscriber for Forward {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = Fields::default();
        span.record(&mut fields);
        self.0
            .push(format!("span {} {}", span.metadata().name(), fields.0));
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        self.0.push(format!("record {}", fields.0));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0.push(format!(
            "{} {} {}",
            event.metadata().level(),
            event.metadata().target(),
            fields.0
        ));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
