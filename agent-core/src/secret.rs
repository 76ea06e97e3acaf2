//! A string that never shows itself in `Debug` or `Display`: API keys, bearer tokens.
//!
//! ```
//! use agent_core::secret::Secret;
//! let key = Secret::new("sk-live-123");
//! assert_eq!(format!("{key:?}"), "Secret(<redacted>)");
//! assert_eq!(key.to_string(), "<redacted>");
//! assert_eq!(key.expose(), "sk-live-123");
//! ```

use std::fmt;

/// A secret string, redacted in `Debug` and `Display`. Read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; only for putting it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
