//! Structured output of a run: the type the answer must parse as, what to do when it does
//! not, and whether to report partial objects while it streams.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::OutputSchema;

/// What a run does when its answer does not parse as the output type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnInvalidOutput {
    /// Fail the run with [`ErrorKind::InvalidOutput`](crate::error::ErrorKind::InvalidOutput);
    /// the raw answer is kept as the failure's `partial_text`. The default.
    #[default]
    Fail,
    /// Ask the model once more, feeding back the validation error (one more model round,
    /// counted against `max_rounds`); fail as [`OnInvalidOutput::Fail`] if the second answer
    /// is invalid too.
    RetryOnce,
}

type Validator = dyn Fn(&str) -> Result<Value, String> + Send + Sync;

/// The type a run's answer must be: its JSON Schema (sent to the model), a check that the
/// answer deserializes as the type, and the policy for invalid answers.
///
/// Give it to [`AgentBuilder::output`](super::AgentBuilder::output) (or
/// [`output_type`](super::AgentBuilder::output_type)) for every run of an agent, or to
/// [`RunOptions::output`](super::RunOptions::output) for one run. The answer still streams
/// as `text_delta` events; `run_completed` then carries it parsed, as JSON, in its `output`
/// field, and [`EventKind::parsed_output`](crate::event::EventKind::parsed_output) turns it
/// back into the type.
///
/// ```
/// use agent_core::agent::{OnInvalidOutput, OutputType};
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Verdict { guilty: bool, reason: String }
///
/// let output = OutputType::of::<Verdict>()
///     .on_invalid(OnInvalidOutput::RetryOnce)
///     .partial_output(true);
/// assert_eq!(output.schema().name, "Verdict");
/// assert!(output.validate(r#"{"guilty": false, "reason": "alibi"}"#).is_ok());
/// let error = output.validate(r#"{"guilty": "maybe"}"#).unwrap_err();
/// assert!(error.contains("expected a boolean at line 1 column 18"), "{error}");
/// ```
#[derive(Clone)]
pub struct OutputType {
    schema: OutputSchema,
    validate: Arc<Validator>,
    type_name: &'static str,
    on_invalid: OnInvalidOutput,
    partial: bool,
}

impl OutputType {
    /// The output type `T`, with its schema derived by `schemars` (strict), failing the run
    /// on an invalid answer and reporting no partial output.
    pub fn of<T: DeserializeOwned + schemars::JsonSchema + 'static>() -> Self {
        OutputType {
            schema: OutputSchema::for_type::<T>(),
            validate: Arc::new(|text| {
                let json = answer_json(text)?;
                let value: Value = serde_json::from_str(json)
                    .map_err(|error| format!("the answer is not valid JSON: {error}"))?;
                // Deserializing from the text (not the value) puts the line and column of
                // the mismatch in the message the model may get back.
                serde_json::from_str::<T>(json).map_err(|error| error.to_string())?;
                Ok(value)
            }),
            type_name: std::any::type_name::<T>(),
            on_invalid: OnInvalidOutput::Fail,
            partial: false,
        }
    }

    /// Send `schema` instead of the derived one (a hand-tuned schema, or a non-strict one).
    /// Answers are still checked against the type.
    pub fn with_schema(mut self, schema: OutputSchema) -> Self {
        self.schema = schema;
        self
    }

    /// What to do with an invalid answer (default [`OnInvalidOutput::Fail`]).
    pub fn on_invalid(mut self, on_invalid: OnInvalidOutput) -> Self {
        self.on_invalid = on_invalid;
        self
    }

    /// Emit a `partial_output` event whenever the best-effort parse of the answer so far
    /// ([`parse_partial_json`](crate::model::parse_partial_json)) changes (default off).
    /// Each text delta re-parses the round's text, so this suits answers of modest size.
    pub fn partial_output(mut self, partial: bool) -> Self {
        self.partial = partial;
        self
    }

    /// The schema sent to the model.
    pub fn schema(&self) -> &OutputSchema {
        &self.schema
    }

    /// The policy for invalid answers.
    pub fn invalid_policy(&self) -> OnInvalidOutput {
        self.on_invalid
    }

    /// Whether partial output is reported.
    pub fn reports_partial_output(&self) -> bool {
        self.partial
    }

    /// Check an answer: its JSON value when it parses as the type (surrounding whitespace
    /// and a Markdown code fence are tolerated), else why not.
    pub fn validate(&self, text: &str) -> Result<Value, String> {
        (self.validate)(text)
    }
}

impl fmt::Debug for OutputType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputType")
            .field("type", &self.type_name)
            .field("schema", &self.schema.name)
            .field("on_invalid", &self.on_invalid)
            .field("partial", &self.partial)
            .finish()
    }
}

impl PartialEq for OutputType {
    fn eq(&self, other: &Self) -> bool {
        self.type_name == other.type_name
            && self.schema == other.schema
            && self.on_invalid == other.on_invalid
            && self.partial == other.partial
    }
}

/// The JSON text of an answer: trimmed, and unwrapped from a ```` ```json ```` fence if the
/// model added one.
fn answer_json(text: &str) -> Result<&str, String> {
    let mut text = text.trim();
    if let Some(rest) = text.strip_prefix("```") {
        let rest = rest.strip_prefix("json").unwrap_or(rest);
        text = rest.strip_suffix("```").unwrap_or(rest).trim();
    }
    if text.is_empty() {
        return Err("the answer is empty, not JSON".into());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[test]
    fn fences_and_whitespace_are_tolerated() {
        let output = OutputType::of::<Point>();
        assert_eq!(
            output
                .validate("\n```json\n{\"x\":1,\"y\":2}\n```\n")
                .unwrap(),
            serde_json::json!({"x": 1, "y": 2})
        );
        assert!(output.validate("").unwrap_err().contains("empty"));
        assert!(
            output
                .validate("{\"x\":1")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(output.validate("{\"x\":1}").unwrap_err().contains("`y`"));
    }
}
