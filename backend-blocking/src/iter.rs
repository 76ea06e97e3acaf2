//! [`RunIter`]: a run as a plain [`Iterator`] of events.
//!
//! The core's [`RunStream`] is pull-based: it makes progress only while it is polled. A
//! `RunIter` polls it on the calling thread, inside [`next`](Iterator::next), with the core's
//! thread-parking [`block_on`]: each call returns the next event the moment it exists, and
//! between two calls the run simply waits (the Iterator contract). No hidden thread, no async
//! runtime. Timers fire on the core's timer thread and blocking tools run on the runtime's
//! pool, so they progress (and wake the iterator) whatever the calling thread does.
//!
//! ```
//! use agent_core::event::EventKind;
//! use agent_core::model::{ScriptedModel, Turn};
//!
//! let agent = backend_blocking::agent_builder()
//!     .model(ScriptedModel::new([Turn::new().text("Hello").text(", world")]))
//!     .build()
//!     .unwrap();
//! let mut text = String::new();
//! for event in backend_blocking::run(&agent, "Say hello") {
//!     if let EventKind::TextDelta { text: delta } = &event.kind {
//!         text.push_str(delta);
//!     }
//! }
//! assert_eq!(text, "Hello, world");
//! ```

use std::fmt;
use std::iter::FusedIterator;

use agent_core::agent::{Agent, ApprovalHandle, CancelHandle, RunStream, Session};
use agent_core::event::Event;
use agent_core::runtime::block_on;
use futures_core::Stream;
use futures_util::StreamExt;

/// Run `agent` on `input` and iterate over its events as they are produced.
///
/// Returns at once; the run starts with the first call to [`next`](Iterator::next). See
/// [`RunIter`] for the guarantees.
///
/// The agent's runtime serves the run's timers and blocking tools, so it must make progress
/// without the calling thread: [`agent_builder`](crate::agent_builder) gives it the
/// [`ThreadPoolRuntime`](crate::ThreadPoolRuntime), which always does. (An agent built on,
/// say, a current-thread tokio runtime that the calling thread itself drives would wait
/// forever for its timers while `next` blocks that thread.)
pub fn run(agent: &Agent, input: impl Into<String>) -> RunIter {
    RunIter::new(agent.run(input))
}

/// Run the next turn of `session` and iterate over its events as they are produced.
///
/// ```
/// use agent_core::model::{ScriptedModel, Turn};
///
/// let agent = backend_blocking::agent_builder()
///     .model(ScriptedModel::new([Turn::new().text("Hi Ada."), Turn::new().text("You are Ada.")]))
///     .build()
///     .unwrap();
/// let session = agent.session();
/// assert!(backend_blocking::run_session(&session, "I am Ada.").last().unwrap().is_terminal());
/// assert!(backend_blocking::run_session(&session, "Who am I?").last().unwrap().is_terminal());
/// assert_eq!(session.history().len(), 4);
/// ```
pub fn run_session(session: &Session, input: impl Into<String>) -> RunIter {
    RunIter::new(session.run(input))
}

/// The events of one run, as an [`Iterator`].
///
/// * Each [`next`](Iterator::next) blocks the calling thread until the next event exists and
///   returns it at once; after the terminal event (`run_completed`, `run_failed`,
///   `run_cancelled`) it returns `None` (the iterator is fused).
/// * The run advances only while `next` is being called.
/// * **Dropping the iterator cancels the run** at once: the model stream is dropped (which
///   closes its HTTP connection), running async tools are dropped, and a blocking tool's
///   result is discarded when it finishes.
/// * [`cancel_handle`](RunIter::cancel_handle) cancels the run from another thread; the
///   iterator then yields `run_cancelled` and ends.
/// * Safe to use from any thread, including one that belongs to a tokio or smol runtime (it
///   blocks that thread while it waits, as any blocking call would, so prefer a dedicated
///   thread or the runtime's own integration there).
///
/// ```
/// use agent_core::event::EventKind;
/// use agent_core::model::{ScriptedModel, Turn};
///
/// let agent = backend_blocking::agent_builder()
///     .model(ScriptedModel::new([Turn::new().text("one").text("two").text("three")]))
///     .build()
///     .unwrap();
/// let mut events = backend_blocking::run(&agent, "count");
/// let cancel = events.cancel_handle();
/// for event in events.by_ref() {
///     if matches!(event.kind, EventKind::TextDelta { .. }) {
///         cancel.cancel();
///     }
///     if let EventKind::RunCancelled { partial_text } = &event.kind {
///         assert_eq!(partial_text, "one");
///     }
/// }
/// assert!(events.next().is_none());
/// ```
#[must_use = "a run does nothing until its iterator is advanced (dropping it cancels the run)"]
pub struct RunIter {
    stream: RunStream,
}

impl RunIter {
    /// Iterate over `stream` (from [`Agent::run`], [`Agent::run_with_history`] or
    /// [`Session::run`]).
    pub fn new(stream: RunStream) -> Self {
        RunIter { stream }
    }

    /// A handle that cancels this run from another thread: the iterator then yields
    /// `run_cancelled` and ends.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.stream.cancel_handle()
    }

    /// A handle that approves or denies this run's tool calls waiting for approval
    /// (`tool_approval_requested`), from this thread between two calls to `next` or from any
    /// other thread. While calls wait, `next` blocks (parked, not spinning) until a decision,
    /// a cancel or a timeout wakes it, as for any other wait.
    ///
    /// ```
    /// use agent_core::event::EventKind;
    /// use agent_core::model::{ScriptedModel, Turn};
    /// use agent_core::tool::blocking_tool;
    ///
    /// let agent = backend_blocking::agent_builder()
    ///     .model(ScriptedModel::new([
    ///         Turn::new().tool_call("call_1", "deploy", "{}"),
    ///         Turn::new().text("Deployed."),
    ///     ]))
    ///     .tool(blocking_tool("deploy", "Deploy", serde_json::json!({"type": "object"}), |_| {
    ///         Ok(serde_json::json!("ok"))
    ///     }).require_approval())
    ///     .build()
    ///     .unwrap();
    /// let mut events = backend_blocking::run(&agent, "ship it");
    /// let approvals = events.approvals();
    /// for event in events.by_ref() {
    ///     if let EventKind::ToolApprovalRequested { call_id, .. } = &event.kind {
    ///         approvals.approve(call_id).unwrap();
    ///     }
    ///     if let EventKind::RunCompleted { text, .. } = &event.kind {
    ///         assert_eq!(text, "Deployed.");
    ///     }
    /// }
    /// ```
    pub fn approvals(&self) -> ApprovalHandle {
        self.stream.approvals()
    }

    /// The id of this run (also in its `run_started` event).
    pub fn run_id(&self) -> &str {
        self.stream.run_id()
    }

    /// The underlying stream, for code that wants to poll it itself.
    pub fn into_stream(self) -> RunStream {
        self.stream
    }
}

impl From<RunStream> for RunIter {
    fn from(stream: RunStream) -> Self {
        RunIter::new(stream)
    }
}

impl fmt::Debug for RunIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunIter")
            .field("stream", &self.stream)
            .finish()
    }
}

impl Iterator for RunIter {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        block_on(self.stream.next())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

impl FusedIterator for RunIter {}
