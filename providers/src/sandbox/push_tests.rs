//! The real FCM and APNs providers against the sandbox: signatures verified, documented
//! answers, designated dead tokens, injected faults.

use std::path::PathBuf;

use steps::model::ProviderName;
use steps::outcome::{ErrorClass, SendOutcome};
use steps::recipient::{Device, DeviceToken, Platform};
use steps::render::Content;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use workflows::ports::{DeviceOutcome, Outbound, Provider, SendHints};

use super::*;
use crate::apns::{Apns, ApnsConfig};
use crate::fcm::{Fcm, FcmConfig};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/push");
const IOS_TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

async fn start(config: SandboxConfig) -> (String, Sandbox, oneshot::Sender<()>) {
    let sandbox = Sandbox::new(config).expect("valid config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_with(listener, sandbox.clone(), async move {
        let _ = stopped.await;
    }));
    (base, sandbox, stop)
}

fn quiet() -> SandboxConfig {
    let mut config = SandboxConfig { seed: Some(7), ..SandboxConfig::default() };
    config.fcm.behaviour.latency_ms = 0;
    config.apns.behaviour.latency_ms = 0;
    config
}

fn fcm(base: &str) -> Fcm {
    let config = FcmConfig {
        base_url: base.to_owned(),
        project_id: FCM_PROJECT_DEFAULT.to_owned(),
        service_account_file: PathBuf::from(format!(
            "{FIXTURES}/fcm-service-account-test-only.json"
        )),
        token_uri: Some(format!("{base}/token")),
        timeout_ms: 5_000,
        connect_timeout_ms: 1_000,
    };
    Fcm::new(ProviderName::new("fcm").expect("id"), config).expect("builds")
}

fn apns(base: &str, key_id: &str) -> Apns {
    let config = ApnsConfig {
        base_url: base.to_owned(),
        team_id: APNS_TEAM_DEFAULT.to_owned(),
        key_id: key_id.to_owned(),
        key_file: PathBuf::from(format!("{FIXTURES}/apns-test-only.p8")),
        topic: APNS_TOPIC_DEFAULT.to_owned(),
        timeout_ms: 5_000,
        connect_timeout_ms: 1_000,
    };
    Apns::new(ProviderName::new("apns").expect("id"), config).expect("builds")
}

fn device(platform: Platform, token: &str) -> Device {
    Device::new(platform, DeviceToken::parse(token).expect("token"), 1)
}

fn push(devices: Vec<Device>) -> Outbound {
    let mut message = crate::testing::message(Content::Push {
        title: "Order shipped".into(),
        body: "It is on its way".into(),
    });
    message.devices = devices;
    message
}

#[tokio::test]
async fn fcm_removes_designated_dead_tokens_and_delivers_to_the_rest() {
    let (base, sandbox, _stop) = start(quiet()).await;
    let fcm = fcm(&base);
    let unregistered = device(Platform::Android, "unregistered-1");
    let invalid = device(Platform::Web, "invalid-2");
    let message = push(vec![
        unregistered.clone(),
        device(Platform::Android, "android-ok"),
        invalid.clone(),
        device(Platform::Web, "web-ok"),
    ]);
    let delivery = fcm.deliver(&message, &SendHints::default()).await;
    let SendOutcome::Accepted { provider_message_id: Some(name), .. } = &delivery.outcome else {
        panic!("{delivery:?}")
    };
    assert!(name.starts_with("projects/courant-test/messages/"), "{name}");
    assert_eq!(delivery.dead().collect::<Vec<_>>(), [&unregistered.id, &invalid.id]);
    let taken: Vec<String> =
        sandbox.messages(SandboxProvider::Fcm).into_iter().map(|m| m.to).collect();
    assert_eq!(taken, ["android-ok", "web-ok"]);
    let stats = sandbox.stats().fcm;
    assert_eq!((stats.received, stats.accepted, stats.failed.recipient), (4, 2, 2));
}

#[tokio::test]
async fn fcm_refuses_forged_assertions_and_unknown_access_tokens() {
    let (base, _sandbox, _stop) = start(quiet()).await;
    let client = reqwest::Client::new();
    let answer = client
        .post(format!("{base}/token"))
        .form(&[("grant_type", crate::fcm::GRANT_TYPE), ("assertion", "e30.e30.c2ln")])
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 400);
    let body: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(body["error"], "invalid_grant");
    let answer = client
        .post(format!("{base}/v1/projects/courant-test/messages:send"))
        .bearer_auth("ya29.made-up")
        .json(&serde_json::json!({"message": {"token": "t"}}))
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 401);
    let body: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
}

#[tokio::test]
async fn fcm_faults_follow_the_behaviour() {
    let mut config = quiet();
    config.fcm.behaviour.server_error_rate = 1.0;
    let (base, _sandbox, _stop) = start(config).await;
    let outcome = fcm(&base).send(&push(vec![device(Platform::Android, "a1")])).await;
    let SendOutcome::Failed(e) = outcome else { panic!("{outcome:?}") };
    assert!(matches!(e.class, ErrorClass::Retryable { .. }), "{e:?}");
    assert!(matches!(e.code.as_deref(), Some("UNAVAILABLE" | "INTERNAL")), "{e:?}");
}

#[tokio::test]
async fn apns_over_h2c_removes_designated_dead_tokens_and_delivers_to_the_rest() {
    let (base, sandbox, _stop) = start(quiet()).await;
    let apns = apns(&base, APNS_KEY_ID_DEFAULT);
    let gone = device(Platform::Ios, "dead0001");
    let bad = device(Platform::Ios, "bad00002");
    let message = push(vec![gone.clone(), device(Platform::Ios, IOS_TOKEN), bad.clone()]);
    let delivery = apns.deliver(&message, &SendHints::default()).await;
    assert!(matches!(delivery.outcome, SendOutcome::Accepted { .. }), "{delivery:?}");
    let outcomes: Vec<DeviceOutcome> = delivery.devices.iter().map(|d| d.outcome).collect();
    assert_eq!(outcomes, [DeviceOutcome::Dead, DeviceOutcome::Accepted, DeviceOutcome::Dead]);
    let taken = sandbox.messages(SandboxProvider::Apns);
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].to, IOS_TOKEN);
    assert_eq!(taken[0].notification_id.as_deref(), Some("n_01HZX3V4"));
    assert_eq!(
        Some(taken[0].message_id.clone()),
        match &delivery.outcome {
            SendOutcome::Accepted { provider_message_id, .. } => provider_message_id.clone(),
            SendOutcome::Failed(_) => None,
        }
    );
}

#[tokio::test]
async fn apns_refuses_a_token_signed_for_another_key_and_http1() {
    let (base, _sandbox, _stop) = start(quiet()).await;
    let outcome =
        apns(&base, "OTHERKEY12").send(&push(vec![device(Platform::Ios, IOS_TOKEN)])).await;
    let SendOutcome::Failed(e) = outcome else { panic!("{outcome:?}") };
    assert_eq!(e.class, ErrorClass::ProviderConfig);
    assert_eq!(e.code.as_deref(), Some("InvalidProviderToken"));
    let answer = reqwest::Client::new()
        .post(format!("{base}/3/device/{IOS_TOKEN}"))
        .body("{}")
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 505);
}

#[test]
fn push_sandbox_config_reads_from_toml() {
    let config: SandboxConfig = toml::from_str(
        "[fcm]\nproject_id = \"p1\"\n[fcm.behaviour]\nlatency_ms = 1\n[apns]\ntopic = \"com.x\"\n",
    )
    .expect("parses");
    assert_eq!(config.fcm.project_id.as_deref(), Some("p1"));
    assert_eq!(config.apns.topic, "com.x");
    assert_eq!(config.apns.key_id, APNS_KEY_ID_DEFAULT);
    assert!(Sandbox::new(config).is_ok());
    let mut broken = SandboxConfig::default();
    broken.apns.key_file = Some(PathBuf::from("/nonexistent.p8"));
    assert!(Sandbox::new(broken).is_err());
}
