//! SendGrid: the wire body, the classification of every documented answer, the config and (with
//! feature `http`) the real call against a local server.

use serde_json::{Value, json};
use steps::model::{EmailAddress, ProviderName};
use steps::outcome::{ErrorClass, ProviderError, SendOutcome};
use steps::render::Content;

use super::request::mail_send;
use super::response::{outcome, retry_after_from_reset};
use super::*;
use crate::testing::{TO_EMAIL, message};

const KEY: &str = "SG.test-key-0123456789.abcdefghijklmnopqrstuvwxyz";

fn email(html: Option<&str>, text: Option<&str>) -> Content {
    Content::Email {
        subject: "Your order shipped".into(),
        html: html.map(str::to_owned),
        text: text.map(str::to_owned),
    }
}

fn body_of(content: Content, from_name: Option<&str>) -> Result<Value, ProviderError> {
    let from = EmailAddress::parse("noreply@shop.example").expect("email");
    let message = message(content);
    let body = mail_send(&from, from_name, &message)?;
    Ok(serde_json::to_value(&body).expect("serializes"))
}

#[test]
fn body_follows_the_v3_mail_send_format() {
    let body = body_of(email(Some("<p>Shipped</p>"), Some("Shipped")), Some("Shop")).expect("ok");
    assert_eq!(
        body,
        json!({
            "personalizations": [{
                "to": [{"email": TO_EMAIL}],
                "custom_args": {"notification_id": "n_01HZX3V4", "attempt": "2", "tenant": "acme"}
            }],
            "from": {"email": "noreply@shop.example", "name": "Shop"},
            "subject": "Your order shipped",
            "content": [
                {"type": "text/plain", "value": "Shipped"},
                {"type": "text/html", "value": "<p>Shipped</p>"}
            ]
        })
    );
}

#[test]
fn body_has_only_the_parts_present_and_no_empty_name() {
    let body = body_of(email(Some("<p>x</p>"), None), None).expect("ok");
    assert_eq!(body["content"], json!([{"type": "text/html", "value": "<p>x</p>"}]));
    assert_eq!(body["from"], json!({"email": "noreply@shop.example"}));
    let body = body_of(email(None, Some("x")), None).expect("ok");
    assert_eq!(body["content"], json!([{"type": "text/plain", "value": "x"}]));
}

#[test]
fn an_email_without_any_body_is_permanent() {
    let error = body_of(email(Some(""), None), None).expect_err("no body");
    assert_eq!(error.class, ErrorClass::PermanentRecipient);
}

#[test]
fn other_content_is_a_configuration_error() {
    let error = body_of(Content::Sms { body: "hi".into() }, None).expect_err("wrong channel");
    assert_eq!(error.class, ErrorClass::ProviderConfig);
    assert_eq!(error.message, "email provider got sms content");
}

#[test]
fn a_recipient_without_an_email_address_is_permanent() {
    let from = EmailAddress::parse("noreply@shop.example").expect("email");
    let mut message = message(email(None, Some("x")));
    message.recipient.email = None;
    let error = mail_send(&from, None, &message).expect_err("no address");
    assert_eq!(error.class, ErrorClass::PermanentRecipient);
}

/// Classifies an error answer; panics on success.
fn check(status: u16, retry_after_ms: Option<u64>, body: &str) -> ProviderError {
    match outcome(status, None, retry_after_ms, body.as_bytes(), &[TO_EMAIL, KEY]) {
        SendOutcome::Failed(error) => error,
        accepted => panic!("expected a failure, got {accepted:?}"),
    }
}

#[test]
fn accepted_carries_the_message_id() {
    assert_eq!(
        outcome(202, Some("W3kCZ1RsT0uK1OlrSm_uvw"), None, b"", &[]),
        SendOutcome::Accepted {
            provider_message_id: Some("W3kCZ1RsT0uK1OlrSm_uvw".into()),
            delivered: false
        }
    );
    assert_eq!(
        outcome(202, None, None, b"", &[]),
        SendOutcome::Accepted { provider_message_id: None, delivered: false }
    );
}

#[test]
fn invalid_recipient_address_is_permanent() {
    let e = check(
        400,
        None,
        r#"{"errors":[{"message":"Does not contain a valid address.","field":"personalizations.0.to.0.email","help":"http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.personalizations.to"}]}"#,
    );
    assert_eq!(e.class, ErrorClass::PermanentRecipient);
    assert_eq!(e.status, Some(400));
    assert_eq!(e.message, "personalizations.0.to.0.email: Does not contain a valid address.");
}

#[test]
fn missing_to_array_is_permanent() {
    let e = check(
        400,
        None,
        r#"{"errors":[{"message":"The to array is required for all personalization objects, and must have at least one email object with a valid email address.","field":"personalizations.0.to","help":"http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.personalizations.to"}]}"#,
    );
    assert_eq!(e.class, ErrorClass::PermanentRecipient);
}

#[test]
fn messages_echoing_the_recipient_are_scrubbed() {
    let e = check(
        400,
        None,
        r#"{"errors":[{"message":"The address Jane.Doe@example.org is not allowed","field":"personalizations.0.to.0.email"}]}"#,
    );
    assert_eq!(e.class, ErrorClass::PermanentRecipient);
    assert!(!e.message.to_ascii_lowercase().contains("jane.doe"), "{}", e.message);
    assert!(e.message.contains("[redacted]"), "{}", e.message);
}

#[test]
fn invalid_sender_is_configuration() {
    let e = check(
        400,
        None,
        r#"{"errors":[{"message":"The from email does not contain a valid address.","field":"from.email","help":"http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.from"}]}"#,
    );
    assert_eq!(e.class, ErrorClass::ProviderConfig);
}

#[test]
fn malformed_request_is_configuration() {
    let e = check(400, None, r#"{"errors":[{"field":null,"message":"Bad Request","help":null}]}"#);
    assert_eq!(e.class, ErrorClass::ProviderConfig);
    assert_eq!(e.message, "Bad Request");
}

#[test]
fn bad_key_is_configuration() {
    let e = check(
        401,
        None,
        r#"{"errors":[{"field":null,"message":"The provided authorization grant is invalid, expired, or revoked","help":null}]}"#,
    );
    assert_eq!(e.class, ErrorClass::ProviderConfig);
    assert_eq!(e.message, "The provided authorization grant is invalid, expired, or revoked");
}

#[test]
fn unverified_sender_is_configuration() {
    let e = check(
        403,
        None,
        r#"{"errors":[{"message":"The from address does not match a verified Sender Identity. Mail cannot be sent until this error is resolved.","field":"from","help":null}]}"#,
    );
    assert_eq!(e.class, ErrorClass::ProviderConfig);
}

#[test]
fn payload_too_large_is_permanent() {
    let e = check(
        413,
        None,
        r#"{"errors":[{"field":null,"message":"The JSON payload you have included in your request is too large."}]}"#,
    );
    assert_eq!(e.class, ErrorClass::PermanentRecipient);
}

#[test]
fn too_many_requests_is_rate_limited_with_the_delay() {
    let e = check(429, Some(7_000), r#"{"errors":[{"field":null,"message":"too many requests"}]}"#);
    assert_eq!(e.class, ErrorClass::RateLimited { retry_after_ms: Some(7_000) });
    let e = check(429, None, r#"{"errors":[{"field":null,"message":"too many requests"}]}"#);
    assert_eq!(e.class, ErrorClass::RateLimited { retry_after_ms: None });
}

#[test]
fn server_errors_and_request_timeouts_are_retryable() {
    for status in [500, 502, 503, 504, 408] {
        let e = check(status, None, r#"{"errors":[{"field":null,"message":"internal error"}]}"#);
        assert_eq!(e.class, ErrorClass::RETRYABLE, "{status}");
    }
    // Maintenance: a 503 that says when to come back is never retried earlier.
    let e = check(503, Some(30_000), r#"{"errors":[{"field":null,"message":"maintenance"}]}"#);
    assert_eq!(e.class, ErrorClass::Retryable { retry_after_ms: Some(30_000) });
}

#[test]
fn a_non_json_answer_is_classified_by_status() {
    let e = check(502, None, "<html><body>Bad Gateway</body></html>");
    assert_eq!(e.class, ErrorClass::RETRYABLE);
    assert_eq!(e.message, "unexpected answer (HTTP 502)");
}

#[test]
fn wrong_endpoint_is_configuration() {
    let e = check(404, None, r#"{"errors":[{"field":null,"message":"resource not found"}]}"#);
    assert_eq!(e.class, ErrorClass::ProviderConfig);
}

#[test]
fn rate_limit_reset_becomes_a_delay() {
    assert_eq!(retry_after_from_reset("1700000030", 1_700_000_000_000), Some(30_000));
    assert_eq!(retry_after_from_reset("1699999990", 1_700_000_000_000), Some(0));
    assert_eq!(retry_after_from_reset("soon", 1_700_000_000_000), None);
    assert_eq!(retry_after_from_reset("4000000000", 1_700_000_000_000), Some(86_400_000));
}

const CONFIG: &str = r#"
base_url = "https://api.sendgrid.com"
api_key = "SG.test-key-0123456789.abcdefghijklmnopqrstuvwxyz"
from = "noreply@shop.example"
from_name = "Shop"
"#;

fn name() -> ProviderName {
    ProviderName::new("sendgrid").expect("id")
}

#[test]
fn config_reads_from_toml_with_defaults() {
    let config: SendGridConfig = toml::from_str(CONFIG).expect("parses");
    assert_eq!(config.base_url, "https://api.sendgrid.com");
    assert_eq!(config.api_key.expose(), KEY);
    assert_eq!(config.from.expose(), "noreply@shop.example");
    assert_eq!(config.timeout_ms, 10_000);
    assert_eq!(config.connect_timeout_ms, 3_000);
    assert!(config.validate(&name()).is_ok());
}

#[test]
fn config_rejects_unknown_fields_and_bad_values() {
    let unknown = format!("{CONFIG}\nbase_ulr = \"x\"\n");
    assert!(toml::from_str::<SendGridConfig>(&unknown).is_err());
    let bad_from = CONFIG.replace("noreply@shop.example", "not-an-address");
    assert!(toml::from_str::<SendGridConfig>(&bad_from).is_err());
    let mut config: SendGridConfig = toml::from_str(CONFIG).expect("parses");
    config.from_name = Some("Shop\r\nBcc: evil@example.com".into());
    let error = config.validate(&name()).expect_err("header injection");
    assert!(error.to_string().contains("from_name"), "{error}");
}

#[test]
fn config_debug_hides_the_key() {
    let config: SendGridConfig = toml::from_str(CONFIG).expect("parses");
    let debug = format!("{config:?}");
    assert!(!debug.contains("test-key"), "{debug}");
    assert!(debug.contains("api_key: ***"), "{debug}");
    assert!(!debug.contains("noreply@"), "{debug}");
}

#[cfg(feature = "http")]
mod http {
    use std::time::{Duration, Instant};

    use workflows::ports::Provider;

    use super::*;
    use crate::testing::{
        Canned, capture_server, hanging_server, refused_base_url, resetting_server,
    };

    fn provider(base_url: &str, timeout_ms: u64) -> SendGrid {
        let mut config: SendGridConfig = toml::from_str(CONFIG).expect("parses");
        config.base_url = base_url.to_owned();
        config.timeout_ms = timeout_ms;
        config.connect_timeout_ms = timeout_ms.min(1_000);
        SendGrid::new(name(), config).expect("builds")
    }

    #[tokio::test]
    async fn sends_the_documented_request_and_reads_the_message_id() {
        let canned = Canned::json(202, "").with("x-message-id", "W3kCZ1RsT0uK1OlrSm_uvw");
        let (base, mut requests) = capture_server(canned).await;
        let sendgrid = provider(&base, 5_000);
        let outcome = sendgrid.send(&message(email(Some("<b>hi</b>"), Some("hi")))).await;
        assert_eq!(
            outcome,
            SendOutcome::Accepted {
                provider_message_id: Some("W3kCZ1RsT0uK1OlrSm_uvw".into()),
                delivered: false
            }
        );
        let request = requests.recv().await.expect("captured");
        assert_eq!(request.method, "POST");
        assert_eq!(request.uri.path(), "/v3/mail/send");
        assert_eq!(request.uri.query(), None);
        assert_eq!(request.header("authorization"), format!("Bearer {KEY}"));
        assert_eq!(request.header("content-type"), "application/json");
        let body: Value = serde_json::from_slice(&request.body).expect("json");
        assert_eq!(body["personalizations"][0]["to"][0]["email"], TO_EMAIL);
        assert_eq!(body["personalizations"][0]["custom_args"]["notification_id"], "n_01HZX3V4");
        assert_eq!(body["personalizations"][0]["custom_args"]["attempt"], "2");
        assert_eq!(body["from"], json!({"email": "noreply@shop.example", "name": "Shop"}));
        assert_eq!(body["subject"], "Your order shipped");
        assert_eq!(body["content"][0]["type"], "text/plain");
        assert_eq!(body["content"][1]["type"], "text/html");
    }

    #[tokio::test]
    async fn honours_retry_after_on_429() {
        let canned =
            Canned::json(429, r#"{"errors":[{"field":null,"message":"too many requests"}]}"#)
                .with("retry-after", "12");
        let (base, _requests) = capture_server(canned).await;
        let outcome = provider(&base, 5_000).send(&message(email(None, Some("x")))).await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::RateLimited { retry_after_ms: Some(12_000) });
        assert_eq!(e.status, Some(429));
    }

    #[tokio::test]
    async fn error_messages_never_carry_the_recipient_or_the_key() {
        let body = format!(
            r#"{{"errors":[{{"message":"{TO_EMAIL} rejected; key {KEY} lacks scope","field":"personalizations.0.to.0.email"}}]}}"#
        );
        let (base, _requests) = capture_server(Canned::json(400, &body)).await;
        let outcome = provider(&base, 5_000).send(&message(email(None, Some("x")))).await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::PermanentRecipient);
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("jane.doe"), "{shown}");
        assert!(!shown.contains("test-key"), "{shown}");
    }

    #[tokio::test]
    async fn a_hang_past_the_timeout_is_unknown() {
        let base = hanging_server().await;
        let started = Instant::now();
        let outcome = provider(&base, 300).send(&message(email(None, Some("x")))).await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::Unknown, "{e}");
        assert!(started.elapsed() < Duration::from_secs(5), "the deadline was not enforced");
    }

    #[tokio::test]
    async fn a_reset_after_writing_is_unknown() {
        let base = resetting_server().await;
        let outcome = provider(&base, 2_000).send(&message(email(None, Some("x")))).await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::Unknown, "{e}");
        assert!(e.message.contains("may have been sent"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_refused_connection_is_retryable() {
        let base = refused_base_url().await;
        let outcome = provider(&base, 2_000).send(&message(email(None, Some("x")))).await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::RETRYABLE, "{e}");
        assert!(e.message.contains("not sent"), "{}", e.message);
        assert!(!e.message.contains("127.0.0.1"), "the URL leaked: {}", e.message);
    }

    #[test]
    fn construction_validates_the_config() {
        let mut config: SendGridConfig = toml::from_str(CONFIG).expect("parses");
        config.base_url = "api.sendgrid.com".into();
        let error = SendGrid::new(name(), config).expect_err("no scheme");
        assert!(error.to_string().contains("base_url"), "{error}");
    }

    #[test]
    fn provider_debug_hides_the_key_and_sender() {
        let sendgrid = provider("http://127.0.0.1:9", 1_000);
        let debug = format!("{sendgrid:?}");
        assert!(!debug.contains("test-key"), "{debug}");
        assert_eq!(sendgrid.channel(), steps::model::Channel::Email);
        assert_eq!(sendgrid.name().as_str(), "sendgrid");
    }
}
