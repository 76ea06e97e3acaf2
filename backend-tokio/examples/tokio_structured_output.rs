//! Structured output on tokio: the answer streams as text, partial objects show up as it
//! grows, and the run ends with a typed value.
//!
//! ```text
//! cargo run -p backend-tokio --example tokio_structured_output
//! ```
//!
//! With `OPENAI_API_KEY` set it asks OpenAI (`OPENAI_MODEL`, default `gpt-4o-mini`), which
//! is sent the schema as a strict `json_schema` response format; otherwise a scripted model
//! answers.

use std::time::Duration;

use agent_core::agent::{OnInvalidOutput, OutputType};
use agent_core::event::EventKind;
use agent_core::model::{OpenAiConfig, ScriptedModel, Turn};
use futures_util::StreamExt;

/// The answer's type: its JSON Schema is derived and sent with the request.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Trip {
    city: String,
    days: u32,
    highlights: Vec<String>,
}

#[tokio::main]
async fn main() {
    let builder = backend_tokio::agent_builder()
        .instructions("Plan a short city trip. Answer with JSON only.")
        .output(
            OutputType::of::<Trip>()
                .partial_output(true)
                .on_invalid(OnInvalidOutput::RetryOnce),
        );
    let builder = match std::env::var("OPENAI_API_KEY") {
        Ok(key) => {
            let model = std::env::var("OPENAI_MODEL").unwrap_or_else(|_| "gpt-4o-mini".into());
            builder.model(backend_tokio::openai_model(OpenAiConfig::openai(
                model, key,
            )))
        }
        Err(_) => builder.model(ScriptedModel::new([Turn::new().words(
            r#"{"city": "Lisbon", "days": 3, "highlights": ["Alfama", "Belém", "LX Factory"]}"#,
            Duration::from_millis(60),
        )])),
    };
    let agent = builder.build().expect("a valid agent");

    let mut run = agent.run("Three days somewhere sunny.");
    while let Some(event) = run.next().await {
        match &event.kind {
            EventKind::PartialOutput { output } => eprintln!("so far: {output}"),
            EventKind::RunCompleted { .. } => match event.kind.parsed_output::<Trip>() {
                Some(Ok(trip)) => println!(
                    "{} days in {}: {}",
                    trip.days,
                    trip.city,
                    trip.highlights.join(", ")
                ),
                Some(Err(error)) => eprintln!("unexpected output: {error}"),
                None => eprintln!("no output"),
            },
            EventKind::RunFailed { error, .. } => {
                eprintln!("run failed ({}): {}", error.kind, error.message)
            }
            _ => {}
        }
    }
}
