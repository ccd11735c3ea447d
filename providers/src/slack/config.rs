//! The `[providers.<name>]` section of a Slack incoming webhook (the chat channel).
//!
//! ```toml
//! [providers.slack]
//! kind = "slack"                       # read by the binary to pick this config type
//! webhook_url = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"
//! timeout_ms = 10000                   # optional
//! connect_timeout_ms = 3000            # optional
//! ```
//!
//! (`kind` belongs to the binary's enclosing enum, not to this struct.)

use serde::Deserialize;
use steps::model::ProviderName;

use crate::options;
use crate::{Error, Secret};

/// A Slack incoming webhook's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming-webhook URL Slack issued for one channel. It is a credential (its last path
    /// segment is the token), so it is a [`Secret`]: printed as `***`, never logged, scrubbed
    /// from error messages. The sandbox's address in dev mode and tests.
    pub webhook_url: Secret,
    /// The deadline of one call, connect to last byte, in ms (100..=60,000; default 10,000, see
    /// [`options::TIMEOUT_MS_DEFAULT`] for why). A call that hits it is an unknown outcome.
    #[serde(default = "options::timeout_ms_default")]
    pub timeout_ms: u64,
    /// The deadline for establishing a connection, in ms (at most `timeout_ms`; default 3,000). A
    /// call that hits it is retryable, since nothing was sent.
    #[serde(default = "options::connect_timeout_ms_default")]
    pub connect_timeout_ms: u64,
}

impl SlackConfig {
    /// Checks the values for provider `name`; called by the constructor, and usable at start-up
    /// without building a client. No message quotes the URL.
    pub fn validate(&self, name: &ProviderName) -> Result<(), Error> {
        let provider = name.as_str();
        options::base_url(provider, "webhook_url", self.webhook_url.expose())?;
        options::timeouts(provider, self.timeout_ms, self.connect_timeout_ms)
    }
}
