//! (4) Server fan-out: each backend's server, in a child process, streams a paced model to
//! many concurrent SSE clients (a tokio current-thread loader in the parent process).
//! Each text delta carries its production time (Unix nanoseconds, a clock both processes
//! share), so every client measures the delivery latency of every event; the server reports
//! its resident memory before and while all streams are open.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agent_core::agent::Agent;
use agent_core::model::{Model, ModelContext, ModelDelta, ModelRequest, ModelStream};
use agent_core::server::ServerConfig;
use agent_core::sse::{SseDecoder, SseItem};
use agent_http1::{BodyFraming, ChunkedDecoder, HeadLimits, HeadParser};
use backend_blocking::{ThreadServer, ThreadServerOptions};
use backend_smol::{SmolRuntime, SmolServer};
use backend_tokio::{TokioRuntime, TokioServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::child::ChildProcess;
use crate::config::Config;
use crate::stats::{Samples, Summary};
use crate::sys::{peak_rss_bytes, rss_bytes, unix_nanos};

/// The servers measured.
pub const SERVERS: [&str; 3] = ["tokio", "smol", "blocking"];

/// The row label of a server.
pub fn label(server: &str) -> &'static str {
    match server {
        "tokio" => "TokioServer (multi_thread, 2 workers)",
        "smol" => "SmolServer (SmolRuntime::with_threads(2))",
        _ => "ThreadServer (a thread per connection)",
    }
}

/// The input of the warm-up runs, which get two deltas only.
const WARM_INPUT: &str = "warm";
/// Clients connecting at the same time (the rest wait): keeps the listen backlog bounded.
const CONNECTS_IN_FLIGHT: usize = 64;

/// A model that yields `deltas` text deltas, one every `pace`, each the Unix time in
/// nanoseconds at which it was produced.
#[derive(Debug)]
struct StampedModel {
    deltas: u32,
    pace: Duration,
}

impl Model for StampedModel {
    fn name(&self) -> &str {
        "stamped"
    }

    fn stream(&self, request: ModelRequest, cx: ModelContext) -> ModelStream {
        let deltas = if request.last_user_text() == Some(WARM_INPUT) {
            2
        } else {
            self.deltas
        };
        let pace = self.pace;
        let runtime = cx.runtime;
        Box::pin(futures_util::stream::unfold(0u32, move |i| {
            let runtime = runtime.clone();
            async move {
                if i >= deltas {
                    return None;
                }
                runtime.sleep(pace).await;
                Some((Ok(ModelDelta::Text(unix_nanos().to_string())), i + 1))
            }
        }))
    }
}

fn serve_commands() {
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        if stdin.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        match line.trim() {
            "rss" => println!(
                "rss {} {} {}",
                rss_bytes(),
                peak_rss_bytes(),
                crate::sys::cpu_seconds()
            ),
            _ => return,
        }
    }
}

/// The server child: `fanout-server <server> <deltas> <pace_ms> <max_runs>`.
pub fn server_child(args: &[String]) -> i32 {
    let arg = |i: usize| args.get(i).and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
    let server = args.first().map(String::as_str).unwrap_or("");
    let model = StampedModel {
        deltas: arg(1) as u32,
        pace: Duration::from_millis(arg(2)),
    };
    let max_runs = arg(3) as usize;
    let config = ServerConfig::default()
        .with_addr("127.0.0.1:0".parse().expect("addr"))
        .with_max_concurrent_runs(max_runs);
    let grace = Duration::from_secs(1);
    match server {
        "tokio" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let agent = Agent::builder()
                .model(model)
                .runtime(Arc::new(TokioRuntime::from_handle(rt.handle().clone())))
                .build()
                .expect("agent");
            let server = rt
                .block_on(TokioServer::bind(agent, config))
                .expect("bind")
                .with_shutdown_timeout(grace);
            println!("addr {}", server.local_addr());
            serve_commands();
            rt.block_on(server.shutdown());
        }
        "smol" => {
            let rt = SmolRuntime::with_threads(2).expect("smol threads");
            let agent = Agent::builder()
                .model(model)
                .runtime(rt.shared())
                .build()
                .expect("agent");
            let server = SmolServer::bind(agent, config).expect("bind");
            println!("addr {}", server.local_addr());
            serve_commands();
            agent_core::runtime::block_on(server.shutdown_within(grace));
        }
        "blocking" => {
            let agent = backend_blocking::agent_builder()
                .model(model)
                .build()
                .expect("agent");
            let options = ThreadServerOptions::default()
                .with_max_connections(max_runs)
                .with_shutdown_timeout(grace);
            let server = ThreadServer::bind_with(agent, config, options).expect("bind");
            println!("addr {}", server.local_addr());
            serve_commands();
            server.shutdown();
        }
        other => {
            eprintln!("unknown server {other:?}");
            return 2;
        }
    }
    0
}

/// Progress of the loader, read by the memory sampler.
#[derive(Default)]
struct Counters {
    /// Clients that received their first text delta.
    live: AtomicUsize,
    /// Clients that ended.
    done: AtomicUsize,
}

#[derive(serde::Deserialize)]
struct DeltaFrame {
    text: String,
}

/// One SSE client: POST a run, read its stream, return the latency (ns) of every text delta.
async fn client(
    addr: std::net::SocketAddr,
    input: &'static str,
    connects: Arc<tokio::sync::Semaphore>,
    counters: Arc<Counters>,
) -> Result<Vec<u64>, String> {
    let body = format!(r#"{{"input":"{input}"}}"#);
    let request = format!(
        "POST /v1/runs HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let permit = connects.acquire().await.map_err(|e| e.to_string())?;
    let mut socket = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    socket.set_nodelay(true).map_err(|e| e.to_string())?;
    socket
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut parser = HeadParser::new(HeadLimits::default());
    let mut head = Vec::new();
    let (response, rest) = loop {
        let n = socket.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the response head".into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some((response, used)) = parser.parse_response(&head).map_err(|e| e.to_string())? {
            break (response, head.split_off(used));
        }
    };
    drop(permit);
    if response.status != 200 {
        return Err(format!("status {} {}", response.status, response.reason));
    }
    let chunked = response.body_framing("POST").map_err(|e| e.to_string())? == BodyFraming::Chunked;
    let mut dechunk = ChunkedDecoder::new();
    let mut decoder = SseDecoder::new();
    let mut latencies = Vec::new();
    let mut payload = Vec::new();
    let mut pending = rest;
    let mut first = true;
    loop {
        payload.clear();
        if chunked {
            dechunk
                .decode(&pending, &mut payload)
                .map_err(|e| e.to_string())?;
        } else {
            payload.extend_from_slice(&pending);
        }
        decoder.push(&payload);
        while let Some(item) = decoder.next_item() {
            let Ok(SseItem::Event(event)) = item else {
                continue;
            };
            match event.event.as_str() {
                "text_delta" => {
                    let now = unix_nanos();
                    let frame: DeltaFrame =
                        serde_json::from_str(&event.data).map_err(|e| e.to_string())?;
                    let produced: u64 = frame.text.parse().map_err(|_| "bad stamp")?;
                    latencies.push(now.saturating_sub(produced));
                    if first {
                        first = false;
                        counters.live.fetch_add(1, Ordering::SeqCst);
                    }
                }
                "run_completed" => return Ok(latencies),
                "run_failed" | "run_cancelled" => return Err(format!("terminal {}", event.event)),
                _ => {}
            }
        }
        let n = socket.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before run_completed".into());
        }
        pending = buf[..n].to_vec();
    }
}

/// What the loader saw.
struct Load {
    latencies_ns: Vec<u64>,
    errors: usize,
    first_error: Option<String>,
}

async fn load(
    addr: std::net::SocketAddr,
    clients: usize,
    input: &'static str,
    counters: Arc<Counters>,
    limit: Duration,
) -> Load {
    let connects = Arc::new(tokio::sync::Semaphore::new(CONNECTS_IN_FLIGHT));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let connects = connects.clone();
            let counters = counters.clone();
            tokio::spawn(async move {
                let outcome =
                    tokio::time::timeout(limit, client(addr, input, connects, counters.clone()))
                        .await
                        .unwrap_or_else(|_| Err("timed out".into()));
                counters.done.fetch_add(1, Ordering::SeqCst);
                outcome
            })
        })
        .collect();
    let mut result = Load {
        latencies_ns: Vec::new(),
        errors: 0,
        first_error: None,
    };
    for task in tasks {
        match task.await.unwrap_or_else(|e| Err(e.to_string())) {
            Ok(latencies) => result.latencies_ns.extend(latencies),
            Err(error) => {
                result.errors += 1;
                result.first_error.get_or_insert(error);
            }
        }
    }
    result
}

/// (VmRSS bytes, VmHWM bytes, CPU seconds) from a server child's `rss` answer.
fn parse_rss(line: &str) -> (u64, u64, f64) {
    let parts: Vec<&str> = line.split_whitespace().skip(1).collect();
    let int = |i: usize| parts.get(i).and_then(|p| p.parse().ok()).unwrap_or(0);
    let cpu = parts.get(2).and_then(|p| p.parse().ok()).unwrap_or(0.0);
    (int(0), int(1), cpu)
}

/// One repetition against one server.
struct Rep {
    latencies_ns: Vec<u64>,
    errors: usize,
    first_error: Option<String>,
    base_rss: u64,
    live_rss: u64,
    open_at_sample: usize,
    /// Server CPU seconds during the load.
    server_cpu_s: f64,
    /// Loader (this process) CPU seconds during the load.
    loader_cpu_s: f64,
    /// Wall seconds of the load.
    wall_s: f64,
}

fn one_rep(server: &str, config: &Config) -> Result<Rep, String> {
    let clients = config.fanout_clients;
    let mut child = ChildProcess::spawn(&[
        "fanout-server".into(),
        server.into(),
        config.fanout_deltas.to_string(),
        config.fanout_pace_ms.to_string(),
        (clients + 64).to_string(),
    ])
    .map_err(|e| e.to_string())?;
    let addr_line = child.read_line();
    let addr: std::net::SocketAddr = addr_line
        .strip_prefix("addr ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("server child said {addr_line:?}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let stream_time =
        Duration::from_millis(config.fanout_pace_ms * u64::from(config.fanout_deltas));
    let limit = stream_time + Duration::from_secs(30);
    // Warm-up: a few short streams, so that the baseline includes the server's one-time costs.
    let warm = rt.block_on(load(addr, 16, WARM_INPUT, Arc::default(), limit));
    if warm.errors > 0 {
        return Err(format!("warm-up failed: {:?}", warm.first_error));
    }
    let (base_rss, _, server_cpu0) = parse_rss(&child.ask("rss"));
    let loader_cpu0 = crate::sys::cpu_seconds();
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let (load, live_rss, open_at_sample) = std::thread::scope(|scope| {
        let sampler = {
            let counters = counters.clone();
            let child = &mut child;
            scope.spawn(move || {
                let start = Instant::now();
                loop {
                    let live = counters.live.load(Ordering::SeqCst);
                    let done = counters.done.load(Ordering::SeqCst);
                    if live >= clients || done >= clients || start.elapsed() > limit {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                let open_before = counters
                    .live
                    .load(Ordering::SeqCst)
                    .saturating_sub(counters.done.load(Ordering::SeqCst));
                let (rss, _, _) = parse_rss(&child.ask("rss"));
                (rss, open_before)
            })
        };
        let load = rt.block_on(load(addr, clients, "go", counters.clone(), limit));
        let (rss, open) = sampler.join().unwrap_or((0, 0));
        (load, rss, open)
    });
    let wall_s = started.elapsed().as_secs_f64();
    let loader_cpu_s = crate::sys::cpu_seconds() - loader_cpu0;
    let (_, _, server_cpu1) = parse_rss(&child.ask("rss"));
    child.tell("quit");
    child.finish(Duration::from_secs(10));
    Ok(Rep {
        server_cpu_s: server_cpu1 - server_cpu0,
        loader_cpu_s,
        wall_s,
        latencies_ns: load.latencies_ns,
        errors: load.errors,
        first_error: load.first_error,
        base_rss,
        live_rss,
        open_at_sample,
    })
}

/// Server-side memory with `clients` concurrent paced streams (`deltas` deltas, one every
/// `pace_ms`): (KiB per open stream, streams open when sampled, failed clients).
pub fn server_memory(
    server: &str,
    config: &Config,
    clients: usize,
    deltas: u32,
    pace_ms: u64,
) -> Result<(f64, usize, usize, Option<String>), String> {
    let mut config = config.clone();
    config.fanout_clients = clients;
    config.fanout_deltas = deltas;
    config.fanout_pace_ms = pace_ms;
    let rep = one_rep(server, &config)?;
    let kib = rep.live_rss.saturating_sub(rep.base_rss) as f64
        / rep.open_at_sample.max(1) as f64
        / 1024.0;
    Ok((kib, rep.open_at_sample, rep.errors, rep.first_error))
}

/// One repetition against `server`, for `bench __profile`.
pub fn profile_once(server: &str, config: &Config) {
    match one_rep(server, config) {
        Ok(rep) => {
            let mut latency =
                Samples::from_vec(rep.latencies_ns.iter().map(|&ns| ns as f64 / 1e3).collect());
            eprintln!(
                "{server}: p50 {:.0} µs, p99 {:.0} µs, {} failed",
                latency.median(),
                latency.percentile(99.0),
                rep.errors
            );
        }
        Err(e) => eprintln!("{server}: {e}"),
    }
}

/// One server's numbers.
pub struct FanoutRow {
    /// Which server.
    pub server: &'static str,
    /// Delivery latency of every text delta, µs (pooled over the repetitions).
    pub latency_us: Summary,
    /// Resident memory per open stream, KiB (one sample per repetition).
    pub kib_per_stream: Summary,
    /// Streams open when memory was sampled (smallest over the repetitions).
    pub open_at_sample: usize,
    /// Server CPU per delivered delta, µs (one sample per repetition).
    pub server_cpu_us_per_delta: Summary,
    /// Server CPU use during the load, in cores (one sample per repetition).
    pub server_cores: Summary,
    /// Loader CPU use during the load, in cores (one sample per repetition).
    pub loader_cores: Summary,
    /// Text deltas received, over all repetitions.
    pub received: usize,
    /// Failed clients, over all repetitions.
    pub errors: usize,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

/// The result of the fan-out measurement.
pub struct FanoutResult {
    /// Concurrent clients.
    pub clients: usize,
    /// Deltas per stream.
    pub deltas: u32,
    /// Pace, ms.
    pub pace_ms: u64,
    /// Repetitions per server.
    pub reps: usize,
    /// Text deltas expected per server (all repetitions).
    pub expected: usize,
    /// One row per server.
    pub rows: Vec<FanoutRow>,
}

/// Measure.
pub fn run(config: &Config) -> FanoutResult {
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); SERVERS.len()];
    let mut kib: Vec<Samples> = SERVERS.iter().map(|_| Samples::new()).collect();
    let mut open = vec![usize::MAX; SERVERS.len()];
    let mut server_cpu: Vec<Samples> = SERVERS.iter().map(|_| Samples::new()).collect();
    let mut server_cores: Vec<Samples> = SERVERS.iter().map(|_| Samples::new()).collect();
    let mut loader_cores: Vec<Samples> = SERVERS.iter().map(|_| Samples::new()).collect();
    let mut errors = vec![0usize; SERVERS.len()];
    let mut first_errors: Vec<Option<String>> = vec![None; SERVERS.len()];
    for rep in 0..config.fanout_reps {
        for k in 0..SERVERS.len() {
            let slot = (k + rep) % SERVERS.len();
            match one_rep(SERVERS[slot], config) {
                Ok(r) => {
                    if !r.latencies_ns.is_empty() {
                        server_cpu[slot].push(r.server_cpu_s * 1e6 / r.latencies_ns.len() as f64);
                    }
                    if r.wall_s > 0.0 {
                        server_cores[slot].push(r.server_cpu_s / r.wall_s);
                        loader_cores[slot].push(r.loader_cpu_s / r.wall_s);
                    }
                    latencies[slot].extend(r.latencies_ns);
                    errors[slot] += r.errors;
                    if first_errors[slot].is_none() {
                        first_errors[slot] = r.first_error;
                    }
                    if r.open_at_sample > 0 {
                        let delta = r.live_rss.saturating_sub(r.base_rss) as f64;
                        kib[slot].push(delta / r.open_at_sample as f64 / 1024.0);
                    }
                    open[slot] = open[slot].min(r.open_at_sample);
                }
                Err(e) => {
                    errors[slot] += config.fanout_clients;
                    first_errors[slot].get_or_insert(e);
                }
            }
        }
    }
    let rows = SERVERS
        .iter()
        .enumerate()
        .map(|(i, &server)| {
            let received = latencies[i].len();
            let mut samples =
                Samples::from_vec(latencies[i].iter().map(|&ns| ns as f64 / 1e3).collect());
            FanoutRow {
                server,
                latency_us: samples.summary(),
                kib_per_stream: kib[i].summary(),
                open_at_sample: if open[i] == usize::MAX { 0 } else { open[i] },
                server_cpu_us_per_delta: server_cpu[i].summary(),
                server_cores: server_cores[i].summary(),
                loader_cores: loader_cores[i].summary(),
                received,
                errors: errors[i],
                first_error: first_errors[i].take(),
            }
        })
        .collect();
    FanoutResult {
        clients: config.fanout_clients,
        deltas: config.fanout_deltas,
        pace_ms: config.fanout_pace_ms,
        reps: config.fanout_reps,
        expected: config.fanout_clients * config.fanout_deltas as usize * config.fanout_reps,
        rows,
    }
}
