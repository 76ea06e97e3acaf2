//! Free-running producers: deltas paced [`PACE`] apart that never wait for the consumer,
//! through every path a user reads. They complement the lockstep cases: a lockstep producer
//! waits for the consumer, so a buffer that flushes when the producer goes quiet (the most
//! common real-world buffer: "flush after 40 ms idle or 8 KiB") always flushes just in
//! time and passes. A free-running producer is never quiet for long, so such a buffer holds
//! everything until the end and the consumer sees one burst instead of many.
//!
//! Each case counts **separate arrivals** on the consumer side and requires at least a third
//! as many as there were deltas:
//!
//! * in process (`consume`, and the HTTP client path, which ends in `consume`), an arrival
//!   is an event that came at least [`BURST_GAP`] after the previous one (a third of the
//!   pace: a burst is events handed over back to back);
//! * over a socket (the server's endpoints), an arrival is a `read` that returned bytes.
//!
//! | case | path | a buffer it catches |
//! |---|---|---|
//! | `free_running_consume` | model → run stream → `consume` | a `consume` that collects events, or flushes them on idle or by count |
//! | `free_running_http` | upstream → the backend's HTTP client → `consume` | a client that reads the whole body, or coalesces chunks |
//! | `free_running_server_runs` | run → the backend's server → `POST /v1/runs` | a server that coalesces frames on idle (40 ms) or by size (8 KiB) |
//! | `free_running_server_chat` | run → the backend's server → `POST /v1/chat/completions` | the same on the OpenAI-compatible endpoint |
//! | `free_running_server_events` | run → its log → a second reader on `GET /v1/runs/{id}/events` | a log that hands events to other readers in batches, or only to the connection that drives the run |

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use agent_core::event::EventKind;
use agent_core::model::{ScriptedModel, Turn};
use serde_json::json;

use super::Outcome;
use super::support::{Server, WAIT, agent_builder, consume, openai_config, openai_model};
use crate::backend::Backend;
use crate::kit::upstream::{GatedUpstream, Response, openai};
use crate::kit::watchdog::step;

/// Deltas each free-running case streams.
pub const FREE_DELTAS: usize = 40;
/// The time between two deltas: short enough that an idle-flushing buffer (40 ms) never
/// flushes, long enough to tell arrivals apart.
pub const PACE: Duration = Duration::from_millis(15);
/// Events closer together than this count as one burst.
pub const BURST_GAP: Duration = Duration::from_millis(5);
/// At least this many separate arrivals are required (a third of the deltas).
pub const MIN_ARRIVALS: usize = FREE_DELTAS / 3;

/// The `k`-th delta of a free-running answer.
fn delta(k: usize) -> String {
    format!("w{k:02} ")
}

/// A scripted model that streams [`FREE_DELTAS`] deltas [`PACE`] apart, never waiting for
/// anyone.
fn paced_model() -> ScriptedModel {
    let mut turn = Turn::new();
    for k in 0..FREE_DELTAS {
        if k > 0 {
            turn = turn.pause(PACE);
        }
        turn = turn.text(delta(k));
    }
    ScriptedModel::new([turn])
}

fn full_text() -> String {
    (0..FREE_DELTAS).map(delta).collect()
}

/// Count in-process arrivals: text deltas that came at least [`BURST_GAP`] after the
/// previous one (the first always counts).
#[derive(Default)]
struct Arrivals {
    last: Option<Instant>,
    bursts: usize,
    deltas: usize,
}

impl Arrivals {
    fn delta(&mut self) {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|last| now.duration_since(last) >= BURST_GAP)
        {
            self.bursts += 1;
        }
        self.last = Some(now);
        self.deltas += 1;
    }
}

fn assert_arrivals(path: &str, bursts: usize, deltas: usize) {
    assert!(
        bursts >= MIN_ARRIVALS,
        "free-running delivery: through {path}, {deltas} deltas produced {} ms apart arrived in \
         {bursts} separate burst(s), at least {MIN_ARRIVALS} required: something on this path \
         holds events back until it has enough of them or the stream ends (a coalescing buffer)",
        PACE.as_millis()
    );
}

/// `free_running_consume`: see the [module docs](self).
pub fn consume_path(backend: &dyn Backend) -> Outcome {
    let agent = agent_builder(backend)
        .model(paced_model())
        .build()
        .expect("free-running: the agent builds");
    let mut arrivals = Arrivals::default();
    let transcript = consume(backend, &agent, "go", |event| {
        if let EventKind::TextDelta { .. } = event.kind {
            arrivals.delta();
        }
        ControlFlow::Continue(())
    });
    transcript.assert_contract();
    assert_eq!(
        transcript.completed_text(),
        full_text(),
        "free-running delivery through consume: the answer must arrive whole\n{}",
        transcript.summary()
    );
    assert_arrivals("consume (the run stream)", arrivals.bursts, arrivals.deltas);
    Outcome::passed()
        .note(format!(
            "{} deltas, {} ms apart, arrived in {} bursts",
            arrivals.deltas,
            PACE.as_millis(),
            arrivals.bursts
        ))
        .measure("arrivals", arrivals.bursts as f64)
}

/// `free_running_http`: see the [module docs](self).
pub fn http_path(backend: &dyn Backend) -> Outcome {
    let mut response = Response::sse();
    for k in 0..FREE_DELTAS {
        if k > 0 {
            response = response.pause(PACE);
        }
        response = response.send(openai::text_chunk(&delta(k)));
    }
    let response = response
        .send(openai::finish_chunk("stop"))
        .send(openai::DONE);
    let upstream = GatedUpstream::start([response]).expect("free-running: the upstream starts");
    let agent = agent_builder(backend)
        .model(openai_model(backend, openai_config(&upstream)))
        .build()
        .expect("free-running: the agent builds");
    let mut arrivals = Arrivals::default();
    let transcript = consume(backend, &agent, "go", |event| {
        if let EventKind::TextDelta { .. } = event.kind {
            arrivals.delta();
        }
        ControlFlow::Continue(())
    });
    transcript.assert_contract();
    assert_eq!(
        transcript.completed_text(),
        full_text(),
        "free-running delivery through the HTTP client: the answer must arrive whole\n{}",
        transcript.summary()
    );
    assert_arrivals(
        "the backend's HTTP client (upstream → events)",
        arrivals.bursts,
        arrivals.deltas,
    );
    Outcome::passed()
        .note(format!(
            "{} upstream chunks, {} ms apart, arrived in {} bursts",
            arrivals.deltas,
            PACE.as_millis(),
            arrivals.bursts
        ))
        .measure("arrivals", arrivals.bursts as f64)
}

/// Send `request` and read the response until `end` appears in it (or the connection
/// ends), counting the reads that returned bytes: the arrivals of the socket paths. Shared
/// by every free-running case over a socket.
pub(crate) fn read_counting(
    addr: SocketAddr,
    path: &str,
    request: &[u8],
    end: &str,
) -> (String, usize) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|err| panic!("free-running delivery through {path}: connect: {err}"));
    let _ = stream.set_nodelay(true);
    stream
        .write_all(request)
        .unwrap_or_else(|err| panic!("free-running delivery through {path}: send: {err}"));
    let deadline = Instant::now() + WAIT;
    let mut received = Vec::new();
    let mut reads = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "free-running delivery: through {path}, the stream did not end within {WAIT:?}; \
             received {} bytes in {reads} reads",
            received.len()
        );
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                reads += 1;
                received.extend_from_slice(&chunk[..n]);
                // Only the new bytes (and the end marker's length before them) can
                // complete the marker: no rescan of the whole body per read.
                let from = received.len().saturating_sub(n + end.len());
                if received[from..]
                    .windows(end.len())
                    .any(|window| window == end.as_bytes())
                {
                    break;
                }
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => panic!(
                "free-running delivery through {path}: read failed after {} bytes: {err}",
                received.len()
            ),
        }
    }
    (String::from_utf8_lossy(&received).into_owned(), reads)
}

fn server_path(backend: &dyn Backend, path: &str, body: serde_json::Value, end: &str) -> Outcome {
    let agent = agent_builder(backend)
        .model(paced_model())
        .build()
        .expect("free-running: the agent builds");
    let server = Server::start(backend, agent);
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        server.addr(),
        body.len()
    );
    step(format!("reading the free-running stream of POST {path}"));
    let (text, reads) = read_counting(server.addr(), path, request.as_bytes(), end);
    let outcome = assert_free_running(&format!("the backend's server (POST {path})"), &text, reads);
    drop(server);
    outcome
}

/// Every delta is in `text`, and the deltas came in enough separate reads.
fn assert_free_running(what: &str, text: &str, reads: usize) -> Outcome {
    for k in 0..FREE_DELTAS {
        assert!(
            text.contains(delta(k).trim_end()),
            "free-running delivery: through {what}, delta {k} is missing from the stream:\n{text}"
        );
    }
    // The head and the first frames may share a read, and so may the last frames: the
    // deltas are what must arrive apart.
    assert_arrivals(what, reads, FREE_DELTAS);
    Outcome::passed()
        .note(format!(
            "{FREE_DELTAS} deltas, {} ms apart, arrived in {reads} reads",
            PACE.as_millis()
        ))
        .measure("arrivals", reads as f64)
}

/// `free_running_server_runs`: see the [module docs](self).
pub fn server_runs(backend: &dyn Backend) -> Outcome {
    server_path(
        backend,
        "/v1/runs",
        json!({"input": "go"}),
        "event: run_completed",
    )
}

/// `free_running_server_events`: see the [module docs](self).
pub fn server_events(backend: &dyn Backend) -> Outcome {
    let agent = agent_builder(backend)
        .model(paced_model())
        .build()
        .expect("free-running: the agent builds");
    let server = Server::start(backend, agent);
    let addr = server.addr();
    // The run's own connection stays open (so the run is not cancelled) while a second
    // reader follows it from seq 0.
    let first = super::support::post_run(addr, "go");
    let id = first
        .header("x-run-id")
        .expect("free-running: POST /v1/runs names its run in x-run-id")
        .to_string();
    let path = format!("/v1/runs/{id}/events");
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    step(format!("reading the free-running stream of GET {path}"));
    let (text, reads) = read_counting(addr, &path, request.as_bytes(), "event: run_completed");
    let outcome = assert_free_running(
        "the backend's server (GET /v1/runs/{id}/events)",
        &text,
        reads,
    );
    first.close();
    drop(server);
    outcome
}

/// `free_running_server_chat`: see the [module docs](self).
pub fn server_chat(backend: &dyn Backend) -> Outcome {
    server_path(
        backend,
        "/v1/chat/completions",
        json!({"model": "agent", "stream": true, "messages": [{"role": "user", "content": "go"}]}),
        "data: [DONE]",
    )
}
