//! A watchdog that never lets a case hang: the case runs on its own thread with a deadline,
//! and a stuck case fails naming the last step it recorded.
//!
//! ```
//! use std::time::Duration;
//! use conformance::kit::watchdog::{self, WatchdogError};
//!
//! let ok = watchdog::run_with_watchdog("quick", Duration::from_secs(5), || 42);
//! assert_eq!(ok.unwrap(), 42);
//!
//! let stuck = watchdog::run_with_watchdog("stuck", Duration::from_millis(50), || {
//!     watchdog::step("waiting for text delta 7");
//!     std::thread::sleep(Duration::from_secs(1));
//! });
//! let Err(WatchdogError::TimedOut { step, .. }) = stuck else { panic!() };
//! assert_eq!(step, "waiting for text delta 7");
//! ```

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The deadline of one conformance case in the generated tests.
pub const CASE_LIMIT: Duration = Duration::from_secs(30);

/// Where a case is: the description of its last step, shared with its watchdog.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    step: Arc<Mutex<String>>,
}

impl Progress {
    /// Record `description` as the current step.
    pub fn step(&self, description: impl Into<String>) {
        *self.step.lock().unwrap_or_else(|p| p.into_inner()) = description.into();
    }

    /// The last recorded step.
    pub fn current(&self) -> String {
        self.step.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

thread_local! {
    static PROGRESS: RefCell<Option<Progress>> = const { RefCell::new(None) };
}

/// Record `description` as the current step of the case running on this thread (a no-op
/// outside [`run_with_watchdog`]).
pub fn step(description: impl Into<String>) {
    PROGRESS.with(|p| {
        if let Some(progress) = &*p.borrow() {
            progress.step(description);
        }
    });
}

/// The [`Progress`] of the case running on this thread, to hand to helper threads.
pub fn current_progress() -> Option<Progress> {
    PROGRESS.with(|p| p.borrow().clone())
}

/// Why [`run_with_watchdog`] produced no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchdogError {
    /// The closure panicked (an assertion failed); the panic message.
    Panicked(String),
    /// The closure was still running at the deadline.
    TimedOut {
        /// What was being run.
        label: String,
        /// The deadline.
        limit: Duration,
        /// The last step the closure recorded.
        step: String,
    },
}

impl fmt::Display for WatchdogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchdogError::Panicked(message) => f.write_str(message),
            WatchdogError::TimedOut { label, limit, step } => write!(
                f,
                "`{label}` is stuck: still running after {limit:?}; last step: {}",
                if step.is_empty() {
                    "(none recorded)"
                } else {
                    step
                }
            ),
        }
    }
}

impl std::error::Error for WatchdogError {}

/// Render a panic payload as text.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Run `f` on a new thread and wait at most `limit` for it.
///
/// A panic in `f` becomes [`WatchdogError::Panicked`]; a deadline miss becomes
/// [`WatchdogError::TimedOut`] carrying the last [`step`] `f` recorded. The stuck thread is
/// left behind (it cannot be stopped), which is fine for a failing test process.
pub fn run_with_watchdog<T, F>(label: &str, limit: Duration, f: F) -> Result<T, WatchdogError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let progress = Progress::default();
    let worker_progress = progress.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("case {label}"))
        .spawn(move || {
            PROGRESS.with(|p| *p.borrow_mut() = Some(worker_progress));
            let result = std::panic::catch_unwind(AssertUnwindSafe(f));
            let _ = tx.send(result.map_err(|payload| panic_message(&*payload)));
        });
    if let Err(err) = spawned {
        return Err(WatchdogError::Panicked(format!(
            "could not start a thread for `{label}`: {err}"
        )));
    }
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err(WatchdogError::Panicked(message)),
        Err(_) => Err(WatchdogError::TimedOut {
            label: label.to_string(),
            limit,
            step: progress.current(),
        }),
    }
}
