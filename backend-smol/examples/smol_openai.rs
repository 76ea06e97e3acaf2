//! Stream an answer from an OpenAI-compatible server (OpenAI, Ollama, vLLM, llama.cpp, …).
//!
//! ```text
//! OPENAI_BASE_URL=http://127.0.0.1:11434/v1 OPENAI_MODEL=llama3.2 \
//!     cargo run -p backend-smol --example smol_openai -- "Why is the sky blue?"
//! ```
//!
//! `OPENAI_API_KEY` is sent as a bearer token when set.

use agent_core::event::EventKind;
use agent_core::model::OpenAiConfig;
use futures_lite::StreamExt;

fn main() {
    let base_url =
        std::env::var("OPENAI_BASE_URL").unwrap_or_else(|_| "https://api.openai.com/v1".into());
    let model = std::env::var("OPENAI_MODEL").unwrap_or_else(|_| "gpt-4o-mini".into());
    let mut config = OpenAiConfig::new(base_url, model);
    if let Ok(key) = std::env::var("OPENAI_API_KEY") {
        config = config.with_api_key(key);
    }
    let agent = backend_smol::agent_builder()
        .model(backend_smol::openai_model(config))
        .build()
        .expect("a valid agent");

    let input = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "Say hello in five words.".into());
    smol::block_on(async {
        let mut run = agent.run(input);
        while let Some(event) = run.next().await {
            match event.kind {
                EventKind::TextDelta { text } => print!("{text}"),
                EventKind::RunFailed { error, .. } => eprintln!("\nfailed: {error:?}"),
                _ => {}
            }
        }
        println!();
    });
}
