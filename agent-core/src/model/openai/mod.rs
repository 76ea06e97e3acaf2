//! The OpenAI-compatible Chat Completions streaming provider: [`OpenAiModel`].
//!
//! It speaks to any server that implements `POST /chat/completions` with `stream: true`
//! (OpenAI, Ollama, vLLM, llama.cpp server, LM Studio, OpenRouter, …) through an
//! [`HttpClient`], and turns the server-sent chunks into [`ModelDelta`]s as they arrive.
//!
//! ```
//! use std::time::Duration;
//! use agent_core::model::OpenAiConfig;
//! use agent_core::policy::RetryPolicy;
//!
//! // A local Ollama server: no API key, so no `Authorization` header is sent.
//! let local = OpenAiConfig::new("http://127.0.0.1:11434/v1", "llama3.2")
//!     .with_temperature(0.2)
//!     .with_retry(RetryPolicy::none());
//! assert!(local.api_key.is_none());
//!
//! // OpenAI itself; the key never shows in `Debug`.
//! let openai = OpenAiConfig::openai("gpt-4o-mini", "sk-secret")
//!     .with_header("OpenAI-Organization", "org-123")
//!     .with_max_tokens(512);
//! assert_eq!(openai.base_url, "https://api.openai.com/v1");
//! assert!(!format!("{openai:?}").contains("sk-secret"));
//! ```
//!
//! [`OpenAiModel`] documents the retries, timeouts, errors and end-of-stream rules.

mod chunk;
mod request;
mod wire;

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::transport::{Endpoint, SseModelStream, redact_credentials};
use super::{Model, ModelContext, ModelDelta, ModelRequest, ModelStream};
use crate::error::ModelError;
use crate::http::HttpClient;
use crate::policy::{RetryPolicy, Timeouts};
use crate::secret::Secret;
use crate::sse::SseLimits;

pub use chunk::parse_chunk;

/// Configuration of an [`OpenAiModel`].
///
/// Build one with [`OpenAiConfig::new`] (any compatible server) or [`OpenAiConfig::openai`]
/// and the `with_*` setters; every field is public for inspection and adjustment.
///
/// `Debug` never prints the API key, the values of [`extra_headers`](Self::extra_headers)
/// (they may hold credentials too) or credentials embedded in `base_url`:
///
/// ```
/// use agent_core::model::OpenAiConfig;
///
/// let config = OpenAiConfig::new("https://llm.internal/v1", "qwen2.5")
///     .with_api_key("sk-live-123")
///     .with_header("x-api-key", "also-secret");
/// let debug = format!("{config:?}");
/// assert!(debug.contains("qwen2.5") && debug.contains("x-api-key"));
/// assert!(!debug.contains("sk-live-123") && !debug.contains("also-secret"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct OpenAiConfig {
    /// Base URL up to and including `/v1`, e.g. `https://api.openai.com/v1`. Requests go to
    /// `{base_url}/chat/completions` (a trailing `/` is ignored).
    pub base_url: String,
    /// API key sent as `Authorization: Bearer`; none sends no `Authorization` header.
    pub api_key: Option<Secret>,
    /// Model name, sent as `model`.
    pub model: String,
    /// Extra headers sent with every request (after the standard ones).
    pub extra_headers: Vec<(String, String)>,
    /// Retry policy (before the first body byte only). Default [`RetryPolicy::default`].
    pub retry: RetryPolicy,
    /// Timeouts (connect, first byte, inactivity). Default [`Timeouts::default`].
    pub timeouts: Timeouts,
    /// Ask for a final usage chunk (`stream_options.include_usage`). Default `true`; turn it
    /// off for servers that reject `stream_options`.
    pub include_usage: bool,
    /// Limits of the SSE decoder; a longer line or larger event fails the stream with
    /// [`ErrorKind::ResponseTooLarge`](crate::error::ErrorKind::ResponseTooLarge). Default [`SseLimits::default`].
    pub sse_limits: SseLimits,
    /// Sampling temperature, sent as `temperature` when set.
    pub temperature: Option<f32>,
    /// Maximum number of tokens to generate, sent as `max_tokens` when set. (OpenAI's
    /// reasoning models want `max_completion_tokens` instead: set it with
    /// [`with_body_field`](Self::with_body_field).)
    pub max_tokens: Option<u32>,
    /// Further top-level fields of the request body (`top_p`, `seed`, `reasoning_effort`,
    /// provider-specific options, …). They are added last and replace same-named fields,
    /// except `messages` and `stream`, which are never replaced.
    pub extra_body: Map<String, Value>,
}

impl OpenAiConfig {
    /// Base URL of the OpenAI API, used by [`OpenAiConfig::openai`].
    pub const OPENAI_BASE_URL: &'static str = "https://api.openai.com/v1";

    /// A configuration for the server at `base_url` (up to and including `/v1`) and model
    /// `model`, with no API key, default retries and timeouts, and usage reporting on.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            extra_headers: Vec::new(),
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            include_usage: true,
            sse_limits: SseLimits::default(),
            temperature: None,
            max_tokens: None,
            extra_body: Map::new(),
        }
    }

    /// A configuration for the OpenAI API ([`Self::OPENAI_BASE_URL`]) with `api_key`.
    pub fn openai(model: impl Into<String>, api_key: impl Into<Secret>) -> Self {
        OpenAiConfig::new(Self::OPENAI_BASE_URL, model).with_api_key(api_key)
    }

    /// Send `api_key` as `Authorization: Bearer <api_key>`.
    pub fn with_api_key(mut self, api_key: impl Into<Secret>) -> Self {
        self.api_key = Some(api_key.into());
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

    /// Ask (or not) for the final usage chunk.
    pub fn with_include_usage(mut self, include_usage: bool) -> Self {
        self.include_usage = include_usage;
        self
    }

    /// Set the limits of the SSE decoder.
    pub fn with_sse_limits(mut self, sse_limits: SseLimits) -> Self {
        self.sse_limits = sse_limits;
        self
    }

    /// Set the sampling temperature.
    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Set the maximum number of tokens to generate.
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Add a top-level field to the request body (see [`extra_body`](Self::extra_body)).
    ///
    /// ```
    /// use agent_core::model::OpenAiConfig;
    /// let config = OpenAiConfig::openai("o3-mini", "sk-…")
    ///     .with_body_field("reasoning_effort", "low")
    ///     .with_body_field("max_completion_tokens", 2048);
    /// assert_eq!(config.extra_body["reasoning_effort"], "low");
    /// ```
    pub fn with_body_field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra_body.insert(name.into(), value.into());
        self
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &redact_credentials(&self.base_url))
            .field("api_key", &self.api_key)
            .field("model", &self.model)
            .field(
                "extra_headers",
                &super::transport::RedactedHeaders(&self.extra_headers),
            )
            .field("retry", &self.retry)
            .field("timeouts", &self.timeouts)
            .field("include_usage", &self.include_usage)
            .field("sse_limits", &self.sse_limits)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("extra_body", &self.extra_body)
            .finish()
    }
}

/// A model served by an OpenAI-compatible Chat Completions endpoint.
///
/// Each [`stream`](Model::stream) call sends one streaming request and yields the deltas of
/// the answer as their chunks arrive: each delta as soon as its event has been parsed,
/// never waiting for more of the body.
///
/// # Behaviour
///
/// * **Retries** happen only before the first byte of the response body: on a connect error,
///   a 429 or a retryable 5xx ([`RetryPolicy::is_retryable_status`]), waiting
///   [`RetryPolicy::backoff`] (which honours `Retry-After`) on the run's runtime. Once the
///   body of a 2xx response has started, nothing is retried. The waits count against the
///   `first_byte` timeout, measured from the first attempt: when the upstream asks for a
///   wait (its `Retry-After`, before the `max_retry_after` cap) longer than what is left of
///   it, the request fails at once with the status's error (`rate_limited` for a 429), its
///   message naming the wait asked for and the time left. Each wait is logged at `warn`
///   level (`… answered 429 Too Many Requests; waiting 2.0 s before retry 1 of 2`).
/// * **Timeouts** ([`Timeouts`]): `connect` is handed to the client; `first_byte` runs from
///   sending the request to the first body byte (so it covers the wait for the response
///   head); `inactivity` is the longest gap allowed between two SSE *events*: comments such
///   as `: keep-alive` do not reset it.
/// * **Errors** are [`ModelError`]s whose [`ErrorKind`] tells what happened (see the
///   table below). Their messages name the upstream host, the status and the provider's
///   own error message, and never contain the API key or any header value.
/// * **End of stream**: `data: [DONE]` ends the answer. A body that simply ends also ends
///   the answer normally, with whatever finish reason was seen (none, if the upstream never
///   sent one), even when it stops in the middle of an event: that unterminated event is
///   discarded, as the SSE specification requires, and a `debug` trace is logged. The agent
///   loop treats a missing finish reason like `stop`. A body that ends without having sent
///   a single SSE event is not an answer, however: it fails with
///   [`ErrorKind::MalformedResponse`], quoting how the body began.
///
/// # Errors
///
/// The stream fails with a [`ModelError`] of kind:
///
/// | kind | when |
/// |---|---|
/// | [`Connect`](crate::error::ErrorKind::Connect) / [`ConnectTimeout`](crate::error::ErrorKind::ConnectTimeout) | the host could not be reached, after the retries |
/// | [`RateLimited`](crate::error::ErrorKind::RateLimited) | 429 after the retries (with `retry_after` when given) |
/// | [`UpstreamStatus`](crate::error::ErrorKind::UpstreamStatus) | any other non-2xx status (`status` is set; the message quotes the provider's error) |
/// | [`FirstByteTimeout`](crate::error::ErrorKind::FirstByteTimeout) | no body byte within `timeouts.first_byte` of sending |
/// | [`InactivityTimeout`](crate::error::ErrorKind::InactivityTimeout) | no SSE event within `timeouts.inactivity` (comments do not count) |
/// | [`UpstreamReset`](crate::error::ErrorKind::UpstreamReset) | the connection broke after the response head |
/// | [`UpstreamStatus`](crate::error::ErrorKind::UpstreamStatus) for a 3xx | a redirect: it is not followed; the message names the status and the `Location` (without credentials or query) |
/// | [`ResponseTooLarge`](crate::error::ErrorKind::ResponseTooLarge) | an SSE line or event over [`OpenAiConfig::sse_limits`], or a response head (headers) over the HTTP client's limit |
/// | [`MalformedResponse`](crate::error::ErrorKind::MalformedResponse) | a chunk that is not chat-completion JSON, or a body without any event |
/// | [`Model`](crate::error::ErrorKind::Model) | the provider reported an error inside the stream |
/// | [`InvalidRequest`](crate::error::ErrorKind::InvalidRequest) | the client rejected the request (bad URL or header) |
///
/// Dropping the stream drops the HTTP response body, which closes the connection.
///
/// [`ErrorKind`]: crate::error::ErrorKind
/// [`ErrorKind::MalformedResponse`]: crate::error::ErrorKind::MalformedResponse
#[derive(Clone)]
pub struct OpenAiModel {
    config: Arc<OpenAiConfig>,
    endpoint: Arc<Endpoint>,
    client: Arc<dyn HttpClient>,
}

impl OpenAiModel {
    /// A model with `config`, speaking through `client`.
    pub fn new(config: OpenAiConfig, client: Arc<dyn HttpClient>) -> Self {
        let endpoint = Endpoint::new(
            request::endpoint(&config.base_url),
            config.retry,
            config.timeouts,
            config.sse_limits,
            config.api_key.clone(),
        );
        OpenAiModel {
            config: Arc::new(config),
            endpoint: Arc::new(endpoint),
            client,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// Parse the `data` of one Chat Completions streaming event into [`ModelDelta`]s.
    ///
    /// `data` is the JSON of one `chat.completion.chunk` (not the `[DONE]` sentinel, which the
    /// stream handles itself). The deltas come out in this order: for the first choice
    /// (`index` 0), reasoning (`reasoning_content` or `reasoning`), text (`content`), tool-call
    /// pieces (in the order of `tool_calls`), the finish reason; then the usage report. Empty
    /// strings and `null`s yield nothing, so a chunk may yield no delta at all (a role-only
    /// first chunk, for example). Other choices (`n > 1`) are ignored: the core never asks for
    /// more than one.
    ///
    /// Lenient where providers differ: unknown fields are ignored; a tool call without `index`
    /// takes its position in the `tool_calls` array; an empty `id` or `name` counts as absent;
    /// usage fields default to 0 and `total_tokens` to the sum of the other two.
    ///
    /// # Errors
    ///
    /// * [`ErrorKind::Model`] when the chunk is an error report (`{"error": {"message": …}}`),
    ///   as some providers send mid-stream; the message is the provider's.
    /// * [`ErrorKind::MalformedResponse`] when `data` is not JSON or not shaped like a chunk; the
    ///   message quotes at most 200 characters of `data`.
    ///
    /// This function is pure and total (it never panics), whatever the input: a fuzz target
    /// calls it with arbitrary strings.
    ///
    /// [`ErrorKind::Model`]: crate::error::ErrorKind::Model
    /// [`ErrorKind::MalformedResponse`]: crate::error::ErrorKind::MalformedResponse
    ///
    /// # Example
    ///
    /// ```
    /// use agent_core::model::{ModelDelta, OpenAiModel, ToolCallDelta};
    ///
    /// let data = r#"{"choices":[{"index":0,"delta":{"tool_calls":[
    ///     {"index":1,"id":"call_b","type":"function","function":{"name":"clock","arguments":""}}
    /// ]}}]}"#;
    /// assert_eq!(
    ///     OpenAiModel::parse_chunk(data).unwrap(),
    ///     vec![ModelDelta::ToolCall(ToolCallDelta {
    ///         index: 1,
    ///         id: Some("call_b".into()),
    ///         name: Some("clock".into()),
    ///         arguments: String::new(),
    ///     })]
    /// );
    /// ```
    pub fn parse_chunk(data: &str) -> Result<Vec<ModelDelta>, ModelError> {
        parse_chunk(data)
    }
}

impl fmt::Debug for OpenAiModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiModel")
            .field("url", &redact_credentials(&self.endpoint.url))
            .field("config", &self.config)
            .field("client", &self.client)
            .finish()
    }
}

impl Model for OpenAiModel {
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
            wire::ChatCompletionsWire,
        ))
    }
}
