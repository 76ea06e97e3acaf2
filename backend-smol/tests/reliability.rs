//! Server hardening on smol (issue 9): a client that stops reading, early 413s, the
//! concurrent-run limit, and graceful shutdown under load — on smol's global executor and on
//! an executor driven by a single thread.

mod common;

use std::time::Duration;

use agent_core::agent::Agent;
use agent_core::model::Model;
use agent_core::server::ServerConfig;
use backend_smol::{SmolRuntime, SmolServer};
use common::{RawClient, SingleThread, WATCHDOG, exchange, split_response, wait_until};
use test_support::reliability::{
    FloodModel, HoldModel, count_server_panics, post_run, read_until_closed, server_panics,
    stalling_client,
};

/// Text per delta of the flood model: each SSE frame is a little more than this.
const DELTA_BYTES: usize = 16 * 1024;
/// Deltas the flood model may produce for a client that stopped reading: the server holds
/// its socket's send buffer, the client's receive buffer and one frame, well under this. A
/// server that keeps pulling the run never stops.
const STALLED_DELTAS_BOUND: usize = 1024;

enum Setup {
    Global,
    Single(SingleThread),
}

impl Setup {
    fn runtime(&self) -> SmolRuntime {
        match self {
            Setup::Global => SmolRuntime::global(),
            Setup::Single(single) => single.runtime.clone(),
        }
    }
}

fn setups() -> Vec<(&'static str, Setup)> {
    vec![
        ("global", Setup::Global),
        ("single thread", Setup::Single(SingleThread::start())),
    ]
}

fn serve(setup: &Setup, model: impl Model, config: ServerConfig) -> SmolServer {
    let agent = Agent::builder()
        .model(model)
        .runtime(setup.runtime().shared())
        .build()
        .unwrap();
    SmolServer::bind(agent, config.with_addr("127.0.0.1:0".parse().unwrap())).unwrap()
}

fn shutdown(server: SmolServer) {
    assert!(
        agent_core::runtime::block_on(server.shutdown_within(WATCHDOG)),
        "the server did not stop in time"
    );
}

/// A client that stops reading is disconnected after `write_timeout`, which cancels its run
/// (the model stream is dropped); meanwhile the run is pulled no further than the buffers
/// allow. Without the write timeout the model stream is never dropped (the watchdog fires).
#[test]
fn a_client_that_stops_reading_is_disconnected() {
    for (name, setup) in setups() {
        let model = FloodModel::new(DELTA_BYTES);
        let counters = model.counters.clone();
        let config = ServerConfig::default()
            .with_write_timeout(Duration::from_millis(300))
            .with_run_detach_grace(Duration::ZERO);
        let server = serve(&setup, model, config);
        let (mut stream, head) = stalling_client(server.local_addr(), &post_run("flood"));
        assert!(head.starts_with("HTTP/1.1 200"), "{name}: {head}");
        counters.wait(
            "the run of a client that stopped reading is cancelled",
            |c| c.dropped() == 1,
        );
        let produced = counters.produced();
        eprintln!("{name}: {produced} deltas of {DELTA_BYTES} bytes produced for a stalled client");
        assert!(
            produced < STALLED_DELTAS_BOUND,
            "{name}: {produced} deltas were produced for a client that stopped reading"
        );
        let read = read_until_closed(&mut stream);
        assert!(
            read < STALLED_DELTAS_BOUND * DELTA_BYTES,
            "{name}: {read} bytes"
        );
        wait_until(&format!("{name}: the run slot being released"), || {
            server.service().running_streams() == 0
        });
        assert_eq!(
            counters.produced(),
            produced,
            "{name}: produced after the cancel"
        );
        shutdown(server);
    }
}

/// A declared body over the limit is refused at once: before `100 Continue`, before a byte
/// of it is read, with `Connection: close`; a chunked one as soon as it crosses the limit.
#[test]
fn payload_too_large_is_answered_early() {
    let setup = Setup::Global;
    let server = serve(
        &setup,
        HoldModel::default(),
        ServerConfig::default().with_max_body_bytes(64),
    );
    let answer = exchange(
        server.local_addr(),
        "POST /v1/runs HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 1048576\r\nexpect: 100-continue\r\n\r\n",
    );
    let (status, head, body) = split_response(&answer);
    assert_eq!(status, 413, "{answer}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(body.contains("payload_too_large"), "{body}");

    // Without Expect: the answer comes before any of the body is sent; then some of the body
    // may still be sent without losing the answer, and the server closes.
    let mut client = RawClient::connect(server.local_addr());
    client.send(b"POST /v1/runs HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 10485760\r\n\r\n");
    client.read_until("payload_too_large", "the 413 before the body");
    let _ = std::io::Write::write_all(&mut client.stream, &vec![b'x'; 32 * 1024]);
    read_until_closed(&mut client.stream);

    // Chunked: refused once the decoded body crosses the limit.
    let mut client = RawClient::connect(server.local_addr());
    client.send(b"POST /v1/runs HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n");
    for _ in 0..3 {
        client.send(format!("20\r\n{}\r\n", "y".repeat(32)).as_bytes());
    }
    client.read_until(
        "payload_too_large",
        "the 413 while the chunked body arrives",
    );
    assert!(
        client.text().starts_with("HTTP/1.1 413"),
        "{}",
        client.text()
    );
    shutdown(server);
}

/// Beyond `max_concurrent_runs`, a run gets 503 with a JSON error; the slot is free again
/// once the first run's client leaves.
#[test]
fn the_concurrent_run_limit_answers_503() {
    for (name, setup) in setups() {
        let model = HoldModel::default();
        let counters = model.counters.clone();
        let server = serve(
            &setup,
            model,
            ServerConfig::default()
                .with_max_concurrent_runs(1)
                .with_run_detach_grace(Duration::ZERO),
        );
        let mut first = RawClient::connect(server.local_addr());
        first.post("/v1/runs", "", r#"{"input":"a"}"#);
        first.read_until("partial", &format!("{name}: the first run's delta"));

        let answer = exchange(
            server.local_addr(),
            "POST /v1/runs HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 13\r\nconnection: close\r\n\r\n{\"input\":\"b\"}",
        );
        let (status, head, body) = split_response(&answer);
        assert_eq!(status, 503, "{name}: {answer}");
        assert!(
            head.contains("content-type: application/json"),
            "{name}: {head}"
        );
        assert!(body.contains("too_many_runs"), "{name}: {body}");

        drop(first);
        counters.wait("the first run is cancelled", |c| c.dropped() == 1);
        wait_until(&format!("{name}: the slot being released"), || {
            server.service().running_streams() == 0
        });
        let mut again = RawClient::connect(server.local_addr());
        again.post("/v1/runs", "", r#"{"input":"c"}"#);
        again.read_until(
            "event: run_started",
            &format!("{name}: a run after the slot freed"),
        );
        assert!(again.text().starts_with("HTTP/1.1 200"), "{name}");
        drop(again);
        shutdown(server);
    }
}

/// Shutdown with many open streams: each ends with `run_cancelled` and then the end of the
/// chunked body; a client that disconnects during the shutdown breaks nothing; the shutdown
/// returns within the watchdog, every model stream is dropped, and nothing panics.
#[test]
fn shutdown_under_load_ends_every_stream() {
    const STREAMS: usize = 8;
    count_server_panics();
    let panics_before = server_panics();
    for (name, setup) in setups() {
        let model = HoldModel::default();
        let counters = model.counters.clone();
        let server = serve(&setup, model, ServerConfig::default());
        let mut clients: Vec<RawClient> = (0..STREAMS)
            .map(|k| {
                let mut client = RawClient::connect(server.local_addr());
                client.post("/v1/runs", "", &format!(r#"{{"input":"{k}"}}"#));
                client.read_until("partial", &format!("{name}: stream {k}'s delta"));
                client
            })
            .collect();
        let leaving = clients.pop().unwrap();
        assert_eq!(server.service().running_streams(), STREAMS);

        let stopper = std::thread::spawn(move || shutdown(server));
        drop(leaving);
        for (k, client) in clients.iter_mut().enumerate() {
            client.read_until("event: run_cancelled", &format!("{name}: stream {k}'s end"));
            client.read_to_end();
            assert!(
                client.text().ends_with("\r\n0\r\n\r\n"),
                "{name}: stream {k}: {:?}",
                client.text()
            );
        }
        stopper.join().expect("the shutdown returned");
        counters.wait("every model stream is dropped", |c| c.dropped() == STREAMS);
    }
    assert_eq!(server_panics(), panics_before, "a server thread panicked");
}
