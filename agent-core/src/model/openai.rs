//! OpenAI-compatible Chat Completions streaming provider (placeholder, being written).

use std::sync::Arc;

use super::{Model, ModelContext, ModelRequest, ModelStream};
use crate::http::HttpClient;
use crate::policy::{RetryPolicy, Timeouts};
use crate::secret::Secret;

/// Configuration of an [`OpenAiModel`].
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Base URL up to and including `/v1`, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// API key sent as `Authorization: Bearer`; none sends no `Authorization` header.
    pub api_key: Option<Secret>,
    /// Model name.
    pub model: String,
    /// Extra headers sent with every request.
    pub extra_headers: Vec<(String, String)>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Timeouts.
    pub timeouts: Timeouts,
}

/// A model served by an OpenAI-compatible Chat Completions endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiModel {
    config: Arc<OpenAiConfig>,
    client: Arc<dyn HttpClient>,
}

impl OpenAiModel {
    /// A model with `config`, speaking through `client`.
    pub fn new(config: OpenAiConfig, client: Arc<dyn HttpClient>) -> Self {
        OpenAiModel { config: Arc::new(config), client }
    }
}

impl Model for OpenAiModel {
    fn name(&self) -> &str {
        &self.config.model
    }

    fn stream(&self, _request: ModelRequest, _cx: ModelContext) -> ModelStream {
        let _ = &self.client;
        todo!()
    }
}
