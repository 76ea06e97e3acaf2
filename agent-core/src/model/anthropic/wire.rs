//! The Messages stream as a [`WireFormat`]: named events (`message_start`,
//! `content_block_start` / `_delta` / `_stop`, `message_delta`, `message_stop`, `ping`,
//! `error`) whose `data` is JSON carrying the same `type`.

use std::collections::{HashMap, VecDeque};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ErrorKind, ModelError};
use crate::model::transport::{EventFlow, WireFormat, excerpt, mid_stream_error};
use crate::model::{FinishReason, ModelDelta, ToolCallDelta, Usage};
use crate::sse::SseEvent;

/// Decodes the events of one Messages stream. It keeps what the events refer back to: the
/// kind of each content block (by its `index`), the tool-call index of each `tool_use`
/// block, and the input tokens `message_start` reported.
#[derive(Default)]
pub(super) struct MessagesWire {
    /// Content block index → what the block is.
    blocks: HashMap<u64, Block>,
    /// Tool-use blocks seen so far: the next one gets this tool-call index.
    tool_calls: u32,
    /// Input tokens from `message_start` (cache reads and writes included).
    input_tokens: u64,
}

#[derive(Clone, Copy)]
enum Block {
    Text,
    Thinking,
    /// A `tool_use` block and its tool-call index.
    ToolUse(u32),
    /// Anything else (redacted thinking, server tools, …): its deltas are skipped.
    Other,
}

impl WireFormat for MessagesWire {
    const EXPECTED: &'static str = "an Anthropic Messages streaming endpoint";

    fn on_event(
        &mut self,
        host: &str,
        event: &SseEvent,
        out: &mut VecDeque<ModelDelta>,
    ) -> Result<EventFlow, ModelError> {
        let data = event.data.trim();
        if event.event == "error" {
            return Err(mid_stream_error(host, data));
        }
        if data.is_empty() {
            return Ok(EventFlow::Continue);
        }
        self.parse(&event.event, data, out)
    }
}

impl MessagesWire {
    /// Handle one event's `data` (`name` is its SSE `event:` field, used when the JSON has
    /// no `type`).
    pub(super) fn parse(
        &mut self,
        name: &str,
        data: &str,
        out: &mut VecDeque<ModelDelta>,
    ) -> Result<EventFlow, ModelError> {
        let event: WireEvent = serde_json::from_str(data).map_err(|err| {
            ModelError::new(
                ErrorKind::MalformedResponse,
                format!(
                    "the upstream sent a stream event that is not Messages JSON ({err}): {}",
                    excerpt(data)
                ),
            )
        })?;
        let kind = event.kind.as_deref().unwrap_or(name);
        match kind {
            "message_start" => {
                if let Some(usage) = event.message.and_then(|m| m.usage) {
                    self.input_tokens = usage.input();
                }
            }
            "content_block_start" => {
                let index = event.index.unwrap_or(0);
                let block = event.content_block.unwrap_or_default();
                match block.kind.as_deref() {
                    Some("text") => {
                        self.blocks.insert(index, Block::Text);
                        push_text(out, ModelDelta::Text, block.text);
                    }
                    Some("thinking") => {
                        self.blocks.insert(index, Block::Thinking);
                        push_text(out, ModelDelta::Reasoning, block.thinking);
                    }
                    Some("tool_use") => {
                        let call = self.new_tool_call(index);
                        // Streams start with `input: {}` and send the arguments as deltas;
                        // a block that arrives with its input whole carries it here.
                        let arguments = match block.input {
                            Some(Value::Object(map)) if !map.is_empty() => {
                                Value::Object(map).to_string()
                            }
                            _ => String::new(),
                        };
                        out.push_back(ModelDelta::ToolCall(ToolCallDelta {
                            index: call,
                            id: block.id.filter(|s| !s.is_empty()),
                            name: block.name.filter(|s| !s.is_empty()),
                            arguments,
                        }));
                    }
                    _ => {
                        self.blocks.insert(index, Block::Other);
                    }
                }
            }
            "content_block_delta" => {
                let index = event.index.unwrap_or(0);
                let delta = event.delta.unwrap_or_default();
                match delta.kind.as_deref() {
                    Some("text_delta") => push_text(out, ModelDelta::Text, delta.text),
                    Some("thinking_delta") => push_text(out, ModelDelta::Reasoning, delta.thinking),
                    Some("input_json_delta") => {
                        let call = match self.blocks.get(&index) {
                            Some(Block::ToolUse(call)) => *call,
                            Some(_) => return Ok(EventFlow::Continue),
                            // A delta of a block that never started: still a tool call.
                            None => self.new_tool_call(index),
                        };
                        if let Some(arguments) = delta.partial_json.filter(|s| !s.is_empty()) {
                            out.push_back(ModelDelta::ToolCall(ToolCallDelta {
                                index: call,
                                id: None,
                                name: None,
                                arguments,
                            }));
                        }
                    }
                    // `signature_delta`, `citations_delta` and future kinds.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = event
                    .delta
                    .and_then(|d| d.stop_reason)
                    .filter(|s| !s.is_empty())
                {
                    out.push_back(ModelDelta::Finish(finish_reason(reason)));
                }
                if let Some(usage) = event.usage {
                    // Newer API versions repeat the input count here; it wins when given.
                    if usage.has_input() {
                        self.input_tokens = usage.input();
                    }
                    let completion_tokens = usage.output_tokens.unwrap_or(0);
                    out.push_back(ModelDelta::Usage(Usage {
                        prompt_tokens: self.input_tokens,
                        completion_tokens,
                        total_tokens: self.input_tokens.saturating_add(completion_tokens),
                    }));
                }
            }
            "message_stop" => return Ok(EventFlow::End),
            "error" => {
                let message = event
                    .error
                    .as_ref()
                    .and_then(crate::model::transport::error_message)
                    .unwrap_or_else(|| excerpt(data));
                return Err(ModelError::new(
                    ErrorKind::Model,
                    format!("the upstream reported an error mid-stream: {message}"),
                ));
            }
            // `ping`, `content_block_stop`, and event kinds added after this was written.
            _ => {}
        }
        Ok(EventFlow::Continue)
    }

    fn new_tool_call(&mut self, index: u64) -> u32 {
        let call = self.tool_calls;
        self.tool_calls = self.tool_calls.saturating_add(1);
        self.blocks.insert(index, Block::ToolUse(call));
        call
    }
}

fn push_text(out: &mut VecDeque<ModelDelta>, make: fn(String) -> ModelDelta, text: Option<String>) {
    if let Some(text) = text.filter(|s| !s.is_empty()) {
        out.push_back(make(text));
    }
}

/// Anthropic's `stop_reason` in the core's terms: `end_turn` and `stop_sequence` → `stop`,
/// `max_tokens` → `length`, `tool_use` → `tool_calls`, `refusal` → `content_filter`; others
/// (`pause_turn`, …) are kept as spelled.
pub(super) fn finish_reason(reason: String) -> FinishReason {
    match reason.as_str() {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Other(reason),
    }
}

#[derive(Deserialize)]
struct WireEvent {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    content_block: Option<WireBlock>,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize, Default)]
struct WireBlock {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
}

#[derive(Deserialize, Default)]
struct WireDelta {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl WireUsage {
    fn has_input(&self) -> bool {
        self.input_tokens.is_some()
    }

    /// All prompt tokens: uncached input plus cache writes and reads.
    fn input(&self) -> u64 {
        [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ]
        .into_iter()
        .flatten()
        .fold(0u64, u64::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(wire: &mut MessagesWire, data: &str) -> Result<Vec<ModelDelta>, ModelError> {
        let mut out = VecDeque::new();
        wire.parse("", data, &mut out)?;
        Ok(out.into())
    }

    #[test]
    fn tool_use_blocks_get_consecutive_call_indexes() {
        let mut wire = MessagesWire::default();
        parse(
            &mut wire,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        )
        .unwrap();
        let start = parse(&mut wire, r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}"#).unwrap();
        assert_eq!(
            start,
            vec![ModelDelta::ToolCall(ToolCallDelta {
                index: 0,
                id: Some("toolu_1".into()),
                name: Some("f".into()),
                arguments: String::new()
            })]
        );
        let delta = parse(&mut wire, r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":1}"}}"#).unwrap();
        assert_eq!(
            delta,
            vec![ModelDelta::ToolCall(ToolCallDelta {
                index: 0,
                id: None,
                name: None,
                arguments: "{\"a\":1}".into()
            })]
        );
        // A text delta aimed at the tool block is still text; JSON aimed at a text block is skipped.
        assert!(parse(&mut wire, r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"x"}}"#).unwrap().is_empty());
        let second = parse(&mut wire, r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_2","name":"g","input":{"q":"whole"}}}"#).unwrap();
        assert_eq!(
            second,
            vec![ModelDelta::ToolCall(ToolCallDelta {
                index: 1,
                id: Some("toolu_2".into()),
                name: Some("g".into()),
                arguments: "{\"q\":\"whole\"}".into()
            })]
        );
    }

    #[test]
    fn usage_counts_cached_input_and_finish_reasons_map() {
        let mut wire = MessagesWire::default();
        parse(&mut wire, r#"{"type":"message_start","message":{"usage":{"input_tokens":5,"cache_read_input_tokens":100,"output_tokens":1}}}"#).unwrap();
        let end = parse(&mut wire, r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":7}}"#).unwrap();
        assert_eq!(
            end,
            vec![
                ModelDelta::Finish(FinishReason::Length),
                ModelDelta::Usage(Usage {
                    prompt_tokens: 105,
                    completion_tokens: 7,
                    total_tokens: 112
                })
            ]
        );
        assert_eq!(
            finish_reason("pause_turn".into()),
            FinishReason::Other("pause_turn".into())
        );
        assert_eq!(finish_reason("refusal".into()), FinishReason::ContentFilter);
    }

    #[test]
    fn unknown_events_and_blocks_are_skipped_but_bad_json_is_malformed() {
        let mut wire = MessagesWire::default();
        assert!(parse(&mut wire, r#"{"type":"ping"}"#).unwrap().is_empty());
        assert!(
            parse(&mut wire, r#"{"type":"brand_new_event","x":1}"#)
                .unwrap()
                .is_empty()
        );
        parse(&mut wire, r#"{"type":"content_block_start","index":0,"content_block":{"type":"redacted_thinking","data":"…"}}"#).unwrap();
        assert!(parse(&mut wire, r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"s"}}"#).unwrap().is_empty());
        for data in ["{", "[1]", "\"x\"", "{\"type\": 3}"] {
            assert_eq!(
                parse(&mut wire, data).unwrap_err().kind,
                ErrorKind::MalformedResponse,
                "{data}"
            );
        }
        let error = parse(
            &mut wire,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
        .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Model);
        assert!(
            error
                .message
                .contains("Overloaded (type: overloaded_error)"),
            "{}",
            error.message
        );
    }
}
