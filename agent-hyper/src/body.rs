//! [`AgentBody`]: the body of every response the agent server sends.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use agent_core::server::{ApiBody, ResponseBody};
use bytes::Bytes;
use futures_core::Stream;
use http_body::{Body, Frame, SizeHint};

/// A response body: complete bytes, or the frames of a running stream, each handed to hyper
/// the moment the run produces it (hyper writes and flushes every frame of a chunked body as
/// it gets it).
///
/// Dropping it drops the run's stream, which cancels the run: that is how a client that goes
/// away cancels its run.
///
/// ```
/// use http_body::Body;
/// let body = agent_hyper::AgentBody::full("ok");
/// assert_eq!(body.size_hint().exact(), Some(2));
/// ```
#[derive(Debug)]
pub struct AgentBody {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Full(Option<Bytes>),
    Stream(ResponseBody),
}

impl AgentBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        AgentBody {
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        AgentBody {
            inner: Inner::Full(None),
        }
    }

    /// The frames of a streamed answer.
    pub fn stream(stream: ResponseBody) -> Self {
        AgentBody {
            inner: Inner::Stream(stream),
        }
    }
}

impl From<ApiBody> for AgentBody {
    fn from(body: ApiBody) -> Self {
        match body {
            ApiBody::Full(bytes) => AgentBody::full(bytes),
            ApiBody::Stream(stream) => AgentBody::stream(stream),
        }
    }
}

impl Body for AgentBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.inner {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(stream) => Pin::new(stream)
                .poll_next(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.inner, Inner::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Stream(_) => SizeHint::default(),
        }
    }
}
