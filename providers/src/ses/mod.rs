//! Amazon SES v2 SendEmail, for the email channel.
//!
//! `POST {base_url}/v2/email/outbound-emails`, signed with AWS Signature Version 4 (service
//! `ses`, the configured region) by the `aws-sigv4` crate, with a JSON body of one simple message
//! to one recipient. Our ids travel as `EmailTags` named `notification_id`, `tenant` and
//! `attempt`: SES copies them into every event it publishes through the configuration set
//! (`mail.tags`), which is how a receipt finds its notification. `200` with `{"MessageId"}` means
//! SES took the message; errors are classified in `response.rs` by SES's error type
//! (`x-amzn-ErrorType`, or the body's `__type`).
//!
//! # Files
//! - `config.rs`: [`SesConfig`], the TOML section.
//! - `request.rs`: the SendEmail body.
//! - `response.rs`: the answers and their classification.
//! - `service.rs`: [`Ses`], the provider (feature `http`).
//! - `sigv4.rs`: the SigV4 algorithm written out from AWS's specification, used to verify
//!   signatures (the sandbox, and the tests as an oracle independent of `aws-sigv4`).
//! - `tests.rs`: wire-format and classification tests.

mod config;
mod request;
mod response;
#[cfg(feature = "http")]
mod service;
#[cfg(any(test, feature = "sandbox"))]
pub(crate) mod sigv4;
#[cfg(test)]
mod tests;

pub use config::{CONFIGURATION_SET_CHARS_MAX, FROM_NAME_CHARS_MAX, SesConfig};
pub use request::{SEND_EMAIL_PATH, TAG_ATTEMPT, TAG_NOTIFICATION_ID, TAG_TENANT};
#[cfg(feature = "http")]
pub use service::Ses;

/// The SigV4 service name of SES.
pub const SIGNING_SERVICE: &str = "ses";
