//! Newline-delimited messages read from an `AsyncRead`, with a bound on the line length.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_io::AsyncRead;

/// Bytes asked of the reader at a time.
const READ_CHUNK: usize = 8 * 1024;

/// Splits a byte stream into lines (`\n`, with a `\r` before it dropped), failing with
/// [`io::ErrorKind::InvalidData`] as soon as a line grows past `max_line_bytes` instead of
/// buffering without bound.
pub(crate) struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    /// `buf[..scanned]` holds no newline.
    scanned: usize,
    max_line_bytes: usize,
    eof: bool,
}

/// Why [`LineReader::poll_line`] failed: a line too long, or the reader's own error.
pub(crate) enum LineError {
    TooLong(usize),
    Io(io::Error),
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(crate) fn new(reader: R, max_line_bytes: usize) -> Self {
        LineReader {
            reader,
            buf: Vec::new(),
            scanned: 0,
            max_line_bytes,
            eof: false,
        }
    }

    /// The next line (`None` at the end of the stream; a last line without `\n` counts).
    pub(crate) fn poll_line(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Vec<u8>>, LineError>> {
        loop {
            if let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + pos;
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.scanned = 0;
                return Poll::Ready(Ok(Some(line)));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > self.max_line_bytes {
                return Poll::Ready(Err(LineError::TooLong(self.max_line_bytes)));
            }
            if self.eof {
                if self.buf.is_empty() {
                    return Poll::Ready(Ok(None));
                }
                self.scanned = 0;
                return Poll::Ready(Ok(Some(std::mem::take(&mut self.buf))));
            }
            let start = self.buf.len();
            self.buf.resize(start + READ_CHUNK, 0);
            let read = Pin::new(&mut self.reader).poll_read(cx, &mut self.buf[start..]);
            match read {
                Poll::Ready(Ok(n)) => {
                    self.buf.truncate(start + n);
                    if n == 0 {
                        self.eof = true;
                    }
                }
                Poll::Ready(Err(err)) => {
                    self.buf.truncate(start);
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Poll::Ready(Err(LineError::Io(err)));
                    }
                }
                Poll::Pending => {
                    self.buf.truncate(start);
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_core::runtime::block_on;

    fn lines(input: &[u8], max: usize) -> Vec<Result<Vec<u8>, String>> {
        let mut reader = LineReader::new(futures_util::io::Cursor::new(input.to_vec()), max);
        let mut out = Vec::new();
        block_on(std::future::poll_fn(|cx| {
            loop {
                match reader.poll_line(cx) {
                    Poll::Ready(Ok(Some(line))) => out.push(Ok(line)),
                    Poll::Ready(Ok(None)) => return Poll::Ready(()),
                    Poll::Ready(Err(LineError::TooLong(n))) => {
                        out.push(Err(format!("too long {n}")));
                        return Poll::Ready(());
                    }
                    Poll::Ready(Err(LineError::Io(e))) => {
                        out.push(Err(e.to_string()));
                        return Poll::Ready(());
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
        }));
        out
    }

    #[test]
    fn splits_lf_and_crlf_and_keeps_a_last_unterminated_line() {
        assert_eq!(
            lines(b"a\r\nbb\n\nccc", 10),
            vec![
                Ok(b"a".to_vec()),
                Ok(b"bb".to_vec()),
                Ok(vec![]),
                Ok(b"ccc".to_vec())
            ]
        );
    }

    #[test]
    fn a_line_past_the_bound_fails_without_waiting_for_its_end() {
        let mut input = b"ok\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100_000));
        assert_eq!(
            lines(&input, 1000),
            vec![Ok(b"ok".to_vec()), Err("too long 1000".into())]
        );
    }
}
