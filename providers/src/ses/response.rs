//! SES v2's answers and their classification.
//!
//! Success is `200 OK` with `{"MessageId": "..."}` (a hand-over, not a delivery: delivery comes
//! later as an event of the configuration set). Errors follow AWS's REST-JSON protocol: the error
//! type in the `x-amzn-ErrorType` header (`MessageRejected:http://internal.amazon.com/...`) and
//! usually also in the body's `__type` (`com.amazonaws.sesv2#MessageRejected`), with a
//! human-readable `message`. The class comes from the type; an answer without one (a proxy's
//! page) is classified by status.

use serde::Deserialize;
use steps::outcome::{ErrorClass, ProviderError, SendOutcome, classify_http};

use crate::redact;

/// Longest message id kept, in bytes (SES's are about 60 characters).
const MESSAGE_ID_BYTES_MAX: usize = 128;

/// Longest error type kept, in bytes (the longest documented one has 34 characters).
const ERROR_TYPE_BYTES_MAX: usize = 64;

/// The success answer.
#[derive(Debug, Deserialize)]
struct Accepted {
    #[serde(rename = "MessageId", default)]
    message_id: Option<String>,
}

/// An error answer's body. AWS spells the message field both ways across services.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(rename = "__type", default)]
    kind: Option<String>,
    #[serde(default, alias = "Message")]
    message: Option<String>,
}

/// The outcome of an answer. `error_type` is the `x-amzn-ErrorType` header; `from` is the
/// configured sender, which tells a refused sender from a refused recipient; `known` are literals
/// scrubbed from messages (the recipient's address, the access key id).
pub(crate) fn outcome(
    status: u16,
    error_type: Option<&str>,
    retry_after_ms: Option<u64>,
    body: &[u8],
    from: &str,
    known: &[&str],
) -> SendOutcome {
    if (200..300).contains(&status) {
        let provider_message_id = serde_json::from_slice::<Accepted>(body)
            .ok()
            .and_then(|a| a.message_id)
            .filter(|id| !id.is_empty() && id.len() <= MESSAGE_ID_BYTES_MAX);
        return SendOutcome::Accepted { provider_message_id, delivered: false };
    }
    let parsed = serde_json::from_slice::<ErrorBody>(body).unwrap_or_default();
    let kind = error_type
        .or(parsed.kind.as_deref())
        .map(error_type_name)
        .filter(|k| !k.is_empty() && k.len() <= ERROR_TYPE_BYTES_MAX && is_identifier(k));
    let text = parsed.message.as_deref().unwrap_or("");
    let class = classify(status, kind, text, from, retry_after_ms);
    let message = match (kind, text.is_empty()) {
        (Some(kind), false) => redact::scrub(&format!("{kind}: {text}"), known),
        (Some(kind), true) => kind.to_owned(),
        (None, false) => redact::scrub(text, known),
        (None, true) => format!("unexpected answer (HTTP {status})"),
    };
    SendOutcome::Failed(ProviderError::new(class, Some(status), kind.map(str::to_owned), &message))
}

/// The bare type name of `x-amzn-ErrorType` (`Name:uri`) or `__type` (`namespace#Name`).
fn error_type_name(raw: &str) -> &str {
    let name = raw.split(':').next().unwrap_or(raw);
    name.rsplit('#').next().unwrap_or(name).trim()
}

fn is_identifier(value: &str) -> bool {
    value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// The class of an error answer.
///
/// - `MessageRejected` (400): this message was refused (content, a recipient SES will not send
///   to). When the text names our sender instead (an unverified sender identity, "Email address
///   is not verified" quoting the `from`), every message would fail alike: configuration.
/// - `MailFromDomainNotVerifiedException`, `AccountSuspendedException`, `SendingPausedException`
///   (400) and `NotFoundException` (404, e.g. the configuration set does not exist): the account
///   or its setup, the same for every message: configuration.
/// - `BadRequestException` (400): the input is invalid. When it names the sender, the
///   configuration set or the tags, that is our setup (configuration); otherwise this message
///   (an address SES cannot parse): permanent.
/// - `TooManyRequestsException` (429), `ThrottlingException`/`Throttling`: rate-limited.
///   `LimitExceededException` (400) is the account's sending quota running out: rate-limited too,
///   with no delay known (the quota is a rolling 24 hours).
/// - `InternalFailure`, `InternalServiceErrorException`, `ServiceUnavailable` (500/503):
///   retryable.
/// - The signature and credential errors (`UnrecognizedClientException`,
///   `InvalidSignatureException`, `SignatureDoesNotMatch`, `IncompleteSignature`,
///   `InvalidClientTokenId`, `MissingAuthenticationToken`, `AccessDenied(Exception)`,
///   `NotAuthorized`, `OptInRequired`, `ExpiredToken(Exception)`, `RequestExpired`):
///   configuration. `RequestExpired` is our clock being off by more than five minutes.
/// - Anything else by status: 404/405 configuration (the base URL is wrong), otherwise as
///   [`classify_http`].
pub(crate) fn classify(
    status: u16,
    kind: Option<&str>,
    text: &str,
    from: &str,
    retry_after_ms: Option<u64>,
) -> ErrorClass {
    let names_sender =
        !from.is_empty() && text.to_ascii_lowercase().contains(&from.to_ascii_lowercase());
    match kind {
        Some("MessageRejected") if names_sender => ErrorClass::ProviderConfig,
        Some("MessageRejected") => ErrorClass::PermanentRecipient,
        Some(
            "MailFromDomainNotVerifiedException"
            | "AccountSuspendedException"
            | "SendingPausedException"
            | "NotFoundException",
        ) => ErrorClass::ProviderConfig,
        Some("BadRequestException" | "ValidationError" | "ValidationException") => {
            let lower = text.to_ascii_lowercase();
            let systemic = names_sender
                || ["fromemailaddress", "configurationset", "tag"]
                    .iter()
                    .any(|f| lower.contains(f));
            if systemic { ErrorClass::ProviderConfig } else { ErrorClass::PermanentRecipient }
        }
        Some("TooManyRequestsException" | "ThrottlingException" | "Throttling") => {
            ErrorClass::RateLimited { retry_after_ms }
        }
        Some("LimitExceededException") => ErrorClass::RateLimited { retry_after_ms },
        Some("InternalFailure" | "InternalServiceErrorException" | "ServiceUnavailable") => {
            ErrorClass::Retryable { retry_after_ms }
        }
        Some(
            "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "InvalidClientTokenId"
            | "MissingAuthenticationToken"
            | "MissingAuthenticationTokenException"
            | "AccessDenied"
            | "AccessDeniedException"
            | "NotAuthorized"
            | "OptInRequired"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "RequestExpired",
        ) => ErrorClass::ProviderConfig,
        _ => match status {
            404 | 405 => ErrorClass::ProviderConfig,
            _ => classify_http(status, retry_after_ms),
        },
    }
}
