//! Vonage's answers and their classification.
//!
//! The SMS API answers `200` for every request it read, refused or not:
//! `{"message-count": "1", "messages": [{"status": "0", "message-id": "...", ...}]}`, one entry per
//! part of a long message. `status` `"0"` means queued for delivery; anything else is an error
//! whose number decides its class, with `error-text` saying more. Other HTTP statuses come from
//! proxies and outages and are classified by status.
//!
//! Sources: developer.vonage.com/en/messaging/sms/guides/troubleshooting-sms and
//! developer.vonage.com/en/api-errors/sms (the status table).

use serde::Deserialize;
use steps::outcome::{ErrorClass, ProviderError, SendOutcome, classify_http};

use crate::redact;

/// Longest message id kept, in bytes (Vonage's are 16 hex digits, newer ones UUIDs).
const MESSAGE_ID_BYTES_MAX: usize = 64;

/// The answer body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Answer {
    /// One entry per part sent (long messages are split).
    #[serde(default)]
    pub messages: Vec<Part>,
}

/// One part's result.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Part {
    /// `"0"` for success, else the error number.
    pub status: String,
    /// The part's id, on success.
    #[serde(rename = "message-id", default)]
    pub message_id: Option<String>,
    /// What went wrong, on error; may quote the number.
    #[serde(rename = "error-text", default)]
    pub error_text: Option<String>,
}

/// The class of a documented SMS API status, or `None` for an undocumented one.
pub(crate) fn class_of_status(status: u32, error_text: &str) -> Option<ErrorClass> {
    let class = match status {
        // Throttled (1); too many existing binds (10), i.e. too many connections at once.
        1 | 10 => ErrorClass::RateLimited { retry_after_ms: None },
        // Vonage's own trouble: internal error (5), communication failed (13).
        5 | 13 => ErrorClass::RETRYABLE,
        // Invalid parameters (3): the error text names the parameter. A bad `to` is this
        // recipient; anything else (`from`, the callback, the type) is our configuration and fails
        // every message the same way.
        3 => {
            let text = error_text.to_ascii_lowercase();
            let names_to = ["to address", "'to'", "to param", "msisdn"];
            if names_to.iter().any(|n| text.contains(n)) {
                ErrorClass::PermanentRecipient
            } else {
                ErrorClass::ProviderConfig
            }
        }
        // The recipient or this message: invalid message, e.g. an unknown number prefix (6);
        // number barred (7); message too long (12); destination not in the trial account's
        // allow-list (29); number de-activated (33); invalid or missing `to` (34); the number
        // opted out of the program (101); invalid number (103). None succeeds on retry; a
        // fallback channel can.
        6 | 7 | 12 | 29 | 33 | 34 | 101 | 103 => ErrorClass::PermanentRecipient,
        // Us: missing parameters (2), invalid credentials (4), account barred (8), no credit
        // left (9, which another provider can still send), account not enabled for the HTTP API
        // (11), invalid signature (14), sender address refused (15), invalid TTL (16), facility not
        // allowed (19), invalid message class (20), bad callback URL (23), signature and API
        // secret both sent (32), invalid short-code campaign (102). Every message fails the same
        // way: open the breaker and fail over.
        2 | 4 | 8 | 9 | 11 | 14 | 15 | 16 | 19 | 20 | 23 | 32 | 102 => ErrorClass::ProviderConfig,
        _ => return None,
    };
    Some(class)
}

/// The outcome of an answer. `known` are literals scrubbed from messages (the recipient's
/// number, our API key and secret).
pub(crate) fn outcome(
    status: u16,
    retry_after_ms: Option<u64>,
    body: &[u8],
    known: &[&str],
) -> SendOutcome {
    if status != 200 {
        let class = match status {
            // A wrong base URL.
            404 | 405 => ErrorClass::ProviderConfig,
            _ => classify_http(status, retry_after_ms),
        };
        return SendOutcome::Failed(ProviderError::new(
            class,
            Some(status),
            None,
            &format!("unexpected answer (HTTP {status})"),
        ));
    }
    let parts = match serde_json::from_slice::<Answer>(body) {
        Ok(answer) if !answer.messages.is_empty() => answer.messages,
        _ => {
            // A 200 that cannot be read: Vonage processed the request but we cannot tell whether
            // it queued the message. Reconcile rather than re-send.
            return SendOutcome::Failed(ProviderError::new(
                ErrorClass::Unknown,
                Some(status),
                None,
                "HTTP 200 with an unreadable body; the message may have been queued",
            ));
        }
    };
    // A long message is sent as parts. Once one part is queued, the recipient gets something
    // and a re-send would duplicate it, so any queued part makes the message accepted (its
    // receipt tells the rest); only when every part failed is the first error the outcome.
    if let Some(queued) = parts.iter().find(|p| p.status.trim() == "0") {
        let provider_message_id = queued.message_id.clone().filter(|id| {
            !id.is_empty()
                && id.len() <= MESSAGE_ID_BYTES_MAX
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        return SendOutcome::Accepted { provider_message_id, delivered: false };
    }
    let first = &parts[0];
    let text = first.error_text.as_deref().unwrap_or("");
    let code = first.status.trim();
    let class = match code.parse::<u32>().ok() {
        Some(number) => class_of_status(number, text).unwrap_or(ErrorClass::RETRYABLE),
        // Not even a number: nothing was queued, and we cannot say why.
        None => ErrorClass::RETRYABLE,
    };
    let message =
        if text.is_empty() { format!("status {code}") } else { redact::scrub(text, known) };
    let code = (code.len() <= 8 && code.bytes().all(|b| b.is_ascii_digit())).then(|| code.into());
    SendOutcome::Failed(ProviderError::new(class, Some(status), code, &message))
}
