//! The `[providers.<name>]` section of an FCM provider, and the service account key file it
//! names.
//!
//! ```toml
//! [providers.fcm]
//! kind = "fcm"                  # read by the binary to pick this config type
//! base_url = "https://fcm.googleapis.com"
//! project_id = "my-project"
//! service_account_file = "/run/secrets/fcm-service-account.json"
//! token_uri = "https://oauth2.googleapis.com/token"   # optional: overrides the key file's
//! timeout_ms = 10000            # optional
//! connect_timeout_ms = 3000     # optional
//! ```
//!
//! (`kind` belongs to the binary's enclosing enum, not to this struct.) The key file is the JSON
//! Google's console downloads for a service account with the "Firebase Cloud Messaging API Admin"
//! role; it is read once, when the provider is built. It is a file and not a TOML value because
//! its PEM key spans lines, which a [`Secret`](crate::Secret) (one header-safe line) cannot hold.

use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use steps::model::ProviderName;

use crate::{Error, options};

/// Longest project id, in characters (Google's are 6 to 30).
pub const PROJECT_ID_CHARS_MAX: usize = 64;
/// Largest service account key file read, in bytes (a real one is about 2.3 KiB).
pub const SERVICE_ACCOUNT_BYTES_MAX: u64 = 16 * 1024;

/// An FCM provider's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// The API's base URL, without `/v1`: `https://fcm.googleapis.com` in production, the
    /// sandbox's address in dev mode and tests. Always configured, never defaulted.
    pub base_url: String,
    /// The Firebase project id, the `{project_id}` of
    /// `/v1/projects/{project_id}/messages:send`.
    pub project_id: String,
    /// The path of the service account key file (JSON with `client_email`, `private_key` and
    /// `token_uri`).
    pub service_account_file: PathBuf,
    /// Where the signed assertion is exchanged for an access token; defaults to the key file's
    /// `token_uri` (`https://oauth2.googleapis.com/token`). Tests and the sandbox point it at a
    /// local server.
    #[serde(default)]
    pub token_uri: Option<String>,
    /// The deadline of one call, connect to last byte, in ms (100..=60,000; default 10,000). A
    /// call that hits it is an unknown outcome.
    #[serde(default = "options::timeout_ms_default")]
    pub timeout_ms: u64,
    /// The deadline for establishing a connection, in ms (at most `timeout_ms`; default 3,000).
    #[serde(default = "options::connect_timeout_ms_default")]
    pub connect_timeout_ms: u64,
}

impl FcmConfig {
    /// Checks the values for provider `name` (not the key file: [`FcmConfig::load_key`] reads
    /// it).
    pub fn validate(&self, name: &ProviderName) -> Result<(), Error> {
        let provider = name.as_str();
        options::base_url(provider, "base_url", &self.base_url)?;
        let project_ok = !self.project_id.is_empty()
            && self.project_id.chars().count() <= PROJECT_ID_CHARS_MAX
            && self.project_id.chars().all(|c| c.is_ascii_alphanumeric() || "-.:".contains(c));
        if !project_ok {
            return Err(Error::config(
                provider,
                "project_id",
                format!("must be 1 to {PROJECT_ID_CHARS_MAX} letters, digits, '-', '.' or ':'"),
            ));
        }
        if let Some(uri) = &self.token_uri {
            options::base_url(provider, "token_uri", uri)?;
        }
        options::timeouts(provider, self.timeout_ms, self.connect_timeout_ms)
    }

    /// Reads and checks the service account key file; `token_uri`, when configured, replaces
    /// the file's.
    pub fn load_key(&self, name: &ProviderName) -> Result<ServiceAccount, Error> {
        let provider = name.as_str();
        let bad = |reason: String| Error::config(provider, "service_account_file", reason);
        let size = std::fs::metadata(&self.service_account_file)
            .map_err(|e| bad(format!("cannot be read: {}", e.kind())))?
            .len();
        if size > SERVICE_ACCOUNT_BYTES_MAX {
            return Err(bad(format!("is larger than {SERVICE_ACCOUNT_BYTES_MAX} bytes")));
        }
        let text = std::fs::read(&self.service_account_file)
            .map_err(|e| bad(format!("cannot be read: {}", e.kind())))?;
        let file: KeyFile = serde_json::from_slice(&text).map_err(|e| {
            // The position only: serde's message could quote part of the key.
            bad(format!("is not a service account key (line {}, column {})", e.line(), e.column()))
        })?;
        let token_uri = self.token_uri.as_deref().unwrap_or(&file.token_uri);
        let token_uri = options::base_url(provider, "token_uri", token_uri)?;
        if file.client_email.is_empty() || file.client_email.chars().any(char::is_control) {
            return Err(bad("has no usable client_email".into()));
        }
        #[cfg(feature = "http")]
        jsonwebtoken::EncodingKey::from_rsa_pem(file.private_key.expose_secret().as_bytes())
            .map_err(|_| bad("has a private_key that is not an RSA PEM key".into()))?;
        Ok(ServiceAccount {
            client_email: file.client_email,
            private_key: file.private_key,
            token_uri,
        })
    }
}

/// The parts of a service account key file courant uses (the others are ignored).
#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: SecretString,
    token_uri: String,
}

/// A service account's identity and key. `Debug` hides the key.
#[derive(Clone)]
pub struct ServiceAccount {
    /// The account's email, the assertion's `iss`.
    pub client_email: String,
    /// The PEM private key (PKCS#8 RSA).
    pub private_key: SecretString,
    /// Where assertions are exchanged for access tokens (the assertion's `aud`).
    pub token_uri: String,
}

impl ServiceAccount {
    /// The PEM key, for signing only. Never log it.
    pub fn private_key_pem(&self) -> &str {
        self.private_key.expose_secret()
    }
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &"***")
            .field("private_key", &"***")
            .field("token_uri", &self.token_uri)
            .finish()
    }
}
