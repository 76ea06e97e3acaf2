//! Command-line arguments.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run and serve streaming LLM agents on tokio, smol or plain threads.
///
/// With no --base-url and no API key in the environment, a built-in demo model answers (no
/// key, no server needed). Tool calls are shown on stderr; the answer streams to stdout.
#[derive(Debug, Parser)]
#[command(name = "agent", version, about, long_about = None)]
pub struct Cli {
    /// What to do; without a subcommand, answer PROMPT.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Model options.
    #[command(flatten)]
    pub model: ModelArgs,

    /// Output options.
    #[command(flatten)]
    pub output: OutputArgs,

    /// The prompt to answer (the words are joined with spaces).
    #[arg(value_name = "PROMPT")]
    pub prompt: Vec<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the agent over HTTP (POST /v1/runs, POST /v1/chat/completions, GET /healthz).
    Serve(ServeArgs),
    /// An interactive multi-turn conversation in the terminal.
    Chat(ChatArgs),
}

/// Options of `agent serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Require `Authorization: Bearer <TOKEN>` on API requests.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "AGENT_SERVE_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Allow browser pages from this origin (e.g. `http://localhost:5173`) to call the API,
    /// with CORS; repeatable; `*` allows any origin. Requests from other origins get 403.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<String>,
}

/// Options of `agent chat` (the global model and output options apply).
#[derive(Debug, Args)]
pub struct ChatArgs {}

/// The runtime to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeChoice {
    /// tokio, with reqwest and axum.
    Tokio,
    /// smol / async-executor, with hyper.
    Smol,
    /// Plain OS threads, with ureq and a threaded server.
    Blocking,
}

/// Which model to talk to, and on which runtime.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// The runtime backend.
    #[arg(long, value_enum, default_value = "tokio", global = true)]
    pub runtime: RuntimeChoice,
    /// Base URL of an OpenAI-compatible API, e.g. http://localhost:11434/v1 for Ollama.
    #[arg(long, value_name = "URL", global = true)]
    pub base_url: Option<String>,
    /// Model name (required with --base-url; default gpt-4o-mini for OpenAI).
    #[arg(long, value_name = "NAME", global = true)]
    pub model: Option<String>,
    /// Environment variable holding the API key (sent only when set).
    #[arg(
        long,
        value_name = "VAR",
        default_value = "OPENAI_API_KEY",
        global = true
    )]
    pub api_key_env: String,
    /// System instructions for the agent.
    #[arg(long, value_name = "TEXT", global = true)]
    pub instructions: Option<String>,
    /// Seconds to wait for a connection to the model server.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, global = true)]
    pub connect_timeout: f64,
    /// Seconds to wait for the model to start answering.
    #[arg(long, value_name = "SECS", default_value_t = 60.0, global = true)]
    pub first_byte_timeout: f64,
    /// Seconds of silence (keep-alive comments do not count) before giving up mid-answer.
    #[arg(long, value_name = "SECS", default_value_t = 60.0, global = true)]
    pub idle_timeout: f64,
    /// Delay between the demo model's words, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30, global = true)]
    pub demo_pace_ms: u64,
}

/// How to print a run.
#[derive(Debug, Clone, Copy, Args)]
pub struct OutputArgs {
    /// Print every event as a JSON line on stdout instead of the text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print time to first token, tokens and durations on stderr at the end.
    #[arg(long, global = true)]
    pub stats: bool,
    /// Never show the spinner (it only shows when stderr is a terminal).
    #[arg(long, global = true)]
    pub no_spinner: bool,
}
