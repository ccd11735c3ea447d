//! FCM's answers and their classification: `messages:send` and the OAuth2 token endpoint.
//!
//! Success is `200` with the message's resource name: `{"name": "projects/p/messages/0:17..."}`.
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
use steps::outcome::{ErrorClass, ProviderError, SendOutcome, classify_http};

use crate::redact;

/// Longest message name kept, in bytes (FCM's are about 60).
const NAME_BYTES_MAX: usize = 256;

/// A `messages:send` success answer.
#[derive(Debug, Deserialize)]
struct Sent {
    name: String,
}

/// The OAuth2 token endpoint's success answer.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenAnswer {
    /// The access token, sent as `Authorization: Bearer`.
    pub access_token: String,
    /// Its lifetime in seconds (3599 from Google).
    pub expires_in: u64,
}

/// The OAuth2 token endpoint's error answer (RFC 6749 §5.2).
#[derive(Debug, Deserialize)]
struct TokenError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

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

/// The outcome of a `messages:send` answer. `known` are literals scrubbed from messages (the
/// device token, the access token).
pub(crate) fn outcome(
    status: u16,
    retry_after_ms: Option<u64>,
    body: &[u8],
    known: &[&str],
) -> SendOutcome {
    if (200..300).contains(&status) {
        let name = serde_json::from_slice::<Sent>(body)
            .ok()
            .map(|s| s.name)
            .filter(|n| !n.is_empty() && n.len() <= NAME_BYTES_MAX);
        return SendOutcome::Accepted { provider_message_id: name, delivered: false };
    }
    let class = classify(status, retry_after_ms, body);
    let answer: Option<Answer> = serde_json::from_slice(body).ok();
    let message = match &answer {
        Some(a) if !a.error.message.is_empty() => redact::scrub(&a.error.message, known),
        _ => format!("unexpected answer (HTTP {status})"),
    };
    SendOutcome::Failed(ProviderError::new(class, Some(status), error_code(body), &message))
}

/// Reads the token endpoint's answer: the token, or the classified failure. A failure here means
/// no message was sent, so nothing is unknown: a token endpoint that is down is retryable, a
/// refused assertion (`invalid_grant`, a bad key or clock) is our configuration.
pub(crate) fn token_outcome(
    status: u16,
    retry_after_ms: Option<u64>,
    body: &[u8],
) -> Result<TokenAnswer, ProviderError> {
    if (200..300).contains(&status) {
        return serde_json::from_slice::<TokenAnswer>(body).map_err(|_| {
            ProviderError::new(
                ErrorClass::RETRYABLE,
                Some(status),
                None,
                "the token endpoint answered without an access token",
            )
        });
    }
    let error = serde_json::from_slice::<TokenError>(body).ok();
    let class = match status {
        400 | 401 | 403 => ErrorClass::ProviderConfig,
        429 => ErrorClass::RateLimited { retry_after_ms },
        _ => match classify_http(status, retry_after_ms) {
            ErrorClass::Unknown => ErrorClass::RETRYABLE,
            class => class,
        },
    };
    let message = match &error {
        Some(e) => {
            let text = e.error_description.as_deref().unwrap_or("");
            redact::scrub(format!("token endpoint: {} {text}", e.error).trim_end(), &[])
        }
        None => format!("token endpoint: unexpected answer (HTTP {status})"),
    };
    Err(ProviderError::new(class, Some(status), error.map(|e| e.error), &message))
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

    #[test]
    fn success_carries_the_message_name_and_errors_their_code() {
        let ok = br#"{"name": "projects/courant-test/messages/0:1700000000000000%abc"}"#;
        assert_eq!(
            outcome(200, None, ok, &[]),
            SendOutcome::Accepted {
                provider_message_id: Some(
                    "projects/courant-test/messages/0:1700000000000000%abc".into()
                ),
                delivered: false
            }
        );
        let body = answer(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.");
        let SendOutcome::Failed(e) = outcome(404, None, &body, &[]) else { panic!("failure") };
        assert_eq!(e.class, ErrorClass::TokenInvalid);
        assert_eq!(e.code.as_deref(), Some("UNREGISTERED"));
        let body = answer(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "token tok-secret is bad");
        let SendOutcome::Failed(e) = outcome(400, None, &body, &["tok-secret"]) else {
            panic!("failure")
        };
        assert!(!e.message.contains("tok-secret"), "{}", e.message);
    }

    #[test]
    fn token_endpoint_answers_classify() {
        let token = token_outcome(
            200,
            None,
            br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#,
        )
        .expect("token");
        assert_eq!((token.access_token.as_str(), token.expires_in), ("ya29.x", 3599));
        let cases = [
            (
                400,
                r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
                ErrorClass::ProviderConfig,
            ),
            (
                401,
                r#"{"error":"invalid_client","error_description":"The OAuth client was not found."}"#,
                ErrorClass::ProviderConfig,
            ),
            (
                429,
                r#"{"error":"rate_limit_exceeded"}"#,
                ErrorClass::RateLimited { retry_after_ms: Some(2_000) },
            ),
            (503, "", ErrorClass::Retryable { retry_after_ms: Some(2_000) }),
            (200, "{}", ErrorClass::RETRYABLE),
        ];
        for (status, body, class) in cases {
            let error = token_outcome(status, Some(2_000), body.as_bytes()).expect_err("error");
            assert_eq!(error.class, class, "{status} {body}");
        }
    }
}
