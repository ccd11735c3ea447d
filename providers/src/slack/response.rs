//! Slack's answers and their classification.
//!
//! An incoming webhook answers `200` with the body `ok`, or an HTTP error whose plain-text body
//! is one error token (api.slack.com/messaging/webhooks, "Handling errors"): `400`
//! `invalid_payload`, `no_text`, `too_many_attachments`, `user_not_found`, `no_service_id`,
//! `no_team`; `403` `action_prohibited`, `invalid_token`, `posting_to_general_channel_denied`,
//! `team_disabled`; `404` `channel_not_found`, `no_service`; `410` `channel_is_archived`; `429`
//! with `Retry-After`; `500` `rollup_error`.

use steps::outcome::{ErrorClass, ProviderError, SendOutcome, classify_http};

/// Longest error token kept, in bytes (Slack's are short snake_case words).
const TOKEN_BYTES_MAX: usize = 64;

/// The class of a documented error token, when it decides the class by itself.
pub(crate) fn class_of_error(token: &str) -> Option<ErrorClass> {
    let class = match token {
        // This message: malformed or empty.
        "invalid_payload" | "no_text" | "too_many_attachments" => ErrorClass::PermanentRecipient,
        // The webhook itself: revoked or wrong token, app removed, workspace gone or disabled,
        // channel deleted or archived, posting there forbidden. Every message fails the same way.
        "invalid_token"
        | "action_prohibited"
        | "posting_to_general_channel_denied"
        | "team_disabled"
        | "no_service"
        | "no_service_id"
        | "no_team"
        | "channel_not_found"
        | "channel_is_archived"
        | "user_not_found" => ErrorClass::ProviderConfig,
        // Slack's own trouble.
        "rollup_error" => ErrorClass::RETRYABLE,
        _ => return None,
    };
    Some(class)
}

/// The class of an error answer: the token when documented, else the status, where the webhook
/// URL being the provider's makes 404 and 410 configuration.
pub(crate) fn classify(
    status: u16,
    retry_after_ms: Option<u64>,
    token: Option<&str>,
) -> ErrorClass {
    if status == 429 {
        return ErrorClass::RateLimited { retry_after_ms };
    }
    match token.and_then(class_of_error) {
        Some(ErrorClass::Retryable { .. }) => ErrorClass::Retryable { retry_after_ms },
        Some(class) => class,
        None => match status {
            300..=399 | 404 | 405 | 410 => ErrorClass::ProviderConfig,
            _ => classify_http(status, retry_after_ms),
        },
    }
}

/// The error token of a body, when it is one short snake_case word.
fn token(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?.trim();
    let ok = !text.is_empty()
        && text.len() <= TOKEN_BYTES_MAX
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    ok.then_some(text)
}

/// The outcome of an answer.
pub(crate) fn outcome(status: u16, retry_after_ms: Option<u64>, body: &[u8]) -> SendOutcome {
    if (200..300).contains(&status) {
        // `ok`: posted to the channel, which is delivery; there is no later receipt.
        return SendOutcome::Accepted { provider_message_id: None, delivered: true };
    }
    let token = token(body);
    let class = classify(status, retry_after_ms, token);
    let message = match token {
        Some(token) => format!("Slack answered HTTP {status}: {token}"),
        None => format!("Slack answered HTTP {status}"),
    };
    SendOutcome::Failed(ProviderError::new(class, Some(status), token.map(str::to_owned), &message))
}
