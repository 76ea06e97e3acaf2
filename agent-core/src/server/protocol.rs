//! Front-end protocols: each is a thin encoder over the same run stream, mounted at its own
//! path. A protocol module parses its request body into a run and names the encoder that
//! turns the run's events into its wire frames; the service does everything else the same
//! way for all of them (origin check, auth, content type, body limit, the concurrent-run
//! limit, `x-run-id`, SSE headers, keep-alive comments, cancellation on disconnect,
//! shutdown).
//!
//! | path | protocol | module |
//! |---|---|---|
//! | `POST /v1/ai-sdk/chat` | the Vercel AI SDK's UI message stream (`useChat`) | `ai_sdk` |
//! | `POST /v1/ag-ui` | AG-UI (CopilotKit) | `ag_ui` |
//! | `POST /v1/responses` | the OpenAI Responses API | `responses` |

use crate::agent::{Agent, RunStream};
use crate::event::Event;
use crate::runtime::BoxFuture;

use super::response::{ApiError, ApiResponse};
use super::runs::RunEvents;

/// Turns a run's events into the frames of one wire protocol.
///
/// `encode` is called once per event, in order, and appends that event's frames to `out`
/// (nothing for an event the protocol has no frame for). The terminal event's call also
/// appends whatever closes the stream (`[DONE]`, a finish frame). It runs on the server's
/// hot path: no blocking, no allocation beyond the frames themselves where avoidable.
pub(crate) trait FrameEncoder: Send + 'static {
    /// Append the frames for `event` to `out`.
    fn encode(&mut self, event: &Event, out: &mut String);
}

/// What a protocol's request became.
pub(crate) enum Start {
    /// Stream the run with `encoder`, adding `headers` to the SSE response's.
    Stream {
        run: RunStream,
        encoder: Box<dyn FrameEncoder>,
        headers: Vec<(&'static str, String)>,
    },
    /// Answer once, when the run ends (a non-streamed request): `finish` reads the run's
    /// events and resolves to the complete response.
    Complete {
        run: RunStream,
        finish: Box<dyn FnOnce(RunEvents) -> BoxFuture<ApiResponse> + Send>,
    },
}

/// Parses a protocol's request body and starts the run on `agent`.
pub(crate) type StartFn = fn(&Agent, &[u8]) -> Result<Start, ApiError>;

/// The mounted protocols: path and start function.
pub(crate) const PROTOCOLS: &[(&str, StartFn)] = &[
    ("/v1/ai-sdk/chat", super::ai_sdk::start),
    ("/v1/ag-ui", super::ag_ui::start),
    ("/v1/responses", super::responses::start),
];

/// The start function mounted at `path`.
pub(crate) fn find(path: &str) -> Option<StartFn> {
    PROTOCOLS
        .iter()
        .find(|(mounted, _)| *mounted == path)
        .map(|(_, start)| *start)
}
