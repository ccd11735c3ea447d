//! The signed webhook: the spec's published signature vector, verification, the body, the
//! classification of answers, the config and (with feature `http`) the real call.

use steps::model::ProviderName;
use steps::outcome::{ErrorClass, SendOutcome};
use steps::render::Content;

use super::request::body;
use super::response::outcome;
use super::*;
use crate::testing::message;

/// The Standard Webhooks reference libraries' signing vector
/// (standard-webhooks/standard-webhooks, libraries/go/webhook_test.go `TestWebhookSign`).
const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SPEC_TIMESTAMP: u64 = 1_614_265_330;
const SPEC_PAYLOAD: &[u8] = br#"{"test": 2432232314}"#;
const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn name() -> ProviderName {
    ProviderName::new("webhook").expect("id")
}

fn key() -> Vec<u8> {
    secret_key(SPEC_SECRET).expect("valid secret")
}

#[test]
fn signing_matches_the_spec_vector() {
    assert_eq!(sign(&key(), SPEC_ID, SPEC_TIMESTAMP, SPEC_PAYLOAD), SPEC_SIGNATURE);
    // The prefix is optional.
    assert_eq!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Some(key()));
}

#[test]
fn verification_accepts_the_vector_and_refuses_everything_else() {
    let ts = SPEC_TIMESTAMP.to_string();
    let now = SPEC_TIMESTAMP + 10;
    let ok = |sig: &str| verify(&key(), SPEC_ID, &ts, sig, SPEC_PAYLOAD, now);
    assert_eq!(ok(SPEC_SIGNATURE), Ok(()));
    // Several signatures, one valid (key rotation), in any position.
    let wrong = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
    assert_eq!(ok(&format!("{wrong} v2,{} {SPEC_SIGNATURE}", &SPEC_SIGNATURE[3..])), Ok(()));
    assert_eq!(ok(wrong), Err(VerifyError::Signature));
    // A v2 entry with the right bytes is not a v1 signature.
    assert_eq!(ok(&format!("v2,{}", &SPEC_SIGNATURE[3..])), Err(VerifyError::Signature));
    assert_eq!(ok(""), Err(VerifyError::Header));
    // The body, the id and the timestamp are all signed.
    assert_eq!(
        verify(&key(), SPEC_ID, &ts, SPEC_SIGNATURE, br#"{"test": 2432232315}"#, now),
        Err(VerifyError::Signature)
    );
    assert_eq!(
        verify(&key(), "msg_other", &ts, SPEC_SIGNATURE, SPEC_PAYLOAD, now),
        Err(VerifyError::Signature)
    );
    let later = (SPEC_TIMESTAMP + 1).to_string();
    assert_eq!(
        verify(&key(), SPEC_ID, &later, SPEC_SIGNATURE, SPEC_PAYLOAD, now),
        Err(VerifyError::Signature)
    );
    // Outside the five-minute window, either way.
    for now in [SPEC_TIMESTAMP + TOLERANCE_SECS + 1, SPEC_TIMESTAMP - TOLERANCE_SECS - 1] {
        assert_eq!(
            verify(&key(), SPEC_ID, &ts, SPEC_SIGNATURE, SPEC_PAYLOAD, now),
            Err(VerifyError::Stale)
        );
    }
    assert_eq!(
        verify(&key(), SPEC_ID, "soon", SPEC_SIGNATURE, SPEC_PAYLOAD, now),
        Err(VerifyError::Header)
    );
    assert_eq!(
        verify(&key(), "", &ts, SPEC_SIGNATURE, SPEC_PAYLOAD, now),
        Err(VerifyError::Header)
    );
    // Another secret.
    let other = secret_key("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").expect("valid");
    assert_eq!(
        verify(&other, SPEC_ID, &ts, SPEC_SIGNATURE, SPEC_PAYLOAD, now),
        Err(VerifyError::Signature)
    );
}

#[test]
fn secrets_must_be_base64_of_24_to_64_bytes() {
    assert!(secret_key("whsec_not base64!").is_none());
    assert!(secret_key("whsec_AAAA").is_none(), "3 bytes");
    assert!(secret_key(&format!("whsec_{}", "A".repeat(88))).is_none(), "66 bytes");
}

#[test]
fn the_body_carries_id_tenant_category_recipient_and_text() {
    let got = body(&message(Content::Chat { text: "Your order shipped.".into() }), 1_763_793_058)
        .expect("chat");
    assert_eq!(
        std::str::from_utf8(&got).expect("utf-8"),
        r#"{"type":"notification.chat","timestamp":"2025-11-22T06:30:58Z","data":{"notification_id":"n_01HZX3V4","tenant":"acme","category":"order_updates","recipient_id":"user-1","text":"Your order shipped."}}"#
    );
    let e = body(&message(Content::Sms { body: "hi".into() }), 0).expect_err("wrong channel");
    assert_eq!(e.class, ErrorClass::ProviderConfig);
}

#[test]
fn answers_are_classified() {
    let cases: [(u16, Option<u64>, ErrorClass); 14] = [
        (400, None, ErrorClass::PermanentRecipient),
        (413, None, ErrorClass::PermanentRecipient),
        (422, None, ErrorClass::PermanentRecipient),
        (301, None, ErrorClass::ProviderConfig),
        (401, None, ErrorClass::ProviderConfig),
        (403, None, ErrorClass::ProviderConfig),
        (404, None, ErrorClass::ProviderConfig),
        (405, None, ErrorClass::ProviderConfig),
        (410, None, ErrorClass::ProviderConfig),
        (408, None, ErrorClass::RETRYABLE),
        (429, Some(7_000), ErrorClass::RateLimited { retry_after_ms: Some(7_000) }),
        (500, None, ErrorClass::RETRYABLE),
        (502, None, ErrorClass::RETRYABLE),
        (503, Some(60_000), ErrorClass::Retryable { retry_after_ms: Some(60_000) }),
    ];
    for (status, retry_after_ms, class) in cases {
        match outcome(status, retry_after_ms, b"nope: user@example.com", &[]) {
            SendOutcome::Failed(e) => {
                assert_eq!(e.class, class, "{status}");
                assert_eq!(e.status, Some(status));
                assert!(!e.message.contains("user@example.com"), "{}", e.message);
            }
            other => panic!("{status}: {other:?}"),
        }
    }
    for status in [200, 201, 202, 204] {
        assert_eq!(
            outcome(status, None, b"", &[]),
            SendOutcome::Accepted { provider_message_id: None, delivered: true }
        );
    }
}

fn config_toml(url: &str) -> String {
    format!("url = \"{url}\"\nsecret = \"{SPEC_SECRET}\"\n")
}

#[test]
fn config_is_checked_and_hides_the_secret() {
    let config: WebhookConfig =
        toml::from_str(&config_toml("https://hooks.example.com/courant")).expect("parses");
    assert!(config.validate(&name()).is_ok());
    assert!(!format!("{config:?}").contains("MfKQ9r8"));
    for bad in ["hooks.example.com", "https://u:p@hooks.example.com", "https://h/x?token=1"] {
        let config: WebhookConfig = toml::from_str(&config_toml(bad)).expect("parses");
        assert!(config.validate(&name()).is_err(), "{bad}");
    }
    let short: WebhookConfig =
        toml::from_str("url = \"https://h.example\"\nsecret = \"whsec_AAAA\"").expect("parses");
    assert!(short.validate(&name()).is_err());
    assert!(
        toml::from_str::<WebhookConfig>("url = \"https://h\"\nsecret = \"x\"\nkey = 1").is_err()
    );
}

#[cfg(feature = "http")]
mod http {
    use workflows::ports::Provider;

    use super::*;
    use crate::testing::{Canned, capture_server, hanging_server};

    fn provider(url: &str, timeout_ms: u64) -> Webhook {
        let mut config: WebhookConfig = toml::from_str(&config_toml(url)).expect("parses");
        config.timeout_ms = timeout_ms;
        config.connect_timeout_ms = timeout_ms.min(1_000);
        Webhook::new(name(), config).expect("builds")
    }

    #[tokio::test]
    async fn posts_the_signed_json_the_spec_describes() {
        let (base, mut requests) = capture_server(Canned::json(204, "")).await;
        let text = "Your order shipped.";
        let before = crate::http::now_ms() / 1_000;
        let outcome = provider(&format!("{base}/hooks/courant"), 5_000)
            .send(&message(Content::Chat { text: text.into() }))
            .await;
        assert_eq!(outcome, SendOutcome::Accepted { provider_message_id: None, delivered: true });
        let request = requests.recv().await.expect("captured");
        assert_eq!(request.method, "POST");
        assert_eq!(request.uri.path(), "/hooks/courant");
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(request.header("webhook-id"), "n_01HZX3V4");
        let timestamp: u64 = request.header("webhook-timestamp").parse().expect("unix seconds");
        assert!(timestamp >= before && timestamp <= before + 5, "{timestamp}");
        let signature = request.header("webhook-signature");
        assert_eq!(signature, sign(&key(), "n_01HZX3V4", timestamp, &request.body));
        assert_eq!(
            verify(
                &key(),
                "n_01HZX3V4",
                &timestamp.to_string(),
                signature,
                &request.body,
                timestamp
            ),
            Ok(())
        );
        let sent: serde_json::Value = serde_json::from_slice(&request.body).expect("json");
        assert_eq!(sent["type"], "notification.chat");
        assert_eq!(
            sent["data"],
            serde_json::json!({"notification_id": "n_01HZX3V4", "tenant": "acme",
                "category": "order_updates", "recipient_id": "user-1", "text": text})
        );
        assert_eq!(request.header("authorization"), "");
    }

    #[tokio::test]
    async fn the_id_is_the_same_on_every_attempt() {
        let (base, mut requests) = capture_server(Canned::json(503, "")).await;
        let webhook = provider(&base, 5_000);
        let mut m = message(Content::Chat { text: "hi".into() });
        let first = webhook.send(&m).await;
        m.attempt = steps::model::Attempt(3);
        let second = webhook.send(&m).await;
        assert!(matches!(first, SendOutcome::Failed(ref e) if e.class == ErrorClass::RETRYABLE));
        assert!(matches!(second, SendOutcome::Failed(_)));
        let a = requests.recv().await.expect("first");
        let b = requests.recv().await.expect("second");
        assert_eq!(a.header("webhook-id"), b.header("webhook-id"));
    }

    #[tokio::test]
    async fn gone_is_config_throttling_waits_and_a_hang_is_unknown() {
        let (base, _r) = capture_server(Canned::json(410, "")).await;
        let SendOutcome::Failed(e) =
            provider(&base, 5_000).send(&message(Content::Chat { text: "hi".into() })).await
        else {
            panic!("expected a failure")
        };
        assert_eq!(e.class, ErrorClass::ProviderConfig);
        let (base, _r) = capture_server(Canned::json(429, "").with("retry-after", "9")).await;
        let SendOutcome::Failed(e) =
            provider(&base, 5_000).send(&message(Content::Chat { text: "hi".into() })).await
        else {
            panic!("expected a failure")
        };
        assert_eq!(e.class, ErrorClass::RateLimited { retry_after_ms: Some(9_000) });
        let base = hanging_server().await;
        let SendOutcome::Failed(e) =
            provider(&base, 300).send(&message(Content::Chat { text: "hi".into() })).await
        else {
            panic!("expected a failure")
        };
        assert_eq!(e.class, ErrorClass::Unknown);
    }

    #[test]
    fn provider_debug_hides_the_key() {
        let webhook = provider("http://127.0.0.1:9", 1_000);
        let debug = format!("{webhook:?}");
        assert!(debug.contains("key: ***"), "{debug}");
        assert_eq!(webhook.channel(), steps::model::Channel::Chat);
    }
}
