//! Addressable runs: resume after a disconnect (`GET /v1/runs/{id}/events` with
//! `Last-Event-ID`), status, cancel from another request, the log's bounds, retention and
//! the detach grace.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::agent::Agent;
use agent_core::error::ModelError;
use agent_core::event::{Event, EventKind};
use agent_core::model::{
    Model, ModelContext, ModelDelta, ModelRequest, ModelStream, ScriptedModel, Turn,
};
use agent_core::runtime::{TestRuntime, block_on};
use agent_core::server::{AgentService, ApiBody, ApiResponse, ResponseBody, ServerConfig};
use agent_core::sse::{SseDecoder, SseItem};
use futures_channel::mpsc;
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(20);

/// A model whose deltas the test sends one by one; the answer ends when the sender is
/// dropped. Counts how many of its streams were dropped.
#[derive(Debug, Clone, Default)]
struct FedModel {
    feed: Arc<Mutex<Option<mpsc::UnboundedReceiver<ModelDelta>>>>,
    drops: Arc<AtomicUsize>,
}

impl FedModel {
    fn new() -> (FedModel, mpsc::UnboundedSender<ModelDelta>) {
        let (tx, rx) = mpsc::unbounded();
        let model = FedModel::default();
        *model.feed.lock().unwrap() = Some(rx);
        (model, tx)
    }
}

struct CountDrop(Arc<AtomicUsize>);

impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Model for FedModel {
    fn name(&self) -> &str {
        "fed"
    }

    fn stream(&self, _: ModelRequest, _: ModelContext) -> ModelStream {
        let guard = CountDrop(self.drops.clone());
        let feed = self.feed.lock().unwrap().take().expect("one model round");
        Box::pin(feed.map(move |delta| {
            let _ = &guard;
            Ok::<_, ModelError>(delta)
        }))
    }
}

fn service(model: impl Model, config: ServerConfig) -> AgentService {
    let agent = Agent::builder()
        .model(model)
        .runtime(Arc::new(TestRuntime::new()))
        .build()
        .unwrap();
    AgentService::new(agent, config)
}

fn call(
    service: &AgentService,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> ApiResponse {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    block_on(service.handle(method, path, &all, body))
}

fn json_of(response: &ApiResponse) -> Value {
    let ApiBody::Full(body) = &response.body else {
        panic!(
            "expected a complete body, got a stream ({})",
            response.status
        )
    };
    serde_json::from_slice(body).expect("a JSON body")
}

fn stream_of(response: ApiResponse) -> ResponseBody {
    assert_eq!(response.status, 200, "{:?}", response.body);
    match response.body {
        ApiBody::Stream(body) => body,
        ApiBody::Full(body) => panic!("expected a stream, got {}", String::from_utf8_lossy(&body)),
    }
}

/// Reads a body's SSE events.
struct Reader {
    body: ResponseBody,
    decoder: SseDecoder,
}

impl Reader {
    fn new(response: ApiResponse) -> Reader {
        Reader {
            body: stream_of(response),
            decoder: SseDecoder::new(),
        }
    }

    /// The next event, or `None` when the body ended.
    fn next(&mut self) -> Option<Event> {
        for _ in 0..10_000 {
            if let Some(item) = self.decoder.next_item() {
                if let SseItem::Event(frame) = item.expect("valid SSE") {
                    return Some(serde_json::from_str(&frame.data).expect("event JSON"));
                }
                continue;
            }
            let chunk = block_on(self.body.next())?;
            self.decoder.push(&chunk);
        }
        panic!("no event after 10,000 chunks")
    }

    /// The next event if one is ready without waiting.
    fn ready(&mut self) -> Option<Event> {
        loop {
            if let Some(item) = self.decoder.next_item() {
                if let SseItem::Event(frame) = item.expect("valid SSE") {
                    return Some(serde_json::from_str(&frame.data).expect("event JSON"));
                }
                continue;
            }
            let chunk = self.body.next().now_or_never()??;
            self.decoder.push(&chunk);
        }
    }

    fn until_text_deltas(&mut self, count: usize) -> Vec<Event> {
        let mut seen = Vec::new();
        let mut deltas = 0;
        while deltas < count {
            let event = self.next().expect("the run goes on");
            if let EventKind::TextDelta { .. } = event.kind {
                deltas += 1;
            }
            seen.push(event);
        }
        seen
    }

    fn rest(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.next()).collect()
    }
}

fn run_id(events: &[Event]) -> String {
    match &events[0].kind {
        EventKind::RunStarted { run_id, .. } => run_id.clone(),
        other => panic!("the first event is run_started, not {other:?}"),
    }
}

fn text(delta: &str) -> ModelDelta {
    ModelDelta::Text(delta.into())
}

fn assert_every_seq_once(events: &[Event]) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (0..events.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "every seq from 0 to the terminal event, each exactly once"
    );
    assert!(
        events.last().unwrap().is_terminal(),
        "ends with a terminal event"
    );
}

#[test]
fn a_client_that_reconnects_mid_run_misses_nothing_and_sees_nothing_twice() {
    support::within("resume", DEADLINE, |steps| {
        let (model, feed) = FedModel::new();
        let service = service(model, ServerConfig::default());
        let response = call(&service, "POST", "/v1/runs", &[], br#"{"input":"go"}"#);
        let header_id = support::header(&response, "x-run-id").unwrap().to_string();
        let mut first = Reader::new(response);
        feed.unbounded_send(text("a")).unwrap();
        feed.unbounded_send(text("b")).unwrap();
        steps.step("reading two deltas on the first connection");
        let mut seen = first.until_text_deltas(2);
        let id = run_id(&seen);
        assert_eq!(id, header_id, "x-run-id names the run of run_started");
        drop(first); // the connection is lost mid-run
        // The run goes on while nobody is connected: these deltas wait in its log.
        feed.unbounded_send(text("c")).unwrap();
        feed.unbounded_send(text("d")).unwrap();
        let last = seen.last().unwrap().seq.to_string();
        let path = format!("/v1/runs/{id}/events");
        let resumed = call(&service, "GET", &path, &[("last-event-id", &last)], b"");
        assert_eq!(
            support::header(&resumed, "content-type"),
            Some("text/event-stream")
        );
        let mut second = Reader::new(resumed);
        steps.step("reading the two deltas sent while disconnected");
        seen.extend(second.until_text_deltas(2));
        drop(feed); // the answer ends
        seen.extend(second.rest());
        assert_every_seq_once(&seen);
        let answer: String = seen
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::TextDelta { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(answer, "abcd");

        steps.step("reading the status and the whole run again");
        let status = json_of(&call(&service, "GET", &format!("/v1/runs/{id}"), &[], b""));
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(status["result"]["type"], "run_completed");
        assert_eq!(status["result"]["text"], "abcd");
        assert_eq!(status["next_seq"], seen.len() as u64);
        // From the start (what a first EventSource connection gets), and from a seq given in
        // the query (EventSource cannot set headers).
        let whole = Reader::new(call(&service, "GET", &path, &[], b"")).rest();
        assert_eq!(whole, seen, "the whole run is replayed from seq 0");
        let tail = Reader::new(call(
            &service,
            "GET",
            &format!("{path}?last_event_id=2"),
            &[],
            b"",
        ))
        .rest();
        assert_eq!(tail, seen[3..], "the query's last_event_id is honoured");
        // Nothing after the terminal event: 204 stops an EventSource from reconnecting.
        let terminal = seen.last().unwrap().seq.to_string();
        let done = call(&service, "GET", &path, &[("last-event-id", &terminal)], b"");
        assert_eq!(done.status, 204);
    });
}

#[test]
fn cancel_through_another_request_ends_the_stream_with_run_cancelled() {
    support::within("cancel", DEADLINE, |steps| {
        let (model, feed) = FedModel::new();
        let drops = model.drops.clone();
        let service = service(model, ServerConfig::default());
        let mut reader = Reader::new(call(
            &service,
            "POST",
            "/v1/runs",
            &[],
            br#"{"input":"go"}"#,
        ));
        feed.unbounded_send(text("a")).unwrap();
        let seen = reader.until_text_deltas(1);
        let id = run_id(&seen);
        let running = json_of(&call(&service, "GET", &format!("/v1/runs/{id}"), &[], b""));
        assert_eq!(running["status"], "running");
        assert_eq!(running["result"], Value::Null);
        steps.step("cancelling through POST /v1/runs/{id}/cancel");
        let cancelled = call(&service, "POST", &format!("/v1/runs/{id}/cancel"), &[], b"");
        assert_eq!(cancelled.status, 200);
        let status = json_of(&cancelled);
        assert_eq!(status["status"], "cancelled", "{status}");
        assert_eq!(status["result"]["type"], "run_cancelled");
        assert_eq!(status["result"]["partial_text"], "a");
        steps.step("the first stream ends with run_cancelled");
        let rest = reader.rest();
        assert!(
            matches!(
                rest.last().map(|e| &e.kind),
                Some(EventKind::RunCancelled { .. })
            ),
            "{rest:?}"
        );
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "the model stream was dropped"
        );
        // Cancelling again is harmless and answers the same status.
        let again = call(&service, "POST", &format!("/v1/runs/{id}/cancel"), &[], b"");
        assert_eq!(json_of(&again)["status"], "cancelled");
        drop(feed);
    });
}

#[test]
fn unknown_runs_bad_positions_and_wrong_methods_get_clear_errors() {
    support::within("run errors", DEADLINE, |_| {
        let service = service(
            ScriptedModel::from_fn(|_, _| Turn::new().text("hi")),
            ServerConfig::default(),
        );
        let seen = Reader::new(call(&service, "POST", "/v1/runs", &[], br#"{"input":"x"}"#)).rest();
        let id = run_id(&seen);
        let error = |response: &ApiResponse| json_of(response)["error"]["code"].clone();

        let unknown = call(&service, "GET", "/v1/runs/run_0/events", &[], b"");
        assert_eq!(
            (unknown.status, error(&unknown)),
            (404, "run_not_found".into())
        );
        let unknown = call(&service, "POST", "/v1/runs/run_0/cancel", &[], b"");
        assert_eq!(unknown.status, 404);
        let path = format!("/v1/runs/{id}/events");
        let garbage = call(&service, "GET", &path, &[("last-event-id", "x1")], b"");
        assert_eq!(
            (garbage.status, error(&garbage)),
            (400, "invalid_last_event_id".into())
        );
        let ahead = call(&service, "GET", &path, &[("last-event-id", "999")], b"");
        assert_eq!(
            (ahead.status, error(&ahead)),
            (400, "invalid_last_event_id".into())
        );
        let wrong = call(&service, "POST", &path, &[], b"{}");
        assert_eq!(wrong.status, 405);
        assert_eq!(support::header(&wrong, "allow"), Some("GET, HEAD, OPTIONS"));
        let wrong = call(&service, "GET", &format!("/v1/runs/{id}/cancel"), &[], b"");
        assert_eq!(support::header(&wrong, "allow"), Some("POST, OPTIONS"));
        let nested = call(
            &service,
            "GET",
            &format!("/v1/runs/{id}/events/x"),
            &[],
            b"",
        );
        assert_eq!(nested.status, 404);
        let head = call(&service, "HEAD", &path, &[], b"");
        assert_eq!(head.status, 200);
        assert!(matches!(head.body, ApiBody::Full(ref b) if b.is_empty()));
    });
}

#[test]
fn a_slow_reader_holds_the_run_back_instead_of_losing_events() {
    support::within("backpressure", DEADLINE, |steps| {
        let deltas = 200;
        let model = ScriptedModel::from_fn(move |_, _| {
            (0..deltas).fold(Turn::new(), |turn, i| turn.text(format!("d{i:03} ")))
        });
        // Room for a handful of events only.
        let config = ServerConfig::default().with_max_run_log_bytes(1024);
        let service = service(model, config);
        let mut slow = Reader::new(call(
            &service,
            "POST",
            "/v1/runs",
            &[],
            br#"{"input":"go"}"#,
        ));
        let first = slow.next().unwrap();
        let id = run_id(std::slice::from_ref(&first));
        let mut fast = Reader::new(call(
            &service,
            "GET",
            &format!("/v1/runs/{id}/events"),
            &[],
            b"",
        ));
        steps.step("the fast reader reads what it can while the slow one reads nothing");
        let mut fast_seen = Vec::new();
        while let Some(event) = fast.ready() {
            fast_seen.push(event);
            assert!(
                fast_seen.len() < 150,
                "the run was held back by the slow reader"
            );
        }
        assert!(
            !fast_seen.last().unwrap().is_terminal(),
            "the run waits for the slow reader"
        );
        steps.step("both read in turn until the end; both see every event once");
        let mut slow_seen = vec![first];
        let done = |seen: &[Event]| seen.last().is_some_and(Event::is_terminal);
        for _ in 0..100_000 {
            if done(&slow_seen) && done(&fast_seen) {
                break;
            }
            slow_seen.extend(slow.ready());
            fast_seen.extend(fast.ready());
        }
        assert_every_seq_once(&slow_seen);
        assert_eq!(fast_seen, slow_seen);
        // The log kept only its bound: the start is gone, and resuming there says so.
        let expired = call(&service, "GET", &format!("/v1/runs/{id}/events"), &[], b"");
        assert_eq!(expired.status, 410);
        assert_eq!(json_of(&expired)["error"]["code"], "events_expired");
    });
}

#[test]
fn finished_runs_are_kept_within_the_retention_bounds() {
    support::within("retention", DEADLINE, |_| {
        let service = service(
            ScriptedModel::from_fn(|_, _| Turn::new().text("hi")),
            ServerConfig::default().with_max_retained_runs(2),
        );
        let ids: Vec<String> = (0..3)
            .map(|_| {
                run_id(
                    &Reader::new(call(&service, "POST", "/v1/runs", &[], br#"{"input":"x"}"#))
                        .rest(),
                )
            })
            .collect();
        assert!(support::eventually(Duration::from_secs(5), || {
            service.addressable_runs() == 2
        }));
        let status = |id: &str| call(&service, "GET", &format!("/v1/runs/{id}"), &[], b"").status;
        assert_eq!(status(&ids[0]), 404, "the oldest finished run is forgotten");
        assert_eq!(status(&ids[1]), 200);
        assert_eq!(status(&ids[2]), 200);

        let expiring = service_with_retention(Duration::ZERO);
        let id = run_id(
            &Reader::new(call(
                &expiring,
                "POST",
                "/v1/runs",
                &[],
                br#"{"input":"x"}"#,
            ))
            .rest(),
        );
        assert!(support::eventually(Duration::from_secs(5), || {
            call(&expiring, "GET", &format!("/v1/runs/{id}"), &[], b"").status == 404
        }));
    });
}

fn service_with_retention(retention: Duration) -> AgentService {
    service(
        ScriptedModel::from_fn(|_, _| Turn::new().text("hi")),
        ServerConfig::default().with_run_retention(retention),
    )
}

#[test]
fn a_run_nobody_comes_back_to_is_cancelled_after_the_detach_grace() {
    support::within("grace", DEADLINE, |steps| {
        let (model, feed) = FedModel::new();
        let drops = model.drops.clone();
        let config = ServerConfig::default().with_run_detach_grace(Duration::from_millis(50));
        let service = service(model, config);
        let mut reader = Reader::new(call(
            &service,
            "POST",
            "/v1/runs",
            &[],
            br#"{"input":"go"}"#,
        ));
        feed.unbounded_send(text("a")).unwrap();
        let id = run_id(&reader.until_text_deltas(1));
        drop(reader);
        steps.step("waiting for the grace to pass and the run to be cancelled");
        let path = format!("/v1/runs/{id}");
        assert!(support::eventually(Duration::from_secs(10), || {
            json_of(&call(&service, "GET", &path, &[], b""))["status"] == "cancelled"
        }));
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "its model stream was dropped"
        );
        assert_eq!(service.running_streams(), 0, "its slot was freed");
        // Its events stay readable within the retention, ending with run_cancelled.
        let replay = Reader::new(call(&service, "GET", &format!("{path}/events"), &[], b"")).rest();
        assert_every_seq_once(&replay);
        let kinds: BTreeSet<&str> = replay.iter().map(|e| e.name()).collect();
        assert!(kinds.contains("run_cancelled"), "{kinds:?}");
        drop(feed);
    });
}

#[test]
fn non_resumable_endpoints_cancel_at_once_but_are_addressable() {
    support::within("chat addressable", DEADLINE, |_| {
        let (model, feed) = FedModel::new();
        let drops = model.drops.clone();
        let service = service(model, ServerConfig::default());
        let body = br#"{"stream":true,"messages":[{"role":"user","content":"go"}]}"#;
        let response = call(&service, "POST", "/v1/chat/completions", &[], body);
        let id = support::header(&response, "x-run-id").unwrap().to_string();
        let mut stream = stream_of(response);
        feed.unbounded_send(text("a")).unwrap();
        let first = block_on(stream.next()).unwrap();
        assert!(!first.is_empty());
        let status = json_of(&call(&service, "GET", &format!("/v1/runs/{id}"), &[], b""));
        assert_eq!(status["status"], "running");
        drop(stream);
        assert!(support::eventually(Duration::from_secs(5), || {
            drops.load(Ordering::SeqCst) == 1
        }));
        let status = json_of(&call(&service, "GET", &format!("/v1/runs/{id}"), &[], b""));
        assert_eq!(status["status"], "cancelled");
        drop(feed);
    });
}

#[test]
fn a_detached_run_keeps_what_the_returning_client_needs_within_a_full_log() {
    support::within("detached full log", DEADLINE, |steps| {
        let model = ScriptedModel::from_fn(|_, _| {
            (0..300).fold(Turn::new(), |turn, i| turn.text(format!("d{i:03} ")))
        });
        let service = service(model, ServerConfig::default().with_max_run_log_bytes(2048));
        let mut reader = Reader::new(call(
            &service,
            "POST",
            "/v1/runs",
            &[],
            br#"{"input":"go"}"#,
        ));
        let mut seen = reader.until_text_deltas(1);
        let id = run_id(&seen);
        drop(reader);
        steps.step("waiting for the detached run to fill its log");
        let path = format!("/v1/runs/{id}");
        assert!(support::eventually(Duration::from_secs(5), || {
            json_of(&call(&service, "GET", &path, &[], b""))["next_seq"].as_u64() > Some(10)
        }));
        // The run waits for its reader (the log holds ~2 KiB, far less than 300 deltas), and
        // nothing from where the client left is dropped.
        let last = seen.last().unwrap().seq.to_string();
        let resumed = call(
            &service,
            "GET",
            &format!("{path}/events"),
            &[("last-event-id", &last)],
            b"",
        );
        seen.extend(Reader::new(resumed).rest());
        assert_every_seq_once(&seen);
        assert!(matches!(
            seen.last().unwrap().kind,
            EventKind::RunCompleted { .. }
        ));
    });
}
