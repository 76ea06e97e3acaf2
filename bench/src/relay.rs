//! (8) The server in the path: the bench's upstream streams OpenAI chunks as fast as it
//! can; each backend's server (`agent serve`'s shape: an agent on `OpenAiModel` with the
//! backend's own client), in a child process, relays them as `/v1/chat/completions` chunks;
//! the floor client reads them. Against the same floor client reading the upstream
//! directly, in the same run: throughput, time to the first delta, and the server's CPU time
//! per relayed event (`getrusage` of the child process).

use std::sync::Arc;
use std::time::Instant;

use agent_core::model::{OpenAiConfig, OpenAiModel};
use agent_core::policy::RetryPolicy;
use agent_core::server::ServerConfig;
use backend_blocking::{ThreadServer, ThreadServerOptions, UreqClient};
use backend_smol::{SmolClient, SmolRuntime, SmolServer};
use backend_tokio::{ReqwestClient, TokioRuntime, TokioServer, reqwest};

use crate::child::ChildProcess;
use crate::config::Config;
use crate::http::{chat_body, real_floor};
use crate::stats::{Samples, Summary};
use crate::upstream::{MODEL, Script, Upstream};

/// The servers measured, in report order.
pub const SERVERS: [&str; 3] = ["tokio", "smol", "blocking"];

/// The row label of a server in the path.
pub fn label(server: &str) -> &'static str {
    match server {
        "tokio" => "through TokioServer (multi_thread, 2 workers; ReqwestClient upstream)",
        "smol" => "through SmolServer (SmolRuntime::with_threads(2); SmolClient upstream)",
        _ => "through ThreadServer (a thread per connection; UreqClient upstream)",
    }
}

/// One row: deltas per second, µs to the first delta, server µs of CPU per relayed event.
pub struct RelayRow {
    /// `None` for the direct floor, else the server's name.
    pub server: Option<&'static str>,
    /// Text deltas per second.
    pub rate: Summary,
    /// Microseconds from sending the request to the first text delta.
    pub first_delta_us: Summary,
    /// Server CPU (user + system) per relayed text delta, µs (`None` for the direct floor).
    pub cpu_us: Option<Summary>,
}

/// The result of the measurement.
pub struct RelayResult {
    /// Chunks per upstream response.
    pub chunks: usize,
    /// Repetitions per contender.
    pub reps: usize,
    /// The direct floor first, then one row per server.
    pub rows: Vec<RelayRow>,
}

fn cpu_commands() {
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        if stdin.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        match line.trim() {
            "cpu" => println!("cpu {}", crate::sys::cpu_seconds_precise()),
            _ => return,
        }
    }
}

/// The server child: `relay-server <server> <upstream base URL>`.
pub fn server_child(args: &[String]) -> i32 {
    let server = args.first().map(String::as_str).unwrap_or("");
    let base = args.get(1).cloned().unwrap_or_default();
    let model_config = OpenAiConfig::new(base, MODEL).with_retry(RetryPolicy::none());
    let config = ServerConfig::default().with_addr("127.0.0.1:0".parse().expect("addr"));
    let grace = std::time::Duration::from_secs(1);
    match server {
        "tokio" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let client = Arc::new(ReqwestClient::new().runtime_handle(rt.handle().clone()));
            let agent = agent_core::agent::Agent::builder()
                .shared_model(Arc::new(OpenAiModel::new(model_config, client)))
                .runtime(Arc::new(TokioRuntime::from_handle(rt.handle().clone())))
                .build()
                .expect("agent");
            let server = rt
                .block_on(TokioServer::bind(agent, config))
                .expect("bind")
                .with_shutdown_timeout(grace);
            println!("addr {}", server.local_addr());
            cpu_commands();
            rt.block_on(server.shutdown());
        }
        "smol" => {
            let rt = SmolRuntime::with_threads(2).expect("smol threads");
            let agent = agent_core::agent::Agent::builder()
                .shared_model(Arc::new(OpenAiModel::new(
                    model_config,
                    Arc::new(SmolClient::new()),
                )))
                .runtime(rt.shared())
                .build()
                .expect("agent");
            let server = SmolServer::bind(agent, config).expect("bind");
            println!("addr {}", server.local_addr());
            cpu_commands();
            agent_core::runtime::block_on(server.shutdown_within(grace));
        }
        "blocking" => {
            let agent = backend_blocking::agent_builder()
                .shared_model(Arc::new(OpenAiModel::new(
                    model_config,
                    Arc::new(UreqClient::new()),
                )))
                .build()
                .expect("agent");
            let options = ThreadServerOptions::default().with_shutdown_timeout(grace);
            let server = ThreadServer::bind_with(agent, config, options).expect("bind");
            println!("addr {}", server.local_addr());
            cpu_commands();
            server.shutdown();
        }
        other => {
            eprintln!("unknown server {other:?}");
            return 2;
        }
    }
    0
}

fn parse_cpu(line: &str) -> f64 {
    line.strip_prefix("cpu ")
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Measure.
pub fn run(config: &Config) -> RelayResult {
    let upstream = Upstream::start(Script::burst(config.http_chunks)).expect("upstream");
    let direct_url = format!("{}/chat/completions", upstream.base_url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("floor runtime");
    let client = rt.block_on(async { reqwest::Client::new() });
    let mut children: Vec<(&'static str, ChildProcess, String)> = SERVERS
        .iter()
        .map(|&server| {
            let mut child = ChildProcess::spawn(&[
                "relay-server".into(),
                server.into(),
                upstream.base_url(),
            ])
            .expect("server child");
            let addr_line = child.read_line();
            let addr = addr_line
                .strip_prefix("addr ")
                .unwrap_or_else(|| panic!("relay child said {addr_line:?}"))
                .to_string();
            (server, child, format!("http://{addr}/v1/chat/completions"))
        })
        .collect();
    let expected = config.http_chunks;
    let n = children.len() + 1;
    let mut rates: Vec<Samples> = (0..n).map(|_| Samples::new()).collect();
    let mut firsts: Vec<Samples> = (0..n).map(|_| Samples::new()).collect();
    let mut cpus: Vec<Samples> = (0..n).map(|_| Samples::new()).collect();
    // One warm-up round (connections, allocator), then the alternating repetitions.
    for rep in 0..=config.http_reps {
        for k in 0..n {
            let slot = (k + rep) % n;
            let url = if slot == 0 {
                direct_url.clone()
            } else {
                children[slot - 1].2.clone()
            };
            let cpu0 = (slot > 0).then(|| parse_cpu(&children[slot - 1].1.ask("cpu")));
            let start = Instant::now();
            let (texts, first) = rt.block_on(real_floor(client.clone(), url, chat_body()));
            let elapsed = start.elapsed().as_secs_f64();
            assert_eq!(texts, expected, "relay contender {slot}: wrong delta count");
            if rep == 0 {
                continue;
            }
            rates[slot].push(texts as f64 / elapsed);
            firsts[slot].push(first * 1e6);
            if let Some(cpu0) = cpu0 {
                let cpu1 = parse_cpu(&children[slot - 1].1.ask("cpu"));
                cpus[slot].push((cpu1 - cpu0) * 1e6 / texts as f64);
            }
        }
    }
    for (_, mut child, _) in children.drain(..) {
        child.tell("quit");
        child.finish(std::time::Duration::from_secs(5));
    }
    drop(upstream);
    let mut rows = Vec::new();
    for slot in 0..n {
        rows.push(RelayRow {
            server: (slot > 0).then(|| SERVERS[slot - 1]),
            rate: rates[slot].summary(),
            first_delta_us: firsts[slot].summary(),
            cpu_us: (slot > 0).then(|| cpus[slot].summary()),
        });
    }
    RelayResult {
        chunks: config.http_chunks,
        reps: config.http_reps,
        rows,
    }
}
