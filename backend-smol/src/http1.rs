//! The few pieces of HTTP/1.1 wire format the client and the server share: the chunked
//! transfer coding (an incremental, sans-IO decoder and a one-write encoder) and header checks.

use std::fmt;

/// Largest request or response head (start line plus headers) either side accepts.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in one head.
pub(crate) const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE_BYTES: usize = 4096;

/// A malformed chunked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkedError(&'static str);

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed chunked body: {}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size (and any extension) up to LF.
    Size,
    /// Reading `remaining` bytes of chunk data.
    Data { remaining: u64 },
    /// Expecting the CRLF after chunk data (`seen_cr` after CR).
    DataEnd { seen_cr: bool },
    /// Reading trailer lines after the last chunk, up to an empty line.
    Trailer,
    /// The body is complete.
    Done,
}

/// Incremental decoder of the chunked transfer coding.
///
/// Feed it whatever bytes arrived; it appends the data it could decode to `out` and returns
/// how many input bytes it consumed. Bytes after the end of the body are left unconsumed.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    state: State,
    line: Vec<u8>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size,
            line: Vec::new(),
        }
    }
}

impl ChunkedDecoder {
    /// Whether the terminating zero-size chunk and trailers have been read.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decode from `input`, appending body data to `out`; returns the bytes consumed.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<usize, ChunkedError> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                State::Done => break,
                State::Size | State::Trailer => {
                    let rest = &input[pos..];
                    let (taken, complete) = match rest.iter().position(|&b| b == b'\n') {
                        Some(i) => (i + 1, true),
                        None => (rest.len(), false),
                    };
                    if self.line.len() + taken > MAX_LINE_BYTES {
                        return Err(ChunkedError("line too long"));
                    }
                    self.line.extend_from_slice(&rest[..taken]);
                    pos += taken;
                    if complete {
                        self.finish_line()?;
                    }
                }
                State::Data { remaining } => {
                    let available = (input.len() - pos) as u64;
                    let take = remaining.min(available) as usize;
                    out.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        State::DataEnd { seen_cr: false }
                    } else {
                        State::Data { remaining }
                    };
                }
                State::DataEnd { seen_cr } => {
                    let byte = input[pos];
                    pos += 1;
                    self.state = match (seen_cr, byte) {
                        (false, b'\r') => State::DataEnd { seen_cr: true },
                        (_, b'\n') => State::Size,
                        _ => return Err(ChunkedError("missing CRLF after chunk data")),
                    };
                }
            }
        }
        Ok(pos)
    }

    fn finish_line(&mut self) -> Result<(), ChunkedError> {
        let line = std::mem::take(&mut self.line);
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self.state {
            State::Size => {
                let size_part = line.split(|&b| b == b';').next().unwrap_or_default();
                let size_text = std::str::from_utf8(size_part)
                    .map_err(|_| ChunkedError("chunk size is not ASCII"))?
                    .trim_matches([' ', '\t']);
                if size_text.is_empty() || size_text.len() > 15 {
                    return Err(ChunkedError("bad chunk size"));
                }
                let size = u64::from_str_radix(size_text, 16)
                    .map_err(|_| ChunkedError("bad chunk size"))?;
                self.state = if size == 0 {
                    State::Trailer
                } else {
                    State::Data { remaining: size }
                };
            }
            State::Trailer if line.is_empty() => self.state = State::Done,
            _ => {}
        }
        Ok(())
    }
}

/// Append one chunk of the chunked transfer coding (`size CRLF data CRLF`) to `out`.
pub(crate) fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked body, with no trailers.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Whether `name` is a valid header field name (an RFC 9110 token).
pub(crate) fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `value` can be written as a header field value (no CR, LF or NUL).
pub(crate) fn is_valid_value(value: &str) -> bool {
    !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// Whether the comma-separated header `value` lists `token` (case-insensitive).
pub(crate) fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The reason phrase of a status code the server writes.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(pieces: &[&[u8]]) -> Result<(Vec<u8>, bool, usize), ChunkedError> {
        let mut decoder = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut leftover = 0;
        for piece in pieces {
            let used = decoder.decode(piece, &mut out)?;
            leftover += piece.len() - used;
        }
        Ok((out, decoder.is_done(), leftover))
    }

    #[test]
    fn decodes_a_body_split_at_every_byte() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let pieces: Vec<&[u8]> = wire.chunks(1).collect();
        let (out, done, leftover) = decode_all(&pieces).unwrap();
        assert_eq!(out, b"hello, world");
        assert!(done);
        assert_eq!(leftover, 4, "bytes after the body stay unconsumed");
    }

    #[test]
    fn accepts_bare_lf_and_uppercase_hex() {
        let (out, done, _) = decode_all(&[b"A\nabcdefghij\n0\n\n"]).unwrap();
        assert_eq!(out, b"abcdefghij");
        assert!(done);
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode_all(&[b"zz\r\n"]).is_err());
        assert!(decode_all(&[b"3\r\nabcX"]).is_err());
        assert!(decode_all(&[b"\r\n"]).is_err());
        assert!(decode_all(&[b"fffffffffffffffff\r\n"]).is_err());
        let long = vec![b'1'; MAX_LINE_BYTES + 1];
        assert!(decode_all(&[&long]).is_err());
    }

    #[test]
    fn encodes_chunks() {
        let mut out = Vec::new();
        encode_chunk(b"hello, world!!!!!", &mut out);
        out.extend_from_slice(LAST_CHUNK);
        let (decoded, done, _) = decode_all(&[&out]).unwrap();
        assert_eq!(decoded, b"hello, world!!!!!");
        assert!(done);
        assert!(out.starts_with(b"11\r\n"));
    }

    #[test]
    fn header_checks() {
        assert!(is_token("Content-Type"));
        assert!(!is_token("bad name"));
        assert!(!is_token(""));
        assert!(is_valid_value("Bearer abc"));
        assert!(!is_valid_value("a\r\nb"));
        assert!(has_token("keep-alive, Close", "close"));
        assert!(!has_token("closed", "close"));
    }
}
