//! Messages for the failures a user meets, with what to do about them.

use agent_core::error::ErrorKind;
use agent_core::event::RunError;

use crate::setup::{ModelChoice, ModelSource};

/// A message for a failed run: what happened and what to try.
///
/// ```
/// use agent_core::error::ErrorKind;
/// use agent_core::event::RunError;
/// use agent_cli::setup::ModelChoice;
///
/// let error = RunError::new(ErrorKind::Connect, "connection refused");
/// let choice = ModelChoice::Demo { pace: std::time::Duration::ZERO, forced: false };
/// assert!(agent_cli::errors::explain(&error, &choice).contains("could not connect"));
/// ```
pub fn explain(error: &RunError, choice: &ModelChoice) -> String {
    let (url, key_var, has_key, source) = choice.endpoint();
    let protocol = choice.protocol();
    // What to check, in the terms of what the user did.
    let check_url = match source {
        Some(ModelSource::BaseUrl) => "Is the server running, and is --base-url right?".into(),
        Some(ModelSource::OpenAiKey) => format!(
            "OpenAI was chosen because ${key_var} is set: check the network, or pass --demo \
             for the built-in model."
        ),
        Some(ModelSource::AnthropicKey) => format!(
            "Anthropic was chosen because ${key_var} is set (and $OPENAI_API_KEY is not): \
             check the network, or pass --demo for the built-in model."
        ),
        Some(_) => "Check the network, or pass --demo for the built-in model.".into(),
        None => String::new(),
    };
    let hint = match (error.kind, error.status) {
        (ErrorKind::Connect, _) => format!("could not connect to {url}. {check_url}"),
        (ErrorKind::ConnectTimeout, _) => match source {
            Some(
                ModelSource::OpenAiKey | ModelSource::AnthropicKey | ModelSource::AnthropicProvider,
            ) => {
                format!("connecting to {url} timed out. {check_url}")
            }
            _ => format!("connecting to {url} timed out. Is the address reachable?"),
        },
        (ErrorKind::FirstByteTimeout, _) => {
            format!("{url} accepted the request but did not start answering in time.")
        }
        (ErrorKind::InactivityTimeout, _) => {
            format!("{url} stopped sending output mid-answer (inactivity timeout).")
        }
        (ErrorKind::RunTimeout, _) => "the run took longer than its time limit.".to_string(),
        (_, Some(401)) | (_, Some(403)) if has_key => format!(
            "the server rejected the API key from ${key_var} ({}). Check the key.",
            error.status.unwrap_or(401)
        ),
        (_, Some(401)) | (_, Some(403)) => format!(
            "the server needs an API key ({}). Set ${key_var}, or name another variable with --api-key-env.",
            error.status.unwrap_or(401)
        ),
        (_, Some(404)) => format!(
            "{url} answered 404: the model name or the base URL is wrong (the URL usually ends in /v1)."
        ),
        (ErrorKind::RateLimited, _) => {
            "the server is rate limiting requests (429); try again later.".to_string()
        }
        (ErrorKind::UpstreamStatus, Some(status)) => format!("{url} answered with HTTP {status}."),
        (ErrorKind::UpstreamReset, _) => format!("the connection to {url} broke mid-answer."),
        (ErrorKind::MalformedResponse, _) if source == Some(ModelSource::BaseUrl) => format!(
            "{url} did not answer with {protocol}. Is --base-url the right /v1 URL (and --provider the right protocol)?"
        ),
        (ErrorKind::MalformedResponse, _) => {
            format!("{url} did not answer with {protocol}.")
        }
        (ErrorKind::InvalidOutput, _) => {
            "the answer did not match the requested output type.".to_string()
        }
        (ErrorKind::MaxRounds, _) => {
            "the model kept calling tools past the round limit.".to_string()
        }
        _ => "the run failed.".to_string(),
    };
    format!("error: {hint}\n  ({}: {})", error.kind, error.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_core::model::OpenAiConfig;

    fn compatible(has_key: bool) -> ModelChoice {
        ModelChoice::Compatible {
            config: Box::new(OpenAiConfig::new("http://127.0.0.1:9/v1", "m")),
            source: ModelSource::BaseUrl,
            key_var: "MY_KEY".into(),
            has_key,
        }
    }

    fn error(kind: ErrorKind, status: Option<u16>) -> RunError {
        RunError {
            status,
            ..RunError::new(kind, "details")
        }
    }

    #[test]
    fn explains_auth_not_found_and_connect() {
        let no_key = explain(
            &error(ErrorKind::UpstreamStatus, Some(401)),
            &compatible(false),
        );
        assert!(no_key.contains("Set $MY_KEY"), "{no_key}");
        let bad_key = explain(
            &error(ErrorKind::UpstreamStatus, Some(401)),
            &compatible(true),
        );
        assert!(bad_key.contains("rejected the API key"), "{bad_key}");
        let not_found = explain(
            &error(ErrorKind::UpstreamStatus, Some(404)),
            &compatible(true),
        );
        assert!(
            not_found.contains("model name or the base URL"),
            "{not_found}"
        );
        let refused = explain(&error(ErrorKind::Connect, None), &compatible(false));
        assert!(
            refused.contains("could not connect to http://127.0.0.1:9/v1"),
            "{refused}"
        );
        assert!(refused.contains("(connect: details)"));
    }
}
