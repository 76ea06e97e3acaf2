//! The OpenAI-compatible `POST /v1/chat/completions` surface: request parsing, streamed chunks
//! and the non-streamed response.

use serde::Deserialize;
use serde_json::{Value, json};

use super::response::ApiError;
use crate::event::{Event, EventKind};
use crate::model::{Message, Usage};

/// One message of a chat completions request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatMessage {
    /// `system` (or `developer`), `user`, `assistant`, `tool` (others are rejected).
    pub role: String,
    /// A string, an array of content parts (`{"type":"text","text":…}`), or null.
    #[serde(default)]
    pub content: Value,
    /// On an `assistant` message: the tool calls it made
    /// (`[{"id":…,"type":"function","function":{"name":…,"arguments":…}}]`).
    #[serde(default)]
    pub tool_calls: Vec<ChatToolCall>,
    /// On a `tool` message: the id of the call it answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// A tool call of an `assistant` message in a chat completions request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatToolCall {
    /// The call id.
    pub id: String,
    /// The function called.
    pub function: ChatFunctionCall,
}

/// The function of a [`ChatToolCall`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatFunctionCall {
    /// The tool name.
    pub name: String,
    /// The arguments as JSON text.
    #[serde(default)]
    pub arguments: String,
}

/// The body of `POST /v1/chat/completions` (fields the agent does not use are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatCompletionRequest {
    /// Echoed back in responses; the agent's own model is used regardless.
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation; the last message must be the user's.
    pub messages: Vec<ChatMessage>,
    /// Stream chunks (`true`) or answer once (`false`, the default).
    #[serde(default)]
    pub stream: bool,
    /// `{"include_usage": true}` adds a usage chunk before `[DONE]`.
    #[serde(default)]
    pub stream_options: Option<Value>,
}

impl ChatCompletionRequest {
    /// Parse a request body.
    ///
    /// ```
    /// use agent_core::server::ChatCompletionRequest;
    /// let req = ChatCompletionRequest::parse(br#"{"messages":[{"role":"user","content":"hi"}],"stream":true}"#).unwrap();
    /// let (input, history) = req.input_and_history().unwrap();
    /// assert_eq!(input, "hi");
    /// assert!(history.is_empty());
    /// ```
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(body).map_err(|e| ApiError::invalid_json(&e))
    }

    /// Whether the client asked for a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Split the conversation into the new input (the last user message) and the history
    /// before it.
    pub fn input_and_history(&self) -> Result<(String, Vec<Message>), ApiError> {
        conversation(&self.messages)
    }
}

/// Split chat-shaped `messages` into the new input (the last message, which must be the
/// user's) and the history before it. Shared by every endpoint whose messages have the
/// chat shape (chat completions, AG-UI).
pub(crate) fn conversation(messages: &[ChatMessage]) -> Result<(String, Vec<Message>), ApiError> {
    let Some((last, earlier)) = messages.split_last() else {
        return Err(ApiError::bad_request(
            "invalid_messages",
            "`messages` must not be empty",
        ));
    };
    if last.role != "user" {
        return Err(ApiError::bad_request(
            "invalid_messages",
            "the last message must have role \"user\"",
        ));
    }
    let input = content_text(&last.content)?;
    let mut history = Vec::with_capacity(earlier.len());
    for message in earlier {
        let content = content_text(&message.content)?;
        history.push(match message.role.as_str() {
            "system" | "developer" => Message::system(content),
            "user" => Message::user(content),
            "assistant" => Message::Assistant {
                content,
                tool_calls: message
                    .tool_calls
                    .iter()
                    .map(|call| crate::model::ToolCall {
                        id: call.id.clone(),
                        name: call.function.name.clone(),
                        arguments: call.function.arguments.clone(),
                    })
                    .collect(),
            },
            "tool" => Message::Tool {
                call_id: message.tool_call_id.clone().ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_messages",
                        "a message with role \"tool\" needs its `tool_call_id`",
                    )
                })?,
                content,
            },
            other => {
                return Err(ApiError::bad_request(
                    "invalid_messages",
                    format!("unsupported message role {other:?}"),
                ));
            }
        });
    }
    Ok((input, history))
}

fn content_text(content: &Value) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                if let Some(t) = part.get("text").and_then(Value::as_str) {
                    text.push_str(t);
                }
            }
            Ok(text)
        }
        _ => Err(ApiError::bad_request(
            "invalid_messages",
            "message content must be a string or an array of text parts",
        )),
    }
}

/// Turns run events into `chat.completion.chunk` SSE frames.
#[derive(Debug)]
pub(crate) struct ChunkEncoder {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    sent_role: bool,
    /// What follows a delta object in every delta chunk, from `},"finish_reason"` to the
    /// frame's end: the chunk's fixed fields, serialized once (keys in serde_json's order).
    delta_suffix: String,
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ChunkEncoder {
    pub(crate) fn new(run_id: &str, model: String, include_usage: bool) -> Self {
        let id = format!("chatcmpl-{run_id}");
        let created = unix_now();
        let mut delta_suffix = String::from("},\"finish_reason\":null,\"index\":0}],\"created\":");
        super::service::push_u64(&mut delta_suffix, created);
        delta_suffix.push_str(",\"id\":");
        super::json_text::push_json_str(&mut delta_suffix, &id);
        delta_suffix.push_str(",\"model\":");
        super::json_text::push_json_str(&mut delta_suffix, &model);
        delta_suffix.push_str(",\"object\":\"chat.completion.chunk\"}\n\n");
        ChunkEncoder {
            id,
            created,
            model,
            include_usage,
            sent_role: false,
            delta_suffix,
        }
    }

    /// A text or reasoning delta chunk through the template: what `frame(chunk(delta))`
    /// writes, without building a `Value`.
    fn delta_frame(&mut self, field: &str, text: &str, out: &mut String) {
        out.push_str("data: {\"choices\":[{\"delta\":{\"");
        out.push_str(field);
        out.push_str("\":");
        super::json_text::push_json_str(out, text);
        if !self.sent_role {
            self.sent_role = true;
            out.push_str(",\"role\":\"assistant\"");
        }
        out.push_str(&self.delta_suffix);
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        })
    }

    fn frame(out: &mut String, value: &Value) {
        out.push_str("data: ");
        out.push_str(&value.to_string());
        out.push_str("\n\n");
    }

    /// Append the frames for `event` to `out` (nothing for events with no chat equivalent).
    pub(crate) fn encode(&mut self, event: &Event, out: &mut String) {
        match &event.kind {
            EventKind::TextDelta { text } => self.delta_frame("content", text, out),
            EventKind::ReasoningDelta { text } => self.delta_frame("reasoning_content", text, out),
            EventKind::RunCompleted { usage, .. } => {
                Self::frame(out, &self.chunk(json!({}), Some("stop")));
                if self.include_usage {
                    let mut usage_chunk = self.chunk(json!({}), None);
                    usage_chunk["choices"] = json!([]);
                    usage_chunk["usage"] = usage_json(usage);
                    Self::frame(out, &usage_chunk);
                }
                out.push_str("data: [DONE]\n\n");
            }
            EventKind::RunFailed { error, .. } => {
                let body = json!({"error": {"message": error.message, "type": "run_failed", "code": error.kind}});
                Self::frame(out, &body);
                out.push_str("data: [DONE]\n\n");
            }
            EventKind::RunCancelled { .. } => {
                let body = json!({"error": {"message": "the run was cancelled", "type": "run_cancelled", "code": "cancelled"}});
                Self::frame(out, &body);
                out.push_str("data: [DONE]\n\n");
            }
            _ => {}
        }
    }

    /// The non-streamed `chat.completion` object for a completed run.
    pub(crate) fn completion(&self, text: &str, usage: &Usage) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }],
            "usage": usage_json(usage),
        })
    }
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Value` path the template replaced: the reference it must match byte for byte.
    fn reference(encoder: &ChunkEncoder, field: &str, text: &str, role: bool) -> String {
        let mut delta = json!({ field: text });
        if role {
            delta["role"] = json!("assistant");
        }
        let mut out = String::new();
        ChunkEncoder::frame(&mut out, &encoder.chunk(delta, None));
        out
    }

    #[test]
    fn delta_template_matches_the_value_path() {
        for model in ["gpt-4o", "we\"ird\\model\n"] {
            let mut encoder = ChunkEncoder::new("run_1", model.to_string(), false);
            let texts = ["Hel", "lo \"w\"\n\t\u{1} é 🎉", ""];
            for (i, text) in texts.iter().enumerate() {
                for (kind, field) in [
                    (
                        EventKind::TextDelta {
                            text: text.to_string(),
                        },
                        "content",
                    ),
                    (
                        EventKind::ReasoningDelta {
                            text: text.to_string(),
                        },
                        "reasoning_content",
                    ),
                ] {
                    let first = !encoder.sent_role;
                    let mut out = String::new();
                    encoder.encode(
                        &Event {
                            seq: i as u64,
                            kind,
                        },
                        &mut out,
                    );
                    assert_eq!(out, reference(&encoder, field, text, first));
                }
            }
        }
    }
}
