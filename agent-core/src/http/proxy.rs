//! Which proxy a request goes through: `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and
//! `NO_PROXY`, read once and applied the same way by every backend's HTTP client.
//!
//! ```
//! use agent_core::http::proxy::ProxyConfig;
//!
//! let env = [
//!     ("https_proxy", "http://alice:s3cret@proxy.corp:3128"),
//!     ("ALL_PROXY", "proxy.corp:8080"),
//!     ("NO_PROXY", "localhost, .internal, 10.0.0.0/8"),
//! ];
//! let config = ProxyConfig::from_vars(|name| {
//!     env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
//! });
//!
//! // https:// goes through the HTTPS proxy (a CONNECT tunnel), with its credentials.
//! let route = config.proxy_for("https://api.openai.com/v1/chat/completions").unwrap();
//! assert_eq!((route.host(), route.port()), ("proxy.corp", 3128));
//! assert!(route.basic_authorization().is_some());
//! // http:// has no variable of its own: ALL_PROXY applies.
//! let route = config.proxy_for("http://example.com/").unwrap();
//! assert_eq!((route.host(), route.port()), ("proxy.corp", 8080));
//! // NO_PROXY: host names with their subdomains, IP literals and CIDR ranges.
//! assert!(config.proxy_for("https://models.internal/v1").is_none());
//! assert!(config.proxy_for("http://10.1.2.3:8000/v1").is_none());
//! assert!(config.proxy_for("http://localhost:11434/").is_none());
//! // Credentials never show.
//! assert!(!format!("{config:?} {route:?}").contains("s3cret"));
//! ```
//!
//! # What is honoured
//!
//! * `http_proxy` / `HTTP_PROXY` for `http://` URLs, `https_proxy` / `HTTPS_PROXY` for
//!   `https://` URLs, and `all_proxy` / `ALL_PROXY` for either when the scheme's own
//!   variable is unset. When both spellings are set, the lower-case one wins. An empty value
//!   counts as unset.
//! * A proxy is an `http://` URL (`http://[user:password@]host[:port][/]`); a value without
//!   a scheme is read as `http://`; the port defaults to 80. User and password are
//!   percent-decoded and sent as `Proxy-Authorization: Basic …`. Any other scheme
//!   (`https://`, `socks5://`, …) or an unparsable value is ignored, with a warning in the
//!   log (which never shows the value, since it may hold a password).
//! * `no_proxy` / `NO_PROXY` (lower case wins): comma-separated entries, whitespace ignored,
//!   case-insensitive. `*` bypasses the proxy for every URL. A host name matches itself and
//!   its subdomains (`example.com`, `.example.com` and `*.example.com` all match
//!   `example.com` and `api.example.com`). An IP literal (`127.0.0.1`, `::1`, `[::1]`)
//!   matches that address, a CIDR range (`10.0.0.0/8`, `fd00::/8`) the addresses in it.
//!   An entry may carry a port (`example.com:8080`, `[::1]:8080`): it then matches only
//!   URLs on that port (the scheme's default port when the URL has none).
//!
//! How the clients use a route: an `http://` URL is sent to the proxy as an absolute-form
//! request (`POST http://host:port/path HTTP/1.1`, RFC 9112 §3.2.2); an `https://` URL goes
//! through a `CONNECT host:port` tunnel, inside which TLS is negotiated with the upstream
//! (its certificate verified for the upstream's name).

use std::fmt;
use std::net::IpAddr;

use crate::secret::Secret;

/// The proxy variables, read once: which proxy (if any) serves `http://` and `https://`
/// URLs, and which hosts bypass it. See the [module docs](self) for the exact rules.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    http: Option<ProxyRoute>,
    https: Option<ProxyRoute>,
    no_proxy: NoProxy,
}

impl ProxyConfig {
    /// No proxy at all: every request connects directly.
    ///
    /// ```
    /// let config = agent_core::http::proxy::ProxyConfig::none();
    /// assert!(config.proxy_for("https://api.openai.com/").is_none());
    /// ```
    pub fn none() -> Self {
        ProxyConfig::default()
    }

    /// The configuration of this process's environment variables.
    pub fn from_env() -> Self {
        ProxyConfig::from_vars(|name| std::env::var(name).ok())
    }

    /// The configuration from `var`, which returns the value of an environment variable by
    /// name (tests pass a map instead of touching the process environment).
    ///
    /// ```
    /// use agent_core::http::proxy::ProxyConfig;
    /// let config = ProxyConfig::from_vars(|name| {
    ///     (name == "HTTP_PROXY").then(|| "http://127.0.0.1:3128".to_string())
    /// });
    /// assert_eq!(config.proxy_for("http://example.com/").unwrap().port(), 3128);
    /// assert!(config.proxy_for("https://example.com/").is_none());
    /// ```
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let read = |lower: &str, upper: &str| {
            var(lower)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (lower.to_string(), v))
                .or_else(|| {
                    var(upper)
                        .filter(|v| !v.trim().is_empty())
                        .map(|v| (upper.to_string(), v))
                })
        };
        let route = |found: Option<(String, String)>| {
            let (name, value) = found?;
            match ProxyRoute::parse(&value) {
                Ok(route) => Some(route),
                Err(why) => {
                    tracing::warn!(variable = %name, "ignoring the proxy variable: {why}");
                    None
                }
            }
        };
        let all = route(read("all_proxy", "ALL_PROXY"));
        let http = route(read("http_proxy", "HTTP_PROXY")).or_else(|| all.clone());
        let https = route(read("https_proxy", "HTTPS_PROXY")).or(all);
        let no_proxy = read("no_proxy", "NO_PROXY")
            .map(|(_, v)| NoProxy::parse(&v))
            .unwrap_or_default();
        ProxyConfig {
            http,
            https,
            no_proxy,
        }
    }

    /// Use `route` for `http://` URLs.
    pub fn with_http(mut self, route: Option<ProxyRoute>) -> Self {
        self.http = route;
        self
    }

    /// Use `route` for `https://` URLs.
    pub fn with_https(mut self, route: Option<ProxyRoute>) -> Self {
        self.https = route;
        self
    }

    /// Bypass the proxy for the entries of `list` (the syntax of `NO_PROXY`).
    pub fn with_no_proxy(mut self, list: &str) -> Self {
        self.no_proxy = NoProxy::parse(list);
        self
    }

    /// Whether no URL at all goes through a proxy.
    pub fn is_none(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The proxy for `url`, or `None` to connect directly (no proxy for its scheme, the
    /// host is in `NO_PROXY`, or `url` is not an `http://` / `https://` URL with a host).
    pub fn proxy_for(&self, url: &str) -> Option<&ProxyRoute> {
        let (https, host, port) = split_url(url)?;
        let route = if https {
            self.https.as_ref()
        } else {
            self.http.as_ref()
        }?;
        if self.no_proxy.matches(&host, port) {
            None
        } else {
            Some(route)
        }
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("http", &self.http)
            .field("https", &self.https)
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// One proxy: an HTTP proxy at `host:port`, maybe with Basic credentials.
///
/// `Debug` shows the address and whether there are credentials, never the credentials.
///
/// ```
/// use agent_core::http::proxy::ProxyRoute;
/// let route = ProxyRoute::parse("http://user:p%40ss@127.0.0.1:3128").unwrap();
/// assert_eq!(route.url(), "http://127.0.0.1:3128");
/// // base64("user:p@ss")
/// assert_eq!(route.basic_authorization().unwrap().expose(), "Basic dXNlcjpwQHNz");
/// assert!(!format!("{route:?}").contains("p@ss"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyRoute {
    host: String,
    port: u16,
    credentials: Option<ProxyCredentials>,
}

/// The user name and password of a proxy, both redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyCredentials {
    username: Secret,
    password: Secret,
}

impl ProxyCredentials {
    /// The user name (percent-decoded).
    pub fn username(&self) -> &Secret {
        &self.username
    }

    /// The password (percent-decoded; empty when the URL had none).
    pub fn password(&self) -> &Secret {
        &self.password
    }
}

impl fmt::Debug for ProxyCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProxyCredentials(<redacted>)")
    }
}

impl ProxyRoute {
    /// An HTTP proxy at `host:port` without credentials.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        let host = host.into();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        ProxyRoute {
            host,
            port,
            credentials: None,
        }
    }

    /// The same proxy with Basic credentials.
    pub fn with_credentials(mut self, username: impl Into<String>, password: Secret) -> Self {
        self.credentials = Some(ProxyCredentials {
            username: Secret::new(username),
            password,
        });
        self
    }

    /// Parse a proxy URL: `http://[user[:password]@]host[:port][/]`, or the same without
    /// `http://`. The error message never quotes the value (it may hold a password).
    pub fn parse(value: &str) -> Result<ProxyRoute, String> {
        let value = value.trim();
        let rest = match value.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                let scheme =
                    if scheme.len() <= 10 && scheme.bytes().all(|b| b.is_ascii_alphanumeric()) {
                        scheme.to_ascii_lowercase()
                    } else {
                        "(invalid)".to_string()
                    };
                return Err(format!(
                    "only http:// proxies are supported, not {scheme}://"
                ));
            }
            None => value,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err("a proxy URL has no path, query or fragment".into());
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, rest),
        };
        let (host, port) = split_host_port(hostport)
            .ok_or_else(|| "the proxy URL has no valid host and port".to_string())?;
        let port = port.unwrap_or(80);
        let mut route = ProxyRoute::new(host, port);
        if let Some(userinfo) = userinfo {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let user = percent_decode(user).ok_or_else(|| {
                "the proxy user name is not valid percent-encoded UTF-8".to_string()
            })?;
            let password = percent_decode(password).ok_or_else(|| {
                "the proxy password is not valid percent-encoded UTF-8".to_string()
            })?;
            route = route.with_credentials(user, Secret::new(password));
        }
        Ok(route)
    }

    /// The proxy's host name or IP literal (without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The credentials, if any.
    pub fn credentials(&self) -> Option<&ProxyCredentials> {
        self.credentials.as_ref()
    }

    /// `host:port` as written in a URL or a `CONNECT` target (IPv6 in brackets).
    pub fn authority(&self) -> String {
        authority(&self.host, self.port)
    }

    /// The proxy's URL without credentials: `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.authority())
    }

    /// The proxy's URL with its credentials percent-encoded in it (for HTTP libraries that
    /// take credentials that way); a [`Secret`].
    pub fn url_with_credentials(&self) -> Secret {
        match &self.credentials {
            None => Secret::new(self.url()),
            Some(c) => Secret::new(format!(
                "http://{}:{}@{}",
                percent_encode(c.username.expose()),
                percent_encode(c.password.expose()),
                self.authority()
            )),
        }
    }

    /// The value of the `Proxy-Authorization` header (`Basic base64(user:password)`), if
    /// the proxy has credentials.
    pub fn basic_authorization(&self) -> Option<Secret> {
        let c = self.credentials.as_ref()?;
        let pair = format!("{}:{}", c.username.expose(), c.password.expose());
        Some(Secret::new(format!("Basic {}", base64(pair.as_bytes()))))
    }
}

impl fmt::Debug for ProxyRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyRoute")
            .field("url", &self.url())
            .field("credentials", &self.credentials.is_some())
            .finish()
    }
}

/// The parsed `NO_PROXY` list.
#[derive(Clone, Default, PartialEq, Eq)]
struct NoProxy {
    all: bool,
    entries: Vec<NoProxyEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// A host name and its subdomains (lower case, without a leading dot).
    Domain(String),
    /// An address and the number of leading bits that must match.
    Network(IpAddr, u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NoProxyEntry {
    pattern: Pattern,
    port: Option<u16>,
}

impl fmt::Debug for NoProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.all {
            return f.write_str("NoProxy(*)");
        }
        f.debug_tuple("NoProxy").field(&self.entries).finish()
    }
}

impl NoProxy {
    fn parse(list: &str) -> NoProxy {
        let mut no_proxy = NoProxy::default();
        for entry in list.split(',') {
            let entry: String = entry
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_lowercase();
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                no_proxy.all = true;
                continue;
            }
            match NoProxyEntry::parse(&entry) {
                Some(parsed) => no_proxy.entries.push(parsed),
                None => tracing::warn!(entry = %entry, "ignoring an invalid NO_PROXY entry"),
            }
        }
        no_proxy
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        let host = host.to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        let ip: Option<IpAddr> = host.parse().ok();
        self.entries.iter().any(|entry| {
            if entry.port.is_some_and(|p| p != port) {
                return false;
            }
            match (&entry.pattern, ip) {
                (Pattern::Network(net, bits), Some(ip)) => in_network(ip, *net, *bits),
                (Pattern::Domain(domain), None) => {
                    host == domain
                        || (host.len() > domain.len()
                            && host.ends_with(domain.as_str())
                            && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
                }
                _ => false,
            }
        })
    }
}

impl NoProxyEntry {
    fn parse(entry: &str) -> Option<NoProxyEntry> {
        // CIDR: address/bits (no port).
        if let Some((addr, bits)) = entry.split_once('/') {
            let addr: IpAddr = addr
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()?;
            let bits: u8 = bits.parse().ok()?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if bits > max {
                return None;
            }
            return Some(NoProxyEntry {
                pattern: Pattern::Network(addr, bits),
                port: None,
            });
        }
        // A bare IPv6 literal (`::1`) has colons but no port.
        if let Ok(addr) = entry.parse::<IpAddr>() {
            let bits = if addr.is_ipv4() { 32 } else { 128 };
            return Some(NoProxyEntry {
                pattern: Pattern::Network(addr, bits),
                port: None,
            });
        }
        let (host, port) = split_host_port(entry)?;
        if let Ok(addr) = host.parse::<IpAddr>() {
            let bits = if addr.is_ipv4() { 32 } else { 128 };
            return Some(NoProxyEntry {
                pattern: Pattern::Network(addr, bits),
                port,
            });
        }
        let domain = host
            .trim_start_matches("*.")
            .trim_start_matches('.')
            .trim_end_matches('.');
        if domain.is_empty() || domain.contains(['*', '[', ']', '@']) {
            return None;
        }
        Some(NoProxyEntry {
            pattern: Pattern::Domain(domain.to_string()),
            port,
        })
    }
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            (u128::from(u32::from(ip)), u128::from(u32::from(net)), 32u32)
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => (u128::from(ip), u128::from(net), 128),
        // An IPv4-mapped IPv6 address matches IPv4 entries.
        (IpAddr::V6(ip), IpAddr::V4(_)) => match ip.to_ipv4_mapped() {
            Some(v4) => return in_network(IpAddr::V4(v4), net, bits),
            None => return false,
        },
        (IpAddr::V4(_), IpAddr::V6(_)) => return false,
    };
    let bits = u32::from(bits);
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (ip >> shift) == (net >> shift)
}

/// `host[:port]` or `[v6][:port]` into the host (no brackets) and the port.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    if host.is_empty() || (!s.starts_with('[') && host.contains([':', '/', ' ', '@'])) {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    Some((host, port))
}

/// Scheme (`true` for https), host and port (the scheme's default when absent) of an
/// `http://` or `https://` URL.
fn split_url(url: &str) -> Option<(bool, String, u16)> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let https = if scheme.eq_ignore_ascii_case("https") {
        true
    } else if scheme.eq_ignore_ascii_case("http") {
        false
    } else {
        return None;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = split_host_port(hostport)?;
    let port = port.unwrap_or(if https { 443 } else { 80 });
    Some((https, host.to_string(), port))
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> ProxyConfig {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        ProxyConfig::from_vars(move |name| {
            vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
        })
    }

    fn via(config: &ProxyConfig, url: &str) -> Option<String> {
        config.proxy_for(url).map(ProxyRoute::authority)
    }

    #[test]
    fn each_scheme_has_its_variable_and_all_proxy_fills_in() {
        let c = config(&[("HTTP_PROXY", "h:1"), ("ALL_PROXY", "a:3")]);
        assert_eq!(via(&c, "http://x/").as_deref(), Some("h:1"));
        assert_eq!(via(&c, "https://x/").as_deref(), Some("a:3"));
        let c = config(&[("HTTPS_PROXY", "s:2")]);
        assert_eq!(via(&c, "http://x/"), None);
        assert_eq!(via(&c, "https://x/").as_deref(), Some("s:2"));
        let c = config(&[("all_proxy", "http://a:3/")]);
        assert_eq!(via(&c, "http://x/").as_deref(), Some("a:3"));
        assert_eq!(via(&c, "https://x/").as_deref(), Some("a:3"));
        assert!(config(&[]).is_none());
        assert_eq!(via(&config(&[]), "https://x/"), None);
    }

    #[test]
    fn lower_case_wins_and_empty_is_unset() {
        let c = config(&[("http_proxy", "lower:1"), ("HTTP_PROXY", "upper:2")]);
        assert_eq!(via(&c, "http://x/").as_deref(), Some("lower:1"));
        let c = config(&[("http_proxy", " "), ("HTTP_PROXY", "upper:2")]);
        assert_eq!(via(&c, "http://x/").as_deref(), Some("upper:2"));
        let c = config(&[("HTTP_PROXY", "p:1"), ("no_proxy", "x"), ("NO_PROXY", "y")]);
        assert_eq!(via(&c, "http://x/"), None);
        assert!(via(&c, "http://y/").is_some());
    }

    #[test]
    fn proxy_urls() {
        let r = ProxyRoute::parse("HTTP://User:pa%3Ass@Proxy.corp:3128/").unwrap();
        assert_eq!((r.host(), r.port()), ("Proxy.corp", 3128));
        let c = r.credentials().unwrap();
        assert_eq!(
            (c.username().expose(), c.password().expose()),
            ("User", "pa:ss")
        );
        assert_eq!(
            r.url_with_credentials().expose(),
            "http://User:pa%3Ass@Proxy.corp:3128"
        );
        let r = ProxyRoute::parse("proxy").unwrap();
        assert_eq!(
            (r.host(), r.port(), r.credentials().is_none()),
            ("proxy", 80, true)
        );
        let r = ProxyRoute::parse("http://[::1]:8080").unwrap();
        assert_eq!((r.host(), r.authority().as_str()), ("::1", "[::1]:8080"));
        let r = ProxyRoute::parse("http://token@p:1").unwrap();
        assert_eq!(r.credentials().unwrap().password().expose(), "");
        for bad in [
            "socks5://p:1",
            "https://p:1",
            "http://p:99999",
            "http://p:x",
            "http://p/path",
            "http://",
            "http://u:%zz@p:1",
            "::1",
        ] {
            assert!(ProxyRoute::parse(bad).is_err(), "{bad}");
        }
        let err = ProxyRoute::parse("socks5://u:hunter2@p:1").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        // An unusable variable is ignored; another one still applies.
        let c = config(&[("HTTPS_PROXY", "socks5://p:1"), ("ALL_PROXY", "a:3")]);
        assert_eq!(via(&c, "https://x/").as_deref(), Some("a:3"));
    }

    #[test]
    fn basic_authorization_is_base64_of_user_colon_password() {
        let r = ProxyRoute::parse("http://Aladdin:open%20sesame@p:1").unwrap();
        assert_eq!(
            r.basic_authorization().unwrap().expose(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert!(ProxyRoute::new("p", 1).basic_authorization().is_none());
    }

    #[test]
    fn credentials_never_show() {
        let c = config(&[
            ("HTTPS_PROXY", "http://alice:hunter2@p:1"),
            ("NO_PROXY", "a"),
        ]);
        let route = c.proxy_for("https://x/").unwrap();
        for shown in [
            format!("{c:?}"),
            format!("{route:?}"),
            format!("{:?}", route.credentials()),
            format!("{:?}", route.basic_authorization()),
            route.url(),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("alice"), "{shown}");
        }
    }

    #[test]
    fn no_proxy_host_names_match_themselves_and_subdomains() {
        let c = config(&[
            ("ALL_PROXY", "p:1"),
            ("NO_PROXY", " Example.COM , .internal,*.corp ,exact.org."),
        ]);
        for direct in [
            "http://example.com/",
            "https://API.example.com/v1",
            "http://a.b.example.com:8080/",
            "http://internal/",
            "http://svc.internal/",
            "https://x.corp/",
            "http://corp/x",
            "https://exact.org/",
            "https://exact.org./",
            "https://sub.exact.org/",
        ] {
            assert_eq!(via(&c, direct), None, "{direct}");
        }
        for proxied in [
            "http://notexample.com/",
            "http://example.com.evil.net/",
            "http://internal.net/",
            "http://xcorp/x",
        ] {
            assert!(via(&c, proxied).is_some(), "{proxied}");
        }
    }

    #[test]
    fn no_proxy_ips_cidrs_ports_and_star() {
        let c = config(&[
            ("ALL_PROXY", "p:1"),
            (
                "NO_PROXY",
                "127.0.0.1, ::1, 10.0.0.0/8, fd00::/8, api.x:8443, [::2]:80, 192.168.1.1:81",
            ),
        ]);
        for direct in [
            "http://127.0.0.1:9/",
            "http://[::1]:9/",
            "http://10.200.0.1/",
            "http://[fd12::1]/",
            "https://api.x:8443/",
            "http://[::2]/",
            "http://192.168.1.1:81/",
        ] {
            assert_eq!(via(&c, direct), None, "{direct}");
        }
        for proxied in [
            "http://127.0.0.2/",
            "http://11.0.0.1/",
            "https://api.x/",
            "http://[::2]:81/",
            "http://192.168.1.1/",
            "http://localhost/",
        ] {
            assert!(via(&c, proxied).is_some(), "{proxied}");
        }
        let c = config(&[("ALL_PROXY", "p:1"), ("no_proxy", "a, *")]);
        assert_eq!(via(&c, "https://anything.example/"), None);
        let c = config(&[("ALL_PROXY", "p:1"), ("no_proxy", "0.0.0.0/0")]);
        assert_eq!(via(&c, "http://8.8.8.8/"), None);
        assert!(via(&c, "http://host/").is_some());
    }

    #[test]
    fn urls_that_are_not_http_are_never_proxied() {
        let c = config(&[("ALL_PROXY", "p:1")]);
        assert_eq!(via(&c, "ftp://x/"), None);
        assert_eq!(via(&c, "not a url"), None);
        assert!(via(&c, "http://user:pw@x/").is_some());
    }
}
