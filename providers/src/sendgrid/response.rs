//! SendGrid's answers and their classification.
//!
//! Success is `202 Accepted` with the message id in `X-Message-Id` (a hand-over, not a delivery:
//! delivery comes later through the Event Webhook). Errors carry
//! `{"errors":[{"message","field","help"}]}`; SendGrid has no error codes, so the class comes from
//! the status and, for a 400, from the fields named.

use serde::Deserialize;
use steps::outcome::{ErrorClass, ProviderError, SendOutcome, classify_http};

use crate::redact;

/// The most error entries read from one answer (SendGrid lists one per invalid field).
const ERRORS_MAX: usize = 8;

/// Longest message id kept, in bytes (SendGrid's are 22 characters).
const MESSAGE_ID_BYTES_MAX: usize = 128;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct ErrorBody {
    /// The errors, one per problem.
    #[serde(default)]
    pub errors: Vec<ErrorItem>,
}

/// One error entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct ErrorItem {
    /// What is wrong.
    #[serde(default)]
    pub message: Option<String>,
    /// The JSON path of the offending field (`personalizations.0.to.0.email`), `null` for the
    /// request as a whole.
    #[serde(default)]
    pub field: Option<String>,
}

/// The outcome of an answer. `known` are literals scrubbed from messages (the recipient's
/// address, the key).
pub(crate) fn outcome(
    status: u16,
    message_id: Option<&str>,
    retry_after_ms: Option<u64>,
    body: &[u8],
    known: &[&str],
) -> SendOutcome {
    if (200..300).contains(&status) {
        let provider_message_id = message_id
            .filter(|id| !id.is_empty() && id.len() <= MESSAGE_ID_BYTES_MAX)
            .map(str::to_owned);
        return SendOutcome::Accepted { provider_message_id, delivered: false };
    }
    let errors = serde_json::from_slice::<ErrorBody>(body).map(|b| b.errors).unwrap_or_default();
    let errors = &errors[..errors.len().min(ERRORS_MAX)];
    let class = classify(status, retry_after_ms, errors);
    let message = if errors.is_empty() {
        format!("unexpected answer (HTTP {status})")
    } else {
        let parts: Vec<String> = errors
            .iter()
            .map(|e| {
                let text = e.message.as_deref().unwrap_or("no message");
                match &e.field {
                    Some(field) => format!("{field}: {text}"),
                    None => text.to_owned(),
                }
            })
            .collect();
        redact::scrub(&parts.join("; "), known)
    };
    SendOutcome::Failed(ProviderError::new(class, Some(status), None, &message))
}

/// The class of an error answer.
///
/// - 429: rate-limited, honouring the delay.
/// - 401/403: configuration (bad or under-privileged key, unverified sender, credits exhausted).
/// - 400: configuration when a sender field or the request as a whole is wrong (that fails every
///   message alike); otherwise this message or recipient is the problem, and it is permanent.
/// - 413: this message is too large: permanent for it.
/// - 404/405: the base URL is wrong: configuration.
/// - 408, 5xx: retryable.
pub(crate) fn classify(
    status: u16,
    retry_after_ms: Option<u64>,
    errors: &[ErrorItem],
) -> ErrorClass {
    match status {
        400 => {
            let systemic = errors.iter().any(|e| match e.field.as_deref() {
                None => true,
                Some(field) => {
                    field == "from" || field.starts_with("from.") || field.starts_with("reply_to")
                }
            });
            if systemic { ErrorClass::ProviderConfig } else { ErrorClass::PermanentRecipient }
        }
        413 => ErrorClass::PermanentRecipient,
        404 | 405 => ErrorClass::ProviderConfig,
        _ => classify_http(status, retry_after_ms),
    }
}

/// The delay until `X-RateLimit-Reset` (a Unix time in seconds), SendGrid's own way of saying
/// when to come back, for answers without `Retry-After`. Capped at a day like `Retry-After`.
pub(crate) fn retry_after_from_reset(reset: &str, now_ms: u64) -> Option<u64> {
    let reset_ms = reset.trim().parse::<u64>().ok()?.checked_mul(1_000)?;
    Some(reset_ms.saturating_sub(now_ms).min(86_400_000))
}
