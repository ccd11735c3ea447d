//! SES: the wire body, the classification of every documented answer, the config and (with
//! feature `http`) the real signed call against a local server.

use serde_json::{Value, json};
use steps::model::{EmailAddress, ProviderName};
use steps::outcome::{ErrorClass, ProviderError, SendOutcome};
use steps::render::Content;

use super::request::{from_address, send_email};
use super::response::outcome;
use super::*;
use crate::testing::{TO_EMAIL, message};

const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const FROM: &str = "noreply@shop.example";

fn email(html: Option<&str>, text: Option<&str>) -> Content {
    Content::Email {
        subject: "Your order shipped".into(),
        html: html.map(str::to_owned),
        text: text.map(str::to_owned),
    }
}

fn from() -> EmailAddress {
    EmailAddress::parse(FROM).expect("email")
}

fn body_of(content: Content, set: Option<&str>) -> Result<Value, ProviderError> {
    let message = message(content);
    let body = send_email(from_address(&from(), Some("Shop")), set, &message)?;
    Ok(serde_json::to_value(&body).expect("serializes"))
}

#[test]
fn body_follows_the_v2_send_email_format() {
    let body = body_of(email(Some("<p>Shipped</p>"), Some("Shipped")), Some("courant-events"))
        .expect("ok");
    assert_eq!(
        body,
        json!({
            "FromEmailAddress": "\"Shop\" <noreply@shop.example>",
            "Destination": {"ToAddresses": [TO_EMAIL]},
            "Content": {"Simple": {
                "Subject": {"Data": "Your order shipped", "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": "Shipped", "Charset": "UTF-8"},
                    "Html": {"Data": "<p>Shipped</p>", "Charset": "UTF-8"}
                }
            }},
            "EmailTags": [
                {"Name": "notification_id", "Value": "n_01HZX3V4"},
                {"Name": "tenant", "Value": "acme"},
                {"Name": "attempt", "Value": "2"}
            ],
            "ConfigurationSetName": "courant-events"
        })
    );
}

#[test]
fn body_has_only_the_parts_present_and_no_set_when_none() {
    let body = body_of(email(Some("<p>x</p>"), Some("")), None).expect("ok");
    assert_eq!(
        body["Content"]["Simple"]["Body"],
        json!({"Html": {"Data": "<p>x</p>", "Charset": "UTF-8"}})
    );
    assert!(body.get("ConfigurationSetName").is_none(), "{body}");
}

#[test]
fn display_names_are_quoted_or_encoded() {
    assert_eq!(from_address(&from(), None), FROM);
    assert_eq!(
        from_address(&from(), Some("Shop \"A\"")),
        "\"Shop \\\"A\\\"\" <noreply@shop.example>"
    );
    // A long non-ASCII name: several encoded words of at most 75 characters.
    let long = from_address(&from(), Some(&"é".repeat(40)));
    let words: Vec<&str> = long.trim_end_matches(" <noreply@shop.example>").split(' ').collect();
    assert_eq!(words.len(), 2, "{long}");
    assert!(words.iter().all(|w| w.len() <= 75 && w.starts_with("=?UTF-8?B?")), "{long}");
    // "Café": non-ASCII, so an RFC 2047 encoded word.
    assert_eq!(from_address(&from(), Some("Café")), "=?UTF-8?B?Q2Fmw6k=?= <noreply@shop.example>");
}

#[test]
fn unsendable_messages_are_classified() {
    let error = body_of(email(None, Some("")), None).expect_err("no body");
    assert_eq!(error.class, ErrorClass::PermanentRecipient);
    let error = body_of(Content::Sms { body: "hi".into() }, None).expect_err("wrong channel");
    assert_eq!(error.class, ErrorClass::ProviderConfig);
    assert_eq!(error.message, "email provider got sms content");
    let mut no_address = message(email(None, Some("x")));
    no_address.recipient.email = None;
    let error = send_email(FROM.into(), None, &no_address).expect_err("no address");
    assert_eq!(error.class, ErrorClass::PermanentRecipient);
    // SES tags allow letters, digits, '_' and '-' only; our tenant ids may have a '.'.
    let mut dotted = message(email(None, Some("x")));
    dotted.tenant = steps::model::TenantId::new("acme.eu").expect("id");
    let error = send_email(FROM.into(), None, &dotted).expect_err("untaggable");
    assert_eq!(error.class, ErrorClass::ProviderConfig);
}

#[test]
fn accepted_carries_the_message_id() {
    let id = "010701234567abcd-12345678-aaaa-bbbb-cccc-0123456789ab-000000";
    assert_eq!(
        outcome(200, None, None, format!(r#"{{"MessageId":"{id}"}}"#).as_bytes(), FROM, &[]),
        SendOutcome::Accepted { provider_message_id: Some(id.into()), delivered: false }
    );
    assert_eq!(
        outcome(200, None, None, b"{}", FROM, &[]),
        SendOutcome::Accepted { provider_message_id: None, delivered: false }
    );
}

/// Classifies an error answer; panics on success.
fn check(
    status: u16,
    header: Option<&str>,
    retry_after_ms: Option<u64>,
    body: &str,
) -> ProviderError {
    match outcome(status, header, retry_after_ms, body.as_bytes(), FROM, &[TO_EMAIL, KEY_ID]) {
        SendOutcome::Failed(error) => error,
        accepted => panic!("expected a failure, got {accepted:?}"),
    }
}

/// Every error SES v2 documents for SendEmail, and the common AWS errors, as SES sends them:
/// the type in `x-amzn-ErrorType` and a `{"message"}` body.
#[test]
fn documented_errors_are_classified() {
    use ErrorClass::*;
    let limited = RateLimited { retry_after_ms: None };
    let retryable = ErrorClass::RETRYABLE;
    let table: &[(u16, &str, &str, ErrorClass)] = &[
        (
            400,
            "MessageRejected",
            "Email address is not verified. The following identities failed the check in region EU-WEST-1: jane.doe@example.org",
            PermanentRecipient,
        ),
        (
            400,
            "MessageRejected",
            "Email address is not verified. The following identities failed the check in region EU-WEST-1: noreply@shop.example",
            ProviderConfig,
        ),
        (400, "MessageRejected", "Message content too large", PermanentRecipient),
        (
            400,
            "MailFromDomainNotVerifiedException",
            "The MAIL FROM domain is not verified.",
            ProviderConfig,
        ),
        (
            400,
            "AccountSuspendedException",
            "Your account's ability to send email has been permanently restricted.",
            ProviderConfig,
        ),
        (400, "SendingPausedException", "Sending is paused for this account.", ProviderConfig),
        (
            404,
            "NotFoundException",
            "Configuration set <courant-events> does not exist.",
            ProviderConfig,
        ),
        (400, "BadRequestException", "Missing final '@domain'", PermanentRecipient),
        (400, "BadRequestException", "Illegal address", PermanentRecipient),
        (
            400,
            "BadRequestException",
            "Invalid tag value: it contains a character that is not allowed.",
            ProviderConfig,
        ),
        (
            400,
            "BadRequestException",
            "1 validation error detected: Value null at 'fromEmailAddress' failed to satisfy constraint",
            ProviderConfig,
        ),
        (400, "LimitExceededException", "Daily message quota exceeded.", limited),
        (429, "TooManyRequestsException", "Maximum sending rate exceeded.", limited),
        (400, "ThrottlingException", "Rate exceeded", limited),
        (500, "InternalFailure", "", retryable),
        (500, "InternalServiceErrorException", "internal error", retryable),
        (503, "ServiceUnavailable", "", retryable),
        (
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
            ProviderConfig,
        ),
        (
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
            ProviderConfig,
        ),
        (403, "SignatureDoesNotMatch", "", ProviderConfig),
        (403, "IncompleteSignature", "", ProviderConfig),
        (403, "InvalidClientTokenId", "", ProviderConfig),
        (
            403,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
            ProviderConfig,
        ),
        (
            403,
            "AccessDeniedException",
            "User is not authorized to perform: ses:SendEmail",
            ProviderConfig,
        ),
        (403, "AccessDenied", "", ProviderConfig),
        (400, "NotAuthorized", "", ProviderConfig),
        (403, "OptInRequired", "", ProviderConfig),
        (
            403,
            "ExpiredTokenException",
            "The security token included in the request is expired",
            ProviderConfig,
        ),
        (400, "RequestExpired", "Signature expired", ProviderConfig),
    ];
    for (status, kind, text, class) in table {
        let header = format!("{kind}:http://internal.amazon.com/coral/com.amazonaws.sesv2/");
        let body = json!({ "message": text }).to_string();
        let e = check(*status, Some(&header), None, &body);
        assert_eq!(e.class, *class, "{kind}: {text}");
        assert_eq!(e.status, Some(*status));
        assert_eq!(e.code.as_deref(), Some(*kind));
        assert!(!e.message.contains("jane.doe"), "{}", e.message);
        // The same answer with the type in the body only (`__type`), as some front ends send it.
        let body = json!({ "__type": format!("com.amazonaws.sesv2#{kind}"), "message": text });
        let e = check(*status, None, None, &body.to_string());
        assert_eq!(e.class, *class, "__type {kind}");
        assert_eq!(e.code.as_deref(), Some(*kind));
    }
}

#[test]
fn messages_name_the_type_and_are_scrubbed() {
    let e = check(
        400,
        Some("MessageRejected:http://internal.amazon.com/coral/com.amazonaws.sesv2/"),
        None,
        r#"{"message":"Email address is not verified: Jane.Doe@example.org"}"#,
    );
    assert_eq!(e.message, "MessageRejected: Email address is not verified: [redacted]");
    let e = check(403, None, None, r#"{"Message":"key AKIAIOSFODNN7EXAMPLE unknown"}"#);
    assert!(!e.message.contains(KEY_ID), "{}", e.message);
}

#[test]
fn rate_limits_and_outages_honour_retry_after() {
    let e = check(429, Some("TooManyRequestsException"), Some(3_000), "{}");
    assert_eq!(e.class, ErrorClass::RateLimited { retry_after_ms: Some(3_000) });
    let e = check(503, Some("ServiceUnavailable"), Some(30_000), "{}");
    assert_eq!(e.class, ErrorClass::Retryable { retry_after_ms: Some(30_000) });
}

#[test]
fn answers_without_a_type_are_classified_by_status() {
    let e = check(502, None, None, "<html>Bad Gateway</html>");
    assert_eq!(e.class, ErrorClass::RETRYABLE);
    assert_eq!(e.message, "unexpected answer (HTTP 502)");
    assert_eq!(e.code, None);
    assert_eq!(check(404, None, None, "").class, ErrorClass::ProviderConfig);
    assert_eq!(check(403, None, None, "").class, ErrorClass::ProviderConfig);
    // A type that is not an identifier is ignored rather than echoed.
    let e = check(500, Some("<script>"), None, "");
    assert_eq!(e.code, None);
    assert_eq!(e.class, ErrorClass::RETRYABLE);
}

const CONFIG: &str = r#"
base_url = "https://email.eu-west-1.amazonaws.com"
region = "eu-west-1"
access_key_id = "AKIAIOSFODNN7EXAMPLE"
secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
from = "noreply@shop.example"
from_name = "Shop"
configuration_set = "courant-events"
"#;

fn name() -> ProviderName {
    ProviderName::new("ses").expect("id")
}

#[test]
fn config_reads_from_toml_with_defaults() {
    let config: SesConfig = toml::from_str(CONFIG).expect("parses");
    assert_eq!(config.region, "eu-west-1");
    assert_eq!(config.access_key_id.expose(), KEY_ID);
    assert_eq!(config.secret_access_key.expose(), SECRET_KEY);
    assert!(config.session_token.is_none());
    assert_eq!(config.configuration_set.as_deref(), Some("courant-events"));
    assert_eq!(config.timeout_ms, 10_000);
    assert_eq!(config.connect_timeout_ms, 3_000);
    assert!(config.validate(&name()).is_ok());
}

#[test]
fn config_rejects_unknown_fields_and_bad_values() {
    let unknown = format!("{CONFIG}\nregoin = \"x\"\n");
    assert!(toml::from_str::<SesConfig>(&unknown).is_err());
    let cases: [(&str, &str, &str); 5] = [
        ("region = \"eu-west-1\"", "region = \"EU West\"", "region"),
        ("AKIAIOSFODNN7EXAMPLE", "AKIA-short", "access_key_id"),
        ("courant-events", "courant events!", "configuration_set"),
        ("from_name = \"Shop\"", "from_name = \"Shop\\r\\nBcc: x@y.z\"", "from_name"),
        ("https://email.eu-west-1.amazonaws.com", "email.eu-west-1.amazonaws.com", "base_url"),
    ];
    for (from, to, field) in cases {
        let config: SesConfig = toml::from_str(&CONFIG.replace(from, to)).expect("parses");
        let error = config.validate(&name()).expect_err(field);
        assert!(error.to_string().contains(field), "{error}");
    }
}

#[test]
fn config_debug_hides_the_credentials() {
    let mut config: SesConfig = toml::from_str(CONFIG).expect("parses");
    config.session_token = Some(crate::Secret::new("FwoGZXIvYXdzEXAMPLETOKEN").expect("token"));
    let debug = format!("{config:?}");
    for secret in [KEY_ID, SECRET_KEY, "EXAMPLETOKEN", "noreply@"] {
        assert!(!debug.contains(secret), "{debug}");
    }
}

#[cfg(feature = "http")]
mod http {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use workflows::ports::Provider;

    use super::*;
    use crate::testing::{Canned, Captured, capture_server, hanging_server, refused_base_url};

    /// 2026-01-02T03:04:05Z, the fixed signing time.
    fn fixed_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_323_045)
    }

    fn provider(base_url: &str, timeout_ms: u64, token: Option<&str>) -> Ses {
        let mut config: SesConfig = toml::from_str(CONFIG).expect("parses");
        config.base_url = base_url.to_owned();
        config.timeout_ms = timeout_ms;
        config.connect_timeout_ms = timeout_ms.min(1_000);
        config.session_token = token.map(|t| crate::Secret::new(t).expect("token"));
        Ses::new(name(), config).expect("builds").with_clock(fixed_time)
    }

    /// Recomputes the request's signature with `sigv4` (written from AWS's specification, checked
    /// against AWS's published example), independently of the `aws-sigv4` crate that signed it.
    fn expected_signature(request: &Captured, signed_headers: &[&str]) -> String {
        let lookup =
            |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let canonical = sigv4::canonical_request(
            "POST",
            request.uri.path(),
            "",
            signed_headers,
            lookup,
            &request.body,
        )
        .expect("signed headers present");
        let scope = "20260102/eu-west-1/ses/aws4_request";
        let to_sign = sigv4::string_to_sign("20260102T030405Z", scope, &canonical);
        sigv4::signature(SECRET_KEY, "20260102", "eu-west-1", "ses", &to_sign)
    }

    #[tokio::test]
    async fn sends_the_documented_signed_request_and_reads_the_message_id() {
        let id = "0107019a-1234-5678-9abc-def012345678-000000";
        let (base, mut requests) =
            capture_server(Canned::json(200, &format!(r#"{{"MessageId":"{id}"}}"#))).await;
        let ses = provider(&base, 5_000, None);
        let outcome = ses.send(&message(email(Some("<b>hi</b>"), Some("hi")))).await;
        assert_eq!(
            outcome,
            SendOutcome::Accepted { provider_message_id: Some(id.into()), delivered: false }
        );
        let request = requests.recv().await.expect("captured");
        assert_eq!(request.method, "POST");
        assert_eq!(request.uri.path(), "/v2/email/outbound-emails");
        assert_eq!(request.uri.query(), None);
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(request.header("x-amz-date"), "20260102T030405Z");
        assert_eq!(request.header("x-amz-security-token"), "");
        assert_eq!(request.header("host"), base.trim_start_matches("http://"));
        let signed = ["content-type", "host", "x-amz-date"];
        assert_eq!(
            request.header("authorization"),
            format!(
                "AWS4-HMAC-SHA256 Credential={KEY_ID}/20260102/eu-west-1/ses/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, Signature={}",
                expected_signature(&request, &signed)
            )
        );
        let body: Value = serde_json::from_slice(&request.body).expect("json");
        assert_eq!(
            body,
            json!({
                "FromEmailAddress": "\"Shop\" <noreply@shop.example>",
                "Destination": {"ToAddresses": [TO_EMAIL]},
                "Content": {"Simple": {
                    "Subject": {"Data": "Your order shipped", "Charset": "UTF-8"},
                    "Body": {
                        "Text": {"Data": "hi", "Charset": "UTF-8"},
                        "Html": {"Data": "<b>hi</b>", "Charset": "UTF-8"}
                    }
                }},
                "EmailTags": [
                    {"Name": "notification_id", "Value": "n_01HZX3V4"},
                    {"Name": "tenant", "Value": "acme"},
                    {"Name": "attempt", "Value": "2"}
                ],
                "ConfigurationSetName": "courant-events"
            })
        );
    }

    #[tokio::test]
    async fn temporary_credentials_sign_the_session_token() {
        let token = "FwoGZXIvYXdzEXAMPLETOKEN";
        let (base, mut requests) = capture_server(Canned::json(200, r#"{"MessageId":"m"}"#)).await;
        let outcome =
            provider(&base, 5_000, Some(token)).send(&message(email(None, Some("x")))).await;
        assert!(matches!(outcome, SendOutcome::Accepted { .. }), "{outcome:?}");
        let request = requests.recv().await.expect("captured");
        assert_eq!(request.header("x-amz-security-token"), token);
        let signed = ["content-type", "host", "x-amz-date", "x-amz-security-token"];
        let authorization = request.header("authorization");
        assert!(
            authorization
                .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, "),
            "{authorization}"
        );
        assert!(
            authorization
                .ends_with(&format!("Signature={}", expected_signature(&request, &signed))),
            "{authorization}"
        );
    }

    #[tokio::test]
    async fn an_error_answer_is_classified_by_its_type_header() {
        let canned = Canned::json(400, r#"{"message":"Sending is paused for this account."}"#)
            .with(
                "x-amzn-errortype",
                "SendingPausedException:http://internal.amazon.com/coral/com.amazonaws.sesv2/",
            );
        let (base, _requests) = capture_server(canned).await;
        let outcome = provider(&base, 5_000, None).send(&message(email(None, Some("x")))).await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::ProviderConfig);
        assert_eq!(e.code.as_deref(), Some("SendingPausedException"));
        let canned = Canned::json(429, r#"{"message":"Maximum sending rate exceeded."}"#)
            .with("x-amzn-errortype", "TooManyRequestsException")
            .with("retry-after", "2");
        let (base, _requests) = capture_server(canned).await;
        let outcome = provider(&base, 5_000, None).send(&message(email(None, Some("x")))).await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::RateLimited { retry_after_ms: Some(2_000) });
    }

    #[tokio::test]
    async fn transport_failures_are_classified() {
        let outcome = provider(&hanging_server().await, 300, None)
            .send(&message(email(None, Some("x"))))
            .await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::Unknown, "{e}");
        let outcome = provider(&refused_base_url().await, 2_000, None)
            .send(&message(email(None, Some("x"))))
            .await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::RETRYABLE, "{e}");
    }

    #[test]
    fn provider_debug_hides_the_credentials() {
        let ses = provider("http://127.0.0.1:9", 1_000, Some("FwoGZXIvYXdzEXAMPLETOKEN"));
        let debug = format!("{ses:?}");
        for secret in [KEY_ID, SECRET_KEY, "EXAMPLETOKEN"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert_eq!(ses.channel(), steps::model::Channel::Email);
        assert_eq!(ses.name().as_str(), "ses");
    }
}
