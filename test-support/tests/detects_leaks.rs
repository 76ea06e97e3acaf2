//! The leak and soak cases must fail a backend that leaks, with a message that names what
//! leaked. Each test wraps this workspace's threads backend with one deliberate fault:
//! `consume` leaking a thread or a socket per run, or a TCP proxy in front of its server
//! leaking a socket per connection, or panicking once. The same wrapper without a fault
//! passes, so it is the fault that fails the case.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agent_core::agent::Agent;
use agent_core::event::Event;
use agent_core::http::HttpClient;
use agent_core::runtime::SharedRuntime;
use agent_core::server::ServerConfig;
use conformance::cases;
use conformance::runner::{MakeBackend, Status, run_case};
use conformance::{Backend, RunningServer};
use test_support::backends::blocking::Threads;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leak {
    /// No fault (a proxy in front of the server all the same).
    None,
    /// `consume` leaves a thread behind and a socket open after each run.
    ThreadAndSocketPerRun,
    /// The server leaves a socket open per connection.
    SocketPerConnection,
    /// The server panics (on one of its threads) after its 250th connection (in the
    /// measured round of the concurrent soak, after its warm-up round of 201).
    PanicOnce,
}

struct Leaky {
    inner: Threads,
    leak: Leak,
}

impl Leaky {
    fn new(leak: Leak) -> Self {
        Leaky {
            inner: Threads,
            leak,
        }
    }
}

impl Backend for Leaky {
    fn name(&self) -> String {
        format!("threads, leaking ({:?})", self.leak)
    }

    fn runtime(&self) -> SharedRuntime {
        self.inner.runtime()
    }

    fn http_client(&self) -> Arc<dyn HttpClient> {
        self.inner.http_client()
    }

    fn consume(
        &self,
        agent: &Agent,
        input: &str,
        on_event: &mut dyn FnMut(Event) -> ControlFlow<()>,
    ) {
        self.inner.consume(agent, input, on_event);
        if self.leak == Leak::ThreadAndSocketPerRun {
            std::thread::spawn(|| {
                loop {
                    std::thread::park();
                }
            });
            if let Ok(socket) = TcpListener::bind("127.0.0.1:0") {
                std::mem::forget(socket);
            }
        }
    }

    fn start_server(&self, agent: Agent, config: ServerConfig) -> Box<dyn RunningServer> {
        let server = self.inner.start_server(agent, config);
        Box::new(Proxy::start(server, self.leak).expect("the proxy failed to start"))
    }

    fn is_single_threaded(&self) -> bool {
        false
    }
}

/// A TCP proxy in front of a server: one thread per direction per connection.
struct Proxy {
    addr: SocketAddr,
    server: Box<dyn RunningServer>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(server: Box<dyn RunningServer>, leak: Leak) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (target, stopping) = (server.addr(), stop.clone());
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().enumerate() {
                if stopping.load(Ordering::Acquire) {
                    break;
                }
                let Ok(client) = client else { continue };
                std::thread::spawn(move || relay(client, target, leak, n));
            }
        });
        Ok(Proxy { addr, server, stop })
    }
}

fn relay(client: TcpStream, target: SocketAddr, leak: Leak, n: usize) {
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    if leak == Leak::SocketPerConnection
        && let Ok(clone) = client.try_clone()
    {
        std::mem::forget(clone);
    }
    let (Ok(mut from_client), Ok(mut to_server)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let back = std::thread::spawn(move || {
        let (mut from_server, mut to_client) = (server, client);
        let _ = copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Write);
    });
    let _ = copy(&mut from_client, &mut to_server);
    let _ = to_server.shutdown(Shutdown::Write);
    let _ = back.join();
    if leak == Leak::PanicOnce && n == 250 {
        panic!("the proxy's relay thread failed (a deliberate fault of the test)");
    }
}

/// Copy until the end of `from` or an error, flushing every read at once.
fn copy(from: &mut TcpStream, to: &mut TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
    }
}

impl RunningServer for Proxy {
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
    let case = cases::find(case).expect("case");
    run_case(case, make, Duration::from_secs(60)).status
}

fn failure(case: &str, make: MakeBackend) -> String {
    match run(case, make) {
        Status::Failed(message) => message,
        other => panic!("{case} should fail on a leaking backend, got {other:?}"),
    }
}

#[test]
fn the_wrapper_without_a_fault_passes() {
    for case in ["leak_consume_runs", "leak_server_runs", "soak_concurrent"] {
        assert_eq!(
            run(case, || Box::new(Leaky::new(Leak::None))),
            Status::Passed,
            "{case}"
        );
    }
}

/// `(threads, fds)` of the `"<n> threads, <n> fds, …"` that follows `after` in `message`.
fn counts_after(message: &str, after: &str) -> (u64, u64) {
    let rest = &message[message.find(after).expect(after) + after.len()..];
    let mut numbers = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().unwrap());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

#[test]
fn a_thread_and_a_socket_leaked_per_run_fail_the_leak_case() {
    let message = failure("leak_consume_runs", || {
        Box::new(Leaky::new(Leak::ThreadAndSocketPerRun))
    });
    assert!(message.contains("leak after"), "{message}");
    let now = counts_after(&message, "not released within 5s: ");
    let baseline = counts_after(&message, "now, baseline ");
    assert!(
        now.0 > baseline.0 + 1 && now.1 > baseline.1,
        "both the threads and the sockets are named: {message}"
    );
    assert!(message.contains("socket ×"), "{message}");
}

#[test]
fn a_socket_leaked_per_connection_fails_the_soak() {
    let message = failure("soak_concurrent", || {
        Box::new(Leaky::new(Leak::SocketPerConnection))
    });
    assert!(
        message.contains("leak after 200 concurrent runs") && message.contains("fds"),
        "{message}"
    );
}

#[test]
fn a_panic_in_the_server_fails_the_soak() {
    let message = failure("soak_concurrent", || Box::new(Leaky::new(Leak::PanicOnce)));
    assert!(
        message.contains("panic(s) in the process") && message.contains("deliberate fault"),
        "{message}"
    );
}
