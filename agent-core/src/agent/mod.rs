//! The agent: instructions, a model, tools and a runtime, run to a [`RunStream`] of events.
//!
//! ```
//! use std::sync::Arc;
//! use futures_util::StreamExt;
//! use agent_core::agent::Agent;
//! use agent_core::event::EventKind;
//! use agent_core::model::{ScriptedModel, Turn};
//! use agent_core::runtime::{block_on, TestRuntime};
//! use agent_core::tool::{typed_tool, ToolError};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Double { n: i64 }
//!
//! let model = ScriptedModel::new([
//!     Turn::new().tool_call("call_1", "double", r#"{"n": 21}"#),
//!     Turn::new().text("The answer is ").text("42."),
//! ]);
//! let agent = Agent::builder()
//!     .instructions("Answer briefly.")
//!     .model(model)
//!     .tool(typed_tool("double", "Double a number", |args: Double| async move {
//!         Ok::<_, ToolError>(args.n * 2)
//!     }))
//!     .runtime(TestRuntime::new())
//!     .build()
//!     .unwrap();
//!
//! let events: Vec<_> = block_on(agent.run("What is 21 doubled?").collect());
//! let EventKind::RunCompleted { text, .. } = &events.last().unwrap().kind else { panic!() };
//! assert_eq!(text, "The answer is 42.");
//! ```

mod approval;
mod drive;
mod emit;
mod history;
mod output;
mod run;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::model::{Message, Model};
use crate::policy::Timeouts;
use crate::runtime::{Runtime, SharedRuntime};
use crate::tool::Tool;

pub use approval::{
    APPROVAL_TIMED_OUT, ApprovalCall, ApprovalDecision, ApprovalError, ApprovalHandle,
};
pub use history::message_bytes;
pub use output::{OnInvalidOutput, OutputType};
pub use run::{COOPERATIVE_BUDGET, CancelHandle, RunStream};

use history::History;

/// Default for [`AgentBuilder::max_rounds`].
pub const DEFAULT_MAX_ROUNDS: u32 = 10;
/// Default for [`AgentBuilder::max_concurrent_tools`].
pub const DEFAULT_MAX_CONCURRENT_TOOLS: usize = 8;

pub(crate) struct AgentInner {
    instructions: Option<String>,
    model: Arc<dyn Model>,
    tools: Vec<Arc<dyn Tool>>,
    tool_index: HashMap<String, usize>,
    runtime: SharedRuntime,
    max_rounds: u32,
    max_concurrent_tools: usize,
    run_timeout: Option<Duration>,
    timeouts: Option<Timeouts>,
    max_output_bytes: Option<usize>,
    output: Option<OutputType>,
    approval_policy: Option<approval::ApprovalPolicy>,
    approval_timeout: Option<Duration>,
}

impl AgentInner {
    fn tool(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tool_index.get(name).map(|&i| &self.tools[i])
    }

    fn tool_names(&self) -> String {
        if self.tools.is_empty() {
            return "none".into();
        }
        let names: Vec<&str> = self
            .tools
            .iter()
            .map(|t| t.definition().name.as_str())
            .collect();
        names.join(", ")
    }
}

/// An agent: cheap to clone, shareable across threads, runs any number of times concurrently.
///
/// Build one with [`Agent::builder`]; run it with [`Agent::run`] (stateless) or through a
/// [`Session`] (multi-turn).
#[derive(Clone)]
pub struct Agent {
    inner: Arc<AgentInner>,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("model", &self.inner.model.name())
            .field("tools", &self.inner.tool_names())
            .field("runtime", &self.inner.runtime.name())
            .field("max_rounds", &self.inner.max_rounds)
            .field("max_concurrent_tools", &self.inner.max_concurrent_tools)
            .finish()
    }
}

static RUN_COUNTER: AtomicU64 = AtomicU64::new(1);

/// A run id: `run_` and 20 decimal digits, unique within the process and, with a per-process
/// random key, not repeated by another process or a restart (runs are addressed by id over
/// HTTP, and instances may share a store), nor guessable from the previous one.
fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut hasher = KEY.get_or_init(Default::default).build_hasher();
    hasher.write_u64(RUN_COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("run_{:020}", hasher.finish())
}

/// A name for a server instance in a shared store: `instance_` and 16 hex digits, random
/// per call.
pub(crate) fn new_instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(RUN_COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("instance_{:016x}", hasher.finish())
}

impl Agent {
    /// Start building an agent.
    pub fn builder() -> AgentBuilder {
        AgentBuilder::default()
    }

    /// Run the agent on `input` with no prior conversation.
    ///
    /// Returns the run's event stream at once; see [`RunStream`] for its guarantees.
    pub fn run(&self, input: impl Into<String>) -> RunStream {
        self.start(input.into(), RunOptions::default(), None)
    }

    /// Run the agent on `input` after the given conversation `history` (oldest first, without
    /// the system instructions, which the agent adds).
    pub fn run_with_history(&self, input: impl Into<String>, history: Vec<Message>) -> RunStream {
        self.start(input.into(), RunOptions::default().history(history), None)
    }

    /// Run the agent on `input` with per-run options: prior history and timeouts that
    /// replace the agent's for this run only.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use std::time::Duration;
    /// # use futures_util::StreamExt;
    /// # use agent_core::agent::{Agent, RunOptions};
    /// # use agent_core::error::ErrorKind;
    /// # use agent_core::event::EventKind;
    /// # use agent_core::model::{ScriptedModel, Turn};
    /// # use agent_core::policy::Timeouts;
    /// # use agent_core::runtime::{block_on, TestRuntime};
    /// let agent = Agent::builder()
    ///     .model(ScriptedModel::new([Turn::new().pause(Duration::from_secs(30))]))
    ///     .runtime(TestRuntime::new())
    ///     .build()
    ///     .unwrap();
    /// let timeouts = Timeouts { run: Some(Duration::from_millis(10)), ..Timeouts::default() };
    /// let events: Vec<_> = block_on(agent.run_with("hi", RunOptions::default().timeouts(timeouts)).collect());
    /// let EventKind::RunFailed { error, .. } = &events.last().unwrap().kind else { panic!() };
    /// assert_eq!(error.kind, ErrorKind::RunTimeout);
    /// ```
    pub fn run_with(&self, input: impl Into<String>, options: RunOptions) -> RunStream {
        self.start(input.into(), options, None)
    }

    /// A new multi-turn session with an empty history.
    pub fn session(&self) -> Session {
        self.session_in(None, None)
    }

    /// A new multi-turn session whose history is kept under `max_bytes` (as counted by
    /// [`message_bytes`]): when a completed run makes it larger, its oldest exchanges (a
    /// user message and everything the run added after it, tool rounds included) are
    /// dropped until the rest fits. An exchange larger than `max_bytes` on its own is not
    /// kept either.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use futures_util::StreamExt;
    /// use agent_core::agent::Agent;
    /// use agent_core::model::{ScriptedModel, Turn};
    /// use agent_core::runtime::{block_on, TestRuntime};
    ///
    /// let agent = Agent::builder()
    ///     .model(ScriptedModel::from_fn(|_, _| Turn::new().text("ok")))
    ///     .runtime(TestRuntime::new())
    ///     .build()
    ///     .unwrap();
    /// let session = agent.session_with_max_bytes(4096);
    /// for _ in 0..10 {
    ///     block_on(session.run("x".repeat(1000)).count());
    /// }
    /// assert!(session.history_bytes() <= 4096);
    /// assert_eq!(session.history().len() % 2, 0, "whole exchanges only");
    /// ```
    pub fn session_with_max_bytes(&self, max_bytes: usize) -> Session {
        self.session_in(Some(max_bytes), None)
    }

    /// A session bounded by `max_bytes` whose size is also added to `total`.
    pub(crate) fn session_in(
        &self,
        max_bytes: Option<usize>,
        total: Option<Arc<AtomicUsize>>,
    ) -> Session {
        Session {
            agent: self.clone(),
            history: Arc::new(Mutex::new(History::bounded(max_bytes, total))),
        }
    }

    /// Run `input` after `history` and capture the messages the run adds when it completes
    /// (a session kept in a store appends them itself).
    pub(crate) fn run_capturing(
        &self,
        input: String,
        history: Vec<Message>,
    ) -> (RunStream, SessionCapture) {
        let capture = Arc::new(Mutex::new(History::bounded(None, None)));
        let run = self.start(
            input,
            RunOptions::default().history(history),
            Some(capture.clone()),
        );
        (run, SessionCapture(capture))
    }

    /// The runtime this agent runs on.
    pub fn runtime(&self) -> &SharedRuntime {
        &self.inner.runtime
    }

    /// The agent's model.
    pub fn model(&self) -> &Arc<dyn Model> {
        &self.inner.model
    }

    fn start(
        &self,
        input: String,
        options: RunOptions,
        session: Option<Arc<Mutex<History>>>,
    ) -> RunStream {
        let RunOptions {
            history,
            timeouts,
            max_output_bytes,
            discard_text,
            output,
        } = options;
        let output = output.or_else(|| self.inner.output.clone());
        let limits = drive::TextLimits {
            max_output_bytes: max_output_bytes.or(self.inner.max_output_bytes),
            discard_text,
        };
        // A per-run override replaces the agent's timeouts as a whole (its `run: None`
        // disables the run timeout for this run).
        let run_timeout = match timeouts {
            Some(t) => t.run,
            None => self.inner.run_timeout,
        };
        let model_timeouts = timeouts.or(self.inner.timeouts);
        let run_id = new_run_id();
        let emitter = emit::Emitter::default();
        let approvals = Arc::new(approval::ApprovalState::default());
        let span =
            tracing::info_span!("agent_run", run_id = %run_id, model = self.inner.model.name());
        let driver = tracing::Instrument::instrument(
            drive::drive(
                self.inner.clone(),
                emitter.clone(),
                run_id.clone(),
                history,
                input,
                drive::DriveOptions {
                    model_timeouts,
                    limits,
                    output,
                    approvals: approvals.clone(),
                },
            ),
            span,
        );
        let deadline = run_timeout.map(|d| self.inner.runtime.sleep(d));
        RunStream::new(
            run_id,
            Box::pin(driver),
            emitter,
            self.inner.runtime.clone(),
            run::StreamParts {
                deadline,
                session,
                discard_text,
                approvals,
            },
        )
    }
}

/// A conversation with an agent: each run sees the messages of the runs before it.
///
/// History is appended when a run completes (`run_completed`); a failed or cancelled run
/// leaves it unchanged, so the same input can simply be sent again.
///
/// ```
/// use std::sync::Arc;
/// use futures_util::StreamExt;
/// use agent_core::agent::Agent;
/// use agent_core::model::{ScriptedModel, Turn};
/// use agent_core::runtime::{block_on, TestRuntime};
///
/// let agent = Agent::builder()
///     .model(ScriptedModel::new([Turn::new().text("Hi Ada."), Turn::new().text("You are Ada.")]))
///     .runtime(TestRuntime::new())
///     .build()
///     .unwrap();
/// let session = agent.session();
/// block_on(session.run("I am Ada.").count());
/// block_on(session.run("Who am I?").count());
/// assert_eq!(session.history().len(), 4);
/// ```
#[derive(Debug, Clone)]
pub struct Session {
    agent: Agent,
    history: Arc<Mutex<History>>,
}

impl Session {
    /// Run the next turn of the conversation.
    pub fn run(&self, input: impl Into<String>) -> RunStream {
        self.run_with(input, RunOptions::default())
    }

    /// Run the next turn with per-run options; the session's history is put before
    /// `options.history`.
    pub fn run_with(&self, input: impl Into<String>, mut options: RunOptions) -> RunStream {
        let mut history = self.history();
        history.append(&mut options.history);
        options.history = history;
        self.agent
            .start(input.into(), options, Some(self.history.clone()))
    }

    /// The conversation so far (user, assistant and tool messages; no system message).
    pub fn history(&self) -> Vec<Message> {
        self.lock().messages().to_vec()
    }

    /// The size of [`history`](Self::history) in bytes, as [`message_bytes`] counts them.
    pub fn history_bytes(&self) -> usize {
        self.lock().bytes()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stop counting this session in a server's total (it was forgotten).
    pub(crate) fn detach(&self) {
        self.lock().detach();
    }

    /// Forget the conversation.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The agent of this session.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }
}

/// The messages a completed run added, captured for a store (see `Agent::run_capturing`).
#[derive(Debug, Clone)]
pub(crate) struct SessionCapture(Arc<Mutex<History>>);

impl SessionCapture {
    /// The messages the run added; empty until it completed.
    pub(crate) fn take(&self) -> Vec<Message> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The newest whole exchanges of `messages` that fit `max_bytes`.
pub(crate) fn bounded_history(messages: Vec<Message>, max_bytes: usize) -> Vec<Message> {
    let mut history = History::bounded(Some(max_bytes), None);
    history.append(messages);
    history.take()
}

/// Options of one run, for [`Agent::run_with`] and [`Session::run_with`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOptions {
    /// Conversation before the input (oldest first, without system instructions).
    pub history: Vec<Message>,
    /// Timeouts replacing the agent's for this run (connect, first byte and inactivity of
    /// model requests, and the whole-run timeout).
    pub timeouts: Option<Timeouts>,
    /// Bound of this run's answer text in bytes, replacing the agent's
    /// ([`AgentBuilder::max_output_bytes`]); see [`RunOptions::max_output_bytes`].
    pub max_output_bytes: Option<usize>,
    /// Keep no copy of the answer; see [`RunOptions::discard_text`].
    pub discard_text: bool,
    /// The type this run's answer must be, replacing the agent's
    /// ([`AgentBuilder::output`]); see [`OutputType`].
    pub output: Option<OutputType>,
}

impl RunOptions {
    /// Set the prior conversation.
    pub fn history(mut self, history: Vec<Message>) -> Self {
        self.history = history;
        self
    }

    /// Set the timeouts of this run.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = Some(timeouts);
        self
    }

    /// Fail this run with [`ErrorKind::OutputTooLarge`](crate::error::ErrorKind::OutputTooLarge)
    /// when its answer text (all rounds together) would exceed `bytes`; replaces the agent's
    /// bound ([`AgentBuilder::max_output_bytes`]). The text up to the bound (cut at a character
    /// boundary) is still emitted as a `text_delta` and kept as the failure's `partial_text`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use futures_util::StreamExt;
    /// # use agent_core::agent::{Agent, RunOptions};
    /// # use agent_core::error::ErrorKind;
    /// # use agent_core::event::EventKind;
    /// # use agent_core::model::{ScriptedModel, Turn};
    /// # use agent_core::runtime::{block_on, TestRuntime};
    /// let agent = Agent::builder()
    ///     .model(ScriptedModel::new([Turn::new().text("Hello, ").text("world!")]))
    ///     .runtime(TestRuntime::new())
    ///     .build()
    ///     .unwrap();
    /// let run = agent.run_with("hi", RunOptions::default().max_output_bytes(9));
    /// let events: Vec<_> = block_on(run.collect());
    /// let EventKind::RunFailed { error, partial_text } = &events.last().unwrap().kind else { panic!() };
    /// assert_eq!(error.kind, ErrorKind::OutputTooLarge);
    /// assert_eq!(partial_text, "Hello, wo");
    /// ```
    pub fn max_output_bytes(mut self, bytes: usize) -> Self {
        self.max_output_bytes = Some(bytes);
        self
    }

    /// Keep no copy of the answer: a consumer that prints or forwards the `text_delta` events
    /// as they come (a CLI, a proxy) then needs memory bounded by the largest delta, whatever
    /// the answer's length. `run_completed.text` and the `partial_text` of `run_failed` and
    /// `run_cancelled` are empty. The
    /// text of a round is still given back to the model when the round ends in tool calls
    /// (and recorded by a [`Session`]), up to its first [`DISCARDED_ROUND_TEXT_KEPT`] bytes.
    pub fn discard_text(mut self) -> Self {
        self.discard_text = true;
        self
    }

    /// Ask this run for structured output (see [`OutputType`]), replacing the agent's.
    pub fn output(mut self, output: OutputType) -> Self {
        self.output = Some(output);
        self
    }

    /// Ask this run for an answer of type `T`: [`RunOptions::output`] with
    /// [`OutputType::of::<T>()`](OutputType::of).
    pub fn output_type<T: serde::de::DeserializeOwned + schemars::JsonSchema + 'static>(
        self,
    ) -> Self {
        self.output(OutputType::of::<T>())
    }
}

/// With [`RunOptions::discard_text`], how much of one round's text is kept to give back to
/// the model when the round ends in tool calls (1 MiB).
pub const DISCARDED_ROUND_TEXT_KEPT: usize = 1024 * 1024;

/// Why [`AgentBuilder::build`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// No model was given.
    MissingModel,
    /// No runtime was given.
    MissingRuntime,
    /// Two tools have the same name.
    DuplicateTool(String),
    /// A limit is zero.
    InvalidLimit(&'static str),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::MissingModel => f.write_str("the agent needs a model: call .model(...)"),
            BuildError::MissingRuntime => f.write_str(
                "the agent needs a runtime: call .runtime(...) (a backend crate provides one)",
            ),
            BuildError::DuplicateTool(name) => write!(f, "two tools are named {name:?}"),
            BuildError::InvalidLimit(which) => write!(f, "{which} must be at least 1"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Builds an [`Agent`].
#[derive(Default)]
pub struct AgentBuilder {
    instructions: Option<String>,
    model: Option<Arc<dyn Model>>,
    tools: Vec<Arc<dyn Tool>>,
    runtime: Option<SharedRuntime>,
    max_rounds: Option<u32>,
    max_concurrent_tools: Option<usize>,
    run_timeout: Option<Duration>,
    timeouts: Option<Timeouts>,
    max_output_bytes: Option<usize>,
    output: Option<OutputType>,
    approval_policy: Option<approval::ApprovalPolicy>,
    approval_timeout: Option<Duration>,
}

impl fmt::Debug for AgentBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentBuilder")
            .field("model", &self.model.as_ref().map(|m| m.name().to_string()))
            .field("tools", &self.tools.len())
            .finish_non_exhaustive()
    }
}

impl AgentBuilder {
    /// System instructions, sent first in every model request.
    pub fn instructions(mut self, instructions: impl Into<String>) -> Self {
        self.instructions = Some(instructions.into());
        self
    }

    /// The model (required).
    pub fn model(mut self, model: impl Model) -> Self {
        self.model = Some(Arc::new(model));
        self
    }

    /// The model, already shared.
    pub fn shared_model(mut self, model: Arc<dyn Model>) -> Self {
        self.model = Some(model);
        self
    }

    /// Add a tool.
    pub fn tool(mut self, tool: impl Tool) -> Self {
        self.tools.push(Arc::new(tool));
        self
    }

    /// Add a tool that is already shared.
    pub fn shared_tool(mut self, tool: Arc<dyn Tool>) -> Self {
        self.tools.push(tool);
        self
    }

    /// The runtime (required), by value: `TokioRuntime::current()`, `SmolRuntime::global()`,
    /// `ThreadPoolRuntime::global()`, … (a [`SharedRuntime`] given here is used as it is, not
    /// wrapped again; [`shared_runtime`](Self::shared_runtime) says so explicitly).
    ///
    /// ```
    /// use agent_core::agent::Agent;
    /// use agent_core::model::{ScriptedModel, Turn};
    /// use agent_core::runtime::TestRuntime;
    ///
    /// let agent = Agent::builder()
    ///     .model(ScriptedModel::new([Turn::new().text("hi")]))
    ///     .runtime(TestRuntime::new())
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(agent.runtime().name(), "test-threads");
    /// ```
    pub fn runtime<R: Runtime>(mut self, runtime: R) -> Self {
        // An `Arc<dyn Runtime>` is a runtime too; keep it rather than wrap it in a second Arc.
        let any: Box<dyn std::any::Any> = Box::new(runtime);
        let shared = match any.downcast::<SharedRuntime>() {
            Ok(shared) => *shared,
            Err(any) => match any.downcast::<R>() {
                Ok(runtime) => Arc::new(*runtime) as SharedRuntime,
                Err(_) => unreachable!("the box holds an R"),
            },
        };
        self.runtime = Some(shared);
        self
    }

    /// The runtime, already shared (like [`shared_model`](Self::shared_model)).
    pub fn shared_runtime(mut self, runtime: SharedRuntime) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// The most model requests one run may make (default [`DEFAULT_MAX_ROUNDS`]); a run that
    /// needs more fails with kind `max_rounds`.
    pub fn max_rounds(mut self, max_rounds: u32) -> Self {
        self.max_rounds = Some(max_rounds);
        self
    }

    /// The most tool calls running at once (default [`DEFAULT_MAX_CONCURRENT_TOOLS`]).
    pub fn max_concurrent_tools(mut self, limit: usize) -> Self {
        self.max_concurrent_tools = Some(limit);
        self
    }

    /// Fail a run (kind `run_timeout`) that takes longer than `timeout` in total.
    pub fn run_timeout(mut self, timeout: Duration) -> Self {
        self.run_timeout = Some(timeout);
        self
    }

    /// Timeouts for every run of this agent: `connect`, `first_byte` and `inactivity` replace
    /// the model's own (for models that have timeouts, such as `OpenAiModel`), and `run` is
    /// the whole-run timeout. A run can override them again with [`RunOptions::timeouts`].
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.run_timeout = timeouts.run;
        self.timeouts = Some(timeouts);
        self
    }

    /// Fail a run with [`ErrorKind::OutputTooLarge`](crate::error::ErrorKind::OutputTooLarge)
    /// when its answer text would exceed `bytes` (default: no bound). A run can set its own
    /// bound with [`RunOptions::max_output_bytes`], which documents what the failure keeps.
    pub fn max_output_bytes(mut self, bytes: usize) -> Self {
        self.max_output_bytes = Some(bytes);
        self
    }

    /// Ask every run for structured output: the answer must be `T`, the request carries its
    /// JSON Schema, and `run_completed` carries the parsed value (see [`OutputType`] for the
    /// options, [`OnInvalidOutput`] for what an invalid answer does).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use futures_util::StreamExt;
    /// use agent_core::agent::Agent;
    /// use agent_core::model::{ScriptedModel, Turn};
    /// use agent_core::runtime::{block_on, TestRuntime};
    ///
    /// #[derive(Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
    /// struct City { name: String, population: u64 }
    ///
    /// let agent = Agent::builder()
    ///     .model(ScriptedModel::new([
    ///         Turn::new().text(r#"{"name": "Lyon", "#).text(r#""population": 522250}"#),
    ///     ]))
    ///     .output_type::<City>()
    ///     .runtime(TestRuntime::new())
    ///     .build()
    ///     .unwrap();
    /// let events: Vec<_> = block_on(agent.run("Largest city near the Alps?").collect());
    /// let city: City = events.last().unwrap().kind.parsed_output().unwrap().unwrap();
    /// assert_eq!(city, City { name: "Lyon".into(), population: 522250 });
    /// ```
    pub fn output_type<T: serde::de::DeserializeOwned + schemars::JsonSchema + 'static>(
        self,
    ) -> Self {
        self.output(OutputType::of::<T>())
    }

    /// Ask every run for structured output described by `output` (see [`OutputType`]).
    pub fn output(mut self, output: OutputType) -> Self {
        self.output = Some(output);
        self
    }

    /// Decide per call whether it needs a human's approval before it runs, replacing the
    /// tools' own answers ([`Tool::requires_approval`],
    /// which the policy is given as [`ApprovalCall::tool_requires_approval`]). Only calls that
    /// would run are asked about (a known tool, arguments that are JSON). A policy that
    /// panics counts as "needs approval".
    ///
    /// ```
    /// use std::sync::Arc;
    /// use futures_util::StreamExt;
    /// use agent_core::agent::Agent;
    /// use agent_core::event::EventKind;
    /// use agent_core::model::{ScriptedModel, Turn};
    /// use agent_core::runtime::{block_on, TestRuntime};
    /// use agent_core::tool::blocking_tool;
    ///
    /// let shell = blocking_tool("shell", "Run a command", serde_json::json!({"type": "object"}), |_| {
    ///     Ok(serde_json::json!("ok"))
    /// });
    /// let agent = Agent::builder()
    ///     .model(ScriptedModel::new([
    ///         Turn::new()
    ///             .tool_call("call_1", "shell", r#"{"cmd": "ls"}"#)
    ///             .tool_call("call_2", "shell", r#"{"cmd": "rm -rf /"}"#),
    ///         Turn::new().text("Done."),
    ///     ]))
    ///     .tool(shell)
    ///     // Only destructive commands need a human.
    ///     .approval_policy(|call| call.arguments["cmd"].as_str().is_some_and(|c| c.starts_with("rm")))
    ///     .runtime(TestRuntime::new())
    ///     .build()
    ///     .unwrap();
    /// let mut run = agent.run("clean up");
    /// let approvals = run.approvals();
    /// let mut asked = Vec::new();
    /// block_on(async {
    ///     while let Some(event) = run.next().await {
    ///         if let EventKind::ToolApprovalRequested { call_id, .. } = &event.kind {
    ///             asked.push(call_id.clone());
    ///             approvals.deny(call_id, "never").unwrap();
    ///         }
    ///     }
    /// });
    /// assert_eq!(asked, ["call_2"]);
    /// ```
    pub fn approval_policy(
        mut self,
        policy: impl Fn(&ApprovalCall<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.approval_policy = Some(Arc::new(policy));
        self
    }

    /// Deny a call that waited `timeout` for approval without a decision, with the reason
    /// [`APPROVAL_TIMED_OUT`] (`"timed out"`); the model is told, and the run goes on.
    /// Default: no timeout (the call waits until decided, or until the run is cancelled or
    /// its run timeout passes).
    pub fn approval_timeout(mut self, timeout: Duration) -> Self {
        self.approval_timeout = Some(timeout);
        self
    }

    /// Build the agent.
    pub fn build(self) -> Result<Agent, BuildError> {
        let model = self.model.ok_or(BuildError::MissingModel)?;
        let runtime = self.runtime.ok_or(BuildError::MissingRuntime)?;
        let max_rounds = self.max_rounds.unwrap_or(DEFAULT_MAX_ROUNDS);
        if max_rounds == 0 {
            return Err(BuildError::InvalidLimit("max_rounds"));
        }
        let max_concurrent_tools = self
            .max_concurrent_tools
            .unwrap_or(DEFAULT_MAX_CONCURRENT_TOOLS);
        if max_concurrent_tools == 0 {
            return Err(BuildError::InvalidLimit("max_concurrent_tools"));
        }
        let mut tool_index = HashMap::with_capacity(self.tools.len());
        for (i, tool) in self.tools.iter().enumerate() {
            let name = tool.definition().name.clone();
            if tool_index.insert(name.clone(), i).is_some() {
                return Err(BuildError::DuplicateTool(name));
            }
        }
        Ok(Agent {
            inner: Arc::new(AgentInner {
                instructions: self.instructions,
                model,
                tools: self.tools,
                tool_index,
                runtime,
                max_rounds,
                max_concurrent_tools,
                run_timeout: self.run_timeout,
                timeouts: self.timeouts,
                max_output_bytes: self.max_output_bytes,
                output: self.output,
                approval_policy: self.approval_policy,
                approval_timeout: self.approval_timeout,
            }),
        })
    }
}
