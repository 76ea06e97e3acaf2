//! `conformance-report`: run every conformance case on every backend flavour of this
//! workspace and write the matrix, with measured timings, to `docs/conformance.md`.
//!
//! ```text
//! cargo run -p test-support --bin conformance-report [-- --out PATH] [-- --backend NAME] [-- --case NAME]
//! ```
//!
//! `--backend` and `--case` (repeatable) keep only the flavours / cases whose name contains
//! the text. Each case runs on a fresh backend, under the watchdog, one after the other;
//! failures (and stuck cases) are recorded, never fatal. The exit code is 1 when a case
//! failed, after the report was written.

use std::path::PathBuf;

use conformance::cases::{CASES, Case};
use conformance::kit::watchdog::CASE_LIMIT;
use conformance::report::{self, BackendReport};
use conformance::runner::MakeBackend;
use test_support::backends;

/// Every flavour of every backend of the workspace.
fn flavours() -> Vec<(&'static str, MakeBackend)> {
    vec![
        ("tokio-current-thread", || {
            Box::new(backends::tokio::TokioCurrentThread::default())
        }),
        ("tokio-multi-thread", || {
            Box::new(backends::tokio::TokioMultiThread::default())
        }),
        ("tokio-multi-thread-tokio-client", || {
            Box::new(backends::tokio::TokioMultiThread::with_tokio_client())
        }),
        ("smol-single-thread", || {
            Box::new(backends::smol::SmolSingleThread::default())
        }),
        ("smol-multi-thread", || {
            Box::new(backends::smol::SmolMultiThread::default())
        }),
        ("blocking-threads", || Box::new(backends::blocking::Threads)),
    ]
}

fn main() {
    let mut out = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/conformance.md"
    ));
    let mut backend_filters = Vec::new();
    let mut case_filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next().unwrap_or_else(|| {
                eprintln!("{arg} needs a value");
                std::process::exit(2)
            })
        };
        match arg.as_str() {
            "--out" => out = PathBuf::from(value()),
            "--backend" => backend_filters.push(value()),
            "--case" => case_filters.push(value()),
            "-h" | "--help" => {
                println!(
                    "usage: conformance-report [--out PATH] [--backend TEXT]... [--case TEXT]...\n\
                     Runs every conformance case on every backend flavour and writes the report \
                     (default: docs/conformance.md)."
                );
                return;
            }
            other => {
                eprintln!("unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    let cases: Vec<&'static Case> = CASES
        .iter()
        .filter(|c| case_filters.is_empty() || case_filters.iter().any(|f| c.name.contains(f)))
        .collect();
    report::silence_expected_panics();
    let mut reports: Vec<BackendReport> = Vec::new();
    for (name, make) in flavours() {
        if !backend_filters.is_empty() && !backend_filters.iter().any(|f| name.contains(f)) {
            continue;
        }
        eprintln!("== {name}");
        let report = report::run_backend(make, Some(&cases), CASE_LIMIT, |run| {
            eprintln!("  {}", report::progress_line(run));
        });
        eprintln!("   {} passed, {} failed", report.passed(), report.failed());
        reports.push(report);
    }
    let markdown = report::render_markdown(&reports);
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&out, markdown) {
        eprintln!("could not write {}: {e}", out.display());
        std::process::exit(2);
    }
    eprintln!("wrote {}", out.display());
    let failed: usize = reports.iter().map(BackendReport::failed).sum();
    let passed: usize = reports.iter().map(BackendReport::passed).sum();
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
