//! Sandbox tests: credentials, validation, injected faults, stats, bounded message keeping,
//! seeded replay and shutdown. With feature `http`, also the real providers against it.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::*;

/// A running sandbox: its base URL, its handle and its shutdown trigger.
struct Running {
    base: String,
    sandbox: Sandbox,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.done.await.expect("serve task")
    }
}

async fn start(config: SandboxConfig) -> Running {
    let sandbox = Sandbox::new(config).expect("valid config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(serve_with(listener, sandbox.clone(), async move {
        let _ = stopped.await;
    }));
    Running { base, sandbox, stop: Some(stop), done }
}

fn quiet() -> Behaviour {
    Behaviour { latency_ms: 0, ..Behaviour::default() }
}

fn config_with(sendgrid: Behaviour, twilio: Behaviour) -> SandboxConfig {
    let mut config = SandboxConfig { seed: Some(7), ..SandboxConfig::default() };
    config.sendgrid.behaviour = sendgrid;
    config.twilio.behaviour = twilio;
    config
}

fn mail(to: &str, notification_id: &str) -> Value {
    json!({
        "personalizations": [{
            "to": [{"email": to}],
            "custom_args": {"notification_id": notification_id, "attempt": "1", "tenant": "acme"}
        }],
        "from": {"email": "noreply@shop.example"},
        "subject": "Hello",
        "content": [{"type": "text/plain", "value": "Hi"}, {"type": "text/html", "value": "<p>Hi</p>"}]
    })
}

async fn post_mail(base: &str, key: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/v3/mail/send"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("sent")
}

fn messages_url(base: &str) -> String {
    format!("{base}/2010-04-01/Accounts/{TWILIO_ACCOUNT_DEFAULT}/Messages.json")
}

async fn post_sms(base: &str, token: &str, form: &[(&str, &str)]) -> reqwest::Response {
    reqwest::Client::new()
        .post(messages_url(base))
        .basic_auth(TWILIO_ACCOUNT_DEFAULT, Some(token))
        .form(form)
        .send()
        .await
        .expect("sent")
}

#[tokio::test]
async fn sendgrid_accepts_a_valid_request_and_keeps_it() {
    let running = start(config_with(quiet(), quiet())).await;
    let response =
        post_mail(&running.base, SENDGRID_KEY_DEFAULT, &mail("a@b.example", "n_1")).await;
    assert_eq!(response.status(), 202);
    let id = response.headers()["x-message-id"].to_str().expect("text").to_owned();
    assert_eq!(id.len(), 22);
    assert_eq!(response.text().await.expect("body"), "");

    let kept = running.sandbox.messages(SandboxProvider::Sendgrid);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].message_id, id);
    assert_eq!(kept[0].to, "a@b.example");
    assert_eq!(kept[0].notification_id.as_deref(), Some("n_1"));
    assert!(kept[0].answered);
    assert_eq!(kept[0].request["subject"], "Hello");
    running.stop().await.expect("stopped");
}

#[tokio::test]
async fn sendgrid_rejects_a_wrong_key_in_its_error_shape() {
    let running = start(config_with(quiet(), quiet())).await;
    let response = post_mail(&running.base, "SG.wrong", &mail("a@b.example", "n_1")).await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        json!({"errors": [{
            "field": null,
            "message": "The provided authorization grant is invalid, expired, or revoked",
            "help": null
        }]})
    );
    let stats = running.sandbox.stats();
    assert_eq!(stats.sendgrid.failed.unauthorized, 1);
    assert_eq!(stats.sendgrid.accepted, 0);
    assert!(running.sandbox.messages(SandboxProvider::Sendgrid).is_empty());
}

#[tokio::test]
async fn sendgrid_validates_the_body_in_its_error_shape() {
    let running = start(config_with(quiet(), quiet())).await;
    let mut body = mail("not-an-address", "n_1");
    body["content"] =
        json!([{"type": "text/html", "value": "<p>x</p>"}, {"type": "text/plain", "value": "x"}]);
    body["personalizations"][0]["custom_args"]["attempt"] = json!(1);
    let response = post_mail(&running.base, SENDGRID_KEY_DEFAULT, &body).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        ["personalizations.0.to.0.email", "personalizations.0.custom_args", "content"]
    );
    assert_eq!(body["errors"][0]["message"], "Does not contain a valid address.");
    assert_eq!(body["errors"][1]["message"], "Invalid type. Expected: string, given: number.");

    let response = post_mail(&running.base, SENDGRID_KEY_DEFAULT, &json!({"subject": "x"})).await;
    let body: Value = response.json().await.expect("json");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["personalizations", "from.email", "content"]);

    let response = reqwest::Client::new()
        .post(format!("{}/v3/mail/send", running.base))
        .bearer_auth(SENDGRID_KEY_DEFAULT)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["errors"][0]["message"], "Bad Request");
    assert_eq!(running.sandbox.stats().sendgrid.failed.invalid, 3);
}

#[tokio::test]
async fn twilio_accepts_a_valid_request_with_a_message_resource() {
    let running = start(config_with(quiet(), quiet())).await;
    let callback = "https://courant.example/v1/webhooks/twilio/twilio?n=n_42";
    let response = post_sms(
        &running.base,
        TWILIO_TOKEN_DEFAULT,
        &[
            ("To", "+14155550123"),
            ("From", "+15005550006"),
            ("Body", "Hi"),
            ("StatusCallback", callback),
        ],
    )
    .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    let sid = body["sid"].as_str().expect("sid");
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    assert!(sid[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{sid}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["to"], "+14155550123");
    assert_eq!(body["from"], "+15005550006");
    assert_eq!(body["num_segments"], "1");
    assert_eq!(body["account_sid"], TWILIO_ACCOUNT_DEFAULT);
    assert_eq!(
        body["uri"],
        format!("/2010-04-01/Accounts/{TWILIO_ACCOUNT_DEFAULT}/Messages/{sid}.json")
    );
    assert!(body["date_created"].as_str().is_some_and(|d| d.ends_with(" +0000")));

    let kept = running.sandbox.messages(SandboxProvider::Twilio);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].message_id, sid);
    assert_eq!(kept[0].notification_id.as_deref(), Some("n_42"));
    assert_eq!(kept[0].request["Body"], "Hi");
}

#[tokio::test]
async fn twilio_rejects_a_wrong_token_in_its_error_shape() {
    let running = start(config_with(quiet(), quiet())).await;
    let response = post_sms(
        &running.base,
        "wrong-token",
        &[("To", "+14155550123"), ("From", "+15005550006"), ("Body", "x")],
    )
    .await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        json!({
            "code": 20003,
            "message": "Authenticate",
            "more_info": "https://www.twilio.com/docs/errors/20003",
            "status": 401
        })
    );
    assert_eq!(running.sandbox.stats().twilio.failed.unauthorized, 1);
}

#[tokio::test]
async fn twilio_validates_the_form_and_honours_test_numbers() {
    let running = start(config_with(quiet(), quiet())).await;
    type Case<'a> = (&'a [(&'a str, &'a str)], u16, u32);
    let cases: [Case<'_>; 6] = [
        (&[("From", "+15005550006"), ("Body", "x")], 400, 21604),
        (&[("To", "12345"), ("From", "+15005550006"), ("Body", "x")], 400, 21211),
        (&[("To", "+14155550123"), ("Body", "x")], 400, 21603),
        (&[("To", "+14155550123"), ("From", "+15005550006")], 400, 21602),
        (&[("To", "+15005550004"), ("From", "+15005550006"), ("Body", "x")], 400, 21610),
        (&[("To", "+14155550123"), ("From", "+15005550007"), ("Body", "x")], 400, 21606),
    ];
    for (form, status, code) in cases {
        let response = post_sms(&running.base, TWILIO_TOKEN_DEFAULT, form).await;
        assert_eq!(response.status(), status, "{form:?}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["code"], code, "{form:?}");
        assert_eq!(body["status"], status);
        assert_eq!(body["more_info"], format!("https://www.twilio.com/docs/errors/{code}"));
    }
    let stats = running.sandbox.stats().twilio;
    assert_eq!(stats.failed.invalid, 5);
    assert_eq!(stats.failed.recipient, 1);
    assert_eq!(stats.accepted, 0);
}

#[tokio::test]
async fn a_server_error_rate_of_one_always_fails_with_500_or_503() {
    let faulty = Behaviour { server_error_rate: 1.0, ..quiet() };
    let running = start(config_with(faulty.clone(), faulty)).await;
    for i in 0..10 {
        let response =
            post_mail(&running.base, SENDGRID_KEY_DEFAULT, &mail("a@b.example", &format!("n_{i}")))
                .await;
        assert!(matches!(response.status().as_u16(), 500 | 503), "{}", response.status());
        let body: Value = response.json().await.expect("json");
        assert!(body["errors"][0]["message"].is_string());
        let response = post_sms(
            &running.base,
            TWILIO_TOKEN_DEFAULT,
            &[("To", "+14155550123"), ("From", "+15005550006"), ("Body", "x")],
        )
        .await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("json");
        assert!(
            matches!((status, body["code"].as_u64()), (500, Some(20500)) | (503, Some(20503))),
            "{status} {body}"
        );
    }
    let stats = running.sandbox.stats();
    assert_eq!(stats.sendgrid.failed.server_error, 10);
    assert_eq!(stats.twilio.failed.server_error, 10);
    assert_eq!(stats.sendgrid.accepted + stats.twilio.accepted, 0);
    assert!(running.sandbox.messages(SandboxProvider::Sendgrid).is_empty());
}

#[tokio::test]
async fn a_rate_limited_rate_of_one_always_answers_429_with_retry_after() {
    let limited = Behaviour { rate_limited_rate: 1.0, retry_after_secs: 9, ..quiet() };
    let running = start(config_with(limited.clone(), limited)).await;
    let response =
        post_mail(&running.base, SENDGRID_KEY_DEFAULT, &mail("a@b.example", "n_1")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "9");
    assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
    let response = post_sms(
        &running.base,
        TWILIO_TOKEN_DEFAULT,
        &[("To", "+14155550123"), ("From", "+15005550006"), ("Body", "x")],
    )
    .await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "9");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], 20429);
    let stats = running.sandbox.stats();
    assert_eq!(stats.sendgrid.failed.rate_limited, 1);
    assert_eq!(stats.twilio.failed.rate_limited, 1);
}

#[tokio::test]
async fn stats_endpoint_counts_every_request_once() {
    let running = start(config_with(quiet(), quiet())).await;
    post_mail(&running.base, SENDGRID_KEY_DEFAULT, &mail("a@b.example", "n_1")).await;
    post_mail(&running.base, SENDGRID_KEY_DEFAULT, &mail("a@b.example", "n_2")).await;
    post_mail(&running.base, "bad", &mail("a@b.example", "n_3")).await;
    post_mail(&running.base, SENDGRID_KEY_DEFAULT, &json!({})).await;
    let stats: Stats = reqwest::get(format!("{}/sandbox/stats", running.base))
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(stats.sendgrid.received, 4);
    assert_eq!(stats.sendgrid.accepted, 2);
    assert_eq!(stats.sendgrid.failed.unauthorized, 1);
    assert_eq!(stats.sendgrid.failed.invalid, 1);
    assert_eq!(stats.sendgrid.received, stats.sendgrid.accepted + stats.sendgrid.failed.total());
    assert_eq!(stats.twilio, ProviderStats::default());

    let listed: Vec<SandboxMessage> =
        reqwest::get(format!("{}/sandbox/messages?provider=sendgrid&limit=1", running.base))
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].notification_id.as_deref(), Some("n_2"));
    let bad = reqwest::get(format!("{}/sandbox/messages?provider=nosuch", running.base))
        .await
        .expect("sent");
    assert_eq!(bad.status(), 400);

    let reset = reqwest::Client::new()
        .post(format!("{}/sandbox/reset", running.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(reset.status(), 204);
    assert_eq!(running.sandbox.stats(), Stats::default());
}

#[tokio::test]
async fn kept_messages_are_bounded() {
    let mut config = config_with(quiet(), quiet());
    config.messages_kept_max = 3;
    let running = start(config).await;
    for i in 0..5 {
        let response =
            post_mail(&running.base, SENDGRID_KEY_DEFAULT, &mail("a@b.example", &format!("n_{i}")))
                .await;
        assert_eq!(response.status(), 202);
    }
    let ids: Vec<Option<String>> = running
        .sandbox
        .messages(SandboxProvider::Sendgrid)
        .into_iter()
        .map(|m| m.notification_id)
        .collect();
    assert_eq!(ids, [Some("n_2".into()), Some("n_3".into()), Some("n_4".into())]);
    assert_eq!(running.sandbox.stats().sendgrid.accepted, 5);
}

#[tokio::test]
async fn behaviour_can_change_at_run_time() {
    let running = start(config_with(quiet(), quiet())).await;
    let url = format!("{}/sandbox/behaviour/sendgrid", running.base);
    let client = reqwest::Client::new();
    let put = client
        .put(&url)
        .json(&json!({"server_error_rate": 1.0, "latency_ms": 0}))
        .send()
        .await
        .expect("sent");
    assert_eq!(put.status(), 204);
    let got: Behaviour = client.get(&url).send().await.expect("sent").json().await.expect("json");
    assert_eq!(got.server_error_rate, 1.0);
    let response =
        post_mail(&running.base, SENDGRID_KEY_DEFAULT, &mail("a@b.example", "n_1")).await;
    assert!(response.status().is_server_error());

    let bad = client
        .put(&url)
        .json(&json!({"hang_rate": 0.8, "server_error_rate": 0.8}))
        .send()
        .await
        .expect("sent");
    assert_eq!(bad.status(), 400);
    let unknown = client.put(&url).json(&json!({"error_rate": 1.0})).send().await.expect("sent");
    assert_eq!(unknown.status(), 400);
    let missing = client
        .get(format!("{}/sandbox/behaviour/nosuch", running.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_seed_replays_the_same_answers() {
    async fn statuses(seed: u64) -> Vec<u16> {
        let flaky = Behaviour { server_error_rate: 0.3, rate_limited_rate: 0.3, ..quiet() };
        let mut config = config_with(flaky, quiet());
        config.seed = Some(seed);
        let running = start(config).await;
        let mut statuses = Vec::new();
        for i in 0..30 {
            let r = post_mail(
                &running.base,
                SENDGRID_KEY_DEFAULT,
                &mail("a@b.example", &format!("n_{i}")),
            )
            .await;
            statuses.push(r.status().as_u16());
        }
        statuses
    }
    let first = statuses(11).await;
    assert_eq!(first, statuses(11).await);
    assert!(first.contains(&202) && first.contains(&429), "{first:?}");
    assert_ne!(first, statuses(12).await);
}

#[tokio::test]
async fn a_hang_keeps_the_message_and_shutdown_releases_it() {
    let hanging = Behaviour { hang_rate: 1.0, hang_ms: HANG_MS_MAX, ..quiet() };
    let running = start(config_with(hanging, quiet())).await;
    let client =
        reqwest::Client::builder().timeout(Duration::from_millis(300)).build().expect("client");
    let result = client
        .post(format!("{}/v3/mail/send", running.base))
        .bearer_auth(SENDGRID_KEY_DEFAULT)
        .json(&mail("a@b.example", "n_1"))
        .send()
        .await;
    assert!(result.is_err_and(|e| e.is_timeout()));
    let kept = running.sandbox.messages(SandboxProvider::Sendgrid);
    assert_eq!(kept.len(), 1);
    assert!(!kept[0].answered);
    assert_eq!(running.sandbox.stats().sendgrid.failed.hung, 1);
    // A hang of ten minutes would hold graceful shutdown; the shutdown signal releases it.
    tokio::time::timeout(Duration::from_secs(5), running.stop())
        .await
        .expect("shutdown was not held by the hung request")
        .expect("served");
}

#[tokio::test]
async fn serve_refuses_an_invalid_config() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut config = SandboxConfig::default();
    config.twilio.behaviour.hang_rate = 2.0;
    let error = serve(listener, config, async {}).await.expect_err("invalid");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("hang_rate"), "{error}");
}

#[test]
fn config_reads_from_toml_and_hides_secrets() {
    let config: SandboxConfig = toml::from_str(
        r#"
        seed = 7
        [sendgrid]
        api_key = "dev-key"
        [sendgrid.behaviour]
        server_error_rate = 0.25
        jitter_ms = 20
        [twilio]
        auth_token = "dev-token"
        "#,
    )
    .expect("parses");
    assert!(config.validate().is_ok());
    assert_eq!(config.seed, Some(7));
    assert_eq!(config.messages_kept_max, MESSAGES_KEPT_DEFAULT);
    assert_eq!(config.sendgrid.behaviour.server_error_rate, 0.25);
    assert_eq!(config.sendgrid.behaviour.latency_ms, 5);
    assert_eq!(config.twilio.account_sid, TWILIO_ACCOUNT_DEFAULT);
    let debug = format!("{config:?}");
    assert!(!debug.contains("dev-key") && !debug.contains("dev-token"), "{debug}");
    assert!(toml::from_str::<SandboxConfig>("[sendgrid]\napi_kye = \"x\"").is_err());
}

#[test]
fn config_bounds_are_enforced() {
    let config = SandboxConfig { messages_kept_max: 0, ..SandboxConfig::default() };
    assert!(config.validate().is_err());
    let mut config = SandboxConfig::default();
    config.sendgrid.behaviour.rate_limited_rate = -0.1;
    assert!(config.validate().is_err());
    let mut config = SandboxConfig::default();
    config.sendgrid.behaviour.latency_ms = LATENCY_MS_MAX + 1;
    assert!(config.validate().is_err());
    let mut config = SandboxConfig::default();
    config.twilio.account_sid = "AC1".into();
    assert!(config.validate().is_err());
}

#[test]
fn dates_are_rfc_2822() {
    assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    assert_eq!(rfc2822(1_692_853_305), "Thu, 24 Aug 2023 05:01:45 +0000");
    assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
}

#[cfg(feature = "http")]
mod providers_against_the_sandbox {
    use steps::model::ProviderName;
    use steps::outcome::{ErrorClass, SendOutcome};
    use steps::render::Content;
    use workflows::ports::Provider;

    use super::*;
    use crate::testing::{TO_EMAIL, TO_PHONE, message};
    use crate::{SendGrid, SendGridConfig, Twilio, TwilioConfig};

    fn sendgrid(base: &str, key: &str, timeout_ms: u64) -> SendGrid {
        let config: SendGridConfig = toml::from_str(&format!(
            "base_url = \"{base}\"\napi_key = \"{key}\"\nfrom = \"noreply@shop.example\"\n\
             timeout_ms = {timeout_ms}\nconnect_timeout_ms = {}\n",
            timeout_ms.min(1_000)
        ))
        .expect("parses");
        SendGrid::new(ProviderName::new("sendgrid").expect("id"), config).expect("builds")
    }

    fn twilio(base: &str, token: &str) -> Twilio {
        let config: TwilioConfig = toml::from_str(&format!(
            "base_url = \"{base}\"\naccount_sid = \"{TWILIO_ACCOUNT_DEFAULT}\"\nauth_token = \"{token}\"\n\
             from = \"+15005550006\"\nstatus_callback_base_url = \"https://courant.example\"\n"
        ))
        .expect("parses");
        Twilio::new(ProviderName::new("twilio").expect("id"), config).expect("builds")
    }

    fn email() -> Content {
        Content::Email {
            subject: "Hi".into(),
            html: Some("<p>Hi</p>".into()),
            text: Some("Hi".into()),
        }
    }

    #[tokio::test]
    async fn dev_configs_work_against_a_default_sandbox() {
        let running = start(SandboxConfig { seed: Some(1), ..SandboxConfig::default() }).await;
        let (sendgrid_config, twilio_config) = dev_provider_configs(&running.base);
        let name = |n: &str| ProviderName::new(n).expect("id");
        let sendgrid = SendGrid::new(name("sendgrid"), sendgrid_config).expect("valid");
        let twilio = Twilio::new(name("twilio"), twilio_config).expect("valid");
        assert!(matches!(sendgrid.send(&message(email())).await, SendOutcome::Accepted { .. }));
        let sms = message(Content::Sms { body: "Hi".into() });
        assert!(matches!(twilio.send(&sms).await, SendOutcome::Accepted { .. }));
        let stats = running.sandbox.stats();
        assert_eq!((stats.sendgrid.accepted, stats.twilio.accepted), (1, 1));
    }

    #[tokio::test]
    async fn both_providers_are_accepted_and_recorded() {
        let running = start(config_with(quiet(), quiet())).await;
        let outcome =
            sendgrid(&running.base, SENDGRID_KEY_DEFAULT, 5_000).send(&message(email())).await;
        let SendOutcome::Accepted { provider_message_id: Some(id), delivered: false } = outcome
        else {
            panic!("expected acceptance: {outcome:?}")
        };
        let kept = running.sandbox.messages(SandboxProvider::Sendgrid);
        assert_eq!(kept[0].message_id, id);
        assert_eq!(kept[0].to, TO_EMAIL);
        assert_eq!(kept[0].notification_id.as_deref(), Some("n_01HZX3V4"));

        let outcome = twilio(&running.base, TWILIO_TOKEN_DEFAULT)
            .send(&message(Content::Sms { body: "Hi".into() }))
            .await;
        let SendOutcome::Accepted { provider_message_id: Some(sid), delivered: false } = outcome
        else {
            panic!("expected acceptance: {outcome:?}")
        };
        let kept = running.sandbox.messages(SandboxProvider::Twilio);
        assert_eq!(kept[0].message_id, sid);
        assert_eq!(kept[0].to, TO_PHONE);
        assert_eq!(kept[0].notification_id.as_deref(), Some("n_01HZX3V4"));
    }

    #[tokio::test]
    async fn wrong_credentials_classify_as_provider_config() {
        let running = start(config_with(quiet(), quiet())).await;
        let outcome = sendgrid(&running.base, "SG.wrong", 5_000).send(&message(email())).await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::ProviderConfig);
        let outcome =
            twilio(&running.base, "wrong").send(&message(Content::Sms { body: "Hi".into() })).await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::ProviderConfig);
        assert_eq!(e.code.as_deref(), Some("20003"));
    }

    #[tokio::test]
    async fn injected_faults_classify_as_documented() {
        let faulty = Behaviour { server_error_rate: 1.0, ..quiet() };
        let limited = Behaviour { rate_limited_rate: 1.0, retry_after_secs: 3, ..quiet() };
        let running = start(config_with(faulty, limited)).await;
        let outcome =
            sendgrid(&running.base, SENDGRID_KEY_DEFAULT, 5_000).send(&message(email())).await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::RETRYABLE);
        let outcome = twilio(&running.base, TWILIO_TOKEN_DEFAULT)
            .send(&message(Content::Sms { body: "Hi".into() }))
            .await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::RateLimited { retry_after_ms: Some(3_000) });
    }

    #[tokio::test]
    async fn a_hang_is_an_unknown_outcome_for_a_message_that_was_taken() {
        let hanging = Behaviour { hang_rate: 1.0, ..quiet() };
        let running = start(config_with(hanging, quiet())).await;
        let outcome =
            sendgrid(&running.base, SENDGRID_KEY_DEFAULT, 300).send(&message(email())).await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::Unknown);
        // The provider did take it: exactly the case the lifecycle must reconcile, not resend.
        assert_eq!(running.sandbox.messages(SandboxProvider::Sendgrid).len(), 1);
        running.stop().await.expect("stopped");
    }

    #[tokio::test]
    async fn test_numbers_drive_permanent_recipient_failures() {
        let running = start(config_with(quiet(), quiet())).await;
        let mut m = message(Content::Sms { body: "Hi".into() });
        m.recipient.phone = Some(steps::model::PhoneNumber::parse("+15005550004").expect("phone"));
        let outcome = twilio(&running.base, TWILIO_TOKEN_DEFAULT).send(&m).await;
        let SendOutcome::Failed(e) = outcome else { panic!("expected failure: {outcome:?}") };
        assert_eq!(e.class, ErrorClass::PermanentRecipient);
        assert_eq!(e.code.as_deref(), Some("21610"));
    }
}

/// A receiver of the sandbox's receipts: every post's headers and body, in arrival order.
async fn receipt_sink()
-> (String, tokio::sync::mpsc::UnboundedReceiver<(axum::http::HeaderMap, String, Vec<u8>)>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, uri.to_string(), body.to_vec()));
                StatusCode::OK
            }
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, rx)
}

fn receipts(enabled: bool) -> ReceiptBehaviour {
    ReceiptBehaviour { enabled, delay_ms: 20, ..ReceiptBehaviour::default() }
}

async fn collect(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(axum::http::HeaderMap, String, Vec<u8>)>,
    n: usize,
) -> Vec<(axum::http::HeaderMap, String, Vec<u8>)> {
    let mut got = Vec::new();
    while got.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        got.push(next.expect("a receipt in time").expect("open"));
    }
    // Nothing more comes.
    assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv()).await.is_err());
    got
}

#[tokio::test]
async fn sendgrid_receipts_are_signed_with_the_sandbox_key_and_name_our_ids() {
    let (sink, mut rx) = receipt_sink().await;
    let mut config = config_with(quiet(), quiet());
    config.sendgrid.receipts = receipts(true);
    config.sendgrid.receipts_url = Some(format!("{sink}/v1/webhooks/sendgrid/sendgrid"));
    let running = start(config).await;
    let key = crate::sendgrid::webhook::EventWebhookKey::from_base64_der(
        &running.sandbox.sendgrid_webhook_key(),
    )
    .unwrap();
    let response =
        post_mail(&running.base, SENDGRID_KEY_DEFAULT, &mail("a@example.com", "n_1")).await;
    assert_eq!(response.status(), 202);
    let got = collect(&mut rx, 2).await;
    let mut kinds = Vec::new();
    for (headers, _, body) in &got {
        let header = |name: &str| headers.get(name).map(|v| v.as_bytes());
        let now_s = now_ms() / 1_000;
        crate::sendgrid::webhook::verify(
            &key,
            header(crate::sendgrid::webhook::SIGNATURE_HEADER),
            header(crate::sendgrid::webhook::TIMESTAMP_HEADER),
            body,
            now_s,
            300,
        )
        .expect("signed with the sandbox's key");
        let parsed = crate::sendgrid::webhook::parse(body).unwrap();
        assert_eq!(parsed.events[0].notification_id.as_str(), "n_1");
        assert_eq!(parsed.events[0].tenant.as_str(), "acme");
        kinds.push(parsed.events[0].kind);
    }
    use crate::receipt::ReceiptKind;
    assert_eq!(kinds, [ReceiptKind::Accepted, ReceiptKind::Delivered]);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn twilio_receipts_go_to_the_status_callback_signed_with_the_auth_token() {
    let (sink, mut rx) = receipt_sink().await;
    let mut config = config_with(quiet(), quiet());
    config.twilio.receipts = ReceiptBehaviour { undelivered_rate: 1.0, ..receipts(true) };
    let running = start(config).await;
    let callback = format!("{sink}/v1/webhooks/twilio/twilio?n=n_42&t=acme&a=1");
    let response = post_sms(
        &running.base,
        TWILIO_TOKEN_DEFAULT,
        &[
            ("To", "+14155550123"),
            ("From", "+15005550006"),
            ("Body", "Hi"),
            ("StatusCallback", &callback),
        ],
    )
    .await;
    assert_eq!(response.status(), 201);
    let got = collect(&mut rx, 2).await;
    let mut kinds = Vec::new();
    for (headers, uri, body) in &got {
        let params = crate::twilio::webhook::form(body).unwrap();
        let url = format!("{sink}{uri}");
        crate::twilio::webhook::verify(
            TWILIO_TOKEN_DEFAULT.as_bytes(),
            headers.get(crate::twilio::webhook::SIGNATURE_HEADER).map(|v| v.as_bytes()),
            &url,
            &params,
        )
        .expect("signed with the auth token over the callback URL");
        let query =
            crate::twilio::webhook::form(uri.split_once('?').unwrap().1.as_bytes()).unwrap();
        kinds.push(crate::twilio::webhook::parse(&query, &params).unwrap().events[0].kind);
    }
    use crate::receipt::ReceiptKind;
    assert_eq!(kinds, [ReceiptKind::Accepted, ReceiptKind::Undelivered]);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn receipt_faults_lose_duplicate_and_reorder_the_final_receipt() {
    use crate::receipt::ReceiptKind;
    let cases = [
        (ReceiptBehaviour { lost_rate: 1.0, ..receipts(true) }, vec![ReceiptKind::Accepted]),
        (
            ReceiptBehaviour { duplicated_rate: 1.0, ..receipts(true) },
            vec![ReceiptKind::Accepted, ReceiptKind::Delivered, ReceiptKind::Delivered],
        ),
        (
            ReceiptBehaviour { reordered_rate: 1.0, ..receipts(true) },
            vec![ReceiptKind::Delivered, ReceiptKind::Accepted],
        ),
        (
            ReceiptBehaviour { late_rate: 1.0, late_ms: 400, ..receipts(true) },
            vec![ReceiptKind::Accepted, ReceiptKind::Delivered],
        ),
        (receipts(false), vec![]),
    ];
    for (behaviour, expected) in cases {
        let (sink, mut rx) = receipt_sink().await;
        let mut config = config_with(quiet(), quiet());
        config.sendgrid.receipts = behaviour.clone();
        config.sendgrid.receipts_url = Some(format!("{sink}/hook"));
        let running = start(config).await;
        let started = std::time::Instant::now();
        let response =
            post_mail(&running.base, SENDGRID_KEY_DEFAULT, &mail("a@example.com", "n_1")).await;
        assert_eq!(response.status(), 202);
        let got = collect(&mut rx, expected.len()).await;
        let kinds: Vec<ReceiptKind> = got
            .iter()
            .map(|(_, _, body)| crate::sendgrid::webhook::parse(body).unwrap().events[0].kind)
            .collect();
        assert_eq!(kinds, expected, "{behaviour:?}");
        if behaviour.late_rate > 0.0 {
            assert!(started.elapsed() >= Duration::from_millis(400), "the late receipt was late");
        }
        running.stop().await.unwrap();
    }
}

#[test]
fn receipt_behaviour_is_validated() {
    let mut config = SandboxConfig::default();
    config.twilio.receipts.lost_rate = 1.5;
    assert!(Sandbox::new(config).is_err());
    let mut config = SandboxConfig::default();
    config.sendgrid.receipts.late_ms = LATE_MS_MAX + 1;
    assert!(Sandbox::new(config).is_err());
    let mut config = SandboxConfig::default();
    config.sendgrid.receipts_url = Some("not a url".into());
    assert!(Sandbox::new(config).is_err());
}
