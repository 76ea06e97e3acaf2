//! [`WriteTimeout`]: an I/O adapter that fails a write stalled for too long.
//!
//! hyper writes a streamed response body itself: when a client stops reading, the socket's
//! send buffer fills up, `poll_write` stays `Pending`, and hyper stops polling the body.
//! Nothing is lost or buffered beyond hyper's bounded write buffer, but the connection (and
//! the run behind it) would stay open forever. Wrapped in this adapter, a write that has
//! made no progress for the timeout fails with [`io::ErrorKind::TimedOut`]; hyper then ends
//! the connection and drops the response body, which cancels the run.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Read, ReadBufCursor, Sleep, Timer, Write};

/// Wraps hyper I/O so that a write (or flush, or shutdown) that stays `Pending` for
/// `timeout` without any progress fails with [`io::ErrorKind::TimedOut`]. Reads pass through.
///
/// The timer starts at the first `Pending` write and is cleared by any write that makes
/// progress, so a slow but steady reader is never cut off; only one that accepted no byte at
/// all for the whole `timeout` is. A zero timeout makes the adapter a pass-through.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use agent_core::runtime::TestRuntime;
/// use agent_hyper::{FuturesIo, RuntimeTimer, WriteTimeout};
///
/// let io = FuturesIo::new(futures_util::io::Cursor::new(Vec::<u8>::new()));
/// let timer = RuntimeTimer::new(Arc::new(TestRuntime::new()));
/// let io = WriteTimeout::new(io, timer, Duration::from_secs(30));
/// assert_eq!(io.timeout(), Duration::from_secs(30));
/// ```
pub struct WriteTimeout<I, T> {
    inner: I,
    timer: T,
    timeout: Duration,
    /// Armed while a write is pending; allocated on the first stall only.
    sleep: Option<Pin<Box<dyn Sleep>>>,
    armed: bool,
}

impl<I: fmt::Debug, T> fmt::Debug for WriteTimeout<I, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteTimeout")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .field("armed", &self.armed)
            .finish()
    }
}

impl<I, T: Timer> WriteTimeout<I, T> {
    /// Wrap `inner`, timing stalled writes with `timer`.
    pub fn new(inner: I, timer: T, timeout: Duration) -> Self {
        WriteTimeout {
            inner,
            timer,
            timeout,
            sleep: None,
            armed: false,
        }
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The wrapped I/O.
    pub fn get_ref(&self) -> &I {
        &self.inner
    }

    /// The wrapped I/O, mutably.
    pub fn get_mut(&mut self) -> &mut I {
        &mut self.inner
    }

    /// Unwrap it.
    pub fn into_inner(self) -> I {
        self.inner
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
        if !self.armed {
            let deadline = Instant::now() + self.timeout;
            match &mut self.sleep {
                Some(sleep) => self.timer.reset(sleep, deadline),
                None => self.sleep = Some(self.timer.sleep_until(deadline)),
            }
            self.armed = true;
        }
        let Some(sleep) = &mut self.sleep else {
            return Poll::Pending;
        };
        if sleep.as_mut().poll(cx).is_ready() {
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

impl<I: Read + Unpin, T: Unpin> Read for WriteTimeout<I, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: Write + Unpin, T: Timer + Unpin> Write for WriteTimeout<I, T> {
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
    use std::sync::Arc;

    use agent_core::runtime::{TestRuntime, block_on};

    use crate::RuntimeTimer;

    /// A writer that accepts `budget` bytes, then stays pending forever.
    struct Stalling {
        budget: usize,
    }

    impl Write for Stalling {
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

    fn write_all<W: Write + Unpin>(io: &mut W, mut bytes: &[u8]) -> io::Result<()> {
        block_on(std::future::poll_fn(|cx| {
            while !bytes.is_empty() {
                match Pin::new(&mut *io).poll_write(cx, bytes) {
                    Poll::Ready(Ok(n)) => bytes = &bytes[n..],
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            Poll::Ready(Ok(()))
        }))
    }

    #[test]
    fn a_stalled_write_times_out_after_the_timeout_and_not_before() {
        let timer = RuntimeTimer::new(Arc::new(TestRuntime::new()));
        let timeout = Duration::from_millis(200);
        let mut io = WriteTimeout::new(Stalling { budget: 10 }, timer, timeout);
        write_all(&mut io, b"0123456789").expect("the budget is accepted at once");
        let started = Instant::now();
        let err = write_all(&mut io, b"more").expect_err("a stalled write must fail");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(
            started.elapsed() >= timeout,
            "failed after {:?}, before the {timeout:?} timeout",
            started.elapsed()
        );
        assert!(err.to_string().contains("stopped reading"), "{err}");
    }
}
