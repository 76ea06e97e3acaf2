//! [`WriteTimeout`]: an I/O adapter that fails a write stalled for too long.
//!
//! hyper writes a streamed response body itself: when a client stops reading, the socket's
//! send buffer fills up, `poll_write` stays `Pending`, and hyper simply stops polling the
//! body. Nothing is lost or buffered beyond hyper's bounded write buffer, but the connection
//! (and the run behind it) would stay open forever. Wrapped in this adapter, a write that has
//! made no progress for the timeout fails with [`io::ErrorKind::TimedOut`]; hyper then ends
//! the connection and drops the response body, which cancels the run.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Wraps an I/O object so that a write (or flush, or shutdown) that stays `Pending` for
/// `timeout` without any progress fails with [`io::ErrorKind::TimedOut`]. Reads pass through.
///
/// The timer starts at the first `Pending` write and is cleared by any write that makes
/// progress, so a slow but steady reader is never cut off; only one that accepted no byte at
/// all for the whole `timeout` is. A zero timeout turns the adapter into a pass-through.
#[derive(Debug)]
pub(crate) struct WriteTimeout<T> {
    inner: T,
    timeout: Duration,
    /// Armed while a write is pending; allocated on the first stall only.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<T> WriteTimeout<T> {
    pub(crate) fn new(inner: T, timeout: Duration) -> Self {
        WriteTimeout {
            inner,
            timeout,
            timer: None,
            armed: false,
        }
    }

    /// Account for the result of a write-side poll: arm the timer on `Pending`, fail once it
    /// fired, clear it on progress.
    fn check<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.armed = false;
            return poll;
        }
        if self.timeout.is_zero() {
            return Poll::Pending;
        }
        let deadline = Instant::now() + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client accepted no bytes for {:?} (it stopped reading)",
                    self.timeout
                ),
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A writer that accepts `budget` bytes, then stays pending forever.
    struct Stalling {
        budget: usize,
    }

    impl AsyncWrite for Stalling {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.budget == 0 {
                return Poll::Pending;
            }
            let n = buf.len().min(self.budget);
            self.budget -= n;
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_times_out_and_progress_resets_the_timer() {
        let mut io = WriteTimeout::new(Stalling { budget: 10 }, Duration::from_millis(300));
        io.write_all(b"0123456789").await.unwrap();
        let started = Instant::now();
        let err = io.write_all(b"more").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // Paused clock: exactly the timeout elapsed, no more.
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        assert!(err.to_string().contains("stopped reading"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_timeout_never_fires() {
        let mut io = WriteTimeout::new(Stalling { budget: 0 }, Duration::ZERO);
        let write = tokio::time::timeout(Duration::from_secs(3600), io.write_all(b"x")).await;
        assert!(write.is_err(), "the write stays pending");
    }
}
