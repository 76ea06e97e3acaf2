//! (8) The server in the path: the bench's upstream streams OpenAI chunks as fast as it
//! can; each backend's server (`agent serve`'s shape: an agent on `OpenAiModel` with the
//! backend's own client), in a child process, relays them as `/v1/chat/completions` chunks;
//! the floor client reads them. Against the same floor client reading the upstream
//! directly, in the same run: throughput, time to the first delta, and the server's CPU time
//! per relayed event (`getrusage` of the child process).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use agent_core::http::HttpClient;
use agent_core::model::{Model, ModelContext, ModelRequest, ModelStream};
use agent_core::model::{OpenAiConfig, OpenAiModel};
use agent_core::policy::RetryPolicy;
use agent_core::server::ServerConfig;
use backend_blocking::{ThreadServer, ThreadServerOptions, UreqClient};
use backend_smol::{SmolClient, SmolRuntime, SmolServer};
use backend_tokio::{ReqwestClient, TokioClient, TokioRuntime, TokioServer, reqwest};

use crate::child::ChildProcess;
use crate::config::Config;
use crate::http::{chat_body, real_floor};
use crate::stats::{Samples, Summary};
use crate::upstream::{MODEL, Script, Stamps, Upstream};

/// The servers measured, in report order.
pub const SERVERS: [&str; 4] = ["tokio", "tokio-reqwest", "smol", "blocking"];

/// The row label of a server in the path.
pub fn label(server: &str) -> &'static str {
    match server {
        "tokio" => {
            "through TokioServer (multi_thread, 2 workers; TokioClient upstream, as `agent serve`)"
        }
        "tokio-reqwest" => "through TokioServer (multi_thread, 2 workers; ReqwestClient upstream)",
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
    /// Paced upstream: µs from the upstream writing its first chunk to the client's first
    /// delta.
    pub paced_delivery_us: Summary,
    /// Paced upstream: µs from the client starting its request to the upstream having read
    /// the request (through the server: the server's run start and its upstream request).
    pub paced_request_us: Summary,
}

/// The result of the measurement.
pub struct RelayResult {
    /// Chunks per upstream response.
    pub chunks: usize,
    /// Repetitions per contender.
    pub reps: usize,
    /// Paced time-to-first-delta trials per contender.
    pub ttfd_trials: usize,
    /// The direct floor first, then one row per server.
    pub rows: Vec<RelayRow>,
}

/// `OpenAiModel` on one client, whose upstream the parent can switch (`upstream URL`).
#[derive(Debug)]
struct SwitchModel {
    client: Arc<dyn HttpClient>,
    current: Mutex<Arc<OpenAiModel>>,
}

impl SwitchModel {
    fn new(base: String, client: Arc<dyn HttpClient>) -> Arc<SwitchModel> {
        let model = SwitchModel::model(base, &client);
        Arc::new(SwitchModel {
            client,
            current: Mutex::new(model),
        })
    }

    fn model(base: String, client: &Arc<dyn HttpClient>) -> Arc<OpenAiModel> {
        let config = OpenAiConfig::new(base, MODEL).with_retry(RetryPolicy::none());
        Arc::new(OpenAiModel::new(config, client.clone()))
    }

    fn switch(&self, base: String) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) =
            SwitchModel::model(base, &self.client);
    }
}

impl Model for SwitchModel {
    fn name(&self) -> &str {
        MODEL
    }

    fn stream(&self, request: ModelRequest, cx: ModelContext) -> ModelStream {
        let model = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        model.stream(request, cx)
    }
}

fn commands(model: &SwitchModel) {
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        if stdin.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim();
        if line == "cpu" {
            println!("cpu {}", crate::sys::cpu_seconds_precise());
        } else if let Some(base) = line.strip_prefix("upstream ") {
            model.switch(base.to_string());
            println!("ok");
        } else {
            return;
        }
    }
}

/// The server child: `relay-server <server> <upstream base URL>`.
pub fn server_child(args: &[String]) -> i32 {
    let server = args.first().map(String::as_str).unwrap_or("");
    let base = args.get(1).cloned().unwrap_or_default();
    let config = ServerConfig::default().with_addr("127.0.0.1:0".parse().expect("addr"));
    let grace = std::time::Duration::from_secs(1);
    match server {
        "tokio" | "tokio-reqwest" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let client: Arc<dyn HttpClient> = if server == "tokio" {
                Arc::new(TokioClient::with_handle(rt.handle().clone()))
            } else {
                Arc::new(ReqwestClient::new().runtime_handle(rt.handle().clone()))
            };
            let model = SwitchModel::new(base, client);
            let agent = agent_core::agent::Agent::builder()
                .shared_model(model.clone())
                .runtime(Arc::new(TokioRuntime::from_handle(rt.handle().clone())))
                .build()
                .expect("agent");
            let server = rt
                .block_on(TokioServer::bind(agent, config))
                .expect("bind")
                .with_shutdown_timeout(grace);
            println!("addr {}", server.local_addr());
            commands(&model);
            rt.block_on(server.shutdown());
        }
        "smol" => {
            let rt = SmolRuntime::with_threads(2).expect("smol threads");
            let model = SwitchModel::new(base, Arc::new(SmolClient::new()));
            let agent = agent_core::agent::Agent::builder()
                .shared_model(model.clone())
                .runtime(rt.shared())
                .build()
                .expect("agent");
            let server = SmolServer::bind(agent, config).expect("bind");
            println!("addr {}", server.local_addr());
            commands(&model);
            agent_core::runtime::block_on(server.shutdown_within(grace));
        }
        "blocking" => {
            let model = SwitchModel::new(base, Arc::new(UreqClient::new()));
            let agent = backend_blocking::agent_builder()
                .shared_model(model.clone())
                .build()
                .expect("agent");
            let options = ThreadServerOptions::default().with_shutdown_timeout(grace);
            let server = ThreadServer::bind_with(agent, config, options).expect("bind");
            println!("addr {}", server.local_addr());
            commands(&model);
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
            let mut child =
                ChildProcess::spawn(&["relay-server".into(), server.into(), upstream.base_url()])
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
            let (texts, started, first) = rt.block_on(real_floor(client.clone(), url, chat_body()));
            let first = first.map_or(f64::NAN, |f| (f - started).as_secs_f64());
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
    // Time to the first delta, with a paced upstream (one chunk every 2 ms): from the
    // moment the upstream wrote its first chunk to the moment the client parsed its delta.
    let paced_stamps = Arc::new(Stamps::default());
    let paced = Upstream::start(Script::paced(
        3,
        std::time::Duration::from_millis(2),
        paced_stamps.clone(),
    ))
    .expect("paced upstream");
    let paced_direct = format!("{}/chat/completions", paced.base_url());
    for (_, child, _) in children.iter_mut() {
        let answer = child.ask(&format!("upstream {}", paced.base_url()));
        assert_eq!(answer, "ok", "relay child: {answer}");
    }
    let mut deliveries: Vec<Samples> = (0..n).map(|_| Samples::new()).collect();
    let mut requests: Vec<Samples> = (0..n).map(|_| Samples::new()).collect();
    for trial in 0..config.relay_ttfd_trials + 1 {
        for k in 0..n {
            let slot = (k + trial) % n;
            let url = if slot == 0 {
                paced_direct.clone()
            } else {
                children[slot - 1].2.clone()
            };
            paced_stamps.clear();
            let (texts, started, first) = rt.block_on(real_floor(client.clone(), url, chat_body()));
            assert_eq!(texts, 3, "relay contender {slot}: paced delta count");
            let (Some(read), Some(written)) = paced_stamps.get() else {
                continue;
            };
            if trial == 0 {
                continue;
            }
            if let Some(first) = first {
                deliveries[slot].push(first.saturating_duration_since(written).as_secs_f64() * 1e6);
                requests[slot].push(read.saturating_duration_since(started).as_secs_f64() * 1e6);
            }
        }
    }
    drop(paced);
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
            paced_delivery_us: deliveries[slot].summary(),
            paced_request_us: requests[slot].summary(),
        });
    }
    RelayResult {
        chunks: config.http_chunks,
        reps: config.http_reps,
        ttfd_trials: config.relay_ttfd_trials,
        rows,
    }
}
