//! `/metrics` end to end (issue 7): the real binary on Redis with the provider sandbox. Every
//! scrape parses with Prometheus's own text-format parser (the Python client's), and the counters move as the traffic
//! says: intake, sends per provider and outcome, suppressions by reason, deduplication, retries,
//! dead letters (a gauge read from Redis) and the latency histograms.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Stack, http};

/// Parses the Prometheus text format with Prometheus's own Python client
/// (`prometheus_client.parser`), strictly: a malformed line fails the scrape. Every sample comes
/// back as `name{label="value",...}` (labels sorted) → value.
const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(json.dumps([s.name + "{" + labels + "}", s.value]))
"#;

/// One scrape: every sample to its value.
fn scrape(stack: &Stack) -> BTreeMap<String, f64> {
    let (status, text) =
        http::request("GET", &format!("{}/metrics", stack.api_url), None).expect("scrape");
    assert_eq!(status, 200, "{text}");
    let mut python = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (the tests need it, with the prometheus-client package)");
    python.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write the scrape");
    let output = python.wait_with_output().expect("the parser ends");
    assert!(
        output.status.success(),
        "the scrape does not parse as the Prometheus text format (or prometheus-client is not \
         installed: pip install prometheus-client):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut samples = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let (key, value): (String, f64) = serde_json::from_str(line).expect("a parsed sample");
        assert!(samples.insert(key.clone(), value).is_none(), "{key} twice");
    }
    assert!(!samples.is_empty(), "{text}");
    samples
}

fn get(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

/// How much `key` grew between two scrapes.
fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, key: &str) -> f64 {
    get(after, key) - get(before, key)
}

#[test]
fn metrics_parse_and_move_with_the_traffic() {
    let config = "[policy.retry.email]\nattempts_max = 2\ndelay_ms_base = 100\nfactor = 2.0\n\
                  delay_ms_max = 200\njitter = false\nttl_ms = 600000\n\
                  [policy.categories.alerts]\ndedup_window_ms = 60000\n";
    let stack = Stack::start(config);
    let _serve = stack.serve("all", "e2e-metrics");
    let timeout = Duration::from_secs(20);
    let data = r#"{"name":"Ada","product":"courant"}"#;
    let before = scrape(&stack);
    assert_eq!(get(&before, "courant_worker_slots{}"), 128.0);
    // The stats recorder's drops are exported, and none happen at this pace.
    assert_eq!(before.get("courant_stats_dropped_total{}"), Some(&0.0), "{before:?}");

    // Two emails sent.
    let a = stack.send("email", "welcome", data);
    let b = stack.send("email", "welcome", data);
    for id in [&a, &b] {
        stack.wait_state(id, timeout, |s| s == "sent");
    }
    // One suppressed by a stored opt-out.
    let (status, body) = stack.call("PUT", "/v1/recipients/quiet", r#"{"email":"q@example.com"}"#);
    assert_eq!(status, 201, "{body}");
    let (status, body) =
        stack.call("PUT", "/v1/recipients/quiet/preferences", r#"{"channels":{"email":false}}"#);
    assert_eq!(status, 200, "{body}");
    let skipped = stack.send_with(&["--recipient", "quiet"], "email", "welcome", data);
    stack.wait_state(&skipped, timeout, |s| s == "skipped");
    // One event submitted twice: one notification, one deduplicated answer.
    let event = r#"{"recipient":{"id":"ada","email":"ada@example.com"},"channel":"in_app",
        "template":"welcome","data":{"name":"Ada","product":"courant"},"category":"alerts",
        "event_id":"order-1"}"#;
    let (status, first) = stack.call("POST", "/v1/notifications", event);
    assert_eq!(status, 202, "{first}");
    let (status, second) = stack.call("POST", "/v1/notifications", event);
    assert_eq!((status, &second["deduplicated"]), (200, &serde_json::json!(true)), "{second}");
    stack.wait_state(first["id"].as_str().expect("id"), timeout, |s| s == "delivered");
    // One dead-lettered after a retry: SendGrid fails everything.
    stack.sandbox_behaviour("sendgrid", r#"{"latency_ms": 1, "server_error_rate": 1.0}"#);
    let dead = stack.send("email", "welcome", data);
    stack.wait_state(&dead, timeout, |s| s == "dead_lettered");

    let after = scrape(&stack);
    let accepted_email =
        "courant_notifications_accepted_total{category=\"transactional\",channel=\"email\"}";
    assert_eq!(moved(&before, &after, accepted_email), 4.0);
    let accepted_alert =
        "courant_notifications_accepted_total{category=\"alerts\",channel=\"in_app\"}";
    assert_eq!(moved(&before, &after, accepted_alert), 1.0);
    let dedup = "courant_notifications_deduplicated_total{channel=\"in_app\"}";
    assert_eq!(moved(&before, &after, dedup), 1.0);
    let sent = "courant_sends_total{channel=\"email\",outcome=\"accepted\",provider=\"sendgrid\"}";
    assert_eq!(moved(&before, &after, sent), 2.0);
    let failed = "courant_sends_total{channel=\"email\",outcome=\"failed\",provider=\"sendgrid\"}";
    assert_eq!(moved(&before, &after, failed), 2.0, "two attempts of the dead letter");
    let inbox = "courant_sends_total{channel=\"in_app\",outcome=\"accepted\",provider=\"inapp\"}";
    assert_eq!(moved(&before, &after, inbox), 1.0);
    let opted_out =
        "courant_decisions_total{channel=\"email\",decision=\"suppressed\",reason=\"opted_out\"}";
    assert_eq!(moved(&before, &after, opted_out), 1.0);
    let retries = "courant_retries_total{channel=\"email\",provider=\"sendgrid\"}";
    assert_eq!(moved(&before, &after, retries), 1.0);
    let backoff =
        "courant_decisions_total{channel=\"email\",decision=\"deferred\",reason=\"retry_backoff\"}";
    assert_eq!(moved(&before, &after, backoff), 1.0);
    let settled_dead =
        "courant_settled_total{channel=\"email\",decision=\"dead_lettered\",reason=\"\"}";
    assert_eq!(moved(&before, &after, settled_dead), 1.0);
    let settled_skip =
        "courant_settled_total{channel=\"email\",decision=\"skipped\",reason=\"opted_out\"}";
    assert_eq!(moved(&before, &after, settled_skip), 1.0);
    // Gauges from Redis: the dead letter is in the queue; nothing is stuck.
    assert_eq!(get(&after, "courant_dead_letters{}"), 1.0);
    assert_eq!(get(&after, "courant_queue_wakeups{state=\"parked\"}"), 0.0);
    // The serving process is a live worker; a queue with nothing waiting has no lag.
    assert_eq!(get(&after, "courant_workers_alive{}"), 1.0);
    assert!(after.contains_key("courant_queue_lag_seconds{}"), "{after:?}");
    // Histograms: two hand-overs on email, one delivery in the inbox.
    let handover = "courant_handover_latency_seconds_count{channel=\"email\"}";
    assert_eq!(moved(&before, &after, handover), 2.0);
    let delivered = "courant_delivery_latency_seconds_count{channel=\"in_app\"}";
    assert_eq!(moved(&before, &after, delivered), 1.0);
    // The breaker of every HTTP provider is there (closed: two failures do not open it).
    assert_eq!(get(&after, "courant_breaker_state{channel=\"email\",provider=\"sendgrid\"}"), 0.0);
    // No label carries a tenant, a recipient or an address.
    for key in after.keys() {
        assert!(!key.contains("acme") && !key.contains('@') && !key.contains("ada"), "{key}");
    }
}
