//! Apple Push Notification service: how its answers classify into the error taxonomy.
//!
//! The sending half (HTTP/2, token-based authentication) arrives with the push channel; the
//! classification comes first so retries, token removal and the breaker already agree on what
//! each documented answer means.
//!
//! Source: developer.apple.com, "Handling notification responses from APNs". An error answer is a
//! status with a JSON body naming the `reason` (a 410 adds the `timestamp` since when the token
//! has been invalid): `{"reason": "BadDeviceToken"}`.

use serde::Deserialize;
use steps::outcome::{ErrorClass, classify_http};

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    reason: Option<String>,
}

/// The APNs `reason` of an error answer, if it names one.
pub fn reason(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Answer>(body).ok()?.reason
}

/// Classifies an APNs error answer by its `reason`, falling back to the HTTP status.
pub fn classify(status: u16, retry_after_ms: Option<u64>, body: &[u8]) -> ErrorClass {
    match reason(body).as_deref() {
        // The token is dead or was never good for this app: remove it.
        Some("BadDeviceToken" | "Unregistered" | "ExpiredToken" | "DeviceTokenNotForTopic") => {
            ErrorClass::TokenInvalid
        }
        // Our certificate, signing key, topic or environment: every message fails the same way.
        Some(
            "BadCertificate"
            | "BadCertificateEnvironment"
            | "ExpiredProviderToken"
            | "Forbidden"
            | "InvalidProviderToken"
            | "MissingProviderToken"
            | "UnrelatedKeyIdInToken"
            | "BadEnvironmentKeyIdInToken"
            | "BadTopic"
            | "MissingTopic"
            | "TopicDisallowed"
            | "BadPath"
            | "MethodNotAllowed",
        ) => ErrorClass::ProviderConfig,
        // This message is malformed: it will not get better on retry.
        Some(
            "BadCollapseId" | "BadExpirationDate" | "BadMessageId" | "BadPriority"
            | "DuplicateHeaders" | "InvalidPushType" | "MissingDeviceToken" | "PayloadEmpty"
            | "PayloadTooLarge",
        ) => ErrorClass::PermanentRecipient,
        Some("TooManyRequests" | "TooManyProviderTokenUpdates") => {
            ErrorClass::RateLimited { retry_after_ms }
        }
        Some("InternalServerError" | "ServiceUnavailable" | "Shutdown" | "IdleTimeout") => {
            ErrorClass::Retryable { retry_after_ms }
        }
        _ => match status {
            410 => ErrorClass::TokenInvalid,
            _ => classify_http(status, retry_after_ms),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_reasons_classify() {
        let cases = [
            (400, "BadDeviceToken", ErrorClass::TokenInvalid),
            (400, "DeviceTokenNotForTopic", ErrorClass::TokenInvalid),
            (410, "Unregistered", ErrorClass::TokenInvalid),
            (410, "ExpiredToken", ErrorClass::TokenInvalid),
            (400, "TopicDisallowed", ErrorClass::ProviderConfig),
            (403, "InvalidProviderToken", ErrorClass::ProviderConfig),
            (403, "ExpiredProviderToken", ErrorClass::ProviderConfig),
            (403, "BadCertificateEnvironment", ErrorClass::ProviderConfig),
            (400, "BadPriority", ErrorClass::PermanentRecipient),
            (413, "PayloadTooLarge", ErrorClass::PermanentRecipient),
            (429, "TooManyRequests", ErrorClass::RateLimited { retry_after_ms: Some(1_000) }),
            (500, "InternalServerError", ErrorClass::Retryable { retry_after_ms: Some(1_000) }),
            (503, "ServiceUnavailable", ErrorClass::Retryable { retry_after_ms: Some(1_000) }),
            (503, "Shutdown", ErrorClass::Retryable { retry_after_ms: Some(1_000) }),
        ];
        for (status, reason_name, class) in cases {
            let body = serde_json::json!({"reason": reason_name}).to_string();
            assert_eq!(classify(status, Some(1_000), body.as_bytes()), class, "{reason_name}");
            assert_eq!(reason(body.as_bytes()).as_deref(), Some(reason_name));
        }
        let gone = br#"{"reason": "Unregistered", "timestamp": 1700000000000}"#;
        assert_eq!(classify(410, None, gone), ErrorClass::TokenInvalid);
    }

    #[test]
    fn unknown_reasons_classify_by_status() {
        assert_eq!(classify(410, None, b""), ErrorClass::TokenInvalid);
        assert_eq!(classify(503, None, br#"{"reason": "SomethingNew"}"#), ErrorClass::RETRYABLE);
        assert_eq!(classify(403, None, b"{}"), ErrorClass::ProviderConfig);
    }
}
