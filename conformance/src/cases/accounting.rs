//! Leak accounting for the exclusive cases: warm up, settle, take a baseline, run, drop,
//! and check that the process is back to its baseline and nothing panicked. (The helpers
//! are the suite's own; the bounds are public so that reports and docs can quote them. To
//! account for runs of your own, use [`kit::resources`](crate::kit::resources) and
//! [`kit::panics`](crate::kit::panics).)
//!
//! # Tolerances
//!
//! The baseline is taken after a warm-up run on the same backend, so that the thread pools
//! a backend keeps by design (a blocking pool, an I/O reactor, the core's timer thread) are
//! already running. Within [`RELEASE_WITHIN`] the process must then come back to its
//! baseline:
//!
//! * after an upstream fault run ([`FAULT_TOLERANCE`]): exactly — no extra thread, no
//!   extra fd (these runs use no pool a warm-up would not have started);
//! * after the leak and soak runs ([`LEAK_TOLERANCE`]): at most [`THREAD_TOLERANCE`] extra
//!   thread, no extra fd — tools run on the backend's blocking pool, which may keep one
//!   more warm thread than the warm-up needed (idle pool threads exit after a few seconds,
//!   some after ten). These cases repeat their runs several times, so that a thread leaked
//!   per run still exceeds the tolerance.
//!
//! While waiting, the backend is given an idle run now and then (a scripted model through
//! `consume`): on a current-thread runtime, the task that closes a dropped connection only
//! runs while the runtime is driven, as it would be in a program that goes on.

use std::ops::ControlFlow;
use std::time::Duration;

use agent_core::model::{ScriptedModel, Turn};

use super::support::{agent_builder, consume, openai_config, openai_model};
use crate::backend::Backend;
use crate::kit::resources::{self, Tolerance, Usage};
use crate::kit::upstream::{GatedUpstream, openai};
use crate::kit::{panics, watchdog::step};

/// How long released resources may take to go away.
pub const RELEASE_WITHIN: Duration = Duration::from_secs(5);

/// Threads above the baseline allowed after the leak and soak runs (a warm pool that
/// grew by one).
pub const THREAD_TOLERANCE: usize = 1;

/// File descriptors above the baseline allowed after any run.
pub const FD_TOLERANCE: usize = 0;

/// How long the thread and fd counts must stay unchanged for the baseline.
const SETTLE_STABLE: Duration = Duration::from_millis(40);

/// The longest the baseline waits for the counts to settle.
const SETTLE_MAX: Duration = Duration::from_secs(2);

/// After an upstream fault run: back to the baseline exactly (memory not checked).
pub const FAULT_TOLERANCE: Tolerance = Tolerance {
    threads: 0,
    fds: FD_TOLERANCE,
    rss_kib: None,
};

/// After the leak and soak runs: [`THREAD_TOLERANCE`], [`FD_TOLERANCE`] (the soak adds a
/// memory margin).
pub const LEAK_TOLERANCE: Tolerance = Tolerance {
    threads: THREAD_TOLERANCE,
    fds: FD_TOLERANCE,
    rss_kib: None,
};

/// A baseline of the process and of its panic count.
pub(crate) struct Accounting {
    baseline: Option<Usage>,
    panics: u64,
}

impl Accounting {
    /// Wait for the process to settle and take the baseline (call it after a warm-up).
    pub(crate) fn start() -> Accounting {
        step("waiting for the thread and fd counts to settle (baseline)");
        let baseline = resources::settle(SETTLE_STABLE, SETTLE_MAX);
        Accounting {
            baseline,
            panics: panics::count(),
        }
    }

    /// Panic if anything in the process panicked since [`start`](Self::start).
    pub(crate) fn assert_no_panic(&self, during: &str) {
        let now = panics::count();
        assert!(
            now == self.panics,
            "no panics: {} panic(s) in the process during {during}: {:?}",
            now - self.panics,
            panics::messages_since(self.panics)
        );
    }

    /// Panic unless threads and fds (and memory when `tolerance` says so) come back within
    /// `tolerance` of the baseline within [`RELEASE_WITHIN`], driving `backend` with idle
    /// runs meanwhile. Returns a note with the numbers.
    pub(crate) fn assert_released(
        &self,
        backend: &dyn Backend,
        after: &str,
        tolerance: Tolerance,
    ) -> String {
        let Some(baseline) = self.baseline else {
            return format!("{after}: resources not counted (no /proc on this platform)");
        };
        step(format!(
            "waiting for threads and fds to come back to the baseline after {after}"
        ));
        match resources::wait_for_release(&baseline, tolerance, RELEASE_WITHIN, || {
            idle_run(backend)
        }) {
            Ok(now) => format!(
                "after {after}: {} threads ({:+}), {} fds ({:+}), {} KiB resident ({:+} KiB) vs the baseline",
                now.threads,
                now.threads as i64 - baseline.threads as i64,
                now.fds,
                now.fds as i64 - baseline.fds as i64,
                now.rss_kib,
                now.rss_kib as i64 - baseline.rss_kib as i64,
            ),
            Err(message) => {
                // A thread that panicked late (after the first panic check) may be what
                // held the resources: report the panic, the more specific cause, first.
                self.assert_no_panic(after);
                panic!("leak after {after}: {message}")
            }
        }
    }

    /// [`assert_no_panic`](Self::assert_no_panic) and
    /// [`assert_released`](Self::assert_released).
    pub(crate) fn finish(
        &self,
        backend: &dyn Backend,
        after: &str,
        tolerance: Tolerance,
    ) -> String {
        self.assert_no_panic(after);
        self.assert_released(backend, after, tolerance)
    }
}

/// One idle run through the backend (a scripted answer): drives a current-thread runtime
/// for a moment, and warms the agent path up.
pub(crate) fn idle_run(backend: &dyn Backend) {
    let agent = agent_builder(backend)
        .model(ScriptedModel::new([Turn::new().text("idle")]))
        .build()
        .expect("agent");
    backend.consume(&agent, "idle", &mut |_| ControlFlow::Continue(()));
}

/// A plain answer from an upstream through the backend's HTTP client, everything dropped
/// afterwards: the warm-up of the upstream fault cases.
pub(crate) fn warm_up_upstream(backend: &dyn Backend) {
    step("warm-up: a plain answer through the backend's HTTP client");
    let upstream = GatedUpstream::start([openai::answer(&["warm", " up"])]).expect("upstream");
    let model = openai_model(backend, openai_config(&upstream));
    let agent = agent_builder(backend).model(model).build().expect("agent");
    let transcript = consume(backend, &agent, "warm up", |_| ControlFlow::Continue(()));
    assert_eq!(
        transcript.completed_text(),
        "warm up",
        "accounting: the warm-up run (a plain answer) must complete before the baseline is \
         taken"
    );
    drop(agent);
    // Let the pooled connection close before the baseline is taken.
    upstream.wait_for_no_connections(RELEASE_WITHIN, || idle_run(backend));
    idle_run(backend);
}

/// Run an upstream fault case with accounting: warm up, baseline, `run` (which creates and
/// drops its upstream and agent), then no panic anywhere and threads and fds back to the
/// baseline. The accounting note is added to the outcome.
pub(crate) fn accounted(
    backend: &dyn Backend,
    run: impl FnOnce() -> super::Outcome,
) -> super::Outcome {
    warm_up_upstream(backend);
    let accounting = Accounting::start();
    let outcome = run();
    let note = accounting.finish(backend, "the fault run", FAULT_TOLERANCE);
    outcome.note(note)
}

/// Panic unless every connection to `upstream` is closed within [`RELEASE_WITHIN`] (the
/// agent, its model and HTTP client having been dropped), driving the backend meanwhile.
pub(crate) fn assert_upstream_closed(backend: &dyn Backend, upstream: &GatedUpstream) {
    let during = crate::kit::watchdog::current_progress()
        .map(|p| p.current())
        .unwrap_or_default();
    step("waiting for every upstream connection to close (agent and client dropped)");
    assert!(
        upstream.wait_for_no_connections(RELEASE_WITHIN, || idle_run(backend)),
        "leaks: {} upstream connection(s) still open {RELEASE_WITHIN:?} after the run ended \
         and its \
         agent, model and HTTP client were dropped (after: {during})",
        upstream.open_connections(),
    );
}
