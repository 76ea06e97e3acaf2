//! Human approval of tool calls on every backend: a call that needs approval waits (the
//! run's other call goes on meanwhile) until it is approved or denied through the run's
//! [`ApprovalHandle`], driven by the backend's own entry
//! point ([`Backend::consume_stream`]), or over real HTTP with
//! `POST /v1/runs/{id}/approvals`, also while the client is disconnected within the detach
//! grace.
//!
//! Every case runs one round of two calls, `call_1` to `guarded` (which the agent's approval
//! policy holds for approval) and `call_2` to `free`, both gated tools, then an answer that
//! repeats what the model was given for each call. The steps are lockstep: `free` may finish
//! only after the consumer saw `call_1`'s `tool_approval_requested`, and the decision is
//! taken only after `call_2`'s `tool_call_completed` arrived, so a backend that does not run
//! the other call while one waits (or that spins, or loses the wake-up) fails with the step
//! it stalled at. Every wait has a deadline: the gates', the frame reads' (`WAIT`) and the
//! approval timeout (`DECISION_DEADLINE`, longer than a read), besides the watchdog. The
//! approved stream case decides from another thread, the HTTP cases from another connection,
//! so the decision has to wake the waiting run.
//!
//! | case | decided through | what it must see |
//! |---|---|---|
//! | `approval_stream_approved` | the stream's handle | `guarded` runs only after approval; `run_completed` with both outputs |
//! | `approval_stream_denied` | the stream's handle | `guarded` never runs; `call_1` completes with kind `denied` and the reason, which the model gets; the shared transcript `transcript_tool_approval` |
//! | `approval_timeout` | nobody (a short approval timeout) | denied with the reason `timed out`; a late decision is refused |
//! | `approval_cancelled_while_waiting` | nobody: the run is cancelled from another thread while the call waits | `run_cancelled`; the call never runs; decisions are refused |
//! | `approval_http_approved` | `POST /v1/runs/{id}/approvals` from a second connection | 404 for an unknown run, 400 for a bad body, 409 for a call that is not waiting; 200; the open stream goes on to `run_completed` |
//! | `approval_http_denied_detached` | the same, while no client is connected | the run waits within the grace; 200 for the denial; a resumed stream shows the denial and `run_completed`; deciding again is 409 |

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use agent_core::agent::{Agent, ApprovalError, ApprovalHandle, RunStream};
use agent_core::event::{Event, EventKind};
use agent_core::model::{Message, ScriptedModel, Turn};
use agent_core::tool::{ToolErrorKind, ToolResult};
use serde_json::{Value, json};

use super::Outcome;
use super::support::{
    OpenOnDrop, Server, WAIT, agent_builder, post_run, read_run, read_run_into, server_config,
    wait_until,
};
use super::transcripts::assert_transcript_snapshot;
use crate::backend::Backend;
use crate::kit::Transcript;
use crate::kit::client::{SseClient, http_request};
use crate::kit::tools::GatedTool;
use crate::kit::watchdog::step;

/// The approval timeout of the cases that decide: longer than [`WAIT`], so that a decision
/// that does not wake the run fails the read of the next frame (rather than being rescued by
/// the timeout's own wake-up), and shorter than the watchdog's limit.
const DECISION_DEADLINE: Duration = Duration::from_secs(25);

/// The reason the denying cases give.
const REASON: &str = "not on a Friday";

/// The two gated tools of a case and the agent holding `guarded` for approval.
struct Setup {
    guarded: Arc<GatedTool>,
    free: Arc<GatedTool>,
    agent: Agent,
    _open: OpenOnDrop,
}

fn setup(backend: &dyn Backend, approval_timeout: Duration) -> Setup {
    let guarded = GatedTool::asynchronous("guarded", 1);
    let free = GatedTool::asynchronous("free", 1);
    let model = ScriptedModel::from_fn(|request, round| {
        if round == 0 {
            return Turn::new()
                .tool_call("call_1", "guarded", r#"{"id": 1}"#)
                .tool_call("call_2", "free", r#"{"id": 1}"#);
        }
        let given: Vec<String> = request
            .messages
            .iter()
            .filter_map(|m| match m {
                Message::Tool { call_id, content } => Some(format!("{call_id}: {content}")),
                _ => None,
            })
            .collect();
        Turn::new().text(given.join("; "))
    });
    let agent = agent_builder(backend)
        .model(model)
        .shared_tool(guarded.clone())
        .shared_tool(free.clone())
        .approval_policy(|call| call.name == "guarded")
        .approval_timeout(approval_timeout)
        .build()
        .expect("agent");
    Setup {
        _open: OpenOnDrop(vec![guarded.gate(1), free.gate(1)]),
        guarded,
        free,
        agent,
    }
}

/// Drive `run` through the backend's entry point, recording a transcript; `on_event` sees
/// each event before it is recorded.
fn consume_run(
    backend: &dyn Backend,
    run: RunStream,
    mut on_event: impl FnMut(&Event) -> ControlFlow<()>,
) -> Transcript {
    let mut transcript = Transcript::new();
    step("waiting for the first event (run_started)");
    backend.consume_stream(run, &mut |event| {
        step(format!(
            "handling event seq {} ({}); next: the event after it",
            event.seq,
            event.name()
        ));
        let flow = on_event(&event);
        if transcript.record(event).is_break() || flow.is_break() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    transcript
}

/// The lockstep of the stream cases: release `free` when `call_1` asks, decide (`decide`)
/// when `call_2` completed, release `guarded` once approved.
fn lockstep(
    setup: &Setup,
    approvals: &ApprovalHandle,
    decide: impl Fn(&ApprovalHandle) -> Result<(), ApprovalError>,
) -> impl FnMut(&Event) -> ControlFlow<()> {
    let free = setup.free.clone();
    let guarded = setup.guarded.clone();
    let approvals = approvals.clone();
    move |event| {
        match &event.kind {
            EventKind::ToolApprovalRequested {
                call_id,
                name,
                arguments,
            } => {
                assert_eq!(
                    (call_id.as_str(), name.as_str(), arguments),
                    ("call_1", "guarded", &json!({"id": 1})),
                    "approvals: tool_approval_requested names the call, its tool and its arguments"
                );
                assert_eq!(
                    approvals.pending(),
                    ["call_1"],
                    "approvals: the handle lists the call waiting for approval"
                );
                step("call_1 waits for approval: call_2 must run and complete meanwhile");
                free.gate(1).open_next();
            }
            EventKind::ToolCallCompleted { call_id, .. } if call_id == "call_2" => {
                assert_eq!(
                    guarded.probe().started(),
                    0,
                    "approvals: a call waiting for approval must not run"
                );
                step("call_2 completed while call_1 waits; deciding call_1 through the handle");
                decide(&approvals).unwrap_or_else(|e| {
                    panic!("approvals: deciding a waiting call must succeed: {e}")
                });
                guarded.gate(1).open_next();
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// The position of the first event matching `pred`, with a message naming `what`.
fn position(transcript: &Transcript, what: &str, pred: impl Fn(&EventKind) -> bool) -> usize {
    transcript
        .events()
        .iter()
        .position(|e| pred(&e.kind))
        .unwrap_or_else(|| {
            panic!(
                "approvals: the run must emit {what}\n{}",
                transcript.summary()
            )
        })
}

fn completed(call: &str) -> impl Fn(&EventKind) -> bool + '_ {
    move |kind| matches!(kind, EventKind::ToolCallCompleted { call_id, .. } if call_id == call)
}

fn result_of<'a>(transcript: &'a Transcript, call: &str) -> &'a ToolResult {
    let i = position(
        transcript,
        &format!("tool_call_completed for {call}"),
        completed(call),
    );
    match &transcript.events()[i].kind {
        EventKind::ToolCallCompleted { result, .. } => result,
        _ => unreachable!(),
    }
}

/// The order every case shares: asked, the other call completed, decided.
fn assert_order(transcript: &Transcript) {
    let asked = position(transcript, "tool_approval_requested", |k| {
        matches!(k, EventKind::ToolApprovalRequested { .. })
    });
    let other = position(transcript, "call_2's completion", completed("call_2"));
    let decided = position(transcript, "tool_approval_decided", |k| {
        matches!(k, EventKind::ToolApprovalDecided { .. })
    });
    let done = position(transcript, "call_1's completion", completed("call_1"));
    assert!(
        asked < other && other < decided && decided < done,
        "approvals: call_2 must complete while call_1 waits, and call_1 complete after its \
         decision\n{}",
        transcript.summary()
    );
}

fn assert_denied(transcript: &Transcript, reason: &str) {
    match result_of(transcript, "call_1") {
        ToolResult::Error { kind, message } => {
            assert_eq!(
                *kind,
                ToolErrorKind::Denied,
                "approvals: a denied call completes with kind denied\n{}",
                transcript.summary()
            );
            assert!(
                message.contains(reason),
                "approvals: the denial carries its reason {reason:?}: {message}"
            );
        }
        other => panic!(
            "approvals: a denied call must complete with an error result, got {other:?}\n{}",
            transcript.summary()
        ),
    }
    assert!(
        transcript.events().iter().any(|e| matches!(
            &e.kind,
            EventKind::ToolApprovalDecided { call_id, approved: false, reason: Some(r), .. }
                if call_id == "call_1" && r == reason
        )),
        "approvals: tool_approval_decided reports the denial and its reason\n{}",
        transcript.summary()
    );
    let text = transcript.completed_text();
    assert!(
        text.contains("call_1: error (denied)") && text.contains(reason),
        "approvals: the model must be given the denial with its reason; it was given {text:?}"
    );
    assert!(
        text.contains(r#"call_2: {"id":1}"#),
        "approvals: the other call's output still reaches the model: {text:?}"
    );
}

/// `approval_stream_approved`: see the [module docs](self).
pub fn stream_approved(backend: &dyn Backend) -> Outcome {
    let setup = setup(backend, DECISION_DEADLINE);
    let run = setup.agent.run("go");
    let approvals = run.approvals();
    let on_event = lockstep(&setup, &approvals, |a| {
        // From another thread, while the consumer goes back to waiting: the decision must
        // wake the run.
        let a = a.clone();
        std::thread::spawn(move || a.approve("call_1"));
        Ok(())
    });
    let transcript = consume_run(backend, run, on_event);
    transcript.assert_contract();
    assert_order(&transcript);
    assert_eq!(
        result_of(&transcript, "call_1"),
        &ToolResult::Ok {
            output: json!({"id": 1})
        },
        "approvals: an approved call runs normally\n{}",
        transcript.summary()
    );
    assert_eq!(
        setup.guarded.probe().delivered(),
        1,
        "approvals: the approved tool runs once"
    );
    assert_eq!(
        transcript.completed_text(),
        r#"call_1: {"id":1}; call_2: {"id":1}"#,
        "approvals: the model gets both outputs"
    );
    assert_eq!(
        approvals.approve("call_1"),
        Err(ApprovalError::RunEnded),
        "approvals: once the run ended, decisions are refused"
    );
    Outcome::passed()
}

/// `approval_stream_denied`: see the [module docs](self).
pub fn stream_denied(backend: &dyn Backend) -> Outcome {
    let setup = setup(backend, DECISION_DEADLINE);
    let run = setup.agent.run("go");
    let approvals = run.approvals();
    let on_event = lockstep(&setup, &approvals, |a| {
        a.deny("call_1", REASON)?;
        match a.deny("call_1", "twice") {
            Err(ApprovalError::AlreadyDecided { .. }) => Ok(()),
            other => panic!("approvals: deciding a call twice must be refused, got {other:?}"),
        }
    });
    let transcript = consume_run(backend, run, on_event);
    transcript.assert_contract();
    assert_order(&transcript);
    assert_denied(&transcript, REASON);
    assert_eq!(
        setup.guarded.probe().started(),
        0,
        "approvals: a denied tool never runs"
    );
    assert_transcript_snapshot("transcript_tool_approval", &transcript);
    Outcome::passed()
}

/// `approval_timeout`: see the [module docs](self).
pub fn timeout(backend: &dyn Backend) -> Outcome {
    let setup = setup(backend, Duration::from_millis(100));
    setup.free.gate(1).open_next();
    let run = setup.agent.run("go");
    let approvals = run.approvals();
    step("waiting for call_1's approval timeout (100 ms) to deny it");
    let transcript = consume_run(backend, run, |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    assert_denied(&transcript, "timed out");
    assert_eq!(
        setup.guarded.probe().started(),
        0,
        "approvals: a call whose approval timed out never runs"
    );
    assert_eq!(
        approvals.approve("call_1"),
        Err(ApprovalError::RunEnded),
        "approvals: a decision after the run is refused"
    );
    Outcome::passed()
}

/// `approval_cancelled_while_waiting`: see the [module docs](self).
pub fn cancelled_while_waiting(backend: &dyn Backend) -> Outcome {
    let setup = setup(backend, DECISION_DEADLINE);
    setup.free.gate(1).open_next();
    let run = setup.agent.run("go");
    let approvals = run.approvals();
    let cancel = run.cancel_handle();
    let transcript = consume_run(backend, run, |event| {
        if let EventKind::ToolCallCompleted { call_id, .. } = &event.kind
            && call_id == "call_2"
        {
            step("call_1 waits for approval; cancelling the run from another thread");
            let cancel = cancel.clone();
            std::thread::spawn(move || cancel.cancel());
        }
        ControlFlow::Continue(())
    });
    transcript.assert_contract();
    assert!(
        matches!(
            transcript.terminal().map(|e| &e.kind),
            Some(EventKind::RunCancelled { .. })
        ),
        "approvals: a run cancelled while a call waits for approval ends with run_cancelled\n{}",
        transcript.summary()
    );
    assert_eq!(
        setup.guarded.probe().started(),
        0,
        "approvals: the waiting call of a cancelled run never runs"
    );
    assert_eq!(
        approvals.approve("call_1"),
        Err(ApprovalError::RunEnded),
        "approvals: a cancelled run refuses decisions"
    );
    Outcome::passed()
}

fn post_approval(addr: std::net::SocketAddr, run_id: &str, body: &Value) -> (u16, Value) {
    let path = format!("/v1/runs/{run_id}/approvals");
    step(format!("POST {path} {body}"));
    let response = http_request(
        addr,
        "POST",
        &path,
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
        WAIT,
    )
    .unwrap_or_else(|e| panic!("approvals: POST {path} failed: {e}"));
    (response.status, response.json().unwrap_or(Value::Null))
}

fn run_id_of(client: &SseClient) -> String {
    client
        .header("x-run-id")
        .expect("approvals: a /v1/runs answer names its run in x-run-id")
        .to_string()
}

/// Read the stream until `call_2` completed (releasing `free` when `call_1` asks).
fn read_until_waiting(client: &mut SseClient, setup: &Setup) -> Transcript {
    let free = setup.free.clone();
    read_run(client, |event| match &event.kind {
        EventKind::ToolApprovalRequested { call_id, .. } => {
            assert_eq!(call_id, "call_1", "approvals: only call_1 asks");
            free.gate(1).open_next();
            ControlFlow::Continue(())
        }
        EventKind::ToolCallCompleted { call_id, .. } if call_id == "call_2" => {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
}

/// `approval_http_approved`: see the [module docs](self).
pub fn http_approved(backend: &dyn Backend) -> Outcome {
    let setup = setup(backend, DECISION_DEADLINE);
    let server = Server::start(backend, setup.agent.clone());
    let addr = server.addr();
    let mut client = post_run(addr, "go");
    let id = run_id_of(&client);
    let mut transcript = read_until_waiting(&mut client, &setup);
    assert_eq!(
        setup.guarded.probe().started(),
        0,
        "approvals: a call waiting for approval must not run"
    );

    let (status, body) = post_approval(
        addr,
        "run_00000000000000000000",
        &json!({"call_id": "call_1", "approved": true}),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("run_not_found")),
        "approvals: an unknown run is 404: {body}"
    );
    let (status, body) = post_approval(addr, &id, &json!({"call_id": "call_1"}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_approval")),
        "approvals: a body without `approved` is 400: {body}"
    );
    let (status, body) = post_approval(addr, &id, &json!({"call_id": "call_2", "approved": true}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_awaiting_approval")),
        "approvals: a call that never asked is 409: {body}"
    );
    setup.guarded.gate(1).open_next();
    let (status, body) = post_approval(addr, &id, &json!({"call_id": "call_1", "approved": true}));
    assert_eq!(
        status, 200,
        "approvals: approving a waiting call is 200: {body}"
    );
    assert_eq!(
        (body["call_id"].as_str(), body["approved"].as_bool()),
        (Some("call_1"), Some(true)),
        "approvals: the answer repeats the decision: {body}"
    );
    step("the open stream goes on after the approval");
    read_run_into(&mut client, &mut transcript, |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    assert_order(&transcript);
    assert_eq!(
        result_of(&transcript, "call_1"),
        &ToolResult::Ok {
            output: json!({"id": 1})
        },
        "approvals: a call approved over HTTP runs\n{}",
        transcript.summary()
    );
    assert_eq!(
        transcript.completed_text(),
        r#"call_1: {"id":1}; call_2: {"id":1}"#,
        "approvals: the model gets both outputs"
    );
    let (status, _) = post_approval(addr, &id, &json!({"call_id": "call_1", "approved": true}));
    assert_eq!(
        status, 409,
        "approvals: a finished run's call is not waiting"
    );
    Outcome::passed()
}

/// `approval_http_denied_detached`: see the [module docs](self).
pub fn http_denied_detached(backend: &dyn Backend) -> Outcome {
    let setup = setup(backend, DECISION_DEADLINE);
    let config = server_config().with_run_detach_grace(Duration::from_secs(60));
    let server = Server::start_with(backend, setup.agent.clone(), config);
    let addr = server.addr();
    let mut client = post_run(addr, "go");
    let id = run_id_of(&client);
    let mut transcript = read_until_waiting(&mut client, &setup);
    let seen = transcript.len() as u64;
    client.close();
    step("the client left while call_1 waits; the run must wait on within the grace");
    let status_of = || {
        http_request(addr, "GET", &format!("/v1/runs/{id}"), &[], b"", WAIT)
            .ok()
            .and_then(|r| r.json())
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        status_of()["status"],
        "running",
        "approvals: a waiting run whose client left is still running within its grace"
    );
    let (status, body) = post_approval(
        addr,
        &id,
        &json!({"call_id": "call_1", "approved": false, "reason": REASON}),
    );
    assert_eq!(
        status, 200,
        "approvals: a detached run's call can be denied over HTTP: {body}"
    );
    assert_eq!(
        body["reason"], REASON,
        "approvals: the answer keeps the reason"
    );
    assert!(
        wait_until(WAIT, || status_of()["status"] == "completed"),
        "approvals: the detached run must go on after the decision and complete: {}",
        status_of()
    );
    let (status, body) = post_approval(addr, &id, &json!({"call_id": "call_1", "approved": true}));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_awaiting_approval")),
        "approvals: deciding again is 409: {body}"
    );
    let last = (seen - 1).to_string();
    step(format!(
        "GET /v1/runs/{id}/events after Last-Event-ID {last}"
    ));
    let mut resumed = SseClient::request(
        addr,
        "GET",
        &format!("/v1/runs/{id}/events"),
        &[("last-event-id", &last)],
        b"",
        None,
    )
    .unwrap_or_else(|e| panic!("approvals: GET /v1/runs/{id}/events failed: {e}"));
    assert_eq!(
        resumed.status(),
        200,
        "approvals: the run's events can be read again after the decision"
    );
    read_run_into(&mut resumed, &mut transcript, |_| ControlFlow::Continue(()));
    transcript.assert_contract();
    assert_order(&transcript);
    assert_denied(&transcript, REASON);
    assert_eq!(
        setup.guarded.probe().started(),
        0,
        "approvals: a call denied over HTTP never runs"
    );
    Outcome::passed()
}
