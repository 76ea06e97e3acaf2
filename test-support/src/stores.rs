//! Store fixtures for the store cases of the conformance suite: memory, SQLite (a fresh
//! file per fixture) and PostgreSQL (a fresh database per fixture, dropped afterwards).
//!
//! PostgreSQL is found through `AGENT_TEST_POSTGRES_URL` (`.ci/postgres.sh` starts one and
//! prints its DSN), else at the address `.ci/postgres.sh` uses. When none answers, the
//! PostgreSQL tests are skipped with a loud message, except when `CI=true`: then they fail.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use agent_core::runtime::SharedRuntime;
use agent_core::store::{MemoryStore, SharedStore};
use agent_store_postgres::PostgresStore;
use agent_store_sqlite::SqliteStore;
use conformance::cases::stores::StoreFixture;

/// The DSN `.ci/postgres.sh` prints.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:54329/postgres";

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A memory store (its second handle shares the data, as a second service would).
#[derive(Default)]
pub struct MemoryFixture {
    store: MemoryStore,
}

impl StoreFixture for MemoryFixture {
    fn name(&self) -> String {
        "memory".into()
    }
    fn store(&self, _runtime: SharedRuntime) -> SharedStore {
        Arc::new(self.store.clone())
    }
    fn second(&self, _runtime: SharedRuntime) -> SharedStore {
        Arc::new(self.store.clone())
    }
}

/// A SQLite file in a fresh directory, removed afterwards. One process per file: the
/// second handle is the same store.
pub struct SqliteFixture {
    dir: PathBuf,
    store: Mutex<Option<SqliteStore>>,
}

impl Default for SqliteFixture {
    fn default() -> Self {
        let dir = std::env::temp_dir().join(unique("agent-store-sqlite"));
        SqliteFixture {
            dir,
            store: Mutex::new(None),
        }
    }
}

impl SqliteFixture {
    fn open(&self, runtime: SharedRuntime) -> SharedStore {
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let store = store.get_or_insert_with(|| {
            SqliteStore::open(self.dir.join("agent.db"), runtime)
                .unwrap_or_else(|e| panic!("store fixture: could not open SQLite: {e}"))
        });
        Arc::new(store.clone())
    }
}

impl StoreFixture for SqliteFixture {
    fn name(&self) -> String {
        "sqlite".into()
    }
    fn store(&self, runtime: SharedRuntime) -> SharedStore {
        self.open(runtime)
    }
    fn second(&self, runtime: SharedRuntime) -> SharedStore {
        self.open(runtime)
    }
}

impl Drop for SqliteFixture {
    fn drop(&mut self) {
        self.store.lock().unwrap_or_else(|p| p.into_inner()).take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server's DSN, or `None` (with the reason) when no PostgreSQL answers.
///
/// # Panics
///
/// When `CI=true` and no PostgreSQL answers: CI must run these tests.
pub fn postgres_url() -> Option<String> {
    let url = std::env::var("AGENT_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_string());
    let mut config: postgres::Config = url
        .parse()
        .unwrap_or_else(|e| panic!("AGENT_TEST_POSTGRES_URL is not a DSN: {e}"));
    config.connect_timeout(std::time::Duration::from_secs(3));
    match config.connect(postgres::NoTls) {
        Ok(_) => Some(url),
        Err(err) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "CI=true but no PostgreSQL answers at AGENT_TEST_POSTGRES_URL ({err}); .ci/run starts one with .ci/postgres.sh"
                );
            }
            eprintln!(
                "SKIPPED (not a pass): no PostgreSQL answers ({err}); run `export AGENT_TEST_POSTGRES_URL=$(bash .ci/postgres.sh)` to run the PostgreSQL tests"
            );
            None
        }
    }
}

/// A fresh PostgreSQL database, dropped with the fixture.
pub struct PostgresDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PostgresDatabase {
    /// Create a database on the server at `admin_url`.
    pub fn create(admin_url: &str) -> Self {
        let name = unique("agent_test");
        let mut client = postgres::Client::connect(admin_url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("store fixture: could not connect to PostgreSQL: {e}"));
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("store fixture: CREATE DATABASE failed: {e}"));
        let mut config: postgres::Config = admin_url.parse().expect("a DSN");
        config.dbname(&name);
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) if admin_url.starts_with("postgres") => format!("{base}/{name}"),
            _ => format!("{admin_url} dbname={name}"),
        };
        PostgresDatabase {
            admin: admin_url.to_string(),
            name,
            url,
        }
    }

    /// The database's DSN.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A PostgreSQL store on a fresh database; its second handle is a separate store (pool and
/// listener) on the same database, as another instance would have.
pub struct PostgresFixture {
    database: PostgresDatabase,
}

impl PostgresFixture {
    /// A fixture, or `None` when no PostgreSQL answers (see [`postgres_url`]).
    pub fn new() -> Option<Self> {
        let url = postgres_url()?;
        Some(PostgresFixture {
            database: PostgresDatabase::create(&url),
        })
    }
}

impl StoreFixture for PostgresFixture {
    fn name(&self) -> String {
        "postgres".into()
    }
    fn store(&self, runtime: SharedRuntime) -> SharedStore {
        Arc::new(
            PostgresStore::connect(self.database.url(), runtime)
                .unwrap_or_else(|e| panic!("store fixture: could not connect: {e}")),
        )
    }
    fn second(&self, runtime: SharedRuntime) -> SharedStore {
        self.store(runtime)
    }
}

/// The three fixtures as the store suite takes them.
pub fn memory() -> Option<Box<dyn StoreFixture>> {
    Some(Box::new(MemoryFixture::default()))
}

/// See [`memory`].
pub fn sqlite() -> Option<Box<dyn StoreFixture>> {
    Some(Box::new(SqliteFixture::default()))
}

/// See [`memory`].
pub fn postgres() -> Option<Box<dyn StoreFixture>> {
    PostgresFixture::new().map(|f| Box::new(f) as Box<dyn StoreFixture>)
}
