//! Server hardening on tokio (issue 9): a client that stops reading, early 413s, the
//! concurrent-run limit, and graceful shutdown under load, on both runtime flavours.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use agent_core::agent::Agent;
use agent_core::server::ServerConfig;
use common::{Flavour, RawClient, TestServer, WATCHDOG};
use serde_json::json;
use test_support::reliability::{
    FloodModel, HoldModel, count_server_panics, post_run, read_until_closed, server_panics,
    stalling_client,
};

/// Text per delta of the flood model: each SSE frame is a little more than this.
const DELTA_BYTES: usize = 16 * 1024;
/// Deltas the flood model may produce for a client that stopped reading. What the server may
/// hold is its socket's send buffer, the client's receive buffer and hyper's write buffer
/// (64 KiB): well under this. A server that keeps pulling the run never stops.
const STALLED_DELTAS_BOUND: usize = 1024;

/// A client that stops reading is disconnected after `write_timeout`, which cancels its run
/// (the model stream is dropped); meanwhile the run is pulled no further than the buffers
/// allow. Without the write timeout the model stream is never dropped (the watchdog fires).
fn slow_reader_is_disconnected(flavour: Flavour) {
    let model = FloodModel::new(DELTA_BYTES);
    let counters = model.counters.clone();
    let config = ServerConfig::default()
        .with_write_timeout(Duration::from_millis(300))
        .with_run_detach_grace(Duration::ZERO);
    let server = TestServer::start(flavour, config, |rt| {
        Agent::builder().model(model).runtime(rt).build().unwrap()
    });
    let (mut stream, head) = stalling_client(server.addr, &post_run("flood"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The client reads nothing more: the server's writes stall, then time out.
    counters.wait(
        "the run of a client that stopped reading is cancelled",
        |c| c.dropped() == 1,
    );
    let produced = counters.produced();
    eprintln!(
        "{flavour:?}: {produced} deltas of {DELTA_BYTES} bytes produced for a stalled client"
    );
    assert!(
        produced < STALLED_DELTAS_BOUND,
        "{produced} deltas were produced for a client that stopped reading"
    );
    let read = read_until_closed(&mut stream);
    assert!(
        read < STALLED_DELTAS_BOUND * DELTA_BYTES,
        "{read} bytes were buffered for the client"
    );
    let start = std::time::Instant::now();
    while server.service.running_streams() != 0 && start.elapsed() < WATCHDOG {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.service.running_streams(), 0);
    assert_eq!(
        counters.produced(),
        produced,
        "nothing is produced after the cancel"
    );
    server.shutdown();
}

/// A declared body over the limit is refused at once: before `100 Continue`, before a byte
/// of it is read, with `Connection: close`.
fn payload_too_large_before_100_continue(flavour: Flavour) {
    let config = ServerConfig::default().with_max_body_bytes(64);
    let server = TestServer::start(flavour, config, |rt| {
        Agent::builder()
            .model(HoldModel::default())
            .runtime(rt)
            .build()
            .unwrap()
    });
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(WATCHDOG)).unwrap();
    stream
        .write_all(
            b"POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(answer.contains("payload_too_large"), "{answer}");
    server.shutdown();
}

/// The 413 for a declared length arrives while the client has not sent any of the body; the
/// client may then still send some of it without losing the answer, and the server closes.
fn payload_too_large_answered_before_the_body(flavour: Flavour) {
    let config = ServerConfig::default().with_max_body_bytes(64);
    let server = TestServer::start(flavour, config, |rt| {
        Agent::builder()
            .model(HoldModel::default())
            .runtime(rt)
            .build()
            .unwrap()
    });
    let mut client = std::net::TcpStream::connect(server.addr).unwrap();
    client.set_read_timeout(Some(WATCHDOG)).unwrap();
    client
        .write_all(b"POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            client.read(&mut byte).unwrap(),
            1,
            "the 413 arrives before the body"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // Some of the body after the answer: read and discarded, no reset.
    let _ = client.write_all(&vec![b'x'; 32 * 1024]);
    read_until_closed(&mut client);
    server.shutdown();
}

/// Beyond `max_concurrent_runs`, a run gets 503 with a JSON error; the slot is free again
/// once the first run's client leaves.
fn concurrent_run_limit(flavour: Flavour) {
    let model = HoldModel::default();
    let counters = model.counters.clone();
    let config = ServerConfig::default()
        .with_max_concurrent_runs(1)
        .with_run_detach_grace(Duration::ZERO);
    let server = TestServer::start(flavour, config, |rt| {
        Agent::builder().model(model).runtime(rt).build().unwrap()
    });
    let mut first = RawClient::post_json(server.addr, "/v1/runs", &json!({"input": "a"})).unwrap();
    assert_eq!(first.status, 200);
    while first.next_event().unwrap().unwrap().name() != "text_delta" {}

    let refused = RawClient::post_json(server.addr, "/v1/runs", &json!({"input": "b"})).unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("content-type"), Some("application/json"));
    assert_eq!(refused.json()["error"]["code"], "too_many_runs");
    let chat = RawClient::post_json(
        server.addr,
        "/v1/chat/completions",
        &json!({"stream": true, "messages": [{"role": "user", "content": "c"}]}),
    )
    .unwrap();
    assert_eq!(chat.status, 503, "the limit covers chat completions too");

    drop(first);
    counters.wait("the first run is cancelled", |c| c.dropped() == 1);
    let start = std::time::Instant::now();
    while server.service.running_streams() != 0 && start.elapsed() < WATCHDOG {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut again = RawClient::post_json(server.addr, "/v1/runs", &json!({"input": "d"})).unwrap();
    assert_eq!(again.status, 200, "the slot was released");
    assert_eq!(again.next_event().unwrap().unwrap().name(), "run_started");
    drop(again);
    server.shutdown();
}

/// Shutdown with many open streams: each ends with `run_cancelled` and then the end of the
/// body; a client that disconnects during the shutdown breaks nothing; the shutdown returns
/// within the watchdog, every model stream is dropped, and no server thread panics.
fn shutdown_under_load(flavour: Flavour) {
    const STREAMS: usize = 8;
    count_server_panics();
    let panics_before = server_panics();
    let model = HoldModel::default();
    let counters = model.counters.clone();
    let mut server = TestServer::start(flavour, ServerConfig::default(), |rt| {
        Agent::builder().model(model).runtime(rt).build().unwrap()
    });
    let mut clients: Vec<RawClient> = (0..STREAMS)
        .map(|k| {
            let mut client =
                RawClient::post_json(server.addr, "/v1/runs", &json!({"input": k.to_string()}))
                    .unwrap();
            assert_eq!(client.status, 200);
            while client.next_event().unwrap().unwrap().name() != "text_delta" {}
            client
        })
        .collect();
    let leaving = clients.pop().unwrap();
    assert_eq!(server.service.running_streams(), STREAMS);

    server.begin_shutdown();
    drop(leaving);
    for (k, client) in clients.iter_mut().enumerate() {
        let last = client
            .next_event()
            .unwrap_or_else(|e| panic!("stream {k}: {e}"))
            .unwrap_or_else(|| panic!("stream {k} ended without a terminal event"));
        assert_eq!(last.name(), "run_cancelled", "stream {k}");
        assert_eq!(last.json()["partial_text"], "partial");
        assert!(
            client.next_event().unwrap().is_none(),
            "stream {k}: the body ends after run_cancelled"
        );
    }
    server.wait_stopped();
    counters.wait("every model stream is dropped", |c| c.dropped() == STREAMS);
    assert_eq!(server.service.running_streams(), 0);
    assert_eq!(server_panics(), panics_before, "a server thread panicked");
}

both_flavours!(
    slow_reader_is_disconnected,
    payload_too_large_before_100_continue,
    payload_too_large_answered_before_the_body,
    concurrent_run_limit,
    shutdown_under_load,
);
