//! FCM: the config, the message body, and (feature `http`) the exact requests against a local
//! server: the OAuth2 token exchange and `messages:send`, per device.

use serde_json::json;
use steps::model::ProviderName;
use steps::recipient::{Device, DeviceToken, Platform};
use steps::render::Content;
use workflows::ports::SendHints;

use super::config::FcmConfig;
use super::request::{Claims, send_body};
use crate::testing::message;

/// The committed test-only service account (see `tests/fixtures/push/README.md`).
pub(crate) const SERVICE_ACCOUNT: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/push/fcm-service-account-test-only.json");
/// Its public key.
pub(crate) const PUBLIC_KEY: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/push/fcm-test-only.pub.pem");
const CLIENT_EMAIL: &str = "courant-test@courant-test.iam.gserviceaccount.com";

fn name() -> ProviderName {
    ProviderName::new("fcm").expect("id")
}

fn config(base_url: &str) -> FcmConfig {
    toml::from_str(&format!(
        r#"
base_url = "{base_url}"
project_id = "courant-test"
service_account_file = "{SERVICE_ACCOUNT}"
token_uri = "{base_url}/token"
"#
    ))
    .expect("parses")
}

fn device(platform: Platform, token: &str) -> Device {
    Device::new(platform, DeviceToken::parse(token).expect("token"), 1)
}

fn push(devices: Vec<Device>) -> workflows::ports::Outbound {
    let mut message =
        message(Content::Push { title: "Order shipped".into(), body: "It is on its way".into() });
    message.devices = devices;
    message
}

#[test]
fn body_follows_the_v1_message_format() {
    let message = push(vec![]);
    let android = device(Platform::Android, "android-token-1");
    let hints = SendHints {
        collapse_key: Some("order-42".into()),
        critical: true,
        expires_at_ms: Some(1_700_000_600_000),
    };
    let body = send_body(&message, &android, &hints, 1_700_000_000_000).expect("push content");
    assert_eq!(
        serde_json::to_value(&body).expect("json"),
        json!({"message": {
            "token": "android-token-1",
            "notification": {"title": "Order shipped", "body": "It is on its way"},
            "data": {"notification_id": "n_01HZX3V4", "tenant": "acme", "attempt": "2"},
            "android": {"priority": "HIGH", "collapse_key": "order-42", "ttl": "600s"}
        }})
    );
    let web = device(Platform::Web, "web-token-1");
    let body = send_body(&message, &web, &SendHints::default(), 0).expect("push content");
    assert_eq!(
        serde_json::to_value(&body).expect("json")["message"]["webpush"],
        json!({"headers": {"Urgency": "normal"}})
    );
    let sms = message_sms();
    let error = send_body(&sms, &web, &SendHints::default(), 0).expect_err("wrong channel");
    assert_eq!(error.class, steps::outcome::ErrorClass::ProviderConfig);
}

fn message_sms() -> workflows::ports::Outbound {
    message(Content::Sms { body: "hi".into() })
}

#[test]
fn claims_follow_the_service_account_flow() {
    let claims = Claims::new(CLIENT_EMAIL, "https://oauth2.googleapis.com/token", 1_700_000_000);
    assert_eq!(
        serde_json::to_value(&claims).expect("json"),
        json!({
            "iss": CLIENT_EMAIL,
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "aud": "https://oauth2.googleapis.com/token",
            "iat": 1_700_000_000_u64,
            "exp": 1_700_003_600_u64
        })
    );
}

#[test]
fn config_reads_the_key_file_and_rejects_bad_values() {
    let config = config("https://fcm.googleapis.com");
    assert!(config.validate(&name()).is_ok());
    let account = config.load_key(&name()).expect("key file");
    assert_eq!(account.client_email, CLIENT_EMAIL);
    assert_eq!(account.token_uri, "https://fcm.googleapis.com/token");
    let debug = format!("{account:?} {config:?}");
    assert!(!debug.contains("PRIVATE KEY") && !debug.contains(CLIENT_EMAIL), "{debug}");

    let mut bad = config.clone();
    bad.project_id = "a/b".into();
    assert!(bad.validate(&name()).is_err());
    let mut missing = config.clone();
    missing.service_account_file = "/nonexistent/key.json".into();
    let error = missing.load_key(&name()).expect_err("no file");
    assert!(error.to_string().contains("service_account_file"), "{error}");
    let unknown =
        "base_url = \"https://x\"\nproject_id = \"p\"\nservice_account_file = \"k\"\nkey = 1\n";
    assert!(toml::from_str::<FcmConfig>(unknown).is_err());
}

#[cfg(feature = "http")]
mod http {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::IntoResponse;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use serde_json::Value;
    use steps::outcome::{ErrorClass, SendOutcome};
    use workflows::ports::{DeviceOutcome, Provider};

    use super::*;
    use crate::fcm::Fcm;
    use crate::testing::{Captured, serve};

    /// How the fake answers: the token endpoint's answer, and `messages:send`'s by the call's
    /// number (from 0) and the device token.
    type SendScript = dyn Fn(usize, &str) -> (u16, String) + Send + Sync;

    struct Fake {
        token: (u16, String),
        send: Box<SendScript>,
        sends: AtomicUsize,
        seen: Mutex<Vec<Captured>>,
    }

    impl Fake {
        fn requests(&self) -> Vec<(String, String)> {
            let seen = self.seen.lock().expect("lock");
            seen.iter().map(|c| (c.method.to_string(), c.uri.path().to_owned())).collect()
        }

        fn token_requests(&self) -> usize {
            self.requests().iter().filter(|(_, p)| p == "/token").count()
        }
    }

    fn token_ok(expires_in: u64) -> (u16, String) {
        let body = json!({"access_token": "ya29.test-access-token", "expires_in": expires_in,
                          "token_type": "Bearer"});
        (200, body.to_string())
    }

    fn sent(n: usize) -> (u16, String) {
        (200, json!({"name": format!("projects/courant-test/messages/{n}")}).to_string())
    }

    fn unregistered() -> (u16, String) {
        let body = json!({"error": {"code": 404, "message": "Requested entity was not found.",
            "status": "NOT_FOUND", "details": [{
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": "UNREGISTERED"}]}});
        (404, body.to_string())
    }

    async fn fake(
        token: (u16, String),
        send: impl Fn(usize, &str) -> (u16, String) + Send + Sync + 'static,
    ) -> (String, Arc<Fake>) {
        let fake = Arc::new(Fake {
            token,
            send: Box::new(send),
            sends: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let state = fake.clone();
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let fake = state.clone();
                async move {
                    let (status, answer) = if uri.path() == "/token" {
                        fake.token.clone()
                    } else {
                        let n = fake.sends.fetch_add(1, Ordering::SeqCst);
                        let parsed: Value = serde_json::from_slice(&body).unwrap_or_default();
                        let token = parsed["message"]["token"].as_str().unwrap_or("").to_owned();
                        (fake.send)(n, &token)
                    };
                    fake.seen.lock().expect("lock").push(Captured { method, uri, headers, body });
                    (
                        StatusCode::from_u16(status).expect("status"),
                        [("content-type", "application/json")],
                        answer,
                    )
                        .into_response()
                }
            },
        );
        (serve(app).await, fake)
    }

    fn provider(base: &str) -> Fcm {
        Fcm::new(name(), config(base)).expect("builds")
    }

    #[tokio::test]
    async fn exchanges_a_signed_assertion_then_sends_the_documented_request() {
        let (base, fake) = fake(token_ok(3599), |n, _| sent(n)).await;
        let fcm = provider(&base);
        let message = push(vec![device(Platform::Android, "android-token-1")]);
        let hints = SendHints { collapse_key: None, critical: false, expires_at_ms: None };
        let delivery = fcm.deliver(&message, &hints).await;
        assert_eq!(
            delivery.outcome,
            SendOutcome::Accepted {
                provider_message_id: Some("projects/courant-test/messages/0".into()),
                delivered: false
            }
        );
        let seen = fake.seen.lock().expect("lock");
        assert_eq!(seen.len(), 2);

        // 1. The token exchange: a form with the RS256 assertion.
        let exchange = &seen[0];
        assert_eq!(exchange.method, "POST");
        assert_eq!(exchange.uri.path(), "/token");
        assert_eq!(exchange.header("content-type"), "application/x-www-form-urlencoded");
        assert_eq!(exchange.header("authorization"), "");
        let form: Vec<(String, String)> =
            url_form(std::str::from_utf8(&exchange.body).expect("utf-8"));
        assert_eq!(form.len(), 2);
        assert_eq!(
            form[0],
            ("grant_type".into(), "urn:ietf:params:oauth:grant-type:jwt-bearer".into())
        );
        assert_eq!(form[1].0, "assertion");
        let header = jsonwebtoken::decode_header(&form[1].1).expect("jwt header");
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let public = std::fs::read(PUBLIC_KEY).expect("public key");
        let key = DecodingKey::from_rsa_pem(&public).expect("rsa public key");
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[format!("{base}/token")]);
        validation.set_issuer(&[CLIENT_EMAIL]);
        let claims = jsonwebtoken::decode::<Claims>(&form[1].1, &key, &validation)
            .expect("signature and claims verify")
            .claims;
        assert_eq!(claims.scope, "https://www.googleapis.com/auth/firebase.messaging");
        assert_eq!(claims.exp - claims.iat, 3_600);
        let now_secs = crate::http::now_ms() / 1_000;
        assert!(claims.iat.abs_diff(now_secs) < 60, "iat {} now {now_secs}", claims.iat);

        // 2. messages:send with the access token.
        let send = &seen[1];
        assert_eq!(send.method, "POST");
        assert_eq!(send.uri.path(), "/v1/projects/courant-test/messages:send");
        assert_eq!(send.uri.query(), None);
        assert_eq!(send.header("authorization"), "Bearer ya29.test-access-token");
        assert_eq!(send.header("content-type"), "application/json");
        let body: Value = serde_json::from_slice(&send.body).expect("json");
        assert_eq!(
            body,
            json!({"message": {
                "token": "android-token-1",
                "notification": {"title": "Order shipped", "body": "It is on its way"},
                "data": {"notification_id": "n_01HZX3V4", "tenant": "acme", "attempt": "2"},
                "android": {"priority": "NORMAL"}
            }})
        );
    }

    fn url_form(body: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(body.as_bytes()).into_owned().collect()
    }

    #[tokio::test]
    async fn an_invalid_token_is_reported_dead_and_the_other_devices_still_get_the_message() {
        let (base, fake) =
            fake(
                token_ok(3599),
                |n, token| {
                    if token == "dead-token" { unregistered() } else { sent(n) }
                },
            )
            .await;
        let fcm = provider(&base);
        let dead = device(Platform::Android, "dead-token");
        let message = push(vec![
            device(Platform::Ios, "0123abcd"),
            dead.clone(),
            device(Platform::Android, "android-token-2"),
            device(Platform::Web, "web-token-3"),
        ]);
        let delivery = fcm.deliver(&message, &SendHints::default()).await;
        assert!(matches!(delivery.outcome, SendOutcome::Accepted { .. }), "{delivery:?}");
        assert_eq!(delivery.dead().collect::<Vec<_>>(), [&dead.id]);
        let outcomes: Vec<DeviceOutcome> = delivery.devices.iter().map(|d| d.outcome).collect();
        assert_eq!(
            outcomes,
            [DeviceOutcome::Dead, DeviceOutcome::Accepted, DeviceOutcome::Accepted],
            "the iOS device is not FCM's"
        );
        let seen = fake.seen.lock().expect("lock");
        let tokens: Vec<String> = seen
            .iter()
            .filter(|c| c.uri.path().ends_with("messages:send"))
            .map(|c| {
                let body: Value = serde_json::from_slice(&c.body).expect("json");
                body["message"]["token"].as_str().expect("token").to_owned()
            })
            .collect();
        assert_eq!(tokens, ["dead-token", "android-token-2", "web-token-3"]);
        // The summary names devices by id, never by token.
        let summary = delivery.summary().expect("devices");
        assert!(!summary.contains("dead-token") && summary.contains(dead.id.as_str()), "{summary}");
    }

    #[tokio::test]
    async fn every_device_dead_is_token_invalid() {
        let (base, _fake) = fake(token_ok(3599), |_, _| unregistered()).await;
        let fcm = provider(&base);
        let message = push(vec![device(Platform::Android, "a1"), device(Platform::Web, "w1")]);
        let delivery = fcm.deliver(&message, &SendHints::default()).await;
        let SendOutcome::Failed(e) = &delivery.outcome else { panic!("{delivery:?}") };
        assert_eq!(e.class, ErrorClass::TokenInvalid);
        assert_eq!(delivery.dead().count(), 2);
    }

    #[tokio::test]
    async fn the_access_token_is_cached_and_bought_once_under_concurrency() {
        let (base, fake) = fake(token_ok(3599), |n, _| sent(n)).await;
        let fcm = provider(&base);
        let message = push(vec![device(Platform::Android, "a1")]);
        let sends = (0..5).map(|_| fcm.send(&message));
        let outcomes = futures::future::join_all(sends).await;
        assert!(outcomes.iter().all(|o| matches!(o, SendOutcome::Accepted { .. })), "{outcomes:?}");
        assert_eq!(fake.token_requests(), 1);
        let _ = fcm.send(&message).await;
        assert_eq!(fake.token_requests(), 1);
    }

    #[tokio::test]
    async fn a_token_near_its_expiry_is_refreshed() {
        // A token that lives 0 s is due for refresh at once: every send buys one.
        let (base, fake) = fake(token_ok(0), |n, _| sent(n)).await;
        let fcm = provider(&base);
        let message = push(vec![device(Platform::Android, "a1")]);
        let _ = fcm.send(&message).await;
        let _ = fcm.send(&message).await;
        assert_eq!(fake.token_requests(), 2);
    }

    #[tokio::test]
    async fn a_401_drops_the_token_and_the_send_retries_once_with_a_new_one() {
        let (base, fake) = fake(token_ok(3599), |n, _| {
            if n == 0 {
                let body = json!({"error": {"code": 401, "status": "UNAUTHENTICATED",
                    "message": "Request had invalid authentication credentials."}});
                (401, body.to_string())
            } else {
                sent(n)
            }
        })
        .await;
        let fcm = provider(&base);
        let outcome = fcm.send(&push(vec![device(Platform::Android, "a1")])).await;
        assert!(matches!(outcome, SendOutcome::Accepted { .. }), "{outcome:?}");
        assert_eq!(fake.token_requests(), 2);
        assert_eq!(fake.sends.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_assertion_is_configuration_and_nothing_is_sent() {
        let refused = (
            400,
            r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#.to_owned(),
        );
        let (base, fake) = fake(refused, |n, _| sent(n)).await;
        let fcm = provider(&base);
        let outcome = fcm.send(&push(vec![device(Platform::Android, "a1")])).await;
        let SendOutcome::Failed(e) = outcome else { panic!("{outcome:?}") };
        assert_eq!(e.class, ErrorClass::ProviderConfig);
        assert_eq!(e.code.as_deref(), Some("invalid_grant"));
        assert_eq!(fake.sends.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn documented_send_errors_classify_end_to_end() {
        let cases = [
            (503, "UNAVAILABLE", ErrorClass::RETRYABLE),
            (429, "QUOTA_EXCEEDED", ErrorClass::RateLimited { retry_after_ms: None }),
            (403, "SENDER_ID_MISMATCH", ErrorClass::ProviderConfig),
        ];
        for (status, code, class) in cases {
            let (base, _fake) = fake(token_ok(3599), move |_, _| {
                let body = json!({"error": {"code": status, "message": "x", "status": "X",
                    "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                 "errorCode": code}]}});
                (status, body.to_string())
            })
            .await;
            let outcome = provider(&base).send(&push(vec![device(Platform::Android, "a1")])).await;
            let SendOutcome::Failed(e) = outcome else { panic!("{outcome:?}") };
            assert_eq!(e.class, class, "{code}");
        }
    }

    #[test]
    fn no_device_of_its_platforms_is_permanent() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let fcm = provider("http://127.0.0.1:9");
        let outcome = rt.block_on(fcm.send(&push(vec![device(Platform::Ios, "0123abcd")])));
        let SendOutcome::Failed(e) = outcome else { panic!("{outcome:?}") };
        assert_eq!(e.class, ErrorClass::PermanentRecipient);
    }
}
