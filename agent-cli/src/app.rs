//! The three commands: answer a prompt, chat, serve.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::process::ExitCode;

use agent_core::agent::{Agent, RunOptions};
use agent_core::secret::Secret;
use agent_core::server::ServerConfig;

use crate::cli::{Cli, Command, OutputArgs, ServeArgs};
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
    let agent = match build_agent(
        &choice,
        cli.model.instructions.as_deref(),
        driver.runtime(),
        driver.http_client(),
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
            eprintln!("{}", choice.announcement());
            let run = agent.run_with(prompt, run_options(cli.output));
            answer(&*driver, run, &choice, cli.output)
        }
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
        let shown = if limit >= 1 << 20 && limit % (1 << 20) == 0 {
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

fn chat(driver: &dyn Driver, agent: &Agent, choice: &ModelChoice, output: OutputArgs) -> ExitCode {
    let interactive = io::stdin().is_terminal();
    eprintln!("{}", choice.announcement());
    if interactive {
        eprintln!(
            "agent: type a message and press Enter; /clear forgets the conversation, /exit or Ctrl-D quits."
        );
    }
    let session = agent.session();
    let stdin = io::stdin();
    let mut lines = stdin.lock().lines();
    let mut status = ExitCode::SUCCESS;
    loop {
        if interactive {
            eprint!("you> ");
            let _ = io::stderr().flush();
        }
        let line = match lines.next() {
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
            input => {
                let run = session.run_with(input, run_options(output));
                status = answer(driver, run, choice, output)
            }
        }
    }
    status
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
    if let Some(token) = &args.token {
        config = config.with_bearer_token(Secret::new(token.clone()));
    }
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    if let Err(err) = ctrlc::set_handler(move || {
        let _ = tx.send(());
    }) {
        eprintln!("agent: could not install the Ctrl-C handler: {err}");
        return ExitCode::FAILURE;
    }
    eprintln!("{}", choice.announcement());
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
