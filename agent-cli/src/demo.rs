//! The built-in demo: a scripted model that streams at a visible pace and two tools, a
//! calculator and a clock. It needs no key and no server.
//!
//! ```
//! use std::sync::Arc;
//! use futures_util::StreamExt;
//! use agent_core::agent::Agent;
//! use agent_core::event::EventKind;
//! use agent_core::runtime::{block_on, TestRuntime};
//!
//! let agent = agent_cli::demo::tools(Agent::builder())
//!     .model(agent_cli::demo::model(std::time::Duration::ZERO))
//!     .runtime(TestRuntime::new())
//!     .build()
//!     .unwrap();
//! let events: Vec<_> = block_on(agent.run("What is 6 * 7?").collect());
//! let EventKind::RunCompleted { text, .. } = &events.last().unwrap().kind else { panic!() };
//! assert!(text.contains("42"), "{text}");
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_core::agent::AgentBuilder;
use agent_core::model::{Message, ModelRequest, ScriptedModel, Turn};
use agent_core::tool::{ToolError, typed_tool};

/// Add the demo tools (`calculator`, `clock`) to `builder`.
pub fn tools(builder: AgentBuilder) -> AgentBuilder {
    builder
        .tool(typed_tool(
            "calculator",
            "Evaluate an arithmetic expression with + - * / and parentheses",
            |args: CalculatorArgs| async move {
                evaluate(&args.expression)
                    .map(number_json)
                    .map_err(ToolError::failed)
            },
        ))
        .tool(typed_tool(
            "clock",
            "The current date and time in UTC",
            |_: ClockArgs| async move { Ok::<_, ToolError>(utc_now()) },
        ))
}

/// `84.0` as `84`, other values as they are.
fn number_json(value: f64) -> serde_json::Value {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        serde_json::Value::from(value as i64)
    } else {
        serde_json::Value::from(value)
    }
}

/// Arguments of the `calculator` tool.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct CalculatorArgs {
    /// The expression, e.g. `2 * (3 + 4)`.
    pub expression: String,
}

/// Arguments of the `clock` tool (none).
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct ClockArgs {}

/// The demo model. `pause` is the delay between words (about 30 ms looks natural).
///
/// It answers arithmetic with the calculator, questions about the time or date with the
/// clock, and anything else with a short explanation of this project, one word at a time.
pub fn model(pause: Duration) -> ScriptedModel {
    ScriptedModel::from_fn(move |request, _| turn_for(request, pause)).with_name("demo")
}

fn turn_for(request: &ModelRequest, pause: Duration) -> Turn {
    let usage = |turn: Turn, words: usize| turn.usage(prompt_tokens(request), words as u64 + 1);
    // After a tool round: answer with the tool's output.
    if let Some(Message::Tool { content, .. }) = request.messages.last() {
        let tool = last_tool_name(request);
        let text = match tool.as_deref() {
            Some("clock") => format!("It is {content} (UTC), according to the clock tool."),
            _ if content.starts_with("error") => {
                format!("The calculator could not evaluate that: {content}.")
            }
            _ => format!("The result is {content}, computed with the calculator tool."),
        };
        let words = text.split(' ').count();
        return usage(Turn::new().words(&text, pause), words);
    }
    let input = request.last_user_text().unwrap_or_default();
    if let Some(expression) = arithmetic_in(input) {
        let args = serde_json::json!({ "expression": expression }).to_string();
        return usage(
            Turn::new()
                .words("Let me calculate that. ", pause)
                .tool_call("call_calculator", "calculator", args),
            4,
        );
    }
    let lower = input.to_lowercase();
    if ["time", "clock", "date", "today"]
        .iter()
        .any(|w| lower.contains(w))
    {
        return usage(
            Turn::new()
                .words("Let me check the clock. ", pause)
                .tool_call("call_clock", "clock", "{}"),
            5,
        );
    }
    let text = "I am the built-in demo model, so my answers are scripted, but they stream \
        for real: each word you see was sent the moment it was produced, through the same \
        agent loop, events and backends that a real model uses. Ask me to compute something, \
        like \"what is 12 * (3 + 4)\", or ask for the time, to see a tool call. To talk to a \
        real model, pass --base-url and --model, or set OPENAI_API_KEY.";
    let words = text.split(' ').count();
    usage(Turn::new().words(text, pause), words)
}

fn prompt_tokens(request: &ModelRequest) -> u64 {
    let chars: usize = request
        .messages
        .iter()
        .map(|m| match m {
            Message::System { content } | Message::User { content } => content.len(),
            Message::Assistant { content, .. } | Message::Tool { content, .. } => content.len(),
        })
        .sum();
    (chars / 4 + 1) as u64
}

fn last_tool_name(request: &ModelRequest) -> Option<String> {
    request.messages.iter().rev().find_map(|m| match m {
        Message::Assistant { tool_calls, .. } => tool_calls.last().map(|c| c.name.clone()),
        _ => None,
    })
}

/// The longest run of characters in `input` that looks like arithmetic and contains an
/// operator between digits, e.g. `12 * (3 + 4)` in "what is 12 * (3 + 4)?".
fn arithmetic_in(input: &str) -> Option<String> {
    let is_math = |c: char| c.is_ascii_digit() || " .+-*/()".contains(c);
    let mut best: Option<&str> = None;
    let mut start = None;
    for (i, c) in input.char_indices().chain([(input.len(), '\0')]) {
        match (is_math(c) && c != '\0', start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                let candidate = input[s..i].trim();
                let has_digit = candidate.chars().any(|c| c.is_ascii_digit());
                let has_op = candidate.chars().skip(1).any(|c| "+-*/".contains(c));
                if has_digit && has_op && best.is_none_or(|b| candidate.len() > b.len()) {
                    best = Some(candidate);
                }
                start = None;
            }
            _ => {}
        }
    }
    best.map(|s| s.trim_end_matches(['+', '-', '*', '/', ' ']).to_string())
}

/// Evaluate `+ - * /` with parentheses and unary minus over `f64`.
///
/// ```
/// assert_eq!(agent_cli::demo::evaluate("2 * (3 + 4) - 1"), Ok(13.0));
/// assert!(agent_cli::demo::evaluate("1 / 0").is_err());
/// ```
pub fn evaluate(expression: &str) -> Result<f64, String> {
    let tokens: Vec<char> = expression.chars().filter(|c| !c.is_whitespace()).collect();
    let mut parser = Parser { tokens, pos: 0 };
    let value = parser.expr(0)?;
    if parser.pos != parser.tokens.len() {
        return Err(format!(
            "unexpected {:?} at position {}",
            parser.tokens[parser.pos], parser.pos
        ));
    }
    if !value.is_finite() {
        return Err("the result is not a finite number (division by zero?)".into());
    }
    Ok(value)
}

struct Parser {
    tokens: Vec<char>,
    pos: usize,
}

impl Parser {
    const MAX_DEPTH: usize = 64;

    fn peek(&self) -> Option<char> {
        self.tokens.get(self.pos).copied()
    }

    fn expr(&mut self, depth: usize) -> Result<f64, String> {
        let mut value = self.term(depth)?;
        while let Some(op @ ('+' | '-')) = self.peek() {
            self.pos += 1;
            let rhs = self.term(depth)?;
            value = if op == '+' { value + rhs } else { value - rhs };
        }
        Ok(value)
    }

    fn term(&mut self, depth: usize) -> Result<f64, String> {
        let mut value = self.factor(depth)?;
        while let Some(op @ ('*' | '/')) = self.peek() {
            self.pos += 1;
            let rhs = self.factor(depth)?;
            value = if op == '*' { value * rhs } else { value / rhs };
        }
        Ok(value)
    }

    fn factor(&mut self, depth: usize) -> Result<f64, String> {
        if depth > Self::MAX_DEPTH {
            return Err("the expression is nested too deeply".into());
        }
        match self.peek() {
            Some('-') => {
                self.pos += 1;
                Ok(-self.factor(depth + 1)?)
            }
            Some('(') => {
                self.pos += 1;
                let value = self.expr(depth + 1)?;
                if self.peek() != Some(')') {
                    return Err("missing closing parenthesis".into());
                }
                self.pos += 1;
                Ok(value)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
                    self.pos += 1;
                }
                let text: String = self.tokens[start..self.pos].iter().collect();
                text.parse()
                    .map_err(|_| format!("{text:?} is not a number"))
            }
            Some(c) => Err(format!("unexpected {c:?} at position {}", self.pos)),
            None => Err("the expression ended early".into()),
        }
    }
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs)
}

fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant's public-domain algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_arithmetic_in_a_sentence() {
        assert_eq!(
            arithmetic_in("what is 12 * (3 + 4)?").as_deref(),
            Some("12 * (3 + 4)")
        );
        assert_eq!(arithmetic_in("2+2"), Some("2+2".into()));
        assert_eq!(arithmetic_in("tell me about 2026"), None);
        assert_eq!(arithmetic_in("hello"), None);
    }

    #[test]
    fn evaluates_and_rejects() {
        assert_eq!(evaluate("-(2+3)*4/2"), Ok(-10.0));
        assert_eq!(evaluate("1.5*2"), Ok(3.0));
        assert!(evaluate("2+").is_err());
        assert!(evaluate("(1").is_err());
        assert!(evaluate("abc").is_err());
        assert!(evaluate(&"(".repeat(1000)).is_err());
    }

    #[test]
    fn formats_utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_795_000_000), "2026-11-18 11:06:40");
    }
}
