//! End to end: `courant retry` (an operator's "try again now") and `courant list`'s filters and
//! paging, through the real binary against a Redis and a provider sandbox this test run starts.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Stack, stderr};
use serde_json::Value;

fn is_out(state: &str) -> bool {
    matches!(state, "sent" | "delivered")
}

/// A dead-lettered SMS is replayed by `courant retry` (as `dlq replay --id --yes` does), an email
/// waiting ten minutes on its retry backoff goes at once, and a notification with nothing to
/// retry is refused with exit code 1 and the reason; an unknown id is exit code 3.
#[test]
fn retry_replays_a_dead_letter_and_cuts_a_retry_backoff_short() {
    let config = r#"
[breaker]
consecutive_failures = 1000
open_ms = 60000

[policy.retry.sms]
attempts_max = 2
delay_ms_base = 100
factor = 2.0
delay_ms_max = 200
jitter = false
ttl_ms = 600000

[policy.retry.email]
attempts_max = 3
delay_ms_base = 600000
factor = 1.0
delay_ms_max = 600000
jitter = false
ttl_ms = 3600000
"#;
    let stack = Stack::start(config);
    let failing = r#"{"latency_ms": 1, "server_error_rate": 1.0}"#;
    stack.sandbox_behaviour("twilio", failing);
    stack.sandbox_behaviour("sendgrid", failing);
    let _serve = stack.serve("all", "ops-host");
    // No email address: the SMS has no fallback, and is dead-lettered after two attempts.
    let sms = stack.send_with(
        &["--recipient", "sam", "--phone", "+14155550123"],
        "sms",
        "otp",
        r#"{"code":"1","product":"courant"}"#,
    );
    let email = stack.send_with(
        &["--recipient", "eve", "--email", "eve@example.com"],
        "email",
        "welcome",
        r#"{"name":"Eve","product":"courant"}"#,
    );
    stack.wait_state(&sms, Duration::from_secs(30), |s| s == "dead_lettered");
    let waiting = stack.wait_state(&email, Duration::from_secs(30), |s| s == "deferred");
    // Waiting to send attempt 2: the retry backoff, ten minutes long.
    assert_eq!(waiting["attempt"], 2, "{waiting}");
    assert!(waiting["wake_at"].is_string(), "{waiting}");

    stack.sandbox_behaviour("twilio", r#"{"latency_ms": 1}"#);
    stack.sandbox_behaviour("sendgrid", r#"{"latency_ms": 1}"#);

    // The dead letter: replayed, and it goes out.
    let answer = stack.cli_json(&["retry", &sms]);
    assert_eq!(
        (answer["outcome"].as_str(), answer["state"].as_str()),
        (Some("replayed"), Some("received"))
    );
    stack.wait_state(&sms, Duration::from_secs(30), is_out);
    let history = String::from_utf8(stack.cli(&["history", &sms]).stdout).unwrap();
    assert!(
        history.contains("dead_lettered → received") && history.contains("operator dlq replay"),
        "{history}"
    );

    // The backoff: ten minutes left, and the email goes now; the history names the operator.
    let answer = stack.cli_json(&["retry", &email]);
    assert_eq!(answer["outcome"], "woken", "{answer}");
    let view = stack.wait_state(&email, Duration::from_secs(30), is_out);
    assert_eq!(view["attempt"], 2, "the waiting attempt is the one that went: {view}");
    let history = stack.cli_json(&["history", &email]);
    let retried = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["cause"] == "operator retry")
        .unwrap_or_else(|| panic!("no operator retry in {history}"))
        .clone();
    assert_eq!(
        (retried["from"].as_str(), retried["to"].as_str()),
        (Some("deferred"), Some("deferred"))
    );
    assert!(
        retried["note"].as_str().unwrap().contains("an operator asked to retry now"),
        "{retried}"
    );

    // Nothing to retry: refused with the state and why; the API says 409.
    let output = stack.cli(&["retry", &email]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let refusal = stderr(&output);
    assert!(refusal.contains("409") && refusal.contains("and was not retried"), "{refusal}");
    let (status, body) = stack.call("POST", &format!("/v1/notifications/{email}/retry"), "");
    assert_eq!(status, 409, "{body}");
    let output = stack.cli(&["retry", "n00doesnotexist"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
}

fn ids(value: &Value) -> Vec<String> {
    value["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `courant list` filters by channel, provider, category, recipient, state and time, refuses a
/// bad filter naming it, and pages with `--cursor` (and `--all`) through every match exactly
/// once, newest first.
#[test]
fn list_filters_and_pages_through_the_cli() {
    let stack = Stack::start("");
    let _serve = stack.serve("all", "ops-host");
    let mut sent = Vec::new();
    for (recipient, channel, template, data) in [
        ("r1", "email", "welcome", r#"{"name":"A","product":"courant"}"#),
        ("r2", "email", "welcome", r#"{"name":"B","product":"courant"}"#),
        ("r3", "email", "welcome", r#"{"name":"C","product":"courant"}"#),
        ("r1", "sms", "otp", r#"{"code":"1","product":"courant"}"#),
        ("r2", "sms", "otp", r#"{"code":"2","product":"courant"}"#),
    ] {
        sent.push((stack.send_to(recipient, channel, template, data), recipient, channel));
    }
    for (id, _, _) in &sent {
        stack.wait_state(id, Duration::from_secs(30), is_out);
    }
    let all: BTreeSet<String> = sent.iter().map(|(id, _, _)| id.clone()).collect();
    let those = |keep: &dyn Fn(&str, &str) -> bool| -> BTreeSet<String> {
        sent.iter().filter(|(_, r, c)| keep(r, c)).map(|(id, _, _)| id.clone()).collect()
    };
    let listed = |args: &[&str]| -> BTreeSet<String> {
        let mut all = vec!["list"];
        all.extend_from_slice(args);
        ids(&stack.cli_json(&all)).into_iter().collect()
    };
    assert_eq!(listed(&[]), all);
    assert_eq!(listed(&["--channel", "sms"]), those(&|_, c| c == "sms"));
    assert_eq!(listed(&["--provider", "sendgrid"]), those(&|_, c| c == "email"));
    assert_eq!(listed(&["--recipient", "r1"]), those(&|r, _| r == "r1"));
    assert_eq!(
        listed(&["--recipient", "r2", "--channel", "email"]),
        those(&|r, c| r == "r2" && c == "email")
    );
    assert_eq!(listed(&["--category", "transactional"]), all);
    assert_eq!(listed(&["--category", "marketing"]), BTreeSet::new());
    assert_eq!(listed(&["--since", "1h"]), all);
    assert_eq!(listed(&["--until", "1h"]), BTreeSet::new());
    assert_eq!(
        listed(&["--since", "2020-01-01T00:00:00Z", "--until", "2100-01-01T00:00:00+02:00"]),
        all
    );
    let output = stack.cli(&["list", "--state", "lost"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("field state"), "{}", stderr(&output));
    let output = stack.cli(&["list", "--cursor", "nonsense"]);
    assert!(stderr(&output).contains("field cursor"), "{}", stderr(&output));

    // Pages of two: every notification once, newest first, the last page with no cursor.
    let newest_first = ids(&stack.cli_json(&["list"]));
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut args = vec!["list", "--limit", "2"];
        if let Some(cursor) = &cursor {
            args.extend_from_slice(&["--cursor", cursor]);
        }
        let page = stack.cli_json(&args);
        paged.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(page["truncated"], "limit", "{page}");
                cursor = Some(next.to_owned());
            }
            None => break,
        }
    }
    assert_eq!(paged, newest_first);
    // People see the table, and where the next page starts on stderr.
    let output = stack.cli(&["list", "--limit", "2"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("more: --cursor "), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().lines().count(),
        3,
        "a header and two rows"
    );
    // --all follows every page.
    let everything = stack.cli_json(&["list", "--limit", "2", "--all"]);
    assert_eq!(ids(&everything), newest_first);
    assert_eq!(everything["next_cursor"], Value::Null);
}
