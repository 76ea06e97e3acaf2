//! The incremental, sans-IO Server-Sent Events decoder.
//!
//! See [`SseDecoder`] for the contract and [the module docs](crate::sse) for a round trip.

use std::borrow::Cow;
use std::fmt;
use std::mem;
use std::time::Duration;

/// The UTF-8 byte order mark, stripped once at the very start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Size limits that keep an [`SseDecoder`] from growing without bound.
///
/// The defaults are 1 MiB per line ([`SseLimits::DEFAULT_MAX_LINE_BYTES`]) and 4 MiB of `data`
/// per event ([`SseLimits::DEFAULT_MAX_EVENT_BYTES`]).
///
/// # Example
///
/// ```
/// use agent_core::sse::{SseDecoder, SseLimits};
///
/// let limits = SseLimits { max_line_bytes: 64 * 1024, max_event_bytes: 256 * 1024 };
/// let decoder = SseDecoder::with_limits(limits);
/// assert_eq!(decoder.limits(), limits);
/// assert_eq!(SseLimits::default().max_line_bytes, 1024 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseLimits {
    /// Maximum length of one line in bytes, not counting its line terminator (nor a leading
    /// byte order mark). A longer line fails with [`SseError::LineTooLong`] as soon as the
    /// buffered part of it exceeds the limit, without waiting for its end.
    pub max_line_bytes: usize,
    /// Maximum size in bytes of the data buffer of one event: the `data` values plus one `\n`
    /// per `data` line. Exceeding it fails with [`SseError::EventTooLarge`].
    pub max_event_bytes: usize,
}

impl SseLimits {
    /// The default maximum line length: 1 MiB (1,048,576 bytes).
    pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;
    /// The default maximum event data size: 4 MiB (4,194,304 bytes).
    pub const DEFAULT_MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;
}

impl Default for SseLimits {
    /// 1 MiB per line, 4 MiB of data per event.
    fn default() -> Self {
        Self {
            max_line_bytes: Self::DEFAULT_MAX_LINE_BYTES,
            max_event_bytes: Self::DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

/// One dispatched Server-Sent Event.
///
/// # Example
///
/// ```
/// use agent_core::sse::{SseDecoder, SseEvent, SseItem};
///
/// let mut decoder = SseDecoder::new();
/// decoder.push(b"id: 7\ndata: hello\n\n");
/// let expected = SseEvent {
///     event: "message".to_owned(),
///     data: "hello".to_owned(),
///     id: Some("7".to_owned()),
/// };
/// assert_eq!(decoder.next_item(), Some(Ok(SseItem::Event(expected))));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type: the last `event` field of the event, or `"message"` when there was
    /// none (or it was empty).
    pub event: String,
    /// The `data` lines joined with `\n` (the final line's `\n` is removed).
    pub data: String,
    /// The last event ID at dispatch time. It persists across events until an `id` field
    /// changes it; `None` if it was never set or was set to the empty string.
    pub id: Option<String>,
}

/// One item decoded from a Server-Sent Events stream.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use agent_core::sse::{SseDecoder, SseItem};
///
/// let mut decoder = SseDecoder::new();
/// decoder.push(b": keep-alive\nretry: 1500\n\n");
/// assert_eq!(decoder.next_item(), Some(Ok(SseItem::Comment("keep-alive".to_owned()))));
/// assert_eq!(decoder.next_item(), Some(Ok(SseItem::Retry(Duration::from_millis(1500)))));
/// assert_eq!(decoder.next_item(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A dispatched event (a block of fields terminated by a blank line, with some `data`).
    Event(SseEvent),
    /// A comment line (one starting with `:`), such as a `: keep-alive` sent by an idle server.
    /// The text after the colon, with one leading space removed if present.
    Comment(String),
    /// A valid `retry` field (ASCII digits only): the new reconnection time, in milliseconds.
    /// Values beyond `u64::MAX` milliseconds saturate.
    Retry(Duration),
}

/// Why an [`SseDecoder`] failed. After an error the decoder is failed for good.
///
/// # Example
///
/// ```
/// use agent_core::sse::{SseDecoder, SseError, SseLimits};
///
/// let mut decoder =
///     SseDecoder::with_limits(SseLimits { max_line_bytes: 8, max_event_bytes: 1024 });
/// decoder.push(b"data: far too long");
/// let error = decoder.next_item().unwrap().unwrap_err();
/// assert_eq!(error, SseError::LineTooLong { limit: 8 });
/// assert_eq!(error.to_string(), "SSE line exceeds the 8-byte limit");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseError {
    /// A line was longer than [`SseLimits::max_line_bytes`].
    LineTooLong {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// An event's data buffer grew past [`SseLimits::max_event_bytes`].
    EventTooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LineTooLong { limit } => write!(f, "SSE line exceeds the {limit}-byte limit"),
            Self::EventTooLarge { limit } => {
                write!(f, "SSE event data exceeds the {limit}-byte limit")
            }
        }
    }
}

impl std::error::Error for SseError {}

/// An incremental, sans-IO decoder for `text/event-stream`, following the
/// [WHATWG event stream interpretation](https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).
///
/// Feed it bytes as they arrive with [`push`](Self::push), then call
/// [`next_item`](Self::next_item) until it returns `None`. At end of stream call
/// [`finish`](Self::finish) once and drain [`next_item`](Self::next_item) again.
///
/// - Lines may end with LF, CR or CRLF, and any of them may be split across chunks. A CR ends
///   its line at once (the decoder never waits for the next chunk to see whether an LF
///   follows); an LF that then starts the next chunk is skipped.
/// - A UTF-8 byte order mark at the very start of the stream is stripped, even when split
///   across chunks. One later in the stream is ordinary text.
/// - Each complete line is decoded as UTF-8 on its own, so characters split across chunks are
///   reassembled, and invalid sequences become U+FFFD: the decoder never stalls on bad input.
/// - Comments are surfaced as [`SseItem::Comment`] and valid `retry` fields as
///   [`SseItem::Retry`]; events are dispatched as [`SseItem::Event`] by a blank line.
/// - At end of stream, an unterminated final line is processed as a line, but an event that
///   was not terminated by a blank line is discarded, as the specification requires.
///   [`has_pending_data`](Self::has_pending_data) tells you that this happened.
///
/// Work is linear in the input: bytes already scanned for a line end are never scanned again,
/// however small the chunks. Memory is bounded by [`SseLimits`] plus the size of the chunks
/// pushed between drains: drain [`next_item`](Self::next_item) after every
/// [`push`](Self::push). A line or event over the limits fails with [`SseError`]; after that
/// the decoder is *failed*: [`next_item`](Self::next_item) returns `None`,
/// [`push`](Self::push) ignores its input, and the buffers are released.
///
/// # Example
///
/// ```
/// use agent_core::sse::{SseDecoder, SseItem};
///
/// let mut decoder = SseDecoder::new();
/// let mut events = Vec::new();
/// // A CRLF and a multibyte character split across chunks.
/// for chunk in [&b"event: greeting\r"[..], b"\ndata: h\xC3", b"\xA9llo\r\n\r\n"] {
///     decoder.push(chunk);
///     while let Some(item) = decoder.next_item() {
///         if let SseItem::Event(event) = item? {
///             events.push(event);
///         }
///     }
/// }
/// decoder.finish();
/// while let Some(item) = decoder.next_item() {
///     item?;
/// }
/// assert!(!decoder.has_pending_data());
/// assert_eq!(events.len(), 1);
/// assert_eq!(events[0].event, "greeting");
/// assert_eq!(events[0].data, "héllo");
/// # Ok::<(), agent_core::sse::SseError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SseDecoder {
    limits: SseLimits,
    /// Input not yet consumed starts at `pos`; `buf[..pos]` is consumed and compacted lazily.
    buf: Vec<u8>,
    /// Start of the current (partial) line in `buf`.
    pos: usize,
    /// Bytes in `buf[pos..scan]` are known to contain no CR or LF.
    scan: usize,
    /// Whether the start-of-stream BOM check is settled.
    bom_done: bool,
    /// The previous line ended with CR: skip an LF at the start of the next input.
    skip_lf: bool,
    /// [`SseDecoder::finish`] was called.
    eof: bool,
    /// An error was returned; the decoder is inert.
    failed: bool,
    fields: FieldState,
}

/// The parser state of the specification: buffers filled by field lines.
#[derive(Debug, Clone, Default)]
struct FieldState {
    data: String,
    event_type: String,
    id_buffer: String,
    /// The last event ID string, committed from `id_buffer` when an event block ends.
    last_event_id: String,
    retry: Option<Duration>,
    /// A field line was processed since the last blank line.
    in_event: bool,
}

impl Default for SseDecoder {
    /// Same as [`SseDecoder::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl SseDecoder {
    /// Creates a decoder with the default [`SseLimits`] (1 MiB per line, 4 MiB per event).
    ///
    /// # Example
    ///
    /// ```
    /// use agent_core::sse::{SseDecoder, SseLimits};
    ///
    /// assert_eq!(SseDecoder::new().limits(), SseLimits::default());
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::with_limits(SseLimits::default())
    }

    /// Creates a decoder with the given limits.
    ///
    /// # Example
    ///
    /// ```
    /// use agent_core::sse::{SseDecoder, SseError, SseLimits};
    ///
    /// let limits = SseLimits { max_line_bytes: 1024, max_event_bytes: 4 };
    /// let mut decoder = SseDecoder::with_limits(limits);
    /// decoder.push(b"data: 12345\n\n");
    /// assert_eq!(decoder.next_item(), Some(Err(SseError::EventTooLarge { limit: 4 })));
    /// ```
    #[must_use]
    pub fn with_limits(limits: SseLimits) -> Self {
        Self {
            limits,
            buf: Vec::new(),
            pos: 0,
            scan: 0,
            bom_done: false,
            skip_lf: false,
            eof: false,
            failed: false,
            fields: FieldState::default(),
        }
    }

    /// The limits this decoder enforces.
    ///
    /// # Example
    ///
    /// ```
    /// use agent_core::sse::SseDecoder;
    ///
    /// assert_eq!(SseDecoder::new().limits().max_event_bytes, 4 * 1024 * 1024);
    /// ```
    #[must_use]
    pub fn limits(&self) -> SseLimits {
        self.limits
    }

    /// Buffers a chunk of input. Nothing is parsed until [`next_item`](Self::next_item) is
    /// called; call it until it returns `None` after every push to keep memory bounded.
    ///
    /// The input is ignored once the decoder has failed or [`finish`](Self::finish) has been
    /// called.
    ///
    /// # Example
    ///
    /// ```
    /// use agent_core::sse::{SseDecoder, SseItem};
    ///
    /// let mut decoder = SseDecoder::new();
    /// decoder.push(b"data: a");
    /// assert_eq!(decoder.next_item(), None); // the line is not complete yet
    /// decoder.push(b"\n\n");
    /// assert!(matches!(decoder.next_item(), Some(Ok(SseItem::Event(e))) if e.data == "a"));
    /// ```
    pub fn push(&mut self, chunk: &[u8]) {
        if self.failed || self.eof || chunk.is_empty() {
            return;
        }
        self.compact();
        self.buf.extend_from_slice(chunk);
    }

    /// Marks the end of the stream. Call it once, then drain [`next_item`](Self::next_item):
    /// an unterminated final line is processed as a line (it may yield a comment or a retry),
    /// but an event not terminated by a blank line is discarded, as the specification
    /// requires. Afterwards [`has_pending_data`](Self::has_pending_data) reports whether that
    /// happened, and [`push`](Self::push) ignores input.
    ///
    /// # Example
    ///
    /// ```
    /// use agent_core::sse::{SseDecoder, SseItem};
    ///
    /// let mut decoder = SseDecoder::new();
    /// decoder.push(b"data: complete\n\ndata: cut off\n: bye");
    /// assert!(matches!(decoder.next_item(), Some(Ok(SseItem::Event(_)))));
    /// assert_eq!(decoder.next_item(), None);
    /// decoder.finish();
    /// assert_eq!(decoder.next_item(), Some(Ok(SseItem::Comment("bye".to_owned()))));
    /// assert_eq!(decoder.next_item(), None);
    /// assert!(decoder.has_pending_data()); // "data: cut off" was never dispatched
    /// ```
    pub fn finish(&mut self) {
        self.eof = true;
    }

    /// Returns the next decoded item, or `None` when more input is needed (or, after
    /// [`finish`](Self::finish), when the stream is exhausted).
    ///
    /// Returns `Some(Err(_))` at most once: after an error the decoder is failed and this
    /// always returns `None`.
    ///
    /// # Example
    ///
    /// ```
    /// use agent_core::sse::{SseDecoder, SseItem};
    ///
    /// let mut decoder = SseDecoder::new();
    /// decoder.push(b"data: one\n\ndata: two\n\n");
    /// let mut data = Vec::new();
    /// while let Some(item) = decoder.next_item() {
    ///     if let Ok(SseItem::Event(event)) = item {
    ///         data.push(event.data);
    ///     }
    /// }
    /// assert_eq!(data, ["one", "two"]);
    /// ```
    pub fn next_item(&mut self) -> Option<Result<SseItem, SseError>> {
        loop {
            if self.failed {
                return None;
            }
            if !self.bom_done && !self.settle_bom() {
                return None;
            }
            if self.skip_lf {
                if let Some(&byte) = self.buf.get(self.pos) {
                    if byte == b'\n' {
                        self.pos += 1;
                    }
                    self.skip_lf = false;
                } else if self.eof {
                    self.skip_lf = false;
                } else {
                    return None;
                }
            }
            let start = self.scan.max(self.pos);
            let found = find_line_end(&self.buf[start..]);
            let (end, next) = match found {
                Some(offset) => {
                    let end = start + offset;
                    self.skip_lf = self.buf[end] == b'\r';
                    (end, end + 1)
                }
                None => {
                    self.scan = self.buf.len();
                    if self.buf.len() - self.pos > self.limits.max_line_bytes {
                        return Some(Err(self.fail_line_too_long()));
                    }
                    if !self.eof || self.pos == self.buf.len() {
                        return None;
                    }
                    // End of stream: the unterminated final line is still a line.
                    (self.buf.len(), self.buf.len())
                }
            };
            if end - self.pos > self.limits.max_line_bytes {
                return Some(Err(self.fail_line_too_long()));
            }
            let result = self
                .fields
                .process_line(&self.buf[self.pos..end], &self.limits);
            self.pos = next;
            self.scan = next;
            match result {
                Ok(None) => {}
                Ok(Some(item)) => return Some(Ok(item)),
                Err(error) => {
                    self.fail();
                    return Some(Err(error));
                }
            }
        }
    }

    /// Whether input was received that has not become an item: a partial line, or fields of
    /// an event that no blank line has terminated yet. After [`finish`](Self::finish) and
    /// draining [`next_item`](Self::next_item), `true` means the stream ended mid-event and
    /// that event was discarded. Always `false` once the decoder has failed.
    ///
    /// # Example
    ///
    /// ```
    /// use agent_core::sse::SseDecoder;
    ///
    /// let mut decoder = SseDecoder::new();
    /// decoder.push(b"data: x\n");
    /// decoder.finish();
    /// while decoder.next_item().is_some() {}
    /// assert!(decoder.has_pending_data());
    /// ```
    #[must_use]
    pub fn has_pending_data(&self) -> bool {
        !self.failed && (self.pos < self.buf.len() || self.fields.in_event)
    }

    /// Whether the decoder returned an error and is now inert.
    ///
    /// # Example
    ///
    /// ```
    /// use agent_core::sse::{SseDecoder, SseLimits};
    ///
    /// let mut decoder =
    ///     SseDecoder::with_limits(SseLimits { max_line_bytes: 2, max_event_bytes: 2 });
    /// decoder.push(b"abc");
    /// assert!(decoder.next_item().unwrap().is_err());
    /// assert!(decoder.is_failed());
    /// assert_eq!(decoder.next_item(), None);
    /// ```
    #[must_use]
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// The last event ID, as `EventSource.lastEventId` would report it: updated from `id`
    /// fields when an event block ends with a blank line (even one without data), and kept
    /// across events. `None` if never set or set to the empty string. This is the value to
    /// send as `Last-Event-ID` when reconnecting.
    ///
    /// # Example
    ///
    /// ```
    /// use agent_core::sse::SseDecoder;
    ///
    /// let mut decoder = SseDecoder::new();
    /// decoder.push(b"id: 41\ndata: a\n\ndata: b\n\nid: 42\n");
    /// while decoder.next_item().is_some() {}
    /// // The block with `id: 42` has not ended yet.
    /// assert_eq!(decoder.last_event_id(), Some("41"));
    /// ```
    #[must_use]
    pub fn last_event_id(&self) -> Option<&str> {
        Some(self.fields.last_event_id.as_str()).filter(|id| !id.is_empty())
    }

    /// The reconnection time set by the last valid `retry` field, if any.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_core::sse::SseDecoder;
    ///
    /// let mut decoder = SseDecoder::new();
    /// decoder.push(b"retry: 3000\nretry: soon\n");
    /// while decoder.next_item().is_some() {}
    /// assert_eq!(decoder.retry(), Some(Duration::from_secs(3)));
    /// ```
    #[must_use]
    pub fn retry(&self) -> Option<Duration> {
        self.fields.retry
    }

    /// Settles the start-of-stream BOM check; returns `false` when more input is needed.
    fn settle_bom(&mut self) -> bool {
        let available = &self.buf[self.pos..];
        let n = available.len().min(BOM.len());
        if available[..n] != BOM[..n] {
            self.bom_done = true;
        } else if n == BOM.len() {
            self.pos += BOM.len();
            self.scan = self.pos;
            self.bom_done = true;
        } else if self.eof {
            self.bom_done = true;
        }
        self.bom_done
    }

    /// Drops the consumed prefix of the buffer when that is cheap relative to the bytes
    /// consumed, so compaction is amortised linear.
    fn compact(&mut self) {
        if self.pos == 0 {
            return;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
        } else if self.pos >= self.buf.len() - self.pos {
            self.buf.drain(..self.pos);
        } else {
            return;
        }
        self.scan -= self.pos;
        self.pos = 0;
    }

    fn fail_line_too_long(&mut self) -> SseError {
        self.fail();
        SseError::LineTooLong {
            limit: self.limits.max_line_bytes,
        }
    }

    fn fail(&mut self) {
        self.failed = true;
        self.buf = Vec::new();
        self.pos = 0;
        self.scan = 0;
        self.fields.data = String::new();
        self.fields.event_type = String::new();
        self.fields.in_event = false;
    }
}

impl FieldState {
    /// Processes one line (without its terminator), per the specification.
    fn process_line(
        &mut self,
        line: &[u8],
        limits: &SseLimits,
    ) -> Result<Option<SseItem>, SseError> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        // Valid UTF-8 (the usual case) is checked by the fast validator; only invalid input
        // takes the slower replacing path.
        let line: Cow<'_, str> = match std::str::from_utf8(line) {
            Ok(line) => Cow::Borrowed(line),
            Err(_) => String::from_utf8_lossy(line),
        };
        if let Some(comment) = line.strip_prefix(':') {
            return Ok(Some(SseItem::Comment(strip_one_space(comment).to_owned())));
        }
        self.in_event = true;
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, strip_one_space(value)),
            None => (&*line, ""),
        };
        match name {
            "event" => {
                self.event_type.clear();
                self.event_type.push_str(value);
            }
            "data" => {
                let size = self
                    .data
                    .len()
                    .saturating_add(value.len())
                    .saturating_add(1);
                if size > limits.max_event_bytes {
                    return Err(SseError::EventTooLarge {
                        limit: limits.max_event_bytes,
                    });
                }
                // One allocation of the right size for the usual single `data` line (pushing
                // the `\n` separately would reallocate).
                self.data.reserve(value.len() + 1);
                self.data.push_str(value);
                self.data.push('\n');
            }
            // An id containing NUL is ignored.
            "id" if !value.contains('\0') => {
                self.id_buffer.clear();
                self.id_buffer.push_str(value);
            }
            "retry" => {
                if let Some(retry) = parse_retry(value) {
                    self.retry = Some(retry);
                    return Ok(Some(SseItem::Retry(retry)));
                }
            }
            _ => {}
        }
        Ok(None)
    }

    /// Ends an event block (a blank line was seen).
    fn dispatch(&mut self) -> Option<SseItem> {
        self.in_event = false;
        self.last_event_id.clone_from(&self.id_buffer);
        if self.data.is_empty() {
            self.event_type.clear();
            return None;
        }
        self.data.pop();
        let data = mem::take(&mut self.data);
        let event = if self.event_type.is_empty() {
            "message".to_owned()
        } else {
            mem::take(&mut self.event_type)
        };
        let id = Some(self.last_event_id.clone()).filter(|id| !id.is_empty());
        Some(SseItem::Event(SseEvent { event, data, id }))
    }
}

/// The position of the first CR or LF in `hay`, testing eight bytes at a time (a SWAR
/// "has zero byte" test on the word XORed with each terminator); a plain byte loop was a fifth
/// of the decoder's time on typical events.
fn find_line_end(hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const LF: u64 = LO * b'\n' as u64;
    const CR: u64 = LO * b'\r' as u64;
    let mut words = hay.chunks_exact(8);
    let mut offset = 0;
    for word in words.by_ref() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let w = u64::from_le_bytes(bytes);
        let (lf, cr) = (w ^ LF, w ^ CR);
        // The lowest set bit marks the first byte that equals LF or CR (bits above it may be
        // false positives from the borrow, which `trailing_zeros` ignores).
        let hits = (lf.wrapping_sub(LO) & !lf & HI) | (cr.wrapping_sub(LO) & !cr & HI);
        if hits != 0 {
            return Some(offset + (hits.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&byte| byte == b'\n' || byte == b'\r')
        .map(|p| offset + p)
}

/// Removes exactly one leading U+0020, if present.
fn strip_one_space(value: &str) -> &str {
    value.strip_prefix(' ').unwrap_or(value)
}

/// Parses a `retry` value: one or more ASCII digits, in milliseconds, saturating.
fn parse_retry(value: &str) -> Option<Duration> {
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let millis = value.bytes().fold(0_u64, |millis, digit| {
        millis
            .saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    });
    Some(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::find_line_end;

    #[test]
    fn find_line_end_agrees_with_a_byte_loop() {
        let naive = |hay: &[u8]| hay.iter().position(|&b| b == b'\n' || b == b'\r');
        // Near misses of LF (0x0A) and CR (0x0D): neighbours and high-bit variants.
        let filler = [b'a', 0x09, 0x0b, 0x0c, 0x0e, 0x8a, 0x8d, 0x80, 0xff];
        for len in 0..40 {
            for at in 0..=len {
                for (first, second) in [(b'\n', b'\r'), (b'\r', b'\n'), (b'\n', b'\n')] {
                    let mut hay: Vec<u8> =
                        (0..len).map(|i| filler[(i + at) % filler.len()]).collect();
                    if at < len {
                        hay[at] = first;
                    }
                    if at + 3 < len {
                        hay[at + 3] = second;
                    }
                    assert_eq!(find_line_end(&hay), naive(&hay), "{hay:?}");
                }
            }
        }
    }
}
