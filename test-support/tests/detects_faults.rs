//! The suite must fail broken backends, with a message that names the problem. Each test
//! runs a real case on a backend with one deliberate fault (on plain threads).

use std::ops::ControlFlow;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::agent::Agent;
use agent_core::event::Event;
use agent_core::http::{HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpResponse};
use agent_core::runtime::{BlockingJob, BoxFuture, Runtime, SharedRuntime, TestRuntime, block_on};
use agent_core::server::ServerConfig;
use conformance::cases;
use conformance::runner::{MakeBackend, Status, run_case};
use conformance::{Backend, RunningServer};
use futures_util::StreamExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// `consume` collects every event before handing any over.
    Buffers,
    /// `consume` keeps calling back after `Break`.
    IgnoresBreak,
    /// The blocking pool has a single thread.
    SerialBlockingPool,
}

#[derive(Debug)]
struct SerialRuntime {
    jobs: Mutex<mpsc::Sender<BlockingJob>>,
}

impl SerialRuntime {
    fn new() -> Self {
        let (tx, rx) = mpsc::channel::<BlockingJob>();
        std::thread::spawn(move || {
            for job in rx {
                job();
            }
        });
        SerialRuntime {
            jobs: Mutex::new(tx),
        }
    }
}

impl Runtime for SerialRuntime {
    fn name(&self) -> &'static str {
        "serial"
    }
    fn spawn_blocking(&self, job: BlockingJob) {
        let _ = self.jobs.lock().unwrap().send(job);
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<()> {
        TestRuntime::new().sleep(duration)
    }
    fn spawn(&self, future: BoxFuture<()>) {
        TestRuntime::new().spawn(future);
    }
}

#[derive(Debug)]
struct NoClient;

impl HttpClient for NoClient {
    fn send(&self, _request: HttpRequest) -> BoxFuture<Result<HttpResponse, HttpError>> {
        Box::pin(async { Err(HttpError::new(HttpErrorKind::Connect, "no client")) })
    }
}

struct Faulty {
    fault: Fault,
    runtime: SharedRuntime,
}

impl Faulty {
    fn new(fault: Fault) -> Self {
        let runtime: SharedRuntime = match fault {
            Fault::SerialBlockingPool => Arc::new(SerialRuntime::new()),
            _ => Arc::new(TestRuntime::new()),
        };
        Faulty { fault, runtime }
    }
}

impl Backend for Faulty {
    fn name(&self) -> String {
        format!("faulty ({:?})", self.fault)
    }

    fn runtime(&self) -> SharedRuntime {
        self.runtime.clone()
    }

    fn http_client(&self) -> Arc<dyn HttpClient> {
        Arc::new(NoClient)
    }

    fn consume(
        &self,
        agent: &Agent,
        input: &str,
        on_event: &mut dyn FnMut(Event) -> ControlFlow<()>,
    ) {
        let mut run = agent.run(input);
        match self.fault {
            Fault::Buffers => {
                let events: Vec<Event> = block_on((&mut run).collect());
                for event in events {
                    if on_event(event).is_break() {
                        return;
                    }
                }
            }
            Fault::IgnoresBreak => {
                while let Some(event) = block_on(run.next()) {
                    let _ = on_event(event);
                }
            }
            Fault::None | Fault::SerialBlockingPool => {
                while let Some(event) = block_on(run.next()) {
                    if on_event(event).is_break() {
                        return;
                    }
                }
            }
        }
    }

    fn start_server(&self, _agent: Agent, _config: ServerConfig) -> Box<dyn RunningServer> {
        panic!("this test backend has no server")
    }

    fn is_single_threaded(&self) -> bool {
        false
    }
}

fn failure(case: &str, make: MakeBackend) -> String {
    let case = cases::find(case).expect("case");
    let run = run_case(case, make, Duration::from_secs(30));
    match run.status {
        Status::Failed(message) => message,
        other => panic!(
            "{} should fail on {}, got {other:?}",
            case.name, run.backend
        ),
    }
}

#[test]
fn a_correct_thread_backend_passes_the_consume_cases() {
    for name in [
        "incremental_model",
        "parallel_async_tools_order",
        "parallel_blocking_tools_order",
        "cancel_drop_drops_async_tool",
        "cancel_drop_discards_blocking_result",
        "backpressure_consume",
        "error_tool_panic",
        "transcript_one_tool_round",
    ] {
        let run = run_case(
            cases::find(name).unwrap(),
            || Box::new(Faulty::new(Fault::None)),
            Duration::from_secs(30),
        );
        assert_eq!(run.status, Status::Passed, "{name}");
    }
}

#[test]
fn a_buffering_consume_fails_incremental_delivery() {
    let message = failure("incremental_model", || {
        Box::new(Faulty::new(Fault::Buffers))
    });
    assert!(
        message.contains("text delta 1 was not released"),
        "the failure names the delta that never arrived: {message}"
    );
}

#[test]
fn a_buffering_consume_fails_backpressure() {
    let message = failure("backpressure_consume", || {
        Box::new(Faulty::new(Fault::Buffers))
    });
    assert!(message.contains("backpressure"), "{message}");
}

#[test]
fn a_consume_that_ignores_break_breaks_the_contract() {
    let message = failure("cancel_drop_drops_async_tool", || {
        Box::new(Faulty::new(Fault::IgnoresBreak))
    });
    assert!(message.contains("after it returned Break"), "{message}");
}

#[test]
fn a_one_thread_blocking_pool_fails_parallel_blocking_tools() {
    let message = failure("parallel_blocking_tools_order", || {
        Box::new(Faulty::new(Fault::SerialBlockingPool))
    });
    assert!(message.contains("(3, 1, 2)"), "{message}");
}
