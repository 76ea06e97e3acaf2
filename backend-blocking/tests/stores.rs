//! The store cases on plain threads with each store: memory, SQLite, PostgreSQL (skipped
//! loudly without a server, failing when `CI=true`).

use test_support::backends::blocking::Threads;
use test_support::stores;

conformance::store_suite!(threads_memory => Threads, stores::memory());
conformance::store_suite!(threads_sqlite => Threads, stores::sqlite());
conformance::store_suite!(threads_postgres => Threads, stores::postgres());
