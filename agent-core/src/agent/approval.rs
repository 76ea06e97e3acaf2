//! Human approval of tool calls: a call that needs approval waits, without a thread and
//! without spinning, until an [`ApprovalHandle`] approves or denies it.
//!
//! A call needs approval when its tool says so ([`Tool::requires_approval`], e.g.
//! [`FnTool::require_approval`]) or when the agent's
//! [`approval_policy`](super::AgentBuilder::approval_policy) says so. The run then emits
//! `tool_call_started` and `tool_approval_requested` for it and goes on with the other calls of
//! the round; the waiting call holds no concurrency slot. When a decision arrives,
//! `tool_approval_decided` is emitted: an approved call then runs as any other, a denied
//! one completes at once with a [`ToolErrorKind::Denied`] result (the reason included) that is
//! given back to the model, and the run goes on. With an
//! [`approval_timeout`](super::AgentBuilder::approval_timeout), a call nobody decided on in
//! time is denied with the reason `"timed out"`.
//!
//! ```
//! use std::sync::Arc;
//! use futures_util::StreamExt;
//! use agent_core::agent::Agent;
//! use agent_core::event::EventKind;
//! use agent_core::model::{ScriptedModel, Turn};
//! use agent_core::runtime::{block_on, TestRuntime};
//! use agent_core::tool::{blocking_tool, ToolResult};
//!
//! let delete = blocking_tool("delete", "Delete a file", serde_json::json!({"type": "object"}), |_| {
//!     Ok(serde_json::json!("deleted"))
//! })
//! .require_approval();
//! let agent = Agent::builder()
//!     .model(ScriptedModel::new([
//!         Turn::new().tool_call("call_1", "delete", r#"{"path": "/tmp/x"}"#),
//!         Turn::new().text("Done."),
//!     ]))
//!     .tool(delete)
//!     .runtime(TestRuntime::new())
//!     .build()
//!     .unwrap();
//!
//! let mut run = agent.run("Delete /tmp/x");
//! let approvals = run.approvals();
//! block_on(async {
//!     while let Some(event) = run.next().await {
//!         match &event.kind {
//!             EventKind::ToolApprovalRequested { call_id, .. } => {
//!                 approvals.deny(call_id, "not today").unwrap();
//!             }
//!             EventKind::ToolCallCompleted { result, .. } => {
//!                 let ToolResult::Error { message, .. } = result else { panic!() };
//!                 assert!(message.contains("not today"));
//!             }
//!             _ => {}
//!         }
//!     }
//! });
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use serde_json::Value;

#[allow(unused_imports)] // for the docs
use crate::tool::{FnTool, Tool, ToolErrorKind};

/// The reason given to a call whose [`approval_timeout`](super::AgentBuilder::approval_timeout)
/// passed without a decision.
pub const APPROVAL_TIMED_OUT: &str = "timed out";

/// What was decided about a call waiting for approval.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApprovalDecision {
    /// Run the call.
    Approve,
    /// Do not run it; the model is told so (with the reason, if any).
    Deny {
        /// Why, for the model and the user.
        reason: Option<String>,
    },
}

impl ApprovalDecision {
    /// `true` for [`ApprovalDecision::Approve`].
    pub fn is_approved(&self) -> bool {
        matches!(self, ApprovalDecision::Approve)
    }
}

/// Why an [`ApprovalHandle`] could not record a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApprovalError {
    /// No call with this id asked for approval in this run (yet).
    NotRequested {
        /// The call id given.
        call_id: String,
    },
    /// The call was already decided on (by a handle, or by its approval timeout).
    AlreadyDecided {
        /// The call id given.
        call_id: String,
    },
    /// The run has ended; nothing waits for a decision any more.
    RunEnded,
}

impl fmt::Display for ApprovalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApprovalError::NotRequested { call_id } => write!(
                f,
                "tool call {call_id:?} is not awaiting approval: no call with this id asked for approval in this run"
            ),
            ApprovalError::AlreadyDecided { call_id } => write!(
                f,
                "tool call {call_id:?} is not awaiting approval: it was already approved, denied or timed out"
            ),
            ApprovalError::RunEnded => {
                f.write_str("the run has ended: no tool call is awaiting approval")
            }
        }
    }
}

impl std::error::Error for ApprovalError {}

/// A tool call the [`approval_policy`](super::AgentBuilder::approval_policy) decides on.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ApprovalCall<'a> {
    /// The call id.
    pub call_id: &'a str,
    /// The tool name.
    pub name: &'a str,
    /// The parsed arguments.
    pub arguments: &'a Value,
    /// What the tool itself asks for ([`Tool::requires_approval`]).
    pub tool_requires_approval: bool,
}

/// The agent's approval policy: whether a call needs approval.
pub(crate) type ApprovalPolicy = Arc<dyn Fn(&ApprovalCall<'_>) -> bool + Send + Sync>;

/// Approves or denies the tool calls of one run that wait for approval.
///
/// Obtained from [`RunStream::approvals`](super::RunStream::approvals) (or the blocking
/// backend's iterator); cheap to clone, usable from any thread. A decision wakes the run;
/// it takes effect the next time the run is polled.
///
/// ```
/// # use std::sync::Arc;
/// # use agent_core::agent::{Agent, ApprovalError};
/// # use agent_core::model::{ScriptedModel, Turn};
/// # use agent_core::runtime::TestRuntime;
/// # let agent = Agent::builder().model(ScriptedModel::new([Turn::new().text("hi")]))
/// #     .runtime(TestRuntime::new()).build().unwrap();
/// let run = agent.run("hi");
/// let approvals = run.approvals();
/// assert_eq!(
///     approvals.approve("call_9"),
///     Err(ApprovalError::NotRequested { call_id: "call_9".into() })
/// );
/// drop(run);
/// assert_eq!(approvals.approve("call_9"), Err(ApprovalError::RunEnded));
/// ```
#[derive(Clone)]
pub struct ApprovalHandle {
    state: Arc<ApprovalState>,
}

impl fmt::Debug for ApprovalHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApprovalHandle")
            .field("pending", &self.pending())
            .finish()
    }
}

impl ApprovalHandle {
    pub(crate) fn new(state: Arc<ApprovalState>) -> Self {
        ApprovalHandle { state }
    }

    /// Approve call `call_id`: it runs.
    pub fn approve(&self, call_id: &str) -> Result<(), ApprovalError> {
        self.decide(call_id, ApprovalDecision::Approve)
    }

    /// Deny call `call_id` for `reason` (given to the model; may be empty).
    pub fn deny(&self, call_id: &str, reason: impl Into<String>) -> Result<(), ApprovalError> {
        let reason = reason.into();
        let reason = (!reason.is_empty()).then_some(reason);
        self.decide(call_id, ApprovalDecision::Deny { reason })
    }

    /// Record `decision` for call `call_id`, which must be waiting for approval.
    pub fn decide(&self, call_id: &str, decision: ApprovalDecision) -> Result<(), ApprovalError> {
        self.state.decide(call_id, decision)
    }

    /// The ids of the calls waiting for a decision right now, in the order they asked.
    pub fn pending(&self) -> Vec<String> {
        self.state.pending()
    }
}

/// The shared state of one run's approvals: the run's loop waits on it, handles decide.
#[derive(Debug, Default)]
pub(crate) struct ApprovalState {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    ended: bool,
    /// Every call that asked, by id, with the order it asked in.
    calls: HashMap<String, (u64, Slot)>,
    next: u64,
}

#[derive(Debug)]
enum Slot {
    /// Waiting; the loop's waker once it polled.
    Waiting(Option<Waker>),
    /// Decided; the decision until the loop took it.
    Decided(Option<ApprovalDecision>),
}

impl ApprovalState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call starts waiting (before its `tool_approval_requested` is emitted, so that a
    /// consumer deciding at once finds it).
    pub(crate) fn request(&self, call_id: &str) {
        let mut inner = self.lock();
        let order = inner.next;
        inner.next += 1;
        inner
            .calls
            .insert(call_id.to_string(), (order, Slot::Waiting(None)));
    }

    fn decide(&self, call_id: &str, decision: ApprovalDecision) -> Result<(), ApprovalError> {
        let waker = {
            let mut inner = self.lock();
            if inner.ended {
                return Err(ApprovalError::RunEnded);
            }
            let Some((_, slot)) = inner.calls.get_mut(call_id) else {
                return Err(ApprovalError::NotRequested {
                    call_id: call_id.to_string(),
                });
            };
            match std::mem::replace(slot, Slot::Decided(Some(decision))) {
                Slot::Waiting(waker) => waker,
                decided @ Slot::Decided(_) => {
                    *slot = decided;
                    return Err(ApprovalError::AlreadyDecided {
                        call_id: call_id.to_string(),
                    });
                }
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// The loop's side: the decision on `call_id`, or `Pending` with `cx`'s waker kept.
    pub(crate) fn poll_decision(
        &self,
        call_id: &str,
        cx: &mut Context<'_>,
    ) -> Poll<ApprovalDecision> {
        let mut inner = self.lock();
        match inner.calls.get_mut(call_id) {
            Some((_, Slot::Decided(decision))) => match decision.take() {
                Some(decision) => Poll::Ready(decision),
                // Taken already: the loop polls a call once more only by mistake.
                None => Poll::Pending,
            },
            Some((_, Slot::Waiting(waker))) => {
                match waker {
                    Some(known) if known.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            None => Poll::Ready(ApprovalDecision::Deny {
                reason: Some("the approval request was lost".into()),
            }),
        }
    }

    /// The approval timeout of `call_id` passed: deny it, unless a decision came first
    /// (which then wins).
    pub(crate) fn expire(&self, call_id: &str) -> ApprovalDecision {
        let mut inner = self.lock();
        let timed_out = ApprovalDecision::Deny {
            reason: Some(APPROVAL_TIMED_OUT.into()),
        };
        match inner.calls.get_mut(call_id) {
            Some((_, Slot::Decided(decision))) => decision.take().unwrap_or(timed_out),
            Some((_, slot)) => {
                *slot = Slot::Decided(None);
                timed_out
            }
            None => timed_out,
        }
    }

    fn pending(&self) -> Vec<String> {
        let inner = self.lock();
        let mut waiting: Vec<(u64, &String)> = inner
            .calls
            .iter()
            .filter(|(_, (_, slot))| matches!(slot, Slot::Waiting(_)))
            .map(|(id, (order, _))| (*order, id))
            .collect();
        waiting.sort();
        waiting.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// The run ended (or its stream was dropped): later decisions are refused.
    pub(crate) fn end(&self) {
        let mut inner = self.lock();
        inner.ended = true;
        inner.calls.clear();
    }
}
