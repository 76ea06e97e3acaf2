//! What every HTTP streaming provider shares: sending the request with retries before the
//! first body byte, the first-byte and inactivity timeouts, reading error bodies, decoding the
//! SSE body, and keeping secrets out of error messages.
//!
//! A provider ([`OpenAiModel`](super::OpenAiModel), [`AnthropicModel`](super::AnthropicModel))
//! supplies an [`Endpoint`] (URL, host, policies), the [`HttpRequest`] to send and a
//! [`WireFormat`] that turns one SSE event into [`ModelDelta`]s; [`SseModelStream`] does the
//! rest, identically for every provider.

mod connect;
mod streaming;
mod text;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::error::ModelError;
use crate::http::{HttpClient, HttpRequest};
use crate::model::ModelDelta;
use crate::policy::{RetryPolicy, Timeouts};
use crate::runtime::{BoxFuture, SharedRuntime};
use crate::secret::Secret;
use crate::sse::{SseEvent, SseLimits};

pub(crate) use text::redact_location;
pub(crate) use text::{EXCERPT_CHARS, error_message, excerpt, host_of, redact_credentials};

/// Where and how a provider's requests go: everything the shared state machine needs to know
/// about the provider's configuration.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// The full request URL.
    pub(crate) url: String,
    /// The host (and port) of `url`: what error messages name.
    pub(crate) host: String,
    /// Retries before the first body byte.
    pub(crate) retry: RetryPolicy,
    /// Connect, first-byte and inactivity timeouts.
    pub(crate) timeouts: Timeouts,
    /// Limits of the SSE decoder.
    pub(crate) sse_limits: SseLimits,
    /// The API key, replaced by `<redacted>` wherever an error message would quote it.
    pub(crate) key: Option<Secret>,
}

impl Endpoint {
    /// An endpoint at `url` (its host derived from it).
    pub(crate) fn new(
        url: String,
        retry: RetryPolicy,
        timeouts: Timeouts,
        sse_limits: SseLimits,
        key: Option<Secret>,
    ) -> Self {
        let host = host_of(&url).to_owned();
        Endpoint {
            url,
            host,
            retry,
            timeouts,
            sse_limits,
            key,
        }
    }
}

/// What one SSE event meant.
pub(crate) enum EventFlow {
    /// Keep reading.
    Continue,
    /// The answer is complete (OpenAI's `[DONE]`, Anthropic's `message_stop`).
    End,
}

/// A provider's streaming wire format: one SSE event in, deltas out.
pub(crate) trait WireFormat: Send + Unpin + 'static {
    /// What a body without any event was supposed to be, for its error message:
    /// `"an OpenAI-compatible streaming endpoint"`.
    const EXPECTED: &'static str;

    /// Handle one event (comments never reach it), pushing its deltas onto `out`. An error
    /// ends the stream (the shared code redacts the key from its message); `host` is what the
    /// message may name.
    fn on_event(
        &mut self,
        host: &str,
        event: &SseEvent,
        out: &mut VecDeque<ModelDelta>,
    ) -> Result<EventFlow, ModelError>;
}

/// The [`ModelStream`](crate::model::ModelStream) of an HTTP SSE provider.
pub(crate) struct SseModelStream<W: WireFormat> {
    state: State<W>,
    /// Deltas parsed but not yet yielded (one event may hold several).
    pending: VecDeque<ModelDelta>,
}

enum State<W: WireFormat> {
    /// Sending the request, retrying, waiting for the first body byte.
    Connecting(BoxFuture<Result<connect::Connected, ModelError>>, Option<W>),
    /// Reading the event stream.
    Streaming(Box<streaming::Streaming<W>>),
    /// Ended (normally or with an error); the response body has been dropped.
    Done,
}

impl<W: WireFormat> SseModelStream<W> {
    /// A stream that sends `http` to `endpoint` through `client` when first polled and
    /// decodes the answer with `wire`.
    pub(crate) fn new(
        endpoint: Arc<Endpoint>,
        client: Arc<dyn HttpClient>,
        http: HttpRequest,
        runtime: SharedRuntime,
        wire: W,
    ) -> Self {
        // An `async fn` does nothing until polled: no I/O happens before the first poll.
        SseModelStream {
            state: State::Connecting(
                Box::pin(connect::connect(endpoint, client, http, runtime)),
                Some(wire),
            ),
            pending: VecDeque::new(),
        }
    }
}

impl<W: WireFormat> Stream for SseModelStream<W> {
    type Item = Result<ModelDelta, ModelError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(delta) = this.pending.pop_front() {
            return Poll::Ready(Some(Ok(delta)));
        }
        loop {
            match &mut this.state {
                State::Connecting(connecting, wire) => match connecting.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(connected)) => {
                        let Some(wire) = wire.take() else {
                            this.state = State::Done;
                            return Poll::Ready(None);
                        };
                        this.state =
                            State::Streaming(Box::new(streaming::Streaming::new(connected, wire)));
                    }
                    Poll::Ready(Err(error)) => {
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(error)));
                    }
                },
                State::Streaming(streaming) => {
                    let outcome = match streaming.poll_deltas(cx, &mut this.pending) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(outcome) => outcome,
                    };
                    match outcome {
                        streaming::Outcome::Deltas => {
                            if let Some(delta) = this.pending.pop_front() {
                                return Poll::Ready(Some(Ok(delta)));
                            }
                        }
                        streaming::Outcome::End => {
                            this.state = State::Done;
                            return Poll::Ready(None);
                        }
                        streaming::Outcome::Failed(error) => {
                            this.state = State::Done;
                            return Poll::Ready(Some(Err(error)));
                        }
                    }
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

/// An `event: error` frame (or an error object inside the stream): the provider's message,
/// as a [`ErrorKind::Model`](crate::error::ErrorKind::Model) error naming `host`.
pub(crate) fn mid_stream_error(host: &str, data: &str) -> ModelError {
    let message = serde_json::from_str::<serde_json::Value>(data)
        .ok()
        .and_then(|json| error_message(json.get("error").unwrap_or(&json)))
        .unwrap_or_else(|| excerpt(data));
    ModelError::new(
        crate::error::ErrorKind::Model,
        format!("{host} reported an error mid-stream: {message}"),
    )
}

/// Extra headers in a config's `Debug`: names only (a header may carry a credential).
pub(crate) struct RedactedHeaders<'a>(pub(crate) &'a [(String, String)]);

impl std::fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(name, _)| (name, "<redacted>")))
            .finish()
    }
}
