//! Ask a human before a tool runs: the iterator blocks while the call waits, and a line typed
//! on stdin decides it (`y` approves, anything else denies, with the line as the reason).
//!
//! ```sh
//! cargo run -p backend-blocking --example threads_approval
//! echo y | cargo run -p backend-blocking --example threads_approval
//! ```
//!
//! Decided from another thread: the decision wakes the iterator, which was parked in `next`.

use std::io::{BufRead, Write};
use std::time::Duration;

use agent_core::event::EventKind;
use agent_core::model::{ScriptedModel, Turn};
use agent_core::tool::{ToolError, typed_blocking_tool};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Delete {
    path: String,
}

fn main() {
    let model = ScriptedModel::from_fn(|request, round| {
        if round == 0 {
            return Turn::new().tool_call("call_1", "delete", r#"{"path": "/tmp/report.txt"}"#);
        }
        // The model sees what happened to its call: the output, or the denial.
        let outcome = request
            .messages
            .iter()
            .rev()
            .find_map(|m| match m {
                agent_core::model::Message::Tool { content, .. } => Some(content.clone()),
                _ => None,
            })
            .unwrap_or_default();
        Turn::new().words(
            &format!("The tool said: {outcome}"),
            Duration::from_millis(30),
        )
    });
    let delete = typed_blocking_tool("delete", "Delete a file", |args: Delete| {
        Ok::<_, ToolError>(format!("pretended to delete {}", args.path))
    })
    .require_approval();
    let agent = backend_blocking::agent_builder()
        .model(model)
        .tool(delete)
        .approval_timeout(Duration::from_secs(60))
        .build()
        .expect("a valid agent");

    let mut events = backend_blocking::run(&agent, "Delete the report");
    let approvals = events.approvals();
    let mut stdout = std::io::stdout();
    for event in events.by_ref() {
        match &event.kind {
            EventKind::ToolApprovalRequested {
                call_id,
                name,
                arguments,
            } => {
                print!("{name}({arguments}) wants to run. Allow? [y/N] ");
                let _ = stdout.flush();
                let approvals = approvals.clone();
                let call_id = call_id.clone();
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let _ = std::io::stdin().lock().read_line(&mut line);
                    let line = line.trim();
                    let decided = if line.eq_ignore_ascii_case("y") {
                        approvals.approve(&call_id)
                    } else {
                        approvals.deny(&call_id, line)
                    };
                    if let Err(err) = decided {
                        eprintln!("{err}");
                    }
                });
            }
            EventKind::ToolApprovalDecided {
                approved, reason, ..
            } => println!(
                "\n[{}{}]",
                if *approved { "approved" } else { "denied" },
                reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            EventKind::TextDelta { text } => {
                print!("{text}");
                let _ = stdout.flush();
            }
            EventKind::RunCompleted { .. } => println!(),
            _ => {}
        }
    }
}
