//! courant's providers: the shell side of the lifecycle's [`Provider`] port.
//!
//! Each provider turns one [`Outbound`] message into one call to a real API and classifies the
//! answer once, into a [`SendOutcome`] whose failures carry an [`ErrorClass`]. Everything
//! downstream (retry, failover, fallback, reconciling) looks only at that class.
//!
//! Every provider module has the same files, vector-style, so learning one teaches them all:
//! `config.rs` (the TOML section, `deny_unknown_fields`, a doc comment per field), `request.rs`
//! (the wire body, built purely from the message), `response.rs` (the wire answers and their
//! classification, pure), `service.rs` (the HTTP call, feature `http`) and `tests.rs`.
//!
//! # Layout
//! - [`secret`]: [`Secret`], the credential type whose `Debug` and `Display` print `***`.
//! - [`options`]: the defaults and bounds shared by the HTTP providers' configs (timeouts).
//! - [`breaker`]: per-provider circuit breakers (failsafe) around any provider.
//! - [`receipt`]: [`receipt::ReceiptEvent`], what a delivery receipt says, the same for every
//!   provider's webhook.
//! - [`inapp`]: the in-app inbox provider (no feature needed).
//! - [`sendgrid`]: SendGrid v3 mail send (email).
//! - [`ses`]: Amazon SES v2 SendEmail, SigV4-signed (email).
//! - [`smtp`]: any SMTP relay, through `lettre` (email).
//! - [`twilio`]: Twilio Programmable Messaging (SMS).
//! - [`vonage`]: Vonage's SMS API (SMS), and its delivery receipts.
//! - [`webhook`]: a signed outbound webhook, Standard Webhooks style (chat).
//! - [`slack`]: Slack incoming webhooks (chat).
//! - [`fcm`]: Firebase Cloud Messaging HTTP v1 (push to Android and web devices).
//! - [`apns`]: Apple Push Notification service over HTTP/2 (push to iOS devices).
//! - [`push`]: one message to each of a recipient's devices, and how the devices'
//!   answers add up (dead tokens reported for removal); [`push::PushGroup`], several push
//!   services as one provider.
//! - `sns` (feature `webhooks`): SNS messages verified (RSA over SNS's canonical string, the
//!   certificate pinned or from an SNS host only) and the SES events they carry.
//! - `http` (feature `http`): the shared client options and the transport-error classification.
//! - [`sandbox`] (feature `sandbox`): a local axum server that answers the SendGrid, SES, Twilio,
//!   Vonage, FCM, APNs and Slack endpoints with their real wire formats, receives signed webhooks
//!   and relays SMTP, with injected latency and failures.
//! - `redact`: scrubs addresses and credentials out of provider error messages.
//!
//! # Architecture invariants
//! - A provider never panics and never returns a Rust error from `send`: every failure, including
//!   a misrouted message, is a classified [`SendOutcome::Failed`].
//! - Nothing a provider returns or logs contains the recipient's address or our credentials:
//!   provider messages go through `redact`, logs carry the notification id and provider name only.
//! - Base URLs and credentials always come from configuration; nothing here knows a production
//!   URL, so a test can never reach a real provider by accident.
//!
//! [`Provider`]: workflows::ports::Provider
//! [`Outbound`]: workflows::ports::Outbound
//! [`SendOutcome`]: steps::outcome::SendOutcome
//! [`SendOutcome::Failed`]: steps::outcome::SendOutcome::Failed
//! [`ErrorClass`]: steps::outcome::ErrorClass

pub mod apns;
pub mod breaker;
pub mod fcm;
pub mod inapp;
pub mod options;
pub mod receipt;
pub mod secret;
pub mod sendgrid;
pub mod ses;
pub mod slack;
pub mod smtp;
#[cfg(feature = "webhooks")]
pub mod sns;
pub mod twilio;
pub mod vonage;
pub mod webhook;

mod error;
#[cfg(feature = "http")]
mod http;
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub mod push;
mod redact;
#[cfg(feature = "sandbox")]
pub mod sandbox;
#[cfg(test)]
mod testing;

pub use apns::ApnsConfig;
pub use error::Error;
pub use fcm::FcmConfig;
pub use inapp::InAppProvider;
pub use secret::Secret;
pub use sendgrid::SendGridConfig;
pub use ses::SesConfig;
pub use smtp::SmtpConfig;
pub use twilio::TwilioConfig;

#[cfg(feature = "http")]
pub use apns::Apns;
#[cfg(feature = "http")]
pub use fcm::Fcm;
#[cfg(feature = "http")]
pub use sendgrid::SendGrid;
#[cfg(feature = "http")]
pub use ses::Ses;
#[cfg(feature = "http")]
pub use smtp::Smtp;
#[cfg(feature = "http")]
pub use twilio::Twilio;
