//! A raw-TCP HTTP/1.1 client for server cases: it writes a request with a std
//! [`TcpStream`], parses the response head, and then decodes the body (chunked,
//! `Content-Length` or close-delimited) *incrementally*, handing out each SSE frame or comment
//! the moment its bytes have arrived. No HTTP library sits between the server under test and
//! the assertions, so nothing can buffer on the client side.
//!
//! ```no_run
//! use std::time::Duration;
//! use conformance::kit::SseClient;
//!
//! # let addr = "127.0.0.1:8080".parse().unwrap();
//! let mut client = SseClient::post_json(addr, "/v1/runs", &serde_json::json!({"input": "hi"}), &[]).unwrap();
//! assert_eq!(client.status(), 200);
//! while let Some(event) = client.next_event(Duration::from_secs(5)).unwrap() {
//!     println!("{}: {}", event.event, event.data);
//! }
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use agent_core::sse::{SseDecoder, SseEvent, SseItem, SseLimits};
use agent_http1::{self as http1, ChunkedDecoder, HeadLimits, HeadParser, HeadWriter};
use serde_json::Value;

/// How long [`SseClient::request`] waits for the response head by default.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the client could not deliver the next item.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing arrived within the timeout.
    TimedOut(Duration),
    /// The connection failed, or the body was cut short.
    Io(io::Error),
    /// The server sent something that is not HTTP/1.1 or SSE.
    Protocol(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::TimedOut(d) => write!(f, "nothing arrived within {d:?}"),
            // A timeout that says what it waited for (the response head) speaks for itself.
            ClientError::Io(e) if e.kind() == io::ErrorKind::TimedOut => write!(f, "{e}"),
            ClientError::Io(e) => write!(f, "connection error: {e}"),
            ClientError::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        // A bare OS timeout carries nothing worth keeping; one with a message (such as
        // "no response head within 10s from 127.0.0.1:PORT") keeps it.
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) && e.get_ref().is_none()
        {
            ClientError::TimedOut(Duration::ZERO)
        } else {
            ClientError::Io(e)
        }
    }
}

#[derive(Debug)]
enum BodyFraming {
    Chunked(ChunkedDecoder),
    Length(u64),
    Close,
}

/// A response being read from a raw TCP connection; see the [module docs](self).
pub struct SseClient {
    stream: TcpStream,
    status: u16,
    headers: Vec<(String, String)>,
    framing: BodyFraming,
    /// Raw bytes read but not yet decoded by the body framing.
    raw: Vec<u8>,
    decoder: SseDecoder,
    /// When set, body bytes go here instead of into the SSE decoder.
    capture: Option<Vec<u8>>,
    body_ended: bool,
    body_bytes: u64,
    head_at: Instant,
    sent_at: Instant,
}

impl fmt::Debug for SseClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseClient")
            .field("status", &self.status)
            .field("body_bytes", &self.body_bytes)
            .field("body_ended", &self.body_ended)
            .finish_non_exhaustive()
    }
}

impl SseClient {
    /// `POST path` with a JSON body (plus `extra_headers`) and read the response head.
    pub fn post_json(
        addr: SocketAddr,
        path: &str,
        body: &Value,
        extra_headers: &[(&str, &str)],
    ) -> io::Result<SseClient> {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend_from_slice(extra_headers);
        Self::request(
            addr,
            "POST",
            path,
            &headers,
            body.to_string().as_bytes(),
            None,
        )
    }

    /// Send a request and read the response head (within [`HEAD_TIMEOUT`]).
    ///
    /// `recv_buffer`, when set, fixes the socket's receive buffer (`SO_RCVBUF`) before
    /// connecting, which turns off the kernel's autotuning: backpressure cases use it to
    /// keep the client-side buffer small and known.
    pub fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        recv_buffer: Option<usize>,
    ) -> io::Result<SseClient> {
        let stream = connect(addr, recv_buffer)?;
        let head = HeadWriter::request(method, path)
            .map_err(invalid_data)?
            .header("host", &addr.to_string())
            .headers(headers.iter().copied())
            .header("content-length", &body.len().to_string())
            .finish();
        let mut bytes = head;
        bytes.extend_from_slice(body);
        Self::send(stream, &bytes, method)
    }

    /// Write `bytes` (a complete request) on `stream` and read the response head.
    pub fn send_raw(stream: TcpStream, bytes: &[u8]) -> io::Result<SseClient> {
        Self::send(stream, bytes, "GET")
    }

    /// [`send_raw`](Self::send_raw) for a request with `method`: the answer to a `HEAD` has
    /// no body, whatever its `Content-Length` says.
    fn send(mut stream: TcpStream, bytes: &[u8], method: &str) -> io::Result<SseClient> {
        let sent_at = Instant::now();
        stream.write_all(bytes)?;
        stream.flush()?;
        Self::read_head(stream, sent_at, method)
    }

    fn read_head(mut stream: TcpStream, sent_at: Instant, method: &str) -> io::Result<SseClient> {
        let deadline = Instant::now() + HEAD_TIMEOUT;
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "the server".to_string(), |a| a.to_string());
        let mut raw = Vec::new();
        let mut parser = HeadParser::new(HeadLimits::default());
        // A read timeout surfaces as WouldBlock ("Resource temporarily unavailable") or
        // TimedOut depending on the platform: both become this message, naming the peer.
        let no_head = |raw: &[u8]| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no response head within {HEAD_TIMEOUT:?} from {peer} ({} bytes of it \
                     received)",
                    raw.len()
                ),
            )
        };
        let (head, used) = loop {
            if let Some(parsed) = parser.parse_response(&raw).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("invalid response head from {peer}: {e}"),
                )
            })? {
                break parsed;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(no_head(&raw));
            }
            stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 4096];
            let n = match stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(no_head(&raw));
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("reading the response head from {peer}: {e}"),
                    ));
                }
            };
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{peer} closed the connection before the response head ({} bytes of \
                         it received)",
                        raw.len()
                    ),
                ));
            }
            raw.extend_from_slice(&chunk[..n]);
        };
        let head_at = Instant::now();
        let framing = match head.body_framing(method).map_err(invalid_data)? {
            http1::BodyFraming::Chunked => BodyFraming::Chunked(ChunkedDecoder::new()),
            http1::BodyFraming::Length(len) => BodyFraming::Length(len),
            http1::BodyFraming::CloseDelimited => BodyFraming::Close,
        };
        let headers = head
            .headers
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        raw.drain(..used);
        Ok(SseClient {
            stream,
            status: head.status,
            headers,
            framing,
            raw,
            capture: None,
            decoder: SseDecoder::with_limits(SseLimits {
                max_line_bytes: 64 * 1024 * 1024,
                max_event_bytes: 64 * 1024 * 1024,
            }),
            body_ended: false,
            body_bytes: 0,
            head_at,
            sent_at,
        })
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The response headers (names lowercase).
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// When the request was written.
    pub fn sent_at(&self) -> Instant {
        self.sent_at
    }

    /// When the response head was complete.
    pub fn head_at(&self) -> Instant {
        self.head_at
    }

    /// Body bytes received so far (after de-chunking).
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// The underlying socket (e.g. to shut it down).
    pub fn socket(&self) -> &TcpStream {
        &self.stream
    }

    /// Run the raw bytes read so far through the body framing into the SSE decoder (or the
    /// capture buffer). Bytes after the end of the body are dropped.
    fn process(&mut self) -> Result<(), io::Error> {
        let raw = std::mem::take(&mut self.raw);
        let was_ended = self.body_ended;
        let mut body = Vec::new();
        if !self.body_ended {
            match &mut self.framing {
                BodyFraming::Close => body = raw,
                BodyFraming::Length(left) => {
                    let take = (*left).min(raw.len() as u64) as usize;
                    body.extend_from_slice(&raw[..take]);
                    *left -= take as u64;
                    self.body_ended = *left == 0;
                }
                BodyFraming::Chunked(decoder) => {
                    decoder.decode(&raw, &mut body).map_err(invalid_data)?;
                    self.body_ended = decoder.is_done();
                }
            }
        }
        self.body_bytes += body.len() as u64;
        match &mut self.capture {
            Some(capture) => capture.extend_from_slice(&body),
            None => {
                if !body.is_empty() {
                    self.decoder.push(&body);
                }
                if self.body_ended && !was_ended {
                    self.decoder.finish();
                }
            }
        }
        Ok(())
    }

    /// Read once from the socket, waiting at most until `deadline`.
    fn read_more(&mut self, deadline: Instant, waited: Duration) -> Result<(), ClientError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::TimedOut(waited));
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut chunk = vec![0u8; 64 * 1024];
        let n = match self.stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ClientError::TimedOut(waited));
            }
            Err(e) => return Err(ClientError::Io(e)),
        };
        if n == 0 {
            return match self.framing {
                BodyFraming::Close => {
                    self.body_ended = true;
                    self.decoder.finish();
                    Ok(())
                }
                _ => Err(ClientError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection before the end of the body",
                ))),
            };
        }
        self.raw.extend_from_slice(&chunk[..n]);
        self.process().map_err(ClientError::Io)
    }

    /// The next SSE item (event, comment or retry) of the body, waiting at most `timeout`;
    /// `Ok(None)` once the body has ended.
    pub fn next_item(&mut self, timeout: Duration) -> Result<Option<SseItem>, ClientError> {
        let deadline = Instant::now() + timeout;
        self.process().map_err(ClientError::Io)?;
        loop {
            if let Some(item) = self.decoder.next_item() {
                return item
                    .map(Some)
                    .map_err(|e| ClientError::Protocol(e.to_string()));
            }
            if self.body_ended {
                return Ok(None);
            }
            self.read_more(deadline, timeout)?;
        }
    }

    /// The next SSE event, skipping comments, waiting at most `timeout` in total;
    /// `Ok(None)` once the body has ended.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<SseEvent>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item(left)? {
                Some(SseItem::Event(event)) => return Ok(Some(event)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }

    /// Read the rest of the body as bytes (for non-SSE responses), waiting at most
    /// `timeout`. Call it instead of, not after, [`next_item`](Self::next_item).
    pub fn read_body(mut self, timeout: Duration) -> Result<Vec<u8>, ClientError> {
        let deadline = Instant::now() + timeout;
        self.capture = Some(Vec::new());
        self.process().map_err(ClientError::Io)?;
        while !self.body_ended {
            self.read_more(deadline, timeout)?;
        }
        Ok(self.capture.take().unwrap_or_default())
    }

    /// Close the connection (both directions), as a client that goes away.
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

fn invalid_data(error: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

fn connect(addr: SocketAddr, recv_buffer: Option<usize>) -> io::Result<TcpStream> {
    let stream = match recv_buffer {
        None => TcpStream::connect_timeout(&addr, Duration::from_secs(5))?,
        Some(size) => {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                None,
            )?;
            socket.set_recv_buffer_size(size)?;
            socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
            socket.into()
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A complete HTTP response read by [`http_request`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Headers (names lowercase).
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl RawResponse {
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

/// Send one request and read the whole response (status, headers, body) within `timeout`.
///
/// ```no_run
/// use std::time::Duration;
/// # let addr = "127.0.0.1:8080".parse().unwrap();
/// let health = conformance::kit::client::http_request(addr, "GET", "/healthz", &[], b"", Duration::from_secs(5)).unwrap();
/// assert_eq!(health.status, 200);
/// ```
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<RawResponse, ClientError> {
    let client = SseClient::request(addr, method, path, headers, body, None)?;
    let status = client.status();
    let headers = client.headers().to_vec();
    let body = client.read_body(timeout)?;
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}
