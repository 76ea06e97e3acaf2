//! Stream a real model's answer: any OpenAI-compatible server (OpenAI, Ollama, vLLM,
//! llama.cpp, LM Studio, OpenRouter, …) through the ureq client.
//!
//! ```sh
//! AGENT_BASE_URL=http://127.0.0.1:11434/v1 AGENT_MODEL=llama3.2 \
//!   cargo run -p backend-blocking --example threads_openai -- "Why is the sky blue?"
//! # or, for OpenAI itself: OPENAI_API_KEY=sk-… AGENT_MODEL=gpt-4o-mini cargo run …
//! ```

use std::io::Write;

use agent_core::event::EventKind;
use agent_core::model::OpenAiConfig;

fn main() {
    let base_url =
        std::env::var("AGENT_BASE_URL").unwrap_or_else(|_| "https://api.openai.com/v1".into());
    let model = std::env::var("AGENT_MODEL").unwrap_or_else(|_| "gpt-4o-mini".into());
    let mut config = OpenAiConfig::new(base_url, model);
    if let Ok(key) = std::env::var("OPENAI_API_KEY") {
        config = config.with_api_key(key);
    }
    let agent = backend_blocking::agent_builder()
        .instructions("Answer in three sentences at most.")
        .model(backend_blocking::openai_model(config))
        .build()
        .expect("a valid agent");

    let input = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "Why is the sky blue?".into());
    let mut stdout = std::io::stdout();
    for event in backend_blocking::run(&agent, input) {
        match &event.kind {
            EventKind::TextDelta { text } => {
                print!("{text}");
                let _ = stdout.flush();
            }
            EventKind::RunCompleted { usage, metrics, .. } => println!(
                "\n({} tokens, first token after {:.0} ms)",
                usage.total_tokens,
                metrics.time_to_first_token_ms.unwrap_or_default()
            ),
            EventKind::RunFailed { error, .. } => {
                eprintln!("\nrun failed ({:?}): {}", error.kind, error.message)
            }
            _ => {}
        }
    }
}
