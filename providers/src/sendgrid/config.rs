//! The `[providers.<name>]` section of a SendGrid provider.
//!
//! ```toml
//! [providers.sendgrid]
//! kind = "sendgrid"            # read by the binary to pick this config type
//! base_url = "https://api.sendgrid.com"
//! api_key = "SG.xxxxx.yyyyy"
//! from = "notifications@example.com"
//! from_name = "Example"        # optional
//! timeout_ms = 10000           # optional
//! connect_timeout_ms = 3000    # optional
//!
//! [providers.sendgrid.event_webhook]   # optional: delivery receipts
//! public_key = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE..."
//! tolerance_s = 300            # optional
//! ```
//!
//! (`kind` belongs to the binary's enclosing enum, not to this struct.)

use serde::Deserialize;
use steps::model::{EmailAddress, ProviderName};

use crate::options;
use crate::{Error, Secret};

/// Longest sender display name, in characters.
pub const FROM_NAME_CHARS_MAX: usize = 100;

/// A SendGrid provider's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendGridConfig {
    /// The API's base URL, without `/v3`: `https://api.sendgrid.com` (or
    /// `https://api.eu.sendgrid.com` for EU-pinned subusers) in production, the sandbox's address
    /// in dev mode and tests. Always configured, never defaulted, so nothing reaches the real API
    /// by accident.
    pub base_url: String,
    /// The API key, sent as `Authorization: Bearer <key>`. It needs the "Mail Send" permission
    /// only. Printed as `***`.
    pub api_key: Secret,
    /// The sender address (`from.email`). It must be a verified sender or belong to an
    /// authenticated domain, or SendGrid answers 403 (a provider-config error).
    pub from: EmailAddress,
    /// The sender's display name (`from.name`), at most 100 characters, one line.
    #[serde(default)]
    pub from_name: Option<String>,
    /// The deadline of one call, connect to last byte, in ms (100..=60,000; default 10,000, see
    /// [`options::TIMEOUT_MS_DEFAULT`] for why). A call that hits it is an unknown outcome.
    #[serde(default = "options::timeout_ms_default")]
    pub timeout_ms: u64,
    /// The deadline for establishing a connection, in ms (at most `timeout_ms`; default 3,000). A
    /// call that hits it is retryable, since nothing was sent.
    #[serde(default = "options::connect_timeout_ms_default")]
    pub connect_timeout_ms: u64,
    /// The Signed Event Webhook (delivery receipts) posting to
    /// `/v1/webhooks/sendgrid/{provider}`. Without it that route answers 404: receipts are
    /// never taken unsigned.
    #[serde(default)]
    pub event_webhook: Option<EventWebhookConfig>,
}

/// The Signed Event Webhook's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventWebhookConfig {
    /// The verification key SendGrid shows under Mail Settings, Signed Event Webhook: the
    /// base64 of a DER P-256 public key (`SubjectPublicKeyInfo`).
    pub public_key: String,
    /// How far the signed timestamp may be from our clock, in seconds (1..=3,600; default 300).
    /// A request outside it is refused as a possible replay.
    #[serde(default = "tolerance_s_default")]
    pub tolerance_s: u64,
}

/// The default timestamp tolerance: 5 minutes.
pub const EVENT_WEBHOOK_TOLERANCE_S_DEFAULT: u64 = 300;
/// The largest timestamp tolerance accepted: an hour.
pub const EVENT_WEBHOOK_TOLERANCE_S_MAX: u64 = 3_600;

fn tolerance_s_default() -> u64 {
    EVENT_WEBHOOK_TOLERANCE_S_DEFAULT
}

impl SendGridConfig {
    /// Checks the values for provider `name`; called by the constructor, and usable at start-up
    /// without building a client.
    pub fn validate(&self, name: &ProviderName) -> Result<(), Error> {
        let provider = name.as_str();
        options::base_url(provider, "base_url", &self.base_url)?;
        if let Some(from_name) = &self.from_name {
            options::one_line(provider, "from_name", from_name, FROM_NAME_CHARS_MAX)?;
        }
        if let Some(webhook) = &self.event_webhook {
            if webhook.tolerance_s == 0 || webhook.tolerance_s > EVENT_WEBHOOK_TOLERANCE_S_MAX {
                return Err(Error::config(
                    provider,
                    "event_webhook.tolerance_s",
                    format!("must be between 1 and {EVENT_WEBHOOK_TOLERANCE_S_MAX}"),
                ));
            }
            #[cfg(feature = "webhooks")]
            super::webhook::EventWebhookKey::from_base64_der(&webhook.public_key)
                .map_err(|why| Error::config(provider, "event_webhook.public_key", why))?;
        }
        options::timeouts(provider, self.timeout_ms, self.connect_timeout_ms)
    }
}
