//! Command-line arguments.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run and serve streaming LLM agents on tokio, smol or plain threads.
#[derive(Debug, Parser)]
#[command(
    name = "agent",
    version,
    about,
    long_about = None,
    after_help = "Which model answers:\n  \
        --demo                  the built-in demo model (scripted; a calculator and a clock)\n  \
        --base-url URL --model  that OpenAI-compatible server (Ollama, vLLM, llama.cpp, ...)\n  \
        --provider anthropic    Anthropic's Messages API with $ANTHROPIC_API_KEY\n                          \
        (claude-sonnet-4-5 unless --model; with --base-url, that Messages endpoint)\n  \
        $OPENAI_API_KEY set     OpenAI itself (gpt-4o-mini unless --model), at api.openai.com\n  \
        $ANTHROPIC_API_KEY set  (and no $OPENAI_API_KEY) Anthropic, as --provider anthropic\n  \
        otherwise               the built-in demo model: no key, no server needed\n\
        The first line on stderr says which model is used and why. The answer streams to\n\
        stdout; tool calls, reasoning and errors go to stderr. The prompt is read from stdin\n\
        when none is given (echo question | agent) or when it is -."
)]
pub struct Cli {
    /// What to do; without a subcommand, answer PROMPT.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Model options.
    #[command(flatten)]
    pub model: ModelArgs,

    /// Output options (of a run; `agent chat` takes them too).
    #[command(flatten)]
    pub output: OutputArgs,

    /// MCP servers whose tools the agent gets.
    #[command(flatten)]
    pub mcp: McpArgs,

    /// Log level on stderr (error, warn, info, debug, trace, or a `RUST_LOG`-style filter
    /// such as `agent_core=debug`); default `RUST_LOG`, else `warn`. `agent serve --log info`
    /// writes one line per request.
    #[arg(long, value_name = "LEVEL", global = true)]
    pub log: Option<String>,

    /// The prompt to answer (the words are joined with spaces; `-` or none with a piped
    /// stdin reads it from stdin).
    #[arg(value_name = "PROMPT")]
    pub prompt: Vec<String>,
}

/// Subcommands.
// Parsed once per process: the size of the `serve` options does not matter.
#[allow(clippy::large_enum_variant)]
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
    /// Address to listen on: HOST:PORT, where HOST is an IP address or a name such as
    /// `localhost` (resolved; the first address is used).
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_addr)]
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
    /// Largest request body accepted, in bytes (413 beyond). Default 1 MiB.
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most runs streaming at once (503 beyond). Default 1024.
    #[arg(long, value_name = "N")]
    pub max_concurrent_runs: Option<usize>,
    /// Disconnect a client that accepts no bytes of a response for this long (e.g. `30s`,
    /// `500ms`; `0s` turns it off). Default 30s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub write_timeout: Option<Duration>,
    /// Close a connection that has not sent a complete request head within this long. Default 30s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub head_read_timeout: Option<Duration>,
    /// Answer 408 to a request body that has not arrived within this long. Default 30s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub body_read_timeout: Option<Duration>,
    /// Most header fields in a request head (431 beyond). Default 100.
    #[arg(long, value_name = "N")]
    pub max_headers: Option<usize>,
    /// Largest request head in bytes (431 beyond; at least 8 KiB). Default 64 KiB.
    #[arg(long, value_name = "BYTES")]
    pub max_head_bytes: Option<usize>,
    /// Send a `: keep-alive` comment on an SSE stream idle for this long. Default 15s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub keep_alive: Option<Duration>,
    /// How long a /v1/runs run goes on after its client disconnected, waiting to be resumed
    /// (GET /v1/runs/{id}/events); cancelled after. `0s` cancels at once. Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub run_detach_grace: Option<Duration>,
    /// How long a finished run stays addressable (status, events). Default 5m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub run_retention: Option<Duration>,
    /// Most finished runs kept addressable (the oldest are forgotten). Default 256.
    #[arg(long, value_name = "N")]
    pub max_retained_runs: Option<usize>,
    /// Most bytes of events one run keeps for resuming clients. Default 512 KiB.
    #[arg(long, value_name = "BYTES")]
    pub max_run_log_bytes: Option<usize>,
    /// Where sessions and runs are kept: `sqlite:PATH` (one instance; the default is
    /// `sqlite:` + $XDG_DATA_HOME/agent/agent.db, else ~/.local/share/agent/agent.db),
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` (several instances share it), or `memory`
    /// (nothing kept past the process). Also read from $AGENT_STORE.
    #[arg(
        long,
        value_name = "STORE",
        env = "AGENT_STORE",
        hide_env_values = true,
        value_parser = parse_store
    )]
    pub store: Option<StoreArg>,
    /// This instance's lease on its runs in the store; a run whose instance died is marked
    /// failed once it ran out. Default 30s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub run_lease: Option<Duration>,
    /// This instance's name in a shared store (default: a random one).
    #[arg(long, value_name = "NAME")]
    pub instance_id: Option<String>,
}

/// Where `agent serve` keeps sessions and runs (`--store`).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreArg {
    /// In memory only.
    Memory,
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL DSN (its password is never shown).
    Postgres(String),
}

impl StoreArg {
    /// The default: SQLite under the user's data directory.
    pub fn default_sqlite() -> Option<StoreArg> {
        let base = std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|home| std::path::PathBuf::from(home).join(".local/share"))
            })?;
        Some(StoreArg::Sqlite(base.join("agent").join("agent.db")))
    }

    /// How the store is named in messages: no password.
    pub fn describe(&self) -> String {
        match self {
            StoreArg::Memory => "memory (nothing is kept past this process)".into(),
            StoreArg::Sqlite(path) => format!("sqlite:{}", path.display()),
            StoreArg::Postgres(dsn) => format!("postgres {}", redact_dsn(dsn)),
        }
    }
}

impl std::fmt::Debug for StoreArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// `dsn` with any password replaced by `***` (URL and key=value forms).
///
/// ```
/// use agent_cli::cli::redact_dsn;
/// assert_eq!(redact_dsn("postgres://u:s3cret@h:5432/db"), "postgres://u:***@h:5432/db");
/// assert_eq!(redact_dsn("host=h password=s3cret user=u"), "host=h password=*** user=u");
/// ```
pub fn redact_dsn(dsn: &str) -> String {
    if let Some((scheme, rest)) = dsn.split_once("://") {
        if let Some((userinfo, host)) = rest.rsplit_once('@') {
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            let host = match host.split_once('?') {
                Some((host, _)) => format!("{host}?***"),
                None => host.to_string(),
            };
            return format!("{scheme}://{masked}@{host}");
        }
        return dsn.split('?').next().unwrap_or(dsn).to_string();
    }
    dsn.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parse `--store`: `memory`, `sqlite:PATH`, `postgres://…` / `postgresql://…`.
///
/// ```
/// use agent_cli::cli::{parse_store, StoreArg};
/// assert_eq!(parse_store("memory"), Ok(StoreArg::Memory));
/// assert_eq!(parse_store("sqlite:/tmp/a.db"), Ok(StoreArg::Sqlite("/tmp/a.db".into())));
/// assert!(matches!(parse_store("postgres://u:p@h/db"), Ok(StoreArg::Postgres(_))));
/// assert!(!parse_store("mysql://u:p@h/db").unwrap_err().contains(":p@"));
/// ```
pub fn parse_store(text: &str) -> Result<StoreArg, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("memory") {
        return Ok(StoreArg::Memory);
    }
    if let Some(path) = text.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err("sqlite: needs a path, e.g. sqlite:/var/lib/agent/agent.db".into());
        }
        return Ok(StoreArg::Sqlite(path.into()));
    }
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(StoreArg::Postgres(text.to_string()));
    }
    Err(format!(
        "{:?} is not a store: use memory, sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DB",
        redact_dsn(text)
    ))
}

/// Parse a listening address: `IP:PORT`, or `HOST:PORT` with a host name resolved (the first
/// address it resolves to).
///
/// ```
/// use agent_cli::cli::parse_addr;
/// assert_eq!(parse_addr("127.0.0.1:8080").unwrap().port(), 8080);
/// assert!(parse_addr("localhost:8080").unwrap().ip().is_loopback());
/// assert!(parse_addr("localhost").unwrap_err().contains("HOST:PORT"));
/// ```
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let shape = || format!("{text:?} is not HOST:PORT (e.g. 127.0.0.1:8080, localhost:8080)");
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(shape());
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(shape());
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|err| format!("could not resolve {host:?}: {err}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

/// Parse a duration: a number followed by `ms`, `s`, `m` or `h` (`500ms`, `30s`, `1.5s`, `2m`).
///
/// ```
/// use std::time::Duration;
/// use agent_cli::cli::parse_duration;
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
/// assert!(parse_duration("30").is_err());
/// assert!(parse_duration("-1s").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "" => {
            return Err(format!(
                "{text:?} needs a unit: ms, s, m or h (e.g. 30s, 500ms)"
            ));
        }
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 30s, 500ms)"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("{text:?} is out of range"))
}

/// Options of `agent chat` (the global model options apply).
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Output options.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The runtime to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeChoice {
    /// tokio: hyper's client over tokio's sockets (TokioClient) and a hyper server.
    Tokio,
    /// smol / async-executor: hyper (client and server) over async-net.
    Smol,
    /// Plain OS threads: a ureq client and a threaded server on agent-http1.
    Blocking,
}

/// The wire protocol of the model server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderChoice {
    /// OpenAI Chat Completions (OpenAI, Ollama, vLLM, llama.cpp, LM Studio, OpenRouter, …);
    /// key from $OPENAI_API_KEY.
    Openai,
    /// The Anthropic Messages API; key from $ANTHROPIC_API_KEY.
    Anthropic,
}

impl ProviderChoice {
    /// The variable the key is read from unless `--api-key-env` names another.
    pub fn default_key_var(self) -> &'static str {
        match self {
            ProviderChoice::Openai => "OPENAI_API_KEY",
            ProviderChoice::Anthropic => "ANTHROPIC_API_KEY",
        }
    }
}

/// Which model to talk to, and on which runtime.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// The runtime backend: tokio (TokioClient: hyper over tokio's sockets; hyper server), smol (hyper over
    /// async-net) or blocking (ureq client, a threaded server on agent-http1).
    #[arg(long, value_enum, default_value = "tokio", global = true)]
    pub runtime: RuntimeChoice,
    /// Use the built-in demo model even when an API key is set or --base-url is given.
    #[arg(long, global = true, conflicts_with = "base_url")]
    pub demo: bool,
    /// The model server's protocol: openai (Chat Completions; the default) or anthropic
    /// (Messages API). Without it, $OPENAI_API_KEY selects OpenAI, else $ANTHROPIC_API_KEY
    /// selects Anthropic.
    #[arg(long, value_enum, value_name = "PROVIDER", global = true)]
    pub provider: Option<ProviderChoice>,
    /// Base URL of the API (up to /v1), e.g. http://localhost:11434/v1 for Ollama; an
    /// Anthropic Messages endpoint with --provider anthropic.
    #[arg(long, value_name = "URL", global = true)]
    pub base_url: Option<String>,
    /// Model name (required with --base-url; default gpt-4o-mini for OpenAI,
    /// claude-sonnet-4-5 for Anthropic).
    #[arg(long, value_name = "NAME", global = true)]
    pub model: Option<String>,
    /// Environment variable holding the API key (sent only when set); default
    /// OPENAI_API_KEY, or ANTHROPIC_API_KEY with --provider anthropic.
    #[arg(long, value_name = "VAR", global = true)]
    pub api_key_env: Option<String>,
    /// Most tokens the model may generate per request (default: the server's for OpenAI,
    /// 4096 for Anthropic, which requires a value).
    #[arg(long, value_name = "N", global = true)]
    pub max_tokens: Option<u32>,
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

/// MCP servers whose tools the agent gets (any command: a run, `chat`, `serve`).
#[derive(Debug, Clone, Default, Args)]
pub struct McpArgs {
    /// Start an MCP server over stdio and give its tools to the agent, e.g.
    /// `--mcp 'npx -y @modelcontextprotocol/server-everything'` (split like a shell does,
    /// quotes included; no shell runs). Repeatable.
    #[arg(long = "mcp", value_name = "'CMD ARGS...'", global = true)]
    pub servers: Vec<String>,
    /// Connect to an MCP server over Streamable HTTP (e.g. `http://127.0.0.1:8000/mcp`) and
    /// give its tools to the agent. Repeatable.
    #[arg(long = "mcp-url", value_name = "URL", global = true)]
    pub urls: Vec<String>,
    /// How long an MCP server may take to answer one request (a tool call fails after it),
    /// e.g. `30s`. Default 60s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, global = true)]
    pub mcp_timeout: Option<Duration>,
}

/// How to print a run (`agent PROMPT` and `agent chat`; `serve` has none of these).
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct OutputArgs {
    /// Print every event as a JSON line on stdout instead of the text.
    #[arg(long)]
    pub json: bool,
    /// Print time to first token, tokens and durations on stderr at the end.
    #[arg(long)]
    pub stats: bool,
    /// Never show the spinner (it only shows when stderr is a terminal).
    #[arg(long)]
    pub no_spinner: bool,
}

impl OutputArgs {
    /// Each option set in `self` or in `other` (`agent --json chat` and `agent chat --json`
    /// alike).
    pub fn or(self, other: OutputArgs) -> OutputArgs {
        OutputArgs {
            json: self.json || other.json,
            stats: self.stats || other.stats,
            no_spinner: self.no_spinner || other.no_spinner,
        }
    }
}
