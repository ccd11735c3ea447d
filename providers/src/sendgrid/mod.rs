//! SendGrid v3 mail send, for the email channel.
//!
//! `POST {base_url}/v3/mail/send` with `Authorization: Bearer <key>` and a JSON body of one
//! personalization (one recipient), our ids in its `custom_args`. `202` means SendGrid took the
//! message (`X-Message-Id` names it); errors are classified in `response.rs` by status and by
//! the fields SendGrid names.
//!
//! # Files
//! - `config.rs`: [`SendGridConfig`], the TOML section.
//! - `request.rs`: the mail send body.
//! - `response.rs`: the answers and their classification.
//! - `service.rs`: [`SendGrid`], the provider (feature `http`).
//! - `webhook.rs` (feature `webhooks`): the Signed Event Webhook, verified and parsed into
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

pub use config::{
    EVENT_WEBHOOK_TOLERANCE_S_DEFAULT, EVENT_WEBHOOK_TOLERANCE_S_MAX, EventWebhookConfig,
    FROM_NAME_CHARS_MAX, SendGridConfig,
};
pub use request::MAIL_SEND_PATH;
#[cfg(feature = "http")]
pub use service::SendGrid;
