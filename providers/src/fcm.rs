//! Firebase Cloud Messaging (HTTP v1): how its answers classify into the error taxonomy.
//!
//! The sending half (OAuth2 service-account tokens, the `messages:send` request) arrives with
//! the push channel; the classification comes first so retries, token removal and the breaker
//! already agree on what each documented answer means.
//!
//! Source: firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode. An error answer is a Google
//! API error whose `details` carry an `FcmError` with the `errorCode`:
//!
//! ```json
//! {"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
//!   "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
//!                "errorCode": "UNREGISTERED"}]}}
//! ```

use serde::Deserialize;
use steps::outcome::{ErrorClass, classify_http};

#[derive(Debug, Deserialize)]
struct Answer {
    error: Body,
}

#[derive(Debug, Deserialize)]
struct Body {
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<Detail>,
}

#[derive(Debug, Deserialize)]
struct Detail {
    #[serde(rename = "errorCode", default)]
    error_code: Option<String>,
}

/// The FCM `errorCode` of an error answer, if it has one.
pub fn error_code(body: &[u8]) -> Option<String> {
    let answer: Answer = serde_json::from_slice(body).ok()?;
    answer.error.details.into_iter().find_map(|d| d.error_code)
}

/// Classifies an FCM error answer by its `errorCode`, falling back to the HTTP status.
pub fn classify(status: u16, retry_after_ms: Option<u64>, body: &[u8]) -> ErrorClass {
    let answer: Option<Answer> = serde_json::from_slice(body).ok();
    let code =
        answer.as_ref().and_then(|a| a.error.details.iter().find_map(|d| d.error_code.clone()));
    let message = answer.as_ref().map_or("", |a| a.error.message.as_str());
    match code.as_deref() {
        // The token is dead (app uninstalled, token expired): remove it.
        Some("UNREGISTERED") => ErrorClass::TokenInvalid,
        // A malformed token is as dead as an expired one; anything else malformed is this
        // message's fault and will not get better on retry.
        Some("INVALID_ARGUMENT") if message.contains("registration token") => {
            ErrorClass::TokenInvalid
        }
        Some("INVALID_ARGUMENT") => ErrorClass::PermanentRecipient,
        // Our credentials or sender: every message fails the same way.
        Some("SENDER_ID_MISMATCH" | "THIRD_PARTY_AUTH_ERROR") => ErrorClass::ProviderConfig,
        Some("QUOTA_EXCEEDED") => ErrorClass::RateLimited { retry_after_ms },
        Some("UNAVAILABLE" | "INTERNAL" | "UNSPECIFIED_ERROR") => {
            ErrorClass::Retryable { retry_after_ms }
        }
        _ => classify_http(status, retry_after_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, grpc: &str, code: &str, message: &str) -> Vec<u8> {
        serde_json::json!({"error": {"code": status, "message": message, "status": grpc,
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                         "errorCode": code}]}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn documented_error_codes_classify() {
        let cases = [
            (
                404,
                "NOT_FOUND",
                "UNREGISTERED",
                "Requested entity was not found.",
                ErrorClass::TokenInvalid,
            ),
            (
                400,
                "INVALID_ARGUMENT",
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                ErrorClass::TokenInvalid,
            ),
            (
                400,
                "INVALID_ARGUMENT",
                "INVALID_ARGUMENT",
                "Invalid value at 'message.android.ttl'",
                ErrorClass::PermanentRecipient,
            ),
            (
                403,
                "PERMISSION_DENIED",
                "SENDER_ID_MISMATCH",
                "SenderId mismatch",
                ErrorClass::ProviderConfig,
            ),
            (
                401,
                "UNAUTHENTICATED",
                "THIRD_PARTY_AUTH_ERROR",
                "Auth error from APNS or Web Push Service",
                ErrorClass::ProviderConfig,
            ),
            (
                429,
                "RESOURCE_EXHAUSTED",
                "QUOTA_EXCEEDED",
                "Quota exceeded",
                ErrorClass::RateLimited { retry_after_ms: Some(5_000) },
            ),
            (
                503,
                "UNAVAILABLE",
                "UNAVAILABLE",
                "The service is currently unavailable.",
                ErrorClass::Retryable { retry_after_ms: Some(5_000) },
            ),
            (
                500,
                "INTERNAL",
                "INTERNAL",
                "Internal error encountered.",
                ErrorClass::Retryable { retry_after_ms: Some(5_000) },
            ),
            (
                500,
                "UNKNOWN",
                "UNSPECIFIED_ERROR",
                "",
                ErrorClass::Retryable { retry_after_ms: Some(5_000) },
            ),
        ];
        for (status, grpc, code, message, class) in cases {
            let body = answer(status, grpc, code, message);
            assert_eq!(classify(status, Some(5_000), &body), class, "{code}: {message}");
            assert_eq!(error_code(&body).as_deref(), Some(code));
        }
    }

    #[test]
    fn answers_without_an_fcm_code_classify_by_status() {
        let bare = br#"{"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}"#;
        assert_eq!(classify(401, None, bare), ErrorClass::ProviderConfig);
        assert_eq!(error_code(bare), None);
        assert_eq!(classify(502, None, b"<html>Bad Gateway</html>"), ErrorClass::RETRYABLE);
    }
}
