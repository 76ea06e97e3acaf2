//! The store cases on smol (one executor thread) with each store: memory, SQLite,
//! PostgreSQL (skipped loudly without a server, failing when `CI=true`).

use test_support::backends::smol::SmolSingleThread;
use test_support::stores;

conformance::store_suite!(smol_memory => SmolSingleThread::default(), stores::memory());
conformance::store_suite!(smol_sqlite => SmolSingleThread::default(), stores::sqlite());
conformance::store_suite!(smol_postgres => SmolSingleThread::default(), stores::postgres());
