//! One HTTP/1.1 connection of the [`ThreadServer`](crate::ThreadServer), served on its own
//! thread: parse requests with [`agent_http1`], read bodies within the limits and deadlines
//! of the [`ServerConfig`](agent_core::server::ServerConfig), hand them to the
//! [`AgentService`], and write responses, flushing every streamed frame the moment it exists.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use agent_core::runtime::{TimerSleep, block_on};
use agent_core::server::{AgentService, ApiBody, ApiError, ApiResponse, ResponseBody};
use agent_http1::{
    BodyFraming, ChunkedDecoder, FramingError, HeadLimits, HeadParser, HeadWriter, RequestHead,
    Version, chunked,
};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::shared::Shared;
use crate::waiting::Waiting;

/// A blocking read returns at least this often, so that an idle connection notices a
/// shutdown and a deadline is checked.
const READ_SLICE: Duration = Duration::from_millis(100);
/// A blocking write returns at least this often (`SO_SNDTIMEO`), so that the
/// `write_timeout` is measured from the last progress, not restarted by every partial write.
const WRITE_SLICE: Duration = Duration::from_millis(100);
/// How long, and how many bytes, a connection closed after an error response keeps reading
/// (and discarding) what the client still sends.
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 1024 * 1024;

/// A parsed request.
struct Request {
    method: String,
    path: String,
    version: Version,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    keep_alive: bool,
}

/// Why no request could be read.
enum ReadFailure {
    /// Close the connection without an answer (client closed it, no complete head within
    /// `head_read_timeout`, server stops).
    Close,
    /// The head was not understood: answer this status with an empty body (as hyper does),
    /// then close.
    Reject(u16),
    /// Answer with this JSON error, then close.
    Respond(ApiError),
}

impl From<io::Error> for ReadFailure {
    fn from(_: io::Error) -> Self {
        ReadFailure::Close
    }
}

/// What one bounded read produced.
enum Filled {
    /// Some bytes were appended to the buffer.
    Data,
    /// The client closed its side.
    Eof,
    /// Nothing yet; the deadline has not passed.
    Nothing,
    /// The deadline passed.
    Deadline,
}

pub(crate) struct Connection {
    stream: TcpStream,
    /// Bytes read from the socket and not consumed yet (the start of the next request).
    buf: Vec<u8>,
    parser: HeadParser,
    shared: Arc<Shared>,
    service: AgentService,
    /// Method, path and arrival of the request being read (for the request log).
    current: Option<(String, String, Instant)>,
    /// The socket's `SO_SNDTIMEO` as last set (`None`: writes block without a bound).
    write_slice: Option<Duration>,
    /// When the first head must be complete (set by the waiting thread).
    head_deadline: Option<Instant>,
}

impl Connection {
    /// Take over a connection from the waiting thread: its head (complete or refused) is in
    /// `waiting.buf`.
    pub(crate) fn resume(waiting: Waiting, shared: Arc<Shared>) -> Self {
        let mut connection = Connection::new(waiting.stream, shared);
        connection.buf = waiting.buf;
        connection.head_deadline = Some(waiting.deadline);
        connection
    }

    fn new(stream: TcpStream, shared: Arc<Shared>) -> Self {
        let service = shared.service.clone();
        let config = service.config();
        let parser = HeadParser::new(HeadLimits {
            max_headers: config.max_headers,
            max_head_bytes: config.effective_max_head_bytes(),
        });
        Connection {
            stream,
            buf: Vec::with_capacity(4096),
            parser,
            shared,
            service,
            current: None,
            write_slice: None,
            head_deadline: None,
        }
    }

    /// The request log line of the current request (nothing before a head was read).
    fn log_request(&mut self, status: u16, run_id: Option<&str>) {
        if let Some((method, path, started)) = self.current.take() {
            agent_core::http::log_request(&method, &path, status, run_id, started.elapsed());
        }
    }

    /// Serve requests until the client closes, an error, `Connection: close` or shutdown.
    pub(crate) fn serve(mut self) {
        // Nagle's algorithm would hold small SSE frames back: write each one at once.
        let _ = self.stream.set_nodelay(true);
        // A client that stops reading: see `write_flush`.
        let write_timeout = self.service.config().write_timeout;
        if !write_timeout.is_zero() {
            self.set_write_slice(WRITE_SLICE.min(write_timeout));
        }
        loop {
            let request = match self.read_request() {
                Ok(request) => request,
                Err(ReadFailure::Close) => return,
                Err(ReadFailure::Reject(status)) => {
                    self.log_request(status, None);
                    if self.write_empty_and_close(status).is_ok() {
                        self.linger();
                    }
                    return;
                }
                Err(ReadFailure::Respond(error)) => {
                    self.log_request(error.status, None);
                    if self.write_full(&error.into_response(), false, true).is_ok() {
                        self.linger();
                    }
                    return;
                }
            };
            let keep_alive = self.respond(request);
            if !keep_alive || self.shared.is_shutting_down() {
                return;
            }
            if self.buf.is_empty() {
                // Idle between requests: wait for the next head without a thread.
                crate::shared::park(&self.shared, self.stream);
                return;
            }
        }
    }

    /// Close after an error response while the client may still be sending (a body we
    /// refused): half-close, then discard what arrives for a moment, so that the kernel does
    /// not answer the unread bytes with a reset that could destroy the response in flight.
    fn linger(&mut self) {
        use std::net::Shutdown;
        if self.stream.shutdown(Shutdown::Write).is_err() {
            return;
        }
        let _ = self.stream.set_read_timeout(Some(READ_SLICE));
        let deadline = Instant::now() + LINGER_TIME;
        let mut drained = 0usize;
        let mut scratch = [0u8; 8192];
        while Instant::now() < deadline && drained < LINGER_BYTES {
            match self.stream.read(&mut scratch) {
                Ok(0) => return,
                Ok(n) => drained += n,
                Err(err) if is_timeout(&err) || err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    // ----------------------------------------------------------------------------- reading

    /// Read once into `buf`, waiting at most [`READ_SLICE`] and never past `deadline`.
    fn fill_until(&mut self, deadline: Instant) -> Result<Filled, ReadFailure> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Filled::Deadline);
        }
        self.stream.set_read_timeout(Some(left.min(READ_SLICE)))?;
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) => Ok(Filled::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(Filled::Data)
            }
            Err(err) if is_timeout(&err) || err.kind() == io::ErrorKind::Interrupted => {
                if Instant::now() >= deadline {
                    Ok(Filled::Deadline)
                } else {
                    Ok(Filled::Nothing)
                }
            }
            Err(_) => Err(ReadFailure::Close),
        }
    }

    /// Read more bytes of a body: `408` once `deadline` (the end of the head plus
    /// `body_read_timeout`) has passed; `400` if the client ends its side midway.
    fn fill_body(&mut self, deadline: Instant) -> Result<(), ReadFailure> {
        loop {
            match self.fill_until(deadline)? {
                Filled::Data => return Ok(()),
                Filled::Nothing => {}
                Filled::Deadline => {
                    let timeout = self.service.config().body_read_timeout;
                    tracing::debug!(?timeout, "request body not received in time");
                    return Err(ReadFailure::Respond(ApiError::body_timeout(timeout)));
                }
                Filled::Eof => {
                    tracing::debug!("the client ended the connection inside a request body");
                    return Err(ReadFailure::Respond(ApiError::invalid_body()));
                }
            }
        }
    }

    /// Read the head of the next request within `head_read_timeout`, counted from now (a
    /// new connection, or the end of the previous response).
    fn read_head(&mut self) -> Result<RequestHead, ReadFailure> {
        let deadline = self
            .head_deadline
            .take()
            .unwrap_or_else(|| Instant::now() + self.service.config().head_read_timeout);
        self.parser.reset();
        loop {
            if self.buf.is_empty() {
                // Idle between requests: a shutdown closes quietly.
                if self.shared.is_shutting_down() {
                    return Err(ReadFailure::Close);
                }
            } else {
                match self.parser.parse_request(&self.buf) {
                    Ok(Some((head, used))) => {
                        self.buf.drain(..used);
                        return Ok(head);
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::debug!(%error, "invalid request head");
                        return Err(ReadFailure::Reject(error.status()));
                    }
                }
            }
            match self.fill_until(deadline)? {
                Filled::Data | Filled::Nothing => {}
                Filled::Eof => return Err(ReadFailure::Close),
                Filled::Deadline => {
                    tracing::debug!(
                        received = self.buf.len(),
                        "no complete request head within head_read_timeout; closing"
                    );
                    return Err(ReadFailure::Close);
                }
            }
        }
    }

    fn read_request(&mut self) -> Result<Request, ReadFailure> {
        self.current = None;
        let head = self.read_head()?;
        self.current = Some((head.method.clone(), head.path.clone(), Instant::now()));
        let framing = head.body_framing().map_err(|error| {
            tracing::debug!(%error, "request body framing refused");
            match error {
                FramingError::UnsupportedTransferCoding => {
                    ReadFailure::Respond(ApiError::unsupported_transfer_encoding())
                }
                _ => ReadFailure::Reject(error.status()),
            }
        })?;
        let body_deadline = Instant::now() + self.service.config().body_read_timeout;
        let limit = self.service.config().max_body_bytes;
        if let BodyFraming::Length(len) = framing
            && len > limit as u64
        {
            // Refuse before reading a byte of it (and before `100 Continue`).
            return Err(ReadFailure::Respond(ApiError::payload_too_large(limit)));
        }
        if head.expects_continue() && framing != BodyFraming::Length(0) {
            self.write_flush(&HeadWriter::response(100).finish())?;
        }
        let body = match framing {
            BodyFraming::Length(len) => {
                // `len <= limit`, a `usize`.
                let len = len as usize;
                while self.buf.len() < len {
                    self.fill_body(body_deadline)?;
                }
                self.buf.drain(..len).collect()
            }
            BodyFraming::Chunked => self.read_chunked_body(limit, body_deadline)?,
            // Never for a request: no framing header means no body.
            BodyFraming::CloseDelimited => Vec::new(),
        };
        Ok(Request {
            keep_alive: head.version == Version::Http11 && head.keep_alive(),
            method: head.method,
            path: head.path,
            version: head.version,
            headers: head.headers,
            body,
        })
    }

    /// Decode a `Transfer-Encoding: chunked` body, failing with 413 as soon as it exceeds
    /// `limit` (never buffering more than the limit plus one read).
    fn read_chunked_body(
        &mut self,
        limit: usize,
        deadline: Instant,
    ) -> Result<Vec<u8>, ReadFailure> {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        loop {
            let used = decoder.decode(&self.buf, &mut body).map_err(|error| {
                tracing::debug!(%error, "invalid chunked request body");
                ReadFailure::Respond(ApiError::invalid_body())
            })?;
            self.buf.drain(..used);
            if body.len() > limit {
                return Err(ReadFailure::Respond(ApiError::payload_too_large(limit)));
            }
            if decoder.is_done() {
                return Ok(body);
            }
            self.fill_body(deadline)?;
        }
    }

    // ----------------------------------------------------------------------------- writing

    /// Handle `request` and write the response; `true` if the connection may be reused.
    fn respond(&mut self, request: Request) -> bool {
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let mut handling =
            self.service
                .handle(&request.method, &request.path, &headers, &request.body);
        // A non-streamed chat completion resolves only when its run ends: watch the client
        // meanwhile, and cancel the run (drop the future) if it goes away.
        let Some(response) = self.wait_watching_client(&mut handling) else {
            return false;
        };
        drop(handling);
        let run_id = response
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("x-run-id"))
            .map(|(_, value)| value.clone());
        self.log_request(response.status, run_id.as_deref());
        let head_only = request.method.eq_ignore_ascii_case("HEAD");
        let keep_alive = request.keep_alive && !self.shared.is_shutting_down();
        match response.body {
            ApiBody::Full(_) => {
                self.write_full(&response, head_only, !keep_alive).is_ok() && keep_alive
            }
            ApiBody::Stream(_) => self.write_stream(response, request.version, keep_alive),
        }
    }

    /// Write a complete response.
    fn write_full(
        &mut self,
        response: &ApiResponse,
        head_only: bool,
        close: bool,
    ) -> io::Result<()> {
        let ApiBody::Full(body) = &response.body else {
            return Ok(());
        };
        let mut head = response_head(response.status, &response.headers)
            .header("content-length", &body.len().to_string());
        if close {
            head = head.header("connection", "close");
        }
        let mut out = head.finish();
        if !head_only {
            out.extend_from_slice(body);
        }
        self.write_flush(&out)
    }

    /// Answer a head that was not understood: `status`, an empty body, and close.
    fn write_empty_and_close(&mut self, status: u16) -> io::Result<()> {
        let head = HeadWriter::response(status)
            .header("content-length", "0")
            .header("connection", "close")
            .finish();
        self.write_flush(&head)
    }

    /// Write a streamed response, one write and flush per frame. Returns `true` if the
    /// stream ended normally and the connection may be reused.
    fn write_stream(&mut self, response: ApiResponse, version: Version, keep_alive: bool) -> bool {
        let ApiBody::Stream(mut body) = response.body else {
            return false;
        };
        // HTTP/1.0 has no chunked encoding: the body ends when the connection closes.
        let chunked_body = version == Version::Http11;
        let keep_alive = keep_alive && chunked_body;
        let mut head = response_head(response.status, &response.headers);
        if chunked_body {
            head = head.header("transfer-encoding", "chunked");
        }
        if !keep_alive {
            head = head.header("connection", "close");
        }
        let mut out = head.finish();
        if self.write_flush(&out).is_err() {
            return false;
        }
        loop {
            match self.next_frame(&mut body) {
                Frame::Data(frame) => {
                    out.clear();
                    if chunked_body {
                        chunked::encode_chunk(&frame, &mut out);
                    } else {
                        out.extend_from_slice(&frame);
                    }
                    if self.write_flush(&out).is_err() {
                        // The client is gone: dropping `body` cancels the run.
                        return false;
                    }
                }
                Frame::End => {
                    if chunked_body && self.write_flush(chunked::LAST_CHUNK).is_err() {
                        return false;
                    }
                    return keep_alive;
                }
                Frame::ClientGone => return false,
            }
        }
    }

    /// Write all of `bytes` (the socket has `TCP_NODELAY`: nothing waits to be flushed),
    /// failing with `TimedOut` once [`ServerConfig::write_timeout`] has passed without the
    /// client accepting a byte.
    ///
    /// `write_all` on a socket with `SO_SNDTIMEO = write_timeout` would restart the timeout
    /// at every partial write, so a client that stopped reading a big frame was dropped only
    /// after several timeouts (94 s for 30 s). Here each `write` blocks at most
    /// [`WRITE_SLICE`] (or what is left of the deadline), and the deadline moves only when a
    /// write accepted bytes: to the start of that call, which is never later than the
    /// progress itself, so the bound is `write_timeout`, never more.
    ///
    /// [`ServerConfig::write_timeout`]: agent_core::server::ServerConfig::write_timeout
    fn write_flush(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let timeout = self.service.config().write_timeout;
        if timeout.is_zero() {
            return self.stream.write_all(bytes);
        }
        let mut last_progress = Instant::now();
        while !bytes.is_empty() {
            let started = Instant::now();
            let left = (last_progress + timeout).saturating_duration_since(started);
            if left.is_zero() {
                tracing::debug!(
                    ?timeout,
                    "the client accepted no byte within write_timeout; closing"
                );
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.set_write_slice(left.min(WRITE_SLICE));
            match self.stream.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    bytes = &bytes[n..];
                    last_progress = started;
                }
                Err(err) if is_timeout(&err) || err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Set the socket's `SO_SNDTIMEO` to `slice` (non-zero) unless it already is.
    fn set_write_slice(&mut self, slice: Duration) {
        if self.write_slice != Some(slice) && self.stream.set_write_timeout(Some(slice)).is_ok() {
            self.write_slice = Some(slice);
        }
    }

    /// The next frame of `body`, checking every `disconnect_poll` whether the client closed
    /// the connection while the run is idle.
    fn next_frame(&mut self, body: &mut ResponseBody) -> Frame {
        let mut next = body.next();
        match self.wait_watching_client(&mut next) {
            Some(Some(frame)) => Frame::Data(frame),
            Some(None) => Frame::End,
            None => Frame::ClientGone,
        }
    }

    /// Drive `future` to completion on this thread; every `disconnect_poll` without a result,
    /// check the socket for a client that closed it. `None` when the client is gone.
    fn wait_watching_client<F: Future + Unpin>(&mut self, future: &mut F) -> Option<F::Output> {
        let interval = self.shared.options.disconnect_poll;
        loop {
            let mut timer = TimerSleep::new(Instant::now() + interval);
            let polled = block_on(std::future::poll_fn(|cx| {
                if let Poll::Ready(value) = Pin::new(&mut *future).poll(cx) {
                    return Poll::Ready(Some(value));
                }
                if Pin::new(&mut timer).poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            }));
            match polled {
                Some(value) => return Some(value),
                None if self.client_gone() => return None,
                None => {}
            }
        }
    }

    /// Whether the client closed (or reset) the connection, without consuming any byte.
    fn client_gone(&mut self) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return true;
        }
        let mut probe = [0u8; 1];
        let gone = match self.stream.peek(&mut probe) {
            Ok(0) => true,
            // The client already sent more (a pipelined request): it is still there.
            Ok(_) => false,
            Err(err) => !matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ),
        };
        gone || self.stream.set_nonblocking(false).is_err()
    }
}

enum Frame {
    Data(Bytes),
    End,
    ClientGone,
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The status line and the service's headers of `response`.
fn response_head(status: u16, headers: &[(&'static str, String)]) -> HeadWriter {
    HeadWriter::response(status)
        .headers(headers.iter().map(|(name, value)| (*name, value.as_str())))
}
