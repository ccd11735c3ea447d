//! End to end: push through the real binary (`courant serve`), Redis and the provider sandbox's
//! fake FCM and APNs, with the real signed tokens. A recipient with several devices gets the
//! message on each; a dead token is removed from the profile and the others still receive it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Stack;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/providers/tests/fixtures/push");
const IOS_TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// One authorised HTTP/1.1 request to the API; returns the status and the JSON body.
fn call(stack: &Stack, method: &str, path: &str, body: &str) -> (u16, Value) {
    let rest = stack.api_url.strip_prefix("http://").expect("http URL");
    let host = rest.split('/').next().unwrap_or(rest);
    let mut stream = TcpStream::connect(host).expect("the API listens");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        stack.key,
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn push_stack(extra: &str) -> Stack {
    Stack::start(&format!(
        r#"
[providers.fcm]
kind = "fcm"
base_url = "{{SANDBOX}}"
project_id = "courant-test"
service_account_file = "{FIXTURES}/fcm-service-account-test-only.json"
token_uri = "{{SANDBOX}}/token"
timeout_ms = 5000

[providers.apns]
kind = "apns"
base_url = "{{SANDBOX}}"
team_id = "TEAM123456"
key_id = "KEY1234567"
key_file = "{FIXTURES}/apns-test-only.p8"
topic = "com.example.courant"
timeout_ms = 5000

{extra}
"#
    ))
}

fn add_device(stack: &Stack, recipient: &str, platform: &str, token: &str) -> String {
    let body = format!(r#"{{"platform":"{platform}","token":"{token}"}}"#);
    let (status, answer) =
        call(stack, "POST", &format!("/v1/recipients/{recipient}/devices"), &body);
    assert!(status == 201 || status == 200, "{status} {answer}");
    answer["id"].as_str().expect("device id").to_owned()
}

fn device_ids(stack: &Stack, recipient: &str) -> Vec<String> {
    let (status, profile) = call(stack, "GET", &format!("/v1/recipients/{recipient}"), "");
    assert_eq!(status, 200, "{profile}");
    profile["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_owned())
        .collect()
}

#[test]
fn fcm_removes_the_dead_token_and_the_other_devices_receive_the_message() {
    let stack = push_stack("[policy.routes]\npush = [\"fcm\"]");
    let _serve = stack.serve("all", "e2e-push-fcm");
    let (status, body) = call(&stack, "PUT", "/v1/recipients/lin", r#"{"time_zone":"UTC"}"#);
    assert_eq!(status, 201, "{body}");
    let dead = add_device(&stack, "lin", "android", "unregistered-phone");
    let phone = add_device(&stack, "lin", "android", "android-phone");
    let browser = add_device(&stack, "lin", "web", "web-browser");

    let data = r#"{"name":"Lin","order_id":"A-7"}"#;
    let id = stack.send_with(&["--recipient", "lin"], "push", "order_shipped", data);
    stack.wait_state(&id, Duration::from_secs(15), |s| s == "sent");

    let taken: Vec<Value> = stack
        .sandbox_messages("fcm")
        .into_iter()
        .filter(|m| m["notification_id"] == id.as_str())
        .collect();
    let to: Vec<&str> = taken.iter().map(|m| m["to"].as_str().unwrap()).collect();
    assert_eq!(to, ["android-phone", "web-browser"]);
    assert_eq!(taken[0]["request"]["message"]["notification"]["title"], "Order A-7 shipped");
    assert_eq!(
        device_ids(&stack, "lin"),
        [phone.clone(), browser.clone()],
        "the dead device is gone"
    );

    let history = stack.cli_json(&["history", &id]);
    let notes: Vec<&str> =
        history["history"].as_array().unwrap().iter().filter_map(|e| e["note"].as_str()).collect();
    let notes = notes.join("\n");
    assert!(notes.contains(&format!("removed dead device(s) {dead}")), "{notes}");
    assert!(!notes.contains("unregistered-phone"), "a token in the history: {notes}");
}

#[test]
fn apns_over_http2_removes_the_dead_token_and_the_other_device_receives_the_message() {
    let stack = push_stack("[policy.routes]\npush = [\"apns\"]");
    let _serve = stack.serve("all", "e2e-push-apns");
    let (status, body) = call(&stack, "PUT", "/v1/recipients/noor", r#"{"time_zone":"UTC"}"#);
    assert_eq!(status, 201, "{body}");
    let _dead = add_device(&stack, "noor", "ios", "dead0001");
    let phone = add_device(&stack, "noor", "ios", IOS_TOKEN);

    let data = r#"{"name":"Noor","order_id":"B-2"}"#;
    let id = stack.send_with(&["--recipient", "noor"], "push", "order_shipped", data);
    stack.wait_state(&id, Duration::from_secs(15), |s| s == "sent");
    let taken: Vec<Value> = stack
        .sandbox_messages("apns")
        .into_iter()
        .filter(|m| m["notification_id"] == id.as_str())
        .collect();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0]["to"], IOS_TOKEN);
    assert_eq!(device_ids(&stack, "noor"), [phone]);
}

#[test]
fn a_push_group_reaches_every_platform_of_a_mixed_recipient() {
    // No route: with a group configured, the push route is the group alone.
    let stack =
        push_stack("[providers.push]\nkind = \"push_group\"\nmembers = [\"apns\", \"fcm\"]");
    let _serve = stack.serve("all", "e2e-push-group");
    let (status, body) = call(&stack, "PUT", "/v1/recipients/sam", r#"{"time_zone":"UTC"}"#);
    assert_eq!(status, 201, "{body}");
    let iphone = add_device(&stack, "sam", "ios", IOS_TOKEN);
    let tablet = add_device(&stack, "sam", "android", "android-tablet");
    let _gone = add_device(&stack, "sam", "ios", "dead0002");

    let data = r#"{"name":"Sam","order_id":"C-3"}"#;
    let id = stack.send_with(&["--recipient", "sam"], "push", "order_shipped", data);
    let view = stack.wait_state(&id, Duration::from_secs(15), |s| s == "sent");
    assert_eq!(view["provider"], "push", "{view}");
    let mine = |provider: &str| {
        stack
            .sandbox_messages(provider)
            .into_iter()
            .filter(|m| m["notification_id"] == id.as_str())
            .map(|m| m["to"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(mine("apns"), [IOS_TOKEN]);
    assert_eq!(mine("fcm"), ["android-tablet"]);
    assert_eq!(device_ids(&stack, "sam"), [iphone, tablet]);
}
