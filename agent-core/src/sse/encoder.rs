//! Server-side encoding of Server-Sent Events frames.
//!
//! Each function appends one complete frame, ending with a blank line, to a `String`, so a
//! server can write and flush frame by frame. Whatever the arguments, the output never breaks
//! the stream's framing: multi-line `data` and comment text become one line each, and line
//! breaks inside single-line fields (`event`, `id`) are replaced.

use std::time::Duration;

/// Appends one event frame: `event: …`, `id: …`, one `data: …` line per line of `data`, and
/// a blank line that dispatches the event.
///
/// - `data` is split on CRLF, LF and CR, so it decodes to the same text with every line end
///   normalised to `\n`. An empty `data` still produces one `data: ` line, so the event is
///   dispatched with empty data.
/// - `event` and `id` are single-line fields: each CR or LF in them is replaced with a space
///   so it cannot end the field early. In `id`, NUL is replaced with a space too, because
///   decoders ignore an `id` containing NUL. `None` omits the field; `Some("")` for `id`
///   writes `id: `, which resets the client's last event ID.
///
/// # Example
///
/// ```
/// use agent_core::sse::encode_event;
///
/// let mut out = String::new();
/// encode_event(&mut out, Some("delta"), Some("3"), "line one\nline two");
/// assert_eq!(out, "event: delta\nid: 3\ndata: line one\ndata: line two\n\n");
///
/// out.clear();
/// encode_event(&mut out, Some("bad\nname"), None, "");
/// assert_eq!(out, "event: bad name\ndata: \n\n");
/// ```
pub fn encode_event(out: &mut String, event: Option<&str>, id: Option<&str>, data: &str) {
    if let Some(event) = event {
        push_field(out, "event", event, |c| matches!(c, '\r' | '\n'));
    }
    if let Some(id) = id {
        push_field(out, "id", id, |c| matches!(c, '\r' | '\n' | '\0'));
    }
    for line in Lines::new(data) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
}

/// Appends a comment frame: one `: …` line per line of `text` (split on CRLF, LF and CR),
/// then a blank line. Clients ignore comments, so they serve as keep-alives that hold an idle
/// connection open; the blank line completes the frame for intermediaries that buffer until
/// the end of a frame, so the comment is flushed to the client at once. An empty line of text
/// is written as a bare `:`.
///
/// # Example
///
/// ```
/// use agent_core::sse::encode_comment;
///
/// let mut out = String::new();
/// encode_comment(&mut out, "keep-alive");
/// assert_eq!(out, ": keep-alive\n\n");
///
/// out.clear();
/// encode_comment(&mut out, "two\nlines");
/// assert_eq!(out, ": two\n: lines\n\n");
/// ```
pub fn encode_comment(out: &mut String, text: &str) {
    for line in Lines::new(text) {
        out.push(':');
        if !line.is_empty() {
            out.push(' ');
            out.push_str(line);
        }
        out.push('\n');
    }
    out.push('\n');
}

/// Appends a `retry: <milliseconds>` frame, then a blank line, asking the client to wait
/// that long before reconnecting. Sub-millisecond precision is truncated.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use agent_core::sse::encode_retry;
///
/// let mut out = String::new();
/// encode_retry(&mut out, Duration::from_secs(5));
/// assert_eq!(out, "retry: 5000\n\n");
/// ```
pub fn encode_retry(out: &mut String, retry: Duration) {
    out.push_str("retry: ");
    out.push_str(&retry.as_millis().to_string());
    out.push_str("\n\n");
}

/// Writes `name: value\n`, replacing each char matching `forbidden` with a space.
fn push_field(out: &mut String, name: &str, value: &str, forbidden: impl Fn(char) -> bool) {
    out.push_str(name);
    out.push_str(": ");
    if value.contains(&forbidden) {
        out.extend(value.chars().map(|c| if forbidden(c) { ' ' } else { c }));
    } else {
        out.push_str(value);
    }
    out.push('\n');
}

/// The lines of a text split on CRLF, LF and CR. Always yields at least one (possibly empty)
/// line, and a trailing line end yields a final empty line.
struct Lines<'a> {
    rest: Option<&'a str>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Self { rest: Some(text) }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match rest.find(['\r', '\n']) {
            Some(end) => {
                let skip = if rest[end..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                self.rest = Some(&rest[end + skip..]);
                Some(&rest[..end])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}
