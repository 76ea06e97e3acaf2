//! Building the Messages request: URL, headers and JSON body.
//!
//! The conversation is mapped to Anthropic's shape: system messages become the top-level
//! `system`; assistant tool calls become `tool_use` blocks; tool results become
//! `tool_result` blocks of a user message; consecutive messages of one role (a turn's tool
//! results, or results followed by the next user text) are merged into one message, as the
//! API expects results of one turn together.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::AnthropicConfig;
use crate::http::{HttpRequest, Method};
use crate::model::transport::Endpoint;
use crate::model::{Message, ModelRequest};

/// `{base_url}/messages`, with one trailing `/` of `base_url` trimmed.
pub(super) fn endpoint(base_url: &str) -> String {
    let base = base_url.strip_suffix('/').unwrap_or(base_url);
    format!("{base}/messages")
}

/// The HTTP request for `request` under `config`.
pub(super) fn http_request(
    config: &AnthropicConfig,
    endpoint: &Endpoint,
    request: &ModelRequest,
) -> HttpRequest {
    let mut http = HttpRequest::new(Method::Post, &endpoint.url)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .header("anthropic-version", config.version.clone())
        .connect_timeout(endpoint.timeouts.connect)
        .body(body(config, request));
    if let Some(key) = &config.api_key {
        http = http.header("x-api-key", key.expose());
    }
    for (name, value) in &config.extra_headers {
        http = http.header(name.clone(), value.clone());
    }
    http
}

/// The JSON body: model, `max_tokens`, `stream: true`, system, messages, tools, sampling
/// options, the output schema (`output_config.format`), then the configured extra fields.
pub(super) fn body(config: &AnthropicConfig, request: &ModelRequest) -> Vec<u8> {
    let system: Vec<&str> = request
        .messages
        .iter()
        .filter_map(|m| match m {
            Message::System { content } if !content.is_empty() => Some(content.as_str()),
            _ => None,
        })
        .collect();
    let body = Body {
        model: &config.model,
        max_tokens: config.max_tokens,
        stream: true,
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages: messages(&request.messages),
        tools: request
            .tools
            .iter()
            .map(|tool| WireTool {
                name: &tool.name,
                description: &tool.description,
                input_schema: &tool.parameters,
            })
            .collect(),
        temperature: config.temperature,
        output_config: request
            .output
            .as_ref()
            .map(|output| json!({"format": {"type": "json_schema", "schema": output.schema}})),
    };
    let bytes = serde_json::to_value(&body).and_then(|mut value| {
        if let Value::Object(fields) = &mut value {
            merge_extra(fields, &config.extra_body);
        }
        serde_json::to_vec(&value)
    });
    // Serializing strings, numbers and `Value`s into memory cannot fail.
    bytes.unwrap_or_default()
}

/// Add `extra` to the body; `messages` and `stream` are never replaced. An extra
/// `output_config` object is merged with the one structured output writes.
fn merge_extra(fields: &mut Map<String, Value>, extra: &Map<String, Value>) {
    for (key, value) in extra {
        match (key.as_str(), fields.get_mut(key), value) {
            ("messages" | "stream", _, _) => {}
            ("output_config", Some(Value::Object(ours)), Value::Object(theirs)) => {
                for (k, v) in theirs {
                    ours.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            _ => {
                fields.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The conversation without its system messages, one wire message per run of same-role
/// messages.
fn messages(history: &[Message]) -> Vec<WireMessage> {
    let mut out: Vec<WireMessage> = Vec::new();
    for message in history {
        let (role, blocks) = match message {
            Message::System { .. } => continue,
            Message::User { content } => ("user", vec![json!({"type": "text", "text": content})]),
            Message::Assistant {
                content,
                tool_calls,
            } => {
                let mut blocks = Vec::with_capacity(tool_calls.len() + 1);
                if !content.is_empty() {
                    blocks.push(json!({"type": "text", "text": content}));
                }
                for call in tool_calls {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": tool_input(&call.arguments),
                    }));
                }
                ("assistant", blocks)
            }
            Message::Tool { call_id, content } => (
                "user",
                vec![json!({"type": "tool_result", "tool_use_id": call_id, "content": content})],
            ),
        };
        // The API rejects empty text blocks and empty messages.
        let blocks: Vec<Value> = blocks
            .into_iter()
            .filter(|b| b["type"] != "text" || b["text"].as_str().is_some_and(|t| !t.is_empty()))
            .collect();
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => out.push(WireMessage {
                role,
                content: blocks,
            }),
        }
    }
    out
}

/// A tool call's arguments as the object `tool_use.input` must be: the parsed arguments
/// when they are a JSON object, else `{}` (the call's result already told the model its
/// arguments were invalid).
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => Value::Object(Map::new()),
    }
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<Value>,
}

#[derive(Serialize)]
struct WireMessage {
    role: &'static str,
    content: Vec<Value>,
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    description: &'a str,
    input_schema: &'a Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_trims_one_slash() {
        assert_eq!(endpoint("http://h/v1"), "http://h/v1/messages");
        assert_eq!(endpoint("http://h/v1/"), "http://h/v1/messages");
    }

    #[test]
    fn invalid_or_non_object_arguments_become_an_empty_input() {
        assert_eq!(tool_input("{\"a\":1}"), json!({"a": 1}));
        assert_eq!(tool_input("[1]"), json!({}));
        assert_eq!(tool_input("{oops"), json!({}));
        assert_eq!(tool_input(""), json!({}));
    }
}
