//! The `Runtime` contract of `TokioRuntime`, on both runtime flavours.

mod common;

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::task::Poll;
use std::time::{Duration, Instant};

use agent_core::agent::Agent;
use agent_core::event::EventKind;
use agent_core::model::{ScriptedModel, Turn};
use agent_core::runtime::{self, Runtime, TaskError};
use backend_tokio::TokioRuntime;
use common::{Flavour, WATCHDOG};
use futures_util::StreamExt;

/// The thread the runtime runs async tasks on: the `block_on` thread for a current-thread
/// runtime, the one worker for the multi-thread runtime of the tests.
fn async_thread(rt: &tokio::runtime::Runtime, flavour: Flavour) -> std::thread::ThreadId {
    match flavour {
        Flavour::CurrentThread => std::thread::current().id(),
        Flavour::MultiThread => rt
            .block_on(rt.spawn(async { std::thread::current().id() }))
            .unwrap(),
    }
}

/// A blocking job runs on another thread than the async tasks, and blocking it does not
/// stop them: the job waits for a message that only an async task sends.
fn blocking_work_runs_off_the_async_threads(flavour: Flavour) {
    let rt = common::runtime(flavour);
    let runtime = common::shared(&rt);
    let async_thread = async_thread(&rt, flavour);
    let (tx, rx) = mpsc::channel::<()>();
    let result = rt.block_on(async {
        let job = runtime::blocking(&*runtime, move || {
            let job_thread = std::thread::current().id();
            let released = rx.recv_timeout(WATCHDOG).is_ok();
            (job_thread, released)
        });
        // An async task on the same runtime, which must keep running while the job blocks.
        let sender = runtime::spawn(&*runtime, {
            let runtime = runtime.clone();
            async move {
                runtime.sleep(Duration::from_millis(1)).await;
                tx.send(()).unwrap();
            }
        });
        let out = job.await;
        sender.await.unwrap();
        out
    });
    let (job_thread, released) = result.unwrap();
    assert_ne!(
        job_thread, async_thread,
        "the blocking job ran on an async thread"
    );
    assert!(
        released,
        "the async task could not run while the blocking job blocked"
    );
}

fn panic_in_blocking_job_is_an_error(flavour: Flavour) {
    let rt = common::runtime(flavour);
    let runtime = common::shared(&rt);
    let result = rt.block_on(runtime::blocking(&*runtime, || -> u32 {
        panic!("boom in a job")
    }));
    match result {
        Err(TaskError::Panicked(message)) => {
            assert!(message.contains("boom in a job"), "{message}")
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    // The runtime is still fine afterwards.
    assert_eq!(rt.block_on(runtime::blocking(&*runtime, || 7)), Ok(7));
}

fn panic_in_spawned_task_is_an_error(flavour: Flavour) {
    let rt = common::runtime(flavour);
    let runtime = common::shared(&rt);
    let result = rt.block_on(runtime::spawn(&*runtime, async {
        panic!("boom in a task")
    }));
    assert!(
        matches!(result, Err(TaskError::Panicked(ref m)) if m.contains("boom in a task")),
        "{result:?}"
    );
}

fn sleep_fires(flavour: Flavour) {
    let rt = common::runtime(flavour);
    let runtime = common::shared(&rt);
    let start = Instant::now();
    rt.block_on(async {
        tokio::time::timeout(WATCHDOG, runtime.sleep(Duration::from_millis(20)))
            .await
            .expect("the timer fired");
    });
    assert!(start.elapsed() >= Duration::from_millis(20), "fired early");
    // A timer created outside the runtime (from a plain thread) fires once polled inside it.
    let outside = runtime.sleep(Duration::from_millis(1));
    rt.block_on(async { tokio::time::timeout(WATCHDOG, outside).await })
        .expect("the timer fired");
    // `runtime::timeout` on top of it.
    let timed_out = rt.block_on(runtime::timeout(
        &*runtime,
        Duration::from_millis(5),
        std::future::pending::<()>(),
    ));
    assert_eq!(timed_out, None);
}

fn spawn_runs_detached(flavour: Flavour) {
    let rt = common::runtime(flavour);
    let runtime = common::shared(&rt);
    let (tx, rx) = tokio::sync::oneshot::channel();
    runtime.spawn(Box::pin(async move {
        let _ = tx.send(std::thread::current().id());
    }));
    let ran_on = rt
        .block_on(async { tokio::time::timeout(WATCHDOG, rx).await })
        .expect("the task ran")
        .unwrap();
    if flavour == Flavour::CurrentThread {
        assert_eq!(
            ran_on,
            std::thread::current().id(),
            "current-thread tasks run on the driving thread"
        );
    }
}

/// Inside a tokio task the hook spends tokio's budget and asks to yield once it is gone;
/// after yielding the budget is back.
fn poll_cooperate_spends_tokios_budget(flavour: Flavour) {
    let rt = common::runtime(flavour);
    let runtime = TokioRuntime::from_handle(rt.handle().clone());
    let (ready_before_yield, ready_after_yield) = rt.block_on(async move {
        let mut ready = 0u32;
        poll_fn(|cx| {
            loop {
                match runtime.poll_cooperate(cx) {
                    Poll::Ready(()) => ready += 1,
                    Poll::Pending => return Poll::Ready(()),
                }
                assert!(ready < 10_000, "the budget never ran out");
            }
        })
        .await;
        // Having returned Pending once, the task is rescheduled with a fresh budget.
        tokio::task::yield_now().await;
        let again = poll_fn(|cx| Poll::Ready(runtime.poll_cooperate(cx).is_ready())).await;
        (ready, again)
    });
    assert!(
        ready_before_yield > 0 && ready_before_yield <= 128,
        "{ready_before_yield}"
    );
    assert!(ready_after_yield);
}

/// Return `Pending` once after waking itself: the task goes to the back of the run queue.
/// (`tokio::task::yield_now` defers the wake-up to the scheduler's next maintenance tick,
/// which makes a poor probe for "other runnable tasks get to run".)
async fn requeue() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// A run whose model is always ready still lets other tasks on the same thread run: the
/// consumer and a heartbeat are both tasks of the runtime (one thread drives them on either
/// flavour here).
fn always_ready_model_does_not_starve(flavour: Flavour) {
    let rt = common::runtime(flavour);
    let runtime = common::shared(&rt);
    let agent = Agent::builder()
        .model(ScriptedModel::new([
            (0..2_000).fold(Turn::new(), |t, i| t.text(format!("{i} ")))
        ]))
        .runtime(runtime.clone())
        .build()
        .unwrap();
    let beats = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (beats_during_run, completed) = rt.block_on(async {
        let heartbeat = tokio::spawn({
            let (beats, stop) = (beats.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Acquire) {
                    beats.fetch_add(1, Ordering::AcqRel);
                    requeue().await;
                }
            }
        });
        let consumer = tokio::spawn({
            let beats = beats.clone();
            async move {
                // Wait (bounded) until the heartbeat runs, then count its beats during the run.
                for _ in 0..10_000 {
                    if beats.load(Ordering::Acquire) > 0 {
                        break;
                    }
                    requeue().await;
                }
                let before = beats.load(Ordering::Acquire);
                let mut run = agent.run("count");
                let mut completed = false;
                while let Some(event) = run.next().await {
                    completed |= matches!(event.kind, EventKind::RunCompleted { .. });
                }
                (beats.load(Ordering::Acquire) - before, completed)
            }
        });
        let out = tokio::time::timeout(WATCHDOG, consumer)
            .await
            .expect("the run finished")
            .unwrap();
        stop.store(true, Ordering::Release);
        heartbeat.await.unwrap();
        out
    });
    assert!(completed);
    assert!(
        beats_during_run > 0,
        "the heartbeat task never ran during the run"
    );
}

both_flavours!(
    blocking_work_runs_off_the_async_threads,
    panic_in_blocking_job_is_an_error,
    panic_in_spawned_task_is_an_error,
    sleep_fires,
    spawn_runs_detached,
    poll_cooperate_spends_tokios_budget,
    always_ready_model_does_not_starve,
);

/// Outside a tokio task the budget is unconstrained.
#[test]
fn poll_cooperate_outside_tokio_is_always_ready() {
    let rt = common::runtime(Flavour::MultiThread);
    let runtime = TokioRuntime::from_handle(rt.handle().clone());
    let all_ready = agent_core::runtime::block_on(poll_fn(|cx| {
        Poll::Ready((0..1_000).all(|_| runtime.poll_cooperate(cx).is_ready()))
    }));
    assert!(all_ready);
}

#[test]
fn current_and_try_current() {
    assert!(TokioRuntime::try_current().is_err());
    let rt = common::runtime(Flavour::CurrentThread);
    let runtime = rt.block_on(async { TokioRuntime::current() });
    assert!(runtime.is_current_thread());
    assert_eq!(runtime.name(), "tokio");
    let multi = common::runtime(Flavour::MultiThread);
    assert!(!TokioRuntime::from_handle(multi.handle().clone()).is_current_thread());
}

/// A runtime built without timers: `sleep` falls back to the core's timer thread instead of
/// panicking.
#[test]
fn sleep_without_tokio_timers_falls_back() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let runtime = TokioRuntime::from_handle(rt.handle().clone());
    let start = Instant::now();
    rt.block_on(runtime.sleep(Duration::from_millis(5)));
    rt.block_on(runtime.sleep(Duration::from_millis(5)));
    assert!(start.elapsed() >= Duration::from_millis(10));
}

/// After the tokio runtime is gone, blocking jobs and tasks are dropped, not run, and the
/// awaiting side sees `Cancelled`.
#[test]
fn after_shutdown_jobs_are_cancelled() {
    let rt = common::runtime(Flavour::MultiThread);
    let runtime = common::shared(&rt);
    drop(rt);
    let job = agent_core::runtime::block_on(runtime::blocking(&*runtime, || 1));
    assert_eq!(job, Err(TaskError::Cancelled));
    let task = agent_core::runtime::block_on(runtime::spawn(&*runtime, async { 1 }));
    assert_eq!(task, Err(TaskError::Cancelled));
}
