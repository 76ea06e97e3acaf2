//! Stores on every backend: each [`Store`](agent_core::store::Store) (memory, SQLite, PostgreSQL, or a third party's)
//! keeps the same contract, with its blocking work on the backend's runtime. A store is
//! handed in by a [`StoreFixture`]; [`store_suite!`](crate::store_suite) makes one test per
//! case.
//!
//! | case | what it does | what must hold |
//! |---|---|---|
//! | `store_runs` | writes a run in batches, reads it back from several `seq`s, writes out of order, watches it from a second handle, lets a lease run out, requests a cancel | events back in order from any `seq`; a gap, a repeat, an unknown run or a second start is a `Conflict` that changes nothing; the terminal event sets the status; the second handle's watch is woken by the write; an expired lease ends the run with `run_failed` (`instance_lost`); a cancel request reaches the owner's signal handler and the next lease renewal |
//! | `store_sessions` | appends exchanges, with a byte bound, deletes | messages back in order; only the newest whole exchanges within the bound |
//! | `store_concurrent_appenders` | two handles (two instances) append 25 exchanges each to one session at once, and write two runs at once | all 50 exchanges, each whole (never interleaved), none lost |
//! | `store_two_instances` | two servers on one store: a session turn on A, the next on B; a run started on A, read on B from its `Last-Event-ID` in lockstep and cancelled through B | B's model sees A's turn; B streams A's run live (each delta only after B showed the one before), no event lost or repeated, ends with `run_cancelled`, A's model stream dropped, status `cancelled` on both |

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::event::{Event, EventKind};
use agent_core::model::{Message, ScriptedModel, Turn};
use agent_core::runtime::{SharedRuntime, block_on};
use agent_core::store::{RunStart, RunStatus, RunWrite, SharedStore, Signal, StoreErrorKind};
use serde_json::{Value, json};

use super::Outcome;
use super::support::{
    Server, WAIT, agent_builder, read_run, read_run_into, server_config, wait_until,
};
use crate::backend::Backend;
use crate::kit::GatedModel;
use crate::kit::client::{SseClient, http_request};
use crate::kit::watchdog::step;

/// A store under test, opened on a backend's runtime.
pub trait StoreFixture: Send + Sync {
    /// A name for test output, e.g. `"sqlite"`.
    fn name(&self) -> String;
    /// The store, its blocking work on `runtime`.
    fn store(&self, runtime: SharedRuntime) -> SharedStore;
    /// A second handle on the same data, as another instance would open it (for a
    /// database: another connection pool and listener; a store that serves one process
    /// returns the same store).
    fn second(&self, runtime: SharedRuntime) -> SharedStore;
}

/// One store case.
#[derive(Clone, Copy)]
pub struct StoreCase {
    /// The generated test is `store_<name>`... the name itself starts with `store_`.
    pub name: &'static str,
    /// What it proves.
    pub summary: &'static str,
    /// The case.
    pub run: fn(&dyn Backend, &dyn StoreFixture) -> Outcome,
}

impl std::fmt::Debug for StoreCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCase")
            .field("name", &self.name)
            .finish()
    }
}

/// Every store case.
pub static STORE_CASES: &[StoreCase] = &[
    StoreCase {
        name: "store_runs",
        summary: "run events by seq, conflicts, status, watches, leases, cancel requests",
        run: runs,
    },
    StoreCase {
        name: "store_sessions",
        summary: "session messages in order, bounded by whole exchanges",
        run: sessions,
    },
    StoreCase {
        name: "store_concurrent_appenders",
        summary: "two instances appending to one session at once lose and interleave nothing",
        run: concurrent_appenders,
    },
    StoreCase {
        name: "store_two_instances",
        summary: "a session continued and a run resumed and cancelled through another instance",
        run: two_instances,
    },
];

/// Run store case `name` on a backend from `make` with `fixture` (`None`: the store is not
/// available here, and the test says so loudly instead of passing silently).
pub fn run_store_test(
    name: &str,
    make: fn() -> Box<dyn Backend>,
    fixture: Option<Box<dyn StoreFixture>>,
) {
    let Some(fixture) = fixture else {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "conformance {name}: SKIPPED (not a pass): the store is not available here"
        );
        return;
    };
    let case = *STORE_CASES
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no store case named {name:?}"));
    crate::kit::panics::install();
    let _isolation = crate::runner::isolate(false);
    let label = format!("{name} ({})", fixture.name());
    let result = crate::kit::watchdog::run_with_watchdog(
        &label,
        crate::kit::watchdog::CASE_LIMIT,
        move || {
            let backend = make();
            let outcome = (case.run)(&*backend, &*fixture);
            (backend.name(), fixture.name(), outcome)
        },
    );
    match result {
        Ok((backend, store, _)) => println!("conformance {name} on {backend} with {store}: passed"),
        Err(err) => panic!("conformance case {label} failed: {err}"),
    }
}

fn started(run_id: &str, seq: u64) -> Arc<Event> {
    Arc::new(Event {
        seq,
        kind: EventKind::RunStarted {
            run_id: run_id.into(),
            input: "go".into(),
        },
    })
}

fn delta(seq: u64, text: &str) -> Arc<Event> {
    Arc::new(Event {
        seq,
        kind: EventKind::TextDelta { text: text.into() },
    })
}

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `store_runs`: see the [module docs](self).
pub fn runs(backend: &dyn Backend, fixture: &dyn StoreFixture) -> Outcome {
    let runtime = backend.runtime();
    let store = fixture.store(runtime.clone());
    let other = fixture.second(runtime.clone());
    let id = unique("run_store");
    step("an unknown run cannot be written without a start");
    let err = store
        .write_run(RunWrite::new(&id, vec![delta(0, "x")]))
        .wait_ready()
        .expect_err("store contract: a write to an unknown run without a start must fail");
    assert_eq!(
        err.kind,
        StoreErrorKind::Conflict,
        "store contract: a write to an unknown run is a conflict: {err}"
    );
    step("the first batch creates the run");
    let mut watch = other.watch(&id);
    store
        .write_run(
            RunWrite::new(&id, vec![started(&id, 0), delta(1, "a"), delta(2, "b")])
                .starting(RunStart::new("instance-a", Some("s".into()))),
        )
        .wait_ready()
        .unwrap_or_else(|e| panic!("store contract: the first write of a run must succeed: {e}"));
    step("the second handle's watch is woken by the write");
    let woken = block_on(agent_core::runtime::timeout(
        &*runtime,
        WAIT,
        watch.changed(),
    ));
    assert!(
        woken.is_some(),
        "store contract: a write must wake the run's watchers on another handle within {WAIT:?}"
    );
    let record = block_on(other.run(&id))
        .unwrap_or_else(|e| panic!("store contract: reading a run must succeed: {e}"))
        .expect("store contract: a written run is stored");
    assert_eq!(
        (
            record.status,
            record.next_seq,
            record.owner.as_str(),
            record.session_id.as_deref()
        ),
        (RunStatus::Running, 3, "instance-a", Some("s")),
        "store contract: the record of a running run: {record:?}"
    );
    step("conflicting writes change nothing");
    for (what, write) in [
        (
            "a second start",
            RunWrite::new(&id, vec![delta(3, "c")]).starting(RunStart::new("b", None)),
        ),
        ("a gap", RunWrite::new(&id, vec![delta(4, "c")])),
        ("a repeated seq", RunWrite::new(&id, vec![delta(2, "c")])),
    ] {
        let err = store
            .write_run(write)
            .wait_ready()
            .expect_err("store contract: a conflicting write must fail");
        assert_eq!(
            err.kind,
            StoreErrorKind::Conflict,
            "store contract: {what} is a conflict: {err}"
        );
    }
    let terminal = Arc::new(Event {
        seq: 4,
        kind: EventKind::RunCancelled {
            partial_text: "abc".into(),
        },
    });
    store
        .write_run(RunWrite::new(&id, vec![delta(3, "c"), terminal.clone()]))
        .wait_ready()
        .unwrap_or_else(|e| panic!("store contract: a following batch must be written: {e}"));
    let all = block_on(other.read_events(&id, 0, 100))
        .unwrap_or_else(|e| panic!("store contract: reading events must succeed: {e}"));
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        vec![0, 1, 2, 3, 4],
        "store contract: events come back once each, in seq order"
    );
    let from3 = block_on(other.read_events(&id, 3, 1))
        .unwrap_or_else(|e| panic!("store contract: reading events must succeed: {e}"));
    assert_eq!(
        from3.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3],
        "store contract: read_events starts at `from` and honours `limit`"
    );
    let record = block_on(other.run(&id)).ok().flatten();
    assert_eq!(
        record.as_ref().map(|r| (r.status, r.terminal.clone())),
        Some((RunStatus::Cancelled, Some(Event::clone(&terminal)))),
        "store contract: the terminal event sets the status and is the result"
    );
    let err = store
        .write_run(RunWrite::new(&id, vec![delta(5, "late")]))
        .wait_ready()
        .expect_err("store contract: nothing may follow a terminal event");
    assert_eq!(
        err.kind,
        StoreErrorKind::Conflict,
        "store contract: a write after the terminal event is a conflict: {err}"
    );

    step("a run whose lease runs out is failed by any instance");
    let lost = unique("run_lost");
    let mut start = RunStart::new("instance-gone", None);
    start.lease = Duration::from_millis(1);
    store
        .write_run(RunWrite::new(&lost, vec![started(&lost, 0)]).starting(start))
        .wait_ready()
        .unwrap_or_else(|e| panic!("store contract: a run must be created: {e}"));
    let failed = wait_until(WAIT, || {
        block_on(other.fail_expired()).is_ok_and(|ids| ids.contains(&lost))
            || block_on(other.run(&lost))
                .ok()
                .flatten()
                .is_some_and(|r| r.status == RunStatus::Failed)
    });
    assert!(
        failed,
        "store contract: a run whose lease ran out must be marked failed by fail_expired"
    );
    let events = block_on(other.read_events(&lost, 0, 10)).unwrap_or_default();
    assert!(
        matches!(events.last().map(|e| &e.kind), Some(EventKind::RunFailed { error, .. })
            if error.kind == agent_core::error::ErrorKind::InstanceLost)
            && events.len() == 2,
        "store contract: a lost run ends with one run_failed of kind instance_lost: {events:?}"
    );

    step("a cancel request reaches the owner's handler and its next renewal");
    let owned = unique("run_owned");
    store
        .write_run(
            RunWrite::new(&owned, vec![started(&owned, 0)])
                .starting(RunStart::new("instance-a", None)),
        )
        .wait_ready()
        .unwrap_or_else(|e| panic!("store contract: a run must be created: {e}"));
    let seen = Arc::new(Mutex::new(Vec::<Signal>::new()));
    let sink = seen.clone();
    store.on_signal(Box::new(move |signal| {
        sink.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(signal.clone());
        ControlFlow::Continue(())
    }));
    let requested = block_on(other.request_cancel(&owned))
        .unwrap_or_else(|e| panic!("store contract: request_cancel must succeed: {e}"));
    assert!(
        requested,
        "store contract: request_cancel of a running run answers true"
    );
    let delivered = wait_until(WAIT, || {
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&Signal::Cancel(owned.clone()))
    });
    assert!(
        delivered,
        "store contract: a cancel requested through another handle must reach the owner's signal handler within {WAIT:?}"
    );
    let to_cancel =
        block_on(store.renew_leases("instance-a", vec![owned.clone()], Duration::from_secs(30)))
            .unwrap_or_else(|e| panic!("store contract: renew_leases must succeed: {e}"));
    assert_eq!(
        to_cancel,
        vec![owned.clone()],
        "store contract: renew_leases names the owner's runs whose cancellation was requested"
    );
    let not_running = block_on(other.request_cancel(&id)).unwrap_or(true);
    assert!(
        !not_running,
        "store contract: request_cancel of an ended run answers false"
    );
    Outcome::passed()
}

fn exchange(tag: &str, bytes: usize) -> Vec<Message> {
    vec![
        Message::user(format!("{tag}:{}", "u".repeat(bytes))),
        Message::assistant(format!("{tag}:answer")),
    ]
}

/// `store_sessions`: see the [module docs](self).
pub fn sessions(backend: &dyn Backend, fixture: &dyn StoreFixture) -> Outcome {
    let store = fixture.store(backend.runtime());
    let id = unique("session");
    assert!(
        block_on(store.load_session(&id)).is_ok_and(|m| m.is_empty()),
        "store contract: an unknown session loads empty"
    );
    for i in 0..3 {
        block_on(store.append_session(&id, exchange(&format!("e{i}"), 10), None))
            .unwrap_or_else(|e| panic!("store contract: append_session must succeed: {e}"));
    }
    let messages = block_on(store.load_session(&id))
        .unwrap_or_else(|e| panic!("store contract: load_session must succeed: {e}"));
    let expected: Vec<Message> = (0..3)
        .flat_map(|i| exchange(&format!("e{i}"), 10))
        .collect();
    assert_eq!(
        messages, expected,
        "store contract: a session's messages come back in order"
    );
    step("a bound keeps the newest whole exchanges");
    let one: usize = exchange("big", 1000)
        .iter()
        .map(agent_core::agent::message_bytes)
        .sum();
    let bounded = unique("session_bounded");
    for i in 0..5 {
        block_on(store.append_session(&bounded, exchange(&format!("b{i}"), 1000), Some(one * 2)))
            .unwrap_or_else(|e| panic!("store contract: append_session must succeed: {e}"));
    }
    let kept = block_on(store.load_session(&bounded)).unwrap_or_default();
    let expected: Vec<Message> = (3..5)
        .flat_map(|i| exchange(&format!("b{i}"), 1000))
        .collect();
    assert_eq!(
        kept, expected,
        "store contract: with max_bytes, only the newest whole exchanges that fit are kept"
    );
    assert!(
        block_on(store.delete_session(&bounded)).unwrap_or(false),
        "store contract: deleting a stored session answers true"
    );
    assert!(
        block_on(store.load_session(&bounded)).is_ok_and(|m| m.is_empty()),
        "store contract: a deleted session loads empty"
    );
    Outcome::passed()
}

/// `store_concurrent_appenders`: see the [module docs](self).
pub fn concurrent_appenders(backend: &dyn Backend, fixture: &dyn StoreFixture) -> Outcome {
    const EACH: usize = 25;
    let runtime = backend.runtime();
    let stores = [
        fixture.store(runtime.clone()),
        fixture.second(runtime.clone()),
    ];
    let id = unique("session_shared");
    step("two instances append to one session at once");
    std::thread::scope(|scope| {
        for (n, store) in stores.iter().enumerate() {
            let id = &id;
            scope.spawn(move || {
                for i in 0..EACH {
                    block_on(store.append_session(id, exchange(&format!("i{n}x{i}"), 5), None))
                        .unwrap_or_else(|e| {
                            panic!("store contract: concurrent append_session must succeed: {e}")
                        });
                }
            });
        }
    });
    let messages = block_on(stores[0].load_session(&id))
        .unwrap_or_else(|e| panic!("store contract: load_session must succeed: {e}"));
    assert_eq!(
        messages.len(),
        2 * EACH * 2,
        "store contract: no appended message may be lost"
    );
    let mut tags = Vec::new();
    for pair in messages.chunks(2) {
        let (
            Message::User { content: user },
            Message::Assistant {
                content: answer, ..
            },
        ) = (&pair[0], &pair[1])
        else {
            panic!("store contract: exchanges must not interleave: {pair:?}");
        };
        let tag = user.split(':').next().unwrap_or("");
        assert_eq!(
            answer.split(':').next(),
            Some(tag),
            "store contract: an exchange's messages stay together"
        );
        tags.push(tag.to_string());
    }
    tags.sort();
    tags.dedup();
    assert_eq!(
        tags.len(),
        2 * EACH,
        "store contract: every exchange is stored exactly once"
    );
    step("two instances write two runs at once");
    std::thread::scope(|scope| {
        for (n, store) in stores.iter().enumerate() {
            scope.spawn(move || {
                let id = unique(&format!("run_concurrent{n}"));
                store
                    .write_run(
                        RunWrite::new(&id, vec![started(&id, 0)])
                            .starting(RunStart::new(format!("instance-{n}"), None)),
                    )
                    .wait_ready()
                    .unwrap_or_else(|e| panic!("store contract: a run must be created: {e}"));
                for seq in 1..=50u64 {
                    store
                        .write_run(RunWrite::new(&id, vec![delta(seq, "x")]))
                        .wait_ready()
                        .unwrap_or_else(|e| {
                            panic!("store contract: concurrent writes must succeed: {e}")
                        });
                }
                let events = block_on(store.read_events(&id, 0, 1000)).unwrap_or_default();
                assert_eq!(
                    events.len(),
                    51,
                    "store contract: every event written concurrently is stored once"
                );
            });
        }
    });
    Outcome::passed()
}

fn status(addr: std::net::SocketAddr, id: &str) -> Value {
    let response = http_request(addr, "GET", &format!("/v1/runs/{id}"), &[], b"", WAIT)
        .unwrap_or_else(|e| panic!("two instances: GET /v1/runs/{id} failed: {e}"));
    assert_eq!(
        response.status, 200,
        "two instances: GET /v1/runs/{{id}} of a stored run must answer 200 on either instance"
    );
    response.json().unwrap_or_default()
}

fn session_run(addr: std::net::SocketAddr, session: &str, input: &str) -> String {
    let body = json!({"input": input, "session_id": session}).to_string();
    let response = http_request(
        addr,
        "POST",
        "/v1/runs",
        &[("content-type", "application/json")],
        body.as_bytes(),
        WAIT,
    )
    .unwrap_or_else(|e| panic!("two instances: POST /v1/runs failed: {e}"));
    assert_eq!(
        response.status, 200,
        "two instances: a session run must stream (200)"
    );
    String::from_utf8_lossy(&response.body).into_owned()
}

/// `store_two_instances`: see the [module docs](self).
pub fn two_instances(backend: &dyn Backend, fixture: &dyn StoreFixture) -> Outcome {
    let runtime = backend.runtime();
    let config = |store: SharedStore, name: &str| {
        server_config()
            .with_store(store)
            .with_instance_id(name)
            .with_run_detach_grace(Duration::from_secs(60))
    };
    step("a session turn on A, the next on B");
    let seen = Arc::new(Mutex::new(Vec::<usize>::new()));
    let model = |seen: Arc<Mutex<Vec<usize>>>| {
        ScriptedModel::from_fn(move |request, _| {
            let turns = request
                .messages
                .iter()
                .filter(|m| !matches!(m, Message::System { .. }))
                .count();
            seen.lock().unwrap_or_else(|p| p.into_inner()).push(turns);
            Turn::new().text(format!("turn with {turns} messages"))
        })
    };
    let session = unique("two_instances");
    let first_run;
    {
        let a = Server::start_with(
            backend,
            agent_builder(backend)
                .model(model(seen.clone()))
                .build()
                .expect("agent"),
            config(fixture.store(runtime.clone()), "instance-a"),
        );
        let b = Server::start_with(
            backend,
            agent_builder(backend)
                .model(model(seen.clone()))
                .build()
                .expect("agent"),
            config(fixture.second(runtime.clone()), "instance-b"),
        );
        let on_a = session_run(a.addr(), &session, "I am Ada.");
        assert!(
            on_a.contains("event: run_completed"),
            "two instances: the session turn on A must complete: {on_a}"
        );
        first_run = on_a
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
            .and_then(|v| v["run_id"].as_str().map(str::to_string))
            .expect("two instances: the first frame is run_started with the run id");
        let on_b = session_run(b.addr(), &session, "Who am I?");
        assert!(
            on_b.contains("event: run_completed"),
            "two instances: the session turn on B must complete: {on_b}"
        );
        let turns = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(
            turns,
            vec![1, 3],
            "two instances: B's model must be given A's turn (user, assistant) before the new input"
        );
        step("A's finished run is readable on B from the store");
        let replay = http_request(
            b.addr(),
            "GET",
            &format!("/v1/runs/{first_run}/events"),
            &[("last-event-id", "0")],
            b"",
            WAIT,
        )
        .unwrap_or_else(|e| panic!("two instances: GET /v1/runs/{{id}}/events on B failed: {e}"));
        let body = String::from_utf8_lossy(&replay.body);
        assert!(
            replay.status == 200
                && body.contains("id: 1\n")
                && !body.contains("id: 0\n")
                && body.contains("event: run_completed"),
            "two instances: B replays A's finished run after Last-Event-ID from the store: {} {body}",
            replay.status
        );
    }

    step("a run started on A, resumed on B in lockstep, cancelled through B");
    let gated = GatedModel::numbered_lockstep(40);
    let gate = gated.gate();
    let a = Server::start_with(
        backend,
        agent_builder(backend)
            .model(gated.clone())
            .build()
            .expect("agent"),
        config(fixture.store(runtime.clone()), "instance-a2"),
    );
    let b = Server::start_with(
        backend,
        agent_builder(backend)
            .model(model(seen.clone()))
            .build()
            .expect("agent"),
        config(fixture.second(runtime.clone()), "instance-b2"),
    );
    let mut client = super::support::post_run(a.addr(), "go");
    let id = client
        .header("x-run-id")
        .expect("two instances: a /v1/runs answer names its run")
        .to_string();
    let mut deltas = 0;
    let mut transcript = read_run(&mut client, |event| {
        if let EventKind::TextDelta { .. } = event.kind {
            deltas += 1;
            if deltas == 3 {
                return ControlFlow::Break(());
            }
            gate.open_next();
        }
        ControlFlow::Continue(())
    });
    client.close();
    let last = (transcript.len() as u64 - 1).to_string();
    step(format!(
        "GET /v1/runs/{id}/events on B with Last-Event-ID: {last}"
    ));
    let mut resumed = SseClient::request(
        b.addr(),
        "GET",
        &format!("/v1/runs/{id}/events"),
        &[("last-event-id", &last)],
        b"",
        None,
    )
    .unwrap_or_else(|e| panic!("two instances: GET /v1/runs/{{id}}/events on B failed: {e}"));
    assert_eq!(
        resumed.status(),
        200,
        "two instances: B must stream a run that A runs (200)"
    );
    let mut on_b = 0;
    gate.open_next();
    read_run_into(&mut resumed, &mut transcript, |event| {
        if let EventKind::TextDelta { .. } = event.kind {
            on_b += 1;
            if on_b == 3 {
                return ControlFlow::Break(());
            }
            // Lockstep: the next delta exists only once B has shown this one.
            gate.open_next();
        }
        ControlFlow::Continue(())
    });
    step(format!("POST /v1/runs/{id}/cancel on B"));
    let cancelled = http_request(
        b.addr(),
        "POST",
        &format!("/v1/runs/{id}/cancel"),
        &[],
        b"",
        WAIT * 2,
    )
    .unwrap_or_else(|e| panic!("two instances: POST /v1/runs/{{id}}/cancel on B failed: {e}"));
    let body = cancelled.json().unwrap_or_default();
    assert!(
        cancelled.status == 200 && body["status"] == "cancelled",
        "two instances: cancelling A's run through B answers 200 with status cancelled: {} {body}",
        cancelled.status
    );
    read_run_into(&mut resumed, &mut transcript, |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    assert!(
        matches!(
            transcript.terminal().map(|e| &e.kind),
            Some(EventKind::RunCancelled { .. })
        ),
        "two instances: the stream on B ends with run_cancelled\n{}",
        transcript.summary()
    );
    assert!(
        wait_until(WAIT, || gated.streams_dropped() == 1),
        "two instances: cancelling through B must stop the run on A (model stream dropped)"
    );
    assert_eq!(
        status(a.addr(), &id)["status"],
        "cancelled",
        "two instances: A reports its run cancelled"
    );
    assert_eq!(
        status(b.addr(), &id)["status"],
        "cancelled",
        "two instances: B reports A's run cancelled"
    );
    Outcome::passed().note(format!("store {}", fixture.name()))
}
