//! `POST /v1/runs/{id}/approvals`: approve or deny a tool call of a run that waits for
//! approval (its stream showed `tool_approval_requested`), from any connection: the one
//! reading the run, another one, or a client whose stream dropped while the run waits within
//! its detach grace.
//!
//! The body is `{"call_id": "call_1", "approved": true}` or
//! `{"call_id": "call_1", "approved": false, "reason": "too risky"}` (`reason` is optional,
//! and given to the model with the denial). Answers:
//!
//! | status | code | when |
//! |---|---|---|
//! | 200 | | the decision was recorded: `{"object":"tool_approval","run_id","call_id","approved","reason"}`; the run goes on at once |
//! | 400 | `invalid_json`, `invalid_approval` | the body is not that JSON (a missing `call_id`, an `approved` that is not a boolean) |
//! | 404 | `run_not_found` | no such run (or it ended longer ago than the retention) |
//! | 409 | `not_awaiting_approval` | the call never asked for approval, was already decided (or timed out), or the run has ended |
//!
//! Like every request that changes a run's course, it must be `application/json` (a
//! cross-site form post cannot approve anything) and carry the bearer token when one is
//! configured.

use serde::Deserialize;
use serde_json::json;

use super::response::{ApiError, ApiResponse};
use super::runs::RunLog;
use crate::agent::{ApprovalDecision, ApprovalError};

/// The body of `POST /v1/runs/{id}/approvals`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalRequest {
    call_id: String,
    approved: bool,
    #[serde(default)]
    reason: Option<String>,
}

/// Record the decision in `body` for the run of `log`.
pub(crate) fn decide(log: &RunLog, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let request: ApprovalRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_approval",
            format!(
                "the body must be {{\"call_id\": \"…\", \"approved\": true|false, \"reason\": \"…\" (optional)}}: {e}"
            ),
        )
    })?;
    if request.call_id.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_approval",
            "call_id must name the tool call (the call_id of its tool_approval_requested event)",
        ));
    }
    let reason = request.reason.filter(|r| !r.is_empty());
    let decision = if request.approved {
        ApprovalDecision::Approve
    } else {
        ApprovalDecision::Deny {
            reason: reason.clone(),
        }
    };
    log.approvals()
        .decide(&request.call_id, decision)
        .map_err(|err| {
            let message = match &err {
                ApprovalError::NotRequested { .. } | ApprovalError::AlreadyDecided { .. } => {
                    let pending = log.approvals().pending();
                    if pending.is_empty() {
                        format!("{err}; no call of this run awaits approval now")
                    } else {
                        format!("{err}; awaiting approval now: {}", pending.join(", "))
                    }
                }
                _ => err.to_string(),
            };
            ApiError {
                status: 409,
                code: "not_awaiting_approval",
                message,
            }
        })?;
    tracing::info!(run_id = %log.id(), call_id = %request.call_id, approved = request.approved, "tool call decided over HTTP");
    Ok(ApiResponse::json(
        200,
        &json!({
            "object": "tool_approval",
            "run_id": log.id(),
            "call_id": request.call_id,
            "approved": request.approved,
            "reason": if request.approved { None } else { reason },
        }),
    ))
}
