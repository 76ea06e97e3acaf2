//! The free-running cases catch what the lockstep cases cannot: a buffer that flushes when
//! the producer has been quiet for 40 ms or when 8 KiB have piled up. Each test wraps the
//! threads backend with one such buffer — in its server (a coalescing relay in front of the
//! real server), in its HTTP client (the client reads the upstream through a coalescing
//! relay), or in `consume` — and checks that the lockstep case still passes where it can
//! (the buffer flushes just in time, since the lockstep producer waits) while the
//! free-running case fails, naming the path and the number of bursts.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agent_core::agent::Agent;
use agent_core::event::Event;
use agent_core::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use agent_core::runtime::{BoxFuture, SharedRuntime};
use agent_core::server::ServerConfig;
use conformance::cases;
use conformance::runner::{MakeBackend, Status, run_case};
use conformance::{Backend, RunningServer};
use test_support::backends::blocking::Threads;

/// Flush after this long without new bytes.
const IDLE_FLUSH: Duration = Duration::from_millis(40);
/// Flush once this many bytes are held.
const SIZE_FLUSH: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Buffer {
    /// The server's bytes pass through a relay that coalesces them.
    Server,
    /// `consume` holds events and hands them over on idle or by count.
    Consume,
    /// The HTTP client reads the upstream through a relay that coalesces its bytes.
    Client,
}

struct Buffered {
    buffer: Buffer,
    inner: Threads,
}

impl Backend for Buffered {
    fn name(&self) -> String {
        format!("threads behind a coalescing buffer ({:?})", self.buffer)
    }

    fn runtime(&self) -> SharedRuntime {
        self.inner.runtime()
    }

    fn http_client(&self) -> Arc<dyn HttpClient> {
        let inner = self.inner.http_client();
        if self.buffer != Buffer::Client {
            return inner;
        }
        Arc::new(CoalescingClient(inner))
    }

    fn consume(
        &self,
        agent: &Agent,
        input: &str,
        on_event: &mut dyn FnMut(Event) -> ControlFlow<()>,
    ) {
        if self.buffer != Buffer::Consume {
            return self.inner.consume(agent, input, on_event);
        }
        // Hold events; hand them over once 40 ms passed since the last one arrived (checked
        // when the next one comes, or at the end) or 80 are held (≈ 8 KiB of frames).
        let mut held: Vec<Event> = Vec::new();
        let mut last = Instant::now();
        let mut stopped = false;
        self.inner.consume(agent, input, &mut |event| {
            if last.elapsed() >= IDLE_FLUSH || held.len() >= 80 {
                for held in held.drain(..) {
                    if on_event(held).is_break() {
                        stopped = true;
                    }
                }
            }
            last = Instant::now();
            held.push(event);
            if stopped {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        for held in held {
            if stopped || on_event(held).is_break() {
                return;
            }
        }
    }

    fn start_server(&self, agent: Agent, config: ServerConfig) -> Box<dyn RunningServer> {
        let server = self.inner.start_server(agent, config);
        if self.buffer != Buffer::Server {
            return server;
        }
        Box::new(CoalescingRelay::start(server).expect("the relay binds 127.0.0.1"))
    }

    fn is_single_threaded(&self) -> bool {
        false
    }
}

/// An HTTP client that reaches every upstream through a [`relay`] of its own.
#[derive(Debug)]
struct CoalescingClient(Arc<dyn HttpClient>);

impl HttpClient for CoalescingClient {
    fn send(&self, mut request: HttpRequest) -> BoxFuture<Result<HttpResponse, HttpError>> {
        // The suite's upstreams are `http://127.0.0.1:PORT/...`.
        let rest = request.url.trim_start_matches("http://");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let target: SocketAddr = authority.parse().expect("an upstream on 127.0.0.1");
        let listener = TcpListener::bind("127.0.0.1:0").expect("the relay binds");
        let relay_addr = listener.local_addr().expect("the relay's address");
        std::thread::spawn(move || {
            if let Ok((client, _)) = listener.accept() {
                relay(client, target);
            }
        });
        request.url = format!("http://{relay_addr}{path}");
        self.0.send(request)
    }
}

/// A TCP relay in front of a server that holds the server's bytes until 40 ms passed
/// without new ones or 8 KiB are held: the "buffering proxy" of the issue.
struct CoalescingRelay {
    addr: SocketAddr,
    server: Box<dyn RunningServer>,
    stop: Arc<AtomicBool>,
}

impl CoalescingRelay {
    fn start(server: Box<dyn RunningServer>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (target, stopping) = (server.addr(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::Acquire) {
                    break;
                }
                let Ok(client) = client else { continue };
                std::thread::spawn(move || relay(client, target));
            }
        });
        Ok(CoalescingRelay { addr, server, stop })
    }
}

fn relay(client: TcpStream, target: SocketAddr) {
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let (Ok(mut from_client), Ok(mut to_server)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from_client.read(&mut buf) {
            if n == 0 || to_server.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut from_server, mut to_client) = (server, client);
    let _ = from_server.set_read_timeout(Some(IDLE_FLUSH));
    let mut held = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match from_server.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                held.extend_from_slice(&buf[..n]);
                if held.len() >= SIZE_FLUSH && to_client.write_all(&held).is_ok() {
                    held.clear();
                }
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if !held.is_empty() {
                    if to_client.write_all(&held).is_err() {
                        break;
                    }
                    held.clear();
                }
            }
            Err(_) => break,
        }
    }
    let _ = to_client.write_all(&held);
    let _ = to_client.shutdown(Shutdown::Write);
}

impl RunningServer for CoalescingRelay {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn running_streams(&self) -> Option<usize> {
        self.server.running_streams()
    }

    fn shutdown(self: Box<Self>) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        self.server.shutdown();
    }
}

fn run(case: &str, make: MakeBackend) -> Status {
    let case = cases::find(case).expect("the case exists");
    run_case(case, make, Duration::from_secs(60)).status
}

fn buffered_server() -> Box<dyn Backend> {
    Box::new(Buffered {
        buffer: Buffer::Server,
        inner: Threads,
    })
}

fn buffered_client() -> Box<dyn Backend> {
    Box::new(Buffered {
        buffer: Buffer::Client,
        inner: Threads,
    })
}

fn buffered_consume() -> Box<dyn Backend> {
    Box::new(Buffered {
        buffer: Buffer::Consume,
        inner: Threads,
    })
}

#[test]
fn a_server_behind_a_coalescing_buffer_passes_lockstep_but_fails_free_running() {
    for lockstep in ["incremental_server_runs", "incremental_server_chat"] {
        assert_eq!(
            run(lockstep, buffered_server),
            Status::Passed,
            "{lockstep}: the idle flush fires just in time for a lockstep producer (that is the blind spot)"
        );
    }
    for (case, path) in [
        ("free_running_server_runs", "POST /v1/runs"),
        ("free_running_server_chat", "POST /v1/chat/completions"),
    ] {
        match run(case, buffered_server) {
            Status::Failed(message) => assert!(
                message.contains("free-running delivery")
                    && message.contains(path)
                    && message.contains("burst"),
                "{case}: the failure must name the path and the burst count: {message}"
            ),
            other => panic!("{case} must fail behind a coalescing buffer, got {other:?}"),
        }
    }
}

#[test]
fn a_consume_that_coalesces_events_fails_free_running() {
    match run("free_running_consume", buffered_consume) {
        Status::Failed(message) => assert!(
            message.contains("free-running delivery: through consume") && message.contains("burst"),
            "the failure must name the path and the burst count: {message}"
        ),
        other => panic!("free_running_consume must fail on a coalescing consume, got {other:?}"),
    }
    match run("free_running_http", buffered_consume) {
        Status::Failed(message) => assert!(
            message.contains("HTTP client") && message.contains("burst"),
            "the failure must name the path and the burst count: {message}"
        ),
        other => panic!("free_running_http must fail on a coalescing consume, got {other:?}"),
    }
}

#[test]
fn a_client_that_reads_through_a_coalescing_buffer_passes_lockstep_but_fails_free_running() {
    assert_eq!(
        run("incremental_http", buffered_client),
        Status::Passed,
        "incremental_http: the idle flush fires just in time for a lockstep upstream"
    );
    match run("free_running_http", buffered_client) {
        Status::Failed(message) => assert!(
            message.contains("HTTP client") && message.contains("burst"),
            "the failure must name the path and the burst count: {message}"
        ),
        other => panic!("free_running_http must fail behind a coalescing client, got {other:?}"),
    }
}
