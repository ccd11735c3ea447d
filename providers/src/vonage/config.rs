//! The `[providers.<name>]` section of a Vonage SMS provider.
//!
//! ```toml
//! [providers.vonage]
//! kind = "vonage"                      # read by the binary to pick this config type
//! base_url = "https://rest.nexmo.com"
//! api_key = "abcd1234"
//! api_secret = "your_api_secret"
//! from = "Acme"                        # a number (digits) or an alphanumeric sender ID
//! callback_base_url = "https://courant.example.com"   # optional: delivery receipts
//! signature_secret = "your_signature_secret"          # optional: verify signed receipts
//! signature_method = "md5hash"                        # optional (default md5hash)
//! timeout_ms = 10000                   # optional
//! connect_timeout_ms = 3000            # optional
//! ```
//!
//! (`kind` belongs to the binary's enclosing enum, not to this struct.)

use serde::Deserialize;
use steps::model::ProviderName;

use super::signature::SignatureMethod;
use crate::options;
use crate::{Error, Secret};

/// Longest `from`, in characters: Vonage takes a number of up to 15 digits or an alphanumeric
/// sender ID of up to 11 characters.
pub const FROM_CHARS_MAX: usize = 15;

/// Longest API key, in characters (Vonage's are 8 hex digits).
pub const API_KEY_CHARS_MAX: usize = 64;

/// A Vonage SMS API provider's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VonageConfig {
    /// The API's base URL, without `/sms/json`: `https://rest.nexmo.com` in production, the
    /// sandbox's address in dev mode and tests. Always configured, never defaulted, so nothing
    /// reaches the real API by accident.
    pub base_url: String,
    /// The account's API key (`api_key`), sent in the form.
    pub api_key: String,
    /// The account's API secret (`api_secret`), sent in the form (the SMS API takes credentials
    /// in the body, not in a header). Printed as `***`.
    pub api_secret: Secret,
    /// The sender (`from`): a number in international format without `+` (up to 15 digits), or an
    /// alphanumeric sender ID (up to 11 characters, letters, digits and spaces) where the
    /// destination country allows one.
    pub from: String,
    /// courant's public base URL (`https://courant.example.com`). When set, each message asks
    /// Vonage for delivery receipts at
    /// `{callback_base_url}/v1/webhooks/vonage/{provider}/{tenant}/{notification_id}` (the
    /// `callback` parameter, which overrides the account's default receipt URL); when absent,
    /// receipts go wherever the account's dashboard says, and unknown outcomes can only be
    /// reconciled by the grace period.
    #[serde(default)]
    pub callback_base_url: Option<String>,
    /// The account's signature secret, to verify signed delivery receipts (Vonage adds `sig` and
    /// `timestamp` to every webhook once signing is enabled in the dashboard). Absent: receipts
    /// are accepted unsigned. Printed as `***`.
    #[serde(default)]
    pub signature_secret: Option<Secret>,
    /// The signing method chosen in the dashboard: `md5hash` (Vonage's default), `md5`, `sha1`,
    /// `sha256` or `sha512` (the last four are HMACs).
    #[serde(default)]
    pub signature_method: SignatureMethod,
    /// The deadline of one call, connect to last byte, in ms (100..=60,000; default 10,000, see
    /// [`options::TIMEOUT_MS_DEFAULT`] for why). A call that hits it is an unknown outcome.
    #[serde(default = "options::timeout_ms_default")]
    pub timeout_ms: u64,
    /// The deadline for establishing a connection, in ms (at most `timeout_ms`; default 3,000). A
    /// call that hits it is retryable, since nothing was sent.
    #[serde(default = "options::connect_timeout_ms_default")]
    pub connect_timeout_ms: u64,
}

impl VonageConfig {
    /// Checks the values for provider `name`; called by the constructor, and usable at start-up
    /// without building a client.
    pub fn validate(&self, name: &ProviderName) -> Result<(), Error> {
        let provider = name.as_str();
        options::base_url(provider, "base_url", &self.base_url)?;
        let key_ok = !self.api_key.is_empty()
            && self.api_key.len() <= API_KEY_CHARS_MAX
            && self.api_key.bytes().all(|b| b.is_ascii_alphanumeric());
        if !key_ok {
            return Err(Error::config(
                provider,
                "api_key",
                format!("must be 1 to {API_KEY_CHARS_MAX} letters or digits"),
            ));
        }
        options::one_line(provider, "from", &self.from, FROM_CHARS_MAX)?;
        let from_ok = if self.from.bytes().all(|b| b.is_ascii_digit()) {
            true
        } else {
            self.from.chars().count() <= 11
                && self.from.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
        };
        if !from_ok || self.from.starts_with('+') {
            // Vonage wants numbers without `+` and sender IDs of plain letters and digits; other
            // characters are silently replaced or refused per country.
            return Err(Error::config(
                provider,
                "from",
                "must be a number without + (up to 15 digits) or an alphanumeric sender ID (up to \
                 11 letters, digits and spaces)",
            ));
        }
        if let Some(base) = &self.callback_base_url {
            options::base_url(provider, "callback_base_url", base)?;
        }
        options::timeouts(provider, self.timeout_ms, self.connect_timeout_ms)
    }
}
