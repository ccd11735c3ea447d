//! End to end: the template registry through the real binary on Redis. A template is created
//! over HTTP, a notification is accepted while only the API runs, a new version is published,
//! and the worker started afterwards still sends the version the notification pinned, in the
//! notification's locale.

mod common;

use std::time::Duration;

use common::{Stack, http, stderr};
use serde_json::{Value, json};

fn call(stack: &Stack, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let url = format!("{}{path}", stack.api_url);
    let body = body.to_string();
    let (status, text) = http::request_with_key(method, &url, Some(&stack.key), Some(&body))
        .expect("the API answers");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn sms(revision: &str) -> Value {
    json!({
        "default_locale": "en",
        "locales": {
            "en": { "sms.body": format!("{revision}: your order {{{{ order }}}} shipped") },
            "fr": { "sms.body": format!("{revision} : commande {{{{ order }}}} expédiée") }
        }
    })
}

/// The SMS bodies the sandbox's Twilio took, by notification id.
fn sent_bodies(stack: &Stack) -> Vec<(String, String)> {
    stack
        .sandbox_messages("twilio")
        .iter()
        .map(|m| {
            (m["notification_id"].as_str().unwrap_or_default().to_owned(), m["request"].to_string())
        })
        .collect()
}

#[test]
fn a_worker_sends_the_pinned_version_in_the_notifications_locale_on_redis() {
    let stack = Stack::start("");
    let api = stack.serve("api", "e2e-templates-api");

    let mut create = sms("v1");
    create["id"] = json!("shipped");
    let (status, body) = call(&stack, "POST", "/v1/templates", &create);
    assert_eq!(status, 201, "{body}");

    let phone = ["--recipient", "ada", "--phone", "+14155550123"];
    let send = |locale: &str, order: u32| {
        let data = format!(r#"{{"order":{order}}}"#);
        let mut args = vec!["send"];
        args.extend_from_slice(&phone);
        args.extend_from_slice(&["--channel", "sms", "--template", "shipped", "--data", &data]);
        args.extend_from_slice(&["--locale", locale]);
        let output = stack.cli(&args);
        assert!(output.status.success(), "send failed: {}", stderr(&output));
        String::from_utf8(output.stdout).expect("utf8").trim().to_owned()
    };
    let first = send("fr-CA", 1);

    // A new version is published before any worker runs.
    let (status, body) = call(&stack, "POST", "/v1/templates/shipped/versions", &sms("v2"));
    assert_eq!((status, body["version"].clone()), (201, json!(2)), "{body}");
    let (status, _) = call(&stack, "POST", "/v1/templates/shipped/versions/2/publish", &json!({}));
    assert_eq!(status, 200);
    let second = send("en-US", 2);

    // A missing variable is refused by the binary too, naming it, and writes nothing.
    let output = stack.cli(&[
        "send",
        "--recipient",
        "ada",
        "--phone",
        "+14155550123",
        "--channel",
        "sms",
        "--template",
        "shipped",
    ]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("order"), "{}", stderr(&output));

    let _worker = stack.serve("worker", "e2e-templates-worker");
    for id in [&first, &second] {
        stack.wait_state(id, Duration::from_secs(20), |s| s == "sent");
    }
    let bodies = sent_bodies(&stack);
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let body_of = |id: &str| bodies.iter().find(|(n, _)| n == id).map(|(_, b)| b.clone()).unwrap();
    let first_body = body_of(&first);
    assert!(first_body.contains("v1 : commande 1"), "pinned v1, in French: {first_body}");
    let second_body = body_of(&second);
    assert!(second_body.contains("v2: your order 2"), "v2, in the default locale: {second_body}");

    // The preview says what it would cost, without sending.
    let preview = json!({ "channel": "sms", "data": { "order": "€€€" }, "locale": "fr" });
    let (status, body) = call(&stack, "POST", "/v1/templates/shipped/preview", &preview);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sms"]["encoding"], "gsm7", "é and € are GSM-7: {body}");
    assert_eq!(body["version"], 2);
    assert_eq!(sent_bodies(&stack).len(), 2);
    drop(api);
}
