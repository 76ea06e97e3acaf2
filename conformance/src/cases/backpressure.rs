//! Case 7: a consumer that stops reading stops the run: only a bounded number of events is
//! produced ahead of it.
//!
//! # The bounds
//!
//! * **`consume`**: the core's [`RunStream`](agent_core::agent::RunStream) produces nothing
//!   while it is not polled, so while the consumer holds event `k`, the model has produced
//!   exactly the deltas up to `k`. A backend may hand events over through a small queue;
//!   the suite allows at most [`CONSUME_MAX_AHEAD`] deltas produced beyond the one the
//!   stalled consumer holds.
//! * **server**: the server writes each frame to its socket; once the client stops reading,
//!   the kernel's buffers fill (the client's receive buffer, fixed here to 64 KiB, and the
//!   server's send buffer, which Linux autotunes up to `net.ipv4.tcp_wmem`'s maximum,
//!   4 MiB by default), the write blocks, and the run stops being polled. The suite allows
//!   at most [`SERVER_MAX_IN_FLIGHT`] bytes of frames produced but not read, and reports
//!   the measured amount.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use agent_core::event::EventKind;

use super::Outcome;
use super::support::{Server, agent_builder, consume, read_run, wait_until};
use crate::backend::Backend;
use crate::kit::watchdog::step;
use crate::kit::{GatedModel, SseClient};

/// Deltas a backend may produce beyond the one a stalled `consume` callback holds.
pub const CONSUME_MAX_AHEAD: u64 = 4;

/// How long the consumer stalls.
pub const STALL: Duration = Duration::from_millis(200);

/// Bytes of frames a server may have produced that a stalled client has not read.
pub const SERVER_MAX_IN_FLIGHT: u64 = 16 * 1024 * 1024;

/// Size of each delta in the server case.
const BIG_DELTA: usize = 16 * 1024;

/// Deltas the server case offers: 48 MiB in all, three times the allowed bound.
const BIG_DELTAS: u64 = 3 * 1024;

/// Case 7a: while the `consume` callback stalls on delta 10, at most
/// [`CONSUME_MAX_AHEAD`] further deltas are produced.
pub fn consume_bound(backend: &dyn Backend) -> Outcome {
    let model = GatedModel::ready(1000, crate::kit::numbered_delta);
    let agent = agent_builder(backend)
        .model(model.clone())
        .build()
        .expect("agent");
    let mut observed = 0u64;
    let mut ahead = None;
    let transcript = consume(backend, &agent, "flood", |event| {
        if let EventKind::TextDelta { .. } = event.kind {
            observed += 1;
            if observed == 10 {
                step("stalling the consumer on text delta 9");
                // Wait for the bound to be exceeded, or for the stall to end.
                wait_until(STALL, || model.produced() > observed + CONSUME_MAX_AHEAD);
                ahead = Some(model.produced() - observed);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    transcript.assert_contract_prefix();
    let ahead =
        ahead.unwrap_or_else(|| panic!("text delta 9 never arrived\n{}", transcript.summary()));
    assert!(
        ahead <= CONSUME_MAX_AHEAD,
        "backpressure: {ahead} deltas were produced while the consumer stalled on delta 9 \
         (allowed: {CONSUME_MAX_AHEAD})"
    );
    Outcome::passed()
        .measure("consume_events_ahead", ahead as f64)
        .note(format!(
            "{ahead} deltas produced beyond the one the stalled consumer held (allowed {CONSUME_MAX_AHEAD})"
        ))
}

/// Case 7b: a client that stops reading `/v1/runs` stops the run once the socket buffers
/// are full; the bytes in flight are measured.
pub fn server_bound(backend: &dyn Backend) -> Outcome {
    let model = GatedModel::ready(BIG_DELTAS, |k| {
        let mut text = format!("{k}:");
        text.extend(std::iter::repeat_n('x', BIG_DELTA - text.len()));
        text
    });
    let agent = agent_builder(backend)
        .model(model.clone())
        .build()
        .expect("agent");
    let server = Server::start(backend, agent);
    step("POST /v1/runs with a 64 KiB receive buffer");
    let mut client = SseClient::request(
        server.addr(),
        "POST",
        "/v1/runs",
        &[("content-type", "application/json")],
        br#"{"input":"flood"}"#,
        Some(64 * 1024),
    )
    .unwrap_or_else(|e| panic!("backpressure: POST /v1/runs failed: {e}"));
    assert_eq!(
        client.status(),
        200,
        "backpressure: POST /v1/runs must be answered 200"
    );
    let mut read_deltas = 0u64;
    read_run(&mut client, |event| {
        if let EventKind::TextDelta { .. } = event.kind {
            read_deltas += 1;
            if read_deltas == 5 {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    step("client stopped reading: waiting for the server to stop producing");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = model.produced();
    let mut stable_since = Instant::now();
    while stable_since.elapsed() < STALL {
        assert!(
            Instant::now() < deadline,
            "backpressure: the server kept producing for 10 s after the client stopped reading \
             ({} of {BIG_DELTAS} deltas of {BIG_DELTA} bytes)",
            model.produced()
        );
        std::thread::sleep(Duration::from_millis(10));
        let now = model.produced();
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    let produced = model.produced();
    let in_flight = (produced.saturating_sub(read_deltas)) * BIG_DELTA as u64;
    assert!(
        produced < BIG_DELTAS && in_flight <= SERVER_MAX_IN_FLIGHT,
        "backpressure: {produced} of {BIG_DELTAS} deltas ({} KiB unread) were produced for a \
         client that stopped reading (allowed: {} KiB)",
        in_flight / 1024,
        SERVER_MAX_IN_FLIGHT / 1024
    );
    client.close();
    step("waiting for the run to be cancelled after the stalled client left");
    assert!(
        wait_until(Duration::from_secs(5), || model.streams_dropped() == 1),
        "backpressure: the run of a client that stalled and left must be cancelled within 5 s \
         ({} deltas produced)",
        model.produced()
    );
    Outcome::passed()
        .measure("server_bytes_in_flight", in_flight as f64)
        .note(format!(
            "a client that stopped reading left {} KiB ({} events of {} KiB) produced but unread \
             (allowed {} KiB)",
            in_flight / 1024,
            produced - read_deltas,
            BIG_DELTA / 1024,
            SERVER_MAX_IN_FLIGHT / 1024
        ))
}
