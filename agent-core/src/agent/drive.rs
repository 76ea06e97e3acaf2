//! The agent loop itself: model → tools → model → … → answer, as one `async fn`.

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_core::Stream;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;
use tracing::Instrument;

use super::approval::{ApprovalCall, ApprovalDecision, ApprovalState};
use super::emit::Emitter;
use super::output::OnInvalidOutput;
use super::{AgentInner, OutputType};
use crate::error::ErrorKind;
use crate::event::{EventKind, RoundMetrics, RunError, RunMetrics};
use crate::model::{
    FinishReason, Message, ModelContext, ModelDelta, ModelRequest, ModelStream, ToolCall, Usage,
};
use crate::policy::Timeouts;
use crate::runtime::panic_message;
use crate::tool::{ToolContext, ToolError, ToolErrorKind, ToolResult};

/// What the loop hands back when it ends: the terminal event and, for a completed run, the
/// messages it added to the conversation (user input first).
pub(crate) struct Finished {
    pub(crate) terminal: EventKind,
    pub(crate) new_messages: Vec<Message>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// A tool call assembled from the model's deltas.
#[derive(Default)]
struct PendingCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// Bounds on what a run keeps of its answer text.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TextLimits {
    /// Fail with `output_too_large` past this many bytes of text.
    pub(crate) max_output_bytes: Option<usize>,
    /// Keep no copy of the answer (only the current round's, capped).
    pub(crate) discard_text: bool,
}

/// What a run asks of the loop beyond its input: model timeouts, text bounds and the output
/// type.
pub(crate) struct DriveOptions {
    /// Timeouts replacing the model's, if any.
    pub(crate) model_timeouts: Option<Timeouts>,
    /// Bounds on the answer text.
    pub(crate) limits: TextLimits,
    /// The structured output asked for, if any.
    pub(crate) output: Option<OutputType>,
    /// Where calls that need approval wait for their decisions.
    pub(crate) approvals: Arc<ApprovalState>,
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn prefix_within(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// Run the whole agent loop, emitting every non-terminal event through `emitter`.
pub(crate) async fn drive(
    agent: Arc<AgentInner>,
    emitter: Emitter,
    run_id: String,
    history: Vec<Message>,
    input: String,
    options: DriveOptions,
) -> Finished {
    let DriveOptions {
        model_timeouts,
        limits,
        output,
        approvals,
    } = options;
    let run_start = Instant::now();
    emitter
        .emit(EventKind::RunStarted {
            run_id,
            input: input.clone(),
        })
        .await;

    let mut messages = Vec::with_capacity(history.len() + 2);
    if let Some(instructions) = &agent.instructions {
        messages.push(Message::system(instructions.clone()));
    }
    messages.extend(history);
    let first_new = messages.len();
    messages.push(Message::user(input));

    let tool_definitions: Vec<_> = agent.tools.iter().map(|t| t.definition().clone()).collect();
    // The run's text (with `discard_text`: only the current round's, capped).
    let mut text = String::new();
    let mut text_bytes = 0usize;
    let kept = |text: String| {
        if limits.discard_text {
            String::new()
        } else {
            text
        }
    };
    let mut usage = Usage::default();
    let mut rounds = Vec::new();
    let mut run_ttft = None;
    // Whether an invalid structured answer was already sent back once.
    let mut output_retried = false;

    for round in 1.. {
        if round > agent.max_rounds {
            return fail(
                ErrorKind::MaxRounds,
                format!(
                    "the model asked for more than {} rounds of tool calls",
                    agent.max_rounds
                ),
                kept(text),
            );
        }
        emitter.emit(EventKind::ModelRequestStarted { round }).await;
        let request_start = Instant::now();
        let request = ModelRequest {
            messages: messages.clone(),
            tools: tool_definitions.clone(),
            output: output.as_ref().map(|o| o.schema().clone()),
        };
        let span = tracing::info_span!("model_request", round, model = agent.model.name());
        let mut stream = InSpan {
            span: span.clone(),
            inner: agent.model.stream(
                request,
                ModelContext::new(agent.runtime.clone()).with_timeouts(model_timeouts),
            ),
        };

        // The round's text is the tail of the run's text, from here on.
        if limits.discard_text {
            text = String::new();
        }
        let round_start = text.len();
        let mut calls: BTreeMap<u32, PendingCall> = BTreeMap::new();
        let mut finish_reason = None;
        let mut round_usage = None;
        let mut ttft = None;
        let mut partial: Option<Value> = None;
        loop {
            let item = stream.next().await;
            let delta = match item {
                None => break,
                Some(Ok(delta)) => delta,
                Some(Err(err)) => {
                    tracing::debug!(parent: &span, error = %err, "model request failed");
                    return Finished {
                        terminal: EventKind::RunFailed {
                            error: err.into_run_error(),
                            partial_text: kept(text),
                        },
                        new_messages: Vec::new(),
                    };
                }
            };
            if ttft.is_none() && !matches!(delta, ModelDelta::Usage(_) | ModelDelta::Finish(_)) {
                ttft = Some(ms(request_start));
                run_ttft.get_or_insert_with(|| ms(run_start));
            }
            match delta {
                ModelDelta::Text(t) => {
                    if let Some(limit) = limits.max_output_bytes
                        && text_bytes + t.len() > limit
                    {
                        let head = prefix_within(&t, limit - text_bytes).to_string();
                        if !limits.discard_text {
                            text.push_str(&head);
                        }
                        if !head.is_empty() {
                            emitter.emit(EventKind::TextDelta { text: head }).await;
                        }
                        return fail(
                            ErrorKind::OutputTooLarge,
                            format!(
                                "the answer grew past the limit of {limit} bytes (max_output_bytes)"
                            ),
                            kept(text),
                        );
                    }
                    text_bytes += t.len();
                    if !limits.discard_text {
                        text.push_str(&t);
                    } else if text.len() < super::DISCARDED_ROUND_TEXT_KEPT {
                        let room = super::DISCARDED_ROUND_TEXT_KEPT - text.len();
                        text.push_str(prefix_within(&t, room));
                    }
                    emitter.emit(EventKind::TextDelta { text: t }).await;
                    if let Some(output) = &output
                        && output.reports_partial_output()
                        && let Some(value) = crate::model::parse_partial_json(&text[round_start..])
                        && partial.as_ref() != Some(&value)
                    {
                        partial = Some(value.clone());
                        emitter
                            .emit(EventKind::PartialOutput { output: value })
                            .await;
                    }
                }
                ModelDelta::Reasoning(t) => {
                    emitter.emit(EventKind::ReasoningDelta { text: t }).await
                }
                ModelDelta::ToolCall(d) => {
                    let call = calls.entry(d.index).or_default();
                    // The id comes with a call's first piece; once pieces were reported
                    // under an id, it stays (the started and completed events use it too).
                    if call.id.is_none() {
                        call.id = d.id.filter(|id| !id.is_empty());
                    }
                    if let Some(name) = &d.name {
                        call.name.push_str(name);
                    }
                    call.arguments.push_str(&d.arguments);
                    if d.name.is_some() || !d.arguments.is_empty() {
                        let call_id = call
                            .id
                            .get_or_insert_with(|| fallback_call_id(round, d.index))
                            .clone();
                        emitter
                            .emit(EventKind::ToolCallDelta {
                                call_id,
                                name: d.name,
                                arguments_delta: d.arguments,
                            })
                            .await;
                    }
                }
                ModelDelta::Usage(u) => round_usage = Some(u),
                ModelDelta::Finish(r) => finish_reason = Some(r),
            }
        }
        drop(stream);
        if let Some(u) = &round_usage {
            usage.add(u);
        }
        let model_duration_ms = ms(request_start);
        if finish_reason.is_none() && !calls.is_empty() {
            finish_reason = Some(FinishReason::ToolCalls);
        }
        emitter
            .emit(EventKind::ModelRequestCompleted {
                round,
                finish_reason,
                usage: round_usage,
                time_to_first_token_ms: ttft,
                duration_ms: model_duration_ms,
            })
            .await;

        let tool_calls: Vec<ToolCall> = calls
            .into_iter()
            .map(|(index, call)| ToolCall {
                id: call.id.unwrap_or_else(|| fallback_call_id(round, index)),
                name: call.name,
                arguments: call.arguments,
            })
            .collect();
        let call_count = tool_calls.len() as u32;
        messages.push(Message::Assistant {
            content: text[round_start..].to_string(),
            tool_calls: tool_calls.clone(),
        });
        if tool_calls.is_empty() {
            rounds.push(RoundMetrics {
                round,
                time_to_first_token_ms: ttft,
                model_duration_ms,
                tools_duration_ms: 0.0,
                tool_calls: 0,
            });
            let parsed = match &output {
                None => None,
                Some(output) => match output.validate(&text[round_start..]) {
                    Ok(value) => Some(value),
                    Err(error)
                        if !output_retried
                            && output.invalid_policy() == OnInvalidOutput::RetryOnce =>
                    {
                        tracing::debug!(%error, "invalid structured output; asking once more");
                        output_retried = true;
                        messages.push(Message::user(format!(
                            "Your answer does not match the required JSON schema `{}`: {error}. \
                             Answer again with only a JSON value that matches the schema.",
                            output.schema().name
                        )));
                        continue;
                    }
                    Err(error) => {
                        let answer = &text[round_start..];
                        return fail(
                            ErrorKind::InvalidOutput,
                            format!(
                                "the answer is not a valid `{}`: {error} (the answer, {} bytes, is kept as partial_text)",
                                output.schema().name,
                                answer.len()
                            ),
                            kept(text),
                        );
                    }
                },
            };
            let metrics = RunMetrics {
                time_to_first_token_ms: run_ttft,
                duration_ms: ms(run_start),
                rounds,
            };
            return Finished {
                terminal: EventKind::RunCompleted {
                    text: kept(text),
                    usage,
                    metrics,
                    output: parsed,
                },
                new_messages: messages.split_off(first_new),
            };
        }

        let tools_start = Instant::now();
        let results = run_tools(&agent, &emitter, &approvals, &tool_calls).await;
        for (call, result) in tool_calls.iter().zip(results) {
            messages.push(Message::Tool {
                call_id: call.id.clone(),
                content: result.to_model_text(),
            });
        }
        rounds.push(RoundMetrics {
            round,
            time_to_first_token_ms: ttft,
            model_duration_ms,
            tools_duration_ms: ms(tools_start),
            tool_calls: call_count,
        });
    }
    unreachable!("the round loop only ends by returning")
}

/// A model stream polled inside its request's span (entered per poll, cloned once per round).
struct InSpan {
    span: tracing::Span,
    inner: ModelStream,
}

impl Stream for InSpan {
    type Item = <ModelStream as Stream>::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        this.inner.as_mut().poll_next(cx)
    }
}

/// The id of a tool call the model gave none: unique within the run.
fn fallback_call_id(round: u32, index: u32) -> String {
    format!("call_{round}_{index}")
}

fn fail(kind: ErrorKind, message: String, partial_text: String) -> Finished {
    Finished {
        terminal: EventKind::RunFailed {
            error: RunError {
                kind,
                message,
                status: None,
                retry_after_ms: None,
            },
            partial_text,
        },
        new_messages: Vec::new(),
    }
}

/// What the tool loop waits for next.
enum ToolEvent {
    /// Call `i` finished with `result`, having started at the instant given.
    Finished(usize, ToolResult, Instant),
    /// Call `i` waiting for approval was decided on.
    Decided(usize, ApprovalDecision),
}

/// Run one turn's tool calls, at most `max_concurrent_tools` at a time, emitting each
/// completion the moment it happens. A call that needs approval waits for its decision
/// without taking a slot, while the other calls run. Returns the results in call order.
async fn run_tools(
    agent: &AgentInner,
    emitter: &Emitter,
    approvals: &Arc<ApprovalState>,
    calls: &[ToolCall],
) -> Vec<ToolResult> {
    let mut results: Vec<Option<ToolResult>> = vec![None; calls.len()];
    let mut queued: VecDeque<usize> = (0..calls.len()).collect();
    // Approved calls waiting for a slot; they go before the queue.
    let mut approved: VecDeque<usize> = VecDeque::new();
    let mut arguments: Vec<Option<Result<Value, String>>> = vec![None; calls.len()];
    let mut running = FuturesUnordered::new();
    let mut waiting = FuturesUnordered::new();
    loop {
        while running.len() < agent.max_concurrent_tools {
            if let Some(i) = approved.pop_front() {
                let call = &calls[i];
                let parsed = arguments[i]
                    .take()
                    .unwrap_or_else(|| parse_arguments(&call.arguments));
                running.push(finish(i, start_tool(agent, call, parsed)));
                continue;
            }
            let Some(i) = queued.pop_front() else { break };
            let call = &calls[i];
            let parsed = parse_arguments(&call.arguments);
            let shown = parsed
                .clone()
                .unwrap_or_else(|_| Value::String(call.arguments.clone()));
            emitter
                .emit(EventKind::ToolCallStarted {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    arguments: shown.clone(),
                })
                .await;
            if needs_approval(agent, call, &parsed) {
                approvals.request(&call.id);
                emitter
                    .emit(EventKind::ToolApprovalRequested {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                        arguments: shown,
                    })
                    .await;
                arguments[i] = Some(parsed);
                let timer = agent.approval_timeout.map(|d| agent.runtime.sleep(d));
                waiting.push(wait_for_decision(
                    approvals.clone(),
                    call.id.clone(),
                    timer,
                    i,
                ));
                continue;
            }
            running.push(finish(i, start_tool(agent, call, parsed)));
        }
        let next = std::future::poll_fn(|cx| {
            if let Poll::Ready(Some(event)) = running.poll_next_unpin(cx) {
                return Poll::Ready(Some(event));
            }
            if let Poll::Ready(Some(event)) = waiting.poll_next_unpin(cx) {
                return Poll::Ready(Some(event));
            }
            if running.is_empty() && waiting.is_empty() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        let Some(event) = next else { break };
        match event {
            ToolEvent::Finished(i, result, started) => {
                let call = &calls[i];
                emitter
                    .emit(EventKind::ToolCallCompleted {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                        result: result.clone(),
                        duration_ms: ms(started),
                    })
                    .await;
                results[i] = Some(result);
            }
            ToolEvent::Decided(i, decision) => {
                let call = &calls[i];
                let reason = match &decision {
                    ApprovalDecision::Deny { reason } => reason.clone(),
                    _ => None,
                };
                emitter
                    .emit(EventKind::ToolApprovalDecided {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                        approved: decision.is_approved(),
                        reason: reason.clone(),
                    })
                    .await;
                if decision.is_approved() {
                    approved.push_back(i);
                    continue;
                }
                let message = match &reason {
                    Some(reason) => format!(
                        "the call was not approved, so the tool did not run (reason: {reason})"
                    ),
                    None => "the call was not approved, so the tool did not run".to_string(),
                };
                let result = ToolError::new(ToolErrorKind::Denied, message).into_result();
                emitter
                    .emit(EventKind::ToolCallCompleted {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                        result: result.clone(),
                        duration_ms: 0.0,
                    })
                    .await;
                results[i] = Some(result);
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every queued call completed"))
        .collect()
}

/// Run call `i` to its result, timing it from now.
fn finish(
    i: usize,
    outcome: futures_util::future::BoxFuture<'static, ToolResult>,
) -> impl std::future::Future<Output = ToolEvent> {
    let started = Instant::now();
    async move { ToolEvent::Finished(i, outcome.await, started) }
}

/// Whether `call` must wait for approval: only a call that would run (a known tool,
/// arguments that parse) is asked about; the agent's policy decides, else the tool.
fn needs_approval(agent: &AgentInner, call: &ToolCall, parsed: &Result<Value, String>) -> bool {
    let (Some(tool), Ok(arguments)) = (agent.tool(&call.name), parsed) else {
        return false;
    };
    let tool_requires_approval = tool.requires_approval();
    let Some(policy) = &agent.approval_policy else {
        return tool_requires_approval;
    };
    let query = ApprovalCall {
        call_id: &call.id,
        name: &call.name,
        arguments,
        tool_requires_approval,
    };
    std::panic::catch_unwind(AssertUnwindSafe(|| policy(&query))).unwrap_or_else(|payload| {
        tracing::error!(
            call_id = %call.id,
            panic = %panic_message(&*payload),
            "the approval policy panicked; the call waits for approval"
        );
        true
    })
}

/// Wait for the decision on call `i` (`call_id`), denying it when `timer` fires first.
async fn wait_for_decision(
    approvals: Arc<ApprovalState>,
    call_id: String,
    mut timer: Option<crate::runtime::BoxFuture<()>>,
    i: usize,
) -> ToolEvent {
    let decision = std::future::poll_fn(|cx| {
        if let Poll::Ready(decision) = approvals.poll_decision(&call_id, cx) {
            return Poll::Ready(decision);
        }
        if let Some(timer) = timer.as_mut()
            && timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(approvals.expire(&call_id));
        }
        Poll::Pending
    })
    .await;
    ToolEvent::Decided(i, decision)
}

fn parse_arguments(raw: &str) -> Result<Value, String> {
    if raw.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(raw).map_err(|e| format!("arguments are not valid JSON: {e}"))
}

/// Start one call; the returned future never panics and always yields a [`ToolResult`].
fn start_tool(
    agent: &AgentInner,
    call: &ToolCall,
    arguments: Result<Value, String>,
) -> futures_util::future::BoxFuture<'static, ToolResult> {
    let span = tracing::info_span!("tool_call", name = %call.name, call_id = %call.id);
    let Some(tool) = agent.tool(&call.name) else {
        let message = format!(
            "no tool named {:?}; available: {}",
            call.name,
            agent.tool_names()
        );
        return Box::pin(async move {
            ToolError::new(ToolErrorKind::UnknownTool, message).into_result()
        });
    };
    let arguments = match arguments {
        Ok(arguments) => arguments,
        Err(message) => {
            return Box::pin(async move { ToolError::invalid_arguments(message).into_result() });
        }
    };
    let cx = ToolContext::new(agent.runtime.clone(), call.id.clone());
    // Dropped with the call's future (the run gave the call up): the call is cancelled.
    let guard = cx.guard();
    let future = match std::panic::catch_unwind(AssertUnwindSafe(|| tool.call(arguments, cx))) {
        Ok(future) => future,
        Err(payload) => {
            let message = format!("tool panicked: {}", panic_message(&*payload));
            return Box::pin(async move {
                ToolError::new(ToolErrorKind::Panicked, message).into_result()
            });
        }
    };
    Box::pin(
        async move {
            let outcome = AssertUnwindSafe(future).catch_unwind().await;
            guard.finish();
            match outcome {
                Ok(Ok(output)) => ToolResult::Ok { output },
                Ok(Err(err)) => err.into_result(),
                Err(payload) => ToolError::new(
                    ToolErrorKind::Panicked,
                    format!("tool panicked: {}", panic_message(&*payload)),
                )
                .into_result(),
            }
        }
        .instrument(span),
    )
}
