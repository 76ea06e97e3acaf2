//! Reliability, soak: [`SEQUENTIAL_RUNS`] sequential and [`CONCURRENT_RUNS`] concurrent runs
//! through the backend's server, from raw TCP clients of the kit, with random client
//! disconnects (a seeded [`XorShift`], so every run of the suite and every backend sees the
//! same plan): zero panics anywhere in the process, every run whose client stayed completes,
//! every model stream is dropped, the server's running streams come back to 0, and threads,
//! open sockets (fds) and resident memory come back to their baseline.
//!
//! # How
//!
//! Both cases are exclusive (they run alone in the process) and keep their server running:
//! the baseline is taken after a warm-up with the same shape (100 sequential runs; one full
//! round of 200 concurrent runs), so that what the backend keeps by design (warm pools,
//! allocator arenas, cached thread stacks) is already there, and the check is the steady
//! state: after the measured runs, the same server must be back to the baseline within
//! [`RELEASE_WITHIN`](super::accounting::RELEASE_WITHIN): at most
//! [`THREAD_TOLERANCE`](super::accounting::THREAD_TOLERANCE) extra thread, no extra fd,
//! and at most [`RSS_MARGIN_KIB`] more resident memory (the allocator does not give every
//! freed page back). One client in [`DISCONNECT_ONE_IN`] leaves: after reading a random
//! number of frames (closing, or resetting the connection), right after sending its
//! request, or in the middle of writing it.
//!
//! * **sequential**: a scripted answer of four deltas (8 frames per run), one run after the
//!   other;
//! * **concurrent**: all 200 runs are open at once — each streams one delta and then waits
//!   at a barrier — which is exactly the server's `max_concurrent_runs`, so one more request
//!   gets 503; early leavers go while their run waits (the server must notice an idle client
//!   leaving), the barrier opens, the others read on, some leaving late.
//!
//! The sizes are the issue's; on two cores in a debug build each case takes a few seconds.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use agent_core::error::{ErrorKind, ModelError};
use agent_core::model::{
    FinishReason, Model, ModelContext, ModelDelta, ModelRequest, ModelStream, ScriptedModel, Turn,
};
use agent_core::runtime::{BoxFuture, SharedRuntime};
use futures_core::Stream;

use super::Outcome;
use super::accounting::{Accounting, LEAK_TOLERANCE};
use super::support::{
    Server, WAIT, agent_builder, read_run, read_run_into, server_config, wait_until,
};
use crate::backend::Backend;
use crate::kit::client::http_request;
use crate::kit::resources::Tolerance;
use crate::kit::watchdog::step;
use crate::kit::{CountedModel, Gate, SseClient, StreamCounts, Transcript, XorShift};

/// Sequential runs measured (after 100 warm-up runs).
pub const SEQUENTIAL_RUNS: usize = 1000;

/// Concurrent runs measured (after a warm-up round of as many).
pub const CONCURRENT_RUNS: usize = 200;

/// One client in this many disconnects.
pub const DISCONNECT_ONE_IN: u64 = 4;

/// Resident memory the process may keep above its baseline after a soak, in KiB (16 MiB).
pub const RSS_MARGIN_KIB: u64 = 16 * 1024;

/// The seed of the disconnect plan.
pub const SOAK_SEED: u64 = 0x50A4_5EED;

/// Sequential warm-up runs.
const SEQUENTIAL_WARM_UP: usize = 100;

/// The text of a sequential run.
const SEQUENTIAL_TEXT: &str = "The quick brown fox.";

/// Frames of a completed sequential run: run_started, model_request_started, four deltas,
/// model_request_completed, run_completed.
const SEQUENTIAL_FRAMES: u64 = 8;

/// Frames of a concurrent run before the barrier: run_started, model_request_started, the
/// first delta.
const BEFORE_BARRIER: usize = 3;

/// Frames of a concurrent run after the barrier: two deltas, model_request_completed,
/// run_completed.
const AFTER_BARRIER: u64 = 4;

/// The text of a concurrent run.
const CONCURRENT_TEXT: &str = "a b c";

/// The soak's tolerance: the leak tolerance plus [`RSS_MARGIN_KIB`].
const SOAK_TOLERANCE: Tolerance = Tolerance {
    rss_kib: Some(RSS_MARGIN_KIB),
    ..LEAK_TOLERANCE
};

/// What one client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Read the whole run.
    Complete,
    /// Read this many frames, then close (FIN).
    CloseAfter(u64),
    /// Read this many frames, then reset the connection (RST).
    ResetAfter(u64),
    /// Send the request, close without reading anything.
    CloseAfterRequest,
    /// Send half of the request, close.
    CloseMidRequest,
}

impl Plan {
    fn draw(rng: &mut XorShift, frames: u64) -> Plan {
        if !rng.chance(1, DISCONNECT_ONE_IN) {
            return Plan::Complete;
        }
        match rng.below(4) {
            0 => Plan::CloseAfter(rng.below(frames)),
            1 => Plan::ResetAfter(rng.below(frames)),
            2 => Plan::CloseAfterRequest,
            _ => Plan::CloseMidRequest,
        }
    }
}

/// What one client of the concurrent soak does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConcurrentPlan {
    /// Read the whole run.
    Complete,
    /// Leave while the run waits at the barrier (reset the connection, or close it).
    AtBarrier { reset: bool },
    /// Read this many frames after the barrier opened, then leave.
    After { frames: u64, reset: bool },
}

impl ConcurrentPlan {
    fn draw(rng: &mut XorShift) -> ConcurrentPlan {
        if !rng.chance(1, DISCONNECT_ONE_IN) {
            return ConcurrentPlan::Complete;
        }
        let reset = rng.chance(1, 2);
        if rng.chance(1, 2) {
            ConcurrentPlan::AtBarrier { reset }
        } else {
            ConcurrentPlan::After {
                frames: rng.below(AFTER_BARRIER),
                reset,
            }
        }
    }
}

/// Counts of what the clients did.
#[derive(Debug, Default)]
struct Tally {
    completed: usize,
    closed: usize,
    reset: usize,
    at_barrier: usize,
    left_after_request: usize,
    left_mid_request: usize,
}

impl Tally {
    fn describe(&self) -> String {
        let mut parts = vec![format!("{} completed", self.completed)];
        if self.closed + self.reset > 0 {
            parts.push(format!(
                "{} left after some frames ({} with a FIN, {} with a RST)",
                self.closed + self.reset,
                self.closed,
                self.reset
            ));
        }
        if self.at_barrier > 0 {
            parts.push(format!(
                "{} of them while their run waited at the barrier",
                self.at_barrier
            ));
        }
        if self.left_after_request > 0 {
            parts.push(format!(
                "{} left right after sending the request",
                self.left_after_request
            ));
        }
        if self.left_mid_request > 0 {
            parts.push(format!(
                "{} left in the middle of the request",
                self.left_mid_request
            ));
        }
        parts.join("; ")
    }

    fn leave(&mut self, client: SseClient, reset: bool) {
        if reset {
            reset_on_drop(&client);
            drop(client);
            self.reset += 1;
        } else {
            client.close();
            self.closed += 1;
        }
    }
}

fn run_request(addr: SocketAddr) -> Vec<u8> {
    let body = br#"{"input":"go"}"#;
    let mut request = format!(
        "POST /v1/runs HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connecting to the server failed: {e}"));
    let _ = stream.set_nodelay(true);
    stream
}

/// Reset the connection when dropped (linger 0).
fn reset_on_drop(client: &SseClient) {
    let _ = socket2::SockRef::from(client.socket()).set_linger(Some(Duration::ZERO));
}

/// One sequential run following `plan`.
fn sequential_run(addr: SocketAddr, plan: Plan, tally: &mut Tally) {
    let request = run_request(addr);
    match plan {
        Plan::CloseAfterRequest => {
            let mut stream = connect(addr);
            let _ = stream.write_all(&request);
            drop(stream);
            tally.left_after_request += 1;
        }
        Plan::CloseMidRequest => {
            let mut stream = connect(addr);
            let _ = stream.write_all(&request[..request.len() / 2]);
            drop(stream);
            tally.left_mid_request += 1;
        }
        Plan::Complete => {
            let mut client = post(addr, &request);
            let transcript = read_run(&mut client, |_| ControlFlow::Continue(()));
            transcript.assert_contract();
            assert_eq!(
                transcript.completed_text(),
                SEQUENTIAL_TEXT,
                "soak (sequential): a run whose client stays must complete with the whole \
                 answer, whatever earlier clients did"
            );
            client.close();
            tally.completed += 1;
        }
        Plan::CloseAfter(frames) | Plan::ResetAfter(frames) => {
            let mut client = post(addr, &request);
            read_frames(&mut client, &mut Transcript::new(), frames);
            tally.leave(client, matches!(plan, Plan::ResetAfter(_)));
        }
    }
}

fn post(addr: SocketAddr, request: &[u8]) -> SseClient {
    let client = SseClient::send_raw(connect(addr), request)
        .unwrap_or_else(|e| panic!("soak: POST /v1/runs failed: {e}"));
    assert_eq!(
        client.status(),
        200,
        "soak: POST /v1/runs must be answered 200"
    );
    client
}

/// Read `n` frames into `transcript` (fewer if the run ends first).
fn read_frames(client: &mut SseClient, transcript: &mut Transcript, n: u64) {
    if n == 0 {
        return;
    }
    let mut read = 0;
    read_run_into(client, transcript, |_| {
        read += 1;
        if read == n {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
}

/// Soak: [`SEQUENTIAL_RUNS`] sequential runs through the server with random disconnects.
pub fn sequential(backend: &dyn Backend) -> Outcome {
    let counted = CountedModel::new(sequential_model());
    let model = counted.counts();
    let agent = agent_builder(backend)
        .model(counted)
        .build()
        .expect("agent");
    let server = Server::start(backend, agent);
    let addr = server.addr();
    let mut rng = XorShift::new(SOAK_SEED);
    step(format!("warm-up: {SEQUENTIAL_WARM_UP} runs"));
    let mut warm_up = Tally::default();
    for _ in 0..SEQUENTIAL_WARM_UP {
        sequential_run(addr, Plan::draw(&mut rng, SEQUENTIAL_FRAMES), &mut warm_up);
    }
    settle_runs(&server, &model);
    let accounting = Accounting::start();
    let started = Instant::now();
    let mut tally = Tally::default();
    for i in 0..SEQUENTIAL_RUNS {
        step(format!("sequential run {} of {SEQUENTIAL_RUNS}", i + 1));
        sequential_run(addr, Plan::draw(&mut rng, SEQUENTIAL_FRAMES), &mut tally);
    }
    let elapsed = started.elapsed();
    let mut outcome = Outcome::passed();
    if let Some(note) = settle_runs(&server, &model) {
        outcome = outcome.note(note);
    }
    let note = accounting.finish(
        backend,
        &format!("{SEQUENTIAL_RUNS} sequential runs"),
        SOAK_TOLERANCE,
    );
    step("one more run on the soaked server");
    sequential_run(addr, Plan::Complete, &mut Tally::default());
    outcome
        .measure("soak_sequential_ms", elapsed.as_secs_f64() * 1000.0)
        .note(format!(
            "{SEQUENTIAL_RUNS} runs in {} ms: {}",
            elapsed.as_millis(),
            tally.describe()
        ))
        .note(note)
}

/// Wait until every model stream started was dropped and (if reported) no run is streaming.
/// `Some(note)` when the backend does not report running streams.
fn settle_runs(server: &Server, model: &StreamCounts) -> Option<String> {
    step("waiting for every run to end (model streams dropped, no stream running)");
    let started = model.started() as usize;
    assert!(
        model.dropped().wait_for(started, WAIT),
        "soak: {} of {started} model streams dropped {WAIT:?} after the last client: runs \
         were \
         left running",
        model.dropped().dropped()
    );
    match server.wait_for_no_running_streams(WAIT) {
        Ok(true) => None,
        Ok(false) => Some("running_streams not reported by this backend".into()),
        Err(n) => panic!("{n} streams still running on the server after every client left"),
    }
}

/// Soak: [`CONCURRENT_RUNS`] runs open at once through the server, with random disconnects
/// before and after the barrier.
pub fn concurrent(backend: &dyn Backend) -> Outcome {
    let barrier = BarrierModel::new();
    let counted = CountedModel::new(barrier.clone());
    let model = counted.counts();
    let agent = agent_builder(backend)
        .model(counted)
        .build()
        .expect("agent");
    let config = server_config().with_max_concurrent_runs(CONCURRENT_RUNS);
    let server = Server::start_with(backend, agent, config);
    let _cleanup = OpenBarrierOnDrop(barrier.gate.clone());
    let mut rng = XorShift::new(SOAK_SEED);
    step("warm-up: a round of concurrent runs");
    concurrent_round(&server, &model, &barrier, 1, &mut rng);
    settle_runs(&server, &model);
    let accounting = Accounting::start();
    let started = Instant::now();
    let tally = concurrent_round(&server, &model, &barrier, 2, &mut rng);
    let elapsed = started.elapsed();
    let mut outcome = Outcome::passed();
    if let Some(note) = settle_runs(&server, &model) {
        outcome = outcome.note(note);
    }
    let note = accounting.finish(
        backend,
        &format!("{CONCURRENT_RUNS} concurrent runs"),
        SOAK_TOLERANCE,
    );
    outcome
        .measure("soak_concurrent_ms", elapsed.as_secs_f64() * 1000.0)
        .note(format!(
            "{CONCURRENT_RUNS} runs at once in {} ms: {}",
            elapsed.as_millis(),
            tally.describe()
        ))
        .note(note)
}

fn concurrent_round(
    server: &Server,
    model: &StreamCounts,
    barrier: &BarrierModel,
    round: u64,
    rng: &mut XorShift,
) -> Tally {
    let addr = server.addr();
    barrier.start_round(round);
    let started_before = model.started();
    let dropped_before = model.dropped().dropped();
    let request = run_request(addr);

    step(format!("opening {CONCURRENT_RUNS} runs at once"));
    let mut clients: Vec<(SseClient, Transcript)> = Vec::with_capacity(CONCURRENT_RUNS);
    for _ in 0..CONCURRENT_RUNS {
        clients.push((post(addr, &request), Transcript::new()));
    }
    for (i, (client, transcript)) in clients.iter_mut().enumerate() {
        step(format!("reading the frames before the barrier of run {i}"));
        read_frames(client, transcript, BEFORE_BARRIER as u64);
        assert_eq!(
            transcript.len(),
            BEFORE_BARRIER,
            "soak (concurrent): run {i} ended before the barrier\n{}",
            transcript.summary()
        );
    }
    assert_eq!(
        model.started() - started_before,
        CONCURRENT_RUNS as u64,
        "soak (concurrent): every one of the {CONCURRENT_RUNS} runs must reach the model"
    );
    assert_eq!(
        model.dropped().dropped(),
        dropped_before,
        "soak (concurrent): {CONCURRENT_RUNS} runs must be open at once (none may end before \
         the barrier)"
    );

    step("one request over max_concurrent_runs");
    let over = http_request(
        addr,
        "POST",
        "/v1/runs",
        &[("content-type", "application/json")],
        br#"{"input":"one too many"}"#,
        WAIT,
    )
    .expect("POST over the limit");
    assert_eq!(
        over.status, 503,
        "soak (concurrent): a run over max_concurrent_runs ({CONCURRENT_RUNS}) must get 503"
    );

    // The plan: early leavers go now, while their run waits at the barrier.
    let mut tally = Tally::default();
    let mut early = 0;
    let mut remaining = Vec::with_capacity(CONCURRENT_RUNS);
    for (client, transcript) in clients {
        match ConcurrentPlan::draw(rng) {
            ConcurrentPlan::AtBarrier { reset } => {
                early += 1;
                tally.at_barrier += 1;
                tally.leave(client, reset);
            }
            plan => remaining.push((client, transcript, plan)),
        }
    }
    step(format!(
        "waiting for the server to cancel the {early} runs whose idle client left"
    ));
    assert!(
        wait_until(WAIT, || model.dropped().dropped() >= dropped_before + early),
        "soak (concurrent): the server cancelled {} of the {early} runs whose client left \
         while the run waited \
         at the barrier (an idle client leaving must cancel its run)",
        model.dropped().dropped() - dropped_before
    );

    barrier.open(round);
    for (i, (mut client, mut transcript, plan)) in remaining.into_iter().enumerate() {
        step(format!("reading run {i} after the barrier ({plan:?})"));
        match plan {
            ConcurrentPlan::Complete => {
                read_run_into(&mut client, &mut transcript, |_| ControlFlow::Continue(()));
                transcript.assert_contract();
                assert_eq!(
                    transcript.completed_text(),
                    CONCURRENT_TEXT,
                    "soak (concurrent): run {i}, whose client stays, must complete with the \
                     whole answer"
                );
                client.close();
                tally.completed += 1;
            }
            ConcurrentPlan::After { frames, reset } => {
                read_frames(&mut client, &mut transcript, frames);
                tally.leave(client, reset);
            }
            ConcurrentPlan::AtBarrier { .. } => unreachable!("left at the barrier"),
        }
    }
    tally
}

/// Opens every round of the barrier when dropped, so that no run outlives a failing case.
struct OpenBarrierOnDrop(Arc<Gate>);

impl Drop for OpenBarrierOnDrop {
    fn drop(&mut self) {
        self.0.open_all();
    }
}

/// How long a run waits at the barrier before its stream fails.
const BARRIER_DEADLINE: Duration = Duration::from_secs(10);

/// A model that streams `"a "`, waits until the barrier of its round is open, then streams
/// `"b "` and `"c"`. A stream belongs to the round that was current when it started.
#[derive(Clone, Debug)]
struct BarrierModel {
    gate: Arc<Gate>,
    round: Arc<AtomicU64>,
}

impl BarrierModel {
    fn new() -> Self {
        BarrierModel {
            gate: Gate::new("soak barrier"),
            round: Arc::new(AtomicU64::new(1)),
        }
    }

    fn start_round(&self, round: u64) {
        self.round.store(round, Ordering::Release);
    }

    fn open(&self, round: u64) {
        self.gate.open_to(round);
    }
}

impl Model for BarrierModel {
    fn name(&self) -> &str {
        "barrier"
    }

    fn stream(&self, _request: ModelRequest, cx: ModelContext) -> ModelStream {
        Box::pin(BarrierStream {
            gate: self.gate.clone(),
            round: self.round.load(Ordering::Acquire),
            runtime: cx.runtime,
            next: 0,
            timer: None,
        })
    }
}

struct BarrierStream {
    gate: Arc<Gate>,
    round: u64,
    runtime: SharedRuntime,
    next: u8,
    timer: Option<BoxFuture<()>>,
}

impl Stream for BarrierStream {
    type Item = Result<ModelDelta, ModelError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let delta = match this.next {
            0 => ModelDelta::Text("a ".into()),
            1 => {
                if this.gate.poll_open(this.round, cx).is_pending() {
                    let timer = this
                        .timer
                        .get_or_insert_with(|| this.runtime.sleep(BARRIER_DEADLINE));
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.next = 4;
                    return Poll::Ready(Some(Err(ModelError::new(
                        ErrorKind::Model,
                        format!("the soak barrier stayed shut for {BARRIER_DEADLINE:?}"),
                    ))));
                }
                ModelDelta::Text("b ".into())
            }
            2 => ModelDelta::Text("c".into()),
            3 => ModelDelta::Finish(FinishReason::Stop),
            _ => return Poll::Ready(None),
        };
        this.next += 1;
        Poll::Ready(Some(Ok(delta)))
    }
}

/// The sequential soak's model: the same four deltas for every request.
fn sequential_model() -> ScriptedModel {
    ScriptedModel::from_fn(|_, _| {
        Turn::new()
            .text("The ")
            .text("quick ")
            .text("brown ")
            .text("fox.")
    })
}
