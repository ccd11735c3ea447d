//! Twilio Programmable Messaging, for the SMS channel.
//!
//! `POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json` with HTTP basic auth and a
//! form of `To`, `From` (or `MessagingServiceSid`), `Body` and, when a public callback base is
//! configured, `StatusCallback`. `201` means Twilio created the message (`sid`); errors are
//! classified in `response.rs` by Twilio's error code first, then by status.
//!
//! # Files
//! - `config.rs`: [`TwilioConfig`], the TOML section.
//! - `request.rs`: the create-message form and the status-callback URL.
//! - `response.rs`: the answers and their classification.
//! - `service.rs`: [`Twilio`], the provider (feature `http`).
//! - `webhook.rs` (feature `webhooks`): status callbacks, verified and parsed into
//!   [`ReceiptEvent`](crate::receipt::ReceiptEvent)s.
//! - `tests.rs`: wire-format and classification tests.

mod config;
mod request;
mod response;
#[cfg(feature = "http")]
mod service;
#[cfg(test)]
mod tests;
#[cfg(feature = "webhooks")]
pub mod webhook;

pub use config::{FROM_CHARS_MAX, TwilioConfig};
pub use request::{STATUS_CALLBACK_PATH, messages_path, status_callback_url};
#[cfg(feature = "http")]
pub use service::Twilio;
