//! The runner never blames one case for another: a failing exclusive case keeps the case
//! lock until its failure (a panic) has been counted, so the exclusive case that waits for
//! the lock does not count that panic as its own.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agent_core::agent::Agent;
use agent_core::event::Event;
use agent_core::runtime::{SharedRuntime, TestRuntime, block_on};
use conformance::Backend;
use conformance::runner::{Status, run_case, run_test};
use futures_util::StreamExt;

/// A runtime-only backend on the core's thread runtime (HTTP from the kit).
struct CoreThreads {
    /// When set, `consume` drops every run at once: the case fails.
    silent: bool,
}

impl Backend for CoreThreads {
    fn name(&self) -> String {
        format!("core threads (silent: {})", self.silent)
    }

    fn runtime(&self) -> SharedRuntime {
        Arc::new(TestRuntime::new())
    }

    fn consume(
        &self,
        agent: &Agent,
        input: &str,
        on_event: &mut dyn FnMut(Event) -> ControlFlow<()>,
    ) {
        if self.silent {
            return;
        }
        let mut run = agent.run(input);
        while let Some(event) = block_on(run.next()) {
            if on_event(event).is_break() {
                return;
            }
        }
    }

    fn is_single_threaded(&self) -> bool {
        false
    }
}

static FAILING_CASE_STARTED: AtomicBool = AtomicBool::new(false);

fn silent() -> Box<dyn Backend> {
    FAILING_CASE_STARTED.store(true, Ordering::SeqCst);
    Box::new(CoreThreads { silent: true })
}

static NEXT_CASE_STARTED: AtomicBool = AtomicBool::new(false);

fn working() -> Box<dyn Backend> {
    NEXT_CASE_STARTED.store(true, Ordering::SeqCst);
    Box::new(CoreThreads { silent: false })
}

#[test]
fn a_failing_exclusive_case_is_not_counted_against_the_next_one() {
    // Make the failure's panic wait, before the kit's hook counts it, until the next case
    // has started (at most 2 s). A runner that released the case lock before that panic
    // lets the next case start, so the panic is counted during it, as its own; a runner
    // that holds the lock through the panic keeps the next case waiting until it is counted.
    conformance::kit::panics::install();
    let counting = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("failing-case") {
            let until = Instant::now() + Duration::from_secs(2);
            while !NEXT_CASE_STARTED.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        counting(info);
    }));
    let case = "error_upstream_500";
    let failing = std::thread::Builder::new()
        .name("failing-case".into())
        .spawn(move || std::panic::catch_unwind(|| run_test(case, silent)).is_err())
        .expect("spawn the failing case");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !FAILING_CASE_STARTED.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the failing case did not start within 30 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Waits for the lock the failing case holds, then runs alone.
    let next = run_case(
        conformance::cases::find(case).expect("the case exists"),
        working,
        Duration::from_secs(60),
    );
    assert!(
        failing.join().expect("the failing thread ends"),
        "{case} must fail on a backend whose consume yields no event"
    );
    assert_eq!(
        next.status,
        Status::Passed,
        "the case after a failing one must be judged on its own: one failure, not two"
    );
}
