//! The Anthropic Messages streaming provider: [`AnthropicModel`].
//!
//! It sends `POST {base_url}/messages` with `stream: true` through an
//! [`HttpClient`], with the `x-api-key` and `anthropic-version` headers, and turns the
//! named server-sent events into [`ModelDelta`](super::ModelDelta)s as they arrive: text
//! deltas, `thinking` deltas as reasoning, `tool_use` blocks and their `input_json_delta`s
//! as tool-call pieces, the stop reason and the usage. Retries, timeouts and errors behave
//! exactly as for [`OpenAiModel`](super::OpenAiModel): they are the same code.
//!
//! ```
//! use agent_core::model::AnthropicConfig;
//!
//! let config = AnthropicConfig::anthropic("claude-sonnet-4-5", "sk-ant-secret")
//!     .with_max_tokens(1024)
//!     .with_thinking(2048);
//! assert_eq!(config.base_url, "https://api.anthropic.com/v1");
//! assert_eq!(config.version, "2023-06-01");
//! assert_eq!(config.extra_body["thinking"]["budget_tokens"], 2048);
//! // The key never shows in `Debug`.
//! assert!(!format!("{config:?}").contains("sk-ant-secret"));
//! ```

mod request;
mod wire;

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::transport::{Endpoint, SseModelStream, redact_credentials};
use super::{Model, ModelContext, ModelRequest, ModelStream};
use crate::http::HttpClient;
use crate::policy::{RetryPolicy, Timeouts};
use crate::secret::Secret;
use crate::sse::SseLimits;

/// Configuration of an [`AnthropicModel`].
///
/// Build one with [`AnthropicConfig::anthropic`] (the Anthropic API) or
/// [`AnthropicConfig::new`] (a compatible endpoint or a proxy) and the `with_*` setters;
/// every field is public for inspection and adjustment. `Debug` never prints the API key,
/// header values or credentials in `base_url`:
///
/// ```
/// use agent_core::model::AnthropicConfig;
///
/// let config = AnthropicConfig::new("https://llm-proxy.internal/v1", "claude-haiku-4-5")
///     .with_api_key("sk-ant-live")
///     .with_header("anthropic-beta", "secret-beta-token");
/// let debug = format!("{config:?}");
/// assert!(debug.contains("claude-haiku-4-5") && debug.contains("anthropic-beta"));
/// assert!(!debug.contains("sk-ant-live") && !debug.contains("secret-beta-token"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct AnthropicConfig {
    /// Base URL up to and including `/v1`, e.g. `https://api.anthropic.com/v1`. Requests go
    /// to `{base_url}/messages` (a trailing `/` is ignored).
    pub base_url: String,
    /// API key sent as `x-api-key`; none sends no key (a proxy that adds it).
    pub api_key: Option<Secret>,
    /// Model name, sent as `model`.
    pub model: String,
    /// The `anthropic-version` header. Default [`AnthropicConfig::VERSION`].
    pub version: String,
    /// Maximum number of tokens to generate, sent as `max_tokens` (the API requires it).
    /// Default [`AnthropicConfig::DEFAULT_MAX_TOKENS`].
    pub max_tokens: u32,
    /// Sampling temperature, sent as `temperature` when set.
    pub temperature: Option<f32>,
    /// Extra headers sent with every request (after the standard ones), e.g.
    /// `anthropic-beta`.
    pub extra_headers: Vec<(String, String)>,
    /// Retry policy (before the first body byte only). Default [`RetryPolicy::default`].
    pub retry: RetryPolicy,
    /// Timeouts (connect, first byte, inactivity). Default [`Timeouts::default`].
    pub timeouts: Timeouts,
    /// Limits of the SSE decoder. Default [`SseLimits::default`].
    pub sse_limits: SseLimits,
    /// Further top-level fields of the request body (`top_k`, `stop_sequences`, `thinking`,
    /// `metadata`, …), added last; they replace same-named fields except `messages` and
    /// `stream`, and an `output_config` object is merged with structured output's.
    pub extra_body: Map<String, Value>,
}

impl AnthropicConfig {
    /// Base URL of the Anthropic API, used by [`AnthropicConfig::anthropic`].
    pub const ANTHROPIC_BASE_URL: &'static str = "https://api.anthropic.com/v1";
    /// The `anthropic-version` sent by default.
    pub const VERSION: &'static str = "2023-06-01";
    /// Default of [`max_tokens`](Self::max_tokens).
    pub const DEFAULT_MAX_TOKENS: u32 = 4096;

    /// A configuration for the Messages endpoint at `base_url` (up to and including `/v1`)
    /// and model `model`, with no API key and the defaults.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        AnthropicConfig {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            version: Self::VERSION.into(),
            max_tokens: Self::DEFAULT_MAX_TOKENS,
            temperature: None,
            extra_headers: Vec::new(),
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            sse_limits: SseLimits::default(),
            extra_body: Map::new(),
        }
    }

    /// A configuration for the Anthropic API ([`Self::ANTHROPIC_BASE_URL`]) with `api_key`.
    pub fn anthropic(model: impl Into<String>, api_key: impl Into<Secret>) -> Self {
        AnthropicConfig::new(Self::ANTHROPIC_BASE_URL, model).with_api_key(api_key)
    }

    /// Send `api_key` as `x-api-key`.
    pub fn with_api_key(mut self, api_key: impl Into<Secret>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// Set the maximum number of tokens to generate.
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Set the sampling temperature.
    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Turn on extended thinking with a budget of `budget_tokens` (it must be below
    /// [`max_tokens`](Self::max_tokens)); the thinking streams as reasoning deltas.
    ///
    /// The core does not keep thinking blocks (and their signatures) in the conversation, so
    /// a tool round after thinking is sent without them; the API accepts that only for
    /// models and versions that do not require thinking blocks in tool loops.
    pub fn with_thinking(self, budget_tokens: u32) -> Self {
        self.with_body_field(
            "thinking",
            json!({"type": "enabled", "budget_tokens": budget_tokens}),
        )
    }

    /// Set the `anthropic-version` header.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Add a header sent with every request.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_headers.push((name.into(), value.into()));
        self
    }

    /// Set the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Set the timeouts.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Set the limits of the SSE decoder.
    pub fn with_sse_limits(mut self, sse_limits: SseLimits) -> Self {
        self.sse_limits = sse_limits;
        self
    }

    /// Add a top-level field to the request body (see [`extra_body`](Self::extra_body)).
    pub fn with_body_field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra_body.insert(name.into(), value.into());
        self
    }
}

impl fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicConfig")
            .field("base_url", &redact_credentials(&self.base_url))
            .field("api_key", &self.api_key)
            .field("model", &self.model)
            .field("version", &self.version)
            .field("max_tokens", &self.max_tokens)
            .field("temperature", &self.temperature)
            .field(
                "extra_headers",
                &super::transport::RedactedHeaders(&self.extra_headers),
            )
            .field("retry", &self.retry)
            .field("timeouts", &self.timeouts)
            .field("sse_limits", &self.sse_limits)
            .field("extra_body", &self.extra_body)
            .finish()
    }
}

/// A model served by the Anthropic Messages API (or a compatible endpoint).
///
/// Each [`stream`](Model::stream) call sends one streaming request and yields the deltas of
/// the answer as its events arrive, each as soon as its event has been parsed.
///
/// # Mapping
///
/// | Messages event | delta |
/// |---|---|
/// | `message_start` | none; its input token count is kept for the usage |
/// | `content_block_start` `text` / `thinking` | `Text` / `Reasoning` (when non-empty) |
/// | `content_block_start` `tool_use` | `ToolCall` with the call's index, `id` and `name` |
/// | `content_block_delta` `text_delta` / `thinking_delta` | `Text` / `Reasoning` |
/// | `content_block_delta` `input_json_delta` | `ToolCall` argument piece of that block's call |
/// | `message_delta` | `Finish` (`end_turn` → `stop`, `max_tokens` → `length`, `tool_use` → `tool_calls`, `refusal` → `content_filter`), then `Usage` (input tokens with cache reads and writes, output tokens) |
/// | `message_stop` | the end of the answer |
/// | `ping`, `content_block_stop`, `signature_delta`, unknown events and blocks | nothing |
/// | `error` | a [`Model`](crate::error::ErrorKind::Model) error with the provider's message and type |
///
/// Tool-use blocks are numbered 0, 1, … in the order they start, whatever their content
/// block index. Requests carry the system prompt as `system`, tools as
/// `{name, description, input_schema}`, tool calls as `tool_use` blocks and tool results as
/// `tool_result` blocks (a turn's results merged into one user message), and a structured
/// output schema as `output_config.format` (`{"type": "json_schema", "schema": …}`).
///
/// # Behaviour and errors
///
/// Retries (only before the first body byte: connect errors, 429 with `Retry-After`, 5xx
/// including 529 Overloaded), the connect, first-byte and inactivity timeouts, redirects,
/// error bodies (`{"type": "error", "error": {"type", "message"}}` is quoted with its type)
/// and the error kinds are those documented on [`OpenAiModel`](super::OpenAiModel). A body
/// that ends without `message_stop` ends the answer with what was seen; a body without a
/// single event is [`MalformedResponse`](crate::error::ErrorKind::MalformedResponse). The
/// API key never appears in an error message.
///
/// Dropping the stream drops the HTTP response body, which closes the connection.
#[derive(Clone)]
pub struct AnthropicModel {
    config: Arc<AnthropicConfig>,
    endpoint: Arc<Endpoint>,
    client: Arc<dyn HttpClient>,
}

impl AnthropicModel {
    /// A model with `config`, speaking through `client`.
    pub fn new(config: AnthropicConfig, client: Arc<dyn HttpClient>) -> Self {
        let endpoint = Endpoint::new(
            request::endpoint(&config.base_url),
            config.retry,
            config.timeouts,
            config.sse_limits,
            config.api_key.clone(),
        );
        AnthropicModel {
            config: Arc::new(config),
            endpoint: Arc::new(endpoint),
            client,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AnthropicConfig {
        &self.config
    }
}

impl fmt::Debug for AnthropicModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicModel")
            .field("url", &redact_credentials(&self.endpoint.url))
            .field("config", &self.config)
            .field("client", &self.client)
            .finish()
    }
}

impl Model for AnthropicModel {
    fn name(&self) -> &str {
        &self.config.model
    }

    fn stream(&self, request: ModelRequest, cx: ModelContext) -> ModelStream {
        let endpoint = match cx.timeouts {
            Some(timeouts) if timeouts != self.endpoint.timeouts => Arc::new(Endpoint {
                timeouts,
                ..(*self.endpoint).clone()
            }),
            _ => self.endpoint.clone(),
        };
        let http = request::http_request(&self.config, &endpoint, &request);
        drop(request);
        Box::pin(SseModelStream::new(
            endpoint,
            self.client.clone(),
            http,
            cx.runtime,
            wire::MessagesWire::default(),
        ))
    }
}
