//! `POST /v1/ag-ui`: the AG-UI protocol (CopilotKit, `@ag-ui/client`'s `HttpAgent`).
//!
//! The request is a `RunAgentInput`: `{"threadId", "runId", "messages", "tools", "state",
//! "context", "forwardedProps"}`. Messages have the roles `user`, `assistant` (with
//! `toolCalls`: `[{"id","type":"function","function":{"name","arguments"}}]`), `system`,
//! `developer` and `tool` (with `toolCallId`); `reasoning` and `activity` messages are UI
//! state and not given to the model. The last message must be the user's: its text is the
//! run's input, the messages before it the conversation history. `context` entries are
//! given to the model as one system message before the history. Front-end `tools`, `state`
//! and `forwardedProps` are accepted and ignored (the agent runs its own tools).
//!
//! The answer is one SSE `data:` frame per AG-UI event (names and fields as in
//! `@ag-ui/core`'s `EventType` and event schemas), for a run with reasoning, text and a tool
//! round:
//!
//! ```text
//! data: {"type":"RUN_STARTED","threadId":"t1","runId":"r1"}
//! data: {"type":"REASONING_START","messageId":"r1-reasoning-1"}
//! data: {"type":"REASONING_MESSAGE_START","messageId":"r1-reasoning-1","role":"reasoning"}
//! data: {"type":"REASONING_MESSAGE_CONTENT","messageId":"r1-reasoning-1","delta":"Need a tool."}
//! data: {"type":"REASONING_MESSAGE_END","messageId":"r1-reasoning-1"}
//! data: {"type":"REASONING_END","messageId":"r1-reasoning-1"}
//! data: {"type":"TEXT_MESSAGE_START","messageId":"r1-1","role":"assistant"}
//! data: {"type":"TEXT_MESSAGE_CONTENT","messageId":"r1-1","delta":"Let me compute."}
//! data: {"type":"TEXT_MESSAGE_END","messageId":"r1-1"}
//! data: {"type":"TOOL_CALL_START","toolCallId":"call_1","toolCallName":"calculator","parentMessageId":"r1-1"}
//! data: {"type":"TOOL_CALL_ARGS","toolCallId":"call_1","delta":"{\"expression\":"}
//! data: {"type":"TOOL_CALL_ARGS","toolCallId":"call_1","delta":"\"2+2\"}"}
//! data: {"type":"TOOL_CALL_END","toolCallId":"call_1"}
//! data: {"type":"TOOL_CALL_RESULT","messageId":"r1-call_1-result","toolCallId":"call_1","content":"4","role":"tool"}
//! data: {"type":"TEXT_MESSAGE_START","messageId":"r1-2","role":"assistant"}
//! data: {"type":"TEXT_MESSAGE_CONTENT","messageId":"r1-2","delta":"4"}
//! data: {"type":"TEXT_MESSAGE_END","messageId":"r1-2"}
//! data: {"type":"RUN_FINISHED","threadId":"t1","runId":"r1"}
//! ```
//!
//! (`r1` is the request's `runId`; one assistant message id per model round, which the tool
//! calls of that round name as their `parentMessageId`.)
//!
//! A call that needs approval is announced, after its `TOOL_CALL_END`, by
//! `{"type":"CUSTOM","name":"tool_approval_requested","value":{"toolCallId","toolCallName","input"}}`,
//! and its decision by `{"type":"CUSTOM","name":"tool_approval_decided","value":{"toolCallId","approved","reason"?}}`
//! before its `TOOL_CALL_RESULT` (a denied call's content is `error (denied): …`). AG-UI's own
//! interrupts end the run (`RUN_FINISHED` with an interrupt outcome) and resume it in a new
//! run; this run waits in place instead, so the request is a `CUSTOM` event and the decision
//! goes to `POST /v1/runs/{id}/approvals` (the server's run id is the `x-run-id` header).
//!
//! The ordering rules clients verify hold by construction: `RUN_STARTED` first; a text or
//! reasoning message is ended before anything else starts (another message, a tool call, the
//! end of the run); a tool call's `TOOL_CALL_END` comes before its result; everything that
//! started has ended before `RUN_FINISHED`. A failed run closes what is open and ends with
//! `RUN_ERROR` (`message`, `code`: the error kind); a cancelled run (server shutdown) with
//! `RUN_ERROR` code `cancelled`. Nothing follows `RUN_FINISHED` or `RUN_ERROR`.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde_json::{Value, json};

use super::chat::{ChatMessage, ChatToolCall, conversation as conversation_of};
use super::protocol::{FrameEncoder, Start};
use super::response::ApiError;
use crate::agent::Agent;
use crate::event::{Event, EventKind};
use crate::model::Message;

/// The `RunAgentInput` body (fields the agent does not use are ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunAgentInput {
    #[serde(default)]
    thread_id: Option<String>,
    #[serde(default)]
    run_id: Option<String>,
    messages: Vec<AgUiMessage>,
    #[serde(default)]
    context: Vec<ContextEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgUiMessage {
    role: String,
    #[serde(default)]
    content: Value,
    #[serde(default)]
    tool_calls: Vec<ChatToolCall>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ContextEntry {
    description: String,
    value: String,
}

/// Start a run from a `RunAgentInput` body.
pub(crate) fn start(agent: &Agent, body: &[u8]) -> Result<Start, ApiError> {
    let input: RunAgentInput =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid_json(&e))?;
    let (text, mut history) = input_and_history(&input.messages)?;
    if !input.context.is_empty() {
        let mut context = String::from("Context from the application:");
        for entry in &input.context {
            context.push_str(&format!("\n- {}: {}", entry.description, entry.value));
        }
        history.insert(0, Message::system(context));
    }
    let run = agent.run_with_history(text, history);
    let run_id = input.run_id.unwrap_or_else(|| run.run_id().to_string());
    let thread_id = input
        .thread_id
        .unwrap_or_else(|| format!("thread_{}", run.run_id()));
    Ok(Start::Stream {
        run,
        encoder: Box::new(AgUiEvents::new(thread_id, run_id)),
        headers: Vec::new(),
    })
}

fn input_and_history(messages: &[AgUiMessage]) -> Result<(String, Vec<Message>), ApiError> {
    // Reasoning and activity messages are the UI's; the model never sees them. The rest
    // have the chat shape (camelCase on the wire), so the chat endpoint's rules apply.
    let conversation: Vec<ChatMessage> = messages
        .iter()
        .filter(|m| !matches!(m.role.as_str(), "reasoning" | "activity"))
        .map(|m| ChatMessage {
            role: m.role.clone(),
            content: match (&m.error, &m.content) {
                // A failed front-end tool call: its error is what the model gets back.
                (Some(error), Value::Null) => Value::String(format!("error: {error}")),
                (Some(error), Value::String(text)) if text.is_empty() => {
                    Value::String(format!("error: {error}"))
                }
                _ => m.content.clone(),
            },
            tool_calls: m.tool_calls.clone(),
            tool_call_id: m.tool_call_id.clone(),
        })
        .collect();
    conversation_of(&conversation)
}

/// What is open right now: at most one text or reasoning message.
#[derive(Debug)]
enum Open {
    Nothing,
    Text(String),
    Reasoning(String),
}

/// Turns run events into AG-UI events.
#[derive(Debug)]
pub(crate) struct AgUiEvents {
    thread_id: String,
    run_id: String,
    /// The assistant message of the current model round (text and tool calls).
    round_message: String,
    /// Whether a text message with `round_message` as its id was already sent this round.
    round_text_used: bool,
    rounds: u64,
    parts: u64,
    open: Open,
    /// Tool calls started (`TOOL_CALL_START`) and not yet ended.
    calls_open: HashSet<String>,
    /// Argument pieces of calls whose name has not arrived yet.
    pending: HashMap<String, String>,
}

impl AgUiEvents {
    pub(crate) fn new(thread_id: String, run_id: String) -> Self {
        AgUiEvents {
            round_message: format!("{run_id}-0"),
            thread_id,
            run_id,
            round_text_used: false,
            rounds: 0,
            parts: 0,
            open: Open::Nothing,
            calls_open: HashSet::new(),
            pending: HashMap::new(),
        }
    }

    fn frame(out: &mut String, value: &Value) {
        out.push_str("data: ");
        out.push_str(&value.to_string());
        out.push_str("\n\n");
    }

    /// What `frame(json!({"type": kind, "messageId": id, "delta": text}))` writes (keys in
    /// serde_json's order), without a `Value` per delta.
    fn content_frame(out: &mut String, kind: &str, id: &str, text: &str) {
        out.push_str("data: {\"delta\":");
        super::json_text::push_json_str(out, text);
        out.push_str(",\"messageId\":");
        super::json_text::push_json_str(out, id);
        out.push_str(",\"type\":\"");
        out.push_str(kind);
        out.push_str("\"}\n\n");
    }

    fn close_message(&mut self, out: &mut String) {
        match std::mem::replace(&mut self.open, Open::Nothing) {
            Open::Nothing => {}
            Open::Text(id) => {
                Self::frame(out, &json!({"type": "TEXT_MESSAGE_END", "messageId": id}));
            }
            Open::Reasoning(id) => {
                Self::frame(
                    out,
                    &json!({"type": "REASONING_MESSAGE_END", "messageId": id}),
                );
                Self::frame(out, &json!({"type": "REASONING_END", "messageId": id}));
            }
        }
    }

    fn end_call(&mut self, call_id: &str, out: &mut String) {
        if self.calls_open.remove(call_id) {
            Self::frame(
                out,
                &json!({"type": "TOOL_CALL_END", "toolCallId": call_id}),
            );
        }
    }

    /// Close everything still open (before the end of the run).
    fn close_all(&mut self, out: &mut String) {
        self.close_message(out);
        let mut open: Vec<String> = self.calls_open.iter().cloned().collect();
        open.sort();
        for call_id in open {
            self.end_call(&call_id, out);
        }
    }

    fn start_call(&mut self, call_id: &str, name: &str, out: &mut String) {
        self.close_message(out);
        self.calls_open.insert(call_id.to_string());
        Self::frame(
            out,
            &json!({"type": "TOOL_CALL_START", "toolCallId": call_id, "toolCallName": name, "parentMessageId": self.round_message}),
        );
    }

    fn args(call_id: &str, delta: &str, out: &mut String) {
        if !delta.is_empty() {
            Self::frame(
                out,
                &json!({"type": "TOOL_CALL_ARGS", "toolCallId": call_id, "delta": delta}),
            );
        }
    }
}

impl FrameEncoder for AgUiEvents {
    fn encode(&mut self, event: &Event, out: &mut String) {
        match &event.kind {
            EventKind::RunStarted { .. } => Self::frame(
                out,
                &json!({"type": "RUN_STARTED", "threadId": self.thread_id, "runId": self.run_id}),
            ),
            // The answer's text deltas already carry a structured answer.
            EventKind::PartialOutput { .. } => {}
            EventKind::ModelRequestStarted { .. } => {
                self.close_message(out);
                self.rounds += 1;
                self.round_message = format!("{}-{}", self.run_id, self.rounds);
                self.round_text_used = false;
            }
            EventKind::ReasoningDelta { text } => {
                if !matches!(self.open, Open::Reasoning(_)) {
                    self.close_message(out);
                    self.parts += 1;
                    let id = format!("{}-reasoning-{}", self.run_id, self.parts);
                    Self::frame(out, &json!({"type": "REASONING_START", "messageId": id}));
                    Self::frame(
                        out,
                        &json!({"type": "REASONING_MESSAGE_START", "messageId": id, "role": "reasoning"}),
                    );
                    self.open = Open::Reasoning(id);
                }
                if let (Open::Reasoning(id), false) = (&self.open, text.is_empty()) {
                    Self::content_frame(out, "REASONING_MESSAGE_CONTENT", id, text);
                }
            }
            EventKind::TextDelta { text } => {
                if text.is_empty() {
                    // TEXT_MESSAGE_CONTENT may not carry an empty delta.
                    return;
                }
                if !matches!(self.open, Open::Text(_)) {
                    self.close_message(out);
                    let id = if self.round_text_used {
                        self.parts += 1;
                        format!("{}-{}", self.round_message, self.parts)
                    } else {
                        self.round_text_used = true;
                        self.round_message.clone()
                    };
                    Self::frame(
                        out,
                        &json!({"type": "TEXT_MESSAGE_START", "messageId": id, "role": "assistant"}),
                    );
                    self.open = Open::Text(id);
                }
                if let Open::Text(id) = &self.open {
                    Self::content_frame(out, "TEXT_MESSAGE_CONTENT", id, text);
                }
            }
            EventKind::ToolCallDelta {
                call_id,
                name,
                arguments_delta,
            } => {
                self.close_message(out);
                if self.calls_open.contains(call_id) {
                    Self::args(call_id, arguments_delta, out);
                } else if let Some(name) = name {
                    self.start_call(call_id, name, out);
                    let earlier = self.pending.remove(call_id).unwrap_or_default();
                    Self::args(call_id, &(earlier + arguments_delta), out);
                } else {
                    // TOOL_CALL_START needs the name: hold the pieces until it comes.
                    self.pending
                        .entry(call_id.clone())
                        .or_default()
                        .push_str(arguments_delta);
                }
            }
            EventKind::ModelRequestCompleted { .. } => self.close_message(out),
            EventKind::ToolCallStarted {
                call_id,
                name,
                arguments,
            } => {
                self.close_message(out);
                if !self.calls_open.contains(call_id) {
                    // No pieces streamed (or none with a name): the whole call at once.
                    self.pending.remove(call_id);
                    self.start_call(call_id, name, out);
                    let text = match arguments {
                        Value::String(raw) => raw.clone(),
                        other => other.to_string(),
                    };
                    Self::args(call_id, &text, out);
                }
                self.end_call(call_id, out);
            }
            EventKind::ToolApprovalRequested {
                call_id,
                name,
                arguments,
            } => {
                self.close_message(out);
                self.end_call(call_id, out);
                Self::frame(
                    out,
                    &json!({"type": "CUSTOM", "name": "tool_approval_requested", "value": {
                        "toolCallId": call_id, "toolCallName": name, "input": arguments,
                    }}),
                );
            }
            EventKind::ToolApprovalDecided {
                call_id,
                approved,
                reason,
                ..
            } => {
                self.close_message(out);
                let mut value = json!({"toolCallId": call_id, "approved": approved});
                if let Some(reason) = reason {
                    value["reason"] = json!(reason);
                }
                Self::frame(
                    out,
                    &json!({"type": "CUSTOM", "name": "tool_approval_decided", "value": value}),
                );
            }
            EventKind::ToolCallCompleted {
                call_id, result, ..
            } => {
                self.close_message(out);
                self.end_call(call_id, out);
                Self::frame(
                    out,
                    &json!({"type": "TOOL_CALL_RESULT", "messageId": format!("{}-{call_id}-result", self.run_id), "toolCallId": call_id, "content": result.to_model_text(), "role": "tool"}),
                );
            }
            EventKind::RunCompleted { .. } => {
                self.close_all(out);
                Self::frame(
                    out,
                    &json!({"type": "RUN_FINISHED", "threadId": self.thread_id, "runId": self.run_id}),
                );
            }
            EventKind::RunFailed { error, .. } => {
                self.close_all(out);
                Self::frame(
                    out,
                    &json!({"type": "RUN_ERROR", "message": error.message, "code": error.kind.as_str()}),
                );
            }
            EventKind::RunCancelled { .. } => {
                self.close_all(out);
                Self::frame(
                    out,
                    &json!({"type": "RUN_ERROR", "message": "the run was cancelled", "code": "cancelled"}),
                );
            }
        }
    }
}

#[cfg(test)]
mod template_tests {
    use super::*;

    #[test]
    fn text_and_reasoning_content_templates_match_the_value_path() {
        for text in ["Hel", "lo \"w\"\n\t\u{1} é 🎉", "\\"] {
            for (kind, event) in [
                (
                    "TEXT_MESSAGE_CONTENT",
                    EventKind::TextDelta { text: text.into() },
                ),
                (
                    "REASONING_MESSAGE_CONTENT",
                    EventKind::ReasoningDelta { text: text.into() },
                ),
            ] {
                let mut encoder = AgUiEvents::new("thread \"1\"".into(), "run_1".into());
                let mut out = String::new();
                encoder.encode(
                    &Event {
                        seq: 0,
                        kind: event,
                    },
                    &mut out,
                );
                let (Open::Text(id) | Open::Reasoning(id)) = &encoder.open else {
                    panic!("a message is open");
                };
                let mut expected = String::new();
                AgUiEvents::frame(
                    &mut expected,
                    &json!({"type": kind, "messageId": id, "delta": text}),
                );
                assert!(
                    out.ends_with(&expected),
                    "{out:?} does not end with {expected:?}"
                );
            }
        }
    }
}
