//! A deterministic model that plays a script: for tests, demos and benchmarks.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;

use super::{
    FinishReason, Model, ModelContext, ModelDelta, ModelRequest, ModelStream, ToolCallDelta, Usage,
};
use crate::error::{ErrorKind, ModelError};
use crate::runtime::{BoxFuture, SharedRuntime};

/// One step of a scripted [`Turn`].
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Yield a text delta.
    Text(String),
    /// Yield a reasoning delta.
    Reasoning(String),
    /// Yield a whole tool call (one delta with id, name and arguments).
    ToolCall {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments as JSON text (may be deliberately invalid).
        arguments: String,
    },
    /// Yield a raw tool-call delta (for interleaving tests).
    ToolCallDelta(ToolCallDelta),
    /// Wait this long on the runtime's timer before the next step.
    Pause(Duration),
    /// Yield a usage report.
    Usage(Usage),
    /// Yield a finish reason (added automatically at the end when the turn has none).
    Finish(FinishReason),
    /// End the stream with this error.
    Fail(ModelError),
}

/// The script of one model request: the steps it plays, in order.
///
/// ```
/// use agent_core::model::{Step, Turn};
/// let turn = Turn::new().text("The answer").tool_call("call_1", "clock", "{}");
/// assert_eq!(turn.steps().len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Turn {
    steps: Vec<Step>,
}

impl Turn {
    /// An empty turn (it finishes with `stop` at once).
    pub fn new() -> Self {
        Turn::default()
    }

    /// Append any step.
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// Append a text delta.
    pub fn text(self, text: impl Into<String>) -> Self {
        self.step(Step::Text(text.into()))
    }

    /// Append one text delta per word of `text` (each word keeps its leading space), with
    /// `pause` between them: a natural-looking stream for demos.
    pub fn words(mut self, text: &str, pause: Duration) -> Self {
        let mut start = 0;
        let bytes = text.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || (bytes[i] == b' ' && bytes[i - 1] != b' ') {
                if start > 0 && !pause.is_zero() {
                    self.steps.push(Step::Pause(pause));
                }
                self.steps.push(Step::Text(text[start..i].to_string()));
                start = i;
            }
        }
        self
    }

    /// Append a reasoning delta.
    pub fn reasoning(self, text: impl Into<String>) -> Self {
        self.step(Step::Reasoning(text.into()))
    }

    /// Append a tool call.
    pub fn tool_call(
        self,
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        self.step(Step::ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        })
    }

    /// Append a pause.
    pub fn pause(self, duration: Duration) -> Self {
        self.step(Step::Pause(duration))
    }

    /// Append a usage report.
    pub fn usage(self, prompt_tokens: u64, completion_tokens: u64) -> Self {
        self.step(Step::Usage(Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }))
    }

    /// Append a failure: the stream ends with this error.
    pub fn fail(self, error: ModelError) -> Self {
        self.step(Step::Fail(error))
    }

    /// The steps so far.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}

type TurnFn = dyn Fn(&ModelRequest, usize) -> Turn + Send + Sync;

/// A model that plays scripted [`Turn`]s: one per model request.
///
/// With [`ScriptedModel::new`] the n-th request of the model gets the n-th turn (requests past
/// the end fail with [`ErrorKind::Model`]); with [`ScriptedModel::from_fn`] a closure builds the
/// turn from the request, so the script can react to the conversation (the CLI demo does).
/// Steps are yielded as fast as they are polled, except for [`Step::Pause`].
///
/// ```
/// use agent_core::model::{ScriptedModel, Turn};
/// let model = ScriptedModel::new([
///     Turn::new().tool_call("call_1", "clock", "{}"),
///     Turn::new().text("It is noon."),
/// ]);
/// # let _ = model;
/// ```
#[derive(Clone)]
pub struct ScriptedModel {
    name: String,
    turns: Arc<TurnFn>,
    requests: Arc<AtomicUsize>,
}

impl fmt::Debug for ScriptedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedModel")
            .field("name", &self.name)
            .field("requests", &self.requests.load(Ordering::Relaxed))
            .finish()
    }
}

impl ScriptedModel {
    /// Play `turns` in order, one per request.
    pub fn new(turns: impl IntoIterator<Item = Turn>) -> Self {
        let turns: Vec<Turn> = turns.into_iter().collect();
        let count = turns.len();
        ScriptedModel::from_fn(move |_request, n| {
            turns.get(n).cloned().unwrap_or_else(|| {
                Turn::new().fail(ModelError::new(
                    ErrorKind::Model,
                    format!("the script has {count} turn(s); request {} has none", n + 1),
                ))
            })
        })
    }

    /// Build each turn with `f(request, n)`, where `n` counts this model's requests from 0.
    pub fn from_fn(f: impl Fn(&ModelRequest, usize) -> Turn + Send + Sync + 'static) -> Self {
        ScriptedModel {
            name: "scripted".into(),
            turns: Arc::new(f),
            requests: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Rename the model (default `"scripted"`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How many requests the model has received.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Model for ScriptedModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn stream(&self, request: ModelRequest, cx: ModelContext) -> ModelStream {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        let turn = (self.turns)(&request, n);
        Box::pin(ScriptStream::new(turn, cx.runtime))
    }
}

struct ScriptStream {
    steps: VecDeque<Step>,
    runtime: SharedRuntime,
    sleeping: Option<BoxFuture<()>>,
    next_tool_index: u32,
    done: bool,
}

impl ScriptStream {
    fn new(turn: Turn, runtime: SharedRuntime) -> Self {
        let mut steps: VecDeque<Step> = turn.steps.into();
        let has_finish = steps
            .iter()
            .any(|s| matches!(s, Step::Finish(_) | Step::Fail(_)));
        if !has_finish {
            let calls_tools = steps
                .iter()
                .any(|s| matches!(s, Step::ToolCall { .. } | Step::ToolCallDelta(_)));
            steps.push_back(Step::Finish(if calls_tools {
                FinishReason::ToolCalls
            } else {
                FinishReason::Stop
            }));
        }
        ScriptStream {
            steps,
            runtime,
            sleeping: None,
            next_tool_index: 0,
            done: false,
        }
    }
}

impl Stream for ScriptStream {
    type Item = Result<ModelDelta, ModelError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(sleep) = this.sleeping.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleeping = None;
            }
            let Some(step) = this.steps.pop_front() else {
                this.done = true;
                return Poll::Ready(None);
            };
            let delta = match step {
                Step::Text(t) => ModelDelta::Text(t),
                Step::Reasoning(t) => ModelDelta::Reasoning(t),
                Step::ToolCall {
                    id,
                    name,
                    arguments,
                } => {
                    let index = this.next_tool_index;
                    this.next_tool_index += 1;
                    ModelDelta::ToolCall(ToolCallDelta {
                        index,
                        id: Some(id),
                        name: Some(name),
                        arguments,
                    })
                }
                Step::ToolCallDelta(d) => {
                    this.next_tool_index = this.next_tool_index.max(d.index + 1);
                    ModelDelta::ToolCall(d)
                }
                Step::Pause(d) => {
                    this.sleeping = Some(this.runtime.sleep(d));
                    continue;
                }
                Step::Usage(u) => ModelDelta::Usage(u),
                Step::Finish(r) => ModelDelta::Finish(r),
                Step::Fail(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            };
            return Poll::Ready(Some(Ok(delta)));
        }
    }
}
