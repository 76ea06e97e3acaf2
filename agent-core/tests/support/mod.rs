//! Helpers shared by agent-core's integration tests: each test binary includes this module
//! (`mod support;`) and uses the part it needs.
#![allow(dead_code)]

pub mod http;

use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_core::agent::Agent;
use agent_core::model::{FinishReason, ModelRequest, ScriptedModel, Step, ToolCallDelta, Turn};
use agent_core::runtime::TestRuntime;
use agent_core::server::{AgentService, ApiResponse, ServerConfig};
use agent_core::tool::{ToolError, async_tool};
use serde_json::json;

/// The last step a test recorded, reported when it misses its deadline.
#[derive(Clone, Default)]
pub struct Steps(std::sync::Arc<std::sync::Mutex<String>>);

impl Steps {
    pub fn step(&self, what: impl Into<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = what.into();
    }

    pub fn last(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Run `body` on its own thread and fail the test, naming it and its last step, if it has
/// not finished within `deadline`: a run, channel, gate or join that never ends fails in
/// seconds instead of hanging. A panic in the body is re-raised unchanged.
pub fn within(name: &str, deadline: Duration, body: impl FnOnce(&Steps) + Send + 'static) {
    use std::sync::mpsc::RecvTimeoutError;
    let steps = Steps::default();
    steps.step("started");
    let inner = steps.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            body(&inner);
            let _ = done_tx.send(());
        })
        .expect("spawn the test thread");
    match done_rx.recv_timeout(deadline) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(RecvTimeoutError::Timeout) => panic!(
            "{name}: did not finish within {deadline:?} (hung); last step: {}",
            steps.last()
        ),
    }
}

/// Run `body` on its own thread and fail if it takes longer than `deadline`; its value, or
/// its panic re-raised.
pub fn bounded<T: Send + 'static>(
    name: &str,
    deadline: Duration,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(body());
    });
    match rx.recv_timeout(deadline) {
        Ok(value) => value,
        Err(RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the body sent nothing and did not panic"),
        },
        Err(RecvTimeoutError::Timeout) => panic!("{name}: did not finish within {deadline:?}"),
    }
}

/// Wait until `condition` holds, checking every millisecond, at most `limit` long; whether
/// it came to hold. (The caller's deadline still bounds the test as a whole.)
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while !condition() {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

pub type Requests = Arc<Mutex<Vec<ModelRequest>>>;

pub fn piece(id: Option<&str>, name: Option<&str>, arguments: &str) -> Step {
    Step::ToolCallDelta(ToolCallDelta {
        index: 0,
        id: id.map(Into::into),
        name: name.map(Into::into),
        arguments: arguments.into(),
    })
}

/// Round 1: reasoning, text and a calculator call whose arguments stream in two pieces;
/// round 2: a call to a tool that fails; round 3: the answer.
pub fn tool_round_service() -> (AgentService, Requests) {
    let requests: Requests = Arc::default();
    let seen = requests.clone();
    let model = ScriptedModel::from_fn(move |request, n| {
        seen.lock().unwrap().push(request.clone());
        match n {
            0 => Turn::new()
                .reasoning("Need a tool.")
                .text("Let me compute.")
                .step(piece(
                    Some("call_1"),
                    Some("calculator"),
                    "{\"expression\":",
                ))
                .step(piece(None, None, "\"2+2\"}"))
                .step(Step::Finish(FinishReason::ToolCalls)),
            1 => Turn::new()
                .tool_call("call_2", "broken", "{}")
                .step(Step::Finish(FinishReason::ToolCalls)),
            _ => Turn::new().text("4"),
        }
    });
    let agent = Agent::builder()
        .model(model)
        .tool(async_tool(
            "calculator",
            "Evaluate an expression",
            json!({"type": "object"}),
            |_| async { Ok(json!(4)) },
        ))
        .tool(async_tool(
            "broken",
            "Always fails",
            json!({"type": "object"}),
            |_| async { Err(ToolError::failed("division by zero")) },
        ))
        .runtime(Arc::new(TestRuntime::new()))
        .build()
        .unwrap();
    (AgentService::new(agent, ServerConfig::default()), requests)
}

pub fn service_of(model: ScriptedModel) -> AgentService {
    let agent = Agent::builder()
        .model(model)
        .runtime(Arc::new(TestRuntime::new()))
        .build()
        .unwrap();
    AgentService::new(agent, ServerConfig::default())
}

pub fn header<'a>(response: &'a ApiResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
