//! The store cases on tokio (current-thread: one thread drives every task and the
//! blocking pool does the database work) with each store: memory, SQLite, PostgreSQL
//! (skipped loudly without a server, failing when `CI=true`).

use test_support::backends::tokio::TokioCurrentThread;
use test_support::stores;

conformance::store_suite!(tokio_memory => TokioCurrentThread::default(), stores::memory());
conformance::store_suite!(tokio_sqlite => TokioCurrentThread::default(), stores::sqlite());
conformance::store_suite!(tokio_postgres => TokioCurrentThread::default(), stores::postgres());
