//! The chunked transfer coding (RFC 9112 §7.1): an incremental, strict [`ChunkedDecoder`]
//! and a one-chunk-per-call encoder ([`encode_chunk`], [`LAST_CHUNK`]).
//!
//! ```
//! use agent_http1::chunked::{self, ChunkedDecoder};
//!
//! let mut wire = Vec::new();
//! chunked::encode_chunk(b"data: 1\n\n", &mut wire);
//! chunked::encode_chunk(b"data: 2\n\n", &mut wire);
//! wire.extend_from_slice(chunked::LAST_CHUNK);
//! assert!(wire.starts_with(b"9\r\ndata: 1\n\n\r\n"));
//!
//! // Decode it one byte at a time: the result is the same as all at once.
//! let mut decoder = ChunkedDecoder::new();
//! let mut body = Vec::new();
//! for byte in wire.chunks(1) {
//!     assert_eq!(decoder.decode(byte, &mut body), Ok(1));
//! }
//! assert!(decoder.is_done());
//! assert_eq!(body, b"data: 1\n\ndata: 2\n\n");
//! ```

use std::fmt;

/// The `last-chunk` and the empty trailer section that end a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The line end after a chunk's data (see [`encode_chunk_size`]).
pub const CHUNK_END: &[u8] = b"\r\n";

/// Append `data` as one chunk (`size CRLF data CRLF`) to `out`. Empty `data` appends
/// nothing: an empty chunk would be the last-chunk.
///
/// ```
/// let mut out = Vec::new();
/// agent_http1::chunked::encode_chunk(b"hello, world", &mut out);
/// assert_eq!(out, b"c\r\nhello, world\r\n");
/// agent_http1::chunked::encode_chunk(b"", &mut out);
/// assert_eq!(out.len(), 17);
/// ```
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    encode_chunk_size(data.len(), out);
    out.extend_from_slice(data);
    out.extend_from_slice(CHUNK_END);
}

/// Append only the size line of a chunk of `len` bytes (`len` in hex, CRLF), for a writer
/// that sends the data in pieces; it then writes the `len` bytes and [`CHUNK_END`].
///
/// ```
/// let mut out = Vec::new();
/// agent_http1::chunked::encode_chunk_size(255, &mut out);
/// assert_eq!(out, b"ff\r\n");
/// ```
pub fn encode_chunk_size(len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
}

/// Bounds of a [`ChunkedDecoder`] on the parts of a chunked body that are not data.
///
/// ```
/// use agent_http1::chunked::{ChunkedDecoder, ChunkedLimits};
///
/// let decoder = ChunkedDecoder::with_limits(ChunkedLimits { max_line_bytes: 256, max_trailer_bytes: 0 });
/// assert!(!decoder.is_done());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedLimits {
    /// Longest chunk-size line (size, extensions and CRLF). Default 4096.
    pub max_line_bytes: usize,
    /// Largest trailer section (all trailer lines, without the final empty line).
    /// Default 16 KiB.
    pub max_trailer_bytes: usize,
}

impl Default for ChunkedLimits {
    fn default() -> Self {
        ChunkedLimits {
            max_line_bytes: 4096,
            max_trailer_bytes: 16 * 1024,
        }
    }
}

/// A malformed chunked body. Once a [`ChunkedDecoder`] has failed, it keeps returning the
/// same error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    /// A chunk size that is not `1*HEXDIG` (`+e`, ` e`, `0x5`, empty), or junk after it.
    InvalidChunkSize,
    /// A chunk size that does not fit in a `u64`.
    ChunkSizeOverflow,
    /// A chunk extension with a control character.
    InvalidExtension,
    /// A chunk-size line longer than [`ChunkedLimits::max_line_bytes`].
    LineTooLong,
    /// Chunk data not followed by CRLF.
    MissingChunkEnd,
    /// A CR not followed by LF, or a bare LF, where a line ends.
    InvalidLineEnd,
    /// A trailer line with a control character.
    InvalidTrailer,
    /// A trailer section larger than [`ChunkedLimits::max_trailer_bytes`].
    TrailersTooLarge,
}

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkedError::InvalidChunkSize => "malformed chunked body: invalid chunk size",
            ChunkedError::ChunkSizeOverflow => "malformed chunked body: chunk size overflows",
            ChunkedError::InvalidExtension => "malformed chunked body: invalid chunk extension",
            ChunkedError::LineTooLong => "malformed chunked body: chunk-size line too long",
            ChunkedError::MissingChunkEnd => "malformed chunked body: no CRLF after chunk data",
            ChunkedError::InvalidLineEnd => "malformed chunked body: invalid line end",
            ChunkedError::InvalidTrailer => "malformed chunked body: invalid trailer field",
            ChunkedError::TrailersTooLarge => "malformed chunked body: trailer section too large",
        })
    }
}

impl std::error::Error for ChunkedError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size (`digits` of them so far).
    Size { size: u64, digits: u8 },
    /// Whitespace after the size: a `;` must follow.
    SizeSpace { size: u64 },
    /// Inside chunk extensions, up to CR.
    Extension { size: u64 },
    /// The CR of the size line was seen.
    SizeLf { size: u64 },
    /// Inside chunk data.
    Data { remaining: u64 },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// The CR of a trailer line was seen.
    TrailerLf,
    /// The CR of the final empty line was seen.
    EndLf,
    /// The body has ended.
    Done,
    /// The body is malformed.
    Failed(ChunkedError),
}

/// An incremental decoder of a chunked body: feed it bytes as they arrive, however they are
/// split; it appends the chunk data to a buffer and stops at the end of the body.
///
/// Strict RFC 9112 §7.1: the chunk size is `1*HEXDIG` (no sign, prefix or leading space),
/// extensions after it are accepted and ignored, every line ends with CRLF, chunk data is
/// followed by CRLF, and trailer fields are read (within bounds) and ignored.
///
/// ```
/// use agent_http1::chunked::{ChunkedDecoder, ChunkedError};
///
/// let mut decoder = ChunkedDecoder::new();
/// let mut body = Vec::new();
/// let wire = b"5;name=value\r\nhello\r\n0\r\nTrailer: x\r\n\r\nNEXT REQUEST";
/// let used = decoder.decode(wire, &mut body).unwrap();
/// assert!(decoder.is_done());
/// assert_eq!(body, b"hello");
/// assert_eq!(&wire[used..], b"NEXT REQUEST");
///
/// let mut decoder = ChunkedDecoder::new();
/// assert_eq!(decoder.decode(b"+e\r\n", &mut body), Err(ChunkedError::InvalidChunkSize));
/// ```
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    limits: ChunkedLimits,
    /// Bytes of the current chunk-size line so far.
    line_bytes: usize,
    /// Bytes of the trailer section so far.
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

impl ChunkedDecoder {
    /// A decoder with the default [`ChunkedLimits`].
    pub fn new() -> Self {
        ChunkedDecoder::with_limits(ChunkedLimits::default())
    }

    /// A decoder with `limits`.
    pub fn with_limits(limits: ChunkedLimits) -> Self {
        ChunkedDecoder {
            state: State::Size { size: 0, digits: 0 },
            limits,
            line_bytes: 0,
            trailer_bytes: 0,
        }
    }

    /// Whether the whole body (last chunk and trailers) has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decode `input`, appending chunk data to `out`. Returns how many bytes of `input` were
    /// used: all of them until the body ends, then only up to its end (what follows belongs
    /// to the next message). After the end it uses nothing.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkedError> {
        let mut used = 0;
        while used < input.len() {
            match self.state {
                State::Done => break,
                State::Failed(error) => return Err(error),
                State::Data { remaining } => {
                    let available = input.len() - used;
                    let take = usize::try_from(remaining).map_or(available, |r| r.min(available));
                    out.extend_from_slice(&input[used..used + take]);
                    used += take;
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining }
                    };
                }
                _ => {
                    let byte = input[used];
                    used += 1;
                    if let Err(error) = self.step(byte) {
                        self.state = State::Failed(error);
                        return Err(error);
                    }
                }
            }
        }
        match self.state {
            State::Failed(error) => Err(error),
            _ => Ok(used),
        }
    }

    /// One byte outside chunk data.
    fn step(&mut self, byte: u8) -> Result<(), ChunkedError> {
        if matches!(
            self.state,
            State::Size { .. }
                | State::SizeSpace { .. }
                | State::Extension { .. }
                | State::SizeLf { .. }
        ) {
            self.line_bytes += 1;
            if self.line_bytes > self.limits.max_line_bytes {
                return Err(ChunkedError::LineTooLong);
            }
        }
        self.state = match self.state {
            State::Size { size, digits } => match (hex_value(byte), byte) {
                (Some(value), _) => {
                    let size = size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(value)))
                        .ok_or(ChunkedError::ChunkSizeOverflow)?;
                    State::Size {
                        size,
                        digits: digits.saturating_add(1),
                    }
                }
                _ if digits == 0 => return Err(ChunkedError::InvalidChunkSize),
                (None, b' ' | b'\t') => State::SizeSpace { size },
                (None, b';') => State::Extension { size },
                (None, b'\r') => State::SizeLf { size },
                (None, _) => return Err(ChunkedError::InvalidChunkSize),
            },
            State::SizeSpace { size } => match byte {
                b' ' | b'\t' => State::SizeSpace { size },
                b';' => State::Extension { size },
                _ => return Err(ChunkedError::InvalidChunkSize),
            },
            State::Extension { size } => match byte {
                b'\r' => State::SizeLf { size },
                b'\t' => State::Extension { size },
                0..=0x1f | 0x7f => return Err(ChunkedError::InvalidExtension),
                _ => State::Extension { size },
            },
            State::SizeLf { size } => match byte {
                b'\n' if size == 0 => State::TrailerStart,
                b'\n' => State::Data { remaining: size },
                _ => return Err(ChunkedError::InvalidLineEnd),
            },
            State::DataCr => match byte {
                b'\r' => State::DataLf,
                _ => return Err(ChunkedError::MissingChunkEnd),
            },
            State::DataLf => match byte {
                b'\n' => {
                    self.line_bytes = 0;
                    State::Size { size: 0, digits: 0 }
                }
                _ => return Err(ChunkedError::MissingChunkEnd),
            },
            State::TrailerStart => match byte {
                b'\r' => State::EndLf,
                _ => self.trailer_byte(byte)?,
            },
            State::Trailer => self.trailer_byte(byte)?,
            State::TrailerLf => match byte {
                b'\n' => State::TrailerStart,
                _ => return Err(ChunkedError::InvalidLineEnd),
            },
            State::EndLf => match byte {
                b'\n' => State::Done,
                _ => return Err(ChunkedError::InvalidLineEnd),
            },
            // Handled by `decode`.
            State::Data { .. } | State::Done | State::Failed(_) => self.state,
        };
        Ok(())
    }

    /// One byte of a trailer line (not its first CR).
    fn trailer_byte(&mut self, byte: u8) -> Result<State, ChunkedError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.limits.max_trailer_bytes {
            return Err(ChunkedError::TrailersTooLarge);
        }
        match byte {
            b'\r' => Ok(State::TrailerLf),
            b'\n' => Err(ChunkedError::InvalidLineEnd),
            b'\t' => Ok(State::Trailer),
            0..=0x1f | 0x7f => Err(ChunkedError::InvalidTrailer),
            _ => Ok(State::Trailer),
        }
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode all at once: (body, used, done) or the error.
    fn whole(wire: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkedError> {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        let used = decoder.decode(wire, &mut body)?;
        Ok((body, used, decoder.is_done()))
    }

    /// Decode one byte at a time.
    fn bytewise(wire: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkedError> {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut used = 0;
        for byte in wire.chunks(1) {
            used += decoder.decode(byte, &mut body)?;
        }
        Ok((body, used, decoder.is_done()))
    }

    /// Decode split in two at every position.
    fn assert_split_invariant(wire: &[u8]) {
        let expected = whole(wire);
        assert_eq!(bytewise(wire), expected, "bytewise {wire:?}");
        for cut in 0..=wire.len() {
            let mut decoder = ChunkedDecoder::new();
            let mut body = Vec::new();
            let result = decoder.decode(&wire[..cut], &mut body).and_then(|a| {
                let b = decoder.decode(&wire[cut..], &mut body)?;
                Ok(a + b)
            });
            let result = result.map(|used| (body, used, decoder.is_done()));
            assert_eq!(result, expected, "cut at {cut} of {wire:?}");
        }
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let wire = b"5\r\nhello\r\n7;a=b;c\r\n, world\r\nA \t;x=\"y z\"\r\n0123456789\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\nnext";
        let (body, used, done) = whole(wire).unwrap();
        assert_eq!(body, b"hello, world0123456789");
        assert!(done);
        assert_eq!(&wire[used..], b"next");
        assert_split_invariant(wire);
    }

    #[test]
    fn upper_and_lower_hex_and_leading_zeros() {
        let wire = b"00A\r\n0123456789\r\na\r\n0123456789\r\n000\r\n\r\n";
        let (body, _, done) = whole(wire).unwrap();
        assert_eq!(body.len(), 20);
        assert!(done);
    }

    #[test]
    fn an_incomplete_body_is_not_done() {
        for wire in [
            &b"5\r\nhel"[..],
            b"5\r\nhello\r\n",
            b"0\r\n",
            b"0\r\nX: 1\r\n",
        ] {
            let (_, used, done) = whole(wire).unwrap();
            assert!(!done, "{wire:?}");
            assert_eq!(used, wire.len());
            assert_split_invariant(wire);
        }
    }

    #[test]
    fn malformed_chunk_sizes_are_rejected() {
        for (wire, error) in [
            (&b"+e\r\n"[..], ChunkedError::InvalidChunkSize),
            (b" e\r\n", ChunkedError::InvalidChunkSize),
            (b"0x5\r\nhello\r\n0\r\n\r\n", ChunkedError::InvalidChunkSize),
            (b"\r\n", ChunkedError::InvalidChunkSize),
            (b"-1\r\n", ChunkedError::InvalidChunkSize),
            (b"5 \r\nhello\r\n", ChunkedError::InvalidChunkSize),
            (b"5 x\r\n", ChunkedError::InvalidChunkSize),
            (b"g\r\n", ChunkedError::InvalidChunkSize),
            (b"5\nhello\r\n", ChunkedError::InvalidChunkSize),
            (b"5\r\r\n", ChunkedError::InvalidLineEnd),
            (b"5;a\nb\r\n", ChunkedError::InvalidExtension),
            (b"5;a\x00\r\n", ChunkedError::InvalidExtension),
            (b"10000000000000000\r\n", ChunkedError::ChunkSizeOverflow),
            (b"5\r\nhelloX\r\n", ChunkedError::MissingChunkEnd),
            (b"5\r\nhello\rX", ChunkedError::MissingChunkEnd),
            (b"5\r\nhello\n", ChunkedError::MissingChunkEnd),
            (b"0\r\nX: 1\n\r\n", ChunkedError::InvalidLineEnd),
            (b"0\r\nX: \x01\r\n\r\n", ChunkedError::InvalidTrailer),
            (b"0\r\n\rX", ChunkedError::InvalidLineEnd),
            (b"0\r\n\n", ChunkedError::InvalidLineEnd),
        ] {
            assert_eq!(whole(wire), Err(error), "{wire:?}");
            assert_split_invariant(wire);
        }
    }

    #[test]
    fn a_failed_decoder_stays_failed() {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        assert!(decoder.decode(b"z", &mut body).is_err());
        assert_eq!(
            decoder.decode(b"5\r\nhello\r\n0\r\n\r\n", &mut body),
            Err(ChunkedError::InvalidChunkSize)
        );
        assert!(body.is_empty());
    }

    #[test]
    fn lines_and_trailers_are_bounded() {
        let limits = ChunkedLimits {
            max_line_bytes: 8,
            max_trailer_bytes: 8,
        };
        let mut body = Vec::new();
        let mut decoder = ChunkedDecoder::with_limits(limits);
        assert!(decoder.decode(b"5;abc\r\n", &mut body).is_ok());
        let mut decoder = ChunkedDecoder::with_limits(limits);
        assert_eq!(
            decoder.decode(b"5;abcdefgh", &mut body),
            Err(ChunkedError::LineTooLong)
        );
        // Leading zeros count toward the line too: no endless size line.
        let mut decoder = ChunkedDecoder::with_limits(limits);
        assert_eq!(
            decoder.decode(&[b'0'; 9], &mut body),
            Err(ChunkedError::LineTooLong)
        );
        let mut decoder = ChunkedDecoder::with_limits(limits);
        assert!(decoder.decode(b"0\r\nA: 1234\r\n\r\n", &mut body).is_ok());
        let mut decoder = ChunkedDecoder::with_limits(limits);
        assert_eq!(
            decoder.decode(b"0\r\nA: 1\r\nB: 2\r\n\r\n", &mut body),
            Err(ChunkedError::TrailersTooLarge)
        );
    }

    #[test]
    fn after_the_end_nothing_is_used() {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        assert_eq!(decoder.decode(b"0\r\n\r\n", &mut body), Ok(5));
        assert_eq!(decoder.decode(b"more", &mut body), Ok(0));
        assert!(body.is_empty());
    }

    #[test]
    fn encoder_output_decodes_back() {
        let mut wire = Vec::new();
        let pieces: [&[u8]; 4] = [b"a", &[0u8; 300], b"", b"\r\n0\r\n\r\n"];
        for piece in pieces {
            encode_chunk(piece, &mut wire);
        }
        wire.extend_from_slice(LAST_CHUNK);
        assert!(wire.starts_with(b"1\r\na\r\n12c\r\n"));
        let (body, used, done) = whole(&wire).unwrap();
        assert!(done);
        assert_eq!(used, wire.len());
        assert_eq!(body, pieces.concat());

        let mut streamed = Vec::new();
        encode_chunk_size(3, &mut streamed);
        streamed.extend_from_slice(b"abc");
        streamed.extend_from_slice(CHUNK_END);
        let mut one = Vec::new();
        encode_chunk(b"abc", &mut one);
        assert_eq!(streamed, one);
    }
}
