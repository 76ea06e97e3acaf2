//! Helpers shared by the cases.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use agent_core::agent::{Agent, AgentBuilder};
use agent_core::event::{Event, EventKind};
use agent_core::model::{OpenAiConfig, OpenAiModel};
use agent_core::policy::{RetryPolicy, Timeouts};
use agent_core::server::ServerConfig;
use agent_core::sse::SseEvent;

use crate::backend::{Backend, RunningServer};
use crate::kit::watchdog::step;
use crate::kit::{Gate, GatedUpstream, SseClient, Transcript};

/// The longest the suite waits for any single thing (a frame, a close, a drop).
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// An agent builder on the backend's runtime.
pub(crate) fn agent_builder(backend: &dyn Backend) -> AgentBuilder {
    Agent::builder().runtime(backend.runtime())
}

/// An OpenAI configuration for `upstream`: no retries, generous timeouts.
pub(crate) fn openai_config(upstream: &GatedUpstream) -> OpenAiConfig {
    OpenAiConfig::new(upstream.base_url(), "conformance-model")
        .with_retry(RetryPolicy::none())
        .with_timeouts(Timeouts {
            connect: Some(Duration::from_secs(5)),
            first_byte: Some(WAIT),
            inactivity: Some(WAIT),
            run: None,
        })
}

/// An OpenAI model speaking through the backend's HTTP client.
pub(crate) fn openai_model(backend: &dyn Backend, config: OpenAiConfig) -> OpenAiModel {
    OpenAiModel::new(config, backend.http_client())
}

/// A retry policy with short backoffs.
pub(crate) fn quick_retries(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(1),
    }
}

/// Run `agent` through the backend's `consume`, recording a [`Transcript`].
///
/// `on_event` sees each event before it is recorded; returning `Break` stops the run. A
/// contract violation also stops it. A callback after `Break` is noted as a violation.
pub(crate) fn consume(
    backend: &dyn Backend,
    agent: &Agent,
    input: &str,
    mut on_event: impl FnMut(&Event) -> ControlFlow<()>,
) -> Transcript {
    let mut transcript = Transcript::new();
    let mut stopped = false;
    step("waiting for the first event (run_started)");
    backend.consume(agent, input, &mut |event| {
        if stopped {
            transcript.note_violation(format!(
                "on_event was called again (seq {}, {}) after it returned Break",
                event.seq,
                event.name()
            ));
            return ControlFlow::Break(());
        }
        step(format!(
            "handling event seq {} ({}); next: the event after it",
            event.seq,
            event.name()
        ));
        let flow = on_event(&event);
        let recorded = transcript.record(event);
        if flow.is_break() || recorded.is_break() {
            stopped = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    transcript
}

/// [`consume`], opening `gate` once per text delta observed (lockstep).
pub(crate) fn consume_lockstep(
    backend: &dyn Backend,
    agent: &Agent,
    input: &str,
    gate: &Gate,
) -> Transcript {
    let mut deltas = 0u64;
    consume(backend, agent, input, |event| {
        if let EventKind::TextDelta { .. } = event.kind {
            deltas += 1;
            step(format!(
                "waiting for text delta {deltas} (text delta {} was observed and released it)",
                deltas - 1
            ));
            gate.open_next();
        }
        ControlFlow::Continue(())
    })
}

/// The median of `values` (0 when empty).
pub(crate) fn median_ms(values: &mut [Duration]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort();
    values[values.len() / 2].as_secs_f64() * 1000.0
}

/// Milliseconds between two instants.
pub(crate) fn ms_between(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

/// Poll `condition` every millisecond until it holds or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The server config of the suite: `127.0.0.1:0`, keep-alive comments rare enough not to
/// interleave with the cases' frames, and no detach grace: a client leaving `/v1/runs`
/// cancels its run at once, as the disconnect, leak and soak cases expect (the `runs_*`
/// cases set a grace to resume within).
pub(crate) fn server_config() -> ServerConfig {
    ServerConfig::default()
        .with_addr(SocketAddr::from(([127, 0, 0, 1], 0)))
        .with_keep_alive(Duration::from_secs(60))
        .with_run_detach_grace(Duration::ZERO)
}

/// A running server, shut down when dropped.
pub(crate) struct Server {
    inner: Option<Box<dyn RunningServer>>,
    addr: SocketAddr,
}

impl Server {
    pub(crate) fn start(backend: &dyn Backend, agent: Agent) -> Server {
        Self::start_with(backend, agent, server_config())
    }

    pub(crate) fn start_with(backend: &dyn Backend, agent: Agent, config: ServerConfig) -> Server {
        step("starting the backend's server");
        let inner = backend.start_server(agent, config);
        let addr = inner.addr();
        assert!(
            addr.ip().is_loopback() && addr.port() != 0,
            "server start: the server must listen on 127.0.0.1 with the port it was given \
             (0 = any), got {addr}"
        );
        Server {
            inner: Some(inner),
            addr,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's running streams, if the backend reports them.
    pub(crate) fn running_streams(&self) -> Option<usize> {
        self.inner.as_ref().and_then(|s| s.running_streams())
    }

    /// Wait (at most `timeout`) until the server reports no running stream; `Ok(true)` when
    /// it does, `Ok(false)` when the backend does not report them, `Err(n)` with the count
    /// still running at the deadline.
    pub(crate) fn wait_for_no_running_streams(&self, timeout: Duration) -> Result<bool, usize> {
        let mut last = None;
        let done = wait_until(timeout, || {
            last = self.running_streams();
            last.is_none_or(|n| n == 0)
        });
        match (done, last) {
            (_, None) => Ok(false),
            (true, Some(_)) => Ok(true),
            (false, Some(n)) => Err(n),
        }
    }

    /// Take the server out, to shut it down elsewhere.
    pub(crate) fn take(&mut self) -> Box<dyn RunningServer> {
        self.inner.take().expect("server present")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(server) = self.inner.take() {
            step("shutting the backend's server down");
            server.shutdown();
        }
    }
}

/// `POST /v1/runs {"input": input}`; panics unless the answer is a 200 event stream.
pub(crate) fn post_run(addr: SocketAddr, input: &str) -> SseClient {
    step("POST /v1/runs: waiting for the response head");
    let client = SseClient::post_json(addr, "/v1/runs", &serde_json::json!({"input": input}), &[])
        .unwrap_or_else(|e| panic!("server contract: POST /v1/runs to {addr} failed: {e}"));
    assert_eq!(
        client.status(),
        200,
        "server contract: POST /v1/runs must be answered 200"
    );
    let content_type = client.header("content-type").unwrap_or("");
    assert!(
        content_type.starts_with("text/event-stream"),
        "server contract: POST /v1/runs content-type is {content_type:?}, not \
         text/event-stream"
    );
    client
}

/// Parse one `/v1/runs` frame into its event, checking `id` = seq and `event` = type.
pub(crate) fn parse_run_frame(frame: &SseEvent) -> Event {
    let event: Event = serde_json::from_str(&frame.data)
        .unwrap_or_else(|e| panic!("frame data is not an event ({e}): {:?}", frame.data));
    assert_eq!(
        frame.id.as_deref(),
        Some(event.seq.to_string().as_str()),
        "server frames: the SSE id of a /v1/runs frame must be its event's seq ({})",
        event.seq
    );
    assert_eq!(
        frame.event,
        event.name(),
        "server frames: the SSE event name of a /v1/runs frame must be its event's type"
    );
    event
}

/// Read `/v1/runs` frames into a transcript until the body ends, calling `on_event` on
/// each (before it is recorded). `Break` stops reading (the client keeps the connection).
pub(crate) fn read_run(
    client: &mut SseClient,
    on_event: impl FnMut(&Event) -> ControlFlow<()>,
) -> Transcript {
    let mut transcript = Transcript::new();
    read_run_into(client, &mut transcript, on_event);
    transcript
}

/// Read `/v1/runs` frames in lockstep with a [`GatedModel`](crate::kit::GatedModel)'s
/// `gate` until `deltas` text deltas were read: the gate is opened after each delta but the
/// last, so the next one exists only once the previous arrived. The client stays connected.
pub(crate) fn read_deltas_lockstep(
    client: &mut SseClient,
    gate: &Gate,
    deltas: usize,
) -> Transcript {
    let mut seen = 0;
    read_run(client, |event| {
        if let EventKind::TextDelta { .. } = event.kind {
            seen += 1;
            if seen == deltas {
                return ControlFlow::Break(());
            }
            gate.open_next();
        }
        ControlFlow::Continue(())
    })
}

/// [`read_run`], appending to an existing transcript.
pub(crate) fn read_run_into(
    client: &mut SseClient,
    transcript: &mut Transcript,
    mut on_event: impl FnMut(&Event) -> ControlFlow<()>,
) {
    loop {
        let next = transcript.len();
        step(format!(
            "waiting for the frame of event seq {next} from the server"
        ));
        let frame = match client.next_event(WAIT) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => panic!(
                "incremental delivery over /v1/runs: the frame of event seq {next} did not \
                 arrive within {WAIT:?} (the server buffers or stalls): {e}\n{}",
                transcript.summary()
            ),
        };
        let event = parse_run_frame(&frame);
        let flow = on_event(&event);
        if let Err(problem) = transcript.push(event) {
            panic!(
                "event contract violated: {problem}\n{}",
                transcript.summary()
            );
        }
        if flow.is_break() {
            break;
        }
    }
}

/// Opens every gate in the list when dropped, so that no blocked tool or upstream outlives
/// a failing case.
pub(crate) struct OpenOnDrop(pub(crate) Vec<std::sync::Arc<Gate>>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        for gate in &self.0 {
            gate.open_all();
        }
    }
}
