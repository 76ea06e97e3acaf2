//! Reading the SSE body of a 2xx response: decoding events, the inactivity timeout, the
//! cooperative budget, and what a body that ends early means.

use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;

use super::connect::{Connected, millis, redact};
use super::{EXCERPT_CHARS, Endpoint, EventFlow, WireFormat, excerpt};
use crate::error::{ErrorKind, ModelError};
use crate::http::BodyStream;
use crate::model::ModelDelta;
use crate::runtime::{Deadline, SharedRuntime};
use crate::sse::{SseDecoder, SseItem};
use std::sync::Arc;

/// Body chunks consumed in one `poll_next` without producing a delta before the stream
/// yields to the executor (a flood of comments or empty chunks must not starve it).
const CHUNK_BUDGET: usize = 32;

/// What [`Streaming::poll_deltas`] produced.
pub(super) enum Outcome {
    /// New deltas are in the queue.
    Deltas,
    /// The answer is complete.
    End,
    /// The stream failed.
    Failed(ModelError),
}

/// Reading the SSE body of a 2xx response.
pub(super) struct Streaming<W: WireFormat> {
    wire: W,
    shared: Arc<Endpoint>,
    runtime: SharedRuntime,
    /// `None` once the body has ended.
    body: Option<BodyStream>,
    /// The wire format said the answer is complete (the deltas of that event are queued).
    ended: bool,
    decoder: SseDecoder,
    inactivity: Option<Inactivity>,
    /// Events seen (including `[DONE]`).
    events: u64,
    /// A finish reason was seen.
    finished: bool,
    /// The first bytes of the body, kept while no event has been seen, for the error of a
    /// body that is not an event stream.
    head: Vec<u8>,
}

impl<W: WireFormat> Streaming<W> {
    pub(super) fn new(connected: Connected, wire: W) -> Self {
        let Connected {
            endpoint: shared,
            runtime,
            body,
            first_chunk,
            first_byte_at,
        } = connected;
        let inactivity = shared.timeouts.inactivity.map(|limit| Inactivity {
            limit,
            timer: Deadline::new(runtime.clone(), first_byte_at + limit),
        });
        let mut streaming = Streaming {
            wire,
            decoder: SseDecoder::with_limits(shared.sse_limits),
            shared,
            runtime,
            body,
            inactivity,
            ended: false,
            events: 0,
            finished: false,
            head: Vec::new(),
        };
        match first_chunk {
            Some(chunk) => {
                streaming.keep_head(&chunk);
                streaming.decoder.push(&chunk);
            }
            None => streaming.decoder.finish(),
        }
        streaming
    }

    fn keep_head(&mut self, chunk: &[u8]) {
        if self.events == 0 && self.head.len() < EXCERPT_CHARS {
            let take = chunk.len().min(EXCERPT_CHARS - self.head.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
    }

    /// Decode until at least one delta is queued, the stream ends or fails, or the body has
    /// nothing more for now.
    pub(super) fn poll_deltas(
        &mut self,
        cx: &mut Context<'_>,
        pending: &mut VecDeque<ModelDelta>,
    ) -> Poll<Outcome> {
        let mut chunks = 0;
        if self.ended {
            return Poll::Ready(Outcome::End);
        }
        loop {
            // Drain what the decoder already holds before reading more.
            while let Some(item) = self.decoder.next_item() {
                let event = match item {
                    Ok(SseItem::Event(event)) => event,
                    // Comments (`: keep-alive`) and `retry` fields: not events, no reset.
                    Ok(SseItem::Comment(_) | SseItem::Retry(_)) => continue,
                    Err(error) => {
                        return Poll::Ready(Outcome::Failed(ModelError::new(
                            ErrorKind::ResponseTooLarge,
                            format!(
                                "the response stream from {} is too large: {error}",
                                self.shared.host
                            ),
                        )));
                    }
                };
                self.events += 1;
                if let Some(inactivity) = &mut self.inactivity {
                    // One clock read per event; the timer is re-armed only when it fires.
                    inactivity
                        .timer
                        .reset(self.runtime.now() + inactivity.limit);
                }
                let queued = pending.len();
                match self.wire.on_event(&self.shared.host, &event, pending) {
                    Ok(flow) => {
                        self.finished |= pending
                            .iter()
                            .skip(queued)
                            .any(|delta| matches!(delta, ModelDelta::Finish(_)));
                        if let EventFlow::End = flow {
                            return Poll::Ready(if pending.is_empty() {
                                Outcome::End
                            } else {
                                // Yield what the last event carried; the next poll ends.
                                self.body = None;
                                self.ended = true;
                                Outcome::Deltas
                            });
                        }
                        if pending.len() > queued {
                            return Poll::Ready(Outcome::Deltas);
                        }
                    }
                    Err(error) => {
                        return Poll::Ready(Outcome::Failed(redact(
                            error,
                            self.shared.key.as_ref(),
                        )));
                    }
                }
            }

            let Some(body) = &mut self.body else {
                // The body ended and the decoder is drained.
                return Poll::Ready(self.end_of_body());
            };
            if chunks == CHUNK_BUDGET {
                // Many chunks without a delta: let other tasks run, then continue.
                if let Some(error) = self.poll_inactivity(cx) {
                    return Poll::Ready(Outcome::Failed(error));
                }
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match body.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    chunks += 1;
                    self.keep_head(&chunk);
                    self.decoder.push(&chunk);
                }
                Poll::Ready(Some(Err(error))) => {
                    self.body = None;
                    return Poll::Ready(Outcome::Failed(ModelError::new(
                        ErrorKind::UpstreamReset,
                        format!(
                            "the connection to {} broke mid-stream: {}",
                            self.shared.host, error.message
                        ),
                    )));
                }
                Poll::Ready(None) => {
                    self.body = None;
                    self.decoder.finish();
                }
                Poll::Pending => {
                    if let Some(error) = self.poll_inactivity(cx) {
                        return Poll::Ready(Outcome::Failed(error));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// `Some(error)` when the inactivity timeout has passed; otherwise its timer is armed
    /// with `cx`'s waker.
    fn poll_inactivity(&mut self, cx: &mut Context<'_>) -> Option<ModelError> {
        let inactivity = self.inactivity.as_mut()?;
        match inactivity.timer.poll_expired(cx) {
            Poll::Pending => None,
            Poll::Ready(()) => Some(ModelError::new(
                ErrorKind::InactivityTimeout,
                format!(
                    "{} sent no event within the inactivity timeout of {}",
                    self.shared.host,
                    millis(inactivity.limit)
                ),
            )),
        }
    }

    /// The body ended without the end-of-answer event.
    fn end_of_body(&self) -> Outcome {
        if self.events == 0 {
            let began = excerpt(&String::from_utf8_lossy(&self.head));
            let message = if began.is_empty() {
                format!(
                    "{} answered with an empty body instead of an event stream",
                    self.shared.host
                )
            } else {
                format!(
                    "{} answered without a single SSE event (is this {}?); the body began with: {began}",
                    self.shared.host,
                    W::EXPECTED
                )
            };
            return Outcome::Failed(redact(
                ModelError::new(ErrorKind::MalformedResponse, message),
                self.shared.key.as_ref(),
            ));
        }
        if self.decoder.has_pending_data() {
            tracing::debug!(host = %self.shared.host, "the response ended in the middle of an event; it was discarded");
        }
        if !self.finished {
            tracing::debug!(host = %self.shared.host, "the response ended without its end event or a finish reason");
        }
        Outcome::End
    }
}

/// The inactivity timeout: a deadline moved by every event.
struct Inactivity {
    limit: Duration,
    timer: Deadline,
}
