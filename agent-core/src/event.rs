//! The events a run emits: the wire format of the HTTP API and the content of the snapshots.
//!
//! Every [`Event`] carries a `seq` (0, 1, 2, … per run) and one [`EventKind`]. The JSON form
//! flattens the kind next to `seq` and tags it with `type`:
//!
//! ```
//! use agent_core::event::{Event, EventKind};
//!
//! let event = Event { seq: 3, kind: EventKind::TextDelta { text: "Hel".into() } };
//! let json = serde_json::to_string(&event).unwrap();
//! assert_eq!(json, r#"{"seq":3,"type":"text_delta","text":"Hel"}"#);
//! let back: Event = serde_json::from_str(&json).unwrap();
//! assert_eq!(back, event);
//! ```
//!
//! A run emits exactly one terminal event ([`EventKind::RunCompleted`],
//! [`EventKind::RunFailed`] or [`EventKind::RunCancelled`]) and nothing after it.
//!
//! # The JSON of every event
//!
//! Durations are milliseconds as floating-point numbers.
//!
//! ```json
//! {"seq":0,"type":"run_started","run_id":"run_1","input":"What is 2+2?"}
//! {"seq":1,"type":"model_request_started","round":1}
//! {"seq":2,"type":"reasoning_delta","text":"Simple sum."}
//! {"seq":3,"type":"text_delta","text":"Let me compute."}
//! {"seq":4,"type":"model_request_completed","round":1,"finish_reason":"tool_calls",
//!  "usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17},
//!  "time_to_first_token_ms":1.2,"duration_ms":3.4}
//! {"seq":5,"type":"tool_call_started","call_id":"call_1","name":"calculator",
//!  "arguments":{"expression":"2+2"}}
//! {"seq":6,"type":"tool_call_completed","call_id":"call_1","name":"calculator",
//!  "result":{"status":"ok","output":4},"duration_ms":0.1}
//! {"seq":7,"type":"run_completed","text":"Let me compute. 4",
//!  "usage":{"prompt_tokens":30,"completion_tokens":9,"total_tokens":39},
//!  "metrics":{"time_to_first_token_ms":1.2,"duration_ms":9.9,"rounds":[...]}}
//! {"seq":7,"type":"run_completed","text":"{\"city\":\"Paris\"}","usage":{…},"metrics":{…},
//!  "output":{"city":"Paris"}}
//! {"seq":7,"type":"run_failed","error":{"kind":"upstream_status","message":"…","status":500},
//!  "partial_text":"Let me"}
//! {"seq":7,"type":"run_cancelled","partial_text":"Let me"}
//! ```
//!
//! With structured output ([`OutputType`](crate::agent::OutputType)), `run_completed` carries
//! the parsed answer as `output` (the second `run_completed` above), and, when partial output
//! is asked for, `{"seq":4,"type":"partial_output","output":{"city":"Par"}}` follows text
//! deltas that change the best-effort parse of the answer so far.
//!
//! A call that needs approval waits between its `tool_call_started` and its
//! `tool_call_completed` (see [`approval`](crate::agent::ApprovalHandle)):
//!
//! ```json
//! {"seq":5,"type":"tool_call_started","call_id":"call_1","name":"delete","arguments":{"path":"/tmp/x"}}
//! {"seq":6,"type":"tool_approval_requested","call_id":"call_1","name":"delete","arguments":{"path":"/tmp/x"}}
//! {"seq":7,"type":"tool_approval_decided","call_id":"call_1","name":"delete","approved":false,"reason":"not today"}
//! {"seq":8,"type":"tool_call_completed","call_id":"call_1","name":"delete",
//!  "result":{"status":"error","kind":"denied","message":"…not today"},"duration_ms":0.0}
//! ```
//!
//! A tool call that failed completes with
//! `"result":{"status":"error","kind":"unknown_tool","message":"…"}`; the kinds are listed on
//! [`ToolErrorKind`](crate::tool::ToolErrorKind). Run failure kinds are listed on
//! [`ErrorKind`](crate::error::ErrorKind).

use serde::{Deserialize, Serialize};

pub use crate::error::RunError;
use crate::model::{FinishReason, Usage};
use crate::tool::ToolResult;

/// One thing that happened during a run, numbered by `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position of this event in its run: 0 for [`EventKind::RunStarted`], then 1, 2, …
    pub seq: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// `true` for the event that ends a run: completed, failed or cancelled.
    ///
    /// ```
    /// # use agent_core::event::{Event, EventKind};
    /// let done = Event { seq: 9, kind: EventKind::RunCancelled { partial_text: String::new() } };
    /// assert!(done.is_terminal());
    /// ```
    pub fn is_terminal(&self) -> bool {
        self.kind.is_terminal()
    }

    /// The SSE `event:` name of this event, e.g. `text_delta` (same as the JSON `type`).
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }
}

/// The payload of an [`Event`], tagged by `type` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The run began. Always `seq` 0.
    RunStarted {
        /// Identifier of the run, unique within the process.
        run_id: String,
        /// The user input that started the run.
        input: String,
    },
    /// A request to the model was started (round 1 is the first request of the run).
    ModelRequestStarted {
        /// Model round, starting at 1.
        round: u32,
    },
    /// A request to the model finished streaming.
    ModelRequestCompleted {
        /// Model round, starting at 1.
        round: u32,
        /// Why the model stopped, when it said so.
        finish_reason: Option<FinishReason>,
        /// Token usage reported by the model for this request, if any.
        usage: Option<Usage>,
        /// Milliseconds from the request start to its first delta, if one arrived.
        time_to_first_token_ms: Option<f64>,
        /// Milliseconds from the request start to its end.
        duration_ms: f64,
    },
    /// A piece of the answer text.
    TextDelta {
        /// The new text; append it to what came before.
        text: String,
    },
    /// A piece of the model's reasoning (for models that expose it).
    ReasoningDelta {
        /// The new reasoning text.
        text: String,
    },
    /// A piece of a tool call the model is still writing: emitted as its arguments stream,
    /// before [`EventKind::ToolCallStarted`]. Concatenating the `arguments_delta` of a call's
    /// pieces gives its arguments; `name` is set on the piece that carried the tool name
    /// (usually the first).
    ToolCallDelta {
        /// The call id: the one the model gave with the call's first piece (or the one
        /// generated when it gave none), as in the later `tool_call_started`.
        call_id: String,
        /// The tool name, on the piece that carried it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// A fragment of the JSON arguments, as the model wrote it.
        arguments_delta: String,
    },
    /// The model asked for a tool call, which starts now (a call that needs approval waits
    /// for it first: [`EventKind::ToolApprovalRequested`] follows at once).
    ToolCallStarted {
        /// The call id the model gave (or one generated when it gave none).
        call_id: String,
        /// The tool name as the model wrote it.
        name: String,
        /// The arguments, parsed as JSON; a string when they were not valid JSON.
        arguments: serde_json::Value,
    },
    /// A tool call needs a human's approval before it runs, and waits for it (right after its
    /// [`EventKind::ToolCallStarted`]). Decide with an
    /// [`ApprovalHandle`](crate::agent::ApprovalHandle) or `POST /v1/runs/{id}/approvals`;
    /// [`EventKind::ToolApprovalDecided`] follows. The run's other calls go on meanwhile.
    ToolApprovalRequested {
        /// The call id, as in `tool_call_started`: the id to approve or deny.
        call_id: String,
        /// The tool name.
        name: String,
        /// The arguments the tool would run with, parsed as JSON.
        arguments: serde_json::Value,
    },
    /// A call waiting for approval was approved (it runs now) or denied (it completes at once
    /// with a `denied` error result, given back to the model). A call whose approval timeout
    /// passed is denied with the reason `"timed out"`.
    ToolApprovalDecided {
        /// The call id of the matching [`EventKind::ToolApprovalRequested`].
        call_id: String,
        /// The tool name.
        name: String,
        /// `true` when the call was approved.
        approved: bool,
        /// Why it was denied, when a reason was given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A tool call finished, successfully or not. Emitted the moment it finishes.
    ToolCallCompleted {
        /// The call id of the matching [`EventKind::ToolCallStarted`].
        call_id: String,
        /// The tool name.
        name: String,
        /// The output, or the error given back to the model.
        result: ToolResult,
        /// Milliseconds the call took (for a call that waited for approval, from its
        /// approval; 0 for a denied call).
        duration_ms: f64,
    },
    /// The best-effort parse of a structured answer so far (runs with an
    /// [`OutputType`](crate::agent::OutputType) that asks for partial output): emitted after
    /// a text delta whenever it changes the value. Open strings, arrays and objects are
    /// closed; it need not match the output type yet.
    PartialOutput {
        /// The value so far.
        output: serde_json::Value,
    },
    /// Terminal: the run produced its answer.
    RunCompleted {
        /// The answer as it was streamed: all text deltas of the run, concatenated.
        text: String,
        /// Token usage summed over all model requests.
        usage: Usage,
        /// Timings of the run.
        metrics: RunMetrics,
        /// The answer parsed as the run's output type, as JSON (runs with an
        /// [`OutputType`](crate::agent::OutputType) only; absent from the JSON otherwise).
        /// [`EventKind::parsed_output`] gives it typed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<serde_json::Value>,
    },
    /// Terminal: the run failed. Text produced before the failure is kept.
    RunFailed {
        /// What went wrong.
        error: RunError,
        /// All text deltas of the run so far, concatenated.
        partial_text: String,
    },
    /// Terminal: the run was cancelled through its [`CancelHandle`](crate::agent::CancelHandle).
    RunCancelled {
        /// All text deltas of the run so far, concatenated.
        partial_text: String,
    },
}

impl EventKind {
    /// `true` for completed, failed and cancelled.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventKind::RunCompleted { .. }
                | EventKind::RunFailed { .. }
                | EventKind::RunCancelled { .. }
        )
    }

    /// The structured output of a completed run, as `T`: `None` for any other event or a
    /// run without an output type; `Some(Err)` if `T` is not the type the run validated.
    ///
    /// ```
    /// use agent_core::event::{EventKind, RunMetrics};
    /// use agent_core::model::Usage;
    ///
    /// let done = EventKind::RunCompleted {
    ///     text: "[1, 2]".into(),
    ///     usage: Usage::default(),
    ///     metrics: RunMetrics { time_to_first_token_ms: None, duration_ms: 1.0, rounds: vec![] },
    ///     output: Some(serde_json::json!([1, 2])),
    /// };
    /// assert_eq!(done.parsed_output::<Vec<u8>>().unwrap().unwrap(), vec![1, 2]);
    /// ```
    pub fn parsed_output<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Option<Result<T, serde_json::Error>> {
        match self {
            EventKind::RunCompleted {
                output: Some(output),
                ..
            } => Some(T::deserialize(output)),
            _ => None,
        }
    }

    /// The JSON `type` tag of this kind, e.g. `tool_call_started`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RunStarted { .. } => "run_started",
            EventKind::ModelRequestStarted { .. } => "model_request_started",
            EventKind::ModelRequestCompleted { .. } => "model_request_completed",
            EventKind::TextDelta { .. } => "text_delta",
            EventKind::ReasoningDelta { .. } => "reasoning_delta",
            EventKind::ToolCallDelta { .. } => "tool_call_delta",
            EventKind::ToolCallStarted { .. } => "tool_call_started",
            EventKind::ToolApprovalRequested { .. } => "tool_approval_requested",
            EventKind::ToolApprovalDecided { .. } => "tool_approval_decided",
            EventKind::ToolCallCompleted { .. } => "tool_call_completed",
            EventKind::PartialOutput { .. } => "partial_output",
            EventKind::RunCompleted { .. } => "run_completed",
            EventKind::RunFailed { .. } => "run_failed",
            EventKind::RunCancelled { .. } => "run_cancelled",
        }
    }
}

/// Timings of one model request within a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundMetrics {
    /// Model round, starting at 1.
    pub round: u32,
    /// Milliseconds from the request start to its first delta.
    pub time_to_first_token_ms: Option<f64>,
    /// Milliseconds the model request took.
    pub model_duration_ms: f64,
    /// Milliseconds spent running this round's tool calls (0 when there were none).
    pub tools_duration_ms: f64,
    /// How many tool calls the round made.
    pub tool_calls: u32,
}

/// Timings of a whole run, reported in [`EventKind::RunCompleted`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// Milliseconds from the run start to the first model delta of the run.
    pub time_to_first_token_ms: Option<f64>,
    /// Milliseconds from the run start to its end.
    pub duration_ms: f64,
    /// One entry per model request.
    pub rounds: Vec<RoundMetrics>,
}
