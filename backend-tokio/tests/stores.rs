//! The store cases on tokio (current-thread: one thread drives every task and the
//! blocking pool does the database work) with each store: memory, SQLite, PostgreSQL
//! (skipped loudly without a server, failing when `CI=true`).

use test_support::backends::tokio::TokioCurrentThread;
use test_support::stores;

conformance::store_suite!(tokio_memory => TokioCurrentThread::default(), stores::memory());
conformance::store_suite!(tokio_sqlite => TokioCurrentThread::default(), stores::sqlite());
conformance::store_suite!(tokio_postgres => TokioCurrentThread::default(), stores::postgres());

/// The `postgres` client closes its connection by blocking on a runtime of its own, which
/// panics on a thread that drives tokio: the last handle of a store dropped in a task must
/// not take the task (or the process) down.
#[test]
fn a_postgres_store_dropped_inside_tokio_does_not_panic() {
    use conformance::cases::stores::StoreFixture;
    use std::sync::Arc;
    let Some(fixture) = stores::PostgresFixture::new() else {
        return;
    };
    let rt = backend_tokio::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let runtime = Arc::new(backend_tokio::TokioRuntime::from_handle(
        rt.handle().clone(),
    ));
    let store = fixture.store(runtime);
    rt.block_on(async move {
        // One call leaves a connection in the pool; dropping the store closes it.
        store.load_session("s").await.expect("a query");
        drop(store);
    });
}
