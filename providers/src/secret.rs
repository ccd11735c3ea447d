//! Credentials: API keys, auth tokens.
//!
//! A [`Secret`] wraps [`secrecy::SecretString`] (zeroed on drop) and prints `***` in both `Debug`
//! and `Display`, so a config struct can derive `Debug` and a stray `{:?}` in a log line leaks
//! nothing. It deliberately does not implement `Serialize`: a config dump can never write a key
//! back out. The only way to the value is [`Secret::expose`], called where the HTTP header is
//! built.
//!
//! In a config file a secret is written inline, or better, named by where it lives:
//!
//! ```toml
//! api_key = "SG.xxxxx"                            # inline: keep the file private
//! api_key = { env = "SENDGRID_API_KEY" }          # an environment variable
//! api_key = { file = "/run/secrets/sendgrid" }    # a file (one trailing newline is dropped)
//! ```
//!
//! An error reading one names the variable or the file, never a value.

use std::fmt;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

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

/// The largest secret file read, in bytes: far above any credential, so a wrong path (a log, a
/// disk image) fails fast instead of being read whole.
pub const SECRET_FILE_BYTES_MAX: u64 = 64 * 1024;

/// A credential. `Debug` and `Display` print `***`.
#[derive(Clone)]
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

/// Reads a secret from environment variable `name`.
pub fn from_env(name: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(value) => Ok(value),
        Err(std::env::VarError::NotPresent) => {
            Err(format!("environment variable {name} is not set"))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("environment variable {name} is not valid UTF-8"))
        }
    }
}

/// Reads a secret file: at most [`SECRET_FILE_BYTES_MAX`] bytes of UTF-8, one trailing newline
/// (`\n` or `\r\n`) dropped, as written by `echo` or an editor.
pub fn from_file(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(SECRET_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() as u64 > SECRET_FILE_BYTES_MAX {
        return Err(format!("{shown} is larger than {SECRET_FILE_BYTES_MAX} bytes"));
    }
    let mut text = String::from_utf8(bytes).map_err(|_| format!("{shown} is not UTF-8 text"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

/// Takes a string (the value) or a table with exactly one of `env` and `file`.
struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a string, { env = "VARIABLE" } or { file = "/path/to/secret" }"#)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Secret, E> {
        Secret::new(value).map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
        let Some(key) = map.next_key::<String>()? else {
            return Err(de::Error::custom(r#"give one of `env` or `file`"#));
        };
        let place: String = map.next_value()?;
        if let Some(other) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!(
                "give only one of `env` or `file` (found `{key}` and `{other}`)"
            )));
        }
        let (value, origin) = match key.as_str() {
            "env" => (from_env(&place), format!("environment variable {place}")),
            "file" => (from_file(Path::new(&place)), format!("file {place}")),
            other => {
                return Err(de::Error::unknown_field(other, &["env", "file"]));
            }
        };
        let value = value.map_err(de::Error::custom)?;
        Secret::new(value).map_err(|e| de::Error::custom(format!("{origin}: {e}")))
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

    #[derive(Debug, Deserialize)]
    struct Section {
        key: Secret,
    }

    fn section(toml_text: &str) -> Result<Section, String> {
        toml::from_str::<Section>(toml_text).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_a_secret_file_dropping_one_trailing_newline() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("key");
        std::fs::write(&path, "from-file-key\r\n").expect("write");
        let parsed = section(&format!("key = {{ file = {:?} }}", path.display().to_string()))
            .expect("valid");
        assert_eq!(parsed.key.expose(), "from-file-key");

        std::fs::write(&path, "two\nlines\n").expect("write");
        let error = section(&format!("key = {{ file = {:?} }}", path.display().to_string()))
            .expect_err("a multi-line secret is refused");
        assert!(error.contains("whitespace"), "{error}");
        assert!(!error.contains("two"), "the value must not appear: {error}");

        let missing = dir.path().join("absent");
        let error = section(&format!("key = {{ file = {:?} }}", missing.display().to_string()))
            .expect_err("missing file");
        assert!(error.contains("cannot open") && error.contains("absent"), "{error}");
    }

    #[test]
    fn reads_a_secret_from_the_environment_and_names_a_missing_variable() {
        let error =
            section(r#"key = { env = "COURANT_TEST_SURELY_UNSET_VARIABLE" }"#).expect_err("unset");
        assert!(error.contains("COURANT_TEST_SURELY_UNSET_VARIABLE is not set"), "{error}");
        // Cargo (and nextest) set the package name in the environment of every test it runs.
        let parsed = section(r#"key = { env = "CARGO_PKG_NAME" }"#).expect("valid");
        assert_eq!(parsed.key.expose(), env!("CARGO_PKG_NAME"));
    }

    #[test]
    fn a_table_must_name_exactly_one_source() {
        let both = section(r#"key = { env = "A", file = "/b" }"#).expect_err("both");
        assert!(both.contains("only one of"), "{both}");
        let other = section(r#"key = { vault = "x" }"#).expect_err("unknown");
        assert!(other.contains("vault"), "{other}");
        let inline = section(r#"key = "inline-key""#).expect("valid");
        assert_eq!(inline.key.expose(), "inline-key");
    }
}
