//! APNs: the config, ids and headers, and (feature `http`) the exact HTTP/2 request against a
//! local h2c server.

use steps::model::{NotificationId, ProviderName};
use steps::recipient::{Device, DeviceToken, Platform};
use steps::render::Content;
use workflows::ports::SendHints;

use super::config::ApnsConfig;
use super::request::{apns_id, collapse_id, headers, path};
use crate::testing::message;

/// The committed test-only `.p8` key (see `tests/fixtures/push/README.md`).
pub(crate) const KEY_FILE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/push/apns-test-only.p8");
/// Its public key.
pub(crate) const PUBLIC_KEY: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/push/apns-test-only.pub.pem");
const TOKEN_1: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

fn name() -> ProviderName {
    ProviderName::new("apns").expect("id")
}

fn config(base_url: &str) -> ApnsConfig {
    toml::from_str(&format!(
        r#"
base_url = "{base_url}"
team_id = "TEAM123456"
key_id = "KEY1234567"
key_file = "{KEY_FILE}"
topic = "com.example.courant"
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
fn the_apns_id_is_a_uuid_derived_from_notification_and_device() {
    let n = NotificationId::new("n_01HZX3V4").expect("id");
    let a = device(Platform::Ios, TOKEN_1);
    let b = device(Platform::Ios, "ffff");
    let id = apns_id(&n, &a.id);
    assert_eq!(id, apns_id(&n, &a.id), "a re-send carries the same id");
    assert_ne!(id, apns_id(&n, &b.id));
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{id}");
    assert!(parts[2].starts_with('8'), "version 8: {id}");
    assert!("89ab".contains(&parts[3][..1]), "RFC 9562 variant: {id}");
}

#[test]
fn headers_follow_the_documented_set() {
    let message = push(vec![]);
    let d = device(Platform::Ios, TOKEN_1);
    let hints = SendHints {
        collapse_key: Some("order-42".into()),
        critical: true,
        expires_at_ms: Some(1_700_000_600_500),
    };
    let sent = headers("com.example.courant", &message, &d, &hints);
    assert_eq!(
        sent,
        vec![
            ("apns-topic", "com.example.courant".to_owned()),
            ("apns-push-type", "alert".to_owned()),
            ("apns-id", apns_id(&message.notification_id, &d.id)),
            ("apns-expiration", "1700000600".to_owned()),
            ("apns-priority", "10".to_owned()),
            ("apns-collapse-id", "order-42".to_owned()),
        ]
    );
    let plain = headers("t", &message, &d, &SendHints::default());
    assert!(plain.contains(&("apns-priority", "5".to_owned())));
    assert!(plain.contains(&("apns-expiration", "0".to_owned())));
    assert!(plain.iter().all(|(n, _)| *n != "apns-collapse-id"));
    let long = "k".repeat(100);
    assert_eq!(collapse_id(&long).len(), 64);
    assert_eq!(collapse_id(&long), collapse_id(&long));
}

#[test]
fn a_token_that_is_not_hex_is_dead_without_a_call() {
    assert_eq!(path(&device(Platform::Ios, TOKEN_1)).expect("hex"), format!("/3/device/{TOKEN_1}"));
    let error = path(&device(Platform::Ios, "../../x")).expect_err("not hex");
    assert_eq!(error.class, steps::outcome::ErrorClass::TokenInvalid);
}

#[test]
fn config_is_checked() {
    let good = config("https://api.push.apple.com");
    assert!(good.validate(&name()).is_ok());
    assert!(good.load_key(&name()).is_ok());
    let mut bad = good.clone();
    bad.team_id = "short".into();
    assert!(bad.validate(&name()).is_err());
    let mut bad = good.clone();
    bad.topic = "com.example\r\nx".into();
    assert!(bad.validate(&name()).is_err());
    let mut bad = good.clone();
    bad.key_file = "/nonexistent.p8".into();
    assert!(bad.load_key(&name()).is_err());
    assert!(!format!("{good:?}").contains("PRIVATE"));
}

#[cfg(feature = "http")]
mod http {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode, Uri, Version};
    use axum::response::IntoResponse;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use serde_json::{Value, json};
    use steps::outcome::{ErrorClass, SendOutcome};
    use workflows::ports::{DeviceOutcome, Provider};

    use super::super::request::ProviderClaims;
    use super::*;
    use crate::apns::Apns;
    use crate::testing::serve;

    type Seen = Arc<Mutex<Vec<(Version, Uri, HeaderMap, Bytes)>>>;

    /// An h2c server answering by device token: `dead...` tokens 410 Unregistered, `bad...`
    /// 400 BadDeviceToken, others 200 with the `apns-id` echoed.
    async fn fake() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let app = Router::new().fallback(
            move |version: Version, uri: Uri, headers: HeaderMap, body: Bytes| {
                let log = log.clone();
                async move {
                    let token = uri.path().rsplit('/').next().unwrap_or("").to_owned();
                    let id = headers
                        .get("apns-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    log.lock().expect("lock").push((version, uri, headers, body));
                    if token.starts_with("dead") {
                        let body =
                            json!({"reason": "Unregistered", "timestamp": 1_700_000_000_000_u64});
                        (StatusCode::GONE, [("apns-id", id)], body.to_string()).into_response()
                    } else if token.starts_with("bad") {
                        let body = json!({"reason": "BadDeviceToken"});
                        (StatusCode::BAD_REQUEST, [("apns-id", id)], body.to_string())
                            .into_response()
                    } else {
                        (StatusCode::OK, [("apns-id", id)], String::new()).into_response()
                    }
                }
            },
        );
        (serve(app).await, seen)
    }

    #[tokio::test]
    async fn sends_the_documented_http2_request_with_a_verified_provider_token() {
        let (base, seen) = fake().await;
        let apns = Apns::new(name(), config(&base)).expect("builds");
        let d = device(Platform::Ios, TOKEN_1);
        let message = push(vec![d.clone()]);
        let hints = SendHints {
            collapse_key: Some("order-42".into()),
            critical: false,
            expires_at_ms: Some(1_700_000_600_000),
        };
        let delivery = apns.deliver(&message, &hints).await;
        let expected_id = apns_id(&message.notification_id, &d.id);
        assert_eq!(
            delivery.outcome,
            SendOutcome::Accepted {
                provider_message_id: Some(expected_id.clone()),
                delivered: false
            }
        );
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 1);
        let (version, uri, headers, body) = &seen[0];
        assert_eq!(*version, Version::HTTP_2, "APNs speaks HTTP/2 only");
        assert_eq!(uri.path(), format!("/3/device/{TOKEN_1}"));
        let header =
            |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert_eq!(header("apns-topic"), "com.example.courant");
        assert_eq!(header("apns-push-type"), "alert");
        assert_eq!(header("apns-id"), expected_id);
        assert_eq!(header("apns-expiration"), "1700000600");
        assert_eq!(header("apns-priority"), "5");
        assert_eq!(header("apns-collapse-id"), "order-42");
        assert_eq!(header("content-type"), "application/json");
        let auth = header("authorization");
        let jwt = auth.strip_prefix("bearer ").expect("bearer token");
        let jwt_header = jsonwebtoken::decode_header(jwt).expect("jwt header");
        assert_eq!(jwt_header.alg, Algorithm::ES256);
        assert_eq!(jwt_header.kid.as_deref(), Some("KEY1234567"));
        let public = std::fs::read(PUBLIC_KEY).expect("public key");
        let key = DecodingKey::from_ec_pem(&public).expect("ec public key");
        let mut validation = Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.set_issuer(&["TEAM123456"]);
        let claims = jsonwebtoken::decode::<ProviderClaims>(jwt, &key, &validation)
            .expect("signature verifies")
            .claims;
        let now_secs = crate::http::now_ms() / 1_000;
        assert!(claims.iat.abs_diff(now_secs) < 60);
        let body: Value = serde_json::from_slice(body).expect("json");
        assert_eq!(
            body,
            json!({"aps": {"alert": {"title": "Order shipped", "body": "It is on its way"}},
                   "notification_id": "n_01HZX3V4"})
        );
    }

    #[tokio::test]
    async fn dead_tokens_are_reported_and_the_other_devices_still_get_the_message() {
        let (base, seen) = fake().await;
        let apns = Apns::new(name(), config(&base)).expect("builds");
        let gone = device(Platform::Ios, "dead0001");
        let bad = device(Platform::Ios, "bad00002");
        let alive = device(Platform::Ios, TOKEN_1);
        let message = push(vec![
            gone.clone(),
            device(Platform::Android, "android-token"),
            bad.clone(),
            alive.clone(),
        ]);
        let critical = SendHints { critical: true, ..SendHints::default() };
        let delivery = apns.deliver(&message, &critical).await;
        assert!(matches!(delivery.outcome, SendOutcome::Accepted { .. }), "{delivery:?}");
        assert_eq!(delivery.dead().collect::<Vec<_>>(), [&gone.id, &bad.id]);
        let outcomes: Vec<DeviceOutcome> = delivery.devices.iter().map(|d| d.outcome).collect();
        assert_eq!(outcomes, [DeviceOutcome::Dead, DeviceOutcome::Dead, DeviceOutcome::Accepted]);
        let seen = seen.lock().expect("lock");
        let paths: Vec<String> = seen.iter().map(|(_, u, _, _)| u.path().to_owned()).collect();
        assert_eq!(
            paths,
            [
                "/3/device/dead0001".to_owned(),
                "/3/device/bad00002".into(),
                format!("/3/device/{TOKEN_1}")
            ]
        );
        assert!(seen.iter().all(|(_, _, h, _)| h["apns-priority"] == "10"));
        // One provider token for all three calls.
        let auths: Vec<&[u8]> =
            seen.iter().map(|(_, _, h, _)| h["authorization"].as_bytes()).collect();
        assert!(auths.windows(2).all(|w| w[0] == w[1]));
    }

    #[tokio::test]
    async fn every_device_dead_is_token_invalid() {
        let (base, _seen) = fake().await;
        let apns = Apns::new(name(), config(&base)).expect("builds");
        let outcome = apns.send(&push(vec![device(Platform::Ios, "dead01")])).await;
        let SendOutcome::Failed(e) = outcome else { panic!("{outcome:?}") };
        assert_eq!(e.class, ErrorClass::TokenInvalid);
        assert_eq!(e.code.as_deref(), Some("Unregistered"));
    }

    #[test]
    fn the_provider_token_is_reused_for_50_minutes_and_replaced_at_most_every_20() {
        use super::super::token::{ProviderToken, REFRESH_AFTER_MS, REPLACE_AFTER_MS};
        use secrecy::ExposeSecret;
        let pem = std::fs::read(KEY_FILE).expect("key");
        let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).expect("ec key");
        let tokens = ProviderToken::new("TEAM123456".into(), "KEY1234567".into(), key);
        let t0 = 1_700_000_000_000;
        let first = tokens.token(t0).expect("signs");
        let same = tokens.token(t0 + REFRESH_AFTER_MS - 1).expect("signs");
        assert_eq!(first.expose_secret(), same.expose_secret(), "reused under 50 minutes");
        // Refused 10 minutes in: Apple allows no new token yet, so the same one is kept.
        tokens.refused(&first, t0 + 10 * 60 * 1_000);
        assert_eq!(
            tokens.token(t0 + 10 * 60 * 1_000).expect("signs").expose_secret(),
            first.expose_secret()
        );
        // Refused once 20 minutes old: replaced.
        tokens.refused(&first, t0 + REPLACE_AFTER_MS);
        let second = tokens.token(t0 + REPLACE_AFTER_MS).expect("signs");
        assert_ne!(second.expose_secret(), first.expose_secret());
        // And 50 minutes after it was made, replaced before use.
        let third = tokens.token(t0 + REPLACE_AFTER_MS + REFRESH_AFTER_MS).expect("signs");
        assert_ne!(third.expose_secret(), second.expose_secret());
    }
}
