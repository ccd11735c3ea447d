//! The `[providers.<name>]` section of an Amazon SES provider.
//!
//! ```toml
//! [providers.ses]
//! kind = "ses"                 # read by the binary to pick this config type
//! base_url = "https://email.eu-west-1.amazonaws.com"
//! region = "eu-west-1"
//! access_key_id = "AKIAIOSFODNN7EXAMPLE"
//! secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
//! session_token = "..."        # optional, for temporary credentials
//! from = "notifications@example.com"
//! from_name = "Example"        # optional
//! configuration_set = "courant-events"   # optional; needed for delivery receipts
//! timeout_ms = 10000           # optional
//! connect_timeout_ms = 3000    # optional
//! ```
//!
//! (`kind` belongs to the binary's enclosing enum, not to this struct.)

use serde::Deserialize;
use steps::model::{EmailAddress, ProviderName};

use crate::options;
use crate::{Error, Secret};

/// Longest sender display name, in characters.
pub const FROM_NAME_CHARS_MAX: usize = 100;

/// Longest configuration set name (SES's own limit), in characters.
pub const CONFIGURATION_SET_CHARS_MAX: usize = 64;

/// Longest region name accepted, in bytes (the longest real one, `ap-southeast-5`, has 14).
const REGION_BYTES_MAX: usize = 32;

/// An Amazon SES provider's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SesConfig {
    /// The API's base URL, without `/v2`: `https://email.<region>.amazonaws.com` in production,
    /// the sandbox's address in dev mode and tests. Always configured, never defaulted, so
    /// nothing reaches the real API by accident.
    pub base_url: String,
    /// The AWS region the requests are signed for (`eu-west-1`); it must be the region of
    /// `base_url` and the one where the sender identity is verified.
    pub region: String,
    /// The access key id of an IAM principal allowed `ses:SendEmail`.
    pub access_key_id: Secret,
    /// Its secret access key, used only to derive the signing key. Printed as `***`.
    pub secret_access_key: Secret,
    /// The session token of temporary credentials (STS), sent as `X-Amz-Security-Token`.
    #[serde(default)]
    pub session_token: Option<Secret>,
    /// The sender address (`FromEmailAddress`). It must be a verified identity (address or
    /// domain) in `region`, or SES answers `MessageRejected`/`MailFromDomainNotVerifiedException`.
    pub from: EmailAddress,
    /// The sender's display name, at most 100 characters, one line.
    #[serde(default)]
    pub from_name: Option<String>,
    /// The configuration set (`ConfigurationSetName`) whose event destination publishes
    /// deliveries, bounces and complaints: without one SES sends no events, so no receipts.
    /// Letters, digits, `_` and `-`, at most 64 characters.
    #[serde(default)]
    pub configuration_set: Option<String>,
    /// The deadline of one call, connect to last byte, in ms (100..=60,000; default 10,000, see
    /// [`options::TIMEOUT_MS_DEFAULT`] for why). A call that hits it is an unknown outcome.
    #[serde(default = "options::timeout_ms_default")]
    pub timeout_ms: u64,
    /// The deadline for establishing a connection, in ms (at most `timeout_ms`; default 3,000). A
    /// call that hits it is retryable, since nothing was sent.
    #[serde(default = "options::connect_timeout_ms_default")]
    pub connect_timeout_ms: u64,
}

impl SesConfig {
    /// Checks the values for provider `name`; called by the constructor, and usable at start-up
    /// without building a client.
    pub fn validate(&self, name: &ProviderName) -> Result<(), Error> {
        let provider = name.as_str();
        options::base_url(provider, "base_url", &self.base_url)?;
        let region_ok = !self.region.is_empty()
            && self.region.len() <= REGION_BYTES_MAX
            && self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(Error::config(
                provider,
                "region",
                "must be an AWS region name such as eu-west-1",
            ));
        }
        let key_ok = (16..=128).contains(&self.access_key_id.expose().len())
            && self.access_key_id.expose().bytes().all(|b| b.is_ascii_alphanumeric());
        if !key_ok {
            return Err(Error::config(
                provider,
                "access_key_id",
                "must be 16 to 128 letters and digits",
            ));
        }
        if let Some(from_name) = &self.from_name {
            options::one_line(provider, "from_name", from_name, FROM_NAME_CHARS_MAX)?;
        }
        if let Some(set) = &self.configuration_set {
            let set_ok = !set.is_empty()
                && set.len() <= CONFIGURATION_SET_CHARS_MAX
                && set.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !set_ok {
                return Err(Error::config(
                    provider,
                    "configuration_set",
                    format!(
                        "must be 1 to {CONFIGURATION_SET_CHARS_MAX} letters, digits, '_' or '-'"
                    ),
                ));
            }
        }
        options::timeouts(provider, self.timeout_ms, self.connect_timeout_ms)
    }
}
