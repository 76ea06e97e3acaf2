//! Human approval of tool calls, at poll level: a call waits without a thread or a spin,
//! others go on meanwhile, a decision wakes the run, a denial goes back to the model, the
//! timeout denies, cancel and drop end the wait; and `POST /v1/runs/{id}/approvals`.

mod support;

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use agent_core::agent::{Agent, AgentBuilder, ApprovalError, RunStream};
use agent_core::event::{Event, EventKind};
use agent_core::model::{Message, ScriptedModel, Turn};
use agent_core::runtime::{TestRuntime, block_on};
use agent_core::server::{AgentService, ApiBody, ServerConfig};
use agent_core::tool::{FnTool, ToolErrorKind, ToolResult, async_tool};
use futures_core::Stream;
use futures_util::StreamExt;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(10);

/// Counts wake-ups.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// An async tool returning `"<name> done"` that counts its calls; with `approval`, it
/// requires approval.
fn counted(name: &'static str, approval: bool, calls: &Arc<AtomicUsize>) -> FnTool {
    let calls = calls.clone();
    let tool = async_tool(
        name,
        "counts its calls",
        json!({"type": "object"}),
        move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok(json!(format!("{name} done"))) }
        },
    );
    if approval {
        tool.require_approval()
    } else {
        tool
    }
}

fn agent(model: ScriptedModel) -> AgentBuilder {
    Agent::builder()
        .model(model)
        .runtime(Arc::new(TestRuntime::new()))
}

/// Two calls, `call_1` to `guarded` (needs approval) and `call_2` to `free`, then an answer
/// that repeats the tool messages the model was given.
fn two_calls_model() -> ScriptedModel {
    ScriptedModel::from_fn(|request, round| {
        if round == 0 {
            Turn::new()
                .tool_call("call_1", "guarded", r#"{"x": 1}"#)
                .tool_call("call_2", "free", "{}")
        } else {
            let tools: Vec<String> = request
                .messages
                .iter()
                .filter_map(|m| match m {
                    Message::Tool { call_id, content } => Some(format!("{call_id}={content}")),
                    _ => None,
                })
                .collect();
            Turn::new().text(tools.join("; "))
        }
    })
}

fn poll(stream: &mut RunStream, waker: &Waker) -> Poll<Option<Event>> {
    Pin::new(stream).poll_next(&mut Context::from_waker(waker))
}

/// Poll until the stream is pending, returning the events it gave.
fn drain_ready(stream: &mut RunStream, waker: &Waker) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..1000 {
        match poll(stream, waker) {
            Poll::Ready(Some(event)) => events.push(event),
            Poll::Ready(None) => return events,
            Poll::Pending => return events,
        }
    }
    panic!("the stream never became pending: {events:?}");
}

fn names(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::name).collect()
}

fn completed_text(events: &[Event]) -> &str {
    match &events.last().expect("events").kind {
        EventKind::RunCompleted { text, .. } => text,
        other => panic!("expected run_completed, got {other:?}"),
    }
}

#[test]
fn an_approved_call_waits_without_spinning_while_the_other_call_runs() {
    support::within("approved_call_waits", DEADLINE, |_| {
        let (guarded, free) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let agent = agent(two_calls_model())
            .tool(counted("guarded", true, &guarded))
            .tool(counted("free", false, &free))
            .build()
            .unwrap();
        let mut run = agent.run("go");
        let approvals = run.approvals();
        let counter = Arc::new(CountingWaker::default());
        let waker = Waker::from(counter.clone());
        let events = drain_ready(&mut run, &waker);
        assert_eq!(
            names(&events),
            [
                "run_started",
                "model_request_started",
                "tool_call_delta",
                "tool_call_delta",
                "model_request_completed",
                "tool_call_started",
                "tool_approval_requested",
                "tool_call_started",
                "tool_call_completed",
            ],
            "the free call runs and completes while the guarded one waits"
        );
        let EventKind::ToolApprovalRequested {
            call_id,
            name,
            arguments,
        } = &events[6].kind
        else {
            unreachable!()
        };
        assert_eq!(
            (call_id.as_str(), name.as_str(), arguments),
            ("call_1", "guarded", &json!({"x": 1}))
        );
        assert_eq!(guarded.load(Ordering::SeqCst), 0, "not run before approval");
        assert_eq!(free.load(Ordering::SeqCst), 1);
        assert_eq!(approvals.pending(), ["call_1"]);
        // Waiting: polled again, it stays pending and does not wake itself (no spin).
        let wakes = counter.0.load(Ordering::SeqCst);
        assert!(poll(&mut run, &waker).is_pending());
        assert!(poll(&mut run, &waker).is_pending());
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            wakes,
            "a waiting run must not wake itself"
        );
        // A decision from another thread wakes it.
        let handle = approvals.clone();
        std::thread::spawn(move || handle.approve("call_1").unwrap())
            .join()
            .unwrap();
        assert!(
            counter.0.load(Ordering::SeqCst) > wakes,
            "the approval must wake the run"
        );
        assert_eq!(
            approvals.approve("call_1"),
            Err(ApprovalError::AlreadyDecided {
                call_id: "call_1".into()
            })
        );
        assert_eq!(
            approvals.deny("call_2", "x"),
            Err(ApprovalError::NotRequested {
                call_id: "call_2".into()
            })
        );
        let rest: Vec<Event> = block_on(run.by_ref().collect());
        assert_eq!(
            names(&rest)[..2],
            ["tool_approval_decided", "tool_call_completed"]
        );
        assert!(matches!(
            &rest[0].kind,
            EventKind::ToolApprovalDecided { call_id, approved: true, reason: None, .. } if call_id == "call_1"
        ));
        assert_eq!(guarded.load(Ordering::SeqCst), 1);
        assert_eq!(
            completed_text(&rest),
            "call_1=guarded done; call_2=free done"
        );
        assert_eq!(approvals.approve("call_1"), Err(ApprovalError::RunEnded));
        let seqs: Vec<u64> = events.iter().chain(&rest).map(|e| e.seq).collect();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    });
}

#[test]
fn a_denied_call_goes_back_to_the_model_with_its_reason() {
    support::within("denied_call", DEADLINE, |_| {
        let (guarded, free) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let agent = agent(two_calls_model())
            .tool(counted("guarded", true, &guarded))
            .tool(counted("free", false, &free))
            .build()
            .unwrap();
        let mut run = agent.run("go");
        let approvals = run.approvals();
        let events: Vec<Event> = block_on(async {
            let mut events = Vec::new();
            while let Some(event) = run.next().await {
                if let EventKind::ToolApprovalRequested { call_id, .. } = &event.kind {
                    approvals.deny(call_id, "too risky").unwrap();
                }
                events.push(event);
            }
            events
        });
        assert_eq!(
            guarded.load(Ordering::SeqCst),
            0,
            "a denied tool never runs"
        );
        let denied = events
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::ToolCallCompleted {
                    call_id, result, ..
                } if call_id == "call_1" => Some(result.clone()),
                _ => None,
            })
            .expect("the denied call completes");
        let ToolResult::Error { kind, message } = &denied else {
            panic!("denied: {denied:?}")
        };
        assert_eq!(*kind, ToolErrorKind::Denied);
        assert!(message.contains("too risky"), "{message}");
        assert!(events.iter().any(|e| matches!(
            &e.kind,
            EventKind::ToolApprovalDecided { approved: false, reason: Some(r), .. } if r == "too risky"
        )));
        let text = completed_text(&events);
        assert!(
            text.starts_with("call_1=error (denied): ") && text.contains("too risky"),
            "the model is told: {text}"
        );
    });
}

#[test]
fn the_approval_timeout_denies_with_timed_out() {
    support::within("approval_timeout", DEADLINE, |_| {
        let guarded = Arc::new(AtomicUsize::new(0));
        let agent = agent(ScriptedModel::new([
            Turn::new().tool_call("call_1", "guarded", "{}"),
            Turn::new().text("ok"),
        ]))
        .tool(counted("guarded", true, &guarded))
        .approval_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
        let run = agent.run("go");
        let approvals = run.approvals();
        let events: Vec<Event> = block_on(run.collect());
        assert!(events.iter().any(|e| matches!(
            &e.kind,
            EventKind::ToolApprovalDecided { approved: false, reason: Some(r), .. } if r == "timed out"
        )));
        assert_eq!(guarded.load(Ordering::SeqCst), 0);
        assert_eq!(completed_text(&events), "ok");
        assert_eq!(approvals.approve("call_1"), Err(ApprovalError::RunEnded));
    });
}

#[test]
fn cancel_and_drop_end_the_wait() {
    support::within("cancel_while_waiting", DEADLINE, |_| {
        let guarded = Arc::new(AtomicUsize::new(0));
        let agent = agent(ScriptedModel::new([
            Turn::new().tool_call("call_1", "guarded", "{}"),
            Turn::new().text("ok"),
        ]))
        .tool(counted("guarded", true, &guarded))
        .build()
        .unwrap();
        // Cancelled while waiting: run_cancelled.
        let mut run = agent.run("go");
        let cancel = run.cancel_handle();
        let events: Vec<Event> = block_on(async {
            let mut events = Vec::new();
            while let Some(event) = run.next().await {
                if let EventKind::ToolApprovalRequested { .. } = &event.kind {
                    cancel.cancel();
                }
                events.push(event);
            }
            events
        });
        assert_eq!(events.last().unwrap().name(), "run_cancelled");
        // Dropped while waiting: decisions are refused, the tool never ran.
        let mut run = agent.run("go");
        let approvals = run.approvals();
        block_on(async {
            while let Some(event) = run.next().await {
                if let EventKind::ToolApprovalRequested { .. } = &event.kind {
                    break;
                }
            }
        });
        drop(run);
        assert_eq!(approvals.approve("call_1"), Err(ApprovalError::RunEnded));
        assert_eq!(guarded.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn the_policy_decides_and_a_panicking_policy_asks() {
    support::within("approval_policy", DEADLINE, |_| {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let agent = agent(ScriptedModel::new([
            Turn::new()
                .tool_call("call_1", "tool", r#"{"n": 1}"#)
                .tool_call("call_2", "tool", r#"{"n": 2}"#)
                .tool_call("call_3", "tool", r#"{"n": 3}"#)
                .tool_call("call_4", "missing", "{}"),
            Turn::new().text("ok"),
        ]))
        .tool(counted("tool", true, &calls))
        .approval_policy(move |call| {
            log.lock()
                .unwrap()
                .push((call.call_id.to_string(), call.tool_requires_approval));
            match call.arguments["n"].as_u64() {
                Some(1) => false,
                Some(2) => panic!("policy bug"),
                _ => true,
            }
        })
        .build()
        .unwrap();
        let mut run = agent.run("go");
        let approvals = run.approvals();
        let mut asked = Vec::new();
        block_on(async {
            while let Some(event) = run.next().await {
                if let EventKind::ToolApprovalRequested { call_id, .. } = &event.kind {
                    asked.push(call_id.clone());
                    approvals.approve(call_id).unwrap();
                }
            }
        });
        assert_eq!(asked, ["call_2", "call_3"], "a panicking policy asks");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(
            *seen.lock().unwrap(),
            [
                ("call_1".to_string(), true),
                ("call_2".to_string(), true),
                ("call_3".to_string(), true)
            ],
            "the policy is asked only about calls that would run"
        );
    });
}

fn json_post(service: &AgentService, path: &str, body: &Value) -> (u16, Value) {
    let response = block_on(service.handle(
        "POST",
        path,
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    ));
    let ApiBody::Full(bytes) = response.body else {
        panic!("expected a full body from {path}")
    };
    (
        response.status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[test]
fn post_approvals_decides_over_http() {
    support::within("post_approvals", DEADLINE, |_| {
        let guarded = Arc::new(AtomicUsize::new(0));
        let agent = agent(ScriptedModel::new([
            Turn::new().tool_call("call_1", "guarded", "{}"),
            Turn::new().text("ok"),
        ]))
        .tool(counted("guarded", true, &guarded))
        .build()
        .unwrap();
        let service = AgentService::new(agent, ServerConfig::default());
        let response = block_on(service.handle(
            "POST",
            "/v1/runs",
            &[("content-type", "application/json")],
            br#"{"input":"go"}"#,
        ));
        let run_id = response
            .headers
            .iter()
            .find(|(n, _)| *n == "x-run-id")
            .map(|(_, v)| v.clone())
            .unwrap();
        let ApiBody::Stream(mut body) = response.body else {
            panic!("a stream")
        };
        let mut text = String::new();
        while !text.contains("event: tool_approval_requested") {
            let chunk = block_on(body.next()).expect("frames until the approval request");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let path = format!("/v1/runs/{run_id}/approvals");
        let (status, error) = json_post(&service, &path, &json!({"call_id": "call_1"}));
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (400, Some("invalid_approval")),
            "{error}"
        );
        let (status, error) = json_post(
            &service,
            &path,
            &json!({"call_id": "call_9", "approved": true}),
        );
        assert_eq!(status, 409, "{error}");
        assert_eq!(error["error"]["code"], "not_awaiting_approval");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("call_1"),
            "names what is pending: {error}"
        );
        let (status, _) = json_post(
            &service,
            "/v1/runs/run_nope/approvals",
            &json!({"call_id": "call_1", "approved": true}),
        );
        assert_eq!(status, 404);
        let form = block_on(service.handle(
            "POST",
            &path,
            &[("content-type", "text/plain")],
            br#"{"call_id":"call_1","approved":true}"#,
        ));
        assert_eq!(form.status, 415, "a cross-site form post cannot approve");
        let (status, ok) = json_post(
            &service,
            &path,
            &json!({"call_id": "call_1", "approved": false, "reason": "no"}),
        );
        assert_eq!(status, 200, "{ok}");
        assert_eq!(
            ok,
            json!({"object": "tool_approval", "run_id": run_id, "call_id": "call_1", "approved": false, "reason": "no"})
        );
        let (status, _) = json_post(
            &service,
            &path,
            &json!({"call_id": "call_1", "approved": true}),
        );
        assert_eq!(status, 409, "deciding twice");
        let rest: Vec<_> = block_on(body.collect());
        let rest = String::from_utf8(rest.concat()).unwrap();
        assert!(rest.contains("\"kind\":\"denied\""), "{rest}");
        assert!(rest.contains("event: run_completed"), "{rest}");
        assert_eq!(guarded.load(Ordering::SeqCst), 0);
    });
}

/// Run a front-end protocol's request to its end, denying `call_1` over HTTP when the
/// protocol's frames show the approval request (`marker`); the frames' JSON values.
fn protocol_frames(path: &str, body: Value, marker: &str) -> Vec<Value> {
    let guarded = Arc::new(AtomicUsize::new(0));
    let agent = agent(ScriptedModel::new([
        Turn::new().tool_call("call_1", "guarded", "{}"),
        Turn::new().text("ok"),
    ]))
    .tool(counted("guarded", true, &guarded))
    .build()
    .unwrap();
    let service = AgentService::new(agent, ServerConfig::default());
    let response = block_on(service.handle(
        "POST",
        path,
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    ));
    assert_eq!(response.status, 200);
    let run_id = response
        .headers
        .iter()
        .find(|(n, _)| *n == "x-run-id")
        .map(|(_, v)| v.clone())
        .unwrap();
    let ApiBody::Stream(mut stream) = response.body else {
        panic!("a stream")
    };
    let mut text = String::new();
    while !text.contains(marker) {
        let chunk = block_on(stream.next()).expect("frames until the approval request");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let (status, _) = json_post(
        &service,
        &format!("/v1/runs/{run_id}/approvals"),
        &json!({"call_id": "call_1", "approved": false, "reason": "no"}),
    );
    assert_eq!(status, 200);
    let rest: Vec<_> = block_on(stream.collect());
    text.push_str(&String::from_utf8(rest.concat()).unwrap());
    assert_eq!(guarded.load(Ordering::SeqCst), 0);
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[test]
fn the_ai_sdk_stream_shows_the_approval_request_and_the_denial() {
    support::within("ai_sdk_approval", DEADLINE, |_| {
        let frames = protocol_frames(
            "/v1/ai-sdk/chat",
            json!({"messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "go"}]}]}),
            "tool-approval-request",
        );
        let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
        let asked = kinds
            .iter()
            .position(|k| *k == "tool-approval-request")
            .unwrap();
        assert_eq!(kinds[asked - 1], "tool-input-available", "{kinds:?}");
        assert_eq!(
            frames[asked],
            json!({"type": "tool-approval-request", "approvalId": "call_1", "toolCallId": "call_1"}),
            "a strict UIMessageChunk"
        );
        assert_eq!(
            frames[asked + 1],
            json!({"type": "tool-output-denied", "toolCallId": "call_1"}),
            "a strict UIMessageChunk, right after the request: {kinds:?}"
        );
        assert_eq!(kinds.last(), Some(&"finish"));
    });
}

#[test]
fn the_ag_ui_stream_shows_custom_approval_events() {
    support::within("ag_ui_approval", DEADLINE, |_| {
        let frames = protocol_frames(
            "/v1/ag-ui",
            json!({"threadId": "t1", "runId": "r1", "messages": [{"id": "m1", "role": "user", "content": "go"}]}),
            "tool_approval_requested",
        );
        let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
        let asked = frames
            .iter()
            .position(|f| f["name"] == "tool_approval_requested")
            .unwrap();
        assert_eq!(kinds[asked - 1], "TOOL_CALL_END", "{kinds:?}");
        assert_eq!(
            frames[asked],
            json!({"type": "CUSTOM", "name": "tool_approval_requested", "value": {
                "toolCallId": "call_1", "toolCallName": "guarded", "input": {}}})
        );
        assert_eq!(
            frames[asked + 1],
            json!({"type": "CUSTOM", "name": "tool_approval_decided", "value": {
                "toolCallId": "call_1", "approved": false, "reason": "no"}})
        );
        assert_eq!(frames[asked + 2]["type"], "TOOL_CALL_RESULT");
        assert!(
            frames[asked + 2]["content"]
                .as_str()
                .unwrap()
                .starts_with("error (denied): "),
            "{}",
            frames[asked + 2]
        );
        assert_eq!(kinds.last(), Some(&"RUN_FINISHED"));
    });
}

#[test]
fn an_ai_sdk_history_part_in_output_denied_reaches_the_model_as_a_denial() {
    support::within("ai_sdk_denied_history", DEADLINE, |_| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let agent = agent(ScriptedModel::from_fn(move |request, _| {
            *log.lock().unwrap() = request.messages.clone();
            Turn::new().text("ok")
        }))
        .build()
        .unwrap();
        let service = AgentService::new(agent, ServerConfig::default());
        let body = json!({"messages": [
            {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "delete it"}]},
            {"id": "m2", "role": "assistant", "parts": [
                {"type": "step-start"},
                {"type": "tool-delete", "toolCallId": "call_1", "state": "output-denied",
                 "input": {"path": "/"}, "approval": {"id": "call_1", "approved": false, "reason": "never"}}
            ]},
            {"id": "m3", "role": "user", "parts": [{"type": "text", "text": "why?"}]}
        ]});
        let response = block_on(service.handle(
            "POST",
            "/v1/ai-sdk/chat",
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        ));
        let ApiBody::Stream(stream) = response.body else {
            panic!("a stream")
        };
        block_on(stream.count());
        let messages = seen.lock().unwrap().clone();
        let denial = messages
            .iter()
            .find_map(|m| match m {
                Message::Tool { call_id, content } if call_id == "call_1" => Some(content.clone()),
                _ => None,
            })
            .expect("the denied call's result is in the history");
        assert!(
            denial.starts_with("error (denied): ") && denial.contains("never"),
            "{denial}"
        );
    });
}

#[test]
fn the_run_timeout_ends_a_run_waiting_for_approval() {
    support::within("run_timeout_while_waiting", DEADLINE, |_| {
        let guarded = Arc::new(AtomicUsize::new(0));
        let agent = agent(ScriptedModel::new([
            Turn::new().tool_call("call_1", "guarded", "{}"),
            Turn::new().text("ok"),
        ]))
        .tool(counted("guarded", true, &guarded))
        .run_timeout(Duration::from_millis(30))
        .build()
        .unwrap();
        let events: Vec<Event> = block_on(agent.run("go").collect());
        match &events.last().unwrap().kind {
            EventKind::RunFailed { error, .. } => {
                assert_eq!(error.kind, agent_core::error::ErrorKind::RunTimeout)
            }
            other => panic!("expected run_failed run_timeout, got {other:?}"),
        }
        assert_eq!(guarded.load(Ordering::SeqCst), 0);
    });
}
