//! Parsing one streamed Chat Completions chunk (the `data` of one SSE event) into deltas.

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ErrorKind, ModelError};
use crate::model::transport::{error_message, excerpt};
use crate::model::{FinishReason, ModelDelta, ToolCallDelta, Usage};

/// Parse the `data` of one Chat Completions streaming event into [`ModelDelta`]s.
///
/// The pure, total function behind
/// [`OpenAiModel::parse_chunk`](super::OpenAiModel::parse_chunk), which documents the
/// mapping and the errors. It never panics, whatever the input: a fuzz target calls it with
/// arbitrary strings.
pub fn parse_chunk(data: &str) -> Result<Vec<ModelDelta>, ModelError> {
    let chunk: Chunk = serde_json::from_str(data).map_err(|err| {
        ModelError::new(
            ErrorKind::MalformedResponse,
            format!(
                "the upstream sent a stream chunk that is not valid chat-completion JSON ({err}): {}",
                excerpt(data)
            ),
        )
    })?;
    if let Some(error) = chunk.error.filter(|e| !e.is_null()) {
        let message = error_message(&error).unwrap_or_else(|| {
            format!(
                "the upstream reported an error: {}",
                excerpt(&error.to_string())
            )
        });
        return Err(ModelError::new(ErrorKind::Model, message));
    }
    let mut deltas = Vec::new();
    if let Some(choice) = chunk
        .choices
        .into_iter()
        .flatten()
        .find(|c| c.index.unwrap_or(0) == 0)
    {
        if let Some(delta) = choice.delta {
            if let Some(text) = delta
                .reasoning_content
                .or(delta.reasoning)
                .filter(|s| !s.is_empty())
            {
                deltas.push(ModelDelta::Reasoning(text));
            }
            if let Some(text) = delta.content.filter(|s| !s.is_empty()) {
                deltas.push(ModelDelta::Text(text));
            }
            for (position, call) in delta.tool_calls.into_iter().flatten().enumerate() {
                let function = call.function.unwrap_or_default();
                deltas.push(ModelDelta::ToolCall(ToolCallDelta {
                    index: call
                        .index
                        .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX)),
                    id: call.id.filter(|s| !s.is_empty()),
                    name: function.name.filter(|s| !s.is_empty()),
                    arguments: function.arguments.unwrap_or_default(),
                }));
            }
        }
        if let Some(reason) = choice.finish_reason.filter(|s| !s.is_empty()) {
            deltas.push(ModelDelta::Finish(FinishReason::from(reason)));
        }
    }
    if let Some(usage) = chunk.usage {
        let prompt_tokens = usage.prompt_tokens.unwrap_or(0);
        let completion_tokens = usage.completion_tokens.unwrap_or(0);
        deltas.push(ModelDelta::Usage(Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: usage
                .total_tokens
                .unwrap_or_else(|| prompt_tokens.saturating_add(completion_tokens)),
        }));
    }
    Ok(deltas)
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ChunkToolCall>>,
}

#[derive(Deserialize)]
struct ChunkToolCall {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<ChunkFunction>,
}

#[derive(Deserialize, Default)]
struct ChunkFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_only_chunk_yields_nothing() {
        let data = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
        assert_eq!(parse_chunk(data).unwrap(), vec![]);
    }

    #[test]
    fn usage_only_chunk() {
        let data = r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        assert_eq!(
            parse_chunk(data).unwrap(),
            vec![ModelDelta::Usage(Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7
            })]
        );
    }

    #[test]
    fn error_chunk_is_a_model_error() {
        let err = parse_chunk(r#"{"error":{"message":"overloaded","code":529}}"#).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Model);
        assert_eq!(err.message, "overloaded (code: 529)");
    }

    #[test]
    fn non_object_json_is_malformed() {
        for data in ["[1]", "\"x\"", "null", "1", "", "{\"choices\":3}"] {
            assert_eq!(
                parse_chunk(data).unwrap_err().kind,
                ErrorKind::MalformedResponse,
                "{data}"
            );
        }
    }

    #[test]
    fn excerpt_is_bounded() {
        let long = "é".repeat(1000);
        let err = parse_chunk(&format!("{{{long}")).unwrap_err();
        assert!(err.message.chars().count() < 400, "{}", err.message);
    }
}
