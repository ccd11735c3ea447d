//! What a provider call came to, and the error taxonomy every provider classifies into.
//!
//! Each provider module classifies its own answers once (status code, error code, body) into an
//! [`ErrorClass`]; everything downstream (retry, failover, fallback, token removal, reconciling)
//! only looks at the class.

use serde::{Deserialize, Serialize};

/// The class of a provider failure (DESIGN.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "class")]
pub enum ErrorClass {
    /// Worth retrying later (5xx, 408, connection refused before the request was written); a
    /// `Retry-After` that came with it (a 503 during maintenance) is honoured: never earlier.
    Retryable {
        /// The provider's `Retry-After`, in milliseconds, when it sent a usable one.
        retry_after_ms: Option<u64>,
    },
    /// The provider is throttling us; never retry before `retry_after_ms`.
    RateLimited {
        /// The provider's `Retry-After`, in milliseconds, when it sent a usable one.
        retry_after_ms: Option<u64>,
    },
    /// The device token is dead: remove it and move on.
    TokenInvalid,
    /// The recipient can never get this on this channel (bad number, hard bounce): fall back.
    PermanentRecipient,
    /// Our credentials or configuration are wrong: open the breaker, fail over, alert.
    ProviderConfig,
    /// The request was written but no answer came: the message may or may not have been sent.
    Unknown,
    /// Our circuit breaker for the provider is open: nothing was sent, no attempt was used. Try
    /// another provider, or this one after `retry_after_ms`.
    CircuitOpen {
        /// When the breaker lets a probe through again, in ms from now, when known.
        retry_after_ms: Option<u64>,
    },
}

impl ErrorClass {
    /// A retryable failure without a `Retry-After`.
    pub const RETRYABLE: ErrorClass = ErrorClass::Retryable { retry_after_ms: None };

    /// The provider's `Retry-After`, in ms from now, when the class carries one.
    pub fn retry_after_ms(self) -> Option<u64> {
        match self {
            ErrorClass::Retryable { retry_after_ms }
            | ErrorClass::RateLimited { retry_after_ms }
            | ErrorClass::CircuitOpen { retry_after_ms } => retry_after_ms,
            _ => None,
        }
    }

    /// Whether a later attempt on the same provider can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Retryable { .. } | ErrorClass::RateLimited { .. })
    }

    /// A short name for tables and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Retryable { .. } => "retryable",
            ErrorClass::RateLimited { .. } => "rate_limited",
            ErrorClass::TokenInvalid => "token_invalid",
            ErrorClass::PermanentRecipient => "permanent_recipient",
            ErrorClass::ProviderConfig => "provider_config",
            ErrorClass::Unknown => "unknown",
            ErrorClass::CircuitOpen { .. } => "circuit_open",
        }
    }
}

/// A classified provider failure. `message` and `code` come from the provider's answer and never
/// carry the recipient's address or our credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderError {
    /// The class.
    #[serde(flatten)]
    pub class: ErrorClass,
    /// The HTTP status, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The provider's own error code (Twilio `21211`, FCM `UNREGISTERED`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// A human explanation, truncated.
    pub message: String,
}

/// Longest provider error message kept, in bytes.
pub const PROVIDER_MESSAGE_BYTES_MAX: usize = 512;

impl ProviderError {
    /// Builds an error, truncating the message at a character boundary.
    pub fn new(
        class: ErrorClass,
        status: Option<u16>,
        code: Option<String>,
        message: &str,
    ) -> Self {
        let mut end = message.len().min(PROVIDER_MESSAGE_BYTES_MAX);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        Self { class, status, code, message: message[..end].to_owned() }
    }
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.class.name())?;
        if let Some(status) = self.status {
            write!(f, " (HTTP {status}")?;
            if let Some(code) = &self.code {
                write!(f, ", code {code}")?;
            }
            write!(f, ")")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The generic HTTP classification (vector's rule): 429 is rate-limited, 408 and 5xx are
/// retryable, 401/403 are configuration, other 4xx are permanent for this recipient. Providers
/// refine it with their own codes.
pub fn classify_http(status: u16, retry_after_ms: Option<u64>) -> ErrorClass {
    match status {
        429 => ErrorClass::RateLimited { retry_after_ms },
        408 | 500..=599 => ErrorClass::Retryable { retry_after_ms },
        401 | 403 => ErrorClass::ProviderConfig,
        _ => ErrorClass::PermanentRecipient,
    }
}

/// Parses an HTTP `Retry-After` given in seconds. Dates and junk give `None` (the policy delay
/// applies); absurd values are capped at a day so a broken header cannot park a message forever.
pub fn parse_retry_after_secs(value: &str) -> Option<u64> {
    let secs: u64 = value.trim().parse().ok()?;
    Some(secs.min(86_400) * 1_000)
}

/// What a provider call came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum SendOutcome {
    /// The provider took the message.
    Accepted {
        /// The provider's id for the message (for receipts and support tickets).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider_message_id: Option<String>,
        /// Whether acceptance is delivery (the in-app inbox) rather than a hand-over.
        delivered: bool,
    },
    /// The provider refused, or the call failed.
    Failed(ProviderError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_classes() {
        assert_eq!(
            classify_http(429, Some(5)),
            ErrorClass::RateLimited { retry_after_ms: Some(5) }
        );
        assert_eq!(classify_http(503, None), ErrorClass::RETRYABLE);
        assert_eq!(classify_http(408, None), ErrorClass::RETRYABLE);
        // A 503 during maintenance may say when to come back.
        assert_eq!(
            classify_http(503, Some(120_000)),
            ErrorClass::Retryable { retry_after_ms: Some(120_000) }
        );
        assert_eq!(classify_http(401, None), ErrorClass::ProviderConfig);
        assert_eq!(classify_http(400, None), ErrorClass::PermanentRecipient);
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after_secs("30"), Some(30_000));
        assert_eq!(parse_retry_after_secs("0"), Some(0));
        assert_eq!(parse_retry_after_secs("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after_secs("-1"), None);
        assert_eq!(parse_retry_after_secs("999999999"), Some(86_400_000));
    }

    #[test]
    fn messages_are_truncated_on_char_boundaries() {
        let long = "é".repeat(600);
        let e = ProviderError::new(ErrorClass::RETRYABLE, None, None, &long);
        assert!(e.message.len() <= PROVIDER_MESSAGE_BYTES_MAX);
    }
}
