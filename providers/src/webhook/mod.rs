//! A signed outbound webhook, for the chat channel.
//!
//! `POST {url}` with a JSON body (`{"type":"notification.chat","timestamp","data":{notification
//! id, tenant, category, recipient id, text}}`) and the Standard Webhooks headers:
//! `webhook-id` (the notification id, the same on every retry), `webhook-timestamp` (Unix
//! seconds) and `webhook-signature` (`v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`
//! keyed with the `whsec_` secret). A 2xx is delivery; other answers are classified in
//! `response.rs`. [`verify`] is the receiving side, used by the sandbox and offered to anyone
//! receiving courant's webhooks.
//!
//! # Files
//! - `config.rs`: [`WebhookConfig`], the TOML section.
//! - `request.rs`: the JSON body.
//! - `signature.rs`: signing and verifying (Standard Webhooks).
//! - `response.rs`: the answers and their classification.
//! - `service.rs`: [`Webhook`], the provider (feature `http`).
//! - `tests.rs`: wire-format, signature (against the spec's published vector) and classification
//!   tests.

mod config;
mod request;
mod response;
#[cfg(feature = "http")]
mod service;
mod signature;
#[cfg(test)]
mod tests;

pub use config::WebhookConfig;
pub use request::EVENT_TYPE;
#[cfg(feature = "http")]
pub use service::Webhook;
pub use signature::{
    SECRET_BYTES_MAX, SECRET_BYTES_MIN, SECRET_PREFIX, TOLERANCE_SECS, VerifyError, secret_key,
    sign, verify,
};
