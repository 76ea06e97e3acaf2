//! [`ResponseBody`]: a run's events as a stream of encoded frames, with keep-alive comments
//! while the run is idle.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;

use super::protocol::FrameEncoder;
use super::runs::RunEvents;
use crate::runtime::{Deadline, SharedRuntime};

/// A streamed response body: chunks of encoded events (SSE frames), plus `: keep-alive`
/// comments while the run is idle.
///
/// A chunk holds every event that is ready when the body is polled: it takes events until
/// the run answers `Pending`, the terminal event, or 16 KiB of frames, and
/// never waits for more. A stream whose events come one at a time is still sent one event
/// per chunk, the moment each exists; a burst of ready events costs one write instead of
/// one per event.
///
/// Each chunk must be written and flushed as soon as it is yielded. The body ends after the
/// frame of the run's terminal event. Dropping it detaches its reader from the run: the run
/// is cancelled at once, or after the detach grace for a resumable `/v1/runs` stream (a
/// client disconnect).
pub struct ResponseBody {
    // Boxed so that responses stay small to move around; one allocation per stream.
    state: Box<BodyState>,
}

/// A chunk stops taking ready events once its frames reach this many bytes.
pub(crate) const MAX_CHUNK_BYTES: usize = 16 * 1024;

struct BodyState {
    events: RunEvents,
    /// The frames of the chunk being built; reused from chunk to chunk.
    out: String,
    encoding: Box<dyn FrameEncoder>,
    /// Written before the first event (an SSE `retry:` field, say); empty for none.
    preamble: &'static str,
    keep_alive: Duration,
    /// When the next keep-alive comment is due (moved by every frame sent); `None` when
    /// keep-alives are off.
    idle: Option<Deadline>,
    done: bool,
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("events", &self.state.events)
            .field("done", &self.state.done)
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    pub(crate) fn new(
        events: RunEvents,
        encoding: Box<dyn FrameEncoder>,
        keep_alive: Duration,
        runtime: SharedRuntime,
    ) -> Self {
        let state = BodyState {
            events,
            out: String::new(),
            encoding,
            preamble: "",
            keep_alive,
            idle: (!keep_alive.is_zero()).then(|| Deadline::after(runtime, keep_alive)),
            done: false,
        };
        ResponseBody {
            state: Box::new(state),
        }
    }

    /// Send `preamble` before the first event's frame.
    pub(crate) fn with_preamble(mut self, preamble: &'static str) -> Self {
        self.state.preamble = preamble;
        self
    }
}

impl BodyState {
    /// A frame was sent: the next keep-alive is due one interval from now.
    fn sent(&mut self) {
        if let Some(idle) = &mut self.idle {
            let next = idle.runtime_now() + self.keep_alive;
            idle.reset(next);
        }
    }

    /// `true` when a keep-alive comment is due now (else the timer wakes `cx` when it is).
    fn poll_keep_alive(&mut self, cx: &mut Context<'_>) -> bool {
        self.idle
            .as_mut()
            .is_some_and(|idle| idle.poll_expired(cx).is_ready())
    }
}

impl Stream for ResponseBody {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = &mut *self.state;
        if !this.preamble.is_empty() {
            let preamble = std::mem::take(&mut this.preamble);
            return Poll::Ready(Some(Bytes::from_static(preamble.as_bytes())));
        }
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            // Take every event that is ready now, up to the terminal one or the size cap,
            // and less than half the run log's bound (counted as the log counts), so that
            // the events a chunk took are still held for a reader attaching later.
            let log_budget = (this.events.max_log_bytes() / 2).max(1);
            let mut taken = 0;
            let mut pending = false;
            while !this.done && this.out.len() < MAX_CHUNK_BYTES && taken < log_budget {
                match this.events.poll_next_unpin(cx) {
                    Poll::Ready(Some(event)) => {
                        this.done = event.is_terminal();
                        taken += super::runs::event_bytes(&event);
                        this.encoding.encode(&event, &mut this.out);
                    }
                    Poll::Ready(None) => this.done = true,
                    Poll::Pending => {
                        pending = true;
                        break;
                    }
                }
            }
            if !this.out.is_empty() {
                let chunk = Bytes::copy_from_slice(this.out.as_bytes());
                this.out.clear();
                if this.out.capacity() > 4 * MAX_CHUNK_BYTES {
                    // One huge event: do not hold its buffer for the rest of the stream.
                    this.out = String::new();
                }
                this.sent();
                return Poll::Ready(Some(chunk));
            }
            if !pending {
                // Ended, or only events without a frame were ready: look again.
                continue;
            }
            if this.poll_keep_alive(cx) {
                this.sent();
                return Poll::Ready(Some(Bytes::from_static(super::KEEP_ALIVE_FRAME.as_bytes())));
            }
            return Poll::Pending;
        }
    }
}
