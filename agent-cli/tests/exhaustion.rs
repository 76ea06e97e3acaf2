//! `agent serve` out of file descriptors (reliability item 8), on every runtime: started
//! with a low descriptor limit and flooded with clients stalled mid-body, it keeps serving
//! the stream it had open, times the stalled bodies out, and then answers new requests;
//! running out of descriptors never wedges its accept loop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use conformance::kit::client::{SseClient, http_request};
use serde_json::json;

mod support;

use support::{RUNTIMES, Served, clean_env};

/// The server's descriptor limit, and how many stalled clients exceed it.
const FD_LIMIT: usize = 256;
const STALLED: usize = FD_LIMIT + 64;

/// `agent serve` under `ulimit -n FD_LIMIT`, with short head and body timeouts.
fn serve(runtime: &str) -> Served {
    let mut command = Command::new("sh");
    clean_env(&mut command)
        .arg("-c")
        .arg(format!("ulimit -n {FD_LIMIT} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_agent"))
        .args([
            "serve",
            "--runtime",
            runtime,
            "--addr",
            "127.0.0.1:0",
            "--demo",
            "--demo-pace-ms",
            "25",
            "--body-read-timeout",
            "2s",
            "--head-read-timeout",
            "2s",
        ]);
    Served::start(&mut command, Duration::from_secs(20))
}

#[test]
fn out_of_descriptors_the_server_keeps_its_streams_times_out_stalled_bodies_and_recovers() {
    for runtime in RUNTIMES {
        let served = serve(runtime);
        let addr = served.addr;
        // A live run, open before the flood.
        let mut live = SseClient::post_json(addr, "/v1/runs", &json!({"input": "hello"}), &[])
            .unwrap_or_else(|e| panic!("{runtime}: POST /v1/runs: {e}"));
        assert_eq!(live.status(), 200, "{runtime}: the live run starts");

        // More clients than the server has descriptors, each stalled mid-body.
        let body_head = "POST /v1/runs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                         content-length: 1000\r\n\r\n{\"input\":";
        let mut stalled = Vec::with_capacity(STALLED);
        for _ in 0..STALLED {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(mut stream) => {
                    // A connection still in the listen backlog takes the bytes too.
                    let _ = stream.write_all(body_head.as_bytes());
                    stalled.push(stream);
                }
                Err(err) => panic!("{runtime}: connecting stalled client: {err}"),
            }
        }

        // The open stream goes on through the exhaustion, to its end.
        let started = Instant::now();
        let mut last = String::new();
        while last != "run_completed" {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{runtime}: the live run did not finish within 30 s during the flood"
            );
            match live.next_event(Duration::from_secs(20)) {
                Ok(Some(frame)) => last = frame.event,
                Ok(None) => panic!("{runtime}: the live stream ended without run_completed"),
                Err(err) => panic!("{runtime}: the live stream broke during the flood: {err}"),
            }
        }

        // New requests are served again once the stalled bodies timed out.
        let health = http_request(addr, "GET", "/healthz", &[], b"", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{runtime}: GET /healthz after the flood: {e}"));
        assert_eq!(
            health.status, 200,
            "{runtime}: /healthz is answered after the flood"
        );
        let after = http_request(
            addr,
            "POST",
            "/v1/runs",
            &[("content-type", "application/json")],
            br#"{"input":"after"}"#,
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{runtime}: a run after the flood: {e}"));
        assert_eq!(after.status, 200, "{runtime}: a run after the flood");
        assert!(
            String::from_utf8_lossy(&after.body).contains("event: run_completed"),
            "{runtime}: the run after the flood completes"
        );

        // Every stalled client was answered (408) or closed: none is held forever.
        let deadline = Instant::now() + Duration::from_secs(30);
        for (i, stream) in stalled.iter_mut().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{runtime}: stalled client {i} still open 30 s after the flood"
            );
            stream.set_read_timeout(Some(left)).unwrap();
            let mut sink = Vec::new();
            match stream.read_to_end(&mut sink) {
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(err) => panic!("{runtime}: stalled client {i} was not closed: {err}"),
            }
        }
        // The flood did exhaust the descriptors (else this test proved nothing).
        assert!(
            served
                .log
                .try_iter()
                .any(|line| line.contains("accept failed")),
            "{runtime}: the server never ran out of descriptors (no failed accept logged)"
        );
    }
}
