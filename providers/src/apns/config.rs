//! The `[providers.<name>]` section of an APNs provider, and the `.p8` key file it names.
//!
//! ```toml
//! [providers.apns]
//! kind = "apns"                 # read by the binary to pick this config type
//! base_url = "https://api.push.apple.com"   # or https://api.sandbox.push.apple.com
//! team_id = "ABCDE12345"
//! key_id = "KEY1234567"
//! key_file = "/run/secrets/AuthKey_KEY1234567.p8"
//! topic = "com.example.app"
//! timeout_ms = 10000            # optional
//! connect_timeout_ms = 3000     # optional
//! ```
//!
//! (`kind` belongs to the binary's enclosing enum, not to this struct.) The key file is the
//! token-based authentication key Apple's developer account downloads (PEM, PKCS#8, P-256); it
//! is read once, when the provider is built.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;
use steps::model::ProviderName;

use crate::{Error, options};

/// Largest key file read, in bytes (a real `.p8` is about 250).
pub const KEY_FILE_BYTES_MAX: u64 = 4 * 1024;
/// Longest topic (bundle id), in characters.
pub const TOPIC_CHARS_MAX: usize = 255;

/// An APNs provider's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// The API's base URL: `https://api.push.apple.com` (production) or
    /// `https://api.sandbox.push.apple.com` (development builds of the app), the sandbox's
    /// `http://` address in dev mode and tests (then HTTP/2 without TLS). Always configured.
    pub base_url: String,
    /// The Apple developer team id (10 characters), the provider token's `iss`.
    pub team_id: String,
    /// The signing key's id (10 characters), the provider token's `kid`.
    pub key_id: String,
    /// The path of the `.p8` signing key.
    pub key_file: PathBuf,
    /// The app's bundle id, sent as `apns-topic`.
    pub topic: String,
    /// The deadline of one call, connect to last byte, in ms (100..=60,000; default 10,000). A
    /// call that hits it is an unknown outcome.
    #[serde(default = "options::timeout_ms_default")]
    pub timeout_ms: u64,
    /// The deadline for establishing a connection, in ms (at most `timeout_ms`; default 3,000).
    #[serde(default = "options::connect_timeout_ms_default")]
    pub connect_timeout_ms: u64,
}

impl ApnsConfig {
    /// Checks the values for provider `name` (not the key file: [`ApnsConfig::load_key`] reads
    /// it).
    pub fn validate(&self, name: &ProviderName) -> Result<(), Error> {
        let provider = name.as_str();
        options::base_url(provider, "base_url", &self.base_url)?;
        for (field, value) in [("team_id", &self.team_id), ("key_id", &self.key_id)] {
            if value.len() != 10 || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(Error::config(provider, field, "must be 10 letters or digits"));
            }
        }
        options::one_line(provider, "topic", &self.topic, TOPIC_CHARS_MAX)?;
        if self.topic.contains(' ') {
            return Err(Error::config(provider, "topic", "must be a bundle id (no spaces)"));
        }
        options::timeouts(provider, self.timeout_ms, self.connect_timeout_ms)
    }

    /// Reads the `.p8` key (PEM), bounded in size.
    pub fn load_key(&self, name: &ProviderName) -> Result<SecretString, Error> {
        let bad = |reason: String| Error::config(name.as_str(), "key_file", reason);
        let size = std::fs::metadata(&self.key_file)
            .map_err(|e| bad(format!("cannot be read: {}", e.kind())))?
            .len();
        if size > KEY_FILE_BYTES_MAX {
            return Err(bad(format!("is larger than {KEY_FILE_BYTES_MAX} bytes")));
        }
        let pem = std::fs::read_to_string(&self.key_file)
            .map_err(|e| bad(format!("cannot be read: {}", e.kind())))?;
        if !pem.contains("-----BEGIN PRIVATE KEY-----") {
            return Err(bad("is not a PKCS#8 PEM key (an APNs .p8 file)".into()));
        }
        Ok(SecretString::from(pem))
    }
}
