//! Models: anything that streams [`ModelDelta`]s for a conversation.
//!
//! Three providers ship with the core: [`OpenAiModel`] (any OpenAI-compatible Chat
//! Completions endpoint) and [`AnthropicModel`] (the Anthropic Messages API), both over an
//! [`HttpClient`](crate::http::HttpClient), and [`ScriptedModel`] (a deterministic script,
//! for tests, demos and benchmarks).
//!
//! ```
//! use std::sync::Arc;
//! use futures_util::StreamExt;
//! use agent_core::model::{Message, Model, ModelContext, ModelDelta, ModelRequest, ScriptedModel, Turn};
//! use agent_core::runtime::{block_on, TestRuntime};
//!
//! let model = ScriptedModel::new([Turn::new().text("Hello").text(", world")]);
//! let request = ModelRequest::new(vec![Message::user("hi")]);
//! let mut stream = model.stream(request, ModelContext::new(Arc::new(TestRuntime::new())));
//! let first = block_on(stream.next()).unwrap().unwrap();
//! assert_eq!(first, ModelDelta::Text("Hello".into()));
//! ```

mod anthropic;
mod openai;
mod output;
mod scripted;
mod transport;

use std::fmt;
use std::pin::Pin;

use futures_core::Stream;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::policy::Timeouts;
use crate::runtime::SharedRuntime;
use crate::tool::ToolDefinition;

pub use anthropic::{AnthropicConfig, AnthropicModel};
pub use openai::{OpenAiConfig, OpenAiModel};
pub use output::{OutputSchema, parse_partial_json};
pub use scripted::{ScriptedModel, Step, Turn};

/// One message of a conversation, in the shape Chat Completions APIs use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    /// Instructions for the model.
    System {
        /// The instructions.
        content: String,
    },
    /// What the user said.
    User {
        /// The user's text.
        content: String,
    },
    /// What the model answered: text and/or tool calls.
    Assistant {
        /// The text of the answer (may be empty when the model only called tools).
        content: String,
        /// The tool calls the model made in this turn.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, given back to the model.
    Tool {
        /// The id of the call this answers.
        call_id: String,
        /// The output (or error message) as text.
        content: String,
    },
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Message::System {
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message::User {
            content: content.into(),
        }
    }

    /// An assistant message with text only.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message::Assistant {
            content: content.into(),
            tool_calls: Vec::new(),
        }
    }
}

/// A complete tool call, as recorded in the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call id.
    pub id: String,
    /// The tool name.
    pub name: String,
    /// The arguments as the model wrote them (JSON text, possibly invalid).
    pub arguments: String,
}

/// What a model is asked: the conversation so far and the tools it may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRequest {
    /// The conversation, oldest first (system instructions first when there are any).
    pub messages: Vec<Message>,
    /// The tools the model may call.
    pub tools: Vec<ToolDefinition>,
    /// The JSON Schema the answer must follow (structured output), if any. Providers send
    /// it in their own shape; models that cannot enforce a schema ignore it.
    pub output: Option<OutputSchema>,
}

impl ModelRequest {
    /// A request with `messages`, no tools and no output schema.
    pub fn new(messages: Vec<Message>) -> Self {
        ModelRequest {
            messages,
            tools: Vec::new(),
            output: None,
        }
    }

    /// The same request with these tools.
    pub fn with_tools(mut self, tools: Vec<ToolDefinition>) -> Self {
        self.tools = tools;
        self
    }

    /// The same request asking for an answer that follows `output`.
    pub fn with_output(mut self, output: OutputSchema) -> Self {
        self.output = Some(output);
        self
    }

    /// The content of the last user message, if any.
    pub fn last_user_text(&self) -> Option<&str> {
        self.messages.iter().rev().find_map(|m| match m {
            Message::User { content } => Some(content.as_str()),
            _ => None,
        })
    }
}

/// What a model may use while streaming: the run's runtime (for timers and retries) and the
/// timeouts the agent or the run asks for.
#[derive(Clone)]
pub struct ModelContext {
    /// The runtime of the run.
    pub runtime: SharedRuntime,
    /// Timeouts that replace the model's own configuration for this request, when set (from
    /// [`AgentBuilder::timeouts`](crate::agent::AgentBuilder::timeouts) or
    /// [`RunOptions::timeouts`](crate::agent::RunOptions::timeouts)). Models without
    /// timeouts of their own ignore it.
    pub timeouts: Option<Timeouts>,
}

impl ModelContext {
    /// A context over `runtime`, with no timeout override.
    pub fn new(runtime: SharedRuntime) -> Self {
        ModelContext {
            runtime,
            timeouts: None,
        }
    }

    /// Override the model's timeouts for this request.
    pub fn with_timeouts(mut self, timeouts: Option<Timeouts>) -> Self {
        self.timeouts = timeouts;
        self
    }
}

impl fmt::Debug for ModelContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelContext")
            .field("runtime", &self.runtime.name())
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

/// One piece of a model's streamed answer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ModelDelta {
    /// Answer text to append.
    Text(String),
    /// Reasoning text to append (models that expose their reasoning).
    Reasoning(String),
    /// A piece of a tool call; pieces with the same `index` belong to the same call.
    ToolCall(ToolCallDelta),
    /// Token usage of the request (usually once, near the end).
    Usage(Usage),
    /// Why the model stopped.
    Finish(FinishReason),
}

/// A piece of a tool call. The first piece of a call usually carries `id` and `name`; the
/// `arguments` pieces are concatenated in order. Calls of one turn may interleave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// Which call of the turn this piece belongs to.
    pub index: u32,
    /// The call id, when this piece carries it.
    pub id: Option<String>,
    /// The tool name, when this piece carries it.
    pub name: Option<String>,
    /// A fragment of the JSON arguments.
    pub arguments: String,
}

/// Token counts of one or more model requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Sum of both.
    pub total_tokens: u64,
}

impl Usage {
    /// Add `other` to `self`, field by field (saturating).
    pub fn add(&mut self, other: &Usage) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
    }
}

/// Why a model stopped generating. Serialized as the provider's string (`"stop"`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum FinishReason {
    /// Natural end of the answer.
    Stop,
    /// The token limit was reached.
    Length,
    /// The model wants tool calls run.
    ToolCalls,
    /// Output was filtered.
    ContentFilter,
    /// Any other reason, as the provider spelled it.
    Other(String),
}

impl From<String> for FinishReason {
    fn from(s: String) -> Self {
        match s.as_str() {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "tool_calls" | "function_call" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            _ => FinishReason::Other(s),
        }
    }
}

impl From<FinishReason> for String {
    fn from(r: FinishReason) -> Self {
        match r {
            FinishReason::Stop => "stop".into(),
            FinishReason::Length => "length".into(),
            FinishReason::ToolCalls => "tool_calls".into(),
            FinishReason::ContentFilter => "content_filter".into(),
            FinishReason::Other(s) => s,
        }
    }
}

/// The stream a [`Model`] returns.
pub type ModelStream = Pin<Box<dyn Stream<Item = Result<ModelDelta, ModelError>> + Send + 'static>>;

/// A language model that streams its answer.
///
/// The contract (the agent and the conformance suite rely on it):
///
/// * `stream` returns at once; no I/O happens until the stream is first polled.
/// * Each delta is yielded as soon as it exists: never collected first.
/// * The stream ends with `None` when the answer is complete. An `Err` item ends the answer;
///   the agent stops polling after it.
/// * Dropping the stream cancels the request (an HTTP connection is closed).
/// * The stream must not panic; if it does, the agent reports the run as failed with
///   [`ErrorKind::Internal`](crate::error::ErrorKind::Internal).
pub trait Model: Send + Sync + fmt::Debug + 'static {
    /// The model's name, for logs and metrics.
    fn name(&self) -> &str;

    /// Start streaming an answer to `request`.
    fn stream(&self, request: ModelRequest, cx: ModelContext) -> ModelStream;
}

impl<M: Model + ?Sized> Model for std::sync::Arc<M> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn stream(&self, request: ModelRequest, cx: ModelContext) -> ModelStream {
        (**self).stream(request, cx)
    }
}
