//! Redactions shared by every snapshot, so that transcripts from different backends and
//! different runs compare equal: timings, run ids and ephemeral ports.
//!
//! ```
//! use serde_json::json;
//! use conformance::kit::redact::redact_value;
//!
//! let mut value = json!({
//!     "run_id": "run_17",
//!     "duration_ms": 3.2,
//!     "time_to_first_token_ms": null,
//!     "message": "could not connect to 127.0.0.1:41234: refused",
//! });
//! redact_value(&mut value);
//! assert_eq!(value, json!({
//!     "run_id": "[run_id]",
//!     "duration_ms": "[ms]",
//!     "time_to_first_token_ms": null,
//!     "message": "could not connect to 127.0.0.1:[port]: refused",
//! }));
//! ```

use agent_core::event::Event;
use serde_json::Value;

/// Redact a JSON value in place:
///
/// * every number under a key ending in `_ms` becomes `"[ms]"` (a `null` stays `null`, as
///   whether a timing exists is deterministic);
/// * `run_id` values become `"[run_id]"`, and `run_<n>` inside strings (such as
///   `chatcmpl-run_12`) becomes `run_[n]`;
/// * `127.0.0.1:<port>` and `localhost:<port>` inside strings become `…:[port]`.
pub fn redact_value(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key.ends_with("_ms") && v.is_number() {
                    *v = Value::String("[ms]".into());
                } else if key == "run_id" && v.is_string() {
                    *v = Value::String("[run_id]".into());
                } else {
                    redact_value(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        Value::String(s) => {
            let redacted = redact_str(s);
            if redacted != *s {
                *s = redacted;
            }
        }
        _ => {}
    }
}

/// Redact ports and run ids inside a string (see [`redact_value`]).
pub fn redact_str(s: &str) -> String {
    let s = replace_digits_after(s, "127.0.0.1:", "[port]");
    let s = replace_digits_after(&s, "localhost:", "[port]");
    replace_digits_after(&s, "run_", "[n]")
}

fn replace_digits_after(s: &str, prefix: &str, with: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(prefix) {
        let after = i + prefix.len();
        out.push_str(&rest[..after]);
        let digits = rest[after..]
            .bytes()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits > 0 {
            out.push_str(with);
        }
        rest = &rest[after + digits..];
    }
    out.push_str(rest);
    out
}

/// The redacted JSON array of `events`: what the transcript snapshots contain.
pub fn redact_events(events: &[Event]) -> Value {
    let mut value = serde_json::to_value(events).unwrap_or(Value::Null);
    redact_value(&mut value);
    value
}
