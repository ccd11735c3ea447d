//! Sandbox tests of the second SMS provider and the chat channel: the fake Vonage, the signed
//! webhook receiver and the fake Slack, on the wire and (with feature `http`) with the real
//! providers, including an SMS failing over from Twilio to Vonage.

use serde_json::Value;
use tokio::net::TcpListener;

use super::*;

async fn start(config: SandboxConfig) -> (String, Sandbox) {
    let sandbox = Sandbox::new(config).expect("valid config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(serve_with(listener, sandbox.clone(), std::future::pending()));
    (base, sandbox)
}

fn quiet() -> Behaviour {
    Behaviour { latency_ms: 0, ..Behaviour::default() }
}

fn config() -> SandboxConfig {
    let mut config = SandboxConfig { seed: Some(3), ..SandboxConfig::default() };
    config.vonage.behaviour = quiet();
    config.webhook.behaviour = quiet();
    config.slack.behaviour = quiet();
    config
}

async fn post_form(url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new().post(url).form(form).send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn vonage_form<'a>(secret: &'a str, to: &'a str, text: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("api_key", VONAGE_KEY_DEFAULT),
        ("api_secret", secret),
        ("from", "courant"),
        ("to", to),
        ("text", text),
        ("client-ref", "n_1"),
    ]
}

#[tokio::test]
async fn vonage_answers_in_its_own_shape() {
    let (base, sandbox) = start(config()).await;
    let url = format!("{base}/sms/json");
    let (status, body) =
        post_form(&url, &vonage_form(VONAGE_SECRET_DEFAULT, "14155550123", "Hi")).await;
    assert_eq!(status, 200);
    assert_eq!(body["message-count"], "1");
    assert_eq!(body["messages"][0]["status"], "0");
    let id = body["messages"][0]["message-id"].as_str().expect("id");
    assert_eq!(id.len(), 16);
    let kept = sandbox.messages(SandboxProvider::Vonage);
    assert_eq!(
        (kept[0].message_id.as_str(), kept[0].notification_id.as_deref()),
        (id, Some("n_1"))
    );
    assert!(kept[0].request.get("api_secret").is_none(), "the secret is not kept");

    // A long text is billed (and answered) as parts.
    let long = "a".repeat(200);
    let (_, body) =
        post_form(&url, &vonage_form(VONAGE_SECRET_DEFAULT, "14155550123", &long)).await;
    assert_eq!(body["message-count"], "2");

    // Errors are a 200 with a status, as Vonage answers them.
    let cases = [
        (vonage_form("wrong", "14155550123", "Hi"), "4"),
        (vonage_form(VONAGE_SECRET_DEFAULT, "+14155550123", "Hi"), "3"),
        (vonage_form(VONAGE_SECRET_DEFAULT, "14155550123", ""), "2"),
        (vonage_form(VONAGE_SECRET_DEFAULT, "14155550123", "Prix: 5 ✅"), "3"),
    ];
    for (form, code) in cases {
        let (status, body) = post_form(&url, &form).await;
        assert_eq!((status, body["messages"][0]["status"].as_str()), (200, Some(code)), "{body}");
    }
    let mut unicode = vonage_form(VONAGE_SECRET_DEFAULT, "14155550123", "Prix: 5 ✅");
    unicode.push(("type", "unicode"));
    let (_, body) = post_form(&url, &unicode).await;
    assert_eq!(body["messages"][0]["status"], "0");
    let stats = sandbox.stats().vonage;
    assert_eq!((stats.accepted, stats.failed.unauthorized, stats.failed.total()), (3, 1, 4));
}

fn signed_webhook(key: &[u8], id: &str, body: &str, at: u64) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post("http://unused")
        .header("webhook-id", id)
        .header("webhook-timestamp", at.to_string())
        .header("webhook-signature", crate::webhook::sign(key, id, at, body.as_bytes()))
        .body(body.to_owned())
}

#[tokio::test]
async fn the_webhook_receiver_verifies_signatures() {
    let (base, sandbox) = start(config()).await;
    let url = format!("{base}/sandbox/webhook");
    let key = crate::webhook::secret_key(WEBHOOK_SECRET_DEFAULT).expect("key");
    let now = now_ms() / 1_000;
    let body = r#"{"type":"notification.chat","data":{"notification_id":"n_1","recipient_id":"ada","text":"Hi"}}"#;
    let send = |request: reqwest::RequestBuilder| async {
        let mut request = request.build().expect("request");
        *request.url_mut() = url.parse().expect("url");
        reqwest::Client::new().execute(request).await.expect("sent").status().as_u16()
    };
    assert_eq!(send(signed_webhook(&key, "n_1", body, now)).await, 204);
    let kept = sandbox.messages(SandboxProvider::Webhook);
    assert_eq!((kept[0].message_id.as_str(), kept[0].to.as_str()), ("n_1", "ada"));
    let other = crate::webhook::secret_key("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").expect("key");
    assert_eq!(send(signed_webhook(&other, "n_1", body, now)).await, 401);
    assert_eq!(send(signed_webhook(&key, "n_1", body, now - 600)).await, 401);
    assert_eq!(send(signed_webhook(&key, "n_1", "not json", now)).await, 400);
    let stats = sandbox.stats().webhook;
    assert_eq!((stats.accepted, stats.failed.unauthorized, stats.failed.invalid), (1, 2, 1));
}

#[tokio::test]
async fn slack_answers_ok_or_its_error_tokens() {
    let (base, sandbox) = start(config()).await;
    let post = |token: &str, body: &str| {
        let url = format!("{base}/services/T000/B000/{token}");
        let body = body.to_owned();
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("sent");
            (response.status().as_u16(), response.text().await.expect("text"))
        }
    };
    assert_eq!(post(SLACK_TOKEN_DEFAULT, r#"{"text":"Hi"}"#).await, (200, "ok".into()));
    assert_eq!(post("wrong", r#"{"text":"Hi"}"#).await, (403, "invalid_token".into()));
    assert_eq!(post(SLACK_TOKEN_DEFAULT, "text=Hi").await, (400, "invalid_payload".into()));
    assert_eq!(post(SLACK_TOKEN_DEFAULT, r#"{"text":""}"#).await, (400, "no_text".into()));
    sandbox
        .set_behaviour(SandboxProvider::Slack, Behaviour { rate_limited_rate: 1.0, ..quiet() })
        .expect("valid");
    assert_eq!(post(SLACK_TOKEN_DEFAULT, r#"{"text":"Hi"}"#).await, (429, "rate_limited".into()));
    assert_eq!(sandbox.messages(SandboxProvider::Slack)[0].request["text"], "Hi");
}

#[test]
fn the_config_reads_the_new_sections_and_checks_the_webhook_secret() {
    let config: SandboxConfig = toml::from_str(
        "[vonage]\napi_key = \"k1\"\napi_secret = \"s1\"\n[slack]\ntoken = \"t1\"\n\
         [webhook.behaviour]\nserver_error_rate = 0.5\n",
    )
    .expect("parses");
    assert!(config.validate().is_ok());
    assert_eq!(config.vonage.api_key, "k1");
    assert!(!format!("{config:?}").contains("s1\""));
    let bad: SandboxConfig =
        toml::from_str("[webhook]\nsecret = \"whsec_AAAA\"\n").expect("parses");
    assert!(bad.validate().is_err());
}

#[cfg(feature = "http")]
mod providers_against_the_sandbox {
    use std::sync::Arc;

    use steps::model::{Channel, ProviderName};
    use steps::outcome::{ErrorClass, SendOutcome};
    use steps::render::Content;
    use workflows::ports::Provider;

    use super::*;
    use crate::slack::Slack;
    use crate::testing::message;
    use crate::vonage::Vonage;
    use crate::webhook::Webhook;
    use crate::{Twilio, TwilioConfig};

    fn name(n: &str) -> ProviderName {
        ProviderName::new(n).expect("id")
    }

    fn chat() -> Content {
        Content::Chat { text: "Order A-1 shipped".into() }
    }

    #[tokio::test]
    async fn dev_chat_configs_work_against_a_default_sandbox() {
        let (base, sandbox) = start(config()).await;
        let (vonage, webhook, slack) = dev_chat_provider_configs(&base);
        let vonage = Vonage::new(name("vonage"), vonage).expect("valid");
        let webhook = Webhook::new(name("webhook"), webhook).expect("valid");
        let slack = Slack::new(name("slack"), slack).expect("valid");
        let sms = message(Content::Sms { body: "Your code: 481516 ✅".into() });
        assert!(matches!(
            vonage.send(&sms).await,
            SendOutcome::Accepted { provider_message_id: Some(_), .. }
        ));
        let delivered = SendOutcome::Accepted { provider_message_id: None, delivered: true };
        assert_eq!(webhook.send(&message(chat())).await, delivered);
        assert_eq!(slack.send(&message(chat())).await, delivered);
        let stats = sandbox.stats();
        assert_eq!(
            (stats.vonage.accepted, stats.webhook.accepted, stats.slack.accepted),
            (1, 1, 1)
        );
        let kept = sandbox.messages(SandboxProvider::Vonage);
        assert_eq!(kept[0].request["type"], "unicode");
        assert_eq!(kept[0].to, "14155550123");
        let hook = sandbox.messages(SandboxProvider::Webhook);
        assert_eq!(hook[0].request["data"]["text"], "Order A-1 shipped");
        assert_eq!(hook[0].notification_id.as_deref(), Some("n_01HZX3V4"));
    }

    #[tokio::test]
    async fn wrong_credentials_and_faults_classify_as_documented() {
        let (base, sandbox) = start(config()).await;
        let (mut vonage, mut webhook, mut slack) = dev_chat_provider_configs(&base);
        vonage.api_secret = crate::Secret::new("wrong").expect("secret");
        webhook.secret =
            crate::Secret::new("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").expect("secret");
        slack.webhook_url =
            crate::Secret::new(format!("{base}/services/T0/B0/wrong")).expect("secret");
        let sms = message(Content::Sms { body: "Hi".into() });
        let failed = |outcome: SendOutcome| match outcome {
            SendOutcome::Failed(e) => e,
            other => panic!("expected a failure: {other:?}"),
        };
        let e = failed(Vonage::new(name("vonage"), vonage).expect("valid").send(&sms).await);
        assert_eq!((e.class, e.code.as_deref()), (ErrorClass::ProviderConfig, Some("4")));
        let e = failed(
            Webhook::new(name("webhook"), webhook).expect("valid").send(&message(chat())).await,
        );
        assert_eq!((e.class, e.status), (ErrorClass::ProviderConfig, Some(401)));
        let e =
            failed(Slack::new(name("slack"), slack).expect("valid").send(&message(chat())).await);
        assert_eq!(
            (e.class, e.code.as_deref()),
            (ErrorClass::ProviderConfig, Some("invalid_token"))
        );

        // Injected faults.
        sandbox
            .set_behaviour(SandboxProvider::Vonage, Behaviour { rate_limited_rate: 1.0, ..quiet() })
            .expect("valid");
        let (vonage, _, _) = dev_chat_provider_configs(&base);
        let e = failed(Vonage::new(name("vonage"), vonage).expect("valid").send(&sms).await);
        assert_eq!(e.class, ErrorClass::RateLimited { retry_after_ms: None });
        sandbox
            .set_behaviour(
                SandboxProvider::Webhook,
                Behaviour { rate_limited_rate: 1.0, retry_after_secs: 4, ..quiet() },
            )
            .expect("valid");
        let (_, webhook, _) = dev_chat_provider_configs(&base);
        let e = failed(
            Webhook::new(name("webhook"), webhook).expect("valid").send(&message(chat())).await,
        );
        assert_eq!(e.class, ErrorClass::RateLimited { retry_after_ms: Some(4_000) });
        sandbox
            .set_behaviour(SandboxProvider::Slack, Behaviour { server_error_rate: 1.0, ..quiet() })
            .expect("valid");
        let (_, _, slack) = dev_chat_provider_configs(&base);
        let e =
            failed(Slack::new(name("slack"), slack).expect("valid").send(&message(chat())).await);
        assert_eq!((e.class, e.code.as_deref()), (ErrorClass::RETRYABLE, Some("rollup_error")));
    }

    /// The failover the second SMS provider exists for, at the provider level: Twilio refuses our
    /// credentials (provider config), so the route's next provider, Vonage, a different API,
    /// takes the same message. (`tests/e2e_sms_chat.rs` shows it through the whole lifecycle.)
    #[tokio::test]
    async fn an_sms_refused_by_twilio_for_credentials_goes_out_through_vonage() {
        let (base, sandbox) = start(config()).await;
        let mut twilio: TwilioConfig = dev_provider_configs(&base).1;
        twilio.auth_token = crate::Secret::new("revoked-token").expect("secret");
        let route: Vec<Arc<dyn Provider>> = vec![
            Arc::new(Twilio::new(name("twilio"), twilio).expect("valid")),
            Arc::new(
                Vonage::new(name("vonage"), dev_chat_provider_configs(&base).0).expect("valid"),
            ),
        ];
        let sms = message(Content::Sms { body: "Your code is 481516".into() });
        let mut outcomes = Vec::new();
        for provider in &route {
            assert_eq!(provider.channel(), Channel::Sms);
            let outcome = provider.send(&sms).await;
            let fail_over =
                matches!(&outcome, SendOutcome::Failed(e) if e.class == ErrorClass::ProviderConfig);
            outcomes.push(outcome);
            if !fail_over {
                break;
            }
        }
        assert!(
            matches!(&outcomes[0], SendOutcome::Failed(e) if e.code.as_deref() == Some("20003"))
        );
        assert!(matches!(&outcomes[1], SendOutcome::Accepted { provider_message_id: Some(_), .. }));
        let stats = sandbox.stats();
        assert_eq!((stats.twilio.failed.unauthorized, stats.vonage.accepted), (1, 1));
        assert_eq!(
            sandbox.messages(SandboxProvider::Vonage)[0].notification_id.as_deref(),
            Some("n_01HZX3V4")
        );
    }
}
