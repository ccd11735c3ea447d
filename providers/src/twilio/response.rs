//! Twilio's answers and their classification.
//!
//! Success is `201 Created` with the Message resource (`sid`, `status` = `queued`, or `accepted`
//! with a Messaging Service). Errors carry `{"code","message","more_info","status"}`, and the code
//! is what decides: a 400 can be a bad recipient (21211) or our own misconfigured sender (21606),
//! which the status alone cannot tell apart.

use serde::Deserialize;
use steps::outcome::{ErrorClass, ProviderError, SendOutcome, classify_http};

use crate::redact;

/// Longest message SID kept, in bytes (Twilio's are 34 characters).
const SID_BYTES_MAX: usize = 64;

/// The part of a created Message resource we read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Created {
    /// `SM` + 32 hex digits.
    pub sid: String,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct ErrorBody {
    /// Twilio's error code (see twilio.com/docs/api/errors).
    #[serde(default)]
    pub code: Option<u32>,
    /// What is wrong; may echo the recipient's number.
    #[serde(default)]
    pub message: Option<String>,
}

/// The class of a documented Twilio error code, when it decides the class by itself.
///
/// Sources: twilio.com/docs/api/errors/{code}. Codes not listed fall back to the status.
pub(crate) fn class_of_code(code: u32) -> Option<ErrorClass> {
    let class = match code {
        // The recipient: invalid 'To' (21211), region not enabled for this 'To' (21408), trial
        // account and unverified 'To' (21608), unsubscribed with STOP (21610), 'To' unreachable
        // from this sender (21612), not a mobile number (21614). Also this message itself: body
        // missing (21602) or over 1,600 characters (21617). None of these can succeed on retry;
        // a fallback channel can.
        21211 | 21408 | 21602 | 21608 | 21610 | 21612 | 21614 | 21617 => {
            ErrorClass::PermanentRecipient
        }
        // Us: authentication (20003), account not active (10001, 20005), resource not found,
        // i.e. a wrong account SID (20404), invalid 'From' (21212), 'From' not SMS-capable for
        // this account (21606), 'From' not a Twilio number or verified sender (21659), 'From'
        // belongs to another account (21660). Every message fails the same way.
        10001 | 20003 | 20005 | 20404 | 21212 | 21606 | 21659 | 21660 => ErrorClass::ProviderConfig,
        // Throttling: too many requests (20429), the sender's queue is full (21611).
        20429 | 21611 => ErrorClass::RateLimited { retry_after_ms: None },
        // Twilio's own trouble.
        20500 | 20503 => ErrorClass::RETRYABLE,
        _ => return None,
    };
    Some(class)
}

/// The class of an error answer: the code when documented, else the status (`classify_http`,
/// with 404/405 meaning a wrong base URL, which is configuration).
pub(crate) fn classify(status: u16, retry_after_ms: Option<u64>, code: Option<u32>) -> ErrorClass {
    match code.and_then(class_of_code) {
        Some(ErrorClass::RateLimited { .. }) => ErrorClass::RateLimited { retry_after_ms },
        Some(ErrorClass::Retryable { .. }) => ErrorClass::Retryable { retry_after_ms },
        Some(class) => class,
        None => match status {
            404 | 405 => ErrorClass::ProviderConfig,
            _ => classify_http(status, retry_after_ms),
        },
    }
}

/// The outcome of an answer. `known` are literals scrubbed from messages (the recipient's
/// number, the account SID, the token).
pub(crate) fn outcome(
    status: u16,
    retry_after_ms: Option<u64>,
    body: &[u8],
    known: &[&str],
) -> SendOutcome {
    if (200..300).contains(&status) {
        // A 2xx means Twilio created the message. If its body cannot be read (cut short, not
        // JSON) the message still exists; only its SID is lost, and the status callback carries
        // our notification id anyway.
        let provider_message_id =
            serde_json::from_slice::<Created>(body).ok().map(|c| c.sid).filter(|sid| is_sid(sid));
        return SendOutcome::Accepted { provider_message_id, delivered: false };
    }
    let error = serde_json::from_slice::<ErrorBody>(body).ok();
    let code = error.as_ref().and_then(|e| e.code);
    let class = classify(status, retry_after_ms, code);
    let message = match error.as_ref().and_then(|e| e.message.as_deref()) {
        Some(text) => redact::scrub(text, known),
        None => format!("unexpected answer (HTTP {status})"),
    };
    SendOutcome::Failed(ProviderError::new(
        class,
        Some(status),
        code.map(|c| c.to_string()),
        &message,
    ))
}

fn is_sid(sid: &str) -> bool {
    !sid.is_empty() && sid.len() <= SID_BYTES_MAX && sid.bytes().all(|b| b.is_ascii_alphanumeric())
}
