//! APNs's answers and their classification.
//!
//! Success is `200` with the message's `apns-id` header (ours, echoed).
//!
//! Source: developer.apple.com, "Handling notification responses from APNs". An error answer is a
//! status with a JSON body naming the `reason` (a 410 adds the `timestamp` since when the token
//! has been invalid): `{"reason": "BadDeviceToken"}`.

use serde::Deserialize;
use steps::outcome::{ErrorClass, ProviderError, SendOutcome, classify_http};

/// Longest `apns-id` kept, in bytes (a UUID is 36).
const APNS_ID_BYTES_MAX: usize = 64;

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

/// The outcome of an answer. APNs's reasons are fixed names, never echoing the token, so the
/// message is the reason itself.
pub(crate) fn outcome(
    status: u16,
    apns_id: Option<&str>,
    retry_after_ms: Option<u64>,
    body: &[u8],
) -> SendOutcome {
    if status == 200 {
        let id = apns_id.filter(|id| !id.is_empty() && id.len() <= APNS_ID_BYTES_MAX);
        return SendOutcome::Accepted {
            provider_message_id: id.map(str::to_owned),
            delivered: false,
        };
    }
    let class = classify(status, retry_after_ms, body);
    let reason =
        reason(body).filter(|r| r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric()));
    let message = reason.clone().unwrap_or_else(|| format!("unexpected answer (HTTP {status})"));
    SendOutcome::Failed(ProviderError::new(class, Some(status), reason, &message))
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

    #[test]
    fn success_carries_the_apns_id_and_errors_their_reason() {
        let id = "6f1d3c2a-0b7e-8a4d-9c1f-2e3d4c5b6a79";
        assert_eq!(
            outcome(200, Some(id), None, b""),
            SendOutcome::Accepted { provider_message_id: Some(id.into()), delivered: false }
        );
        let SendOutcome::Failed(e) =
            outcome(410, None, None, br#"{"reason":"Unregistered","timestamp":1}"#)
        else {
            panic!("failure")
        };
        assert_eq!((e.class, e.code.as_deref()), (ErrorClass::TokenInvalid, Some("Unregistered")));
        assert_eq!(e.message, "Unregistered");
    }
}
