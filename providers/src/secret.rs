//! Credentials: API keys, auth tokens.
//!
//! A [`Secret`] wraps [`secrecy::SecretString`] (zeroed on drop) and prints `***` in both `Debug`
//! and `Display`, so a config struct can derive `Debug` and a stray `{:?}` in a log line leaks
//! nothing. It deliberately does not implement `Serialize`: a config dump can never write a key
//! back out. The only way to the value is [`Secret::expose`], called where the HTTP header is
//! built.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The longest credential accepted, in bytes. Real keys are under 100 bytes; the cap stops a
/// mistaken paste of a whole file from ending up in every request header.
pub const SECRET_BYTES_MAX: usize = 1_024;

/// Why a credential was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The credential is empty.
    #[error("must not be empty")]
    Empty,
    /// The credential is longer than [`SECRET_BYTES_MAX`].
    #[error("must be at most {SECRET_BYTES_MAX} bytes")]
    TooLong,
    /// The credential has whitespace or a control character (usually the trailing newline of a
    /// secret file), which would make an invalid HTTP header.
    #[error("must not contain whitespace or control characters")]
    BadCharacter,
}

/// A credential. `Debug` and `Display` print `***`.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a credential after checking it is non-empty, bounded and header-safe.
    pub fn new(value: impl Into<String>) -> Result<Self, SecretError> {
        let value = value.into();
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        if value.len() > SECRET_BYTES_MAX {
            return Err(SecretError::TooLong);
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SecretError::BadCharacter);
        }
        Ok(Self(SecretString::from(value)))
    }

    /// The value, for building the request that needs it. Never log it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl TryFrom<String> for Secret {
    type Error = SecretError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Secret::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let secret = Secret::new("SG.very-secret-key").expect("valid");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(secret.expose(), "SG.very-secret-key");
    }

    #[test]
    fn rejects_empty_long_and_multiline_values() {
        assert_eq!(Secret::new("").err(), Some(SecretError::Empty));
        assert_eq!(Secret::new("k".repeat(SECRET_BYTES_MAX + 1)).err(), Some(SecretError::TooLong));
        assert_eq!(Secret::new("key\n").err(), Some(SecretError::BadCharacter));
        assert_eq!(Secret::new("a key").err(), Some(SecretError::BadCharacter));
    }

    #[test]
    fn deserializes_from_a_string_and_checks_it() {
        let secret: Secret = serde_json::from_str("\"tok\"").expect("valid");
        assert_eq!(secret.expose(), "tok");
        assert!(serde_json::from_str::<Secret>("\"\"").is_err());
    }
}
