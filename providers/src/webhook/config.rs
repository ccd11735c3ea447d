//! The `[providers.<name>]` section of a signed outbound webhook (the chat channel).
//!
//! ```toml
//! [providers.webhook]
//! kind = "webhook"                     # read by the binary to pick this config type
//! url = "https://hooks.example.com/courant"
//! secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
//! timeout_ms = 10000                   # optional
//! connect_timeout_ms = 3000            # optional
//! ```
//!
//! (`kind` belongs to the binary's enclosing enum, not to this struct.)

use serde::Deserialize;
use steps::model::ProviderName;

use super::signature::secret_key;
use crate::options;
use crate::{Error, Secret};

/// A signed webhook provider's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint every message of this provider is POSTed to (`http(s)://host[:port][/path]`,
    /// no query or credentials). One URL per provider: the recipient directory has no chat
    /// address, so a second endpoint is a second provider.
    pub url: String,
    /// The signing secret, Standard Webhooks style: `whsec_` followed by the base64 of 24 to 64
    /// random bytes (the prefix is optional). The receiver verifies `webhook-signature` with it.
    /// Printed as `***`.
    pub secret: Secret,
    /// The deadline of one call, connect to last byte, in ms (100..=60,000; default 10,000, see
    /// [`options::TIMEOUT_MS_DEFAULT`] for why). A call that hits it is an unknown outcome.
    #[serde(default = "options::timeout_ms_default")]
    pub timeout_ms: u64,
    /// The deadline for establishing a connection, in ms (at most `timeout_ms`; default 3,000). A
    /// call that hits it is retryable, since nothing was sent.
    #[serde(default = "options::connect_timeout_ms_default")]
    pub connect_timeout_ms: u64,
}

impl WebhookConfig {
    /// Checks the values for provider `name`; called by the constructor, and usable at start-up
    /// without building a client.
    pub fn validate(&self, name: &ProviderName) -> Result<(), Error> {
        let provider = name.as_str();
        options::base_url(provider, "url", &self.url)?;
        if secret_key(self.secret.expose()).is_none() {
            return Err(Error::config(
                provider,
                "secret",
                "must be whsec_ followed by the base64 of 24 to 64 bytes",
            ));
        }
        options::timeouts(provider, self.timeout_ms, self.connect_timeout_ms)
    }
}
