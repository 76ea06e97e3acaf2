//! Quickstart: run an agent on tokio and print its answer to stdout as it streams.
//!
//! ```text
//! cargo run -p backend-tokio --example tokio_stream -- "What is 6 times 7?"
//! ```
//!
//! With `OPENAI_API_KEY` set it asks OpenAI (`OPENAI_MODEL`, default `gpt-4o-mini`; set
//! `OPENAI_BASE_URL` for any OpenAI-compatible server); otherwise a scripted model answers.

use std::io::Write;
use std::time::Duration;

use agent_core::event::EventKind;
use agent_core::model::{OpenAiConfig, ScriptedModel, Turn};
use futures_util::StreamExt;

#[tokio::main]
async fn main() {
    let input = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "Say hello.".into());
    let builder = backend_tokio::agent_builder().instructions("Answer briefly.");
    let builder = match std::env::var("OPENAI_API_KEY") {
        Ok(key) => {
            let base_url = std::env::var("OPENAI_BASE_URL")
                .unwrap_or_else(|_| "https://api.openai.com/v1".into());
            let model = std::env::var("OPENAI_MODEL").unwrap_or_else(|_| "gpt-4o-mini".into());
            builder.model(backend_tokio::openai_model(
                OpenAiConfig::new(base_url, model).with_api_key(key),
            ))
        }
        Err(_) => builder.model(ScriptedModel::new([Turn::new().words(
            "Hello! I am a scripted model streaming word by word.",
            Duration::from_millis(100),
        )])),
    };
    let agent = builder.build().expect("a valid agent");

    // `run` returns the event stream at once; each event arrives the moment it exists.
    let mut run = agent.run(input);
    let mut stdout = std::io::stdout();
    while let Some(event) = run.next().await {
        match event.kind {
            EventKind::TextDelta { text } => {
                // stdout is line-buffered: flush so each delta shows as it arrives.
                let _ = write!(stdout, "{text}");
                let _ = stdout.flush();
            }
            EventKind::RunCompleted { usage, .. } => {
                println!("\n[{} tokens]", usage.total_tokens);
            }
            EventKind::RunFailed { error, .. } => eprintln!("\nrun failed: {}", error.message),
            _ => {}
        }
    }
}
