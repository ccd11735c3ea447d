//! Slack: the body, the classification of every documented error answer, the config and (with
//! feature `http`) the real call, including that the webhook URL never shows.

use steps::model::ProviderName;
use steps::outcome::{ErrorClass, SendOutcome};
use steps::render::Content;

use super::request::post_message;
use super::response::outcome;
use super::*;
use crate::testing::message;

const TOKEN: &str = "XXXXXXXXXXXXXXXXXXXXXXXX";

fn name() -> ProviderName {
    ProviderName::new("slack").expect("id")
}

#[test]
fn the_body_is_the_text() {
    let m = message(Content::Chat { text: "*Order A-1* shipped".into() });
    let body = serde_json::to_string(&post_message(&m).expect("chat")).expect("json");
    assert_eq!(body, r#"{"text":"*Order A-1* shipped"}"#);
    let e = post_message(&message(Content::Chat { text: "  ".into() })).expect_err("empty");
    assert_eq!(e.class, ErrorClass::PermanentRecipient);
    let long = "a".repeat(TEXT_CHARS_MAX + 1);
    let e = post_message(&message(Content::Chat { text: long })).expect_err("long");
    assert_eq!(e.class, ErrorClass::PermanentRecipient);
    let e = post_message(&message(Content::Sms { body: "x".into() })).expect_err("channel");
    assert_eq!(e.class, ErrorClass::ProviderConfig);
}

#[test]
fn every_documented_error_is_classified() {
    let config = ErrorClass::ProviderConfig;
    let cases: [(u16, &str, ErrorClass); 16] = [
        (400, "invalid_payload", ErrorClass::PermanentRecipient),
        (400, "no_text", ErrorClass::PermanentRecipient),
        (400, "too_many_attachments", ErrorClass::PermanentRecipient),
        (400, "user_not_found", config),
        (400, "no_service_id", config),
        (400, "no_team", config),
        (403, "action_prohibited", config),
        (403, "invalid_token", config),
        (403, "posting_to_general_channel_denied", config),
        (403, "team_disabled", config),
        (404, "channel_not_found", config),
        (404, "no_service", config),
        (410, "channel_is_archived", config),
        (500, "rollup_error", ErrorClass::RETRYABLE),
        (429, "rate_limited", ErrorClass::RateLimited { retry_after_ms: None }),
        (503, "", ErrorClass::RETRYABLE),
    ];
    for (status, token, class) in cases {
        let SendOutcome::Failed(e) = outcome(status, None, token.as_bytes()) else {
            panic!("{status} {token}: expected a failure")
        };
        assert_eq!(e.class, class, "{status} {token}");
        assert_eq!(e.status, Some(status));
        if !token.is_empty() {
            assert_eq!(e.code.as_deref(), Some(token));
            assert_eq!(e.message, format!("Slack answered HTTP {status}: {token}"));
        }
    }
    // Retry-After is honoured on 429 and on a server error.
    let SendOutcome::Failed(e) = outcome(429, Some(30_000), b"") else { panic!("429") };
    assert_eq!(e.class, ErrorClass::RateLimited { retry_after_ms: Some(30_000) });
    // An HTML page is not a token.
    let SendOutcome::Failed(e) = outcome(502, None, b"<html>bad gateway</html>") else {
        panic!("502")
    };
    assert_eq!((e.class, e.code), (ErrorClass::RETRYABLE, None));
    assert_eq!(
        outcome(200, None, b"ok"),
        SendOutcome::Accepted { provider_message_id: None, delivered: true }
    );
}

fn config_toml(url: &str) -> String {
    format!("webhook_url = \"{url}\"\n")
}

#[test]
fn config_hides_the_url_and_checks_it() {
    let url = format!("https://hooks.slack.com/services/T000/B000/{TOKEN}");
    let config: SlackConfig = toml::from_str(&config_toml(&url)).expect("parses");
    assert!(config.validate(&name()).is_ok());
    assert!(!format!("{config:?}").contains(TOKEN));
    let bad: SlackConfig = toml::from_str(&config_toml("hooks.slack.com/x")).expect("parses");
    let error = bad.validate(&name()).expect_err("no scheme").to_string();
    assert!(!error.contains("hooks.slack.com"), "{error}");
}

#[cfg(feature = "http")]
mod http {
    use workflows::ports::Provider;

    use super::*;
    use crate::testing::{Canned, capture_server, refused_base_url};

    fn provider(url: &str) -> Slack {
        let mut config: SlackConfig = toml::from_str(&config_toml(url)).expect("parses");
        config.timeout_ms = 5_000;
        config.connect_timeout_ms = 1_000;
        Slack::new(name(), config).expect("builds")
    }

    #[tokio::test]
    async fn posts_the_documented_json_to_the_webhook_url() {
        let (base, mut requests) =
            capture_server(Canned::json(200, "ok").with("content-type", "text/html")).await;
        let slack = provider(&format!("{base}/services/T000/B000/{TOKEN}"));
        let outcome =
            slack.send(&message(Content::Chat { text: "Order A-1 shipped".into() })).await;
        assert_eq!(outcome, SendOutcome::Accepted { provider_message_id: None, delivered: true });
        let request = requests.recv().await.expect("captured");
        assert_eq!(request.method, "POST");
        assert_eq!(request.uri.path(), format!("/services/T000/B000/{TOKEN}"));
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(request.header("authorization"), "");
        assert_eq!(&request.body[..], br#"{"text":"Order A-1 shipped"}"#);
        assert!(!format!("{slack:?}").contains(TOKEN));
    }

    #[tokio::test]
    async fn an_archived_channel_is_config_and_the_url_never_shows() {
        let (base, _r) = capture_server(Canned::json(410, "channel_is_archived")).await;
        let outcome = provider(&format!("{base}/services/T000/B000/{TOKEN}"))
            .send(&message(Content::Chat { text: "hi".into() }))
            .await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected a failure") };
        assert_eq!(e.class, ErrorClass::ProviderConfig);
        assert_eq!(e.code.as_deref(), Some("channel_is_archived"));
        let base = refused_base_url().await;
        let outcome = provider(&format!("{base}/services/T000/B000/{TOKEN}"))
            .send(&message(Content::Chat { text: "hi".into() }))
            .await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected a failure") };
        assert_eq!(e.class, ErrorClass::RETRYABLE);
        assert!(!e.message.contains(TOKEN) && !e.message.contains("/services/"), "{}", e.message);
    }
}
