//! Firebase Cloud Messaging HTTP v1, for the push channel (Android and web devices).
//!
//! `POST {base_url}/v1/projects/{project_id}/messages:send` with `Authorization: Bearer <access
//! token>` and `{"message": {"token", "notification": {"title", "body"}, "data":
//! {"notification_id", "tenant", "attempt"}, "android": {"priority", "collapse_key", "ttl"}}}`,
//! one call per device (see [`crate::push`] for how several devices add up). `200` with the
//! message's `name` means FCM took it.
//!
//! The access token comes from the service account key: a JWT signed RS256 with `iss` = the
//! account's email, `scope` = `https://www.googleapis.com/auth/firebase.messaging`, `aud` = the
//! token endpoint, `iat` and `exp` = `iat` + 3600, exchanged at the token endpoint
//! (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<jwt>`, a form) for
//! `{access_token, expires_in}`. It is cached and refreshed 5 minutes before it expires, one
//! refresh at a time; a `401` drops it.
//!
//! # Files
//! - `config.rs`: [`FcmConfig`], the TOML section, and the key file.
//! - `request.rs`: the `messages:send` body and the assertion's claims.
//! - `response.rs`: the answers and their classification ([`classify`]).
//! - `token.rs`: the access token cache (feature `http`).
//! - `service.rs`: [`Fcm`], the provider (feature `http`).
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

pub use config::{FcmConfig, PROJECT_ID_CHARS_MAX, SERVICE_ACCOUNT_BYTES_MAX, ServiceAccount};
pub use request::{ASSERTION_SECS, Claims, GRANT_TYPE, SCOPE, send_path};
pub use response::{classify, error_code};
#[cfg(feature = "http")]
pub use service::{Fcm, PLATFORMS};
#[cfg(feature = "http")]
pub use token::REFRESH_EARLY_MS;
