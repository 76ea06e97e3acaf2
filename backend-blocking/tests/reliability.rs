//! Server hardening on plain threads (issue 9): a client that stops reading, early 413s, the
//! concurrent-run limit, and graceful shutdown under load.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use agent_core::model::Model;
use agent_core::server::ServerConfig;
use backend_blocking::ThreadServer;
use common::WATCHDOG;
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

fn serve(model: impl Model, config: ServerConfig) -> ThreadServer {
    let agent = backend_blocking::agent_builder()
        .model(model)
        .build()
        .unwrap();
    ThreadServer::bind(agent, config.with_addr("127.0.0.1:0".parse().unwrap())).unwrap()
}

fn wait_until(what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < WATCHDOG, "watchdog: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Connect, send `request`, read everything until the server closes.
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WATCHDOG)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Read from `stream` until `needle` has arrived; everything read.
fn read_until(stream: &mut TcpStream, needle: &str, what: &str) -> String {
    stream.set_read_timeout(Some(WATCHDOG)).unwrap();
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&text).contains(needle) {
        match stream.read(&mut buf) {
            Ok(0) => panic!("closed before {what}: {}", String::from_utf8_lossy(&text)),
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(err) => panic!("watchdog: {what}: {err}"),
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// A client that stops reading is disconnected after `write_timeout` (from the shared
/// `ServerConfig`), which cancels its run; meanwhile the run is pulled no further than the
/// buffers allow. With the write timeout off, the model stream is never dropped.
#[test]
fn a_client_that_stops_reading_is_disconnected() {
    let model = FloodModel::new(DELTA_BYTES);
    let counters = model.counters.clone();
    let config = ServerConfig::default()
        .with_write_timeout(Duration::from_millis(300))
        .with_run_detach_grace(Duration::ZERO);
    let server = serve(model, config);
    let (mut stream, head) = stalling_client(server.local_addr(), &post_run("flood"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    counters.wait(
        "the run of a client that stopped reading is cancelled",
        |c| c.dropped() == 1,
    );
    let produced = counters.produced();
    eprintln!("{produced} deltas of {DELTA_BYTES} bytes produced for a stalled client");
    assert!(
        produced < STALLED_DELTAS_BOUND,
        "{produced} deltas were produced for a client that stopped reading"
    );
    let read = read_until_closed(&mut stream);
    assert!(read < STALLED_DELTAS_BOUND * DELTA_BYTES, "{read} bytes");
    wait_until("the run slot being released", || {
        server.service().running_streams() == 0
    });
    assert_eq!(counters.produced(), produced, "produced after the cancel");
    assert!(server.shutdown_within(WATCHDOG));
}

/// The bound on a client that stops reading is `write_timeout` without progress, not a
/// multiple of it: with big frames, a blocking `write_all` under `SO_SNDTIMEO` restarted
/// the timeout after every partial write, so a stalled client was dropped only after about
/// three timeouts (94 s with the default 30 s).
#[test]
fn a_stalled_client_of_big_frames_is_dropped_within_the_write_timeout() {
    const WRITE_TIMEOUT: Duration = Duration::from_millis(1000);
    for delta in [64 * 1024, 1024 * 1024] {
        let model = FloodModel::new(delta);
        let counters = model.counters.clone();
        let config = ServerConfig::default()
            .with_write_timeout(WRITE_TIMEOUT)
            .with_run_detach_grace(Duration::ZERO);
        let server = serve(model, config);
        let (mut stream, head) = stalling_client(server.local_addr(), &post_run("flood"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let stopped_reading = Instant::now();
        wait_until(
            "the run of a client that stopped reading is cancelled",
            || counters.dropped() == 1,
        );
        let after = stopped_reading.elapsed();
        eprintln!("{delta}-byte frames: run cancelled {after:?} after the client stopped reading");
        // The socket buffers fill within milliseconds; then `write_timeout` without
        // progress, plus scheduling slack.
        assert!(
            after < WRITE_TIMEOUT * 2,
            "{delta}-byte frames: a client that stopped reading was dropped after {after:?}, \
             with write_timeout = {WRITE_TIMEOUT:?}"
        );
        read_until_closed(&mut stream);
        assert!(server.shutdown_within(WATCHDOG));
    }
}

/// Idle kept-alive connections and slow heads take no connection thread: with 1,500 idle
/// connections and 1,100 slow heads open (together well over the default 1,024 connection
/// threads; 2,600 of the process's file descriptors on each side), `/healthz` and a real run
/// are still served. Before, every connection held a thread from accept on, so all of these
/// got `503 too_many_connections`.
#[test]
fn idle_and_slow_head_connections_do_not_take_the_capacity_of_live_requests() {
    const IDLE: usize = 1500;
    const SLOW: usize = 1100;
    let server = serve(
        agent_core::model::ScriptedModel::from_fn(|_, _| {
            agent_core::model::Turn::new().text("served")
        }),
        ServerConfig::default(),
    );
    let addr = server.local_addr();
    let mut held = Vec::with_capacity(IDLE + SLOW);
    for i in 0..IDLE + SLOW {
        let mut stream = TcpStream::connect(addr).unwrap();
        if i >= IDLE {
            // A head that never completes.
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
                .unwrap();
        } else if i % 2 == 0 {
            // Kept alive after one request.
            stream.set_read_timeout(Some(WATCHDOG)).unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            let mut answer = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&answer).contains(r#"{"status":"ok"}"#) {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
                answer.extend_from_slice(&buf[..n]);
            }
            assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
        }
        held.push(stream);
    }
    wait_until("every held connection being counted", || {
        server.waiting_connections() >= IDLE + SLOW
    });
    assert!(
        server.open_connections() < 10,
        "{}",
        server.open_connections()
    );
    let health = exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let body = r#"{"input":"hi"}"#;
    let run = exchange(
        addr,
        format!(
            "POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert!(run.starts_with("HTTP/1.1 200"), "{run}");
    assert!(run.contains("event: run_completed"), "{run}");
    drop(held);
    assert!(server.shutdown_within(WATCHDOG));
}

/// A declared body over the limit is refused at once: before `100 Continue`, before a byte
/// of it is read, with `Connection: close`; a chunked one as soon as it crosses the limit.
#[test]
fn payload_too_large_is_answered_early() {
    let server = serve(
        HoldModel::default(),
        ServerConfig::default().with_max_body_bytes(64),
    );
    let answer = exchange(
        server.local_addr(),
        b"POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\nExpect: 100-continue\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(answer.contains("payload_too_large"), "{answer}");

    // Without Expect: the answer comes before any of the body is sent; then some of the body
    // may still be sent without losing the answer, and the server closes.
    let mut client = TcpStream::connect(server.local_addr()).unwrap();
    client
        .write_all(b"POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\n\r\n")
        .unwrap();
    read_until(&mut client, "payload_too_large", "the 413 before the body");
    let _ = client.write_all(&vec![b'x'; 32 * 1024]);
    read_until_closed(&mut client);

    // Chunked: refused once the decoded body would cross the limit.
    let mut client = TcpStream::connect(server.local_addr()).unwrap();
    client
        .write_all(b"POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for _ in 0..3 {
        let _ = client.write_all(format!("20\r\n{}\r\n", "y".repeat(32)).as_bytes());
    }
    let text = read_until(
        &mut client,
        "payload_too_large",
        "the 413 of a chunked body",
    );
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(server.shutdown_within(WATCHDOG));
}

/// Beyond `max_concurrent_runs`, a run gets 503 with a JSON error; the slot is free again
/// once the first run's client leaves.
#[test]
fn the_concurrent_run_limit_answers_503() {
    let model = HoldModel::default();
    let counters = model.counters.clone();
    let config = ServerConfig::default()
        .with_max_concurrent_runs(1)
        .with_run_detach_grace(Duration::ZERO);
    let server = serve(model, config);
    let mut first = TcpStream::connect(server.local_addr()).unwrap();
    first.write_all(&post_run("a")).unwrap();
    read_until(&mut first, "partial", "the first run's delta");

    let answer = exchange(
        server.local_addr(),
        b"POST /v1/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 13\r\n\r\n{\"input\":\"b\"}",
    );
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("application/json"), "{answer}");
    assert!(answer.contains("too_many_runs"), "{answer}");

    drop(first);
    counters.wait("the first run is cancelled", |c| c.dropped() == 1);
    wait_until("the slot being released", || {
        server.service().running_streams() == 0
    });
    let mut again = TcpStream::connect(server.local_addr()).unwrap();
    again.write_all(&post_run("c")).unwrap();
    let text = read_until(
        &mut again,
        "event: run_started",
        "a run after the slot freed",
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    drop(again);
    assert!(server.shutdown_within(WATCHDOG));
}

/// Shutdown with many open streams: each ends with `run_cancelled` and then the end of the
/// chunked body; a client that disconnects during the shutdown breaks nothing; the shutdown
/// returns within the watchdog, every model stream is dropped, and nothing panics.
#[test]
fn shutdown_under_load_ends_every_stream() {
    const STREAMS: usize = 8;
    count_server_panics();
    let panics_before = server_panics();
    let model = HoldModel::default();
    let counters = model.counters.clone();
    let server = serve(model, ServerConfig::default());
    let mut clients: Vec<TcpStream> = (0..STREAMS)
        .map(|k| {
            let mut client = TcpStream::connect(server.local_addr()).unwrap();
            client.write_all(&post_run(&k.to_string())).unwrap();
            read_until(&mut client, "partial", &format!("stream {k}'s delta"));
            client
        })
        .collect();
    let leaving = clients.pop().unwrap();
    assert_eq!(server.service().running_streams(), STREAMS);

    let stopper = std::thread::spawn(move || server.shutdown_within(WATCHDOG));
    drop(leaving);
    for (k, client) in clients.iter_mut().enumerate() {
        let text = read_until(client, "event: run_cancelled", &format!("stream {k}'s end"));
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        let all = text + &String::from_utf8_lossy(&rest);
        assert!(all.ends_with("\r\n0\r\n\r\n"), "stream {k}: {all:?}");
    }
    assert!(
        stopper.join().unwrap(),
        "every connection closed within the bound"
    );
    counters.wait("every model stream is dropped", |c| c.dropped() == STREAMS);
    assert_eq!(server_panics(), panics_before, "a server thread panicked");
}
