//! Printing a run: the answer on stdout, flushed after every delta; tool calls, errors and
//! stats on stderr; or every event as a JSON line.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use agent_core::event::{Event, EventKind, RunError, RunMetrics};
use agent_core::model::Usage;
use agent_core::tool::ToolResult;

use crate::cli::OutputArgs;

/// How a run ended, for the exit code.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `run_completed`.
    Completed,
    /// `run_failed`, with its error.
    Failed(RunError),
    /// `run_cancelled`.
    Cancelled,
    /// The stream ended without a terminal event (a bug; reported as a failure).
    Unfinished,
}

/// Prints the events of a run as they arrive.
///
/// ```
/// use agent_core::event::{Event, EventKind};
/// use agent_cli::cli::OutputArgs;
/// use agent_cli::render::Renderer;
///
/// let mut out = Vec::new();
/// let mut err = Vec::new();
/// let options = OutputArgs { json: false, stats: false, no_spinner: true };
/// let mut renderer = Renderer::new(&mut out, &mut err, options, false);
/// renderer.on_event(&Event { seq: 0, kind: EventKind::TextDelta { text: "Hi".into() } }).unwrap();
/// drop(renderer);
/// assert_eq!(out, b"Hi");
/// ```
pub struct Renderer<O: Write, E: Write> {
    out: O,
    err: E,
    options: OutputArgs,
    spinner: Option<Spinner>,
    out_at_line_start: bool,
    outcome: Option<Outcome>,
}

impl<O: Write, E: Write> Renderer<O, E> {
    /// A renderer writing to `out` and `err`; `spinner` shows a spinner on the real stderr
    /// until the first output (pass `true` only when stderr is a terminal).
    pub fn new(out: O, err: E, options: OutputArgs, spinner: bool) -> Self {
        Renderer {
            out,
            err,
            options,
            spinner: (spinner && !options.no_spinner).then(Spinner::start),
            out_at_line_start: true,
            outcome: None,
        }
    }

    fn stop_spinner(&mut self) {
        if let Some(spinner) = self.spinner.take() {
            spinner.stop();
        }
    }

    /// Print one event. Every write to stdout is flushed at once.
    pub fn on_event(&mut self, event: &Event) -> io::Result<()> {
        if self.options.json {
            self.stop_spinner();
            serde_json::to_writer(&mut self.out, event).map_err(io::Error::other)?;
            self.out.write_all(b"\n")?;
            self.out.flush()?;
        } else {
            self.print_text_mode(event)?;
        }
        match &event.kind {
            EventKind::RunCompleted { usage, metrics, .. } => {
                self.outcome = Some(Outcome::Completed);
                if self.options.stats {
                    self.print_stats(usage, Some(metrics))?;
                }
            }
            EventKind::RunFailed { error, .. } => {
                self.outcome = Some(Outcome::Failed(error.clone()))
            }
            EventKind::RunCancelled { .. } => self.outcome = Some(Outcome::Cancelled),
            _ => {}
        }
        Ok(())
    }

    fn print_text_mode(&mut self, event: &Event) -> io::Result<()> {
        match &event.kind {
            EventKind::TextDelta { text } => {
                self.stop_spinner();
                self.out.write_all(text.as_bytes())?;
                self.out.flush()?;
                if !text.is_empty() {
                    self.out_at_line_start = text.ends_with('\n');
                }
            }
            EventKind::ReasoningDelta { text } => {
                self.stop_spinner();
                self.err.write_all(text.as_bytes())?;
                self.err.flush()?;
            }
            EventKind::ToolCallStarted {
                name, arguments, ..
            } => {
                self.stop_spinner();
                self.end_out_line()?;
                writeln!(self.err, "[tool] {name} {arguments}")?;
            }
            EventKind::ToolCallCompleted {
                name,
                result,
                duration_ms,
                ..
            } => {
                let shown = match result {
                    ToolResult::Ok { output } => format!("-> {output}"),
                    ToolResult::Error { kind, message } => {
                        format!("failed ({}): {message}", kind.as_str())
                    }
                };
                writeln!(self.err, "[tool] {name} {shown} ({duration_ms:.1} ms)")?;
            }
            EventKind::RunCompleted { .. }
            | EventKind::RunFailed { .. }
            | EventKind::RunCancelled { .. } => {
                self.stop_spinner();
                self.end_out_line()?;
            }
            _ => {}
        }
        Ok(())
    }

    /// End the answer's line on stdout so that stderr lines and the shell prompt start clean.
    fn end_out_line(&mut self) -> io::Result<()> {
        if !self.out_at_line_start {
            self.out.write_all(b"\n")?;
            self.out.flush()?;
            self.out_at_line_start = true;
        }
        Ok(())
    }

    fn print_stats(&mut self, usage: &Usage, metrics: Option<&RunMetrics>) -> io::Result<()> {
        let Some(metrics) = metrics else {
            return Ok(());
        };
        let ttft = metrics
            .time_to_first_token_ms
            .map(|t| format!("{t:.1} ms"))
            .unwrap_or_else(|| "-".into());
        writeln!(
            self.err,
            "stats: time to first token {ttft}, total {:.1} ms, {} round(s), tokens {} prompt + {} completion = {}",
            metrics.duration_ms,
            metrics.rounds.len(),
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        )?;
        for round in &metrics.rounds {
            writeln!(
                self.err,
                "stats:   round {}: model {:.1} ms (first token {}), tools {:.1} ms ({} call(s))",
                round.round,
                round.model_duration_ms,
                round
                    .time_to_first_token_ms
                    .map(|t| format!("{t:.1} ms"))
                    .unwrap_or_else(|| "-".into()),
                round.tools_duration_ms,
                round.tool_calls
            )?;
        }
        Ok(())
    }

    /// How the run ended (`Unfinished` if no terminal event was seen).
    pub fn outcome(&self) -> Outcome {
        self.outcome.clone().unwrap_or(Outcome::Unfinished)
    }
}

impl<O: Write, E: Write> Drop for Renderer<O, E> {
    fn drop(&mut self) {
        self.stop_spinner();
    }
}

/// A spinner on stderr, shown until the first output.
struct Spinner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Spinner {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("agent-spinner".into())
            .spawn(move || {
                let frames = ['|', '/', '-', '\\'];
                let mut i = 0;
                // Bounded: at most ten minutes of spinning.
                while !flag.load(Ordering::Acquire) && i < 7_500 {
                    let mut err = io::stderr().lock();
                    let _ = write!(err, "\r{} thinking...", frames[i % frames.len()]);
                    let _ = err.flush();
                    drop(err);
                    i += 1;
                    std::thread::sleep(Duration::from_millis(80));
                }
                let mut err = io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K");
                let _ = err.flush();
            })
            .ok();
        Spinner { stop, thread }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_core::error::ErrorKind;
    use agent_core::tool::ToolErrorKind;
    use serde_json::json;

    fn events() -> Vec<EventKind> {
        vec![
            EventKind::TextDelta {
                text: "Let me see. ".into(),
            },
            EventKind::ToolCallStarted {
                call_id: "c".into(),
                name: "calculator".into(),
                arguments: json!({"expression": "6*7"}),
            },
            EventKind::ToolCallCompleted {
                call_id: "c".into(),
                name: "calculator".into(),
                result: ToolResult::Ok {
                    output: json!(42.0),
                },
                duration_ms: 0.5,
            },
            EventKind::TextDelta { text: "42".into() },
        ]
    }

    fn render(kinds: Vec<EventKind>, options: OutputArgs) -> (String, String, Outcome) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut renderer = Renderer::new(&mut out, &mut err, options, false);
        for (seq, kind) in kinds.into_iter().enumerate() {
            renderer
                .on_event(&Event {
                    seq: seq as u64,
                    kind,
                })
                .unwrap();
        }
        let outcome = renderer.outcome();
        drop(renderer);
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
            outcome,
        )
    }

    const TEXT: OutputArgs = OutputArgs {
        json: false,
        stats: false,
        no_spinner: true,
    };

    #[test]
    fn text_goes_to_stdout_and_tools_to_stderr() {
        let mut kinds = events();
        kinds.push(EventKind::RunCompleted {
            text: "Let me see. 42".into(),
            usage: Usage::default(),
            metrics: RunMetrics {
                time_to_first_token_ms: Some(1.0),
                duration_ms: 2.0,
                rounds: vec![],
            },
        });
        let (out, err, outcome) = render(kinds, TEXT);
        assert_eq!(out, "Let me see. \n42\n");
        assert!(
            err.contains("[tool] calculator {\"expression\":\"6*7\"}"),
            "{err}"
        );
        assert!(err.contains("[tool] calculator -> 42.0"), "{err}");
        assert_eq!(outcome, Outcome::Completed);
    }

    #[test]
    fn json_mode_prints_one_line_per_event() {
        let (out, _, outcome) = render(events(), OutputArgs { json: true, ..TEXT });
        assert_eq!(out.lines().count(), 4);
        for line in out.lines() {
            let _: Event = serde_json::from_str(line).unwrap();
        }
        assert_eq!(outcome, Outcome::Unfinished);
    }

    #[test]
    fn failures_and_tool_errors_are_reported() {
        let kinds = vec![
            EventKind::ToolCallCompleted {
                call_id: "c".into(),
                name: "x".into(),
                result: ToolResult::Error {
                    kind: ToolErrorKind::UnknownTool,
                    message: "no tool named x".into(),
                },
                duration_ms: 0.0,
            },
            EventKind::RunFailed {
                error: RunError {
                    kind: ErrorKind::Connect,
                    message: "refused".into(),
                    status: None,
                    retry_after_ms: None,
                },
                partial_text: String::new(),
            },
        ];
        let (_, err, outcome) = render(kinds, TEXT);
        assert!(err.contains("failed (unknown_tool): no tool named x"));
        assert!(matches!(outcome, Outcome::Failed(e) if e.kind == ErrorKind::Connect));
    }
}
