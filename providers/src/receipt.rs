//! What a provider's delivery receipt says, in terms every provider shares.
//!
//! Each provider's webhook module verifies a receipt's signature over the raw bytes, parses the
//! provider's own event shape and turns each event into a [`ReceiptEvent`]: which notification
//! (from the ids we passed the provider: SendGrid `custom_args`, SES message tags, the id in
//! Twilio's `StatusCallback` URL, ...), and what happened, as a [`ReceiptKind`]. The API applies
//! the kind to the lifecycle (`Runner::receipt`) and to the recipient's preferences; nothing
//! downstream looks at the provider's own vocabulary.

use serde::{Deserialize, Serialize};
use steps::model::{Attempt, NotificationId, TenantId};

/// The longest provider detail kept (a bounce reason, an error code), in bytes.
pub const DETAIL_BYTES_MAX: usize = 256;

/// One event of a receipt, about one notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptEvent {
    /// The tenant the notification belongs to.
    pub tenant: TenantId,
    /// The notification.
    pub notification_id: NotificationId,
    /// The attempt the receipt is about, when the provider echoes it (SendGrid `custom_args`,
    /// SES tags, the Twilio callback URL). A negative receipt for an earlier attempt says
    /// nothing about the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<Attempt>,
    /// The provider's id for the message, when the event names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    /// What happened.
    pub kind: ReceiptKind,
    /// When the provider says it happened, in ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
    /// The provider's reason or error code (a bounce type, Twilio's `ErrorCode`), already
    /// scrubbed of addresses and at most [`DETAIL_BYTES_MAX`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What a receipt event says happened to a sent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// The provider took it or is working on it (SendGrid `processed`, Twilio `queued`/`sent`,
    /// SES `Send`): no change to the lifecycle.
    Accepted,
    /// The provider is retrying delivery (SendGrid `deferred`, SES `DeliveryDelay`): no change.
    Deferred,
    /// Delivered to the recipient's server or handset.
    Delivered,
    /// The provider gave up without blaming the address (Twilio `undelivered`/`failed`, SendGrid
    /// `dropped`, SES `Reject`).
    Undelivered,
    /// The address does not work (a hard bounce): undelivered, and the address is bad.
    Bounced,
    /// The recipient opened it (engagement; no state change).
    Opened,
    /// The recipient clicked a link in it (engagement; no state change).
    Clicked,
    /// The recipient unsubscribed through the provider's link: their preferences change.
    Unsubscribed,
    /// The recipient reported it as spam (SES `Complaint`, SendGrid `spamreport`): treated as an
    /// unsubscribe.
    SpamReport,
}

impl ReceiptKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptKind::Accepted => "accepted",
            ReceiptKind::Deferred => "deferred",
            ReceiptKind::Delivered => "delivered",
            ReceiptKind::Undelivered => "undelivered",
            ReceiptKind::Bounced => "bounced",
            ReceiptKind::Opened => "opened",
            ReceiptKind::Clicked => "clicked",
            ReceiptKind::Unsubscribed => "unsubscribed",
            ReceiptKind::SpamReport => "spam_report",
        }
    }
}

/// Cuts a provider's detail text to [`DETAIL_BYTES_MAX`] bytes on a character boundary.
pub fn bounded_detail(text: &str) -> String {
    let mut end = text.len().min(DETAIL_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Why a webhook request was refused. Every variant is answered `401` with the same body, so a
/// caller learns nothing about which check failed; the variant is for our logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A signature or timestamp header is missing.
    Unsigned,
    /// A header or the signed material is malformed (not base64, not DER, not a number).
    Malformed,
    /// The timestamp is outside the configured tolerance.
    Stale,
    /// The signature does not verify.
    Forged,
}

impl Rejection {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Unsigned => "unsigned",
            Rejection::Malformed => "malformed",
            Rejection::Stale => "stale",
            Rejection::Forged => "forged",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What parsing a verified webhook body came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The events about our notifications, in the order the provider sent them.
    pub events: Vec<ReceiptEvent>,
    /// Events left aside: not about one of our notifications (no ids), or of a kind courant
    /// does not use.
    pub skipped: usize,
}
