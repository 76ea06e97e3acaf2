//! The JSON-RPC 2.0 messages MCP is made of: building requests and notifications, and
//! classifying what the server sends.

use serde_json::{Value, json};

use crate::error::{McpError, excerpt};

/// A request object `{"jsonrpc":"2.0","id":…,"method":…,"params":…}`.
pub fn request(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// A notification object (no `id`).
pub fn notification(method: &str, params: Option<Value>) -> Value {
    match params {
        Some(params) => json!({"jsonrpc": "2.0", "method": method, "params": params}),
        None => json!({"jsonrpc": "2.0", "method": method}),
    }
}

/// One message received from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A response to our request `id` (the whole object: `result` or `error` inside).
    Response {
        /// The request it answers.
        id: u64,
        /// The response object.
        message: Value,
    },
    /// A response to our request `id` that has neither `result` nor `error`.
    MalformedResponse {
        /// The request it claims to answer.
        id: u64,
    },
    /// A request from the server (it expects an answer).
    Request {
        /// Its id, as sent (a number or a string).
        id: Value,
        /// Its method.
        method: String,
    },
    /// A notification from the server.
    Notification {
        /// Its method.
        method: String,
    },
    /// A response whose id is not one of ours, or an object that is no JSON-RPC message.
    Unrecognized(Value),
}

/// Parse one line or body of JSON text into messages (a batch gives several).
pub fn parse(text: &[u8]) -> Result<Vec<Incoming>, McpError> {
    let value: Value = serde_json::from_slice(text).map_err(|err| {
        McpError::protocol(format!(
            "malformed JSON-RPC from the server ({err}): {}",
            excerpt(&String::from_utf8_lossy(text), 120)
        ))
    })?;
    Ok(match value {
        Value::Array(items) => items.into_iter().map(classify).collect(),
        value => vec![classify(value)],
    })
}

/// Classify one parsed JSON value.
pub fn classify(value: Value) -> Incoming {
    let Some(object) = value.as_object() else {
        return Incoming::Unrecognized(value);
    };
    if let Some(method) = object.get("method").and_then(Value::as_str) {
        let method = method.to_owned();
        return match object.get("id") {
            Some(id) if !id.is_null() => Incoming::Request {
                id: id.clone(),
                method,
            },
            _ => Incoming::Notification { method },
        };
    }
    // Our ids are numbers; a server may echo them as strings.
    let id = match object.get("id") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    match id {
        Some(id) if object.contains_key("result") || object.contains_key("error") => {
            Incoming::Response { id, message: value }
        }
        Some(id) => Incoming::MalformedResponse { id },
        None => Incoming::Unrecognized(value),
    }
}

/// The `result` of a response object, or its `error` as an [`McpError`].
pub fn into_result(message: Value) -> Result<Value, McpError> {
    let Value::Object(mut object) = message else {
        return Err(McpError::protocol("a response that is not an object"));
    };
    if let Some(error) = object.remove("error") {
        let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
        let text = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)");
        return Err(McpError::server(code, text));
    }
    object
        .remove("result")
        .ok_or_else(|| McpError::protocol("a response without result or error"))
}

/// The answer to a request from the server: `{}` for `ping`, "method not found" otherwise.
pub fn answer_server_request(id: Value, method: &str) -> Value {
    if method == "ping" {
        json!({"jsonrpc": "2.0", "id": id, "result": {}})
    } else {
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("method not found: {method}")}})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_every_kind_of_message() {
        let got = parse(br#"[{"jsonrpc":"2.0","id":3,"result":{}},{"jsonrpc":"2.0","id":"4","error":{"code":-1,"message":"x"}},{"jsonrpc":"2.0","id":5},{"jsonrpc":"2.0","id":"s1","method":"ping"},{"jsonrpc":"2.0","method":"notifications/message"},7]"#).unwrap();
        assert!(
            matches!(got[0], Incoming::Response { id: 3, .. }),
            "{got:?}"
        );
        assert!(
            matches!(got[1], Incoming::Response { id: 4, .. }),
            "{got:?}"
        );
        assert_eq!(got[2], Incoming::MalformedResponse { id: 5 });
        assert!(
            matches!(&got[3], Incoming::Request { method, .. } if method == "ping"),
            "{got:?}"
        );
        assert!(
            matches!(&got[4], Incoming::Notification { method } if method == "notifications/message"),
            "{got:?}"
        );
        assert!(matches!(got[5], Incoming::Unrecognized(_)), "{got:?}");
    }

    #[test]
    fn malformed_json_is_a_protocol_error_with_an_excerpt() {
        let err = parse(b"this is not json").unwrap_err();
        assert_eq!(err.kind, crate::McpErrorKind::Protocol);
        assert!(err.message.contains("this is not json"), "{err}");
    }

    #[test]
    fn results_and_errors() {
        assert_eq!(
            into_result(json!({"id":1,"result":{"a":1}})).unwrap(),
            json!({"a":1})
        );
        let err = into_result(json!({"id":1,"error":{"code":-32602,"message":"bad"}})).unwrap_err();
        assert_eq!(
            (err.kind, err.code),
            (crate::McpErrorKind::Server, Some(-32602))
        );
        assert_eq!(answer_server_request(json!(9), "ping")["result"], json!({}));
        assert_eq!(
            answer_server_request(json!(9), "sampling/createMessage")["error"]["code"],
            -32601
        );
    }
}
