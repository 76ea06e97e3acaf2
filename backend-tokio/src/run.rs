//! Tokio-flavoured entry points: an agent builder on the current runtime, an OpenAI-compatible
//! model on [`TokioClient`](crate::TokioClient), and a run handed to another task through a channel.

use std::sync::Arc;

use agent_core::agent::{Agent, AgentBuilder, RunStream};
use agent_core::event::Event;
use agent_core::model::{OpenAiConfig, OpenAiModel};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::TokioRuntime;

/// An [`AgentBuilder`] whose runtime is the tokio runtime this is called in.
///
/// ```
/// use futures_util::StreamExt;
/// use agent_core::model::{ScriptedModel, Turn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let agent = backend_tokio::agent_builder()
///     .model(ScriptedModel::new([Turn::new().text("Hi!")]))
///     .build()
///     .unwrap();
/// let events: Vec<_> = agent.run("hello").collect().await;
/// assert!(events.last().unwrap().is_terminal());
/// # }
/// ```
///
/// # Panics
///
/// Outside a tokio runtime (like [`tokio::runtime::Handle::current`]); build the agent with
/// `Agent::builder().runtime(TokioRuntime::from_handle(handle))` there.
#[track_caller]
pub fn agent_builder() -> AgentBuilder {
    Agent::builder().runtime(Arc::new(TokioRuntime::current()))
}

/// An [`OpenAiModel`] for `config`, speaking through a new [`TokioClient`](crate::TokioClient).
///
/// Not [`ReqwestClient`](crate::ReqwestClient): reqwest reads the body on a connection task of its own and hands
/// it over one HTTP chunk per wake-up, so a run polled from `#[tokio::main]` (on
/// `block_on`'s thread, while reqwest's task runs on a worker) crossed threads for every
/// token, at about a tenth of the throughput of the same run in a spawned task.
/// `TokioClient` decodes the body in the task that polls it, so both shapes run at the
/// same speed (docs/performance.md, section 2). For reqwest's own features, build the
/// model with `OpenAiModel::new(config, Arc::new(ReqwestClient::new()))`.
///
/// ```
/// use agent_core::model::OpenAiConfig;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let model = backend_tokio::openai_model(OpenAiConfig::new("http://127.0.0.1:11434/v1", "llama3.2"));
/// let agent = backend_tokio::agent_builder().model(model).build().unwrap();
/// # let _ = agent;
/// # }
/// ```
pub fn openai_model(config: OpenAiConfig) -> OpenAiModel {
    OpenAiModel::new(config, Arc::new(crate::TokioClient::new()))
}

/// Drive `run` on its own tokio task and receive its events through a bounded channel of
/// `capacity` events (at least 1).
///
/// Use it to hand a run to another task (a WebSocket writer, a UI loop). The task sends each
/// event the moment it exists; when the channel is full the run waits (backpressure).
/// Dropping the receiver cancels the run, as dropping the [`RunStream`] would. To consume a
/// run in the current task, poll the `RunStream` directly: it already is a `Stream`.
///
/// ```
/// use agent_core::model::{ScriptedModel, Turn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let agent = backend_tokio::agent_builder()
///     .model(ScriptedModel::new([Turn::new().text("Hi!")]))
///     .build()
///     .unwrap();
/// let mut events = backend_tokio::spawn_run(agent.run("hello"), 16);
/// while let Some(event) = events.recv().await {
///     println!("{}", serde_json::to_string(&event).unwrap());
/// }
/// # }
/// ```
///
/// # Panics
///
/// Outside a tokio runtime, like [`tokio::spawn`].
#[track_caller]
pub fn spawn_run(run: RunStream, capacity: usize) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    tokio::spawn(async move {
        let mut run = run;
        loop {
            let event = tokio::select! {
                biased;
                // The receiver is gone: dropping the run cancels it.
                _ = tx.closed() => break,
                event = run.next() => event,
            };
            let Some(event) = event else { break };
            if tx.send(event).await.is_err() {
                break;
            }
        }
    });
    rx
}
