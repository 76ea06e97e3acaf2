//! Choosing the model and building the agent from the command line.

use std::sync::Arc;
use std::time::Duration;

use agent_core::agent::{Agent, BuildError};
use agent_core::http::HttpClient;
use agent_core::model::{AnthropicConfig, AnthropicModel, Model, OpenAiConfig, OpenAiModel};
use agent_core::policy::Timeouts;
use agent_core::runtime::SharedRuntime;
use agent_core::secret::Secret;
use agent_core::tool::Tool;

use crate::cli::{ModelArgs, ProviderChoice};
use crate::demo;

/// The default model when talking to OpenAI itself.
pub const DEFAULT_OPENAI_MODEL: &str = "gpt-4o-mini";

/// The default model when talking to Anthropic itself.
pub const DEFAULT_ANTHROPIC_MODEL: &str = "claude-sonnet-4-5";

/// Which model the flags and the environment select.
#[derive(Debug, Clone)]
pub enum ModelChoice {
    /// An OpenAI-compatible server at a base URL.
    Compatible {
        /// The provider configuration (the key, if any, is redacted in `Debug`).
        config: Box<OpenAiConfig>,
        /// Why this server: `--base-url`, or OpenAI itself because the key variable is set.
        source: ModelSource,
        /// The variable the key came from, for error messages.
        key_var: String,
        /// Whether a key was found.
        has_key: bool,
    },
    /// An Anthropic Messages endpoint: Anthropic itself, or `--base-url` with
    /// `--provider anthropic`.
    Anthropic {
        /// The provider configuration (the key, if any, is redacted in `Debug`).
        config: Box<AnthropicConfig>,
        /// Why this server: `--base-url`, `--provider anthropic`, or the key variable.
        source: ModelSource,
        /// The variable the key came from, for error messages.
        key_var: String,
        /// Whether a key was found.
        has_key: bool,
    },
    /// The built-in demo model.
    Demo {
        /// Delay between words.
        pace: Duration,
        /// Whether `--demo` asked for it (rather than no server and no key being given).
        forced: bool,
    },
}

/// Why a [`ModelChoice::Compatible`] server was chosen, so that messages can speak of what
/// the user actually did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSource {
    /// The user passed `--base-url`.
    BaseUrl,
    /// No `--base-url`, but the API key variable is set: OpenAI itself.
    OpenAiKey,
    /// `--provider anthropic` without `--base-url`: Anthropic itself.
    AnthropicProvider,
    /// No `--provider` and no `--base-url`; `ANTHROPIC_API_KEY` is set and
    /// `OPENAI_API_KEY` is not: Anthropic itself.
    AnthropicKey,
}

/// A usage error in the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Select the model from the flags and `env` (a lookup of environment variables).
///
/// * `--demo`: the demo model, whatever the environment holds.
/// * `--provider anthropic`: Anthropic's Messages API with the key from `ANTHROPIC_API_KEY`
///   (or `--api-key-env`), which must be set; with `--base-url`, that Messages endpoint
///   (`--model` required, the key sent when set).
/// * `--base-url`: that OpenAI-compatible server, with `--model` (required) and the key from
///   `--api-key-env` when that variable is set.
/// * no `--base-url`, the OpenAI key variable set: OpenAI itself (`--provider openai`
///   requires the key).
/// * no `--provider`, no `--base-url`, no `--api-key-env`, `OPENAI_API_KEY` unset and
///   `ANTHROPIC_API_KEY` set: Anthropic itself.
/// * otherwise: the demo model.
///
/// ```
/// use agent_cli::setup::{choose_model, ModelChoice};
/// use clap::Parser;
/// let cli = agent_cli::cli::Cli::parse_from(["agent", "hi"]);
/// assert!(matches!(choose_model(&cli.model, |_| None).unwrap(), ModelChoice::Demo { .. }));
/// let cli = agent_cli::cli::Cli::parse_from(["agent", "--demo", "hi"]);
/// let key = |_: &str| Some("sk-from-the-shell".to_string());
/// assert!(matches!(choose_model(&cli.model, key).unwrap(), ModelChoice::Demo { forced: true, .. }));
/// let cli = agent_cli::cli::Cli::parse_from(["agent", "--provider", "anthropic", "hi"]);
/// let key = |v: &str| (v == "ANTHROPIC_API_KEY").then(|| "sk-ant".to_string());
/// assert!(matches!(choose_model(&cli.model, key).unwrap(), ModelChoice::Anthropic { .. }));
/// ```
pub fn choose_model(
    args: &ModelArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ModelChoice, UsageError> {
    let timeouts = timeouts(args)?;
    if args.demo {
        return Ok(ModelChoice::Demo {
            pace: Duration::from_millis(args.demo_pace_ms),
            forced: true,
        });
    }
    let key_of = |var: &str| env(var).filter(|k| !k.trim().is_empty());
    if let Some(url) = &args.base_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(UsageError(format!(
            "--base-url must start with http:// or https:// (got {url:?})"
        )));
    }
    let anthropic = |source: ModelSource| -> Result<ModelChoice, UsageError> {
        let key_var = args
            .api_key_env
            .clone()
            .unwrap_or_else(|| ProviderChoice::Anthropic.default_key_var().into());
        let key = key_of(&key_var);
        let has_key = key.is_some();
        let mut config = match &args.base_url {
            Some(url) => {
                let Some(model) = &args.model else {
                    return Err(UsageError(
                        "--model is required with --base-url (for example --model claude-sonnet-4-5)"
                            .into(),
                    ));
                };
                AnthropicConfig::new(url.clone(), model.clone())
            }
            None => {
                if !has_key {
                    return Err(UsageError(format!(
                        "--provider anthropic needs an API key: set {key_var} (or name another \
                         variable with --api-key-env, or give a Messages endpoint with --base-url)"
                    )));
                }
                AnthropicConfig::new(
                    AnthropicConfig::ANTHROPIC_BASE_URL,
                    args.model
                        .clone()
                        .unwrap_or_else(|| DEFAULT_ANTHROPIC_MODEL.into()),
                )
            }
        }
        .with_timeouts(timeouts);
        if let Some(key) = key {
            config = config.with_api_key(Secret::new(key));
        }
        if let Some(max_tokens) = args.max_tokens {
            config = config.with_max_tokens(max_tokens);
        }
        let source = if args.base_url.is_some() {
            ModelSource::BaseUrl
        } else {
            source
        };
        Ok(ModelChoice::Anthropic {
            config: Box::new(config),
            source,
            key_var,
            has_key,
        })
    };
    match args.provider {
        Some(ProviderChoice::Anthropic) => return anthropic(ModelSource::AnthropicProvider),
        Some(ProviderChoice::Openai) => {}
        None => {
            let openai_key_set = key_of(ProviderChoice::Openai.default_key_var()).is_some();
            if args.base_url.is_none()
                && args.api_key_env.is_none()
                && !openai_key_set
                && key_of(ProviderChoice::Anthropic.default_key_var()).is_some()
            {
                return anthropic(ModelSource::AnthropicKey);
            }
        }
    }
    let key_var = args
        .api_key_env
        .clone()
        .unwrap_or_else(|| ProviderChoice::Openai.default_key_var().into());
    let key = key_of(&key_var);
    let has_key = key.is_some();
    let with_options = |mut config: OpenAiConfig| {
        config = config.with_timeouts(timeouts);
        if let Some(max_tokens) = args.max_tokens {
            config = config.with_max_tokens(max_tokens);
        }
        Box::new(config)
    };
    match (&args.base_url, key) {
        (Some(url), key) => {
            let Some(model) = &args.model else {
                return Err(UsageError(
                    "--model is required with --base-url (for example --model llama3.2)".into(),
                ));
            };
            let mut config = OpenAiConfig::new(url.clone(), model.clone());
            if let Some(key) = key {
                config = config.with_api_key(Secret::new(key));
            }
            Ok(ModelChoice::Compatible {
                config: with_options(config),
                source: ModelSource::BaseUrl,
                key_var,
                has_key,
            })
        }
        (None, Some(key)) => {
            let model = args
                .model
                .clone()
                .unwrap_or_else(|| DEFAULT_OPENAI_MODEL.into());
            Ok(ModelChoice::Compatible {
                config: with_options(OpenAiConfig::openai(model, Secret::new(key))),
                source: ModelSource::OpenAiKey,
                key_var,
                has_key,
            })
        }
        (None, None) if args.provider == Some(ProviderChoice::Openai) => Err(UsageError(format!(
            "--provider openai needs an API key: set {key_var} (or name another variable with \
             --api-key-env, or give a server with --base-url)"
        ))),
        (None, None) => Ok(ModelChoice::Demo {
            pace: Duration::from_millis(args.demo_pace_ms),
            forced: false,
        }),
    }
}

fn seconds(flag: &str, value: f64) -> Result<Duration, UsageError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            UsageError(format!(
                "{flag} must be a positive number of seconds (got {value})"
            ))
        })
}

fn timeouts(args: &ModelArgs) -> Result<Timeouts, UsageError> {
    Ok(Timeouts {
        connect: Some(seconds("--connect-timeout", args.connect_timeout)?),
        first_byte: Some(seconds("--first-byte-timeout", args.first_byte_timeout)?),
        inactivity: Some(seconds("--idle-timeout", args.idle_timeout)?),
        run: None,
    })
}

impl ModelChoice {
    /// The first line on stderr: which model answers, at which endpoint, and why (never
    /// the key itself).
    ///
    /// ```
    /// use clap::Parser;
    /// use agent_cli::setup::choose_model;
    /// let cli = agent_cli::cli::Cli::parse_from(["agent", "hi"]);
    /// let choice = choose_model(&cli.model, |_| Some("sk-secret".into())).unwrap();
    /// let line = choice.announcement();
    /// assert!(line.contains("OpenAI gpt-4o-mini at https://api.openai.com/v1 because OPENAI_API_KEY is set"));
    /// assert!(line.contains("--demo"));
    /// assert!(!line.contains("sk-secret"));
    /// ```
    pub fn announcement(&self) -> String {
        const DEMO: &str = "It is scripted and has a calculator and a clock.";
        match self {
            ModelChoice::Demo { forced: true, .. } => {
                format!("agent: using the built-in demo model (--demo). {DEMO}")
            }
            ModelChoice::Demo { forced: false, .. } => format!(
                "agent: using the built-in demo model because no --base-url is given and \
                 OPENAI_API_KEY is not set (nor ANTHROPIC_API_KEY). {DEMO}"
            ),
            ModelChoice::Anthropic {
                config,
                source,
                key_var,
                has_key,
            } => {
                let why = match source {
                    ModelSource::BaseUrl => {
                        let key = if *has_key {
                            format!("with the API key from {key_var}")
                        } else {
                            format!("without an API key ({key_var} is not set)")
                        };
                        format!("(--provider anthropic --base-url), {key}")
                    }
                    ModelSource::AnthropicKey => format!(
                        "because {key_var} is set and OPENAI_API_KEY is not; pass --demo for \
                         the built-in model"
                    ),
                    _ => format!(
                        "(--provider anthropic) with the API key from {key_var}; pass --demo \
                         for the built-in model"
                    ),
                };
                format!(
                    "agent: using Anthropic {} at {} {why}",
                    config.model, config.base_url
                )
            }
            ModelChoice::Compatible {
                config,
                source: ModelSource::OpenAiKey,
                key_var,
                ..
            } => format!(
                "agent: using OpenAI {} at {} because {key_var} is set; pass --demo for the \
                 built-in model",
                config.model, config.base_url
            ),
            ModelChoice::Compatible {
                config,
                key_var,
                has_key,
                ..
            } => {
                let key = if *has_key {
                    format!("with the API key from {key_var}")
                } else {
                    format!("without an API key ({key_var} is not set)")
                };
                format!(
                    "agent: using model {} at {} (--base-url), {key}",
                    config.model, config.base_url
                )
            }
        }
    }

    /// The model, speaking through `client`.
    pub fn model(&self, client: Arc<dyn HttpClient>) -> Arc<dyn Model> {
        match self {
            ModelChoice::Demo { pace, .. } => Arc::new(demo::model(*pace)),
            ModelChoice::Compatible { config, .. } => {
                Arc::new(OpenAiModel::new((**config).clone(), client))
            }
            ModelChoice::Anthropic { config, .. } => {
                Arc::new(AnthropicModel::new((**config).clone(), client))
            }
        }
    }

    /// The endpoint's base URL, the key variable, whether a key was found, and why this
    /// model was chosen (`None` for the demo model).
    pub fn endpoint(&self) -> (&str, &str, bool, Option<ModelSource>) {
        match self {
            ModelChoice::Compatible {
                config,
                key_var,
                has_key,
                source,
            } => (&config.base_url, key_var, *has_key, Some(*source)),
            ModelChoice::Anthropic {
                config,
                key_var,
                has_key,
                source,
            } => (&config.base_url, key_var, *has_key, Some(*source)),
            ModelChoice::Demo { .. } => ("the demo model", "OPENAI_API_KEY", false, None),
        }
    }

    /// What kind of stream the endpoint speaks, for error messages.
    pub fn protocol(&self) -> &'static str {
        match self {
            ModelChoice::Anthropic { .. } => "an Anthropic Messages stream",
            _ => "an OpenAI-compatible stream",
        }
    }
}

/// Build the agent: the chosen model, the demo tools and `extra_tools` (from MCP servers),
/// optional instructions.
pub fn build_agent(
    choice: &ModelChoice,
    instructions: Option<&str>,
    runtime: SharedRuntime,
    client: Arc<dyn HttpClient>,
    extra_tools: Vec<Arc<dyn Tool>>,
) -> Result<Agent, BuildError> {
    let mut builder = demo::tools(Agent::builder())
        .shared_model(choice.model(client))
        .runtime(runtime);
    for tool in extra_tools {
        builder = builder.shared_tool(tool);
    }
    if let Some(instructions) = instructions {
        builder = builder.instructions(instructions);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn args(argv: &[&str]) -> ModelArgs {
        Cli::parse_from(argv).model
    }

    #[test]
    fn base_url_needs_a_model_and_a_scheme() {
        let err = choose_model(&args(&["agent", "--base-url", "http://x/v1", "hi"]), |_| {
            None
        })
        .unwrap_err();
        assert!(err.0.contains("--model is required"));
        let err = choose_model(
            &args(&["agent", "--base-url", "x/v1", "--model", "m", "hi"]),
            |_| None,
        )
        .unwrap_err();
        assert!(err.0.contains("http://"));
    }

    #[test]
    fn timeouts_must_be_positive() {
        let err =
            choose_model(&args(&["agent", "--idle-timeout", "0", "hi"]), |_| None).unwrap_err();
        assert!(err.0.contains("--idle-timeout"), "{err}");
        let a = args(&[
            "agent",
            "--base-url",
            "http://x/v1",
            "--model",
            "m",
            "--first-byte-timeout",
            "0.5",
            "hi",
        ]);
        let ModelChoice::Compatible { config, .. } = choose_model(&a, |_| None).unwrap() else {
            panic!()
        };
        assert_eq!(config.timeouts.first_byte, Some(Duration::from_millis(500)));
    }

    #[test]
    fn key_is_sent_only_when_the_variable_is_set() {
        let a = args(&[
            "agent",
            "--base-url",
            "http://x/v1",
            "--model",
            "m",
            "--api-key-env",
            "K",
            "hi",
        ]);
        let ModelChoice::Compatible {
            config, has_key, ..
        } = choose_model(&a, |_| None).unwrap()
        else {
            panic!()
        };
        assert!(!has_key);
        assert!(config.api_key.is_none());
        let with = choose_model(&a, |v| (v == "K").then(|| "sk-1".to_string())).unwrap();
        let ModelChoice::Compatible { config, .. } = &with else {
            panic!()
        };
        assert_eq!(config.api_key.as_ref().unwrap().expose(), "sk-1");
        assert!(
            !format!("{with:?}").contains("sk-1"),
            "the key never shows in Debug"
        );
    }

    #[test]
    fn anthropic_is_chosen_by_the_flag_or_by_its_key_alone() {
        let ant = |v: &str| (v == "ANTHROPIC_API_KEY").then(|| "sk-ant-1".to_string());
        let both =
            |v: &str| matches!(v, "ANTHROPIC_API_KEY" | "OPENAI_API_KEY").then(|| "sk".to_string());
        // The flag, with the key: Anthropic itself, the default model.
        let ModelChoice::Anthropic { config, source, .. } =
            choose_model(&args(&["agent", "--provider", "anthropic", "hi"]), ant).unwrap()
        else {
            panic!()
        };
        assert_eq!(config.model, DEFAULT_ANTHROPIC_MODEL);
        assert_eq!(config.base_url, AnthropicConfig::ANTHROPIC_BASE_URL);
        assert_eq!(config.api_key.as_ref().unwrap().expose(), "sk-ant-1");
        assert_eq!(source, ModelSource::AnthropicProvider);
        // The flag without the key: a usage error naming the variable.
        let err =
            choose_model(&args(&["agent", "--provider", "anthropic", "hi"]), |_| None).unwrap_err();
        assert!(err.0.contains("ANTHROPIC_API_KEY"), "{err}");
        // Only the Anthropic key set: Anthropic; both set: OpenAI, as before.
        assert!(matches!(
            choose_model(&args(&["agent", "hi"]), ant).unwrap(),
            ModelChoice::Anthropic {
                source: ModelSource::AnthropicKey,
                ..
            }
        ));
        assert!(matches!(
            choose_model(&args(&["agent", "hi"]), both).unwrap(),
            ModelChoice::Compatible { .. }
        ));
        // A Messages endpoint with --base-url, --model and --max-tokens.
        let a = args(&[
            "agent",
            "--provider",
            "anthropic",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "claude-x",
            "--max-tokens",
            "100",
            "hi",
        ]);
        let choice = choose_model(&a, |_| None).unwrap();
        let ModelChoice::Anthropic {
            config, has_key, ..
        } = &choice
        else {
            panic!()
        };
        assert!(!has_key && config.api_key.is_none());
        assert_eq!(config.max_tokens, 100);
        assert!(
            choice.announcement().contains(
                "Anthropic claude-x at http://127.0.0.1:9/v1 (--provider anthropic --base-url)"
            ),
            "{}",
            choice.announcement()
        );
        // --provider openai without a key or a server is a usage error, not the demo.
        let err = choose_model(&args(&["agent", "--provider", "openai", "hi"]), ant).unwrap_err();
        assert!(err.0.contains("OPENAI_API_KEY"), "{err}");
    }

    #[test]
    fn openai_is_used_when_only_the_key_is_set() {
        let choice = choose_model(&args(&["agent", "hi"]), |v| {
            (v == "OPENAI_API_KEY").then(|| "sk".into())
        })
        .unwrap();
        let ModelChoice::Compatible { config, .. } = choice else {
            panic!()
        };
        assert_eq!(config.model, DEFAULT_OPENAI_MODEL);
        assert!(config.base_url.contains("api.openai.com"));
    }
}
