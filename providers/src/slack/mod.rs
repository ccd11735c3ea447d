//! Slack incoming webhooks, for the chat channel.
//!
//! `POST {webhook_url}` with `{"text": ...}`; Slack answers `200 ok` or an HTTP error carrying one
//! error token, classified in `response.rs`. The webhook URL is the credential (it embeds the
//! token), so it is a [`Secret`](crate::Secret) and never appears in a log line or an error.
//!
//! # Files
//! - `config.rs`: [`SlackConfig`], the TOML section.
//! - `request.rs`: the message body.
//! - `response.rs`: the answers and their classification.
//! - `service.rs`: [`Slack`], the provider (feature `http`).
//! - `tests.rs`: wire-format and classification tests.

mod config;
mod request;
mod response;
#[cfg(feature = "http")]
mod service;
#[cfg(test)]
mod tests;

pub use config::SlackConfig;
pub use request::TEXT_CHARS_MAX;
#[cfg(feature = "http")]
pub use service::Slack;
