//! Apple Push Notification service, for the push channel (iOS devices).
//!
//! HTTP/2 `POST {base_url}/3/device/{token}` with `authorization: bearer <provider token>`,
//! `apns-topic` (the bundle id), `apns-push-type: alert`, `apns-id` (a UUID derived from the
//! notification and the device, so a re-send carries the same id), `apns-expiration` (the end
//! of the lifecycle's retry budget, seconds since the epoch), `apns-priority` (10 for critical
//! categories, 5 otherwise) and `apns-collapse-id` when the notification has a collapse key; the
//! body is `{"aps": {"alert": {"title", "body"}}, "notification_id": ...}`. One call per device
//! (see [`crate::push`]). `200` with `apns-id` means APNs took it.
//!
//! The provider token is a JWT signed ES256 with the `.p8` key, reused for 50 minutes (see
//! `token.rs`). Production is TLS with ALPN `h2`; an `http://` base URL (tests, the sandbox)
//! gets HTTP/2 with prior knowledge.
//!
//! # Files
//! - `config.rs`: [`ApnsConfig`], the TOML section, and the key file.
//! - `request.rs`: path, headers and payload.
//! - `response.rs`: the answers and their classification ([`classify`]).
//! - `token.rs`: the provider token (feature `http`).
//! - `service.rs`: [`Apns`], the provider (feature `http`).
//! - `tests.rs`: wire-format and classification tests.

mod config;
// Without `http` only the wire types and the classification compile, for the simulator.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
mod request;
#[cfg_attr(not(feature = "http"), allow(dead_code))]
mod response;
#[cfg(feature = "http")]
mod service;
#[cfg(test)]
mod tests;
#[cfg(feature = "http")]
mod token;

pub use config::{ApnsConfig, KEY_FILE_BYTES_MAX, TOPIC_CHARS_MAX};
pub use request::{COLLAPSE_ID_BYTES_MAX, ProviderClaims, apns_id, collapse_id, headers, path};
pub use response::{classify, reason};
#[cfg(feature = "http")]
pub use service::{Apns, PLATFORMS};
#[cfg(feature = "http")]
pub use token::{REFRESH_AFTER_MS, REPLACE_AFTER_MS};
