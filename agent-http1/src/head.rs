//! Request and response heads: [`HeadParser`] turns bytes into an owned [`RequestHead`] or
//! [`ResponseHead`] (tokenized by `httparse`), within [`HeadLimits`].
//!
//! ```
//! use agent_http1::{HeadLimits, HeadParser, Version};
//!
//! let mut parser = HeadParser::new(HeadLimits::default());
//! // Incomplete: more bytes are needed.
//! assert_eq!(parser.parse_request(b"GET http://example.com/healthz?x=1 HT"), Ok(None));
//! let wire = b"GET http://example.com/healthz?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n";
//! let (head, used) = parser.parse_request(wire).unwrap().unwrap();
//! assert_eq!(used, wire.len());
//! assert_eq!(head.method, "GET");
//! // Absolute-form (RFC 9112 §3.2.2): the path and query are what is served.
//! assert_eq!(head.path, "/healthz?x=1");
//! assert_eq!(head.version, Version::Http11);
//! assert_eq!(head.header("host"), Some("example.com"));
//! ```

use std::fmt;

use crate::framing::{self, BodyFraming, FramingError};

/// The bounds a [`HeadParser`] applies to one head.
///
/// ```
/// use agent_http1::HeadLimits;
///
/// let limits = HeadLimits { max_headers: 32, max_head_bytes: 16 * 1024 };
/// assert!(limits.max_headers < HeadLimits::default().max_headers);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Most header fields in a head; more is [`HeadError::TooManyHeaders`]. Default 100.
    pub max_headers: usize,
    /// Largest head (start line and header fields, with their line ends) in bytes; more is
    /// [`HeadError::TooLarge`]. Default 64 KiB.
    pub max_head_bytes: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_headers: 100,
            max_head_bytes: 64 * 1024,
        }
    }
}

/// The protocol version of a message.
///
/// ```
/// use agent_http1::Version;
///
/// assert_eq!(Version::Http11.to_string(), "HTTP/1.1");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// `HTTP/1.0`.
    Http10,
    /// `HTTP/1.1`.
    Http11,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        })
    }
}

/// Why a head could not be parsed. [`status`](Self::status) is the answer a server gives.
///
/// ```
/// use agent_http1::{HeadError, HeadLimits, HeadParser};
///
/// let mut parser = HeadParser::new(HeadLimits::default());
/// let error = parser.parse_request(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n").unwrap_err();
/// assert!(matches!(error, HeadError::Malformed(_)));
/// assert_eq!(error.status(), 400);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// The start line or a header field is not valid HTTP/1.x; the text names the part.
    Malformed(&'static str),
    /// The request target is neither origin-form (`/path?query`), absolute-form
    /// (`http://host/path`) nor `*` (for `CONNECT`: not authority-form, `host:port`).
    InvalidTarget,
    /// More header fields than [`HeadLimits::max_headers`].
    TooManyHeaders {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The head is longer than [`HeadLimits::max_head_bytes`].
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
}

impl HeadError {
    /// The status a server answers this error with: `431` for a head over a limit, `400`
    /// otherwise.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooManyHeaders { .. } | HeadError::TooLarge { .. } => 431,
            HeadError::Malformed(_) | HeadError::InvalidTarget => 400,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Malformed(part) => write!(f, "malformed message head: invalid {part}"),
            HeadError::InvalidTarget => f.write_str("invalid request target"),
            HeadError::TooManyHeaders { limit } => {
                write!(f, "the head has more than {limit} header fields")
            }
            HeadError::TooLarge { limit } => write!(f, "the head is larger than {limit} bytes"),
        }
    }
}

impl std::error::Error for HeadError {}

/// A parsed request head, owned.
///
/// ```
/// use agent_http1::{BodyFraming, HeadLimits, HeadParser};
///
/// let wire = b"POST /v1/runs HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n{}";
/// let (head, used) = HeadParser::new(HeadLimits::default()).parse_request(wire).unwrap().unwrap();
/// assert_eq!(&wire[used..], b"{}");
/// assert_eq!(head.body_framing(), Ok(BodyFraming::Length(2)));
/// assert!(head.expects_continue());
/// assert!(head.keep_alive());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method, e.g. `POST`.
    pub method: String,
    /// The request target exactly as sent (origin-form, absolute-form, `*`, or
    /// authority-form `host:port` for `CONNECT`).
    pub target: String,
    /// The path and query to serve: the target in origin-form (`/v1/runs?x=1`); for an
    /// absolute-form target, its path and query (`/` when it has no path); `*` for `*`; for
    /// `CONNECT`, the authority-form target itself (`host:port`).
    pub path: String,
    /// The protocol version.
    pub version: Version,
    /// The header fields in order, names as sent, values with surrounding whitespace
    /// removed (bytes that are not UTF-8 become U+FFFD).
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }

    /// How the body that follows is delimited (RFC 9112 §6.3): `Length(0)` without
    /// `Content-Length` and `Transfer-Encoding`. See [`FramingError`] for what is refused.
    pub fn body_framing(&self) -> Result<BodyFraming, FramingError> {
        framing::request_framing(&self.headers)
    }

    /// Whether the connection may stay open after the response: HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.version, &self.headers)
    }

    /// Whether the client waits for `100 Continue` before sending the body
    /// (`Expect: 100-continue` on HTTP/1.1).
    pub fn expects_continue(&self) -> bool {
        self.version == Version::Http11
            && self
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("expect"))
                .any(|(_, v)| v.trim().eq_ignore_ascii_case("100-continue"))
    }
}

/// A parsed response head, owned.
///
/// ```
/// use agent_http1::{BodyFraming, HeadLimits, HeadParser};
///
/// let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
/// let (head, _) = HeadParser::new(HeadLimits::default()).parse_response(wire).unwrap().unwrap();
/// assert_eq!(head.status, 200);
/// assert_eq!(head.reason, "OK");
/// assert_eq!(head.body_framing("GET"), Ok(BodyFraming::Chunked));
/// assert_eq!(head.body_framing("HEAD"), Ok(BodyFraming::Length(0)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The reason phrase as sent (may be empty).
    pub reason: String,
    /// The protocol version.
    pub version: Version,
    /// The header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }

    /// How the body of this response to a `request_method` request is delimited
    /// (RFC 9112 §6.3): none for `HEAD`, 1xx, 204 and 304; otherwise chunked, a length, or
    /// until the connection closes.
    pub fn body_framing(&self, request_method: &str) -> Result<BodyFraming, FramingError> {
        if request_method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304
        {
            return Ok(BodyFraming::Length(0));
        }
        framing::response_framing(&self.headers)
    }

    /// Whether the connection may be reused after this response.
    pub fn keep_alive(&self) -> bool {
        keep_alive(self.version, &self.headers)
    }
}

fn first_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn connection_has(headers: &[(String, String)], token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn keep_alive(version: Version, headers: &[(String, String)]) -> bool {
    match version {
        Version::Http11 => !connection_has(headers, "close"),
        Version::Http10 => connection_has(headers, "keep-alive"),
    }
}

/// An incremental head parser: call [`parse_request`](Self::parse_request) (or
/// [`parse_response`](Self::parse_response)) with the bytes received so far, each time more
/// arrive, until it returns the head and the number of bytes it took.
///
/// The buffer passed must start at the first byte of the head and only grow between calls;
/// the parser resets itself when it returns a head or an error (call [`reset`](Self::reset)
/// to start over otherwise). Only the bytes up to the last line end are examined, and only
/// when a new line end has arrived, so a head trickling in byte by byte costs a parse per
/// line, not per byte, and the result never depends on how the input was split.
///
/// ```
/// use agent_http1::{HeadError, HeadLimits, HeadParser};
///
/// let limits = HeadLimits { max_headers: 2, ..HeadLimits::default() };
/// let mut parser = HeadParser::new(limits);
/// let wire = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
/// assert_eq!(parser.parse_request(wire), Err(HeadError::TooManyHeaders { limit: 2 }));
/// ```
#[derive(Debug, Clone)]
pub struct HeadParser {
    limits: HeadLimits,
    /// How many bytes of the buffer have been looked at for a line end.
    scanned: usize,
}

impl HeadParser {
    /// A parser applying `limits`.
    pub fn new(limits: HeadLimits) -> Self {
        HeadParser { limits, scanned: 0 }
    }

    /// The limits applied.
    pub fn limits(&self) -> HeadLimits {
        self.limits
    }

    /// Forget what was scanned: the next call starts a new head.
    pub fn reset(&mut self) {
        self.scanned = 0;
    }

    /// Parse a request head from the start of `buf`: `Ok(None)` while it is incomplete,
    /// `Ok(Some((head, used)))` once complete (`used` bytes are the head; the body or the
    /// next request follows).
    pub fn parse_request(&mut self, buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
        let Some(lines) = self.examinable(buf)? else {
            return Ok(None);
        };
        let mut fields = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        let mut request = httparse::Request::new(&mut fields);
        let status = request.parse(lines);
        let used = self.settle(status, buf.len())?;
        let Some(used) = used else { return Ok(None) };
        let target = request.path.unwrap_or_default().to_owned();
        let method = request.method.unwrap_or_default();
        let path = if method.eq_ignore_ascii_case("CONNECT") {
            authority_form(&target)?
        } else {
            origin_path(&target)?
        };
        let head = RequestHead {
            method: method.to_owned(),
            path,
            target,
            version: version(request.version),
            headers: owned_headers(request.headers),
        };
        Ok(Some((head, used)))
    }

    /// Parse a response head from the start of `buf`, as
    /// [`parse_request`](Self::parse_request) does a request head.
    pub fn parse_response(
        &mut self,
        buf: &[u8],
    ) -> Result<Option<(ResponseHead, usize)>, HeadError> {
        let Some(lines) = self.examinable(buf)? else {
            return Ok(None);
        };
        let mut fields = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        let mut response = httparse::Response::new(&mut fields);
        let status = response.parse(lines);
        let used = self.settle(status, buf.len())?;
        let Some(used) = used else { return Ok(None) };
        let head = ResponseHead {
            status: response.code.unwrap_or_default(),
            reason: response.reason.unwrap_or_default().to_owned(),
            version: version(response.version),
            headers: owned_headers(response.headers),
        };
        Ok(Some((head, used)))
    }

    /// The part of `buf` to hand to `httparse` (up to and including its last LF), or `None`
    /// when no new line end arrived since the last call.
    fn examinable<'b>(&mut self, buf: &'b [u8]) -> Result<Option<&'b [u8]>, HeadError> {
        let start = if self.scanned > buf.len() {
            0
        } else {
            self.scanned
        };
        let new_line = buf[start..].contains(&b'\n');
        self.scanned = buf.len();
        if !new_line {
            return self.check_partial(buf.len()).map(|()| None);
        }
        let last_lf = buf.iter().rposition(|&b| b == b'\n').unwrap_or(0);
        Ok(Some(&buf[..=last_lf]))
    }

    /// A head still incomplete at `received` bytes is too large once it reaches the limit.
    fn check_partial(&mut self, received: usize) -> Result<(), HeadError> {
        if received >= self.limits.max_head_bytes {
            self.reset();
            return Err(HeadError::TooLarge {
                limit: self.limits.max_head_bytes,
            });
        }
        Ok(())
    }

    fn settle(
        &mut self,
        status: Result<httparse::Status<usize>, httparse::Error>,
        received: usize,
    ) -> Result<Option<usize>, HeadError> {
        match status {
            Ok(httparse::Status::Complete(used)) => {
                self.reset();
                if used > self.limits.max_head_bytes {
                    return Err(HeadError::TooLarge {
                        limit: self.limits.max_head_bytes,
                    });
                }
                Ok(Some(used))
            }
            Ok(httparse::Status::Partial) => self.check_partial(received).map(|()| None),
            Err(error) => {
                self.reset();
                Err(match error {
                    httparse::Error::TooManyHeaders => HeadError::TooManyHeaders {
                        limit: self.limits.max_headers,
                    },
                    other => HeadError::Malformed(describe(other)),
                })
            }
        }
    }
}

fn describe(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "header name",
        httparse::Error::HeaderValue => "header value",
        httparse::Error::NewLine => "line end",
        httparse::Error::Status => "status code",
        httparse::Error::Token => "method or token",
        httparse::Error::Version => "version",
        _ => "start line",
    }
}

fn version(minor: Option<u8>) -> Version {
    if minor == Some(0) {
        Version::Http10
    } else {
        Version::Http11
    }
}

fn owned_headers(fields: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// The path and query of a request target (RFC 9112 §3.2).
/// The target of a `CONNECT` (RFC 9112 §3.2.3): `host:port`, with the port.
fn authority_form(target: &str) -> Result<String, HeadError> {
    let (host, port) = target.rsplit_once(':').ok_or(HeadError::InvalidTarget)?;
    let host_ok = !host.is_empty()
        && !host.contains(['/', '?', '#', '@'])
        && (host.starts_with('[') == host.ends_with(']'));
    if !host_ok || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeadError::InvalidTarget);
    }
    Ok(target.to_owned())
}

fn origin_path(target: &str) -> Result<String, HeadError> {
    if target.starts_with('/') || target == "*" {
        return Ok(target.to_owned());
    }
    let (scheme, rest) = target.split_once("://").ok_or(HeadError::InvalidTarget)?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(HeadError::InvalidTarget);
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    if authority_end == 0 {
        return Err(HeadError::InvalidTarget);
    }
    let path = &rest[authority_end..];
    Ok(if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_whole(wire: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
        HeadParser::new(HeadLimits::default()).parse_request(wire)
    }

    /// Feed growing prefixes, as bytes arriving one at a time.
    fn parse_split(wire: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
        let mut parser = HeadParser::new(HeadLimits::default());
        for end in 1..=wire.len() {
            match parser.parse_request(&wire[..end]) {
                Ok(None) => {}
                done => return done,
            }
        }
        Ok(None)
    }

    #[test]
    fn origin_form_request() {
        let wire = b"POST /v1/runs?x=1 HTTP/1.1\r\nHost: a\r\nX-Two:  b c \r\n\r\nBODY";
        let (head, used) = parse_whole(wire).unwrap().unwrap();
        assert_eq!(&wire[used..], b"BODY");
        assert_eq!(head.method, "POST");
        assert_eq!(head.target, "/v1/runs?x=1");
        assert_eq!(head.path, "/v1/runs?x=1");
        assert_eq!(head.version, Version::Http11);
        assert_eq!(
            head.headers,
            vec![
                ("Host".to_owned(), "a".to_owned()),
                ("X-Two".to_owned(), "b c".to_owned())
            ]
        );
        assert_eq!(head.header("x-two"), Some("b c"));
    }

    #[test]
    fn absolute_form_uses_the_path_and_query() {
        for (target, path) in [
            ("http://x/healthz", "/healthz"),
            ("http://x:8080/v1/runs?a=b", "/v1/runs?a=b"),
            ("HTTPS://x", "/"),
            ("http://x?q", "/?q"),
        ] {
            let wire = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            let (head, _) = parse_whole(wire.as_bytes()).unwrap().unwrap();
            assert_eq!(head.path, path, "{target}");
            assert_eq!(head.target, target);
        }
    }

    #[test]
    fn other_targets_are_invalid() {
        for target in ["x/healthz", "http:///path", "1http://x/", "example.com:443"] {
            let wire = format!("GET {target} HTTP/1.1\r\n\r\n");
            assert_eq!(
                parse_whole(wire.as_bytes()),
                Err(HeadError::InvalidTarget),
                "{target}"
            );
        }
        let (head, _) = parse_whole(b"OPTIONS * HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.path, "*");
    }

    #[test]
    fn connect_takes_an_authority_form_target() {
        for target in ["example.com:443", "127.0.0.1:8443", "[::1]:443"] {
            let wire = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
            let (head, _) = parse_whole(wire.as_bytes()).unwrap().unwrap();
            assert_eq!((head.target.as_str(), head.path.as_str()), (target, target));
        }
        for target in [
            "example.com",
            "/path",
            "http://x/",
            "x:",
            "x:y",
            "u@x:1",
            "[::1:1",
        ] {
            let wire = format!("CONNECT {target} HTTP/1.1\r\n\r\n");
            assert_eq!(
                parse_whole(wire.as_bytes()),
                Err(HeadError::InvalidTarget),
                "{target}"
            );
        }
    }

    #[test]
    fn malformed_heads_are_400() {
        for wire in [
            &b"\x00\x01garbage\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNo colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad\x7fName: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        ] {
            let error = parse_whole(wire).unwrap_err();
            assert_eq!(error.status(), 400, "{wire:?}: {error}");
            assert_eq!(parse_split(wire), Err(error), "{wire:?}");
        }
    }

    #[test]
    fn limits_give_431() {
        let limits = HeadLimits {
            max_headers: 3,
            max_head_bytes: 64,
        };
        let mut parser = HeadParser::new(limits);
        let many = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n";
        let error = parser.parse_request(many).unwrap_err();
        assert_eq!(error, HeadError::TooManyHeaders { limit: 3 });
        assert_eq!(error.status(), 431);
        // Exactly three fit.
        let three = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
        assert!(matches!(parser.parse_request(three), Ok(Some(_))));
        let long = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(60));
        assert_eq!(
            parser.parse_request(long.as_bytes()),
            Err(HeadError::TooLarge { limit: 64 })
        );
        // Incomplete and already at the limit: too large without waiting for the end.
        assert_eq!(
            parser.parse_request(&long.as_bytes()[..64]),
            Err(HeadError::TooLarge { limit: 64 })
        );
        // No line end at all (a request line that never ends).
        assert_eq!(
            parser.parse_request(&[b'G'; 64]),
            Err(HeadError::TooLarge { limit: 64 })
        );
    }

    #[test]
    fn split_at_every_byte_gives_the_same_head() {
        let wire = b"POST http://h/x HTTP/1.0\r\nA: 1\r\nConnection: keep-alive\r\n\r\nrest";
        let whole = parse_whole(wire);
        assert!(matches!(whole, Ok(Some(_))));
        assert_eq!(parse_split(wire), whole);
        let (head, _) = whole.unwrap().unwrap();
        assert_eq!(head.version, Version::Http10);
        assert!(head.keep_alive());
    }

    #[test]
    fn bare_lf_heads_and_leading_empty_lines_are_accepted() {
        let (head, used) = parse_whole(b"\r\nGET / HTTP/1.1\nA: 1\n\n")
            .unwrap()
            .unwrap();
        assert_eq!(used, 23);
        assert_eq!(head.header("a"), Some("1"));
    }

    #[test]
    fn keep_alive_and_expect() {
        let parse = |wire: &[u8]| parse_whole(wire).unwrap().unwrap().0;
        assert!(!parse(b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n").keep_alive());
        assert!(!parse(b"GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(!parse(b"GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expects_continue());
        assert!(parse(b"GET / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n").expects_continue());
    }

    #[test]
    fn response_heads() {
        let mut parser = HeadParser::new(HeadLimits::default());
        let wire = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(parser.parse_response(&wire[..20]), Ok(None));
        let (head, used) = parser.parse_response(wire).unwrap().unwrap();
        assert_eq!(&wire[used..], b"abc");
        assert_eq!((head.status, head.reason.as_str()), (404, "Not Found"));
        assert_eq!(head.body_framing("GET"), Ok(BodyFraming::Length(3)));
        let (head, _) = parser
            .parse_response(b"HTTP/1.0 200 OK\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.body_framing("GET"), Ok(BodyFraming::CloseDelimited));
        assert!(!head.keep_alive());
        let (head, _) = parser
            .parse_response(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.body_framing("GET"), Ok(BodyFraming::Length(0)));
        assert!(parser.parse_response(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
    }

    #[test]
    fn the_result_does_not_depend_on_bytes_after_the_last_line_end() {
        // An invalid byte after the last LF is only looked at once its line ends.
        let wire = b"GET / HTTP/1.1\r\nA: 1\r\nB\x01";
        assert_eq!(parse_whole(wire), Ok(None));
        assert_eq!(parse_split(wire), Ok(None));
    }
}
