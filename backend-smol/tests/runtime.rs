//! The `Runtime` contract on `SmolRuntime`: blocking work off the executor, panics as
//! values, timers, spawning — on the global executor, an executor of one's own driven by a
//! single thread, and a thread pool.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agent_core::agent::Agent;
use agent_core::event::EventKind;
use agent_core::model::{ScriptedModel, Turn};
use agent_core::runtime::{self, Runtime, TaskError};
use agent_core::tool::blocking_tool;
use backend_smol::SmolRuntime;
use backend_smol::async_executor::Executor;
use futures_lite::StreamExt;

fn single_thread() -> (SmolRuntime, Arc<Executor<'static>>) {
    let executor = Arc::new(Executor::new());
    (SmolRuntime::with_executor(executor.clone()), executor)
}

#[test]
fn blocking_work_runs_off_the_executor_thread() {
    let (rt, _executor) = single_thread();
    let here = std::thread::current().id();
    // The blocking job waits for a message that a task on the (single) executor thread
    // sends only after the job started: if the job ran on that thread, it would deadlock.
    let (started_tx, started_rx) = async_channel::bounded::<()>(1);
    let (tx, rx) = std::sync::mpsc::channel::<&'static str>();
    let result = rt.block_on(async {
        let job = runtime::blocking(&rt, move || {
            started_tx.send_blocking(()).unwrap();
            let message = rx
                .recv_timeout(common::WATCHDOG)
                .expect("the executor thread was blocked");
            (std::thread::current().id(), message)
        });
        let sender = runtime::spawn(&rt, async move {
            started_rx.recv().await.unwrap();
            tx.send("from the executor").unwrap();
        });
        let value = job.await;
        sender.await.unwrap();
        value
    });
    let (job_thread, message) = result.unwrap();
    assert_ne!(
        job_thread, here,
        "the blocking job ran on the executor thread"
    );
    assert_eq!(message, "from the executor");
}

#[test]
fn a_panic_in_blocking_work_becomes_an_error_value() {
    for rt in [SmolRuntime::global(), single_thread().0] {
        let result = rt.block_on(runtime::blocking(&rt, || -> u32 { panic!("boom") }));
        assert_eq!(result, Err(TaskError::Panicked("boom".into())));
        // The pool survives.
        assert_eq!(rt.block_on(runtime::blocking(&rt, || 7)), Ok(7));
    }
}

#[test]
fn a_panic_in_a_spawned_task_becomes_an_error_value() {
    for rt in [SmolRuntime::global(), single_thread().0] {
        let result = rt.block_on(runtime::spawn(&rt, async { panic!("task boom") }));
        assert_eq!(
            result,
            Err::<(), _>(TaskError::Panicked("task boom".into()))
        );
    }
}

#[test]
fn sleep_fires_no_earlier_than_asked() {
    for rt in [
        SmolRuntime::global(),
        single_thread().0,
        SmolRuntime::with_threads(1).unwrap(),
    ] {
        let start = Instant::now();
        rt.block_on(rt.sleep(Duration::from_millis(20)));
        assert!(start.elapsed() >= Duration::from_millis(20));
        // Timers also fire when polled outside any smol executor.
        agent_core::runtime::block_on(rt.sleep(Duration::from_millis(1)));
    }
}

#[test]
fn dropping_a_sleep_cancels_it() {
    let rt = SmolRuntime::global();
    let fired = rt.block_on(async {
        let long = rt.sleep(Duration::from_secs(3600));
        futures_lite::future::or(
            async {
                long.await;
                true
            },
            async {
                rt.sleep(Duration::from_millis(5)).await;
                false
            },
        )
        .await
    });
    assert!(!fired);
}

#[test]
fn a_single_thread_runs_everything_and_shows_starvation() {
    let (rt, executor) = single_thread();
    let here = std::thread::current().id();
    let ran = Arc::new(AtomicBool::new(false));
    let task = {
        let ran = ran.clone();
        runtime::spawn(&rt, async move {
            ran.store(true, Ordering::Release);
            std::thread::current().id()
        })
    };
    // Not driven yet: nothing runs on its own.
    assert!(!ran.load(Ordering::Acquire));
    let ran_on = futures_lite::future::block_on(executor.run(async {
        // A future that never yields starves the task on the same thread...
        for _ in 0..1000 {
            std::hint::spin_loop();
        }
        assert!(
            !ran.load(Ordering::Acquire),
            "the task ran while the only thread was busy"
        );
        // ...which runs as soon as the thread is given back to the executor.
        task.await
    }));
    assert_eq!(ran_on, Ok(here), "the task ran on another thread");
}

#[test]
fn the_global_executor_runs_tasks_on_its_own_threads() {
    let rt = SmolRuntime::global();
    let here = std::thread::current().id();
    let there = rt.block_on(runtime::spawn(&rt, async { std::thread::current().id() }));
    assert_ne!(there, Ok(here));
}

#[test]
fn a_thread_pool_runs_tasks_on_its_threads() {
    let rt = SmolRuntime::with_threads(2).unwrap();
    let name = agent_core::runtime::block_on(runtime::spawn(&rt, async {
        std::thread::current().name().map(str::to_owned)
    }));
    assert!(name.unwrap().unwrap().starts_with("smol-agent-"));
}

#[test]
fn an_agent_runs_on_a_single_thread_with_a_blocking_tool() {
    let (rt, _executor) = single_thread();
    let model = ScriptedModel::new([
        Turn::new().tool_call("call_1", "slow", "{}"),
        Turn::new().text("done"),
    ]);
    let tool = blocking_tool(
        "slow",
        "blocks for a moment",
        serde_json::json!({"type": "object"}),
        |_| {
            std::thread::sleep(Duration::from_millis(10));
            Ok(serde_json::json!(
                std::thread::current().name().map(str::to_owned)
            ))
        },
    );
    let agent = Agent::builder()
        .model(model)
        .tool(tool)
        .runtime(rt.shared())
        .build()
        .unwrap();
    let events: Vec<_> = rt.block_on(agent.run("go").collect());
    let Some(EventKind::RunCompleted { text, .. }) = events.last().map(|e| &e.kind) else {
        panic!("{events:?}")
    };
    assert_eq!(text, "done");
    assert!(
        events
            .iter()
            .any(|e| matches!(e.kind, EventKind::ToolCallCompleted { .. }))
    );
}

#[test]
fn the_runtime_reports_its_name_and_executor() {
    let (rt, executor) = single_thread();
    assert_eq!(rt.name(), "smol");
    assert!(Arc::ptr_eq(rt.executor().unwrap(), &executor));
    assert!(SmolRuntime::global().executor().is_none());
    assert_eq!(
        format!("{:?}", SmolRuntime::default()),
        r#"SmolRuntime { executor: "global" }"#
    );
}
