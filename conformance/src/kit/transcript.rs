//! [`Transcript`]: the events of one run as a consumer saw them, checked against the event
//! contract as they arrive (case 10 of the suite runs inside every other case).
//!
//! ```
//! use agent_core::event::{Event, EventKind};
//! use conformance::kit::Transcript;
//!
//! let mut t = Transcript::new();
//! t.push(Event { seq: 0, kind: EventKind::RunStarted { run_id: "run_1".into(), input: "hi".into() } }).unwrap();
//! t.push(Event { seq: 1, kind: EventKind::TextDelta { text: "Hi".into() } }).unwrap();
//! t.push(Event { seq: 2, kind: EventKind::RunCancelled { partial_text: "Hi".into() } }).unwrap();
//! t.assert_contract();
//! assert_eq!(t.text(), "Hi");
//! // Anything after the terminal event breaks the contract.
//! assert!(t.push(Event { seq: 3, kind: EventKind::TextDelta { text: "!".into() } }).is_err());
//! ```

use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::time::Instant;

use agent_core::error::ErrorKind;
use agent_core::event::{Event, EventKind, RunError};
use serde_json::Value;

/// The events of one run, in arrival order, with their arrival instants.
///
/// [`push`](Transcript::push) checks each event against the contract: `seq` counts from 0
/// without gaps, the first event is `run_started`, and nothing follows the single terminal
/// event. The first violation is kept; [`assert_contract`](Transcript::assert_contract)
/// (called by every case) panics with it, and also requires that the run ended.
#[derive(Debug, Clone)]
pub struct Transcript {
    events: Vec<Event>,
    received_at: Vec<Instant>,
    started_at: Instant,
    violation: Option<String>,
}

impl Default for Transcript {
    fn default() -> Self {
        Self::new()
    }
}

impl Transcript {
    /// An empty transcript; its clock starts now.
    pub fn new() -> Self {
        Transcript {
            events: Vec::new(),
            received_at: Vec::new(),
            started_at: Instant::now(),
            violation: None,
        }
    }

    /// When the transcript was created (just before the run was started).
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// Append `event`, checking the contract. An `Err` names the first violation (which is
    /// also kept for [`assert_contract`](Transcript::assert_contract)).
    pub fn push(&mut self, event: Event) -> Result<(), String> {
        let problem = self.check_next(&event);
        self.events.push(event);
        self.received_at.push(Instant::now());
        match problem {
            Some(problem) => {
                self.violation.get_or_insert_with(|| problem.clone());
                Err(problem)
            }
            None => Ok(()),
        }
    }

    /// [`push`](Transcript::push) for a `consume` callback: `Break` on a violation, so the
    /// run stops at once (assertions run after `consume` returns, never inside a backend).
    pub fn record(&mut self, event: Event) -> ControlFlow<()> {
        match self.push(event) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    }

    /// Note a violation found outside the events themselves (e.g. a callback after `Break`).
    pub fn note_violation(&mut self, problem: impl Into<String>) {
        self.violation.get_or_insert_with(|| problem.into());
    }

    fn check_next(&self, event: &Event) -> Option<String> {
        let expected = self.events.len() as u64;
        if let Some(last) = self.events.last()
            && last.is_terminal()
        {
            return Some(format!(
                "event seq {} ({}) arrived after the terminal event seq {} ({})",
                event.seq,
                event.name(),
                last.seq,
                last.name()
            ));
        }
        if event.seq != expected {
            return Some(format!(
                "seq is not strictly increasing from 0 without gaps: event #{expected} ({}) has seq {}",
                event.name(),
                event.seq
            ));
        }
        if expected == 0 && !matches!(event.kind, EventKind::RunStarted { .. }) {
            return Some(format!(
                "the first event is {}, not run_started",
                event.name()
            ));
        }
        None
    }

    /// The first contract violation seen, if any.
    pub fn violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }

    /// Panic unless every event kept the contract and the run ended with exactly one
    /// terminal event, last.
    pub fn assert_contract(&self) {
        if let Some(problem) = &self.violation {
            panic!("event contract violated: {problem}\n{}", self.summary());
        }
        let terminals = self.events.iter().filter(|e| e.is_terminal()).count();
        assert!(
            terminals == 1 && self.events.last().is_some_and(Event::is_terminal),
            "event contract: the run must end with exactly one terminal event, last; got \
             {terminals}\n{}",
            self.summary()
        );
    }

    /// Panic if an event broke the contract, allowing a run that was dropped before its end
    /// (no terminal event).
    pub fn assert_contract_prefix(&self) {
        if let Some(problem) = &self.violation {
            panic!("event contract violated: {problem}\n{}", self.summary());
        }
    }

    /// The events.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// `true` when no event arrived.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// When event `i` (by position) arrived.
    pub fn received_at(&self, i: usize) -> Option<Instant> {
        self.received_at.get(i).copied()
    }

    /// The terminal event, if the run ended.
    pub fn terminal(&self) -> Option<&Event> {
        self.events.last().filter(|e| e.is_terminal())
    }

    /// How many events are of type `name` (e.g. `"text_delta"`).
    pub fn count(&self, name: &str) -> usize {
        self.events.iter().filter(|e| e.name() == name).count()
    }

    /// The texts of the text deltas, in order.
    pub fn text_deltas(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::TextDelta { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// All text deltas concatenated.
    pub fn text(&self) -> String {
        self.text_deltas().concat()
    }

    /// The final text of a completed run. Panics (with a summary) if the run did not
    /// complete.
    pub fn completed_text(&self) -> &str {
        match self.terminal().map(|e| &e.kind) {
            Some(EventKind::RunCompleted { text, .. }) => text,
            other => panic!(
                "run outcome: expected run_completed, the run ended with {}\n{}",
                other.map_or_else(|| "no terminal event".to_string(), describe),
                self.summary()
            ),
        }
    }

    /// The error and partial text of a failed run. Panics (with a summary) if the run did
    /// not fail.
    pub fn failure(&self) -> (&RunError, &str) {
        match self.terminal().map(|e| &e.kind) {
            Some(EventKind::RunFailed {
                error,
                partial_text,
            }) => (error, partial_text),
            other => panic!(
                "run outcome: expected run_failed, the run ended with {}\n{}",
                other.map_or_else(|| "no terminal event".to_string(), describe),
                self.summary()
            ),
        }
    }

    /// Panic unless the run failed with `kind`; returns the error and the partial text.
    pub fn assert_failed(&self, kind: ErrorKind) -> (&RunError, &str) {
        let (error, partial) = self.failure();
        assert_eq!(
            error.kind,
            kind,
            "errors: the run must fail with {kind}, it failed with {} ({})\n{}",
            error.kind,
            error.message,
            self.summary()
        );
        (error, partial)
    }

    /// The event kinds as JSON values (for assertions on fields).
    pub fn to_json(&self) -> Vec<Value> {
        self.events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
            .collect()
    }

    /// The redacted JSON array for snapshots (see [`crate::kit::redact`]).
    pub fn to_redacted_json(&self) -> Value {
        super::redact::redact_events(&self.events)
    }

    /// A compact, human-readable listing for failure messages (long runs are elided in
    /// the middle).
    pub fn summary(&self) -> String {
        let mut out = format!("transcript ({} events):", self.events.len());
        let n = self.events.len();
        for (i, event) in self.events.iter().enumerate() {
            if n > 40 && (20..n - 15).contains(&i) {
                if i == 20 {
                    let _ = write!(out, "\n  … {} events …", n - 35);
                }
                continue;
            }
            let _ = write!(out, "\n  {} {}", event.seq, describe(&event.kind));
        }
        out
    }
}

/// One line describing an event kind, for summaries.
pub fn describe(kind: &EventKind) -> String {
    match kind {
        EventKind::TextDelta { text } => format!("text_delta {:?}", clip(text)),
        EventKind::ReasoningDelta { text } => format!("reasoning_delta {:?}", clip(text)),
        EventKind::ToolCallStarted { call_id, name, .. } => {
            format!("tool_call_started {call_id} {name}")
        }
        EventKind::ToolCallCompleted {
            call_id, result, ..
        } => format!(
            "tool_call_completed {call_id} {}",
            serde_json::to_string(result).unwrap_or_default()
        ),
        EventKind::RunFailed {
            error,
            partial_text,
        } => format!(
            "run_failed {}: {} (partial text {:?})",
            error.kind,
            error.message,
            clip(partial_text)
        ),
        EventKind::RunCompleted { text, .. } => format!("run_completed {:?}", clip(text)),
        EventKind::RunCancelled { partial_text } => {
            format!("run_cancelled (partial text {:?})", clip(partial_text))
        }
        other => other.name().to_string(),
    }
}

/// At most 80 characters of `text`, with an ellipsis when cut.
fn clip(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}
