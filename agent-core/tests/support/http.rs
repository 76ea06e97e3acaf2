//! A scripted in-memory `HttpClient` and body builders, for the provider tests (OpenAI,
//! Anthropic): replies played in order, requests recorded.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use agent_core::http::{
    BodyStream, HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
};
use agent_core::runtime::{BoxFuture, SharedRuntime};
use bytes::Bytes;
use futures_core::Stream;
use futures_util::{StreamExt, stream};

/// What the fake answers to one request.
pub enum Reply {
    /// A response head, then this body.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: BodyStream,
    },
    /// `send` fails with this kind.
    Fail(HttpErrorKind),
    /// `send` never resolves.
    Hang,
}

/// An `HttpClient` that plays scripted replies in order and records the requests it got.
#[derive(Default)]
pub struct FakeClient {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<HttpRequest>>,
}

impl fmt::Debug for FakeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeClient")
            .field("replies_left", &self.replies.lock().unwrap().len())
            .finish_non_exhaustive()
    }
}

impl FakeClient {
    pub fn new(replies: impl IntoIterator<Item = Reply>) -> Arc<Self> {
        Arc::new(FakeClient {
            replies: Mutex::new(replies.into_iter().collect()),
            requests: Mutex::new(Vec::new()),
        })
    }

    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl HttpClient for FakeClient {
    fn send(&self, request: HttpRequest) -> BoxFuture<Result<HttpResponse, HttpError>> {
        self.requests.lock().unwrap().push(request);
        let reply = self.replies.lock().unwrap().pop_front();
        Box::pin(async move {
            match reply {
                Some(Reply::Respond {
                    status,
                    headers,
                    body,
                }) => Ok(HttpResponse {
                    status,
                    headers,
                    body,
                }),
                Some(Reply::Fail(kind)) => Err(HttpError::new(kind, "scripted failure")),
                Some(Reply::Hang) => std::future::pending().await,
                None => Err(HttpError::new(
                    HttpErrorKind::Connect,
                    "the script is exhausted",
                )),
            }
        })
    }
}

pub fn ok(body: BodyStream) -> Reply {
    Reply::Respond {
        status: 200,
        headers: vec![("content-type".into(), "text/event-stream".into())],
        body,
    }
}

pub fn status(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
    Reply::Respond {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: chunks([body.to_owned()]),
    }
}

/// A body made of these chunks, then the end.
pub fn chunks<I: IntoIterator<Item = S>, S: Into<Bytes>>(parts: I) -> BodyStream {
    let parts: Vec<Result<Bytes, HttpError>> = parts.into_iter().map(|p| Ok(p.into())).collect();
    Box::pin(stream::iter(parts))
}

/// A body made of these chunks, then a broken connection.
pub fn chunks_then_error(parts: Vec<String>) -> BodyStream {
    let broken = HttpError::new(HttpErrorKind::Io, "connection reset by peer");
    Box::pin(chunks(parts).chain(stream::iter([Err(broken)])))
}

/// A body made of these chunks, then nothing, forever.
pub fn chunks_then_pending(parts: Vec<String>) -> BodyStream {
    Box::pin(chunks(parts).chain(stream::pending()))
}

/// `first`, then a `: keep-alive` comment every `every`, forever.
pub fn keep_alive_forever(runtime: SharedRuntime, first: String, every: Duration) -> BodyStream {
    let rest = stream::unfold(runtime, move |runtime| async move {
        runtime.sleep(every).await;
        Some((Ok(Bytes::from_static(b": keep-alive\n\n")), runtime))
    });
    Box::pin(chunks([first]).chain(rest))
}

/// One event every `every`, `count` of them, then `[DONE]`.
pub fn paced_events(runtime: SharedRuntime, events: Vec<String>, every: Duration) -> BodyStream {
    let events: VecDeque<String> = events.into();
    Box::pin(stream::unfold(
        (runtime, events),
        move |(runtime, mut events)| async move {
            let next = events.pop_front()?;
            runtime.sleep(every).await;
            Some((Ok(Bytes::from(next)), (runtime, events)))
        },
    ))
}

/// A body that records when it is dropped.
pub struct DropFlag {
    pub inner: BodyStream,
    pub dropped: Arc<AtomicBool>,
}

impl Stream for DropFlag {
    type Item = Result<Bytes, HttpError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}
