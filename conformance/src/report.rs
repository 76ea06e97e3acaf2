//! The conformance report: every case on every backend, as a markdown matrix plus the
//! measured timings. The `conformance-report` binary writes it to `docs/conformance.md`;
//! the example backend prints it.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cases::{CASES, Case};
use crate::runner::{CaseRun, MakeBackend, Status, run_case};

/// The results of every case on one backend.
#[derive(Debug, Clone)]
pub struct BackendReport {
    /// The backend's name.
    pub name: String,
    /// One run per case, in [`CASES`] order.
    pub runs: Vec<CaseRun>,
}

impl BackendReport {
    /// Cases passed.
    pub fn passed(&self) -> usize {
        self.runs
            .iter()
            .filter(|r| r.status == Status::Passed)
            .count()
    }

    /// Cases failed.
    pub fn failed(&self) -> usize {
        self.runs.iter().filter(|r| !r.status.is_ok()).count()
    }

    /// The value of measurement `name` reported by any case.
    pub fn measurement(&self, name: &str) -> Option<f64> {
        self.runs.iter().find_map(|r| r.outcome.measurement(name))
    }
}

/// Run `cases` (all of [`CASES`] when `None`) on fresh backends from `make`, one after the
/// other, each allowed `limit`; `progress` is told about each finished case.
pub fn run_backend(
    make: MakeBackend,
    cases: Option<&[&'static Case]>,
    limit: Duration,
    mut progress: impl FnMut(&CaseRun),
) -> BackendReport {
    let all: Vec<&'static Case> = CASES.iter().collect();
    let cases = cases.unwrap_or(&all);
    let mut runs = Vec::with_capacity(cases.len());
    for case in cases {
        let run = run_case(case, make, limit);
        progress(&run);
        runs.push(run);
    }
    let name = runs
        .iter()
        .map(|r| r.backend.clone())
        .find(|n| !n.is_empty())
        .unwrap_or_else(|| "(backend)".to_string());
    BackendReport { name, runs }
}

fn cell(status: &Status) -> &'static str {
    match status {
        Status::Passed => "pass",
        Status::NotApplicable(_) => "n/a",
        Status::Failed(_) => "**FAIL**",
    }
}

fn ms(value: Option<f64>) -> String {
    match value {
        Some(v) => format!("{v:.3} ms"),
        None => "–".to_string(),
    }
}

/// Render the report as markdown: the matrix (case × backend), the timings, the failures
/// and the cases that did not apply.
pub fn render_markdown(reports: &[BackendReport]) -> String {
    let mut out = String::new();
    out.push_str("# Conformance report\n\n");
    out.push_str(
        "Every case of the conformance suite on every backend of this workspace, written by \
         `cargo run -p test-support --bin conformance-report`. `pass` means every assertion \
         held; `n/a` means the case cannot apply to that backend (it is not a pass: see \
         below); `FAIL` links to the failure. Timings are measured on the machine that ran \
         the report, in a debug build, and are not asserted by the suite. Which case catches \
         which deliberately planted buffer is in [the buffering mutations](mutations.md).\n\n",
    );
    out.push_str("## Matrix\n\n| case | area |");
    for r in reports {
        let _ = write!(out, " {} |", r.name);
    }
    out.push_str("\n|---|---|");
    for _ in reports {
        out.push_str("---|");
    }
    out.push('\n');
    for (i, case) in CASES.iter().enumerate() {
        let _ = write!(out, "| `{}` | {} |", case.name, case.area);
        for r in reports {
            let status = r.runs.get(i).map(|run| cell(&run.status)).unwrap_or("–");
            let _ = write!(out, " {status} |");
        }
        out.push('\n');
    }
    out.push_str("| **passed** | |");
    for r in reports {
        let applicable = r
            .runs
            .iter()
            .filter(|run| !matches!(run.status, Status::NotApplicable(_)))
            .count();
        let _ = write!(out, " {} / {applicable} |", r.passed());
    }
    out.push_str("\n\n");

    out.push_str("## Timings\n\n");
    out.push_str(
        "* *first event*: from calling `consume` (or writing the request) to receiving \
         `run_started`;\n* *per-event latency*: from the gated model producing a text delta \
         to the consumer (or the raw TCP client) receiving it, median over 60 deltas in \
         lockstep;\n* *parallel tools*: wall time of three tools sleeping 60, 90 and 30 ms \
         (sum 180 ms);\n* *ahead*: deltas produced beyond the one a stalled `consume` \
         callback holds (bound 4);\n* *in flight*: bytes of frames produced for a client \
         that stopped reading (64 KiB receive buffer; bound 16 MiB).\n\n",
    );
    out.push_str(
        "| backend | first event | per-event latency | server: first event | server: per-event latency | parallel tools | ahead | in flight |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let ahead = r
            .measurement("consume_events_ahead")
            .map_or("–".to_string(), |v| format!("{v:.0}"));
        let in_flight = r
            .measurement("server_bytes_in_flight")
            .map_or("–".to_string(), |v| format!("{:.0} KiB", v / 1024.0));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {ahead} | {in_flight} |",
            r.name,
            ms(r.measurement("time_to_first_event_ms")),
            ms(r.measurement("median_event_latency_ms")),
            ms(r.measurement("server_time_to_first_event_ms")),
            ms(r.measurement("server_median_event_latency_ms")),
            ms(r.measurement("parallel_tools_wall_ms")),
        );
    }
    out.push('\n');

    out.push_str("## Reliability\n\n");
    out.push_str(
        "* *soak*: wall time of the measured runs (1,000 sequential; 200 concurrent), random \
         client disconnects included, warm-up excluded;\n* *10 MiB line*: how much of an \
         oversized SSE line the upstream managed to write before the client gave up and \
         closed (the rest never left the upstream), and how much the process's resident \
         memory grew meanwhile (bound 5 MiB);\n* *write timeout*: from a client that stops \
         reading to its run being cancelled, with `write_timeout` = 300 ms (the socket \
         buffers fill first).\n\n",
    );
    out.push_str(
        "| backend | soak: 1,000 sequential | soak: 200 concurrent | 10 MiB line: written | 10 MiB line: memory growth | write timeout: cancelled after |\n\
         |---|---|---|---|---|---|\n",
    );
    for r in reports {
        let kib = |name: &str, divisor: f64| {
            r.measurement(name)
                .map_or("–".to_string(), |v| format!("{:.0} KiB", v / divisor))
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.name,
            ms(r.measurement("soak_sequential_ms")),
            ms(r.measurement("soak_concurrent_ms")),
            kib("huge_line_upstream_bytes_written", 1024.0),
            kib("huge_line_peak_rss_growth_kib", 1.0),
            ms(r.measurement("write_timeout_disconnect_ms")),
        );
    }
    out.push('\n');

    let failures: Vec<(&BackendReport, &CaseRun, &str)> = reports
        .iter()
        .flat_map(|r| {
            r.runs.iter().filter_map(move |run| match &run.status {
                Status::Failed(message) => Some((r, run, message.as_str())),
                _ => None,
            })
        })
        .collect();
    out.push_str("## Failures\n\n");
    if failures.is_empty() {
        out.push_str("None.\n\n");
    }
    for (r, run, message) in failures {
        let _ = writeln!(out, "### `{}` on {}\n", run.case.name, r.name);
        out.push_str("```text\n");
        for line in message.lines().take(30) {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("```\n\n");
    }

    out.push_str("## Not applicable\n\n");
    let mut any = false;
    for r in reports {
        for run in &r.runs {
            if let Status::NotApplicable(reason) = &run.status {
                any = true;
                let _ = writeln!(out, "* `{}` on {}: {reason}", run.case.name, r.name);
            }
        }
    }
    if !any {
        out.push_str("None.\n");
    }
    out.push('\n');

    out.push_str("## Notes\n\n");
    for r in reports {
        for run in &r.runs {
            for note in &run.outcome.notes {
                let _ = writeln!(out, "* {} / `{}`: {note}", r.name, run.case.name);
            }
        }
    }
    out
}

/// A one-line progress message for a finished case.
pub fn progress_line(run: &CaseRun) -> String {
    let status = match &run.status {
        Status::Passed => "pass".to_string(),
        Status::NotApplicable(_) => "n/a".to_string(),
        Status::Failed(message) => {
            format!("FAIL: {}", message.lines().next().unwrap_or(""))
        }
    };
    format!(
        "{:<45} {:>6} ms  {status}",
        run.case.name,
        run.elapsed.as_millis()
    )
}

pub use crate::kit::panics::EXPECTED_PANIC_MARKER;

/// Install a panic hook that stays silent for the panics the suite provokes on purpose
/// (their message contains [`EXPECTED_PANIC_MARKER`]) and reports every other panic
/// through the previous hook. For report runners; tests capture output anyway.
pub fn silence_expected_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("");
        if !message.contains(EXPECTED_PANIC_MARKER) {
            previous(info);
        }
    }));
}
