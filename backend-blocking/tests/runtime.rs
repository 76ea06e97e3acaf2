//! ThreadPoolRuntime: bounded pool, panics, timers, spawn, idle threads exit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use agent_core::runtime::{self, Runtime, TaskError, block_on};
use backend_blocking::ThreadPoolRuntime;

const WATCHDOG: Duration = Duration::from_secs(10);

#[test]
fn pool_of_two_never_runs_more_than_two_jobs_at_once() {
    let rt = ThreadPoolRuntime::builder().max_threads(2).build();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    // The first two jobs wait for each other: both must run at once (the pool does use two
    // threads); jobs 3 and 4 can only start after them.
    let pair = Arc::new(Barrier::new(2));
    let (done_tx, done_rx) = mpsc::channel();
    for i in 0..4 {
        let running = running.clone();
        let peak = peak.clone();
        let pair = pair.clone();
        let done_tx = done_tx.clone();
        rt.spawn_blocking(Box::new(move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            if i < 2 {
                pair.wait();
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
            running.fetch_sub(1, Ordering::SeqCst);
            done_tx.send(i).unwrap();
        }));
    }
    let mut finished: Vec<i32> = (0..4)
        .map(|_| {
            done_rx
                .recv_timeout(WATCHDOG)
                .expect("a job never finished")
        })
        .collect();
    finished.sort();
    assert_eq!(finished, vec![0, 1, 2, 3]);
    assert_eq!(
        peak.load(Ordering::SeqCst),
        2,
        "the pool ran more (or fewer) than 2 jobs at once"
    );
    assert!(rt.threads() <= 2);
}

#[test]
fn queued_jobs_wait_for_a_free_worker() {
    let rt = ThreadPoolRuntime::builder().max_threads(1).build();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel();
    let first_started = started_tx.clone();
    rt.spawn_blocking(Box::new(move || {
        first_started.send(1).unwrap();
        release_rx.recv_timeout(WATCHDOG).unwrap();
    }));
    assert_eq!(started_rx.recv_timeout(WATCHDOG).unwrap(), 1);
    rt.spawn_blocking(Box::new(move || started_tx.send(2).unwrap()));
    assert_eq!(
        rt.queued_jobs(),
        1,
        "the second job should wait in the queue"
    );
    assert!(started_rx.try_recv().is_err());
    release_tx.send(()).unwrap();
    assert_eq!(started_rx.recv_timeout(WATCHDOG).unwrap(), 2);
}

#[test]
fn a_panic_becomes_task_error_panicked_and_the_pool_survives() {
    let rt = ThreadPoolRuntime::builder().max_threads(1).build();
    let result = block_on(runtime::blocking(&rt, || -> u32 { panic!("boom") }));
    assert_eq!(result, Err(TaskError::Panicked("boom".into())));
    // A raw job that panics does not kill the only worker either.
    rt.spawn_blocking(Box::new(|| panic!("raw boom")));
    assert_eq!(block_on(runtime::blocking(&rt, || 7)), Ok(7));
}

#[test]
fn spawned_task_panic_becomes_task_error() {
    let rt = ThreadPoolRuntime::new();
    let handle = runtime::spawn(&rt, async { panic!("task boom") });
    assert_eq!(
        block_on(handle),
        Err::<(), _>(TaskError::Panicked("task boom".into()))
    );
}

#[test]
fn sleep_fires_after_its_duration() {
    let rt = ThreadPoolRuntime::new();
    let start = Instant::now();
    block_on(rt.sleep(Duration::from_millis(20)));
    assert!(start.elapsed() >= Duration::from_millis(20));
    // A timeout on the same runtime: the timer wins against a future that never finishes.
    let raced = block_on(runtime::timeout(
        &rt,
        Duration::from_millis(5),
        std::future::pending::<()>(),
    ));
    assert_eq!(raced, None);
}

#[test]
fn spawned_task_can_await_blocking_work_on_a_pool_of_one() {
    // A task must not occupy the only pool thread while it waits for a job (no deadlock).
    let rt = ThreadPoolRuntime::builder().max_threads(1).build();
    let inner = rt.clone();
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let inner = inner.clone();
            runtime::spawn(&rt, async move {
                runtime::blocking(&inner, move || i * 10).await
            })
        })
        .collect();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let values: Vec<_> = handles.into_iter().map(block_on).collect();
        tx.send(values).unwrap();
    });
    let values = rx.recv_timeout(WATCHDOG).expect("spawned tasks deadlocked");
    assert_eq!(values, vec![Ok(Ok(0)), Ok(Ok(10)), Ok(Ok(20))]);
}

#[test]
fn idle_workers_exit_after_the_idle_timeout() {
    let rt = ThreadPoolRuntime::builder()
        .max_threads(2)
        .idle_timeout(Duration::from_millis(20))
        .build();
    assert_eq!(rt.threads(), 0, "threads start lazily");
    assert_eq!(block_on(runtime::blocking(&rt, || 1)), Ok(1));
    let deadline = Instant::now() + WATCHDOG;
    while rt.threads() > 0 {
        assert!(Instant::now() < deadline, "the idle worker never exited");
        std::thread::sleep(Duration::from_millis(5));
    }
    // And a new job starts a new worker.
    assert_eq!(block_on(runtime::blocking(&rt, || 2)), Ok(2));
}

#[test]
fn the_global_runtime_is_one_pool_per_process() {
    let a = ThreadPoolRuntime::global();
    assert!(a.same_pool(&ThreadPoolRuntime::global()));
    assert!(!a.same_pool(&ThreadPoolRuntime::new()));
    // Work given through either handle runs on that one pool.
    assert_eq!(block_on(runtime::blocking(&a, || 7)), Ok(7));
    assert!(ThreadPoolRuntime::global().threads() >= 1);
}
