//! Structured output: the JSON Schema a model's answer must follow.
//!
//! An [`OutputSchema`] travels in [`ModelRequest::output`](super::ModelRequest::output); each
//! provider sends it in its own shape (OpenAI: `response_format` with `json_schema`;
//! Anthropic: `output_config.format`). The agent checks the answer against the Rust type
//! the schema came from (see
//! [`AgentBuilder::output_type`](crate::agent::AgentBuilder::output_type)).
//!
//! ```
//! use agent_core::model::OutputSchema;
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Weather { city: String, celsius: Option<f64> }
//!
//! let schema = OutputSchema::for_type::<Weather>();
//! assert_eq!(schema.name, "Weather");
//! assert!(schema.strict);
//! // Strict schemas close every object and require every property (`Option` fields accept
//! // `null`), as OpenAI's strict mode and Anthropic's structured outputs expect.
//! assert_eq!(schema.schema["additionalProperties"], false);
//! assert_eq!(schema.schema["required"], serde_json::json!(["celsius", "city"]));
//! ```

use serde_json::Value;

/// The JSON Schema a model's answer must follow, with the name providers want for it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OutputSchema {
    /// A name for the schema (OpenAI's `json_schema.name`): letters, digits, `_` and `-`, at
    /// most 64 characters.
    pub name: String,
    /// The JSON Schema of the answer.
    pub schema: Value,
    /// Ask the provider to enforce the schema (OpenAI's `strict: true`). Strict schemas have
    /// every object closed (`additionalProperties: false`) and every property required.
    pub strict: bool,
}

impl OutputSchema {
    /// A strict schema named `name` (sanitized to letters, digits, `_` and `-`); `schema` is
    /// made strict as [`OutputSchema::strict`] describes.
    pub fn new(name: impl Into<String>, schema: Value) -> Self {
        let mut schema = schema;
        make_strict(&mut schema);
        OutputSchema {
            name: sanitize_name(&name.into()),
            schema,
            strict: true,
        }
    }

    /// The strict schema of `T`, derived with `schemars` and named after it.
    pub fn for_type<T: schemars::JsonSchema>() -> Self {
        OutputSchema::new(T::schema_name(), crate::tool::schema_for::<T>())
    }

    /// The same schema, without (or with) strict enforcement. Turning strict off keeps the
    /// schema as it is.
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }
}

/// `name` with every character other than ASCII letters, digits, `_` and `-` replaced by
/// `_`, cut to 64 characters; `"output"` if nothing is left.
fn sanitize_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "output".into()
    } else {
        cleaned
    }
}

/// Close every object schema (`additionalProperties: false` unless set) and require all its
/// properties, recursively (nested properties, items, `$defs`, `anyOf`, …).
fn make_strict(schema: &mut Value) {
    match schema {
        Value::Object(fields) => {
            if let Some(Value::Object(properties)) = fields.get("properties") {
                let names: Vec<Value> = properties.keys().cloned().map(Value::String).collect();
                fields.insert("required".into(), Value::Array(names));
                fields
                    .entry("additionalProperties")
                    .or_insert(Value::Bool(false));
            }
            for value in fields.values_mut() {
                make_strict(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(make_strict),
        _ => {}
    }
}

/// The value a best-effort parse of the JSON prefix `text` gives: what the answer holds so
/// far, with open strings, arrays and objects closed and a dangling key or separator
/// dropped. `None` when no value has begun (or the prefix is not JSON).
///
/// ```
/// use agent_core::model::parse_partial_json;
/// use serde_json::json;
///
/// assert_eq!(parse_partial_json(r#"{"city": "Par"#), Some(json!({"city": "Par"})));
/// assert_eq!(parse_partial_json(r#"{"tags": ["a", "b"#), Some(json!({"tags": ["a", "b"]})));
/// assert_eq!(parse_partial_json(r#"{"city": "Paris", "cel"#), Some(json!({"city": "Paris"})));
/// assert_eq!(parse_partial_json("   "), None);
/// ```
pub fn parse_partial_json(text: &str) -> Option<Value> {
    if let Ok(value) = serde_json::from_str(text) {
        return Some(value);
    }
    // Scan once, remembering the open containers and whether we are inside a string.
    let mut stack: Vec<char> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => stack.push('}'),
            '[' => stack.push(']'),
            '}' | ']' if stack.pop() != Some(c) => return None,
            _ => {}
        }
    }
    let mut candidate = text.trim_end().to_string();
    if in_string {
        if escaped {
            candidate.pop();
        }
        // A cut `\uXXXX` escape cannot be closed: drop it.
        if let Some(at) = candidate.rfind("\\u")
            && candidate.len() - at < 6
            && !candidate[..at].ends_with('\\')
        {
            candidate.truncate(at);
        }
        candidate.push('"');
    }
    // Try closing as is; then without a dangling `"key"`, `:`, `,` or partial literal.
    for _ in 0..6 {
        if let Some(value) = close(&candidate, &stack) {
            return Some(value);
        }
        let trimmed = trim_dangling(&candidate);
        if trimmed.len() == candidate.len() {
            break;
        }
        candidate = trimmed;
    }
    None
}

fn close(candidate: &str, stack: &[char]) -> Option<Value> {
    let mut text = candidate.to_string();
    text.extend(stack.iter().rev());
    serde_json::from_str(&text).ok()
}

/// `text` without its last incomplete piece: a trailing `,` or `:`, a key awaiting its
/// value, or a partial number or literal.
fn trim_dangling(text: &str) -> String {
    let t = text.trim_end();
    if let Some(rest) = t.strip_suffix([',', ':']) {
        return rest.trim_end().to_string();
    }
    if let Some(body) = t.strip_suffix('"') {
        // A complete string: drop it (it may be a key without a value).
        let mut i = body.len();
        while let Some(at) = body[..i].rfind('"') {
            let backslashes = body[..at].chars().rev().take_while(|&c| c == '\\').count();
            if backslashes % 2 == 0 {
                return body[..at].to_string();
            }
            i = at;
        }
        return String::new();
    }
    let cut = t
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+')))
        .map_or(0, |i| i + 1);
    t[..cut].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("Vec<Weather>"), "Vec_Weather_");
        assert_eq!(sanitize_name(""), "output");
        assert_eq!(sanitize_name(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn strict_reaches_nested_objects() {
        let schema = OutputSchema::new(
            "r",
            json!({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "integer"}}}},
                   "$defs": {"D": {"type": "object", "properties": {"x": {}}, "additionalProperties": true}}}),
        );
        assert_eq!(
            schema.schema["properties"]["a"]["additionalProperties"],
            false
        );
        assert_eq!(schema.schema["properties"]["a"]["required"], json!(["b"]));
        assert_eq!(schema.schema["$defs"]["D"]["additionalProperties"], true);
    }

    #[test]
    fn partial_json_prefixes() {
        let full = r#"{"city": "Pa\"ris", "n": -12.5, "ok": true, "tags": ["a", {"b": null}]}"#;
        let mut last = None;
        for end in 0..=full.len() {
            if !full.is_char_boundary(end) {
                continue;
            }
            // Never panics, and once a value appears every longer prefix has one too.
            let value = parse_partial_json(&full[..end]);
            if last.is_some() {
                assert!(value.is_some(), "prefix {:?}", &full[..end]);
            }
            last = value.or(last);
        }
        assert_eq!(last, serde_json::from_str(full).ok());
        assert_eq!(
            parse_partial_json("{\"a\": \"\\u00"),
            Some(json!({"a": ""}))
        );
        assert_eq!(parse_partial_json("]"), None);
    }
}
