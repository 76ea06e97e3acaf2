//! One HTTP/1.1 connection of the [`ThreadServer`](crate::ThreadServer), served on its own
//! thread: parse requests with `httparse`, read bodies within the limit, hand them to the
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
use bytes::Bytes;
use futures_util::StreamExt;

use crate::server::Shared;

/// Largest request head (request line and headers) accepted; 431 beyond.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most request headers accepted; 431 beyond.
const MAX_HEADERS: usize = 64;
/// Longest chunk-size line of a chunked request body.
const MAX_CHUNK_LINE: usize = 1024;
/// A blocking read returns at least this often, so that an idle connection notices a
/// shutdown.
const READ_SLICE: Duration = Duration::from_millis(100);
/// How long, and how many bytes, a connection closed after an error response keeps reading
/// (and discarding) what the client still sends.
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 1024 * 1024;

/// A parsed request.
struct Request {
    method: String,
    path: String,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    version: u8,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    keep_alive: bool,
}

/// Why no request could be read.
enum ReadFailure {
    /// Close the connection quietly (client closed it, went idle too long, server stops).
    Close,
    /// Answer with this error, then close.
    Respond(ApiError),
}

impl From<io::Error> for ReadFailure {
    fn from(_: io::Error) -> Self {
        ReadFailure::Close
    }
}

enum BodyFraming {
    None,
    Length(usize),
    Chunked,
}

pub(crate) struct Connection {
    stream: TcpStream,
    /// Bytes read from the socket and not consumed yet (the start of the next request).
    buf: Vec<u8>,
    shared: Arc<Shared>,
    service: AgentService,
}

impl Connection {
    pub(crate) fn new(stream: TcpStream, shared: Arc<Shared>) -> Self {
        let service = shared.service.clone();
        Connection {
            stream,
            buf: Vec::with_capacity(4096),
            shared,
            service,
        }
    }

    /// Serve requests until the client closes, an error, `Connection: close` or shutdown.
    pub(crate) fn serve(mut self) {
        // Nagle's algorithm would hold small SSE frames back: write each one at once.
        let _ = self.stream.set_nodelay(true);
        let _ = self.stream.set_read_timeout(Some(READ_SLICE));
        // A client that stops reading: `write` fails once it has made no progress for this
        // long (`SO_SNDTIMEO`), which drops the response body and cancels the run.
        let write_timeout = self.service.config().write_timeout;
        let _ = self
            .stream
            .set_write_timeout((!write_timeout.is_zero()).then_some(write_timeout));
        loop {
            let request = match self.read_request() {
                Ok(request) => request,
                Err(ReadFailure::Close) => return,
                Err(ReadFailure::Respond(error)) => {
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

    /// Read more bytes into `buf`. `Ok(0)` is end of stream; a timeout is `WouldBlock` or
    /// `TimedOut` (platform dependent).
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// Read more bytes of a request that has started, failing with 408 when the client
    /// sends nothing for `request_timeout`.
    fn fill_request(&mut self, last_progress: &mut Instant) -> Result<(), ReadFailure> {
        loop {
            match self.fill() {
                Ok(0) => return Err(ReadFailure::Close),
                Ok(_) => {
                    *last_progress = Instant::now();
                    return Ok(());
                }
                Err(err) if is_timeout(&err) => {
                    if last_progress.elapsed() >= self.shared.options.request_timeout {
                        return Err(ReadFailure::Respond(ApiError {
                            status: 408,
                            code: "request_timeout",
                            message: "the request was not received in time".into(),
                        }));
                    }
                }
                Err(_) => return Err(ReadFailure::Close),
            }
        }
    }

    fn read_request(&mut self) -> Result<Request, ReadFailure> {
        // Wait for the first byte of the next request: idle, so a shutdown closes quietly.
        let idle_since = Instant::now();
        while self.buf.is_empty() {
            if self.shared.is_shutting_down() {
                return Err(ReadFailure::Close);
            }
            match self.fill() {
                Ok(0) => return Err(ReadFailure::Close),
                Ok(_) => {}
                Err(err) if is_timeout(&err) => {
                    if idle_since.elapsed() >= self.shared.options.idle_timeout {
                        return Err(ReadFailure::Close);
                    }
                }
                Err(_) => return Err(ReadFailure::Close),
            }
        }
        let mut last_progress = Instant::now();
        let (mut request, framing, expect_continue) = loop {
            if let Some(parsed) = self.parse_head()? {
                break parsed;
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(ReadFailure::Respond(head_too_large()));
            }
            self.fill_request(&mut last_progress)?;
        };
        let limit = self.service.config().max_body_bytes;
        if let BodyFraming::Length(len) = framing
            && len > limit
        {
            // Refuse before reading a byte of it (and before `100 Continue`).
            return Err(ReadFailure::Respond(ApiError::payload_too_large(limit)));
        }
        if expect_continue && !matches!(framing, BodyFraming::None) {
            self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        request.body = match framing {
            BodyFraming::None => Vec::new(),
            BodyFraming::Length(len) => {
                while self.buf.len() < len {
                    self.fill_request(&mut last_progress)?;
                }
                self.buf.drain(..len).collect()
            }
            BodyFraming::Chunked => self.read_chunked_body(limit, &mut last_progress)?,
        };
        Ok(request)
    }

    /// Parse the request head from `buf`; `None` when it is incomplete. Consumes the head.
    fn parse_head(&mut self) -> Result<Option<(Request, BodyFraming, bool)>, ReadFailure> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let head_len = match parsed.parse(&self.buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ReadFailure::Respond(head_too_large()));
            }
            Err(err) => {
                return Err(ReadFailure::Respond(ApiError::bad_request(
                    "invalid_http",
                    format!("the request is not valid HTTP/1.1: {err}"),
                )));
            }
        };
        let version = parsed.version.unwrap_or(1);
        let method = parsed.method.unwrap_or_default().to_string();
        let path = parsed.path.unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        self.buf.drain(..head_len);

        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut transfer_encoding = false;
        let mut connection_close = version == 0;
        let mut expect_continue = false;
        for (name, value) in &headers {
            if name.eq_ignore_ascii_case("content-length") {
                let len = value.trim().parse::<usize>().map_err(|_| {
                    ReadFailure::Respond(ApiError::bad_request(
                        "invalid_content_length",
                        "the Content-Length header is not a number",
                    ))
                })?;
                if content_length.is_some_and(|previous| previous != len) {
                    return Err(ReadFailure::Respond(ApiError::bad_request(
                        "invalid_content_length",
                        "conflicting Content-Length headers",
                    )));
                }
                content_length = Some(len);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                transfer_encoding = true;
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            } else if name.eq_ignore_ascii_case("connection") {
                // (HTTP/1.0 `keep-alive` is not supported: those connections always close.)
                if value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("close"))
                {
                    connection_close = true;
                }
            } else if name.eq_ignore_ascii_case("expect")
                && value.trim().eq_ignore_ascii_case("100-continue")
            {
                expect_continue = version == 1;
            }
        }
        let framing = match (transfer_encoding, content_length) {
            (true, Some(_)) => {
                return Err(ReadFailure::Respond(ApiError::bad_request(
                    "invalid_framing",
                    "a request may not have both Transfer-Encoding and Content-Length",
                )));
            }
            (true, None) if !chunked => {
                return Err(ReadFailure::Respond(ApiError::bad_request(
                    "unsupported_transfer_encoding",
                    "only the chunked transfer encoding is supported",
                )));
            }
            (true, None) => BodyFraming::Chunked,
            (false, Some(0)) | (false, None) => BodyFraming::None,
            (false, Some(len)) => BodyFraming::Length(len),
        };
        let request = Request {
            method,
            path,
            version,
            headers,
            body: Vec::new(),
            keep_alive: !connection_close,
        };
        Ok(Some((request, framing, expect_continue)))
    }

    /// Decode a `Transfer-Encoding: chunked` body, failing with 413 as soon as it exceeds
    /// `limit` (never buffering more than the limit plus one read).
    fn read_chunked_body(
        &mut self,
        limit: usize,
        last_progress: &mut Instant,
    ) -> Result<Vec<u8>, ReadFailure> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line(last_progress)?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| {
                ReadFailure::Respond(ApiError::bad_request(
                    "invalid_chunk",
                    "a chunk size is not valid",
                ))
            })?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.read_line(last_progress)?.is_empty() {}
                return Ok(body);
            }
            if body.len().saturating_add(size) > limit {
                return Err(ReadFailure::Respond(ApiError::payload_too_large(limit)));
            }
            while self.buf.len() < size + 2 {
                self.fill_request(last_progress)?;
            }
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(ReadFailure::Respond(ApiError::bad_request(
                    "invalid_chunk",
                    "a chunk is not followed by CRLF",
                )));
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }

    /// Read one CRLF-terminated line (without the CRLF) of a chunked body.
    fn read_line(&mut self, last_progress: &mut Instant) -> Result<String, ReadFailure> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_CHUNK_LINE {
                return Err(ReadFailure::Respond(ApiError::bad_request(
                    "invalid_chunk",
                    "a chunk-size or trailer line is too long",
                )));
            }
            self.fill_request(last_progress)?;
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
        let mut out = status_line(response.status);
        for (name, value) in &response.headers {
            push_header(&mut out, name, value);
        }
        push_header(&mut out, "content-length", &body.len().to_string());
        if close {
            push_header(&mut out, "connection", "close");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(body);
        }
        self.stream.write_all(&out)?;
        self.stream.flush()
    }

    /// Write a streamed response, one write and flush per frame. Returns `true` if the
    /// stream ended normally and the connection may be reused.
    fn write_stream(&mut self, response: ApiResponse, version: u8, keep_alive: bool) -> bool {
        let ApiBody::Stream(mut body) = response.body else {
            return false;
        };
        // HTTP/1.0 has no chunked encoding: the body ends when the connection closes.
        let chunked = version >= 1;
        let keep_alive = keep_alive && chunked;
        let mut out = status_line(response.status);
        for (name, value) in &response.headers {
            push_header(&mut out, name, value);
        }
        if chunked {
            push_header(&mut out, "transfer-encoding", "chunked");
        }
        if !keep_alive {
            push_header(&mut out, "connection", "close");
        }
        out.extend_from_slice(b"\r\n");
        if self.write_flush(&out).is_err() {
            return false;
        }
        loop {
            match self.next_frame(&mut body) {
                Frame::Data(frame) => {
                    out.clear();
                    if chunked {
                        out.extend_from_slice(format!("{:x}\r\n", frame.len()).as_bytes());
                        out.extend_from_slice(&frame);
                        out.extend_from_slice(b"\r\n");
                    } else {
                        out.extend_from_slice(&frame);
                    }
                    if self.write_flush(&out).is_err() {
                        // The client is gone: dropping `body` cancels the run.
                        return false;
                    }
                }
                Frame::End => {
                    if chunked && self.write_flush(b"0\r\n\r\n").is_err() {
                        return false;
                    }
                    return keep_alive;
                }
                Frame::ClientGone => return false,
            }
        }
    }

    fn write_flush(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
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

fn head_too_large() -> ApiError {
    ApiError {
        status: 431,
        code: "request_header_fields_too_large",
        message: format!(
            "the request head exceeds {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} headers"
        ),
    }
}

fn status_line(status: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).as_bytes());
    out
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}
