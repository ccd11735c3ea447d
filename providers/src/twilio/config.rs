//! The `[providers.<name>]` section of a Twilio provider.
//!
//! ```toml
//! [providers.twilio]
//! kind = "twilio"                      # read by the binary to pick this config type
//! base_url = "https://api.twilio.com"
//! account_sid = "ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
//! auth_token = "your_auth_token"
//! from = "+15005550006"                # or messaging_service_sid = "MG..."
//! status_callback_base_url = "https://courant.example.com"   # optional: status callbacks
//! webhook_auth_token = "..."           # optional: when api_key_sid is set
//! timeout_ms = 10000                   # optional
//! connect_timeout_ms = 3000            # optional
//! ```
//!
//! (`kind` belongs to the binary's enclosing enum, not to this struct.)

use serde::Deserialize;
use steps::model::ProviderName;

use crate::options;
use crate::{Error, Secret};

/// Longest `from` value, in characters (an E.164 number has 16, an alphanumeric sender ID 11,
/// a channel address such as `whatsapp:+1...` a few more).
pub const FROM_CHARS_MAX: usize = 32;

/// A Twilio provider's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// The API's base URL, without `/2010-04-01`: `https://api.twilio.com` in production, the
    /// sandbox's address in dev mode and tests. Always configured, never defaulted, so nothing
    /// reaches the real API by accident.
    pub base_url: String,
    /// The account SID (`AC` + 32 hex digits). It is part of the request path and, unless
    /// `api_key_sid` is set, the basic-auth user.
    pub account_sid: String,
    /// The auth token (basic-auth password), or the API key's secret when `api_key_sid` is set.
    /// Printed as `***`.
    pub auth_token: Secret,
    /// An API key SID (`SK` + 32 hex digits) to authenticate with instead of the account SID,
    /// which Twilio recommends for production: a key can be revoked without rotating the
    /// account's auth token.
    #[serde(default)]
    pub api_key_sid: Option<String>,
    /// The sender (`From`): an E.164 number, a short code or an alphanumeric sender ID. Exactly
    /// one of `from` and `messaging_service_sid` must be set.
    #[serde(default)]
    pub from: Option<String>,
    /// A Messaging Service SID (`MG` + 32 hex digits) sent as `MessagingServiceSid` instead of a
    /// `From`, so Twilio picks the sender from the service's pool.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// courant's public base URL (`https://courant.example.com`). When set, each message asks
    /// Twilio for status callbacks at
    /// `{status_callback_base_url}/v1/webhooks/twilio/{provider}?n={id}&t={tenant}&a={attempt}`
    /// and those callbacks are verified against this same base (Twilio signs the URL it
    /// called, so it must be the URL Twilio reaches courant at, behind any proxy); when
    /// absent, no callbacks are requested and unknown outcomes can only be reconciled by lookup.
    #[serde(default)]
    pub status_callback_base_url: Option<String>,
    /// The account's auth token, which Twilio signs status callbacks with (`X-Twilio-Signature`).
    /// Needed only when `api_key_sid` is set (then `auth_token` is the key's secret, which
    /// Twilio does not sign with); otherwise `auth_token` is used. Printed as `***`.
    #[serde(default)]
    pub webhook_auth_token: Option<Secret>,
    /// The deadline of one call, connect to last byte, in ms (100..=60,000; default 10,000, see
    /// [`options::TIMEOUT_MS_DEFAULT`] for why). A call that hits it is an unknown outcome.
    #[serde(default = "options::timeout_ms_default")]
    pub timeout_ms: u64,
    /// The deadline for establishing a connection, in ms (at most `timeout_ms`; default 3,000). A
    /// call that hits it is retryable, since nothing was sent.
    #[serde(default = "options::connect_timeout_ms_default")]
    pub connect_timeout_ms: u64,
}

impl TwilioConfig {
    /// The token status callbacks are signed with: `webhook_auth_token`, else `auth_token`
    /// (which is the account's token unless an API key is used).
    pub fn callback_token(&self) -> &Secret {
        self.webhook_auth_token.as_ref().unwrap_or(&self.auth_token)
    }

    /// Checks the values for provider `name`; called by the constructor, and usable at start-up
    /// without building a client.
    pub fn validate(&self, name: &ProviderName) -> Result<(), Error> {
        let provider = name.as_str();
        options::base_url(provider, "base_url", &self.base_url)?;
        options::sid(provider, "account_sid", &self.account_sid, "AC")?;
        if let Some(key) = &self.api_key_sid {
            options::sid(provider, "api_key_sid", key, "SK")?;
        }
        match (&self.from, &self.messaging_service_sid) {
            (Some(from), None) => options::one_line(provider, "from", from, FROM_CHARS_MAX)?,
            (None, Some(service)) => {
                options::sid(provider, "messaging_service_sid", service, "MG")?
            }
            _ => {
                // Twilio accepts both and then uses `From`, silently ignoring the service's sender
                // pool; asking for exactly one keeps the configuration meaning what it says.
                return Err(Error::config(
                    provider,
                    "from",
                    "set exactly one of from and messaging_service_sid",
                ));
            }
        }
        if let Some(base) = &self.status_callback_base_url {
            options::base_url(provider, "status_callback_base_url", base)?;
        }
        options::timeouts(provider, self.timeout_ms, self.connect_timeout_ms)
    }
}
