//! Writing heads: [`HeadWriter`] builds a response or request head; [`reason_phrase`] gives
//! the standard reason phrase of a status.
//!
//! ```
//! use agent_http1::HeadWriter;
//!
//! let head = HeadWriter::response(404)
//!     .header("content-type", "application/json")
//!     .header("x-injected", "a\r\nset-cookie: evil") // skipped: it contains CR/LF
//!     .header("content-length", "2")
//!     .finish();
//! assert_eq!(
//!     head,
//!     b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"
//! );
//! ```

use crate::head::HeadError;

/// Builds the bytes of a message head: the start line, the header fields, the empty line.
///
/// Header fields whose name is not a token or whose value contains CR, LF or NUL are
/// skipped, so that a value from elsewhere can never inject a field or end the head early
/// ([`is_valid_field`] says which are written).
///
/// ```
/// use agent_http1::HeadWriter;
///
/// let head = HeadWriter::request("POST", "/v1/chat/completions")
///     .unwrap()
///     .header("host", "127.0.0.1:8080")
///     .headers([("content-length", "2"), ("connection", "close")])
///     .finish();
/// assert!(head.starts_with(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n"));
/// assert!(head.ends_with(b"connection: close\r\n\r\n"));
/// assert!(HeadWriter::request("GET", "/a b").is_err());
/// ```
#[derive(Debug, Clone)]
#[must_use = "a head does nothing until it is finished and written"]
pub struct HeadWriter {
    out: Vec<u8>,
}

impl HeadWriter {
    /// An HTTP/1.1 response head with `status` and its standard reason phrase.
    pub fn response(status: u16) -> Self {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(
            format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).as_bytes(),
        );
        HeadWriter { out }
    }

    /// An HTTP/1.1 request head for `method` and `target` (origin-form `/path?query`, or
    /// absolute-form for a proxy). Fails with [`HeadError::Malformed`] for a method that is
    /// not a token and [`HeadError::InvalidTarget`] for a target with a space or control
    /// character.
    pub fn request(method: &str, target: &str) -> Result<Self, HeadError> {
        if !is_token(method) {
            return Err(HeadError::Malformed("method or token"));
        }
        if target.is_empty() || !target.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(HeadError::InvalidTarget);
        }
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(format!("{method} {target} HTTP/1.1\r\n").as_bytes());
        Ok(HeadWriter { out })
    }

    /// Add a header field (skipped unless [`is_valid_field`]).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if is_valid_field(name, value) {
            self.out.extend_from_slice(name.as_bytes());
            self.out.extend_from_slice(b": ");
            self.out.extend_from_slice(value.as_bytes());
            self.out.extend_from_slice(b"\r\n");
        }
        self
    }

    /// Add every header field of `fields`, in order.
    pub fn headers<N, V>(mut self, fields: impl IntoIterator<Item = (N, V)>) -> Self
    where
        N: AsRef<str>,
        V: AsRef<str>,
    {
        for (name, value) in fields {
            self = self.header(name.as_ref(), value.as_ref());
        }
        self
    }

    /// End the head (the empty line) and return its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(b"\r\n");
        self.out
    }
}

/// Whether [`HeadWriter::header`] writes this field: a token name and a value without CR,
/// LF or NUL.
///
/// ```
/// assert!(agent_http1::is_valid_field("x-request-id", "abc"));
/// assert!(!agent_http1::is_valid_field("x-request-id", "a\nb"));
/// assert!(!agent_http1::is_valid_field("bad name", "x"));
/// ```
pub fn is_valid_field(name: &str, value: &str) -> bool {
    is_token(name) && !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// `1*tchar` (RFC 9110 §5.6.2).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// The reason phrase RFC 9110 §15 gives `status`; empty for a code it does not define.
///
/// ```
/// assert_eq!(agent_http1::reason_phrase(431), "Request Header Fields Too Large");
/// assert_eq!(agent_http1::reason_phrase(299), "");
/// ```
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads_skip_fields_that_could_inject() {
        let head = HeadWriter::response(200)
            .header("a", "1")
            .header("b", "x\ry")
            .header("c", "x\ny")
            .header("d", "x\0y")
            .header("", "e")
            .header("f g", "h")
            .header("i:", "j")
            .header("k", "")
            .finish();
        assert_eq!(head, b"HTTP/1.1 200 OK\r\na: 1\r\nk: \r\n\r\n");
    }

    #[test]
    fn unknown_statuses_have_an_empty_reason() {
        assert_eq!(HeadWriter::response(599).finish(), b"HTTP/1.1 599 \r\n\r\n");
        assert_eq!(
            HeadWriter::response(100).finish(),
            b"HTTP/1.1 100 Continue\r\n\r\n"
        );
    }

    #[test]
    fn request_lines_are_checked() {
        assert!(HeadWriter::request("GET", "/x?y=1").is_ok());
        assert!(HeadWriter::request("GET", "http://h/x").is_ok());
        assert_eq!(
            HeadWriter::request("G T", "/").unwrap_err(),
            HeadError::Malformed("method or token")
        );
        for target in ["", "/a b", "/a\r\n", "/\u{e9}"] {
            assert_eq!(
                HeadWriter::request("GET", target).unwrap_err(),
                HeadError::InvalidTarget
            );
        }
    }

    #[test]
    fn written_heads_parse_back() {
        let wire = HeadWriter::request("POST", "/v1/runs")
            .unwrap()
            .headers([("host", "x"), ("content-length", "0")])
            .finish();
        let (head, used) = crate::HeadParser::new(crate::HeadLimits::default())
            .parse_request(&wire)
            .unwrap()
            .unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(head.header("content-length"), Some("0"));
    }
}
