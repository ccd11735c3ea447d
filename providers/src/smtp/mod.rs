//! SMTP submission to any relay, for the email channel, through `lettre`.
//!
//! One SMTP transaction per message (`MAIL FROM`, one `RCPT TO`, `DATA`) on a pooled,
//! authenticated connection: `starttls` (TLS required after `STARTTLS`, port 587), `tls`
//! (implicit TLS, port 465) or `plain` (only to a relay on this host). The message is
//! `multipart/alternative` text + HTML, with a `Message-ID` made from our ids and an
//! `X-Courant-Notification-Id` header. Replies are classified in `response.rs` by code and by the
//! phase of the transaction they answer: what matters most is whether the final `.` of `DATA` was
//! written, since after that a lost connection may hide an accepted message (unknown outcome).
//!
//! # Files
//! - `config.rs`: [`SmtpConfig`], the TOML section.
//! - `request.rs`: the message (MIME, headers, envelope), feature `http`.
//! - `response.rs`: the classification of replies and failures by phase.
//! - `service.rs`: [`Smtp`], the provider with its connection pool (feature `http`).
//! - `tests.rs`: classification tests, and (feature `http`) the real dialogue against a local
//!   SMTP server started by the test, in plain text and under STARTTLS with a test certificate.

mod config;
#[cfg(feature = "http")]
mod request;
mod response;
#[cfg(feature = "http")]
mod service;
#[cfg(test)]
mod tests;

pub use config::{
    FROM_NAME_CHARS_MAX, POOL_IDLE_MS_DEFAULT, POOL_MAX_DEFAULT, Security, SmtpConfig,
};
#[cfg(feature = "http")]
pub use service::Smtp;

/// The header carrying our notification id in every message.
pub const NOTIFICATION_ID_HEADER: &str = "X-Courant-Notification-Id";
