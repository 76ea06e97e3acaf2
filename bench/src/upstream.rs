//! A purpose-built OpenAI-compatible upstream on `127.0.0.1:0`: std threads, responses
//! rendered before the first request, one `write` per SSE frame (as real servers write).
//!
//! Every response is `200`, `text/event-stream`, chunked (one HTTP chunk per SSE event, as
//! real providers send them), `connection: close`; the request body is read to its end first
//! so that closing the socket never resets the connection.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agent_http1::{BodyFraming, HeadLimits, HeadParser, HeadWriter, chunked};

/// The model name the upstream reports.
pub const MODEL: &str = "bench-model";

/// The text of the `i`-th delta: short, token-like.
pub fn delta_text(i: usize) -> String {
    format!("tok{} ", i % 10_000)
}

/// The SSE event (`data: …\n\n`) of one content chunk.
pub fn content_event(i: usize) -> String {
    let text = delta_text(i);
    format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\
         \"model\":\"{MODEL}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\
         \"finish_reason\":null}}]}}\n\n"
    )
}

/// The SSE events of a whole answer of `deltas` content chunks: the chunks, a final chunk
/// with `finish_reason: stop`, and `data: [DONE]`.
pub fn answer_events(deltas: usize) -> Vec<String> {
    let mut events: Vec<String> = (0..deltas).map(content_event).collect();
    events.push(format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\
         \"model\":\"{MODEL}\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n"
    ));
    events.push("data: [DONE]\n\n".to_string());
    events
}

/// The response head of every answer.
fn head() -> Vec<u8> {
    HeadWriter::response(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .header("transfer-encoding", "chunked")
        .header("connection", "close")
        .finish()
}

/// What the upstream answers to every request.
#[derive(Clone)]
pub enum Script {
    /// The whole response as fast as it can, one `write` per SSE frame (as servers write
    /// them: the head, then each HTTP chunk, then the last chunk).
    Burst(Arc<Vec<Vec<u8>>>),
    /// The head at once, then one HTTP chunk every `pace`, the first one `pace` after the head.
    Paced {
        /// The HTTP chunks (framed), then the terminating `0\r\n\r\n` is sent after them.
        chunks: Arc<Vec<Vec<u8>>>,
        /// The gap before each chunk.
        pace: Duration,
        /// Where the moments of the latest exchange are recorded.
        stamps: Arc<Stamps>,
    },
}

/// The moments of the latest paced exchange, as the upstream saw them.
#[derive(Debug, Default)]
pub struct Stamps(std::sync::Mutex<(Option<Instant>, Option<Instant>)>);

impl Stamps {
    /// Forget the previous exchange.
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = (None, None);
    }

    /// (when the request had been read, when the first chunk had been written).
    pub fn get(&self) -> (Option<Instant>, Option<Instant>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn request_read(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(Instant::now());
    }

    fn first_chunk_written(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).1 = Some(Instant::now());
    }
}

impl Script {
    /// A burst answer with `deltas` content chunks.
    pub fn burst(deltas: usize) -> Script {
        let mut writes = vec![head()];
        for event in answer_events(deltas) {
            let mut out = Vec::new();
            chunked::encode_chunk(event.as_bytes(), &mut out);
            writes.push(out);
        }
        writes.push(chunked::LAST_CHUNK.to_vec());
        Script::Burst(Arc::new(writes))
    }

    /// The bytes of a burst response (head and chunked framing included); 0 for paced.
    pub fn response_bytes(&self) -> usize {
        match self {
            Script::Burst(writes) => writes.iter().map(Vec::len).sum(),
            Script::Paced { .. } => 0,
        }
    }

    /// A paced answer with `deltas` content chunks, one every `pace`, recording its moments
    /// in `stamps`.
    pub fn paced(deltas: usize, pace: Duration, stamps: Arc<Stamps>) -> Script {
        let chunks = answer_events(deltas)
            .into_iter()
            .map(|event| {
                let mut out = Vec::new();
                chunked::encode_chunk(event.as_bytes(), &mut out);
                out
            })
            .collect();
        Script::Paced {
            chunks: Arc::new(chunks),
            pace,
            stamps,
        }
    }
}

/// A running upstream. Dropping it stops accepting (connections being served finish).
pub struct Upstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Bind `127.0.0.1:0` and answer every request with `script`.
    pub fn start(script: Script) -> io::Result<Upstream> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("upstream-accept".into())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::Acquire) {
                            return;
                        }
                        let Ok(mut stream) = stream else { continue };
                        let script = script.clone();
                        // A paced exchange reads its request right here, so that the moment
                        // it arrives is not delayed by starting a thread; the thread then
                        // only writes (its start-up falls within the pacing).
                        let request_read = match &script {
                            Script::Paced { stamps, .. } => {
                                if prepare(&stream)
                                    .and_then(|()| read_request(&mut stream))
                                    .is_err()
                                {
                                    continue;
                                }
                                stamps.request_read();
                                true
                            }
                            Script::Burst(_) => false,
                        };
                        // A client that drops its run mid-stream makes `serve` fail: fine.
                        let _ = std::thread::Builder::new()
                            .name("upstream-conn".into())
                            .spawn(move || serve(stream, &script, request_read));
                    }
                })?
        };
        Ok(Upstream {
            addr,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port/v1`, the base URL for OpenAI clients.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the acceptor with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn prepare(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))
}

fn serve(mut stream: TcpStream, script: &Script, request_read: bool) -> io::Result<()> {
    if !request_read {
        prepare(&stream)?;
        read_request(&mut stream)?;
    }
    match script {
        Script::Burst(writes) => {
            for frame in writes.iter() {
                stream.write_all(frame)?;
            }
        }
        Script::Paced {
            chunks,
            pace,
            stamps,
        } => {
            stream.write_all(&head())?;
            let start = Instant::now();
            for (k, chunk) in chunks.iter().enumerate() {
                // Deadline-based pacing: chunk k leaves at start + (k + 1) * pace.
                let due = start + *pace * (k as u32 + 1);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if k == 0 {
                    // Stamped just before the write, so the client cannot see it first.
                    stamps.first_chunk_written();
                }
                stream.write_all(chunk)?;
            }
            stream.write_all(chunked::LAST_CHUNK)?;
        }
    }
    stream.flush()
}

/// Read one request head and its `content-length` body.
fn read_request(stream: &mut TcpStream) -> io::Result<()> {
    let invalid =
        |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let mut parser = HeadParser::new(HeadLimits::default());
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let (head, used) = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(parsed) = parser.parse_request(&buf).map_err(|e| invalid(&e))? {
            break parsed;
        }
    };
    let length = match head.body_framing().map_err(|e| invalid(&e))? {
        BodyFraming::Length(length) => length,
        other => return Err(invalid(&format!("unexpected request framing {other:?}"))),
    };
    let mut have = (buf.len() - used) as u64;
    while have < length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        have += n as u64;
    }
    Ok(())
}

/// A raw client: connect, send a small chat request, and return the moment the first byte of
/// the response body (after the head) was read.
pub fn raw_first_body_byte(addr: SocketAddr) -> io::Result<Instant> {
    let body =
        br#"{"model":"bench-model","stream":true,"messages":[{"role":"user","content":"go"}]}"#;
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut message = HeadWriter::request("POST", "/v1/chat/completions")
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
        .header("host", &addr.to_string())
        .header("content-type", "application/json")
        .header("content-length", &body.len().to_string())
        .finish();
    message.extend_from_slice(body);
    stream.write_all(&message)?;
    let mut parser = HeadParser::new(HeadLimits::default());
    let mut seen = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&chunk[..n]);
        let parsed = parser
            .parse_response(&seen)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let Some((_, used)) = parsed
            && seen.len() > used
        {
            return Ok(Instant::now());
        }
    }
}
