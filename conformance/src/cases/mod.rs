//! The cases: one function per case, each taking the [`Backend`] under test.
//!
//! A case panics (an assertion) when the backend fails it, returns an [`Outcome`] with
//! notes and measurements when it passes, and returns [`Outcome::not_applicable`] when it
//! cannot apply to this backend (the starvation case on a multi-threaded executor) — it
//! never fakes a pass. [`CASES`] lists them all, in the order of the issues (conformance
//! 1–10, then reliability 11–14):
//!
//! | # | area | cases |
//! |---|---|---|
//! | 1–3 | incremental delivery | `incremental_model`, `incremental_http`, `incremental_server_runs`, `incremental_server_chat` (lockstep); `free_running_consume`, `free_running_http`, `free_running_server_runs`, `free_running_server_chat` (free-running producers) |
//! | 4 | no starvation | `starvation_ready_deltas`, `starvation_blocking_tool` |
//! | 5 | parallel tools | `parallel_async_tools_order`, `parallel_blocking_tools_order`, `parallel_tools_wall_time` |
//! | 6 | cancellation | `cancel_drop_closes_upstream`, `cancel_drop_drops_async_tool`, `cancel_drop_discards_blocking_result`, `cancel_server_disconnect`, `cancel_server_disconnect_closes_upstream`, `cancel_server_shutdown` |
//! | 7 | backpressure | `backpressure_consume`, `backpressure_server` |
//! | 8 | errors | `error_upstream_500`, `error_rate_limited_then_success`, `error_reset_mid_stream`, `error_malformed_chunk`, `error_oversized_line`, `error_first_byte_timeout`, `error_inactivity_timeout`, `error_unknown_tool`, `error_bad_tool_arguments`, `error_tool_panic`, `error_max_rounds` |
//! | 9 | transcripts | `transcript_plain_answer`, `transcript_one_tool_round`, `transcript_parallel_tools`, `transcript_tool_error`, `transcript_upstream_failure` |
//! | 10 | contract | `contract_consume_runs`, `contract_server_frames`, `server_requests` (and inside every case) |
//! | 11 | upstream faults | `fault_trickle`, `fault_truncated_utf8`, `fault_huge_line`, `fault_endless_stream` (and the upstream cases of 8) |
//! | 12 | leaks | `leak_consume_runs`, `leak_server_runs` |
//! | 13 | soak | `soak_sequential`, `soak_concurrent` |
//! | 14 | server hardening | `server_concurrency_limit`, `server_write_timeout`, `server_malformed_requests` (and `server_requests`, `cancel_server_shutdown`, `backpressure_server`) |
//! | 15 | bounds and upstream policy | `output_too_large`, `upstream_redirect_not_followed`, `upstream_oversized_head` |
//! | 16 | session bounds | `server_session_bounds` |
//! | 17 | agent capabilities | `anthropic_incremental`, `anthropic_tool_round` (the Anthropic Messages provider), `structured_output_transcript`, `structured_output_invalid`, `mcp_stdio_tool_round`, `mcp_stdio_faults`, `mcp_stdio_cancel_on_drop`, `mcp_http_tool_round`, `mcp_http_faults` (MCP tools) |
//! | 17 | agent capabilities | `anthropic_incremental`, `anthropic_tool_round` (the Anthropic Messages provider), `structured_output_transcript`, `structured_output_invalid`, `approval_stream_approved`, `approval_stream_denied`, `approval_timeout`, `approval_cancelled_while_waiting`, `approval_http_approved`, `approval_http_denied_detached` (human approval of tool calls) |
//! | 17 | agent capabilities | `anthropic_incremental`, `anthropic_tool_round` (the Anthropic Messages provider), `structured_output_transcript`, `structured_output_invalid` |
//! | 18 | stores (per store, through [`store_suite!`](crate::store_suite), not in [`CASES`]) | `store_runs`, `store_sessions`, `store_concurrent_appenders`, `store_two_instances` (see [`stores`]) |
//!
//! The upstream cases of 8 and every case of 11–13 are *exclusive* ([`Case::exclusive`]):
//! they count process-wide threads, file descriptors, memory and panics, so the runner runs
//! each of them alone (see [`runner`](crate::runner)). Their accounting is described in
//! [`accounting`]: a warm-up, a baseline, the runs, and everything back to the baseline
//! within 5 s.

pub mod accounting;
pub mod anthropic;
pub mod approvals;
pub mod backpressure;
pub mod cancellation;
pub mod contract;
pub mod errors;
pub mod faults;
pub mod framing;
pub mod free_running;
pub mod front_ends;
pub mod hardening;
pub mod incremental;
pub mod leaks;
pub mod mcp;
pub mod parallel;
pub mod responses_api;
pub mod resumable;
pub mod sessions;
pub mod soak;
pub mod starvation;
pub mod stores;
pub mod structured_output;
pub(crate) mod support;
pub mod transcripts;
pub mod upstream_policy;

use std::fmt;

use crate::backend::Backend;

/// Text deltas streamed by the lockstep cases (the issue asks for at least 50).
pub const TEXT_DELTAS: u64 = 60;

/// A measured value reported by a case (not asserted).
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Name, e.g. `median_event_latency_ms`.
    pub name: &'static str,
    /// Value (milliseconds for names ending in `_ms`).
    pub value: f64,
}

/// What a case that did not fail reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// `Some(reason)` when the case does not apply to this backend.
    pub not_applicable: Option<String>,
    /// Human-readable observations.
    pub notes: Vec<String>,
    /// Measured values.
    pub measurements: Vec<Measurement>,
}

impl Outcome {
    /// A pass.
    pub fn passed() -> Self {
        Outcome::default()
    }

    /// The case does not apply to this backend, for `reason`.
    pub fn not_applicable(reason: impl Into<String>) -> Self {
        Outcome {
            not_applicable: Some(reason.into()),
            ..Outcome::default()
        }
    }

    /// Add a note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// Add a measurement.
    pub fn measure(mut self, name: &'static str, value: f64) -> Self {
        self.measurements.push(Measurement { name, value });
        self
    }

    /// The value of measurement `name`, if reported.
    pub fn measurement(&self, name: &str) -> Option<f64> {
        self.measurements
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }
}

/// One case of the suite.
#[derive(Clone, Copy)]
pub struct Case {
    /// Name; the generated test is `conformance_<name>`.
    pub name: &'static str,
    /// The case number and area, e.g. `"6 cancellation"`.
    pub area: &'static str,
    /// What it proves, in one line.
    pub summary: &'static str,
    /// Whether it runs alone in the process: cases that count process-wide resources
    /// (threads, fds, memory, panics) take the runner's lock exclusively, every other case
    /// takes it shared. See [`runner`](crate::runner).
    pub exclusive: bool,
    /// The case.
    pub run: fn(&dyn Backend) -> Outcome,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("area", &self.area)
            .field("exclusive", &self.exclusive)
            .finish()
    }
}

macro_rules! cases {
    (@exclusive) => { false };
    (@exclusive exclusive) => { true };
    ($($name:literal, $area:literal, $summary:literal, $run:path $(, $exclusive:ident)?;)*) => {
        /// Every case, in the order of the issues (conformance, then reliability).
        pub static CASES: &[Case] = &[
            $(Case {
                name: $name,
                area: $area,
                summary: $summary,
                exclusive: cases!(@exclusive $($exclusive)?),
                run: $run,
            },)*
        ];
    };
}

cases! {
    "incremental_model", "1 incremental", "60 model deltas reach consume one by one (lockstep)", incremental::model;
    "incremental_http", "2 incremental", "60 upstream chunks, split mid-line, mid-CRLF and inside UTF-8, through the backend's HTTP client in lockstep", incremental::http;
    "incremental_server_runs", "3 incremental", "the server writes each /v1/runs frame before the next event exists", incremental::server_runs;
    "incremental_server_chat", "3 incremental", "the same on /v1/chat/completions (stream: true)", incremental::server_chat;
    "free_running_consume", "3 incremental", "40 deltas paced 15 ms apart, never waiting for the consumer, reach consume in many separate bursts", free_running::consume_path;
    "free_running_http", "3 incremental", "the same from a paced upstream through the backend's HTTP client", free_running::http_path;
    "free_running_server_runs", "3 incremental", "the same through the server's POST /v1/runs, counted in socket reads", free_running::server_runs;
    "free_running_server_events", "3 incremental", "the same through a second reader of the run, GET /v1/runs/{id}/events, while the run's own connection stays open", free_running::server_events;
    "free_running_server_chat", "3 incremental", "the same through POST /v1/chat/completions (stream: true)", free_running::server_chat;
    "starvation_ready_deltas", "4 starvation", "a heartbeat keeps beating while 100,000 ready deltas stream (single-threaded flavours)", starvation::ready_deltas;
    "starvation_blocking_tool", "4 starvation", "a heartbeat keeps beating while a blocking tool sleeps 300 ms", starvation::blocking_tool_sleep;
    "parallel_async_tools_order", "5 parallel tools", "async tools finishing 3, 1, 2 are reported 3, 1, 2, each at once", parallel::async_tools_order;
    "parallel_blocking_tools_order", "5 parallel tools", "the same with blocking tools (3 blocking jobs at once)", parallel::blocking_tools_order;
    "parallel_tools_wall_time", "5 parallel tools", "wall time of three sleeping tools (reported)", parallel::wall_time;
    "cancel_drop_closes_upstream", "6 cancellation", "dropping the run closes the upstream connection", cancellation::drop_closes_upstream;
    "cancel_drop_drops_async_tool", "6 cancellation", "dropping the run drops running async tool futures", cancellation::drop_drops_async_tool;
    "cancel_drop_discards_blocking_result", "6 cancellation", "dropping the run discards a blocking tool's result", cancellation::drop_discards_blocking_result;
    "cancel_server_disconnect", "6 cancellation", "a client leaving the server cancels its run", cancellation::server_disconnect_cancels_run;
    "cancel_server_disconnect_closes_upstream", "6 cancellation", "client leaves → run cancelled → upstream request closed", cancellation::server_disconnect_closes_upstream;
    "cancel_server_shutdown", "6 cancellation", "graceful shutdown ends open streams with run_cancelled", cancellation::server_graceful_shutdown;
    "runs_resume", "6 cancellation", "a client reconnecting mid-run with Last-Event-ID misses nothing and sees nothing twice; the run went on meanwhile", resumable::resume;
    "runs_cancel", "6 cancellation", "POST /v1/runs/{id}/cancel from another connection ends the open stream with run_cancelled", resumable::cancel;
    "runs_detach_grace", "6 cancellation", "a run nobody comes back to is cancelled after the detach grace", resumable::detach_grace;
    "backpressure_consume", "7 backpressure", "a stalled consume callback stops the run (bounded events ahead)", backpressure::consume_bound;
    "backpressure_server", "7 backpressure", "a client that stops reading stops the run (bytes in flight bounded)", backpressure::server_bound;
    "error_upstream_500", "8 errors", "upstream 500 → run_failed upstream_status", errors::upstream_500, exclusive;
    "error_rate_limited_then_success", "8 errors", "429 + Retry-After, then success: retried before the first byte", errors::rate_limited_then_success, exclusive;
    "error_reset_mid_stream", "8 errors", "reset mid-stream → run_failed upstream_reset with partial text, no retry", errors::reset_mid_stream, exclusive;
    "error_malformed_chunk", "8 errors", "malformed chunk JSON → run_failed malformed_response", errors::malformed_chunk, exclusive;
    "error_oversized_line", "8 errors", "oversized SSE line → run_failed response_too_large", errors::oversized_line, exclusive;
    "error_first_byte_timeout", "8 errors", "no first byte in 100 ms → run_failed first_byte_timeout, request closed", errors::first_byte_timeout, exclusive;
    "error_inactivity_timeout", "8 errors", "keep-alive comments only (after a delta; from the first byte, per-agent timeouts) → run_failed inactivity_timeout, request closed", errors::inactivity_timeout, exclusive;
    "error_unknown_tool", "8 errors", "unknown tool → error result, run goes on", errors::unknown_tool;
    "error_bad_tool_arguments", "8 errors", "bad tool arguments → error result, run goes on", errors::bad_tool_arguments;
    "error_tool_panic", "8 errors", "async and blocking tool panics → error results, run goes on", errors::tool_panic;
    "error_max_rounds", "8 errors", "endless tool calls → run_failed max_rounds", errors::max_rounds;
    "transcript_plain_answer", "9 transcripts", "snapshot: plain answer over HTTP", transcripts::plain_answer;
    "transcript_one_tool_round", "9 transcripts", "snapshot: one tool round", transcripts::one_tool_round;
    "transcript_parallel_tools", "9 transcripts", "snapshot: parallel tools finishing 3, 1, 2", transcripts::parallel_tools;
    "transcript_tool_error", "9 transcripts", "snapshot: a failing tool", transcripts::tool_error;
    "transcript_upstream_failure", "9 transcripts", "snapshot: upstream 500", transcripts::upstream_failure;
    "contract_consume_runs", "10 contract", "seq from 0, one terminal event, nothing after it, over several runs", contract::consume_runs;
    "contract_server_frames", "10 contract", "server frames: id = seq, event = type, one terminal frame, SSE headers", contract::server_frames;
    "server_requests", "10 contract", "HTTP API basics: healthz, 404, 405, 401, 400, 413 while reading (declared or chunked), non-streamed chat", contract::server_requests;
    "fault_trickle", "11 faults", "a whole answer trickled one byte per write → run_completed, text intact", faults::trickle, exclusive;
    "fault_truncated_utf8", "11 faults", "UTF-8 cut at the end: U+FFFD in a complete frame, incomplete frame dropped, cut connection → upstream_reset", faults::truncated_utf8, exclusive;
    "fault_huge_line", "11 faults", "a 10 MiB line → response_too_large before the upstream could send it, memory bounded", faults::huge_line, exclusive;
    "fault_endless_stream", "11 faults", "deltas forever → run_failed run_timeout with the partial text, request closed", faults::endless_stream, exclusive;
    "leak_consume_runs", "12 leaks", "completed, cancelled and tool runs through consume: streams, tool futures, connections, threads and fds released", leaks::consume_runs, exclusive;
    "leak_server_runs", "12 leaks", "a server's life (runs, disconnects, chat, shutdown): streams, threads and fds released", leaks::server_runs, exclusive;
    "soak_sequential", "13 soak", "1,000 sequential server runs with random disconnects: no panic, back to baseline", soak::sequential, exclusive;
    "soak_concurrent", "13 soak", "200 concurrent server runs with random disconnects: no panic, 503 past the limit, back to baseline", soak::concurrent, exclusive;
    "server_concurrency_limit", "14 hardening", "max_concurrent_runs: 503 beyond, admitted again once a run ends", hardening::concurrency_limit;
    "server_write_timeout", "14 hardening", "a client that stops reading is disconnected after write_timeout, its run cancelled", hardening::write_timeout;
    "server_cors", "14 hardening", "browsers: preflight and CORS headers for an allowed origin, 403 for others, 415 for non-JSON run requests", contract::server_cors;
    "front_end_ai_sdk_lockstep", "3 incremental", "POST /v1/ai-sdk/chat (AI SDK UI message stream) writes each text-delta frame before the next delta exists", front_ends::ai_sdk_lockstep;
    "front_end_ag_ui_lockstep", "3 incremental", "POST /v1/ag-ui (AG-UI) writes each TEXT_MESSAGE_CONTENT frame before the next delta exists", front_ends::ag_ui_lockstep;
    "front_end_ai_sdk_free_running", "3 incremental", "free-running deltas reach POST /v1/ai-sdk/chat clients in many socket reads", front_ends::ai_sdk_free_running;
    "front_end_ag_ui_free_running", "3 incremental", "free-running deltas reach POST /v1/ag-ui clients in many socket reads", front_ends::ag_ui_free_running;
    "front_end_ai_sdk_disconnect", "6 cancellation", "a client leaving POST /v1/ai-sdk/chat cancels its run", front_ends::ai_sdk_disconnect;
    "front_end_ag_ui_disconnect", "6 cancellation", "a client leaving POST /v1/ag-ui cancels its run", front_ends::ag_ui_disconnect;
    "server_malformed_requests", "14 hardening", "identical answers to malformed and over-limit requests (framing, header limits, head and body timeouts)", framing::malformed_requests;
    "output_too_large", "15 bounds", "an answer past max_output_bytes → run_failed output_too_large, text kept up to the bound", upstream_policy::output_too_large;
    "upstream_redirect_not_followed", "15 bounds", "a 307 to another upstream → run_failed upstream_status naming the Location without credentials; nothing sent elsewhere", upstream_policy::redirect_not_followed;
    "upstream_oversized_head", "15 bounds", "a 1 MiB response header → run_failed response_too_large (response head), not a broken connection", upstream_policy::oversized_head;
    "responses_lockstep", "front-end: Responses API", "POST /v1/responses (stream: true): each output_text delta is written before the next exists, sequence_number without gaps (lockstep)", responses_api::lockstep;
    "responses_free_running", "front-end: Responses API", "POST /v1/responses: 40 paced deltas arrive in many separate socket reads", responses_api::free_running;
    "responses_cancel_disconnect", "front-end: Responses API", "a client leaving POST /v1/responses cancels its run", responses_api::cancel_disconnect;
    "server_session_bounds", "16 session bounds", "sessions over HTTP stay within max_session_bytes (oldest exchanges dropped, 413 for an input that cannot fit) and max_total_session_bytes (least recently used forgotten)", sessions::session_bounds;
    "anthropic_incremental", "17 agent capabilities", "60 Anthropic Messages text deltas, frames split mid-line, mid-CRLF and inside UTF-8, in lockstep through the backend's HTTP client; x-api-key, anthropic-version, top-level system", anthropic::incremental;
    "anthropic_tool_round", "17 agent capabilities", "a Messages tool round: input_json_delta pieces become tool_call_deltas, the result goes back as a tool_result block", anthropic::tool_round;
    "structured_output_transcript", "17 agent capabilities", "structured output: strict json_schema sent, answer streamed in lockstep with partial_output events, run_completed carries the parsed value (shared transcript)", structured_output::transcript;
    "structured_output_invalid", "17 agent capabilities", "an answer that is not the output type → run_failed invalid_output with the raw text kept", structured_output::invalid;
    "mcp_stdio_tool_round", "17 agent capabilities", "an MCP server over stdio (spawned through the backend): tools/list pages, text, structured and isError results, a server ping answered", mcp::stdio_tool_round;
    "mcp_stdio_faults", "17 agent capabilities", "stdio faults (exit mid-call, malformed JSON-RPC, oversized line, no answer → timeout + notifications/cancelled) are tool errors; missing program and unsupported version fail connect", mcp::stdio_faults;
    "mcp_stdio_cancel_on_drop", "17 agent capabilities", "a run dropped while an MCP call is in flight sends notifications/cancelled for it", mcp::stdio_cancel_on_drop;
    "mcp_http_tool_round", "17 agent capabilities", "Streamable HTTP: JSON and SSE answers, tools/list pages, Mcp-Session-Id and MCP-Protocol-Version on every later request", mcp::http_tool_round;
    "mcp_http_faults", "17 agent capabilities", "Streamable HTTP faults (500, SSE ended early, not JSON, no answer → timeout + notifications/cancelled) are tool errors", mcp::http_faults;
    "approval_stream_approved", "17 agent capabilities", "a call held for approval waits while the round's other call runs, and runs once approved through the run stream's ApprovalHandle (lockstep)", approvals::stream_approved;
    "approval_stream_denied", "17 agent capabilities", "a call denied through the handle never runs; the model gets a denied result with the reason (shared transcript)", approvals::stream_denied;
    "approval_timeout", "17 agent capabilities", "a call nobody decides on is denied with the reason \"timed out\" after the approval timeout", approvals::timeout;
    "approval_cancelled_while_waiting", "17 agent capabilities", "a run cancelled while a call waits for approval ends with run_cancelled; the call never runs", approvals::cancelled_while_waiting;
    "approval_http_approved", "17 agent capabilities", "POST /v1/runs/{id}/approvals from a second connection approves a waiting call (404 unknown run, 400 bad body, 409 not waiting)", approvals::http_approved;
    "approval_http_denied_detached", "17 agent capabilities", "a run whose client left waits within its grace; a denial over HTTP lets it complete; the resumed stream shows the denial", approvals::http_denied_detached;
}

/// The case named `name`.
pub fn find(name: &str) -> Option<&'static Case> {
    CASES.iter().find(|c| c.name == name)
}
