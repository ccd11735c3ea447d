//! Twilio: the wire form, the classification of every documented answer, the config and (with
//! feature `http`) the real call against a local server.

use steps::model::{Attempt, NotificationId, ProviderName};
use steps::outcome::{ErrorClass, ProviderError, SendOutcome};
use steps::render::Content;

use super::request::{Sender, create_message};
use super::response::outcome;
use super::*;
use crate::testing::{TO_PHONE, message};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const SERVICE: &str = "MG0123456789abcdef0123456789abcdef";
const TOKEN: &str = "0123456789abcdef-token";

fn name() -> ProviderName {
    ProviderName::new("twilio").expect("id")
}

fn sms(body: &str) -> Content {
    Content::Sms { body: body.into() }
}

fn form(
    sender: &Sender,
    callback: Option<&str>,
    content: Content,
) -> Result<String, ProviderError> {
    let message = message(content);
    let form = create_message(sender, callback, &name(), &message)?;
    Ok(fields(&form))
}

/// The form's fields as `name=value` pairs, unencoded (the exact encoding is checked against a
/// live request in `http::sends_the_documented_request_and_reads_the_sid`).
fn fields(form: &super::request::CreateMessage<'_>) -> String {
    let value = serde_json::to_value(form).expect("serializes");
    let mut pairs = Vec::new();
    for key in ["To", "From", "MessagingServiceSid", "Body", "StatusCallback"] {
        if let Some(v) = value.get(key).and_then(|v| v.as_str()) {
            pairs.push(format!("{key}={v}"));
        }
    }
    pairs.join("&")
}

#[test]
fn form_has_to_from_body_and_the_status_callback() {
    let got = form(
        &Sender::From("+15005550006".into()),
        Some("https://courant.example.com/"),
        sms("Your code is 123456"),
    )
    .expect("ok");
    assert_eq!(
        got,
        "To=+14155550123&From=+15005550006&Body=Your code is 123456\
         &StatusCallback=https://courant.example.com/v1/webhooks/twilio/twilio?n=n_01HZX3V4&t=acme&a=2"
    );
}

#[test]
fn form_uses_the_messaging_service_instead_of_from() {
    let got = form(&Sender::Service(SERVICE.into()), None, sms("hi")).expect("ok");
    assert_eq!(got, format!("To={TO_PHONE}&MessagingServiceSid={SERVICE}&Body=hi"));
}

#[test]
fn status_callback_url_is_rebuildable_by_the_webhook() {
    let id = NotificationId::new("n_abc").expect("id");
    let tenant = steps::model::TenantId::new("acme").expect("tenant");
    assert_eq!(
        status_callback_url("https://c.example/base", &name(), &tenant, &id, Attempt(3)),
        "https://c.example/base/v1/webhooks/twilio/twilio?n=n_abc&t=acme&a=3"
    );
}

#[test]
fn wrong_content_missing_phone_and_empty_body_are_classified() {
    let sender = Sender::From("+15005550006".into());
    let e =
        form(&sender, None, Content::InApp { title: "t".into(), body: "b".into(), action: None })
            .expect_err("wrong channel");
    assert_eq!(e.class, ErrorClass::ProviderConfig);
    assert_eq!(e.message, "SMS provider got in_app content");

    let e = form(&sender, None, sms("")).expect_err("empty");
    assert_eq!(e.class, ErrorClass::PermanentRecipient);

    let mut m = message(sms("hi"));
    m.recipient.phone = None;
    let e = create_message(&sender, None, &name(), &m).expect_err("no phone");
    assert_eq!(e.class, ErrorClass::PermanentRecipient);
    assert_eq!(e.message, "the recipient has no phone number");
}

/// Classifies an error answer; panics on success.
fn check(status: u16, retry_after_ms: Option<u64>, body: &str) -> ProviderError {
    match outcome(status, retry_after_ms, body.as_bytes(), &[TO_PHONE, ACCOUNT, TOKEN]) {
        SendOutcome::Failed(error) => error,
        accepted => panic!("expected a failure, got {accepted:?}"),
    }
}

fn twilio_error(code: u32, status: u16, message: &str) -> String {
    serde_json::json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    })
    .to_string()
}

#[test]
fn created_carries_the_sid() {
    let body = format!(
        r#"{{"account_sid":"{ACCOUNT}","api_version":"2010-04-01","body":"hi","date_created":"Thu, 24 Aug 2023 05:01:45 +0000","date_sent":null,"date_updated":"Thu, 24 Aug 2023 05:01:45 +0000","direction":"outbound-api","error_code":null,"error_message":null,"from":"+15005550006","messaging_service_sid":null,"num_media":"0","num_segments":"1","price":null,"price_unit":"USD","sid":"SM0123456789abcdef0123456789abcdef","status":"queued","subresource_uris":{{"media":"/2010-04-01/Accounts/{ACCOUNT}/Messages/SM0123456789abcdef0123456789abcdef/Media.json"}},"to":"{TO_PHONE}","uri":"/2010-04-01/Accounts/{ACCOUNT}/Messages/SM0123456789abcdef0123456789abcdef.json"}}"#
    );
    assert_eq!(
        outcome(201, None, body.as_bytes(), &[]),
        SendOutcome::Accepted {
            provider_message_id: Some("SM0123456789abcdef0123456789abcdef".into()),
            delivered: false
        }
    );
}

#[test]
fn created_with_an_unreadable_body_is_still_accepted() {
    assert_eq!(
        outcome(201, None, b"{\"si", &[]),
        SendOutcome::Accepted { provider_message_id: None, delivered: false }
    );
}

#[test]
fn recipient_codes_are_permanent_and_scrubbed() {
    let cases = [
        (21211, "The 'To' number +14155550123 is not a valid phone number."),
        (
            21408,
            "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: +14155550123.",
        ),
        (
            21608,
            "The number +14155550123 is unverified. Trial accounts cannot send messages to unverified numbers.",
        ),
        (21610, "Attempt to send to unsubscribed recipient"),
        (
            21612,
            "The 'To' phone number: +14155550123, is not currently reachable using the 'From' phone number: +15005550006 via SMS.",
        ),
        (21614, "'To' number is not a valid mobile number"),
        (21602, "Message body is required."),
        (21617, "The concatenated message body exceeds the 1600 character limit."),
    ];
    for (code, text) in cases {
        let e = check(400, None, &twilio_error(code, 400, text));
        assert_eq!(e.class, ErrorClass::PermanentRecipient, "{code}");
        assert_eq!(e.code.as_deref(), Some(code.to_string().as_str()));
        assert_eq!(e.status, Some(400));
        assert!(!e.message.contains("4155550123"), "{code}: {}", e.message);
    }
}

#[test]
fn configuration_codes_are_provider_config() {
    let cases = [
        (20003, 401, "Authenticate"),
        (
            20404,
            404,
            "The requested resource /2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json was not found",
        ),
        (
            21212,
            400,
            "The 'From' number +1500 is not a valid phone number, shortcode, or alphanumeric sender ID.",
        ),
        (
            21606,
            400,
            "The From phone number +15005550006 is not a valid, SMS-capable inbound phone number or short code for your account.",
        ),
        (21659, 400, "Source number is not a Twilio phone number or verified sender."),
        (21660, 400, "Mismatch between the 'From' number and the account"),
        (20005, 403, "Account not active"),
    ];
    for (code, status, text) in cases {
        let e = check(status, None, &twilio_error(code, status, text));
        assert_eq!(e.class, ErrorClass::ProviderConfig, "{code}");
        assert!(!e.message.contains("0123456789abcdef"), "the account SID leaked: {}", e.message);
    }
}

#[test]
fn the_auth_error_with_detail_is_provider_config() {
    let body = r#"{"code": 20003, "detail": "Your AccountSid or AuthToken was incorrect.", "message": "Authentication Error - invalid username", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}"#;
    let e = check(401, None, body);
    assert_eq!(e.class, ErrorClass::ProviderConfig);
    assert_eq!(e.message, "Authentication Error - invalid username");
}

#[test]
fn throttling_is_rate_limited_with_the_delay() {
    let e = check(429, Some(3_000), &twilio_error(20429, 429, "Too Many Requests"));
    assert_eq!(e.class, ErrorClass::RateLimited { retry_after_ms: Some(3_000) });
    let e = check(
        400,
        None,
        &twilio_error(
            21611,
            400,
            "This 'From' number has exceeded the maximum number of queued messages",
        ),
    );
    assert_eq!(e.class, ErrorClass::RateLimited { retry_after_ms: None });
    // A bare 429 without Twilio's body is still throttling.
    assert_eq!(
        check(429, Some(1_000), "").class,
        ErrorClass::RateLimited { retry_after_ms: Some(1_000) }
    );
}

#[test]
fn server_errors_are_retryable() {
    assert_eq!(
        check(500, None, &twilio_error(20500, 500, "Internal Server Error")).class,
        ErrorClass::RETRYABLE
    );
    assert_eq!(
        check(503, None, &twilio_error(20503, 503, "Service Unavailable")).class,
        ErrorClass::RETRYABLE
    );
    let e = check(502, None, "<html>Bad Gateway</html>");
    assert_eq!(e.class, ErrorClass::RETRYABLE);
    assert_eq!(e.message, "unexpected answer (HTTP 502)");
    assert_eq!(e.code, None);
    // Maintenance: a 503 that says when to come back is never retried earlier.
    assert_eq!(
        check(503, Some(60_000), &twilio_error(20503, 503, "Service Unavailable")).class,
        ErrorClass::Retryable { retry_after_ms: Some(60_000) }
    );
}

#[test]
fn undocumented_codes_fall_back_to_the_status() {
    assert_eq!(
        check(400, None, &twilio_error(21999, 400, "Something new")).class,
        ErrorClass::PermanentRecipient
    );
    assert_eq!(
        check(403, None, &twilio_error(21999, 403, "Something new")).class,
        ErrorClass::ProviderConfig
    );
    assert_eq!(check(404, None, "").class, ErrorClass::ProviderConfig);
}

fn config_toml(sender: &str) -> String {
    format!(
        r#"
base_url = "https://api.twilio.com"
account_sid = "{ACCOUNT}"
auth_token = "{TOKEN}"
{sender}
status_callback_base_url = "https://courant.example.com"
"#
    )
}

#[test]
fn config_reads_from_toml_with_defaults() {
    let config: TwilioConfig =
        toml::from_str(&config_toml("from = \"+15005550006\"")).expect("parses");
    assert_eq!(config.account_sid, ACCOUNT);
    assert_eq!(config.auth_token.expose(), TOKEN);
    assert_eq!(config.from.as_deref(), Some("+15005550006"));
    assert_eq!(config.timeout_ms, 10_000);
    assert!(config.validate(&name()).is_ok());
}

#[test]
fn config_needs_exactly_one_sender() {
    let both =
        config_toml(&format!("from = \"+15005550006\"\nmessaging_service_sid = \"{SERVICE}\""));
    let config: TwilioConfig = toml::from_str(&both).expect("parses");
    assert!(config.validate(&name()).is_err());
    let none: TwilioConfig = toml::from_str(&config_toml("")).expect("parses");
    assert!(none.validate(&name()).is_err());
    let service = config_toml(&format!("messaging_service_sid = \"{SERVICE}\""));
    let config: TwilioConfig = toml::from_str(&service).expect("parses");
    assert!(config.validate(&name()).is_ok());
}

#[test]
fn config_rejects_unknown_fields_and_bad_sids() {
    let unknown = config_toml("from = \"+15005550006\"\nfrom_number = \"x\"");
    assert!(toml::from_str::<TwilioConfig>(&unknown).is_err());
    let bad = config_toml("from = \"+15005550006\"").replace(ACCOUNT, "AC123");
    let config: TwilioConfig = toml::from_str(&bad).expect("parses");
    let error = config.validate(&name()).expect_err("bad sid");
    assert!(error.to_string().contains("account_sid"), "{error}");
}

#[test]
fn config_debug_hides_the_token() {
    let config: TwilioConfig =
        toml::from_str(&config_toml("from = \"+15005550006\"")).expect("parses");
    let debug = format!("{config:?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(debug.contains("auth_token: ***"), "{debug}");
}

#[cfg(feature = "http")]
mod http {
    use std::time::{Duration, Instant};

    use base64::Engine;
    use workflows::ports::Provider;

    use super::*;
    use crate::testing::{Canned, capture_server, hanging_server, refused_base_url};

    fn provider(base_url: &str, sender: &str, timeout_ms: u64) -> Twilio {
        let mut config: TwilioConfig = toml::from_str(&config_toml(sender)).expect("parses");
        config.base_url = base_url.to_owned();
        config.timeout_ms = timeout_ms;
        config.connect_timeout_ms = timeout_ms.min(1_000);
        Twilio::new(name(), config).expect("builds")
    }

    fn created() -> String {
        format!(
            r#"{{"account_sid":"{ACCOUNT}","sid":"SMaaaabbbbccccddddeeeeffff00001111","status":"queued","to":"{TO_PHONE}"}}"#
        )
    }

    #[tokio::test]
    async fn sends_the_documented_request_and_reads_the_sid() {
        let (base, mut requests) = capture_server(Canned::json(201, &created())).await;
        let twilio = provider(&base, "from = \"+15005550006\"", 5_000);
        let outcome = twilio.send(&message(sms("Your code is 123456"))).await;
        assert_eq!(
            outcome,
            SendOutcome::Accepted {
                provider_message_id: Some("SMaaaabbbbccccddddeeeeffff00001111".into()),
                delivered: false
            }
        );
        let request = requests.recv().await.expect("captured");
        assert_eq!(request.method, "POST");
        assert_eq!(request.uri.path(), format!("/2010-04-01/Accounts/{ACCOUNT}/Messages.json"));
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT}:{TOKEN}"));
        assert_eq!(request.header("authorization"), format!("Basic {credentials}"));
        assert_eq!(request.header("content-type"), "application/x-www-form-urlencoded");
        assert_eq!(
            std::str::from_utf8(&request.body).expect("utf-8"),
            "To=%2B14155550123&From=%2B15005550006&Body=Your+code+is+123456\
             &StatusCallback=https%3A%2F%2Fcourant.example.com%2Fv1%2Fwebhooks%2Ftwilio%2Ftwilio%3Fn%3Dn_01HZX3V4%26t%3Dacme%26a%3D2"
        );
    }

    #[tokio::test]
    async fn an_api_key_authenticates_instead_of_the_account() {
        let (base, mut requests) = capture_server(Canned::json(201, &created())).await;
        let key = "SK0123456789abcdef0123456789abcdef";
        let mut config: TwilioConfig =
            toml::from_str(&config_toml(&format!("messaging_service_sid = \"{SERVICE}\"")))
                .expect("parses");
        config.base_url = base;
        config.api_key_sid = Some(key.into());
        let twilio = Twilio::new(name(), config).expect("builds");
        assert!(matches!(twilio.send(&message(sms("hi"))).await, SendOutcome::Accepted { .. }));
        let request = requests.recv().await.expect("captured");
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{key}:{TOKEN}"));
        assert_eq!(request.header("authorization"), format!("Basic {credentials}"));
        assert_eq!(request.uri.path(), format!("/2010-04-01/Accounts/{ACCOUNT}/Messages.json"));
        let body = std::str::from_utf8(&request.body).expect("utf-8");
        assert!(body.contains(&format!("MessagingServiceSid={SERVICE}")), "{body}");
        assert!(!body.contains("From="), "{body}");
    }

    #[tokio::test]
    async fn an_invalid_number_is_permanent_and_not_echoed() {
        let body =
            twilio_error(21211, 400, "The 'To' number +14155550123 is not a valid phone number.");
        let (base, _requests) = capture_server(Canned::json(400, &body)).await;
        let outcome =
            provider(&base, "from = \"+15005550006\"", 5_000).send(&message(sms("hi"))).await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::PermanentRecipient);
        assert_eq!(e.code.as_deref(), Some("21211"));
        assert!(!format!("{e:?}").contains("4155550123"), "{e:?}");
    }

    #[tokio::test]
    async fn honours_retry_after_on_429() {
        let canned = Canned::json(429, &twilio_error(20429, 429, "Too Many Requests"))
            .with("retry-after", "4");
        let (base, _requests) = capture_server(canned).await;
        let outcome =
            provider(&base, "from = \"+15005550006\"", 5_000).send(&message(sms("hi"))).await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::RateLimited { retry_after_ms: Some(4_000) });
    }

    #[tokio::test]
    async fn a_hang_past_the_timeout_is_unknown() {
        let base = hanging_server().await;
        let started = Instant::now();
        let outcome =
            provider(&base, "from = \"+15005550006\"", 300).send(&message(sms("hi"))).await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::Unknown, "{e}");
        assert!(started.elapsed() < Duration::from_secs(5), "the deadline was not enforced");
    }

    #[tokio::test]
    async fn a_refused_connection_is_retryable() {
        let base = refused_base_url().await;
        let outcome =
            provider(&base, "from = \"+15005550006\"", 2_000).send(&message(sms("hi"))).await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::RETRYABLE, "{e}");
        assert!(!e.message.contains(ACCOUNT), "{}", e.message);
    }

    #[test]
    fn provider_debug_hides_the_token() {
        let twilio = provider("http://127.0.0.1:9", "from = \"+15005550006\"", 1_000);
        let debug = format!("{twilio:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
        assert_eq!(twilio.channel(), steps::model::Channel::Sms);
    }
}
