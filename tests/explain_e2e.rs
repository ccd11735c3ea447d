//! `courant explain` end to end (issue 7): the real binary on Redis with the provider sandbox.
//! For a notification that was opted out, one held by quiet hours, one that fell back from SMS
//! to email and one dead-lettered after retries, the answer names the actual reason and the
//! data behind it (the rule, the window, the provider's answer, the retry policy).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Stack;
use serde_json::Value;

/// Quiet hours from an hour ago to two hours from now, in UTC: whoever has a stored time zone
/// of UTC is in them for the whole test. Email retries are quick and few, and its time budget
/// (a day) outlasts the quiet hours.
fn config() -> String {
    let hour = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() / 3_600 % 24;
    let start = (hour + 23) % 24;
    let end = (hour + 2) % 24;
    format!(
        "[policy.quiet_hours]\nstart = \"{start:02}:00\"\nend = \"{end:02}:00\"\n\
         [policy.retry.email]\nattempts_max = 2\ndelay_ms_base = 200\nfactor = 2.0\n\
         delay_ms_max = 400\njitter = false\nttl_ms = 86400000\n"
    )
}

fn explain(stack: &Stack, id: &str) -> (String, Vec<Value>) {
    let view = stack.cli_json(&["explain", id]);
    assert_eq!(view["id"], id);
    let answer = view["answer"].as_str().expect("an answer").to_owned();
    (answer, view["findings"].as_array().cloned().unwrap_or_default())
}

fn kinds(findings: &[Value]) -> Vec<&str> {
    findings.iter().filter_map(|f| f["kind"].as_str()).collect()
}

#[test]
fn explain_names_the_reason_and_its_data() {
    let stack = Stack::start(&config());
    let _serve = stack.serve("all", "e2e-explain");
    let timeout = Duration::from_secs(20);
    let data = r#"{"name":"Grace","product":"courant"}"#;

    // Opted out: a stored choice, at a directory revision.
    let (status, body) = stack.call("PUT", "/v1/recipients/opted", r#"{"email":"o@example.com"}"#);
    assert_eq!(status, 201, "{body}");
    let (status, body) =
        stack.call("PUT", "/v1/recipients/opted/preferences", r#"{"channels":{"email":false}}"#);
    assert_eq!(status, 200, "{body}");
    let opted = stack.send_with(&["--recipient", "opted"], "email", "welcome", data);
    stack.wait_state(&opted, timeout, |s| s == "skipped");
    let (answer, findings) = explain(&stack, &opted);
    assert!(answer.starts_with("It was not sent: recipient opted out of email"), "{answer}");
    assert!(answer.contains("read at directory revision 2"), "the data behind it: {answer}");
    assert_eq!(kinds(&findings), ["not_sent"]);

    // Held by quiet hours: the window, the zone and the wait.
    let profile = r#"{"email":"sleeper@example.com","time_zone":"UTC"}"#;
    let (status, body) = stack.call("PUT", "/v1/recipients/sleeper", profile);
    assert_eq!(status, 201, "{body}");
    let quiet = stack.send_with(&["--recipient", "sleeper"], "email", "welcome", data);
    stack.wait_state(&quiet, timeout, |s| s == "deferred");
    let (answer, findings) = explain(&stack, &quiet);
    assert!(answer.starts_with("It has not finished: it is deferred."), "{answer}");
    assert!(
        answer.contains("held") && answer.contains("for the recipient's quiet hours"),
        "{answer}"
    );
    assert!(answer.contains("quiet hours") && answer.contains("UTC"), "the window: {answer}");
    assert_eq!(kinds(&findings), ["quiet_hours"]);
    assert!(findings[0]["wait_ms"].as_u64().is_some_and(|ms| ms > 3_600_000 - 60_000));

    // Fell back from SMS to email: Twilio's test number refuses the recipient (21211).
    let fallback = stack.send_with(
        &["--recipient", "bob", "--phone", "+15005550001", "--email", "bob@example.com"],
        "sms",
        "welcome",
        data,
    );
    stack.wait_state(&fallback, timeout, |s| s == "sent" || s == "delivered");
    let (answer, findings) = explain(&stack, &fallback);
    assert!(answer.contains("by email through sendgrid"), "{answer}");
    assert!(answer.contains("instead of sms because sms failed for good on twilio"), "{answer}");
    assert!(answer.contains("code 21211"), "the provider's answer: {answer}");
    assert!(answer.contains("sms→email rule"), "the fallback rule: {answer}");
    assert_eq!(kinds(&findings)[..2], ["provider_failed", "fallback"]);
    assert!(!answer.contains("+15005550001"), "a phone number in the answer: {answer}");

    // Dead-lettered after retries: SendGrid answers 5xx to everything.
    stack.sandbox_behaviour("sendgrid", r#"{"latency_ms": 1, "server_error_rate": 1.0}"#);
    let dead = stack.send_with(
        &["--recipient", "dee", "--email", "dee@example.com"],
        "email",
        "welcome",
        data,
    );
    stack.wait_state(&dead, timeout, |s| s == "dead_lettered");
    let (answer, findings) = explain(&stack, &dead);
    assert!(
        answer.starts_with(
            "It was given up on and is in the dead-letter queue: dead-lettered on email"
        ),
        "{answer}"
    );
    assert!(answer.contains("all 2 attempts used"), "the retry policy: {answer}");
    assert!(answer.contains("HTTP 50"), "the provider's answer: {answer}");
    assert!(answer.contains("retried 1 time(s)"), "{answer}");
    assert!(kinds(&findings).contains(&"retry_backoff"), "{findings:?}");
    let backoff = findings.iter().find(|f| f["kind"] == "retry_backoff").expect("a retry");
    assert!(
        backoff["data"].as_str().is_some_and(|d| d.contains("policy delay 200 ms")),
        "{backoff}"
    );

    // The human form leads with the same answer.
    let output = stack.cli(&["explain", &dead]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("(dead_lettered): It was given up on"), "{text}");
    assert!(text.contains("DECISION"), "{text}");
}
