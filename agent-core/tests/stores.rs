//! The server with a store: every event is stored before a reader sees it, a burst of
//! ready events is written in a few batches (not one write per event), a store that fails
//! stops the run with `run_failed` (kind `store`), and services sharing a memory store see
//! each other's sessions and runs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, SystemTime};

use agent_core::agent::Agent;
use agent_core::error::ErrorKind;
use agent_core::event::{Event, EventKind};
use agent_core::model::{Message, ScriptedModel, Turn};
use agent_core::runtime::{BoxFuture, TestRuntime, block_on};
use agent_core::server::{AgentService, ApiBody, ApiResponse, ServerConfig};
use agent_core::sse::{SseDecoder, SseItem};
use agent_core::store::{
    MemoryStore, RunRecord, RunWatch, RunWrite, Signal, SignalHandler, Store, StoreError,
    StoreErrorKind, StoreWrite,
};
use futures_util::{FutureExt, StreamExt};

/// A memory store whose writes wait for permits the test hands out, and can be made to
/// fail; it counts writes and the events they carry.
#[derive(Debug, Default, Clone)]
struct GatedStore {
    inner: MemoryStore,
    gate: Arc<Gate>,
    writes: Arc<AtomicUsize>,
    fail: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct Gate {
    permits: Mutex<usize>,
    wakers: Mutex<Vec<Waker>>,
    unlimited: AtomicBool,
}

impl Gate {
    fn release(&self, n: usize) {
        *self.permits.lock().unwrap() += n;
        for waker in self.wakers.lock().unwrap().drain(..) {
            waker.wake();
        }
    }
}

impl Store for GatedStore {
    fn name(&self) -> &'static str {
        "gated"
    }
    fn load_session(&self, id: &str) -> BoxFuture<Result<Vec<Message>, StoreError>> {
        self.inner.load_session(id)
    }
    fn append_session(
        &self,
        id: &str,
        messages: Vec<Message>,
        max: Option<usize>,
    ) -> BoxFuture<Result<(), StoreError>> {
        self.inner.append_session(id, messages, max)
    }
    fn delete_session(&self, id: &str) -> BoxFuture<Result<bool, StoreError>> {
        self.inner.delete_session(id)
    }
    fn write_run(&self, write: RunWrite) -> StoreWrite {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let this = self.clone();
        let mut write = Some(write);
        StoreWrite::Pending(Box::pin(std::future::poll_fn(move |cx| {
            if this.fail.load(Ordering::SeqCst) {
                return Poll::Ready(Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    "the test pulled the plug",
                )));
            }
            if !this.gate.unlimited.load(Ordering::SeqCst) {
                let mut permits = this.gate.permits.lock().unwrap();
                if *permits == 0 {
                    this.gate.wakers.lock().unwrap().push(cx.waker().clone());
                    return Poll::Pending;
                }
                *permits -= 1;
            }
            Poll::Ready(
                this.inner
                    .write_run(write.take().expect("polled once after ready"))
                    .wait_ready(),
            )
        })))
    }
    fn run(&self, id: &str) -> BoxFuture<Result<Option<RunRecord>, StoreError>> {
        self.inner.run(id)
    }
    fn read_events(
        &self,
        id: &str,
        from: u64,
        limit: usize,
    ) -> BoxFuture<Result<Vec<Event>, StoreError>> {
        self.inner.read_events(id, from, limit)
    }
    fn renew_leases(
        &self,
        owner: &str,
        ids: Vec<String>,
        lease: Duration,
    ) -> BoxFuture<Result<Vec<String>, StoreError>> {
        self.inner.renew_leases(owner, ids, lease)
    }
    fn fail_expired(&self) -> BoxFuture<Result<Vec<String>, StoreError>> {
        self.inner.fail_expired()
    }
    fn request_cancel(&self, id: &str) -> BoxFuture<Result<bool, StoreError>> {
        self.inner.request_cancel(id)
    }
    fn signal(&self, signal: Signal) -> BoxFuture<Result<(), StoreError>> {
        self.inner.signal(signal)
    }
    fn on_signal(&self, handler: SignalHandler) {
        self.inner.on_signal(handler)
    }
    fn watch(&self, id: &str) -> RunWatch {
        self.inner.watch(id)
    }
    fn delete_runs_before(&self, before: SystemTime) -> BoxFuture<Result<u64, StoreError>> {
        self.inner.delete_runs_before(before)
    }
}

fn service(model: ScriptedModel, store: Arc<dyn Store>) -> AgentService {
    let agent = Agent::builder()
        .model(model)
        .runtime(Arc::new(TestRuntime::new()))
        .build()
        .unwrap();
    AgentService::new(agent, ServerConfig::default().with_store(store))
}

fn post(service: &AgentService, body: &str) -> ApiResponse {
    block_on(service.handle(
        "POST",
        "/v1/runs",
        &[("content-type", "application/json")],
        body.as_bytes(),
    ))
}

/// Decode every frame in `chunks`.
fn events_in(decoder: &mut SseDecoder, chunk: &[u8]) -> Vec<Event> {
    decoder.push(chunk);
    let mut events = Vec::new();
    while let Some(item) = decoder.next_item() {
        if let SseItem::Event(frame) = item.expect("valid SSE") {
            events.push(serde_json::from_str(&frame.data).expect("event JSON"));
        }
    }
    events
}

#[test]
fn no_event_reaches_a_reader_before_the_store_has_it() {
    let store = GatedStore::default();
    let model = ScriptedModel::new([Turn::new().text("a").text("b").text("c")]);
    let service = service(model, Arc::new(store.clone()));
    let response = post(&service, r#"{"input":"go"}"#);
    let run_id = response
        .headers
        .iter()
        .find(|(n, _)| *n == "x-run-id")
        .map(|(_, v)| v.clone())
        .expect("x-run-id");
    let ApiBody::Stream(mut body) = response.body else {
        panic!("a stream")
    };
    let mut decoder = SseDecoder::new();
    let mut seen = Vec::new();
    for round in 0..100 {
        // Whatever the reader can take now must already be stored.
        while let Some(Some(chunk)) = body.next().now_or_never() {
            let stored = block_on(store.inner.run(&run_id))
                .unwrap()
                .map_or(0, |r| r.next_seq);
            for event in events_in(&mut decoder, &chunk) {
                assert!(
                    event.seq < stored,
                    "event {} ({}) reached the reader before the store had it (stored: {stored})",
                    event.seq,
                    event.name()
                );
                seen.push(event);
            }
        }
        if seen.last().is_some_and(Event::is_terminal) {
            break;
        }
        assert!(round < 99, "the run did not end: {seen:?}");
        store.gate.release(1);
    }
    let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    assert!(matches!(
        seen.last().map(|e| &e.kind),
        Some(EventKind::RunCompleted { .. })
    ));
}

#[test]
fn a_burst_of_ready_events_is_written_in_a_few_batches() {
    let store = GatedStore::default();
    store.gate.unlimited.store(true, Ordering::SeqCst);
    let mut turn = Turn::new();
    for k in 0..1000 {
        turn = turn.text(format!("w{k} "));
    }
    let service = service(ScriptedModel::new([turn]), Arc::new(store.clone()));
    let ApiBody::Stream(body) = post(&service, r#"{"input":"go"}"#).body else {
        panic!("a stream")
    };
    let frames: Vec<_> = block_on(body.collect());
    let mut decoder = SseDecoder::new();
    let events: Vec<Event> = frames
        .iter()
        .flat_map(|c| events_in(&mut decoder, c))
        .collect();
    assert!(events.len() > 1000, "every delta streamed");
    let writes = store.writes.load(Ordering::SeqCst);
    assert!(
        writes * 16 <= events.len(),
        "{} events took {writes} writes: ready events must be batched",
        events.len()
    );
}

#[test]
fn a_failing_store_stops_the_run_with_run_failed_store() {
    let store = GatedStore::default();
    store.gate.unlimited.store(true, Ordering::SeqCst);
    // One delta, then (paced by the runtime's timer) another, which cannot be stored.
    let model = ScriptedModel::new([Turn::new()
        .text("early")
        .pause(Duration::from_millis(200))
        .text("late")]);
    let service = service(model, Arc::new(store.clone()));
    let ApiBody::Stream(mut body) = post(&service, r#"{"input":"go"}"#).body else {
        panic!("a stream")
    };
    let mut decoder = SseDecoder::new();
    let mut before = Vec::new();
    while !before
        .iter()
        .any(|e: &Event| matches!(&e.kind, EventKind::TextDelta { .. }))
    {
        let chunk = block_on(body.next()).expect("the run goes on");
        before.extend(events_in(&mut decoder, &chunk));
    }
    store.fail.store(true, Ordering::SeqCst);
    let rest: Vec<Event> = block_on(body.collect::<Vec<_>>())
        .iter()
        .flat_map(|c| events_in(&mut decoder, c))
        .collect();
    let last = rest.last().expect("a terminal event");
    let EventKind::RunFailed { error, .. } = &last.kind else {
        panic!("the run must fail when its events cannot be stored: {rest:?}")
    };
    assert_eq!(error.kind, ErrorKind::Store);
    assert!(
        !rest
            .iter()
            .any(|e| matches!(&e.kind, EventKind::TextDelta { text } if text == "late")),
        "an event that was not stored must not be sent: {rest:?}"
    );
    assert_eq!(
        last.seq,
        before.len() as u64,
        "the failure follows the last stored event: {before:?} {rest:?}"
    );
}

#[test]
fn services_sharing_a_memory_store_continue_each_others_sessions() {
    let store = Arc::new(MemoryStore::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let model = |seen: Arc<Mutex<Vec<usize>>>| {
        ScriptedModel::from_fn(move |request, _| {
            seen.lock().unwrap().push(request.messages.len());
            Turn::new().text("ok")
        })
    };
    let a = service(model(seen.clone()), store.clone());
    let b = service(model(seen.clone()), store.clone());
    for (svc, input) in [(&a, "one"), (&b, "two"), (&a, "three")] {
        let ApiBody::Stream(body) =
            post(svc, &format!(r#"{{"input":"{input}","session_id":"s"}}"#)).body
        else {
            panic!("a stream")
        };
        let _: Vec<_> = block_on(body.collect());
    }
    assert_eq!(*seen.lock().unwrap(), vec![1, 3, 5]);
    assert_eq!(block_on(store.load_session("s")).unwrap().len(), 6);
}
