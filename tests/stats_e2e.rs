//! `courant stats` and `courant queues` end to end: an API process and a worker process on one
//! Redis, the real CLI reading what both counted.

mod common;

use std::time::{Duration, Instant};

use common::{Stack, stderr};
use serde_json::Value;

/// Polls `courant stats --json ARGS` until `done` holds, returning the last answer.
fn wait_stats(stack: &Stack, args: &[&str], done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut all = vec!["stats"];
        all.extend_from_slice(args);
        let stats = stack.cli_json(&all);
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "stats never got there:\n{stats:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The row of `channel` and `provider` (`None`: counted before a provider was chosen).
fn row<'a>(stats: &'a Value, channel: &str, provider: Option<&str>) -> Option<&'a Value> {
    let provider = provider.map_or(Value::Null, |p| Value::String(p.into()));
    stats["rows"].as_array()?.iter().find(|r| r["channel"] == channel && r["provider"] == provider)
}

fn count(stats: &Value, channel: &str, provider: Option<&str>, what: &str) -> u64 {
    row(stats, channel, provider).and_then(|r| r[what].as_u64()).unwrap_or(0)
}

fn latency<'a>(stats: &'a Value, channel: &str, kind: &str) -> Option<&'a Value> {
    stats["latency"].as_array()?.iter().find(|l| l["channel"] == channel && l["kind"] == kind)
}

#[test]
fn stats_and_queues_show_what_the_api_and_the_workers_did() {
    // SMS fails every call and gives up after two attempts; the recipient has no email address,
    // so it dead-letters.
    let stack = Stack::start(&common::quick_retries("sms", 2));
    stack.sandbox_behaviour("twilio", r#"{"latency_ms": 1, "server_error_rate": 1.0}"#);
    let _api = stack.serve("api", "ops-api-host");
    let _worker = stack.serve("worker", "ops-worker-host");

    let welcome = r#"{"name":"Ada","product":"courant"}"#;
    let emails = [stack.send("email", "welcome", welcome), stack.send("email", "welcome", welcome)];
    let in_app = stack.send("in_app", "order_shipped", r#"{"name":"Ada","order_id":"A-1"}"#);
    let sms = stack.send_with(
        &["--recipient", "bob", "--phone", "+14155550123"],
        "sms",
        "otp",
        r#"{"code":"1","product":"courant"}"#,
    );
    for id in &emails {
        stack.wait_state(id, Duration::from_secs(20), |s| s == "sent");
    }
    stack.wait_state(&in_app, Duration::from_secs(20), |s| s == "delivered");
    stack.wait_state(&sms, Duration::from_secs(20), |s| s == "dead_lettered");

    // Accepted in the API process, sent by the worker process: one set of numbers.
    let stats = wait_stats(&stack, &["--window", "15m"], |s| {
        count(s, "email", Some("sendgrid"), "sent") == 2
            && count(s, "in_app", Some("inapp"), "delivered") == 1
            && s["rows"].as_array().is_some_and(|rows| {
                rows.iter().filter(|r| r["channel"] == "sms").any(|r| r["dead_lettered"] == 1)
            })
    });
    assert_eq!(stats["window"], "15m");
    assert_eq!(count(&stats, "email", None, "accepted"), 2, "{stats:#}");
    assert_eq!(count(&stats, "in_app", None, "accepted"), 1, "{stats:#}");
    assert_eq!(count(&stats, "sms", None, "accepted"), 1, "{stats:#}");
    assert_eq!(count(&stats, "in_app", Some("inapp"), "sent"), 1, "{stats:#}");
    assert_eq!(count(&stats, "sms", Some("twilio"), "failed"), 2, "two attempts: {stats:#}");
    assert_eq!(count(&stats, "sms", Some("twilio"), "sent"), 0, "{stats:#}");
    assert_eq!(count(&stats, "email", Some("sendgrid"), "failed"), 0, "{stats:#}");
    let sms_rows: Vec<&Value> =
        stats["rows"].as_array().unwrap().iter().filter(|r| r["channel"] == "sms").collect();
    let retried: u64 =
        sms_rows.iter().filter_map(|r| r["deferred"]["retry_backoff"].as_u64()).sum();
    assert_eq!(retried, 1, "one backoff between the two attempts: {stats:#}");
    let dead: u64 = sms_rows.iter().filter_map(|r| r["dead_lettered"].as_u64()).sum();
    assert_eq!(dead, 1, "{stats:#}");

    // Latencies: hand-overs of the two emails and the inbox message, the inbox's delivery.
    let handover = latency(&stats, "email", "handover").expect("email hand-over latency");
    assert_eq!(handover["count"], 2, "{stats:#}");
    let delivery = latency(&stats, "in_app", "delivery").expect("in-app delivery latency");
    assert_eq!(delivery["count"], 1, "{stats:#}");
    for l in [handover, delivery] {
        let ms = |p: &str| l[p].as_u64().unwrap_or_else(|| panic!("{p} in {l}"));
        assert!(ms("p50_ms") >= 1 && ms("p50_ms") <= ms("p90_ms"), "{l}");
        assert!(ms("p90_ms") <= ms("p99_ms") && ms("p99_ms") <= ms("max_ms"), "{l}");
    }
    assert!(latency(&stats, "sms", "handover").is_none(), "nothing was handed over: {stats:#}");

    // Filters: one channel; one provider (its rows only, no per-channel latencies).
    let sms_only = stack.cli_json(&["stats", "--channel", "sms"]);
    let channels: Vec<&Value> =
        sms_only["rows"].as_array().unwrap().iter().map(|r| &r["channel"]).collect();
    assert!(!channels.is_empty() && channels.iter().all(|c| *c == "sms"), "{sms_only:#}");
    let sendgrid = stack.cli_json(&["stats", "--provider", "sendgrid", "--window", "24h"]);
    let rows = sendgrid["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{sendgrid:#}");
    assert_eq!(rows[0]["sent"], 2);

    // A table for people.
    let output = stack.cli(&["stats"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let table = String::from_utf8(output.stdout).unwrap();
    for expected in ["CHANNEL", "PROVIDER", "sendgrid", "P99 MS", "retry_backoff=1"] {
        assert!(table.contains(expected), "stats lacks {expected:?}:\n{table}");
    }

    // A bad window is refused, naming the field; so is one past the longest.
    let output = stack.cli(&["stats", "--window", "30s"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("field window"), "{}", stderr(&output));
    let (status, body) = stack.call("GET", "/v1/admin/stats?window=8d", "");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "window", "{body}");

    // The queue: the worker process heartbeats into the registry; nothing is stuck.
    let queues = stack.cli_json(&["queues"]);
    assert_eq!(queues["workers_alive"], 1, "{queues:#}");
    let workers = queues["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "only the worker process registers: {queues:#}");
    assert_eq!(workers[0]["host"], "ops-worker-host");
    assert_eq!(workers[0]["alive"], true);
    assert!(workers[0]["pid"].as_u64().is_some_and(|pid| pid > 0), "{queues:#}");
    assert_eq!(workers[0]["slots"].as_u64().map(|n| n > 0), Some(true), "{queues:#}");
    assert_eq!(queues["dead_lettered"], 1, "{queues:#}");
    assert_eq!(queues["parked"], 0, "{queues:#}");
    for field in ["ready", "due", "scheduled", "in_flight", "overdue", "lag_ms"] {
        assert!(queues[field].as_u64().is_some(), "{field} in {queues:#}");
    }
    let output = stack.cli(&["queues"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let table = String::from_utf8(output.stdout).unwrap();
    for expected in ["QUEUE", "workers_alive", "WORKER", "ops-worker-host"] {
        assert!(table.contains(expected), "queues lacks {expected:?}:\n{table}");
    }
}
