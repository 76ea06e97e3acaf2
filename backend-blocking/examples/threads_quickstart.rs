//! Iterate over a run's events in a plain synchronous `main`.
//!
//! ```sh
//! cargo run -p backend-blocking --example threads_quickstart
//! ```

use std::io::Write;
use std::time::Duration;

use agent_core::event::EventKind;
use agent_core::model::{ScriptedModel, Turn};
use agent_core::tool::{ToolError, typed_blocking_tool};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Add {
    a: f64,
    b: f64,
}

fn main() {
    // A scripted model: it calls the `add` tool, then answers word by word.
    let model = ScriptedModel::new([
        Turn::new().tool_call("call_1", "add", r#"{"a": 2, "b": 2}"#),
        Turn::new().words("Two plus two is four.", Duration::from_millis(100)),
    ]);
    // A blocking tool runs on the runtime's thread pool, never on the iterating thread.
    let add = typed_blocking_tool(
        "add",
        "Add two numbers",
        |args: Add| -> Result<f64, ToolError> { Ok(args.a + args.b) },
    );
    let agent = backend_blocking::agent_builder()
        .instructions("Answer briefly.")
        .model(model)
        .tool(add)
        .build()
        .expect("a valid agent");

    let mut stdout = std::io::stdout();
    for event in backend_blocking::run(&agent, "What is 2 + 2?") {
        match &event.kind {
            EventKind::TextDelta { text } => {
                print!("{text}");
                // stdout is line-buffered: flush, or the words appear all at once.
                let _ = stdout.flush();
            }
            EventKind::ToolCallCompleted { name, result, .. } => {
                println!("[{name} -> {}]", result.to_model_text());
            }
            EventKind::RunCompleted { metrics, .. } => {
                println!("\n(done in {:.0} ms)", metrics.duration_ms);
            }
            EventKind::RunFailed { error, .. } => eprintln!("\nrun failed: {}", error.message),
            _ => {}
        }
    }
}
