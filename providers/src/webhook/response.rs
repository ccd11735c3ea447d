//! The receiver's answers and their classification.
//!
//! Any 2xx means the receiver took the message, which for a webhook is delivery: there is no
//! later receipt. The rest follows the Standard Webhooks guidance and the generic HTTP rule,
//! with one difference: the URL belongs to the provider, not to the recipient, so an answer that
//! says the endpoint itself is wrong (401, 403, 404, 410 Gone, a redirect) is configuration and
//! fails over, while one that refuses this payload (400, 413, 422) is this message's.

use steps::outcome::{ErrorClass, ProviderError, SendOutcome, classify_http};

use crate::redact;

/// Longest excerpt of a receiver's error body kept, in bytes.
const EXCERPT_BYTES_MAX: usize = 200;

/// The class of a non-2xx answer.
pub(crate) fn classify(status: u16, retry_after_ms: Option<u64>) -> ErrorClass {
    match status {
        // Redirects are not followed (credentials and payload would go elsewhere); unauthorized,
        // forbidden, not found, method not allowed, gone: the endpoint is wrong for every message.
        300..=399 | 401 | 403 | 404 | 405 | 410 => ErrorClass::ProviderConfig,
        _ => classify_http(status, retry_after_ms),
    }
}

/// The outcome of an answer. `known` are literals scrubbed from messages.
pub(crate) fn outcome(
    status: u16,
    retry_after_ms: Option<u64>,
    body: &[u8],
    known: &[&str],
) -> SendOutcome {
    if (200..300).contains(&status) {
        return SendOutcome::Accepted { provider_message_id: None, delivered: true };
    }
    let class = classify(status, retry_after_ms);
    let excerpt = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_BYTES_MAX)]);
    let excerpt = excerpt.trim();
    let message = if excerpt.is_empty() || excerpt.starts_with('<') {
        // Nothing, or a proxy's HTML page: the status says it all.
        format!("the endpoint answered HTTP {status}")
    } else {
        format!("the endpoint answered HTTP {status}: {}", redact::scrub(excerpt, known))
    };
    SendOutcome::Failed(ProviderError::new(class, Some(status), None, &message))
}
