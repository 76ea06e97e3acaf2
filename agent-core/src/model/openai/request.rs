//! Building the Chat Completions request: URL, headers and JSON body.

use serde::Serialize;
use serde_json::{Map, Value};

use super::OpenAiConfig;
use crate::http::{HttpRequest, Method};
use crate::model::transport::Endpoint;
use crate::model::{Message, ModelRequest, ToolCall};
use crate::tool::ToolDefinition;

/// `{base_url}/chat/completions`, with one trailing `/` of `base_url` trimmed.
pub(super) fn endpoint(base_url: &str) -> String {
    let base = base_url.strip_suffix('/').unwrap_or(base_url);
    format!("{base}/chat/completions")
}

/// The HTTP request for `request` under `config`.
pub(super) fn http_request(
    config: &OpenAiConfig,
    endpoint: &Endpoint,
    request: &ModelRequest,
) -> HttpRequest {
    let mut http = HttpRequest::new(Method::Post, &endpoint.url)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .connect_timeout(endpoint.timeouts.connect)
        .body(body(config, request));
    if let Some(key) = &config.api_key {
        http = http.header("authorization", format!("Bearer {}", key.expose()));
    }
    for (name, value) in &config.extra_headers {
        http = http.header(name.clone(), value.clone());
    }
    http
}

/// The JSON body: model, messages, `stream: true`, stream options, tools, sampling options,
/// the output schema (`response_format`), then the configured extra fields.
pub(super) fn body(config: &OpenAiConfig, request: &ModelRequest) -> Vec<u8> {
    let body = Body {
        model: &config.model,
        messages: request.messages.iter().map(WireMessage::from).collect(),
        stream: true,
        stream_options: config.include_usage.then_some(StreamOptions {
            include_usage: true,
        }),
        tools: request.tools.iter().map(WireTool::from).collect(),
        temperature: config.temperature,
        max_tokens: config.max_tokens,
        response_format: request.output.as_ref().map(|output| ResponseFormat {
            kind: "json_schema",
            json_schema: JsonSchemaFormat {
                name: &output.name,
                strict: output.strict,
                schema: &output.schema,
            },
        }),
    };
    let bytes = if config.extra_body.is_empty() {
        serde_json::to_vec(&body)
    } else {
        serde_json::to_value(&body).and_then(|value| {
            let mut value = value;
            if let Value::Object(fields) = &mut value {
                merge_extra(fields, &config.extra_body);
            }
            serde_json::to_vec(&value)
        })
    };
    // Serializing strings, numbers and `Value`s into memory cannot fail.
    bytes.unwrap_or_default()
}

/// Add `extra` to the body; `messages` and `stream` are never replaced.
fn merge_extra(fields: &mut Map<String, Value>, extra: &Map<String, Value>) {
    for (key, value) in extra {
        if key != "messages" && key != "stream" {
            fields.insert(key.clone(), value.clone());
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat<'a>>,
}

/// `response_format: {type: "json_schema", json_schema: {name, strict, schema}}`.
#[derive(Serialize)]
struct ResponseFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    json_schema: JsonSchemaFormat<'a>,
}

#[derive(Serialize)]
struct JsonSchemaFormat<'a> {
    name: &'a str,
    strict: bool,
    schema: &'a Value,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
enum WireMessage<'a> {
    System {
        content: &'a str,
    },
    User {
        content: &'a str,
    },
    Assistant {
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<WireToolCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: &'a str,
    },
}

impl<'a> From<&'a Message> for WireMessage<'a> {
    fn from(message: &'a Message) -> Self {
        match message {
            Message::System { content } => WireMessage::System { content },
            Message::User { content } => WireMessage::User { content },
            Message::Assistant {
                content,
                tool_calls,
            } => WireMessage::Assistant {
                // OpenAI wants `null`, not `""`, for an assistant turn that only called tools.
                content: (!content.is_empty() || tool_calls.is_empty()).then_some(content.as_str()),
                tool_calls: tool_calls.iter().map(WireToolCall::from).collect(),
            },
            Message::Tool { call_id, content } => WireMessage::Tool {
                tool_call_id: call_id,
                content,
            },
        }
    }
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

impl<'a> From<&'a ToolCall> for WireToolCall<'a> {
    fn from(call: &'a ToolCall) -> Self {
        WireToolCall {
            id: &call.id,
            kind: "function",
            function: WireFunctionCall {
                name: &call.name,
                arguments: &call.arguments,
            },
        }
    }
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a Value,
}

impl<'a> From<&'a ToolDefinition> for WireTool<'a> {
    fn from(tool: &'a ToolDefinition) -> Self {
        WireTool {
            kind: "function",
            function: WireFunction {
                name: &tool.name,
                description: &tool.description,
                parameters: &tool.parameters,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_trims_one_slash() {
        assert_eq!(endpoint("http://h/v1"), "http://h/v1/chat/completions");
        assert_eq!(endpoint("http://h/v1/"), "http://h/v1/chat/completions");
    }
}
