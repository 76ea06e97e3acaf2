//! The request log line every server writes: one `info` event per answered request.

use std::time::Duration;

/// The `tracing` target of the request log (filter it with `RUST_LOG=agent_core::request=info`).
pub const REQUEST_LOG_TARGET: &str = "agent_core::request";

/// Log one answered request at `info` level on [`REQUEST_LOG_TARGET`], with the fields
/// `method`, `path` (without its query string, which may carry a token), `status`, `run_id`
/// (the `x-run-id` response header, when there is one) and `duration_ms` (from the end of
/// the request head to the response head; a streamed run goes on after it).
///
/// Every backend's server calls it, so the three write the same line. Nothing else of the
/// request is logged: no header (the bearer token), no body.
///
/// ```
/// use std::time::Duration;
/// agent_core::http::log_request("GET", "/healthz?token=secret", 200, None, Duration::from_millis(2));
/// ```
pub fn log_request(
    method: &str,
    path: &str,
    status: u16,
    run_id: Option<&str>,
    duration: Duration,
) {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let duration_ms = (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0;
    match run_id {
        Some(run_id) => tracing::info!(
            target: REQUEST_LOG_TARGET,
            method,
            path,
            status,
            run_id,
            duration_ms,
            "request"
        ),
        None => tracing::info!(
            target: REQUEST_LOG_TARGET,
            method,
            path,
            status,
            duration_ms,
            "request"
        ),
    }
}
