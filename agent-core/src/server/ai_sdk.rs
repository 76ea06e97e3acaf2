//! `POST /v1/ai-sdk/chat`: the Vercel AI SDK's UI message stream (protocol `v1`, the one
//! `useChat` and `DefaultChatTransport` read, header `x-vercel-ai-ui-message-stream: v1`).
//!
//! The request is the body `useChat` posts: `{"id": <chat id>, "messages": [UIMessage…],
//! "trigger": "submit-message" | "regenerate-message", …}`. A UIMessage is
//! `{"id", "role": "system" | "user" | "assistant", "parts": [...]}`; the last message must be
//! the user's (its text parts are the run's input), the ones before it become the agent's
//! conversation history: text parts become message text, tool parts (`tool-<name>` or
//! `dynamic-tool`) with an output or an error become an assistant tool call followed by its
//! tool result, and `step-start` parts separate the model turns of one assistant message.
//! Reasoning, file, source and `data-*` parts are not given back to the model.
//!
//! The answer is one SSE `data:` frame per UI message chunk (field names as in the `ai`
//! package's `UIMessageChunk`), for a run with reasoning, text and a tool round:
//!
//! ```text
//! data: {"type":"start","messageId":"msg_run_1"}
//! data: {"type":"start-step"}
//! data: {"type":"reasoning-start","id":"reasoning-1"}
//! data: {"type":"reasoning-delta","id":"reasoning-1","delta":"Need a tool."}
//! data: {"type":"reasoning-end","id":"reasoning-1"}
//! data: {"type":"text-start","id":"text-2"}
//! data: {"type":"text-delta","id":"text-2","delta":"Let me compute."}
//! data: {"type":"text-end","id":"text-2"}
//! data: {"type":"tool-input-start","toolCallId":"call_1","toolName":"calculator"}
//! data: {"type":"tool-input-delta","toolCallId":"call_1","inputTextDelta":"{\"expression\":"}
//! data: {"type":"tool-input-delta","toolCallId":"call_1","inputTextDelta":"\"2+2\"}"}
//! data: {"type":"tool-input-available","toolCallId":"call_1","toolName":"calculator","input":{"expression":"2+2"}}
//! data: {"type":"tool-output-available","toolCallId":"call_1","output":4}
//! data: {"type":"finish-step"}
//! data: {"type":"start-step"}
//! data: {"type":"text-start","id":"text-3"}
//! data: {"type":"text-delta","id":"text-3","delta":"4"}
//! data: {"type":"text-end","id":"text-3"}
//! data: {"type":"finish-step"}
//! data: {"type":"finish"}
//! data: [DONE]
//! ```
//!
//! A failed tool call answers `tool-output-error` (`errorText`) instead of
//! `tool-output-available`. A call that needs approval gets
//! `{"type":"tool-approval-request","approvalId":"call_1","toolCallId":"call_1"}` after its
//! `tool-input-available` (the approval id is the call id; the decision goes to
//! `POST /v1/runs/{id}/approvals`, the run id being the `x-run-id` header and the
//! `messageId` after `msg_`), then `tool-output-available` once approved and run, or
//! `{"type":"tool-output-denied","toolCallId":"call_1"}` when denied. In the request's
//! history, a tool part in state `output-denied` becomes a denied tool result (with its
//! `approval.reason`); a failed run ends with the open parts closed, then
//! `{"type":"error","errorText":…}` and `[DONE]`; a cancelled run (server shutdown) with
//! `{"type":"abort"}` and `[DONE]`. Every frame is a strict `UIMessageChunk`: no field
//! beyond the ones the `ai` package's schema allows.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde_json::{Value, json};

use super::protocol::{FrameEncoder, Start};
use super::response::ApiError;
use crate::agent::Agent;
use crate::event::{Event, EventKind};
use crate::model::{Message, ToolCall};
use crate::tool::{ToolErrorKind, ToolResult};

/// The header that names the protocol version of the response.
pub(crate) const STREAM_HEADER: &str = "x-vercel-ai-ui-message-stream";

/// The body `useChat` posts (fields the agent does not use are ignored).
#[derive(Debug, Deserialize)]
struct ChatRequest {
    messages: Vec<UiMessage>,
}

#[derive(Debug, Deserialize)]
struct UiMessage {
    role: String,
    #[serde(default)]
    parts: Vec<Value>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_messages", message)
}

/// Start a run from a `useChat` request body.
pub(crate) fn start(agent: &Agent, body: &[u8]) -> Result<Start, ApiError> {
    let request: ChatRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid_json(&e))?;
    let (input, history) = input_and_history(&request.messages)?;
    let run = agent.run_with_history(input, history);
    let encoder = UiMessageStream::new(run.run_id());
    Ok(Start::Stream {
        run,
        encoder: Box::new(encoder),
        headers: vec![(STREAM_HEADER, "v1".to_string())],
    })
}

fn input_and_history(messages: &[UiMessage]) -> Result<(String, Vec<Message>), ApiError> {
    let Some((last, earlier)) = messages.split_last() else {
        return Err(invalid("`messages` must not be empty"));
    };
    if last.role != "user" {
        return Err(invalid("the last message must have role \"user\""));
    }
    let input = text_of(&last.parts)?;
    let mut history = Vec::new();
    for message in earlier {
        match message.role.as_str() {
            "system" => history.push(Message::system(text_of(&message.parts)?)),
            "user" => history.push(Message::user(text_of(&message.parts)?)),
            "assistant" => assistant_turns(&message.parts, &mut history)?,
            other => return Err(invalid(format!("unsupported message role {other:?}"))),
        }
    }
    Ok((input, history))
}

fn part_type(part: &Value) -> Result<&str, ApiError> {
    part.get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("every message part needs a string `type`"))
}

/// The concatenated text parts.
fn text_of(parts: &[Value]) -> Result<String, ApiError> {
    let mut text = String::new();
    for part in parts {
        if part_type(part)? == "text" {
            text.push_str(part_text(part)?);
        }
    }
    Ok(text)
}

fn part_text(part: &Value) -> Result<&str, ApiError> {
    part.get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("a text part needs a string `text`"))
}

/// One model turn of an assistant message: its text and its finished tool calls.
#[derive(Default)]
struct Turn {
    text: String,
    calls: Vec<ToolCall>,
    results: Vec<Message>,
}

impl Turn {
    fn flush(&mut self, history: &mut Vec<Message>) {
        let turn = std::mem::take(self);
        if turn.text.is_empty() && turn.calls.is_empty() {
            return;
        }
        history.push(Message::Assistant {
            content: turn.text,
            tool_calls: turn.calls,
        });
        history.extend(turn.results);
    }
}

/// Split an assistant UIMessage into model turns: a `step-start` part, or text after a tool
/// call, begins a new one. Tool parts without an output (still streaming, awaiting approval)
/// are left out: the model must not see a call without its result.
fn assistant_turns(parts: &[Value], history: &mut Vec<Message>) -> Result<(), ApiError> {
    let mut turn = Turn::default();
    for part in parts {
        let kind = part_type(part)?;
        if kind == "step-start" {
            turn.flush(history);
        } else if kind == "text" {
            if !turn.calls.is_empty() {
                turn.flush(history);
            }
            turn.text.push_str(part_text(part)?);
        } else if kind == "dynamic-tool" || kind.starts_with("tool-") {
            let name = match kind.strip_prefix("tool-") {
                Some(name) => name.to_string(),
                None => part
                    .get("toolName")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("a dynamic-tool part needs its `toolName`"))?
                    .to_string(),
            };
            let id = part
                .get("toolCallId")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("a tool part needs its `toolCallId`"))?
                .to_string();
            let content = match part.get("state").and_then(Value::as_str) {
                Some("output-available") => match part.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => "null".to_string(),
                },
                Some("output-error") => format!(
                    "error: {}",
                    part.get("errorText").and_then(Value::as_str).unwrap_or("")
                ),
                Some("output-denied") => {
                    match part.pointer("/approval/reason").and_then(Value::as_str) {
                        Some(reason) => format!(
                            "error (denied): the call was not approved, so the tool did not run (reason: {reason})"
                        ),
                        None => {
                            "error (denied): the call was not approved, so the tool did not run"
                                .to_string()
                        }
                    }
                }
                _ => continue,
            };
            let arguments = match part.get("input") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => "{}".to_string(),
                Some(other) => other.to_string(),
            };
            turn.calls.push(ToolCall {
                id: id.clone(),
                name,
                arguments,
            });
            turn.results.push(Message::Tool {
                call_id: id,
                content,
            });
        }
    }
    turn.flush(history);
    Ok(())
}

/// What is open in the message being streamed.
#[derive(Debug, PartialEq)]
enum Open {
    Nothing,
    Text(String),
    Reasoning(String),
}

/// Turns run events into UI message chunks.
#[derive(Debug)]
pub(crate) struct UiMessageStream {
    message_id: String,
    open: Open,
    in_step: bool,
    next_part: u64,
    /// Tool calls whose `tool-input-start` was sent.
    started: HashSet<String>,
    /// Argument pieces of calls whose name has not arrived yet.
    pending: HashMap<String, String>,
}

impl UiMessageStream {
    pub(crate) fn new(run_id: &str) -> Self {
        UiMessageStream {
            message_id: format!("msg_{run_id}"),
            open: Open::Nothing,
            in_step: false,
            next_part: 0,
            started: HashSet::new(),
            pending: HashMap::new(),
        }
    }

    fn frame(out: &mut String, value: &Value) {
        out.push_str("data: ");
        out.push_str(&value.to_string());
        out.push_str("\n\n");
    }

    fn part_id(&mut self, kind: &str) -> String {
        self.next_part += 1;
        format!("{kind}-{}", self.next_part)
    }

    fn close_part(&mut self, out: &mut String) {
        match std::mem::replace(&mut self.open, Open::Nothing) {
            Open::Nothing => {}
            Open::Text(id) => Self::frame(out, &json!({"type": "text-end", "id": id})),
            Open::Reasoning(id) => Self::frame(out, &json!({"type": "reasoning-end", "id": id})),
        }
    }

    fn close_step(&mut self, out: &mut String) {
        self.close_part(out);
        if self.in_step {
            self.in_step = false;
            Self::frame(out, &json!({"type": "finish-step"}));
        }
    }

    fn open_step(&mut self, out: &mut String) {
        if !self.in_step {
            self.in_step = true;
            Self::frame(out, &json!({"type": "start-step"}));
        }
    }

    fn input_start(&mut self, call_id: &str, name: &str, out: &mut String) {
        if self.started.insert(call_id.to_string()) {
            Self::frame(
                out,
                &json!({"type": "tool-input-start", "toolCallId": call_id, "toolName": name}),
            );
        }
    }

    fn input_delta(call_id: &str, delta: &str, out: &mut String) {
        if !delta.is_empty() {
            Self::frame(
                out,
                &json!({"type": "tool-input-delta", "toolCallId": call_id, "inputTextDelta": delta}),
            );
        }
    }
}

impl FrameEncoder for UiMessageStream {
    fn encode(&mut self, event: &Event, out: &mut String) {
        match &event.kind {
            EventKind::RunStarted { .. } => {
                Self::frame(out, &json!({"type": "start", "messageId": self.message_id}));
            }
            // The answer's text deltas already carry a structured answer.
            EventKind::PartialOutput { .. } => {}
            EventKind::ModelRequestStarted { .. } => {
                self.close_step(out);
                self.open_step(out);
            }
            EventKind::ReasoningDelta { text } => {
                self.open_step(out);
                if !matches!(self.open, Open::Reasoning(_)) {
                    self.close_part(out);
                    let id = self.part_id("reasoning");
                    Self::frame(out, &json!({"type": "reasoning-start", "id": id}));
                    self.open = Open::Reasoning(id);
                }
                if let Open::Reasoning(id) = &self.open {
                    Self::frame(
                        out,
                        &json!({"type": "reasoning-delta", "id": id, "delta": text}),
                    );
                }
            }
            EventKind::TextDelta { text } => {
                self.open_step(out);
                if !matches!(self.open, Open::Text(_)) {
                    self.close_part(out);
                    let id = self.part_id("text");
                    Self::frame(out, &json!({"type": "text-start", "id": id}));
                    self.open = Open::Text(id);
                }
                if let Open::Text(id) = &self.open {
                    // What `frame(json!({"type", "id", "delta"}))` writes, without a `Value`.
                    out.push_str("data: {\"delta\":");
                    super::json_text::push_json_str(out, text);
                    out.push_str(",\"id\":");
                    super::json_text::push_json_str(out, id);
                    out.push_str(",\"type\":\"text-delta\"}\n\n");
                }
            }
            EventKind::ToolCallDelta {
                call_id,
                name,
                arguments_delta,
            } => {
                self.open_step(out);
                self.close_part(out);
                if self.started.contains(call_id) {
                    Self::input_delta(call_id, arguments_delta, out);
                } else if let Some(name) = name {
                    self.input_start(call_id, name, out);
                    let earlier = self.pending.remove(call_id).unwrap_or_default();
                    Self::input_delta(call_id, &(earlier + arguments_delta), out);
                } else {
                    // `tool-input-start` needs the name: hold the pieces until it comes.
                    self.pending
                        .entry(call_id.clone())
                        .or_default()
                        .push_str(arguments_delta);
                }
            }
            EventKind::ModelRequestCompleted { .. } => self.close_part(out),
            EventKind::ToolCallStarted {
                call_id,
                name,
                arguments,
            } => {
                self.open_step(out);
                self.close_part(out);
                self.pending.remove(call_id);
                self.input_start(call_id, name, out);
                Self::frame(
                    out,
                    &json!({"type": "tool-input-available", "toolCallId": call_id, "toolName": name, "input": arguments}),
                );
            }
            EventKind::ToolApprovalRequested { call_id, .. } => {
                // The part is in `approval-requested` state until the call completes; the
                // approval id is the call id (decide with POST /v1/runs/{id}/approvals).
                Self::frame(
                    out,
                    &json!({"type": "tool-approval-request", "approvalId": call_id, "toolCallId": call_id}),
                );
            }
            // The protocol has no chunk for a decision: the client that decided knows it,
            // and the call's outcome follows (`tool-output-denied` for a denial).
            EventKind::ToolApprovalDecided { .. } => {}
            EventKind::ToolCallCompleted {
                call_id, result, ..
            } => {
                let frame = match result {
                    ToolResult::Error {
                        kind: ToolErrorKind::Denied,
                        ..
                    } => json!({"type": "tool-output-denied", "toolCallId": call_id}),
                    ToolResult::Ok { output } => {
                        json!({"type": "tool-output-available", "toolCallId": call_id, "output": output})
                    }
                    ToolResult::Error { message, .. } => {
                        json!({"type": "tool-output-error", "toolCallId": call_id, "errorText": message})
                    }
                };
                Self::frame(out, &frame);
            }
            EventKind::RunCompleted { .. } => {
                self.close_step(out);
                Self::frame(out, &json!({"type": "finish"}));
                out.push_str("data: [DONE]\n\n");
            }
            EventKind::RunFailed { error, .. } => {
                self.close_part(out);
                Self::frame(out, &json!({"type": "error", "errorText": error.message}));
                out.push_str("data: [DONE]\n\n");
            }
            EventKind::RunCancelled { .. } => {
                self.close_part(out);
                Self::frame(out, &json!({"type": "abort"}));
                out.push_str("data: [DONE]\n\n");
            }
        }
    }
}

#[cfg(test)]
mod template_tests {
    use super::*;

    #[test]
    fn text_delta_template_matches_the_value_path() {
        for text in ["Hel", "lo \"w\"\n\t\u{1} é 🎉", ""] {
            let mut encoder = UiMessageStream::new("run_1");
            let mut out = String::new();
            encoder.encode(
                &Event {
                    seq: 0,
                    kind: EventKind::TextDelta { text: text.into() },
                },
                &mut out,
            );
            let Open::Text(id) = &encoder.open else {
                panic!("a text part is open");
            };
            let mut expected = String::new();
            UiMessageStream::frame(
                &mut expected,
                &json!({"type": "text-delta", "id": id, "delta": text}),
            );
            assert!(
                out.ends_with(&expected),
                "{out:?} does not end with {expected:?}"
            );
        }
    }
}
