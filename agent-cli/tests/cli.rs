//! The `agent` binary, run as a user runs it: streaming through a pipe, every runtime, the
//! failures users meet, `chat` and `serve`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agent_core::event::{Event, EventKind};
use conformance::cases::anthropic::messages;
use conformance::kit::client::SseClient;
use conformance::kit::upstream::{GatedUpstream, Response, openai};
use serde_json::json;

mod support;

use support::{DEADLINE, RUNTIMES, Served, agent, run, signal, text, wait_with_deadline};

#[test]
fn demo_model_answers_on_every_runtime() {
    for runtime in RUNTIMES {
        let output = run(agent().args([
            "--runtime",
            runtime,
            "--demo-pace-ms",
            "0",
            "What is 12 * (3 + 4)?",
        ]));
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert!(output.status.success(), "{runtime}: {stderr}");
        assert!(stdout.contains("The result is 84"), "{runtime}: {stdout}");
        assert!(
            stderr.contains("built-in demo model"),
            "{runtime}: {stderr}"
        );
        assert!(stderr.contains("[tool] calculator"), "{runtime}: {stderr}");
        assert!(
            !stdout.contains("[tool]"),
            "tool lines go to stderr, not stdout"
        );
    }
}

#[test]
fn demo_clock_tool_and_plain_answer() {
    let output = run(agent().args(["--demo-pace-ms", "0", "What time is it?"]));
    assert!(output.status.success());
    assert!(text(&output.stdout).contains("(UTC), according to the clock tool"));
    let output = run(agent().args(["--runtime", "blocking", "--demo-pace-ms", "0", "hello"]));
    assert!(output.status.success());
    assert!(text(&output.stdout).contains("built-in demo model"));
}

/// Each delta must reach the pipe before the upstream sends the next one: the upstream's
/// gate opens only when the test has read delta k from the CLI's stdout. A CLI that does
/// not flush (stdout is a pipe, so it would be block-buffered) deadlocks here.
#[test]
fn deltas_reach_a_piped_stdout_one_by_one_on_every_runtime() {
    let deltas: Vec<String> = (0..20).map(|k| format!("w{k} ")).collect();
    for runtime in RUNTIMES {
        let upstream = GatedUpstream::start([openai::lockstep_answer(&deltas)]).unwrap();
        let gate = upstream.gate();
        let mut child = agent()
            .args([
                "--runtime",
                runtime,
                "--base-url",
                &upstream.base_url(),
                "--model",
                "m",
                "hi",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let chunks = read_in_background(child.stdout.take().unwrap());
        let mut seen = String::new();
        for (k, delta) in deltas.iter().enumerate() {
            let expected: String = deltas[..=k].concat();
            // The CLI holds a delta's trailing blanks until more text follows (so that no
            // line ends in a space): the words must arrive, the blank may wait.
            let expected = expected.trim_end();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !seen.starts_with(expected) {
                let left = deadline.saturating_duration_since(Instant::now());
                match chunks.recv_timeout(left) {
                    Ok(chunk) => seen.push_str(&chunk),
                    Err(_) => {
                        let _ = child.kill();
                        panic!(
                            "{runtime}: delta {k} ({delta:?}) never reached stdout; got {seen:?}"
                        );
                    }
                }
            }
            gate.open_next();
        }
        let status = wait_with_deadline(&mut child);
        assert!(status.success(), "{runtime}: exit {status:?}");
    }
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0
                || tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
            {
                break;
            }
        }
    });
    rx
}

#[test]
fn json_mode_prints_the_event_stream() {
    let output = run(agent().args(["--json", "--demo-pace-ms", "0", "What is 2 + 2?"]));
    assert!(output.status.success());
    let events: Vec<Event> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
        .collect();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as u64);
    }
    let EventKind::RunCompleted { text, .. } = &events.last().unwrap().kind else {
        panic!("the last line is run_completed")
    };
    assert!(text.contains('4'));
}

#[test]
fn stats_are_printed_on_stderr() {
    let output = run(agent().args(["--stats", "--demo-pace-ms", "0", "hello"]));
    assert!(output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("stats: time to first token"), "{stderr}");
    assert!(stderr.contains("tokens"), "{stderr}");
}

#[test]
fn connection_refused_is_explained() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/v1");
    for runtime in RUNTIMES {
        let output = run(agent().args([
            "--runtime",
            runtime,
            "--base-url",
            &url,
            "--model",
            "m",
            "hi",
        ]));
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{runtime}: {stderr}");
        assert!(
            stderr.contains("could not connect to"),
            "{runtime}: {stderr}"
        );
    }
}

#[test]
fn unauthorized_and_unknown_model_are_explained() {
    let upstream = GatedUpstream::start([
        Response::json(401, &json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})),
        Response::json(404, &json!({"error": {"message": "model 'nope' not found", "type": "not_found"}})),
    ])
    .unwrap();
    let output = run(agent().args(["--base-url", &upstream.base_url(), "--model", "m", "hi"]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("needs an API key"), "{stderr}");
    assert!(stderr.contains("Incorrect API key provided"), "{stderr}");

    let output = run(agent().args(["--base-url", &upstream.base_url(), "--model", "nope", "hi"]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("model name or the base URL is wrong"),
        "{stderr}"
    );
}

#[test]
fn api_key_is_sent_from_the_named_variable_and_never_printed() {
    let upstream = GatedUpstream::start([openai::answer(&["ok"])]).unwrap();
    let output = run(agent().env("MY_TEST_KEY", "sk-test-secret").args([
        "--base-url",
        &upstream.base_url(),
        "--model",
        "m",
        "--api-key-env",
        "MY_TEST_KEY",
        "hi",
    ]));
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        upstream.requests()[0].header("authorization"),
        Some("Bearer sk-test-secret")
    );
    assert!(!text(&output.stderr).contains("sk-test-secret"));
    assert!(!text(&output.stdout).contains("sk-test-secret"));
}

#[test]
fn a_silent_upstream_times_out_with_a_message() {
    let upstream = GatedUpstream::start([Response::sse().stall()]).unwrap();
    let output = run(agent().args([
        "--base-url",
        &upstream.base_url(),
        "--model",
        "m",
        "--first-byte-timeout",
        "0.3",
        "hi",
    ]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("did not start answering in time"),
        "{stderr}"
    );
}

#[test]
fn invalid_flags_exit_with_2() {
    let output = run(agent().args(["--runtime", "nope", "hi"]));
    assert_eq!(output.status.code(), Some(2));
    let output = run(agent().args(["--base-url", "http://127.0.0.1:9/v1", "hi"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("--model is required"));
    let output = run(&mut agent());
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn chat_keeps_the_conversation_until_exit() {
    let mut child = agent()
        .args(["chat", "--runtime", "smol", "--demo-pace-ms", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"what is 2 + 3\nwhat time is it\n/exit\n")
        .unwrap();
    drop(stdin);
    let status = wait_with_deadline(&mut child);
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(status.success());
    assert!(stdout.contains("The result is 5"), "{stdout}");
    assert!(stdout.contains("according to the clock tool"), "{stdout}");
}

/// `agent serve` answers over HTTP on each runtime and stops gracefully on SIGINT.
#[test]
fn serve_streams_over_http_and_stops_on_ctrl_c() {
    for runtime in RUNTIMES {
        let mut served = Served::start(
            agent().args([
                "serve",
                "--runtime",
                runtime,
                "--addr",
                "127.0.0.1:0",
                "--demo-pace-ms",
                "0",
            ]),
            Duration::from_secs(10),
        );
        let addr = served.addr;
        let body = json!({"input": "What is 6 * 7?"});
        let mut client = SseClient::post_json(addr, "/v1/runs", &body, &[])
            .unwrap_or_else(|e| panic!("{runtime}: {e}"));
        assert_eq!(client.status(), 200);
        let mut last = None;
        for _ in 0..1000 {
            let frame = client
                .next_event(Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{runtime}: {e:?}"))
                .unwrap_or_else(|| panic!("{runtime}: the stream ended without a terminal event"));
            let event: Event = serde_json::from_str(&frame.data).unwrap();
            if event.is_terminal() {
                last = Some(event);
                break;
            }
        }
        let Some(Event {
            kind: EventKind::RunCompleted { text, .. },
            ..
        }) = last
        else {
            panic!("{runtime}: the run did not complete: {last:?}")
        };
        assert!(text.contains("42"), "{runtime}: {text}");

        signal(&served.child, "INT");
        let status = wait_with_deadline(&mut served.child);
        assert!(status.success(), "{runtime}: serve exited with {status:?}");
        let rest: Vec<String> = served.log.try_iter().collect();
        assert!(
            rest.iter().any(|l| l.contains("stopped")),
            "{runtime}: {rest:?}"
        );
    }
}

/// Deltas of the free-running upstream: paced [`FREE_PACE`] apart, never waiting for the
/// reader, so a CLI that flushes only on newline, on exit or by size shows them in one or
/// two reads instead of many.
const FREE_DELTAS: usize = 40;
const FREE_PACE: Duration = Duration::from_millis(15);

fn free_running_upstream() -> GatedUpstream {
    let mut response = Response::sse();
    for k in 0..FREE_DELTAS {
        if k > 0 {
            response = response.pause(FREE_PACE);
        }
        response = response.send(openai::text_chunk(&format!("w{k:02} ")));
    }
    GatedUpstream::start([response
        .send(openai::finish_chunk("stop"))
        .send(openai::DONE)])
    .expect("the upstream starts")
}

/// Read `reader` to its end (or an error: a pty's master reads EIO once the child is
/// gone), counting the reads that returned bytes.
fn count_reads(mut reader: impl Read + Send + 'static) -> mpsc::Receiver<(String, usize)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = Vec::new();
        let mut reads = 0;
        let mut buf = [0u8; 64 * 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            reads += 1;
            text.extend_from_slice(&buf[..n]);
        }
        let _ = tx.send((String::from_utf8_lossy(&text).into_owned(), reads));
    });
    rx
}

fn assert_free_running(runtime: &str, path: &str, text: &str, reads: usize) {
    for k in 0..FREE_DELTAS {
        assert!(
            text.contains(&format!("w{k:02}")),
            "free-running delivery: through the CLI's stdout ({path}, {runtime}), delta {k} is missing: {text:?}"
        );
    }
    assert!(
        reads >= FREE_DELTAS / 3,
        "free-running delivery: through the CLI's stdout ({path}, {runtime}), {FREE_DELTAS} deltas \
         produced {} ms apart arrived in {reads} read(s), at least {} required: the CLI holds \
         output back (flushes only on newline, by size or at exit)",
        FREE_PACE.as_millis(),
        FREE_DELTAS / 3
    );
}

/// A free-running upstream through the CLI to a pipe: many separate reads, on every runtime.
#[test]
fn free_running_deltas_reach_a_piped_stdout_in_many_reads_on_every_runtime() {
    for runtime in RUNTIMES {
        let upstream = free_running_upstream();
        let mut child = agent()
            .args([
                "--runtime",
                runtime,
                "--base-url",
                &upstream.base_url(),
                "--model",
                "m",
                "hi",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the agent binary starts");
        let output = count_reads(child.stdout.take().expect("stdout is piped"));
        let status = wait_with_deadline(&mut child);
        assert!(status.success(), "{runtime}: exit {status:?}");
        let (text, reads) = output
            .recv_timeout(DEADLINE)
            .expect("stdout ends once the agent exits");
        assert_free_running(runtime, "a pipe", &text, reads);
    }
}

/// The same with stdout on a pseudo-terminal, as in an interactive shell.
#[test]
fn free_running_deltas_reach_a_terminal_in_many_reads_on_every_runtime() {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    for runtime in RUNTIMES {
        let upstream = free_running_upstream();
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("a pseudo-terminal");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("the terminal's name");
        let terminal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().expect("a UTF-8 path"))
            .expect("open the terminal");
        let mut child = agent()
            .args([
                "--runtime",
                runtime,
                "--base-url",
                &upstream.base_url(),
                "--model",
                "m",
                "hi",
            ])
            .stdout(Stdio::from(terminal))
            .stderr(Stdio::piped())
            .spawn()
            .expect("the agent binary starts");
        let output = count_reads(std::fs::File::from(master));
        let status = wait_with_deadline(&mut child);
        assert!(status.success(), "{runtime}: exit {status:?}");
        // The command's `Stdio` closed our copy of the terminal when it spawned; once the
        // child exits, the master reads EOF or EIO.
        let (text, reads) = output
            .recv_timeout(DEADLINE)
            .expect("the terminal ends once the agent exits");
        assert_free_running(runtime, "a terminal", &text, reads);
    }
}

/// SIGTERM (what `docker stop`, systemd and Kubernetes send) stops `serve` exactly like
/// Ctrl-C: an open stream ends with `run_cancelled`, and the process exits 0.
#[test]
fn serve_stops_gracefully_on_sigterm_ending_open_streams_with_run_cancelled() {
    for runtime in RUNTIMES {
        let mut served = Served::start(
            agent().args([
                "serve",
                "--runtime",
                runtime,
                "--addr",
                "127.0.0.1:0",
                "--demo-pace-ms",
                "200",
            ]),
            Duration::from_secs(10),
        );
        let addr = served.addr;
        let body = json!({"input": "Tell me something long"});
        let mut client = SseClient::post_json(addr, "/v1/runs", &body, &[])
            .unwrap_or_else(|e| panic!("{runtime}: {e}"));
        assert_eq!(client.status(), 200, "{runtime}: POST /v1/runs");
        // Wait for the first text delta: the run is live and slow (200 ms per word).
        let mut seen = Vec::new();
        loop {
            let frame = client
                .next_event(Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{runtime}: {e:?}"))
                .unwrap_or_else(|| panic!("{runtime}: the stream ended early: {seen:?}"));
            seen.push(frame.event.clone());
            if frame.event == "text_delta" {
                break;
            }
            assert!(seen.len() < 100, "{runtime}: no text delta in {seen:?}");
        }
        signal(&served.child, "TERM");
        let mut last = None;
        for _ in 0..1000 {
            match client.next_event(Duration::from_secs(10)) {
                Ok(Some(frame)) => last = Some(frame.event.clone()),
                Ok(None) => break,
                Err(err) => {
                    panic!("{runtime}: the stream broke after SIGTERM: {err:?} (last {last:?})")
                }
            }
        }
        assert_eq!(
            last.as_deref(),
            Some("run_cancelled"),
            "{runtime}: after SIGTERM the open stream must end with run_cancelled"
        );
        let status = wait_with_deadline(&mut served.child);
        assert!(
            status.success(),
            "{runtime}: serve must exit 0 on SIGTERM, exited with {status:?}"
        );
    }
}

// ------------------------------------------------------------------ bounded memory (issue 11)

/// The peak resident set of process `pid` so far, in bytes (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/<pid>/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// An upstream that streams `events` copies of one text chunk of `chunk_text` bytes, then
/// waits for `go` before `[DONE]` (so that the test can read the CLI's peak memory while it
/// still holds whatever it kept).
fn repeating_upstream(
    chunk_text: usize,
    events: usize,
) -> (std::net::SocketAddr, mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (go, wait) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        let _ = stream.read_exact(&mut body);
        let event = openai::text_chunk(&"x".repeat(chunk_text));
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
        );
        for _ in 0..events {
            if stream.write_all(event.as_bytes()).is_err() {
                return;
            }
        }
        let _ = wait.recv_timeout(DEADLINE);
        let _ = stream.write_all(b"data: [DONE]\n\n");
    });
    (addr, go)
}

/// A 192 MiB answer streams through the CLI on every runtime with its peak memory under
/// 64 MiB: the answer is printed, never kept (the run's partial text, the final event's
/// text and the renderer held it, several times, before).
#[test]
fn a_long_answer_streams_in_bounded_memory_on_every_runtime() {
    const CHUNK_TEXT: usize = 32 * 1024;
    const EVENTS: usize = 6 * 1024; // 192 MiB of text
    const BOUND: u64 = 64 * 1024 * 1024;
    let total = (CHUNK_TEXT * EVENTS) as u64;
    for runtime in RUNTIMES {
        let started = Instant::now();
        let (addr, go) = repeating_upstream(CHUNK_TEXT, EVENTS);
        let mut child = agent()
            .args([
                "--runtime",
                runtime,
                "--base-url",
                &format!("http://{addr}/v1"),
                "--model",
                "m",
                "hi",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            let mut read = 0u64;
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n as u64,
                }
                if tx.send(read).is_err() {
                    break;
                }
            }
        });
        let mut printed = 0;
        while printed < total {
            printed = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
                let _ = child.kill();
                let mut stderr = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
                panic!("{runtime}: the CLI printed {printed} of {total} bytes in time: {stderr}")
            });
        }
        // Everything is printed; the run has not ended yet: whatever was kept is held now.
        let peak = peak_rss(child.id());
        go.send(()).unwrap();
        let status = wait_with_deadline(&mut child);
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(status.success(), "{runtime}: {status:?} {stderr}");
        eprintln!(
            "{runtime}: {} MiB streamed in {:?}, peak RSS {} MiB",
            total >> 20,
            started.elapsed(),
            peak >> 20
        );
        assert!(
            peak < BOUND,
            "{runtime}: the CLI's peak RSS was {} MiB for a {} MiB answer (bound {} MiB)",
            peak >> 20,
            total >> 20,
            BOUND >> 20
        );
    }
}

// ------------------------------------------------------------- serve logs and limits (issue 15)

/// Send `request` to `addr` and read the answer until the server closes.
fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// `agent serve --log info` writes one line per request (method, path, status, run id,
/// duration) on every runtime, never the token; `--max-body-bytes` is applied.
#[test]
fn serve_logs_each_request_and_applies_its_limit_flags_on_every_runtime() {
    const TOKEN: &str = "serve-token-never-logged";
    for runtime in RUNTIMES {
        let mut served = Served::start(
            agent().args([
                "serve",
                "--runtime",
                runtime,
                "--addr",
                "127.0.0.1:0",
                "--demo-pace-ms",
                "0",
                "--log",
                "info",
                "--token",
                TOKEN,
                "--max-body-bytes",
                "64",
                "--keep-alive",
                "500ms",
            ]),
            Duration::from_secs(10),
        );
        let addr = served.addr;
        let health = exchange(
            addr,
            "GET /healthz?probe=1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        );
        assert!(health.starts_with("HTTP/1.1 200"), "{runtime}: {health}");
        let body = r#"{"input":"What is 6 * 7?"}"#;
        let run = exchange(
            addr,
            &format!(
                "POST /v1/runs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        assert!(run.starts_with("HTTP/1.1 200"), "{runtime}: {run}");
        assert!(run.contains("run_completed"), "{runtime}: {run}");
        let big = format!(r#"{{"input":"{}"}}"#, "x".repeat(100));
        let refused = exchange(
            addr,
            &format!(
                "POST /v1/runs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{big}",
                big.len()
            ),
        );
        assert!(
            refused.starts_with("HTTP/1.1 413"),
            "{runtime}: --max-body-bytes 64 must refuse a 110-byte body: {refused}"
        );

        // The three request lines, in any order, within the deadline.
        let mut lines = Vec::new();
        let started = Instant::now();
        let wanted = |lines: &[String]| {
            let health = lines
                .iter()
                .any(|l| l.contains("/healthz") && l.contains("status=200"));
            let run = lines.iter().any(|l| {
                l.contains("\"/v1/runs\"") && l.contains("status=200") && l.contains("run_id=")
            });
            let refused = lines
                .iter()
                .any(|l| l.contains("\"/v1/runs\"") && l.contains("status=413"));
            health && run && refused
        };
        while !wanted(&lines) && started.elapsed() < Duration::from_secs(10) {
            if let Ok(line) = served.log.recv_timeout(Duration::from_millis(100)) {
                lines.push(line);
            }
        }
        signal(&served.child, "INT");
        wait_with_deadline(&mut served.child);
        lines.extend(served.log.try_iter());
        let log = lines.join("\n");
        assert!(
            wanted(&lines),
            "{runtime}: missing request lines in:\n{log}"
        );
        for line in lines.iter().filter(|l| l.contains("method=")) {
            assert!(
                line.contains("INFO") && line.contains("duration_ms="),
                "{runtime}: {line}"
            );
        }
        assert!(
            !log.contains(TOKEN),
            "{runtime}: the token was logged:\n{log}"
        );
        assert!(
            !log.contains("probe=1"),
            "{runtime}: the query was logged:\n{log}"
        );
    }
}

#[test]
fn serve_rejects_a_bad_duration_flag() {
    let output = run(agent().args(["serve", "--write-timeout", "30", "--addr", "127.0.0.1:0"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("needs a unit"),
        "{}",
        text(&output.stderr)
    );
}

// ------------------------------------------------------------------- Retry-After (issue 13)

/// A long `Retry-After` is not waited for beyond `--first-byte-timeout`: the CLI fails at
/// once saying why; a short one is waited for, and the CLI says so on stderr.
#[test]
fn retry_after_is_announced_and_bounded_by_the_first_byte_timeout() {
    let busy = |after: &str| {
        Response::json(429, &json!({"error": {"message": "slow down"}}))
            .header("retry-after", after)
    };
    let upstream = GatedUpstream::start([busy("3600")]).unwrap();
    let started = Instant::now();
    let output = run(agent().args([
        "--base-url",
        &upstream.base_url(),
        "--model",
        "m",
        "--first-byte-timeout",
        "2",
        "hi",
    ]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the CLI waited {:?}",
        started.elapsed()
    );
    assert!(stderr.contains("3600 s"), "{stderr}");
    assert_eq!(upstream.request_count(), 1);

    let upstream =
        GatedUpstream::start([busy("1"), openai::answer(&["after ", "the wait"])]).unwrap();
    let output = run(agent().args([
        "--base-url",
        &upstream.base_url(),
        "--model",
        "m",
        "--first-byte-timeout",
        "5",
        "hi",
    ]));
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(text(&output.stdout).trim(), "after the wait");
    assert!(
        stderr.contains("waiting 1.0 s before retry 1 of"),
        "the CLI must say it is waiting: {stderr}"
    );
}

// ------------------------------------------- the CLI as a new user meets it (issue, items 1-5)

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Item 1: with `OPENAI_API_KEY` set, the first line says that OpenAI answers and why, the
/// offline hint speaks of what the user did (the key, `--demo`; not `--base-url`), and
/// `--demo` forces the built-in model. The key is never printed. (OpenAI is reached through
/// an `HTTPS_PROXY` on a closed local port: the test stays on 127.0.0.1.)
#[test]
fn an_openai_key_is_announced_with_its_reason_and_demo_overrides_it() {
    const KEY: &str = "sk-test-never-printed";
    let proxy = format!("http://127.0.0.1:{}", closed_port());
    let output = run(agent()
        .env("OPENAI_API_KEY", KEY)
        .env("HTTPS_PROXY", &proxy)
        .env("https_proxy", &proxy)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .args(["--connect-timeout", "2", "What is 12 * (3 + 4)?"]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.lines().next(),
        Some(
            "agent: using OpenAI gpt-4o-mini at https://api.openai.com/v1 because \
             OPENAI_API_KEY is set; pass --demo for the built-in model"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("could not connect to https://api.openai.com/v1"),
        "{stderr}"
    );
    assert!(stderr.contains("pass --demo"), "{stderr}");
    assert!(
        !stderr.contains("--base-url"),
        "the user passed no --base-url: {stderr}"
    );
    assert!(!stderr.contains(KEY) && !text(&output.stdout).contains(KEY));

    let output = run(agent()
        .env("OPENAI_API_KEY", KEY)
        .env("HTTPS_PROXY", &proxy)
        .args(["--demo", "--demo-pace-ms", "0", "What is 12 * (3 + 4)?"]));
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .next()
            .is_some_and(|l| l.contains("built-in demo model (--demo)")),
        "{stderr}"
    );
    assert!(text(&output.stdout).contains("The result is 84"));
    assert!(!stderr.contains(KEY));

    // Without a key, the first line says why the demo model answers.
    let output = run(agent().args(["--demo-pace-ms", "0", "hello"]));
    assert!(
        text(&output.stderr)
            .lines()
            .next()
            .is_some_and(|l| l.contains("OPENAI_API_KEY is not set")),
        "{}",
        text(&output.stderr)
    );
    // --demo and --base-url contradict each other.
    let output = run(agent().args(["--demo", "--base-url", "http://127.0.0.1:9/v1", "hi"]));
    assert_eq!(output.status.code(), Some(2));
}

/// Run the agent with `input` written to its stdin (from a thread: the agent may stop
/// reading early), killed after `DEADLINE`.
fn run_with_stdin(command: &mut Command, input: Vec<u8>) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the agent binary starts");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stdout = count_reads(child.stdout.take().unwrap());
    let stderr = count_reads(child.stderr.take().unwrap());
    let status = wait_with_deadline(&mut child);
    let _ = writer.join();
    let (stdout, _) = stdout.recv_timeout(DEADLINE).unwrap();
    let (stderr, _) = stderr.recv_timeout(DEADLINE).unwrap();
    Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}

/// Item 2: the prompt comes from stdin when none is given and stdin is not a terminal, or
/// with `-`; prompts far beyond the argument-length limit work; beyond 16 MiB, a clear error.
#[test]
fn the_prompt_is_read_from_stdin() {
    let output = run_with_stdin(
        agent().args(["--demo-pace-ms", "0"]),
        b"What is 12 * (3 + 4)?\n".to_vec(),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("The result is 84"));

    let output = run_with_stdin(
        agent().args(["--demo-pace-ms", "0", "-"]),
        b"What is 6 * 7?".to_vec(),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("The result is 42"));

    // 512 KiB: far more than one exec argument may hold (128 KiB on Linux).
    let mut long = "Please tell me about this. "
        .repeat(512 * 1024 / 27)
        .into_bytes();
    long.extend_from_slice(b"What is 6 * 7?");
    let output = run_with_stdin(
        agent().args(["--json", "--demo-pace-ms", "0"]),
        long.clone(),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("run_completed"));

    let output = run_with_stdin(
        agent().args(["--demo-pace-ms", "0"]),
        vec![b'x'; 16 * 1024 * 1024 + 1],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("larger than 16 MiB"),
        "{}",
        text(&output.stderr)
    );

    let output = run_with_stdin(&mut agent(), b"  \n".to_vec());
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("stdin is empty"));
}

fn reasoning_chunk(text: &str) -> String {
    let chunk = json!({
        "id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": 0,
        "model": "upstream-model",
        "choices": [{"index": 0, "delta": {"reasoning_content": text}, "finish_reason": null}],
    });
    format!("data: {chunk}\n\n")
}

/// Item 3: reasoning is shown apart from the answer (labelled on a pipe) and each stream
/// ends with a newline.
#[test]
fn reasoning_is_labelled_apart_from_the_answer_and_streams_end_with_a_newline() {
    for runtime in RUNTIMES {
        let upstream = GatedUpstream::start([openai::finish(
            Response::sse()
                .send(reasoning_chunk("The user wants "))
                .send(reasoning_chunk("a greeting."))
                .send(openai::text_chunk("Hello"))
                .send(openai::text_chunk(" there.")),
        )])
        .unwrap();
        let output = run(agent().args([
            "--runtime",
            runtime,
            "--base-url",
            &upstream.base_url(),
            "--model",
            "m",
            "hi",
        ]));
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert!(output.status.success(), "{runtime}: {stderr}");
        assert_eq!(stdout, "Hello there.\n", "{runtime}");
        assert!(
            stderr.contains("\nthinking: The user wants a greeting.\n"),
            "{runtime}: {stderr:?}"
        );
        assert!(stderr.ends_with('\n'), "{runtime}: {stderr:?}");
    }
}

/// Item 5: a failing tool prints its error once; no trailing blank before the line break at
/// a tool call.
#[test]
fn tool_lines_are_clean_when_piped() {
    let output = run(agent().args(["--demo-pace-ms", "0", "What is 1 / 0?"]));
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("[tool] calculator failed: the result is not a finite number"),
        "{stderr}"
    );
    assert!(!stderr.contains("failed (failed)"), "{stderr}");
    assert!(stdout.starts_with("Let me calculate that.\n"), "{stdout:?}");
    assert!(!stdout.contains(" \n"), "{stdout:?}");
}

/// Item 5: with stderr on a terminal, the spinner shows again after a tool result, while the
/// model's second round is awaited (the upstream waits 600 ms before answering it).
#[test]
fn the_spinner_shows_again_after_a_tool_result_on_a_terminal() {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let upstream = GatedUpstream::start([
        Response::sse()
            .send(openai::tool_call_chunk(
                0,
                "call_1",
                "calculator",
                r#"{"expression":"2 + 3"}"#,
            ))
            .send(openai::finish_chunk("tool_calls"))
            .send(openai::DONE),
        openai::finish(
            Response::sse()
                .pause(Duration::from_millis(600))
                .send(openai::text_chunk("The result is 5.")),
        ),
    ])
    .unwrap();
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("a pseudo-terminal");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("the terminal's name");
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().expect("a UTF-8 path"))
        .expect("open the terminal");
    let mut child = agent()
        .args([
            "--base-url",
            &upstream.base_url(),
            "--model",
            "m",
            "What is 2 + 3?",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(terminal))
        .spawn()
        .expect("the agent binary starts");
    let stdout = count_reads(child.stdout.take().unwrap());
    let terminal = count_reads(std::fs::File::from(master));
    let status = wait_with_deadline(&mut child);
    assert!(status.success());
    let (stderr, _) = terminal.recv_timeout(DEADLINE).unwrap();
    let (stdout, _) = stdout.recv_timeout(DEADLINE).unwrap();
    assert!(stdout.contains("The result is 5"), "{stdout}");
    let after = stderr
        .split("[tool] calculator -> 5")
        .nth(1)
        .unwrap_or_else(|| panic!("no tool result on the terminal: {stderr:?}"));
    assert!(
        after.contains("thinking..."),
        "no spinner after the tool result: {stderr:?}"
    );
}

/// Item 5: `--addr` takes a host name; `serve --help` offers no run-only options; the help
/// says which model answers and what each runtime uses.
#[test]
fn serve_resolves_host_names_and_the_help_tells_what_a_new_user_needs() {
    let mut served = Served::start(
        agent().args(["serve", "--addr", "localhost:0", "--demo-pace-ms", "0"]),
        Duration::from_secs(10),
    );
    let addr = served.addr;
    let health = exchange(
        addr,
        "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    signal(&served.child, "INT");
    assert!(wait_with_deadline(&mut served.child).success());
    let output = run(agent().args(["serve", "--addr", "localhost"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("HOST:PORT"));

    let output = run(agent().args(["serve", "--help"]));
    let help = text(&output.stdout);
    for flag in ["--json", "--stats", "--no-spinner"] {
        assert!(!help.contains(flag), "serve --help lists {flag}:\n{help}");
    }
    let output = run(agent().args(["chat", "--help"]));
    assert!(text(&output.stdout).contains("--json"));
    let help = text(&run(agent().arg("--help")).stdout);
    for needle in [
        "demo model",
        "OPENAI_API_KEY",
        "--demo",
        "TokioClient",
        "hyper server",
        "async-net",
        "ureq client",
        "agent-http1",
    ] {
        assert!(
            help.contains(needle),
            "agent --help lacks {needle:?}:\n{help}"
        );
    }
}

/// What a terminal shows, read from a pty's master on a thread; answers the line editor's
/// cursor-position query (`ESC [ 6 n`) as a terminal would.
struct Screen {
    master: std::fs::File,
    chunks: mpsc::Receiver<String>,
    seen: String,
    queries_answered: usize,
}

impl Screen {
    fn new(master: std::fs::File) -> Self {
        let reader = master.try_clone().expect("a second handle on the master");
        let (tx, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = reader;
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0
                    || tx
                        .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                        .is_err()
                {
                    break;
                }
            }
        });
        Screen {
            master,
            chunks,
            seen: String::new(),
            queries_answered: 0,
        }
    }

    /// Wait (10 s at most) until the screen shows `needle` after byte `from`; return where
    /// it ends.
    fn wait_for(&mut self, needle: &str, from: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            while self.seen.matches("\x1b[6n").count() > self.queries_answered {
                self.queries_answered += 1;
                self.type_keys("\x1b[1;1R");
            }
            if let Some(at) = self.seen[from..].find(needle) {
                return from + at + needle.len();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .chunks
                .recv_timeout(left.min(Duration::from_millis(50)))
            {
                Ok(chunk) => self.seen.push_str(&chunk),
                Err(_) if Instant::now() < deadline => {}
                Err(_) => panic!(
                    "the terminal never showed {needle:?}; it shows {:?}",
                    self.seen
                ),
            }
        }
    }

    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }
}

/// Item 4, through a pty that is the chat's controlling terminal (`setsid --ctty`): Ctrl-C
/// (`\x03` typed on the master) mid-answer cancels that answer and the chat goes on; the
/// arrow keys edit the line and Up recalls history; Ctrl-D quits with exit 0 after a line
/// break.
#[test]
fn chat_on_a_terminal_cancels_an_answer_on_ctrl_c_keeps_history_and_quits_on_ctrl_d() {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("a pseudo-terminal");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("the terminal's name");
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().expect("a UTF-8 path"))
            .expect("open the terminal")
    };
    let mut child = Command::new("setsid")
        .arg("--ctty")
        .arg(env!("CARGO_BIN_EXE_agent"))
        .args(["chat", "--demo-pace-ms", "100"])
        .env_remove("OPENAI_API_KEY")
        .env("TERM", "xterm")
        .stdin(Stdio::from(open()))
        .stdout(Stdio::from(open()))
        .stderr(Stdio::from(open()))
        .spawn()
        .expect("setsid and the agent start");
    let mut screen = Screen::new(std::fs::File::from(master));
    let mut at = screen.wait_for("you> ", 0);
    // A long scripted answer (100 ms a word); stop it after its first words.
    screen.type_keys("tell me something\r");
    at = screen.wait_for("built-in demo", at);
    screen.type_keys("\x03");
    at = screen.wait_for("cancelled", at);
    at = screen.wait_for("you> ", at);
    assert!(
        !screen.seen.contains("set OPENAI_API_KEY"),
        "the answer ran to its end despite Ctrl-C: {:?}",
        screen.seen
    );
    // Editing: type "what is 2 + 9", go left over the 9, delete it, type 3.
    screen.type_keys("what is 2 + 9\x1b[D\x1b[3~3\r");
    at = screen.wait_for("The result is 5", at);
    at = screen.wait_for("you> ", at);
    assert!(!screen.seen.contains("^[[D"), "{:?}", screen.seen);
    // History: Up recalls "what is 2 + 3"; Enter asks it again.
    screen.type_keys("\x1b[A\r");
    at = screen.wait_for("The result is 5", at);
    at = screen.wait_for("you> ", at);
    screen.type_keys("\x04");
    let status = wait_with_deadline(&mut child);
    assert!(
        status.success(),
        "Ctrl-D must quit with 0: {status:?} {:?}",
        screen.seen
    );
    // After Ctrl-D, the next output starts a fresh line.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match screen.chunks.recv_timeout(Duration::from_millis(100)) {
            Ok(chunk) => screen.seen.push_str(&chunk),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(_) => {}
        }
    }
    let tail = &screen.seen[at..];
    assert!(tail.contains('\n'), "no line break after Ctrl-D: {tail:?}");
}

/// `--provider anthropic --base-url`: the Messages API is spoken on every runtime (the key
/// from `ANTHROPIC_API_KEY` as `x-api-key`, never printed), the answer streams to stdout,
/// and the first line says which model, where and why.
#[test]
fn provider_anthropic_speaks_the_messages_api_on_every_runtime() {
    const KEY: &str = "sk-ant-never-printed";
    for runtime in RUNTIMES {
        let answer = Response::sse()
            .send(messages::message_start(4))
            .send(messages::text_start(0))
            .send(messages::text_delta(0, "Bonjour"))
            .send(messages::ping())
            .send(messages::text_delta(0, " 🌍"))
            .send(messages::block_stop(0))
            .send(messages::end("end_turn", 2));
        let upstream = GatedUpstream::start([answer]).unwrap();
        let output = run(agent().env("ANTHROPIC_API_KEY", KEY).args([
            "--runtime",
            runtime,
            "--provider",
            "anthropic",
            "--base-url",
            &upstream.base_url(),
            "--model",
            "claude-test",
            "--max-tokens",
            "64",
            "--instructions",
            "Be brief.",
            "hi",
        ]));
        let stderr = text(&output.stderr);
        assert!(output.status.success(), "{runtime}: {stderr}");
        assert_eq!(text(&output.stdout).trim_end(), "Bonjour 🌍", "{runtime}");
        assert_eq!(
            stderr.lines().next(),
            Some(
                format!(
                    "agent: using Anthropic claude-test at {} (--provider anthropic --base-url), \
                     with the API key from ANTHROPIC_API_KEY",
                    upstream.base_url()
                )
                .as_str()
            ),
            "{runtime}: {stderr}"
        );
        let request = &upstream.requests()[0];
        assert_eq!(request.path, "/v1/messages", "{runtime}");
        assert_eq!(request.header("x-api-key"), Some(KEY), "{runtime}");
        assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
        let body = request.json().unwrap();
        assert_eq!(body["max_tokens"], json!(64), "{runtime}: {body}");
        assert_eq!(body["system"], json!("Be brief."), "{runtime}: {body}");
        assert!(!stderr.contains(KEY) && !text(&output.stdout).contains(KEY));
    }
}

/// `--provider anthropic` without a key (and without `--base-url`) is a usage error naming
/// the variable; `ANTHROPIC_API_KEY` alone selects Anthropic and says so.
#[test]
fn provider_anthropic_needs_its_key_and_the_key_alone_is_announced() {
    let output = run(agent().args(["--provider", "anthropic", "hi"]));
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("set ANTHROPIC_API_KEY"),
        "{}",
        text(&output.stderr)
    );

    // Anthropic is reached through an HTTPS_PROXY on a closed local port: the test stays on
    // 127.0.0.1 and fails to connect, after the first line.
    let proxy = format!("http://127.0.0.1:{}", closed_port());
    let output = run(agent()
        .env("ANTHROPIC_API_KEY", "sk-ant-x")
        .env("HTTPS_PROXY", &proxy)
        .env("https_proxy", &proxy)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .args(["--connect-timeout", "2", "hi"]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.lines().next(),
        Some(
            "agent: using Anthropic claude-sonnet-4-5 at https://api.anthropic.com/v1 because \
             ANTHROPIC_API_KEY is set and OPENAI_API_KEY is not; pass --demo for the built-in model"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("Anthropic was chosen because"), "{stderr}");
    assert!(!stderr.contains("sk-ant-x"));
}
