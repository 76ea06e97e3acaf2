//! `cargo run --release -p bench`: the side-by-side benchmarks of issue 8, written to
//! `docs/performance.md`. See the crate's README for what is measured and how.

mod alloc;
mod child;
mod config;
mod construct;
mod exec;
mod fanout;
mod http;
mod notes;
mod pipeline;
mod profile;
mod relay;
mod report;
mod scale;
mod sse;
mod stats;
mod stores;
mod sys;
mod ttfe;
mod upstream;

use std::path::PathBuf;
use std::time::Instant;

use config::Config;

/// Counts heap bytes for the construction benchmark; `System` otherwise.
#[global_allocator]
static GLOBAL: alloc::CountingAlloc = alloc::CountingAlloc;

const USAGE: &str = "\
usage: bench [--quick] [--only 1,2,...] [--out PATH]

  --quick        a smoke run of a few seconds (small sizes, few repetitions)
  --only LIST    run only these measurements (1 pipeline, 2 http, 3 ttfe, 4 fan-out,
                 5 scale, 6 sse, 7 construction, 8 stores, 9 server in the path
                 (2b), 10 concurrent streams through HTTP (5b))
  --out PATH     write the report (markdown) there

Without --out the report is printed on stdout; nothing is written anywhere. To regenerate
the book's page: --out docs/performance.md (and copy it to docs/src/performance.md).";

/// The measurements that ran.
#[derive(Default)]
pub struct Results {
    /// (1)
    pub pipeline: Option<pipeline::PipelineResult>,
    /// (2)
    pub http: Option<http::HttpResult>,
    /// (3)
    pub ttfe: Option<ttfe::TtfeResult>,
    /// (4)
    pub fanout: Option<fanout::FanoutResult>,
    /// (5)
    pub scale: Option<scale::ScaleResult>,
    /// (6)
    pub sse: Option<sse::SseResult>,
    /// (7)
    pub construct: Option<construct::ConstructResult>,
    /// (8)
    pub stores: Option<stores::StoresResult>,
    /// (9)
    pub relay: Option<relay::RelayResult>,
    /// (10)
    pub http_scale: Option<scale::HttpScaleResult>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__child") {
        std::process::exit(child::main(&args[1..]));
    }
    if args.first().map(String::as_str) == Some("__profile") {
        std::process::exit(profile::main(&args[1..]));
    }
    let mut quick = false;
    let mut only: Option<Vec<u32>> = None;
    let mut out: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--only" => {
                only = it.next().map(|list| {
                    list.split(',')
                        .filter_map(|n| n.trim().parse().ok())
                        .collect()
                })
            }
            "--out" => out = it.next().map(PathBuf::from),
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let config = if quick {
        Config::quick()
    } else {
        Config::full()
    };
    let wanted = |n: u32| only.as_ref().is_none_or(|list| list.contains(&n));
    let machine = sys::Machine::detect();
    let started = Instant::now();
    let mut results = Results::default();

    fn step<T>(name: &str, f: impl FnOnce() -> T) -> T {
        eprint!("bench: {name} … ");
        let start = Instant::now();
        let out = f();
        eprintln!("{:.1} s", start.elapsed().as_secs_f64());
        out
    }
    // Construction first: the counting allocator sees a quiet process.
    if wanted(7) {
        results.construct = Some(step("7 agent construction", || construct::run(&config)));
    }
    if wanted(6) {
        results.sse = Some(step("6 SSE decoder", || sse::run(&config)));
    }
    if wanted(1) {
        results.pipeline = Some(step("1 pipeline overhead", || pipeline::run(&config)));
    }
    if wanted(2) {
        results.http = Some(step("2 HTTP end to end", || http::run(&config)));
    }
    if wanted(9) {
        results.relay = Some(step("9 server in the path", || relay::run(&config)));
    }
    if wanted(3) {
        results.ttfe = Some(step("3 time to first event", || ttfe::run(&config)));
    }
    if wanted(4) {
        results.fanout = Some(step("4 server fan-out", || fanout::run(&config)));
    }
    if wanted(5) {
        results.scale = Some(step("5 scale", || scale::run(&config)));
    }
    if wanted(8) {
        results.stores = Some(step("8 stores", || stores::run(&config)));
    }
    if wanted(10) {
        results.http_scale = Some(step("10 scale through HTTP", || scale::run_http(&config)));
    }
    let elapsed = started.elapsed();
    let page = report::render(&machine, &config, &results, elapsed);

    // The report goes where `--out` says, and nowhere else: the bench never writes into
    // the source tree it was built from unless asked to. Without `--out` it is printed.
    match out {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                let _ = std::fs::create_dir_all(dir);
            }
            match std::fs::write(&path, &page) {
                Ok(()) => eprintln!("bench: wrote {}", path.display()),
                Err(e) => {
                    eprintln!("bench: could not write {}: {e}", path.display());
                    std::process::exit(1);
                }
            }
        }
        None => print!("{page}"),
    }
    eprintln!("{}", report::summary(&results));
    eprintln!("bench: done in {:.0} s", elapsed.as_secs_f64());
}
