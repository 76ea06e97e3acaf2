//! The Chat Completions stream as a [`WireFormat`]: `data: {chunk}` events until
//! `data: [DONE]`.

use std::collections::VecDeque;

use super::chunk::parse_chunk;
use crate::error::ModelError;
use crate::model::ModelDelta;
use crate::model::transport::{EventFlow, WireFormat, mid_stream_error};
use crate::sse::SseEvent;

/// Decodes the events of one Chat Completions stream.
pub(super) struct ChatCompletionsWire;

impl WireFormat for ChatCompletionsWire {
    const EXPECTED: &'static str = "an OpenAI-compatible streaming endpoint";

    fn on_event(
        &mut self,
        host: &str,
        event: &SseEvent,
        out: &mut VecDeque<ModelDelta>,
    ) -> Result<EventFlow, ModelError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(EventFlow::End);
        }
        if event.event == "error" {
            return Err(mid_stream_error(host, data));
        }
        if !data.is_empty() {
            out.extend(parse_chunk(data)?);
        }
        Ok(EventFlow::Continue)
    }
}
