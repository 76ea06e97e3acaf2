//! The OpenAI Responses API: `POST /v1/responses`.
//!
//! The request is the Responses `create` body: `model` (echoed back; the agent's own model
//! answers), `input` (a string, or an array of input items: messages with role `user`,
//! `assistant`, `system` or `developer` and content as a string or `input_text` /
//! `output_text` parts; `function_call` and `function_call_output` items of earlier tool
//! rounds; `reasoning` items, which are skipped), `instructions` (a system message before the
//! conversation) and `stream`. Other fields (`tools`, `temperature`, `store`, …) are ignored:
//! the agent brings its own. `previous_response_id` is refused with a 400, because this
//! server stores no responses: send the whole conversation in `input`. The last input item
//! must be a user message; it is the run's input.
//!
//! With `"stream": true` the answer is SSE, one `event: <type>` + `data: <json>` frame per
//! Responses streaming event, each with a `sequence_number` from 0:
//!
//! ```text
//! response.created, response.in_progress
//! per reasoning item:  response.output_item.added, response.content_part.added (reasoning_text),
//!                      response.reasoning_text.delta…, response.reasoning_text.done,
//!                      response.content_part.done, response.output_item.done
//! per message item:    response.output_item.added, response.content_part.added (output_text),
//!                      response.output_text.delta…, response.output_text.done,
//!                      response.content_part.done, response.output_item.done
//! per tool call:       response.output_item.added (function_call),
//!                      response.function_call_arguments.delta…, response.function_call_arguments.done,
//!                      response.output_item.done (status completed) — then, when the agent
//!                      has run the tool, a function_call_output item:
//!                      response.output_item.added, response.output_item.done
//! response.completed (or response.failed)
//! ```
//!
//! The agent runs its tools itself, so a tool round does not end the response the way a
//! client-side function call does: the `function_call` item is marked done when its
//! arguments are complete, the tool's result follows as a `function_call_output` item (the
//! item a client would have sent back, `output` being the text given to the model), and the
//! response goes on with the next model round's items. A message item spans one model round's
//! text; reasoning deltas become a `reasoning` item with `reasoning_text` content.
//!
//! A failed run ends with `response.failed` (`status: "failed"`, `error.code`
//! `rate_limit_exceeded` for `rate_limited`, `server_error` otherwise, and the run's message); a
//! cancelled run (server shutdown) with `response.failed` and `status: "cancelled"`. Items
//! still open are closed first with `status: "incomplete"`. There is no `[DONE]`.
//!
//! Without `stream` (or with `false`) the answer is the `response` object once the run ends;
//! a failed run answers 502 (504 for `run_timeout`, 429 with `Retry-After` for a
//! rate-limited upstream) and a cancelled one 503, with the
//! OpenAI error body, as `/v1/chat/completions` does.

use std::collections::HashMap;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::chat::unix_now;
use super::protocol::{FrameEncoder, Start};
use super::response::{
    ApiError, ApiResponse, cancelled_run_response, failed_run_response, missing_terminal_response,
};
use super::runs::RunEvents;
use crate::agent::Agent;
use crate::error::ErrorKind;
use crate::event::{Event, EventKind};
use crate::model::{Message, ToolCall, Usage};

/// The fields of a Responses `create` body the server uses.
#[derive(Debug, Deserialize)]
struct ResponsesRequest {
    #[serde(default)]
    model: Option<String>,
    input: Value,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<Value>,
}

fn invalid_input(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_input", message)
}

impl ResponsesRequest {
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let request: ResponsesRequest =
            serde_json::from_slice(body).map_err(|e| ApiError::invalid_json(&e))?;
        if request
            .previous_response_id
            .as_ref()
            .is_some_and(|v| !v.is_null())
        {
            return Err(ApiError::bad_request(
                "unsupported_parameter",
                "`previous_response_id` is not supported: this server stores no responses; \
                 send the whole conversation in `input`",
            ));
        }
        Ok(request)
    }

    /// The run's input (the last user message) and the history before it, with
    /// `instructions` as a leading system message.
    fn input_and_history(&self) -> Result<(String, Vec<Message>), ApiError> {
        let mut history = Vec::new();
        if let Some(instructions) = &self.instructions {
            history.push(Message::system(instructions.clone()));
        }
        let items = match &self.input {
            Value::String(text) => return Ok((text.clone(), history)),
            Value::Array(items) => items,
            _ => {
                return Err(invalid_input(
                    "`input` must be a string or an array of input items",
                ));
            }
        };
        let mut conversation = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            parse_item(item, &mut conversation).map_err(|e| ApiError {
                message: format!("input[{i}]: {}", e.message),
                ..e
            })?;
        }
        match conversation.pop() {
            Some(Message::User { content }) => {
                history.extend(conversation);
                Ok((content, history))
            }
            _ => Err(invalid_input(
                "the last input item must be a message with role \"user\"",
            )),
        }
    }
}

fn str_field<'a>(item: &'a Value, name: &str, kind: &str) -> Result<&'a str, ApiError> {
    item.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_input(format!("a {kind} item needs a string `{name}`")))
}

/// Append the message an input item stands for to `conversation`.
fn parse_item(item: &Value, conversation: &mut Vec<Message>) -> Result<(), ApiError> {
    if !item.is_object() {
        return Err(invalid_input("an input item must be an object"));
    }
    match item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message")
    {
        "message" => {
            let role = str_field(item, "role", "message")?;
            let content = content_text(item.get("content").unwrap_or(&Value::Null))?;
            conversation.push(match role {
                "user" => Message::user(content),
                "assistant" => Message::assistant(content),
                "system" | "developer" => Message::system(content),
                other => {
                    return Err(invalid_input(format!(
                        "unsupported message role {other:?} (user, assistant, system, developer)"
                    )));
                }
            });
        }
        "function_call" => {
            let call = ToolCall {
                id: str_field(item, "call_id", "function_call")?.to_string(),
                name: str_field(item, "name", "function_call")?.to_string(),
                arguments: item
                    .get("arguments")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            };
            // Calls of one turn follow the assistant's message (or each other).
            match conversation.last_mut() {
                Some(Message::Assistant { tool_calls, .. }) => tool_calls.push(call),
                _ => conversation.push(Message::Assistant {
                    content: String::new(),
                    tool_calls: vec![call],
                }),
            }
        }
        "function_call_output" => {
            let call_id = str_field(item, "call_id", "function_call_output")?.to_string();
            let content = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(parts @ Value::Array(_)) => content_text(parts)?,
                _ => {
                    return Err(invalid_input(
                        "a function_call_output item needs an `output` string or array of text parts",
                    ));
                }
            };
            conversation.push(Message::Tool { call_id, content });
        }
        // Reasoning a client echoes back from an earlier response: the agent's models take
        // none, so it is skipped.
        "reasoning" => {}
        other => {
            return Err(invalid_input(format!(
                "unsupported input item type {other:?} (message, function_call, function_call_output)"
            )));
        }
    }
    Ok(())
}

/// The text of a message's content: a string, or text parts concatenated.
fn content_text(content: &Value) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
                match kind {
                    "input_text" | "output_text" | "text" => {
                        let t = part.get("text").and_then(Value::as_str).ok_or_else(|| {
                            invalid_input(format!("a {kind} part needs a string `text`"))
                        })?;
                        text.push_str(t);
                    }
                    "refusal" => {}
                    other => {
                        return Err(invalid_input(format!(
                            "unsupported content part type {other:?} (input_text, output_text)"
                        )));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(invalid_input(
            "message content must be a string or an array of input_text/output_text parts",
        )),
    }
}

/// Parse a `/v1/responses` body and start its run (mounted in [`PROTOCOLS`](super::protocol::PROTOCOLS)).
pub(crate) fn start(agent: &Agent, body: &[u8]) -> Result<Start, ApiError> {
    let request = ResponsesRequest::parse(body)?;
    let (input, history) = request.input_and_history()?;
    let run = agent.run_with_history(input, history);
    let model = request
        .model
        .clone()
        .unwrap_or_else(|| agent.model().name().to_string());
    let encoder = ResponsesEncoder::new(run.run_id(), model, request.instructions.clone());
    if request.stream.unwrap_or(false) {
        Ok(Start::Stream {
            run,
            encoder: Box::new(encoder),
            headers: Vec::new(),
        })
    } else {
        Ok(Start::Complete {
            run,
            finish: Box::new(move |run| Box::pin(complete(run, encoder))),
        })
    }
}

/// The non-streamed answer: the same encoder, its frames discarded, its final object sent.
async fn complete(mut run: RunEvents, mut encoder: ResponsesEncoder) -> ApiResponse {
    let mut discard = String::new();
    while let Some(event) = run.next().await {
        discard.clear();
        encoder.encode(&event, &mut discard);
        match &event.kind {
            EventKind::RunCompleted { .. } => {
                return ApiResponse::json(200, &encoder.response("completed"));
            }
            EventKind::RunFailed { error, .. } => return failed_run_response(error),
            EventKind::RunCancelled { .. } => return cancelled_run_response(),
            _ => {}
        }
    }
    missing_terminal_response()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextKind {
    Message,
    Reasoning,
}

/// The message or reasoning item being streamed.
#[derive(Debug)]
struct OpenText {
    kind: TextKind,
    index: usize,
    item_id: String,
    text: String,
}

/// A function call whose arguments are streaming.
#[derive(Debug)]
struct OpenCall {
    index: usize,
    item_id: String,
    call_id: String,
    name: String,
    arguments: String,
}

/// Turns run events into Responses streaming events and keeps the `response` object they
/// build.
#[derive(Debug)]
pub(crate) struct ResponsesEncoder {
    id: String,
    run_id: String,
    created_at: u64,
    model: String,
    instructions: Option<String>,
    sequence_number: u64,
    /// Every output item so far, in output-index order, in its latest state.
    output: Vec<Value>,
    text: Option<OpenText>,
    calls: HashMap<String, OpenCall>,
    /// Usage summed over the model requests seen (for a failed run's response).
    usage: Usage,
    final_usage: Option<Usage>,
    error: Option<Value>,
}

impl ResponsesEncoder {
    pub(crate) fn new(run_id: &str, model: String, instructions: Option<String>) -> Self {
        ResponsesEncoder {
            id: format!("resp_{run_id}"),
            run_id: run_id.to_string(),
            created_at: unix_now(),
            model,
            instructions,
            sequence_number: 0,
            output: Vec::new(),
            text: None,
            calls: HashMap::new(),
            usage: Usage::default(),
            final_usage: None,
            error: None,
        }
    }

    /// The `response` object in its current state, with `status`.
    pub(crate) fn response(&self, status: &str) -> Value {
        let usage = self.final_usage.map(|u| {
            json!({
                "input_tokens": u.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": u.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": u.total_tokens,
            })
        });
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": self.error,
            "incomplete_details": null,
            "instructions": self.instructions,
            "max_output_tokens": null,
            "metadata": {},
            "model": self.model,
            "output": self.output,
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": null,
            "store": false,
            "temperature": null,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": null,
            "truncation": "disabled",
            "usage": usage,
            "user": null,
        })
    }

    fn emit(&mut self, out: &mut String, kind: &str, mut event: Value) {
        event["type"] = json!(kind);
        event["sequence_number"] = json!(self.sequence_number);
        self.sequence_number += 1;
        out.push_str("event: ");
        out.push_str(kind);
        out.push_str("\ndata: ");
        // serde_json never writes raw newlines, so one data line is enough.
        out.push_str(&event.to_string());
        out.push_str("\n\n");
    }

    fn item_id(&self, prefix: &str) -> String {
        format!("{prefix}_{}_{}", self.run_id, self.output.len())
    }

    fn add_item(&mut self, out: &mut String, item: Value) -> usize {
        let index = self.output.len();
        self.output.push(item.clone());
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        );
        index
    }

    fn finish_item(&mut self, out: &mut String, index: usize, item: Value) {
        self.output[index] = item.clone();
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
    }

    fn text_part(kind: TextKind, text: &str) -> Value {
        match kind {
            TextKind::Message => {
                json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
            }
            TextKind::Reasoning => json!({"type": "reasoning_text", "text": text}),
        }
    }

    fn text_item(kind: TextKind, id: &str, status: &str, content: Vec<Value>) -> Value {
        match kind {
            TextKind::Message => json!({
                "id": id, "type": "message", "status": status, "role": "assistant",
                "content": content,
            }),
            TextKind::Reasoning => json!({
                "id": id, "type": "reasoning", "status": status, "summary": [],
                "content": content,
            }),
        }
    }

    /// A piece of message or reasoning text: open the item if another kind (or none) is
    /// open, then send the delta.
    fn text_delta(&mut self, out: &mut String, kind: TextKind, delta: &str) {
        if self.text.as_ref().is_some_and(|open| open.kind != kind) {
            self.close_text(out, "completed");
        }
        if self.text.is_none() {
            let prefix = match kind {
                TextKind::Message => "msg",
                TextKind::Reasoning => "rs",
            };
            let item_id = self.item_id(prefix);
            let index = self.add_item(
                out,
                Self::text_item(kind, &item_id, "in_progress", Vec::new()),
            );
            self.emit(
                out,
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": index, "content_index": 0,
                       "part": Self::text_part(kind, "")}),
            );
            self.text = Some(OpenText {
                kind,
                index,
                item_id,
                text: String::new(),
            });
        }
        let Some(open) = self.text.as_mut() else {
            return;
        };
        open.text.push_str(delta);
        // A template, not a `Value` per delta: the bytes `emit` would write for
        // {"item_id", "output_index", "content_index": 0, "delta", "logprobs": [] (message
        // text only)} (keys in serde_json's order; tested against `emit`).
        let name = match kind {
            TextKind::Message => "response.output_text.delta",
            TextKind::Reasoning => "response.reasoning_text.delta",
        };
        out.push_str("event: ");
        out.push_str(name);
        out.push_str("\ndata: {\"content_index\":0,\"delta\":");
        super::json_text::push_json_str(out, delta);
        out.push_str(",\"item_id\":");
        super::json_text::push_json_str(out, &open.item_id);
        if kind == TextKind::Message {
            out.push_str(",\"logprobs\":[]");
        }
        out.push_str(",\"output_index\":");
        super::service::push_u64(out, open.index as u64);
        out.push_str(",\"sequence_number\":");
        super::service::push_u64(out, self.sequence_number);
        self.sequence_number += 1;
        out.push_str(",\"type\":\"");
        out.push_str(name);
        out.push_str("\"}\n\n");
    }

    /// Close the open message or reasoning item, if any.
    fn close_text(&mut self, out: &mut String, status: &str) {
        let Some(open) = self.text.take() else {
            return;
        };
        let mut done = json!({"item_id": open.item_id, "output_index": open.index,
                              "content_index": 0, "text": open.text});
        let name = match open.kind {
            TextKind::Message => {
                done["logprobs"] = json!([]);
                "response.output_text.done"
            }
            TextKind::Reasoning => "response.reasoning_text.done",
        };
        self.emit(out, name, done);
        let part = Self::text_part(open.kind, &open.text);
        self.emit(
            out,
            "response.content_part.done",
            json!({"item_id": open.item_id, "output_index": open.index, "content_index": 0,
                   "part": part}),
        );
        let item = Self::text_item(open.kind, &open.item_id, status, vec![part]);
        self.finish_item(out, open.index, item);
    }

    fn open_call(&mut self, out: &mut String, call_id: &str, name: Option<&str>) {
        if self.calls.contains_key(call_id) {
            if let (Some(name), Some(call)) = (name, self.calls.get_mut(call_id))
                && call.name.is_empty()
            {
                call.name = name.to_string();
            }
            return;
        }
        self.close_text(out, "completed");
        let item_id = self.item_id("fc");
        let name = name.unwrap_or("").to_string();
        let index = self.add_item(
            out,
            json!({"id": item_id, "type": "function_call", "status": "in_progress",
                   "call_id": call_id, "name": name, "arguments": ""}),
        );
        self.calls.insert(
            call_id.to_string(),
            OpenCall {
                index,
                item_id,
                call_id: call_id.to_string(),
                name,
                arguments: String::new(),
            },
        );
    }

    fn call_item(call: &OpenCall, status: &str) -> Value {
        json!({"id": call.item_id, "type": "function_call", "status": status,
               "call_id": call.call_id, "name": call.name, "arguments": call.arguments})
    }

    /// Close every call still open (a run that ended midway), by output index.
    fn close_calls(&mut self, out: &mut String, status: &str) {
        let mut open: Vec<OpenCall> = self.calls.drain().map(|(_, call)| call).collect();
        open.sort_by_key(|call| call.index);
        for call in open {
            let item = Self::call_item(&call, status);
            self.finish_item(out, call.index, item);
        }
    }

    fn close_all(&mut self, out: &mut String, status: &str) {
        self.close_text(out, status);
        self.close_calls(out, status);
    }

    /// Append the frames for `event` to `out`.
    pub(crate) fn encode(&mut self, event: &Event, out: &mut String) {
        match &event.kind {
            EventKind::RunStarted { .. } => {
                let response = self.response("in_progress");
                self.emit(out, "response.created", json!({"response": response}));
                self.emit(out, "response.in_progress", json!({"response": response}));
            }
            // The answer's text deltas already carry a structured answer.
            EventKind::PartialOutput { .. } => {}
            // The Responses API has approval items only for MCP calls the provider runs; an
            // agent tool's approval is decided over POST /v1/runs/{id}/approvals, and a
            // denied call's output says so.
            EventKind::ToolApprovalRequested { .. } | EventKind::ToolApprovalDecided { .. } => {}
            EventKind::ModelRequestStarted { .. } => {}
            EventKind::TextDelta { text } => self.text_delta(out, TextKind::Message, text),
            EventKind::ReasoningDelta { text } => self.text_delta(out, TextKind::Reasoning, text),
            EventKind::ModelRequestCompleted { usage, .. } => {
                if let Some(usage) = usage {
                    self.usage.add(usage);
                }
                self.close_text(out, "completed");
            }
            EventKind::ToolCallDelta {
                call_id,
                name,
                arguments_delta,
            } => {
                self.open_call(out, call_id, name.as_deref());
                let Some(call) = self.calls.get_mut(call_id) else {
                    return;
                };
                call.arguments.push_str(arguments_delta);
                let (item_id, index) = (call.item_id.clone(), call.index);
                self.emit(
                    out,
                    "response.function_call_arguments.delta",
                    json!({"item_id": item_id, "output_index": index, "delta": arguments_delta}),
                );
            }
            EventKind::ToolCallStarted {
                call_id,
                name,
                arguments,
            } => {
                self.open_call(out, call_id, Some(name));
                let Some(mut call) = self.calls.remove(call_id) else {
                    return;
                };
                if call.arguments.is_empty() {
                    // The model gave the call whole: no deltas were sent.
                    call.arguments = match arguments {
                        Value::String(raw) => raw.clone(),
                        other => other.to_string(),
                    };
                }
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": call.item_id, "output_index": call.index,
                           "name": call.name, "arguments": call.arguments}),
                );
                let item = Self::call_item(&call, "completed");
                self.finish_item(out, call.index, item);
            }
            EventKind::ToolCallCompleted {
                call_id, result, ..
            } => {
                self.close_text(out, "completed");
                let item_id = self.item_id("fco");
                let output = result.to_model_text();
                let index = self.add_item(
                    out,
                    json!({"id": item_id, "type": "function_call_output", "status": "in_progress",
                           "call_id": call_id, "output": output}),
                );
                let item = json!({"id": item_id, "type": "function_call_output",
                                  "status": "completed", "call_id": call_id, "output": output});
                self.finish_item(out, index, item);
            }
            EventKind::RunCompleted { usage, .. } => {
                self.close_all(out, "completed");
                self.final_usage = Some(*usage);
                let response = self.response("completed");
                self.emit(out, "response.completed", json!({"response": response}));
            }
            EventKind::RunFailed { error, .. } => {
                self.close_all(out, "incomplete");
                let code = if error.kind == ErrorKind::RateLimited {
                    "rate_limit_exceeded"
                } else {
                    "server_error"
                };
                self.error = Some(json!({"code": code, "message": error.message}));
                self.final_usage = Some(self.usage);
                let response = self.response("failed");
                self.emit(out, "response.failed", json!({"response": response}));
            }
            EventKind::RunCancelled { .. } => {
                self.close_all(out, "incomplete");
                self.error = Some(json!({"code": "server_error",
                                         "message": "the run was cancelled (the server is shutting down)"}));
                self.final_usage = Some(self.usage);
                let response = self.response("cancelled");
                self.emit(out, "response.failed", json!({"response": response}));
            }
        }
    }
}

impl FrameEncoder for ResponsesEncoder {
    fn encode(&mut self, event: &Event, out: &mut String) {
        ResponsesEncoder::encode(self, event, out);
    }
}

#[cfg(test)]
mod template_tests {
    use super::*;

    #[test]
    fn text_delta_template_matches_emit() {
        for kind in [TextKind::Message, TextKind::Reasoning] {
            let mut encoder = ResponsesEncoder::new("run_\"1", "m".into(), None);
            let mut out = String::new();
            encoder.text_delta(&mut out, kind, "first");
            for delta in ["Hel", "lo \"w\"\n\t\u{1} é 🎉", ""] {
                let (index, item_id) = {
                    let open = encoder.text.as_ref().expect("an open text item");
                    (open.index, open.item_id.clone())
                };
                let mut reference = ResponsesEncoder::new("x", "m".into(), None);
                reference.sequence_number = encoder.sequence_number;
                let mut event = json!({"item_id": item_id, "output_index": index,
                                       "content_index": 0, "delta": delta});
                let name = match kind {
                    TextKind::Message => {
                        event["logprobs"] = json!([]);
                        "response.output_text.delta"
                    }
                    TextKind::Reasoning => "response.reasoning_text.delta",
                };
                let mut expected = String::new();
                reference.emit(&mut expected, name, event);
                let mut got = String::new();
                encoder.text_delta(&mut got, kind, delta);
                assert_eq!(got, expected);
            }
        }
    }
}
