//! Whatever arguments a model writes for a tool call — invalid JSON, wrong types, huge
//! nesting — the run goes on: the call completes with a result or an error, and the run
//! ends with exactly one terminal event.
#![no_main]

use std::sync::{Arc, OnceLock};

use agent_core::agent::Agent;
use agent_core::event::EventKind;
use agent_core::model::{ScriptedModel, Turn};
use agent_core::runtime::{TestRuntime, block_on};
use agent_core::tool::{ToolError, typed_tool};
use futures_util::StreamExt;
use libfuzzer_sys::fuzz_target;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Args {
    #[allow(dead_code)]
    name: String,
    #[allow(dead_code)]
    count: Option<u32>,
    #[allow(dead_code)]
    tags: Vec<String>,
}

fn runtime() -> Arc<TestRuntime> {
    static RT: OnceLock<Arc<TestRuntime>> = OnceLock::new();
    RT.get_or_init(|| Arc::new(TestRuntime::new())).clone()
}

fuzz_target!(|data: &[u8]| {
    let arguments = String::from_utf8_lossy(data).into_owned();
    let model = ScriptedModel::new([
        Turn::new().tool_call("c1", "typed", arguments),
        Turn::new().text("done"),
    ]);
    let agent = Agent::builder()
        .model(model)
        .tool(typed_tool("typed", "typed args", |_: Args| async { Ok::<_, ToolError>("ok") }))
        .runtime(runtime())
        .build()
        .unwrap();
    let events: Vec<_> = block_on(agent.run("x").collect());
    let terminals = events.iter().filter(|e| e.is_terminal()).count();
    assert_eq!(terminals, 1);
    assert!(matches!(events.last().unwrap().kind, EventKind::RunCompleted { .. }));
    assert!(events.iter().any(|e| matches!(e.kind, EventKind::ToolCallCompleted { .. })));
});
