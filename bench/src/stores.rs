//! (8) The cost per event of each store: the server's own memory (no store), the memory
//! store, SQLite and PostgreSQL (when one answers at `AGENT_TEST_POSTGRES_URL`, else at the
//! address `.ci/postgres.sh` uses).
//!
//! * **streamed, one run / 100 concurrent runs**: a scripted run of ready deltas through
//!   `AgentService` (every event written to the store before the body yields it), its SSE
//!   body read to the end on a 2-worker tokio runtime; wall time per event.
//! * **appended**: `Store::write_run` of batches of 64 events, awaited one after another;
//!   time per event.
//! * **read back**: `Store::read_events` in pages of 512 from a second handle; time per
//!   event.

use std::sync::Arc;
use std::time::Instant;

use agent_core::agent::Agent;
use agent_core::event::{Event, EventKind};
use agent_core::model::{ScriptedModel, Turn};
use agent_core::runtime::SharedRuntime;
use agent_core::server::{AgentService, ApiBody, ServerConfig};
use agent_core::store::{MemoryStore, RunStart, RunWrite, SharedStore};
use futures_util::StreamExt;

use crate::config::Config;
use crate::stats::{Samples, Summary};

/// One store's numbers, ns per event.
pub struct StoreRow {
    /// Which store.
    pub store: String,
    /// One run streamed.
    pub one_run: Summary,
    /// 100 concurrent runs streamed.
    pub concurrent: Summary,
    /// `write_run` in batches of 64 (`None` without a store).
    pub append: Option<Summary>,
    /// `read_events` in pages of 512.
    pub read: Option<Summary>,
}

/// The result of (8).
pub struct StoresResult {
    /// One row per store.
    pub rows: Vec<StoreRow>,
    /// Deltas of the one run.
    pub one_run_deltas: usize,
    /// Concurrent runs, and deltas each.
    pub concurrent_runs: usize,
    /// Deltas of each concurrent run.
    pub concurrent_deltas: usize,
    /// Repetitions.
    pub reps: usize,
    /// Why PostgreSQL was left out, if it was.
    pub postgres_skipped: Option<String>,
}

struct Pg {
    admin: String,
    name: String,
    url: String,
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn postgres_database() -> Result<Pg, String> {
    let admin = std::env::var("AGENT_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:54329/postgres".into());
    let mut client = postgres::Client::connect(&admin, postgres::NoTls)
        .map_err(|e| format!("no PostgreSQL ({e})"))?;
    let name = format!("agent_bench_{}", std::process::id());
    // Two statements: CREATE DATABASE cannot run inside an (implicit) transaction.
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        client.batch_execute(&sql).map_err(|e| {
            e.as_db_error()
                .map_or(e.to_string(), |d| d.message().to_string())
        })?;
    }
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => return Err("AGENT_TEST_POSTGRES_URL must be a postgres:// URL".into()),
    };
    Ok(Pg { admin, name, url })
}

fn turn(deltas: usize) -> Turn {
    (0..deltas).fold(Turn::new(), |t, k| t.text(format!("w{k} ")))
}

fn service(runtime: &SharedRuntime, deltas: usize, store: Option<SharedStore>) -> AgentService {
    let agent = Agent::builder()
        .model(ScriptedModel::from_fn(move |_, _| turn(deltas)))
        .runtime(runtime.clone())
        .build()
        .expect("agent");
    let mut config = ServerConfig::default().with_max_concurrent_runs(10_000);
    if let Some(store) = store {
        config = config.with_store(store);
    }
    AgentService::new(agent, config)
}

async fn stream_one(service: AgentService) -> usize {
    let response = service
        .handle(
            "POST",
            "/v1/runs",
            &[("content-type", "application/json")],
            br#"{"input":"go"}"#,
        )
        .await;
    let ApiBody::Stream(body) = response.body else {
        panic!("bench: /v1/runs did not stream ({})", response.status)
    };
    body.count().await
}

/// Wall ns per event of `runs` runs of `deltas` deltas at once.
fn streamed(
    rt: &backend_tokio::tokio::runtime::Runtime,
    runtime: &SharedRuntime,
    store: Option<SharedStore>,
    runs: usize,
    deltas: usize,
) -> f64 {
    let service = service(runtime, deltas, store);
    let start = Instant::now();
    let frames: usize = rt.block_on(async {
        let tasks: Vec<_> = (0..runs)
            .map(|_| backend_tokio::tokio::spawn(stream_one(service.clone())))
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.expect("bench: a run task");
        }
        total
    });
    start.elapsed().as_nanos() as f64 / frames.max(1) as f64
}

/// ns per event of `write_run` (batches of 64) and of `read_events` (pages of 512).
fn append_and_read(store: &SharedStore, reader: &SharedStore, events: usize) -> (f64, f64) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = format!(
        "run_bench_{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let start = Instant::now();
    let mut seq = 0u64;
    while (seq as usize) < events {
        let batch: Vec<Arc<Event>> = (0..64)
            .map(|i| {
                Arc::new(Event {
                    seq: seq + i,
                    kind: EventKind::TextDelta {
                        text: format!("w{} ", seq + i),
                    },
                })
            })
            .collect();
        let mut write = RunWrite::new(&id, batch);
        if seq == 0 {
            write = write.starting(RunStart::new("bench", None));
        }
        store
            .write_run(write)
            .wait_ready()
            .expect("bench: write_run");
        seq += 64;
    }
    let append = start.elapsed().as_nanos() as f64 / seq as f64;
    let start = Instant::now();
    let mut from = 0u64;
    loop {
        let page = agent_core::runtime::block_on(reader.read_events(&id, from, 512))
            .expect("bench: read_events");
        if page.is_empty() {
            break;
        }
        from += page.len() as u64;
    }
    let read = start.elapsed().as_nanos() as f64 / from.max(1) as f64;
    (append, read)
}

/// Run (8).
pub fn run(config: &Config) -> StoresResult {
    let (one_run_deltas, concurrent_runs, concurrent_deltas, reps) = if config.quick {
        (2_000, 100, 100, 2)
    } else {
        (20_000, 100, 1_000, 5)
    };
    let rt = backend_tokio::tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let runtime: SharedRuntime = Arc::new(backend_tokio::TokioRuntime::from_handle(
        rt.handle().clone(),
    ));
    let dir = std::env::temp_dir().join(format!("agent-bench-stores-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sqlite = agent_store_sqlite::SqliteStore::open(dir.join("bench.db"), runtime.clone())
        .expect("bench: SQLite opens");
    let pg = postgres_database();
    let postgres = pg.as_ref().ok().map(|pg| {
        let a = agent_store_postgres::PostgresStore::connect(&pg.url, runtime.clone())
            .expect("bench: PostgreSQL store");
        let b = agent_store_postgres::PostgresStore::connect(&pg.url, runtime.clone())
            .expect("bench: PostgreSQL store");
        (Arc::new(a) as SharedStore, Arc::new(b) as SharedStore)
    });
    let memory: SharedStore = Arc::new(MemoryStore::new());
    let sqlite: SharedStore = Arc::new(sqlite);
    let mut contenders: Vec<(String, Option<(SharedStore, SharedStore)>)> = vec![
        ("none (the server's memory)".into(), None),
        ("memory".into(), Some((memory.clone(), memory))),
        (
            "sqlite (WAL, synchronous=NORMAL)".into(),
            Some((sqlite.clone(), sqlite)),
        ),
    ];
    if let Some(pair) = postgres {
        contenders.push(("postgres (127.0.0.1)".into(), Some(pair)));
    }
    let mut samples: Vec<[Samples; 4]> = contenders.iter().map(|_| Default::default()).collect();
    for rep in 0..reps {
        for i in 0..contenders.len() {
            // Alternate the order between repetitions.
            let i = (i + rep) % contenders.len();
            let (_, stores) = &contenders[i];
            let store = stores.as_ref().map(|(a, _)| a.clone());
            samples[i][0].push(streamed(&rt, &runtime, store.clone(), 1, one_run_deltas));
            samples[i][1].push(streamed(
                &rt,
                &runtime,
                store,
                concurrent_runs,
                concurrent_deltas,
            ));
            if let Some((a, b)) = stores {
                let (append, read) = append_and_read(a, b, one_run_deltas);
                samples[i][2].push(append);
                samples[i][3].push(read);
            }
        }
    }
    let rows = contenders
        .into_iter()
        .zip(samples)
        .map(|((store, stores), mut s)| StoreRow {
            store,
            one_run: s[0].summary(),
            concurrent: s[1].summary(),
            append: stores.is_some().then(|| s[2].summary()),
            read: stores.is_some().then(|| s[3].summary()),
        })
        .collect();
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
    StoresResult {
        rows,
        one_run_deltas,
        concurrent_runs,
        concurrent_deltas,
        reps,
        postgres_skipped: pg.err(),
    }
}
