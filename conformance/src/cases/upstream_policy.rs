//! Reliability 11, 12 and 14 on every backend: what a run does with an answer over its
//! bound, a redirect, and an oversized response head.
//!
//! | case | terminal event |
//! |---|---|
//! | `max_output_bytes` exceeded | `run_failed` `output_too_large`, the text kept up to the bound |
//! | upstream answers 307 to another upstream | `run_failed` `upstream_status` (307) naming the `Location` without credentials; the other upstream sees no request |
//! | upstream sends a 1 MiB header | `run_failed` `response_too_large` naming the response head, not a broken connection |

use std::ops::ControlFlow;

use agent_core::error::ErrorKind;
use agent_core::model::{ScriptedModel, Turn};

use super::Outcome;
use super::errors::run_upstream;
use super::support::{agent_builder, consume};
use crate::backend::Backend;
use crate::kit::upstream::{GatedUpstream, Response, openai};

/// Reliability 11: a run whose answer grows past `max_output_bytes` fails with
/// `output_too_large`; the deltas and the partial text stop at the bound.
pub fn output_too_large(backend: &dyn Backend) -> Outcome {
    let model = ScriptedModel::new([Turn::new().text("0123456789").text("abcdefghij")]);
    let agent = agent_builder(backend)
        .model(model)
        .max_output_bytes(15)
        .build()
        .expect("agent");
    let transcript = consume(backend, &agent, "hello", |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    let (failure, partial) = transcript.assert_failed(ErrorKind::OutputTooLarge);
    assert!(
        failure.message.contains("15 bytes"),
        "output bound: the output_too_large message must name the bound (15 bytes); got {:?}",
        failure.message
    );
    assert_eq!(
        partial, "0123456789abcde",
        "output bound: the partial text must be kept up to the bound"
    );
    assert_eq!(
        transcript.text(),
        "0123456789abcde",
        "output bound: the text deltas must stop at the bound"
    );
    Outcome::passed()
}

/// Reliability 12: a 307 to another host is not followed (the request carries the key and
/// the conversation): the run fails with `upstream_status` 307, the message names the
/// `Location` without its credentials or query, and the other upstream sees nothing.
pub fn redirect_not_followed(backend: &dyn Backend) -> Outcome {
    let elsewhere = GatedUpstream::start(vec![openai::answer(&["followed"])]).expect("upstream");
    let location = format!(
        "http://user:hunter2@{}/v1/chat/completions?api_key=sk-in-query",
        elsewhere.addr()
    );
    let (transcript, upstream) = run_upstream(
        backend,
        vec![Response::new(307).header("location", location)],
        |c| c.with_api_key("sk-redirected-key"),
    );
    let (failure, partial) = transcript.assert_failed(ErrorKind::UpstreamStatus);
    assert_eq!(
        failure.status,
        Some(307),
        "redirects: a 307 must fail the run with upstream_status and status 307; got {failure:?}"
    );
    let message = &failure.message;
    assert!(
        message.contains("307") && message.contains(&elsewhere.addr().to_string()),
        "redirects: the message must name the status and where the redirect points; got {message:?}"
    );
    for secret in ["hunter2", "sk-in-query", "sk-redirected-key"] {
        assert!(
            !message.contains(secret),
            "redirects: the message must not quote credentials ({secret}); got {message:?}"
        );
    }
    assert_eq!(
        partial, "",
        "redirects: no text can have streamed from a 3xx answer"
    );
    assert_eq!(
        upstream.request_count(),
        1,
        "redirects: one request, no retry"
    );
    assert_eq!(
        elsewhere.request_count(),
        0,
        "redirects: the client followed the redirect: the other upstream received the request \
         (the conversation and the key went to another host)"
    );
    Outcome::passed()
}

/// Reliability 14: a response whose head holds a 1 MiB header is reported as an oversized
/// response head (`response_too_large`), not as a connection that broke mid-answer.
pub fn oversized_head(backend: &dyn Backend) -> Outcome {
    let padding = "a".repeat(1024 * 1024);
    let response = Response::sse()
        .header("x-padding", padding)
        .send(openai::text_chunk("never"))
        .send(openai::DONE);
    let (transcript, _upstream) = run_upstream(backend, vec![response], |c| c);
    let (failure, partial) = transcript.assert_failed(ErrorKind::ResponseTooLarge);
    assert!(
        failure.message.contains("response head"),
        "oversized head: the message must say the response head is too large; got {:?}",
        failure.message
    );
    assert_eq!(
        partial, "",
        "oversized head: no text can have streamed before the response head"
    );
    Outcome::passed()
}
