//! Reliability, upstream faults: what the backend's HTTP client, the OpenAI model and the
//! agent make of an upstream that misbehaves, beyond the faults of case 8
//! ([`errors`](super::errors)). Every case here is exclusive and accounted like the
//! upstream cases of case 8: no panic anywhere in the process, every upstream connection
//! closed once the agent is dropped, threads and fds back to the baseline.
//!
//! | case | fault | documented outcome |
//! |---|---|---|
//! | `fault_trickle` | a whole answer (multibyte text included) written one byte per write | `run_completed`, every delta and the text intact |
//! | `fault_truncated_utf8` | the last frame's text cut inside a multibyte character, then the body ends | `run_completed`; the cut character becomes U+FFFD |
//! | | the body ends inside a frame, inside a multibyte character | `run_completed` with the text of the complete frames (the incomplete event is discarded, as the SSE specification says) |
//! | | the connection is cut (FIN before the end of the chunked body) inside a multibyte character | `run_failed` `upstream_reset`, the partial text kept |
//! | `fault_huge_line` | a 10 MiB SSE line (default limits: 1 MiB per line) | `run_failed` `response_too_large` with the partial text, early: the client closes the connection before the upstream could write the line, and memory stays bounded |
//! | `fault_endless_stream` | text deltas every 5 ms, forever | `run_failed` `run_timeout` (whole-run timeout set per agent) with the partial text; the upstream sees the connection close |

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use agent_core::error::ErrorKind;
use agent_core::policy::Timeouts;

use super::Outcome;
use super::accounting::{accounted, assert_upstream_closed};
use super::errors::run_upstream;
use super::support::{agent_builder, consume, openai_config, openai_model, quick_retries};
use crate::backend::Backend;
use crate::kit::resources::{self, Usage};
use crate::kit::upstream::{Action, ExchangeEnd, GatedUpstream, Response, openai};
use crate::kit::watchdog::step;

/// The length of the oversized line of [`huge_line`].
pub const HUGE_LINE_BYTES: usize = 10 * 1024 * 1024;

/// The most the resident memory may grow while a [`HUGE_LINE_BYTES`] line is refused: half
/// the line. The line is never held whole (the decoder gives up past 1 MiB), so a client
/// that buffers the body fails this bound — unless it happens to reuse memory the allocator
/// kept resident after earlier frees, which the peak cannot see: the bound is a second line
/// of evidence; the firm one is how much of the line the upstream managed to write.
pub const HUGE_LINE_PEAK_KIB: u64 = (HUGE_LINE_BYTES as u64 / 1024) / 2;

/// The whole-run timeout of [`endless_stream`].
pub const ENDLESS_RUN_TIMEOUT: Duration = Duration::from_millis(250);

/// How long the upstream waits for the client to see an exchange end.
const END_WITHIN: Duration = Duration::from_secs(5);

/// Deltas with multibyte characters (2, 3 and 4 bytes in UTF-8).
const MULTIBYTE_DELTAS: [&str; 4] = ["Grüße, ", "wörld ", "✓ ", "🦀!"];

/// Fault: a whole answer — every frame, `[DONE]` included — trickled one byte per write
/// (one HTTP chunk per byte). The run completes and every delta arrives intact, multibyte
/// characters reassembled across writes.
pub fn trickle(backend: &dyn Backend) -> Outcome {
    accounted(backend, || trickle_run(backend))
}

fn trickle_run(backend: &dyn Backend) -> Outcome {
    let mut body = String::new();
    for delta in MULTIBYTE_DELTAS {
        body.push_str(&openai::text_chunk(delta));
    }
    body.push_str(&openai::finish_chunk("stop"));
    body.push_str(&openai::usage_chunk(3, 5));
    body.push_str(openai::DONE);
    let bytes = body.len();
    let (transcript, upstream) = run_upstream(backend, vec![Response::sse().trickle(&body)], |c| {
        c.with_retry(quick_retries(2))
    });
    assert_eq!(
        transcript.text_deltas(),
        MULTIBYTE_DELTAS.to_vec(),
        "upstream faults (trickle): each frame written one byte per write must become one \
         intact text delta\n{}",
        transcript.summary()
    );
    assert_eq!(
        transcript.completed_text(),
        MULTIBYTE_DELTAS.concat(),
        "upstream faults (trickle): a trickled answer must end with run_completed and its \
         whole text\n{}",
        transcript.summary()
    );
    assert_eq!(
        upstream.request_count(),
        1,
        "upstream faults (trickle): a slow but healthy answer must not be retried"
    );
    assert_eq!(
        upstream.wait_for_end(0, END_WITHIN),
        Some(ExchangeEnd::Completed),
        "upstream faults (trickle): the upstream must see its trickled response read to the \
         end within {END_WITHIN:?}"
    );
    assert_upstream_closed(backend, &upstream);
    Outcome::passed().note(format!("{bytes} bytes trickled one per write"))
}

/// Fault: truncated UTF-8 at the end of the stream, three ways (see the module table): a cut
/// character in the last complete frame becomes U+FFFD; a body that ends inside a frame
/// drops that incomplete frame; a connection cut inside a frame fails the run with
/// `upstream_reset` and keeps the partial text. Never a panic, never a hang.
pub fn truncated_utf8(backend: &dyn Backend) -> Outcome {
    accounted(backend, || truncated_utf8_run(backend))
}

fn truncated_utf8_run(backend: &dyn Backend) -> Outcome {
    // 1. "café" whose "é" (C3 A9) lost its second byte, in a complete frame; then the body
    //    ends (no [DONE]).
    let frame = openai::text_chunk("café");
    let e_acute = frame.find('é').expect("é in the frame");
    let mut cut_char = frame.as_bytes().to_vec();
    cut_char.remove(e_acute + 1);
    let (transcript, upstream) = run_upstream(
        backend,
        vec![
            Response::sse()
                .send(openai::text_chunk("Un "))
                .send(&cut_char),
        ],
        |c| c,
    );
    assert_eq!(
        transcript.completed_text(),
        "Un caf\u{FFFD}",
        "upstream faults (truncated UTF-8): a cut character in a complete frame must become \
         U+FFFD\n{}",
        transcript.summary()
    );
    assert_upstream_closed(backend, &upstream);
    drop(upstream);

    // 2. The body ends after the first byte of "✓" (E2 9C 93), inside a frame.
    let frame = openai::text_chunk("✓ done");
    let check = frame.find('✓').expect("✓ in the frame");
    let cut_frame = &frame.as_bytes()[..check + 1];
    step("a body that ends inside a frame, inside a multibyte character");
    let (transcript, upstream) = run_upstream(
        backend,
        vec![
            Response::sse()
                .send(openai::text_chunk("Un "))
                .send(cut_frame),
        ],
        |c| c,
    );
    assert_eq!(
        transcript.completed_text(),
        "Un ",
        "upstream faults (truncated UTF-8): an incomplete last frame must be discarded\n{}",
        transcript.summary()
    );
    assert_upstream_closed(backend, &upstream);
    drop(upstream);

    // 3. The same, but the connection is cut (FIN) before the end of the chunked body.
    step("a connection cut inside a frame, inside a multibyte character");
    let (transcript, upstream) = run_upstream(
        backend,
        vec![
            Response::sse()
                .send(openai::text_chunk("Un "))
                .send(cut_frame)
                .truncate(),
        ],
        |c| c.with_retry(quick_retries(2)),
    );
    let (_, partial) = transcript.assert_failed(ErrorKind::UpstreamReset);
    assert_eq!(
        partial, "Un ",
        "upstream faults (truncated UTF-8): a connection cut inside a frame must fail with \
         upstream_reset keeping the partial text"
    );
    assert_eq!(
        upstream.request_count(),
        1,
        "upstream faults (truncated UTF-8): a cut after the first byte must not be retried"
    );
    assert_upstream_closed(backend, &upstream);
    Outcome::passed()
}

/// Fault: a [`HUGE_LINE_BYTES`] SSE line after a first delta, with the default limits
/// (1 MiB per line). The run fails with `response_too_large` and the partial text, early:
/// the client closes the connection while the upstream is still writing the line (the
/// upstream records how many bytes it managed to write), and the process's resident
/// memory grows by less than [`HUGE_LINE_PEAK_KIB`] meanwhile.
pub fn huge_line(backend: &dyn Backend) -> Outcome {
    accounted(backend, || huge_line_run(backend))
}

fn huge_line_run(backend: &dyn Backend) -> Outcome {
    let response = {
        // Built in place and moved into the plan: no large temporary is freed (the
        // allocator would keep it resident, and a buffering client could reuse it unseen).
        let mut line = Vec::with_capacity(HUGE_LINE_BYTES + 8);
        line.extend_from_slice(b"data: ");
        line.resize(HUGE_LINE_BYTES + 6, b'x');
        line.extend_from_slice(b"\n\n");
        Response::sse()
            // A small send buffer on the upstream's side, so that what it manages to write
            // is what the client read plus the client's receive buffer.
            .send_buffer(64 * 1024)
            .send(openai::text_chunk("ok "))
            .wait_gate(1, "text delta 0 to reach the consumer")
            .then(Action::Send(line))
            .send(openai::DONE)
    };
    let upstream = GatedUpstream::start([response]).expect("upstream");
    // No `with_sse_limits`: the defaults must protect.
    let model = openai_model(
        backend,
        openai_config(&upstream).with_retry(quick_retries(2)),
    );
    let agent = agent_builder(backend).model(model).build().expect("agent");
    let gate = upstream.gate();
    let peak_measured = resources::reset_peak_rss();
    let before = Usage::now();
    let transcript = consume(backend, &agent, "hello", |event| {
        if event.name() == "text_delta" {
            gate.open_next();
        }
        ControlFlow::Continue(())
    });
    let peak = resources::peak_rss_kib();
    drop(agent);
    transcript.assert_contract();
    let (_, partial) = transcript.assert_failed(ErrorKind::ResponseTooLarge);
    assert_eq!(
        partial, "ok ",
        "upstream faults (huge line): response_too_large must keep the partial text"
    );
    step("waiting for the upstream to see the connection close");
    let end = upstream.wait_for_end(0, END_WITHIN);
    let sent = upstream.bytes_sent(0);
    assert_eq!(
        end,
        Some(ExchangeEnd::ClientClosed),
        "upstream faults (huge line): the client must close the connection while the \
         upstream is still writing the \
         {HUGE_LINE_BYTES}-byte line (it wrote {sent} body bytes)"
    );
    assert!(
        sent < HUGE_LINE_BYTES as u64,
        "upstream faults (huge line): the upstream wrote {sent} body bytes: the client kept \
         reading past the limit"
    );
    assert_eq!(
        upstream.request_count(),
        1,
        "upstream faults (huge line): response_too_large after the first byte must not be \
         retried"
    );
    let mut outcome = Outcome::passed()
        .measure("huge_line_upstream_bytes_written", sent as f64)
        .note(format!(
            "the upstream wrote {} KiB of the {} KiB line before the client closed",
            sent / 1024,
            HUGE_LINE_BYTES / 1024
        ));
    match (peak_measured, before, peak) {
        (true, Some(before), Some(peak)) => {
            let growth = peak.saturating_sub(before.rss_kib);
            assert!(
                growth < HUGE_LINE_PEAK_KIB,
                "upstream faults (huge line): resident memory grew by {growth} KiB while the \
                 {} KiB line was refused \
                 (bound {HUGE_LINE_PEAK_KIB} KiB): the line was buffered",
                HUGE_LINE_BYTES / 1024
            );
            outcome = outcome
                .measure("huge_line_peak_rss_growth_kib", growth as f64)
                .note(format!(
                    "peak resident memory grew by {growth} KiB (bound {HUGE_LINE_PEAK_KIB} KiB)"
                ));
        }
        _ => outcome = outcome.note("peak resident memory not measurable here"),
    }
    assert_upstream_closed(backend, &upstream);
    outcome
}

/// Fault: a stream that never ends — a text delta every 5 ms, forever. The whole-run
/// timeout ([`ENDLESS_RUN_TIMEOUT`], set per agent with `AgentBuilder::timeouts`; the
/// inactivity timeout never fires) fails the run with `run_timeout` and the partial text,
/// and the upstream sees the connection close.
pub fn endless_stream(backend: &dyn Backend) -> Outcome {
    accounted(backend, || endless_stream_run(backend))
}

fn endless_stream_run(backend: &dyn Backend) -> Outcome {
    let tick = openai::text_chunk("tick ");
    let upstream = GatedUpstream::start([Response::sse()
        .send(&tick)
        .repeat_forever(&tick, Duration::from_millis(5))])
    .expect("upstream");
    let model = openai_model(
        backend,
        openai_config(&upstream).with_retry(quick_retries(2)),
    );
    let agent = agent_builder(backend)
        .model(model)
        .timeouts(Timeouts {
            connect: Some(Duration::from_secs(5)),
            first_byte: Some(Duration::from_secs(10)),
            inactivity: Some(Duration::from_secs(10)),
            run: Some(ENDLESS_RUN_TIMEOUT),
        })
        .build()
        .expect("agent");
    let started = Instant::now();
    let transcript = consume(backend, &agent, "go on", |_| ControlFlow::Continue(()));
    let elapsed = started.elapsed();
    drop(agent);
    transcript.assert_contract();
    let (_, partial) = transcript.assert_failed(ErrorKind::RunTimeout);
    assert!(
        !partial.is_empty() && partial == transcript.text(),
        "upstream faults (endless stream): run_timeout must keep every delta received as \
         the partial text ({:?} vs {:?})",
        partial,
        transcript.text()
    );
    assert!(
        elapsed >= ENDLESS_RUN_TIMEOUT,
        "upstream faults (endless stream): the run failed after {elapsed:?}, before its \
         run timeout ({ENDLESS_RUN_TIMEOUT:?})"
    );
    step("waiting for the upstream to see the timed-out request close");
    assert_eq!(
        upstream.wait_for_end(0, END_WITHIN),
        Some(ExchangeEnd::ClientClosed),
        "upstream faults (endless stream): a run that hit run_timeout must close its \
         upstream request within {END_WITHIN:?}"
    );
    assert_eq!(
        upstream.request_count(),
        1,
        "upstream faults (endless stream): run_timeout must not be retried"
    );
    assert_upstream_closed(backend, &upstream);
    Outcome::passed().note(format!(
        "run_timeout after {} ms with {} deltas",
        elapsed.as_millis(),
        transcript.count("text_delta")
    ))
}
