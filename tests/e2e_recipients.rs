//! End to end: the recipients directory through the real binary (`courant serve`), Redis and the
//! provider sandbox. A notification that names only a recipient id goes to the stored address;
//! a stored opt-out skips the next one; the history says which rule decided.

mod common;

use std::time::Duration;

use common::Stack;
use serde_json::Value;

#[test]
fn a_stored_profile_addresses_a_notification_and_a_stored_opt_out_stops_the_next() {
    let stack = Stack::start("");
    let _serve = stack.serve("all", "e2e-recipients");
    let profile = r#"{"phone":"+14155550199","email":"grace@example.com","time_zone":"UTC"}"#;
    let (status, body) = stack.call("PUT", "/v1/recipients/grace", profile);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["revision"], 1);

    // Named by id only: the SMS goes to the stored number.
    let data = r#"{"code":"123456","product":"courant"}"#;
    let id = stack.send_with(&["--recipient", "grace"], "sms", "otp", data);
    stack.wait_state(&id, Duration::from_secs(15), |s| s == "sent");
    let taken: Vec<Value> = stack
        .sandbox_messages("twilio")
        .into_iter()
        .filter(|m| m["notification_id"] == id.as_str())
        .collect();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0]["to"], "+14155550199");

    // An SMS opt-out, stored: the next non-critical SMS is skipped, and the history says why.
    let (status, body) =
        stack.call("PUT", "/v1/recipients/grace/preferences", r#"{"channels":{"sms":false}}"#);
    assert_eq!((status, &body["revision"]), (200, &Value::from(2)), "{body}");
    let (status, submitted) = stack.call(
        "POST",
        "/v1/notifications",
        r#"{"recipient":{"id":"grace"},"channel":"sms","template":"otp",
            "data":{"code":"654321","product":"courant"},"category":"reminders"}"#,
    );
    assert_eq!(status, 202, "{submitted}");
    let skipped = submitted["id"].as_str().unwrap().to_owned();
    stack.wait_state(&skipped, Duration::from_secs(15), |s| s == "skipped");
    let history = stack.cli_json(&["history", &skipped]);
    let notes: Vec<&str> =
        history["history"].as_array().unwrap().iter().filter_map(|e| e["note"].as_str()).collect();
    let notes = notes.join("\n");
    assert!(notes.contains("recipient opted out of sms"), "{notes}");
    assert!(notes.contains("read at directory revision 2"), "{notes}");
    let sms: Vec<Value> = stack.sandbox_messages("twilio");
    assert!(sms.iter().all(|m| m["notification_id"] != skipped.as_str()), "{sms:?}");
}
