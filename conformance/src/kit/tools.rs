//! [`GatedTool`]: a tool whose calls finish only when the test opens their gate, with
//! counters that show whether a call started, finished, was delivered or was dropped.
//!
//! ```
//! use std::sync::Arc;
//! use futures_util::StreamExt;
//! use agent_core::agent::Agent;
//! use agent_core::model::{ScriptedModel, Turn};
//! use agent_core::runtime::{block_on, TestRuntime};
//! use conformance::kit::tools::GatedTool;
//!
//! let tool = GatedTool::asynchronous("wait", 1);
//! tool.gate(1).open_next(); // let call 1 finish whenever it runs
//! let agent = Agent::builder()
//!     .model(ScriptedModel::new([
//!         Turn::new().tool_call("call_1", "wait", r#"{"id": 1}"#),
//!         Turn::new().text("done"),
//!     ]))
//!     .shared_tool(tool.clone())
//!     .runtime(TestRuntime::new())
//!     .build()
//!     .unwrap();
//! let events: Vec<_> = block_on(agent.run("go").collect());
//! assert!(events.last().unwrap().is_terminal());
//! assert_eq!(tool.probe().delivered(), 1);
//! ```

use std::fmt;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use agent_core::runtime;
use agent_core::tool::{Tool, ToolContext, ToolDefinition, ToolError, ToolFuture};
use serde_json::{Value, json};

use super::gate::Gate;
use super::probe::DropCounter;

/// How long a gated call waits for its gate before it fails.
pub const TOOL_GATE_DEADLINE: Duration = Duration::from_secs(10);

/// Counters of a [`GatedTool`].
#[derive(Debug, Default)]
pub struct ToolProbe {
    started: AtomicUsize,
    finished: AtomicUsize,
    delivered: AtomicUsize,
    drops: DropCounter,
}

impl ToolProbe {
    /// Calls whose body started running (the async future was polled, or the blocking
    /// closure started on its thread).
    pub fn started(&self) -> usize {
        self.started.load(Ordering::Acquire)
    }

    /// Calls whose body ran to its end (gate opened or deadline passed).
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::Acquire)
    }

    /// Calls whose result reached the agent.
    pub fn delivered(&self) -> usize {
        self.delivered.load(Ordering::Acquire)
    }

    /// Drops of the call's guard: an async call's future (finished or not), a blocking
    /// call's result (delivered or discarded). `drops - delivered` is what cancellation
    /// threw away.
    pub fn drops(&self) -> &DropCounter {
        &self.drops
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Async,
    Blocking,
}

/// A tool taking `{"id": <n>}` (1-based) whose call `n` finishes when [`gate(n)`](Self::gate)
/// is opened once, returning `{"id": n}`; it fails after [`TOOL_GATE_DEADLINE`] otherwise.
///
/// The async flavour waits on the executor; the blocking flavour blocks a thread of the
/// runtime's blocking pool (so running several at once needs that many pool threads).
#[derive(Clone)]
pub struct GatedTool {
    definition: Arc<ToolDefinition>,
    kind: Kind,
    gates: Arc<Vec<Arc<Gate>>>,
    probe: Arc<ToolProbe>,
}

impl fmt::Debug for GatedTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatedTool")
            .field("name", &self.definition.name)
            .field("kind", &self.kind)
            .field("probe", &self.probe)
            .finish()
    }
}

impl GatedTool {
    fn build(name: &str, calls: usize, kind: Kind) -> Arc<Self> {
        Arc::new(GatedTool {
            definition: Arc::new(ToolDefinition {
                name: name.to_string(),
                description: "Waits until the test lets call <id> finish".to_string(),
                parameters: json!({
                    "type": "object",
                    "properties": {"id": {"type": "integer"}},
                    "required": ["id"],
                }),
            }),
            kind,
            gates: Arc::new(
                (1..=calls)
                    .map(|i| Gate::new(format!("{name} call {i}")))
                    .collect(),
            ),
            probe: Arc::new(ToolProbe::default()),
        })
    }

    /// An async tool with gates for calls `1..=calls`.
    pub fn asynchronous(name: &str, calls: usize) -> Arc<Self> {
        Self::build(name, calls, Kind::Async)
    }

    /// A blocking tool (run through the runtime's blocking pool) with gates for calls
    /// `1..=calls`.
    pub fn blocking(name: &str, calls: usize) -> Arc<Self> {
        Self::build(name, calls, Kind::Blocking)
    }

    /// The gate of call `id` (1-based).
    ///
    /// # Panics
    ///
    /// If `id` is 0 or above the number of calls given at construction.
    pub fn gate(&self, id: usize) -> Arc<Gate> {
        self.gates[id - 1].clone()
    }

    /// The counters.
    pub fn probe(&self) -> &ToolProbe {
        &self.probe
    }
}

impl Tool for GatedTool {
    fn definition(&self) -> &ToolDefinition {
        &self.definition
    }

    fn call(&self, arguments: Value, cx: ToolContext) -> ToolFuture {
        let id = arguments.get("id").and_then(Value::as_u64).unwrap_or(0) as usize;
        let Some(gate) = id.checked_sub(1).and_then(|i| self.gates.get(i)).cloned() else {
            return Box::pin(async move {
                Err(ToolError::invalid_arguments(format!(
                    "no gated call with id {id}"
                )))
            });
        };
        let probe = self.probe.clone();
        match self.kind {
            Kind::Async => {
                // The guard lives in the future from its creation: dropping the future,
                // polled or not, is counted.
                let guard = probe.drops.guard();
                Box::pin(async move {
                    let _guard = guard;
                    probe.started.fetch_add(1, Ordering::AcqRel);
                    let mut opened = std::pin::pin!(gate.wait(1));
                    let mut timer = cx.runtime.sleep(TOOL_GATE_DEADLINE);
                    let in_time = poll_fn(|cx| {
                        if opened.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(true);
                        }
                        if timer.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(false);
                        }
                        Poll::Pending
                    })
                    .await;
                    probe.finished.fetch_add(1, Ordering::AcqRel);
                    if !in_time {
                        return Err(ToolError::failed(format!(
                            "the gate of call {id} stayed shut for {TOOL_GATE_DEADLINE:?}"
                        )));
                    }
                    probe.delivered.fetch_add(1, Ordering::AcqRel);
                    Ok(json!({"id": id}))
                })
            }
            Kind::Blocking => {
                let worker_probe = probe.clone();
                let handle = runtime::blocking(&*cx.runtime, move || {
                    worker_probe.started.fetch_add(1, Ordering::AcqRel);
                    let in_time = gate.wait_blocking(1, TOOL_GATE_DEADLINE);
                    worker_probe.finished.fetch_add(1, Ordering::AcqRel);
                    // The guard travels with the result: dropped on delivery or discard.
                    (in_time, worker_probe.drops.guard())
                });
                Box::pin(async move {
                    let (in_time, _guard) = handle.await?;
                    probe.delivered.fetch_add(1, Ordering::AcqRel);
                    if !in_time {
                        return Err(ToolError::failed(format!(
                            "the gate of call {id} stayed shut for {TOOL_GATE_DEADLINE:?}"
                        )));
                    }
                    Ok(json!({"id": id}))
                })
            }
        }
    }
}
