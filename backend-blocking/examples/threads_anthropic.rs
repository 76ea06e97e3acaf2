//! Stream Claude's answer through the Anthropic Messages API on plain threads (the ureq
//! client), reasoning and tool calls included.
//!
//! ```sh
//! ANTHROPIC_API_KEY=sk-ant-… cargo run -p backend-blocking --example threads_anthropic -- "What is 17 * 23?"
//! # another model or a Messages proxy: AGENT_MODEL=claude-haiku-4-5 AGENT_BASE_URL=http://127.0.0.1:4000/v1
//! ```

use std::io::Write;
use std::sync::Arc;

use agent_core::event::EventKind;
use agent_core::model::{AnthropicConfig, AnthropicModel};
use agent_core::tool::{ToolError, typed_tool};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Multiply {
    a: i64,
    b: i64,
}

fn main() {
    let Ok(key) = std::env::var("ANTHROPIC_API_KEY") else {
        eprintln!("set ANTHROPIC_API_KEY to run this example");
        std::process::exit(2);
    };
    let base_url = std::env::var("AGENT_BASE_URL")
        .unwrap_or_else(|_| AnthropicConfig::ANTHROPIC_BASE_URL.into());
    let model = std::env::var("AGENT_MODEL").unwrap_or_else(|_| "claude-sonnet-4-5".into());
    let config = AnthropicConfig::new(base_url, model)
        .with_api_key(key)
        .with_max_tokens(1024);
    let agent = backend_blocking::agent_builder()
        .instructions("Answer in one sentence; use the multiply tool for arithmetic.")
        .model(AnthropicModel::new(
            config,
            Arc::new(backend_blocking::UreqClient::new()),
        ))
        .tool(typed_tool(
            "multiply",
            "Multiply two integers",
            |args: Multiply| async move { Ok::<_, ToolError>(args.a * args.b) },
        ))
        .build()
        .expect("a valid agent");

    let input = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "What is 17 * 23?".into());
    let mut stdout = std::io::stdout();
    for event in backend_blocking::run(&agent, input) {
        match &event.kind {
            EventKind::TextDelta { text } => {
                print!("{text}");
                let _ = stdout.flush();
            }
            EventKind::ToolCallStarted {
                name, arguments, ..
            } => eprintln!("[calling {name} {arguments}]"),
            EventKind::RunCompleted { usage, .. } => {
                println!("\n({} tokens)", usage.total_tokens)
            }
            EventKind::RunFailed { error, .. } => {
                eprintln!("\nrun failed ({}): {}", error.kind, error.message)
            }
            _ => {}
        }
    }
}
