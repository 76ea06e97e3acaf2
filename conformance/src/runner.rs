//! Running cases: each on its own thread with a fresh backend, under the watchdog, with
//! failures turned into values (for the report) or into test failures (for [`suite!`]).
//!
//! # Exclusive cases
//!
//! `cargo test` runs the tests of one binary concurrently, in one process. Most cases do not
//! mind, but the ones that count process-wide things — threads, open file descriptors,
//! resident memory, panics (the fault, leak and soak cases; [`Case::exclusive`]) — would
//! count each other's. [`run_case`] therefore takes a process-wide [`RwLock`]: shared for an
//! ordinary case, exclusive for those, so that an exclusive case runs alone (the others
//! wait for it, it waits for the others to finish). The lock is taken before the watchdog's
//! clock starts: waiting for it does not count against a case's limit. The runner also
//! installs the panic counter of [`kit::panics`](crate::kit::panics), and fails an exclusive
//! case during which anything in the process panicked (other than the panics the suite
//! provokes on purpose), even if every assertion of the case held.
//!
//! [`suite!`]: crate::suite

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::cases::{self, Case, Outcome};
use crate::kit::watchdog::{self, WatchdogError};

/// Builds a fresh backend for one case.
pub type MakeBackend = fn() -> Box<dyn Backend>;

/// Ordinary cases hold it shared, exclusive cases hold it alone.
static ISOLATION: RwLock<()> = RwLock::new(());

/// Holds the process-wide case lock for the duration of one case (see [`isolate`]).
pub enum IsolationGuard {
    /// An ordinary case: others may run alongside.
    Shared(RwLockReadGuard<'static, ()>),
    /// An exclusive case: nothing else runs.
    Exclusive(RwLockWriteGuard<'static, ()>),
}

impl std::fmt::Debug for IsolationGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IsolationGuard::Shared(_) => "IsolationGuard::Shared",
            IsolationGuard::Exclusive(_) => "IsolationGuard::Exclusive",
        })
    }
}

/// Take the process-wide case lock: alone when `exclusive`, else shared with other
/// ordinary cases. [`run_case`] does this; call it yourself to run code of your own (a
/// process-wide measurement, say) alongside the suite in the same test binary.
pub fn isolate(exclusive: bool) -> IsolationGuard {
    if exclusive {
        IsolationGuard::Exclusive(ISOLATION.write().unwrap_or_else(|p| p.into_inner()))
    } else {
        IsolationGuard::Shared(ISOLATION.read().unwrap_or_else(|p| p.into_inner()))
    }
}

/// How a case ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Every assertion held.
    Passed,
    /// The case does not apply to this backend (the reason).
    NotApplicable(String),
    /// An assertion failed, or the case was stuck (the message).
    Failed(String),
}

impl Status {
    /// `true` unless failed.
    pub fn is_ok(&self) -> bool {
        !matches!(self, Status::Failed(_))
    }
}

/// The result of one case on one backend.
#[derive(Debug, Clone)]
pub struct CaseRun {
    /// The case.
    pub case: &'static Case,
    /// The backend's name (empty if it could not be built).
    pub backend: String,
    /// How it ended.
    pub status: Status,
    /// Notes and measurements (empty unless it passed).
    pub outcome: Outcome,
    /// Wall time of the case, backend construction included.
    pub elapsed: Duration,
}

/// Run `case` on a backend built by `make` (on the case's own thread), allowing it `limit`.
pub fn run_case(case: &'static Case, make: MakeBackend, limit: Duration) -> CaseRun {
    crate::kit::panics::install();
    let _isolation = isolate(case.exclusive);
    run_isolated(case, make, limit)
}

/// [`run_case`] for a caller that holds the case lock ([`isolate`]) already.
fn run_isolated(case: &'static Case, make: MakeBackend, limit: Duration) -> CaseRun {
    let panics_before = crate::kit::panics::count();
    let started = Instant::now();
    let name = Arc::new(Mutex::new(String::new()));
    let worker_name = name.clone();
    let result = watchdog::run_with_watchdog(case.name, limit, move || {
        let backend = make();
        *worker_name.lock().unwrap_or_else(|p| p.into_inner()) = backend.name();
        watchdog::step(format!("running case {}", case.name));
        let outcome = (case.run)(&*backend);
        watchdog::step("dropping the backend");
        drop(backend);
        outcome
    });
    let backend = name.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // An exclusive case runs alone: any panic in the process meanwhile (on a backend's
    // thread, say, where it would go unnoticed) is the case's.
    let panics = crate::kit::panics::count() - panics_before;
    let (status, outcome) = match result {
        Ok(_) if case.exclusive && panics > 0 => (
            Status::Failed(format!(
                "{panics} panic(s) in the process during the case: {:?}",
                crate::kit::panics::messages_since(panics_before)
            )),
            Outcome::default(),
        ),
        Ok(outcome) => match &outcome.not_applicable {
            Some(reason) => (Status::NotApplicable(reason.clone()), outcome),
            None => (Status::Passed, outcome),
        },
        Err(WatchdogError::Panicked(message)) => (Status::Failed(message), Outcome::default()),
        Err(stuck) => (Status::Failed(stuck.to_string()), Outcome::default()),
    };
    CaseRun {
        case,
        backend,
        status,
        outcome,
        elapsed: started.elapsed(),
    }
}

/// The body of every test [`suite!`](crate::suite) generates: run case `name` under the
/// watchdog ([`CASE_LIMIT`](watchdog::CASE_LIMIT)), print its notes, and panic with its
/// failure message if it failed.
pub fn run_test(name: &str, make: MakeBackend) {
    let case = cases::find(name).unwrap_or_else(|| panic!("no conformance case named {name:?}"));
    crate::kit::panics::install();
    // Held until this function returns or unwinds: a failing case panics (below) while it
    // still holds the lock, so its panic is counted before the next exclusive case takes
    // its baseline, never as a panic "during" that case.
    let _isolation = isolate(case.exclusive);
    let run = run_isolated(case, make, watchdog::CASE_LIMIT);
    let ms = run.elapsed.as_millis();
    match &run.status {
        Status::Passed => {
            println!("conformance {name} on {}: passed in {ms} ms", run.backend);
            for note in &run.outcome.notes {
                println!("  note: {note}");
            }
        }
        Status::NotApplicable(reason) => {
            // Written to the process's stderr directly, past the test harness's capture: a
            // case that did not run must be visible in the output even though it "passes".
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "conformance {name} on {}: n/a (not a pass): {reason}",
                run.backend
            );
        }
        Status::Failed(message) => panic!(
            "conformance case {name} failed on {} after {ms} ms: {message}",
            run.backend
        ),
    }
}

/// Check that the tests generated by [`suite!`](crate::suite) cover every case (a guard
/// against the macro falling behind the case list).
pub fn assert_suite_complete(generated: &[&str]) {
    let missing: Vec<&str> = cases::CASES
        .iter()
        .map(|c| c.name)
        .filter(|n| !generated.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "suite! generates no test for {missing:?}"
    );
    assert_eq!(
        generated.len(),
        cases::CASES.len(),
        "suite! generates unknown cases"
    );
}
