//! Printing a run: the answer on stdout, flushed after every delta; tool calls, errors and
//! stats on stderr; or every event as a JSON line.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use agent_core::event::{Event, EventKind, RunError, RunMetrics};
use agent_core::model::Usage;
use agent_core::tool::{ToolErrorKind, ToolResult};

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
    /// Whether stderr is a terminal: reasoning is dimmed there, labelled elsewhere, and the
    /// spinner may show.
    err_terminal: bool,
    spinner: Option<Spinner>,
    out_at_line_start: bool,
    /// Spaces and tabs at the end of the last text delta, not printed yet: printed before
    /// the next text, dropped at a line break (no trailing space before a tool call's line).
    pending_blanks: String,
    /// Whether a reasoning line is open on stderr, and whether it ends at a line start.
    in_reasoning: bool,
    err_at_line_start: bool,
    /// Tool calls started and not completed yet.
    tools_running: usize,
    outcome: Option<Outcome>,
}

/// The longest run of trailing blanks held back (beyond it, they are printed).
const MAX_PENDING_BLANKS: usize = 4096;

impl<O: Write, E: Write> Renderer<O, E> {
    /// A renderer writing to `out` and `err`; pass `err_terminal: true` only when stderr is
    /// a terminal: the spinner then shows on the real stderr while the model has not
    /// answered yet (at the start, and again after tool results), and reasoning is dimmed
    /// instead of labelled `thinking:`.
    pub fn new(out: O, err: E, options: OutputArgs, err_terminal: bool) -> Self {
        let mut renderer = Renderer {
            out,
            err,
            options,
            err_terminal,
            spinner: None,
            out_at_line_start: true,
            pending_blanks: String::new(),
            in_reasoning: false,
            err_at_line_start: true,
            tools_running: 0,
            outcome: None,
        };
        renderer.start_spinner();
        renderer
    }

    fn start_spinner(&mut self) {
        if self.err_terminal
            && !self.options.no_spinner
            && !self.options.json
            && self.spinner.is_none()
        {
            self.spinner = Some(Spinner::start());
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
                self.end_reasoning()?;
                self.print_text(text)?;
            }
            EventKind::ReasoningDelta { text } => {
                self.stop_spinner();
                self.print_reasoning(text)?;
            }
            EventKind::ToolCallStarted {
                name, arguments, ..
            } => {
                self.stop_spinner();
                self.end_reasoning()?;
                self.end_out_line()?;
                writeln!(self.err, "[tool] {name} {arguments}")?;
                self.err.flush()?;
                self.tools_running += 1;
            }
            EventKind::ToolCallCompleted {
                name,
                result,
                duration_ms,
                ..
            } => {
                let shown = match result {
                    ToolResult::Ok { output } => format!("-> {output}"),
                    ToolResult::Error {
                        kind: ToolErrorKind::Failed,
                        message,
                    } => format!("failed: {message}"),
                    ToolResult::Error { kind, message } => {
                        format!("failed ({}): {message}", kind.as_str().replace('_', " "))
                    }
                };
                writeln!(self.err, "[tool] {name} {shown} ({duration_ms:.1} ms)")?;
                self.err.flush()?;
                self.tools_running = self.tools_running.saturating_sub(1);
                if self.tools_running == 0 {
                    // The model's next round is on its way: show that something is waited for.
                    self.start_spinner();
                }
            }
            EventKind::RunCompleted { .. }
            | EventKind::RunFailed { .. }
            | EventKind::RunCancelled { .. } => {
                self.stop_spinner();
                self.end_reasoning()?;
                self.end_out_line()?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Print answer text, holding back its trailing blanks until more text follows.
    fn print_text(&mut self, text: &str) -> io::Result<()> {
        let kept = text.trim_end_matches([' ', '\t']);
        if kept.is_empty() {
            self.pending_blanks.push_str(text);
            if self.pending_blanks.len() > MAX_PENDING_BLANKS {
                self.out.write_all(self.pending_blanks.as_bytes())?;
                self.out.flush()?;
                self.pending_blanks.clear();
                self.out_at_line_start = false;
            }
            return Ok(());
        }
        self.out.write_all(self.pending_blanks.as_bytes())?;
        self.out.write_all(kept.as_bytes())?;
        self.out.flush()?;
        self.pending_blanks.clear();
        self.pending_blanks.push_str(&text[kept.len()..]);
        self.out_at_line_start = kept.ends_with('\n');
        Ok(())
    }

    /// Print reasoning on stderr: dimmed on a terminal, else after a `thinking: ` label, on
    /// lines of its own.
    fn print_reasoning(&mut self, text: &str) -> io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        if !self.in_reasoning {
            self.end_out_line()?;
            if !self.err_terminal {
                self.err.write_all(b"thinking: ")?;
            }
            self.in_reasoning = true;
        }
        if self.err_terminal {
            write!(self.err, "\x1b[2m{text}\x1b[0m")?;
        } else {
            self.err.write_all(text.as_bytes())?;
        }
        self.err.flush()?;
        self.err_at_line_start = text.ends_with('\n');
        Ok(())
    }

    /// End an open reasoning line on stderr.
    fn end_reasoning(&mut self) -> io::Result<()> {
        if self.in_reasoning {
            if !self.err_at_line_start {
                self.err.write_all(b"\n")?;
                self.err.flush()?;
            }
            self.in_reasoning = false;
            self.err_at_line_start = true;
        }
        Ok(())
    }

    /// End the answer's line on stdout so that stderr lines and the shell prompt start clean.
    fn end_out_line(&mut self) -> io::Result<()> {
        self.pending_blanks.clear();
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
            output: None,
        });
        let (out, err, outcome) = render(kinds, TEXT);
        assert_eq!(
            out, "Let me see.\n42\n",
            "no trailing blank before the line break"
        );
        assert!(
            err.contains("[tool] calculator {\"expression\":\"6*7\"}"),
            "{err}"
        );
        assert!(err.contains("[tool] calculator -> 42.0"), "{err}");
        assert_eq!(outcome, Outcome::Completed);
    }

    #[test]
    fn reasoning_is_labelled_on_its_own_line_and_every_stream_ends_with_a_newline() {
        let kinds = vec![
            EventKind::ReasoningDelta {
                text: "The user ".into(),
            },
            EventKind::ReasoningDelta {
                text: "asks.".into(),
            },
            EventKind::TextDelta {
                text: "Hello".into(),
            },
            EventKind::ReasoningDelta {
                text: "More.".into(),
            },
            EventKind::RunCancelled {
                partial_text: String::new(),
            },
        ];
        let (out, err, _) = render(kinds, TEXT);
        assert_eq!(out, "Hello\n");
        assert_eq!(err, "thinking: The user asks.\nthinking: More.\n");
    }

    #[test]
    fn reasoning_is_dimmed_on_a_terminal() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut renderer = Renderer::new(&mut out, &mut err, TEXT, true);
        let kind = EventKind::ReasoningDelta { text: "hm".into() };
        renderer.on_event(&Event { seq: 0, kind }).unwrap();
        let kind = EventKind::TextDelta { text: "ok".into() };
        renderer.on_event(&Event { seq: 1, kind }).unwrap();
        drop(renderer);
        assert_eq!(String::from_utf8(err).unwrap(), "\x1b[2mhm\x1b[0m\n");
        assert_eq!(out, b"ok");
    }

    #[test]
    fn tool_failures_print_their_error_once() {
        let kinds = vec![EventKind::ToolCallCompleted {
            call_id: "c".into(),
            name: "calculator".into(),
            result: ToolResult::Error {
                kind: ToolErrorKind::Failed,
                message: "division by zero".into(),
            },
            duration_ms: 0.0,
        }];
        let (_, err, _) = render(kinds, TEXT);
        assert_eq!(err, "[tool] calculator failed: division by zero (0.0 ms)\n");
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
        assert!(
            err.contains("failed (unknown tool): no tool named x"),
            "{err}"
        );
        assert!(matches!(outcome, Outcome::Failed(e) if e.kind == ErrorKind::Connect));
    }
}
