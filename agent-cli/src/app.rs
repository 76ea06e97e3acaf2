//! The three commands: answer a prompt, chat, serve.

use std::io::{self, BufRead, IsTerminal, Read};
use std::process::ExitCode;

use agent_core::agent::{Agent, CancelHandle, RunOptions};
use agent_core::secret::Secret;
use agent_core::server::ServerConfig;

use crate::cli::{Cli, Command, OutputArgs, ServeArgs, StoreArg};
use crate::drivers::{Driver, driver};
use crate::errors::explain;
use crate::render::{Outcome, Renderer};
use crate::setup::{ModelChoice, build_agent, choose_model};

/// Run the parsed command line; the exit code says how it went (0 success, 1 a failed run,
/// 2 a usage error).
pub fn main(cli: Cli) -> ExitCode {
    if let Err(err) = init_logging(cli.log.as_deref()) {
        eprintln!("agent: {err}");
        return ExitCode::from(2);
    }
    let choice = match choose_model(&cli.model, |var| std::env::var(var).ok()) {
        Ok(choice) => choice,
        Err(err) => {
            eprintln!("agent: {err}");
            return ExitCode::from(2);
        }
    };
    let driver = match driver(cli.model.runtime) {
        Ok(driver) => driver,
        Err(err) => {
            eprintln!("agent: could not start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(err) = crate::mcp::check(&cli.mcp) {
        eprintln!("agent: {err}");
        return ExitCode::from(2);
    }
    let mcp_tools = match crate::mcp::connect(&*driver, &cli.mcp) {
        Ok(crate::mcp::McpTools { tools, servers }) => {
            let lines = servers.iter().map(|s| s.announcement()).collect();
            let _ = MCP_ANNOUNCEMENTS.set(lines);
            tools
        }
        Err(err) => {
            eprintln!("agent: {err}");
            return ExitCode::FAILURE;
        }
    };
    let agent = match build_agent(
        &choice,
        cli.model.instructions.as_deref(),
        driver.runtime(),
        driver.http_client(),
        mcp_tools,
    ) {
        Ok(agent) => agent,
        Err(err) => {
            eprintln!("agent: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Serve(args)) => serve(&*driver, agent, &choice, &args),
        Some(Command::Chat(args)) => chat(&*driver, &agent, &choice, cli.output.or(args.output)),
        None => {
            let prompt = match prompt(&cli.prompt) {
                Ok(prompt) => prompt,
                Err(message) => {
                    eprintln!("agent: {message}");
                    return ExitCode::from(2);
                }
            };
            announce(&choice);
            let run = agent.run_with(prompt, run_options(cli.output));
            answer(&*driver, run, &choice, cli.output)
        }
    }
}

/// What `--mcp` / `--mcp-url` connected to, announced right after the model line.
static MCP_ANNOUNCEMENTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// The first lines on stderr: which model answers, then one line per MCP server.
fn announce(choice: &ModelChoice) {
    eprintln!("{}", choice.announcement());
    for line in MCP_ANNOUNCEMENTS.get().into_iter().flatten() {
        eprintln!("{line}");
    }
}

/// The largest prompt read from stdin.
pub const MAX_STDIN_PROMPT: u64 = 16 * 1024 * 1024;

/// The prompt: the words of the command line joined with spaces; or stdin, read to its end,
/// when the only word is `-`, or when there are no words and stdin is not a terminal
/// (`echo question | agent`, `agent < prompt.txt`: no argument-length limit applies).
fn prompt(words: &[String]) -> Result<String, String> {
    let from_stdin = match words {
        [dash] if dash == "-" => true,
        [] => !io::stdin().is_terminal(),
        _ => false,
    };
    let prompt = if from_stdin {
        read_prompt(io::stdin().lock(), MAX_STDIN_PROMPT)?
    } else {
        words.join(" ")
    };
    if prompt.trim().is_empty() {
        return Err(if from_stdin {
            "the prompt read from stdin is empty (give a PROMPT argument, or pipe one in)".into()
        } else {
            "give a PROMPT (for example: agent \"What is 2 + 2?\"), pipe one in \
             (echo question | agent), or use `agent chat`"
                .into()
        });
    }
    Ok(prompt)
}

/// Read `input` to its end as UTF-8, refusing more than `limit` bytes.
///
/// ```
/// # use agent_cli::app::read_prompt;
/// assert_eq!(read_prompt(&b"what is 2 + 2?\n"[..], 100).unwrap(), "what is 2 + 2?\n");
/// assert!(read_prompt(&b"0123456789"[..], 4).unwrap_err().contains("larger than 4 bytes"));
/// ```
pub fn read_prompt(input: impl io::Read, limit: u64) -> Result<String, String> {
    let mut bytes = Vec::new();
    input
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("could not read the prompt from stdin: {err}"))?;
    if bytes.len() as u64 > limit {
        let shown = if limit >= 1 << 20 && limit.is_multiple_of(1 << 20) {
            format!("{} MiB", limit >> 20)
        } else {
            format!("{limit} bytes")
        };
        return Err(format!(
            "the prompt on stdin is larger than {shown}; shorten it"
        ));
    }
    String::from_utf8(bytes).map_err(|_| "the prompt on stdin is not valid UTF-8".into())
}

/// Log to stderr through `tracing-subscriber`: `--log` wins, then `RUST_LOG`, else `warn`
/// (so that retry waits and other warnings show).
fn init_logging(level: Option<&str>) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => EnvFilter::try_new(level)
            .map_err(|err| format!("--log {level:?} is not a log level or filter: {err}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    };
    // A second initialisation (the library called twice in one process) keeps the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_target(false)
        .with_ansi(io::stderr().is_terminal())
        .try_init();
    Ok(())
}

/// The options of a run printed with `output`: the text is printed as it streams, so the
/// run keeps no copy of it (memory stays bounded whatever the answer's length), except with
/// `--json`, whose `run_completed` line carries the whole text.
fn run_options(output: OutputArgs) -> RunOptions {
    if output.json {
        RunOptions::default()
    } else {
        RunOptions::default().discard_text()
    }
}

/// Print one run; map its outcome to an exit code.
fn answer(
    driver: &dyn Driver,
    run: agent_core::agent::RunStream,
    choice: &ModelChoice,
    output: OutputArgs,
) -> ExitCode {
    let stdout = io::stdout();
    let err_terminal = io::stderr().is_terminal();
    let mut renderer = Renderer::new(stdout.lock(), io::stderr(), output, err_terminal);
    let consumed = driver.consume(run, &mut |event| renderer.on_event(&event));
    let outcome = renderer.outcome();
    drop(renderer);
    if let Err(err) = consumed {
        if err.kind() == io::ErrorKind::BrokenPipe {
            // The reader went away (e.g. `| head`): stop quietly; the run was cancelled.
            return ExitCode::SUCCESS;
        }
        eprintln!("agent: could not write the output: {err}");
        return ExitCode::FAILURE;
    }
    match outcome {
        Outcome::Completed => ExitCode::SUCCESS,
        Outcome::Failed(error) => {
            eprintln!("{}", explain(&error, choice));
            ExitCode::FAILURE
        }
        Outcome::Cancelled => {
            eprintln!("agent: the run was cancelled");
            ExitCode::FAILURE
        }
        Outcome::Unfinished => {
            eprintln!("agent: the run ended without a result (this is a bug)");
            ExitCode::FAILURE
        }
    }
}

/// Where `agent chat` reads its messages from.
enum ChatInput {
    /// A terminal: a line editor (editing keys, history; Ctrl-C clears the line, Ctrl-D on
    /// an empty line quits).
    Editor(Box<rustyline::DefaultEditor>),
    /// A pipe or a file: plain lines.
    Lines(io::Lines<io::StdinLock<'static>>),
}

impl ChatInput {
    /// The next message; `None` at the end of the input.
    fn next(&mut self) -> Option<io::Result<String>> {
        use rustyline::error::ReadlineError;
        match self {
            ChatInput::Lines(lines) => lines.next(),
            ChatInput::Editor(editor) => loop {
                match editor.readline("you> ") {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.as_str());
                        }
                        return Some(Ok(line));
                    }
                    // Ctrl-C at the prompt drops the line being typed, as in a shell.
                    Err(ReadlineError::Interrupted) => continue,
                    Err(ReadlineError::Eof) => {
                        // Leave the shell's prompt on a line of its own.
                        eprintln!();
                        return None;
                    }
                    Err(ReadlineError::Io(err)) => return Some(Err(err)),
                    Err(err) => return Some(Err(io::Error::other(err))),
                }
            },
        }
    }
}

/// The run in progress, for Ctrl-C: the first Ctrl-C cancels it (the chat goes on); with
/// no run in progress, or at a second Ctrl-C for a run that is being cancelled, the process
/// exits with 130.
type CurrentRun = std::sync::Arc<std::sync::Mutex<Option<CancelHandle>>>;

fn install_chat_interrupt(current: CurrentRun) -> Result<(), ctrlc::Error> {
    ctrlc::set_handler(move || {
        let guard = current.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(run) if !run.is_cancelled() => run.cancel(),
            _ => {
                eprintln!();
                std::process::exit(130);
            }
        }
    })
}

fn chat(driver: &dyn Driver, agent: &Agent, choice: &ModelChoice, output: OutputArgs) -> ExitCode {
    let interactive = io::stdin().is_terminal();
    announce(choice);
    let mut input = if interactive {
        match rustyline::DefaultEditor::new() {
            Ok(editor) => ChatInput::Editor(Box::new(editor)),
            Err(err) => {
                eprintln!("agent: could not set up the terminal: {err}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        ChatInput::Lines(io::stdin().lock().lines())
    };
    if interactive {
        eprintln!(
            "agent: type a message and press Enter; Ctrl-C stops an answer, /clear forgets the \
             conversation, /exit or Ctrl-D quits."
        );
    }
    let current = CurrentRun::default();
    if let Err(err) = install_chat_interrupt(current.clone()) {
        eprintln!("agent: could not install the Ctrl-C handler: {err}");
        return ExitCode::FAILURE;
    }
    let session = agent.session();
    let mut status = ExitCode::SUCCESS;
    loop {
        let line = match input.next() {
            Some(Ok(line)) => line,
            Some(Err(err)) => {
                eprintln!("agent: could not read the input: {err}");
                return ExitCode::FAILURE;
            }
            None => break,
        };
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/clear" => {
                session.clear();
                eprintln!("agent: conversation cleared");
                continue;
            }
            message => {
                let run = session.run_with(message, run_options(output));
                let cancel = run.cancel_handle();
                *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(cancel.clone());
                status = answer(driver, run, choice, output);
                current.lock().unwrap_or_else(|e| e.into_inner()).take();
                if cancel.is_cancelled() {
                    // Stopped by the user with Ctrl-C: not a failure of the chat.
                    status = ExitCode::SUCCESS;
                }
            }
        }
    }
    status
}

/// Open the store `--store` names (`None` for memory: the server's own).
fn open_store(
    store: &StoreArg,
    runtime: agent_core::runtime::SharedRuntime,
) -> Result<Option<agent_core::store::SharedStore>, agent_core::store::StoreError> {
    Ok(match store {
        StoreArg::Memory => None,
        StoreArg::Sqlite(path) => Some(std::sync::Arc::new(agent_store_sqlite::SqliteStore::open(
            path, runtime,
        )?)),
        StoreArg::Postgres(dsn) => Some(std::sync::Arc::new(
            agent_store_postgres::PostgresStore::connect(dsn, runtime)?,
        )),
    })
}

fn serve(driver: &dyn Driver, agent: Agent, choice: &ModelChoice, args: &ServeArgs) -> ExitCode {
    let mut config = ServerConfig::default()
        .with_addr(args.addr)
        .with_allowed_origins(args.allow_origins.iter().cloned());
    if let Some(limit) = args.max_body_bytes {
        config = config.with_max_body_bytes(limit);
    }
    if let Some(limit) = args.max_concurrent_runs {
        config = config.with_max_concurrent_runs(limit);
    }
    if let Some(timeout) = args.write_timeout {
        config = config.with_write_timeout(timeout);
    }
    if let Some(timeout) = args.head_read_timeout {
        config = config.with_head_read_timeout(timeout);
    }
    if let Some(timeout) = args.body_read_timeout {
        config = config.with_body_read_timeout(timeout);
    }
    if let Some(limit) = args.max_headers {
        config = config.with_max_headers(limit);
    }
    if let Some(limit) = args.max_head_bytes {
        config = config.with_max_head_bytes(limit);
    }
    if let Some(interval) = args.keep_alive {
        config = config.with_keep_alive(interval);
    }
    if let Some(grace) = args.run_detach_grace {
        config = config.with_run_detach_grace(grace);
    }
    if let Some(retention) = args.run_retention {
        config = config.with_run_retention(retention);
    }
    if let Some(limit) = args.max_retained_runs {
        config = config.with_max_retained_runs(limit);
    }
    if let Some(limit) = args.max_run_log_bytes {
        config = config.with_max_run_log_bytes(limit);
    }
    if let Some(token) = &args.token {
        config = config.with_bearer_token(Secret::new(token.clone()));
    }
    if let Some(lease) = args.run_lease {
        config = config.with_run_lease(lease);
    }
    if let Some(id) = &args.instance_id {
        config = config.with_instance_id(id.clone());
    }
    let store = args
        .store
        .clone()
        .or_else(StoreArg::default_sqlite)
        .unwrap_or(StoreArg::Memory);
    match open_store(&store, agent.runtime().clone()) {
        Ok(Some(opened)) => config = config.with_store(opened),
        Ok(None) => {}
        Err(err) => {
            eprintln!(
                "agent: could not open the store {}: {err}",
                store.describe()
            );
            return ExitCode::FAILURE;
        }
    }
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    if let Err(err) = ctrlc::set_handler(move || {
        let _ = tx.send(());
    }) {
        eprintln!("agent: could not install the Ctrl-C handler: {err}");
        return ExitCode::FAILURE;
    }
    announce(choice);
    eprintln!("agent: sessions and runs are kept in {}", store.describe());
    let result = driver.serve(
        agent,
        config,
        &mut |addr| {
            eprintln!("agent: serving on http://{addr} (POST /v1/runs, /v1/chat/completions, /v1/responses, /v1/ai-sdk/chat, /v1/ag-ui; GET /v1/models, /healthz)");
            eprintln!("agent: try  curl -N http://{addr}/v1/runs -H 'content-type: application/json' -d '{{\"input\":\"What is 6 * 7?\"}}'");
            eprintln!("agent: press Ctrl-C (or send SIGTERM) to stop");
        },
        &mut || {
            let _ = rx.recv();
            eprintln!("agent: shutting down (open streams end with run_cancelled)");
        },
    );
    match result {
        Ok(()) => {
            eprintln!("agent: stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("agent: could not serve on {}: {err}", args.addr);
            ExitCode::FAILURE
        }
    }
}
