//! The webhook's JSON body and headers, built from one message.
//!
//! The body follows the Standard Webhooks payload shape, `{"type", "timestamp", "data"}`:
//!
//! ```json
//! {"type":"notification.chat","timestamp":"2026-11-22T06:30:58Z",
//!  "data":{"notification_id":"n_01HZX3V4","tenant":"acme","category":"order_updates",
//!          "recipient_id":"user-1","text":"Your order shipped."}}
//! ```
//!
//! `webhook-id` is the notification id, the same on every attempt, so a receiver that saw a
//! message before (our answer was lost, we retried) recognises the retry and drops it.

use serde::Serialize;
use steps::outcome::{ErrorClass, ProviderError};
use steps::render::Content;
use workflows::ports::Outbound;

use crate::inapp::content_channel;

/// The event type of every message.
pub const EVENT_TYPE: &str = "notification.chat";

/// The body.
#[derive(Debug, Serialize)]
pub(crate) struct Payload<'a> {
    /// [`EVENT_TYPE`].
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When it was sent, RFC 3339 in UTC.
    pub timestamp: String,
    /// The message.
    pub data: Data<'a>,
}

/// What the message says.
#[derive(Debug, Serialize)]
pub(crate) struct Data<'a> {
    /// Our notification id.
    pub notification_id: &'a str,
    /// The tenant.
    pub tenant: &'a str,
    /// The category.
    pub category: &'a str,
    /// The application's recipient id.
    pub recipient_id: &'a str,
    /// The rendered chat text.
    pub text: &'a str,
}

/// The body for `message` sent at `now_secs`, serialized, or the classified reason it cannot be
/// sent.
pub(crate) fn body(message: &Outbound, now_secs: u64) -> Result<Vec<u8>, ProviderError> {
    let text = match &message.content {
        Content::Chat { text } => text,
        other => {
            // The route sent another channel's content to a chat provider: configuration.
            return Err(ProviderError::new(
                ErrorClass::ProviderConfig,
                None,
                None,
                &format!("chat provider got {} content", content_channel(other)),
            ));
        }
    };
    let timestamp = i64::try_from(now_secs)
        .ok()
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let payload = Payload {
        kind: EVENT_TYPE,
        timestamp,
        data: Data {
            notification_id: message.notification_id.as_str(),
            tenant: message.tenant.as_str(),
            category: message.category.as_str(),
            recipient_id: message.recipient.id.as_str(),
            text,
        },
    };
    serde_json::to_vec(&payload).map_err(|e| {
        ProviderError::new(ErrorClass::ProviderConfig, None, None, &format!("cannot encode: {e}"))
    })
}
