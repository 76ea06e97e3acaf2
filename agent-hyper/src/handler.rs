//! [`handle_request`]: one HTTP request, hyper's types on the outside, the
//! [`AgentService`] inside.

use std::fmt;
use std::time::Duration;

use agent_core::runtime::SharedRuntime;
use agent_core::server::{AgentService, ApiError, ApiResponse};
use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use http_body::Body;
use http_body_util::BodyExt;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::AgentBody;

/// After refusing a body as too large, keep reading and discarding at most this much more
/// of it (so that the client reads the answer instead of a connection reset), for at most
/// [`DRAIN_TIME`]; then the connection closes.
const DRAIN_MAX_BYTES: usize = 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Answer one request with `service`: the request body is read within
/// [`ServerConfig::max_body_bytes`](agent_core::server::ServerConfig::max_body_bytes) and
/// [`body_read_timeout`](agent_core::server::ServerConfig::body_read_timeout), then method,
/// path, headers and body go to [`AgentService::handle`].
///
/// The answers it gives before the service sees the request are the same on every backend
/// (each is an [`ApiError`] with its JSON body, and `Connection: close`):
///
/// * a `Transfer-Encoding` other than exactly `chunked` → `501`
///   ([`ApiError::unsupported_transfer_encoding`]);
/// * a body over the limit → `413` ([`ApiError::payload_too_large`]), at once when
///   `Content-Length` says so (before `100 Continue`, before a byte is read), else as soon as
///   the chunked body crosses it; the rest is read and discarded in the background (at most
///   1 MiB, for at most 2 s) so that the client sees the answer rather than a reset;
/// * a body that does not arrive within the body read timeout → `408`
///   ([`ApiError::body_timeout`]);
/// * a body whose framing breaks (bad chunk size, connection closed midway) → `400`
///   ([`ApiError::invalid_body`]); hyper's wording of the cause goes to the log only.
///
/// Generic over the request body so that it serves hyper's `Incoming` as well as an axum
/// `Body` when the API is embedded in an axum application.
///
/// Every answer is logged by [`agent_core::http::log_request`] (method, path, status, run
/// id, duration), the same line as on the other backends.
pub async fn handle_request<B>(service: &AgentService, request: Request<B>) -> Response<AgentBody>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: fmt::Display,
{
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = answer(service, request).await;
    let run_id = response
        .headers()
        .get("x-run-id")
        .and_then(|v| v.to_str().ok());
    agent_core::http::log_request(
        method.as_str(),
        &path,
        response.status().as_u16(),
        run_id,
        started.elapsed(),
    );
    response
}

async fn answer<B>(service: &AgentService, request: Request<B>) -> Response<AgentBody>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: fmt::Display,
{
    let (parts, body) = request.into_parts();
    if let Some(refusal) = check_transfer_encoding(&parts.headers) {
        return refusal;
    }
    let config = service.config();
    let limit = config.max_body_bytes;
    let runtime = service.agent().runtime().clone();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let expects_continue = parts
        .headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
    let read = read_body(body, limit, declared);
    let timeout = config.body_read_timeout;
    let outcome = if timeout.is_zero() {
        read.await
    } else {
        let deadline = runtime.sleep(timeout);
        futures_util::select_biased! {
            outcome = read.fuse() => outcome,
            () = deadline.fuse() => BodyOutcome::TimedOut,
        }
    };
    let body = match outcome {
        BodyOutcome::Complete(body) => body,
        BodyOutcome::TooLarge { rest, started } => {
            // A client waiting for `100 Continue` sends no body when refused before it.
            if started || !expects_continue {
                drain_in_background(&runtime, rest);
            }
            return closing(ApiError::payload_too_large(limit));
        }
        BodyOutcome::Broken(cause) => {
            tracing::debug!(%cause, "could not read a request body");
            return closing(ApiError::invalid_body());
        }
        BodyOutcome::TimedOut => {
            tracing::debug!(?timeout, "a request body did not arrive in time");
            return closing(ApiError::body_timeout(timeout));
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let headers: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter_map(|(name, value)| value.to_str().ok().map(|value| (name.as_str(), value)))
        .collect();
    let response = service
        .handle(parts.method.as_str(), path, &headers, &body)
        .await;
    into_hyper(response)
}

/// `Some(501)` when the request body uses a transfer coding other than exactly `chunked`.
fn check_transfer_encoding(headers: &hyper::HeaderMap) -> Option<Response<AgentBody>> {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let first = codings.next()?;
    let only_chunked = first.eq_ignore_ascii_case("chunked") && codings.next().is_none();
    (!only_chunked).then(|| closing(ApiError::unsupported_transfer_encoding()))
}

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, String>;

enum BodyOutcome {
    Complete(Vec<u8>),
    /// Over the limit: the part of the body not read yet, and whether reading had started
    /// (hyper sends `100 Continue` on the first read).
    TooLarge {
        rest: BoxBody,
        started: bool,
    },
    Broken(String),
    TimedOut,
}

async fn read_body<B>(body: B, limit: usize, declared: Option<u64>) -> BodyOutcome
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: fmt::Display,
{
    let mut body: BoxBody = body
        .map_frame(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
        .map_err(|err| err.to_string())
        .boxed_unsync();
    if declared.is_some_and(|len| len > limit as u64) {
        return BodyOutcome::TooLarge {
            rest: body,
            started: false,
        };
    }
    let mut buffer = Vec::with_capacity(declared.map_or(0, |len| len as usize));
    loop {
        match body.frame().await {
            None => return BodyOutcome::Complete(buffer),
            Some(Err(err)) => return BodyOutcome::Broken(err),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers
                };
                if buffer.len() + data.len() > limit {
                    return BodyOutcome::TooLarge {
                        rest: body,
                        started: true,
                    };
                }
                buffer.extend_from_slice(&data);
            }
        }
    }
}

/// Read and discard what is left of a refused body, bounded by [`DRAIN_MAX_BYTES`] and
/// [`DRAIN_TIME`]. While the body is alive hyper keeps reading the request, so it closes the
/// connection only after the drain: the client sees the answer, not a reset.
fn drain_in_background(runtime: &SharedRuntime, mut rest: BoxBody) {
    let deadline = runtime.sleep(DRAIN_TIME);
    runtime.spawn(Box::pin(async move {
        let drain = async {
            let mut drained = 0usize;
            while let Some(Ok(frame)) = rest.frame().await {
                drained += frame.data_ref().map_or(0, Bytes::len);
                if drained > DRAIN_MAX_BYTES {
                    break;
                }
            }
        };
        futures_util::select_biased! {
            () = drain.fuse() => {},
            () = deadline.fuse() => {},
        }
    }));
}

/// An error answer after which the connection closes.
fn closing(error: ApiError) -> Response<AgentBody> {
    let mut response = into_hyper(error.into_response());
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The service's answer in hyper's types (for an answer built outside
/// [`handle_request`], such as [`agent_core::server::sse_response`] in a route of your own).
pub fn into_hyper(response: ApiResponse) -> Response<AgentBody> {
    let mut builder = Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(*name, value.as_str());
    }
    builder
        .body(AgentBody::from(response.body))
        .unwrap_or_else(|err| {
            tracing::error!(%err, "could not build an HTTP response");
            let error = ApiError {
                status: 500,
                code: "internal",
                message: "could not build the response".into(),
            };
            let mut fallback = Response::new(AgentBody::full(error.body()));
            *fallback.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            fallback.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            fallback
        })
}
