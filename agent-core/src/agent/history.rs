//! The history of a [`Session`](super::Session), bounded in bytes.
//!
//! A history is a list of exchanges, each opened by a user message and followed by what the
//! run added (assistant messages, tool calls and their results). When a bound is set and a
//! completed run makes the history exceed it, whole exchanges are dropped from the front,
//! oldest first, so a tool round is never cut in half.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::model::Message;

/// The bytes a message is accounted for: its text (content, tool call ids, names and
/// arguments) plus the size of the message value itself.
pub fn message_bytes(message: &Message) -> usize {
    let text = match message {
        Message::System { content } | Message::User { content } => content.len(),
        Message::Assistant {
            content,
            tool_calls,
        } => {
            content.len()
                + tool_calls
                    .iter()
                    .map(|c| c.id.len() + c.name.len() + c.arguments.len() + size_of_val(c))
                    .sum::<usize>()
        }
        Message::Tool { call_id, content } => call_id.len() + content.len(),
    };
    text + size_of::<Message>()
}

/// A session's messages, their accounted size, and the bounds that apply to them.
#[derive(Debug, Default)]
pub(crate) struct History {
    messages: Vec<Message>,
    bytes: usize,
    /// Most bytes kept; oldest exchanges are dropped beyond.
    max_bytes: Option<usize>,
    /// A counter shared by several histories (a server's sessions), kept equal to the sum
    /// of their `bytes`.
    total: Option<Arc<AtomicUsize>>,
}

impl History {
    pub(crate) fn bounded(max_bytes: Option<usize>, total: Option<Arc<AtomicUsize>>) -> Self {
        History {
            messages: Vec::new(),
            bytes: 0,
            max_bytes,
            total,
        }
    }

    pub(crate) fn messages(&self) -> &[Message] {
        &self.messages
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Append the messages of a completed run, then drop the oldest exchanges while the
    /// history exceeds its bound. When the newest exchange alone exceeds it, nothing is
    /// kept (the bound holds; the caller refuses inputs that cannot fit beforehand).
    pub(crate) fn append(&mut self, new: Vec<Message>) {
        let added: usize = new.iter().map(message_bytes).sum();
        self.messages.extend(new);
        self.grow(added);
        let Some(max) = self.max_bytes else {
            return;
        };
        if self.bytes <= max {
            return;
        }
        // Find the first exchange start (a user message, not the first message) from which
        // the rest fits.
        let mut dropped = 0usize;
        let mut cut = self.messages.len();
        for (i, message) in self.messages.iter().enumerate() {
            if i > 0 && matches!(message, Message::User { .. }) && self.bytes - dropped <= max {
                cut = i;
                break;
            }
            dropped += message_bytes(message);
        }
        if cut == self.messages.len() {
            dropped = self.bytes;
            tracing::warn!(
                bytes = self.bytes,
                max_bytes = max,
                "the newest session exchange alone exceeds max_session_bytes; history cleared"
            );
        }
        self.messages.drain(..cut);
        self.shrink(dropped);
    }

    /// Take the messages out, leaving the history empty.
    pub(crate) fn take(&mut self) -> Vec<Message> {
        let bytes = self.bytes;
        self.shrink(bytes);
        std::mem::take(&mut self.messages)
    }

    pub(crate) fn clear(&mut self) {
        self.messages.clear();
        let bytes = self.bytes;
        self.shrink(bytes);
    }

    /// Stop counting this history in the shared total (it was forgotten by its owner).
    pub(crate) fn detach(&mut self) {
        if let Some(total) = self.total.take() {
            total.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }

    fn grow(&mut self, n: usize) {
        self.bytes += n;
        if let Some(total) = &self.total {
            total.fetch_add(n, Ordering::AcqRel);
        }
    }

    fn shrink(&mut self, n: usize) {
        self.bytes -= n;
        if let Some(total) = &self.total {
            total.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ToolCall;

    fn exchange(input: &str, with_tool: bool) -> Vec<Message> {
        let mut messages = vec![Message::user(input)];
        if with_tool {
            messages.push(Message::Assistant {
                content: String::new(),
                tool_calls: vec![ToolCall {
                    id: "c".into(),
                    name: "t".into(),
                    arguments: "{}".into(),
                }],
            });
            messages.push(Message::Tool {
                call_id: "c".into(),
                content: "out".into(),
            });
        }
        messages.push(Message::assistant("answer"));
        messages
    }

    #[test]
    fn oldest_whole_exchanges_are_dropped_and_the_total_follows() {
        let total = Arc::new(AtomicUsize::new(0));
        let one: usize = exchange(&"x".repeat(100), true)
            .iter()
            .map(message_bytes)
            .sum();
        let mut history = History::bounded(Some(one * 2 + one / 2), Some(total.clone()));
        for _ in 0..5 {
            history.append(exchange(&"x".repeat(100), true));
            assert!(history.bytes() <= one * 2 + one / 2);
            assert_eq!(total.load(Ordering::Acquire), history.bytes());
            assert!(matches!(history.messages()[0], Message::User { .. }));
        }
        assert_eq!(history.messages().len(), 8, "two whole exchanges kept");
        drop(history);
        assert_eq!(total.load(Ordering::Acquire), 0);
    }

    #[test]
    fn an_exchange_larger_than_the_bound_is_not_kept() {
        let mut history = History::bounded(Some(300), None);
        history.append(exchange("small", false));
        history.append(exchange(&"x".repeat(1000), false));
        assert!(history.messages().is_empty());
        assert_eq!(history.bytes(), 0);
    }
}
