//! (5) Scale: many concurrent runs of a paced scripted model in one process (a child process
//! per measurement, so that its peak resident memory belongs to the runs): peak memory per
//! run and CPU time per event.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agent_core::agent::Agent;
use agent_core::model::{ScriptedModel, Turn};
use backend_smol::SmolRuntime;
use backend_smol::async_executor::Executor;
use backend_tokio::TokioRuntime;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::child::ChildProcess;
use crate::config::Config;
use crate::stats::{Samples, Summary};
use crate::sys::{cpu_seconds, peak_rss_bytes, rss_bytes};

/// The runtimes measured.
pub const RUNTIMES: [&str; 4] = ["tokio-mt", "tokio-ct", "smol-1", "smol-2"];

/// The row label of a runtime.
pub fn label(runtime: &str) -> &'static str {
    match runtime {
        "tokio-mt" => "tokio (multi_thread, 2 workers)",
        "tokio-ct" => "tokio (current_thread)",
        "smol-1" => "smol (1 thread)",
        _ => "smol (SmolRuntime::with_threads(2))",
    }
}

/// Runs started (and finished) before the baseline is taken.
const WARM_RUNS: usize = 64;

/// The script of run `n`: `deltas` short text deltas, each after a pause of 1 to 10 ms
/// (a deterministic pseudo-random sequence per run).
fn paced_turn(n: usize, deltas: usize) -> Turn {
    let mut state = (n as u64)
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1);
    let mut turn = Turn::new();
    for k in 0..deltas {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let pause = 1 + (state >> 33) % 10;
        turn = turn
            .pause(Duration::from_millis(pause))
            .text(format!("w{k} "));
    }
    turn
}

/// What a scale child reports (one JSON line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleOutcome {
    /// Runs started at once.
    pub runs: usize,
    /// Events received, all runs.
    pub events: usize,
    /// Runs that ended with `run_completed`.
    pub completed: usize,
    /// Most runs in progress at the same moment.
    pub max_active: usize,
    /// Resident memory before the runs, bytes.
    pub base_rss: u64,
    /// Peak resident memory of the process, bytes.
    pub peak_rss: u64,
    /// CPU seconds (user + system) spent during the runs.
    pub cpu_s: f64,
    /// Wall-clock seconds from the first spawn to the last run's end.
    pub wall_s: f64,
    /// Why runs did not complete: `(reason, runs)`, most frequent first (a few at most).
    #[serde(default)]
    pub failures: Vec<(String, usize)>,
}

/// What one consumed run gave.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    /// Events received.
    pub events: usize,
    /// `true` when the run ended with `run_completed`.
    pub completed: bool,
    /// Why it did not complete (the `run_failed` error's kind and message, or another end).
    pub failure: Option<String>,
}

impl RunOutcome {
    /// Account for one event of the run.
    fn observe(&mut self, event: &agent_core::event::Event) {
        use agent_core::event::EventKind;
        self.events += 1;
        self.completed = matches!(event.kind, EventKind::RunCompleted { .. });
        self.failure = match &event.kind {
            EventKind::RunFailed { error, .. } => {
                Some(format!("run_failed {:?}: {}", error.kind, error.message))
            }
            EventKind::RunCancelled { .. } => Some("run_cancelled".into()),
            _ => None,
        };
    }

    /// The reason an incomplete run gives (`None` for a completed run).
    fn reason(&self) -> Option<String> {
        if self.completed {
            return None;
        }
        Some(
            self.failure
                .clone()
                .unwrap_or_else(|| "ended without a terminal event".into()),
        )
    }
}

/// How many distinct failure reasons a child reports.
const FAILURE_REASONS: usize = 3;

/// Sum `results` up: (events, completed, the most frequent failure reasons).
fn tally(results: &[RunOutcome]) -> (usize, usize, Vec<(String, usize)>) {
    let events = results.iter().map(|r| r.events).sum();
    let completed = results.iter().filter(|r| r.completed).count();
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for reason in results.iter().filter_map(RunOutcome::reason) {
        *counts.entry(reason).or_default() += 1;
    }
    let mut failures: Vec<(String, usize)> = counts.into_iter().collect();
    failures.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    failures.truncate(FAILURE_REASONS);
    (events, completed, failures)
}

/// Consume one run.
async fn consume(agent: Agent, active: Arc<(AtomicUsize, AtomicUsize)>) -> RunOutcome {
    let now = active.0.fetch_add(1, Ordering::Relaxed) + 1;
    active.1.fetch_max(now, Ordering::Relaxed);
    let mut run = agent.run("go");
    let mut outcome = RunOutcome::default();
    while let Some(event) = run.next().await {
        outcome.observe(&event);
    }
    active.0.fetch_sub(1, Ordering::Relaxed);
    outcome
}

/// Spawn `count` consumers with `spawn` and wait for all with `wait`.
fn drive<H>(
    agent: &Agent,
    count: usize,
    active: &Arc<(AtomicUsize, AtomicUsize)>,
    spawn: impl Fn(std::pin::Pin<Box<dyn Future<Output = RunOutcome> + Send>>) -> H,
    wait: impl FnOnce(Vec<H>) -> Vec<RunOutcome>,
) -> Vec<RunOutcome> {
    let handles: Vec<H> = (0..count)
        .map(|_| spawn(Box::pin(consume(agent.clone(), active.clone()))))
        .collect();
    wait(handles)
}

/// The scale child: `scale <runtime> <runs> <deltas>`; prints a [`ScaleOutcome`].
pub fn child(args: &[String]) -> i32 {
    let runtime = args.first().map(String::as_str).unwrap_or("");
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    let deltas: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
    let model = ScriptedModel::from_fn(move |_, n| paced_turn(n, deltas));
    let active = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));

    // Each arm: build the runtime and the agent, run the warm-up, take the baseline, run.
    let measure = |agent: &Agent, run_all: &dyn Fn(&Agent, usize) -> Vec<RunOutcome>| {
        run_all(agent, WARM_RUNS);
        active.1.store(0, Ordering::Relaxed);
        let base_rss = rss_bytes();
        let cpu0 = cpu_seconds();
        let start = Instant::now();
        let results = run_all(agent, runs);
        let wall_s = start.elapsed().as_secs_f64();
        let peak_rss = peak_rss_bytes();
        let cpu_s = cpu_seconds() - cpu0;
        let (events, completed, failures) = tally(&results);
        for (reason, count) in &failures {
            eprintln!("scale {runtime}: {count} of {runs} runs: {reason}");
        }
        ScaleOutcome {
            runs,
            events,
            completed,
            max_active: active.1.load(Ordering::Relaxed),
            base_rss,
            peak_rss,
            cpu_s,
            wall_s,
            failures,
        }
    };

    let upstream = args.get(3).cloned().unwrap_or_default();
    let openai = |client: Arc<dyn agent_core::http::HttpClient>| {
        let config = agent_core::model::OpenAiConfig::new(upstream.clone(), "bench-model")
            .with_retry(agent_core::policy::RetryPolicy::none());
        Arc::new(agent_core::model::OpenAiModel::new(config, client))
    };
    let outcome = match runtime {
        "http-tokio" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            let client = Arc::new(backend_tokio::TokioClient::with_handle(rt.handle().clone()));
            let agent = Agent::builder()
                .shared_model(openai(client))
                .runtime(Arc::new(TokioRuntime::from_handle(rt.handle().clone())))
                .build()
                .expect("agent");
            measure(&agent, &|agent, count| {
                rt.block_on(async {
                    let handles: Vec<_> = (0..count)
                        .map(|_| tokio::spawn(consume(agent.clone(), active.clone())))
                        .collect();
                    let mut results = Vec::with_capacity(count);
                    for handle in handles {
                        results.push(handle.await.unwrap_or_else(|_| RunOutcome {
                            failure: Some("the run task panicked".into()),
                            ..RunOutcome::default()
                        }));
                    }
                    results
                })
            })
        }
        "http-smol" => {
            let rt = SmolRuntime::with_threads(2).expect("smol threads");
            let executor = rt.executor().expect("own executor").clone();
            let agent = Agent::builder()
                .shared_model(openai(Arc::new(backend_smol::SmolClient::new())))
                .runtime(rt.shared())
                .build()
                .expect("agent");
            measure(&agent, &|agent, count| {
                drive(
                    agent,
                    count,
                    &active,
                    |future| executor.spawn(future),
                    |tasks| {
                        agent_core::runtime::block_on(async {
                            let mut results = Vec::with_capacity(tasks.len());
                            for task in tasks {
                                results.push(task.await);
                            }
                            results
                        })
                    },
                )
            })
        }
        "http-blocking" => {
            let agent = backend_blocking::agent_builder()
                .shared_model(openai(Arc::new(backend_blocking::UreqClient::new())))
                .build()
                .expect("agent");
            measure(&agent, &|agent, count| {
                // The threaded shape: one thread per run, iterating it.
                let handles: Vec<_> = (0..count)
                    .map(|_| {
                        let agent = agent.clone();
                        let active = active.clone();
                        std::thread::spawn(move || {
                            let now = active.0.fetch_add(1, Ordering::Relaxed) + 1;
                            active.1.fetch_max(now, Ordering::Relaxed);
                            let mut outcome = RunOutcome::default();
                            for event in backend_blocking::run(&agent, "go") {
                                outcome.observe(&event);
                            }
                            active.0.fetch_sub(1, Ordering::Relaxed);
                            outcome
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| RunOutcome {
                            failure: Some("the run thread panicked".into()),
                            ..RunOutcome::default()
                        })
                    })
                    .collect()
            })
        }
        "tokio-mt" | "tokio-ct" => {
            let rt = if runtime == "tokio-mt" {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            }
            .expect("tokio runtime");
            let agent = Agent::builder()
                .model(model)
                .runtime(Arc::new(TokioRuntime::from_handle(rt.handle().clone())))
                .build()
                .expect("agent");
            measure(&agent, &|agent, count| {
                rt.block_on(async {
                    let handles: Vec<_> = (0..count)
                        .map(|_| tokio::spawn(consume(agent.clone(), active.clone())))
                        .collect();
                    let mut results = Vec::with_capacity(count);
                    for handle in handles {
                        results.push(handle.await.expect("run task"));
                    }
                    results
                })
            })
        }
        "smol-1" => {
            let executor = Arc::new(Executor::new());
            let rt = SmolRuntime::with_executor(executor.clone());
            let agent = Agent::builder()
                .model(model)
                .runtime(rt.shared())
                .build()
                .expect("agent");
            measure(&agent, &|agent, count| {
                drive(
                    agent,
                    count,
                    &active,
                    |future| executor.spawn(future),
                    |tasks| {
                        rt.block_on(async {
                            let mut results = Vec::with_capacity(tasks.len());
                            for task in tasks {
                                results.push(task.await);
                            }
                            results
                        })
                    },
                )
            })
        }
        "smol-2" => {
            let rt = SmolRuntime::with_threads(2).expect("smol threads");
            let executor = rt.executor().expect("own executor").clone();
            let agent = Agent::builder()
                .model(model)
                .runtime(rt.shared())
                .build()
                .expect("agent");
            measure(&agent, &|agent, count| {
                drive(
                    agent,
                    count,
                    &active,
                    |future| executor.spawn(future),
                    |tasks| {
                        // Wait without joining the executor: its two threads run the runs.
                        agent_core::runtime::block_on(async {
                            let mut results = Vec::with_capacity(tasks.len());
                            for task in tasks {
                                results.push(task.await);
                            }
                            results
                        })
                    },
                )
            })
        }
        other => {
            eprintln!("unknown runtime {other:?}");
            return 2;
        }
    };
    println!(
        "{}",
        serde_json::to_string(&outcome).expect("outcome serializes")
    );
    0
}

/// One runtime's numbers.
pub struct ScaleRow {
    /// Which runtime.
    pub runtime: &'static str,
    /// Peak resident memory per run, KiB.
    pub kib_per_run: Summary,
    /// CPU time per event, µs.
    pub cpu_us_per_event: Summary,
    /// Wall time of all runs, s.
    pub wall_s: Summary,
    /// Smallest peak concurrency seen.
    pub max_active: usize,
    /// Runs that did not complete, over all repetitions.
    pub incomplete: usize,
    /// Events per repetition.
    pub events: usize,
    /// A failure, if a child failed.
    pub error: Option<String>,
}

/// The result of the scale measurement.
pub struct ScaleResult {
    /// Concurrent runs.
    pub runs: usize,
    /// Deltas per run.
    pub deltas: usize,
    /// Repetitions per runtime.
    pub reps: usize,
    /// One row per runtime.
    pub rows: Vec<ScaleRow>,
}

/// The backends measured through HTTP.
pub const HTTP_BACKENDS: [&str; 3] = ["tokio", "smol", "blocking"];

/// The row label of a backend through HTTP.
pub fn http_label(backend: &str) -> &'static str {
    match backend {
        "tokio" => "tokio (multi_thread, 2 workers; TokioClient / TokioServer)",
        "smol" => "smol (SmolRuntime::with_threads(2); SmolClient / SmolServer)",
        _ => "blocking (a thread per run, UreqClient / ThreadServer)",
    }
}

/// One backend's numbers through HTTP.
pub struct HttpScaleRow {
    /// Which backend.
    pub backend: &'static str,
    /// Client side: KiB per concurrent run (peak), peak concurrent runs, incomplete runs.
    pub client: Result<(f64, usize, usize), String>,
    /// Server side: KiB per open stream, streams open when sampled, failed clients.
    pub server: Result<(f64, usize, usize), String>,
    /// Why client-side runs did not complete: `(reason, runs)`, most frequent first.
    pub client_failures: Vec<(String, usize)>,
    /// The first failure of a server-side client, if any.
    pub server_first_error: Option<String>,
}

/// The result of the HTTP scale measurement.
pub struct HttpScaleResult {
    /// Concurrent streams.
    pub streams: usize,
    /// Deltas per stream.
    pub deltas: usize,
    /// Pace between deltas, ms.
    pub pace_ms: u64,
    /// One row per backend.
    pub rows: Vec<HttpScaleRow>,
}

/// A paced chat-completions upstream for the client side: the agent HTTP API (the same
/// server `TokioServer` runs) whose scripted model yields `deltas` deltas, one every `pace`,
/// on a listener whose accept backlog holds every stream's connect.
///
/// `TokioServer::bind` listens with tokio's backlog of 1024: with 10,000 clients connecting
/// at once the accept queue overflows, the kernel drops the handshakes' last ACKs, and some
/// clients (those that already sent their request) get a reset instead of a response. That
/// is a property of the bench's upstream, not of a client, so the upstream asks for a
/// backlog of `streams` (the kernel caps it at `net.core.somaxconn`), the same for every
/// backend.
fn paced_upstream(
    rt: &tokio::runtime::Runtime,
    streams: usize,
    deltas: usize,
    pace: Duration,
) -> agent_hyper::Server {
    let model = ScriptedModel::from_fn(move |_, _| {
        let mut turn = Turn::new();
        for k in 0..deltas {
            turn = turn.pause(pace).text(format!("w{k} "));
        }
        turn
    });
    let runtime = Arc::new(TokioRuntime::from_handle(rt.handle().clone()));
    let agent = Agent::builder()
        .model(model)
        .runtime(runtime.clone())
        .build()
        .expect("upstream agent");
    let config = agent_core::server::ServerConfig::default()
        .with_addr("127.0.0.1:0".parse().expect("addr"))
        .with_max_concurrent_runs(streams + 256);
    let backlog = u32::try_from(streams.max(1024)).unwrap_or(u32::MAX);
    let listener = rt
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(config.addr)?;
            socket.listen(backlog)
        })
        .expect("upstream listener");
    let local_addr = listener.local_addr().expect("upstream address");
    let service = agent_core::server::AgentService::new(agent, config);
    agent_hyper::Server::serve(UpstreamListener(listener), local_addr, service, runtime)
}

/// The accepting half of the paced upstream (as `TokioServer` accepts: `TCP_NODELAY` on).
struct UpstreamListener(tokio::net::TcpListener);

impl agent_hyper::Listener for UpstreamListener {
    type Io = hyper_util::rt::TokioIo<tokio::net::TcpStream>;

    async fn accept(&mut self) -> std::io::Result<Self::Io> {
        let (stream, _peer) = self.0.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(hyper_util::rt::TokioIo::new(stream))
    }
}

/// Measure memory per stream with `streams` concurrent paced streams through HTTP, client
/// side (a child process running the runs against a paced upstream in this process) and
/// server side (the backend's server in a child process, read by this process).
pub fn run_http(config: &Config) -> HttpScaleResult {
    let streams = config.http_scale_streams;
    let deltas = config.http_scale_deltas;
    let pace_ms = config.http_scale_pace_ms;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("upstream runtime");
    let upstream = paced_upstream(&rt, streams, deltas, Duration::from_millis(pace_ms));
    let base = format!("http://{}/v1", upstream.local_addr());
    let rows = HTTP_BACKENDS
        .iter()
        .map(|&backend| {
            let mut client_failures = Vec::new();
            let client = (|| {
                let mut child = ChildProcess::spawn(&[
                    "scale".into(),
                    format!("http-{backend}"),
                    streams.to_string(),
                    deltas.to_string(),
                    base.clone(),
                ])
                .map_err(|e| e.to_string())?;
                let line = child.read_line();
                child.finish(Duration::from_secs(60));
                let o: ScaleOutcome = serde_json::from_str(&line)
                    .map_err(|e| format!("http scale child said {line:?}: {e}"))?;
                let kib = o.peak_rss.saturating_sub(o.base_rss) as f64
                    / o.max_active.max(1) as f64
                    / 1024.0;
                client_failures = o.failures;
                Ok((kib, o.max_active, o.runs - o.completed))
            })();
            let (server, server_first_error) = match crate::fanout::server_memory(
                backend,
                config,
                streams,
                deltas as u32,
                pace_ms,
            ) {
                Ok((kib, open, failed, first_error)) => (Ok((kib, open, failed)), first_error),
                Err(e) => (Err(e), None),
            };
            HttpScaleRow {
                backend,
                client,
                server,
                client_failures,
                server_first_error,
            }
        })
        .collect();
    rt.block_on(upstream.shutdown_within(backend_tokio::DEFAULT_SHUTDOWN_TIMEOUT));
    HttpScaleResult {
        streams,
        deltas,
        pace_ms,
        rows,
    }
}

fn one_child(runtime: &str, config: &Config) -> Result<ScaleOutcome, String> {
    let mut child = ChildProcess::spawn(&[
        "scale".into(),
        runtime.into(),
        config.scale_runs.to_string(),
        config.scale_deltas.to_string(),
    ])
    .map_err(|e| e.to_string())?;
    let line = child.read_line();
    child.finish(Duration::from_secs(30));
    serde_json::from_str(&line).map_err(|e| format!("scale child said {line:?}: {e}"))
}

/// Measure.
pub fn run(config: &Config) -> ScaleResult {
    let n = RUNTIMES.len();
    let mut outcomes: Vec<Vec<ScaleOutcome>> = vec![Vec::new(); n];
    let mut errors: Vec<Option<String>> = vec![None; n];
    for rep in 0..config.scale_reps {
        for k in 0..n {
            let slot = (k + rep) % n;
            match one_child(RUNTIMES[slot], config) {
                Ok(outcome) => outcomes[slot].push(outcome),
                Err(e) => {
                    errors[slot].get_or_insert(e);
                }
            }
        }
    }
    let rows = RUNTIMES
        .iter()
        .enumerate()
        .map(|(i, &runtime)| {
            let o = &outcomes[i];
            let mut kib = Samples::from_vec(
                o.iter()
                    .map(|x| x.peak_rss.saturating_sub(x.base_rss) as f64 / x.runs as f64 / 1024.0)
                    .collect(),
            );
            let mut cpu = Samples::from_vec(
                o.iter()
                    .map(|x| x.cpu_s * 1e6 / x.events.max(1) as f64)
                    .collect(),
            );
            let mut wall = Samples::from_vec(o.iter().map(|x| x.wall_s).collect());
            ScaleRow {
                runtime,
                kib_per_run: kib.summary(),
                cpu_us_per_event: cpu.summary(),
                wall_s: wall.summary(),
                max_active: o.iter().map(|x| x.max_active).min().unwrap_or(0),
                incomplete: o.iter().map(|x| x.runs - x.completed).sum(),
                events: o.first().map_or(0, |x| x.events),
                error: errors[i].take(),
            }
        })
        .collect();
    ScaleResult {
        runs: config.scale_runs,
        deltas: config.scale_deltas,
        reps: config.scale_reps,
        rows,
    }
}
