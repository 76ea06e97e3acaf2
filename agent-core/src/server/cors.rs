//! Origin safety and CORS for the agent API: which browser origins may call it, the Fetch
//! spec's preflight, and the headers an allowed origin's responses carry.
//!
//! A request without `Origin` (curl, SDKs, servers) is not a browser's cross-origin request
//! and passes. A request whose `Origin` is not in
//! [`ServerConfig::allowed_origins`](super::ServerConfig::allowed_origins) is refused with
//! `403` before anything else happens (no run starts), so a web page the user visits cannot
//! drive a local agent server. Together with the `application/json` requirement on the
//! run-starting endpoints (which a cross-site form post cannot satisfy without a preflight),
//! that closes the no-preflight path.

use super::ServerConfig;
use super::response::{ApiError, ApiResponse};

/// Methods the API answers, for `Access-Control-Allow-Methods`.
const ALLOWED_METHODS: &str = "GET, HEAD, POST, OPTIONS";
/// Request headers a browser may send, for `Access-Control-Allow-Headers`.
const ALLOWED_HEADERS: &str = "authorization, content-type, last-event-id, accept";
/// Response headers a browser's script may read.
const EXPOSED_HEADERS: &str = "x-run-id";
/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE_SECS: &str = "600";

/// What the `Origin` of a request means for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// No `Origin` header: not a browser's cross-origin request.
    Absent,
    /// An allowed origin: answer with this `Access-Control-Allow-Origin` value.
    Allowed(String),
    /// An origin that is not allowed.
    Refused(String),
}

/// Classify the request's `Origin` against the configuration.
pub(crate) fn origin(config: &ServerConfig, headers: &[(&str, &str)]) -> Origin {
    let Some(origin) = header(headers, "origin") else {
        return Origin::Absent;
    };
    let origin = origin.trim();
    let wildcard = config.allowed_origins.iter().any(|o| o == "*");
    if wildcard {
        return Origin::Allowed("*".to_string());
    }
    let allowed = config
        .allowed_origins
        .iter()
        .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin));
    if allowed {
        Origin::Allowed(origin.to_string())
    } else {
        Origin::Refused(origin.to_string())
    }
}

/// The `403` for a refused origin.
pub(crate) fn refused(origin: &str) -> ApiResponse {
    let mut response = ApiError {
        status: 403,
        code: "origin_not_allowed",
        message: format!(
            "requests from the origin {origin:?} are not allowed; start the server with this origin allowed (ServerConfig::allowed_origins, agent serve --allow-origin)"
        ),
    }
    .into_response();
    response.headers.push(("vary", "Origin".to_string()));
    response
}

/// The answer to `OPTIONS` on a known path: a CORS preflight (`204` with the
/// `Access-Control-Allow-*` headers) when it comes from an allowed origin and asks for a
/// method, else a plain `204` naming the methods in `Allow`.
pub(crate) fn options(origin: &Origin, headers: &[(&str, &str)], allow: &str) -> ApiResponse {
    let mut response = ApiResponse {
        status: 204,
        headers: vec![("allow", allow.to_string())],
        body: super::ApiBody::Full(Vec::new()),
    };
    let asks = header(headers, "access-control-request-method").is_some();
    if let (Origin::Allowed(value), true) = (origin, asks) {
        response.headers.extend([
            ("access-control-allow-origin", value.clone()),
            ("access-control-allow-methods", ALLOWED_METHODS.to_string()),
            ("access-control-allow-headers", ALLOWED_HEADERS.to_string()),
            ("access-control-max-age", MAX_AGE_SECS.to_string()),
            ("vary", "Origin".to_string()),
        ]);
    }
    response
}

/// Add the headers an allowed origin's response carries (once each: a preflight answer
/// already has some, and a browser refuses an answer with two `Access-Control-Allow-Origin`).
pub(crate) fn decorate(response: &mut ApiResponse, origin: &Origin) {
    match origin {
        Origin::Allowed(value) => {
            for (name, value) in [
                ("access-control-allow-origin", value.clone()),
                ("access-control-expose-headers", EXPOSED_HEADERS.to_string()),
                ("vary", "Origin".to_string()),
            ] {
                if !response.headers.iter().any(|(n, _)| *n == name) {
                    response.headers.push((name, value));
                }
            }
        }
        // A cache between the server and browsers must not reuse an answer to a request
        // without `Origin` for one with it.
        Origin::Absent if !response.headers.iter().any(|(n, _)| *n == "vary") => {
            response.headers.push(("vary", "Origin".to_string()));
        }
        _ => {}
    }
}

/// `true` when the request's `Content-Type` is `application/json` (parameters such as
/// `charset` allowed, any case).
pub(crate) fn is_json(headers: &[(&str, &str)]) -> bool {
    header(headers, "content-type").is_some_and(|value| {
        value
            .split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    })
}

fn header<'a>(headers: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(origins: &[&str]) -> ServerConfig {
        ServerConfig::default().with_allowed_origins(origins.iter().copied())
    }

    #[test]
    fn origins_are_absent_allowed_or_refused() {
        let config = config(&["https://app.example"]);
        assert_eq!(origin(&config, &[]), Origin::Absent);
        assert_eq!(
            origin(&config, &[("Origin", "https://app.example")]),
            Origin::Allowed("https://app.example".into())
        );
        assert_eq!(
            origin(&config, &[("origin", "https://evil.example")]),
            Origin::Refused("https://evil.example".into())
        );
        assert_eq!(
            origin(&self::config(&["*"]), &[("origin", "https://any.example")]),
            Origin::Allowed("*".into())
        );
        assert_eq!(
            origin(&ServerConfig::default(), &[("origin", "null")]),
            Origin::Refused("null".into()),
            "no origin is allowed by default"
        );
    }

    #[test]
    fn a_decorated_preflight_names_each_header_once() {
        let origin = Origin::Allowed("https://app.example".into());
        let asks = [("access-control-request-method", "POST")];
        let mut response = options(&origin, &asks, "POST, OPTIONS");
        decorate(&mut response, &origin);
        let mut names: Vec<&str> = response.headers.iter().map(|(n, _)| *n).collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "{:?}", response.headers);
        assert!(names.contains(&"access-control-expose-headers"));
    }

    #[test]
    fn content_type_must_be_json() {
        assert!(is_json(&[(
            "Content-Type",
            "application/json; charset=utf-8"
        )]));
        assert!(is_json(&[("content-type", "Application/JSON")]));
        assert!(!is_json(&[("content-type", "text/plain")]));
        assert!(!is_json(&[(
            "content-type",
            "application/x-www-form-urlencoded"
        )]));
        assert!(!is_json(&[]));
    }
}
