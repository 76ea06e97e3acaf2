//! (7) Agent construction: time and heap bytes to build an agent with one tool.

use std::sync::Arc;
use std::time::Instant;

use agent_core::agent::Agent;
use agent_core::http::HttpClient;
use agent_core::model::{Model, OpenAiConfig, OpenAiModel};
use agent_core::runtime::{SharedRuntime, TestRuntime};
use agent_core::tool::{Tool, ToolError, typed_tool};

use crate::alloc;
use crate::config::Config;
use crate::stats::{Samples, Summary};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Weather {
    /// The city.
    city: String,
}

fn weather_tool() -> impl Tool {
    typed_tool(
        "get_weather",
        "Get the weather of a city",
        |args: Weather| async move { Ok::<_, ToolError>(format!("It is sunny in {}.", args.city)) },
    )
}

/// What is built inside the measured region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `Agent::builder()…build()` with an existing model, tool and runtime (shared `Arc`s).
    BuilderOnly,
    /// A new `OpenAiModel` (config and a shared HTTP client), an existing tool and runtime:
    /// the shape of Agno's measurement (`Agent(model=OpenAIChat(id=…), tools=[get_weather])`).
    NewModel,
    /// A new `OpenAiModel` and a new typed tool (its JSON Schema derived by schemars).
    NewModelAndTool,
}

impl Variant {
    /// All variants, in report order.
    pub const ALL: [Variant; 3] = [
        Variant::BuilderOnly,
        Variant::NewModel,
        Variant::NewModelAndTool,
    ];

    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Variant::BuilderOnly => "builder + build (model, tool, runtime already built)",
            Variant::NewModel => "new OpenAiModel + existing tool (Agno's shape)",
            Variant::NewModelAndTool => "new OpenAiModel + new typed tool (schema derived)",
        }
    }
}

struct Parts {
    model: Arc<dyn Model>,
    tool: Arc<dyn Tool>,
    runtime: SharedRuntime,
    client: Arc<dyn HttpClient>,
}

fn build(parts: &Parts, variant: Variant) -> Agent {
    let builder = Agent::builder().runtime(parts.runtime.clone());
    let new_model = || {
        OpenAiModel::new(
            OpenAiConfig::new("https://api.openai.com/v1", "gpt-4o"),
            parts.client.clone(),
        )
    };
    match variant {
        Variant::BuilderOnly => builder
            .shared_model(parts.model.clone())
            .shared_tool(parts.tool.clone()),
        Variant::NewModel => builder.model(new_model()).shared_tool(parts.tool.clone()),
        Variant::NewModelAndTool => builder.model(new_model()).tool(weather_tool()),
    }
    .build()
    .expect("agent")
}

/// One variant's numbers.
pub struct Row {
    /// What was built.
    pub variant: Variant,
    /// Nanoseconds per agent.
    pub ns: Summary,
    /// Heap bytes allocated while building one agent.
    pub allocated: u64,
    /// Heap bytes still held by the agent afterwards.
    pub retained: i64,
    /// Number of allocations.
    pub allocations: u64,
}

/// The result of the construction measurement.
pub struct ConstructResult {
    /// Agents per timing sample.
    pub iters: usize,
    /// Timing samples.
    pub reps: usize,
    /// One row per variant.
    pub rows: Vec<Row>,
}

/// Measure.
pub fn run(config: &Config) -> ConstructResult {
    let client: Arc<dyn HttpClient> = Arc::new(backend_blocking::UreqClient::new());
    let parts = Parts {
        model: Arc::new(OpenAiModel::new(
            OpenAiConfig::new("https://api.openai.com/v1", "gpt-4o"),
            client.clone(),
        )),
        tool: Arc::new(weather_tool()),
        runtime: Arc::new(TestRuntime::new()),
        client,
    };
    let mut rows = Vec::new();
    for variant in Variant::ALL {
        // Heap: one agent, counted, kept alive while counting stops.
        drop(build(&parts, variant));
        alloc::start();
        let agent = build(&parts, variant);
        let heap = alloc::stop();
        drop(agent);

        // Time: `iters` agents into a preallocated vector, so that dropping is not timed.
        let mut ns = Samples::new();
        let mut kept = Vec::with_capacity(config.construct_iters);
        for _ in 0..config.construct_reps {
            kept.clear();
            let start = Instant::now();
            for _ in 0..config.construct_iters {
                kept.push(build(&parts, variant));
            }
            ns.push(start.elapsed().as_nanos() as f64 / config.construct_iters as f64);
        }
        drop(kept);
        rows.push(Row {
            variant,
            ns: ns.summary(),
            allocated: heap.allocated,
            retained: heap.retained(),
            allocations: heap.allocations,
        });
    }
    ConstructResult {
        iters: config.construct_iters,
        reps: config.construct_reps,
        rows,
    }
}
