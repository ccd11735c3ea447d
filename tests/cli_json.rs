//! Issue 7: `courant --json ...` is for scripts. Every command's `--json` output is one JSON
//! document on stdout (NDJSON for `tail`), with the shape the README documents; failures keep the
//! documented exit codes and, with `--json`, say why as JSON on stderr.

mod common;

use std::time::Duration;

use common::{Stack, courant, stderr};
use serde_json::Value;

/// Runs the CLI with `--json` and parses stdout as one JSON document, asserting success.
fn json(stack: &Stack, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = stack.cli(&all);
    assert!(output.status.success(), "courant {args:?}: {}", stderr(&output));
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("courant {args:?}: {e}: {stdout}"))
}

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> =
        value.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    keys.sort_unstable();
    keys
}

/// Asserts `value` has at least the `expected` keys (the README's documented shape).
fn has_keys(what: &str, value: &Value, expected: &[&str]) {
    let have = keys(value);
    for key in expected {
        assert!(have.contains(key), "{what}: no {key:?} in {value}");
    }
}

#[test]
fn every_command_prints_parseable_json_of_the_documented_shape() {
    let stack = Stack::start(
        r#"
[policy.retry.email]
attempts_max = 1
delay_ms_base = 100
factor = 2.0
delay_ms_max = 100
jitter = false
ttl_ms = 60000
"#,
    );
    let _serve = stack.serve("all", "json-host");

    // send → {id, created, deduplicated}
    let sent = json(
        &stack,
        &[
            "send",
            "--recipient",
            "ada",
            "--email",
            "ada@example.com",
            "--channel",
            "email",
            "--template",
            "welcome",
            "--data",
            r#"{"name":"Ada","product":"courant"}"#,
        ],
    );
    has_keys("send", &sent, &["id", "created", "deduplicated"]);
    let id = sent["id"].as_str().expect("an id").to_owned();
    stack.wait_state(&id, Duration::from_secs(30), |s| s == "sent");

    // status → the notification, with its history.
    let status = json(&stack, &["status", &id]);
    has_keys(
        "status",
        &status,
        &["id", "state", "channel", "provider", "attempt", "category", "history"],
    );
    assert_eq!(status["state"], "sent");

    // history → {id, history: [{at, from, to, cause, ...}]}
    let history = json(&stack, &["history", &id]);
    has_keys("history", &history, &["id", "history"]);
    let entries = history["history"].as_array().expect("a list");
    assert!(!entries.is_empty());
    has_keys("history entry", &entries[0], &["at", "to", "cause"]);

    // explain → {id, state, answer, findings: [...]}
    let explain = json(&stack, &["explain", &id]);
    has_keys("explain", &explain, &["id", "state", "requested_channel", "answer", "findings"]);
    has_keys("finding", &explain["findings"][0], &["at", "kind", "summary", "data"]);

    // list → {notifications: [...]}
    let list = json(&stack, &["list"]);
    has_keys("list", &list, &["notifications"]);
    has_keys("list item", &list["notifications"][0], &["id", "state", "channel", "updated_at"]);

    // One that dead-letters: the sandbox's SendGrid refuses every send.
    stack.sandbox_behaviour("sendgrid", r#"{"latency_ms": 1, "server_error_rate": 1.0}"#);
    let doomed = json(
        &stack,
        &[
            "send",
            "--recipient",
            "bob",
            "--email",
            "bob@example.com",
            "--channel",
            "email",
            "--template",
            "welcome",
            "--data",
            r#"{"name":"Bob","product":"courant"}"#,
        ],
    )["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    stack.wait_state(&doomed, Duration::from_secs(30), |s| s == "dead_lettered");

    let dlq = json(&stack, &["dlq", "list"]);
    has_keys("dlq list", &dlq, &["notifications", "scanned", "truncated"]);
    has_keys("dead letter", &dlq["notifications"][0], &["id", "reason", "dead_lettered_at"]);
    let plan = json(&stack, &["dlq", "plan"]);
    has_keys(
        "dlq plan",
        &plan,
        &["matched", "replay", "maybe_delivered", "by_channel", "by_provider", "by_reason"],
    );
    // Without --yes and without a terminal: a dry run, still one JSON document.
    let replay = json(&stack, &["dlq", "replay"]);
    has_keys("dlq replay", &replay, &["dry_run", "replay", "skipped", "items", "rate_per_sec"]);
    assert_eq!(replay["dry_run"], true);
    let purge = json(&stack, &["dlq", "purge", &doomed]);
    has_keys("dlq purge", &purge, &["dry_run", "purge", "skipped", "items"]);

    // cancel → {id, state}; a sent notification cannot be cancelled: exit 1, JSON on stderr.
    let output = stack.cli(&["--json", "cancel", &id]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let error: Value = serde_json::from_str(stderr(&output).trim()).expect("a JSON error");
    has_keys("error", &error["error"], &["exit_code", "message"]);
    assert_eq!(error["error"]["exit_code"], 1);

    // Not found: exit 3, and the error as JSON.
    let output = stack.cli(&["--json", "status", "n0000nothing"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let error: Value = serde_json::from_str(stderr(&output).trim()).expect("a JSON error");
    assert_eq!(error["error"]["exit_code"], 3);

    // breakers → {breakers: [...]}
    let breakers = json(&stack, &["breakers"]);
    has_keys("breakers", &breakers, &["breakers"]);

    // queues → the queue's counts and the workers; stats → rows and latencies.
    let queues = json(&stack, &["queues"]);
    has_keys(
        "queues",
        &queues,
        &[
            "ready",
            "due",
            "scheduled",
            "in_flight",
            "parked",
            "overdue",
            "dead_lettered",
            "lag_ms",
            "oldest_waiting_since",
            "workers_alive",
            "workers",
        ],
    );
    let stats = json(&stack, &["stats", "--window", "15m"]);
    has_keys(
        "stats",
        &stats,
        &[
            "window",
            "window_ms",
            "from",
            "to",
            "channel",
            "provider",
            "latency_relative_error",
            "rows",
            "latency",
        ],
    );

    // config check → {file, valid, providers, routes}
    let config = json(&stack, &["config", "check", stack.config.to_str().expect("utf-8 path")]);
    has_keys("config check", &config, &["file", "valid", "providers", "routes"]);
    assert_eq!(config["valid"], true);

    // keys create → {tenant, key}
    let output = courant()
        .args(["--json", "keys", "create", "--tenant", "beta", "--redis", &stack.redis.url()])
        .output()
        .expect("run keys create");
    assert!(output.status.success(), "{}", stderr(&output));
    let created: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(created["tenant"], "beta");
    assert!(created["key"].as_str().is_some_and(|k| k.starts_with("ck_")), "{created}");

    // simulate → a report per seed.
    let output = courant()
        .args(["--json", "simulate", "--seed", "7", "--notifications", "20"])
        .output()
        .expect("run simulate");
    assert!(output.status.success(), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    has_keys("simulate", &report, &["seed", "notifications", "states", "violations", "trace_hash"]);
    let output = courant()
        .args(["--json", "simulate", "--seeds", "1..3", "--notifications", "10"])
        .output()
        .expect("run simulate");
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
        .collect();
    assert_eq!(lines.iter().map(|r| r["seed"].as_u64()).collect::<Vec<_>>(), [Some(1), Some(2)]);
}
