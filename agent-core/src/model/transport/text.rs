//! Text that error messages and `Debug` may show: bounded excerpts of upstream data, provider
//! error reports, and URLs without their credentials.

use serde_json::Value;

/// Longest excerpt of upstream data quoted in an error message, in characters.
pub(crate) const EXCERPT_CHARS: usize = 200;

/// At most [`EXCERPT_CHARS`] characters of `text` on one line, with `…` when cut.
pub(crate) fn excerpt(text: &str) -> String {
    let text = text.trim();
    let mut out = String::with_capacity(text.len().min(EXCERPT_CHARS * 2));
    for (count, c) in text.chars().enumerate() {
        if count == EXCERPT_CHARS {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// The message of a provider error report: `{"message": …}` (with its type and code when
/// given), or a bare string.
pub(crate) fn error_message(error: &Value) -> Option<String> {
    match error {
        Value::String(message) if !message.trim().is_empty() => Some(excerpt(message)),
        Value::Object(fields) => {
            let message = fields.get("message").and_then(Value::as_str)?;
            let mut out = excerpt(message);
            let detail: Vec<String> = ["type", "code"]
                .iter()
                .filter_map(|key| match fields.get(*key)? {
                    Value::String(s) if !s.is_empty() => Some(format!("{key}: {}", excerpt(s))),
                    Value::Number(n) => Some(format!("{key}: {n}")),
                    _ => None,
                })
                .collect();
            if !detail.is_empty() {
                out.push_str(&format!(" ({})", detail.join(", ")));
            }
            Some(out)
        }
        _ => None,
    }
}

/// The host (and port) of `url`, without scheme, credentials or path: safe to show.
pub(crate) fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// `url` with any `user:password@` credentials replaced by `<redacted>@`, for `Debug`.
pub(crate) fn redact_credentials(url: &str) -> std::borrow::Cow<'_, str> {
    let (scheme_end, rest) = match url.find("://") {
        Some(i) => (i + 3, &url[i + 3..]),
        None => (0, url),
    };
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_len].rfind('@') {
        Some(at) => format!("{}<redacted>{}", &url[..scheme_end], &rest[at..]).into(),
        None => url.into(),
    }
}

/// A `Location` as it may be shown: no userinfo, no query string or fragment (either may
/// carry a key), at most 200 characters.
pub(crate) fn redact_location(location: &str) -> String {
    let location = location.trim();
    let cut = location.find(['?', '#']).unwrap_or(location.len());
    let mut shown = redact_credentials(&location[..cut]).into_owned();
    if cut < location.len() {
        shown.push_str("?…");
    }
    if shown.chars().count() > 200 {
        shown = shown.chars().take(200).collect::<String>() + "…";
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_hides_credentials_and_path() {
        assert_eq!(
            host_of("https://user:pw@api.example.com:8443/v1?x"),
            "api.example.com:8443"
        );
        assert_eq!(host_of("http://127.0.0.1:11434/v1"), "127.0.0.1:11434");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact_credentials("https://user:pw@h:1/v1?a@b"),
            "https://<redacted>@h:1/v1?a@b"
        );
        assert_eq!(redact_credentials("http://h/v1/x@y"), "http://h/v1/x@y");
    }

    #[test]
    fn excerpt_is_bounded() {
        let long = "é".repeat(1000);
        assert_eq!(excerpt(&long).chars().count(), EXCERPT_CHARS + 1);
    }
}
